//! `wrong-pin`: the HSMDevice's PIN Secret is changed to a wrong PIN. A connected agent keeps
//! its session, so nothing happens until it logs in again; a crash makes it. The restarted
//! agent offers the token the wrong PIN once, remembers the refusal, and says why it is not
//! ready; restarted again it offers nothing. The right PIN put back in the Secret brings it
//! back without a restart.
//!
//! The try is counted on the token itself: its user PIN flags (read without logging in) show
//! `count low` after a wrong PIN until the next right login, which the scenario makes right
//! after the refusal, so that another try (by the refused agent, or by it restarted) would
//! show. SoftHSM2 never locks a PIN, and the
//! scenario ends with a right login, so the token is left as usable as it was.

use super::agents::{AGENT_CONTAINER, readyz, restarts};
use super::{APPS_NAMESPACE, DEVICE, Run, SECRET, WRITER, agent_name, is_ready, put};
use crate::cluster::{OPERATOR_NAMESPACE, wait_for};
use crate::softhsm::PinCounter;
use anyhow::{Context, Result, ensure};
use hsm_api::HSMSecret;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

/// Where the agent keeps the PINs its token refused: `--state-dir` (`/tmp/hsm-agent`) on
/// the pod's `tmp` volume.
const REFUSALS: &str = "hsm-agent/refused-pins.json";
/// How long the token is watched for another try by an agent that was refused: longer than
/// its first retries (every 2 s, the backoff doubling from 1 s).
const RETRIES_WATCHED: Duration = Duration::from_secs(4);

impl Run {
    pub(super) async fn wrong_pin(&mut self) -> Result<()> {
        let node = self.the_node()?;
        let token = self.token.clone().context("the scenario needs the token")?;
        let agent = agent_name();
        let right = token.pin()?;
        // Every login so far used the right PIN; one more makes sure no earlier try shows.
        token.hsmctl(&["info"])?;
        ensure!(
            token.pin_counter()? == PinCounter::default(),
            "the token's user PIN shows tries before the scenario: {:?}",
            token.pin_counter()?
        );
        let held = self
            .secret_value("password")
            .await?
            .context("the Secret holds no password")?;

        let wrong = loop {
            let pin = crate::softhsm::random_hex(4);
            if pin != right {
                break pin;
            }
        };
        self.set_device_pin(&wrong)?;
        let pod = self
            .ready_agent_pod(&agent, Duration::from_secs(30))
            .await?;
        let first_restarts = restarts(&pod, AGENT_CONTAINER);
        node.kill_container(&pod, AGENT_CONTAINER)?;

        // The restarted agent offers the wrong PIN once and says why it is not ready.
        let (pod, answer) = self
            .agent_not_ready(&agent, first_restarts + 1, "PinRefused")
            .await?;
        let message = answer["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains("will not be tried again"),
            "the agent's first refusal says: {message}"
        );
        ensure!(
            !message.contains(&wrong) && !answer.to_string().contains(&wrong),
            "the agent's readiness answer shows the PIN"
        );
        let counter = token.pin_counter()?;
        ensure!(
            counter.count_low,
            "the token shows no wrong PIN offered: {counter:?}"
        );
        ensure!(
            !counter.locked,
            "one wrong PIN locked the token: {counter:?}"
        );
        let refusals = node.volume_dir(&pod, "tmp").map(|dir| dir.join(REFUSALS))?;
        ensure!(
            refused_count(&refusals)? == 1,
            "the agent remembers {} refused PINs, not 1",
            refused_count(&refusals)?
        );
        ensure!(
            !is_ready(&pod),
            "the agent's pod is Ready with a refused PIN"
        );

        // A right login clears the count, so that another try would show again: the agent
        // keeps trying to connect (every 2 s, backing off), and offers the token nothing.
        token.hsmctl(&["info"])?;
        let cleared = Instant::now();
        ensure!(
            token.pin_counter()? == PinCounter::default(),
            "a right login left the token's count: {:?}",
            token.pin_counter()?
        );
        let why = self.hsmsecret_says("PinRefused").await?;
        crate::progress(&format!(
            "    wrong PIN offered once; agent: {}; HSMSecret {SECRET}: {why}",
            answer["detail"].as_str().unwrap_or_default()
        ));
        ensure!(
            self.secret_value("password").await?.as_deref() == Some(held.as_slice()),
            "the Secret lost its value while the PIN was wrong"
        );
        tokio::time::sleep(RETRIES_WATCHED.saturating_sub(cleared.elapsed())).await;
        ensure!(
            token.pin_counter()? == PinCounter::default(),
            "the agent offered the refused PIN again: {:?}",
            token.pin_counter()?
        );

        // Crashed again, the agent remembers the refusal and offers the token nothing.
        node.kill_container(&pod, AGENT_CONTAINER)?;
        let (pod, answer) = self
            .agent_not_ready(&agent, first_restarts + 2, "PinRefused")
            .await?;
        let message = answer["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains("waiting for a different PIN"),
            "the restarted agent's refusal says: {message}"
        );
        ensure!(
            token.pin_counter()? == PinCounter::default(),
            "the restarted agent offered the refused PIN: {:?}",
            token.pin_counter()?
        );
        ensure!(
            refused_count(&refusals)? == 1,
            "the agent remembers {} refused PINs after a restart, not 1",
            refused_count(&refusals)?
        );

        // The right PIN back in the Secret: the agent takes it without a restart.
        let restarted = restarts(&pod, AGENT_CONTAINER);
        self.set_device_pin(&right)?;
        let fixed = Instant::now();
        let pod = self
            .ready_agent_pod(&agent, Duration::from_secs(90))
            .await?;
        let agent_ready = fixed.elapsed();
        ensure!(
            restarts(&pod, AGENT_CONTAINER) == restarted,
            "the agent needed a restart to take the right PIN"
        );
        let base = self.manager_url(None).await?;
        self.manager_sees_healthy(&base, 1, Duration::from_secs(30))
            .await?;
        crate::progress(&format!(
            "    right PIN back: agent Ready after {} ms, the manager serves it again after {} ms",
            agent_ready.as_millis(),
            fixed.elapsed().as_millis()
        ));
        self.write_reaches_hsm_and_secret(&base, &token, "after the PIN was fixed")
            .await?;
        let counter = token.pin_counter()?;
        ensure!(
            counter.count_low,
            "the token shows no wrong PIN offered: {counter:?}"
        );
        ensure!(
            !counter.locked,
            "one wrong PIN locked the token: {counter:?}"
        );
        let refusals = node.volume_dir(&pod, "tmp").map(|dir| dir.join(REFUSALS))?;
        ensure!(
            refused_count(&refusals)? == 1,
            "the agent remembers {} refused PINs, not 1",
            refused_count(&refusals)?
        );
        ensure!(
            !is_ready(&pod),
            "the agent's pod is Ready with a refused PIN"
        );

        // A right login clears the count, so that another try would show again: the agent
        // keeps trying to connect (every 2 s, backing off), and offers the token nothing.
        token.hsmctl(&["info"])?;
        let cleared = Instant::now();
        ensure!(
            token.pin_counter()? == PinCounter::default(),
            "a right login left the token's count: {:?}",
            token.pin_counter()?
        );
        let why = self.hsmsecret_says("PinRefused").await?;
        crate::progress(&format!(
            "    wrong PIN offered once; agent: {}; HSMSecret {SECRET}: {why}",
            answer["detail"].as_str().unwrap_or_default()
        ));
        ensure!(
            self.secret_value("password").await?.as_deref() == Some(held.as_slice()),
            "the Secret lost its value while the PIN was wrong"
        );
        tokio::time::sleep(RETRIES_WATCHED.saturating_sub(cleared.elapsed())).await;
        ensure!(
            token.pin_counter()? == PinCounter::default(),
            "the agent offered the refused PIN again: {:?}",
            token.pin_counter()?
        );

        // Crashed again, the agent remembers the refusal and offers the token nothing.
        node.kill_container(&pod, AGENT_CONTAINER)?;
        let (pod, answer) = self
            .agent_not_ready(&agent, first_restarts + 2, "PinRefused")
            .await?;
        let message = answer["message"].as_str().unwrap_or_default();
        ensure!(
            message.contains("waiting for a different PIN"),
            "the restarted agent's refusal says: {message}"
        );
        ensure!(
            token.pin_counter()? == PinCounter::default(),
            "the restarted agent offered the refused PIN: {:?}",
            token.pin_counter()?
        );
        ensure!(
            refused_count(&refusals)? == 1,
            "the agent remembers {} refused PINs after a restart, not 1",
            refused_count(&refusals)?
        );

        // The right PIN back in the Secret: the agent takes it without a restart.
        let restarted = restarts(&pod, AGENT_CONTAINER);
        self.set_device_pin(&right)?;
        let fixed = Instant::now();
        let pod = self
            .ready_agent_pod(&agent, Duration::from_secs(90))
            .await?;
        let agent_ready = fixed.elapsed();
        ensure!(
            restarts(&pod, AGENT_CONTAINER) == restarted,
            "the agent needed a restart to take the right PIN"
        );
        let base = self.manager_url(None).await?;
        self.manager_sees_healthy(&base, 1, Duration::from_secs(30))
            .await?;
        crate::progress(&format!(
            "    right PIN back: agent Ready after {} ms, the manager serves it again after {} ms",
            agent_ready.as_millis(),
            fixed.elapsed().as_millis()
        ));
        let password = crate::softhsm::random_hex(12);
        let writer = self.dir.join(format!("{WRITER}.token"));
        let (code, body) = put(
            &format!("{base}/api/v1/hsm/secrets/{SECRET}"),
            &writer,
            &password,
        )?;
        ensure!(
            code == 200 || code == 201,
            "a write after the PIN was fixed answered {code}: {body}"
        );
        ensure!(
            token.value(SECRET, "password")?.as_deref() == Some(password.as_str()),
            "the HSM does not hold what the REST API acknowledged after the PIN was fixed"
        );
        self.secret_value_becomes("password", &password, Duration::from_secs(10))
            .await?;
        let counter = token.pin_counter()?;
        ensure!(
            counter == PinCounter::default(),
            "the token's user PIN is left with {counter:?}"
        );
        Ok(())
    }

    /// Puts `pin` in the HSMDevice's PIN Secret (through stdin: never on a command line).
    fn set_device_pin(&self, pin: &str) -> Result<()> {
        let manifest = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {DEVICE}-pin\n  namespace: {OPERATOR_NAMESPACE}\n\
             stringData:\n  pin: \"{pin}\"\n"
        );
        self.cluster
            .kubectl_with_input(&["apply", "-f", "-"], Some(&manifest))?;
        Ok(())
    }

    /// Waits until agent `agent` has been restarted `restarts` times and its own readiness
    /// answer is "not ready" for `detail`; answers the pod and that answer.
    async fn agent_not_ready(
        &self,
        agent: &str,
        restarts_now: i32,
        detail: &str,
    ) -> Result<(Pod, Value)> {
        wait_for(
            &format!("agent {agent}, restarted, to say it is not ready: {detail}"),
            Duration::from_secs(30),
            || async {
                let pod = self.agent_pod(agent).await?;
                if restarts(&pod, AGENT_CONTAINER) < restarts_now {
                    return Ok(None);
                }
                let (code, body) = readyz(&pod)?;
                Ok((code == 503 && body["detail"] == detail).then_some((pod, body)))
            },
        )
        .await
    }

    /// Waits until the HSMSecret's status names `why` (in a condition or its last error);
    /// answers the condition's message.
    async fn hsmsecret_says(&self, why: &str) -> Result<String> {
        let secrets: Api<HSMSecret> = self.api(APPS_NAMESPACE);
        wait_for(
            &format!("HSMSecret {SECRET}'s status to say {why}"),
            Duration::from_secs(30),
            || async {
                let secret = secrets.get(SECRET).await?;
                let status = serde_json::to_value(&secret.status)?;
                let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
                let said = conditions
                    .iter()
                    .filter_map(|c| c["message"].as_str())
                    .chain(status["lastError"].as_str())
                    .find(|m| m.contains(why))
                    .map(str::to_owned);
                Ok(said)
            },
        )
        .await
    }
}

/// How many refused PINs the agent's memory holds (its fingerprints, never the PINs).
fn refused_count(file: &Path) -> Result<usize> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("the agent's refusal memory {}", file.display()))?;
    let stored: Value = serde_json::from_str(&text)?;
    Ok(stored["refused"].as_array().map_or(0, Vec::len))
}
