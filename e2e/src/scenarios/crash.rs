//! `agent-killed`: the agent's process dies (SIGKILL, as a crash or the OOM killer kills it)
//! while its pod stays. The node restarts the container in the same pod, the agent connects
//! its token again, and nothing the Secret holds wavers meanwhile.

use super::agents::{AGENT_CONTAINER, container_status, restarts};
use super::{Run, agent_name, is_ready};
use anyhow::{Context, Result, bail, ensure};
use kube::ResourceExt;
use std::time::{Duration, Instant};

/// How long the agent may take to be Ready again (its readiness probe starts after 5 s).
const BACK: Duration = Duration::from_secs(60);

impl Run {
    pub(super) async fn agent_killed(&mut self) -> Result<()> {
        let node = self.the_node()?;
        let token = self.token.clone().context("the scenario needs the token")?;
        let agent = agent_name();
        let before = self
            .ready_agent_pod(&agent, Duration::from_secs(30))
            .await?;
        let restarted_before = restarts(&before, AGENT_CONTAINER);
        let held = self
            .secret_value("password")
            .await?
            .context("the Secret holds no password before the crash")?;

        node.kill_container(&before, AGENT_CONTAINER)?;
        let killed = Instant::now();
        // Until the agent is Ready again, every look at the Secret finds the same value.
        let mut looks = 0;
        let after = loop {
            match self.secret_value("password").await? {
                Some(value) if value == held => looks += 1,
                other => bail!(
                    "the Secret changed while the agent was down ({})",
                    match other {
                        Some(_) => "another value",
                        None => "no value",
                    }
                ),
            }
            let pod = self.agent_pod(&agent).await?;
            if restarts(&pod, AGENT_CONTAINER) > restarted_before && is_ready(&pod) {
                break pod;
            }
            if killed.elapsed() > BACK {
                bail!("agent {agent} was not restarted and Ready within {BACK:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        crate::progress(&format!(
            "    agent killed; restarted in place and Ready after {} ms; the Secret held its value at all {looks} looks",
            killed.elapsed().as_millis()
        ));
        ensure!(
            after.uid() == before.uid(),
            "the agent's pod was replaced ({} -> {}), not its container restarted",
            before.name_any(),
            after.name_any()
        );
        ensure!(
            restarts(&after, AGENT_CONTAINER) == restarted_before + 1,
            "the agent was restarted {} times for one crash",
            restarts(&after, AGENT_CONTAINER) - restarted_before
        );
        let crash = container_status(&after, AGENT_CONTAINER)
            .and_then(|c| c.last_state.as_ref())
            .and_then(|s| s.terminated.as_ref())
            .context("the pod's status records no end of the killed container")?;
        ensure!(
            crash.exit_code == 128 + 9,
            "the killed container ended with {}, not as killed by SIGKILL (137)",
            crash.exit_code
        );

        // The manager follows the restarted agent again: a write reaches the HSM and the Secret.
        let base = self.manager_url(None).await?;
        self.manager_sees_healthy(&base, 1, Duration::from_secs(30))
            .await?;
        self.write_reaches_hsm_and_secret(&base, &token, "after the restart")
            .await?;
        Ok(())
    }
}
