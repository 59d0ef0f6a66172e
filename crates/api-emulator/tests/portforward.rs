//! `pods/{name}/portforward` through kube-rs (`Api::<Pod>::portforward`, WebSocket,
//! `v4.channel.k8s.io`) against the served emulator, to TCP servers bound on a 127.0.X.Y
//! address set as a pod's `status.podIP`, as the e2e pod runner gives pods: round trips,
//! two ports on one tunnel, a large payload both ways at once, a refused port reported on the
//! error channel, the errors before the upgrade (404, 400s), and authorisation as the real
//! server makes it (`get`, then `create`, on `pods/portforward`), audited. These need the
//! emulator's own controls, so they do not run on a real cluster.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use api_emulator::{Authorization, Emulator, UserInfo};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const NS: &str = "default";

/// A loopback address of the 127.0.X.Y kind pods get, bound with a free port, as a pod's
/// server; random, so that tests running at once do not meet.
async fn pod_listener() -> TcpListener {
    loop {
        let x = 100 + rand_byte() % 150;
        let y = 2 + rand_byte() % 250;
        let ip = IpAddr::V4(Ipv4Addr::new(127, 0, x, y));
        if let Ok(l) = TcpListener::bind(SocketAddr::new(ip, 0)).await {
            return l;
        }
    }
}

fn rand_byte() -> u8 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    h.finish() as u8
}

/// A server that greets each connection with `greeting` and then echoes what it reads.
fn echo(listener: TcpListener, greeting: &'static [u8]) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                if conn.write_all(greeting).await.is_err() {
                    return;
                }
                let (mut r, mut w) = conn.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    })
}

/// A pod `name` bound to a node, Running, with `ip` as its podIP.
async fn running_pod(emu: &Emulator, name: &str, ip: IpAddr) {
    emu.create_object(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NS},
        "spec": {"nodeName": "local", "containers": [{"name": "main", "image": "x"}]}
    }))
    .unwrap();
    Api::<Pod>::namespaced(emu.admin_client(), NS)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(
                json!({"status": {"phase": "Running", "podIP": ip.to_string(),
                "podIPs": [{"ip": ip.to_string()}]}}),
            ),
        )
        .await
        .unwrap();
}

/// A client of the served emulator authenticating with `token`.
async fn client(server: &api_emulator::server::Server, token: &str) -> kube::Client {
    let text = api_emulator::kubeconfig::render(&server.url(), None, token);
    let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn read_exactly(stream: &mut (impl tokio::io::AsyncRead + Unpin), n: usize) -> Vec<u8> {
    let mut buf = vec![0; n];
    tokio::time::timeout(Duration::from_secs(20), stream.read_exact(&mut buf))
        .await
        .expect("the bytes arrive in time")
        .unwrap();
    buf
}

fn status_of(result: Result<kube::api::Portforwarder, kube::Error>) -> kube::core::Status {
    match result {
        Err(kube::Error::Api(status)) => *status,
        Err(other) => panic!("expected a Status, got {other:?}"),
        Ok(_) => panic!("expected a Status, got a tunnel"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_make_round_trips_through_the_tunnel() {
    let emu = Emulator::builder().audit(true).build();
    let server = emu.serve(0).await.unwrap();
    let listener = pod_listener().await;
    let addr = listener.local_addr().unwrap();
    let _echo = echo(listener, b"hello\n");
    running_pod(&emu, "web", addr.ip()).await;
    let pods: Api<Pod> = Api::namespaced(client(&server, &emu.admin_token()).await, NS);

    let mut forwarder = pods.portforward("web", &[addr.port()]).await.unwrap();
    let mut stream = forwarder.take_stream(addr.port()).unwrap();
    assert_eq!(read_exactly(&mut stream, 6).await, b"hello\n");
    for i in 0..20 {
        let line = format!("round trip {i}\n");
        stream.write_all(line.as_bytes()).await.unwrap();
        assert_eq!(read_exactly(&mut stream, line.len()).await, line.as_bytes());
    }
    drop(stream);
    tokio::time::timeout(Duration::from_secs(10), forwarder.join())
        .await
        .expect("the tunnel closes when its stream is dropped")
        .unwrap();

    // The upgrade is audited as the `get` it is, answered 101.
    let entry = emu
        .audit_log()
        .into_iter()
        .find(|e| e.subresource == "portforward")
        .expect("an audit entry for the port-forward");
    assert_eq!(
        (entry.verb.as_str(), entry.name.as_str(), entry.code),
        ("get", "web", 101)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ports_share_one_tunnel_without_mixing() {
    let emu = Emulator::new();
    let server = emu.serve(0).await.unwrap();
    let first = pod_listener().await;
    let ip = first.local_addr().unwrap().ip();
    let second = TcpListener::bind(SocketAddr::new(ip, 0)).await.unwrap();
    let (p1, p2) = (
        first.local_addr().unwrap().port(),
        second.local_addr().unwrap().port(),
    );
    let _a = echo(first, b"A");
    let _b = echo(second, b"B");
    running_pod(&emu, "two", ip).await;
    let pods: Api<Pod> = Api::namespaced(client(&server, &emu.admin_token()).await, NS);

    // Both in one parameter (as kube-rs sends it) …
    let mut forwarder = pods.portforward("two", &[p1, p2]).await.unwrap();
    let (mut s1, mut s2) = (
        forwarder.take_stream(p1).unwrap(),
        forwarder.take_stream(p2).unwrap(),
    );
    assert_eq!(read_exactly(&mut s1, 1).await, b"A");
    assert_eq!(read_exactly(&mut s2, 1).await, b"B");
    for i in 0..5 {
        let (m1, m2) = (format!("one-{i};"), format!("two-{i}-longer;"));
        s1.write_all(m1.as_bytes()).await.unwrap();
        s2.write_all(m2.as_bytes()).await.unwrap();
        assert_eq!(read_exactly(&mut s2, m2.len()).await, m2.as_bytes());
        assert_eq!(read_exactly(&mut s1, m1.len()).await, m1.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_payload_crosses_both_ways_at_once() {
    let emu = Emulator::new();
    let server = emu.serve(0).await.unwrap();
    let listener = pod_listener().await;
    let addr = listener.local_addr().unwrap();
    let _echo = echo(listener, b"");
    running_pod(&emu, "bulk", addr.ip()).await;
    let pods: Api<Pod> = Api::namespaced(client(&server, &emu.admin_token()).await, NS);

    let payload: Vec<u8> = (0..8 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let mut forwarder = pods.portforward("bulk", &[addr.port()]).await.unwrap();
    let stream = forwarder.take_stream(addr.port()).unwrap();
    let (mut read, mut write) = tokio::io::split(stream);
    let sent = payload.clone();
    let writer = tokio::spawn(async move { write.write_all(&sent).await.map(|()| write) });
    let echoed = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = vec![0; payload.len()];
        read.read_exact(&mut buf).await.map(|_| buf)
    })
    .await
    .expect("8 MiB echoed within a minute")
    .unwrap();
    writer.await.unwrap().unwrap();
    assert!(echoed == payload, "the echoed bytes differ from those sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_port_is_reported_on_its_error_channel() {
    let emu = Emulator::new();
    let server = emu.serve(0).await.unwrap();
    let listener = pod_listener().await;
    let addr = listener.local_addr().unwrap();
    drop(listener); // nothing listens there now
    running_pod(&emu, "quiet", addr.ip()).await;
    let pods: Api<Pod> = Api::namespaced(client(&server, &emu.admin_token()).await, NS);

    let mut forwarder = pods.portforward("quiet", &[addr.port()]).await.unwrap();
    let error = forwarder.take_error(addr.port()).unwrap();
    let message = tokio::time::timeout(Duration::from_secs(10), error)
        .await
        .expect("the error arrives")
        .expect("an error message, not a closed channel");
    let port = addr.port();
    assert!(
        message.starts_with(&format!(
            "error forwarding port {port} to pod quiet_default"
        )),
        "{message}"
    );
    assert!(message.contains("onnection refused"), "{message}");
    // With no port left the tunnel is closed: the stream ends.
    let mut stream = forwarder.take_stream(port).unwrap();
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest))
        .await
        .expect("the stream ends")
        .unwrap();
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_before_the_upgrade_are_statuses() {
    let emu = Emulator::new();
    let server = emu.serve(0).await.unwrap();
    let pods: Api<Pod> = Api::namespaced(client(&server, &emu.admin_token()).await, NS);

    let missing = status_of(pods.portforward("missing", &[80]).await);
    assert_eq!(missing.code, 404);
    assert_eq!(missing.message, "pods \"missing\" not found");

    // Not bound to a node: the API server's own refusal.
    emu.create_object(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "unbound", "namespace": NS},
        "spec": {"containers": [{"name": "main", "image": "x"}]}}))
        .unwrap();
    let unbound = status_of(pods.portforward("unbound", &[80]).await);
    assert_eq!(
        (unbound.code, unbound.message.as_str()),
        (400, "pod unbound does not have a host assigned")
    );

    // Bound but not started: no IP to reach.
    emu.create_object(json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pending", "namespace": NS},
        "spec": {"nodeName": "local", "containers": [{"name": "main", "image": "x"}]}}))
        .unwrap();
    let pending = status_of(pods.portforward("pending", &[80]).await);
    assert_eq!(pending.code, 400);
    assert!(
        pending.message.contains("not running"),
        "{}",
        pending.message
    );

    // In-process there is no connection to upgrade: a clear 400.
    let in_process: Api<Pod> = Api::namespaced(emu.admin_client(), NS);
    running_pod(&emu, "up", IpAddr::V4(Ipv4Addr::new(127, 0, 200, 9))).await;
    let refused = status_of(in_process.portforward("up", &[80]).await);
    assert_eq!(refused.code, 400);
    assert!(
        refused.message.contains("Emulator::serve"),
        "{}",
        refused.message
    );
}

/// A Role in `default` with `verbs` on `pods/portforward`, bound to user `name`, whose token
/// is `name`.
fn user_with(emu: &Emulator, name: &str, verbs: &[&str]) -> String {
    emu.create_object(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": name, "namespace": NS},
        "rules": [{"apiGroups": [""], "resources": ["pods/portforward"], "verbs": verbs}]}),
    )
    .unwrap();
    emu.create_object(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": NS},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}]}),
    )
    .unwrap();
    emu.add_token(
        name,
        UserInfo {
            username: name.into(),
            uid: String::new(),
            groups: vec!["system:authenticated".into()],
        },
    );
    name.to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_port_forward_needs_get_and_create() {
    let emu = Emulator::builder()
        .authorization(Authorization::Rbac)
        .audit(true)
        .build();
    let server = emu.serve(0).await.unwrap();
    let listener = pod_listener().await;
    let addr = listener.local_addr().unwrap();
    let _echo = echo(listener, b"ok");
    running_pod(&emu, "guarded", addr.ip()).await;
    let port = addr.port();

    // `get` alone passes the request filter but not the second, `create`, check.
    let getter = user_with(&emu, "getter", &["get"]);
    let pods: Api<Pod> = Api::namespaced(client(&server, &getter).await, NS);
    let denied = status_of(pods.portforward("guarded", &[port]).await);
    assert_eq!(denied.code, 403);
    assert_eq!(denied.reason, "Forbidden");
    assert!(
        denied
            .message
            .starts_with("pods \"guarded\" is forbidden: ")
            && denied
                .message
                .contains("cannot create resource \"pods/portforward\""),
        "{}",
        denied.message
    );
    // `create` alone is refused by the filter, which checks the upgrade's `get`.
    let creator = user_with(&emu, "creator", &["create"]);
    let pods: Api<Pod> = Api::namespaced(client(&server, &creator).await, NS);
    let denied = status_of(pods.portforward("guarded", &[port]).await);
    assert_eq!(denied.code, 403);
    assert!(
        denied
            .message
            .contains("cannot get resource \"pods/portforward\""),
        "{}",
        denied.message
    );
    // Both: the tunnel opens.
    let both = user_with(&emu, "both", &["get", "create"]);
    let pods: Api<Pod> = Api::namespaced(client(&server, &both).await, NS);
    let mut forwarder = pods.portforward("guarded", &[port]).await.unwrap();
    let mut stream = forwarder.take_stream(port).unwrap();
    assert_eq!(read_exactly(&mut stream, 2).await, b"ok");

    let seen: Vec<(String, String, u16)> = emu
        .audit_log()
        .into_iter()
        .filter(|e| e.subresource == "portforward")
        .map(|e| (e.user, e.verb, e.code))
        .collect();
    let want = [("getter", 403), ("creator", 403), ("both", 101)]
        .map(|(u, c)| (u.to_string(), "get".to_string(), c));
    assert_eq!(seen, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_the_server_ends_its_tunnels() {
    let emu = Emulator::new();
    let server = emu.serve(0).await.unwrap();
    let listener = pod_listener().await;
    let addr = listener.local_addr().unwrap();
    let _echo = echo(listener, b"up");
    running_pod(&emu, "web", addr.ip()).await;
    let pods: Api<Pod> = Api::namespaced(client(&server, &emu.admin_token()).await, NS);
    let mut forwarder = pods.portforward("web", &[addr.port()]).await.unwrap();
    let mut stream = forwarder.take_stream(addr.port()).unwrap();
    assert_eq!(read_exactly(&mut stream, 2).await, b"up");
    drop(server);
    let mut rest = Vec::new();
    let ended = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut rest)).await;
    assert!(ended.is_ok(), "the tunnel outlived its server");
}

/// `kubectl port-forward` speaks SPDY (over a WebSocket tunnel first, then plain): neither
/// is served, and kubectl says so instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_port_forward_is_told_spdy_is_not_served() {
    let emu = Emulator::builder().audit(true).build();
    let server = emu.serve(0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let listener = pod_listener().await;
    let addr = listener.local_addr().unwrap();
    running_pod(&emu, "web", addr.ip()).await;
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["port-forward", "pod/web", &format!(":{}", addr.port())])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .expect("kubectl gives up rather than hanging")
        .expect("kubectl runs");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("SPDY upgrades are not served by the emulator"),
        "{text}"
    );
    // Both of kubectl's attempts reached the port-forward and were refused before an upgrade.
    let codes: Vec<(String, u16)> = emu
        .audit_log()
        .into_iter()
        .filter(|e| e.subresource == "portforward")
        .map(|e| (e.verb, e.code))
        .collect();
    assert!(codes.contains(&("create".to_string(), 400)), "{codes:?}");
    assert!(codes.iter().all(|(_, code)| *code == 400), "{codes:?}");
}
