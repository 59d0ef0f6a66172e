//! High availability: two manager processes (the real binary) against the API emulator over
//! HTTP. One leads; when it is killed the other takes over within the Lease's duration, and
//! one HSM change is written to the Secret exactly once. Both serve the REST API meanwhile.

mod common;

use bytes::Bytes;
use common::*;
use futures::StreamExt;
use hsm_operator::agents::AgentApi;
use http_body_util::Full;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use serde_json::json;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A Lease lasts 3 s without renewal: the other replica must lead within that (plus the
/// time to notice, at most one more renewal period).
const LEASE: Duration = Duration::from_secs(3);

struct Manager {
    child: Child,
}

impl Manager {
    fn start(name: &str, kubeconfig: &std::path::Path, agent_url: &str, api_port: u16) -> Manager {
        let mut command = Command::new(env!("CARGO_BIN_EXE_hsm-operator"));
        command
            .args([
                "--mode=manager",
                "--leader-elect",
                "--lease-duration=3s",
                "--lease-grace=1s",
                "--metrics-bind-address=0",
                "--health-probe-bind-address=0",
                &format!("--agent-endpoint=softhsm={agent_url}"),
                &format!("--api-bind-address=127.0.0.1:{api_port}"),
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", OPERATOR_NS)
            .env("OPERATOR_NAME", OPERATOR_NAME)
            .env("HOSTNAME", name)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        // SAFETY: between fork and exec, one prctl system call (async-signal-safe) so the
        // manager dies with the test even when the test process is killed.
        #[allow(unsafe_code)]
        unsafe {
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        Manager {
            child: command.spawn().unwrap(),
        }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn holder(client: &kube::Client) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), OPERATOR_NS)
        .get_opt(hsm_api::names::LEADER_ELECTION_ID)
        .await
        .unwrap()
        .and_then(|l| l.spec.and_then(|s| s.holder_identity))
}

#[tokio::test]
async fn the_other_replica_takes_over_and_no_change_is_written_twice() {
    let cluster = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.server.write_kubeconfig(&kubeconfig).unwrap();
    let pki = operator_pki(&cluster.client, OPERATOR_NS).await;
    let agent = TestAgent::start(&pki).await;
    let hsm: Arc<dyn AgentApi> = Arc::new(agent.client(&pki));
    hsm_write(&*hsm, "ha", &[("v", "1")], 1).await;
    Api::<hsm_api::HSMSecret>::namespaced(cluster.client.clone(), APPS)
        .create(&PostParams::default(), &hsm_secret("ha", json!({})))
        .await
        .unwrap();

    let ports = [free_port(), free_port()];
    let mut a = Manager::start("manager-a", &kubeconfig, &agent.url(), ports[0]);
    secret_holds(&cluster.client, "ha", &[("v", "1")]).await;
    let mut b = Manager::start("manager-b", &kubeconfig, &agent.url(), ports[1]);
    let first = holder(&cluster.client).await.expect("a leader");
    assert!(first.starts_with("manager-a-"), "{first}");
    // Both replicas serve the REST API, the follower too (the Go API was leader-only).
    for port in ports {
        let url = format!("http://127.0.0.1:{port}/api/v1/health");
        eventually(
            Duration::from_secs(10),
            &format!("the API on {port}"),
            || {
                let url = url.clone();
                async move {
                    let client =
                        HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
                    let request = Request::get(&url).body(Full::new(Bytes::new())).unwrap();
                    match client.request(request).await {
                        Ok(response) if response.status() == StatusCode::OK => Some(()),
                        _ => None,
                    }
                }
            },
        )
        .await;
        let (status, _, body) = call(Method::GET, &url, None, None).await;
        assert_eq!(
            (status, body["success"].clone()),
            (StatusCode::OK, json!(true))
        );
    }

    // Count every write to the Secret from here on.
    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), APPS);
    let version = secrets
        .get("ha")
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    let mut writes = secrets
        .watch(&WatchParams::default().fields("metadata.name=ha"), &version)
        .await
        .unwrap()
        .boxed();

    a.kill();
    let killed = Instant::now();
    let leader = eventually(LEASE * 3, "manager-b to lead", || {
        let client = cluster.client.clone();
        async move {
            holder(&client)
                .await
                .filter(|h| h.starts_with("manager-b-"))
        }
    })
    .await;
    let takeover = killed.elapsed();
    eprintln!("takeover after {takeover:?} by {leader}");
    assert!(
        takeover <= LEASE * 2,
        "took {takeover:?} with a {LEASE:?} lease"
    );

    hsm_write(&*hsm, "ha", &[("v", "2")], 2).await;
    secret_holds(&cluster.client, "ha", &[("v", "2")]).await;
    // Let a second write show up if there were one.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mut modified = 0;
    while let Ok(Some(event)) =
        tokio::time::timeout(Duration::from_millis(200), writes.next()).await
    {
        if let WatchEvent::Modified(secret) = event.unwrap() {
            modified += 1;
            eprintln!(
                "modified: {}",
                serde_json::to_string(&secret.metadata).unwrap()
            );
            assert_eq!(
                text_data(&secret)["v"],
                "2",
                "a write of anything but the change"
            );
        }
    }
    assert_eq!(modified, 1, "one HSM change, one Secret write");
    b.kill();
}
