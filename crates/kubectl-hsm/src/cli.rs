//! Command-line arguments: every command and flag of the Go plugin, plus `--server`,
//! `--token-file` and `--timeout` for a direct connection.

use clap::{Args, Parser, Subcommand, ValueEnum};
use secrecy::SecretString;
use std::path::PathBuf;
use std::time::Duration;

/// A PIN argument, taken into a [`SecretString`] as it is parsed, so that `Debug` of the
/// arguments shows `[REDACTED]`.
pub fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

fn duration(value: &str) -> Result<Duration, humantime::DurationError> {
    humantime::parse_duration(value)
}

/// Manage secrets held in hardware security modules through the HSM secrets operator.
#[derive(Debug, Parser)]
#[command(
    name = "kubectl-hsm",
    bin_name = "kubectl hsm",
    version,
    after_help = "Exit codes: 0 success, 1 other failure, 2 usage, 3 the manager cannot be \
reached, 4 no HSM device available, 5 authentication or authorisation refused (or a PIN \
refused), 6 invalid input, 7 secret or key not found, 8 only some devices succeeded."
)]
pub struct Cli {
    /// Options every command takes.
    #[command(flatten)]
    pub global: Global,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args, Clone)]
pub struct Global {
    /// The operator's namespace (default: $HSM_OPERATOR_NAMESPACE, else the one namespace
    /// holding the API Service, else hsm-secrets-operator-system).
    #[arg(short, long, global = true)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Output::Text, global = true)]
    pub output: Output,
    /// Say how the manager is reached and authenticated (on stderr).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Talk to the manager's REST API at this URL instead of port-forwarding to it.
    #[arg(long, env = "HSM_SERVER", global = true, value_name = "URL")]
    pub server: Option<String>,
    /// A PEM file of CA certificates to trust for an https --server (default: the system's).
    #[arg(long, global = true, value_name = "FILE")]
    pub server_ca: Option<PathBuf>,
    /// A file holding a bearer token to send as it is (a Kubernetes token or a JWT from
    /// the manager); no token exchange, nothing cached.
    #[arg(long, env = "HSM_TOKEN_FILE", global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// How long one request to the manager may take.
    #[arg(long, global = true, default_value = "30s", value_parser = duration)]
    pub timeout: Duration,
    /// The local port of the port-forward (0: any free port).
    #[arg(long, global = true, default_value_t = 0)]
    pub local_port: u16,
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, global = true)]
    pub context: Option<String>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Text for people (`table` is the same).
    #[value(alias = "table")]
    Text,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a secret, or add keys to an existing one (merge; --replace overwrites).
    #[command(after_help = "Examples:
  kubectl hsm create db-creds --from-literal username=admin
  kubectl hsm create db-creds --from-file .env
  kubectl hsm create tls-cert --from-file tls.crt=server.crt --from-file tls.key=server.key
  kubectl hsm create api-keys --interactive
  kubectl hsm create db-creds --from-file new.json --replace --diff --dry-run")]
    Create(WriteArgs),
    /// Add or change keys of an existing secret (never --replace).
    Update(WriteArgs),
    /// Rename one key of a secret.
    RenameKey {
        /// The secret.
        secret: String,
        /// The key's current name.
        old_key: String,
        /// The key's new name.
        new_key: String,
    },
    /// Show a secret's keys (values only with --key, -o json or -o yaml).
    Get {
        /// The secret.
        secret: String,
        /// Print only this key's value, byte for byte.
        #[arg(long)]
        key: Option<String>,
    },
    /// List the secrets on the HSMs.
    List {
        /// Show a NAMESPACE column (HSM secrets are global; it shows the operator's).
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Also show the devices and whether each is ready.
        #[arg(long)]
        show_devices: bool,
    },
    /// Delete a secret (on every device), or one key of it.
    Delete {
        /// The secret.
        secret: String,
        /// Delete only this key.
        #[arg(long)]
        key: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long, short = 'f')]
        force: bool,
    },
    /// Change the user PIN on every device. The PINs are read from a prompt on a
    /// terminal, else as two lines (old, new) from standard input.
    #[command(after_help = "Examples:
  kubectl hsm rotate-pin                          # prompts for the old and new PIN
  printf '%s\\n%s\\n' \"$OLD\" \"$NEW\" | kubectl hsm rotate-pin")]
    RotatePin {
        /// The current PIN (discouraged: visible in `ps` and shell history).
        #[arg(long, value_parser = secret, hide = true)]
        old_pin: Option<SecretString>,
        /// The new PIN (discouraged: visible in `ps` and shell history).
        #[arg(long, value_parser = secret, hide = true)]
        new_pin: Option<SecretString>,
        /// Check the input and the devices, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// The manager's health, its devices and their details.
    Health,
    /// The HSM devices the manager uses.
    Devices {
        /// Add each device's label, manufacturer, model and firmware.
        #[arg(long)]
        detailed: bool,
    },
    /// Mirroring between devices.
    #[command(subcommand)]
    Mirror(MirrorCommand),
    /// Authentication: cached tokens and the service account used.
    #[command(subcommand)]
    Auth(AuthCommand),
    /// The plugin's version.
    Version,
    /// A shell completion script.
    Completion {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

/// Input for `create` and `update`.
#[derive(Debug, Args)]
pub struct WriteArgs {
    /// The secret.
    pub secret: String,
    /// `KEY=VALUE` (repeatable).
    #[arg(long, value_name = "KEY=VALUE")]
    pub from_literal: Vec<String>,
    /// `[KEY=]PATH` (repeatable): a .json object, a .env file of KEY=VALUE lines, or one
    /// value (key: KEY, else the file name without extension).
    #[arg(long, value_name = "[KEY=]PATH")]
    pub from_file: Vec<String>,
    /// Prompt for keys and values (values are not echoed).
    #[arg(long)]
    pub interactive: bool,
    /// Replace the whole secret instead of merging into it (create only).
    #[arg(long)]
    pub replace: bool,
    /// Show what would change, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Show which keys are added, changed and removed (never their values).
    #[arg(long)]
    pub diff: bool,
}

/// `mirror` subcommands.
#[derive(Debug, Subcommand)]
pub enum MirrorCommand {
    /// Ask the manager to bring every device into agreement now.
    Sync {
        /// Force a full synchronisation.
        #[arg(long)]
        force: bool,
    },
}

/// `auth` subcommands.
#[derive(Debug, Subcommand)]
pub enum AuthCommand {
    /// The cached tokens, the service account used, and whether the manager accepts us.
    Status,
    /// Remove cached tokens (the next command authenticates afresh).
    Clear,
    /// Set (or show) the service account whose token the plugin requests; `--namespace`
    /// here is the service account's namespace (default: the kubeconfig context's).
    Config {
        /// The service account's name (default kubectl-hsm, falling back to default).
        #[arg(long)]
        service_account: Option<String>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn pins_on_the_command_line_never_show_in_debug() {
        let cli = Cli::try_parse_from([
            "kubectl-hsm",
            "rotate-pin",
            "--old-pin",
            "80417362",
            "--new-pin",
            "31415926",
        ])
        .unwrap();
        let Command::RotatePin { old_pin, .. } = &cli.command else {
            panic!("not rotate-pin")
        };
        assert_eq!(old_pin.as_ref().unwrap().expose_secret(), "80417362");
        let shown = format!("{cli:?} {cli:#?}");
        assert!(!shown.contains("80417362"), "{shown}");
        assert!(!shown.contains("31415926"), "{shown}");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(duration("250ms").unwrap(), Duration::from_millis(250));
        assert!(duration("soon").is_err());
    }

    #[test]
    fn auth_config_takes_its_own_namespace() {
        let cli = Cli::try_parse_from([
            "kubectl-hsm",
            "auth",
            "config",
            "--service-account",
            "ci",
            "--namespace",
            "tools",
        ])
        .unwrap();
        let Command::Auth(AuthCommand::Config { service_account }) = cli.command else {
            panic!()
        };
        assert_eq!(service_account.as_deref(), Some("ci"));
        assert_eq!(cli.global.namespace.as_deref(), Some("tools"));
    }

    #[test]
    fn table_is_text() {
        let cli = Cli::try_parse_from(["kubectl-hsm", "mirror", "sync", "-o", "table"]).unwrap();
        assert_eq!(cli.global.output, Output::Text);
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
