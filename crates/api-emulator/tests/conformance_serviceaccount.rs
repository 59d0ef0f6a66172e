//! The ServiceAccount admission plugin on Pod create, as a real cluster runs it: the
//! `default` ServiceAccount, a missing ServiceAccount refused, the `kube-api-access-*`
//! projected volume mounted in every container unless automount is off, and what every
//! namespace has for it (`default`, `kube-root-ca.crt`).

mod common;

use k8s_openapi::api::core::v1::{ConfigMap, Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// The projected source a real API server gives every pod.
fn token_source() -> Value {
    json!({
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace",
                "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
        ],
    })
}

/// The namespace's `default` ServiceAccount exists (a real cluster's controller makes it
/// shortly after the namespace).
async fn default_sa(env: &api_emulator::testing::TestEnv) {
    let sas: Api<ServiceAccount> = env.api();
    common::eventually("the default ServiceAccount", || async {
        sas.get_opt("default").await.unwrap().is_some()
    })
    .await;
}

async fn create(env: &api_emulator::testing::TestEnv, pod: Value) -> Result<Value, kube::Error> {
    let pods: Api<Pod> = env.api();
    let pod: Pod = serde_json::from_value(pod).unwrap();
    pods.create(&PostParams::default(), &pod)
        .await
        .map(|p| serde_json::to_value(p).unwrap())
}

async fn service_account(env: &api_emulator::testing::TestEnv, sa: Value) {
    let sas: Api<ServiceAccount> = env.api();
    sas.create(&PostParams::default(), &serde_json::from_value(sa).unwrap())
        .await
        .unwrap();
}

fn volumes(pod: &Value) -> Vec<Value> {
    pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn token_volumes(pod: &Value) -> Vec<Value> {
    volumes(pod)
        .into_iter()
        .filter(|v| {
            v["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("kube-api-access-"))
        })
        .collect()
}

fn mounts_at_path(container: &Value) -> Vec<Value> {
    container["volumeMounts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["mountPath"] == MOUNT_PATH)
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_pod_gets_the_default_service_account_and_its_token_in_every_container() {
    let env = common::env().await;
    default_sa(&env).await;
    let pod = create(
        &env,
        json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "init", "image": "busybox"}],
            "containers": [
                {"name": "a", "image": "busybox"},
                {"name": "b", "image": "busybox",
                 "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]}],
            "volumes": [{"name": "scratch", "emptyDir": {}}]}}),
    )
    .await
    .unwrap();
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    let tokens = token_volumes(&pod);
    assert_eq!(tokens.len(), 1, "{:#}", pod["spec"]);
    let name = tokens[0]["name"].as_str().unwrap();
    let suffix = name.strip_prefix("kube-api-access-").unwrap();
    assert_eq!(suffix.len(), 5, "{name}");
    assert!(
        suffix
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)),
        "{name}"
    );
    assert_eq!(tokens[0]["projected"], token_source());
    // The pod's own volume stays, first.
    assert_eq!(volumes(&pod)[0]["name"], "scratch");
    let all = [
        &pod["spec"]["initContainers"][0],
        &pod["spec"]["containers"][0],
        &pod["spec"]["containers"][1],
    ];
    for c in all {
        assert_eq!(
            mounts_at_path(c),
            [json!({"name": name, "mountPath": MOUNT_PATH, "readOnly": true})],
            "container {}",
            c["name"]
        );
    }
    // The mount is added after the container's own mounts.
    assert_eq!(
        pod["spec"]["containers"][1]["volumeMounts"][0]["name"],
        "scratch"
    );
}

#[tokio::test]
async fn a_pod_of_a_missing_service_account_is_refused() {
    let env = common::env().await;
    for (meta, shown) in [
        (json!({"name": "named"}), "named"),
        (json!({"generateName": "gen-"}), "gen-"),
    ] {
        let err = create(
            &env,
            json!({"metadata": meta, "spec": {"serviceAccountName": "ghost",
                "containers": [{"name": "c", "image": "busybox"}]}}),
        )
        .await
        .unwrap_err();
        let kube::Error::Api(status) = err else {
            panic!("{err:?}")
        };
        assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
        assert_eq!(
            status.message,
            format!(
                "pods \"{shown}\" is forbidden: error looking up service account {}/ghost: \
                 serviceaccount \"ghost\" not found",
                env.namespace
            )
        );
    }
    let pods: Api<Pod> = env.api();
    assert!(pods.get_opt("named").await.unwrap().is_none());
}

#[tokio::test]
async fn automount_off_on_the_pod_or_its_service_account_mounts_nothing() {
    let env = common::env().await;
    default_sa(&env).await;
    service_account(
        &env,
        json!({"metadata": {"name": "quiet"}, "automountServiceAccountToken": false}),
    )
    .await;
    let container = json!([{"name": "c", "image": "busybox"}]);
    // Off on the pod, the ServiceAccount saying nothing.
    let pod = create(
        &env,
        json!({"metadata": {"name": "pod-off"}, "spec": {
            "automountServiceAccountToken": false, "containers": container}}),
    )
    .await
    .unwrap();
    assert_eq!(pod["spec"]["serviceAccountName"], "default");
    assert!(token_volumes(&pod).is_empty(), "{:#}", pod["spec"]);
    assert!(mounts_at_path(&pod["spec"]["containers"][0]).is_empty());
    // Off on the ServiceAccount, the pod saying nothing.
    let pod = create(
        &env,
        json!({"metadata": {"name": "sa-off"}, "spec": {
            "serviceAccountName": "quiet", "containers": container}}),
    )
    .await
    .unwrap();
    assert!(token_volumes(&pod).is_empty(), "{:#}", pod["spec"]);
    // The pod's true wins over the ServiceAccount's false.
    let pod = create(
        &env,
        json!({"metadata": {"name": "pod-on"}, "spec": {
            "serviceAccountName": "quiet", "automountServiceAccountToken": true,
            "containers": container}}),
    )
    .await
    .unwrap();
    assert_eq!(token_volumes(&pod).len(), 1, "{:#}", pod["spec"]);
}

#[tokio::test]
async fn a_mount_already_at_the_path_is_kept() {
    let env = common::env().await;
    default_sa(&env).await;
    let pod = create(
        &env,
        json!({"metadata": {"name": "own"}, "spec": {
            "volumes": [{"name": "mine", "emptyDir": {}}],
            "containers": [
                {"name": "own", "image": "busybox",
                 "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]},
                {"name": "other", "image": "busybox"}]}}),
    )
    .await
    .unwrap();
    assert_eq!(
        mounts_at_path(&pod["spec"]["containers"][0]),
        [json!({"name": "mine", "mountPath": MOUNT_PATH})]
    );
    let other = mounts_at_path(&pod["spec"]["containers"][1]);
    assert_eq!(other.len(), 1);
    assert_eq!(token_volumes(&pod).len(), 1);
    assert_eq!(other[0]["name"], token_volumes(&pod)[0]["name"]);

    // Every container with its own mount: no token volume at all.
    let pod = create(
        &env,
        json!({"metadata": {"name": "all-own"}, "spec": {
            "volumes": [{"name": "mine", "emptyDir": {}}],
            "containers": [{"name": "own", "image": "busybox",
                "volumeMounts": [{"name": "mine", "mountPath": MOUNT_PATH}]}]}}),
    )
    .await
    .unwrap();
    assert!(token_volumes(&pod).is_empty(), "{:#}", pod["spec"]);
}

#[tokio::test]
async fn the_service_accounts_image_pull_secrets_are_copied() {
    let env = common::env().await;
    service_account(
        &env,
        json!({"metadata": {"name": "puller"}, "imagePullSecrets": [{"name": "registry"}]}),
    )
    .await;
    let spec = |extra: Value| {
        let mut s = json!({"serviceAccountName": "puller",
            "containers": [{"name": "c", "image": "busybox"}]});
        s.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        s
    };
    let pod = create(
        &env,
        json!({"metadata": {"name": "a"}, "spec": spec(json!({}))}),
    )
    .await
    .unwrap();
    assert_eq!(
        pod["spec"]["imagePullSecrets"],
        json!([{"name": "registry"}])
    );
    let pod = create(
        &env,
        json!({"metadata": {"name": "b"},
               "spec": spec(json!({"imagePullSecrets": [{"name": "own"}]}))}),
    )
    .await
    .unwrap();
    assert_eq!(pod["spec"]["imagePullSecrets"], json!([{"name": "own"}]));
}

#[tokio::test]
async fn every_namespace_has_the_root_ca_config_map() {
    let env = common::env().await;
    let maps: Api<ConfigMap> = env.api();
    common::eventually("kube-root-ca.crt", || async {
        maps.get_opt("kube-root-ca.crt").await.unwrap().is_some()
    })
    .await;
    let ca = maps.get("kube-root-ca.crt").await.unwrap();
    let pem = ca.data.unwrap_or_default().remove("ca.crt").unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"), "{pem}");
    if let Some(emu) = env.emulator() {
        assert_eq!(pem, emu.ca_pem());
    }
}

#[tokio::test]
async fn the_plugin_can_be_turned_off() {
    let emu = api_emulator::Emulator::builder()
        .service_account_admission(false)
        .build();
    let pods: Api<Pod> = Api::namespaced(emu.client(), "default");
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
        "serviceAccountName": "ghost", "containers": [{"name": "c", "image": "x"}]}}))
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let spec = pod.spec.unwrap();
    assert_eq!(spec.service_account_name.as_deref(), Some("ghost"));
    assert!(spec.volumes.is_none());
}
