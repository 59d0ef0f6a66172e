//! The runner against the API emulator through a real `kube::Client`: Deployments and
//! DaemonSets become Pods that run as local processes (`pod-runner-echo`) on their own
//! loopback addresses, with their env, volumes and probes, and their status written back.
//!
//! Each test uses its own port where it checks that a process is gone, because addresses
//! are shared with tests running in parallel in other processes.

use api_emulator::Emulator;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use pod_runner::{HostPaths, ImageTable, PodRunner, RunnerConfig};
use serde_json::{Value, json};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

const NS: &str = "apps";
const ECHO: &str = env!("CARGO_BIN_EXE_pod-runner-echo");

struct Cluster {
    client: kube::Client,
    runner: Option<PodRunner>,
    _dir: tempfile::TempDir,
    fixture: tempfile::TempDir,
}

impl Cluster {
    async fn start() -> Self {
        let client = Emulator::new().client();
        let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": NS}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let fixture = tempfile::tempdir().unwrap();
        std::fs::write(fixture.path().join("serial"), "ABC123").unwrap();
        let mut config = RunnerConfig::new("local", dir.path().join("pods"));
        config.node_labels.insert("hsm".into(), "yes".into());
        config.images = ImageTable::new().with("echo", ECHO);
        config.host_paths = HostPaths::new().with("/sys/bus/usb", fixture.path());
        config.restart_backoff = Duration::from_millis(200);
        config.restart_backoff_max = Duration::from_millis(400);
        config.resync = Duration::from_millis(500);
        let runner = PodRunner::start(client.clone(), config).unwrap();
        Cluster {
            client,
            runner: Some(runner),
            _dir: dir,
            fixture,
        }
    }

    fn runner(&self) -> &PodRunner {
        self.runner.as_ref().unwrap()
    }

    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.client.clone(), NS)
    }

    async fn apply<K>(&self, object: Value)
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let object: K = serde_json::from_value(object).unwrap();
        Api::<K>::namespaced(self.client.clone(), NS)
            .patch(
                &object.name_any(),
                &PatchParams::apply("test").force(),
                &Patch::Apply(&object),
            )
            .await
            .unwrap();
    }

    /// Waits until the pods matching `selector` satisfy `done`; answers them.
    async fn pods_until(
        &self,
        selector: &str,
        what: &str,
        done: impl Fn(&[Pod]) -> bool,
    ) -> Vec<Pod> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let pods = self
                .pods()
                .list(&ListParams::default().labels(selector))
                .await
                .unwrap()
                .items;
            if done(&pods) {
                return pods;
            }
            assert!(
                Instant::now() < deadline,
                "waiting for {what}; pods: {:#?}",
                pods.iter()
                    .map(|p| (&p.metadata.name, &p.status))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn ready(p: &Pod) -> bool {
    pod_runner::desired::is_ready(p)
}

fn live(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
}

fn ip(p: &Pod) -> String {
    p.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .unwrap_or_default()
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

/// Waits until nothing answers on the address and port any more.
async fn until_closed(ip: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(ip, port, "/readyz").is_some() {
        assert!(Instant::now() < deadline, "{ip}:{port} still answers");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn deployment(name: &str, replicas: i32, container: Value, extra_spec: Value) -> Value {
    let mut spec = json!({"containers": [container]});
    for (k, v) in extra_spec.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"replicas": replicas, "strategy": {"type": "Recreate"},
                 "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": spec}}
    })
}

fn echo(port: u16, env: Value) -> Value {
    let mut vars = vec![
        json!({"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}),
        json!({"name": "ECHO_PORT", "value": port.to_string()}),
    ];
    vars.extend(env.as_array().cloned().unwrap_or_default());
    json!({
        "name": "echo", "image": "ghcr.io/example/echo:1.0", "env": vars,
        "ports": [{"name": "http", "containerPort": port}],
        "readinessProbe": {"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 1},
    })
}

#[tokio::test]
async fn a_deployment_runs_as_a_ready_pod_with_its_address_env_and_volumes() {
    let c = Cluster::start().await;
    c.apply::<Secret>(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": {"password": "s3cret-pw"}}),
    )
    .await;
    c.apply::<ConfigMap>(
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"mode": "fast"}}),
    )
    .await;
    let mut container = echo(
        18101,
        json!([
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
        {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "mode"}}},
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
        {"name": "CREDS", "value": "/etc/creds/password"}]),
    );
    container["args"] = json!([
        "--password-file=/etc/creds/password",
        "--mode=$(MODE)",
        "--scratch",
        "/scratch"
    ]);
    container["volumeMounts"] = json!([{"name": "creds", "mountPath": "/etc/creds", "readOnly": true},
                                       {"name": "scratch", "mountPath": "/scratch"}]);
    // The pod's ServiceAccount must exist: the API server refuses pods of a missing one.
    c.apply::<ServiceAccount>(
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "web-sa"}}),
    )
    .await;
    c.apply::<Deployment>(deployment("web", 1, container, json!({
        "serviceAccountName": "web-sa",
        "volumes": [{"name": "creds", "secret": {"secretName": "creds"}}, {"name": "scratch", "emptyDir": {}}]}))).await;

    let pods = c
        .pods_until("app=web", "a ready pod", |p| p.len() == 1 && ready(&p[0]))
        .await;
    let pod = &pods[0];
    let name = pod.name_any();
    let ip = ip(pod);
    assert!(ip.starts_with("127.0.") && ip != "127.0.0.1", "{ip}");
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some("local")
    );
    assert!(pod.labels().contains_key("pod-template-hash"));
    let owner = &pod.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("Deployment", "web", Some(true))
    );
    let status = pod.status.as_ref().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let cs = &status.container_statuses.as_ref().unwrap()[0];
    assert!(cs.ready && cs.state.as_ref().unwrap().running.is_some());

    // The process answers on the pod's own address, with the planned env and arguments.
    let info = get(&ip, 18101, "/info").expect("the pod answers on its address");
    let dir = c.runner().pod_dir(NS, &name);
    let secret_file = dir.join("volumes/creds/password");
    for line in [
        format!("env=POD_IP={ip}"),
        format!("env=POD_NAME={name}"),
        format!("env=POD_NAMESPACE={NS}"),
        "env=NODE_NAME=local".into(),
        "env=SA=web-sa".into(),
        "env=MODE=fast".into(),
        "env=TOKEN=s3cret-pw".into(),
        format!("env=CREDS={}", secret_file.display()),
        format!("arg=--password-file={}", secret_file.display()),
        "arg=--mode=fast".into(),
        format!("arg={}", dir.join("volumes/scratch").display()),
    ] {
        assert!(
            info.lines().any(|l| l == line),
            "missing {line:?} in\n{info}"
        );
    }
    // The runner's own environment does not leak into the pod.
    assert!(!info.lines().any(|l| l.starts_with("env=CARGO")), "{info}");
    assert_eq!(std::fs::read_to_string(&secret_file).unwrap(), "s3cret-pw");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&secret_file), 0o600);
    assert_eq!(mode(&dir.join("volumes/creds")), 0o700);
    assert_eq!(mode(&dir.join("volumes/scratch")), 0o700);
    let log = std::fs::read_to_string(c.runner().log_path(NS, &name, "echo")).unwrap();
    assert!(log.contains(&format!("listening on {ip}:18101")), "{log}");

    // A changed Secret reaches the file, as a kubelet refreshes mounted Secrets.
    c.apply::<Secret>(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": {"password": "rotated-pw"}}),
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::read_to_string(&secret_file).unwrap() != "rotated-pw" {
        assert!(
            Instant::now() < deadline,
            "the secret file was not refreshed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(mode(&secret_file), 0o600);

    // The Deployment's status counts it.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let d = Api::<Deployment>::namespaced(c.client.clone(), NS)
            .get("web")
            .await
            .unwrap();
        let s = d.status.unwrap_or_default();
        if s.ready_replicas == Some(1)
            && s.available_replicas == Some(1)
            && s.updated_replicas == Some(1)
            && s.observed_generation == d.metadata.generation
        {
            break;
        }
        assert!(Instant::now() < deadline, "deployment status {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn two_pods_listen_on_the_same_port_on_their_own_addresses() {
    let c = Cluster::start().await;
    let container = echo(
        18093,
        json!([
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
    );
    c.apply::<Deployment>(deployment("pair", 2, container, json!({})))
        .await;
    let pods = c
        .pods_until("app=pair", "two ready pods", |p| {
            p.len() == 2 && p.iter().all(ready)
        })
        .await;
    assert_ne!(ip(&pods[0]), ip(&pods[1]));
    for p in &pods {
        let info = get(&ip(p), 18093, "/info").unwrap();
        assert!(
            info.contains(&format!("env=POD_NAME={}\n", p.name_any())),
            "{info}"
        );
    }
}

#[tokio::test]
async fn what_cannot_run_here_fails_the_pod_with_a_reason_and_a_mapped_host_path_runs() {
    let c = Cluster::start().await;
    let mut unknown = echo(18102, json!([]));
    unknown["image"] = json!("nginx:1.27");
    c.apply::<Deployment>(deployment("unknown", 1, unknown, json!({})))
        .await;
    let mut usb = echo(18103, json!([]));
    usb["volumeMounts"] = json!([{"name": "dev", "mountPath": "/dev/bus/usb"}]);
    c.apply::<Deployment>(deployment(
        "unmapped",
        1,
        usb,
        json!({
        "volumes": [{"name": "dev", "hostPath": {"path": "/dev/bus/usb"}}]}),
    ))
    .await;
    let mut sys = echo(18104, json!([]));
    sys["volumeMounts"] = json!([{"name": "sys", "mountPath": "/host/usb"}]);
    sys["args"] = json!(["/host/usb/serial"]);
    c.apply::<Deployment>(deployment(
        "mapped",
        1,
        sys,
        json!({
        "volumes": [{"name": "sys", "hostPath": {"path": "/sys/bus/usb"}}]}),
    ))
    .await;

    let failed = |p: &[Pod]| {
        p.len() == 1 && p[0].status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Failed")
    };
    let pods = c.pods_until("app=unknown", "a failed pod", failed).await;
    let status = pods[0].status.clone().unwrap();
    assert_eq!(status.reason.as_deref(), Some("ErrImageNeverPull"));
    assert!(status.message.unwrap().contains("\"nginx:1.27\""));
    let waiting = status.container_statuses.unwrap()[0]
        .state
        .clone()
        .unwrap()
        .waiting
        .unwrap();
    assert_eq!(waiting.reason.as_deref(), Some("ErrImageNeverPull"));

    let pods = c.pods_until("app=unmapped", "a failed pod", failed).await;
    let status = pods[0].status.clone().unwrap();
    assert_eq!(status.reason.as_deref(), Some("FailedMount"));
    assert!(
        status
            .message
            .unwrap()
            .contains("hostPath \"/dev/bus/usb\" is not mapped")
    );

    // The runner goes on running what it can; the mapped path is rewritten to the fixture.
    let pods = c
        .pods_until("app=mapped", "a ready pod", |p| {
            p.len() == 1 && ready(&p[0])
        })
        .await;
    let file = c.fixture.path().join("serial");
    let info = get(&ip(&pods[0]), 18104, "/info").unwrap();
    assert!(
        info.contains(&format!("arg={}\n", file.display())),
        "{info}"
    );
    let read = get(&ip(&pods[0]), 18104, &format!("/file?{}", file.display())).unwrap();
    assert!(read.ends_with("ABC123"), "{read}");
}

#[tokio::test]
async fn deleted_pods_and_deployments_stop_their_processes() {
    let mut c = Cluster::start().await;
    c.apply::<Deployment>(deployment(
        "gone",
        1,
        echo(18105, json!([])),
        json!({"terminationGracePeriodSeconds": 5}),
    ))
    .await;
    let first = c
        .pods_until("app=gone", "a ready pod", |p| p.len() == 1 && ready(&p[0]))
        .await
        .remove(0);
    let first_ip = ip(&first);
    assert!(get(&first_ip, 18105, "/readyz").is_some());

    // A deleted pod is stopped, then removed (as a kubelet does), and replaced.
    c.pods()
        .delete(&first.name_any(), &DeleteParams::default())
        .await
        .unwrap();
    let second = c
        .pods_until("app=gone", "a replacement", |p| {
            p.len() == 1 && p[0].uid() != first.uid() && ready(&p[0])
        })
        .await
        .remove(0);
    assert!(get(&first_ip, 18105, "/readyz").is_none() || ip(&second) == first_ip);

    // The Deployment deleted: its pod is collected and its process stopped.
    Api::<Deployment>::namespaced(c.client.clone(), NS)
        .delete("gone", &DeleteParams::default())
        .await
        .unwrap();
    c.pods_until("app=gone", "no pod", |p| p.is_empty()).await;
    until_closed(&ip(&second), 18105).await;

    // Stopping the runner stops what still runs.
    c.apply::<Deployment>(deployment("last", 1, echo(18106, json!([])), json!({})))
        .await;
    let pod = c
        .pods_until("app=last", "a ready pod", |p| p.len() == 1 && ready(&p[0]))
        .await
        .remove(0);
    c.runner.take().unwrap().stop().await;
    until_closed(&ip(&pod), 18106).await;
}

#[tokio::test]
async fn dropping_the_runner_kills_its_processes() {
    let mut c = Cluster::start().await;
    c.apply::<Deployment>(deployment("dropped", 1, echo(18107, json!([])), json!({})))
        .await;
    let pod = c
        .pods_until("app=dropped", "a ready pod", |p| {
            p.len() == 1 && ready(&p[0])
        })
        .await
        .remove(0);
    drop(c.runner.take());
    until_closed(&ip(&pod), 18107).await;
    // Nothing restarts it afterwards (the restart backoff here is 200 ms).
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        get(&ip(&pod), 18107, "/readyz").is_none(),
        "restarted after the drop"
    );
}

#[tokio::test]
async fn a_crashing_container_is_restarted_with_its_count_rising() {
    let c = Cluster::start().await;
    c.apply::<Deployment>(deployment(
        "crash",
        1,
        echo(18108, json!([{"name": "ECHO_EXIT_CODE", "value": "3"}])),
        json!({}),
    ))
    .await;
    let pods = c
        .pods_until("app=crash", "two restarts", |p| {
            p.len() == 1
                && p[0]
                    .status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .is_some_and(|cs| cs[0].restart_count >= 2)
        })
        .await;
    let status = pods[0].status.clone().unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let cs = &status.container_statuses.unwrap()[0];
    assert!(!cs.ready);
    let last = cs.last_state.clone().unwrap().terminated.unwrap();
    assert_eq!(last.exit_code, 3);
    let log =
        std::fs::read_to_string(c.runner().log_path(NS, &pods[0].name_any(), "echo")).unwrap();
    assert!(log.matches("env=ECHO_EXIT_CODE=3").count() >= 2, "{log}");
}

fn daemon_set(name: &str, selector: Value, port: u16, env: Value) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}},
                              "spec": {"nodeSelector": selector, "containers": [echo(port, env)]}}}
    })
}

#[tokio::test]
async fn a_daemon_set_gets_one_pod_on_a_matching_node_and_its_status_counts() {
    let c = Cluster::start().await;
    c.apply::<DaemonSet>(daemon_set("disc", json!({"hsm": "yes"}), 18109, json!([])))
        .await;
    c.apply::<DaemonSet>(daemon_set(
        "elsewhere",
        json!({"hsm": "no"}),
        18110,
        json!([]),
    ))
    .await;
    let pod = c
        .pods_until("app=disc", "a ready pod", |p| p.len() == 1 && ready(&p[0]))
        .await
        .remove(0);
    assert_eq!(pod.labels()["pod-template-generation"], "1");
    assert_eq!(pod.owner_references()[0].kind, "DaemonSet");

    let api = Api::<DaemonSet>::namespaced(c.client.clone(), NS);
    let counts = |d: &DaemonSet| {
        let s = d.status.clone().unwrap_or_default();
        (
            s.desired_number_scheduled,
            s.current_number_scheduled,
            s.number_ready,
            s.updated_number_scheduled.unwrap_or_default(),
            s.observed_generation,
        )
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while counts(&api.get("disc").await.unwrap()) != (1, 1, 1, 1, Some(1)) {
        assert!(
            Instant::now() < deadline,
            "{:?}",
            counts(&api.get("disc").await.unwrap())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(counts(&api.get("elsewhere").await.unwrap()).0, 0);
    assert!(
        c.pods()
            .list(&ListParams::default().labels("app=elsewhere"))
            .await
            .unwrap()
            .items
            .is_empty()
    );

    // A new template: the old pod goes, one of the new generation runs.
    c.apply::<DaemonSet>(daemon_set(
        "disc",
        json!({"hsm": "yes"}),
        18109,
        json!([{"name": "V", "value": "2"}]),
    ))
    .await;
    let pods = c
        .pods_until("app=disc", "the new generation ready", |p| {
            p.len() == 1 && p[0].labels()["pod-template-generation"] == "2" && ready(&p[0])
        })
        .await;
    assert!(live(&pods[0]));
    let info = get(&ip(&pods[0]), 18109, "/info").unwrap();
    assert!(info.contains("env=V=2\n"));
}

#[tokio::test]
async fn a_template_change_is_recreated_old_pod_gone_before_the_new_one_runs() {
    let c = Cluster::start().await;
    c.apply::<Deployment>(deployment(
        "roll",
        1,
        echo(18111, json!([{"name": "V", "value": "1"}])),
        json!({}),
    ))
    .await;
    let old = c
        .pods_until("app=roll", "a ready pod", |p| p.len() == 1 && ready(&p[0]))
        .await
        .remove(0);
    c.apply::<Deployment>(deployment(
        "roll",
        1,
        echo(18111, json!([{"name": "V", "value": "2"}])),
        json!({}),
    ))
    .await;
    // Until the new pod is ready, never does a new pod exist beside a live or terminating old one.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let pods = c
            .pods()
            .list(&ListParams::default().labels("app=roll"))
            .await
            .unwrap()
            .items;
        let (olds, news): (Vec<&Pod>, Vec<&Pod>) = pods
            .iter()
            .partition(|p| p.labels()["pod-template-hash"] == old.labels()["pod-template-hash"]);
        assert!(
            olds.is_empty() || news.is_empty(),
            "old and new pods together"
        );
        if olds.is_empty() && news.len() == 1 && ready(news[0]) {
            let info = get(&ip(news[0]), 18111, "/info").unwrap();
            assert!(info.contains("env=V=2\n"), "{info}");
            break;
        }
        assert!(Instant::now() < deadline, "no new pod");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_failing_liveness_probe_restarts_the_container() {
    let c = Cluster::start().await;
    let mut container = echo(18112, json!([]));
    // Nothing listens on port 1 of the pod's address.
    container["livenessProbe"] =
        json!({"tcpSocket": {"port": 1}, "periodSeconds": 1, "failureThreshold": 1});
    c.apply::<Deployment>(deployment("unlive", 1, container, json!({})))
        .await;
    c.pods_until("app=unlive", "a restart", |p| {
        p.len() == 1
            && p[0]
                .status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| cs[0].restart_count >= 1)
    })
    .await;
}
