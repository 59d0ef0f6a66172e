//! The HSMPool controller: aggregates the discovery pods' reports into each pool's status
//! ([`aggregate`], pure) and writes it with server-side apply. The agent side reads that
//! status (`aggregatedDevices` with serial, node, path, availability and `lastSeen`; `phase`).
//!
//! It is event-driven: a discovery pod whose reports, phase or node change, or that goes
//! away, and a DaemonSet whose desired pod count changes, reconcile their device's pool at
//! once ([`triggers`]). The Go manager's requeue times (30 s, 60 s when Ready) are the safety
//! net, and what turns a report stale when nothing else happens. A malformed report is a
//! condition on the pool, never a reconcile error.

pub mod aggregate;
pub mod triggers;

use crate::secret::FIELD_MANAGER;
use aggregate::{Observed, Outcome};
use futures::StreamExt;
use hsm_api::device::HSMDevice;
use hsm_api::names::{components, discovery_daemonset_name, labels};
use hsm_api::pool::{HSMPool, HSMPoolPhase};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, predicates, watcher};
use kube::{Client, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;
use triggers::Changes;

/// When a pool is aggregated again without an event.
#[derive(Debug, Clone, Copy)]
pub struct Timers {
    /// After an aggregation that is not Ready (the Go 30 s).
    pub requeue: Duration,
    /// After a Ready one (the Go 60 s).
    pub requeue_ready: Duration,
    /// After a failed reconcile.
    pub retry: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            requeue: Duration::from_secs(30),
            requeue_ready: Duration::from_secs(60),
            retry: Duration::from_secs(5),
        }
    }
}

/// What a reconcile could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading the owner HSMDevice failed.
    #[error("reading HSMDevice {name}: {source}")]
    Device {
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Writing the pool's status failed.
    #[error("writing the status of HSMPool {name}: {source}")]
    Status {
        /// The pool.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// A watch cache ended (the controller is stopping).
    #[error("the watch caches stopped")]
    CacheGone,
}

impl Error {
    /// The metrics category.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Device { .. } | Error::Status { .. } => "kubernetes",
            Error::CacheGone => "shutdown",
        }
    }
}

/// What the controller needs.
#[derive(Clone)]
pub struct Setup {
    /// Kubernetes client.
    pub client: Client,
    /// Requeue times.
    pub timers: Timers,
}

struct Context {
    client: Client,
    timers: Timers,
    pods: Store<Pod>,
    daemonsets: Store<DaemonSet>,
}

/// The HSMDevice a pool belongs to: its controller owner of kind HSMDevice (the Go manager
/// took the first owner reference, whatever it was).
pub fn owner_device(pool: &HSMPool) -> Option<String> {
    let kind = HSMDevice::kind(&());
    let owners = pool.owner_references();
    owners
        .iter()
        .find(|o| o.kind == kind && o.controller == Some(true))
        .or_else(|| owners.iter().find(|o| o.kind == kind))
        .map(|o| o.name.clone())
}

async fn reconcile(
    guard: Arc<DeserializeGuard<HSMPool>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let pool = match &guard.0 {
        Ok(pool) => pool,
        Err(invalid) => {
            tracing::warn!(name = %invalid.metadata.name.as_deref().unwrap_or_default(), error = %invalid.error, "an HSMPool that cannot be read");
            return Ok(Action::await_change());
        }
    };
    if pool.meta().deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    ctx.pods
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone)?;
    ctx.daemonsets
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone)?;
    let outcome = observe(pool, &ctx).await?;
    let status = aggregate::status(
        pool.status.as_ref(),
        &outcome,
        pool.metadata.generation,
        Timestamp::now(),
    );
    write_status(pool, &status, &ctx).await?;
    if let Outcome::Aggregated(a) = &outcome
        && !a.bad_reports.is_empty()
    {
        tracing::warn!(pool = %pool.name_any(), bad = ?a.bad_reports, "discovery reports that cannot be read");
    }
    Ok(Action::requeue(match status.phase {
        Some(HSMPoolPhase::Ready) => ctx.timers.requeue_ready,
        _ => ctx.timers.requeue,
    }))
}

/// Dereferences what the pool's status is made of: the owner HSMDevice (does it exist?), its
/// discovery DaemonSet and pods (from the caches), and aggregates them.
async fn observe(pool: &HSMPool, ctx: &Context) -> Result<Outcome, Error> {
    let namespace = pool.namespace().unwrap_or_default();
    let Some(device) = owner_device(pool) else {
        return Ok(Outcome::Failed {
            message: "HSMPool has no owner HSMDevice".into(),
        });
    };
    let exists = Api::<DeserializeGuard<HSMDevice>>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&device)
        .await
        .map_err(|source| Error::Device {
            name: device.clone(),
            source,
        })?
        .is_some();
    if !exists {
        return Ok(Outcome::Failed {
            message: format!("HSMDevice {device} not found"),
        });
    }
    let daemonset = ctx
        .daemonsets
        .get(&ObjectRef::new(&discovery_daemonset_name(&device)).within(&namespace));
    let selector = crate::device::discovery::discovery_labels(&device);
    let pods: Vec<Pod> = ctx
        .pods
        .state()
        .iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(namespace.as_str())
                && selector
                    .iter()
                    .all(|(k, v)| p.labels().get(k).is_some_and(|have| have == v))
        })
        .map(|p| (**p).clone())
        .collect();
    Ok(Outcome::Aggregated(aggregate::aggregate(&Observed {
        device: &device,
        grace_period: pool.spec.grace_period.as_deref(),
        daemonset: daemonset.as_ref().and_then(|ds| ds.status.as_ref()),
        pods: &pods,
        now: Timestamp::now(),
    })))
}

async fn write_status(
    pool: &HSMPool,
    status: &hsm_api::pool::HSMPoolStatus,
    ctx: &Context,
) -> Result<(), Error> {
    let name = pool.name_any();
    let api = Api::<HSMPool>::namespaced(ctx.client.clone(), &pool.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": HSMPool::api_version(&()),
        "kind": HSMPool::kind(&()),
        "status": status,
    });
    api.patch_status(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::Status { name, source })?;
    Ok(())
}

fn error_policy(_: Arc<DeserializeGuard<HSMPool>>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, category = error.category(), "HSMPool reconcile failed");
    Action::requeue(ctx.timers.retry)
}

fn without_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

fn discovery_objects() -> watcher::Config {
    watcher::Config::default().labels(&format!("{}={}", labels::COMPONENT, components::DISCOVERY))
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    setup: Setup,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let Setup { client, timers } = setup;
    let (pod_reader, pod_writer) = reflector::store::<Pod>();
    let mut pod_changes = Changes::new(triggers::pod_fingerprint);
    let pods = reflector::reflector(
        pod_writer,
        watcher(Api::<Pod>::all(client.clone()), discovery_objects())
            .modify(without_managed_fields),
    )
    .default_backoff()
    .filter_map(move |event| {
        futures::future::ready(match event {
            Ok(event) => pod_changes.observe(event).map(Ok),
            Err(error) => Some(Err(error)),
        })
    });
    let (ds_reader, ds_writer) = reflector::store::<DaemonSet>();
    let mut ds_changes = Changes::new(triggers::daemonset_fingerprint);
    let daemonsets = reflector::reflector(
        ds_writer,
        watcher(Api::<DaemonSet>::all(client.clone()), discovery_objects())
            .modify(without_managed_fields),
    )
    .default_backoff()
    .filter_map(move |event| {
        futures::future::ready(match event {
            Ok(event) => ds_changes.observe(event).map(Ok),
            Err(error) => Some(Err(error)),
        })
    });
    let (pool_reader, pool_writer) = reflector::store::<DeserializeGuard<HSMPool>>();
    // Its own status writes change no generation: they do not come back as triggers.
    let pools = reflector::reflector(
        pool_writer,
        watcher(
            Api::<DeserializeGuard<HSMPool>>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(without_managed_fields),
    )
    .default_backoff()
    .touched_objects()
    .predicate_filter(predicates::generation, Default::default());
    let ctx = Arc::new(Context {
        client,
        timers,
        pods: pod_reader,
        daemonsets: ds_reader,
    });
    Controller::for_stream(pools, pool_reader)
        .watches_stream(pods, |pod| triggers::pool_of(&pod))
        .watches_stream(daemonsets, |ds| triggers::pool_of(&ds))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
