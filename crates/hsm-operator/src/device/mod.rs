//! What the manager runs for each HSMDevice: pure builders of the objects (§6.1–6.3 of the
//! contract), unit-tested field by field, and the controller that applies the discovery
//! DaemonSet and the HSMPool ([`run`]).

pub mod agent;
mod controller;
pub mod discovery;

pub use controller::{Error, Setup, run};

use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A variable from the downward API (`fieldRef`), as the agent and discovery pods get their
/// node, namespace, name and IP.
fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn quantity(value: &str) -> Quantity {
    Quantity(value.to_owned())
}
