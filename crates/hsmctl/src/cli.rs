//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Debian's SoftHSM2 module: the default for local use.
pub const DEFAULT_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

/// The store's operations straight against a PKCS#11 module.
#[derive(Debug, Parser)]
#[command(
    name = "hsmctl",
    version,
    after_help = "Exit codes: 0 success, 1 other failure, 2 usage, 3 module cannot be loaded, \
4 token not found, 5 PIN refused, locked or missing, 6 invalid name, key or input, 7 secret or \
key not found."
)]
pub struct Cli {
    /// Global options.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The PKCS#11 module.
    #[arg(long, env = "PKCS11_LIBRARY", default_value = DEFAULT_MODULE, global = true)]
    pub module: PathBuf,
    /// Select the token by label.
    #[arg(long, global = true, conflicts_with_all = ["token_serial", "slot"])]
    pub token_label: Option<String>,
    /// Select the token by serial number.
    #[arg(long, global = true, conflicts_with = "slot")]
    pub token_serial: Option<String>,
    /// Select the token by slot id (default: the first slot with a token).
    #[arg(long, global = true)]
    pub slot: Option<u64>,
    /// A file holding the user PIN (preferred: a PIN on the command line shows in `ps`).
    /// Takes precedence over --pin and HSM_PIN.
    #[arg(long, global = true)]
    pub pin_file: Option<PathBuf>,
    /// The user PIN (prefer --pin-file or HSM_PIN).
    #[arg(long, env = "HSM_PIN", hide_env_values = true, global = true)]
    pub pin: Option<String>,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned text for people.
    Table,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Initialise a token in the first free slot (SoftHSM2, for development) with the user
    /// PIN given by --pin-file / HSM_PIN.
    InitToken {
        /// The new token's label.
        #[arg(long)]
        label: String,
        /// A file holding the security officer PIN (takes precedence over --so-pin).
        #[arg(long)]
        so_pin_file: Option<PathBuf>,
        /// The security officer PIN.
        #[arg(long, env = "HSM_SO_PIN", hide_env_values = true)]
        so_pin: Option<String>,
    },
    /// Token facts and how many secrets it holds.
    Info,
    /// List secrets.
    List {
        /// Only names starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
    },
    /// Show a secret, or print one key's raw value.
    Get {
        /// The secret.
        name: String,
        /// Print only this key's value, byte for byte.
        #[arg(long)]
        key: Option<String>,
    },
    /// Write a secret: `KEY=VALUE`, `KEY=@FILE`, or one key from stdin.
    Put {
        /// The secret.
        name: String,
        /// `KEY=VALUE` or `KEY=@FILE` pairs.
        pairs: Vec<String>,
        /// Read this key's value from standard input.
        #[arg(long, value_name = "KEY")]
        from_stdin: Option<String>,
        /// A description kept in the secret's metadata.
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a secret, or one key of it.
    Delete {
        /// The secret.
        name: String,
        /// Delete only this key.
        #[arg(long)]
        key: Option<String>,
    },
}
