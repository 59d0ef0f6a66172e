//! Status subresource semantics, finalizers and deletionTimestamp, propagationPolicy and
//! garbage collection by ownerReference, namespace termination — with the watch events of
//! each.

mod common;

use futures::StreamExt as _;
use hsm_api::{HSMSecret, HSMSecretSpec, HSMSecretStatus};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchParams};
use serde_json::json;

#[tokio::test]
async fn status_subresource_separates_spec_and_status_writes() {
    let env = common::env().await;
    let api: Api<HSMSecret> = env.api();
    let created = api
        .create(
            &PostParams::default(),
            &HSMSecret::new(
                "s",
                HSMSecretSpec {
                    secret_name: "a".into(),
                    ..Default::default()
                },
            ),
        )
        .await
        .unwrap();
    assert_eq!(created.metadata.generation, Some(1));

    // /status changes status only.
    let mut with_status = created.clone();
    with_status.spec.secret_name = "ignored".into();
    with_status.status = Some(HSMSecretStatus {
        hsm_checksum: "sha256:1".into(),
        ..Default::default()
    });
    let s = api
        .replace_status("s", &PostParams::default(), &with_status)
        .await
        .unwrap();
    assert_eq!(s.spec.secret_name, "a");
    assert_eq!(s.status.as_ref().unwrap().hsm_checksum, "sha256:1");
    assert_eq!(
        s.metadata.generation,
        Some(1),
        "a status write is no spec change"
    );

    // The main resource ignores status.
    let mut main = s.clone();
    main.spec.secret_name = "b".into();
    main.status = Some(HSMSecretStatus {
        hsm_checksum: "sha256:ignored".into(),
        ..Default::default()
    });
    let m = api
        .replace("s", &PostParams::default(), &main)
        .await
        .unwrap();
    assert_eq!(m.spec.secret_name, "b");
    assert_eq!(m.status.unwrap().hsm_checksum, "sha256:1");
    assert_eq!(m.metadata.generation, Some(2));

    // Merge patches behave the same.
    let p = api
        .patch_status(
            "s",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"secretName": "c"}, "status": {"hsmChecksum": "sha256:2"}}),
            ),
        )
        .await
        .unwrap();
    assert_eq!(
        (
            p.spec.secret_name.as_str(),
            p.status.unwrap().hsm_checksum.as_str()
        ),
        ("b", "sha256:2")
    );
}

#[tokio::test]
async fn finalizers_hold_deletion_until_the_last_is_removed() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    let cm: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "f", "finalizers": ["example.com/keep"]}}),
    )
    .unwrap();
    let created = api.create(&PostParams::default(), &cm).await.unwrap();
    let mut stream = api
        .watch(
            &WatchParams::default().fields("metadata.name=f"),
            created.metadata.resource_version.as_ref().unwrap(),
        )
        .await
        .unwrap()
        .boxed();

    let answer = api.delete("f", &DeleteParams::default()).await.unwrap();
    let marked = answer.left().expect("the object, still there");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert!(
        api.get("f")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    );

    // No new finalizer while deleting.
    let r = api
        .patch(
            "f",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"finalizers": ["example.com/keep", "example.com/more"]}}),
            ),
        )
        .await;
    assert_eq!(common::reason(r).0, 422);

    api.patch(
        "f",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(common::is_gone(&api, "f").await);
    assert_eq!(
        common::next_events(&mut stream, 2).await,
        [
            ("MODIFIED".into(), "f".into(), true),
            ("DELETED".into(), "f".into(), true)
        ]
    );
}

async fn owner_and_dependent(
    env: &api_emulator::testing::TestEnv,
    dependent_finalizer: bool,
) -> (Api<ConfigMap>, Api<Secret>) {
    let owners: Api<ConfigMap> = env.api();
    let deps: Api<Secret> = env.api();
    let owner = owners
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}})).unwrap(),
        )
        .await
        .unwrap();
    let mut dep = json!({"metadata": {"name": "dep", "ownerReferences": [{
        "apiVersion": "v1", "kind": "ConfigMap", "name": "owner",
        "uid": owner.metadata.uid.unwrap(), "blockOwnerDeletion": true,
    }]}});
    if dependent_finalizer {
        dep["metadata"]["finalizers"] = json!(["example.com/hold"]);
    }
    deps.create(
        &PostParams::default(),
        &serde_json::from_value(dep).unwrap(),
    )
    .await
    .unwrap();
    (owners, deps)
}

/// Waits until the dependent has lost its ownerReference.
async fn wait_orphaned(deps: &Api<Secret>) {
    common::eventually("reference removed", || async {
        deps.get("dep")
            .await
            .unwrap()
            .metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    })
    .await;
}

#[tokio::test]
async fn background_deletion_collects_dependents_with_a_watch_event() {
    let env = common::env().await;
    let (owners, deps) = owner_and_dependent(&env, false).await;
    let rv = deps
        .get("dep")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut stream = deps
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    owners
        .delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    common::eventually("dependent collected", || common::is_gone(&deps, "dep")).await;
    assert_eq!(
        common::next_events(&mut stream, 1).await,
        [("DELETED".into(), "dep".into(), false)]
    );
}

#[tokio::test]
async fn orphan_deletion_keeps_dependents_without_the_reference() {
    let env = common::env().await;
    let (owners, deps) = owner_and_dependent(&env, false).await;
    owners
        .delete("owner", &DeleteParams::orphan())
        .await
        .unwrap();
    common::eventually("owner gone", || common::is_gone(&owners, "owner")).await;
    wait_orphaned(&deps).await;
}

#[tokio::test]
async fn foreground_deletion_waits_for_dependents() {
    let env = common::env().await;
    let (owners, deps) = owner_and_dependent(&env, true).await;
    owners
        .delete("owner", &DeleteParams::foreground())
        .await
        .unwrap();
    // The dependent is held by its finalizer, so the owner waits.
    common::eventually("dependent marked", || async {
        deps.get("dep")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    let owner = owners.get("owner").await.unwrap();
    assert!(owner.metadata.deletion_timestamp.is_some());
    assert!(
        owner
            .metadata
            .finalizers
            .unwrap()
            .contains(&"foregroundDeletion".to_string())
    );
    deps.patch(
        "dep",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    common::eventually("owner gone after its dependent", || {
        common::is_gone(&owners, "owner")
    })
    .await;
}

#[tokio::test]
async fn propagation_policy_in_the_query_is_honoured() {
    // kube sends it in the body; the query form is what kubectl --cascade uses.
    let env = common::env().await;
    let (_, deps) = owner_and_dependent(&env, false).await;
    let req = http::Request::delete(format!(
        "/api/v1/namespaces/{}/configmaps/owner?propagationPolicy=Orphan",
        env.namespace
    ))
    .body(Vec::new())
    .unwrap();
    env.client.request::<serde_json::Value>(req).await.unwrap();
    wait_orphaned(&deps).await;
}

#[tokio::test]
async fn deleting_a_namespace_deletes_its_contents() {
    let env = common::env().await;
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let name = format!("{}-extra", env.namespace);
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &name);
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "inside"}})).unwrap(),
    )
    .await
    .unwrap();
    namespaces
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    common::eventually("contents gone", || common::is_gone(&cms, "inside")).await;
    common::eventually("namespace gone", || common::is_gone(&namespaces, &name)).await;
}

#[tokio::test]
async fn a_pod_on_a_node_terminates_gracefully_until_its_kubelet_confirms() {
    use k8s_openapi::api::core::v1::Pod;
    let env = common::env().await;
    let pods: Api<Pod> = env.api();
    let pod = |name: &str, node: Option<&str>| -> Pod {
        let mut p = json!({"metadata": {"name": name}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}});
        if let Some(n) = node {
            // A node that does not exist: no kubelet will ever act on it.
            p["spec"]["nodeName"] = json!(n);
        }
        serde_json::from_value(p).unwrap()
    };
    pods.create(
        &PostParams::default(),
        &pod("bound", Some("emu-test-no-such-node")),
    )
    .await
    .unwrap();
    pods.create(&PostParams::default(), &pod("unbound", None))
        .await
        .unwrap();

    pods.delete("unbound", &DeleteParams::default())
        .await
        .unwrap();
    common::eventually("an unbound pod goes at once", || {
        common::is_gone(&pods, "unbound")
    })
    .await;

    pods.delete("bound", &DeleteParams::default())
        .await
        .unwrap();
    let terminating = pods.get("bound").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(30));
    // The kubelet's confirmation.
    pods.delete(
        "bound",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    common::eventually("gone after the kubelet's delete", || {
        common::is_gone(&pods, "bound")
    })
    .await;
}

#[tokio::test]
async fn a_dependent_of_an_owner_that_does_not_exist_is_collected() {
    let env = common::env().await;
    let deps: Api<Secret> = env.api();
    let dep: Secret =
        serde_json::from_value(json!({"metadata": {"name": "stray", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "never-was",
            "uid": "00000000-0000-0000-0000-000000000001",
        }]}}))
        .unwrap();
    deps.create(&PostParams::default(), &dep).await.unwrap();
    common::eventually("stray dependent collected", || {
        common::is_gone(&deps, "stray")
    })
    .await;
}

#[tokio::test]
async fn an_owner_reference_without_uid_is_422() {
    let env = common::env().await;
    let deps: Api<Secret> = env.api();
    let dep: Secret =
        serde_json::from_value(json!({"metadata": {"name": "bad", "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "",
        }]}}))
        .unwrap();
    assert_eq!(
        common::reason(deps.create(&PostParams::default(), &dep).await).0,
        422
    );
}

#[tokio::test]
async fn a_terminating_namespace_refuses_new_content_with_403() {
    let env = common::env().await;
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let name = format!("{}-term", env.namespace);
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
        )
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(env.client.clone(), &name);
    let held: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "held", "finalizers": ["example.com/hold"]}}),
    )
    .unwrap();
    cms.create(&PostParams::default(), &held).await.unwrap();
    namespaces
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    common::eventually("the held object is being deleted", || async {
        cms.get("held")
            .await
            .unwrap()
            .metadata
            .deletion_timestamp
            .is_some()
    })
    .await;
    let ns = namespaces.get(&name).await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Terminating"));
    let new: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "new"}})).unwrap();
    assert_eq!(
        common::reason(cms.create(&PostParams::default(), &new).await),
        (403, "Forbidden".into())
    );
    cms.patch(
        "held",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    common::eventually("namespace gone", || common::is_gone(&namespaces, &name)).await;
}
