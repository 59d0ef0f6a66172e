//! The manager's wiring: Kubernetes client, identity, metrics and probes, the agents' mTLS
//! material, the agent pool, the REST API (on every replica, before leader election), and
//! the controllers — under leader election when asked.

use crate::agents::AgentPool;
use crate::agents::endpoints::{Endpoints, follow_agent_pods};
use crate::agents::grpc::ClientTls;
use crate::api;
use crate::cli::{Cli, Mode, bind_address};
use crate::leader::{LeaseSettings, lead};
use crate::mirror::{self, Mirror};
use crate::pki::{self, PkiConfig};
use crate::secret::{self, build::Identity};
use crate::telemetry::{Metrics, Readiness, serve_metrics, serve_probes};
use crate::{device, pool};
use crate::{images, placement};
use anyhow::{Context as _, bail};
use futures::FutureExt as _;
use std::future::Future;
use std::sync::Arc;

/// What tells the controllers to stop (leadership lost, or a signal).
type Shutdown = std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

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
    run_with(cli, client).await
}

/// Runs the manager with `client` (the binary's comes from KUBECONFIG or the pod's service
/// account; tests give their own).
pub async fn run_with(cli: Cli, client: kube::Client) -> anyhow::Result<()> {
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
    let endpoints = Endpoints::new(pool.clone(), tls.as_ref().map(|t| t.borrow().clone()));
    for (device, url) in &cli.agent_endpoints {
        endpoints
            .set(device, url)
            .with_context(|| format!("agent {device} at {url}"))?;
    }
    if let Some(mut tls) = tls {
        // Renewed material: reconnect with it; each device keeps its index meanwhile.
        let endpoints = endpoints.clone();
        tokio::spawn(async move {
            while tls.changed().await.is_ok() {
                let material = tls.borrow_and_update().clone();
                endpoints.set_tls(material);
            }
        });
    }
    if cli.manage_agents {
        // Every replica follows the agents (the REST API reads through them on all).
        tokio::spawn(follow_agent_pods(client.clone(), endpoints.clone()));
    }
    // The mirror runs on the leader; its handle answers manual passes on every replica.
    let mirror = Mirror::new(pool.clone(), metrics.clone(), mirror::Config::from(&cli));
    if cli.enable_api {
        start_api(&client, &cli, &namespace, &pool, &mirror).await?;
    }
    readiness.set_ready();

    let (leader_metrics, lease_client) = (metrics.clone(), client.clone());
    let discovery_image =
        images::resolve(&client, &namespace, &cli.discovery_image, "hsm-discovery").await;
    let devices = device_controllers(&cli, &client, discovery_image);
    let placement = match cli.manage_agents {
        true => Some(placement::plan::Settings {
            image: images::resolve(&client, &namespace, &cli.agent_image, "hsm-agent").await,
            tls: cli.agent_tls_enabled,
            service_account: cli.agent_service_account().to_owned(),
            absence_timeout: cli.device_absence_timeout,
        }),
        false => None,
    };
    let setup = move |shutdown: Shutdown| {
        let shutdown = shutdown.shared();
        let secrets = secret::run(
            secret::Setup {
                client: client.clone(),
                pool,
                identity,
                metrics: metrics.clone(),
            },
            shutdown.clone(),
        );
        let placement = placement.map(|settings| {
            placement::run(
                placement::Setup {
                    client: client.clone(),
                    settings,
                },
                shutdown.clone(),
            )
        });
        let mirroring = mirror::run(mirror, shutdown.clone());
        async move {
            let placement = async move {
                if let Some(placement) = placement {
                    placement.await;
                }
            };
            tokio::join!(secrets, devices(shutdown), placement, mirroring);
        }
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

/// The HSMDevice controller (discovery DaemonSets and pools) and the HSMPool controller
/// (aggregation), to run beside the HSMSecret controller until `shutdown`.
fn device_controllers(
    cli: &Cli,
    client: &kube::Client,
    discovery_image: String,
) -> impl FnOnce(futures::future::Shared<Shutdown>) -> futures::future::BoxFuture<'static, ()> + use<>
{
    let devices = device::Setup {
        client: client.clone(),
        image: discovery_image,
        service_account: cli.discovery_service_account().to_owned(),
    };
    let pools = pool::Setup {
        client: client.clone(),
        timers: pool::Timers::default(),
    };
    move |shutdown| {
        Box::pin(async move {
            tokio::join!(
                device::run(devices, shutdown.clone()),
                pool::run(pools, shutdown)
            );
        })
    }
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
    mirror: &Mirror,
) -> anyhow::Result<()> {
    let core = api::core(api::Setup {
        client: client.clone(),
        namespace: namespace.to_owned(),
        jwt_secret: cli.api_jwt_secret.clone(),
        pool: pool.clone(),
        mirror: Some(Arc::new(mirror.clone())),
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
