//! The agent's command line: the Go agent's flags, because the manager starts agent pods with
//! exactly those arguments, plus the agent's own additions.

use clap::{Parser, ValueEnum};
use secrecy::SecretString;
use std::path::PathBuf;
use std::time::Duration;

/// The HSM agent: serves one HSM token over gRPC.
#[derive(Debug, Clone, Parser)]
#[command(name = "hsm-agent", version)]
pub struct AgentArgs {
    /// Must be `agent` (the Go operator's single binary chose its role with this flag).
    #[arg(long, default_value = "agent", value_parser = ["agent"])]
    pub mode: String,
    /// Log level: error, warn, info, debug, trace. `debug` also runs pcscd with `-d`.
    #[arg(long, default_value = "info")]
    pub log_level: String,
    /// The HSMDevice this agent serves.
    #[arg(long)]
    pub device_name: String,
    /// Address the gRPC and health listeners bind to. Without it: the pod's IP when the
    /// downward API gives a non-empty `POD_IP` (so agents sharing a host can use the same
    /// ports), else every address (0.0.0.0).
    #[arg(long)]
    pub bind_address: Option<std::net::IpAddr>,
    /// gRPC port.
    #[arg(long, default_value_t = hsm_api::names::ports::AGENT_GRPC)]
    pub port: u16,
    /// Health port (`/healthz`, `/readyz`).
    #[arg(long, default_value_t = hsm_api::names::ports::AGENT_HEALTH)]
    pub health_port: u16,
    /// The PKCS#11 module.
    #[arg(long, env = "PKCS11_LIBRARY")]
    pub pkcs11_library: PathBuf,
    /// The slot, when no token label is given (-1: the first slot with a token).
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub slot_id: i64,
    /// The token's label.
    #[arg(long, default_value = "")]
    pub token_label: String,
    /// Accepted for compatibility; a PIN on the command line shows in `ps`. Prefer
    /// --pin-file or HSM_PIN.
    /// Held as a secret from parsing on: `Debug` of the arguments shows `[REDACTED]`.
    #[arg(long, hide = true, value_parser = secret)]
    pub pin: Option<SecretString>,
    /// A file holding the user PIN (a mounted Secret), re-read whenever the agent connects.
    #[arg(long)]
    pub pin_file: Option<PathBuf>,
    /// Accepted for compatibility: this agent never serves anything but the real token.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub require_hardware: bool,
    /// The server certificate (PEM); with the key and client CA, turns on mTLS.
    #[arg(long)]
    pub tls_cert_file: Option<PathBuf>,
    /// The server key (PEM).
    #[arg(long)]
    pub tls_key_file: Option<PathBuf>,
    /// The CA whose client certificates are accepted (PEM).
    #[arg(long)]
    pub tls_client_ca_file: Option<PathBuf>,
    /// Serve gRPC without TLS. Refused unless given: an agent never listens in the clear by
    /// accident.
    #[arg(long)]
    pub insecure_plaintext: bool,
    /// Where the agent remembers PINs the token refused, across restarts.
    #[arg(long, default_value = "/tmp/hsm-agent")]
    pub state_dir: PathBuf,
    /// Run pcscd: `auto` when the module is OpenSC's.
    #[arg(long, value_enum, default_value_t = Pcscd::Auto)]
    pub pcscd: Pcscd,
    /// How often to re-scan the token for changes made outside the operator.
    #[arg(long, value_parser = humantime_secs, default_value = "300")]
    pub rescan_interval: Duration,
}

/// When to run pcscd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Pcscd {
    /// When the module is OpenSC's.
    Auto,
    /// Always.
    Always,
    /// Never (pcscd runs elsewhere, or the module does not use PC/SC).
    Never,
}

/// A PIN argument, taken into a [`SecretString`] as it is parsed.
pub fn secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

/// Seconds, as a number.
fn humantime_secs(value: &str) -> Result<Duration, String> {
    value
        .trim_end_matches('s')
        .parse::<u64>()
        .map(Duration::from_secs)
        .map_err(|_| format!("{value:?} is not a number of seconds"))
}

impl AgentArgs {
    /// The token selector the flags describe.
    pub fn selector(&self) -> hsm_store::TokenSelector {
        if !self.token_label.is_empty() {
            hsm_store::TokenSelector::Label(self.token_label.clone())
        } else if self.slot_id >= 0 {
            hsm_store::TokenSelector::Slot(self.slot_id as u64)
        } else {
            hsm_store::TokenSelector::First
        }
    }

    /// The mTLS files, when all three are given.
    pub fn tls_files(&self) -> anyhow::Result<Option<crate::tls::TlsFiles>> {
        match (
            &self.tls_cert_file,
            &self.tls_key_file,
            &self.tls_client_ca_file,
        ) {
            (Some(cert), Some(key), Some(ca)) => Ok(Some(crate::tls::TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: ca.clone(),
            })),
            (None, None, None) => Ok(None),
            _ => anyhow::bail!(
                "--tls-cert-file, --tls-key-file and --tls-client-ca-file go together"
            ),
        }
    }

    /// Whether this module needs pcscd.
    pub fn wants_pcscd(&self) -> bool {
        match self.pcscd {
            Pcscd::Always => true,
            Pcscd::Never => false,
            Pcscd::Auto => self
                .pkcs11_library
                .file_name()
                .is_some_and(|n| n.to_string_lossy().contains("opensc")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_managers_arguments_parse() {
        let args = AgentArgs::try_parse_from([
            "hsm-agent",
            "--mode=agent",
            "--device-name=pico-hsm",
            "--port=9090",
            "--health-port=8093",
            "--tls-cert-file=/etc/hsm/tls/tls.crt",
            "--tls-key-file=/etc/hsm/tls/tls.key",
            "--tls-client-ca-file=/etc/hsm/tls/ca.crt",
            "--token-label=PicoHSM",
            "--slot-id=0",
            "--pkcs11-library=/usr/lib/x86_64-linux-gnu/opensc-pkcs11.so",
        ])
        .unwrap();
        assert_eq!(
            args.selector(),
            hsm_store::TokenSelector::Label("PicoHSM".into())
        );
        assert!(args.tls_files().unwrap().is_some());
        assert!(args.wants_pcscd());
        let args = AgentArgs::try_parse_from([
            "hsm-agent",
            "--device-name=d",
            "--slot-id=3",
            "--pkcs11-library=/usr/lib/softhsm/libsofthsm2.so",
            "--tls-cert-file=/x",
        ])
        .unwrap();
        assert_eq!(args.selector(), hsm_store::TokenSelector::Slot(3));
        assert!(args.tls_files().is_err());
        assert!(!args.wants_pcscd());
        assert!(
            AgentArgs::try_parse_from([
                "hsm-agent",
                "--mode=manager",
                "--device-name=d",
                "--pkcs11-library=/x"
            ])
            .is_err()
        );
    }

    #[test]
    fn a_pin_on_the_command_line_never_shows_in_debug() {
        let args = AgentArgs::try_parse_from([
            "hsm-agent",
            "--device-name=d",
            "--pkcs11-library=/x",
            "--pin=80417362",
        ])
        .unwrap();
        use secrecy::ExposeSecret;
        assert_eq!(args.pin.as_ref().unwrap().expose_secret(), "80417362");
        let shown = format!("{args:?} {args:#?}");
        assert!(!shown.contains("80417362"), "{shown}");
    }
}
