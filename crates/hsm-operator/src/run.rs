//! The manager's wiring: Kubernetes client, identity, metrics and probes, the agents' mTLS
//! material, the agent pool, the REST API (on every replica, before leader election), and
//! the controllers — under leader election when asked.

use crate::agents::AgentPool;
use crate::agents::grpc::{ClientTls, GrpcAgent};
use crate::api;
use crate::cli::{Cli, Mode, bind_address};
use crate::leader::{LeaseSettings, lead};
use crate::pki::{self, PkiConfig};
use crate::secret::{self, build::Identity};
use crate::telemetry::{Metrics, Readiness, serve_metrics, serve_probes};
use anyhow::{Context as _, bail};
use std::sync::Arc;

/// Where a pod finds its namespace.
const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Runs the manager until it is stopped (or, as leader, until it loses the Lease).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if cli.mode != Mode::Manager {
        bail!(
            "this binary runs the manager; run the {} with the hsm-{} binary",
            format!("{:?}", cli.mode).to_lowercase(),
            format!("{:?}", cli.mode).to_lowercase()
        );
    }
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "Starting HSM Secrets Operator"
    );
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes API: set KUBECONFIG or run in a pod")?;
    let namespace = match &cli.namespace {
        Some(ns) => ns.clone(),
        None => std::fs::read_to_string(NAMESPACE_FILE)
            .map(|s| s.trim().to_owned())
            .context("the manager's namespace: set POD_NAMESPACE")?,
    };
    let hostname = hostname();
    let identity = Identity {
        operator_name: cli
            .operator_name
            .clone()
            .unwrap_or_else(|| hostname.clone()),
        namespace: namespace.clone(),
    };
    tracing::info!(operator = %identity.operator_name, %namespace, "handling HSMSecrets whose parentRef names this operator");
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::default();
    let pool = AgentPool::new();
    serve_telemetry(&cli, metrics.clone(), readiness.clone(), pool.clone())?;

    let tls = match cli.agent_tls_enabled {
        true => Some(start_pki(&client, &cli, &namespace).await?),
        false => None,
    };
    let material = tls.as_ref().map(|t| t.borrow().clone());
    connect_agents(&pool, &cli.agent_endpoints, material.as_ref())?;
    if let Some(mut tls) = tls {
        // Renewed material: reconnect with it; each device keeps its index meanwhile.
        let (pool, endpoints) = (pool.clone(), cli.agent_endpoints.clone());
        tokio::spawn(async move {
            while tls.changed().await.is_ok() {
                let material = tls.borrow_and_update().clone();
                if let Err(error) = connect_agents(&pool, &endpoints, Some(&material)) {
                    tracing::error!(%error, "cannot reconnect the agents with renewed TLS material");
                }
            }
        });
    }
    if cli.enable_api {
        start_api(&client, &cli, &namespace, &pool).await?;
    }
    readiness.set_ready();

    let (leader_metrics, lease_client) = (metrics.clone(), client.clone());
    let setup = move |shutdown| {
        secret::run(
            secret::Setup {
                client: client.clone(),
                pool,
                identity,
                metrics: metrics.clone(),
            },
            shutdown,
        )
    };
    if cli.leader_elect {
        let settings = LeaseSettings {
            namespace,
            identity: format!("{hostname}-{}", uuid::Uuid::new_v4().simple()),
            duration: cli.lease_duration,
            grace: cli.lease_grace,
        };
        lead(lease_client, settings, leader_metrics, setup).await?;
    } else {
        setup(Box::pin(shutdown_signal())).await;
    }
    Ok(())
}

fn serve_telemetry(
    cli: &Cli,
    metrics: Arc<Metrics>,
    readiness: Readiness,
    pool: AgentPool,
) -> anyhow::Result<()> {
    if let Some(addr) = bind_address(&cli.metrics_bind_address).map_err(anyhow::Error::msg)? {
        tokio::spawn(async move {
            if let Err(error) = serve_metrics(addr, metrics, pool).await {
                tracing::error!(%error, %addr, "metrics server stopped");
            }
        });
    }
    if let Some(addr) = bind_address(&cli.health_probe_bind_address).map_err(anyhow::Error::msg)? {
        tokio::spawn(async move {
            if let Err(error) = serve_probes(addr, readiness).await {
                tracing::error!(%error, %addr, "probe server stopped");
            }
        });
    }
    Ok(())
}

/// The REST API, on every replica (not only the leader): it reads and writes through the
/// agent pool, which every replica follows.
async fn start_api(
    client: &kube::Client,
    cli: &Cli,
    namespace: &str,
    pool: &AgentPool,
) -> anyhow::Result<()> {
    let core = api::core(api::Setup {
        client: client.clone(),
        namespace: namespace.to_owned(),
        jwt_secret: cli.api_jwt_secret.clone(),
        pool: pool.clone(),
        mirror: None,
        settings: api::AuthSettings::default(),
    })
    .await
    .context("the REST API's token signing key")?;
    let addr = match bind_address(&cli.api_bind_address).map_err(anyhow::Error::msg)? {
        Some(addr) => addr,
        None => std::net::SocketAddr::from(([0, 0, 0, 0], cli.api_port)),
    };
    api::start(addr, core)
        .await
        .with_context(|| format!("binding the REST API on {addr}"))?;
    Ok(())
}

/// The mTLS material: the CA and certificates made or renewed as Secrets (or read, when
/// cert-manager manages them), and kept current every `--pki-check-interval`.
async fn start_pki(
    client: &kube::Client,
    cli: &Cli,
    namespace: &str,
) -> anyhow::Result<tokio::sync::watch::Receiver<ClientTls>> {
    let config = PkiConfig {
        namespace: namespace.to_owned(),
        ca_secret: cli.agent_tls_ca_secret.clone(),
        server_secret: cli.agent_tls_server_secret.clone(),
        client_secret: cli.agent_tls_client_secret.clone(),
        leaf_validity: cli.agent_tls_leaf_validity,
        renew_before: cli.agent_tls_renew_before,
        cert_manager: cli.agent_tls_cert_manager,
    };
    if config.leaf_validity <= config.renew_before {
        bail!("--agent-tls-leaf-validity must be longer than --agent-tls-renew-before");
    }
    let material = pki::ensure(client, &config, chrono::Utc::now())
        .await
        .context("the manager-agent mTLS Secrets")?;
    let (tx, rx) = tokio::sync::watch::channel(material);
    tokio::spawn(pki::rotate(
        client.clone(),
        config,
        cli.pki_check_interval,
        tx,
    ));
    Ok(rx)
}

/// Follows every `--agent-endpoint` with `tls` (or plaintext).
fn connect_agents(
    pool: &AgentPool,
    endpoints: &[(String, String)],
    tls: Option<&ClientTls>,
) -> anyhow::Result<()> {
    for (device, url) in endpoints {
        let agent = GrpcAgent::new(url, tls).with_context(|| format!("agent {device} at {url}"))?;
        pool.insert(device, Arc::new(agent));
    }
    Ok(())
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_owned())
        })
        .unwrap_or_else(|| "hsm-operator".to_owned())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
