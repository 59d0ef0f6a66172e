//! Custom resources: the project's CRDs from deploy/crds, and CRDs created as objects.

mod common;

use hsm_api::{HSMSecret, HSMSecretSpec};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::Discovery;
use serde_json::json;

#[tokio::test]
async fn hsmsecret_from_deploy_crds_round_trips_typed() {
    let env = common::env().await;
    let api: Api<HSMSecret> = env.api();
    let obj = HSMSecret::new(
        "db",
        HSMSecretSpec {
            secret_name: "db-secret".into(),
            ..Default::default()
        },
    );
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(api.get("db").await.unwrap().spec.secret_name, "db-secret");
}

#[tokio::test]
async fn crd_created_as_an_object_is_served_and_discovered() {
    let env = common::env().await;
    let suffix = env.namespace.trim_start_matches("emu-test-").to_string();
    let plural = format!("widgets{suffix}");
    let group = "emulator.example.com";
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": format!("{plural}.{group}")},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {"plural": plural, "singular": format!("widget{suffix}"), "kind": format!("Widget{suffix}"), "listKind": format!("Widget{suffix}List")},
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}},
            }],
        },
    }))
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(env.client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let name = format!("{plural}.{group}");
    tokio::time::timeout(
        std::time::Duration::from_secs(30),
        kube::runtime::wait::await_condition(
            crds.clone(),
            &name,
            kube::runtime::conditions::is_crd_established(),
        ),
    )
    .await
    .unwrap()
    .unwrap();

    let gvk = GroupVersionKind::gvk(group, "v1", &format!("Widget{suffix}"));
    let ar = ApiResource::from_gvk_with_plural(&gvk, &plural);
    let widgets: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.namespace, &ar);
    let w: DynamicObject = serde_json::from_value(json!({
        "apiVersion": format!("{group}/v1"), "kind": format!("Widget{suffix}"),
        "metadata": {"name": "w1"}, "spec": {"size": 3},
    }))
    .unwrap();
    // The real server may need a moment after Established before it serves the resource.
    let mut created = None;
    for _ in 0..50 {
        match widgets.create(&PostParams::default(), &w).await {
            Ok(o) => {
                created = Some(o);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let created = created.expect("created");
    assert_eq!(created.data["spec"]["size"], 3);
    assert_eq!(created.metadata.generation, Some(1));
    // Without a status subresource, status is part of what generation counts.
    let patched = widgets
        .patch(
            "w1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .unwrap();
    assert_eq!(patched.data["status"]["ready"], true);
    assert_eq!(patched.metadata.generation, Some(2));
    let labelled = widgets
        .patch(
            "w1",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(2));

    let discovery = Discovery::new(env.client.clone()).run().await.unwrap();
    assert!(discovery.groups().any(|g| {
        g.name() == group
            && g.recommended_resources()
                .iter()
                .any(|(r, _)| r.plural == plural)
    }));

    crds.delete(&name, &DeleteParams::default()).await.unwrap();
    let mut gone = false;
    for _ in 0..100 {
        if let Err(kube::Error::Api(s)) = widgets.get("w1").await
            && s.code == 404
        {
            gone = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(gone, "custom resources go with their CRD");
}

fn hsmsecret_api(env: &api_emulator::testing::TestEnv) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("hsm.j5t.io", "v1alpha1", "HSMSecret");
    Api::namespaced_with(
        env.client.clone(),
        &env.namespace,
        &ApiResource::from_gvk_with_plural(&gvk, "hsmsecrets"),
    )
}

#[tokio::test]
async fn custom_resources_are_pruned_and_defaulted_by_their_schema() {
    let env = common::env().await;
    let api = hsmsecret_api(&env);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMSecret",
        "metadata": {"name": "d"},
        "spec": {"secretName": "x", "notInTheSchema": 1},
        "topLevelUnknown": true,
    }))
    .unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    let spec = &created.data["spec"];
    assert_eq!(spec["autoSync"], true);
    assert_eq!(spec["syncInterval"], 30);
    assert!(spec.get("notInTheSchema").is_none());
    assert!(created.data.get("topLevelUnknown").is_none());
}

#[tokio::test]
async fn a_custom_resource_of_the_wrong_type_is_422() {
    let env = common::env().await;
    let api = hsmsecret_api(&env);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMSecret",
        "metadata": {"name": "bad"},
        "spec": {"syncInterval": "often"},
    }))
    .unwrap();
    match api.create(&PostParams::default(), &obj).await {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (422, "Invalid"));
            assert!(s.message.contains("spec.syncInterval"), "{}", s.message);
        }
        other => panic!("expected 422, got {other:?}"),
    }
}
