//! `cargo xtask bench sync`: the manager binary syncing N HSMSecrets from two SoftHSM2
//! agents (gRPC over mTLS) through the API emulator served over HTTP. Prints the first full
//! sync time, HSM write → Secret latency (p50/p99), agent reads with no change, and the
//! manager process's resident memory. `--secrets N` (default 1000); `--memory` puts the
//! agents on the in-memory store instead of SoftHSM2.

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

fn start_manager(kubeconfig: &std::path::Path, metrics_port: u16, agents: &[String]) -> Manager {
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

    let metrics_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let manager = start_manager(
        &kubeconfig,
        metrics_port,
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
    println!(
        "  agent reads with no change, per hour    ReadSecret {:.0}, ReadMetadata {:.0} (syncInterval {SYNC_INTERVAL_SECONDS} s, {} s observed)",
        per_hour(before.0, after.0),
        per_hour(before.1, after.1),
        IDLE.as_secs()
    );
    println!(
        "  manager RSS                             {rss_synced:.1} MiB after the first sync, {rss_idle:.1} MiB after the idle period"
    );
    let p99_ok = percentile(&latencies, 0.99) < Duration::from_secs(1);
    let idle_ok = per_hour(before.0, after.0) == 0.0;
    println!(
        "  target p99 < 1 s: {}",
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
