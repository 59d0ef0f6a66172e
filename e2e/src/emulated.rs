//! The `emulated` backend: the project's API emulator serving TLS with RBAC enforced and an
//! audit log, one node played by the pod runner (the operator's own pod specs run as written,
//! every pod as its ServiceAccount), the node's `/sys` a fixture tree that shows a Pico HSM,
//! and a SoftHSM2 token standing in for that device.
//!
//! The node runs the pods in one of two ways ([`Runtime`]):
//!
//! - as Podman containers of the real images ([`crate::images`], built in the run), each pod
//!   with its own address and network namespace on an internal Podman network; the API
//!   emulator listens on that network's gateway (this machine's address there) with a
//!   serving certificate that names it, and pods reach it there;
//! - as local processes of the workspace binaries, each pod on its own loopback address
//!   (quick to start, for debugging a scenario).
//!
//! The node's device is the SoftHSM2 token: a container asking for the device's extended
//! resource (the agent, as the manager writes its pod) gets what the device plugin's
//! `Allocate` would give it on a real node ([`pod_runner::devices`]): here the token's
//! directory mounted where the agent image's SoftHSM2 keeps tokens and `SOFTHSM2_CONF`
//! naming its configuration (for a local process, the token's configuration on this
//! machine). The run reads the same token directly with `hsmctl`.

use crate::Runtime;
use crate::card::VirtualCard;
use crate::cluster::{Cluster, wait_for};
use crate::images::RunImages;
use crate::process::Service;
use crate::scenarios::Run;
use crate::softhsm::Token;
use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::Api;
use pod_runner::{
    DeviceAllocation, Devices, HostPaths, ImageTable, PodRunner, Podman, PodmanConfig, RunnerConfig,
};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// The node the runner plays.
pub const NODE: &str = "e2e-node";
/// The runner's state directory (its pods' directories), under the run's directory.
const PODS: &str = "pods";
/// The label of the SoftHSM2 token.
pub const TOKEN_LABEL: &str = "e2e";
/// The device type of the run's HSMDevice, whose extended resource the node's device is.
pub const DEVICE_TYPE: &str = "PicoHSM";
/// The device type of the virtual card's HSMDevice (the SmartCard-HSM the fixture shows).
pub const CARD_DEVICE_TYPE: &str = "SmartCard-HSM";
/// The images the manifests name, each the workspace binary that stands for it.
pub const IMAGES: [(&str, &str); 3] = [
    ("localhost/hsm-operator:dev", "hsm-operator"),
    ("localhost/hsm-agent:dev", "hsm-agent"),
    ("localhost/hsm-discovery:dev", "hsm-discovery"),
];
/// The workspace binaries the backend needs.
pub const BINARIES: [&str; 6] = [
    "api-emulator",
    "hsm-operator",
    "hsm-agent",
    "hsm-discovery",
    "hsmctl",
    "virtual-pico",
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
    /// How the node runs pods.
    pub runtime: Runtime,
    /// The virtual Pico HSM, with containers: plugged into an agent pod's own pcscd (with
    /// local processes an agent's pcscd would be this machine's, so there is none).
    pub card: Option<Arc<VirtualCard>>,
    runner: Option<PodRunner>,
    /// The runner's id: the label value on every container it makes.
    runner_id: String,
    emulator: Service,
    // Dropped after the runner has removed its containers.
    images: Option<RunImages>,
    dir: tempfile::TempDir,
}

/// The node's Podman backend until the runner owns it: if the start fails or is cancelled
/// before, the network (and any container) goes with it.
struct Unstarted(Option<Podman>);

impl Unstarted {
    /// The backend, now someone else's to stop.
    fn started(mut self) -> Option<Podman> {
        self.0.take()
    }
}

impl Drop for Unstarted {
    fn drop(&mut self) {
        if let Some(podman) = self.0.take() {
            pod_runner::Backend::kill_all(&podman);
        }
    }
}

/// The id of this checkout's runs: what the run's Podman network, containers and images are
/// labelled with, so that a run removes what a killed run of the same checkout left, and
/// never what a run of another checkout makes at the same time.
pub fn run_id(root: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(root.as_os_str().as_encoded_bytes());
    hex::encode(&digest[..4])
}

/// The pod runner's id for run `id` (the label on its containers and network).
fn runner_id(id: &str) -> String {
    format!("e2e-{id}")
}

impl Emulated {
    /// Starts the node's runtime (with containers: the images, then the Podman network),
    /// the API server where the pods reach it, the token and the node.
    pub async fn start(root: &Path, binaries: &Binaries, runtime: Runtime) -> Result<Emulated> {
        let dir = tempfile::Builder::new().prefix("hsm-e2e-").tempdir()?;
        let id = run_id(root);
        let (images, podman) = match runtime {
            Runtime::Processes => (None, None),
            Runtime::Containers => {
                let images = RunImages::build(&id, binaries)?;
                let podman = Podman::connect(PodmanConfig::new(runner_id(&id)))
                    .await
                    .context("setting up Podman's network for the node")?;
                (Some(images), Some(Unstarted(Some(podman))))
            }
        };
        // With containers, the API server listens where the pods reach this machine: the
        // network's gateway, which is also an address of this machine for the run itself.
        let bind = podman
            .as_ref()
            .and_then(|p| p.0.as_ref())
            .and_then(Podman::gateway)
            .map(IpAddr::V4);
        let logs = dir.path().join("logs");
        let kubeconfig = dir.path().join("admin.kubeconfig");
        let audit = dir.path().join("audit.jsonl");
        let mut args: Vec<String> = vec![
            "serve".into(),
            "--tls".into(),
            "--authz".into(),
            "rbac".into(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--audit-log".into(),
            audit.display().to_string(),
        ];
        if let Some(address) = bind {
            args.extend(["--bind".into(), address.to_string()]);
        }
        let emulator = Service::start("api-emulator", binaries.get("api-emulator")?, &args, &logs)?;
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
        let card = match runtime {
            Runtime::Containers => Some(Arc::new(VirtualCard::create(
                &dir.path().join("virtual-pico"),
                binaries.get("virtual-pico")?,
                binaries.get("hsmctl")?,
            )?)),
            Runtime::Processes => None,
        };
        let mut config = node_config(root, dir.path(), binaries, &server)?;
        // Both USB HSMs the node's tree shows are served from the token directory: the
        // SmartCard-HSM by the token the mirror scenario makes beside the first. The virtual
        // card, which is that SmartCard-HSM in the card-pulled scenario, needs nothing from
        // the node (it dials its agent pod's vpcd reader); its agent gets the same allocation.
        config.devices = Devices::new()
            .with(device_resource(), device(&token, runtime))
            .with(
                hsm_api::names::resource_name(crate::scenarios::mirror::SECOND.device_type),
                device(&token, runtime),
            );
        let runner = match (podman.and_then(Unstarted::started), &images) {
            (Some(podman), Some(images)) => {
                config.runtime = pod_runner::Runtime::Containers(images.table().clone());
                PodRunner::start_with(cluster.client.clone(), config, Arc::new(podman))?
            }
            _ => PodRunner::start(cluster.client.clone(), config)?,
        };
        Ok(Emulated {
            cluster,
            token,
            runtime,
            card,
            runner: Some(runner),
            runner_id: runner_id(&id),
            emulator,
            images,
            dir,
        })
    }

    /// What the scenarios share, for this cluster.
    pub fn run(&self, binaries: &Binaries) -> Result<Run> {
        let node: Arc<dyn crate::node::Node> = match self.runtime {
            Runtime::Processes => Arc::new(self.node(binaries)?),
            Runtime::Containers => Arc::new(crate::node::PodmanNode::new(
                self.dir.path().join(PODS),
                self.runner_id.clone(),
            )),
        };
        let kubectl_hsm = binaries.get("kubectl-hsm")?;
        Ok(Run {
            cluster: self.cluster.clone(),
            token: Some(self.token.clone()),
            kubectl_hsm: kubectl_hsm.to_owned(),
            dir: self.dir().to_owned(),
            installed: Vec::new(),
            pods_share_the_host_network: self.runtime == Runtime::Processes,
            password: String::new(),
            node: Some(node),
            card: self.card.clone(),
        })
    }

    /// Where the run keeps its files (logs, pods, the token).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The node beneath the runner's pods, for scenarios that crash a container or read a
    /// pod's volume.
    fn node(&self, binaries: &Binaries) -> Result<crate::node::LocalNode> {
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

    /// Stops the node (every pod's processes or containers, and its network), the API
    /// server, and removes the run's images.
    pub async fn stop(mut self) {
        if let Some(card) = self.card.take() {
            card.pull();
        }
        if let Some(runner) = self.runner.take() {
            runner.stop_within(Duration::from_secs(5)).await;
        }
        self.emulator.stop();
        self.images.take();
    }
}

/// The extended resource of the run's device (`hsm.j5t.io/picohsm`), which agent pods ask for.
pub fn device_resource() -> String {
    hsm_api::names::resource_name(DEVICE_TYPE)
}

/// What a container asking for the node's device gets: with containers, the token's
/// directory mounted where the agent image's SoftHSM2 keeps tokens and `SOFTHSM2_CONF`
/// naming that SoftHSM2's configuration, as a device plugin's `Allocate` answer gives mounts
/// and variables; a local process gets the token's configuration on this machine.
fn device(token: &Token, runtime: Runtime) -> DeviceAllocation {
    use delivery::components::{TEST_SOFTHSM2_CONF, TEST_TOKEN_DIR};
    match runtime {
        Runtime::Containers => DeviceAllocation::new()
            .with_env("SOFTHSM2_CONF", TEST_SOFTHSM2_CONF)
            .with_mount(token.tokens(), TEST_TOKEN_DIR),
        Runtime::Processes => {
            DeviceAllocation::new().with_env("SOFTHSM2_CONF", token.conf().display().to_string())
        }
    }
}

/// The node (for local processes; the caller sets the container runtime and the device):
/// the images as workspace binaries, the fixture tree as `/sys`, empty kubelet directories,
/// and the API server as pods reach it.
fn node_config(
    root: &Path,
    dir: &Path,
    binaries: &Binaries,
    api_server: &str,
) -> Result<RunnerConfig> {
    let host = dir.join("host");
    let sys = host.join("sys");
    hsm_discovery::testing::copy_tree(
        &root.join("crates/hsm-discovery/tests/fixtures/sysfs"),
        &sys,
    )?;
    // Every /sys has the cgroup mount point; a container runtime mounts the cgroup file
    // system there in a container that mounts the node's /sys, and cannot make it in a
    // read-only mount.
    std::fs::create_dir_all(sys.join("fs/cgroup"))?;
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
    // Pods reach the API server where this machine does, and act as their ServiceAccounts.
    config.api_server = Some(api_server.parse()?);
    config.restart_backoff = Duration::from_millis(500);
    config.restart_backoff_max = Duration::from_secs(5);
    Ok(config)
}
