//! The sync on the virtual Pico HSM: the agent speaks to the card through pcscd and OpenSC,
//! exactly as with a USB Pico HSM. A pulled card leaves the Secret at its last good value
//! with a status saying why; the card back, syncing resumes. One fixture per test process.

mod common;

use common::*;
use hsm_agent::device::{Device, DeviceConfig};
use hsm_agent::pin::FixedPin;
use hsm_api::secret::{HSMSecret, SyncStatus};
use hsm_operator::agents::AgentApi;
use hsm_store::TokenSelector;
use kube::api::{Api, PostParams};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use virtual_pico::fixture::{OPENSC_MODULE, PicoFixture, USER_PIN};

async fn reason(client: &kube::Client, name: &str, reason: &str) -> HSMSecret {
    let api = Api::<HSMSecret>::namespaced(client.clone(), APPS);
    eventually(
        Duration::from_secs(30),
        &format!("{name} to report {reason}"),
        || {
            let api = api.clone();
            async move {
                api.get_opt(name).await.unwrap().filter(|h| {
                    h.status
                        .as_ref()
                        .and_then(|s| s.conditions.first())
                        .is_some_and(|c| c.reason == reason)
                })
            }
        },
    )
    .await
}

#[tokio::test]
async fn a_pulled_card_keeps_the_last_good_value_and_the_card_back_resumes() {
    let fixture = tokio::task::spawn_blocking(|| PicoFixture::start().unwrap())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let device = Device::new(
        DeviceConfig {
            state_dir: Some(state.path().to_path_buf()),
            min_backoff: Duration::ZERO,
            max_backoff: Duration::from_millis(200),
            ..DeviceConfig::new(OPENSC_MODULE, TokenSelector::First)
        },
        Box::new(FixedPin(USER_PIN.into())),
    );
    let cluster = cluster().await;
    let pki = pki();
    let agent = TestAgent::serve(&pki, device, None, "127.0.0.1:0".parse().unwrap()).await;
    let hsm: Arc<dyn AgentApi> = Arc::new(agent.client(&pki));
    hsm_write(&*hsm, "card-secret", &[("pin-pad", "one")], 1).await;
    let _manager = TestManager::start(cluster.client.clone(), vec![("pico", hsm.clone())]);
    Api::<HSMSecret>::namespaced(cluster.client.clone(), APPS)
        .create(
            &PostParams::default(),
            &hsm_secret("card-secret", json!({})),
        )
        .await
        .unwrap();
    secret_holds(&cluster.client, "card-secret", &[("pin-pad", "one")]).await;
    let serial = hsm.info().await.unwrap().serial_number;
    assert!(!serial.is_empty());

    fixture.card.remove();
    let lost = reason(&cluster.client, "card-secret", "DevicesUnavailable").await;
    assert_eq!(lost.status.unwrap().sync_status, Some(SyncStatus::Error));
    secret_holds(&cluster.client, "card-secret", &[("pin-pad", "one")]).await;

    fixture.card.insert();
    reason(&cluster.client, "card-secret", "InSync").await;
    hsm_write(&*hsm, "card-secret", &[("pin-pad", "two")], 2).await;
    secret_holds(&cluster.client, "card-secret", &[("pin-pad", "two")]).await;
}
