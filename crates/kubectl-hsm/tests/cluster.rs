//! The plugin with a cluster (the API emulator served over HTTP, with a kubeconfig): its
//! ServiceAccount token from a real TokenRequest, exchanged at the manager and cached with
//! owner-only permissions; `auth status|clear|config`; and how it finds the manager
//! (namespace order, Service, manager pod, port-forward).

mod support;

use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use support::{Plugin, run};
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

struct Cluster {
    emulator: api_emulator::Emulator,
    _server: api_emulator::server::Server,
    dir: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Cluster {
        let emulator = api_emulator::Emulator::new();
        let server = emulator.serve(0).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        server
            .write_kubeconfig(&dir.path().join("kubeconfig"))
            .unwrap();
        Cluster {
            emulator,
            _server: server,
            dir,
        }
    }

    fn kubeconfig(&self) -> std::path::PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn create(&self, object: serde_json::Value) {
        self.emulator.create_object(object).unwrap();
    }

    async fn service_account(&self, namespace: &str, name: &str) {
        let sa: ServiceAccount =
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
        Api::<ServiceAccount>::namespaced(self.emulator.client(), namespace)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap();
    }

    fn namespace(&self, name: &str) {
        self.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}));
    }

    fn api_service(&self, namespace: &str, port: u16) {
        self.create(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "hsm-secrets-operator-api", "namespace": namespace},
            "spec": {"ports": [{"port": port}], "selector": {"control-plane": "controller-manager"}}
        }));
    }

    async fn running_manager_pod(&self, namespace: &str, name: &str) {
        self.create(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": {
                "app.kubernetes.io/name": "hsm-secrets-operator",
                "control-plane": "controller-manager"}},
            "spec": {"containers": [{"name": "manager", "image": "manager"}]}
        }));
        Api::<Pod>::namespaced(self.emulator.client(), namespace)
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True"}]}})),
            )
            .await
            .unwrap();
    }
}

fn mode(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[tokio::test(flavor = "multi_thread")]
async fn the_token_is_requested_exchanged_and_cached_owner_only() {
    let cluster = Cluster::start().await;
    cluster.service_account("default", "kubectl-hsm").await;
    let manager = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/v1/auth/token"))
        .and(|r: &Request| {
            serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|b| b["k8s_token"].as_str().map(|t| t.split('.').count() == 3))
                .unwrap_or(false)
        })
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "token": "manager-jwt",
            "expires_at": (chrono::Utc::now() + chrono::TimeDelta::minutes(30)).to_rfc3339(),
            "token_type": "Bearer"})))
        .expect(1)
        .mount(&manager)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/hsm/secrets"))
        .and(header("authorization", "Bearer manager-jwt"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success": true,
            "data": {"secrets": ["db"], "count": 1}})),
        )
        .expect(2)
        .mount(&manager)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/v1/info"))
        .and(header("authorization", "Bearer manager-jwt"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"success": true,
            "data": {"service": "HSM Secrets Operator API"}})),
        )
        .mount(&manager)
        .await;
    let plugin = Plugin::with_kubeconfig(&manager.uri(), &cluster.kubeconfig());
    // Two runs, one exchange: the second uses the cache.
    for _ in 0..2 {
        let ran = run(plugin.cmd(&["list"]), "")
            .code(0)
            .never_shows("manager-jwt");
        assert!(ran.stdout.contains("db"), "{}", ran.stdout);
    }
    let dir = plugin.cache_dir();
    assert_eq!(mode(&dir), 0o700);
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(mode(&files[0]), 0o600);

    let status = run(plugin.cmd(&["auth", "status"]), "")
        .code(0)
        .never_shows("manager-jwt");
    assert!(
        status.stdout.contains("default/kubectl-hsm"),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("Authenticated:   yes"),
        "{}",
        status.stdout
    );

    let cleared = run(plugin.cmd(&["auth", "clear"]), "").code(0);
    assert!(
        cleared.stdout.contains("Removed 1 cached tokens"),
        "{}",
        cleared.stdout
    );
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);

    let config = run(
        plugin.bare(&[
            "auth",
            "config",
            "--service-account",
            "ci",
            "--namespace",
            "tools",
        ]),
        "",
    )
    .code(0);
    assert!(
        config.stdout.contains("Service account: ci"),
        "{}",
        config.stdout
    );
    let saved = dir.join("config.json");
    assert_eq!(mode(&saved), 0o600);
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&saved).unwrap()).unwrap();
    assert_eq!(doc, json!({"serviceAccount": "ci", "namespace": "tools"}));
    let shown = run(plugin.bare(&["auth", "config", "-o", "json"]), "").code(0);
    assert!(shown.stdout.contains("\"tools\""), "{}", shown.stdout);
    // That account does not exist: no token, exit 5, one line.
    let ran = run(plugin.cmd(&["list"]), "").code(5).one_line_error();
    assert!(ran.stderr.contains("tools/ci"), "{}", ran.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_manager_is_found_as_the_go_plugin_finds_it() {
    let cluster = Cluster::start().await;
    let plugin = Plugin::with_kubeconfig("unused", &cluster.kubeconfig());
    // Nothing installed: the default namespace is searched.
    let ran = run(plugin.bare(&["list"]), "").code(3).one_line_error();
    assert!(
        ran.stderr
            .contains("not found in namespace hsm-secrets-operator-system"),
        "{}",
        ran.stderr
    );
    // The one namespace that has the Service is found; it has no manager pod yet.
    cluster.namespace("ops");
    cluster.api_service("ops", 8090);
    let ran = run(plugin.bare(&["list"]), "").code(3).one_line_error();
    assert!(
        ran.stderr.contains("no running manager pod"),
        "{}",
        ran.stderr
    );
    assert!(ran.stderr.contains("namespace ops"), "{}", ran.stderr);
    // With a running pod, the port-forward is tried; this pod is bound to no node, which
    // the API server refuses before any upgrade (tests/discovery.rs forwards for real).
    cluster.running_manager_pod("ops", "manager-0").await;
    let ran = run(plugin.bare(&["list"]), "").code(3).one_line_error();
    assert!(
        ran.stderr
            .contains("cannot port-forward to pod ops/manager-0:8090")
            && ran
                .stderr
                .contains("pod manager-0 does not have a host assigned"),
        "{}",
        ran.stderr
    );
    // -n and the environment come before the search.
    let ran = run(plugin.bare(&["list", "-n", "elsewhere"]), "").code(3);
    assert!(ran.stderr.contains("namespace elsewhere"), "{}", ran.stderr);
    let mut cmd = plugin.bare(&["list"]);
    cmd.env("HSM_OPERATOR_NAMESPACE", "from-env");
    let ran = run(cmd, "").code(3);
    assert!(ran.stderr.contains("namespace from-env"), "{}", ran.stderr);
    // A Service without 8090 is not the API.
    cluster.namespace("odd");
    cluster.api_service("odd", 80);
    let ran = run(plugin.bare(&["list", "-n", "odd"]), "").code(3);
    assert!(
        ran.stderr.contains("does not expose port 8090"),
        "{}",
        ran.stderr
    );
    // Two namespaces with the Service: the user must choose.
    let ran = run(plugin.bare(&["list"]), "").code(6).one_line_error();
    assert!(ran.stderr.contains("odd, ops"), "{}", ran.stderr);
}
