//! The agent client pool: one connection per device, each followed by a task that keeps the
//! device's index (names, keys, checksums, sync versions, no values) in memory from the
//! agent's `GetIndex` snapshot and `WatchChanges` stream, and announces which secret names
//! changed. On a `Resync` (the agent re-scanned or recovered) it takes a new snapshot and
//! diffs it by content. Health comes from the agent itself (its stream and its token
//! session), not from a Kubernetes object: the Go manager reported "connected" from HSMPool
//! phases.
//!
//! Values are never kept here. Metadata records are cached per entry version, since every
//! Secret sync needs them and they change only with an index change.

use super::follow::{changed_names, same_content};
use super::{AgentApi, AgentError, IndexSnapshot};
use futures::StreamExt;
use hsm_proto::v1::change_event::Event;
use hsm_proto::v1::{IndexEntry, SecretMetadata};
use parking_lot::RwLock;
use prost::Message;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// How often a follower asks its agent whether the token session works.
const HEALTH_INTERVAL: Duration = Duration::from_secs(10);
/// Reconnection backoff bounds.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Names of secrets that changed on a device (or whose device changed health).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChange {
    /// The device's key in the pool.
    pub device: String,
    /// The secret names concerned.
    pub names: BTreeSet<String>,
}

/// A device's health as its agent reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceHealth {
    /// No snapshot yet.
    Connecting,
    /// Following the agent's changes, token session working.
    Healthy,
    /// The agent cannot be reached, or its token is not connected.
    Unavailable {
        /// Why, in words fit for a status message.
        reason: String,
    },
}

/// One device as the pool knows it now.
#[derive(Debug, Clone)]
pub struct DeviceSnapshot {
    /// The device's key in the pool.
    pub key: String,
    /// The serial the agent reported (empty before the first snapshot).
    pub serial: String,
    /// Its health.
    pub health: DeviceHealth,
    /// The index, by secret name (empty before the first snapshot).
    pub entries: Arc<BTreeMap<String, IndexEntry>>,
}

#[derive(Debug)]
struct DeviceState {
    serial: String,
    health: DeviceHealth,
    entries: Arc<BTreeMap<String, IndexEntry>>,
    /// Metadata records by name, with the entry version they were read at.
    metadata: HashMap<String, (u64, EncodedMetadata)>,
}

/// A cached metadata record in its protobuf encoding: one allocation of about a hundred
/// bytes, where the decoded record takes about 900 (a label map's B-tree node alone is
/// ~540 bytes). The cache holds one per secret and device — 10 000 HSMSecrets made 9 MiB of
/// decoded records — and a sync decodes the one it needs, which costs about what cloning
/// it did.
#[derive(Debug, Clone)]
struct EncodedMetadata(Box<[u8]>);

impl EncodedMetadata {
    fn new(metadata: &SecretMetadata) -> Self {
        EncodedMetadata(metadata.encode_to_vec().into_boxed_slice())
    }

    /// The record; `None` cannot happen for bytes [`EncodedMetadata::new`] wrote, and is
    /// treated by the caller as a cache miss.
    fn decode(&self) -> Option<SecretMetadata> {
        SecretMetadata::decode(&*self.0).ok()
    }
}

/// One device: its agent, what is known of it, and the task following it.
pub struct DeviceSlot {
    key: String,
    agent: Arc<dyn AgentApi>,
    state: RwLock<DeviceState>,
    follower: parking_lot::Mutex<Option<JoinHandle<()>>>,
}

impl DeviceSlot {
    /// Stops following (the task holds the slot while it streams, so dropping the pool's
    /// reference alone would not end it).
    fn stop(&self) {
        if let Some(task) = self.follower.lock().take() {
            task.abort();
        }
    }

    /// The device's agent.
    pub fn agent(&self) -> &Arc<dyn AgentApi> {
        &self.agent
    }

    /// The device now.
    pub fn snapshot(&self) -> DeviceSnapshot {
        let state = self.state.read();
        DeviceSnapshot {
            key: self.key.clone(),
            serial: state.serial.clone(),
            health: state.health.clone(),
            entries: state.entries.clone(),
        }
    }

    /// A secret's metadata record, read from the agent only when the entry changed since the
    /// last read; with whether the agent was asked.
    pub async fn metadata(&self, name: &str) -> Result<(SecretMetadata, bool), AgentError> {
        let version = self.state.read().entries.get(name).map(|e| e.version);
        if let Some(version) = version
            && let Some((cached, encoded)) = self.state.read().metadata.get(name)
            && *cached == version
            && let Some(metadata) = encoded.decode()
        {
            return Ok((metadata, false));
        }
        let metadata = self.agent.metadata(name).await?;
        if let Some(version) = version {
            self.state
                .write()
                .metadata
                .insert(name.to_owned(), (version, EncodedMetadata::new(&metadata)));
        }
        Ok((metadata, true))
    }

    fn set_health(&self, health: DeviceHealth, pool: &Shared) {
        let names = {
            let mut state = self.state.write();
            if state.health == health {
                return;
            }
            match &health {
                DeviceHealth::Unavailable { reason } => {
                    tracing::warn!(device = %self.key, %reason, "device unavailable")
                }
                DeviceHealth::Healthy => tracing::info!(device = %self.key, "device healthy"),
                DeviceHealth::Connecting => {}
            }
            state.health = health;
            state.entries.keys().cloned().collect()
        };
        pool.announce(&self.key, names);
    }

    /// Takes `snapshot` as the device's index, announcing what changed.
    fn take_snapshot(&self, snapshot: IndexSnapshot, pool: &Shared) {
        let changed = {
            let mut state = self.state.write();
            let changed = changed_names(&state.entries, &snapshot.entries);
            for name in &changed {
                state.metadata.remove(name);
            }
            state.serial = snapshot.serial;
            state.entries = Arc::new(snapshot.entries);
            changed
        };
        pool.announce(&self.key, changed);
    }

    /// Applies one change event; `false` when the agent asks for a new snapshot.
    fn apply(&self, event: Event, pool: &Shared) -> bool {
        let name = {
            let mut state = self.state.write();
            let entries = Arc::make_mut(&mut state.entries);
            let name = match event {
                Event::Upsert(entry) => {
                    let name = entry.name.clone();
                    let same = entries.get(&name).is_some_and(|e| same_content(e, &entry));
                    let metadata_fresh = entries
                        .get(&name)
                        .is_some_and(|e| e.version == entry.version);
                    entries.insert(name.clone(), entry);
                    if same && metadata_fresh {
                        return true;
                    }
                    name
                }
                Event::Removed(removed) => {
                    if entries.remove(&removed.name).is_none() {
                        return true;
                    }
                    removed.name
                }
                Event::Resync(_) => return false,
            };
            state.metadata.remove(&name);
            name
        };
        pool.announce(&self.key, BTreeSet::from([name]));
        true
    }
}

/// What the follower tasks share with the pool.
struct Shared {
    changes: broadcast::Sender<DeviceChange>,
    /// Moves on every snapshot and health change: for waiting until devices are followed.
    progress: watch::Sender<u64>,
}

impl Shared {
    fn announce(&self, device: &str, names: BTreeSet<String>) {
        self.progress.send_modify(|n| *n += 1);
        if names.is_empty() {
            return;
        }
        // Nobody listening is fine: controllers subscribe when they start.
        let _ = self.changes.send(DeviceChange {
            device: device.to_owned(),
            names,
        });
    }
}

/// The followed devices; dropping the last pool handle stops every follower.
#[derive(Default)]
struct Devices(RwLock<BTreeMap<String, Arc<DeviceSlot>>>);

impl Drop for Devices {
    fn drop(&mut self) {
        self.0.read().values().for_each(|d| d.stop());
    }
}

impl std::ops::Deref for Devices {
    type Target = RwLock<BTreeMap<String, Arc<DeviceSlot>>>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

/// Every device's agent, followed.
#[derive(Clone)]
pub struct AgentPool {
    devices: Arc<Devices>,
    shared: Arc<Shared>,
    health_interval: Duration,
    backoff: (Duration, Duration),
}

impl Default for AgentPool {
    fn default() -> Self {
        AgentPool::new()
    }
}

impl AgentPool {
    /// An empty pool.
    pub fn new() -> Self {
        AgentPool {
            devices: Arc::default(),
            shared: Arc::new(Shared {
                changes: broadcast::channel(4096).0,
                progress: watch::Sender::new(0),
            }),
            health_interval: HEALTH_INTERVAL,
            backoff: (MIN_BACKOFF, MAX_BACKOFF),
        }
    }

    /// Sets the bounds of the backoff between attempts to reach an agent that failed
    /// (before any device is inserted; tests that take agents down and up use short ones).
    pub fn with_reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.backoff = (min, max.max(min));
        self
    }

    /// Sets how often followers ask their agent whether its token session works (before any
    /// device is inserted).
    pub fn with_health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval;
        self
    }

    /// Follows `agent` as device `key`. An agent replacing another under the same key (new
    /// address, renewed TLS material) takes over what was known, so syncs carry on from the
    /// same index and health while the new connection is made.
    pub fn insert(&self, key: &str, agent: Arc<dyn AgentApi>) {
        let mut devices = self.devices.write();
        let old = devices.remove(key);
        let state = match &old {
            Some(old) => {
                old.stop();
                let old = old.state.read();
                DeviceState {
                    serial: old.serial.clone(),
                    health: old.health.clone(),
                    entries: old.entries.clone(),
                    metadata: old.metadata.clone(),
                }
            }
            None => DeviceState {
                serial: String::new(),
                health: DeviceHealth::Connecting,
                entries: Arc::default(),
                metadata: HashMap::new(),
            },
        };
        let slot = Arc::new(DeviceSlot {
            key: key.to_owned(),
            agent,
            state: RwLock::new(state),
            follower: parking_lot::Mutex::new(None),
        });
        let task = tokio::spawn(follow(
            Arc::downgrade(&slot),
            self.shared.clone(),
            self.health_interval,
            self.backoff,
        ));
        *slot.follower.lock() = Some(task);
        devices.insert(key.to_owned(), slot);
        drop(devices);
        if old.is_none() {
            self.shared.announce(key, BTreeSet::new());
        }
    }

    /// Stops following device `key`.
    pub fn remove(&self, key: &str) {
        if let Some(old) = self.devices.write().remove(key) {
            old.stop();
            let names = old.state.read().entries.keys().cloned().collect();
            self.shared.announce(key, names);
        }
    }

    /// The device keys followed.
    pub fn keys(&self) -> Vec<String> {
        self.devices.read().keys().cloned().collect()
    }

    /// A device.
    pub fn device(&self, key: &str) -> Option<Arc<DeviceSlot>> {
        self.devices.read().get(key).cloned()
    }

    /// Every device now, by key.
    pub fn snapshots(&self) -> Vec<DeviceSnapshot> {
        self.devices.read().values().map(|d| d.snapshot()).collect()
    }

    /// Announcements of changed names, from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<DeviceChange> {
        self.shared.changes.subscribe()
    }

    /// A signal that moves whenever a device is added, removed, takes a snapshot or changes
    /// health, including changes that concern no secret name (an empty device becoming
    /// healthy), which [`AgentPool::subscribe`] does not announce.
    pub fn progress(&self) -> watch::Receiver<u64> {
        self.shared.progress.subscribe()
    }

    /// Waits until no device is still connecting, or `timeout` passes; true when none is.
    pub async fn settled(&self, timeout: Duration) -> bool {
        let mut progress = self.shared.progress.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let connecting = self
                .snapshots()
                .iter()
                .any(|d| d.health == DeviceHealth::Connecting);
            if !connecting {
                return true;
            }
            if tokio::time::timeout_at(deadline, progress.changed())
                .await
                .is_err()
            {
                return false;
            }
        }
    }
}

/// Follows one device until its slot is dropped: snapshot, stream, and on any failure a new
/// snapshot after a backoff.
async fn follow(
    slot: std::sync::Weak<DeviceSlot>,
    shared: Arc<Shared>,
    health_interval: Duration,
    (min_backoff, max_backoff): (Duration, Duration),
) {
    let mut backoff = min_backoff;
    loop {
        let Some(device) = slot.upgrade() else { return };
        match follow_once(&device, &shared, health_interval).await {
            // A resync asked for: take a new snapshot at once.
            Ok(()) => backoff = min_backoff,
            Err(error) => {
                device.set_health(
                    DeviceHealth::Unavailable {
                        reason: error.to_string(),
                    },
                    &shared,
                );
                drop(device);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(max_backoff);
            }
        }
    }
}

/// One snapshot and the stream after it, until the agent asks for a resync (`Ok`) or fails.
async fn follow_once(
    device: &DeviceSlot,
    shared: &Shared,
    health_interval: Duration,
) -> Result<(), AgentError> {
    let snapshot = device.agent.index().await?;
    let since = snapshot.version;
    let mut stream = device.agent.changes(since).await?;
    device.take_snapshot(snapshot, shared);
    let mut health = tokio::time::interval(health_interval);
    loop {
        tokio::select! {
            event = stream.next() => {
                let event = event.ok_or(AgentError::StreamEnded)??;
                if let Some(event) = event.event
                    && !device.apply(event, shared)
                {
                    return Ok(());
                }
            }
            _ = health.tick() => {
                let health = match device.agent.healthy().await? {
                    true => DeviceHealth::Healthy,
                    false => DeviceHealth::Unavailable {
                        reason: "the agent's token is not connected".into(),
                    },
                };
                device.set_health(health, shared);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_encoded_metadata_record_decodes_to_the_same_record() {
        let record = SecretMetadata {
            description: "database password".into(),
            labels: BTreeMap::from([
                ("sync.version".to_owned(), "7".to_owned()),
                ("team".to_owned(), "payments".to_owned()),
            ]),
            format: "json".into(),
            data_type: "password".into(),
            created_at: "2026-12-06T10:00:00Z".into(),
            source: "vault".into(),
        };
        let encoded = EncodedMetadata::new(&record);
        assert_eq!(encoded.decode(), Some(record));
        assert_eq!(
            EncodedMetadata::new(&SecretMetadata::default()).decode(),
            Some(SecretMetadata::default())
        );
    }
}
