//! Supervises pcscd, the PC/SC daemon a smartcard module (OpenSC) talks to.
//!
//! The agent starts pcscd in the foreground as its child, waits for its socket, forwards its
//! output into the agent's log, restarts it when it dies, and stops it with SIGTERM, then
//! SIGKILL after a grace period. Its process runs in its own process group so a signal meant
//! for the agent's terminal does not reach it directly.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Where pcscd listens on Debian and in the agent image.
pub const DEFAULT_SOCKET: &str = "/run/pcscd/pcscd.comm";
/// Where Debian installs pcscd.
pub const DEFAULT_PROGRAM: &str = "/usr/sbin/pcscd";

/// How to run pcscd.
#[derive(Debug, Clone)]
pub struct PcscdConfig {
    /// The program to run.
    pub program: PathBuf,
    /// Its arguments (foreground mode is the caller's to include).
    pub args: Vec<String>,
    /// The socket whose appearance means pcscd is ready.
    pub socket: PathBuf,
    /// How long to wait for the socket.
    pub start_timeout: Duration,
    /// How long SIGTERM gets before SIGKILL.
    pub stop_timeout: Duration,
    /// Pause before restarting a pcscd that died.
    pub restart_delay: Duration,
}

impl PcscdConfig {
    /// Debian's pcscd in the foreground (`-f`), with `-d` for debug logging, and
    /// `--disable-polkit` where this pcscd knows the option (pcsc-lite 2 does; Debian 12's
    /// 1.9.9 rejects it).
    pub fn standard(debug: bool) -> Self {
        let mut args = vec!["-f".to_owned()];
        if supports_option(Path::new(DEFAULT_PROGRAM), "--disable-polkit") {
            args.push("--disable-polkit".into());
        }
        if debug {
            args.push("-d".into());
        }
        PcscdConfig {
            program: DEFAULT_PROGRAM.into(),
            args,
            socket: DEFAULT_SOCKET.into(),
            start_timeout: Duration::from_secs(5),
            stop_timeout: Duration::from_secs(5),
            restart_delay: Duration::from_secs(1),
        }
    }
}

/// Whether `program --help` mentions `option`.
pub fn supports_option(program: &Path, option: &str) -> bool {
    std::process::Command::new(program)
        .arg("--help")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout).contains(option)
                || String::from_utf8_lossy(&o.stderr).contains(option)
        })
        .unwrap_or(false)
}

/// Why pcscd could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PcscdError {
    /// The program could not be run.
    #[error("cannot start {program}")]
    Spawn {
        /// The program.
        program: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// It exited before its socket appeared.
    #[error("pcscd exited before it was ready ({0})")]
    ExitedEarly(String),
    /// Its socket did not appear in time.
    #[error("pcscd's socket {0} did not appear in time")]
    NoSocket(String),
}

/// What pcscd is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PcscdState {
    /// Started, socket not there yet.
    Starting,
    /// Serving, with this process id.
    Running(u32),
    /// Died; will be restarted.
    Restarting,
    /// Stopped for good.
    Stopped,
}

/// A supervised pcscd.
pub struct Pcscd {
    stop: watch::Sender<bool>,
    state: watch::Receiver<PcscdState>,
    restarts: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl Pcscd {
    /// Starts pcscd and waits until its socket is there.
    pub async fn start(config: PcscdConfig) -> Result<Pcscd, PcscdError> {
        let mut child = spawn(&config)?;
        let pid = wait_ready(&config, &mut child).await?;
        let (stop, stop_rx) = watch::channel(false);
        let (state_tx, state) = watch::channel(PcscdState::Running(pid));
        let restarts = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(supervise(
            config,
            child,
            stop_rx,
            state_tx,
            restarts.clone(),
        ));
        Ok(Pcscd {
            stop,
            state,
            restarts,
            task,
        })
    }

    /// What pcscd is doing now.
    pub fn state(&self) -> PcscdState {
        self.state.borrow().clone()
    }

    /// Waits until pcscd is in a state `pred` accepts.
    pub async fn wait_for(&mut self, pred: impl Fn(&PcscdState) -> bool) -> PcscdState {
        match self.state.wait_for(|s| pred(s)).await {
            Ok(s) => s.clone(),
            Err(_) => PcscdState::Stopped,
        }
    }

    /// How many times it was restarted after dying.
    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::SeqCst)
    }

    /// Stops pcscd: SIGTERM, then SIGKILL after the grace period.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn spawn(config: &PcscdConfig) -> Result<Child, PcscdError> {
    if let Some(dir) = config.socket.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    // A socket left by a pcscd that was killed makes the next one refuse to start.
    let _ = std::fs::remove_file(&config.socket);
    let mut child = Command::new(&config.program)
        .args(&config.args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| PcscdError::Spawn {
            program: config.program.display().to_string(),
            source,
        })?;
    forward_output(child.stdout.take());
    forward_output(child.stderr.take());
    Ok(child)
}

/// Copies pcscd's output into the agent's log, a line at a time.
fn forward_output(stream: Option<impl tokio::io::AsyncRead + Unpin + Send + 'static>) {
    let Some(stream) = stream else { return };
    tokio::spawn(async move {
        let mut lines = BufReader::new(stream).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "pcscd", "{line}");
        }
    });
}

async fn wait_ready(config: &PcscdConfig, child: &mut Child) -> Result<u32, PcscdError> {
    let deadline = tokio::time::Instant::now() + config.start_timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(PcscdError::ExitedEarly(status.to_string()));
        }
        if config.socket.exists() {
            return Ok(child.id().unwrap_or(0));
        }
        if tokio::time::Instant::now() >= deadline {
            terminate(child, config.stop_timeout).await;
            return Err(PcscdError::NoSocket(config.socket.display().to_string()));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn supervise(
    config: PcscdConfig,
    mut child: Child,
    mut stop: watch::Receiver<bool>,
    state: watch::Sender<PcscdState>,
    restarts: Arc<AtomicU64>,
) {
    loop {
        tokio::select! {
            status = child.wait() => {
                tracing::warn!(status = ?status.ok(), "pcscd exited; restarting it");
                let _ = state.send(PcscdState::Restarting);
                restarts.fetch_add(1, Ordering::SeqCst);
                tokio::select! {
                    _ = tokio::time::sleep(config.restart_delay) => {}
                    _ = stop.changed() => break,
                }
                let started = match spawn(&config) {
                    Ok(mut c) => wait_ready(&config, &mut c).await.map(|pid| (c, pid)),
                    Err(e) => Err(e),
                };
                match started {
                    Ok((c, pid)) => {
                        child = c;
                        let _ = state.send(PcscdState::Running(pid));
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "pcscd did not come back; trying again");
                        // Keep a dead placeholder: the next loop turn waits on it at once.
                        match spawn_placeholder() {
                            Some(c) => child = c,
                            None => break,
                        }
                    }
                }
            }
            _ = stop.changed() => {
                terminate(&mut child, config.stop_timeout).await;
                break;
            }
        }
    }
    let _ = std::fs::remove_file(&config.socket);
    let _ = state.send(PcscdState::Stopped);
}

/// A process that exits at once, so the supervision loop retries after its delay.
fn spawn_placeholder() -> Option<Child> {
    Command::new("true").kill_on_drop(true).spawn().ok()
}

/// SIGTERM, then SIGKILL after `grace`.
async fn terminate(child: &mut Child, grace: Duration) {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(pid as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(grace, child.wait()).await.is_ok() {
            return;
        }
        tracing::warn!("pcscd ignored SIGTERM; killing it");
    }
    let _ = child.kill().await;
}
