//! The `hsm.v1.HSMAgent` gRPC service over one [`Device`].
//!
//! Status codes follow the Go agent: `InvalidArgument` for bad input (naming the field),
//! `NotFound` for a missing secret, `Unavailable` while the token is not connected,
//! `Internal` otherwise. Token calls run on blocking threads; reads run concurrently and the
//! store serialises writes. Listing, checksums and the index never touch the token.
//!
//! A write or delete whose token fails under it (pulled, reset) may or may not have been
//! applied: the store's recovery decides once the token is back. The service waits for that, up to a
//! bound, and answers with what happened, so that an error always means the old value stands
//! and success means the new one does.
//!
//! `WatchChanges` is event-driven: every write through the service, every re-scan and every
//! recovery wakes the streams, which send what changed since they last looked (from the
//! index), or a `Resync` when a re-scan or a reconnection makes versions incomparable.

use crate::connector::{Connector, Pkcs11Connector};
use crate::device::{Device, DeviceError, DeviceStore, Readiness};
use crate::validate::{self, Invalid};
use hsm_proto::v1::hsm_agent_server::HsmAgent;
use hsm_proto::v1::*;
use hsm_store::token::TokenErrorKind;
use hsm_store::{MetadataChange, SecretStore, SecretSummary, StoreError};
use secrecy::SecretString;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

/// What wakes change streams: the store version after a write, and an epoch that moves on
/// every re-scan (after which versions are compared afresh).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Signal {
    writes: u64,
    epoch: u64,
}

/// The gRPC service over a device; `AgentService` alone serves a PKCS#11 token.
pub struct AgentService<C: Connector = Pkcs11Connector> {
    device: Arc<Device<C>>,
    signal: watch::Sender<Signal>,
    /// How often an idle change stream looks at the index anyway.
    poll: Duration,
    /// How long a write interrupted by the token's loss waits for it to come back.
    settle_timeout: Duration,
}

impl<C: Connector> Clone for AgentService<C> {
    fn clone(&self) -> Self {
        AgentService {
            device: self.device.clone(),
            signal: self.signal.clone(),
            poll: self.poll,
            settle_timeout: self.settle_timeout,
        }
    }
}

/// How often a write waiting to settle looks whether the token is back.
const SETTLE_POLL: Duration = Duration::from_millis(100);

impl<C: Connector> AgentService<C> {
    /// The service for `device`.
    pub fn new(device: Arc<Device<C>>) -> Self {
        AgentService {
            device,
            signal: watch::Sender::new(Signal::default()),
            poll: Duration::from_secs(5),
            settle_timeout: Duration::from_secs(10),
        }
    }

    /// Sets how long a write interrupted by the token's loss waits for the token to come
    /// back and for its outcome to be known, before answering "unavailable, outcome unknown".
    pub fn with_settle_timeout(mut self, timeout: Duration) -> Self {
        self.settle_timeout = timeout;
        self
    }

    /// Sets how often an idle change stream looks at the index without being woken (a
    /// safety net: writes, re-scans and recoveries wake streams at once).
    pub fn with_poll_interval(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The device served.
    pub fn device(&self) -> &Arc<Device<C>> {
        &self.device
    }

    /// Re-scans the token for changes other writers made, and tells change streams to
    /// resynchronise. The agent calls this on a slow timer.
    pub async fn rescan(&self) -> Result<hsm_store::RescanReport, Status> {
        let report = self.blocking(|store| store.rescan()).await?;
        self.signal.send_modify(|s| s.epoch += 1);
        Ok(report)
    }

    /// Runs a store operation on a blocking thread.
    async fn blocking<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&DeviceStore<C::Token>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, Status> {
        self.on_device(operation).await?.map_err(status)
    }

    /// Runs a store operation on a blocking thread, keeping the device's error.
    async fn on_device<R: Send + 'static>(
        &self,
        operation: impl FnOnce(&DeviceStore<C::Token>) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<Result<R, DeviceError>, Status> {
        let device = self.device.clone();
        tokio::task::spawn_blocking(move || device.with_store(operation))
            .await
            .map_err(|e| Status::internal(format!("agent task failed: {e}")))
    }

    /// Runs a change of secret `path`, and when the token fails during it, answers with its
    /// real outcome once recovery has decided it (see the module's doc): `Some` with the
    /// operation's result, or `None` when recovery applied it.
    async fn settled<R: Send + 'static>(
        &self,
        path: String,
        expected: Expected,
        operation: impl FnOnce(&DeviceStore<C::Token>, &str) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<Option<R>, Status> {
        // Whether the change reached the token at all: a device that was not connected
        // changed nothing, and its error stands as it is.
        let started = Arc::new(AtomicBool::new(false));
        let (name, flag) = (path.clone(), started.clone());
        let done = self
            .on_device(move |store| {
                flag.store(true, Ordering::SeqCst);
                operation(store, &name)
            })
            .await?;
        match done {
            Ok(result) => Ok(Some(result)),
            Err(e) if started.load(Ordering::SeqCst) && may_have_written(&e) => {
                self.settle(path, expected, e).await.map(|()| None)
            }
            Err(e) => Err(status(e)),
        }
    }

    /// Waits until the store, recovered, shows whether the interrupted write took effect.
    async fn settle(
        &self,
        path: String,
        expected: Expected,
        failure: DeviceError,
    ) -> Result<(), Status> {
        let deadline = tokio::time::Instant::now() + self.settle_timeout;
        loop {
            let name = path.clone();
            // A read recovers the store first (resolving the write's journal).
            let found = self
                .on_device(move |store| match store.read(&name) {
                    Ok(data) => Ok(Some((data, store.metadata(&name).ok()))),
                    Err(StoreError::NotFound(_)) => Ok(None),
                    Err(e) => Err(e),
                })
                .await?;
            match found {
                Ok(found) => {
                    return if expected.applied(found) {
                        tracing::info!(secret = %path, "a write interrupted by the token's loss was applied by its recovery");
                        Ok(())
                    } else {
                        Err(status(failure))
                    };
                }
                Err(_) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(SETTLE_POLL).await;
                }
                Err(_) => {
                    return Err(Status::unavailable(format!(
                        "the HSM went away during the write of {path} and has not come back; \
                         whether the write was applied is not known yet"
                    )));
                }
            }
        }
    }

    fn wrote(&self) {
        self.signal.send_modify(|s| s.writes += 1);
    }
}

/// What an interrupted write would have left, to tell whether recovery applied it.
enum Expected {
    /// A write: these values, and this metadata when it replaced the metadata.
    Written {
        data: hsm_store::SecretData,
        metadata: Option<hsm_store::SecretMetadata>,
    },
    /// A delete of the whole secret.
    Deleted,
    /// A delete of one key.
    KeyDeleted(String),
}

impl Expected {
    /// Whether the secret as found (values and metadata, or nothing) shows the change.
    fn applied(
        &self,
        found: Option<(hsm_store::SecretData, Option<hsm_store::SecretMetadata>)>,
    ) -> bool {
        match self {
            Expected::Written { data, metadata } => found.is_some_and(|(now, now_metadata)| {
                now == *data
                    && metadata
                        .as_ref()
                        .is_none_or(|m| now_metadata.as_ref() == Some(m))
            }),
            Expected::Deleted => found.is_none(),
            Expected::KeyDeleted(key) => found.is_none_or(|(now, _)| !now.contains_key(key)),
        }
    }
}

/// A failure that may have come in the middle of a write: the token went away, or one of its
/// calls failed. (Bad input, a missing secret or a refused PIN change nothing.)
fn may_have_written(error: &DeviceError) -> bool {
    matches!(
        error,
        DeviceError::NotReady {
            reason: crate::device::NotReadyReason::TokenLost,
            ..
        } | DeviceError::Store(StoreError::Token(_))
    )
}

/// The gRPC status of a device error. Messages carry names, never values or PINs.
pub fn status(error: DeviceError) -> Status {
    match error {
        DeviceError::NotReady { reason, message } => Status::unavailable(format!(
            "HSM not connected ({}): {message}",
            reason.as_str()
        )),
        DeviceError::Store(e) => Status::new(store_code(&e), hsm_store::error::chain(&e)),
    }
}

/// The gRPC code of a store error: one arm per kind, with no catch-all, so that a new kind
/// is a compile error here instead of silently becoming `Internal`.
pub fn store_code(error: &StoreError) -> tonic::Code {
    use tonic::Code;
    match error {
        StoreError::InvalidName { .. }
        | StoreError::InvalidKey { .. }
        | StoreError::LabelConflict { .. } => Code::InvalidArgument,
        StoreError::NotFound(_) | StoreError::KeyNotFound { .. } => Code::NotFound,
        StoreError::PinIncorrect | StoreError::PinLocked | StoreError::PinInvalid(_) => {
            Code::PermissionDenied
        }
        // The token cannot be reached: the caller may try again later.
        StoreError::ModuleLoad { .. } | StoreError::TokenNotFound { .. } => Code::Unavailable,
        StoreError::Malformed { .. } => Code::Internal,
        StoreError::Token(token) => match &token.kind {
            TokenErrorKind::TokenLost => Code::Unavailable,
            TokenErrorKind::PinIncorrect
            | TokenErrorKind::PinLocked
            | TokenErrorKind::PinInvalid => Code::PermissionDenied,
            TokenErrorKind::ObjectGone
            | TokenErrorKind::ValueLost { .. }
            | TokenErrorKind::Unsupported
            | TokenErrorKind::Injected
            | TokenErrorKind::Other(_) => Code::Internal,
        },
    }
}

fn bad(invalid: Invalid) -> Status {
    Status::invalid_argument(invalid.to_string())
}

fn to_proto_metadata(m: hsm_store::SecretMetadata) -> SecretMetadata {
    SecretMetadata {
        description: m.description,
        labels: m.labels.into_iter().collect(),
        format: m.format,
        data_type: m.data_type,
        created_at: m.created_at,
        source: m.source,
    }
}

fn from_proto_metadata(m: SecretMetadata) -> hsm_store::SecretMetadata {
    hsm_store::SecretMetadata {
        description: m.description,
        labels: m.labels.into_iter().collect(),
        format: m.format,
        data_type: m.data_type,
        created_at: m.created_at,
        source: m.source,
    }
}

/// An index entry on the wire.
pub fn entry(summary: SecretSummary) -> IndexEntry {
    IndexEntry {
        name: summary.name,
        keys: summary.keys,
        checksum: if summary.has_data {
            summary.checksum
        } else {
            String::new()
        },
        version: summary.version,
        tombstone: summary.tombstone,
        sync_version: summary.sync_version,
        sync_timestamp: summary.sync_timestamp,
        has_data: summary.has_data,
    }
}

type Reply<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl<C: Connector> HsmAgent for AgentService<C> {
    async fn get_info(&self, _: Request<GetInfoRequest>) -> Reply<GetInfoResponse> {
        let info = self.blocking(|store| store.info()).await?;
        Ok(Response::new(GetInfoResponse {
            hsm_info: Some(HsmInfo {
                label: info.label,
                manufacturer: info.manufacturer,
                model: info.model,
                serial_number: info.serial_number,
                firmware_version: info.firmware_version,
            }),
        }))
    }

    async fn read_secret(&self, request: Request<ReadSecretRequest>) -> Reply<ReadSecretResponse> {
        let path = request.into_inner().path;
        validate::read_path(&path).map_err(bad)?;
        let data = self.blocking(move |store| store.read(&path)).await?;
        let data: BTreeMap<String, Vec<u8>> = data
            .into_iter()
            .map(|(k, v)| (k, v.expose().to_vec()))
            .collect();
        Ok(Response::new(ReadSecretResponse {
            secret_data: Some(hsm_proto::v1::SecretData { data }),
        }))
    }

    async fn write_secret(
        &self,
        request: Request<WriteSecretRequest>,
    ) -> Reply<WriteSecretResponse> {
        let request = request.into_inner();
        validate::write_path(&request.path).map_err(bad)?;
        let data = request
            .secret_data
            .ok_or_else(|| Status::invalid_argument("secret_data: required"))?;
        validate::secret_data(&request.path, &data).map_err(bad)?;
        if let Some(m) = &request.metadata {
            validate::metadata(m).map_err(bad)?;
        }
        let change = match request.metadata {
            Some(m) => MetadataChange::Replace(from_proto_metadata(m)),
            None => MetadataChange::Keep,
        };
        let path = request.path;
        let data: hsm_store::SecretData = data
            .data
            .into_iter()
            .map(|(k, v)| (k, hsm_store::SecretValue::new(v)))
            .collect();
        let expected = Expected::Written {
            data: data.clone(),
            metadata: match &change {
                MetadataChange::Replace(m) => Some(m.clone()),
                _ => None,
            },
        };
        let outcome = self
            .settled(path, expected, move |store, name| {
                store.write(name, &data, change)
            })
            .await?;
        // Applied by recovery: a change, as far as watchers can tell.
        if outcome.is_none_or(|o| o.changed) {
            self.wrote();
        }
        Ok(Response::new(WriteSecretResponse {}))
    }

    async fn read_metadata(
        &self,
        request: Request<ReadMetadataRequest>,
    ) -> Reply<ReadMetadataResponse> {
        let path = request.into_inner().path;
        validate::read_path(&path).map_err(bad)?;
        let metadata = self.blocking(move |store| store.metadata(&path)).await?;
        Ok(Response::new(ReadMetadataResponse {
            metadata: Some(to_proto_metadata(metadata)),
        }))
    }

    async fn delete_secret(
        &self,
        request: Request<DeleteSecretRequest>,
    ) -> Reply<DeleteSecretResponse> {
        let DeleteSecretRequest { path, key } = request.into_inner();
        validate::read_path(&path).map_err(bad)?;
        let expected = match key.is_empty() {
            true => Expected::Deleted,
            false => Expected::KeyDeleted(key.clone()),
        };
        self.settled(path, expected, move |store, name| {
            if key.is_empty() {
                store.delete(name)
            } else {
                store.delete_key(name, &key)
            }
        })
        .await?;
        self.wrote();
        Ok(Response::new(DeleteSecretResponse {}))
    }

    async fn list_secrets(
        &self,
        request: Request<ListSecretsRequest>,
    ) -> Reply<ListSecretsResponse> {
        let prefix = request.into_inner().prefix;
        let paths = self.blocking(move |store| Ok(store.list(&prefix))).await?;
        Ok(Response::new(ListSecretsResponse { paths }))
    }

    async fn get_checksum(
        &self,
        request: Request<GetChecksumRequest>,
    ) -> Reply<GetChecksumResponse> {
        let path = request.into_inner().path;
        validate::read_path(&path).map_err(bad)?;
        let checksum = self.blocking(move |store| store.checksum(&path)).await?;
        Ok(Response::new(GetChecksumResponse { checksum }))
    }

    async fn is_connected(&self, _: Request<IsConnectedRequest>) -> Reply<IsConnectedResponse> {
        Ok(Response::new(IsConnectedResponse {
            connected: self.device.readiness() == Readiness::Ready,
        }))
    }

    async fn health(&self, _: Request<HealthRequest>) -> Reply<HealthResponse> {
        let (status, message) = match self.device.readiness() {
            Readiness::Ready => ("healthy".to_owned(), "Agent is running normally".to_owned()),
            Readiness::NotReady { reason, message } => (
                "degraded".to_owned(),
                format!("HSM client not connected ({}): {message}", reason.as_str()),
            ),
        };
        Ok(Response::new(HealthResponse { status, message }))
    }

    async fn change_pin(&self, request: Request<ChangePinRequest>) -> Reply<ChangePinResponse> {
        let ChangePinRequest { old_pin, new_pin } = request.into_inner();
        if old_pin.is_empty() {
            return Err(Status::invalid_argument("old_pin: required"));
        }
        if new_pin.is_empty() {
            return Err(Status::invalid_argument("new_pin: required"));
        }
        if old_pin == new_pin {
            return Err(Status::invalid_argument(
                "new_pin: must differ from old_pin",
            ));
        }
        let (old, new) = (SecretString::from(old_pin), SecretString::from(new_pin));
        let device = self.device.clone();
        tokio::task::spawn_blocking(move || device.change_pin(&old, &new))
            .await
            .map_err(|e| Status::internal(format!("agent task failed: {e}")))?
            .map_err(status)?;
        Ok(Response::new(ChangePinResponse {}))
    }

    async fn get_index(&self, _: Request<GetIndexRequest>) -> Reply<GetIndexResponse> {
        // From the index and the device's memory: no token call.
        let (entries, version) = self
            .blocking(|store| Ok((store.entries(), store.version())))
            .await?;
        let serial_number = self.device.serial();
        Ok(Response::new(GetIndexResponse {
            entries: entries.into_iter().map(entry).collect(),
            version,
            serial_number,
        }))
    }

    type WatchChangesStream = ReceiverStream<Result<ChangeEvent, Status>>;

    async fn watch_changes(
        &self,
        request: Request<WatchChangesRequest>,
    ) -> Reply<Self::WatchChangesStream> {
        let since = request.into_inner().since_version;
        // Fail at once, not inside the stream, when the token is not there.
        self.blocking(|_| Ok(())).await?;
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(follow(self.clone(), since, tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

fn event(event: change_event::Event) -> Result<ChangeEvent, Status> {
    Ok(ChangeEvent { event: Some(event) })
}

/// Feeds one change stream until the client goes away.
async fn follow<C: Connector>(
    service: AgentService<C>,
    since: u64,
    tx: mpsc::Sender<Result<ChangeEvent, Status>>,
) {
    let mut signals = service.signal.subscribe();
    let mut epoch = signals.borrow_and_update().epoch;
    let mut connections = service.device.connections();
    let mut last = since;
    loop {
        let connected_now = service.device.connections();
        let new_epoch = signals.borrow_and_update().epoch;
        let mut outgoing = Vec::new();
        if connected_now != connections || new_epoch != epoch {
            // A new store (reconnection) or a re-scan: versions start afresh.
            let reason = if connected_now != connections {
                "recovered"
            } else {
                "rescan"
            };
            connections = connected_now;
            epoch = new_epoch;
            match service.blocking(|store| Ok(store.version())).await {
                Ok(version) => {
                    last = version;
                    outgoing.push(event(change_event::Event::Resync(Resync {
                        version,
                        reason: reason.into(),
                    })));
                }
                Err(status) => outgoing.push(Err(status)),
            }
        } else {
            match service
                .blocking(move |store| Ok(store.changes_since(last)))
                .await
            {
                Ok(changes) if !changes.complete => {
                    last = changes.version;
                    outgoing.push(event(change_event::Event::Resync(Resync {
                        version: changes.version,
                        reason: "history".into(),
                    })));
                }
                Ok(changes) => {
                    for summary in changes.changed {
                        outgoing.push(event(change_event::Event::Upsert(entry(summary))));
                    }
                    for name in changes.removed {
                        outgoing.push(event(change_event::Event::Removed(Removed {
                            name,
                            version: changes.version,
                        })));
                    }
                    last = changes.version;
                }
                // Not connected: the stream ends with this status; the client follows
                // again (from a fresh GetIndex) once the agent is back.
                Err(status) => outgoing.push(Err(status)),
            }
        }
        for item in outgoing {
            let last_item = item.is_err();
            if tx.send(item).await.is_err() || last_item {
                return;
            }
        }
        tokio::select! {
            changed = signals.changed() => if changed.is_err() { return },
            _ = tokio::time::sleep(service.poll) => {}
            _ = tx.closed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_store::token::TokenError;
    use tonic::Code;

    fn token(kind: TokenErrorKind) -> StoreError {
        StoreError::Token(TokenError {
            call: "C_Test",
            kind,
        })
    }

    #[test]
    fn every_store_error_has_its_own_status() {
        let cases = [
            (
                StoreError::ModuleLoad {
                    path: "/x.so".into(),
                    source: hsm_store::error::LoadError::Missing,
                },
                Code::Unavailable,
            ),
            (
                StoreError::TokenNotFound {
                    selector: "label".into(),
                    available: "none".into(),
                },
                Code::Unavailable,
            ),
            (StoreError::PinIncorrect, Code::PermissionDenied),
            (StoreError::PinLocked, Code::PermissionDenied),
            (StoreError::PinInvalid("short"), Code::PermissionDenied),
            (
                StoreError::InvalidName {
                    name: "A".into(),
                    reason: "upper case",
                },
                Code::InvalidArgument,
            ),
            (StoreError::NotFound("s".into()), Code::NotFound),
            (
                StoreError::KeyNotFound {
                    name: "s".into(),
                    key: "k".into(),
                },
                Code::NotFound,
            ),
            (token(TokenErrorKind::TokenLost), Code::Unavailable),
            (token(TokenErrorKind::PinLocked), Code::PermissionDenied),
            (token(TokenErrorKind::Other("X".into())), Code::Internal),
        ];
        for (error, code) in cases {
            let shown = error.to_string();
            assert_eq!(store_code(&error), code, "{shown}");
            assert_eq!(status(DeviceError::Store(error)).code(), code, "{shown}");
        }
    }
}
