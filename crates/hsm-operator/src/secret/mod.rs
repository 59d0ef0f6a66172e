//! The HSMSecret controller: keeps each HSMSecret's Kubernetes Secret equal to what the
//! devices hold, as a pipeline — [`validate`] the object, dereference what it needs (the
//! agents' index entries from the pool, the winner's metadata and, only when the content
//! changed, its values; the existing Secret from a watch cache), [`build`] the desired Secret
//! and status as pure functions, apply with server-side apply, then write the status.
//!
//! It is event-driven: an agent announcing a changed name reconciles exactly the HSMSecrets
//! of that name ([`index`]), a hand-edited or deleted Secret is restored at once (the owned
//! Secrets are watched), and `syncInterval` is only the safety net — with no change it reads
//! no secret value at all.

pub mod build;
pub mod cache;
pub mod events;
pub mod index;
mod rollout;
mod sync;
pub mod validate;

use crate::agents::AgentPool;
use crate::telemetry::{CategoryLabels, Metrics, ResultLabels};
use build::Identity;
use cache::CachedSecret;
use futures::{StreamExt, TryStreamExt};
use hsm_api::names::{APP_NAME, HSMSECRET_FINALIZER, labels};
use hsm_api::secret::HSMSecret;
use index::NameIndex;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::{self, Action, Controller};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// The one field manager of every write the manager makes.
pub const FIELD_MANAGER: &str = APP_NAME;

/// What a reconcile could not do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API failed.
    #[error("Kubernetes API: {0}")]
    Kube(#[source] kube::Error),
    /// Adding or removing the finalizer failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// An agent failed.
    #[error("agent: {0}")]
    Agent(#[source] crate::agents::AgentError),
    /// What was read from a device is newer than its index entry: the change is being
    /// announced, and the sync waits for it rather than mixing versions.
    #[error("the device changed while it was read")]
    Stale,
}

impl Error {
    /// The metrics category.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes",
            Error::Finalizer(_) => "finalizer",
            Error::Agent(e) => e.category(),
            Error::Stale => "stale",
        }
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The devices' agents.
    pub pool: AgentPool,
    /// Which HSMSecrets are this manager's.
    pub identity: Identity,
    /// Events on HSMSecrets.
    pub recorder: events::EventRecorder,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// HSM name → HSMSecrets.
    pub index: Arc<NameIndex>,
    /// The Secrets this operator manages, from a watch, without their values.
    pub secrets: Store<CachedSecret>,
    /// When a name was announced changed, for the sync-latency metric.
    pub announced: parking_lot::Mutex<HashMap<String, Instant>>,
    /// Malformed HSMSecrets already reported: uid → generation.
    pub malformed: parking_lot::Mutex<HashMap<String, Option<i64>>>,
}

impl Context {
    fn hsm_secrets(&self, namespace: &str) -> Api<HSMSecret> {
        Api::namespaced(self.client.clone(), namespace)
    }
}

async fn reconcile(
    guard: Arc<DeserializeGuard<HSMSecret>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let started = Instant::now();
    let result = match &guard.0 {
        Err(invalid) => sync::report_malformed(invalid, &ctx).await,
        Ok(hsm_secret) => reconcile_valid(Arc::new(hsm_secret.clone()), &ctx).await,
    };
    ctx.metrics
        .reconcile_seconds
        .observe(started.elapsed().as_secs_f64());
    let label = if result.is_ok() { "ok" } else { "error" };
    ctx.metrics
        .reconciles
        .get_or_create(&ResultLabels {
            result: label.into(),
        })
        .inc();
    result
}

async fn reconcile_valid(hsm_secret: Arc<HSMSecret>, ctx: &Arc<Context>) -> Result<Action, Error> {
    let namespace = hsm_secret.namespace().unwrap_or_default();
    let api = ctx.hsm_secrets(&namespace);
    if !build::is_ours(&hsm_secret.spec, &ctx.identity) {
        // Handed to another operator: let go of it (its Secret stays owned by it).
        if hsm_secret
            .finalizers()
            .iter()
            .any(|f| f == HSMSECRET_FINALIZER)
        {
            release_finalizer(&api, &hsm_secret).await?;
        }
        return Ok(Action::await_change());
    }
    let span = tracing::info_span!("reconcile", namespace = %namespace, hsmsecret = %hsm_secret.name_any());
    kube::runtime::finalizer(&api, HSMSECRET_FINALIZER, hsm_secret, |event| async {
        match event {
            kube::runtime::finalizer::Event::Apply(object) => sync::sync(&object, ctx).await,
            kube::runtime::finalizer::Event::Cleanup(object) => sync::cleanup(&object, ctx).await,
        }
    })
    .instrument(span)
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)))
}

async fn release_finalizer(api: &Api<HSMSecret>, hsm_secret: &HSMSecret) -> Result<(), Error> {
    let finalizers: Vec<String> = hsm_secret
        .finalizers()
        .iter()
        .filter(|f| *f != HSMSECRET_FINALIZER)
        .cloned()
        .collect();
    let patch = serde_json::json!({"metadata": {"finalizers": finalizers, "resourceVersion": hsm_secret.resource_version()}});
    api.patch(
        &hsm_secret.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await
    .map_err(Error::Kube)?;
    Ok(())
}

fn error_policy(_: Arc<DeserializeGuard<HSMSecret>>, error: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed");
    ctx.metrics
        .errors
        .get_or_create(&CategoryLabels {
            category: error.category().into(),
        })
        .inc();
    Action::requeue(Duration::from_secs(5))
}

/// The Kubernetes Secrets this operator writes carry `managed-by=hsm-secrets-operator`; only
/// those are watched and cached.
pub fn managed_secrets() -> watcher::Config {
    watcher::Config::default().labels(&format!("{}={}", labels::MANAGED_BY, APP_NAME))
}

/// How many HSMSecrets are reconciled at once. Unbounded (kube's default), a first sync or a
/// safety-net round of 10 000 HSMSecrets starts 10 000 reconciles together, each holding its
/// objects, its futures and its own HTTP/1.1 connection to the API server: the memory of
/// that burst, not the caches, was most of the manager's RSS. Reconciles wait on the API
/// server and the agents, so a few dozen keep both busy.
pub const RECONCILE_CONCURRENCY: u16 = 32;

/// Everything the controller needs besides the shared parts.
pub struct Setup {
    /// Kubernetes client.
    pub client: Client,
    /// The agents.
    pub pool: AgentPool,
    /// Who this manager is.
    pub identity: Identity,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    setup: Setup,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let Setup {
        client,
        pool,
        identity,
        metrics,
    } = setup;
    let index = Arc::new(NameIndex::default());
    let (hsm_reader, hsm_writer) = reflector::store::<DeserializeGuard<HSMSecret>>();
    let hsm_index = index.clone();
    let hsm_stream = reflector::reflector(
        hsm_writer,
        watcher(
            Api::<DeserializeGuard<HSMSecret>>::all(client.clone()),
            watcher::Config::default(),
        )
        .modify(without_managed_fields),
    )
    .inspect(move |event| {
        if let Ok(event) = event {
            hsm_index.apply(event);
        }
    })
    .default_backoff()
    .touched_objects();
    let (secret_reader, secret_writer) = reflector::store::<CachedSecret>();
    let secret_stream = reflector::reflector(
        secret_writer,
        watcher(Api::<Secret>::all(client.clone()), managed_secrets()).map_ok(cache::cached_event),
    )
    .default_backoff()
    .touched_objects();

    let ctx = Arc::new(Context {
        recorder: events::EventRecorder::new(client.clone(), APP_NAME),
        client,
        pool: pool.clone(),
        identity,
        metrics,
        index: index.clone(),
        secrets: secret_reader,
        announced: parking_lot::Mutex::default(),
        malformed: parking_lot::Mutex::default(),
    });
    let (triggers, resync_all) = agent_triggers(pool, index, ctx.clone());
    Controller::for_stream(hsm_stream, hsm_reader)
        .with_config(controller::Config::default().concurrency(RECONCILE_CONCURRENCY))
        .owns_stream(secret_stream)
        .reconcile_on(triggers)
        .reconcile_all_on(resync_all)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

/// The caches keep no managedFields: nothing reads them, and they are most of an object's
/// size.
fn without_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// The HSMSecrets to reconcile when agents announce changed names, and a signal to reconcile
/// all of them when announcements were missed.
fn agent_triggers(
    pool: AgentPool,
    index: Arc<NameIndex>,
    ctx: Arc<Context>,
) -> (
    impl futures::Stream<Item = ObjectRef<DeserializeGuard<HSMSecret>>> + Send + 'static,
    impl futures::Stream<Item = ()> + Send + 'static,
) {
    let (all_tx, all_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let changes = tokio_stream::wrappers::BroadcastStream::new(pool.subscribe());
    let triggers = changes.flat_map(move |change| {
        let refs: Vec<ObjectRef<DeserializeGuard<HSMSecret>>> = match change {
            Ok(change) => {
                let now = Instant::now();
                let mut announced = ctx.announced.lock();
                change
                    .names
                    .iter()
                    .flat_map(|name| {
                        let refs = index.lookup::<DeserializeGuard<HSMSecret>>(name);
                        if !refs.is_empty() {
                            announced.entry(name.clone()).or_insert(now);
                        }
                        refs
                    })
                    .collect()
            }
            Err(lagged) => {
                tracing::warn!(%lagged, "missed agent announcements: reconciling every HSMSecret");
                let _ = all_tx.send(());
                Vec::new()
            }
        };
        futures::stream::iter(refs)
    });
    (
        triggers,
        tokio_stream::wrappers::UnboundedReceiverStream::new(all_rx),
    )
}

/// The object reference events are recorded against.
fn reference(hsm_secret: &HSMSecret) -> k8s_openapi::api::core::v1::ObjectReference {
    hsm_secret.object_ref(&())
}
