//! Every built-in the operator uses is served at its real path, with its scope; version,
//! dry run and delete-collection.

mod common;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams,
};
use rstest::rstest;
use serde_json::{Value, json};

#[rstest]
#[case("", "v1", "Secret", "secrets", json!({"data": {}}))]
#[case("", "v1", "ConfigMap", "configmaps", json!({"data": {"a": "b"}}))]
#[case("", "v1", "ServiceAccount", "serviceaccounts", json!({}))]
#[case("", "v1", "Service", "services", json!({"spec": {"ports": [{"port": 80}]}}))]
#[case("", "v1", "Pod", "pods", json!({"spec": {"containers": [{"name": "c", "image": "busybox"}]}}))]
#[case("", "v1", "Event", "events", json!({"involvedObject": {"kind": "Pod", "name": "p"}, "reason": "R", "message": "m"}))]
#[case("events.k8s.io", "v1", "Event", "events", json!({"eventTime": "2025-01-01T00:00:00.000000Z", "reportingController": "c", "reportingInstance": "i", "action": "A", "reason": "R", "type": "Normal", "regarding": {"kind": "Pod", "name": "p"}}))]
#[case("apps", "v1", "Deployment", "deployments", json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))]
#[case("apps", "v1", "DaemonSet", "daemonsets", json!({"spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))]
#[case("coordination.k8s.io", "v1", "Lease", "leases", json!({"spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}}))]
#[case("apps", "v1", "StatefulSet", "statefulsets", json!({"spec": {"serviceName": "x", "selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))]
#[case("networking.k8s.io", "v1", "NetworkPolicy", "networkpolicies", json!({"spec": {"podSelector": {"matchLabels": {"a": "b"}}, "policyTypes": ["Ingress"]}}))]
#[case("policy", "v1", "PodDisruptionBudget", "poddisruptionbudgets", json!({"spec": {"minAvailable": 1, "selector": {"matchLabels": {"a": "b"}}}}))]
#[case("rbac.authorization.k8s.io", "v1", "Role", "roles", json!({"rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}]}))]
#[case("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "r"}, "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": "default"}]}))]
#[tokio::test]
async fn namespaced_builtin_round_trips(
    #[case] group: &str,
    #[case] version: &str,
    #[case] kind: &str,
    #[case] plural: &str,
    #[case] body: Value,
) {
    let env = common::env().await;
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = Api::namespaced_with(env.client.clone(), &env.namespace, &ar);
    let mut obj = body;
    obj["apiVersion"] = json!(ar.api_version);
    obj["kind"] = json!(kind);
    obj["metadata"] = json!({"name": "x"});
    // An Event's object must be in the Event's namespace (the real server checks).
    for field in ["involvedObject", "regarding"] {
        if obj.get(field).is_some() {
            obj[field]["namespace"] = json!(env.namespace);
        }
    }
    let obj: DynamicObject = serde_json::from_value(obj).unwrap();
    let created = api.create(&PostParams::default(), &obj).await.unwrap();
    assert_eq!(created.types.unwrap().kind, kind);
    let got = api.get("x").await.unwrap();
    assert_eq!(
        got.metadata.namespace.as_deref(),
        Some(env.namespace.as_str())
    );
    api.delete("x", &DeleteParams::default()).await.unwrap();
    common::eventually("deleted", || common::is_gone(&api, "x")).await;
}

#[tokio::test]
async fn version_is_served() {
    let env = common::env().await;
    let v = env.client.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
}

#[tokio::test]
async fn dry_run_create_stores_nothing() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    let cm: ConfigMap = serde_json::from_value(json!({"metadata": {"name": "dry"}})).unwrap();
    let pp = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let answered = api.create(&pp, &cm).await.unwrap();
    assert_eq!(answered.metadata.name.as_deref(), Some("dry"));
    assert!(common::is_gone(&api, "dry").await);
}

#[tokio::test]
async fn delete_collection_by_label() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    for (name, app) in [("a", "x"), ("b", "x"), ("c", "y")] {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": {"app": app}}}))
                .unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("app=x"),
    )
    .await
    .unwrap();
    common::eventually("a and b deleted", || async {
        common::is_gone(&api, "a").await && common::is_gone(&api, "b").await
    })
    .await;
    assert!(api.get("c").await.is_ok());
}

#[tokio::test]
async fn service_defaults_and_a_kept_cluster_ip() {
    use k8s_openapi::api::core::v1::Service;
    let env = common::env().await;
    let api: Api<Service> = env.api();
    let svc: Service = serde_json::from_value(
        json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .unwrap();
    let created = api.create(&PostParams::default(), &svc).await.unwrap();
    let spec = created.spec.clone().unwrap();
    assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
    let ip = spec.cluster_ip.clone().unwrap();
    assert!(ip.parse::<std::net::Ipv4Addr>().is_ok(), "{ip}");
    let port = &spec.ports.as_ref().unwrap()[0];
    assert_eq!(port.protocol.as_deref(), Some("TCP"));
    assert_eq!(
        port.target_port,
        Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(80))
    );
    // A replace that leaves the address out keeps it.
    let mut again = created.clone();
    let s = again.spec.as_mut().unwrap();
    s.cluster_ip = None;
    s.cluster_ips = None;
    s.ports.as_mut().unwrap()[0].port = 8080;
    s.ports.as_mut().unwrap()[0].target_port = None;
    let replaced = api
        .replace("web", &PostParams::default(), &again)
        .await
        .unwrap();
    assert_eq!(replaced.spec.unwrap().cluster_ip, Some(ip));
}

#[tokio::test]
async fn immutable_fields_are_422() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Patch, PatchParams};
    let env = common::env().await;
    let secrets: Api<Secret> = env.api();
    let s: Secret =
        serde_json::from_value(json!({"metadata": {"name": "s"}, "type": "Opaque", "data": {}}))
            .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let r = secrets
        .patch(
            "s",
            &PatchParams::default(),
            &Patch::Merge(json!({"type": "kubernetes.io/tls"})),
        )
        .await;
    assert_eq!(common::reason(r).0, 422);

    let frozen: ConfigMap = serde_json::from_value(
        json!({"metadata": {"name": "frozen"}, "immutable": true, "data": {"a": "1"}}),
    )
    .unwrap();
    let cms: Api<ConfigMap> = env.api();
    cms.create(&PostParams::default(), &frozen).await.unwrap();
    let r = cms
        .patch(
            "frozen",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"a": "2"}})),
        )
        .await;
    assert_eq!(common::reason(r).0, 422);
    // Metadata stays writable.
    cms.patch(
        "frozen",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();

    let deploys: Api<Deployment> = env.api();
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "d"}, "spec": {
        "selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b", "c": "d"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}},
    }}))
    .unwrap();
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let r = deploys
        .patch(
            "d",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"selector": {"matchLabels": {"c": "d"}}}})),
        )
        .await;
    assert_eq!(common::reason(r).0, 422);
}

#[tokio::test]
async fn a_new_namespace_has_its_default_service_account() {
    use k8s_openapi::api::core::v1::ServiceAccount;
    let env = common::env().await;
    let sas: Api<ServiceAccount> = env.api();
    common::eventually("the default ServiceAccount", || async {
        sas.get("default").await.is_ok()
    })
    .await;
    let cms: Api<ConfigMap> = env.api();
    common::eventually("the root CA ConfigMap", || async {
        cms.get("kube-root-ca.crt").await.is_ok()
    })
    .await;
}

/// Cluster-scoped objects owned by the test namespace, so that deleting it collects them
/// on a real cluster too.
fn owned(
    env: &api_emulator::testing::TestEnv,
    ns: &k8s_openapi::api::core::v1::Namespace,
) -> Value {
    json!({"name": format!("emu-{}", env.namespace), "ownerReferences": [{
        "apiVersion": "v1", "kind": "Namespace",
        "name": ns.metadata.name, "uid": ns.metadata.uid,
    }]})
}

#[rstest]
#[case("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", json!({
    "rules": [],
    "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"emu-test/aggregate": "true"}}]},
}))]
#[case("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"}, "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "emu-test"}]}))]
#[case("admissionregistration.k8s.io", "v1", "ValidatingWebhookConfiguration", "validatingwebhookconfigurations", json!({"webhooks": []}))]
#[tokio::test]
async fn cluster_scoped_builtin_is_stored_and_listed(
    #[case] group: &str,
    #[case] version: &str,
    #[case] kind: &str,
    #[case] plural: &str,
    #[case] body: Value,
) {
    let env = common::env().await;
    let ns = Api::<k8s_openapi::api::core::v1::Namespace>::all(env.client.clone())
        .get(&env.namespace)
        .await
        .unwrap();
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
    let api: Api<DynamicObject> = Api::all_with(env.client.clone(), &ar);
    let mut obj = body;
    obj["apiVersion"] = json!(ar.api_version);
    obj["kind"] = json!(kind);
    obj["metadata"] = owned(&env, &ns);
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    let created = api
        .create(
            &PostParams::default(),
            &serde_json::from_value(obj).unwrap(),
        )
        .await
        .unwrap();
    assert!(created.metadata.namespace.is_none());
    let listed = api.list(&ListParams::default()).await.unwrap();
    assert!(
        listed
            .items
            .iter()
            .any(|o| o.metadata.name.as_deref() == Some(&name))
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
}

#[tokio::test]
async fn a_statefulset_scales_through_its_scale_subresource() {
    use k8s_openapi::api::apps::v1::StatefulSet;
    let env = common::env().await;
    let sts: Api<StatefulSet> = env.api();
    let s: StatefulSet = serde_json::from_value(json!({
        "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "replicas": 1, "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
    }))
    .unwrap();
    sts.create(&PostParams::default(), &s).await.unwrap();
    let scale = sts.get_scale("db").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(1));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=db"));
    sts.patch_scale(
        "db",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(json!({"spec": {"replicas": 3}})),
    )
    .await
    .unwrap();
    assert_eq!(sts.get("db").await.unwrap().spec.replicas, Some(3));
}
