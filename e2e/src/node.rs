//! The node beneath Kubernetes: what scenarios do to it that no API call can. A container's
//! process is killed as a crash or the OOM killer kills it (the Pod stays; its kubelet sees
//! the container die and restarts it), and a file a pod keeps in its volume is read where the
//! node keeps it.
//!
//! [`LocalNode`] is the node of the pod runner's process runtime, where each container is a
//! child process of this run; [`PodmanNode`] that of its container runtime, which kills with
//! the engine (`podman kill`).

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a scenario can do to the node its pods run on.
pub trait Node: Send + Sync {
    /// Kills container `container` of `pod` now (SIGKILL to its main process), as a crash
    /// does: the Pod object is left alone, so whatever restarts it is the node's own
    /// restart policy at work.
    fn kill_container(&self, pod: &Pod, container: &str) -> Result<()>;

    /// The directory on the node that holds volume `volume` of `pod` (an emptyDir's files).
    fn volume_dir(&self, pod: &Pod, volume: &str) -> Result<PathBuf>;
}

/// The pod runner's node when containers are local processes: each pod has a private
/// directory under the runner's state directory, its containers run there (their working
/// directory) as children of this process, each started from the executable its image
/// stands for.
pub struct LocalNode {
    /// The runner's state directory (`<namespace>/<pod>` below it is a pod's directory).
    pods: PathBuf,
    /// Image → the executable that runs for it.
    executables: BTreeMap<String, PathBuf>,
}

impl LocalNode {
    /// The node whose runner keeps its pods under `pods`, running `executables` (image →
    /// executable).
    pub fn new(pods: impl Into<PathBuf>, executables: BTreeMap<String, PathBuf>) -> LocalNode {
        LocalNode {
            pods: pods.into(),
            executables,
        }
    }

    /// The process of `container` of `pod`: a child of this process, working in the pod's
    /// directory, running the container image's executable.
    fn container_process(&self, pod: &Pod, container: &str) -> Result<i32> {
        let image = pod
            .spec
            .iter()
            .flat_map(|s| &s.containers)
            .find(|c| c.name == container)
            .and_then(|c| c.image.clone())
            .with_context(|| format!("pod {} has no container {container}", pod.name_any()))?;
        let executable = self
            .executables
            .get(&image)
            .with_context(|| format!("no executable stands for image {image}"))?;
        let executable = std::fs::canonicalize(executable)?;
        let dir = std::fs::canonicalize(pod_dir(&self.pods, pod))
            .with_context(|| format!("pod {} has no directory on the node", pod.name_any()))?;
        let found = processes_in(&dir, &executable, std::process::id())?;
        match found.as_slice() {
            [pid] => Ok(*pid),
            [] => bail!(
                "no process runs container {container} of pod {}",
                pod.name_any()
            ),
            more => bail!(
                "{} processes run container {container} of pod {}",
                more.len(),
                pod.name_any()
            ),
        }
    }
}

impl Node for LocalNode {
    fn kill_container(&self, pod: &Pod, container: &str) -> Result<()> {
        let pid = self.container_process(pod, container)?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .with_context(|| format!("killing process {pid}"))
    }

    fn volume_dir(&self, pod: &Pod, volume: &str) -> Result<PathBuf> {
        volume_in(&self.pods, pod, volume)
    }
}

/// A pod's private directory in the runner's state directory `pods` (the layout both of its
/// runtimes share: `<state>/<namespace>/<name>`).
fn pod_dir(pods: &Path, pod: &Pod) -> PathBuf {
    pods.join(pod.namespace().unwrap_or_default())
        .join(pod.name_any())
}

/// A volume's directory on the node (`<pod directory>/volumes/<volume>`).
fn volume_in(pods: &Path, pod: &Pod, volume: &str) -> Result<PathBuf> {
    let dir = pod_dir(pods, pod).join("volumes").join(volume);
    ensure!(
        dir.is_dir(),
        "pod {} has no volume {volume} on the node",
        pod.name_any()
    );
    Ok(dir)
}

/// The pod runner's node when pods are Podman containers: a container is found by the
/// labels the runner puts on it (its runner, pod and container name) and killed by Podman,
/// which reports it exited on SIGKILL (137) to the runner as any crash.
pub struct PodmanNode {
    /// The runner's state directory (its pods' volumes are below it).
    pods: PathBuf,
    /// The runner's id, the value of its label on every container it makes.
    runner: String,
}

impl PodmanNode {
    /// The node of the runner `runner` whose state directory is `pods`.
    pub fn new(pods: impl Into<PathBuf>, runner: String) -> PodmanNode {
        PodmanNode {
            pods: pods.into(),
            runner,
        }
    }
}

impl Node for PodmanNode {
    fn kill_container(&self, pod: &Pod, container: &str) -> Result<()> {
        use pod_runner::podman::{CONTAINER_LABEL, POD_LABEL, RUNNER_LABEL};
        let pod_label = format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any());
        let output = std::process::Command::new("podman")
            .args(["ps", "--quiet", "--filter", "status=running"])
            .arg(format!("--filter=label={RUNNER_LABEL}={}", self.runner))
            .arg(format!("--filter=label={POD_LABEL}={pod_label}"))
            .arg(format!("--filter=label={CONTAINER_LABEL}={container}"))
            .output()
            .context("cannot run podman ps")?;
        ensure!(
            output.status.success(),
            "podman ps: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        let ids = String::from_utf8_lossy(&output.stdout);
        let ids: Vec<&str> = ids.split_whitespace().collect();
        let [id] = ids.as_slice() else {
            bail!(
                "{} running containers are container {container} of pod {pod_label}",
                ids.len()
            );
        };
        let status = std::process::Command::new("podman")
            .args(["kill", "--signal", "KILL", id])
            .stdout(std::process::Stdio::null())
            .status()
            .context("cannot run podman kill")?;
        ensure!(status.success(), "podman kill {id} failed ({status})");
        Ok(())
    }

    fn volume_dir(&self, pod: &Pod, volume: &str) -> Result<PathBuf> {
        volume_in(&self.pods, pod, volume)
    }
}

/// The processes whose parent is `parent`, whose working directory is `dir` and whose
/// executable is `executable` (both canonical paths).
fn processes_in(dir: &Path, executable: &Path, parent: u32) -> Result<Vec<i32>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let proc_dir = entry.path();
        // A process may end while it is looked at: what cannot be read is not it.
        let (Ok(cwd), Ok(exe)) = (
            std::fs::read_link(proc_dir.join("cwd")),
            std::fs::read_link(proc_dir.join("exe")),
        ) else {
            continue;
        };
        if cwd != dir || exe != executable {
            continue;
        }
        let stat = std::fs::read_to_string(proc_dir.join("stat")).unwrap_or_default();
        if parent_of(&stat) == Some(parent) {
            found.push(pid);
        }
    }
    Ok(found)
}

/// The parent pid in a `/proc/<pid>/stat` line (the field after the `(comm)`, which may
/// itself hold spaces and parentheses, and the state).
fn parent_of(stat: &str) -> Option<u32> {
    let (_, after_comm) = stat.rsplit_once(')')?;
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_is_read_past_a_command_name_with_spaces() {
        assert_eq!(parent_of("4242 (hsm agent) S 17 4242 4242 0 -1"), Some(17));
        assert_eq!(parent_of("7 (a) b)) R 1 7 7"), Some(1));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn this_process_is_found_by_its_directory_and_executable() {
        let me = std::process::id();
        let cwd = std::fs::canonicalize(std::env::current_dir().unwrap()).unwrap();
        let exe = std::fs::canonicalize(std::env::current_exe().unwrap()).unwrap();
        let parent = parent_of(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
        let found = processes_in(&cwd, &exe, parent).unwrap();
        assert!(found.contains(&(me as i32)), "{found:?}");
        assert!(
            processes_in(Path::new("/nonexistent"), &exe, parent)
                .unwrap()
                .is_empty()
        );
    }
}
