//! Agent placement: one agent Deployment per physical device, on the node that holds it,
//! following the HSMPool that discovery's reports are aggregated into (§6.3 of the contract).
//!
//! The controller reconciles HSMPools. It dereferences the HSMDevice, the device's agent
//! Deployments, its discovery DaemonSet and pods, and its agent pods from watch caches;
//! [`plan`] decides (a pure function); the controller applies, deletes, records events, and
//! removes agent pods a kubelet refused ([`gate::rejected_pods`]). Any change to those
//! objects reconciles the pool at once; time-based decisions (grace period, absence timeout,
//! waiting for discovery) requeue exactly when they fall due.

pub mod gate;
pub mod plan;

use crate::secret::FIELD_MANAGER;
use crate::secret::events::EventRecorder;
use futures::StreamExt;
use hsm_api::device::HSMDevice;
use hsm_api::names::{APP_NAME, components, labels};
use hsm_api::pool::HSMPool;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use plan::{Action as Step, Observed, Settings};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tracing::Instrument;

/// With nothing due, a pool is looked at again this often anyway.
const SAFETY_NET: Duration = Duration::from_secs(300);

/// What a reconcile could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

/// What every reconcile shares.
struct Context {
    client: Client,
    settings: Settings,
    recorder: EventRecorder,
    devices: Store<DeserializeGuard<HSMDevice>>,
    agents: Store<Deployment>,
    agent_pods: Store<Pod>,
    discovery_pods: Store<Pod>,
    daemon_sets: Store<DaemonSet>,
    /// Pool → when one of its devices was last seen available.
    last_available: parking_lot::Mutex<HashMap<ObjectRef<HSMPool>, Timestamp>>,
}

/// Everything the controller needs.
pub struct Setup {
    /// Kubernetes client.
    pub client: Client,
    /// Image, TLS, service account, absence timeout.
    pub settings: Settings,
}

/// The objects in `store` of the HSMDevice `device` in `namespace`.
fn of_device<K: Resource<DynamicType = ()> + Clone>(
    store: &Store<K>,
    namespace: &str,
    device: &str,
) -> Vec<K> {
    store
        .state()
        .iter()
        .filter(|o| o.meta().namespace.as_deref() == Some(namespace))
        .filter(|o| o.labels().get(labels::DEVICE).map(String::as_str) == Some(device))
        .map(|o| (**o).clone())
        .collect()
}

/// The HSMDevice a pool belongs to: its controller owner, else its device label.
fn device_of(pool: &HSMPool) -> Option<String> {
    pool.owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "HSMDevice")
        .map(|o| o.name.clone())
        .or_else(|| pool.labels().get(labels::DEVICE).cloned())
}

async fn reconcile(pool: Arc<HSMPool>, ctx: Arc<Context>) -> Result<Action, Error> {
    let namespace = pool.namespace().unwrap_or_default();
    let Some(device_name) = device_of(&pool) else {
        return Ok(Action::await_change());
    };
    let span = tracing::info_span!("place_agents", %namespace, device = %device_name);
    async {
        let device_ref = ObjectRef::new(&device_name).within(&namespace);
        let Some(device) = ctx.devices.get(&device_ref) else {
            // Deleted: its agents, DaemonSet and pool are garbage-collected with it.
            return Ok(Action::await_change());
        };
        let Ok(device) = &device.0 else {
            // Malformed: the HSMDevice controller reports it on the object.
            return Ok(Action::await_change());
        };
        let agents = of_device(&ctx.agents, &namespace, &device_name);
        let daemon_set = ctx.daemon_sets.get(
            &ObjectRef::new(&hsm_api::names::discovery_daemonset_name(&device_name))
                .within(&namespace),
        );
        let discovery_pods = of_device(&ctx.discovery_pods, &namespace, &device_name);
        let gate = gate::discovery_gate(daemon_set.as_deref(), &discovery_pods);
        let now = Timestamp::now();
        let last_available = remember_available(&ctx, &pool);
        let plan = plan::plan(
            &Observed {
                device,
                pool: &pool,
                agents: &agents,
                gate: &gate,
                last_available,
                now,
            },
            &ctx.settings,
        );
        for step in &plan.actions {
            carry_out(step, &namespace, &pool, &ctx).await?;
        }
        let refused = gate::rejected_pods(&of_device(&ctx.agent_pods, &namespace, &device_name));
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &namespace);
        for name in refused {
            tracing::info!(pod = %name, "deleting an agent pod the kubelet refused");
            delete_quietly(&pods, &name).await?;
        }
        Ok(Action::requeue(
            plan.recheck_in.unwrap_or(SAFETY_NET).min(SAFETY_NET),
        ))
    }
    .instrument(span)
    .await
}

/// Updates and returns when one of the pool's devices was last seen available.
fn remember_available(ctx: &Context, pool: &HSMPool) -> Option<Timestamp> {
    let key = ObjectRef::from_obj(pool);
    let newest = pool
        .status
        .iter()
        .flat_map(|s| &s.aggregated_devices)
        .filter(|d| d.available)
        .map(|d| d.last_seen.0)
        .max();
    let mut memory = ctx.last_available.lock();
    if let Some(newest) = newest {
        let entry = memory.entry(key.clone()).or_insert(newest);
        *entry = (*entry).max(newest);
    }
    memory.get(&key).copied()
}

async fn carry_out(
    step: &Step,
    namespace: &str,
    pool: &HSMPool,
    ctx: &Context,
) -> Result<(), Error> {
    let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), namespace);
    match step {
        Step::Apply(deployment) => {
            let name = deployment.name_any();
            tracing::info!(agent = %name, "applying agent Deployment");
            deployments
                .patch(
                    &name,
                    &PatchParams::apply(FIELD_MANAGER).force(),
                    &Patch::Apply(deployment.as_ref()),
                )
                .await?;
            publish(ctx, pool, "AgentApplied", format!("agent {name} applied")).await;
        }
        Step::Delete { name, why } => {
            tracing::info!(agent = %name, reason = why.describe(), "deleting agent Deployment");
            delete_quietly(&deployments, name).await?;
            publish(
                ctx,
                pool,
                "AgentRemoved",
                format!("agent {name} removed: {}", why.describe()),
            )
            .await;
        }
        Step::AwaitDiscovery { name, node } => {
            tracing::info!(agent = %name, %node, "waiting for the node's discovery pod to run the current generation");
        }
    }
    Ok(())
}

async fn delete_quietly<K>(api: &Api<K>, name: &str) -> Result<(), Error>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

async fn publish(ctx: &Context, pool: &HSMPool, reason: &str, note: String) {
    let event = Event {
        type_: EventType::Normal,
        reason: reason.into(),
        note: Some(note),
        action: "PlaceAgents".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &pool.object_ref(&())).await {
        tracing::warn!(%error, "cannot record an event");
    }
}

fn error_policy(_: Arc<HSMPool>, error: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(%error, "placing agents failed");
    Action::requeue(Duration::from_secs(5))
}

/// The pool of the HSMDevice named by `object`'s device label.
fn pool_of<K: Resource>(object: &K) -> Option<ObjectRef<HSMPool>> {
    let device = object.meta().labels.as_ref()?.get(labels::DEVICE)?;
    let namespace = object.meta().namespace.as_deref()?;
    Some(ObjectRef::new(&hsm_api::names::pool_name(device)).within(namespace))
}

fn labelled(component: &str) -> watcher::Config {
    watcher::Config::default().labels(&format!("{}={component}", labels::COMPONENT))
}

/// A watched, cached kind whose changes reconcile the pool of the device they belong to.
fn cached<K>(
    client: &Client,
    config: watcher::Config,
) -> (
    Store<K>,
    impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), config)
            .modify(|o: &mut K| o.meta_mut().managed_fields = None),
    )
    .default_backoff()
    .touched_objects();
    (reader, stream)
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    setup: Setup,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let Setup { client, settings } = setup;
    let (devices, device_stream) =
        cached::<DeserializeGuard<HSMDevice>>(&client, watcher::Config::default());
    let (agents, agent_stream) = cached::<Deployment>(&client, labelled(components::HSM_AGENT));
    let (agent_pods, agent_pod_stream) = cached::<Pod>(&client, labelled(components::HSM_AGENT));
    let (discovery_pods, discovery_pod_stream) =
        cached::<Pod>(&client, labelled(components::DISCOVERY));
    let (daemon_sets, daemon_set_stream) =
        cached::<DaemonSet>(&client, labelled(components::DISCOVERY));
    let ctx = Arc::new(Context {
        recorder: EventRecorder::new(client.clone(), APP_NAME),
        client: client.clone(),
        settings,
        devices,
        agents,
        agent_pods,
        discovery_pods,
        daemon_sets,
        last_available: Default::default(),
    });
    let device_pool = |device: DeserializeGuard<HSMDevice>| {
        let namespace = device.meta().namespace.clone()?;
        Some(ObjectRef::new(&hsm_api::names::pool_name(&device.name_any())).within(&namespace))
    };
    Controller::new(Api::<HSMPool>::all(client), watcher::Config::default())
        .watches_stream(device_stream, device_pool)
        .watches_stream(agent_stream, |d: Deployment| pool_of(&d))
        .watches_stream(agent_pod_stream, |p: Pod| pool_of(&p))
        .watches_stream(discovery_pod_stream, |p: Pod| pool_of(&p))
        .watches_stream(daemon_set_stream, |d: DaemonSet| pool_of(&d))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}
