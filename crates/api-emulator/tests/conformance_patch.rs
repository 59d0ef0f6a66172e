//! JSON merge patch, JSON patch and strategic merge patch.

mod common;

use hsm_api::{HSMSecret, HSMSecretSpec};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use rstest::rstest;
use serde_json::{Value, json};

async fn configmap(env: &api_emulator::testing::TestEnv) -> Api<ConfigMap> {
    let api: Api<ConfigMap> = env.api();
    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "c", "labels": {"a": "1", "b": "2"}},
        "data": {"x": "1", "y": "2"},
    }))
    .unwrap();
    api.create(&PostParams::default(), &cm).await.unwrap();
    api
}

#[tokio::test]
async fn merge_patch_sets_and_removes_fields() {
    let env = common::env().await;
    let api = configmap(&env).await;
    let patched = api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"labels": {"a": null, "c": "3"}}, "data": {"x": "9"}}),
            ),
        )
        .await
        .unwrap();
    let labels = patched.metadata.labels.unwrap();
    assert_eq!(labels.get("a"), None);
    assert_eq!(labels["c"], "3");
    assert_eq!(
        patched.data.unwrap(),
        [("x".into(), "9".into()), ("y".into(), "2".into())].into()
    );
}

#[tokio::test]
async fn merge_patch_with_stale_resource_version_is_409() {
    let env = common::env().await;
    let api = configmap(&env).await;
    let r = api
        .patch(
            "c",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "data": {"x": "2"}})),
        )
        .await;
    assert_eq!(common::reason(r), (409, "Conflict".into()));
}

/// `None`: the patch applies; `Some(code)`: refused with that code.
#[rstest]
#[case::add_and_replace(json!([{"op": "add", "path": "/data/z", "value": "3"}, {"op": "replace", "path": "/data/x", "value": "7"}]), None)]
#[case::remove(json!([{"op": "remove", "path": "/data/y"}]), None)]
#[case::test_that_holds(json!([{"op": "test", "path": "/data/x", "value": "1"}, {"op": "replace", "path": "/data/x", "value": "5"}]), None)]
#[case::test_that_fails(json!([{"op": "test", "path": "/data/x", "value": "2"}, {"op": "replace", "path": "/data/x", "value": "5"}]), Some(422))]
#[case::test_missing_key_null(json!([{"op": "test", "path": "/data/missing", "value": null}]), None)]
#[case::test_missing_key_value(json!([{"op": "test", "path": "/data/missing", "value": "1"}]), Some(422))]
#[case::test_missing_parent(json!([{"op": "test", "path": "/spec/missing", "value": null}]), Some(422))]
#[case::remove_missing(json!([{"op": "remove", "path": "/data/missing"}]), Some(422))]
#[tokio::test]
async fn json_patch_ops(#[case] patch: Value, #[case] refused: Option<u16>) {
    let env = common::env().await;
    let api = configmap(&env).await;
    let p: ::json_patch::Patch = serde_json::from_value(patch.clone()).unwrap();
    let r = api
        .patch("c", &PatchParams::default(), &Patch::<()>::Json(p))
        .await;
    match refused {
        None => {
            r.unwrap();
        }
        Some(code) => {
            assert_eq!(common::reason(r).0, code, "{patch}");
            // Nothing of a refused patch is applied.
            assert_eq!(api.get("c").await.unwrap().data.unwrap()["x"], "1");
        }
    }
}

fn deployment() -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [
                        {"name": "main", "image": "app:1",
                         "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                         "ports": [{"containerPort": 80}],
                         "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
                        {"name": "sidecar", "image": "side:1"},
                    ],
                    "volumes": [{"name": "data", "emptyDir": {}}],
                    "tolerations": [{"key": "k1", "operator": "Exists"}],
                },
            },
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn strategic_merge_patch_merges_list_maps_by_key() {
    let env = common::env().await;
    let api: Api<Deployment> = env.api();
    api.create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let patch = json!({"spec": {"template": {"spec": {
        "containers": [{"name": "main", "image": "app:2",
                        "env": [{"name": "B", "value": "20"}, {"name": "C", "value": "3"}],
                        "ports": [{"containerPort": 443}],
                        "volumeMounts": [{"name": "cache", "mountPath": "/cache"}]}],
        "volumes": [{"name": "cache", "emptyDir": {}}],
        "tolerations": [{"key": "k2", "operator": "Exists"}],
    }}}});
    let d = api
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let spec = d.spec.template.spec.unwrap();
    let names: Vec<_> = spec.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["main", "sidecar"]);
    let main = &spec.containers[0];
    assert_eq!(main.image.as_deref(), Some("app:2"));
    let env_vars: Vec<_> = main
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| (e.name.as_str(), e.value.as_deref().unwrap()))
        .collect();
    assert_eq!(env_vars, [("A", "1"), ("B", "20"), ("C", "3")]);
    let ports: Vec<_> = main
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .map(|p| p.container_port)
        .collect();
    assert_eq!(ports, [80, 443]);
    let mounts: Vec<_> = main
        .volume_mounts
        .as_ref()
        .unwrap()
        .iter()
        .map(|m| m.mount_path.as_str())
        .collect();
    assert_eq!(mounts, ["/data", "/cache"]);
    let volumes: Vec<_> = spec
        .volumes
        .as_ref()
        .unwrap()
        .iter()
        .map(|v| v.name.as_str())
        .collect();
    assert_eq!(volumes, ["data", "cache"]);
    // Tolerations carry no merge key on the real server: the list is replaced.
    let tolerations: Vec<_> = spec
        .tolerations
        .unwrap()
        .iter()
        .map(|t| t.key.clone().unwrap())
        .collect();
    assert_eq!(tolerations, ["k2"]);
}

#[tokio::test]
async fn strategic_merge_patch_deletes_by_directive() {
    let env = common::env().await;
    let api: Api<Deployment> = env.api();
    api.create(&PostParams::default(), &deployment())
        .await
        .unwrap();
    let patch = json!({"spec": {"template": {"spec": {
        "containers": [{"name": "sidecar", "$patch": "delete"}],
    }}}});
    let d = api
        .patch("web", &PatchParams::default(), &Patch::Strategic(patch))
        .await
        .unwrap();
    let names: Vec<_> = d
        .spec
        .template
        .spec
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["main"]);
}

#[tokio::test]
async fn strategic_merge_patch_on_a_custom_resource_is_415() {
    let env = common::env().await;
    let api: Api<HSMSecret> = env.api();
    api.create(
        &PostParams::default(),
        &HSMSecret::new("s", HSMSecretSpec::default()),
    )
    .await
    .unwrap();
    let r = api
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"secretName": "x"}})),
        )
        .await;
    assert_eq!(common::reason(r).0, 415);
}
