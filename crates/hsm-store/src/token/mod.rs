//! The object-level interface the store is written against: the handful of PKCS#11 calls it
//! needs, one method per call. Keeping it this narrow lets the same store logic run on a real
//! module, in memory, and under a wrapper that counts calls or cuts them off at any point.

mod faults;
mod memory;
mod pkcs11;

pub use faults::{CallCounts, InstrumentedToken};
pub use memory::MemoryToken;
pub use pkcs11::{Module, Pkcs11Token, TokenSelector};

use std::sync::Arc;
use zeroize::Zeroizing;

/// A token object's handle, valid for every session of this process while the object lives.
pub type Handle = u64;

/// The attributes the store reads from an object.
#[derive(Debug)]
pub struct StoredObject {
    /// `CKA_LABEL`.
    pub label: String,
    /// `CKA_VALUE`, wiped on drop.
    pub value: Zeroizing<Vec<u8>>,
}

/// A private `CKO_DATA` token object to create.
pub struct NewObject<'a> {
    /// `CKA_LABEL`.
    pub label: &'a str,
    /// `CKA_APPLICATION`.
    pub application: &'a str,
    /// `CKA_OBJECT_ID`: DER of the data-type OID.
    pub object_id: Vec<u8>,
    /// `CKA_VALUE`.
    pub value: &'a [u8],
}

impl std::fmt::Debug for NewObject<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewObject")
            .field("label", &self.label)
            .field("application", &self.application)
            .field("value_len", &self.value.len())
            .finish()
    }
}

/// Token, slot and module facts, as `C_GetTokenInfo` gives them (trimmed).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenInfo {
    /// Token label.
    pub label: String,
    /// Manufacturer.
    pub manufacturer: String,
    /// Model.
    pub model: String,
    /// Serial number.
    pub serial_number: String,
    /// Firmware version, `major.minor`.
    pub firmware_version: String,
}

/// Why a token call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenErrorKind {
    /// `CKR_PIN_INCORRECT`.
    PinIncorrect,
    /// `CKR_PIN_LOCKED`.
    PinLocked,
    /// `CKR_PIN_LEN_RANGE` / `CKR_PIN_INVALID`.
    PinInvalid,
    /// The token, device or session is gone; the store must be re-opened.
    TokenLost,
    /// The object no longer exists (another writer removed it).
    ObjectGone,
    /// The object is still listed under `label`, but its value is gone for good: a destroy
    /// was cut between deleting the value and deleting the object's description. OpenSC's
    /// SmartCard-HSM driver deletes the two files separately and cannot destroy such a
    /// ghost afterwards; only re-initialising the card reclaims it.
    ValueLost {
        /// The ghost's label (a secret's name and key: no value).
        label: String,
    },
    /// The module does not allow this (e.g. relabelling an object).
    Unsupported,
    /// A fault injected by [`InstrumentedToken`].
    Injected,
    /// Any other return value, by name.
    Other(String),
}

/// A failed token call: which call, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{call} failed: {kind:?}")]
pub struct TokenError {
    /// The PKCS#11 function (`C_CreateObject`, …).
    pub call: &'static str,
    /// The reason.
    pub kind: TokenErrorKind,
}

impl TokenError {
    /// True when re-opening the token may cure the failure.
    pub fn is_token_lost(&self) -> bool {
        self.kind == TokenErrorKind::TokenLost
    }
}

/// The PKCS#11 calls the store makes. Implementations must be usable from several threads;
/// the store serialises writes itself.
pub trait Token: Send + Sync {
    /// `C_FindObjects*`: handles of every private data object with this application (and
    /// label, when given). No cap on the count.
    fn find(&self, application: &str, label: Option<&str>) -> Result<Vec<Handle>, TokenError>;
    /// `C_GetAttributeValue` of label and value.
    fn read(&self, handle: Handle) -> Result<StoredObject, TokenError>;
    /// Label and value when their lengths are known (from the index): one
    /// `C_GetAttributeValue` with buffers of those sizes, where [`read`](Token::read) needs a
    /// second call to learn them. An object whose label or value no longer has that length
    /// is read as by `read`.
    fn read_sized(
        &self,
        handle: Handle,
        label_len: usize,
        value_len: usize,
    ) -> Result<StoredObject, TokenError> {
        let _ = (label_len, value_len);
        self.read(handle)
    }
    /// `C_CreateObject` of a private data token object.
    fn create(&self, object: &NewObject<'_>) -> Result<Handle, TokenError>;
    /// `C_DestroyObject`.
    fn destroy(&self, handle: Handle) -> Result<(), TokenError>;
    /// `C_SetAttributeValue` of `CKA_LABEL`: one atomic step, which is how a write commits.
    /// [`TokenErrorKind::Unsupported`] when the module cannot relabel objects.
    fn relabel(&self, handle: Handle, label: &str) -> Result<(), TokenError>;
    /// `C_GetTokenInfo`.
    fn info(&self) -> Result<TokenInfo, TokenError>;
}

impl<T: Token + ?Sized> Token for Arc<T> {
    fn find(&self, application: &str, label: Option<&str>) -> Result<Vec<Handle>, TokenError> {
        (**self).find(application, label)
    }
    fn read(&self, handle: Handle) -> Result<StoredObject, TokenError> {
        (**self).read(handle)
    }
    fn read_sized(
        &self,
        handle: Handle,
        label_len: usize,
        value_len: usize,
    ) -> Result<StoredObject, TokenError> {
        (**self).read_sized(handle, label_len, value_len)
    }
    fn create(&self, object: &NewObject<'_>) -> Result<Handle, TokenError> {
        (**self).create(object)
    }
    fn destroy(&self, handle: Handle) -> Result<(), TokenError> {
        (**self).destroy(handle)
    }
    fn relabel(&self, handle: Handle, label: &str) -> Result<(), TokenError> {
        (**self).relabel(handle, label)
    }
    fn info(&self) -> Result<TokenInfo, TokenError> {
        (**self).info()
    }
}
