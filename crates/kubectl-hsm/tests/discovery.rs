//! The plugin finding the manager with no `--server`, as the Go plugin does: the namespace
//! order (`-n`, `$HSM_OPERATOR_NAMESPACE`, the cluster-wide search for the Service, the
//! default), the manager's Service, a Ready manager pod, and a port-forward through the
//! Kubernetes API to that pod's IP — where a real `hsm-operator` manager's REST API listens
//! (wired as the binary wires it, on a SoftHSM2 agent behind mTLS). The plugin's user has
//! only the RBAC the way in needs, enforced by the API emulator; its ServiceAccount token is
//! exchanged at the manager and cached, and the manager authorises it by RBAC.

mod support;

use api_emulator::{Authorization, UserInfo};
use clap::Parser;
use hsm_operator::agents::AgentApi;
use hsm_operator::cli::Cli;
use hsm_operator::testing::*;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};
use support::{Plugin, run};

/// The manager's REST port, which the plugin forwards to.
const API_PORT: u16 = 8090;
/// A namespace with the Service and a manager pod where nothing listens.
const OTHER_NS: &str = "broken";
/// The plugin user's bearer token (a static token of the emulator).
const USER_TOKEN: &str = "plugin-user-token";

/// Waits until `check` holds.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A 127.0.X.Y address, as the pod runner gives pods, on which `port` is free; random, so
/// that tests running at once do not meet (the runner hands out addresses from the bottom).
fn pod_ip(port: u16) -> IpAddr {
    use std::hash::{BuildHasher as _, Hasher as _};
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        );
        let r = h.finish();
        let ip = IpAddr::V4(Ipv4Addr::new(
            127,
            0,
            100 + (r % 150) as u8,
            2 + ((r >> 8) % 250) as u8,
        ));
        if std::net::TcpListener::bind(SocketAddr::new(ip, port)).is_ok() {
            return ip;
        }
    }
}

/// A manager pod bound to node `local`, Running, Ready as asked, with `ip` as its podIP.
async fn manager_pod(client: &kube::Client, namespace: &str, name: &str, ip: IpAddr, ready: bool) {
    let pods = Api::<Pod>::namespaced(client.clone(), namespace);
    pods.create(
        &Default::default(),
        &serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": namespace, "labels": {
                "app.kubernetes.io/name": "hsm-secrets-operator",
                "control-plane": "controller-manager"}},
            "spec": {"nodeName": "local",
                     "containers": [{"name": "manager", "image": "hsm-operator",
                                     "ports": [{"name": "api", "containerPort": API_PORT}]}]}
        }))
        .unwrap(),
    )
    .await
    .unwrap();
    pods.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"status": {"phase": "Running", "podIP": ip.to_string(),
            "podIPs": [{"ip": ip.to_string()}],
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}),
        ),
    )
    .await
    .unwrap();
}

/// The manager's Service, as `deploy/base/services.yaml` has it, in `namespace`.
fn api_service(cluster: &Cluster, namespace: &str) {
    let services = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/services.yaml");
    let text = std::fs::read_to_string(services).unwrap();
    let api = text
        .split("\n---")
        .find(|doc| doc.contains("hsm-secrets-operator-api"))
        .unwrap();
    let mut service: Value = serde_yaml::from_str(api).unwrap();
    service["metadata"]["namespace"] = json!(namespace);
    cluster.emulator.create_object(service).unwrap();
}

/// The plugin's user `alice` and her RBAC: what finding the manager and port-forwarding to
/// it take, and a token for the plugin's ServiceAccount; the account `default/kubectl-hsm`
/// may read and edit HSM secrets in the operator's namespace (`deploy/base/rbac-users.yaml`).
fn plugin_rbac(cluster: &Cluster) {
    let emulator = &cluster.emulator;
    emulator.add_token(
        USER_TOKEN,
        UserInfo {
            username: "alice".into(),
            uid: "alice-uid".into(),
            groups: vec!["system:authenticated".into()],
        },
    );
    emulator
        .load_objects_from_str(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: kubectl-hsm-user}
rules:
  - {apiGroups: [""], resources: [services], verbs: [get, list]}
  - {apiGroups: [""], resources: [pods], verbs: [list]}
  - {apiGroups: [""], resources: [pods/portforward], verbs: [get, create]}
  - {apiGroups: [""], resources: [serviceaccounts/token], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: kubectl-hsm-user}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: kubectl-hsm-user}
subjects: [{apiGroup: rbac.authorization.k8s.io, kind: User, name: alice}]
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: kubectl-hsm, namespace: default}
"#,
        )
        .unwrap();
    emulator
        .load_objects(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base/rbac-users.yaml"),
        )
        .unwrap();
    // A real cluster's `edit` role aggregates both; the emulator aggregates nothing.
    for role in [
        "hsm-secrets-operator-hsmsecret-editor",
        "hsm-secrets-operator-hsmsecret-viewer",
    ] {
        emulator
            .create_object(json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                "metadata": {"name": role, "namespace": OPERATOR_NS},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                            "name": role},
                "subjects": [{"kind": "ServiceAccount", "name": "kubectl-hsm",
                              "namespace": "default"}]
            }))
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_server_the_plugin_finds_the_manager_and_port_forwards_to_it() {
    let cluster = cluster().await;
    cluster.emulator.set_authorization(Authorization::Rbac);
    let home = tempfile::tempdir().unwrap();
    let audit = home.path().join("audit.jsonl");
    cluster.emulator.audit_to_file(&audit).unwrap();
    let client = cluster.client.clone();
    let pki = operator_pki(&client, OPERATOR_NS).await;
    let agent = TestAgent::start(&pki).await;
    let ip = pod_ip(API_PORT);
    let cli = Cli::parse_from([
        "hsm-operator".to_owned(),
        "--metrics-bind-address=0".into(),
        "--health-probe-bind-address=0".into(),
        format!("--api-bind-address={ip}:{API_PORT}"),
        format!("--operator-name={OPERATOR_NAME}"),
        format!("--namespace={OPERATOR_NS}"),
        "--manage-agents=false".into(),
        format!("--agent-endpoint=a={}", agent.url()),
    ]);
    let manager = tokio::spawn({
        let client = client.clone();
        async move { hsm_operator::run::run_with(cli, client).await }
    });
    let direct = Plugin::new(
        &format!("http://{ip}:{API_PORT}"),
        &cluster.emulator.admin_token(),
    );
    until("the manager's REST API to see its device", async || {
        direct.cmd(&["health"]).output().unwrap().status.success()
    })
    .await;
    plugin_rbac(&cluster);
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        api_emulator::kubeconfig::render(&cluster.server.url(), None, USER_TOKEN),
    )
    .unwrap();
    let plugin = Plugin::with_kubeconfig("unused", &kubeconfig);

    // No Service anywhere: the error names the namespaces tried.
    let ran = run(plugin.bare(&["list"]), "").code(3).one_line_error();
    assert!(
        ran.stderr.contains(
            "service hsm-secrets-operator-api not found in namespace hsm-secrets-operator-system \
             (the default, tried after the search of every namespace found none)"
        ),
        "{}",
        ran.stderr
    );

    // The Service in the operator's namespace, a Ready manager pod at the manager's address
    // and, first by name, a Running but unready one where nothing listens.
    api_service(&cluster, OPERATOR_NS);
    manager_pod(&client, OPERATOR_NS, "manager-a", pod_ip(API_PORT), false).await;
    manager_pod(&client, OPERATOR_NS, "manager-b", ip, true).await;

    // Found by the search; written, listed and read through the port-forward.
    run(
        plugin.bare(&[
            "create",
            "db",
            "--from-literal",
            "username=app",
            "--from-literal",
            "password=s3cret",
        ]),
        "",
    )
    .code(0);
    let values = agent.client(&pki).read("db").await.unwrap();
    assert_eq!(values["password"], b"s3cret");
    let listed = run(plugin.bare(&["list"]), "").code(0);
    assert!(listed.stdout.contains("db"), "{}", listed.stdout);
    let shown = run(plugin.bare(&["get", "db", "-o", "json"]), "")
        .code(0)
        .never_shows("plugin-user-token");
    let doc: Value = serde_json::from_str(&shown.stdout).unwrap();
    assert_eq!(doc.to_string().matches("s3cret").count(), 1, "{doc}");
    let text = run(plugin.bare(&["get", "db"]), "").code(0);
    assert!(!text.stdout.contains("s3cret"), "{}", text.stdout);

    // Every tunnel went to the Ready pod, as alice, authorised and upgraded.
    let forwards: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|e| e["subresource"] == "portforward")
        .collect();
    // One tunnel per connection: at least one for each of the four commands.
    assert!(forwards.len() >= 4, "{forwards:?}");
    for e in &forwards {
        assert_eq!(
            (
                &e["user"],
                &e["namespace"],
                &e["name"],
                &e["verb"],
                &e["code"]
            ),
            (
                &json!("alice"),
                &json!(OPERATOR_NS),
                &json!("manager-b"),
                &json!("get"),
                &json!(101)
            ),
            "{e}"
        );
    }
    // The ServiceAccount token was exchanged once and the manager's token cached.
    assert_eq!(std::fs::read_dir(plugin.cache_dir()).unwrap().count(), 1);
    let status = run(plugin.bare(&["auth", "status"]), "").code(0);
    assert!(
        status.stdout.contains("default/kubectl-hsm"),
        "{}",
        status.stdout
    );

    // The order: with the Service in two namespaces the search is ambiguous, but the
    // environment, and before it -n, choose.
    cluster
        .emulator
        .create_object(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "decoy"}}),
        )
        .unwrap();
    api_service(&cluster, "decoy");
    let ran = run(plugin.bare(&["list"]), "").code(6).one_line_error();
    assert!(ran.stderr.contains("decoy, hsm-system"), "{}", ran.stderr);
    let mut from_env = plugin.bare(&["list"]);
    from_env.env("HSM_OPERATOR_NAMESPACE", OPERATOR_NS);
    let listed = run(from_env, "").code(0);
    assert!(listed.stdout.contains("db"), "{}", listed.stdout);
    let mut flag_first = plugin.bare(&["list", "-n", "decoy"]);
    flag_first.env("HSM_OPERATOR_NAMESPACE", OPERATOR_NS);
    let ran = run(flag_first, "").code(3).one_line_error();
    assert!(
        ran.stderr
            .contains("no running manager pod (app.kubernetes.io/name=hsm-secrets-operator,control-plane=controller-manager) in namespace decoy"),
        "{}",
        ran.stderr
    );
    let ran = run(plugin.bare(&["list", "-n", "elsewhere"]), "")
        .code(3)
        .one_line_error();
    assert!(
        ran.stderr
            .contains("not found in namespace elsewhere (given with -n)"),
        "{}",
        ran.stderr
    );

    // A Ready pod whose API port refuses: the API server's reason, not a closed connection.
    cluster
        .emulator
        .create_object(
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": OTHER_NS}}),
        )
        .unwrap();
    api_service(&cluster, OTHER_NS);
    let silent = pod_ip(API_PORT);
    manager_pod(&client, OTHER_NS, "manager-0", silent, true).await;
    let ran = run(plugin.bare(&["list", "-n", OTHER_NS]), "")
        .code(3)
        .one_line_error();
    assert!(
        ran.stderr.contains(&format!(
            "the port-forward failed: error forwarding port 8090 to pod manager-0_{OTHER_NS}"
        )) && ran
            .stderr
            .contains(&format!("failed to connect to {silent}:8090")),
        "{}",
        ran.stderr
    );

    // A plugin user who may not open tunnels is told so.
    cluster.emulator.add_token(
        "no-forward",
        UserInfo {
            username: "bob".into(),
            uid: "bob-uid".into(),
            groups: vec!["system:authenticated".into()],
        },
    );
    cluster
        .emulator
        .create_object(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "bob-view"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                        "name": "bob-view"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "bob"}]
        }))
        .unwrap();
    cluster
        .emulator
        .create_object(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "bob-view"},
            "rules": [{"apiGroups": [""], "resources": ["services", "pods", "pods/portforward"],
                       "verbs": ["get", "list"]}]
        }))
        .unwrap();
    let bob_config = home.path().join("bob");
    std::fs::write(
        &bob_config,
        api_emulator::kubeconfig::render(&cluster.server.url(), None, "no-forward"),
    )
    .unwrap();
    let bob = Plugin::with_kubeconfig("unused", &bob_config);
    let mut cmd = bob.bare(&["list"]);
    cmd.env("HSM_OPERATOR_NAMESPACE", OPERATOR_NS);
    let ran = run(cmd, "").code(3).one_line_error();
    assert!(
        ran.stderr
            .contains("cannot port-forward to pod hsm-system/manager-b:8090")
            && ran
                .stderr
                .contains("cannot create resource \"pods/portforward\""),
        "{}",
        ran.stderr
    );
    manager.abort();
}
