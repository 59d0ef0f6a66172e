//! The `emulated` backend: the project's API emulator serving TLS with RBAC enforced and an
//! audit log, one node played by the pod runner (the operator's own pod specs run as written,
//! every pod as its ServiceAccount), the node's `/sys` a fixture tree that shows a Pico HSM,
//! and a SoftHSM2 token standing in for that device.

use crate::cluster::{Cluster, wait_for};
use crate::process::Service;
use crate::softhsm::Token;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use pod_runner::{HostPaths, ImageTable, PodRunner, RunnerConfig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The node the runner plays.
pub const NODE: &str = "e2e-node";
/// The runner's state directory (its pods' directories), under the run's directory.
const PODS: &str = "pods";
/// The label of the SoftHSM2 token.
pub const TOKEN_LABEL: &str = "e2e";
/// The images the manifests name, each the workspace binary that stands for it.
pub const IMAGES: [(&str, &str); 3] = [
    ("localhost/hsm-operator:dev", "hsm-operator"),
    ("localhost/hsm-agent:dev", "hsm-agent"),
    ("localhost/hsm-discovery:dev", "hsm-discovery"),
];
/// The workspace binaries the backend needs.
pub const BINARIES: [&str; 5] = [
    "api-emulator",
    "hsm-operator",
    "hsm-agent",
    "hsm-discovery",
    "hsmctl",
];

/// Built workspace binaries by name.
pub struct Binaries(pub BTreeMap<String, PathBuf>);

impl Binaries {
    /// Where binary `name` is.
    pub fn get(&self, name: &str) -> Result<&Path> {
        self.0
            .get(name)
            .map(PathBuf::as_path)
            .with_context(|| format!("the build made no {name} binary"))
    }
}

/// A running emulated cluster with its node and device.
pub struct Emulated {
    /// The cluster.
    pub cluster: Cluster,
    /// The token the node's device stands for.
    pub token: Token,
    runner: Option<PodRunner>,
    emulator: Service,
    dir: tempfile::TempDir,
}

impl Emulated {
    /// Starts the API server, the token and the node.
    pub async fn start(root: &Path, binaries: &Binaries) -> Result<Emulated> {
        let dir = tempfile::Builder::new().prefix("hsm-e2e-").tempdir()?;
        let logs = dir.path().join("logs");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let audit = dir.path().join("audit.jsonl");
        let emulator = Service::start(
            "api-emulator",
            binaries.get("api-emulator")?,
            &[
                "serve".into(),
                "--tls".into(),
                "--authz".into(),
                "rbac".into(),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
                "--audit-log".into(),
                audit.display().to_string(),
            ],
            &logs,
        )?;
        let cluster = wait_for("the API server", Duration::from_secs(30), || async {
            if !kubeconfig.exists() {
                return Ok(None);
            }
            let cluster = Cluster::from_kubeconfig(kubeconfig.clone(), Some(audit.clone())).await?;
            cluster.client.apiserver_version().await?;
            Ok(Some(cluster))
        })
        .await?;
        let token = Token::create(
            &dir.path().join("softhsm"),
            TOKEN_LABEL,
            binaries.get("hsmctl")?,
        )?;
        let server = kube::config::Kubeconfig::read_from(&kubeconfig)?
            .clusters
            .first()
            .and_then(|c| c.cluster.as_ref())
            .and_then(|c| c.server.clone())
            .context("the API server's kubeconfig names no server")?;
        let config = node_config(root, dir.path(), binaries, &token, &server)?;
        let runner = PodRunner::start(cluster.client.clone(), config)?;
        Ok(Emulated {
            cluster,
            token,
            runner: Some(runner),
            emulator,
            dir,
        })
    }

    /// Where the run keeps its files (logs, pods, the token).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node beneath the runner's pods, for scenarios that crash a container or read a
    /// pod's volume.
    pub fn node(&self, binaries: &Binaries) -> Result<crate::node::LocalNode> {
        let mut executables = BTreeMap::new();
        for (image, binary) in IMAGES {
            executables.insert(image.to_owned(), binaries.get(binary)?.to_owned());
        }
        Ok(crate::node::LocalNode::new(
            self.dir.path().join(PODS),
            executables,
        ))
    }

    /// The pods of `namespace` with their status and container logs, for a failure message.
    pub async fn describe(&self, namespace: &str) -> String {
        let Some(runner) = self.runner.as_ref() else {
            return String::new();
        };
        let pods = Api::<Pod>::namespaced(self.cluster.client.clone(), namespace)
            .list(&Default::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        let mut out = String::new();
        for pod in pods {
            let status = serde_json::to_string(&pod.status).unwrap_or_default();
            out += &format!("pod {}: {status}\n", pod.name_any());
            for container in pod.spec.iter().flat_map(|s| &s.containers) {
                let log = runner.log_path(namespace, &pod.name_any(), &container.name);
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                out += &format!("--- {} log (last lines):\n", container.name);
                for line in tail.into_iter().rev() {
                    out += line;
                    out += "\n";
                }
            }
        }
        out
    }

    /// Whether the API server still runs.
    pub fn check(&mut self) -> Result<()> {
        self.emulator.check()
    }

    /// Stops the node (every pod's processes) and the API server.
    pub async fn stop(mut self) {
        if let Some(runner) = self.runner.take() {
            runner.stop_within(Duration::from_secs(5)).await;
        }
        self.emulator.stop();
    }
}

/// The node: the images as workspace binaries, the fixture tree as `/sys`, empty kubelet
/// directories, the token's SoftHSM2 configuration in every pod's environment (a real node
/// has the token in a volume instead), and the API server as pods reach it.
fn node_config(
    root: &Path,
    dir: &Path,
    binaries: &Binaries,
    token: &Token,
    api_server: &str,
) -> Result<RunnerConfig> {
    let host = dir.join("host");
    let sys = host.join("sys");
    hsm_discovery::testing::copy_tree(
        &root.join("crates/hsm-discovery/tests/fixtures/sysfs"),
        &sys,
    )?;
    let mut host_paths = HostPaths::new().with("/sys", &sys);
    for path in [
        "/run/udev",
        "/var/lib/kubelet/device-plugins",
        "/var/lib/kubelet/plugins_registry",
    ] {
        let local = host.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(&local)?;
        host_paths.insert(path, local);
    }
    let mut config = RunnerConfig::new(NODE, dir.join(PODS));
    let mut images = ImageTable::new();
    for (image, binary) in IMAGES {
        images.insert(image, binaries.get(binary)?);
    }
    config.images = images;
    config.host_paths = host_paths;
    config
        .pod_env
        .insert("SOFTHSM2_CONF".into(), token.conf().display().to_string());
    // Pods reach the API server where this machine does, and act as their ServiceAccounts.
    config.api_server = Some(api_server.parse()?);
    config.restart_backoff = Duration::from_millis(500);
    config.restart_backoff_max = Duration::from_secs(5);
    Ok(config)
}
