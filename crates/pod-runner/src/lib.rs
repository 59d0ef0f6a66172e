//! A local pod runner: plays the kubelet (and the Deployment and DaemonSet controllers) for
//! one node, so that the pod specs an operator writes run on this machine. Test and demo
//! support only: it is neither part of the product nor of the API emulator, and it talks to
//! the Kubernetes API through a plain `kube::Client`, so it works against any API server.
//!
//! What it does:
//!
//! - For every Deployment it creates `replicas` Pods, owned directly by the Deployment (there
//!   are no ReplicaSets), labelled `pod-template-hash`; a changed template is rolled out as
//!   `Recreate` (old pods gone before new ones start), whatever the strategy says. For every
//!   DaemonSet whose nodeSelector (and required node affinity) matches the node's labels, one
//!   Pod labelled `pod-template-generation`. Pods are bound to the configured node.
//! - Every Pod bound to that node is run: each container as a local process (the image mapped
//!   to an executable by the [`ImageTable`]), with `command`/`args` and `env` as written,
//!   the downward API and Secret/ConfigMap references resolved, Secret, ConfigMap, emptyDir,
//!   downwardAPI and projected volumes written to a private per-pod directory (owner-only
//!   permissions) and every mount path in args and env rewritten to it, hostPath volumes
//!   only through [`HostPaths`].
//! - Pods reach the API as their own ServiceAccount, as from a kubelet ([`projected`],
//!   [`tokens`]): a projected `serviceAccountToken` is a TokenRequest for the pod's
//!   ServiceAccount bound to the Pod, with the source's audience and lifetime, requested
//!   anew and rewritten after 80% of its lifetime; with [`RunnerConfig::api_server`] every
//!   container gets `KUBERNETES_SERVICE_HOST`/`_PORT`, and a local process whose container
//!   mounts the token at `/var/run/secrets/kubernetes.io/serviceaccount` (the API server's
//!   ServiceAccount admission adds that mount) gets a kubeconfig of it in `KUBECONFIG`
//!   (server, `ca.crt`, the token as `tokenFile`), unless [`RunnerConfig::pod_env`] sets
//!   one. A container runtime ([`Runtime::Containers`]) mounts the volume
//!   directory at its path instead.
//! - A container asking for an extended resource in `resources.limits` gets what the node's
//!   device of that resource gives ([`RunnerConfig::devices`], [`devices`]): variables and
//!   mounts, as a kubelet gives what the device plugin's `Allocate` answered.
//! - Each pod gets its own loopback address 127.0.X.Y as `status.podIP`; readiness and
//!   liveness probes (httpGet, tcpSocket) run against it; containers are restarted with
//!   backoff as `restartPolicy` says; Pod status (phase, conditions, container statuses) and
//!   Deployment/DaemonSet status are written back.
//! - A deleted Pod, Deployment or DaemonSet stops its processes (SIGTERM, SIGKILL after the
//!   grace period) and the Pod is deleted as a kubelet does (grace period 0). Every process
//!   dies with the runner: when it is stopped, dropped, or killed (`PR_SET_PDEATHSIG`).
//!
//! With [`Runtime::Containers`] the pods run as Podman containers of local images instead
//! ([`podman`]): one internal network per runner whose gateway is this machine, an infra
//! container per pod holding its address (`status.podIP`) and network namespace, each
//! container joining it, `command`/`args`/`env` as written, volumes bind-mounted at their
//! mount paths, the security context applied. The rest (probes, restarts, status) is the same.
//!
//! Anything it cannot honour (an unknown image, an unmapped hostPath, an exec probe) is a
//! clear error on the Pod's status (phase Failed, the container waiting with a reason), never
//! a crash. Containers' output goes to a log file per container: [`PodRunner::log_path`].
//!
//! Differences from a real cluster, on purpose or for now:
//!
//! - devices are configured per resource, one allocation each, not obtained from device
//!   plugins over their sockets; device nodes are never passed to a pod;
//! - one node; several runners on one API server would each create the Deployments' pods;
//! - every Deployment is rolled out as `Recreate`; Deployment pods have no ReplicaSet;
//!   tolerations, taints and resource requests play no part in placing a pod; a pod that
//!   may not run on the node stays unbound, with no status; a Pod created by someone else
//!   runs only if it names the node in `spec.nodeName` (nothing schedules bare Pods);
//! - a container's `command[0]`, when given, must name the image's executable (its file
//!   name); the executable always comes from the image table;
//! - volumes: Secret, ConfigMap, emptyDir, downwardAPI, projected (serviceAccountToken,
//!   secret, configMap, downwardAPI sources) and mapped hostPath only; file modes are
//!   always owner-only; env and downward API: no `resourceFieldRef`; probes: httpGet over
//!   HTTP and tcpSocket (exec and gRPC probes fail the pod); a failed init container fails
//!   the pod rather than being retried;
//! - containers get only the environment the spec gives them, plus `PATH`, `HOSTNAME`, the
//!   `KUBERNETES_SERVICE_*`/`KUBERNETES_PORT*` variables of the API server and
//!   [`RunnerConfig::pod_env`] (no other Services' variables);
//! - Secret and ConfigMap files and tokens are checked every [`RunnerConfig::resync`] (a
//!   kubelet takes about a minute for Secrets).
//!
//! ```no_run
//! # async fn demo(client: kube::Client) -> Result<(), pod_runner::RunnerError> {
//! use pod_runner::{PodRunner, RunnerConfig, ImageTable, HostPaths};
//! let mut config = RunnerConfig::new("local", "/tmp/pods");
//! config.images = ImageTable::new().with("hsm-agent", "target/debug/hsm-agent");
//! config.host_paths = HostPaths::new().with("/sys", "tests/fixtures/sys");
//! let runner = PodRunner::start(client, config)?;
//! // ... the pods of the cluster's Deployments and DaemonSets run here ...
//! runner.stop().await;
//! # Ok(()) }
//! ```

mod addresses;
mod backend;
mod config;
mod controller;
pub mod desired;
pub mod devices;
pub mod plan;
pub mod podman;
pub mod probe;
pub mod projected;
pub mod status;
mod supervisor;
pub mod tokens;

pub use addresses::AddressError;
pub use backend::{Backend, BackendError, Launch, LocalProcesses, PodRef, Running, Sandbox};
pub use config::{
    ApiServer, ApiServerError, ContainerImages, HostPaths, ImageTable, PairError, RunnerConfig,
    Runtime,
};
pub use devices::{DeviceAllocation, DeviceMount, Devices};
pub use podman::{Podman, PodmanConfig};

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// The runner could not start.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    /// The state directory could not be created.
    #[error("creating the state directory {path}: {source}")]
    StateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// A running pod runner. Stop it with [`PodRunner::stop`]; dropping it kills every process
/// it started at once.
pub struct PodRunner {
    shutdown: watch::Sender<Option<Duration>>,
    task: Option<tokio::task::JoinHandle<()>>,
    backend: Arc<dyn Backend>,
    state_dir: PathBuf,
}

impl PodRunner {
    /// Starts running the cluster's pods for `config.node_name`, as local processes or, with
    /// [`Runtime::Containers`], as Podman containers (a [`Podman`] backend whose id is the
    /// node's name, set up when the first pod starts). Must be called inside a Tokio runtime.
    pub fn start(client: kube::Client, config: RunnerConfig) -> Result<Self, RunnerError> {
        let backend: Arc<dyn Backend> = match config.runtime {
            Runtime::Processes => Arc::new(LocalProcesses::with_address_locks(
                config.address_locks.clone(),
            )),
            Runtime::Containers(_) => {
                Arc::new(Podman::new(PodmanConfig::new(config.node_name.clone())))
            }
        };
        Self::start_with(client, config, backend)
    }

    /// Starts with another way of running containers (a [`Podman`] set up beforehand with
    /// [`Podman::connect`], for one). The backend must run what `config.runtime` plans.
    pub fn start_with(
        client: kube::Client,
        config: RunnerConfig,
        backend: Arc<dyn Backend>,
    ) -> Result<Self, RunnerError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.state_dir)
            .map_err(|source| RunnerError::StateDir {
                path: config.state_dir.clone(),
                source,
            })?;
        let state_dir = config.state_dir.clone();
        let shared = Arc::new(supervisor::Shared {
            client,
            config,
            backend: backend.clone(),
        });
        let (shutdown, rx) = watch::channel(None);
        let task = tokio::spawn(controller::Controller::new(shared).run(rx));
        Ok(PodRunner {
            shutdown,
            task: Some(task),
            backend,
            state_dir,
        })
    }

    /// The log file of a container of a pod (its stdout and stderr, appended across
    /// restarts); it exists once the container has started.
    pub fn log_path(&self, namespace: &str, pod: &str, container: &str) -> PathBuf {
        supervisor::log_path(&self.state_dir, namespace, pod, container)
    }

    /// A pod's private directory (its volumes under `volumes/<name>`, its logs under `logs/`).
    pub fn pod_dir(&self, namespace: &str, pod: &str) -> PathBuf {
        supervisor::pod_dir(&self.state_dir, namespace, pod)
    }

    /// Stops every pod (SIGTERM, SIGKILL after 5 seconds) and the runner. The Pod objects
    /// are left as they are, as when a node goes away.
    pub async fn stop(self) {
        self.stop_within(Duration::from_secs(5)).await;
    }

    /// Stops every pod, with `grace` between SIGTERM and SIGKILL.
    pub async fn stop_within(mut self, grace: Duration) {
        let _ = self.shutdown.send(Some(grace));
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        self.backend.kill_all();
    }
}

impl Drop for PodRunner {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        self.backend.kill_all();
    }
}
