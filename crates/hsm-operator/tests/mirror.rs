//! Mirroring end to end on two SoftHSM2 tokens, each behind its own agent over gRPC with
//! mTLS: a secret written to one device reaches the other with its user metadata, a delete
//! reaches a device that was down when it happened and is never undone, and a device that
//! comes back at any time triggers a pass. Assertions are on what the tokens hold.

mod common;

use common::*;
use hsm_operator::agents::{AgentApi, AgentPool, DeviceHealth};
use hsm_operator::mirror::{self, ActionResult, Config, Mirror, Trigger};
use hsm_operator::telemetry::Metrics;
use hsm_proto::v1::SecretMetadata;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

/// The runner on a pool of `agents`, in this process until dropped.
struct Running {
    pool: AgentPool,
    mirror: Mirror,
    metrics: Arc<Metrics>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(agents: Vec<(&str, Arc<dyn AgentApi>)>, config: Config) -> Running {
        let pool = AgentPool::new()
            .with_health_interval(Duration::from_millis(200))
            .with_reconnect_backoff(Duration::from_millis(50), Duration::from_millis(300));
        for (key, agent) in agents {
            pool.insert(key, agent);
        }
        let metrics = Arc::new(Metrics::new());
        let mirror = Mirror::new(pool.clone(), metrics.clone(), config);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(mirror::run(mirror.clone(), async move {
            let _ = stopped.await;
        }));
        Running {
            pool,
            mirror,
            metrics,
            stop: Some(stop),
            task,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

/// Event-driven only: the safety net would not fire within a test.
fn quick() -> Config {
    Config {
        debounce: Duration::from_millis(100),
        periodic: Duration::from_secs(3600),
    }
}

fn user_metadata(version: i64) -> SecretMetadata {
    SecretMetadata {
        description: "the billing database".into(),
        labels: BTreeMap::from([
            ("team".to_owned(), "payments".to_owned()),
            ("sync.version".to_owned(), version.to_string()),
            (
                "sync.timestamp".to_owned(),
                format!("2026-11-01T00:00:{version:02}Z"),
            ),
        ]),
        format: "env".into(),
        data_type: "plaintext".into(),
        created_at: "2026-11-01T00:00:00Z".into(),
        source: "kubectl-hsm".into(),
    }
}

fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
}

fn tombstone_metadata(version: i64) -> SecretMetadata {
    SecretMetadata {
        labels: BTreeMap::from([
            ("sync.version".to_owned(), version.to_string()),
            (
                "sync.timestamp".to_owned(),
                format!("2026-11-01T00:00:{version:02}Z"),
            ),
            ("sync.deleted".to_owned(), "true".to_owned()),
        ]),
        ..Default::default()
    }
}

/// Waits until `agent` holds `name` with `expected` values.
async fn holds(agent: &dyn AgentApi, name: &str, expected: &BTreeMap<String, Vec<u8>>) {
    eventually(WAIT, &format!("{name} to be mirrored"), || async {
        agent.read(name).await.ok().filter(|v| v == expected)
    })
    .await;
}

/// Waits until `agent` holds a tombstone of `name`.
async fn tombstoned(agent: &dyn AgentApi, name: &str) -> SecretMetadata {
    eventually(WAIT, &format!("{name} to be tombstoned"), || async {
        let index = agent.index().await.ok()?;
        index.entries.get(name).filter(|e| e.tombstone)?;
        agent.metadata(name).await.ok()
    })
    .await
}

#[tokio::test]
async fn a_secret_written_to_one_device_reaches_the_other_with_its_user_metadata() {
    let pki = pki();
    let (one, two) = (TestAgent::start(&pki).await, TestAgent::start(&pki).await);
    let a: Arc<dyn AgentApi> = Arc::new(one.client(&pki));
    let b: Arc<dyn AgentApi> = Arc::new(two.client(&pki));
    let running = Running::start(vec![("one", a.clone()), ("two", b.clone())], quick());

    let db = values(&[("username", "app"), ("password", "s3cret")]);
    a.write("billing-db", db.clone(), user_metadata(1))
        .await
        .unwrap();
    holds(&*b, "billing-db", &db).await;
    assert_eq!(
        b.metadata("billing-db").await.unwrap(),
        user_metadata(1),
        "the user's description, labels, format and sync.version are copied whole"
    );

    // An update on the other device flows back, and the devices then agree.
    let rotated = values(&[("username", "app"), ("password", "rotated")]);
    b.write("billing-db", rotated.clone(), user_metadata(2))
        .await
        .unwrap();
    holds(&*a, "billing-db", &rotated).await;
    assert_eq!(a.metadata("billing-db").await.unwrap(), user_metadata(2));

    let again = eventually(WAIT, "a pass that finds the devices agreeing", || async {
        let summary = running.mirror.sync_now(true).await.unwrap();
        summary.in_sync().then_some(summary)
    })
    .await;
    assert_eq!(again.trigger, Trigger::ManualForce);
    assert_eq!(again.secrets_in_sync, 1);
    let metrics = running.metrics.render(&running.pool);
    assert!(
        metrics.contains("hsm_operator_mirror_actions_total{action=\"write\",result=\"written\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("hsm_operator_mirror_runs_total{trigger=\"device_change\",result=\"ok\"}")
    );
}

#[tokio::test]
async fn a_delete_reaches_a_device_that_was_down_and_is_not_undone() {
    let pki = pki();
    let one = TestAgent::start(&pki).await;
    let mut two = TestAgent::start(&pki).await;
    let a: Arc<dyn AgentApi> = Arc::new(one.client(&pki));
    let b: Arc<dyn AgentApi> = Arc::new(two.client(&pki));
    let db = values(&[("password", "old")]);
    for agent in [&a, &b] {
        agent
            .write("db", db.clone(), user_metadata(1))
            .await
            .unwrap();
    }
    // "two" is down when the secret is deleted (a tombstone one version up, as the REST
    // API writes it), and still holds the live copy when it comes back.
    let (two_hsm, two_addr) = (two.hsm.clone().unwrap(), two.addr);
    two.stop().await;
    let running = Running::start(vec![("one", a.clone()), ("two", b.clone())], quick());
    a.write("db", BTreeMap::new(), tombstone_metadata(2))
        .await
        .unwrap();
    eventually(WAIT, "one healthy with the tombstone, two down", || async {
        let devices = running.pool.snapshots();
        let one = devices.iter().find(|d| d.key == "one")?;
        let two = devices.iter().find(|d| d.key == "two")?;
        (one.health == DeviceHealth::Healthy
            && one.entries.get("db").is_some_and(|e| e.tombstone)
            && matches!(two.health, DeviceHealth::Unavailable { .. }))
        .then_some(())
    })
    .await;
    let while_down = running.mirror.sync_now(true).await.unwrap();
    assert!(
        while_down.in_sync(),
        "a down device is skipped, not written"
    );
    assert_eq!(while_down.skipped_devices[0].device, "two");

    // Back (minutes later in a cluster): its return alone triggers the pass.
    let _two = TestAgent::start_on(&pki, two_hsm, two_addr).await;
    let record = tombstoned(&*b, "db").await;
    assert_eq!(record, tombstone_metadata(2));
    assert!(b.read("db").await.unwrap_err().is_not_found());
    let summary = running.mirror.last_summary().unwrap();
    assert!(
        summary.actions.iter().any(|a| a.device == "two"
            && a.result == ActionResult::Written
            && a.action == mirror::plan::ActionKind::Tombstone),
        "{summary:?}"
    );

    // Every later pass leaves it deleted on both.
    eventually(WAIT, "a pass finding both agreeing", || async {
        let after = running.mirror.sync_now(true).await.ok()?;
        after.in_sync().then_some(())
    })
    .await;
    let after = running.mirror.sync_now(true).await.unwrap();
    assert!(after.in_sync(), "{after:?}");
    for agent in [&a, &b] {
        assert!(agent.read("db").await.unwrap_err().is_not_found());
        assert!(agent.index().await.unwrap().entries["db"].tombstone);
    }
}

#[tokio::test]
async fn a_manual_pass_needs_a_healthy_device_and_reuses_a_current_summary() {
    let pki = pki();
    let one = TestAgent::start(&pki).await;
    let two = TestAgent::start(&pki).await;
    let a: Arc<dyn AgentApi> = Arc::new(one.client(&pki));
    let b: Arc<dyn AgentApi> = Arc::new(two.client(&pki));
    let pool = AgentPool::new().with_health_interval(Duration::from_millis(100));
    let metrics = Arc::new(Metrics::new());
    let mirror = Mirror::new(
        pool.clone(),
        metrics,
        Config {
            debounce: Duration::from_secs(60),
            periodic: Duration::from_secs(3600),
        },
    );
    assert!(matches!(
        mirror.sync_now(false).await,
        Err(mirror::Error::NoHealthyDevice { devices: 0 })
    ));
    pool.insert("one", a.clone());
    pool.insert("two", b.clone());
    assert!(pool.settled(WAIT).await);
    hsm_write(&*a, "api-key", &[("data", "k1")], 1).await;
    let summary = eventually(WAIT, "the write to be planned", || async {
        let s = mirror.sync_now(true).await.unwrap();
        (s.written == 1).then_some(s)
    })
    .await;
    assert_eq!(summary.trigger, Trigger::ManualForce);
    assert_eq!(summary.actions[0].source, "one");
    assert_eq!(summary.actions[0].device, "two");
    holds(&*b, "api-key", &values(&[("data", "k1")])).await;
    // Unforced, within the debounce window and with no device change since: the last pass
    // is answered; a change makes the next unforced request run a pass again.
    let settled = eventually(WAIT, "a pass finding the devices agreeing", || async {
        let s = mirror.sync_now(true).await.unwrap();
        s.in_sync().then_some(s)
    })
    .await;
    assert_eq!(mirror.sync_now(false).await.unwrap(), settled);
    hsm_write(&*a, "api-key", &[("data", "k2")], 2).await;
    let next = eventually(WAIT, "an unforced pass after a change", || async {
        let s = mirror.sync_now(false).await.unwrap();
        (s.written == 1).then_some(s)
    })
    .await;
    assert_eq!(next.trigger, Trigger::Manual);
    holds(&*b, "api-key", &values(&[("data", "k2")])).await;
}

#[tokio::test]
async fn an_empty_device_joining_late_triggers_a_pass_by_becoming_healthy() {
    let pki = pki();
    let one = TestAgent::start(&pki).await;
    let mut two = TestAgent::start(&pki).await;
    let a: Arc<dyn AgentApi> = Arc::new(one.client(&pki));
    let b: Arc<dyn AgentApi> = Arc::new(two.client(&pki));
    hsm_write(&*a, "tls-cert", &[("tls.crt", "PEM")], 1).await;
    let (two_hsm, two_addr) = (two.hsm.clone().unwrap(), two.addr);
    two.stop().await;
    let running = Running::start(vec![("one", a.clone()), ("two", b.clone())], quick());
    eventually(WAIT, "a pass with device two down", || async {
        let last = running.mirror.last_summary()?;
        (last.healthy_devices == ["one"]).then_some(())
    })
    .await;

    // An empty token announces no secret name when it comes back: only its health moved.
    let _two = TestAgent::start_on(&pki, two_hsm, two_addr).await;
    holds(&*b, "tls-cert", &values(&[("tls.crt", "PEM")])).await;
    // The write lands before the pass that made it records its summary: wait for that.
    let last = eventually(
        WAIT,
        "the pass that wrote to record its summary",
        || async {
            let last = running.mirror.last_summary()?;
            (last.written == 1).then_some(last)
        },
    )
    .await;
    assert_eq!(last.trigger, Trigger::DeviceReady, "{last:?}");
}

#[tokio::test]
async fn the_periodic_pass_is_a_safety_net_without_announcements() {
    let pki = pki();
    let (one, two) = (TestAgent::start(&pki).await, TestAgent::start(&pki).await);
    let a: Arc<dyn AgentApi> = Arc::new(one.client(&pki));
    let b: Arc<dyn AgentApi> = Arc::new(two.client(&pki));
    // Announced changes would wait an hour: only the timer can carry the write over.
    let running = Running::start(
        vec![("one", a.clone()), ("two", b.clone())],
        Config {
            debounce: Duration::from_secs(3600),
            periodic: Duration::from_millis(300),
        },
    );
    hsm_write(&*a, "webhook-token", &[("data", "t0k")], 1).await;
    holds(&*b, "webhook-token", &values(&[("data", "t0k")])).await;
    let last = running.mirror.last_summary().unwrap();
    assert_eq!(last.trigger, Trigger::Periodic);
}

#[tokio::test]
async fn a_write_landing_after_the_plan_is_never_replaced_by_the_older_copy() {
    let pki = pki();
    let (one, two) = (TestAgent::start(&pki).await, TestAgent::start(&pki).await);
    let a: Arc<dyn AgentApi> = Arc::new(one.client(&pki));
    let b: Arc<dyn AgentApi> = Arc::new(two.client(&pki));
    let pool = AgentPool::new().with_health_interval(Duration::from_millis(100));
    pool.insert("one", a.clone());
    pool.insert("two", b.clone());
    let metrics = Metrics::new();
    hsm_write(&*a, "queue", &[("data", "v2")], 2).await;
    hsm_write(&*b, "queue", &[("data", "v1")], 1).await;
    hsm_write(&*b, "cache", &[("data", "c1")], 1).await;
    let seen = |name: &'static str, version: i64| {
        let pool = pool.clone();
        async move {
            eventually(WAIT, "the pool to see the writes", || async {
                let all = pool.snapshots();
                all.iter()
                    .all(|d| {
                        d.health == DeviceHealth::Healthy
                            && d.entries
                                .get(name)
                                .is_some_and(|e| e.sync_version >= version)
                    })
                    .then_some(())
            })
            .await
        }
    };
    seen("queue", 1).await;
    eventually(WAIT, "cache on two", || async {
        pool.snapshots()
            .iter()
            .any(|d| d.key == "two" && d.entries.contains_key("cache"))
            .then_some(())
    })
    .await;
    let plan = mirror::plan::plan(&pool.snapshots());
    assert_eq!(plan.action_count(), 2, "{plan:?}");

    // Before the plan is carried out, a newer write reaches the target "two" of "queue",
    // and the source "two" of "cache" changes.
    hsm_write(&*b, "queue", &[("data", "v3")], 3).await;
    hsm_write(&*b, "cache", &[("data", "c2")], 2).await;
    seen("queue", 2).await;
    eventually(WAIT, "cache v2 on two", || async {
        pool.snapshots()
            .iter()
            .any(|d| d.key == "two" && d.entries.get("cache").is_some_and(|e| e.sync_version == 2))
            .then_some(())
    })
    .await;
    let outcomes = mirror::execute::execute(&pool, &plan, &metrics).await;
    assert_eq!(outcomes.len(), 2);
    for outcome in &outcomes {
        assert!(
            matches!(outcome.result, Err(mirror::execute::ActionError::Stale)),
            "{outcome:?}"
        );
    }
    assert_eq!(b.read("queue").await.unwrap(), values(&[("data", "v3")]));
    assert!(a.read("cache").await.unwrap_err().is_not_found());
}
