//! `pod-runner`: runs the pods of a cluster's Deployments and DaemonSets on this machine as
//! local processes or Podman containers, for one node, until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Parser;
use pod_runner::{
    ApiServer, ContainerImages, HostPaths, ImageTable, PodRunner, Podman, PodmanConfig,
    RunnerConfig, Runtime,
};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// How the pods' containers run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum BackendArg {
    /// Local processes, each pod on its own loopback address (images from --image).
    Processes,
    /// Podman containers of local images (from --container-image) on an internal network.
    Podman,
}

/// Runs the pods of Deployments and DaemonSets as local processes or Podman containers
/// (test and demo support).
#[derive(Debug, Parser)]
#[command(name = "pod-runner", version)]
struct Args {
    /// The kubeconfig of the API server (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The node this runner plays (pods' spec.nodeName).
    #[arg(long, default_value = "local")]
    node_name: String,
    /// A label of the node, NAME=VALUE (repeatable), matched against nodeSelectors.
    #[arg(long = "node-label", value_name = "NAME=VALUE")]
    node_labels: Vec<String>,
    /// An image and the executable that stands for it, NAME=PATH (repeatable). NAME is an
    /// image, its repository, or the repository's last segment (`hsm-agent`).
    #[arg(long = "image", value_name = "NAME=PATH")]
    images: Vec<String>,
    /// A host path pods may mount and where it is here, FROM=TO (repeatable).
    #[arg(long = "host-path", value_name = "FROM=TO")]
    host_paths: Vec<String>,
    /// A variable every container gets, NAME=VALUE (repeatable), e.g. KUBECONFIG.
    #[arg(long = "pod-env", value_name = "NAME=VALUE")]
    pod_env: Vec<String>,
    /// The API server as pods reach it, https://HOST:PORT: containers get
    /// KUBERNETES_SERVICE_HOST/PORT and a kubeconfig for their ServiceAccount token
    /// (default: the server of the runner's own kubeconfig).
    #[arg(long, value_name = "URL")]
    api_server: Option<ApiServer>,
    /// Where pods' files and logs go.
    #[arg(long, default_value = ".dev/pods")]
    state_dir: PathBuf,
    /// How containers run.
    #[arg(long, value_enum, default_value = "processes")]
    backend: BackendArg,
    /// With --backend=podman: an image and the local image that stands for it, NAME=IMAGE
    /// (repeatable), e.g. `hsm-agent=localhost/hsm-agent:dev`.
    #[arg(long = "container-image", value_name = "NAME=IMAGE")]
    container_images: Vec<String>,
    /// With --backend=podman: the runner's id, labelled on its containers and network (a
    /// later run with the same id removes what a killed one left). Default: the node name.
    #[arg(long)]
    podman_id: Option<String>,
    /// With --backend=podman: Podman's socket (default: DOCKER_HOST, then
    /// /run/podman/podman.sock, else a `podman system service` of the runner's own).
    #[arg(long)]
    podman_socket: Option<PathBuf>,
}

fn pair(s: &str) -> anyhow::Result<(String, String)> {
    s.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .with_context(|| format!("expected NAME=VALUE, got {s:?}"))
}

fn config(args: &Args) -> anyhow::Result<RunnerConfig> {
    let mut config = RunnerConfig::new(&args.node_name, &args.state_dir);
    for l in &args.node_labels {
        let (k, v) = pair(l)?;
        config.node_labels.insert(k, v);
    }
    let mut images = ImageTable::new();
    for i in &args.images {
        images.insert_pair(i).context("--image")?;
    }
    let mut host_paths = HostPaths::new();
    for h in &args.host_paths {
        host_paths.insert_pair(h).context("--host-path")?;
    }
    for e in &args.pod_env {
        let (k, v) = pair(e)?;
        config.pod_env.insert(k, v);
    }
    config.images = images;
    config.host_paths = host_paths;
    config.api_server = args.api_server.clone();
    if args.backend == BackendArg::Podman {
        let mut table = ContainerImages::new();
        for i in &args.container_images {
            table.insert_pair(i).context("--container-image")?;
        }
        config.runtime = Runtime::Containers(table);
    }
    Ok(config)
}

/// The API server of the runner's kubeconfig as pods see it: at `host` when given (the
/// gateway of a container network), else at the same address.
fn api_server_of(config: &kube::Config, host: Option<String>) -> Option<ApiServer> {
    let mut api: ApiServer = config
        .cluster_url
        .to_string()
        .parse()
        .inspect_err(|e| tracing::warn!(error = %e, "pods get no API server address"))
        .ok()?;
    if let Some(host) = host {
        api.host = host;
    }
    Some(api)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let mut config = config(&args)?;
    let kube_config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            let options = kube::config::KubeConfigOptions::default();
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = kube::Client::try_from(kube_config.clone())?;
    let runner = match args.backend {
        BackendArg::Processes => {
            if config.api_server.is_none() {
                // Pods run on this machine: they reach the API server where the runner does.
                config.api_server = api_server_of(&kube_config, None);
            }
            PodRunner::start(client, config)?
        }
        BackendArg::Podman => {
            let mut podman_config =
                PodmanConfig::new(args.podman_id.clone().unwrap_or(args.node_name.clone()));
            podman_config.socket = args.podman_socket.clone();
            let podman = Podman::connect(podman_config)
                .await
                .context("setting up the Podman backend")?;
            let gateway = podman
                .gateway()
                .context("the Podman backend has no gateway")?;
            // Pods reach the API server on this machine through the network's gateway.
            if config.api_server.is_none() {
                config.api_server = api_server_of(&kube_config, Some(gateway.to_string()));
            }
            tracing::info!(%gateway, network = ?podman.network(), "pods reach this machine at the gateway");
            PodRunner::start_with(client, config, Arc::new(podman))?
        }
    };
    tracing::info!(node = %args.node_name, "running pods; Ctrl-C stops them");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    runner.stop_within(Duration::from_secs(5)).await;
    Ok(())
}
