//! `mirror`: a second device joins the first. The manager mirrors every secret across all the
//! devices its agents serve (not per HSMDevice), so the second is given what the first holds;
//! a REST write lands on both; a delete made while the second was away reaches it when it is
//! back (its stale copy is the one a mirror without tombstones resurrected), and neither a
//! mirror pass nor an agent restart brings the secret back.
//!
//! The second device is described by [`SecondDevice`]: another USB HSM the node's fixture
//! sysfs tree shows, found by its own HSMDevice, with a SoftHSM2 token beside the first one
//! standing in for it. Once the runtime runs a card beside its agent, the same description
//! names the virtual Pico HSM and OpenSC's module instead, and the scenario stays as it is.

use super::agents::{AGENT_CONTAINER, http, restarts};
use super::{Run, WRITER, is_ready};
use crate::cluster::{OPERATOR_NAMESPACE, wait_for};
use crate::softhsm::Token;
use anyhow::{Context, Result, ensure};
use kube::ResourceExt;
use serde_json::json;
use std::time::{Duration, Instant};

/// A device the run adds beside the first: what discovery finds of it and how its agent
/// reaches its token.
#[derive(Debug, Clone, Copy)]
pub struct SecondDevice {
    /// The HSMDevice's name.
    pub name: &'static str,
    /// Its `deviceType`.
    pub device_type: &'static str,
    /// The USB vendor id the node's sysfs tree shows.
    pub vendor_id: &'static str,
    /// The USB product id.
    pub product_id: &'static str,
    /// The serial the tree shows (the agent's name and the device's id come from it).
    pub serial: &'static str,
    /// The PKCS#11 module inside the agent image.
    pub module: &'static str,
    /// The token's label.
    pub token_label: &'static str,
}

/// The run's second device: the SmartCard-HSM of the node's fixture tree, a SoftHSM2 token.
pub const SECOND: SecondDevice = SecondDevice {
    name: "smartcard-hsm",
    device_type: "SmartCard-HSM",
    vendor_id: "04e6",
    product_id: "5816",
    serial: "DENK0100123",
    module: crate::softhsm::MODULE,
    token_label: "e2e-mirror",
};

/// The secret the scenario writes and deletes through the REST API.
const MIRRORED: &str = "e2e-mirrored";

impl SecondDevice {
    /// Its agent Deployment.
    pub fn agent(&self) -> String {
        hsm_api::names::agent_name(self.name, self.serial).expect("the serial makes a name")
    }

    /// Its PIN Secret and HSMDevice, discovering exactly this serial.
    pub fn manifest(&self, pin: &str) -> String {
        let SecondDevice {
            name,
            device_type,
            vendor_id,
            product_id,
            serial,
            module,
            token_label,
        } = self;
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}-pin\n  namespace: {OPERATOR_NAMESPACE}\n\
             stringData:\n  pin: \"{pin}\"\n---\n\
             apiVersion: hsm.j5t.io/v1alpha1\nkind: HSMDevice\nmetadata:\n  name: {name}\n  namespace: {OPERATOR_NAMESPACE}\n\
             spec:\n  deviceType: {device_type}\n  discovery:\n    usb:\n      - vendorId: \"{vendor_id}\"\n        productId: \"{product_id}\"\n        serialNumber: {serial}\n\
             \x20 pkcs11:\n    libraryPath: {module}\n    tokenLabel: {token_label}\n\
             \x20   pinSecret:\n      name: {name}-pin\n      key: pin\n"
        )
    }
}

impl Run {
    pub(super) async fn mirror(&mut self) -> Result<()> {
        let first = self.token.clone().context("the scenario needs the token")?;
        let second = first.create_beside(&self.dir.join("softhsm-second"), SECOND.token_label)?;
        ensure!(
            second.secrets()?.is_empty(),
            "the second token is not empty"
        );
        self.cluster.kubectl_with_input(
            &["apply", "-f", "-"],
            Some(&SECOND.manifest(&second.pin()?)),
        )?;
        let joined = Instant::now();
        self.pool_ready_with(SECOND.name, SECOND.serial).await?;
        let agent = SECOND.agent();
        self.ready_agent_pod(&agent, Duration::from_secs(120))
            .await?;

        // What the first device held before the second came is mirrored onto it.
        let held = sorted(first.secrets()?);
        ensure!(
            held.iter().any(|s| s == super::SECRET),
            "the first token lacks {}: {held:?}",
            super::SECRET
        );
        let password = first.value(super::SECRET, "password")?;
        wait_for(
            "the first device's secrets mirrored onto the second",
            Duration::from_secs(60),
            || async {
                Ok((sorted(second.secrets()?) == held
                    && second.value(super::SECRET, "password")? == password)
                    .then_some(()))
            },
        )
        .await?;
        crate::progress(&format!(
            "    second device joined; {} secrets mirrored onto it {} ms after its HSMDevice",
            held.len(),
            joined.elapsed().as_millis()
        ));

        // A REST write lands on both tokens.
        let base = self.manager_url(None).await?;
        self.manager_sees_healthy(&base, 2, Duration::from_secs(30))
            .await?;
        let writer = self.dir.join(format!("{WRITER}.token"));
        let url = format!("{base}/api/v1/hsm/secrets/{MIRRORED}");
        let value = crate::softhsm::random_hex(12);
        let body = json!({"data": {"value": value}}).to_string();
        let (code, answer) = http("PUT", &url, Some(&writer), Some(&body))?;
        ensure!(
            code == 200 || code == 201,
            "the write answered {code}: {answer}"
        );
        for token in [&first, &second] {
            ensure!(
                token.value(MIRRORED, "value")?.as_deref() == Some(value.as_str()),
                "token {} lacks the write the REST API acknowledged",
                token.label()
            );
        }

        // The second device goes away (its agent's pod deleted: the node starts another,
        // Ready only after its first probe), and the secret is deleted meanwhile.
        let gone = self.agent_pod(&agent).await?;
        self.cluster.kubectl(&[
            "delete",
            "pod",
            &gone.name_any(),
            "-n",
            OPERATOR_NAMESPACE,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ])?;
        self.manager_follows(&base, 1).await?;
        let (code, answer) = http("DELETE", &url, Some(&writer), None)?;
        ensure!(code == 200, "the delete answered {code}: {answer}");
        ensure!(
            answer["data"]["devices"] == 1,
            "the delete reached {} devices: the second was back before it ({answer})",
            answer["data"]["devices"]
        );
        ensure!(
            first.value(MIRRORED, "value")?.is_none(),
            "the first token still holds {MIRRORED} after the delete"
        );
        ensure!(
            second.value(MIRRORED, "value")?.as_deref() == Some(value.as_str()),
            "the second token, away during the delete, does not hold the old copy"
        );

        // Back, the second device is given the delete; the old copy comes back nowhere.
        let back = self
            .ready_agent_pod(&agent, Duration::from_secs(60))
            .await?;
        ensure!(
            back.uid() != gone.uid(),
            "the second device's agent pod was not replaced"
        );
        let returned = Instant::now();
        wait_for(
            "the delete mirrored onto the second device",
            Duration::from_secs(60),
            || async { Ok(second.value(MIRRORED, "value")?.is_none().then_some(())) },
        )
        .await?;
        crate::progress(&format!(
            "    delete made while the second device was away reached it {} ms after its agent was Ready",
            returned.elapsed().as_millis()
        ));
        self.manager_sees_healthy(&base, 2, Duration::from_secs(30))
            .await?;
        let answer = self.force_mirror_pass(&base, &writer)?;
        let summary = &answer["data"]["summary"];
        ensure!(
            summary["failures"].as_array().is_some_and(Vec::is_empty)
                && summary["devices_skipped"] == 0,
            "the forced mirror pass: {summary}"
        );
        self.deleted_everywhere(&url, &writer, [&first, &second])?;

        // An agent restart re-reads its token and announces all of it: still nothing returns.
        let node = self.the_node()?;
        let pod = self
            .ready_agent_pod(&agent, Duration::from_secs(30))
            .await?;
        node.kill_container(&pod, AGENT_CONTAINER)?;
        wait_for(
            "the second device's agent restarted and Ready",
            Duration::from_secs(60),
            || async {
                let now = self.agent_pod(&agent).await?;
                Ok(
                    (restarts(&now, AGENT_CONTAINER) > restarts(&pod, AGENT_CONTAINER)
                        && is_ready(&now))
                    .then_some(()),
                )
            },
        )
        .await?;
        self.manager_sees_healthy(&base, 2, Duration::from_secs(30))
            .await?;
        self.force_mirror_pass(&base, &writer)?;
        self.deleted_everywhere(&url, &writer, [&first, &second])?;
        ensure!(
            second.value(super::SECRET, "password")? == first.value(super::SECRET, "password")?,
            "the devices disagree on {}",
            super::SECRET
        );

        // The second HSMDevice removed: its agent goes, its token keeps what it holds, and
        // the manager serves the first device alone again.
        let kept = second.value(super::SECRET, "password")?;
        self.delete_device(SECOND.name, &agent).await?;
        ensure!(
            kept.is_some() && second.value(super::SECRET, "password")? == kept,
            "removing the second HSMDevice changed its token"
        );
        self.manager_sees_healthy(&base, 1, Duration::from_secs(30))
            .await?;
        Ok(())
    }

    /// Waits until the manager at `base` follows exactly `count` devices.
    async fn manager_follows(&self, base: &str, count: u64) -> Result<()> {
        let url = format!("{base}/api/v1/health");
        wait_for(
            &format!("the manager at {base} to follow {count} devices"),
            Duration::from_secs(30),
            || async {
                let (_, body) = http("GET", &url, None, None)?;
                Ok((body["data"]["devices"] == count).then_some(()))
            },
        )
        .await
    }

    /// The secret at `url` is gone from every token and the REST API finds none.
    fn deleted_everywhere<const N: usize>(
        &self,
        url: &str,
        reader: &std::path::Path,
        tokens: [&Token; N],
    ) -> Result<()> {
        for token in tokens {
            ensure!(
                token.value(MIRRORED, "value")?.is_none(),
                "{MIRRORED} came back on token {}",
                token.label()
            );
        }
        let (code, answer) = http("GET", url, Some(reader), None)?;
        ensure!(
            code == 404,
            "reading the deleted {MIRRORED} answered {code}: {answer}"
        );
        Ok(())
    }
}

fn sorted(mut names: Vec<String>) -> Vec<String> {
    names.sort();
    names
}
