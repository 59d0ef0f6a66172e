//! The manager's command line: the Go manager's flags (§1.4 of the contract) with their
//! defaults, so existing Deployments start it unchanged, plus a few of this operator's own.
//! Durations are written as Go writes them (`5m`, `2160h`).

use clap::{ArgAction, Parser, ValueEnum};
use std::time::Duration;

/// Which component to run. The Go operator ships one binary with three modes; this binary
/// is the manager, and says so clearly when asked for another mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// The manager (controllers, REST API).
    Manager,
    /// The agent: served by the `hsm-agent` binary.
    Agent,
    /// Discovery: served by the `hsm-discovery` binary.
    Discovery,
}

fn go_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("not a duration like 5m or 2160h: {e}"))
}

/// Command line of `hsm-operator`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "hsm-operator",
    version,
    about = "The hsm-secrets-operator manager"
)]
pub struct Cli {
    /// Which component to run; this binary runs the manager.
    #[arg(long, value_enum, default_value = "manager")]
    pub mode: Mode,
    /// Log level (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter).
    #[arg(long, default_value = "info")]
    pub log_level: String,

    /// Where metrics are served (`0` turns them off).
    #[arg(long, default_value = ":8080")]
    pub metrics_bind_address: String,
    /// Where `/healthz` and `/readyz` are served.
    #[arg(long, default_value = ":8081")]
    pub health_probe_bind_address: String,
    /// Run the controllers only while holding the leader Lease.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub leader_elect: bool,
    /// Accepted for compatibility; metrics are served over plain HTTP (put a proxy or a
    /// NetworkPolicy in front).
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub metrics_secure: bool,
    /// Accepted for compatibility (the Go scaffold's webhook flags; no webhooks exist).
    #[arg(long, default_value = "")]
    pub webhook_cert_path: String,
    /// See `--webhook-cert-path`.
    #[arg(long, default_value = "tls.crt")]
    pub webhook_cert_name: String,
    /// See `--webhook-cert-path`.
    #[arg(long, default_value = "tls.key")]
    pub webhook_cert_key: String,
    /// Accepted for compatibility.
    #[arg(long, default_value = "")]
    pub metrics_cert_path: String,
    /// Accepted for compatibility.
    #[arg(long, default_value = "tls.crt")]
    pub metrics_cert_name: String,
    /// Accepted for compatibility.
    #[arg(long, default_value = "tls.key")]
    pub metrics_cert_key: String,
    /// Accepted for compatibility.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub enable_http2: bool,
    /// Serve the REST API.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub enable_api: bool,
    /// Port of the REST API.
    #[arg(long, default_value_t = hsm_api::names::ports::MANAGER_API)]
    pub api_port: u16,
    /// Where the REST API listens, as `HOST:PORT` (default: every address, `--api-port`).
    #[arg(long, default_value = "")]
    pub api_bind_address: String,
    /// The Secret (in the manager's namespace) holding the key the REST API signs its
    /// tokens with; made by the first replica that starts, shared by all.
    #[arg(long, default_value = crate::api::JWT_SECRET)]
    pub api_jwt_secret: String,
    /// Image of agent pods (empty: the manager's own image's sibling).
    #[arg(long, default_value = "")]
    pub agent_image: String,
    /// Image of discovery pods (empty: the sibling of the manager's image, see `images`).
    #[arg(long, default_value = "")]
    pub discovery_image: String,
    /// Safety-net interval of mirroring.
    #[arg(long, value_parser = go_duration, default_value = "5m")]
    pub mirror_periodic_interval: Duration,
    /// Debounce window of mirroring.
    #[arg(long, value_parser = go_duration, default_value = "5s")]
    pub mirror_debounce_window: Duration,
    /// mTLS between manager and agents.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub agent_tls_enabled: bool,
    /// Secret of the mTLS CA.
    #[arg(long, default_value = hsm_api::names::mtls::CA_SECRET)]
    pub agent_tls_ca_secret: String,
    /// Secret of the agents' server certificate.
    #[arg(long, default_value = hsm_api::names::mtls::AGENT_SERVER_SECRET)]
    pub agent_tls_server_secret: String,
    /// Secret of the manager's client certificate.
    #[arg(long, default_value = hsm_api::names::mtls::MANAGER_CLIENT_SECRET)]
    pub agent_tls_client_secret: String,
    /// Validity of issued leaf certificates.
    #[arg(long, value_parser = go_duration, default_value = "2160h")]
    pub agent_tls_leaf_validity: Duration,
    /// Leaves are re-issued this long before they expire.
    #[arg(long, value_parser = go_duration, default_value = "720h")]
    pub agent_tls_renew_before: Duration,
    /// The mTLS Secrets are managed by cert-manager: read them, never write them.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = false)]
    pub agent_tls_cert_manager: bool,

    /// The operator instance name HSMSecrets' `parentRef.name` must match (default: the
    /// host name, as the Go manager does).
    #[arg(long, env = "OPERATOR_NAME")]
    pub operator_name: Option<String>,
    /// The operator's namespace (default: the service account's namespace file).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// The service account given to agent and discovery pods.
    #[arg(
        long,
        env = "SERVICE_ACCOUNT_NAME",
        default_value = "hsm-secrets-operator-controller-manager"
    )]
    pub service_account_name: String,
    /// The service account of agent pods (default: `--service-account-name`). Agents need
    /// only to read their HSMDevice and its PIN Secret.
    #[arg(long, env = "AGENT_SERVICE_ACCOUNT_NAME")]
    pub agent_service_account_name: Option<String>,
    /// With no device of an HSMDevice available for this long, its agents are removed.
    #[arg(long, value_parser = go_duration, default_value = "10m")]
    pub device_absence_timeout: Duration,
    /// Run agent Deployments for the devices discovery finds, and follow the agent pods.
    #[arg(long, action = ArgAction::Set, num_args = 0..=1, default_missing_value = "true", default_value_t = true)]
    pub manage_agents: bool,
    /// The service account given to discovery pods (default: `--service-account-name`, as
    /// the Go manager did; deploy/ gives them their own, `hsm-discovery`).
    #[arg(long, env = "DISCOVERY_SERVICE_ACCOUNT_NAME")]
    pub discovery_service_account_name: Option<String>,
    /// An agent to follow besides those the manager runs itself, as `DEVICE=URL`
    /// (`https://host:9090`); repeatable. For agents outside the cluster and for tests.
    #[arg(long = "agent-endpoint", value_parser = agent_endpoint)]
    pub agent_endpoints: Vec<(String, String)>,
    /// How long a leader's Lease lasts without renewal.
    #[arg(long, value_parser = go_duration, default_value = "15s")]
    pub lease_duration: Duration,
    /// How long before a Lease's expiry its holder renews it.
    #[arg(long, value_parser = go_duration, default_value = "5s")]
    pub lease_grace: Duration,
    /// How often the PKI checks whether a certificate is due for renewal.
    #[arg(long, value_parser = go_duration, default_value = "12h")]
    pub pki_check_interval: Duration,
}

impl Cli {
    /// The service account of agent pods.
    pub fn agent_service_account(&self) -> &str {
        self.agent_service_account_name
            .as_deref()
            .filter(|name| !name.is_empty())
            .unwrap_or(&self.service_account_name)
    }

    /// The service account of discovery pods.
    pub fn discovery_service_account(&self) -> &str {
        self.discovery_service_account_name
            .as_deref()
            .filter(|name| !name.is_empty())
            .unwrap_or(&self.service_account_name)
    }
}

fn agent_endpoint(text: &str) -> Result<(String, String), String> {
    let (device, url) = text
        .split_once('=')
        .ok_or_else(|| "expected DEVICE=URL".to_owned())?;
    if device.is_empty() || !(url.starts_with("https://") || url.starts_with("http://")) {
        return Err("expected DEVICE=URL with an http:// or https:// URL".into());
    }
    Ok((device.to_owned(), url.to_owned()))
}

/// `:8080` → `0.0.0.0:8080`; `0` → none.
pub fn bind_address(flag: &str) -> Result<Option<std::net::SocketAddr>, String> {
    if flag == "0" || flag.is_empty() {
        return Ok(None);
    }
    let full = if flag.starts_with(':') {
        format!("0.0.0.0{flag}")
    } else {
        flag.to_owned()
    };
    full.parse()
        .map(Some)
        .map_err(|e| format!("bad bind address {flag}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_go_managers_arguments_parse() {
        let cli = Cli::try_parse_from([
            "hsm-operator",
            "--mode=manager",
            "--leader-elect",
            "--metrics-bind-address=:8443",
            "--health-probe-bind-address=:8081",
            "--agent-tls-enabled=false",
            "--agent-tls-leaf-validity=2160h",
            "--mirror-periodic-interval",
            "5m",
        ])
        .unwrap();
        assert_eq!(cli.mode, Mode::Manager);
        assert!(cli.leader_elect);
        assert!(!cli.agent_tls_enabled);
        assert_eq!(
            cli.agent_tls_leaf_validity,
            Duration::from_secs(2160 * 3600)
        );
        assert_eq!(cli.mirror_periodic_interval, Duration::from_secs(300));
        assert_eq!(
            bind_address(&cli.metrics_bind_address).unwrap(),
            Some("0.0.0.0:8443".parse().unwrap())
        );
        assert_eq!(bind_address("0").unwrap(), None);
    }

    #[test]
    fn agent_and_discovery_pods_get_their_service_accounts() {
        let cli =
            Cli::try_parse_from(["hsm-operator", "--service-account-name=manager-sa"]).unwrap();
        assert_eq!(cli.discovery_service_account(), "manager-sa");
        assert_eq!(cli.agent_service_account(), "manager-sa");
        let cli = Cli::try_parse_from([
            "hsm-operator",
            "--service-account-name=manager-sa",
            "--discovery-service-account-name=hsm-discovery",
            "--agent-service-account-name=hsm-agent",
        ])
        .unwrap();
        assert_eq!(cli.discovery_service_account(), "hsm-discovery");
        assert_eq!(cli.agent_service_account(), "hsm-agent");
    }

    #[test]
    fn unknown_flags_and_bad_values_are_errors() {
        assert!(Cli::try_parse_from(["hsm-operator", "--no-such-flag"]).is_err());
        assert!(Cli::try_parse_from(["hsm-operator", "--agent-tls-renew-before=soon"]).is_err());
        assert!(Cli::try_parse_from(["hsm-operator", "--agent-endpoint=nourl"]).is_err());
        let cli = Cli::try_parse_from([
            "hsm-operator",
            "--agent-endpoint=pico=https://10.0.0.1:9090",
        ])
        .unwrap();
        assert_eq!(
            cli.agent_endpoints,
            vec![("pico".to_owned(), "https://10.0.0.1:9090".to_owned())]
        );
    }
}
