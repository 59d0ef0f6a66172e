//! `kubectl-hsm`: the kubectl plugin for secrets held in HSMs. It talks to the manager's
//! REST API ([`client`]), found through the cluster and port-forwarded ([`connect`]) or
//! given with `--server`, with a token from a TokenRequest exchanged and cached
//! ([`auth`], [`cache`]).
//!
//! Every failure is one line on stderr (`kubectl-hsm: error: …`, the error and its causes)
//! and an exit code that says which kind it was ([`Failure::exit_code`]); no secret value,
//! PIN or token is ever part of a message.

pub mod auth;
pub mod cache;
pub mod cli;
pub mod client;
mod commands;
pub mod connect;
pub mod input;
pub mod model;
mod output;

use clap::Parser;
use cli::{Cli, Global};
use client::{ApiClient, ClientError, Credentials, Kind, StaticToken, Transport};
use std::process::ExitCode;
use std::sync::Arc;

pub use client::{ApiClient as Client, Reply};

/// A failure, classified for the exit code.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// From the REST API or the way to it.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Finding or reaching the manager through the cluster.
    #[error(transparent)]
    Connect(#[from] connect::ConnectError),
    /// Getting a token.
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    /// The token cache.
    #[error(transparent)]
    Cache(#[from] cache::CacheError),
    /// Bad input.
    #[error(transparent)]
    Input(#[from] input::InputError),
    /// `update` of a secret that does not exist.
    #[error("secret {0} does not exist: use create")]
    NoSuchSecret(String),
    /// A key the secret does not have.
    #[error("secret {secret} has no key {key:?}")]
    KeyNotFound {
        /// The secret.
        secret: String,
        /// The key.
        key: String,
    },
    /// `rename-key` onto a key that exists.
    #[error("secret {secret} already has a key {key:?}")]
    KeyExists {
        /// The secret.
        secret: String,
        /// The key.
        key: String,
    },
    /// A PIN that cannot be used (empty, mismatched confirmation, same as the old one).
    #[error("{0}")]
    Pin(&'static str),
    /// The devices refused the PIN change (the current PIN is wrong, or the new one is not
    /// acceptable).
    #[error("the devices refused the PIN change (is the current PIN right?): {0}")]
    PinRefused(String),
    /// The user did not confirm a delete.
    #[error("not confirmed: nothing deleted (--force skips the question)")]
    NotConfirmed,
    /// 206: some devices did not do it.
    #[error("{0}")]
    Partial(String),
    /// The manager reports itself degraded.
    #[error("the manager is {0}: no HSM device is usable")]
    Degraded(String),
    /// A document could not be rendered.
    #[error("cannot render JSON")]
    Serialize(#[source] serde_json::Error),
    /// A document could not be rendered.
    #[error("cannot render YAML")]
    SerializeYaml(#[source] serde_yaml::Error),
    /// Writing the output failed.
    #[error("cannot write the output")]
    Output(#[source] std::io::Error),
}

impl Failure {
    /// The process exit code: 3 unreachable, 4 no device, 5 refused (authentication,
    /// authorisation, PIN), 6 invalid input, 7 not found, 8 partial, 1 anything else
    /// (clap uses 2 for usage errors).
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::Client(e) => match e.kind() {
                Kind::Unreachable => 3,
                Kind::NoDevices => 4,
                Kind::Refused => 5,
                Kind::Invalid => 6,
                Kind::NotFound => 7,
                Kind::Other => 1,
            },
            Failure::Connect(e) => match e {
                connect::ConnectError::Ambiguous(_) => 6,
                connect::ConnectError::Config(_)
                | connect::ConnectError::NoService(_)
                | connect::ConnectError::NoApiPort(_)
                | connect::ConnectError::NoPod(_)
                | connect::ConnectError::Kube { .. }
                | connect::ConnectError::PortForward { .. }
                | connect::ConnectError::Listen { .. } => 3,
            },
            Failure::Auth(_) | Failure::PinRefused(_) => 5,
            Failure::Cache(_) => 1,
            Failure::Input(_) | Failure::KeyExists { .. } | Failure::Pin(_) => 6,
            Failure::NoSuchSecret(_) | Failure::KeyNotFound { .. } => 7,
            Failure::Partial(_) => 8,
            Failure::Degraded(_) => 4,
            Failure::NotConfirmed
            | Failure::Serialize(_)
            | Failure::SerializeYaml(_)
            | Failure::Output(_) => 1,
        }
    }
}

/// An error and its causes on one line.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let shown = cause.to_string();
        if !text.ends_with(&shown) {
            text.push_str(": ");
            text.push_str(&shown);
        }
        source = cause.source();
    }
    text.replace('\n', " ")
}

/// Runs the command line and turns every failure into one line and an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("kubectl-hsm: error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("kubectl-hsm: error: {}", chain(&failure));
            ExitCode::from(failure.exit_code())
        }
    }
}

fn init_logging(verbose: bool) {
    let filter = if verbose {
        "kubectl_hsm=debug"
    } else {
        "kubectl_hsm=warn"
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBECTL_HSM_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Credentials that cannot be had: only the exempt routes (health) work.
struct NoCredentials(std::sync::Mutex<Option<connect::ConnectError>>);

#[async_trait::async_trait]
impl Credentials for NoCredentials {
    async fn bearer(&self, _: &Transport) -> Result<Option<secrecy::SecretString>, ClientError> {
        let cause = self
            .0
            .lock()
            .expect("not poisoned")
            .take()
            .unwrap_or(connect::ConnectError::Config("no kubeconfig".into()));
        Err(auth::AuthError::NoKube(Box::new(cause)).into())
    }
    async fn refused(&self) -> bool {
        false
    }
}

/// A connection to the manager.
pub struct Session {
    /// The REST client.
    pub api: ApiClient,
    /// The operator's namespace, when the manager was found through the cluster.
    pub namespace: Option<String>,
    _forward: Option<connect::Forward>,
}

/// Connects as the options say: `--server` directly, else through the cluster.
pub async fn connect(global: &Global) -> Result<Session, Failure> {
    let cache = cache::Cache::locate()?;
    let config = cache.config();
    let static_token = match &global.token_file {
        Some(path) => Some(auth::token_from_file(path)?),
        None => None,
    };
    let sa_credentials = |kube: connect::Kube, manager: &str| -> Arc<dyn Credentials> {
        let source = auth::ServiceAccountSource {
            namespace: config
                .namespace
                .clone()
                .unwrap_or_else(|| kube.namespace.clone()),
            name: config.service_account.clone(),
            kube: kube.client,
        };
        Arc::new(auth::ServiceAccountCredentials::new(
            source,
            manager,
            cache.clone(),
        ))
    };
    if let Some(server) = &global.server {
        let transport = Transport::new(server, global.timeout, global.server_ca.as_deref())?;
        let credentials: Arc<dyn Credentials> = match static_token {
            Some(token) => Arc::new(StaticToken(token)),
            None => match connect::Kube::load(global.context.as_deref()).await {
                Ok(kube) => sa_credentials(kube, transport.base()),
                Err(e) => Arc::new(NoCredentials(std::sync::Mutex::new(Some(e)))),
            },
        };
        tracing::debug!("using the manager at {}", transport.base());
        return Ok(Session {
            api: ApiClient::new(transport, credentials),
            namespace: None,
            _forward: None,
        });
    }
    let kube = connect::Kube::load(global.context.as_deref()).await?;
    let env = std::env::var(connect::NAMESPACE_ENV).ok();
    let operator =
        connect::resolve_namespace(&kube, global.namespace.as_deref(), env.as_deref()).await?;
    let pod = connect::find_manager_pod(&kube, &operator).await?;
    let namespace = operator.name;
    let forward = connect::port_forward(&kube, &namespace, &pod, global.local_port).await?;
    tracing::debug!(
        "port-forwarding {} to {namespace}/{pod}:{}",
        forward.local,
        connect::API_PORT
    );
    let transport = Transport::new(&format!("http://{}", forward.local), global.timeout, None)?
        .through_tunnel(forward.failures());
    let manager = format!(
        "{} service {namespace}/{}",
        kube.cluster,
        connect::SERVICE_NAME
    );
    let credentials = match static_token {
        Some(token) => Arc::new(StaticToken(token)) as Arc<dyn Credentials>,
        None => sa_credentials(kube, &manager),
    };
    Ok(Session {
        api: ApiClient::new(transport, credentials),
        namespace: Some(namespace),
        _forward: Some(forward),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16) -> Failure {
        Failure::Client(ClientError::Api {
            status,
            code: String::new(),
            message: String::new(),
            hint: None,
        })
    }

    #[test]
    fn exit_codes_say_what_kind_of_failure() {
        let cases = [
            (api(400), 6),
            (api(401), 5),
            (api(403), 5),
            (api(404), 7),
            (api(500), 1),
            (api(503), 4),
            (
                Failure::Client(ClientError::Timeout {
                    url: "u".into(),
                    after: std::time::Duration::from_secs(1),
                }),
                3,
            ),
            (
                Failure::Connect(connect::ConnectError::NoPod("ns".into())),
                3,
            ),
            (
                Failure::Connect(connect::ConnectError::Ambiguous(vec![])),
                6,
            ),
            (Failure::Input(input::InputError::NoMethod), 6),
            (Failure::Pin("empty"), 6),
            (Failure::PinRefused("CKR_PIN_INCORRECT".into()), 5),
            (Failure::NoSuchSecret("db".into()), 7),
            (Failure::Partial("1/2".into()), 8),
            (Failure::Degraded("degraded".into()), 4),
            (Failure::NotConfirmed, 1),
        ];
        for (failure, code) in cases {
            assert_eq!(failure.exit_code(), code, "{failure:?}");
        }
    }

    #[test]
    fn the_chain_is_one_line_without_repeats() {
        let e = Failure::Auth(auth::AuthError::TokenFile {
            path: "/t".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "gone\nreally"),
        });
        assert_eq!(chain(&e), "cannot read the token file /t: gone really");
    }
}
