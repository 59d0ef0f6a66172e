//! The Kubernetes API of hsm-secrets-operator: the CRD types, exactly as the Go operator
//! defined them (group `hsm.j5t.io`, version `v1alpha1`) so that every manifest written for it
//! applies unchanged; the names shared across components; and the discovery report that
//! discovery pods publish.

pub mod crdgen;
pub mod device;
pub mod names;
pub mod pool;
pub mod report;
pub mod secret;

pub use device::{HSMDevice, HSMDeviceSpec};
pub use pool::{HSMPool, HSMPoolSpec, HSMPoolStatus};
pub use secret::{HSMSecret, HSMSecretSpec, HSMSecretStatus};

/// The API group.
pub const GROUP: &str = "hsm.j5t.io";
/// The API version.
pub const VERSION: &str = "v1alpha1";
