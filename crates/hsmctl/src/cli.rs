//! Command-line arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use std::path::PathBuf;

/// A PIN argument, taken into a [`SecretString`] as it is parsed, so that `Debug` of the
/// arguments shows `[REDACTED]`.
pub fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

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
    #[arg(long, env = "HSM_PIN", hide_env_values = true, global = true, value_parser = secret)]
    pub pin: Option<SecretString>,
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
        #[arg(long, env = "HSM_SO_PIN", hide_env_values = true, value_parser = secret)]
        so_pin: Option<SecretString>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn pins_on_the_command_line_never_show_in_debug() {
        let cli = Cli::try_parse_from([
            "hsmctl",
            "--pin",
            "80417362",
            "init-token",
            "--label",
            "t",
            "--so-pin",
            "31415926",
        ])
        .unwrap();
        assert_eq!(cli.global.pin.as_ref().unwrap().expose_secret(), "80417362");
        let shown = format!("{cli:?} {cli:#?}");
        assert!(!shown.contains("80417362"), "{shown}");
        assert!(!shown.contains("31415926"), "{shown}");
    }
}
