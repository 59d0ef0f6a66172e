//! `pod-runner`: runs the pods of a cluster's Deployments and DaemonSets on this machine as
//! local processes, for one node, until Ctrl-C or SIGTERM.

use anyhow::Context;
use clap::Parser;
use pod_runner::{ApiServer, HostPaths, ImageTable, PodRunner, RunnerConfig};
use std::path::PathBuf;
use std::time::Duration;

/// Runs the pods of Deployments and DaemonSets as local processes (test and demo support).
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
    Ok(config)
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
    if config.api_server.is_none() {
        // Pods run on this machine: they reach the API server where the runner does.
        config.api_server = kube_config
            .cluster_url
            .to_string()
            .parse()
            .inspect_err(|e| tracing::warn!(error = %e, "pods get no API server address"))
            .ok();
    }
    let client = kube::Client::try_from(kube_config)?;
    let runner = PodRunner::start(client, config)?;
    tracing::info!(node = %args.node_name, "running pods; Ctrl-C stops them");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    runner.stop_within(Duration::from_secs(5)).await;
    Ok(())
}
