//! The manager's wiring: Kubernetes client, identity, metrics and probes, the agents' mTLS
//! material, the agent pool, and the controllers — under leader election when asked.

use crate::agents::AgentPool;
use crate::agents::grpc::{ClientTls, GrpcAgent};
use crate::cli::{Cli, Mode, bind_address};
use crate::leader::{LeaseSettings, lead};
use crate::secret::{self, build::Identity};
use crate::telemetry::{Metrics, Readiness, serve_metrics, serve_probes};
use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
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
        true => Some(client_tls(&client, &cli, &namespace).await?),
        false => None,
    };
    for (device, url) in &cli.agent_endpoints {
        let agent = GrpcAgent::new(url, tls.as_ref())
            .with_context(|| format!("agent {device} at {url}"))?;
        pool.insert(device, Arc::new(agent));
    }
    readiness.set_ready();

    let leader_metrics = metrics.clone();
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
        let lease_client = kube::Client::try_default().await?;
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

/// The manager's client certificate, CA and key from the client Secret.
async fn client_tls(
    client: &kube::Client,
    cli: &Cli,
    namespace: &str,
) -> anyhow::Result<ClientTls> {
    let secret = Api::<Secret>::namespaced(client.clone(), namespace)
        .get(&cli.agent_tls_client_secret)
        .await
        .with_context(|| {
            format!(
                "the manager's mTLS Secret {namespace}/{}",
                cli.agent_tls_client_secret
            )
        })?;
    let field = |key: &str| -> anyhow::Result<String> {
        let bytes = secret
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .with_context(|| format!("Secret {} has no {key}", cli.agent_tls_client_secret))?;
        String::from_utf8(bytes.0.clone()).with_context(|| format!("{key} is not PEM text"))
    };
    Ok(ClientTls {
        ca: field("ca.crt")?,
        cert: field("tls.crt")?,
        key: field("tls.key")?,
    })
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
