//! Mirroring as a property: random sequences of writes, deletes, device outages and passes on
//! two or three agents (in-memory tokens, each agent's real gRPC service called in process)
//! end, once every device is up and a pass has run, with every device holding the same
//! content and metadata; the newest delete of a secret stays a delete everywhere; and a
//! second pass changes nothing.

mod common;

use async_trait::async_trait;
use common::*;
use futures::StreamExt;
use futures::stream::BoxStream;
use hsm_agent::service::AgentService;
use hsm_agent::testing::{MemoryConnector, memory_device};
use hsm_operator::agents::follow::same_content;
use hsm_operator::agents::grpc::GrpcAgent;
use hsm_operator::agents::{
    AgentApi, AgentError, AgentPool, DeviceHealth, IndexSnapshot, SecretValues,
};
use hsm_operator::mirror::{Config, Mirror, Trigger};
use hsm_operator::telemetry::Metrics;
use hsm_proto::v1::{ChangeEvent, HsmInfo, SecretMetadata};
use hsm_store::testing::TEST_PIN;
use proptest::prelude::*;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// An agent whose process can be taken away and brought back: while down, every call
/// fails as an unreachable agent's would, and its change streams end.
struct Outage {
    agent: Arc<dyn AgentApi>,
    down: watch::Sender<bool>,
}

impl Outage {
    fn unreachable(&self) -> Result<(), AgentError> {
        match *self.down.borrow() {
            true => Err(AgentError::Status {
                code: tonic::Code::Unavailable,
                message: "the agent is down".into(),
            }),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl AgentApi for Outage {
    async fn index(&self) -> Result<IndexSnapshot, AgentError> {
        self.unreachable()?;
        self.agent.index().await
    }
    async fn changes(
        &self,
        since: u64,
    ) -> Result<BoxStream<'static, Result<ChangeEvent, AgentError>>, AgentError> {
        self.unreachable()?;
        let mut down = self.down.subscribe();
        let stream = self.agent.changes(since).await?;
        Ok(stream
            .take_until(async move {
                let _ = down.wait_for(|d| *d).await;
            })
            .boxed())
    }
    async fn read(&self, name: &str) -> Result<SecretValues, AgentError> {
        self.unreachable()?;
        self.agent.read(name).await
    }
    async fn metadata(&self, name: &str) -> Result<SecretMetadata, AgentError> {
        self.unreachable()?;
        self.agent.metadata(name).await
    }
    async fn write(
        &self,
        name: &str,
        values: SecretValues,
        metadata: SecretMetadata,
    ) -> Result<(), AgentError> {
        self.unreachable()?;
        self.agent.write(name, values, metadata).await
    }
    async fn delete(&self, name: &str, key: Option<&str>) -> Result<(), AgentError> {
        self.unreachable()?;
        self.agent.delete(name, key).await
    }
    async fn info(&self) -> Result<HsmInfo, AgentError> {
        self.unreachable()?;
        self.agent.info().await
    }
    async fn healthy(&self) -> Result<bool, AgentError> {
        self.unreachable()?;
        self.agent.healthy().await
    }
}

/// One device: the agent itself (what the test writes through, as the REST API would) and
/// its switch.
struct Device {
    key: String,
    agent: Arc<dyn AgentApi>,
    down: watch::Sender<bool>,
}

impl Device {
    fn new(key: String) -> (Device, Arc<Outage>) {
        let device = Arc::new(memory_device(MemoryConnector::new(TEST_PIN), TEST_PIN));
        device.probe();
        let agent: Arc<dyn AgentApi> = Arc::new(GrpcAgent::in_process(AgentService::new(device)));
        let down = watch::Sender::new(false);
        let outage = Arc::new(Outage {
            agent: agent.clone(),
            down: down.clone(),
        });
        (Device { key, agent, down }, outage)
    }

    fn up(&self) -> bool {
        !*self.down.borrow()
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// Write `value` to `name` on the up devices of `mask` (a REST write: one above the
    /// highest version the up devices hold; devices outside the mask "failed").
    Write { name: u8, value: u8, mask: u8 },
    /// Delete `name` the same way (a tombstone one version up).
    Delete { name: u8, mask: u8 },
    /// Take a device down or bring it back.
    Toggle { device: u8 },
    /// A mirror pass over the devices as they are.
    Pass,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..3u8, 0..3u8, 1..8u8).prop_map(|(name, value, mask)| Op::Write { name, value, mask }),
        2 => (0..3u8, 1..8u8).prop_map(|(name, mask)| Op::Delete { name, mask }),
        2 => (0..3u8).prop_map(|device| Op::Toggle { device }),
        2 => Just(Op::Pass),
    ]
}

/// The newest version issued for a name, and whether it was a delete and unique.
#[derive(Debug, Default, Clone, Copy)]
struct Newest {
    version: i64,
    deleted: bool,
    unique: bool,
}

struct World {
    devices: Vec<Device>,
    pool: AgentPool,
    mirror: Mirror,
    clock: u32,
    newest: HashMap<String, Newest>,
}

impl World {
    fn new(count: usize) -> World {
        let pool = AgentPool::new()
            .with_health_interval(Duration::from_millis(20))
            .with_reconnect_backoff(Duration::from_millis(1), Duration::from_millis(5));
        let mut devices = Vec::new();
        for i in 0..count {
            let (device, outage) = Device::new(format!("dev-{i}"));
            pool.insert(&device.key, outage);
            devices.push(device);
        }
        let mirror = Mirror::new(pool.clone(), Arc::new(Metrics::new()), Config::default());
        World {
            devices,
            pool,
            mirror,
            clock: 0,
            newest: HashMap::new(),
        }
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Write { name, value, mask } => {
                let values =
                    BTreeMap::from([("data".to_owned(), format!("value-{value}").into_bytes())]);
                self.rest_write(name, mask, values, false).await;
            }
            Op::Delete { name, mask } => self.rest_write(name, mask, BTreeMap::new(), true).await,
            Op::Toggle { device } => {
                if let Some(d) = self.devices.get(device as usize) {
                    d.down.send_modify(|down| *down = !*down);
                }
            }
            Op::Pass => {
                self.caught_up().await;
                let _ = self.mirror.pass(Trigger::Periodic).await;
            }
        }
    }

    /// A write as the REST API makes it: `sync.version` one above the highest any up
    /// device holds, to the up devices in `mask`.
    async fn rest_write(&mut self, name: u8, mask: u8, values: SecretValues, delete: bool) {
        let name = format!("secret-{name}");
        let targets: Vec<&Device> = self
            .devices
            .iter()
            .enumerate()
            .filter(|(i, d)| mask & (1 << i) != 0 && d.up())
            .map(|(_, d)| d)
            .collect();
        if targets.is_empty() {
            return;
        }
        let mut version = 0;
        for device in self.devices.iter().filter(|d| d.up()) {
            let index = device.agent.index().await.unwrap();
            version = version.max(index.entries.get(&name).map_or(0, |e| e.sync_version));
        }
        let version = version + 1;
        self.clock += 1;
        let mut labels = BTreeMap::from([
            ("sync.version".to_owned(), version.to_string()),
            ("sync.timestamp".to_owned(), timestamp(self.clock)),
        ]);
        if delete {
            labels.insert("sync.deleted".into(), "true".into());
        }
        let metadata = SecretMetadata {
            description: format!("written at tick {}", self.clock),
            labels,
            source: "proptest".into(),
            ..Default::default()
        };
        for device in targets {
            device
                .agent
                .write(&name, values.clone(), metadata.clone())
                .await
                .unwrap();
        }
        let newest = self.newest.entry(name).or_default();
        if version > newest.version {
            *newest = Newest {
                version,
                deleted: delete,
                unique: true,
            };
        } else if version == newest.version {
            newest.unique = false;
        }
    }

    /// Waits until the pool sees every device as it is: up devices healthy with their whole
    /// index, down devices unavailable.
    async fn caught_up(&self) {
        eventually(Duration::from_secs(10), "the pool to catch up", || async {
            let snapshots = self.pool.snapshots();
            for device in &self.devices {
                let seen = snapshots.iter().find(|s| s.key == device.key)?;
                match device.up() {
                    false => {
                        matches!(seen.health, DeviceHealth::Unavailable { .. }).then_some(())?
                    }
                    true => {
                        (seen.health == DeviceHealth::Healthy).then_some(())?;
                        let truth = device.agent.index().await.ok()?.entries;
                        let same = truth.len() == seen.entries.len()
                            && truth.iter().all(|(name, entry)| {
                                seen.entries
                                    .get(name)
                                    .is_some_and(|e| same_content(e, entry))
                            });
                        same.then_some(())?;
                    }
                }
            }
            Some(())
        })
        .await;
    }

    /// Every device's content and metadata, by device.
    async fn contents(
        &self,
    ) -> Vec<BTreeMap<String, (Option<SecretValues>, SecretMetadata, bool)>> {
        let mut all = Vec::new();
        for device in &self.devices {
            let mut content = BTreeMap::new();
            for (name, entry) in device.agent.index().await.unwrap().entries {
                let values = device.agent.read(&name).await.ok();
                let metadata = device.agent.metadata(&name).await.unwrap();
                content.insert(name, (values, metadata, entry.tombstone));
            }
            all.push(content);
        }
        all
    }

    async fn store_versions(&self) -> Vec<u64> {
        let mut versions = Vec::new();
        for device in &self.devices {
            versions.push(device.agent.index().await.unwrap().version);
        }
        versions
    }
}

fn timestamp(tick: u32) -> String {
    let t = chrono::DateTime::from_timestamp(1_790_000_000 + i64::from(tick), 0).unwrap();
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

async fn scenario(count: usize, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut world = World::new(count);
    world.caught_up().await;
    for op in &ops {
        world.apply(op).await;
    }
    for device in &world.devices {
        device.down.send_replace(false);
    }
    world.caught_up().await;
    let first = world.mirror.pass(Trigger::DeviceReady).await.unwrap();
    prop_assert_eq!(first.failed + first.stale, 0, "{:?}", first);
    world.caught_up().await;

    let contents = world.contents().await;
    for (name, newest) in &world.newest {
        if newest.deleted && newest.unique {
            for content in &contents {
                let deleted = content
                    .get(name)
                    .is_some_and(|(values, _, tombstone)| *tombstone && values.is_none());
                prop_assert!(deleted, "{} was deleted last and came back", name);
            }
        }
    }
    for other in &contents[1..] {
        prop_assert_eq!(&contents[0], other, "every device holds the same content");
    }

    let versions = world.store_versions().await;
    let second = world.mirror.pass(Trigger::Periodic).await.unwrap();
    prop_assert!(second.in_sync(), "{:?}", second);
    prop_assert_eq!(
        world.store_versions().await,
        versions,
        "the second pass wrote"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        max_shrink_iters: 200,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn devices_converge_deletes_stay_deleted_and_a_second_pass_changes_nothing(
        count in 2..=3usize,
        ops in prop::collection::vec(op(), 1..16),
    ) {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(scenario(count, ops))?;
    }
}
