//! Backends the contract tests run on. Each call gives a fresh, empty token.
#![allow(dead_code)]

use hsm_store::testing::SoftHsm;
use hsm_store::token::{InstrumentedToken, MemoryToken, Token};
use hsm_store::{Pkcs11Token, SecretStore, Store};
use std::sync::Arc;

/// Which token a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Memory,
    SoftHsm,
    /// The virtual SmartCard-HSM through pcscd and OpenSC (one per test process).
    Pico,
}

/// A token that can be opened again, as a restarted process would.
pub enum Fresh {
    Memory(Arc<MemoryToken>),
    SoftHsm(SoftHsm),
    Pico(virtual_pico::fixture::PicoFixture, hsm_store::Module),
}

pub type AnyToken = Arc<dyn Token>;

impl Fresh {
    pub fn new(backend: Backend) -> Fresh {
        match backend {
            Backend::Memory => Fresh::Memory(Arc::new(MemoryToken::new())),
            Backend::SoftHsm => Fresh::SoftHsm(SoftHsm::new()),
            Backend::Pico => {
                let fixture = virtual_pico::fixture::PicoFixture::start().expect("virtual card");
                let module = hsm_store::Module::load(virtual_pico::fixture::OPENSC_MODULE)
                    .expect("OpenSC module");
                Fresh::Pico(fixture, module)
            }
        }
    }

    /// A new connection to the same token.
    pub fn token(&self) -> AnyToken {
        match self {
            Fresh::Memory(m) => m.clone(),
            Fresh::SoftHsm(s) => Arc::new(s.open().expect("open SoftHSM2 token")) as Arc<dyn Token>,
            Fresh::Pico(_, module) => Arc::new(
                Pkcs11Token::open(
                    module,
                    &hsm_store::TokenSelector::First,
                    &virtual_pico::fixture::USER_PIN.into(),
                )
                .expect("open the virtual card"),
            ) as Arc<dyn Token>,
        }
    }

    pub fn store(&self) -> Store<AnyToken> {
        Store::open(self.token()).expect("open store")
    }

    pub fn instrumented(&self) -> Store<Arc<InstrumentedToken<AnyToken>>> {
        Store::open(Arc::new(InstrumentedToken::new(self.token()))).expect("open store")
    }

    /// The virtual card's fixture, on the Pico backend.
    pub fn fixture(&self) -> Option<&virtual_pico::fixture::PicoFixture> {
        match self {
            Fresh::Pico(fixture, _) => Some(fixture),
            _ => None,
        }
    }

    pub fn pkcs11(&self) -> Option<Pkcs11Token> {
        match self {
            Fresh::SoftHsm(s) => Some(s.open().unwrap()),
            _ => None,
        }
    }
}

/// A secret's keys and values as plain bytes, in key order.
pub fn values(store: &dyn SecretStore, name: &str) -> Vec<(String, Vec<u8>)> {
    store
        .read(name)
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_vec()))
        .collect()
}
