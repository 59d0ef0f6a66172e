//! What the manager tells about itself: tracing (a span per reconcile), Prometheus metrics
//! (prometheus-client) and the `/healthz` and `/readyz` probes, each served on its own port
//! as the Go manager does.

use crate::agents::{AgentPool, DeviceHealth};
use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Sets up logging: `level` is a level or a tracing filter; `RUST_LOG` wins when set.
pub fn init_tracing(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).try_init();
}

/// The outcome of a reconcile.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `ok` or `error`.
    pub result: String,
}

/// An error category.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CategoryLabels {
    /// What kind of failure (`agent`, `kubernetes`, `finalizer`, …).
    pub category: String,
}

/// A call made to an agent on behalf of a sync.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CallLabels {
    /// `read_secret` or `read_metadata`: each costs the device token calls.
    pub call: String,
}

/// A device.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeviceLabels {
    /// The device's key.
    pub device: String,
}

/// A mirror pass.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorRunLabels {
    /// What started it (`periodic`, `device_change`, `device_ready`, `manual_api`, …).
    pub trigger: String,
    /// `ok` (every write made), `partial` (some failed), `no_devices`.
    pub result: String,
}

/// One write of a mirror pass.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorActionLabels {
    /// `write`, `tombstone` or `restore_metadata`.
    pub action: String,
    /// `written`, `failed` or `stale` (the device changed since the plan).
    pub result: String,
}

/// Every metric the manager exports.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by result.
    pub reconciles: Family<ResultLabels, Counter>,
    /// Reconcile errors by category.
    pub errors: Family<CategoryLabels, Counter>,
    /// How long a reconcile takes.
    pub reconcile_seconds: Histogram,
    /// From an agent announcing a change to the Secret being written.
    pub sync_latency_seconds: Histogram,
    /// Agent reads made for syncs (each costs token calls on the device).
    pub agent_reads: Family<CallLabels, Counter>,
    /// Kubernetes Secrets written.
    pub secret_writes: Counter,
    /// 1 while the device's agent is followed and its token session works.
    pub device_connected: Family<DeviceLabels, Gauge>,
    /// 1 while this replica leads.
    pub leader: Gauge,
    /// Mirror passes by trigger and result.
    pub mirror_runs: Family<MirrorRunLabels, Counter>,
    /// Mirror writes by action and result.
    pub mirror_actions: Family<MirrorActionLabels, Counter>,
    /// Failed mirror writes by error category.
    pub mirror_failures: Family<CategoryLabels, Counter>,
    /// How long a mirror pass takes.
    pub mirror_run_seconds: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric under the `hsm_operator` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("hsm_operator");
        let metrics = Metrics {
            reconciles: Family::default(),
            errors: Family::default(),
            reconcile_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            sync_latency_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            agent_reads: Family::default(),
            secret_writes: Counter::default(),
            device_connected: Family::default(),
            leader: Gauge::default(),
            mirror_runs: Family::default(),
            mirror_actions: Family::default(),
            mirror_failures: Family::default(),
            mirror_run_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            registry: Registry::default(),
        };
        registry.register(
            "reconciles",
            "HSMSecret reconciles by result",
            metrics.reconciles.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile errors by category",
            metrics.errors.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Duration of an HSMSecret reconcile",
            metrics.reconcile_seconds.clone(),
        );
        registry.register(
            "sync_latency_seconds",
            "From an agent announcing a change to the Kubernetes Secret written",
            metrics.sync_latency_seconds.clone(),
        );
        registry.register(
            "agent_reads",
            "Agent reads made for syncs; each costs token calls",
            metrics.agent_reads.clone(),
        );
        registry.register(
            "secret_writes",
            "Kubernetes Secrets written",
            metrics.secret_writes.clone(),
        );
        registry.register(
            "device_connected",
            "1 while a device's agent is followed and its token works",
            metrics.device_connected.clone(),
        );
        registry.register(
            "leader",
            "1 while this replica leads",
            metrics.leader.clone(),
        );
        registry.register(
            "mirror_runs",
            "Mirror passes by trigger and result",
            metrics.mirror_runs.clone(),
        );
        registry.register(
            "mirror_actions",
            "Mirror writes to devices by action and result",
            metrics.mirror_actions.clone(),
        );
        registry.register(
            "mirror_failures",
            "Failed mirror writes by error category",
            metrics.mirror_failures.clone(),
        );
        registry.register(
            "mirror_run_duration_seconds",
            "Duration of a mirror pass",
            metrics.mirror_run_seconds.clone(),
        );
        Metrics {
            registry,
            ..metrics
        }
    }

    /// Counts an agent read.
    pub fn agent_read(&self, call: &str) {
        self.agent_reads
            .get_or_create(&CallLabels { call: call.into() })
            .inc();
    }

    /// The text exposition, with device states taken from `pool` now.
    pub fn render(&self, pool: &AgentPool) -> String {
        for device in pool.snapshots() {
            let connected = i64::from(device.health == DeviceHealth::Healthy);
            self.device_connected
                .get_or_create(&DeviceLabels { device: device.key })
                .set(connected);
        }
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Whether the manager is ready to serve (its first start-up steps done).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the manager ready.
    pub fn set_ready(&self) {
        self.0.store(true, Ordering::SeqCst);
    }

    /// Whether it is.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Serves `/metrics` on `addr`.
pub async fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    pool: AgentPool,
) -> std::io::Result<()> {
    let app = Router::new().route(
        "/metrics",
        get(move || {
            let body = metrics.render(&pool);
            async move {
                (
                    [(
                        "content-type",
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    body,
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}

/// Serves `/healthz` (alive) and `/readyz` (ready) on `addr`.
pub async fn serve_probes(addr: SocketAddr, ready: Readiness) -> std::io::Result<()> {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = ready.is_ready();
                async move {
                    if ready {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "starting")
                    }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, app).await
}
