//! Leader election on a Lease (kube-lease-manager: server-side apply, tolerant of clock
//! skew), under the Go manager's election id, so one replica runs the controllers at a time
//! and another takes over within the Lease's duration when it dies.

use crate::telemetry::Metrics;
use hsm_api::names::LEADER_ELECTION_ID;
use kube_lease_manager::LeaseManagerBuilder;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// How the Lease is held.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    /// The Lease's namespace (the manager's).
    pub namespace: String,
    /// This replica's identity (unique per process).
    pub identity: String,
    /// How long a Lease lasts without renewal.
    pub duration: Duration,
    /// How long before expiry the holder renews.
    pub grace: Duration,
}

/// Why leading ended.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease could not be set up or followed.
    #[error("leader election: {0}")]
    Lease(#[from] kube_lease_manager::LeaseManagerError),
    /// Settings the Lease cannot take (grace must be shorter than duration, both ≥ 1 s).
    #[error(
        "leader election: the lease grace ({grace:?}) must be at least 1s and shorter than its duration ({duration:?})"
    )]
    Settings {
        /// Duration.
        duration: Duration,
        /// Grace.
        grace: Duration,
    },
    /// Another replica took the Lease: this one stops its controllers and exits, to come
    /// back as a follower.
    #[error("leadership lost")]
    Lost,
}

/// Waits for the Lease, runs `work` while holding it, and when the Lease is lost stops
/// `work` (through the future it was given) and returns [`LeaderError::Lost`].
pub async fn lead<W, F>(
    client: kube::Client,
    settings: LeaseSettings,
    metrics: Arc<Metrics>,
    work: W,
) -> Result<(), LeaderError>
where
    W: FnOnce(std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let (duration, grace) = (settings.duration.as_secs(), settings.grace.as_secs());
    if grace == 0 || grace >= duration {
        return Err(LeaderError::Settings {
            duration: settings.duration,
            grace: settings.grace,
        });
    }
    let manager = LeaseManagerBuilder::new(client, LEADER_ELECTION_ID)
        .with_namespace(&settings.namespace)
        .with_identity(&settings.identity)
        .with_duration(duration)
        .with_grace(grace)
        .with_field_manager(format!(
            "{}-lease-{}",
            crate::secret::FIELD_MANAGER,
            settings.identity
        ))
        .build()
        .await?;
    let (mut leading, _task) = manager.watch().await;
    tracing::info!(identity = %settings.identity, "waiting for the leader Lease");
    while !*leading.borrow_and_update() {
        if leading.changed().await.is_err() {
            return Err(LeaderError::Lost);
        }
    }
    tracing::info!(identity = %settings.identity, "leading");
    metrics.leader.set(1);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let work = tokio::spawn(work(Box::pin(async move {
        let _ = stopped.await;
    })));
    while *leading.borrow_and_update() {
        if leading.changed().await.is_err() {
            break;
        }
    }
    tracing::warn!(identity = %settings.identity, "leadership lost: stopping the controllers");
    metrics.leader.set(0);
    let _ = stop.send(());
    let _ = work.await;
    Err(LeaderError::Lost)
}
