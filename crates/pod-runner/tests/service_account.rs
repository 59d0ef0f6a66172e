//! Pods talk to the API as their own ServiceAccount, as in a cluster: the API emulator
//! (served over TLS, RBAC enforced, audited) mounts the `kube-api-access-*` projected volume
//! into the pod at admission, the runner requests the pod-bound token, writes the volume
//! and gives the process `KUBERNETES_SERVICE_*` and a kubeconfig of that volume. The real
//! `kubectl` run as a container proves who it is and what its Role allows; a long-running
//! container sees its token refreshed, and the token dies with the pod.

use api_emulator::{Authorization, Emulator};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use pod_runner::{ImageTable, PodRunner, RunnerConfig};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NS: &str = "team";
const SA: &str = "reader";
const USER: &str = "system:serviceaccount:team:reader";
const ECHO: &str = env!("CARGO_BIN_EXE_pod-runner-echo");

const OBJECTS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: team}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: reader, namespace: team}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: team}
data: {mode: fast}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: config-reader, namespace: team}
rules:
- {apiGroups: [''], resources: [configmaps], verbs: [get, list]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: reader, namespace: team}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: config-reader}
subjects:
- {kind: ServiceAccount, name: reader, namespace: team}
";

/// The `kubectl` of this machine, from `PATH`.
fn kubectl() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("kubectl"))
        .find(|p| p.is_file())
        .expect("kubectl on PATH (the tests use the real binary)")
}

struct Cluster {
    emulator: Emulator,
    server: api_emulator::server::Server,
    runner: Option<PodRunner>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    /// The emulator served over TLS with RBAC enforced and audited, and a runner (as the
    /// kubelet, an administrator) whose pods reach it at its address.
    async fn start(token_refresh_fraction: f64) -> Cluster {
        let emulator = Emulator::builder()
            .authorization(Authorization::Rbac)
            .audit(true)
            .build();
        emulator.load_objects_from_str(OBJECTS).unwrap();
        let server = emulator.serve_tls(0).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = RunnerConfig::new("local", dir.path().join("pods"));
        config.images = ImageTable::new()
            .with("kubectl", kubectl())
            .with("echo", ECHO);
        config.api_server = Some(server.url().parse().unwrap());
        config.token_refresh_fraction = token_refresh_fraction;
        config.resync = Duration::from_millis(200);
        let runner = PodRunner::start(emulator.admin_client(), config).unwrap();
        Cluster {
            emulator,
            server,
            runner: Some(runner),
            _dir: dir,
        }
    }

    fn runner(&self) -> &PodRunner {
        self.runner.as_ref().unwrap()
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.emulator.admin_client(), NS)
    }

    async fn create_pod(&self, pod: Value) -> Pod {
        let pod: Pod = serde_json::from_value(pod).unwrap();
        self.pods()
            .create(&PostParams::default(), &pod)
            .await
            .unwrap()
    }

    async fn pod_until(&self, name: &str, what: &str, done: impl Fn(&Pod) -> bool) -> Pod {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let pod = self.pods().get(name).await.unwrap();
            if done(&pod) {
                return pod;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}: {:#?}",
                pod.status
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log(&self, pod: &str, container: &str) -> String {
        std::fs::read_to_string(self.runner().log_path(NS, pod, container)).unwrap_or_default()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        drop(self.runner.take());
    }
}

/// Each container's exit code, once every one has terminated.
fn exit_codes(pod: &Pod) -> Option<Vec<(String, i32)>> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    statuses
        .iter()
        .map(|s| {
            let t = s.state.as_ref()?.terminated.as_ref()?;
            Some((s.name.clone(), t.exit_code))
        })
        .collect()
}

/// A container running the real kubectl with `args`, HOME on an emptyDir.
fn kubectl_container(name: &str, args: &[&str]) -> Value {
    json!({"name": name, "image": "registry.k8s.io/kubectl:v1.32", "args": args,
           "env": [{"name": "HOME", "value": "/home/kubectl"}],
           "volumeMounts": [{"name": "home", "mountPath": "/home/kubectl"}]})
}

/// The claims of a JWT (its middle part).
fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// The pod's ServiceAccount volume (added at admission) and its directory here.
fn token_volume(c: &Cluster, pod: &Pod) -> (String, PathBuf) {
    let volume = pod
        .spec
        .as_ref()
        .unwrap()
        .volumes
        .iter()
        .flatten()
        .map(|v| v.name.clone())
        .find(|n| n.starts_with("kube-api-access-"))
        .expect("the admission plugin added the token volume");
    let dir = c
        .runner()
        .pod_dir(NS, &pod.name_any())
        .join("volumes")
        .join(&volume);
    (volume, dir)
}

/// A GET over plain HTTP/1.1; None when nothing listens.
fn get(ip: &str, port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect((ip, port)).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    Some(out)
}

#[tokio::test]
async fn kubectl_in_a_pod_is_its_service_account_with_its_roles_rights_only() {
    let c = Cluster::start(0.8).await;
    c.emulator.clear_audit_log();
    let pod = c
        .create_pod(json!({
        "metadata": {"name": "probe", "namespace": NS},
        "spec": {"nodeName": "local", "serviceAccountName": SA, "restartPolicy": "Never",
            "volumes": [{"name": "home", "emptyDir": {}}],
            "containers": [
                kubectl_container("whoami", &["auth", "whoami", "-o", "json"]),
                kubectl_container("allowed", &["get", "configmap", "settings", "-o", "name"]),
                kubectl_container("denied", &["get", "secrets"]),
            ]}}))
        .await;
    let uid = pod.uid().unwrap();
    let done = c
        .pod_until("probe", "every kubectl to finish", |p| {
            exit_codes(p).is_some()
        })
        .await;
    let codes = exit_codes(&done).unwrap();
    let logs = |n: &str| c.log("probe", n);
    let code = |n: &str| codes.iter().find(|(k, _)| k == n).unwrap().1;

    // Who it is: the pod's ServiceAccount (kubectl found it through the kubeconfig the
    // runner wrote for the pod's token volume).
    assert_eq!(code("whoami"), 0, "{}", logs("whoami"));
    let review: Value = serde_json::from_str(&logs("whoami")).unwrap();
    let user = &review["status"]["userInfo"];
    assert_eq!(user["username"], USER, "{review:#}");
    let groups: Vec<&str> = user["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        groups.contains(&"system:serviceaccounts")
            && groups.contains(&"system:serviceaccounts:team"),
        "{groups:?}"
    );

    // What its Role allows, and what it does not.
    assert_eq!(code("allowed"), 0, "{}", logs("allowed"));
    assert_eq!(logs("allowed").trim(), "configmap/settings");
    assert_ne!(code("denied"), 0, "{}", logs("denied"));
    assert!(
        logs("denied").contains(&format!(
            "secrets is forbidden: User \"{USER}\" cannot list resource \"secrets\" in API \
             group \"\" in the namespace \"team\""
        )),
        "{}",
        logs("denied")
    );

    // The audit log shows the same, every request of the pod made as its ServiceAccount.
    let audit = c.emulator.audit_log();
    let mine: Vec<_> = audit.iter().filter(|e| e.user == USER).collect();
    assert!(
        mine.iter()
            .any(|e| e.resource == "selfsubjectreviews" && e.allowed),
        "{mine:#?}"
    );
    assert!(
        mine.iter()
            .any(|e| e.resource == "configmaps" && e.verb == "get" && e.allowed && e.code == 200),
        "{mine:#?}"
    );
    assert!(
        mine.iter()
            .any(|e| e.resource == "secrets" && e.verb == "list" && !e.allowed && e.code == 403),
        "{mine:#?}"
    );
    // The token was requested by the runner (as the kubelet), bound to this pod.
    assert!(
        audit.iter().any(|e| e.resource == "serviceaccounts"
            && e.subresource == "token"
            && e.name == SA
            && e.namespace == NS
            && e.code == 201),
        "{audit:#?}"
    );
    assert_eq!(
        done.uid().as_deref(),
        Some(uid.as_str()),
        "the same pod throughout"
    );
}

#[tokio::test]
async fn the_token_is_bound_to_the_pod_and_rewritten_before_it_expires() {
    // 0.2% of the 3607 s lifetime the admission plugin asks for: a new token every ~7 s.
    let c = Cluster::start(0.002).await;
    let port = 18301;
    let pod = c
        .create_pod(json!({
            "metadata": {"name": "long", "namespace": NS},
            "spec": {"nodeName": "local", "serviceAccountName": SA,
                "containers": [{"name": "echo", "image": "echo",
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "ECHO_PORT", "value": port.to_string()}],
                    "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1}}]}}),
        )
        .await;
    let running = c
        .pod_until("long", "the pod ready", pod_runner::desired::is_ready)
        .await;
    let ip = running.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let (volume, dir) = token_volume(&c, &pod);

    // The volume: a token, the cluster CA, the namespace; owner-only files.
    let token_file = dir.join("token");
    let first = std::fs::read_to_string(&token_file).unwrap();
    assert_eq!(
        std::fs::read_to_string(dir.join("ca.crt")).unwrap(),
        c.emulator.ca_pem()
    );
    assert_eq!(std::fs::read_to_string(dir.join("namespace")).unwrap(), NS);
    let k = claims(&first);
    assert_eq!(k["sub"], USER);
    assert_eq!(k["kubernetes.io"]["pod"]["name"], "long");
    assert_eq!(k["kubernetes.io"]["pod"]["uid"], pod.uid().unwrap());
    assert_eq!(
        k["exp"].as_i64().unwrap() - k["iat"].as_i64().unwrap(),
        3607
    );

    // The process's environment: the API server's Service, and the kubeconfig of its
    // token volume, whose token is a file (re-read by clients, so refreshes reach them).
    let info = get(&ip, port, "/info").unwrap();
    let addr = c.server.addr();
    let kubeconfig = c
        .runner()
        .pod_dir(NS, "long")
        .join("volumes/.kubeconfig")
        .join(&volume);
    for line in [
        format!("env=KUBERNETES_SERVICE_HOST={}", addr.ip()),
        format!("env=KUBERNETES_SERVICE_PORT={}", addr.port()),
        format!("env=KUBECONFIG={}", kubeconfig.display()),
    ] {
        assert!(info.lines().any(|l| l == line), "no {line:?} in\n{info}");
    }
    let config = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
    let user = config.auth_infos[0].auth_info.as_ref().unwrap();
    assert_eq!(
        user.token_file.as_deref(),
        Some(token_file.to_str().unwrap())
    );
    let from_kubeconfig = kube::Config::from_custom_kubeconfig(config, &Default::default())
        .await
        .unwrap();
    let as_pod = kube::Client::try_from(from_kubeconfig).unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(as_pod.clone(), NS);
    assert!(maps.get("settings").await.is_ok());
    let secrets: Api<Secret> = Api::namespaced(as_pod, NS);
    assert!(matches!(
        secrets.list(&ListParams::default()).await,
        Err(kube::Error::Api(s)) if s.code == 403
    ));

    // Rewritten once the share of its lifetime has passed, and the new one works.
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let now = std::fs::read_to_string(&token_file).unwrap();
        if now != first {
            break now;
        }
        assert!(Instant::now() < deadline, "the token was not refreshed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(claims(&second)["iat"].as_i64() > claims(&first)["iat"].as_i64());
    let as_new = c.emulator.client_with_token(&second);
    Api::<ConfigMap>::namespaced(as_new.clone(), NS)
        .get("settings")
        .await
        .unwrap();

    // The pod deleted: its tokens stop working, the volume is gone.
    c.pods()
        .delete("long", &DeleteParams::default())
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.pods().get_opt("long").await.unwrap().is_some() {
        assert!(Instant::now() < deadline, "the pod was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for token in [&first, &second] {
        let r = Api::<ConfigMap>::namespaced(c.emulator.client_with_token(token), NS)
            .get("settings")
            .await;
        assert!(
            matches!(&r, Err(kube::Error::Api(s)) if s.code == 401),
            "{r:?}"
        );
    }
    assert!(
        !Path::new(&dir).exists(),
        "the token volume outlived the pod"
    );
}

#[tokio::test]
async fn a_workload_of_a_missing_service_account_gets_its_pod_once_the_account_exists() {
    let c = Cluster::start(0.8).await;
    let port = 18302;
    let deployment: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(json!({
        "metadata": {"name": "late", "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": "late"}}, "template": {
            "metadata": {"labels": {"app": "late"}},
            "spec": {"serviceAccountName": "late",
                "containers": [{"name": "echo", "image": "echo",
                    "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                            {"name": "ECHO_PORT", "value": port.to_string()}],
                    "readinessProbe": {"tcpSocket": {"port": port}, "periodSeconds": 1}}]}}}
    }))
    .unwrap();
    Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(c.emulator.admin_client(), NS)
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    // The API server refuses the pod while its ServiceAccount does not exist.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let listed = |c: &Cluster| {
        let pods = c.pods();
        async move {
            pods.list(&ListParams::default().labels("app=late"))
                .await
                .unwrap()
                .items
        }
    };
    assert!(listed(&c).await.is_empty());
    assert!(
        c.emulator
            .audit_log()
            .iter()
            .any(|e| e.resource == "pods" && e.verb == "create" && e.code == 403),
        "the runner's pod creates were refused"
    );
    c.emulator
        .create_object(json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "late", "namespace": NS}}))
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = listed(&c).await;
        if pods.len() == 1 && pod_runner::desired::is_ready(&pods[0]) {
            let (_, dir) = token_volume(&c, &pods[0]);
            let token = std::fs::read_to_string(dir.join("token")).unwrap();
            assert_eq!(claims(&token)["sub"], "system:serviceaccount:team:late");
            break;
        }
        assert!(Instant::now() < deadline, "no ready pod: {pods:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
