//! The hook through which a pod runner serves what only running containers can answer:
//! `pods/log`. The emulator runs no containers; a runner (the e2e pod runner) implements
//! [`PodRuntime`] and registers it with [`crate::Emulator::set_pod_runtime`]. Without one,
//! logs are answered 400 as a real server does for a pod whose containers are not running.
//! (`pods/portforward` needs no hook: it reaches the pod at its `status.podIP`, see
//! [`crate::portforward`].)

/// Options of a `pods/log` request (the query parameters kubectl sends).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogOptions {
    /// `container`: which container (the only one when absent).
    pub container: Option<String>,
    /// `previous`: the previous, terminated instance.
    pub previous: bool,
    /// `tailLines`: only the last lines.
    pub tail_lines: Option<usize>,
    /// `timestamps`: prefix each line with its time.
    pub timestamps: bool,
}

/// Why a runtime cannot answer.
#[derive(Debug, thiserror::Error)]
pub enum PodRuntimeError {
    /// The pod or container is not running (answered 400, as the real server).
    #[error("{0}")]
    NotRunning(String),
    /// Reading the logs failed.
    #[error("reading the logs")]
    Io(#[source] std::io::Error),
}

/// What runs the emulator's pods.
pub trait PodRuntime: Send + Sync {
    /// The logs of a container so far (`follow` is not served: the answer ends here).
    fn logs(
        &self,
        namespace: &str,
        pod: &str,
        options: &LogOptions,
    ) -> Result<Vec<u8>, PodRuntimeError>;
}

impl LogOptions {
    /// The options of a `pods/log` query.
    pub fn from_query(query: &std::collections::HashMap<String, String>) -> Self {
        LogOptions {
            container: query.get("container").cloned(),
            previous: query.get("previous").is_some_and(|v| v == "true"),
            tail_lines: query.get("tailLines").and_then(|v| v.parse().ok()),
            timestamps: query.get("timestamps").is_some_and(|v| v == "true"),
        }
    }
}
