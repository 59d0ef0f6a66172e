//! RBAC decisions, compared with a real cluster's: one set of Roles and bindings, a table of
//! SubjectAccessReviews whose answers must match, and the same rules enforced on requests
//! made as an impersonated user (403 with the real message). With `HSM_TEST_KUBECONFIG`
//! the table runs against that cluster's RBAC authoriser.

mod common;

use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};

/// Cluster-scoped objects owned by the test namespace, so deleting it collects them.
fn owned_by(ns: &Namespace) -> Value {
    json!([{
        "apiVersion": "v1", "kind": "Namespace",
        "name": ns.metadata.name, "uid": ns.metadata.uid,
    }])
}

async fn create(client: &kube::Client, object: Value) {
    let api_version = object["apiVersion"].as_str().unwrap().to_string();
    let kind = object["kind"].as_str().unwrap().to_string();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
    let plural = format!("{}s", kind.to_lowercase());
    let ar = kube::api::ApiResource::from_gvk_with_plural(&gvk, &plural);
    let obj: kube::api::DynamicObject = serde_json::from_value(object).unwrap();
    let api: Api<kube::api::DynamicObject> = match &obj.metadata.namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("create {kind}: {e}"));
}

/// The Roles and bindings the table is about. `user` gets the namespaced rules, `group`
/// the cluster-wide ones, ServiceAccount `robot` its own.
async fn set_up(env: &api_emulator::testing::TestEnv, user: &str, group: &str) {
    let c = &env.client;
    let ns = env.namespace.as_str();
    let namespace: Namespace = Api::all(c.clone()).get(ns).await.unwrap();
    let rbac = "rbac.authorization.k8s.io/v1";
    create(c, json!({"apiVersion": rbac, "kind": "Role", "metadata": {"name": "reader", "namespace": ns}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["allowed"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["patch"]},
        {"apiGroups": ["*"], "resources": ["leases"], "verbs": ["*"]},
    ]})).await;
    let binding = |name: &str, kind: &str, role: &str, subject: Value| {
        json!({"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": name, "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
            "subjects": [subject]})
    };
    let user_subject =
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user});
    create(c, binding("reader", "Role", "reader", user_subject.clone())).await;
    // A binding to a Role that does not exist grants nothing.
    create(c, binding("ghost", "Role", "ghost", user_subject.clone())).await;
    create(
        c,
        binding(
            "robot",
            "Role",
            "reader",
            json!({"kind": "ServiceAccount", "name": "robot", "namespace": ns}),
        ),
    )
    .await;
    let cluster_name = format!("emu-rbac-{ns}");
    create(
        c,
        json!({"apiVersion": rbac, "kind": "ClusterRole",
        "metadata": {"name": cluster_name, "ownerReferences": owned_by(&namespace)},
        "rules": [
            {"nonResourceURLs": ["/emu-test/*"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
            {"apiGroups": [""], "resources": ["endpoints"], "verbs": ["list"]},
        ]}),
    )
    .await;
    create(c, json!({"apiVersion": rbac, "kind": "ClusterRoleBinding",
        "metadata": {"name": cluster_name, "ownerReferences": owned_by(&namespace)},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group}]})).await;
    // A ClusterRole bound by a RoleBinding grants only in that namespace.
    create(
        c,
        binding("cluster-in-ns", "ClusterRole", &cluster_name, user_subject),
    )
    .await;
}

/// (who, verb, group, resource, subresource, name, namespace-or-other, path, allowed)
type Case = (
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    &'static str,
    bool,
);

const CASES: &[Case] = &[
    ("user", "get", "", "configmaps", "", "x", "ns", "", true),
    ("user", "list", "", "configmaps", "", "", "ns", "", true),
    ("user", "list", "", "configmaps", "", "", "other", "", false),
    ("user", "delete", "", "configmaps", "", "x", "ns", "", false),
    ("user", "get", "", "secrets", "", "allowed", "ns", "", true),
    ("user", "get", "", "secrets", "", "other", "ns", "", false),
    ("user", "list", "", "secrets", "", "", "ns", "", false),
    ("user", "get", "", "pods", "log", "p", "ns", "", true),
    ("user", "get", "", "pods", "", "p", "ns", "", false),
    (
        "user",
        "patch",
        "apps",
        "deployments",
        "scale",
        "d",
        "ns",
        "",
        true,
    ),
    (
        "user",
        "patch",
        "apps",
        "deployments",
        "",
        "d",
        "ns",
        "",
        false,
    ),
    (
        "user",
        "patch",
        "",
        "deployments",
        "scale",
        "d",
        "ns",
        "",
        false,
    ),
    (
        "user",
        "watch",
        "coordination.k8s.io",
        "leases",
        "",
        "",
        "ns",
        "",
        true,
    ),
    ("user", "get", "", "services", "", "s", "ns", "", false),
    ("user", "list", "", "endpoints", "", "", "ns", "", true),
    ("user", "list", "", "endpoints", "", "", "other", "", false),
    ("user", "get", "", "nodes", "", "n", "", "", false),
    ("user", "get", "", "", "", "", "", "/emu-test/a", false),
    ("group", "get", "", "nodes", "", "n", "", "", true),
    ("group", "get", "", "", "", "", "", "/emu-test/a", true),
    ("group", "post", "", "", "", "", "", "/emu-test/a", false),
    ("group", "get", "", "", "", "", "", "/emu-test", false),
    ("group", "list", "", "configmaps", "", "", "ns", "", false),
    ("robot", "list", "", "configmaps", "", "", "ns", "", true),
    ("robot", "get", "", "secrets", "", "allowed", "ns", "", true),
    ("robot", "get", "", "nodes", "", "n", "", "", false),
];

fn review(case: &Case, user: &str, group: &str, ns: &str) -> SubjectAccessReview {
    let &(who, verb, api_group, resource, sub, name, where_, path, _) = case;
    let (username, groups) = match who {
        "user" => (user.to_string(), vec![]),
        "group" => (format!("{user}-member"), vec![group.to_string()]),
        _ => (format!("system:serviceaccount:{ns}:robot"), vec![]),
    };
    let namespace = match where_ {
        "ns" => ns,
        "other" => "default",
        _ => "",
    };
    let spec = if path.is_empty() {
        json!({"user": username, "groups": groups, "resourceAttributes": {
            "verb": verb, "group": api_group, "resource": resource, "subresource": sub,
            "name": name, "namespace": namespace,
        }})
    } else {
        json!({"user": username, "groups": groups, "nonResourceAttributes": {"verb": verb, "path": path}})
    };
    serde_json::from_value(json!({"spec": spec})).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subject_access_reviews_decide_as_a_clusters_rbac() {
    let env = common::env().await;
    let ns = env.namespace.clone();
    let user = format!("emu-rbac-user-{ns}");
    let group = format!("emu-rbac-group-{ns}");
    set_up(&env, &user, &group).await;
    let reviews: Api<SubjectAccessReview> = Api::all(env.client.clone());
    let mut wrong = Vec::new();
    for case in CASES {
        let answer = reviews
            .create(&PostParams::default(), &review(case, &user, &group, &ns))
            .await
            .unwrap();
        let status = answer.status.unwrap();
        if status.allowed != case.8 {
            wrong.push((case, status.allowed, status.reason));
        }
    }
    assert!(wrong.is_empty(), "decisions that differ: {wrong:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_authorised_by_the_same_rules() {
    let mut env = common::env().await;
    let ns = env.namespace.clone();
    let user = format!("emu-rbac-user-{ns}");
    let group = format!("emu-rbac-group-{ns}");
    set_up(&env, &user, &group).await;
    let secrets: Api<Secret> = env.api();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "allowed"}})).unwrap(),
        )
        .await
        .unwrap();
    let as_user = env.client_as(&user, &[]).await;
    let cms: Api<ConfigMap> = Api::namespaced(as_user.clone(), &ns);
    cms.list(&ListParams::default()).await.unwrap();
    let mine: Api<Secret> = Api::namespaced(as_user.clone(), &ns);
    assert!(mine.get("allowed").await.is_ok());
    let denied = match mine.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected 403, got {other:?}"),
    };
    assert_eq!((denied.code, denied.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        denied.message,
        format!(
            "secrets is forbidden: User \"{user}\" cannot list resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
        )
    );
    let other = match mine.get("other").await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected 403, got {other:?}"),
    };
    assert_eq!(
        other.message,
        format!(
            "secrets \"other\" is forbidden: User \"{user}\" cannot get resource \"secrets\" in API group \"\" in the namespace \"{ns}\""
        )
    );
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(as_user);
    let cluster = match nodes.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected 403, got {other:?}"),
    };
    assert_eq!(
        cluster.message,
        format!(
            "nodes is forbidden: User \"{user}\" cannot list resource \"nodes\" in API group \"\" at the cluster scope"
        )
    );
}

/// A server-side apply that creates its object needs `create` besides `patch`; one that
/// changes an existing object needs `patch` only (the real server's patch handler authorises
/// the creation it makes).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_apply_that_creates_needs_create_as_well_as_patch() {
    let mut env = common::env().await;
    let ns = env.namespace.clone();
    let user = format!("emu-rbac-applier-{ns}");
    let rbac = "rbac.authorization.k8s.io/v1";
    create(&env.client, json!({"apiVersion": rbac, "kind": "Role", "metadata": {"name": "applier", "namespace": ns}, "rules": [
        {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["patch", "create"]},
    ]})).await;
    create(&env.client, json!({"apiVersion": rbac, "kind": "RoleBinding", "metadata": {"name": "applier", "namespace": ns},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "applier"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]})).await;
    let as_user = env.client_as(&user, &[]).await;
    let apply = kube::api::PatchParams::apply("applier");
    let config_map = |data: &str| {
        kube::api::Patch::Apply(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "applied"}, "data": {"k": data}}))
    };
    let cms: Api<ConfigMap> = Api::namespaced(as_user.clone(), &ns);
    let refused = match cms.patch("applied", &apply, &config_map("1")).await {
        Err(kube::Error::Api(s)) => s,
        other => panic!("expected 403, got {other:?}"),
    };
    assert_eq!(refused.code, 403);
    assert!(
        refused
            .message
            .contains("cannot create resource \"configmaps\""),
        "{}",
        refused.message
    );
    let admin: Api<ConfigMap> = env.api();
    assert!(admin.get_opt("applied").await.unwrap().is_none());
    admin
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "applied"}})).unwrap(),
        )
        .await
        .unwrap();
    let changed = cms
        .patch("applied", &apply, &config_map("2"))
        .await
        .unwrap();
    assert_eq!(changed.data.unwrap()["k"], "2");

    let secrets: Api<Secret> = Api::namespaced(as_user, &ns);
    let made = secrets
        .patch(
            "applied",
            &apply,
            &kube::api::Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": "applied"}, "stringData": {"k": "v"}})),
        )
        .await
        .unwrap();
    assert_eq!(made.metadata.name.as_deref(), Some("applied"));
}
