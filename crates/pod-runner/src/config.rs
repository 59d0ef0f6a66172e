//! What the runner is told: which executable stands for which image, which host paths it may
//! use and where they are here, the node it plays, and its timings.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

/// A `NAME=VALUE` option that did not have the form.
#[derive(Debug, thiserror::Error)]
#[error("expected NAME=VALUE, got {0:?}")]
pub struct PairError(String);

fn pair(s: &str) -> Result<(String, String), PairError> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(PairError(s.to_owned())),
    }
}

/// Images the runner knows, each mapped to the local executable that plays its entrypoint.
///
/// A key matches an image written in a pod spec when it equals the whole image, the image
/// without its tag or digest (`ghcr.io/org/hsm-agent`), or the last segment of that
/// repository (`hsm-agent`): so `hsm-agent=/path/to/hsm-agent` serves
/// `ghcr.io/org/hsm-agent:v1`. The most specific key wins.
#[derive(Debug, Clone, Default)]
pub struct ImageTable {
    images: BTreeMap<String, PathBuf>,
}

impl ImageTable {
    /// An empty table: every image is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an image.
    pub fn with(mut self, image: impl Into<String>, executable: impl Into<PathBuf>) -> Self {
        self.insert(image, executable);
        self
    }

    /// Adds (or replaces) an image.
    pub fn insert(&mut self, image: impl Into<String>, executable: impl Into<PathBuf>) {
        self.images.insert(image.into(), executable.into());
    }

    /// Parses `NAME=PATH` (the binary's `--image` option) and adds it.
    pub fn insert_pair(&mut self, spec: &str) -> Result<(), PairError> {
        let (k, v) = pair(spec)?;
        self.insert(k, v);
        Ok(())
    }

    /// The executable for an image, if the table knows it.
    pub fn resolve(&self, image: &str) -> Option<&Path> {
        lookup(&self.images, image).map(PathBuf::as_path)
    }
}

/// The most specific key of `map` that matches `image` (see [`ImageTable`]).
fn lookup<'a, V>(map: &'a BTreeMap<String, V>, image: &str) -> Option<&'a V> {
    let repository = repository(image);
    let last = repository.rsplit('/').next().unwrap_or(repository);
    [image, repository, last]
        .into_iter()
        .find_map(|k| map.get(k))
}

/// Images the runner knows, each mapped to a local container image (`localhost/hsm-agent:dev`)
/// that stands for it: nothing is ever pulled. Keys match as in [`ImageTable`].
#[derive(Debug, Clone, Default)]
pub struct ContainerImages {
    images: BTreeMap<String, String>,
}

impl ContainerImages {
    /// An empty table: every image is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) an image.
    pub fn with(mut self, image: impl Into<String>, local: impl Into<String>) -> Self {
        self.insert(image, local);
        self
    }

    /// Adds (or replaces) an image.
    pub fn insert(&mut self, image: impl Into<String>, local: impl Into<String>) {
        self.images.insert(image.into(), local.into());
    }

    /// Parses `NAME=IMAGE` (the binary's `--container-image` option) and adds it.
    pub fn insert_pair(&mut self, spec: &str) -> Result<(), PairError> {
        let (k, v) = pair(spec)?;
        self.insert(k, v);
        Ok(())
    }

    /// The local image for an image, if the table knows it.
    pub fn resolve(&self, image: &str) -> Option<&str> {
        lookup(&self.images, image).map(String::as_str)
    }
}

/// How a pod's containers run, and so how the runner reads a container spec.
#[derive(Debug, Clone, Default)]
pub enum Runtime {
    /// Local processes: each image stands for an executable ([`RunnerConfig::images`]), and
    /// mount paths in arguments and environment are rewritten to the pod's directories, which
    /// stay owner-only.
    #[default]
    Processes,
    /// Containers of local images (the Podman backend): `command` and `args` as written,
    /// volumes mounted at their mount paths, the security context applied, volume files
    /// readable by the container's user.
    Containers(ContainerImages),
}

/// The image without its `:tag` and `@digest`.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rsplit_once(':') {
        // A colon after the last slash is a tag; before it, a registry port.
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

/// Host paths the runner may hand to pods, and where each is on this machine. A hostPath
/// volume is honoured only when its path equals a mapped path or lies under one.
#[derive(Debug, Clone, Default)]
pub struct HostPaths {
    map: Vec<(PathBuf, PathBuf)>,
}

impl HostPaths {
    /// No host path may be used.
    pub fn new() -> Self {
        Self::default()
    }

    /// Maps the host path `from` (as pod specs write it) to the local `to`.
    pub fn with(mut self, from: impl Into<PathBuf>, to: impl Into<PathBuf>) -> Self {
        self.insert(from, to);
        self
    }

    /// Maps the host path `from` to the local `to`.
    pub fn insert(&mut self, from: impl Into<PathBuf>, to: impl Into<PathBuf>) {
        self.map.push((from.into(), to.into()));
        // Longest first, so that the most specific mapping wins.
        self.map
            .sort_by_key(|(f, _)| std::cmp::Reverse(f.as_os_str().len()));
    }

    /// Parses `FROM=TO` (the binary's `--host-path` option) and adds it.
    pub fn insert_pair(&mut self, spec: &str) -> Result<(), PairError> {
        let (k, v) = pair(spec)?;
        self.insert(k, v);
        Ok(())
    }

    /// Where a host path is here, if it may be used.
    pub fn resolve(&self, path: &str) -> Option<PathBuf> {
        let path = Path::new(path);
        self.map.iter().find_map(|(from, to)| {
            path.strip_prefix(from).ok().map(|rest| {
                if rest.as_os_str().is_empty() {
                    to.clone()
                } else {
                    to.join(rest)
                }
            })
        })
    }
}

/// The Kubernetes API server as pods reach it: what the kubelet puts in every container's
/// `KUBERNETES_SERVICE_HOST`/`KUBERNETES_SERVICE_PORT` (the `kubernetes` Service), and the
/// server of the kubeconfig local processes get for their ServiceAccount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiServer {
    /// Host name or address, as pods see it.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Whether it speaks HTTPS (a real cluster always does; the emulator may serve HTTP).
    pub https: bool,
}

impl ApiServer {
    /// Its URL, `https://host:port`.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        if self.host.contains(':') {
            format!("{scheme}://[{}]:{}", self.host, self.port)
        } else {
            format!("{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// An API server URL that is not `http[s]://HOST:PORT`.
#[derive(Debug, thiserror::Error)]
#[error("expected an API server URL https://HOST:PORT, got {0:?}")]
pub struct ApiServerError(String);

impl FromStr for ApiServer {
    type Err = ApiServerError;
    /// `https://HOST:PORT` (or `http://`); the port defaults to 443 (80 for HTTP).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || ApiServerError(s.to_owned());
        let (https, rest) = if let Some(r) = s.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = s.strip_prefix("http://") {
            (false, r)
        } else {
            return Err(bad());
        };
        let authority = rest.trim_end_matches('/');
        if authority.is_empty() || authority.contains('/') {
            return Err(bad());
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, tail) = v6.split_once(']').ok_or_else(bad)?;
            let port = match tail.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad())?,
                None if tail.is_empty() => default_port,
                None => return Err(bad()),
            };
            (host, port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, p.parse().map_err(|_| bad())?),
                None => (authority, default_port),
            }
        };
        if host.is_empty() {
            return Err(bad());
        }
        Ok(ApiServer {
            host: host.to_owned(),
            port,
            https,
        })
    }
}

/// Everything the runner needs besides the API client.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The node this runner plays: pods get it as `spec.nodeName`.
    pub node_name: String,
    /// The node's labels, matched against DaemonSets' `nodeSelector`.
    pub node_labels: BTreeMap<String, String>,
    /// Images and their executables.
    pub images: ImageTable,
    /// Host paths pods may use.
    pub host_paths: HostPaths,
    /// Variables every container gets before its own (what a cluster would provide, e.g.
    /// `KUBECONFIG` where a real pod has a service-account token). `PATH` is always set.
    pub pod_env: BTreeMap<String, String>,
    /// Where pods' files and logs go (one private directory per pod under it).
    pub state_dir: PathBuf,
    /// Where the lock files that keep loopback addresses unique across runners live.
    pub address_locks: PathBuf,
    /// First wait before restarting a failed container; doubles up to `restart_backoff_max`.
    pub restart_backoff: Duration,
    /// Longest wait between restarts.
    pub restart_backoff_max: Duration,
    /// How often everything is reconciled even without a watch event.
    pub resync: Duration,
    /// Whether to create (server-side apply) a Node object with the name and labels.
    pub register_node: bool,
    /// The API server as pods reach it. When given, every container gets
    /// `KUBERNETES_SERVICE_HOST`/`_PORT` (as from a kubelet), and a local process whose
    /// container mounts a ServiceAccount token at
    /// `/var/run/secrets/kubernetes.io/serviceaccount` gets a kubeconfig for it in
    /// `KUBECONFIG` (server, that volume's `ca.crt`, its `token` as `tokenFile`), unless
    /// [`RunnerConfig::pod_env`] sets `KUBECONFIG`.
    pub api_server: Option<ApiServer>,
    /// The share of a projected ServiceAccount token's lifetime after which it is
    /// requested anew and rewritten (0.8, as a kubelet; tests make it smaller to see a
    /// refresh within seconds).
    pub token_refresh_fraction: f64,
    /// Processes or containers; [`crate::PodRunner::start`] picks the backend from it.
    pub runtime: Runtime,
    /// The node's devices: what a container asking for an extended resource gets, as from
    /// its device plugin's `Allocate` ([`crate::devices`]).
    pub devices: crate::devices::Devices,
}

impl RunnerConfig {
    /// A configuration for node `node_name` keeping its files in `state_dir`; no images,
    /// no host paths.
    pub fn new(node_name: impl Into<String>, state_dir: impl Into<PathBuf>) -> Self {
        let node_name = node_name.into();
        RunnerConfig {
            node_labels: BTreeMap::from([("kubernetes.io/hostname".to_owned(), node_name.clone())]),
            node_name,
            images: ImageTable::new(),
            host_paths: HostPaths::new(),
            pod_env: BTreeMap::new(),
            state_dir: state_dir.into(),
            address_locks: std::env::temp_dir().join("pod-runner-addresses"),
            restart_backoff: Duration::from_secs(1),
            restart_backoff_max: Duration::from_secs(30),
            resync: Duration::from_secs(2),
            register_node: true,
            api_server: None,
            token_refresh_fraction: 0.8,
            runtime: Runtime::Processes,
            devices: crate::devices::Devices::new(),
        }
    }
}

impl FromStr for ImageTable {
    type Err = PairError;
    /// Comma-separated `NAME=PATH` pairs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut t = ImageTable::new();
        for p in s.split(',').filter(|p| !p.is_empty()) {
            t.insert_pair(p)?;
        }
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_match_whole_repository_or_last_segment() {
        let t = ImageTable::new()
            .with("hsm-agent", "/bin/agent")
            .with("ghcr.io/o/hsm-agent", "/bin/agent2")
            .with("busybox:1", "/bin/busybox1");
        assert_eq!(t.resolve("hsm-agent"), Some(Path::new("/bin/agent")));
        assert_eq!(t.resolve("hsm-agent:v2"), Some(Path::new("/bin/agent")));
        assert_eq!(
            t.resolve("ghcr.io/o/hsm-agent:v1"),
            Some(Path::new("/bin/agent2"))
        );
        assert_eq!(
            t.resolve("quay.io/x/hsm-agent@sha256:abc"),
            Some(Path::new("/bin/agent"))
        );
        assert_eq!(
            t.resolve("localhost:5000/hsm-agent"),
            Some(Path::new("/bin/agent"))
        );
        assert_eq!(t.resolve("busybox:1"), Some(Path::new("/bin/busybox1")));
        assert_eq!(t.resolve("busybox:2"), None);
        assert_eq!(t.resolve("hsm-agentx"), None);
    }

    #[test]
    fn host_paths_map_the_path_and_what_is_under_it_only() {
        let h = HostPaths::new()
            .with("/sys", "/fx/sys")
            .with("/sys/bus/usb", "/fx/usb");
        assert_eq!(h.resolve("/sys"), Some(PathBuf::from("/fx/sys")));
        assert_eq!(
            h.resolve("/sys/class"),
            Some(PathBuf::from("/fx/sys/class"))
        );
        assert_eq!(
            h.resolve("/sys/bus/usb/devices"),
            Some(PathBuf::from("/fx/usb/devices"))
        );
        assert_eq!(h.resolve("/system"), None);
        assert_eq!(h.resolve("/dev"), None);
    }

    #[test]
    fn api_server_urls_parse() {
        let a: ApiServer = "https://127.0.0.1:6443".parse().unwrap();
        assert_eq!(
            a,
            ApiServer {
                host: "127.0.0.1".into(),
                port: 6443,
                https: true
            }
        );
        assert_eq!(a.url(), "https://127.0.0.1:6443");
        let b: ApiServer = "http://[::1]:8080/".parse().unwrap();
        assert_eq!((b.host.as_str(), b.port, b.https), ("::1", 8080, false));
        assert_eq!(b.url(), "http://[::1]:8080");
        let c: ApiServer = "https://kubernetes.default.svc".parse().unwrap();
        assert_eq!(c.port, 443);
        for bad in [
            "127.0.0.1:6443",
            "https://",
            "https://h:x",
            "https://h:1/api",
            "ftp://h",
        ] {
            assert!(bad.parse::<ApiServer>().is_err(), "{bad}");
        }
    }

    #[test]
    fn pairs_need_both_sides() {
        let mut t = ImageTable::new();
        assert!(t.insert_pair("a=/b").is_ok());
        assert!(t.insert_pair("a").is_err());
        assert!(t.insert_pair("=b").is_err());
        assert!("x=/y,z=/w".parse::<ImageTable>().is_ok());
    }
}
