//! `cargo xtask bench sync`: the manager binary syncing N HSMSecrets from two SoftHSM2
//! agents (gRPC over mTLS) through the API emulator served over HTTP. Prints the first full
//! sync time, HSM write → Secret latency (p50/p99), REST write → Secret latency (p50/p99,
//! the write going through the manager's REST API to both devices), REST read latency beside
//! a direct gRPC read of the same secret, agent reads with no change, and the manager
//! process's resident memory. `--secrets N` (default 1000); `--memory` puts the agents on the
//! in-memory store instead of SoftHSM2.

use futures::StreamExt;
use hsm_api::HSMSecret;
use hsm_operator::agents::AgentApi;
use hsm_operator::testing::{
    APPS, OPERATOR_NAME, OPERATOR_NS, TestAgent, cluster, hsm_write, operator_pki,
};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use serde_json::json;
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const LATENCY_SAMPLES: usize = 200;
const IDLE: Duration = Duration::from_secs(40);
const SYNC_INTERVAL_SECONDS: i32 = 10;

fn secrets_arg() -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--secrets")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

struct Manager(Child);

impl Drop for Manager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_manager(
    kubeconfig: &std::path::Path,
    metrics_port: u16,
    api_port: u16,
    agents: &[String],
) -> Manager {
    let binary = std::env::current_exe()
        .unwrap()
        .parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("hsm-operator");
    let mut command = Command::new(&binary);
    command
        .args([
            "--mode=manager".to_owned(),
            format!("--metrics-bind-address=127.0.0.1:{metrics_port}"),
            format!("--api-bind-address=127.0.0.1:{api_port}"),
            "--health-probe-bind-address=0".to_owned(),
            "--log-level=warn".to_owned(),
        ])
        .args(
            agents
                .iter()
                .enumerate()
                .map(|(i, url)| format!("--agent-endpoint=softhsm-{i}={url}")),
        )
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAMESPACE", OPERATOR_NS)
        .env("OPERATOR_NAME", OPERATOR_NAME)
        .stdin(Stdio::null());
    Manager(
        command
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", binary.display())),
    )
}

async fn agent_reads(port: u16) -> (f64, f64) {
    let body = reqwest_get(port).await;
    let read = |call: &str| {
        body.lines()
            .find(|l| {
                l.starts_with("hsm_operator_agent_reads_total")
                    && l.contains(&format!("call=\"{call}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    (read("read_secret"), read("read_metadata"))
}

/// A plain HTTP GET of the manager's /metrics (no client library needed for one request).
async fn reqwest_get(port: u16) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    body
}

const REST_SAMPLES: usize = 100;

/// The manager's REST API, over one kept-alive HTTP connection pool, as the administrator.
struct Rest {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<bytes::Bytes>,
    >,
    base: String,
    token: String,
}

impl Rest {
    fn new(port: u16, token: String) -> Rest {
        Rest {
            client: hyper_util::client::legacy::Client::builder(
                hyper_util::rt::TokioExecutor::new(),
            )
            .build_http(),
            base: format!("http://127.0.0.1:{port}/api/v1/hsm/secrets/"),
            token,
        }
    }

    /// One request on a secret; its status (the body is read and dropped).
    async fn call(&self, method: hyper::Method, name: &str, body: Option<String>) -> u16 {
        use http_body_util::BodyExt;
        let body = bytes::Bytes::from(body.unwrap_or_default());
        let request = || {
            hyper::Request::builder()
                .method(method.clone())
                .uri(format!("{}{name}", self.base))
                .header("authorization", format!("Bearer {}", self.token))
                .header("content-type", "application/json")
                .body(http_body_util::Full::new(body.clone()))
                .unwrap()
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match self.client.request(request()).await {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let _ = response.into_body().collect().await;
                    return status;
                }
                // The manager may still be binding its port.
                Err(_) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await
                }
                Err(e) => panic!("REST API: {e}"),
            }
        }
    }
}

#[tokio::main]
async fn main() {
    let n = secrets_arg();
    let cluster = cluster().await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    cluster.server.write_kubeconfig(&kubeconfig).unwrap();
    let pki = operator_pki(&cluster.client, OPERATOR_NS).await;
    // SoftHSM2 agents, or (for 10 000 secrets, which SoftHSM2 would take long to set up)
    // agents on the in-memory store: the manager's side is the same either way.
    let memory = std::env::args().any(|a| a == "--memory");
    let agents = if memory {
        [
            TestAgent::start_in_memory(&pki).await,
            TestAgent::start_in_memory(&pki).await,
        ]
    } else {
        [TestAgent::start(&pki).await, TestAgent::start(&pki).await]
    };
    let clients: Vec<Arc<dyn AgentApi>> = agents
        .iter()
        .map(|a| Arc::new(a.client(&pki)) as Arc<dyn AgentApi>)
        .collect();

    let store = if memory { "in-memory" } else { "SoftHSM2" };
    eprintln!("writing {n} secrets to each of 2 {store} agents…");
    for i in 0..n {
        for client in &clients {
            hsm_write(
                &**client,
                &format!("secret-{i}"),
                &[("password", &format!("v1-{i}"))],
                1,
            )
            .await;
        }
    }
    eprintln!("creating {n} HSMSecrets…");
    let hsm_secrets = Api::<HSMSecret>::namespaced(cluster.client.clone(), APPS);
    for i in 0..n {
        let object: HSMSecret = serde_json::from_value(json!({
            "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMSecret",
            "metadata": {"name": format!("secret-{i}")},
            "spec": {"parentRef": {"name": OPERATOR_NAME, "namespace": OPERATOR_NS}, "syncInterval": SYNC_INTERVAL_SECONDS}
        }))
        .unwrap();
        hsm_secrets
            .create(&PostParams::default(), &object)
            .await
            .unwrap();
    }

    // Every Secret change, as it is seen.
    let seen: Arc<Mutex<HashMap<String, (String, Instant)>>> = Arc::default();
    let recorder = seen.clone();
    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), APPS);
    tokio::spawn(
        watcher(secrets.clone(), watcher::Config::default())
            .applied_objects()
            .for_each(move |secret| {
                let recorder = recorder.clone();
                async move {
                    if let Ok(secret) = secret {
                        let value = secret
                            .data
                            .as_ref()
                            .and_then(|d| d.get("password"))
                            .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                            .unwrap_or_default();
                        let name = secret.metadata.name.unwrap_or_default();
                        recorder.lock().await.insert(name, (value, Instant::now()));
                    }
                }
            }),
    );

    let free_port = || {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (metrics_port, api_port) = (free_port(), free_port());
    let started = Instant::now();
    let manager = start_manager(
        &kubeconfig,
        metrics_port,
        api_port,
        &agents.iter().map(|a| a.url()).collect::<Vec<_>>(),
    );
    loop {
        if seen.lock().await.len() >= n {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the first sync did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let full_sync = started.elapsed();
    let rss_synced = rss_mib(manager.0.id());

    let mut latencies = Vec::new();
    for s in 0..LATENCY_SAMPLES.min(n) {
        let i = (s * 7919) % n;
        let name = format!("secret-{i}");
        let value = format!("v2-{i}");
        let written = Instant::now();
        hsm_write(&*clients[s % 2], &name, &[("password", &value)], 2).await;
        loop {
            if let Some((v, at)) = seen.lock().await.get(&name)
                && *v == value
            {
                latencies.push(at.saturating_duration_since(written));
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(30),
                "{name} never followed"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    latencies.sort();

    let rest = Rest::new(api_port, cluster.emulator.admin_token());
    let mut rest_writes = Vec::new();
    for s in 0..REST_SAMPLES.min(n) {
        let name = format!("secret-{}", (s * 7919 + 1) % n);
        let value = format!("v3-{s}");
        let written = Instant::now();
        let body = json!({"data": {"password": value}}).to_string();
        let status = rest.call(hyper::Method::POST, &name, Some(body)).await;
        assert_eq!(status, 201, "REST write of {name}");
        loop {
            if let Some((v, at)) = seen.lock().await.get(&name)
                && *v == value
            {
                rest_writes.push(at.saturating_duration_since(written));
                break;
            }
            assert!(
                written.elapsed() < Duration::from_secs(30),
                "{name} never followed"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    rest_writes.sort();
    let (mut rest_reads, mut grpc_reads) = (Vec::new(), Vec::new());
    for s in 0..REST_SAMPLES.min(n) {
        let name = format!("secret-{}", (s * 104_729) % n);
        let at = Instant::now();
        assert_eq!(rest.call(hyper::Method::GET, &name, None).await, 200);
        rest_reads.push(at.elapsed());
        let at = Instant::now();
        clients[0].read(&name).await.unwrap();
        grpc_reads.push(at.elapsed());
    }
    rest_reads.sort();
    grpc_reads.sort();

    // Let the first post-write syncs settle, then count what a quiet period costs.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = agent_reads(metrics_port).await;
    tokio::time::sleep(IDLE).await;
    let after = agent_reads(metrics_port).await;
    let per_hour = |a: f64, b: f64| (b - a) * 3600.0 / IDLE.as_secs_f64();
    let rss_idle = rss_mib(manager.0.id());
    let lists = Api::<Secret>::namespaced(cluster.client.clone(), APPS)
        .list_metadata(&ListParams::default().labels("managed-by=hsm-secrets-operator"))
        .await
        .unwrap()
        .items
        .len();

    println!(
        "sync bench: {n} HSMSecrets, 2 {store} agents over gRPC+mTLS, manager binary, API emulator over HTTP"
    );
    println!("  Secrets written by the manager          {lists}");
    println!(
        "  first full sync                         {:.2} s ({:.0} Secrets/s)",
        full_sync.as_secs_f64(),
        n as f64 / full_sync.as_secs_f64()
    );
    println!(
        "  HSM write → Secret ({} samples)        p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        latencies.len(),
        percentile(&latencies, 0.50).as_secs_f64() * 1e3,
        percentile(&latencies, 0.99).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "  REST write → Secret ({} samples)       p50 {:.1} ms, p99 {:.1} ms (both devices written, TokenReview/SAR cached)",
        rest_writes.len(),
        ms(percentile(&rest_writes, 0.50)),
        ms(percentile(&rest_writes, 0.99))
    );
    println!(
        "  REST read vs direct gRPC read ({} each)  REST p50 {:.2} ms, p99 {:.2} ms; gRPC p50 {:.2} ms, p99 {:.2} ms",
        rest_reads.len(),
        ms(percentile(&rest_reads, 0.50)),
        ms(percentile(&rest_reads, 0.99)),
        ms(percentile(&grpc_reads, 0.50)),
        ms(percentile(&grpc_reads, 0.99))
    );
    println!(
        "  agent reads with no change, per hour    ReadSecret {:.0}, ReadMetadata {:.0} (syncInterval {SYNC_INTERVAL_SECONDS} s, {} s observed)",
        per_hour(before.0, after.0),
        per_hour(before.1, after.1),
        IDLE.as_secs()
    );
    println!(
        "  manager RSS                             {rss_synced:.1} MiB after the first sync, {rss_idle:.1} MiB after the idle period"
    );
    let p99_ok = percentile(&latencies, 0.99) < Duration::from_secs(1)
        && percentile(&rest_writes, 0.99) < Duration::from_secs(1);
    let idle_ok = per_hour(before.0, after.0) == 0.0;
    println!(
        "  target p99 < 1 s (HSM write and REST write → Secret): {}",
        if p99_ok { "PASS" } else { "FAIL" }
    );
    println!(
        "  target 0 value reads with no change: {}",
        if idle_ok { "PASS" } else { "FAIL" }
    );
    let rss_ok = n < 10_000 || rss_idle < 100.0;
    if n >= 10_000 {
        println!(
            "  target RSS < 100 MiB at 10 000: {}",
            if rss_ok { "PASS" } else { "FAIL" }
        );
    }
    drop(manager);
    if !(p99_ok && idle_ok && rss_ok) {
        std::process::exit(1);
    }
}
