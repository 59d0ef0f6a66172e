//! The HSMDevice controller: for each HSMDevice, its discovery DaemonSet and its HSMPool
//! ([`super::discovery`] builds both), applied with server-side apply only when they differ
//! from what is there. It reconciles when an HSMDevice changes and when one of the objects it
//! owns does (a deleted or hand-edited DaemonSet is put back at once); it never polls.
//!
//! Deleting an HSMDevice deletes nothing here: both objects carry a controller owner
//! reference to it, and the garbage collector removes them (and their pods).

use super::discovery::{DiscoverySpec, discovery_daemonset, pool_object};
use crate::apply::apply_if_changed;
use futures::StreamExt;
use hsm_api::device::HSMDevice;
use hsm_api::names::{components, discovery_daemonset_name, labels, pool_name};
use hsm_api::pool::HSMPool;
use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// What a reconcile could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Applying the discovery DaemonSet failed.
    #[error("applying DaemonSet {name}: {source}")]
    DaemonSet {
        /// Its name.
        name: String,
        /// Why.
        #[source]
        source: kube::Error,
    },
    /// Applying the HSMPool failed.
    #[error("applying HSMPool {name}: {source}")]
    Pool {
        /// Its name.
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
            Error::DaemonSet { .. } | Error::Pool { .. } => "kubernetes",
            Error::CacheGone => "shutdown",
        }
    }
}

/// What the controller needs.
#[derive(Clone)]
pub struct Setup {
    /// Kubernetes client.
    pub client: Client,
    /// The discovery image.
    pub image: String,
    /// The service account of discovery pods.
    pub service_account: String,
}

struct Context {
    setup: Setup,
    daemonsets: Store<DaemonSet>,
    pools: Store<DeserializeGuard<HSMPool>>,
}

/// The discovery DaemonSets and pools, and only those, are watched and cached.
fn component(component: &str) -> watcher::Config {
    watcher::Config::default().labels(&format!("{}={component}", labels::COMPONENT))
}

async fn reconcile(
    guard: Arc<DeserializeGuard<HSMDevice>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let device = match &guard.0 {
        Ok(device) => device,
        Err(invalid) => {
            tracing::warn!(name = %invalid.metadata.name.as_deref().unwrap_or_default(), error = %invalid.error, "an HSMDevice that cannot be read: nothing is run for it until it is fixed");
            return Ok(Action::await_change());
        }
    };
    if device.meta().deletion_timestamp.is_some() {
        // Its DaemonSet and pool go with it (owner references).
        return Ok(Action::await_change());
    }
    ctx.daemonsets
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone)?;
    ctx.pools
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone)?;
    let namespace = device.namespace().unwrap_or_default();
    let name = device.name_any();
    apply_daemonset(device, &namespace, &name, &ctx).await?;
    apply_pool(device, &namespace, &name, &ctx).await?;
    Ok(Action::await_change())
}

async fn apply_daemonset(
    device: &HSMDevice,
    namespace: &str,
    name: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let ds_name = discovery_daemonset_name(name);
    let desired = discovery_daemonset(&DiscoverySpec {
        device,
        image: &ctx.setup.image,
        service_account: &ctx.setup.service_account,
    });
    let live = ctx
        .daemonsets
        .get(&ObjectRef::new(&ds_name).within(namespace));
    let api = Api::<DaemonSet>::namespaced(ctx.setup.client.clone(), namespace);
    let sent = apply_if_changed(&api, desired, live.as_deref())
        .await
        .map_err(|source| Error::DaemonSet {
            name: ds_name.clone(),
            source,
        })?;
    if sent {
        tracing::info!(%namespace, device = %name, daemonset = %ds_name, "discovery DaemonSet applied");
    }
    Ok(())
}

async fn apply_pool(
    device: &HSMDevice,
    namespace: &str,
    name: &str,
    ctx: &Context,
) -> Result<(), Error> {
    let pool = pool_name(name);
    let cached = ctx.pools.get(&ObjectRef::new(&pool).within(namespace));
    let live = cached.as_ref().and_then(|guard| guard.0.as_ref().ok());
    let desired = pool_object(device, live);
    let api = Api::<HSMPool>::namespaced(ctx.setup.client.clone(), namespace);
    let sent = apply_if_changed(&api, desired, live)
        .await
        .map_err(|source| Error::Pool {
            name: pool.clone(),
            source,
        })?;
    if sent {
        tracing::info!(%namespace, device = %name, %pool, "HSMPool applied");
    }
    Ok(())
}

fn error_policy(_: Arc<DeserializeGuard<HSMDevice>>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, category = error.category(), "HSMDevice reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

fn without_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    setup: Setup,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = setup.client.clone();
    let (ds_reader, ds_writer) = reflector::store::<DaemonSet>();
    let daemonsets = reflector::reflector(
        ds_writer,
        watcher(
            Api::<DaemonSet>::all(client.clone()),
            component(components::DISCOVERY),
        )
        .modify(without_managed_fields),
    )
    .default_backoff()
    .touched_objects();
    let (pool_reader, pool_writer) = reflector::store::<DeserializeGuard<HSMPool>>();
    let pools = reflector::reflector(
        pool_writer,
        watcher(
            Api::<DeserializeGuard<HSMPool>>::all(client.clone()),
            component(components::POOL),
        )
        .modify(without_managed_fields),
    )
    .default_backoff()
    .touched_objects();
    let ctx = Arc::new(Context {
        setup,
        daemonsets: ds_reader,
        pools: pool_reader,
    });
    Controller::new(
        Api::<DeserializeGuard<HSMDevice>>::all(client),
        watcher::Config::default(),
    )
    .owns_stream(daemonsets)
    .owns_stream(pools)
    .graceful_shutdown_on(shutdown)
    .run(reconcile, error_policy, ctx)
    .for_each(|_| async {})
    .await;
}
