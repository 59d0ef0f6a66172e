//! `card-pulled`: the virtual Pico HSM, served by its own agent (the agent's pcscd, OpenSC,
//! the card in its vpcd reader), is pulled while writes go on through the REST API and
//! plugged back in. The agent recovers in place (same pod, no container restart, Ready
//! again); a write made while the card was out is answered with the card's failure in its
//! device results (the other device acknowledges it); and nothing acknowledged is lost: every
//! acknowledged write reads back through the REST API, the HSMSecret's Secret holds the last
//! one, and the card itself, read while pulled, holds every one. A delete made while the card
//! was out reaches it once it is back (SoftHSM2 and the card mirrored), and a later mirror
//! pass does not bring the secret back.

use super::agents::{AGENT_CONTAINER, http, readyz, restarts};
use super::{Run, SECRET, WRITER};
use crate::card::{self, VirtualCard};
use crate::cluster::{OPERATOR_NAMESPACE, wait_for};
use anyhow::{Context, Result, ensure};
use base64::Engine as _;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::json;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The virtual card's HSMDevice.
pub const CARD_DEVICE: &str = "smartcard-hsm";

/// One write through the REST API and what it answered.
struct Write {
    /// The secret written.
    name: String,
    /// The value written (key `value`).
    value: String,
    /// Whether the card itself took it (its device result).
    on_card: bool,
}

/// The card's PIN Secret and HSMDevice: the SmartCard-HSM of the node's fixture tree, OpenSC's
/// module inside the agent image, the card's token label.
pub fn card_device_manifest(pin: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {CARD_DEVICE}-pin\n  namespace: {OPERATOR_NAMESPACE}\n\
         stringData:\n  pin: \"{pin}\"\n---\n\
         apiVersion: hsm.j5t.io/v1alpha1\nkind: HSMDevice\nmetadata:\n  name: {CARD_DEVICE}\n  namespace: {OPERATOR_NAMESPACE}\n\
         spec:\n  deviceType: {device_type}\n  discovery:\n    usb:\n      - vendorId: \"04e6\"\n        productId: \"5816\"\n        serialNumber: {serial}\n\
         \x20 pkcs11:\n    libraryPath: {module}\n    tokenLabel: \"{label}\"\n\
         \x20   pinSecret:\n      name: {CARD_DEVICE}-pin\n      key: pin\n",
        device_type = crate::emulated::CARD_DEVICE_TYPE,
        serial = card::SERIAL,
        module = card::MODULE,
        label = card::TOKEN_LABEL,
    )
}

/// The card's agent Deployment.
pub fn card_agent() -> String {
    hsm_api::names::agent_name(CARD_DEVICE, card::SERIAL).expect("the serial makes a name")
}

impl Run {
    pub(super) async fn card_pulled(&mut self) -> Result<()> {
        let Some(card) = self.card.clone() else {
            crate::progress(
                "    skipped: no virtual card on this runtime (with local processes an agent's pcscd would be this machine's own)",
            );
            return Ok(());
        };
        let agent = card_agent();
        let pod = self.plug_card_into_its_agent(&card).await?;
        let restarts_before = restarts(&pod, AGENT_CONTAINER);
        let base = self.manager_url(None).await?;
        self.manager_sees_healthy(&base, 2, Duration::from_secs(60))
            .await?;
        let writer = self.dir.join(format!("{WRITER}.token"));
        let mut writes: Vec<Write> = Vec::new();
        let mut next = 0;

        // Writes with the card in: the card takes each.
        for _ in 0..3 {
            let write = card_write(&base, &writer, next, true)?;
            next += 1;
            ensure!(write.on_card, "a write with the card in missed the card");
            writes.push(write);
        }

        // Pulled: the writes go on; the card's device result says it failed, the other
        // device acknowledges them; the HSMSecret's secret is written too.
        let pulled = Instant::now();
        card.pull();
        let mut failed_on_card = 0;
        let mut slowest = Duration::ZERO;
        for _ in 0..4 {
            let started = Instant::now();
            let write = card_write(&base, &writer, next, false)?;
            slowest = slowest.max(started.elapsed());
            next += 1;
            failed_on_card += usize::from(!write.on_card);
            writes.push(write);
        }
        ensure!(
            failed_on_card > 0,
            "every write after the card was pulled reached the card"
        );
        // A delete the card misses: the first write, which the card holds.
        let deleted = writes.remove(0);
        let deleted_url = format!("{base}/api/v1/hsm/secrets/{}", deleted.name);
        let (code, answer) = http("DELETE", &deleted_url, Some(&writer), None)?;
        ensure!(
            matches!(code, 200 | 206),
            "deleting {} with the card out answered {code}: {answer}",
            deleted.name
        );
        let password = crate::softhsm::random_hex(12);
        let (code, answer) = http(
            "PUT",
            &format!("{base}/api/v1/hsm/secrets/{SECRET}"),
            Some(&writer),
            Some(&json!({"data": {"username": "app", "password": password}}).to_string()),
        )?;
        ensure!(
            matches!(code, 200 | 201 | 206),
            "the HSMSecret's write with the card out answered {code}: {answer}"
        );
        // The agent says why it cannot serve. A reconnection may briefly look good while
        // OpenSC still answers from what it cached of the card, so the answer is waited for.
        let agent_pod = self.agent_pod(&agent).await?;
        let (ready_code, ready_body) = wait_for(
            "the agent to say it is not ready with its card pulled",
            Duration::from_secs(20),
            || async {
                let (code, body) = readyz(&agent_pod)?;
                Ok((code != 200).then_some((code, body)))
            },
        )
        .await?;
        crate::progress(&format!(
            "    card pulled: {failed_on_card} of 4 writes failed on it (the other device took them; the slowest answered in {} ms); the agent said {ready_code} {}",
            slowest.as_millis(),
            ready_body["detail"]
                .as_str()
                .or(ready_body["message"].as_str())
                .unwrap_or_default()
        ));

        // Plugged back into the same pod: the agent recovers in place.
        let address = pod_address(&agent_pod)?;
        card.plug(address)?;
        let plugged = Instant::now();
        let back = self
            .ready_agent_pod(&agent, Duration::from_secs(60))
            .await
            .context("the agent did not recover once its card was back")?;
        ensure!(
            back.uid() == pod.uid(),
            "the agent's pod was replaced: recovery was not in place"
        );
        ensure!(
            restarts(&back, AGENT_CONTAINER) == restarts_before,
            "the agent's container restarted ({} -> {})",
            restarts_before,
            restarts(&back, AGENT_CONTAINER)
        );
        // The pod may not have been probed while the card was out: the agent itself is
        // asked (its probe reconnects the card) before the manager's view is trusted.
        wait_for(
            "the agent to say it is ready with its card back",
            Duration::from_secs(60),
            || async { Ok((readyz(&back)?.0 == 200).then_some(())) },
        )
        .await?;
        self.manager_sees_healthy(&base, 2, Duration::from_secs(60))
            .await?;
        crate::progress(&format!(
            "    card out {} ms; agent Ready again {} ms after the card was back, same pod, {} restarts",
            plugged.duration_since(pulled).as_millis(),
            plugged.elapsed().as_millis(),
            restarts(&back, AGENT_CONTAINER)
        ));
        for _ in 0..2 {
            let write = card_write(&base, &writer, next, true)?;
            next += 1;
            ensure!(write.on_card, "a write after the card was back missed it");
            writes.push(write);
        }

        // Nothing acknowledged is lost: through the REST API, in the Secret, and, once the
        // mirror has given the card what it missed, on the card itself.
        for write in &writes {
            let (code, answer) = http(
                "GET",
                &format!("{base}/api/v1/hsm/secrets/{}", write.name),
                Some(&writer),
                None,
            )?;
            // The REST API answers values base64-encoded.
            let read = answer["data"]["data"]["value"]
                .as_str()
                .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok());
            ensure!(
                code == 200 && read.as_deref() == Some(write.value.as_bytes()),
                "the acknowledged write of {} reads back {code}: {answer}",
                write.name
            );
        }
        self.secret_value_becomes("password", &password, Duration::from_secs(30))
            .await
            .context("the Secret lacks the write made with the card out")?;
        self.force_mirror_pass(&base, &writer)?;
        let mut names: Vec<String> = writes.iter().map(|w| w.name.clone()).collect();
        names.push(deleted.name.clone());
        card.pull();
        let on_card = card.values(&names, "value");
        let password_on_card = card.values(&[SECRET.to_owned()], "password");
        card.plug(address)?;
        let (mut on_card, password_on_card) = (on_card?, password_on_card?);
        // The delete reached the card when it came back, and nothing brought the secret back.
        let deleted_on_card = on_card.pop().flatten();
        ensure!(
            deleted_on_card.is_none(),
            "the card still holds {}, deleted while it was out",
            deleted.name
        );
        self.force_mirror_pass(&base, &writer)?;
        let (code, answer) = http("GET", &deleted_url, Some(&writer), None)?;
        ensure!(
            code == 404,
            "{} came back after it was deleted: {code} {answer}",
            deleted.name
        );
        for (write, held) in writes.iter().zip(&on_card) {
            ensure!(
                held.as_deref() == Some(write.value.as_str()),
                "the card holds {:?} for {}, acknowledged as {} ({})",
                held,
                write.name,
                write.value,
                if write.on_card {
                    "by the card itself"
                } else {
                    "while the card was out"
                }
            );
        }
        ensure!(
            password_on_card.first().and_then(Option::as_deref) == Some(password.as_str()),
            "the card lacks the HSMSecret's write made while it was out"
        );
        self.ready_agent_pod(&agent, Duration::from_secs(60))
            .await?;

        // The card's HSMDevice goes; the card keeps what it holds.
        self.remove_card_device(&card).await?;
        for write in &writes {
            let (code, answer) = http(
                "DELETE",
                &format!("{base}/api/v1/hsm/secrets/{}", write.name),
                Some(&writer),
                None,
            )?;
            ensure!(
                code == 200,
                "deleting {} answered {code}: {answer}",
                write.name
            );
        }
        Ok(())
    }

    /// Applies the card's HSMDevice, plugs the card into its agent's pod once the pod has an
    /// address, and waits until the pool and the agent are Ready; the agent's pod.
    async fn plug_card_into_its_agent(&self, card: &Arc<VirtualCard>) -> Result<Pod> {
        self.cluster.kubectl_with_input(
            &["apply", "-f", "-"],
            Some(&card_device_manifest(&card.pin())),
        )?;
        let agent = card_agent();
        let pod = wait_for(
            &format!("agent {agent}'s pod to have an address"),
            Duration::from_secs(120),
            || async {
                Ok(self
                    .agent_pod(&agent)
                    .await
                    .ok()
                    .filter(|p| pod_address(p).is_ok()))
            },
        )
        .await?;
        card.plug(pod_address(&pod)?)?;
        self.pool_ready_with(CARD_DEVICE, card::SERIAL).await?;
        let ready = self
            .ready_agent_pod(&agent, Duration::from_secs(120))
            .await?;
        ensure!(
            ready.uid() == pod.uid(),
            "the card's agent pod was replaced before it was Ready"
        );
        Ok(ready)
    }

    /// Deletes the card's HSMDevice, waits until its agent is gone, and pulls the card.
    async fn remove_card_device(&self, card: &VirtualCard) -> Result<()> {
        self.delete_device(CARD_DEVICE, &card_agent()).await?;
        card.pull();
        Ok(())
    }
}

/// Writes secret `e2e-card-<n>` through the REST API (it must be acknowledged); whether the
/// card took it comes from its device result, which says why when it did not. With the card
/// out (`card_in` false) the manager may already have dropped the card's agent, no longer
/// Ready, from the devices it writes to: then the write names no result for it.
fn card_write(base: &str, writer: &Path, n: usize, card_in: bool) -> Result<Write> {
    let name = format!("e2e-card-{n}");
    let value = crate::softhsm::random_hex(8);
    let (code, answer) = http(
        "PUT",
        &format!("{base}/api/v1/hsm/secrets/{name}"),
        Some(writer),
        Some(&json!({"data": {"value": value}}).to_string()),
    )?;
    // 206: written to some devices, not all (the others' results say why).
    ensure!(
        matches!(code, 200 | 201 | 206),
        "the write of {name} answered {code}: {answer}"
    );
    let results = &answer["data"]["deviceResults"];
    let card_result = results
        .as_object()
        .and_then(|r| r.iter().find(|(device, _)| device.contains(card::SERIAL)));
    let Some((_, card_result)) = card_result else {
        ensure!(
            !card_in,
            "the write of {name} names no result for the card: {answer}"
        );
        return Ok(Write {
            name,
            value,
            on_card: false,
        });
    };
    let on_card = card_result["success"] == true;
    if !on_card {
        let error = card_result["error"].as_str().unwrap_or_default();
        ensure!(
            !error.is_empty(),
            "the card's failed write of {name} says nothing of why: {answer}"
        );
    }
    Ok(Write {
        name,
        value,
        on_card,
    })
}

/// The pod's address.
fn pod_address(pod: &Pod) -> Result<IpAddr> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .with_context(|| format!("pod {} has no address", pod.name_any()))?
        .parse()
        .context("the pod's address")
}
