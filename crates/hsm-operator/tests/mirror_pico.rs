//! Mirroring between a SoftHSM2 token and the virtual Pico HSM card (pcscd, OpenSC), each
//! behind its own agent over gRPC with mTLS: what is written to one reaches the other with
//! its metadata, and a delete on the card reaches SoftHSM2. One card fixture per process.

mod common;

use common::*;
use hsm_agent::device::{Device, DeviceConfig};
use hsm_agent::pin::FixedPin;
use hsm_operator::agents::{AgentApi, AgentPool};
use hsm_operator::mirror::{self, Config, Mirror};
use hsm_operator::telemetry::Metrics;
use hsm_proto::v1::SecretMetadata;
use hsm_store::TokenSelector;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use virtual_pico::fixture::{OPENSC_MODULE, PicoFixture, USER_PIN};

const WAIT: Duration = Duration::from_secs(30);

fn metadata(version: i64, deleted: bool) -> SecretMetadata {
    let mut labels = BTreeMap::from([
        ("sync.version".to_owned(), version.to_string()),
        (
            "sync.timestamp".to_owned(),
            format!("2026-11-01T00:00:{version:02}Z"),
        ),
    ]);
    if deleted {
        labels.insert("sync.deleted".into(), "true".into());
    }
    SecretMetadata {
        description: if deleted {
            String::new()
        } else {
            "signing key for the release pipeline".into()
        },
        labels,
        format: if deleted {
            String::new()
        } else {
            "text".into()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn softhsm_and_the_virtual_card_mirror_writes_and_deletes() {
    let fixture = tokio::task::spawn_blocking(|| PicoFixture::start().unwrap())
        .await
        .unwrap();
    let state = tempfile::tempdir().unwrap();
    let card_device = Device::new(
        DeviceConfig {
            state_dir: Some(state.path().to_path_buf()),
            min_backoff: Duration::ZERO,
            max_backoff: Duration::from_millis(200),
            ..DeviceConfig::new(OPENSC_MODULE, TokenSelector::First)
        },
        Box::new(FixedPin(USER_PIN.into())),
    );
    let pki = pki();
    let card_agent =
        TestAgent::serve(&pki, card_device, None, "127.0.0.1:0".parse().unwrap()).await;
    let soft_agent = TestAgent::start(&pki).await;
    let card: Arc<dyn AgentApi> = Arc::new(card_agent.client(&pki));
    let soft: Arc<dyn AgentApi> = Arc::new(soft_agent.client(&pki));

    let pool = AgentPool::new().with_health_interval(Duration::from_millis(200));
    pool.insert("pico", card.clone());
    pool.insert("softhsm", soft.clone());
    let mirror = Mirror::new(
        pool.clone(),
        Arc::new(Metrics::new()),
        Config {
            debounce: Duration::from_millis(100),
            periodic: Duration::from_secs(3600),
        },
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let runner = tokio::spawn(mirror::run(mirror.clone(), async move {
        let _ = stopped.await;
    }));

    // SoftHSM2 → card.
    let key = BTreeMap::from([("data".to_owned(), b"-----BEGIN KEY-----".to_vec())]);
    soft.write("release-key", key.clone(), metadata(1, false))
        .await
        .unwrap();
    eventually(WAIT, "the card to hold the key", || async {
        card.read("release-key").await.ok().filter(|v| *v == key)
    })
    .await;
    assert_eq!(
        card.metadata("release-key").await.unwrap(),
        metadata(1, false)
    );

    // A delete on the card → SoftHSM2 holds the tombstone, and the key stays gone.
    card.write("release-key", BTreeMap::new(), metadata(2, true))
        .await
        .unwrap();
    eventually(WAIT, "SoftHSM2 to hold the tombstone", || async {
        let index = soft.index().await.ok()?;
        index
            .entries
            .get("release-key")
            .filter(|e| e.tombstone)
            .map(|_| ())
    })
    .await;
    assert!(soft.read("release-key").await.unwrap_err().is_not_found());
    assert_eq!(
        soft.metadata("release-key").await.unwrap(),
        metadata(2, true)
    );
    let after = eventually(WAIT, "a pass finding both agreeing", || async {
        let s = mirror.sync_now(true).await.ok()?;
        s.in_sync().then_some(s)
    })
    .await;
    assert_eq!(after.healthy_devices, ["pico", "softhsm"]);
    assert!(card.read("release-key").await.unwrap_err().is_not_found());

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), runner).await;
    drop(fixture);
}
