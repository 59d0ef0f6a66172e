//! Events are one collection in two shapes: what kube's Recorder writes through
//! events.k8s.io/v1 is read back as core v1 Events (which kubectl describe shows).

mod common;

use hsm_api::{HSMSecret, HSMSecretSpec};
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use kube::Resource as _;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::events::{Event as Recorded, EventType, Recorder, Reporter};

#[tokio::test]
async fn recorder_events_are_core_events_too() {
    let env = common::env().await;
    let secrets: Api<HSMSecret> = env.api();
    let s = secrets
        .create(
            &PostParams::default(),
            &HSMSecret::new("db", HSMSecretSpec::default()),
        )
        .await
        .unwrap();
    let recorder = Recorder::new(
        env.client.clone(),
        Reporter {
            controller: "emu-test-controller".into(),
            instance: None,
        },
    );
    let event = Recorded {
        type_: EventType::Normal,
        reason: "Synced".into(),
        note: Some("the Secret matches the HSM".into()),
        action: "Sync".into(),
        secondary: None,
    };
    let reference = s.object_ref(&());
    recorder.publish(&event, &reference).await.unwrap();
    recorder.publish(&event, &reference).await.unwrap();

    let new_api: Api<Event> = env.api();
    let listed = new_api.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    let e = &listed.items[0];
    assert_eq!(e.regarding.as_ref().unwrap().name.as_deref(), Some("db"));
    assert_eq!(e.series.as_ref().unwrap().count, 2);

    let core: Api<CoreEvent> = env.api();
    let fields = format!(
        "involvedObject.name=db,involvedObject.kind=HSMSecret,involvedObject.namespace={}",
        env.namespace
    );
    let core_list = core
        .list(&ListParams::default().fields(&fields))
        .await
        .unwrap();
    assert_eq!(core_list.items.len(), 1);
    let c = &core_list.items[0];
    assert_eq!(c.message.as_deref(), Some("the Secret matches the HSM"));
    assert_eq!(c.reason.as_deref(), Some("Synced"));
    assert_eq!(
        c.reporting_component.as_deref(),
        Some("emu-test-controller")
    );
}

#[tokio::test]
async fn an_event_about_another_namespace_is_422() {
    let env = common::env().await;
    let core: Api<CoreEvent> = env.api();
    let e: CoreEvent = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "e"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "elsewhere"},
        "reason": "R", "message": "m",
    }))
    .unwrap();
    assert_eq!(
        common::reason(core.create(&PostParams::default(), &e).await),
        (422, "Invalid".into())
    );
}
