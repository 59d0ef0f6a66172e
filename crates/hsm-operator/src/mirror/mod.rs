//! Mirroring: keeps every healthy device holding the copy of each secret the resolver picks,
//! so a write that reached only some devices (one was unplugged, an agent restarted) ends up
//! on all of them, and a delete reaches the devices that missed it.
//!
//! - [`plan`] decides from the devices' indexes alone (pure, table-tested): tombstones vote
//!   and propagate, user metadata travels with the value, unhealthy devices are left out.
//! - [`execute`] reads the winning copy from the device that holds it (checking it against
//!   the index) and writes it to each target that still holds what the plan saw.
//! - [`Mirror`] is the handle: one pass at a time, [`Mirror::sync_now`] for the REST API;
//!   [`run`] drives passes on the leader from the agents' change feed (debounced), from
//!   devices becoming healthy at any time, and from a periodic safety net. A pass where the
//!   devices agree costs no agent call at all.

mod control;
pub mod execute;
pub mod plan;
mod summary;

use crate::agents::{AgentPool, DeviceHealth};
use crate::telemetry::{CategoryLabels, Metrics, MirrorActionLabels, MirrorRunLabels};
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub use control::api_summary;
pub use summary::{ActionReport, ActionResult, Summary, Trigger};

/// When passes run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// How long announcements are gathered into one pass (`--mirror-debounce-window`).
    pub debounce: Duration,
    /// The safety net's interval (`--mirror-periodic-interval`).
    pub periodic: Duration,
}

impl Default for Config {
    /// The Go manager's defaults: debounce 5 s, periodic 5 min.
    fn default() -> Self {
        Config {
            debounce: Duration::from_secs(5),
            periodic: Duration::from_secs(300),
        }
    }
}

impl From<&crate::cli::Cli> for Config {
    fn from(cli: &crate::cli::Cli) -> Self {
        Config {
            debounce: cli.mirror_debounce_window,
            periodic: cli.mirror_periodic_interval,
        }
    }
}

/// Why a pass could not run at all (per-device failures are in the [`Summary`] instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No followed device is healthy: there is nothing to mirror from or to.
    #[error("no healthy device to mirror between ({devices} followed)")]
    NoHealthyDevice {
        /// How many devices the pool follows.
        devices: usize,
    },
}

/// The mirror: cheap to clone; every clone runs passes one at a time.
#[derive(Clone)]
pub struct Mirror {
    inner: Arc<Inner>,
}

struct Inner {
    pool: AgentPool,
    metrics: Arc<Metrics>,
    config: Config,
    /// Held for the length of a pass.
    pass: tokio::sync::Mutex<()>,
    last: parking_lot::Mutex<Option<LastPass>>,
}

struct LastPass {
    finished: Instant,
    /// The pool's progress when the pass planned: while it has not moved, no device
    /// changed and the pass is still current.
    progress: u64,
    summary: Summary,
}

impl Mirror {
    /// A mirror over `pool`'s devices.
    pub fn new(pool: AgentPool, metrics: Arc<Metrics>, config: Config) -> Self {
        Mirror {
            inner: Arc::new(Inner {
                pool,
                metrics,
                config,
                pass: tokio::sync::Mutex::new(()),
                last: parking_lot::Mutex::new(None),
            }),
        }
    }

    /// Its configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// A pass now, for `POST /api/v1/hsm/mirror/sync` (on any replica: the pool is followed
    /// by all of them). Without `force`, a pass that finished within the debounce window with
    /// no device change since is answered instead of running another (the Go manager
    /// rate-limited unforced requests too); with `force` a pass always runs.
    pub async fn sync_now(&self, force: bool) -> Result<Summary, Error> {
        if !force && let Some(summary) = self.recent() {
            return Ok(summary);
        }
        let trigger = match force {
            true => Trigger::ManualForce,
            false => Trigger::Manual,
        };
        self.pass(trigger).await
    }

    /// The last pass's summary, if it is still current.
    fn recent(&self) -> Option<Summary> {
        let last = self.inner.last.lock();
        let last = last.as_ref()?;
        let current = last.progress == self.progress()
            && last.finished.elapsed() < self.inner.config.debounce;
        current.then(|| last.summary.clone())
    }

    /// The summary of the last pass run.
    pub fn last_summary(&self) -> Option<Summary> {
        self.inner.last.lock().as_ref().map(|l| l.summary.clone())
    }

    /// One pass: plan over the devices now, carry it out, count and report.
    pub async fn pass(&self, trigger: Trigger) -> Result<Summary, Error> {
        let _one_at_a_time = self.inner.pass.lock().await;
        let progress = self.progress();
        let started = Instant::now();
        let started_at = chrono::Utc::now();
        let devices = self.inner.pool.snapshots();
        let plan = plan::plan(&devices);
        if plan.healthy.is_empty() {
            self.count_run(trigger, "no_devices", started);
            return Err(Error::NoHealthyDevice {
                devices: devices.len(),
            });
        }
        let outcomes = execute::execute(&self.inner.pool, &plan, &self.inner.metrics).await;
        let summary = Summary::new(trigger, started_at, started.elapsed(), &plan, &outcomes);
        self.count_actions(&summary);
        let result = if summary.failed > 0 { "partial" } else { "ok" };
        self.count_run(trigger, result, started);
        summary.log();
        *self.inner.last.lock() = Some(LastPass {
            finished: Instant::now(),
            progress,
            summary: summary.clone(),
        });
        Ok(summary)
    }

    fn count_run(&self, trigger: Trigger, result: &str, started: Instant) {
        let metrics = &self.inner.metrics;
        metrics
            .mirror_runs
            .get_or_create(&MirrorRunLabels {
                trigger: trigger.as_str().into(),
                result: result.into(),
            })
            .inc();
        metrics
            .mirror_run_seconds
            .observe(started.elapsed().as_secs_f64());
    }

    fn count_actions(&self, summary: &Summary) {
        let metrics = &self.inner.metrics;
        for action in &summary.actions {
            metrics
                .mirror_actions
                .get_or_create(&MirrorActionLabels {
                    action: action.action.as_str().into(),
                    result: action.result.as_str().into(),
                })
                .inc();
            if let Some(category) = &action.category {
                metrics
                    .mirror_failures
                    .get_or_create(&CategoryLabels {
                        category: category.clone(),
                    })
                    .inc();
            }
        }
    }

    fn progress(&self) -> u64 {
        *self.inner.pool.progress().borrow()
    }
}

/// The keys of the devices healthy now.
fn healthy_devices(pool: &AgentPool) -> BTreeSet<String> {
    pool.snapshots()
        .into_iter()
        .filter(|d| d.health == DeviceHealth::Healthy)
        .map(|d| d.key)
        .collect()
}

/// Runs passes until `shutdown` resolves (run it on the leader only: two replicas mirroring
/// at once would do the same writes twice). A pass runs at start, `debounce` after the first
/// of a burst of announced changes, as soon as (after `debounce`) a device becomes healthy —
/// at any time, not only in the first minutes — and every `periodic`.
pub async fn run(mirror: Mirror, shutdown: impl Future<Output = ()> + Send) {
    let pool = mirror.inner.pool.clone();
    let config = mirror.inner.config.clone();
    let mut changes = pool.subscribe();
    let mut progress = pool.progress();
    let mut healthy = healthy_devices(&pool);
    let mut periodic = tokio::time::interval(config.periodic);
    periodic.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut due: Option<(Instant, Trigger)> = None;
    tokio::pin!(shutdown);
    tracing::info!(debounce = ?config.debounce, periodic = ?config.periodic, "mirroring started");
    loop {
        let schedule = |due: &mut Option<(Instant, Trigger)>, trigger| {
            due.get_or_insert((Instant::now() + config.debounce, trigger));
        };
        let next = due.map(|(at, _)| at);
        let wait_due = async move {
            match next {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let trigger = tokio::select! {
            _ = &mut shutdown => break,
            change = changes.recv() => {
                match change {
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                        schedule(&mut due, Trigger::DeviceChange);
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
                continue;
            }
            changed = progress.changed() => {
                if changed.is_err() {
                    break;
                }
                let now = healthy_devices(&pool);
                if now.difference(&healthy).next().is_some() {
                    schedule(&mut due, Trigger::DeviceReady);
                }
                healthy = now;
                continue;
            }
            _ = wait_due => due.take().map_or(Trigger::DeviceChange, |(_, t)| t),
            _ = periodic.tick() => Trigger::Periodic,
        };
        // The pass plans from the devices as they are now, announcements so far included.
        due = None;
        tokio::select! {
            _ = &mut shutdown => break,
            result = mirror.pass(trigger) => if let Err(error) = result {
                tracing::debug!(%error, trigger = trigger.as_str(), "mirror pass skipped");
            },
        }
    }
    tracing::info!("mirroring stopped");
}
