//! The manager of hsm-secrets-operator: it keeps Kubernetes Secrets as read-only replicas
//! of what the HSMs hold.
//!
//! - [`agents`]: one device's agent as a port trait, the gRPC client (mTLS) implementing it,
//!   and the pool that follows every device's index through its change stream.
//! - [`api`]: the REST API (every replica), with TokenReview/SubjectAccessReview auth.
//! - [`resolve`]: which device's copy wins when devices disagree (pure).
//! - [`secret`]: the HSMSecret controller (dereference → build → apply → status).
//! - [`device`]: per HSMDevice, its discovery DaemonSet and HSMPool (and the agent builder);
//!   [`pool`]: the discovery pods' reports aggregated into HSMPool status; [`apply`]:
//!   server-side apply only when the desired object differs.
//! - [`placement`]: one agent Deployment per physical device, on its node, from the HSMPool.
//! - [`images`]: which image agent and discovery pods run when no flag says.
//! - [`pki`]: the CA and certificates of manager↔agent mTLS, as Secrets, renewed in time.
//! - [`mirror`]: keeps several devices holding the same secrets (pure planner, executor,
//!   runner on the leader).
//! - [`leader`]: leader election on a Lease; [`telemetry`]: metrics and probes; [`memory`]:
//!   the binary's allocator settings, which keep freed memory from staying resident.
//! - [`cli`] and [`run`]: the `--mode=manager` command line and the wiring.

pub mod agents;
pub mod api;
pub mod apply;
pub mod cli;
pub mod device;
pub mod images;
pub mod leader;
pub mod memory;
pub mod mirror;
pub mod pki;
pub mod placement;
pub mod pool;
pub mod resolve;
pub mod run;
pub mod secret;
pub mod telemetry;
#[cfg(feature = "test-support")]
pub mod testing;
