//! How a device reaches its token: find it, log in, change its PIN. The device's logic
//! (backoff, refused PINs, recovery after a loss) and the gRPC service above it are written
//! against this trait, so that they run on a real PKCS#11 module ([`Pkcs11Connector`]) and,
//! in tests, on a memory token that can be cut at any call.

use crate::device::NotReadyReason;
use hsm_store::token::Token;
use hsm_store::{Module, Pkcs11Token, StoreError, TokenSelector};
use secrecy::SecretString;
use std::path::PathBuf;

/// Opens connections to one token.
pub trait Connector: Send + Sync + 'static {
    /// The token a connection gives.
    type Token: Token + 'static;

    /// Finds the token without logging in, and returns its serial number (refused PINs are
    /// remembered per serial). A token that is not there is [`NotReadyReason::TokenAbsent`].
    fn locate(&self) -> Result<String, (NotReadyReason, String)>;

    /// Logs in with `pin`. [`StoreError::PinIncorrect`] means the token refused this PIN:
    /// the device never offers it again.
    fn open(&self, pin: &SecretString) -> Result<Self::Token, StoreError>;

    /// Changes the user PIN through an open token.
    fn change_pin(
        &self,
        token: &Self::Token,
        old: &SecretString,
        new: &SecretString,
    ) -> Result<(), StoreError>;

    /// Where the token is, for logs and `Debug` (no PIN).
    fn describe(&self) -> String;
}

/// A token on a PKCS#11 module, chosen by a selector: what the agent runs on.
#[derive(Debug, Clone)]
pub struct Pkcs11Connector {
    /// The module's path.
    pub module: PathBuf,
    /// Which of its tokens.
    pub selector: TokenSelector,
}

impl Connector for Pkcs11Connector {
    type Token = Pkcs11Token;

    fn locate(&self) -> Result<String, (NotReadyReason, String)> {
        let module = Module::load(&self.module).map_err(|e| {
            (
                NotReadyReason::ModuleUnavailable,
                hsm_store::error::chain(&e),
            )
        })?;
        module
            .tokens()
            .ok()
            .and_then(|tokens| {
                let slot = module.find_slot(&self.selector).ok()?;
                tokens
                    .into_iter()
                    .find(|(s, _)| *s == slot)
                    .map(|(_, info)| info.serial_number)
            })
            .ok_or_else(|| {
                (
                    NotReadyReason::TokenAbsent,
                    format!("no token matches {}", self.selector),
                )
            })
    }

    fn open(&self, pin: &SecretString) -> Result<Pkcs11Token, StoreError> {
        let module = Module::load(&self.module)?;
        Pkcs11Token::open(&module, &self.selector, pin)
    }

    fn change_pin(
        &self,
        token: &Pkcs11Token,
        old: &SecretString,
        new: &SecretString,
    ) -> Result<(), StoreError> {
        token.change_pin(old, new)
    }

    fn describe(&self) -> String {
        format!("{} ({})", self.module.display(), self.selector)
    }
}
