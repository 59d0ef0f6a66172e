//! The cluster a run talks to, whatever the backend: its kubeconfig (for kubectl and the
//! plugin), a client, and where its audit log is when the backend has one.

use anyhow::{Context, Result, bail};
use std::future::Future;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The operator's namespace in `deploy/`.
pub const OPERATOR_NAMESPACE: &str = "hsm-secrets-operator-system";

/// A cluster to run scenarios on.
#[derive(Clone)]
pub struct Cluster {
    /// An administrator's kubeconfig.
    pub kubeconfig: PathBuf,
    /// A client with that identity.
    pub client: kube::Client,
    /// The API server's audit log (JSON lines), where the backend keeps one.
    pub audit_log: Option<PathBuf>,
}

impl Cluster {
    /// A cluster from an administrator's kubeconfig.
    pub async fn from_kubeconfig(
        kubeconfig: PathBuf,
        audit_log: Option<PathBuf>,
    ) -> Result<Cluster> {
        let config = kube::Config::from_custom_kubeconfig(
            kube::config::Kubeconfig::read_from(&kubeconfig)?,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        Ok(Cluster {
            client: kube::Client::try_from(config)?,
            kubeconfig,
            audit_log,
        })
    }

    /// `kubectl args` as the administrator; its stdout.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_with_input(args, None)
    }

    /// `kubectl args` with `input` on its stdin; its stdout.
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        let mut child = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run kubectl")?;
        if let Some(input) = input {
            child
                .stdin
                .take()
                .context("kubectl's stdin")?
                .write_all(input.as_bytes())?;
        }
        let output = child.wait_with_output()?;
        if !output.status.success() {
            bail!(
                "kubectl {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }
}

/// Polls `check` every 200 ms until it answers `Some`, or fails after `timeout` saying what
/// was awaited and what the last check saw.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "not yet".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        if started.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what} (last: {last})");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
