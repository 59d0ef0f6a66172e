//! Server-side apply: managedFields, conflicts between managers, force, shared ownership,
//! removal of fields a manager stops applying, list-maps by key, and /status.

mod common;

use hsm_api::HSMSecret;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};

fn cm(labels: Value, data: Value) -> Value {
    let mut v = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}});
    if labels.as_object().is_some_and(|l| !l.is_empty()) {
        v["metadata"]["labels"] = labels;
    }
    if data.as_object().is_some_and(|d| !d.is_empty()) {
        v["data"] = data;
    }
    v
}

async fn apply(
    api: &Api<ConfigMap>,
    manager: &str,
    force: bool,
    body: Value,
) -> Result<ConfigMap, kube::Error> {
    let mut pp = PatchParams::apply(manager);
    if force {
        pp = pp.force();
    }
    api.patch("c", &pp, &Patch::Apply(body)).await
}

fn managers(c: &ConfigMap) -> Vec<(String, String)> {
    let mut m: Vec<_> = c
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .map(|e| (e.manager.clone().unwrap(), e.operation.clone().unwrap()))
        .collect();
    m.sort();
    m
}

#[tokio::test]
async fn apply_creates_and_records_the_manager() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    let c = apply(
        &api,
        "alpha",
        false,
        cm(json!({"a": "1"}), json!({"x": "1"})),
    )
    .await
    .unwrap();
    assert_eq!(managers(&c), [("alpha".to_string(), "Apply".to_string())]);
    let fields = serde_json::to_value(&c.metadata.managed_fields.unwrap()[0].fields_v1).unwrap();
    assert_eq!(fields["f:data"]["f:x"], json!({}));
    assert_eq!(fields["f:metadata"]["f:labels"]["f:a"], json!({}));
}

#[tokio::test]
async fn a_different_value_from_another_manager_conflicts_unless_forced() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    apply(&api, "alpha", false, cm(json!({}), json!({"x": "1"})))
        .await
        .unwrap();
    let r = apply(&api, "beta", false, cm(json!({}), json!({"x": "2"}))).await;
    match r {
        Err(kube::Error::Api(s)) => {
            assert_eq!((s.code, s.reason.as_str()), (409, "Conflict"));
            assert!(
                s.message.contains("conflict with \"alpha\""),
                "{}",
                s.message
            );
            assert!(s.message.contains(".data.x"), "{}", s.message);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let forced = apply(&api, "beta", true, cm(json!({}), json!({"x": "2"})))
        .await
        .unwrap();
    assert_eq!(forced.data.as_ref().unwrap()["x"], "2");
    // alpha lost the field; with nothing left it has no entry.
    assert_eq!(
        managers(&forced),
        [("beta".to_string(), "Apply".to_string())]
    );
    // alpha applying its old value now conflicts with beta.
    let r = apply(&api, "alpha", false, cm(json!({}), json!({"x": "1"}))).await;
    assert_eq!(common::reason(r), (409, "Conflict".into()));
}

#[tokio::test]
async fn the_same_value_is_shared_without_conflict() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    apply(&api, "alpha", false, cm(json!({}), json!({"x": "1"})))
        .await
        .unwrap();
    let c = apply(&api, "beta", false, cm(json!({}), json!({"x": "1"})))
        .await
        .unwrap();
    assert_eq!(managers(&c).len(), 2);
    // alpha stops applying x: beta still owns it, so it stays.
    let c = apply(&api, "alpha", false, cm(json!({}), json!({})))
        .await
        .unwrap();
    assert_eq!(c.data.unwrap()["x"], "1");
}

#[tokio::test]
async fn fields_a_manager_stops_applying_are_removed() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    apply(
        &api,
        "alpha",
        false,
        cm(json!({"a": "1", "b": "2"}), json!({"x": "1", "y": "2"})),
    )
    .await
    .unwrap();
    let c = apply(
        &api,
        "alpha",
        false,
        cm(json!({"a": "1"}), json!({"x": "1"})),
    )
    .await
    .unwrap();
    let labels = c.metadata.labels.unwrap();
    assert!(
        labels.contains_key("a") && !labels.contains_key("b"),
        "{labels:?}"
    );
    assert_eq!(c.data.unwrap().keys().collect::<Vec<_>>(), ["x"]);
}

#[tokio::test]
async fn a_value_set_by_an_update_conflicts_with_apply() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    apply(&api, "alpha", false, cm(json!({}), json!({"x": "1"})))
        .await
        .unwrap();
    api.patch(
        "c",
        &PatchParams {
            field_manager: Some("editor".into()),
            ..Default::default()
        },
        &Patch::Merge(json!({"data": {"x": "edited"}})),
    )
    .await
    .unwrap();
    let r = apply(&api, "alpha", false, cm(json!({}), json!({"x": "1"}))).await;
    match r {
        Err(kube::Error::Api(s)) => {
            assert_eq!(s.code, 409);
            assert!(s.message.contains("\"editor\""), "{}", s.message);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
}

#[tokio::test]
async fn list_map_items_are_owned_by_key() {
    let env = common::env().await;
    let api: Api<Deployment> = env.api();
    let base = |containers: Value| {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}},
            },
        })
    };
    let pp = |m: &str| PatchParams::apply(m);
    api.patch(
        "web",
        &pp("alpha"),
        &Patch::Apply(base(json!([{"name": "main", "image": "app:1"}]))),
    )
    .await
    .unwrap();
    // beta adds its own container; the selector and template labels are the same values.
    let d = api
        .patch(
            "web",
            &pp("beta"),
            &Patch::Apply(base(json!([{"name": "side", "image": "side:1"}]))),
        )
        .await
        .unwrap();
    let names: Vec<_> = d
        .spec
        .template
        .spec
        .as_ref()
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    assert_eq!(names, ["main", "side"]);
    // alpha drops its container: only that one goes.
    let d = api
        .patch(
            "web",
            &pp("alpha"),
            &Patch::Apply(base(json!([{"name": "other", "image": "o:1"}]))),
        )
        .await
        .unwrap();
    let mut names: Vec<_> = d
        .spec
        .template
        .spec
        .unwrap()
        .containers
        .iter()
        .map(|c| c.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, ["other", "side"]);
}

#[tokio::test]
async fn apply_to_status_changes_only_status_and_main_apply_ignores_status() {
    let env = common::env().await;
    let api: Api<HSMSecret> = env.api();
    let obj = |secret: &str, sync: &str| {
        json!({
            "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMSecret",
            "metadata": {"name": "s"},
            "spec": {"secretName": secret},
            "status": {"syncStatus": sync},
        })
    };
    let created = api
        .patch(
            "s",
            &PatchParams::apply("user"),
            &Patch::Apply(obj("a", "InSync")),
        )
        .await
        .unwrap();
    assert!(created.status.is_none(), "the main resource ignores status");
    let s = api
        .patch_status(
            "s",
            &PatchParams::apply("controller"),
            &Patch::Apply(obj("changed", "InSync")),
        )
        .await
        .unwrap();
    assert_eq!(s.spec.secret_name, "a", "/status ignores spec");
    assert_eq!(
        s.status.unwrap().sync_status,
        Some(hsm_api::secret::SyncStatus::InSync)
    );
    let entry = s
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|e| e.manager.as_deref() == Some("controller"))
        .unwrap();
    assert_eq!(entry.subresource.as_deref(), Some("status"));
}

#[tokio::test]
async fn apply_without_field_manager_is_400() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    api.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "c"}})).unwrap(),
    )
    .await
    .unwrap();
    // kube refuses an empty manager itself; send the request raw.
    let req = http::Request::patch(format!("/api/v1/namespaces/{}/configmaps/c", env.namespace))
        .header("Content-Type", "application/apply-patch+yaml")
        .body(serde_json::to_vec(&cm(json!({}), json!({}))).unwrap())
        .unwrap();
    let r = env.client.request::<ConfigMap>(req).await;
    assert_eq!(common::reason(r).0, 400);
}

#[tokio::test]
async fn an_applied_configuration_without_a_name_takes_the_urls() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    let body = json!({"apiVersion": "v1", "kind": "ConfigMap", "data": {"x": "1"}});
    let c = apply(&api, "alpha", false, body).await.unwrap();
    assert_eq!(c.metadata.name.as_deref(), Some("c"));
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "d"}});
    let err = apply(&api, "alpha", false, other).await.unwrap_err();
    assert!(err.to_string().contains("does not match"), "{err}");
}
