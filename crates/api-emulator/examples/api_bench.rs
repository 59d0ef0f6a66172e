//! Load benchmark: 10 000 objects and 50 concurrent watchers, through a `kube::Client` over
//! HTTP (as the manager and kubectl connect), authenticated as a ServiceAccount with a
//! TokenRequest token and granted by Roles; the watchers count raw event lines. Prints
//! request latency (p50/p99 for get, list, create, update), whether every watcher saw every
//! change, and the process's memory (VmRSS).
//!
//! The authoriser's cost: the gets run in alternating rounds with RBAC off and on (same
//! objects, same watchers, same token), and the p50s are compared against the target
//! (< 10 %); the bench exits non-zero on a miss.
//!
//! `cargo run --release -p api-emulator --example api_bench [-- OBJECTS WATCHERS]`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use api_emulator::{Authorization, Emulator};
use futures::{AsyncBufReadExt as _, StreamExt as _};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

const NAMESPACES: usize = 10;
const CONCURRENCY: usize = 16;
/// Rounds of gets per authorisation mode.
const GET_ROUNDS: usize = 20;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<8} n={:<6} p50={:>8.3} ms  p99={:>8.3} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
    );
}

fn vm_rss() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .map(|l| l.trim_start_matches("VmRSS:").trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Runs `op(i)` for `0..n` with `CONCURRENCY` in flight, timing each.
async fn timed<F, Fut>(n: usize, op: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(0..n)
        .map(|i| {
            let fut = op(i);
            async move {
                let start = Instant::now();
                fut.await;
                start.elapsed()
            }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let objects: usize = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000);
    let watchers: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(50);

    let emu = Emulator::new();
    let server = emu.serve(0).await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path)?;
    let token = grant_bench_service_account(&emu)?;
    let mut config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    config.auth_info.token = Some(token.into());
    let client = kube::Client::try_from(config)?;
    emu.set_authorization(Authorization::Rbac);
    println!(
        "api-emulator at {}; {objects} objects, {watchers} watchers, as a ServiceAccount under RBAC",
        server.url()
    );
    let api = |i: usize| -> Api<ConfigMap> {
        Api::namespaced(client.clone(), &format!("bench-{}", i % NAMESPACES))
    };

    // 50 watchers on all ConfigMaps from now on, each counting what it sees.
    let start_rv = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let seen: Arc<Vec<AtomicUsize>> =
        Arc::new((0..watchers).map(|_| AtomicUsize::new(0)).collect());
    let mut tasks = Vec::new();
    for w in 0..watchers {
        let client = client.clone();
        let seen = seen.clone();
        let rv = start_rv.clone();
        tasks.push(tokio::spawn(async move {
            // Each watcher reads the raw event lines and counts the changes without decoding
            // the objects, so that the clients' JSON work does not crowd out the emulator's
            // on the shared cores.
            let req = http::Request::get(format!(
                "/api/v1/configmaps?watch=true&resourceVersion={rv}&timeoutSeconds=290"
            ))
            .body(Vec::new())
            .expect("request");
            let mut lines = client.request_stream(req).await.expect("watch").lines();
            while let Some(line) = lines.next().await {
                let line = line.expect("a line");
                if !line.starts_with("{\"type\":\"BOOKMARK\"") {
                    seen[w].fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }

    let started = Instant::now();
    let create = timed(objects, |i| {
        let api = api(i);
        async move {
            let cm: ConfigMap = serde_json::from_value(json!({
                "metadata": {"name": format!("cm-{i}"), "labels": {"bench": "yes", "shard": (i % 7).to_string()}},
                "data": {"value": "x".repeat(256)},
            }))
            .unwrap();
            api.create(&PostParams::default(), &cm).await.expect("create");
        }
    })
    .await;
    let create_secs = started.elapsed().as_secs_f64();
    let samples = 2_000.min(objects);
    let step = (objects / samples).max(1);
    // Short alternating rounds (500 gets each), so that drift in the machine's load hits
    // both modes alike.
    let (mut get_open, mut get) = (Vec::new(), Vec::new());
    for round in 0..GET_ROUNDS * 2 {
        let rbac = round % 2 == 1;
        emu.set_authorization(if rbac {
            Authorization::Rbac
        } else {
            Authorization::AlwaysAllow
        });
        let samples = timed(samples / 4, |i| {
            let i = (i + round * samples / 4) % samples;
            let api = api(i * step);
            async move {
                api.get(&format!("cm-{}", i * step)).await.expect("get");
            }
        })
        .await;
        if rbac {
            get.extend(samples);
        } else {
            get_open.extend(samples);
        }
    }
    emu.set_authorization(Authorization::Rbac);
    let p50 = |v: &mut Vec<Duration>| {
        v.sort();
        percentile(v, 0.5).as_secs_f64() * 1e3
    };
    let (open_p50, rbac_p50) = (p50(&mut get_open), p50(&mut get));
    let overhead = (rbac_p50 / open_p50 - 1.0) * 100.0;
    let update = timed(samples, |i| {
        let api = api(i * step);
        async move {
            api.patch(
                &format!("cm-{}", i * step),
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"value": format!("updated-{i}")}})),
            )
            .await
            .expect("update");
        }
    })
    .await;
    let list = timed(100, |i| {
        let api = api(i);
        async move {
            let l = api
                .list(&ListParams::default().labels(&format!("shard={}", i % 7)))
                .await
                .expect("list");
            assert!(!l.items.is_empty());
        }
    })
    .await;
    let list_all_start = Instant::now();
    let everything = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let list_all = list_all_start.elapsed();

    report("create", create);
    report("get-open", get_open);
    report("get", get);
    report("update", update);
    report("list", list);
    println!(
        "list of all {} objects: {:.1} ms; creates: {:.0}/s",
        everything.items.len(),
        list_all.as_secs_f64() * 1e3,
        objects as f64 / create_secs
    );

    // Every watcher must see every change.
    let expected = objects + samples;
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.iter().any(|s| s.load(Ordering::Relaxed) < expected) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let counts: Vec<usize> = seen.iter().map(|s| s.load(Ordering::Relaxed)).collect();
    let complete = counts.iter().filter(|&&c| c == expected).count();
    println!(
        "watchers: {complete}/{watchers} saw all {expected} events (min {}, max {}), {:.1} s after the start",
        counts.iter().min().unwrap_or(&0),
        counts.iter().max().unwrap_or(&0),
        started.elapsed().as_secs_f64()
    );
    println!(
        "stored objects: {}; VmRSS: {}",
        emu.object_count(),
        vm_rss()
    );
    for t in tasks {
        t.abort();
    }
    let per_call = authorize_cost(&emu);
    println!(
        "authoriser alone: {:.2} µs per decision ({:.2} % of the open get p50)",
        per_call * 1e6,
        per_call * 1e3 / open_p50 * 100.0
    );
    let verdict = if overhead < 10.0 { "PASS" } else { "FAIL" };
    println!(
        "authoriser: get p50 {rbac_p50:.3} ms with RBAC vs {open_p50:.3} ms without: {overhead:+.1} % (target < 10 %): {verdict}"
    );
    if complete != watchers {
        anyhow::bail!("some watchers missed events");
    }
    if overhead >= 10.0 {
        anyhow::bail!("the authoriser costs {overhead:.1} % on get p50");
    }
    Ok(())
}

/// Seconds per RBAC decision for the bench's gets, timed in-process over many calls.
fn authorize_cost(emu: &Emulator) -> f64 {
    use api_emulator::rbac::{Attributes, ResourceAttributes};
    let attributes = Attributes {
        user: api_emulator::UserInfo::service_account("bench", "client", ""),
        verb: "get".into(),
        resource: Some(ResourceAttributes {
            namespace: "bench-3".into(),
            resource: "configmaps".into(),
            name: "cm-3".into(),
            ..Default::default()
        }),
        path: "/api/v1/namespaces/bench-3/configmaps/cm-3".into(),
    };
    let n = 100_000;
    let start = Instant::now();
    for _ in 0..n {
        assert!(emu.authorize(&attributes).allowed);
    }
    start.elapsed().as_secs_f64() / n as f64
}

/// The bench's namespaces, ServiceAccount `bench/client` and its grants: list and watch of
/// ConfigMaps cluster-wide by a ClusterRoleBinding, everything else on ConfigMaps by a
/// RoleBinding in each namespace (so a get walks the ClusterRoleBindings first, as it
/// would for a namespaced controller). Returns a token for it.
fn grant_bench_service_account(emu: &Emulator) -> anyhow::Result<String> {
    let mut yaml = String::from(
        "
apiVersion: v1
kind: Namespace
metadata: {name: bench}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: client, namespace: bench}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: bench-watch}
rules: [{apiGroups: [''], resources: [configmaps], verbs: [list, watch]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: bench-edit}
rules: [{apiGroups: [''], resources: [configmaps], verbs: [get, create, update, patch, delete]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: bench-watch}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: bench-watch}
subjects: [{kind: ServiceAccount, name: client, namespace: bench}]
",
    );
    for n in 0..NAMESPACES {
        yaml.push_str(&format!(
            "---
apiVersion: v1
kind: Namespace
metadata: {{name: bench-{n}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: bench-edit, namespace: bench-{n}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: bench-edit}}
subjects: [{{kind: ServiceAccount, name: client, namespace: bench}}]
"
        ));
    }
    emu.load_objects_from_str(&yaml)?;
    Ok(emu.service_account_token(
        "bench",
        "client",
        &[api_emulator::authn::API_AUDIENCE],
        chrono::Duration::hours(2),
    )?)
}
