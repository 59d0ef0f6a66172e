//! How a planned container is run: the [`Backend`] seam, and the local-process backend.
//!
//! A local container is a child process in its own process group, with exactly the planned
//! environment, its output appended to the pod's log file, and `PR_SET_PDEATHSIG` so it dies
//! with the runner even when the runner is killed. Stopping sends SIGTERM to the group, then
//! SIGKILL.

use crate::plan::ContainerPlan;
use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking::Registry;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;

/// What a backend needs to start one container.
#[derive(Debug, Clone, Copy)]
pub struct Launch<'a> {
    /// The pod, as `namespace/name` (for logs).
    pub pod: &'a str,
    /// The container.
    pub plan: &'a ContainerPlan,
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// The log file (appended to).
    pub log: &'a Path,
    /// The working directory (the pod's private directory).
    pub workdir: &'a Path,
}

/// A container could not be started.
#[derive(Debug, thiserror::Error)]
#[error("starting {executable}: {source}")]
pub struct BackendError {
    /// The executable.
    pub executable: String,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Runs containers: local processes now; Podman containers are meant to be another
/// implementation.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Starts a container.
    async fn start(&self, launch: Launch<'_>) -> Result<Box<dyn Running>, BackendError>;
    /// Kills at once everything this backend started that still runs (the runner is going).
    fn kill_all(&self);
    /// Whether containers see their volumes at their mount paths (a container runtime
    /// mounts the pod's volume directories there). Local processes do not: their arguments
    /// and environment are rewritten to the pod's directory, and a ServiceAccount mount
    /// comes to them as a kubeconfig.
    fn mounts_in_place(&self) -> bool {
        false
    }
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

/// Containers as local processes.
#[derive(Debug, Default, Clone)]
pub struct LocalProcesses {
    live: Arc<Registry>,
}

impl LocalProcesses {
    /// A backend with nothing started.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Backend for LocalProcesses {
    async fn start(&self, launch: Launch<'_>) -> Result<Box<dyn Running>, BackendError> {
        let err = |source| BackendError {
            executable: launch.plan.executable.display().to_string(),
            source,
        };
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(launch.log)
            .map_err(err)?;
        let log2 = log.try_clone().map_err(err)?;
        let mut command = tokio::process::Command::new(&launch.plan.executable);
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
        tracing::debug!(pod = launch.pod, container = %launch.plan.name, pid = pgid, ip = %launch.ip, "started");
        Ok(Box::new(LocalProcess {
            child,
            pgid,
            live: self.live.clone(),
            exited: false,
        }))
    }

    fn kill_all(&self) {
        for pgid in self.live.all() {
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
            self.live.remove(pgid);
        }
    }
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
