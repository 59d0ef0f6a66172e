//! What the manager runs for each HSMDevice: pure builders of the objects (§6.1–6.3 of the
//! contract), unit-tested field by field, and the controller that applies the discovery
//! DaemonSet and the HSMPool ([`run`]).

pub mod agent;
mod controller;
pub mod discovery;

pub use controller::{Error, Setup, run};
