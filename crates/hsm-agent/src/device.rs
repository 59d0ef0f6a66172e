//! One device's token session: connect, keep it, lose it, get it back.
//!
//! The device connects on demand and after every loss, with exponential backoff. It never
//! offers the token a PIN that token has refused: a refusal is remembered (see
//! [`crate::refusals`]) and the device stays not-ready, saying why, until the PIN source holds
//! a different PIN. When an operation reports the token gone (`CKR_DEVICE_REMOVED`,
//! `CKR_SESSION_HANDLE_INVALID`, …) the store is dropped and the next attempt re-opens the
//! token and re-scans it: no process restart.

use crate::connector::{Connector, Pkcs11Connector};
use crate::pin::PinSource;
use crate::refusals::Refusals;
use hsm_store::error::chain;
use hsm_store::{Pkcs11Token, SecretStore, Store, StoreError, TokenSelector};

use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The store a device serves: on a PKCS#11 token unless said otherwise.
pub type DeviceStore<T = Pkcs11Token> = Store<T>;

/// Where the token is and where the agent keeps its state.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// The PKCS#11 module.
    pub module: PathBuf,
    /// Which token of it.
    pub selector: TokenSelector,
    /// Where refused PINs are remembered across restarts (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    /// First wait after a failed attempt; doubles up to `max_backoff`.
    pub min_backoff: Duration,
    /// Longest wait between attempts.
    pub max_backoff: Duration,
}

impl DeviceConfig {
    /// A configuration with the default backoff (1 s doubling to 60 s).
    pub fn new(module: impl Into<PathBuf>, selector: TokenSelector) -> Self {
        DeviceConfig {
            module: module.into(),
            selector,
            state_dir: None,
            min_backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

/// Why the device cannot serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotReadyReason {
    /// Not connected yet, or between attempts.
    Connecting,
    /// The token refused the current PIN; waiting for a different one.
    PinRefused,
    /// The token's PIN is locked; it needs the SO PIN.
    PinLocked,
    /// The PIN source has no usable PIN.
    PinUnavailable,
    /// The module could not be loaded.
    ModuleUnavailable,
    /// No token matches the selector (card not inserted, wrong label).
    TokenAbsent,
    /// The token went away during an operation.
    TokenLost,
    /// Anything else; the message says what.
    Failed,
}

impl NotReadyReason {
    /// A stable name for health bodies and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NotReadyReason::Connecting => "Connecting",
            NotReadyReason::PinRefused => "PinRefused",
            NotReadyReason::PinLocked => "PinLocked",
            NotReadyReason::PinUnavailable => "PinUnavailable",
            NotReadyReason::ModuleUnavailable => "ModuleUnavailable",
            NotReadyReason::TokenAbsent => "TokenAbsent",
            NotReadyReason::TokenLost => "TokenLost",
            NotReadyReason::Failed => "Failed",
        }
    }
}

/// The device's state, for `/readyz` and for callers refused service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    /// Serving.
    Ready,
    /// Not serving, and why (the message never holds a PIN or secret).
    NotReady {
        /// The kind of trouble.
        reason: NotReadyReason,
        /// Details for humans.
        message: String,
    },
}

/// An operation refused or failed by the device.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The device is not ready; the caller should answer "unavailable".
    #[error("device not ready ({}): {message}", reason.as_str())]
    NotReady {
        /// Why.
        reason: NotReadyReason,
        /// Details.
        message: String,
    },
    /// The store refused or failed the operation (bad input, not found, …).
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct State<T: hsm_store::token::Token> {
    store: Option<Arc<DeviceStore<T>>>,
    /// The last version of the store that was lost, to number on from.
    last_version: u64,
    /// The serial number of the token connected (or last connected).
    serial: String,
    readiness: Readiness,
    next_attempt: Instant,
    backoff: Duration,
}

/// One device, shared by every request handler. Generic over how it reaches its token
/// (see [`Connector`]); `Device` alone is the agent's: a token on a PKCS#11 module.
pub struct Device<C: Connector = Pkcs11Connector> {
    config: DeviceConfig,
    connector: C,
    pin: Box<dyn PinSource>,
    refusals: Mutex<Refusals>,
    state: Mutex<State<C::Token>>,
    /// Serialises connection attempts, without blocking readers of `state`.
    connecting: Mutex<()>,
    login_attempts: AtomicU64,
    connections: AtomicU64,
    /// A PIN set through [`Device::change_pin`], used until the PIN source holds it too.
    pin_override: Mutex<Option<SecretString>>,
}

impl<C: Connector> std::fmt::Debug for Device<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("token", &self.connector.describe())
            .field("readiness", &self.readiness())
            .finish()
    }
}

impl Device<Pkcs11Connector> {
    /// A device on the PKCS#11 token `config` names, that will connect on first use.
    pub fn new(config: DeviceConfig, pin: Box<dyn PinSource>) -> Self {
        let connector = Pkcs11Connector {
            module: config.module.clone(),
            selector: config.selector.clone(),
        };
        Device::with_connector(connector, config, pin)
    }
}

impl<C: Connector> Device<C> {
    /// A device reaching its token through `connector`, that will connect on first use.
    /// `config` gives the backoff and the state directory (its module and selector are
    /// the connector's business).
    pub fn with_connector(connector: C, config: DeviceConfig, pin: Box<dyn PinSource>) -> Self {
        let refusals = match &config.state_dir {
            Some(dir) => Refusals::load(dir),
            None => Refusals::in_memory(),
        };
        Device {
            state: Mutex::new(State {
                store: None,
                last_version: 0,
                serial: String::new(),
                readiness: Readiness::NotReady {
                    reason: NotReadyReason::Connecting,
                    message: "not connected yet".into(),
                },
                next_attempt: Instant::now(),
                backoff: config.min_backoff,
            }),
            config,
            connector,
            pin,
            connecting: Mutex::new(()),
            refusals: Mutex::new(refusals),
            login_attempts: AtomicU64::new(0),
            connections: AtomicU64::new(0),
            pin_override: Mutex::new(None),
        }
    }

    /// Changes the token's user PIN. The new PIN is used for reconnecting until the PIN
    /// source (e.g. the Kubernetes Secret) is updated to hold it.
    pub fn change_pin(&self, old: &SecretString, new: &SecretString) -> Result<(), DeviceError> {
        let store = self.store_or_connect()?;
        match self.connector.change_pin(store.token(), old, new) {
            Ok(()) => {
                *self.pin_override.lock() = Some(new.clone());
                Ok(())
            }
            Err(e) if e.is_token_lost() => {
                self.lost(&e);
                Err(DeviceError::NotReady {
                    reason: NotReadyReason::TokenLost,
                    message: chain(&e),
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The PIN to offer: the one set by `change_pin` until the source agrees, else the
    /// source's.
    fn current_pin(&self) -> Result<SecretString, crate::pin::PinError> {
        let from_source = self.pin.current();
        let mut pin_override = self.pin_override.lock();
        if let Some(set) = pin_override.as_ref() {
            if matches!(&from_source, Ok(p) if p.expose_secret() == set.expose_secret()) {
                *pin_override = None;
            } else {
                return Ok(set.clone());
            }
        }
        from_source
    }

    /// How the device reaches its token.
    pub fn connector(&self) -> &C {
        &self.connector
    }

    /// The device's state now.
    pub fn readiness(&self) -> Readiness {
        self.state.lock().readiness.clone()
    }

    /// How many times this device has offered the token a PIN.
    pub fn login_attempts(&self) -> u64 {
        self.login_attempts.load(Ordering::SeqCst)
    }

    /// The serial number of the token connected (or last connected); empty before the first
    /// connection. Known without a token call.
    pub fn serial(&self) -> String {
        self.state.lock().serial.clone()
    }

    /// How many times it connected (1 + the number of recoveries).
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::SeqCst)
    }

    /// Connects now if not connected and the backoff allows; returns the state after.
    pub fn ensure_connected(&self) -> Readiness {
        self.store_or_connect().map_or_else(
            |e| match e {
                DeviceError::NotReady { reason, message } => {
                    Readiness::NotReady { reason, message }
                }
                DeviceError::Store(e) => Readiness::NotReady {
                    reason: NotReadyReason::Failed,
                    message: chain(&e),
                },
            },
            |_| Readiness::Ready,
        )
    }

    /// Runs `operation` on the store. A token loss drops the store (the next call reconnects)
    /// and is reported as not-ready.
    pub fn with_store<R>(
        &self,
        operation: impl FnOnce(&DeviceStore<C::Token>) -> Result<R, StoreError>,
    ) -> Result<R, DeviceError> {
        let store = self.store_or_connect()?;
        match operation(&store) {
            Err(e) if e.is_token_lost() => {
                self.lost(&e);
                Err(DeviceError::NotReady {
                    reason: NotReadyReason::TokenLost,
                    message: chain(&e),
                })
            }
            other => other.map_err(DeviceError::from),
        }
    }

    /// Asks the token itself whether it is there (`C_GetTokenInfo`), reconnecting if needed.
    pub fn probe(&self) -> Readiness {
        match self.with_store(|store| store.info()) {
            Ok(_) => Readiness::Ready,
            Err(DeviceError::NotReady { reason, message }) => {
                Readiness::NotReady { reason, message }
            }
            Err(DeviceError::Store(e)) => Readiness::NotReady {
                reason: NotReadyReason::Failed,
                message: chain(&e),
            },
        }
    }

    fn lost(&self, error: &StoreError) {
        let mut state = self.state.lock();
        if let Some(store) = state.store.take() {
            state.last_version = store.version();
            tracing::warn!(error = %chain(error), "token lost; reconnecting");
        }
        state.readiness = Readiness::NotReady {
            reason: NotReadyReason::TokenLost,
            message: chain(error),
        };
        state.next_attempt = Instant::now();
        state.backoff = self.config.min_backoff;
    }

    fn store_or_connect(&self) -> Result<Arc<DeviceStore<C::Token>>, DeviceError> {
        if let Some(ready) = self.current_store()? {
            return Ok(ready);
        }
        // One connection attempt at a time; the state lock is not held while it runs, so
        // readiness and health answer at once even while a slow token is being scanned.
        let _connecting = self.connecting.lock();
        if let Some(ready) = self.current_store()? {
            return Ok(ready);
        }
        let previous_version = self.state.lock().last_version;
        let attempt = self.connect(previous_version);
        let mut state = self.state.lock();
        match attempt {
            Ok((store, serial)) => {
                let store = Arc::new(store);
                state.store = Some(store.clone());
                state.serial = serial;
                state.readiness = Readiness::Ready;
                state.backoff = self.config.min_backoff;
                self.connections.fetch_add(1, Ordering::SeqCst);
                tracing::info!(secrets = store.entries().len(), "token connected");
                Ok(store)
            }
            Err((reason, message)) => {
                state.next_attempt = Instant::now() + state.backoff;
                state.backoff = (state.backoff * 2).min(self.config.max_backoff);
                let readiness = Readiness::NotReady { reason, message };
                if readiness != state.readiness {
                    tracing::warn!(reason = reason.as_str(), "device not ready");
                }
                state.readiness = readiness;
                Err(not_ready(&state.readiness))
            }
        }
    }

    /// The connected store, `None` when an attempt is due now, or the reason to wait.
    fn current_store(&self) -> Result<Option<Arc<DeviceStore<C::Token>>>, DeviceError> {
        let state = self.state.lock();
        if let Some(store) = &state.store {
            return Ok(Some(store.clone()));
        }
        if Instant::now() < state.next_attempt {
            return Err(not_ready(&state.readiness));
        }
        Ok(None)
    }

    /// One connection attempt; the store numbers versions on from `previous_version`.
    /// Returns the store and the token's serial number.
    fn connect(&self, previous_version: u64) -> Attempt<C::Token> {
        let serial = self.connector.locate()?;
        let pin = self
            .current_pin()
            .map_err(|e| (NotReadyReason::PinUnavailable, chain(&e)))?;
        if self.refusals.lock().is_refused(&serial, &pin) {
            return Err((
                NotReadyReason::PinRefused,
                format!(
                    "the token refused the PIN from {}; waiting for a different PIN",
                    self.pin.describe()
                ),
            ));
        }
        self.login_attempts.fetch_add(1, Ordering::SeqCst);
        let token = match self.connector.open(&pin) {
            Ok(token) => token,
            Err(StoreError::PinIncorrect) => {
                if let Err(e) = self.refusals.lock().refuse(&serial, &pin) {
                    tracing::error!(error = %chain(&e), "cannot persist the PIN refusal");
                }
                return Err((
                    NotReadyReason::PinRefused,
                    format!(
                        "the token refused the PIN from {}; it will not be tried again",
                        self.pin.describe()
                    ),
                ));
            }
            Err(StoreError::PinLocked) => {
                return Err((NotReadyReason::PinLocked, StoreError::PinLocked.to_string()));
            }
            Err(e @ StoreError::TokenNotFound { .. }) => {
                return Err((NotReadyReason::TokenAbsent, chain(&e)));
            }
            Err(e) => return Err((NotReadyReason::Failed, chain(&e))),
        };
        Store::open_continuing(token, previous_version)
            .map(|store| (store, serial))
            .map_err(|e| {
                let reason = if e.is_token_lost() {
                    NotReadyReason::TokenLost
                } else {
                    NotReadyReason::Failed
                };
                (reason, chain(&e))
            })
    }
}

/// A connection attempt: the store and the token's serial number, or why not.
type Attempt<T> = Result<(DeviceStore<T>, String), (NotReadyReason, String)>;

fn not_ready(readiness: &Readiness) -> DeviceError {
    match readiness {
        Readiness::NotReady { reason, message } => DeviceError::NotReady {
            reason: *reason,
            message: message.clone(),
        },
        Readiness::Ready => DeviceError::NotReady {
            reason: NotReadyReason::Connecting,
            message: "reconnecting".into(),
        },
    }
}
