//! Metadata and CRUD semantics through a real `kube::Client`.

mod common;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

fn secret(name: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {"app": "x"}},
        "stringData": {"password": "hunter2"},
    }))
    .unwrap()
}

fn deployment(name: &str) -> Deployment {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "main", "image": "busybox"}]},
            },
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn create_sets_uid_timestamp_version_and_defaults() {
    let env = common::env().await;
    let secrets: Api<Secret> = env.api();
    let created = secrets
        .create(&PostParams::default(), &secret("s1"))
        .await
        .unwrap();
    let meta = &created.metadata;
    assert!(meta.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(meta.creation_timestamp.is_some());
    assert!(meta.resource_version.is_some());
    assert_eq!(meta.namespace.as_deref(), Some(env.namespace.as_str()));
    // stringData is written into data and not kept.
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert_eq!(
        created.data.unwrap()["password"],
        ByteString(b"hunter2".to_vec())
    );
    assert!(created.string_data.is_none());
    let got = secrets.get("s1").await.unwrap();
    assert_eq!(got.metadata.uid, meta.uid);
}

#[tokio::test]
async fn generate_name_appends_five_characters() {
    let env = common::env().await;
    let cms: Api<ConfigMap> = env.api();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"generateName": "cfg-"}})).unwrap();
    let a = cms.create(&PostParams::default(), &cm).await.unwrap();
    let b = cms.create(&PostParams::default(), &cm).await.unwrap();
    let (a, b) = (a.metadata.name.unwrap(), b.metadata.name.unwrap());
    assert!(a.starts_with("cfg-") && a.len() == 9, "{a}");
    assert_ne!(a, b);
}

#[tokio::test]
async fn resource_version_increases_across_resources() {
    let env = common::env().await;
    let secrets: Api<Secret> = env.api();
    let cms: Api<ConfigMap> = env.api();
    let s = secrets
        .create(&PostParams::default(), &secret("a"))
        .await
        .unwrap();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "b"}})).unwrap();
    let c = cms.create(&PostParams::default(), &cm).await.unwrap();
    let rv = |m: &Option<String>| m.as_deref().unwrap().parse::<u64>().unwrap();
    assert!(rv(&c.metadata.resource_version) > rv(&s.metadata.resource_version));
    let list = secrets.list(&ListParams::default()).await.unwrap();
    assert!(rv(&list.metadata.resource_version) >= rv(&c.metadata.resource_version));
}

#[tokio::test]
async fn missing_object_is_404_not_found() {
    let env = common::env().await;
    let secrets: Api<Secret> = env.api();
    assert_eq!(
        common::reason(secrets.get("nope").await),
        (404, "NotFound".into())
    );
    assert_eq!(
        common::reason(secrets.delete("nope", &DeleteParams::default()).await),
        (404, "NotFound".into())
    );
}

#[tokio::test]
async fn duplicate_create_is_409_already_exists() {
    let env = common::env().await;
    let secrets: Api<Secret> = env.api();
    secrets
        .create(&PostParams::default(), &secret("dup"))
        .await
        .unwrap();
    assert_eq!(
        common::reason(secrets.create(&PostParams::default(), &secret("dup")).await),
        (409, "AlreadyExists".into())
    );
}

#[tokio::test]
async fn invalid_name_is_422_invalid() {
    let env = common::env().await;
    let secrets: Api<Secret> = env.api();
    assert_eq!(
        common::reason(
            secrets
                .create(&PostParams::default(), &secret("Not_Valid"))
                .await
        ),
        (422, "Invalid".into())
    );
}

#[tokio::test]
async fn missing_namespace_is_404() {
    let env = common::env().await;
    let secrets: Api<Secret> = Api::namespaced(env.client.clone(), "no-such-namespace-x7");
    assert_eq!(
        common::reason(secrets.create(&PostParams::default(), &secret("s")).await),
        (404, "NotFound".into())
    );
}

#[tokio::test]
async fn stale_resource_version_on_update_is_409_conflict() {
    let env = common::env().await;
    let secrets: Api<Secret> = env.api();
    let first = secrets
        .create(&PostParams::default(), &secret("s"))
        .await
        .unwrap();
    let mut a = first.clone();
    a.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "1".into());
    secrets
        .replace("s", &PostParams::default(), &a)
        .await
        .unwrap();
    let mut b = first;
    b.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("v".into(), "2".into());
    assert_eq!(
        common::reason(secrets.replace("s", &PostParams::default(), &b).await),
        (409, "Conflict".into())
    );
}

#[tokio::test]
async fn update_that_changes_nothing_keeps_the_resource_version() {
    let env = common::env().await;
    let secrets: Api<Secret> = env.api();
    let s = secrets
        .create(&PostParams::default(), &secret("same"))
        .await
        .unwrap();
    let again = secrets
        .replace("same", &PostParams::default(), &s)
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, s.metadata.resource_version);
}

#[tokio::test]
async fn generation_bumps_on_spec_changes_only() {
    let env = common::env().await;
    let deploys: Api<Deployment> = env.api();
    let d = deploys
        .create(&PostParams::default(), &deployment("web"))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let mut labelled = d.clone();
    labelled.metadata.labels = Some([("tier".to_string(), "front".to_string())].into());
    let labelled = deploys
        .replace("web", &PostParams::default(), &labelled)
        .await
        .unwrap();
    assert_eq!(labelled.metadata.generation, Some(1));
    let mut scaled = labelled.clone();
    scaled.spec.replicas = Some(3);
    let scaled = deploys
        .replace("web", &PostParams::default(), &scaled)
        .await
        .unwrap();
    assert_eq!(scaled.metadata.generation, Some(2));
}

#[tokio::test]
async fn namespaces_are_cluster_scoped_and_lists_span_namespaces() {
    let env = common::env().await;
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    let ns = namespaces.get(&env.namespace).await.unwrap();
    assert_eq!(ns.status.unwrap().phase.as_deref(), Some("Active"));
    let secrets: Api<Secret> = env.api();
    secrets
        .create(&PostParams::default(), &secret("everywhere"))
        .await
        .unwrap();
    let all: Api<Secret> = Api::all(env.client.clone());
    let found = all
        .list(&ListParams::default().fields("metadata.name=everywhere"))
        .await
        .unwrap();
    assert!(
        found
            .items
            .iter()
            .any(|s| s.metadata.namespace.as_deref() == Some(env.namespace.as_str()))
    );
}

#[tokio::test]
async fn malformed_metadata_is_400() {
    let env = common::env().await;
    let path = format!("/api/v1/namespaces/{}/configmaps", env.namespace);
    for body in [
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m", "labels": "oops"}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "m", "finalizers": [1]}}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": "m"}),
    ] {
        let req = http::Request::post(&path)
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&body).unwrap())
            .unwrap();
        let r = env.client.request::<ConfigMap>(req).await;
        assert_eq!(common::reason(r).0, 400, "{body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_read_modify_write_loses_no_update() {
    let env = common::env().await;
    let cms: Api<ConfigMap> = env.api();
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "counter"}, "data": {"n": "0"}}))
            .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();
    let writers = 8;
    let tasks: Vec<_> = (0..writers)
        .map(|_| {
            let cms = cms.clone();
            tokio::spawn(async move {
                loop {
                    let mut c = cms.get("counter").await.unwrap();
                    let data = c.data.as_mut().unwrap();
                    let n: u32 = data["n"].parse().unwrap();
                    data.insert("n".into(), (n + 1).to_string());
                    match cms.replace("counter", &PostParams::default(), &c).await {
                        Ok(_) => break,
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        cms.get("counter").await.unwrap().data.unwrap()["n"],
        writers.to_string()
    );
}
