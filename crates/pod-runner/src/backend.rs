//! How a planned container is run: the [`Backend`] and [`Sandbox`] seam, and the
//! local-process backend.
//!
//! A pod first gets a sandbox (what its containers share: an address, and for containers
//! the network namespace), then its containers start in it. A local sandbox is a loopback
//! address 127.0.X.Y held for the pod; a local container is a child process in its own
//! process group, with exactly the planned environment, its output appended to the pod's
//! log file, and `PR_SET_PDEATHSIG` so it dies with the runner even when the runner is
//! killed. Stopping sends SIGTERM to the group, then SIGKILL.

use crate::addresses::{self, AddressError, Lease};
use crate::plan::{ContainerPlan, Program};
use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking::Registry;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

/// The pod a sandbox is for.
#[derive(Debug, Clone, Copy)]
pub struct PodRef<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// Its name.
    pub name: &'a str,
    /// Its uid.
    pub uid: &'a str,
}

/// What a backend needs to start one container.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// The pod, as `namespace/name` (for logs).
    pub pod: &'a str,
    /// The container.
    pub plan: &'a ContainerPlan,
    /// The log file (appended to).
    pub log: &'a Path,
    /// The working directory of a process (the pod's private directory).
    pub workdir: &'a Path,
}

/// A pod's sandbox or a container could not be set up or started. Never carries a Secret's
/// value.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A process could not be started.
    #[error("starting {executable}: {source}")]
    Spawn {
        /// The executable.
        executable: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// No address was left for the pod.
    #[error(transparent)]
    Address(#[from] AddressError),
    /// The plan is for another kind of backend (an image given to the process backend, or
    /// an executable to a container backend): the runner's [`crate::Runtime`] does not
    /// match its backend.
    #[error("container {container}: {what}")]
    WrongRuntime {
        /// Container.
        container: String,
        /// What did not match.
        what: &'static str,
    },
    /// Podman refused or failed.
    #[error("{action}: {source}")]
    Podman {
        /// What was being done.
        action: String,
        /// Why.
        #[source]
        source: bollard::errors::Error,
    },
    /// Setting up the Podman backend failed (the socket service, the network, the pause
    /// image).
    #[error("{0}")]
    Setup(String),
    /// The container would run as root although its security context says `runAsNonRoot`.
    #[error("container {container}: container has runAsNonRoot and image will run as root")]
    RunsAsRoot {
        /// Container.
        container: String,
    },
}

/// Runs pods: local processes ([`LocalProcesses`]) or Podman containers
/// ([`crate::Podman`]).
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Sets up what the pod's containers share; the pod runs until the sandbox is closed.
    async fn sandbox(&self, pod: PodRef<'_>) -> Result<Box<dyn Sandbox>, BackendError>;
    /// Kills at once everything this backend started that still runs (the runner is going).
    /// May block; callable inside or outside a Tokio runtime.
    fn kill_all(&self);
}

/// What a pod's containers share: its address, and for containers its network namespace.
#[async_trait]
pub trait Sandbox: Send + Sync {
    /// The pod's address (`status.podIP`), where probes reach it.
    fn ip(&self) -> Ipv4Addr;
    /// Starts a container in the pod.
    async fn start(&self, launch: Launch<'_>) -> Result<Box<dyn Running>, BackendError>;
    /// Releases the sandbox once every container of the pod has ended.
    async fn close(self: Box<Self>);
}

/// A started container.
#[async_trait]
pub trait Running: Send {
    /// Waits for it to end; answers its exit code (128 + signal when killed). Cancel-safe.
    async fn wait(&mut self) -> std::io::Result<i32>;
    /// Asks it to stop (SIGTERM).
    fn terminate(&mut self);
    /// Stops it now (SIGKILL).
    fn kill(&mut self);
}

/// The process groups started and not yet reaped, for [`Backend::kill_all`].
mod parking {
    use std::collections::HashSet;
    use std::sync::Mutex;

    /// Live process groups.
    #[derive(Debug, Default)]
    pub struct Registry(Mutex<HashSet<i32>>);

    impl Registry {
        pub fn add(&self, pgid: i32) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(pgid);
        }
        pub fn remove(&self, pgid: i32) {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&pgid);
        }
        pub fn all(&self) -> Vec<i32> {
            self.0
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .copied()
                .collect()
        }
    }
}

/// Containers as local processes, each pod on its own loopback address.
#[derive(Debug, Clone)]
pub struct LocalProcesses {
    live: Arc<Registry>,
    address_locks: PathBuf,
}

impl Default for LocalProcesses {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalProcesses {
    /// A backend with nothing started, keeping its address locks in the default place.
    pub fn new() -> Self {
        Self::with_address_locks(crate::RunnerConfig::new("", "").address_locks)
    }

    /// A backend keeping the lock files of its pods' addresses in `dir` (shared by every
    /// runner of the machine, so that no two pods get one address).
    pub fn with_address_locks(dir: impl Into<PathBuf>) -> Self {
        LocalProcesses {
            live: Arc::default(),
            address_locks: dir.into(),
        }
    }
}

#[async_trait]
impl Backend for LocalProcesses {
    async fn sandbox(&self, _pod: PodRef<'_>) -> Result<Box<dyn Sandbox>, BackendError> {
        let lease = addresses::take(&self.address_locks)?;
        Ok(Box::new(LocalSandbox {
            lease,
            live: self.live.clone(),
        }))
    }

    fn kill_all(&self) {
        for pgid in self.live.all() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            self.live.remove(pgid);
        }
    }
}

/// A pod of local processes: its address, held until closed.
struct LocalSandbox {
    lease: Lease,
    live: Arc<Registry>,
}

#[async_trait]
impl Sandbox for LocalSandbox {
    fn ip(&self) -> Ipv4Addr {
        self.lease.ip()
    }

    async fn start(&self, launch: Launch<'_>) -> Result<Box<dyn Running>, BackendError> {
        let Program::Executable(executable) = &launch.plan.program else {
            return Err(BackendError::WrongRuntime {
                container: launch.plan.name.clone(),
                what: "the process backend runs executables, not images",
            });
        };
        let err = |source| BackendError::Spawn {
            executable: executable.display().to_string(),
            source,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(launch.log)
            .map_err(err)?;
        let log2 = log.try_clone().map_err(err)?;
        let mut command = tokio::process::Command::new(executable);
        command
            .args(&launch.plan.args)
            .env_clear()
            .envs(launch.plan.env.iter().map(|(k, v)| (k, v)))
            .current_dir(launch.workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log2))
            .process_group(0)
            .kill_on_drop(true);
        // The process dies with the thread that started it, even when the runner is killed
        // rather than dropped.
        // SAFETY: the closure runs between fork and exec and makes one prctl system call,
        // which is async-signal-safe; it touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().map_err(err)?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .unwrap_or_default();
        self.live.add(pgid);
        tracing::debug!(pod = launch.pod, container = %launch.plan.name, pid = pgid, ip = %self.ip(), "started");
        Ok(Box::new(LocalProcess {
            child,
            pgid,
            live: self.live.clone(),
            exited: false,
        }))
    }

    async fn close(self: Box<Self>) {}
}

struct LocalProcess {
    child: tokio::process::Child,
    pgid: i32,
    live: Arc<Registry>,
    exited: bool,
}

impl LocalProcess {
    fn signal(&self, signal: Signal) {
        if self.pgid > 0 && !self.exited {
            let _ = killpg(Pid::from_raw(self.pgid), signal);
        }
    }
}

#[async_trait]
impl Running for LocalProcess {
    async fn wait(&mut self) -> std::io::Result<i32> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.wait().await?;
        self.exited = true;
        // What the process left behind in its group goes with it, as with a container.
        let _ = killpg(Pid::from_raw(self.pgid), Signal::SIGKILL);
        self.live.remove(self.pgid);
        Ok(status
            .code()
            .unwrap_or_else(|| 128 + status.signal().unwrap_or_default()))
    }

    fn terminate(&mut self) {
        self.signal(Signal::SIGTERM);
    }

    fn kill(&mut self) {
        self.signal(Signal::SIGKILL);
    }
}

impl Drop for LocalProcess {
    fn drop(&mut self) {
        self.signal(Signal::SIGKILL);
        self.live.remove(self.pgid);
    }
}
