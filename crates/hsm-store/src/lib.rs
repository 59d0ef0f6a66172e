//! The PKCS#11 secret store of hsm-secrets-operator.
//!
//! A secret is a set of keys and values kept on an HSM token in the layout the Go operator
//! used ([`layout`]), so tokens move between the two unchanged. On top of that layout this
//! crate adds what the Go operator lacked: exact name matching, no cap on the object count,
//! only its own objects touched, atomic writes ([`journal`]), and an index of the token so
//! that listing and change detection cost no token round trips ([`index`]).
//!
//! [`Store`] runs over any [`token::Token`]: a real module ([`token::Pkcs11Token`]), memory
//! ([`token::MemoryToken`]), or a wrapper that counts or cuts calls
//! ([`token::InstrumentedToken`]).

pub mod checksum;
pub mod data;
pub mod error;
pub mod index;
pub mod journal;
pub mod layout;
pub mod metadata;
pub mod name;
mod store;
pub mod token;

pub use data::{SecretData, SecretValue, secret_data};
pub use error::{Result, StoreError};
pub use index::{Changes, RescanReport, SecretSummary};
pub use metadata::{MetadataChange, SecretMetadata};
pub use store::{SecretStore, Store, WriteOutcome};
pub use token::{MemoryToken, Module, Pkcs11Token, TokenInfo, TokenSelector};

/// A store on an in-memory token, for tests and demos that have no module.
pub type MemoryStore = Store<MemoryToken>;

impl MemoryStore {
    /// An empty in-memory store.
    pub fn in_memory() -> Self {
        Store::open(MemoryToken::new()).expect("an empty memory token always opens")
    }
}

#[cfg(feature = "test-support")]
pub mod testing;
