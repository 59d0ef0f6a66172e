//! The agent: the only process of hsm-secrets-operator that speaks PKCS#11. It owns one
//! device's token session, keeps it alive across token loss, never retries a PIN the token
//! has refused, and (in later modules) serves the store over gRPC.

pub mod cli;
pub mod connector;
pub mod device;
pub mod health;
pub mod kube_pin;
pub mod pcscd;
pub mod pin;
pub mod refusals;
pub mod run;
pub mod service;
pub mod tls;
pub mod validate;

#[cfg(feature = "test-support")]
pub mod fuzzing;
#[cfg(feature = "test-support")]
pub mod testing;
