//! The operator's end-to-end scenarios: the whole product installed from `deploy/`, run as it
//! ships, driven only through what users touch (Kubernetes objects, the REST API, `kubectl
//! hsm`) and checked on Kubernetes objects and on the HSM itself, never on logs alone.
//!
//! One set of scenarios ([`scenarios`]), three backends ([`Backend`], chosen by `E2E_BACKEND`):
//!
//! - `emulated` (default): the project's API emulator (TLS, RBAC enforced, audit log) and the
//!   pod runner playing kubelet for one node, so the manager, discovery and agents run from
//!   the pod specs the manifests and the manager write, each as its own ServiceAccount. The
//!   audit log then proves least privilege ([`rbac_usage`]).
//! - `kind`: where the `kind` binary and a container engine exist: a kind cluster with the
//!   images loaded ([`kind`] builds the commands).
//! - `cluster`: any real cluster from `KUBECONFIG`, with the images already loaded.

pub mod cluster;
pub mod emulated;
pub mod install;
pub mod kind;
pub mod node;
pub mod process;
pub mod rbac_usage;
pub mod scenarios;
pub mod softhsm;

use std::path::{Path, PathBuf};

/// Where the scenarios run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The API emulator and the pod runner on this machine.
    Emulated,
    /// A kind cluster made for the run.
    Kind,
    /// The cluster `KUBECONFIG` names.
    Cluster,
}

impl Backend {
    /// The backend `E2E_BACKEND` names (`emulated` when unset).
    pub fn from_env() -> anyhow::Result<Backend> {
        match std::env::var("E2E_BACKEND").as_deref() {
            Err(_) | Ok("") | Ok("emulated") => Ok(Backend::Emulated),
            Ok("kind") => Ok(Backend::Kind),
            Ok("cluster") => Ok(Backend::Cluster),
            Ok(other) => anyhow::bail!("E2E_BACKEND={other:?}: expected emulated, kind or cluster"),
        }
    }
}

/// The workspace's root directory (where `deploy/` is).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives in the workspace root")
        .to_owned()
}

/// Prints a progress line, flushed at once (the run is long; CI shows where it is).
pub fn progress(line: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}
