//! Errors of the store. Each kind a caller must treat differently is its own variant, so that
//! the agent can refuse to retry a wrong PIN, re-open after a lost token, and map bad input to
//! `InvalidArgument`. No variant carries a secret value or a PIN.

use crate::token::TokenError;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The PKCS#11 module could not be loaded (missing file, not a PKCS#11 library).
    #[error("cannot load PKCS#11 module {path}")]
    ModuleLoad {
        /// The module path as given.
        path: String,
        /// Why: the loader's or the module's own error.
        #[source]
        source: LoadError,
    },
    /// No slot holds a token matching the selector.
    #[error("no token matches {selector} (tokens present: {available})")]
    TokenNotFound {
        /// The selector, as the user wrote it.
        selector: String,
        /// The labels of the tokens that are present, for the message.
        available: String,
    },
    /// The token rejected the PIN (`CKR_PIN_INCORRECT`). Retrying the same PIN spends another
    /// of the token's few tries: callers must wait until the PIN changes.
    #[error("the token rejected the PIN (CKR_PIN_INCORRECT); not retrying the same PIN")]
    PinIncorrect,
    /// The PIN is locked (`CKR_PIN_LOCKED`): it needs the SO PIN to unblock.
    #[error("the token's user PIN is locked (CKR_PIN_LOCKED); unblock it with the SO PIN")]
    PinLocked,
    /// The PIN is malformed for this token (length or characters).
    #[error("the PIN is not valid for this token ({0})")]
    PinInvalid(&'static str),
    /// A secret name that cannot be stored.
    #[error("invalid secret name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name (names are not secret).
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A key name that cannot be stored.
    #[error("invalid key {key:?} in secret {name:?}: {reason}")]
    InvalidKey {
        /// The secret.
        name: String,
        /// The rejected key.
        key: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The write would put an object under a label another secret already owns: in the
    /// shared layout key `k` of `a/b` and key `data` of `a/b/k` are both labelled `a/b/k`.
    #[error("secret {name:?} cannot be written: label {label:?} belongs to secret {owner:?}")]
    LabelConflict {
        /// The secret being written.
        name: String,
        /// The contested label.
        label: String,
        /// The secret that owns it.
        owner: String,
    },
    /// No secret of that name (or only a tombstone).
    #[error("secret {0:?} not found")]
    NotFound(String),
    /// The secret exists but has no such key.
    #[error("secret {name:?} has no key {key:?}")]
    KeyNotFound {
        /// The secret.
        name: String,
        /// The missing key.
        key: String,
    },
    /// An object on the token could not be understood (bad metadata JSON, bad journal).
    #[error("object {label:?} on the token is malformed: {reason}")]
    Malformed {
        /// The object's label.
        label: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A PKCS#11 call failed. `is_token_lost()` tells whether re-opening may help.
    #[error(transparent)]
    Token(#[from] TokenError),
}

impl StoreError {
    /// True when the token or session went away and the store must be re-opened
    /// (`CKR_DEVICE_REMOVED`, `CKR_TOKEN_NOT_PRESENT`, `CKR_SESSION_HANDLE_INVALID`, …).
    pub fn is_token_lost(&self) -> bool {
        matches!(self, StoreError::Token(e) if e.is_token_lost())
    }
}

/// Why a PKCS#11 module could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// No file at the path.
    #[error("no such file")]
    Missing,
    /// The file is not a loadable PKCS#11 library (`dlopen` or `C_GetFunctionList` failed).
    #[error("not a PKCS#11 library")]
    Library(#[source] cryptoki::error::Error),
    /// The module refused `C_Initialize`.
    #[error("C_Initialize failed")]
    Initialize(#[source] cryptoki::error::Error),
}

/// An error and every error beneath it, `outer: inner: …`, for logs and messages: with
/// `#[source]` the causes are not part of an error's own `Display`.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Result alias of the store.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
