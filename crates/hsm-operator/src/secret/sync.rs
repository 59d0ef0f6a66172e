//! The I/O half of a sync: dereference (pool, agents, Secret cache), apply the Secret, write
//! the status, record events. Decisions are [`super::build`]'s.

use super::build::{self, Outcome};
use super::cache::CachedSecret;
use super::{Context, Error, FIELD_MANAGER, reference, rollout, validate};
use crate::agents::{DeviceSnapshot, SecretValues};
use crate::resolve::{Winner, resolve};
use hsm_api::secret::HSMSecret;
use hsm_proto::v1::SecretMetadata;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::core::error_boundary::InvalidObject;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use std::sync::Arc;
use std::time::Duration;

/// Syncs one HSMSecret and writes its status.
pub async fn sync(hsm_secret: &HSMSecret, ctx: &Arc<Context>) -> Result<Action, Error> {
    let (outcome, secret_checksum) = match validate::validate(hsm_secret) {
        Err(invalid) => (
            Outcome::Invalid {
                message: invalid.to_string(),
            },
            None,
        ),
        Ok(()) => match sync_secret(hsm_secret, ctx).await {
            Ok(done) => done,
            // The device changed under the reads: its announcement is on its way and
            // reconciles again; until then nothing is written.
            Err(Error::Stale) => return Ok(Action::requeue(STALE_RETRY)),
            Err(error) => {
                let outcome = Outcome::Failed {
                    message: error.to_string(),
                };
                write_status(hsm_secret, &outcome, None, ctx).await?;
                return Err(error);
            }
        },
    };
    write_status(hsm_secret, &outcome, secret_checksum, ctx).await?;
    Ok(next_check(hsm_secret, &outcome))
}

/// When to look again after reads that raced a change on the device.
const STALE_RETRY: Duration = Duration::from_millis(200);

/// When to look again without an event: `syncInterval` with autoSync (30 s for 0), never for
/// an invalid object (its next edit triggers a reconcile).
fn next_check(hsm_secret: &HSMSecret, outcome: &Outcome) -> Action {
    if matches!(outcome, Outcome::Invalid { .. }) || !hsm_secret.spec.auto_sync {
        return Action::await_change();
    }
    let seconds = match hsm_secret.spec.sync_interval {
        n if n > 0 => n,
        _ => build::DEFAULT_SYNC_INTERVAL,
    };
    Action::requeue(Duration::from_secs(seconds as u64))
}

/// Resolves the devices' copies and brings the Secret to the winner's; the outcome and the
/// Secret's checksum when one was found or written.
async fn sync_secret(
    hsm_secret: &HSMSecret,
    ctx: &Arc<Context>,
) -> Result<(Outcome, Option<String>), Error> {
    let name = hsm_secret.name_any();
    let devices = ctx.pool.snapshots();
    let (observations, unavailable) = build::observe(&name, &devices);
    if observations.is_empty() {
        return Ok((Outcome::DevicesUnavailable { unavailable }, None));
    }
    let resolution = resolve(&observations, devices.len());
    let winner = match &resolution.winner {
        None => return Ok((Outcome::NotOnHsm { unavailable }, None)),
        Some(_) if resolution.deleted() => return Ok((Outcome::DeletedOnHsm, None)),
        Some(winner) => winner,
    };
    if resolution.diverged() {
        tracing::info!(outliers = ?resolution.outliers, strategy = resolution.strategy.as_str(), "devices disagree");
    }
    let existing = existing_secret(hsm_secret, ctx).await?;
    let taken_by = match &existing {
        Existing::Cached(cached) => {
            (!build::owned_by(&**cached, hsm_secret)).then(|| cached.name_any())
        }
        Existing::Read(Some(secret)) => {
            (!build::owned_by(&**secret, hsm_secret)).then(|| secret.name_any())
        }
        Existing::Read(None) => None,
    };
    if let Some(name) = taken_by {
        return Ok((Outcome::SecretNameTaken { name }, None));
    }
    apply_winner(hsm_secret, winner, &devices, existing, ctx).await
}

/// The Secret as a sync first sees it.
enum Existing {
    /// From the watch cache: enough to tell whether it is up to date, without its values.
    Cached(Arc<CachedSecret>),
    /// Read from the API, for a name the cache lacks (which may be a Secret the operator
    /// does not manage); `None` when there is no such Secret.
    Read(Option<Box<Secret>>),
}

/// The Secret now: from the watch cache, or (for a name the cache lacks) from the API.
async fn existing_secret(hsm_secret: &HSMSecret, ctx: &Context) -> Result<Existing, Error> {
    let namespace = hsm_secret.namespace().unwrap_or_default();
    let name = build::secret_name(hsm_secret);
    if let Some(cached) = ctx.secrets.get(&ObjectRef::new(&name).within(&namespace)) {
        return Ok(Existing::Cached(cached));
    }
    let secret = read_secret(hsm_secret, ctx).await?;
    Ok(Existing::Read(secret.map(Box::new)))
}

/// The HSMSecret's Secret, read from the API.
async fn read_secret(hsm_secret: &HSMSecret, ctx: &Context) -> Result<Option<Secret>, Error> {
    let namespace = hsm_secret.namespace().unwrap_or_default();
    Api::<Secret>::namespaced(ctx.client.clone(), &namespace)
        .get_opt(&build::secret_name(hsm_secret))
        .await
        .map_err(Error::Kube)
}

/// Writes the winner's copy to the Secret unless it already holds it.
async fn apply_winner(
    hsm_secret: &HSMSecret,
    winner: &Winner,
    devices: &[DeviceSnapshot],
    existing: Existing,
    ctx: &Arc<Context>,
) -> Result<(Outcome, Option<String>), Error> {
    let name = hsm_secret.name_any();
    // The device that holds the winning copy (by id and checksum: two tokens may report
    // the same serial).
    let winning = devices
        .iter()
        .find(|d| {
            build::device_id(d) == winner.device
                && d.entries
                    .get(&name)
                    .is_some_and(|e| e.checksum == winner.checksum)
        })
        .ok_or(Error::Stale)?;
    let slot = ctx.pool.device(&winning.key).ok_or(Error::Stale)?;
    let entry_version = winning.entries.get(&name).map_or(0, |e| e.sync_version);
    let metadata = cached_metadata(&slot, &name, ctx).await?;
    if metadata_version(&metadata) != entry_version {
        return Err(Error::Stale);
    }
    let existing = match existing {
        Existing::Cached(cached) => {
            // The cache tells whether anything is to be written, without a value (the
            // desired Secret's data is compared by the winner's checksum).
            if cached.checksum() == winner.checksum {
                let desired = build::desired_secret_of_type(
                    hsm_secret,
                    cached.type_(),
                    &SecretValues::new(),
                    &metadata,
                );
                if cached.up_to_date(&desired, &winner.checksum) {
                    let mut reference = secret_reference(&desired, None);
                    reference.uid = cached.uid();
                    let outcome = Outcome::InSync {
                        hsm_checksum: winner.checksum.clone(),
                        secret: reference,
                        wrote: false,
                    };
                    return Ok((outcome, Some(winner.checksum.clone())));
                }
            }
            // Something is to be written: the Secret itself, as it is now.
            match read_secret(hsm_secret, ctx).await? {
                Some(secret) if !build::owned_by(&secret, hsm_secret) => {
                    let name = secret.name_any();
                    return Ok((Outcome::SecretNameTaken { name }, None));
                }
                secret => secret,
            }
        }
        Existing::Read(secret) => secret.map(|s| *s),
    };
    let current = existing
        .as_ref()
        .filter(|s| build::secret_checksum(s) == winner.checksum);
    let values: SecretValues = match current {
        // The Secret already holds the winner's data: no value is read.
        Some(secret) => secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.0.clone()))
            .collect(),
        None => {
            ctx.metrics.agent_read("read_secret");
            let values = slot.agent().read(&name).await.map_err(Error::Agent)?;
            let read = hsm_store::checksum::checksum(
                values.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            );
            if read != winner.checksum {
                return Err(Error::Stale);
            }
            values
        }
    };
    let desired = build::desired_secret(hsm_secret, existing.as_ref(), &values, &metadata);
    let checksum = build::secret_checksum(&desired);
    let reference = secret_reference(&desired, existing.as_ref());
    let in_sync = |wrote| Outcome::InSync {
        hsm_checksum: checksum.clone(),
        secret: reference.clone(),
        wrote,
    };
    if existing
        .as_ref()
        .is_some_and(|e| build::up_to_date(e, &desired))
    {
        return Ok((in_sync(false), Some(checksum)));
    }
    let written = write_secret(&desired, existing.as_ref(), ctx).await?;
    ctx.metrics.secret_writes.inc();
    if let Some(announced) = ctx.announced.lock().remove(&name) {
        ctx.metrics
            .sync_latency_seconds
            .observe(announced.elapsed().as_secs_f64());
    }
    let content_changed = existing
        .as_ref()
        .is_some_and(|e| build::secret_checksum(e) != checksum);
    if content_changed {
        rollout::restart(hsm_secret, ctx).await;
    }
    let (reason, note) = match &existing {
        None => (
            "SecretCreated",
            format!(
                "created Secret {} from device {}",
                written.name_any(),
                winner.device
            ),
        ),
        Some(_) if content_changed => (
            "SecretUpdated",
            format!(
                "updated Secret {} from device {}",
                written.name_any(),
                winner.device
            ),
        ),
        Some(_) => (
            "SecretRestored",
            format!(
                "restored Secret {} (edited outside the operator)",
                written.name_any()
            ),
        ),
    };
    record(hsm_secret, EventType::Normal, reason, note, ctx).await;
    let reference = secret_reference(&written, None);
    Ok((
        Outcome::InSync {
            hsm_checksum: checksum.clone(),
            secret: reference,
            wrote: true,
        },
        Some(checksum),
    ))
}

/// The `sync.version` a metadata record carries (0 when absent), as the index reports it.
fn metadata_version(metadata: &SecretMetadata) -> i64 {
    metadata
        .labels
        .get(hsm_store::metadata::SYNC_VERSION)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn cached_metadata(
    slot: &crate::agents::pool::DeviceSlot,
    name: &str,
    ctx: &Context,
) -> Result<SecretMetadata, Error> {
    let (metadata, fetched) = slot.metadata(name).await.map_err(Error::Agent)?;
    if fetched {
        ctx.metrics.agent_read("read_metadata");
    }
    Ok(metadata)
}

fn secret_reference(
    secret: &Secret,
    existing: Option<&Secret>,
) -> k8s_openapi::api::core::v1::ObjectReference {
    let mut reference = secret.object_ref(&());
    if reference.uid.is_none() {
        reference.uid = existing.and_then(|e| e.uid());
    }
    reference.resource_version = None;
    reference
}

/// Applies the Secret with server-side apply; a Secret holding keys added by hand is
/// replaced instead, since an apply would keep them.
async fn write_secret(
    desired: &Secret,
    existing: Option<&Secret>,
    ctx: &Context,
) -> Result<Secret, Error> {
    let namespace = desired.namespace().unwrap_or_default();
    let name = desired.name_any();
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    match existing {
        Some(existing) if build::has_foreign_keys(existing, desired) => {
            let mut replacement = existing.clone();
            replacement.data = desired.data.clone();
            replacement.string_data = None;
            replacement.metadata.labels =
                merged(&existing.metadata.labels, &desired.metadata.labels);
            replacement.metadata.annotations = merged(
                &existing.metadata.annotations,
                &desired.metadata.annotations,
            );
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            api.replace(&name, &params, &replacement)
                .await
                .map_err(Error::Kube)
        }
        _ => api
            .patch(
                &name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(desired),
            )
            .await
            .map_err(Error::Kube),
    }
}

fn merged(
    have: &Option<std::collections::BTreeMap<String, String>>,
    want: &Option<std::collections::BTreeMap<String, String>>,
) -> Option<std::collections::BTreeMap<String, String>> {
    let mut out = have.clone().unwrap_or_default();
    out.extend(want.clone().unwrap_or_default());
    Some(out).filter(|m| !m.is_empty())
}

/// Deletes the HSMSecret's Secret (when it is the HSMSecret's); HSM data is never touched.
pub async fn cleanup(hsm_secret: &HSMSecret, ctx: &Arc<Context>) -> Result<Action, Error> {
    let namespace = hsm_secret.namespace().unwrap_or_default();
    let name = build::secret_name(hsm_secret);
    let api = Api::<Secret>::namespaced(ctx.client.clone(), &namespace);
    if let Some(secret) = api.get_opt(&name).await.map_err(Error::Kube)?
        && build::owned_by(&secret, hsm_secret)
    {
        match api.delete(&name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    Ok(Action::await_change())
}

/// Writes the status when it changed, and records an event when the sync status or its
/// reason moved.
async fn write_status(
    hsm_secret: &HSMSecret,
    outcome: &Outcome,
    secret_checksum: Option<String>,
    ctx: &Arc<Context>,
) -> Result<(), Error> {
    let previous = hsm_secret.status.as_ref();
    let status = build::status(
        previous,
        outcome,
        secret_checksum,
        hsm_secret.meta().generation,
        k8s_openapi::jiff::Timestamp::now(),
    );
    if previous == Some(&status) {
        return Ok(());
    }
    let reason_of = |s: Option<&hsm_api::HSMSecretStatus>| {
        s.and_then(|s| {
            s.conditions
                .iter()
                .find(|c| c.type_ == "Ready")
                .map(|c| c.reason.clone())
        })
    };
    let moved = reason_of(previous) != reason_of(Some(&status));
    let namespace = hsm_secret.namespace().unwrap_or_default();
    let body = status_body(&hsm_secret.name_any(), &status);
    ctx.hsm_secrets(&namespace)
        .patch_status(
            &hsm_secret.name_any(),
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::Kube)?;
    if moved && !matches!(outcome, Outcome::InSync { wrote: true, .. }) {
        let (sync_status, reason, message) = outcome.describe();
        let kind = if sync_status == hsm_api::secret::SyncStatus::InSync {
            EventType::Normal
        } else {
            EventType::Warning
        };
        record(hsm_secret, kind, reason, message, ctx).await;
    }
    Ok(())
}

/// A server-side apply of `status` alone.
fn status_body(name: &str, status: &hsm_api::HSMSecretStatus) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": HSMSecret::api_version(&()),
        "kind": HSMSecret::kind(&()),
        "metadata": {"name": name},
        "status": status,
    })
}

/// Records an event on the HSMSecret; a failure to record is logged, never fatal.
async fn record(
    hsm_secret: &HSMSecret,
    type_: EventType,
    reason: &str,
    note: String,
    ctx: &Context,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Sync".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &reference(hsm_secret)).await {
        tracing::warn!(%error, "cannot record an event");
    }
}

/// An HSMSecret the operator cannot even read (its fields do not parse): said on its own
/// status and in an event, and the controller goes on with the others.
pub async fn report_malformed(
    invalid: &InvalidObject,
    ctx: &Arc<Context>,
) -> Result<Action, Error> {
    let namespace = invalid.metadata.namespace.clone().unwrap_or_default();
    let name = invalid.metadata.name.clone().unwrap_or_default();
    let seen = (
        invalid.metadata.uid.clone().unwrap_or_default(),
        invalid.metadata.generation,
    );
    // Status writes do not move the generation: report each generation once, or the
    // report's own write would trigger the next one.
    if ctx.malformed.lock().insert(seen.0.clone(), seen.1) == Some(seen.1) {
        return Ok(Action::await_change());
    }
    tracing::warn!(%namespace, %name, error = %invalid.error, "malformed HSMSecret");
    let message = format!("the object does not parse: {}", invalid.error);
    let status = build::status(
        None,
        &Outcome::Invalid {
            message: message.clone(),
        },
        None,
        invalid.metadata.generation,
        k8s_openapi::jiff::Timestamp::now(),
    );
    let body = status_body(&name, &status);
    ctx.hsm_secrets(&namespace)
        .patch_status(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&body),
        )
        .await
        .map_err(Error::Kube)?;
    let reference = k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(HSMSecret::api_version(&()).into_owned()),
        kind: Some(HSMSecret::kind(&()).into_owned()),
        name: Some(name),
        namespace: Some(namespace),
        uid: invalid.metadata.uid.clone(),
        ..Default::default()
    };
    let event = Event {
        type_: EventType::Warning,
        reason: "InvalidSpec".into(),
        note: Some(message),
        action: "Sync".into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &reference).await {
        tracing::warn!(%error, "cannot record an event");
    }
    Ok(Action::await_change())
}
