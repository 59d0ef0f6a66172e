//! What the agent scenarios share: an agent's pod as the node runs it, the agent's own
//! readiness endpoint, the manager's view of its devices, and HTTP calls to both.

use super::{Run, is_ready};
use crate::cluster::{OPERATOR_NAMESPACE, wait_for};
use crate::node::Node;
use anyhow::{Context, Result, ensure};
use hsm_api::HSMPool;
use hsm_api::names::ports;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ContainerStatus, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

/// The agent pods' only container.
pub const AGENT_CONTAINER: &str = "agent";

impl Run {
    /// The node, which crash scenarios need.
    pub(super) fn the_node(&self) -> Result<Arc<dyn Node>> {
        self.node
            .clone()
            .context("this backend gives the run no way to reach the node beneath the pods")
    }

    /// The pod of agent Deployment `agent` that is not being deleted.
    pub(super) async fn agent_pod(&self, agent: &str) -> Result<Pod> {
        let pods: Api<Pod> = self.api(OPERATOR_NAMESPACE);
        let list = pods
            .list(&ListParams::default().labels(&format!("app={agent}")))
            .await?;
        let mut live = list
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none());
        let pod = live
            .next()
            .with_context(|| format!("agent {agent} has no pod"))?;
        ensure!(live.next().is_none(), "agent {agent} has several pods");
        Ok(pod)
    }

    /// Waits until agent `agent` has a Ready pod; answers it.
    pub(super) async fn ready_agent_pod(&self, agent: &str, timeout: Duration) -> Result<Pod> {
        wait_for(&format!("agent {agent} Ready"), timeout, || async {
            let pod = self.agent_pod(agent).await?;
            Ok(is_ready(&pod).then_some(pod))
        })
        .await
    }

    /// Waits until the manager at `base` follows `count` devices, every one healthy (its
    /// agent holds a working token session). The REST API reads and writes through them.
    pub(super) async fn manager_sees_healthy(
        &self,
        base: &str,
        count: u64,
        timeout: Duration,
    ) -> Result<()> {
        let url = format!("{base}/api/v1/health");
        wait_for(
            &format!("the manager at {base} to follow {count} healthy devices"),
            timeout,
            || async {
                let (_, body) = http("GET", &url, None, None)?;
                let data = &body["data"];
                Ok((data["devices"] == count && data["active_nodes"] == count).then_some(()))
            },
        )
        .await
    }

    /// Writes a fresh password to the run's secret through the manager at `base`, as the
    /// writer ServiceAccount; checks the token holds what the REST API acknowledged and the
    /// Secret follows. `when` names the moment in failure messages.
    pub(super) async fn write_reaches_hsm_and_secret(
        &self,
        base: &str,
        token: &crate::softhsm::Token,
        when: &str,
    ) -> Result<()> {
        let password = crate::softhsm::random_hex(12);
        let writer = self.dir.join(format!("{}.token", super::WRITER));
        let (code, body) = super::put(
            &format!("{base}/api/v1/hsm/secrets/{}", super::SECRET),
            &writer,
            &password,
        )?;
        ensure!(
            code == 200 || code == 201,
            "a write {when} answered {code}: {body}"
        );
        ensure!(
            token.value(super::SECRET, "password")?.as_deref() == Some(password.as_str()),
            "the HSM does not hold what the REST API acknowledged {when}"
        );
        self.secret_value_becomes("password", &password, Duration::from_secs(10))
            .await?;
        Ok(())
    }

    /// Deletes HSMDevice `device` and waits until its agent `agent` (Deployment and pods)
    /// is gone.
    pub(super) async fn delete_device(&self, device: &str, agent: &str) -> Result<()> {
        self.cluster.kubectl(&[
            "delete",
            "hsmdevice",
            device,
            "-n",
            OPERATOR_NAMESPACE,
            "--wait=true",
            "--timeout=60s",
        ])?;
        let deployments: Api<Deployment> = self.api(OPERATOR_NAMESPACE);
        let pods: Api<Pod> = self.api(OPERATOR_NAMESPACE);
        wait_for(
            &format!("agent {agent} and its pods to be gone"),
            Duration::from_secs(60),
            || async {
                let deployment = deployments.get_opt(agent).await?;
                let running = pods
                    .list(&ListParams::default().labels(&format!("app={agent}")))
                    .await?;
                Ok((deployment.is_none() && running.items.is_empty()).then_some(()))
            },
        )
        .await
    }

    /// Waits until HSMPool `<device>-pool` is Ready with the device of `serial`.
    pub(super) async fn pool_ready_with(&self, device: &str, serial: &str) -> Result<()> {
        let pools: Api<HSMPool> = self.api(OPERATOR_NAMESPACE);
        let pool = hsm_api::names::pool_name(device);
        wait_for(
            &format!("HSMPool {pool} Ready with device {serial}"),
            Duration::from_secs(120),
            || async {
                let status = pools.get_opt(&pool).await?.and_then(|p| p.status);
                Ok(status
                    .filter(|s| {
                        serde_json::to_value(&s.phase).ok() == Some(Value::from("Ready"))
                            && s.aggregated_devices
                                .iter()
                                .any(|d| d.serial_number == serial)
                    })
                    .map(|_| ()))
            },
        )
        .await
    }

    /// A forced mirror pass through the manager at `base`, as the writer; its answer.
    pub(super) fn force_mirror_pass(&self, base: &str, writer: &Path) -> Result<Value> {
        let (code, answer) = http(
            "POST",
            &format!("{base}/api/v1/hsm/mirror/sync"),
            Some(writer),
            Some(r#"{"force":true}"#),
        )?;
        ensure!(
            code == 200,
            "a forced mirror pass answered {code}: {answer}"
        );
        Ok(answer)
    }

    /// The apps Secret's `key` now (`None`: no Secret or no such key).
    pub(super) async fn secret_value(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let secrets: Api<Secret> = self.api(super::APPS_NAMESPACE);
        Ok(secrets
            .get_opt(super::SECRET)
            .await?
            .and_then(|s| s.data)
            .and_then(|d| d.get(key).map(|v| v.0.clone())))
    }
}

/// The status of container `name` of `pod`.
pub fn container_status<'a>(pod: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// How many times container `name` of `pod` was restarted.
pub fn restarts(pod: &Pod, name: &str) -> i32 {
    container_status(pod, name).map_or(0, |c| c.restart_count)
}

/// The agent's own answer on its health port: `GET /readyz`'s status code and body (the
/// body says why it is not ready: `detail` and `message`).
pub fn readyz(pod: &Pod) -> Result<(u16, Value)> {
    let ip = pod
        .status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .with_context(|| format!("pod {} has no address", pod.name_any()))?;
    http(
        "GET",
        &format!("http://{ip}:{}/readyz", ports::AGENT_HEALTH),
        None,
        None,
    )
}

/// An HTTP request with curl: `method url`, as the holder of the token in `token_file`
/// when given, with a JSON `body` when given; the status code and the JSON body (`null`
/// when the body is not JSON).
pub fn http(
    method: &str,
    url: &str,
    token_file: Option<&Path>,
    body: Option<&str>,
) -> Result<(u16, Value)> {
    let mut command = Command::new("curl");
    command.args([
        "-sS",
        "-X",
        method,
        "--max-time",
        "30",
        "-w",
        "\n%{http_code}",
    ]);
    if let Some(file) = token_file {
        let token = std::fs::read_to_string(file)?;
        command
            .arg("-H")
            .arg(format!("Authorization: Bearer {}", token.trim()));
    }
    if let Some(body) = body {
        command.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            body,
        ]);
    }
    let output = command.arg(url).output().context("cannot run curl")?;
    ensure!(
        output.status.success(),
        "curl {method} {url}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    let (body, code) = text
        .trim_end()
        .rsplit_once('\n')
        .unwrap_or(("", text.trim()));
    Ok((
        code.parse().unwrap_or(0),
        serde_json::from_str(body).unwrap_or(Value::Null),
    ))
}
