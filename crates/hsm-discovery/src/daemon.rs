//! The discovery loop: feeds the [`Discovery`] core from sysfs scans (at start and every
//! sync interval, the safety net), uevents (at once), HSMDevice changes and grace-period
//! expiry, then publishes what changed: the pod's report annotations and the device plugins'
//! lists.

use crate::allowlist::Allowlist;
use crate::core::{Discovery, PluginDevice};
use crate::kube::{KubeError, PodAnnotations, PodIdentity, node_labels, watch_devices};
use crate::plugin::{PluginConfig, socket_name};
use crate::sysfs::SysfsSource;
use crate::uevent::{RecvError, UeventSource};
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How the daemon runs.
#[derive(Clone, Debug)]
pub struct DaemonConfig {
    /// The pod.
    pub identity: PodIdentity,
    /// Full re-scan interval (the Go `--sync-interval`).
    pub sync_interval: Duration,
    /// How long lost devices stay in reports.
    pub grace_period: Duration,
    /// How often an unchanged report is written again, with a new `lastReportTime`, so the
    /// manager can tell a live discovery pod from a dead one (keep it well inside the pools'
    /// grace period, 5 minutes by default).
    pub report_refresh: Duration,
    /// The device plugins, or none.
    pub plugins: Option<PluginConfig>,
}

/// Why the daemon stopped.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The pod could not be read at start.
    #[error("cannot start")]
    Start(#[source] KubeError),
}

/// Runs discovery until `shutdown` completes.
pub async fn run<S: SysfsSource, U: UeventSource>(
    client: kube::Client,
    config: DaemonConfig,
    allowlist: Allowlist,
    sysfs: S,
    mut uevents: Option<U>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    let identity = &config.identity;
    let mut core = Discovery::new(&identity.node_name, allowlist);
    core.grace_period = config.grace_period;
    let mut devices = watch_devices(client.clone(), &identity.namespace);
    let mut annotations = PodAnnotations::load(client.clone(), identity, config.report_refresh)
        .await
        .map_err(DaemonError::Start)?;
    let mut plugins = PluginSet::new(config.plugins.clone());
    let mut tick = tokio::time::interval(config.sync_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut dirty = true;
    tokio::pin!(shutdown);
    loop {
        let expiry = until(core.inventory.next_expiry(config.grace_period));
        tokio::select! {
            () = &mut shutdown => break,
            changed = devices.changed() => {
                if changed.is_err() {
                    break;
                }
                core.set_devices(devices.borrow_and_update().clone().unwrap_or_default());
                dirty = true;
            }
            payload = recv(&mut uevents) => dirty |= on_uevent(&mut core, payload, &sysfs),
            _ = tick.tick() => {
                if let Some(labels) = node_labels(&client, &identity.node_name).await {
                    labels_into(&mut core, labels);
                }
                rescan(&mut core, &sysfs);
                // Publish even when the scan changed nothing: retries a failed write.
                dirty = true;
            }
            () = tokio::time::sleep(expiry.unwrap_or(Duration::MAX)), if expiry.is_some() => {
                dirty |= core.inventory.expire(Timestamp::now(), config.grace_period);
            }
        }
        if dirty && devices.borrow().is_some() {
            dirty = !publish(&core, &mut annotations, &mut plugins).await;
        }
    }
    Ok(())
}

fn labels_into(core: &mut Discovery, mut labels: BTreeMap<String, String>) {
    labels
        .entry(hsm_api::names::labels::HOSTNAME.to_owned())
        .or_insert_with(|| core.node_name.clone());
    core.node_labels = labels;
}

fn rescan(core: &mut Discovery, sysfs: &dyn SysfsSource) -> bool {
    match core.rescan(Timestamp::now(), sysfs) {
        Ok(changed) => changed,
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "cannot scan sysfs");
            false
        }
    }
}

fn on_uevent(
    core: &mut Discovery,
    payload: Result<Vec<u8>, RecvError>,
    sysfs: &dyn SysfsSource,
) -> bool {
    match payload {
        Ok(payload) => match crate::uevent::parse(&payload) {
            Ok(Some(event)) => {
                tracing::debug!(?event, "hotplug");
                core.apply(Timestamp::now(), event, sysfs)
            }
            Ok(None) => false,
            Err(error) => {
                tracing::debug!(error = %crate::error_chain(&error), "ignoring a uevent");
                false
            }
        },
        Err(RecvError::Overflow) => {
            tracing::warn!("uevents were lost; scanning sysfs again");
            rescan(core, sysfs)
        }
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "uevents unavailable; relying on the periodic scan");
            false
        }
    }
}

/// The next payload, or never when there is no source.
async fn recv<U: UeventSource>(source: &mut Option<U>) -> Result<Vec<u8>, RecvError> {
    match source {
        Some(source) => {
            let result = source.recv().await;
            if matches!(result, Err(RecvError::Io(_))) {
                // A broken socket must not spin the loop.
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            result
        }
        None => std::future::pending().await,
    }
}

/// The time from now until `at`.
fn until(at: Option<Timestamp>) -> Option<Duration> {
    let left = at?.duration_since(Timestamp::now());
    Some(Duration::try_from(left).unwrap_or(Duration::ZERO) + Duration::from_millis(1))
}

/// Publishes reports and plugin lists; returns whether the reports were written.
async fn publish(
    core: &Discovery,
    annotations: &mut PodAnnotations,
    plugins: &mut PluginSet,
) -> bool {
    plugins.update(core.plugin_devices());
    match annotations.publish(&core.reports(Timestamp::now())).await {
        Ok(written) => {
            if written {
                tracing::info!(devices = core.inventory.len(), "reports written");
            }
            true
        }
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), "cannot write the reports; retrying");
            false
        }
    }
}

/// The running device plugins, one per resource.
struct PluginSet {
    config: Option<PluginConfig>,
    running: BTreeMap<String, (watch::Sender<Vec<PluginDevice>>, JoinHandle<()>)>,
}

impl PluginSet {
    fn new(config: Option<PluginConfig>) -> Self {
        PluginSet {
            config,
            running: BTreeMap::new(),
        }
    }

    fn update(&mut self, mut wanted: BTreeMap<String, Vec<PluginDevice>>) {
        let Some(config) = self.config.clone() else {
            return;
        };
        let gone: Vec<String> = self
            .running
            .keys()
            .filter(|r| !wanted.contains_key(*r))
            .cloned()
            .collect();
        for resource in gone {
            self.stop(&resource);
        }
        for (resource, devices) in std::mem::take(&mut wanted) {
            match self.running.get(&resource) {
                Some((tx, _)) => {
                    tx.send_if_modified(|current| {
                        let changed = *current != devices;
                        *current = devices;
                        changed
                    });
                }
                None => {
                    let (tx, rx) = watch::channel(devices);
                    let task =
                        tokio::spawn(crate::plugin::run(resource.clone(), rx, config.clone()));
                    self.running.insert(resource, (tx, task));
                }
            }
        }
    }

    fn stop(&mut self, resource: &str) {
        if let Some((_, task)) = self.running.remove(resource) {
            task.abort();
        }
        if let Some(config) = &self.config {
            let _ = std::fs::remove_file(config.dir.join(socket_name(resource)));
        }
    }
}

impl Drop for PluginSet {
    fn drop(&mut self) {
        let resources: Vec<String> = self.running.keys().cloned().collect();
        for resource in resources {
            self.stop(&resource);
        }
    }
}
