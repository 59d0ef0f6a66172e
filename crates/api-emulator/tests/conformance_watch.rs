//! Watch: from a resourceVersion, every mutation, selectors, bookmarks, timeouts, 410, and
//! kube's watcher and Controller running unchanged.

mod common;

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt as _, TryStreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::{WatchStreamExt as _, watcher};
use serde_json::json;

fn cm(name: &str, labels: serde_json::Value) -> ConfigMap {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": labels}, "data": {"k": "v"}}),
    )
    .unwrap()
}

fn rv(c: &ConfigMap) -> String {
    c.metadata.resource_version.clone().unwrap()
}

fn ev(t: &str, n: &str) -> (String, String, bool) {
    (t.to_string(), n.to_string(), false)
}

#[tokio::test]
async fn watch_from_a_resource_version_replays_every_later_mutation() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    let a = api
        .create(&PostParams::default(), &cm("a", json!({})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    api.patch(
        "b",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"k": "w"}})),
    )
    .await
    .unwrap();
    api.delete("a", &DeleteParams::default()).await.unwrap();
    let mut stream = api
        .watch(&WatchParams::default(), &rv(&a))
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        common::next_events(&mut stream, 3).await,
        [ev("ADDED", "b"), ev("MODIFIED", "b"), ev("DELETED", "a")]
    );
    // And live events after the replay.
    api.create(&PostParams::default(), &cm("c", json!({})))
        .await
        .unwrap();
    assert_eq!(
        common::next_events(&mut stream, 1).await,
        [ev("ADDED", "c")]
    );
}

#[tokio::test]
async fn label_selected_watch_sees_objects_move_in_and_out() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    let x = api
        .create(&PostParams::default(), &cm("x", json!({"sel": "no"})))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().labels("sel=yes"), &rv(&x))
        .await
        .unwrap()
        .boxed();
    let relabel = |v: &str| Patch::Merge(json!({"metadata": {"labels": {"sel": v}}}));
    api.patch("x", &PatchParams::default(), &relabel("yes"))
        .await
        .unwrap();
    api.patch("x", &PatchParams::default(), &relabel("no"))
        .await
        .unwrap();
    assert_eq!(
        common::next_events(&mut stream, 2).await,
        [ev("ADDED", "x"), ev("DELETED", "x")]
    );
}

#[tokio::test]
async fn watch_ends_after_timeout_seconds() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    let list = api.list(&Default::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let start = std::time::Instant::now();
    let stream = api
        .watch(&WatchParams::default().timeout(1), &rv)
        .await
        .unwrap();
    let events: Vec<_> = tokio::time::timeout(Duration::from_secs(10), stream.collect::<Vec<_>>())
        .await
        .expect("the watch ends by itself");
    assert!(
        events
            .iter()
            .all(|e| matches!(e, Ok(WatchEvent::Bookmark(_))))
    );
    assert!(start.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn bookmarks_carry_the_latest_resource_version() {
    let env = common::env().await;
    if env.is_real() {
        // A real server sends bookmarks about once a minute: too slow for this suite.
        return;
    }
    let api: Api<ConfigMap> = env.api();
    let c = api
        .create(&PostParams::default(), &cm("b", json!({})))
        .await
        .unwrap();
    let mut stream = api
        .watch(&WatchParams::default().timeout(5), &rv(&c))
        .await
        .unwrap()
        .boxed();
    let first = tokio::time::timeout(Duration::from_secs(3), stream.next())
        .await
        .expect("a bookmark within the interval")
        .unwrap()
        .unwrap();
    match first {
        WatchEvent::Bookmark(b) => {
            assert!(
                b.metadata.resource_version.parse::<u64>().unwrap()
                    >= rv(&c).parse::<u64>().unwrap()
            )
        }
        other => panic!("expected a bookmark, got {other:?}"),
    }
}

#[tokio::test]
async fn watch_older_than_history_is_410_gone() {
    let env = common::env().await;
    let Some(emu) = env.emulator() else {
        // Needs a compaction on demand.
        return;
    };
    let api: Api<ConfigMap> = env.api();
    let old = api
        .create(&PostParams::default(), &cm("o", json!({})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("p", json!({})))
        .await
        .unwrap();
    emu.compact_history();
    let mut stream = api
        .watch(&WatchParams::default(), &rv(&old))
        .await
        .unwrap()
        .boxed();
    match stream.next().await {
        Some(Ok(WatchEvent::Error(e))) => {
            assert_eq!(e.code, 410);
            assert_eq!(e.reason, "Expired");
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
}

#[tokio::test]
async fn kube_watcher_and_reflector_track_the_collection() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    api.create(&PostParams::default(), &cm("before", json!({"w": "1"})))
        .await
        .unwrap();
    let (reader, writer) = kube::runtime::reflector::store();
    let stream = watcher(api.clone(), watcher::Config::default().labels("w=1"))
        .default_backoff()
        .reflect(writer)
        .applied_objects();
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.try_next().await.is_ok() {}
    });
    api.create(&PostParams::default(), &cm("after", json!({"w": "1"})))
        .await
        .unwrap();
    api.create(&PostParams::default(), &cm("other", json!({"w": "2"})))
        .await
        .unwrap();
    api.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    let mut names = Vec::new();
    for _ in 0..100 {
        names = reader
            .state()
            .iter()
            .filter_map(|c| c.metadata.name.clone())
            .collect::<Vec<_>>();
        names.sort();
        if names == ["after"] {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert_eq!(names, ["after"]);
}

#[tokio::test]
async fn kube_watcher_with_streaming_lists() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    api.create(&PostParams::default(), &cm("s1", json!({"s": "1"})))
        .await
        .unwrap();
    let mut stream = watcher(
        api.clone(),
        watcher::Config::default().labels("s=1").streaming_lists(),
    )
    .boxed();
    let mut initial = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(watcher::Event::InitApply(c))) => initial.push(c.metadata.name.unwrap()),
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, ["s1"]);
}

#[tokio::test]
async fn kube_controller_reconciles_existing_and_new_objects() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    api.create(&PostParams::default(), &cm("one", json!({"ctl": "yes"})))
        .await
        .unwrap();

    async fn reconcile(
        obj: Arc<ConfigMap>,
        api: Arc<Api<ConfigMap>>,
    ) -> Result<Action, kube::Error> {
        let name = obj.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("emu-test-controller"),
            &Patch::Apply(json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": name, "annotations": {"reconciled": "true"}},
            })),
        )
        .await?;
        Ok(Action::await_change())
    }
    fn error_policy(_: Arc<ConfigMap>, _: &kube::Error, _: Arc<Api<ConfigMap>>) -> Action {
        Action::requeue(Duration::from_millis(100))
    }
    let controller = Controller::new(api.clone(), watcher::Config::default().labels("ctl=yes"))
        .run(reconcile, error_policy, Arc::new(api.clone()))
        .for_each(|_| async {});
    let task = tokio::spawn(controller);
    api.create(&PostParams::default(), &cm("two", json!({"ctl": "yes"})))
        .await
        .unwrap();
    let mut done = false;
    for _ in 0..100 {
        let list = api.list(&Default::default()).await.unwrap();
        let reconciled = list
            .items
            .iter()
            .filter(|c| {
                c.metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key("reconciled"))
            })
            .count();
        if reconciled == 2 {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    task.abort();
    assert!(done, "both objects reconciled");
}

#[tokio::test]
async fn kube_metadata_watcher_gets_partial_object_metadata() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    api.create(&PostParams::default(), &cm("m1", json!({"m": "1"})))
        .await
        .unwrap();
    let list = api.list_metadata(&Default::default()).await.unwrap();
    assert!(
        list.items
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some("m1"))
    );
    let mut stream = watcher(
        Api::<kube::core::PartialObjectMeta<ConfigMap>>::namespaced(
            env.client.clone(),
            &env.namespace,
        ),
        watcher::Config::default().labels("m=1"),
    )
    .boxed();
    let mut names = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.next())
            .await
            .unwrap()
        {
            Some(Ok(watcher::Event::InitApply(p))) => names.push(p.metadata.name.unwrap()),
            Some(Ok(watcher::Event::InitDone)) => break,
            Some(Ok(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(names, ["m1"]);
    api.create(&PostParams::default(), &cm("m2", json!({"m": "1"})))
        .await
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .unwrap()
    {
        Some(Ok(watcher::Event::Apply(p))) => {
            assert_eq!(p.metadata.name.as_deref(), Some("m2"));
            assert_eq!(p.types.unwrap().kind, "PartialObjectMetadata");
        }
        other => panic!("unexpected {other:?}"),
    }
}
