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
//!
//! The `emulated` backend's node runs pods in one of two ways ([`Runtime`], chosen by
//! `E2E_RUNTIME`):
//!
//! - `containers` (the default where Podman answers): every pod as Podman containers of the
//!   real images, built in the run from the debug binaries it builds ([`images`]), on an
//!   internal Podman network, each pod with its own address and network namespace;
//! - `processes`: every pod as local processes of the workspace binaries, each on its own
//!   loopback address; quick to start, for debugging a scenario.
//!
//! Containers, networks and images of a run carry labels with the checkout's run id
//! ([`emulated::run_id`]): a run removes what a killed run of the same checkout left when it
//! starts, and everything it made when it ends (also on Ctrl-C or SIGTERM).

pub mod card;
pub mod cluster;
pub mod emulated;
pub mod images;
pub mod install;
pub mod kind;
pub mod node;
pub mod process;
pub mod rbac_usage;
pub mod scenarios;
pub mod softhsm;

use std::path::PathBuf;

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

/// How the `emulated` backend's node runs pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    /// Podman containers of the real images.
    Containers,
    /// Local processes of the workspace binaries.
    Processes,
}

impl Runtime {
    /// The runtime `E2E_RUNTIME` names; unset, containers where Podman answers
    /// (`podman_answers` is asked only then), else processes.
    pub fn from_env(podman_answers: impl FnOnce() -> bool) -> anyhow::Result<Runtime> {
        Runtime::parse(std::env::var("E2E_RUNTIME").ok().as_deref(), podman_answers)
    }

    fn parse(
        value: Option<&str>,
        podman_answers: impl FnOnce() -> bool,
    ) -> anyhow::Result<Runtime> {
        match value {
            None | Some("") => Ok(if podman_answers() {
                Runtime::Containers
            } else {
                Runtime::Processes
            }),
            Some("containers") => Ok(Runtime::Containers),
            Some("processes") => Ok(Runtime::Processes),
            Some(other) => {
                anyhow::bail!("E2E_RUNTIME={other:?}: expected containers or processes")
            }
        }
    }
}

/// The workspace's root directory (where `deploy/` is). Cargo names the crate's directory
/// at run time; the compile-time value is a fallback only, since cargo reuses a build made in
/// another clone of the same sources with that clone's path baked in.
pub fn workspace_root() -> PathBuf {
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runtime_is_containers_where_podman_answers_unless_named() {
        assert_eq!(Runtime::parse(None, || true).unwrap(), Runtime::Containers);
        assert_eq!(
            Runtime::parse(Some(""), || false).unwrap(),
            Runtime::Processes
        );
        let asked = |_: bool| -> bool { panic!("podman is not asked when a runtime is named") };
        assert_eq!(
            Runtime::parse(Some("processes"), || asked(true)).unwrap(),
            Runtime::Processes
        );
        assert_eq!(
            Runtime::parse(Some("containers"), || asked(true)).unwrap(),
            Runtime::Containers
        );
        let error = Runtime::parse(Some("vm"), || true).unwrap_err().to_string();
        assert!(error.contains("containers or processes"), "{error}");
    }
}
