//! The manager's event recorder against the API emulator: a repeat bumps the first event's
//! series, and what it remembers stays bounded however many objects it reported on.

use hsm_operator::secret::events::{EventRecorder, MAX_RECENT};
use hsm_operator::testing::{APPS, cluster};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Event, EventType};

fn regarding(name: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("hsm.j5t.io/v1alpha1".into()),
        kind: Some("HSMSecret".into()),
        name: Some(name.into()),
        namespace: Some(APPS.into()),
        uid: Some(format!("uid-{name}")),
        ..Default::default()
    }
}

fn restored() -> Event {
    Event {
        type_: EventType::Normal,
        reason: "SecretRestored".into(),
        note: Some("restored Secret db (edited outside the operator)".into()),
        action: "Sync".into(),
        secondary: None,
    }
}

#[tokio::test]
async fn a_repeat_bumps_the_series_and_memory_stays_bounded() {
    let cluster = cluster().await;
    let recorder = EventRecorder::new(cluster.client.clone(), "hsm-secrets-operator");
    let events = Api::<K8sEvent>::namespaced(cluster.client.clone(), APPS);

    recorder
        .publish(&restored(), &regarding("db"))
        .await
        .unwrap();
    recorder
        .publish(&restored(), &regarding("db"))
        .await
        .unwrap();
    let listed = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), 1, "a repeat is the same event");
    assert_eq!(listed[0].series.as_ref().map(|s| s.count), Some(2));
    assert_eq!(listed[0].reason.as_deref(), Some("SecretRestored"));

    for i in 0..MAX_RECENT + 50 {
        recorder
            .publish(&restored(), &regarding(&format!("s-{i}")))
            .await
            .unwrap();
    }
    assert_eq!(recorder.remembered(), MAX_RECENT);
    let listed = events.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(listed.len(), MAX_RECENT + 51, "every event was published");
}
