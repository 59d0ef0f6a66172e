//! Test support: a device on an in-memory token that tests can cut at any call, so the
//! device and service logic above the token (recovery, settling interrupted writes) is tested
//! fast and exhaustively, beside the tests on real modules and the virtual card.

use crate::connector::Connector;
use crate::device::{Device, DeviceConfig, NotReadyReason};
use crate::pin::FixedPin;
use hsm_store::token::{InstrumentedToken, MemoryToken};
use hsm_store::{StoreError, TokenSelector};
use parking_lot::Mutex;
use secrecy::{ExposeSecret, SecretString};
use std::sync::Arc;
use std::time::Duration;

/// The token a [`MemoryConnector`] hands out: one memory token, counted and cuttable.
pub type CutToken = Arc<InstrumentedToken<Arc<MemoryToken>>>;

/// A connector to one in-memory token with a user PIN. Opening it again heals a cut (the
/// card is plugged back in): after [`InstrumentedToken::lose_after`] the device drops the
/// token, reconnects, and finds it answering again.
pub struct MemoryConnector {
    token: CutToken,
    pin: Mutex<SecretString>,
}

impl MemoryConnector {
    /// An empty memory token whose user PIN is `pin`.
    pub fn new(pin: &str) -> Self {
        MemoryConnector {
            token: Arc::new(InstrumentedToken::new(Arc::new(MemoryToken::new()))),
            pin: Mutex::new(SecretString::from(pin)),
        }
    }

    /// The token, to cut it or to count its calls.
    pub fn token(&self) -> &CutToken {
        &self.token
    }

    /// The memory token underneath, uncounted and never cut: what a new process would find.
    pub fn memory(&self) -> &Arc<MemoryToken> {
        self.token.inner()
    }
}

impl Connector for MemoryConnector {
    type Token = CutToken;

    fn locate(&self) -> Result<String, (NotReadyReason, String)> {
        Ok("memory-0001".into())
    }

    fn open(&self, pin: &SecretString) -> Result<CutToken, StoreError> {
        if pin.expose_secret() != self.pin.lock().expose_secret() {
            return Err(StoreError::PinIncorrect);
        }
        self.token.heal();
        Ok(self.token.clone())
    }

    fn change_pin(
        &self,
        _: &CutToken,
        old: &SecretString,
        new: &SecretString,
    ) -> Result<(), StoreError> {
        let mut pin = self.pin.lock();
        if old.expose_secret() != pin.expose_secret() {
            return Err(StoreError::PinIncorrect);
        }
        *pin = new.clone();
        Ok(())
    }

    fn describe(&self) -> String {
        "a memory token".into()
    }
}

/// A device on `connector` that offers `pin` and reconnects at once (no backoff).
pub fn memory_device(connector: MemoryConnector, pin: &str) -> Device<MemoryConnector> {
    let config = DeviceConfig {
        min_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        ..DeviceConfig::new("(memory)", TokenSelector::First)
    };
    Device::with_connector(
        connector,
        config,
        Box::new(FixedPin(SecretString::from(pin))),
    )
}
