//! The binary's start: identity from the environment, a Kubernetes client (in-cluster, or
//! `KUBECONFIG`), sysfs, the uevent socket, then the daemon until SIGTERM or Ctrl-C.

use crate::allowlist::Allowlist;
use crate::cli::DiscoveryArgs;
use crate::daemon::{DaemonConfig, run as run_daemon};
use crate::kube::PodIdentity;
use crate::sysfs::DirSysfs;
use crate::uevent::NetlinkUevents;
use anyhow::Context;

/// The service account's namespace file, the Go fallback for `POD_NAMESPACE`.
pub const NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// Runs discovery as the flags say.
pub async fn run(args: DiscoveryArgs) -> anyhow::Result<()> {
    let namespace = match &args.pod_namespace {
        Some(ns) if !ns.is_empty() => ns.clone(),
        _ => std::fs::read_to_string(NAMESPACE_FILE)
            .map(|s| s.trim().to_owned())
            .context("POD_NAMESPACE is not set and the service account namespace is unreadable")?,
    };
    let pod_name = match &args.pod_name {
        Some(name) if !name.is_empty() => name.clone(),
        _ => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .context("POD_NAME is not set and the hostname is unreadable")?,
    };
    let identity = PodIdentity {
        namespace,
        pod_name,
        node_name: args.node_name.clone(),
    };
    let sysfs = match &args.sysfs_root {
        Some(root) => DirSysfs::new(root),
        None => DirSysfs::detect(),
    };
    tracing::info!(
        node = %identity.node_name, pod = %identity.pod_name, namespace = %identity.namespace,
        sysfs = %sysfs.root().display(), "starting discovery"
    );
    let uevents = if args.no_uevents {
        None
    } else {
        NetlinkUevents::open()
            .inspect_err(|error| tracing::warn!(%error, "no uevents; periodic scans only"))
            .ok()
    };
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes client (in-cluster or KUBECONFIG)")?;
    let config = DaemonConfig {
        identity,
        sync_interval: args.sync_interval,
        grace_period: args.grace_period,
        report_refresh: args.report_refresh,
        plugins: args.plugin_config(),
    };
    run_daemon(
        client,
        config,
        Allowlist::load_default(),
        sysfs,
        uevents,
        shutdown(),
    )
    .await?;
    Ok(())
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("a SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("stopping");
}
