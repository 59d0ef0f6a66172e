//! What the Podman backend sets up once: the connection to Podman's Docker-compatible socket
//! (starting `podman system service` when nothing answers), the removal of a killed run's
//! leftovers, the pause image, and the runner's internal network.

use super::spec::{CONTAINER_LABEL, INFRA, RUNNER_LABEL};
use bollard::Docker;
use bollard::models::{NetworkCreateRequest, NetworkInspect};
use bollard::query_parameters::{BuildImageOptions, ListNetworksOptions, RemoveContainerOptions};
use futures::StreamExt;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The Docker API version asked for: Podman 4 serves 1.40 and 1.41.
pub const API_VERSION: &bollard::ClientVersion = &bollard::ClientVersion {
    major_version: 1,
    minor_version: 41,
};

/// Where catatonit, the pause process of Podman's own pods, is installed (Debian package
/// `catatonit`), in the order looked at.
const CATATONIT: &[&str] = &["/usr/libexec/podman/catatonit", "/usr/bin/catatonit"];

/// Setting up failed: what was being done and why (no secret is ever involved).
pub type SetupError = String;

/// Connects to a socket that answers, or None.
pub async fn connect(socket: &Path) -> Option<Docker> {
    let docker = Docker::connect_with_unix(&socket.to_string_lossy(), 120, API_VERSION).ok()?;
    tokio::time::timeout(Duration::from_secs(5), docker.ping())
        .await
        .ok()?
        .ok()?;
    Some(docker)
}

/// The sockets tried before starting a service: `DOCKER_HOST` when it names a Unix socket,
/// then Podman's rootful socket.
pub fn usual_sockets() -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(host) = std::env::var("DOCKER_HOST")
        && let Some(path) = host.strip_prefix("unix://")
    {
        out.push(PathBuf::from(path));
    }
    out.push(PathBuf::from("/run/podman/podman.sock"));
    out
}

/// A `podman system service` this runner started; stopped when dropped.
#[derive(Debug)]
pub struct Service {
    child: Child,
    socket: PathBuf,
}

impl Service {
    /// Starts `podman system service --time=0` on `socket` and waits until it answers.
    pub async fn start(socket: &Path) -> Result<(Service, Docker), SetupError> {
        let _ = std::fs::remove_file(socket);
        let mut command = Command::new("podman");
        command
            .args(["system", "service", "--time=0"])
            .arg(format!("unix://{}", socket.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // The service goes with the runner even when the runner is killed.
        // SAFETY: the closure runs between fork and exec and makes one prctl system call,
        // which is async-signal-safe; it touches no memory of the parent.
        #[allow(unsafe_code)]
        unsafe {
            use std::os::unix::process::CommandExt;
            command.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM)
                    .map_err(std::io::Error::from)
            });
        }
        // Its own process group: Ctrl-C at a terminal signals the foreground group, and the
        // service must outlive that long enough for the runner to remove its containers.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command
            .spawn()
            .map_err(|e| format!("starting `podman system service` (is podman installed?): {e}"))?;
        let service = Service {
            child,
            socket: socket.to_owned(),
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(docker) = connect(socket).await {
                return Ok((service, docker));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(format!(
                    "podman system service on {} did not answer within 20 s",
                    socket.display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The socket it serves.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

fn label_filter(label: &str, value: &str) -> HashMap<String, Vec<String>> {
    HashMap::from([("label".to_owned(), vec![format!("{label}={value}")])])
}

/// A container as listed: its id and labels.
struct Listed {
    id: String,
    labels: HashMap<String, String>,
}

/// Lists the containers (all states) labelled `label=value`. Not through bollard's model:
/// Podman reports states Docker does not have (`stopped`), which it cannot read.
async fn list_containers(socket: &Path, label: &str, value: &str) -> Result<Vec<Listed>, String> {
    use http_body_util::BodyExt;
    let stream = tokio::net::UnixStream::connect(socket)
        .await
        .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let filters = serde_json::json!({"label": [format!("{label}={value}")]}).to_string();
    let query: String = form_urlencoded::byte_serialize(filters.as_bytes()).collect();
    let version = format!(
        "v{}.{}",
        API_VERSION.major_version, API_VERSION.minor_version
    );
    let request = hyper::Request::get(format!(
        "/{version}/containers/json?all=true&filters={query}"
    ))
    .header(hyper::header::HOST, "podman")
    .body(http_body_util::Empty::<bytes::Bytes>::new())
    .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    if !status.is_success() {
        return Err(format!("{status}: {}", String::from_utf8_lossy(&body)));
    }
    let list: Vec<serde_json::Value> = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
    Ok(list
        .into_iter()
        .filter_map(|c| {
            Some(Listed {
                id: c["Id"].as_str()?.to_owned(),
                labels: serde_json::from_value(c["Labels"].clone()).unwrap_or_default(),
            })
        })
        .collect())
}

/// Removes every container that has all the `labels` (the first is asked of Podman, the
/// others checked here), the infra containers last (Podman keeps a container whose network
/// namespace others still use). Goes on past a failure; answers the failures.
pub async fn remove_containers(
    docker: &Docker,
    socket: &Path,
    labels: &[(&str, &str)],
) -> Result<(), SetupError> {
    let Some((label, value)) = labels.first() else {
        return Ok(());
    };
    let containers = list_containers(socket, label, value)
        .await
        .map_err(|e| format!("listing the containers labelled {label}={value}: {e}"))?;
    let has_all = |c: &Listed| {
        labels
            .iter()
            .all(|(k, v)| c.labels.get(*k).is_some_and(|have| have == v))
    };
    let containers: Vec<_> = containers.into_iter().filter(has_all).collect();
    let is_infra = |c: &Listed| c.labels.get(CONTAINER_LABEL).is_some_and(|v| v == INFRA);
    let (infra, others): (Vec<_>, Vec<_>) = containers.iter().partition(|c| is_infra(c));
    let mut failures = Vec::new();
    for c in others.iter().chain(&infra).map(|c| c.id.as_str()) {
        if let Err(e) = remove_container(docker, c).await {
            failures.push(format!("removing container {c}: {e}"));
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Removes every container and network labelled with the runner's id: a killed run's
/// leftovers at start, everything at the end.
pub async fn remove_labelled(docker: &Docker, socket: &Path, id: &str) -> Result<(), SetupError> {
    let mut failures = Vec::new();
    if let Err(e) = remove_containers(docker, socket, &[(RUNNER_LABEL, id)]).await {
        failures.push(e);
    }
    let networks = docker
        .list_networks(Some(ListNetworksOptions {
            filters: Some(label_filter(RUNNER_LABEL, id)),
        }))
        .await
        .map_err(|e| format!("listing the runner's networks: {e}"))?;
    for network in &networks {
        let Some(n) = network.name.as_deref() else {
            continue;
        };
        if let Err(e) = docker.remove_network(n).await
            && !not_found(&e)
        {
            failures.push(format!("removing network {n}: {e}"));
        }
        // The bridge made for it beforehand (a CNI network's), which Podman leaves.
        let bridge = network
            .labels
            .as_ref()
            .and_then(|l| l.get(BRIDGE_LABEL))
            .filter(|b| is_runner_bridge(b));
        if let Some(bridge) = bridge {
            remove_bridge(bridge);
        }
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// Removes a container (stopping it first if needed); gone already is fine. Podman may
/// refuse for a moment while another of its processes works on the container (its
/// dependents being removed, its exit being handled): retried for up to 20 s.
pub async fn remove_container(docker: &Docker, id: &str) -> Result<(), bollard::errors::Error> {
    let mut wait = Duration::from_millis(50);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let removed = docker
            .remove_container(
                id,
                Some(RemoveContainerOptions {
                    force: true,
                    v: true,
                    ..RemoveContainerOptions::default()
                }),
            )
            .await;
        match removed {
            Ok(()) => return Ok(()),
            Err(e) if not_found(&e) => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(e) => {
                tracing::debug!(container = id, error = %e, "removing a container: retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Whether Podman answered 404.
pub fn not_found(e: &bollard::errors::Error) -> bool {
    matches!(
        e,
        bollard::errors::Error::DockerResponseServerError {
            status_code: 404,
            ..
        }
    )
}

/// The pause image (catatonit alone, `FROM scratch`), built here once: nothing is pulled.
pub async fn pause_image(docker: &Docker) -> Result<String, SetupError> {
    let path = CATATONIT
        .iter()
        .map(Path::new)
        .find(|p| p.exists())
        .ok_or("catatonit is not installed (Debian package catatonit; `cargo xtask deps`)")?;
    let binary = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    use sha2::Digest;
    let digest = hex::encode(&sha2::Sha256::digest(&binary)[..6]);
    let tag = format!("localhost/pod-runner-pause:{digest}");
    if docker.inspect_image(&tag).await.is_ok() {
        return Ok(tag);
    }
    let containerfile =
        "FROM scratch\nCOPY catatonit /catatonit\nENTRYPOINT [\"/catatonit\", \"-P\"]\n";
    let context = tar_context(&[
        ("Containerfile", containerfile.as_bytes(), 0o644),
        ("catatonit", &binary, 0o755),
    ])
    .map_err(|e| format!("packing the pause image's context: {e}"))?;
    let options = BuildImageOptions {
        dockerfile: "Containerfile".into(),
        t: Some(tag.clone()),
        rm: true,
        ..BuildImageOptions::default()
    };
    let mut build =
        std::pin::pin!(docker.build_image(options, None, Some(bollard::body_full(context.into()))));
    while let Some(step) = build.next().await {
        let step = step.map_err(|e| format!("building {tag}: {e}"))?;
        if let Some(e) = step.error_detail.and_then(|d| d.message) {
            return Err(format!("building {tag}: {e}"));
        }
    }
    docker
        .inspect_image(&tag)
        .await
        .map_err(|e| format!("the built {tag} is not there: {e}"))?;
    Ok(tag)
}

fn tar_context(files: &[(&str, &[u8], u32)]) -> std::io::Result<Vec<u8>> {
    let mut tar = tar::Builder::new(Vec::new());
    for (name, data, mode) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(*mode);
        header.set_cksum();
        tar.append_data(&mut header, name, *data)?;
    }
    tar.into_inner()
}

/// The runner's network: internal (no route out), its subnet chosen by Podman, and its
/// gateway address on this machine's side, so that this machine reaches the pods and the
/// pods reach servers listening here.
#[derive(Debug, Clone)]
pub struct Network {
    /// Its name.
    pub name: String,
    /// The bridge interface.
    pub bridge: String,
    /// The subnet's first address.
    pub base: Ipv4Addr,
    /// The prefix length.
    pub prefix: u8,
    /// This machine's address on it.
    pub gateway: Ipv4Addr,
}

impl Network {
    /// Whether `ip` is a pod address of the subnet (neither the network, the gateway nor
    /// the broadcast address).
    pub fn is_pod_address(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0);
        let (base, ip32) = (u32::from(self.base), u32::from(ip));
        ip32 & mask == base & mask && ip32 != base && ip32 != base | !mask && ip != self.gateway
    }

    /// The pod addresses in order.
    pub fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let size = 1u32.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
        let base = u32::from(self.base);
        (1..size)
            .map(move |i| Ipv4Addr::from(base + i))
            .filter(|ip| self.is_pod_address(*ip))
    }
}

/// The label naming a network's bridge interface, so that a killed run's bridge is removed
/// with its network.
pub const BRIDGE_LABEL: &str = "io.hsm-secrets-operator.pod-runner.bridge";

/// The prefix of the bridges runners make.
const BRIDGE_PREFIX: &str = "prbr";

/// Whether `name` is a bridge name a runner makes (`prbr` and 10 hex digits): nothing else
/// is ever removed on a label's word.
fn is_runner_bridge(name: &str) -> bool {
    name.strip_prefix(BRIDGE_PREFIX)
        .is_some_and(|rest| rest.len() == 10 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Creates the network `name` labelled with the runner's id (and its bridge's name).
pub async fn create_network(docker: &Docker, id: &str, name: &str) -> Result<Network, SetupError> {
    let bridge = format!(
        "{BRIDGE_PREFIX}{}",
        &hex::encode(rand::random::<[u8; 5]>())[..10]
    );
    docker
        .create_network(NetworkCreateRequest {
            name: name.to_owned(),
            driver: Some("bridge".into()),
            internal: Some(true),
            labels: Some(HashMap::from([
                (RUNNER_LABEL.to_owned(), id.to_owned()),
                (BRIDGE_LABEL.to_owned(), bridge.clone()),
            ])),
            options: Some(HashMap::from([(
                "com.docker.network.bridge.name".to_owned(),
                bridge.clone(),
            )])),
            ..NetworkCreateRequest::default()
        })
        .await
        .map_err(|e| format!("creating network {name}: {e}"))?;
    let inspect = docker
        .inspect_network(name, None)
        .await
        .map_err(|e| format!("inspecting network {name}: {e}"))?;
    let network = read_network(name, &bridge, &inspect)?;
    if !has_gateway(&inspect) {
        // Podman's CNI backend gives an internal network's bridge no address, so neither
        // this machine nor the pods could reach the other. The bridge made here beforehand,
        // with the gateway address, is the one the bridge plugin then uses (as netavark
        // makes an internal network anyway): no default route, no masquerading.
        bridge_with_address(&network)?;
    }
    Ok(network)
}

fn has_gateway(inspect: &NetworkInspect) -> bool {
    ipam_config(inspect)
        .and_then(|c| c.gateway.as_deref())
        .is_some_and(|g| g.parse::<Ipv4Addr>().is_ok())
}

fn ipam_config(inspect: &NetworkInspect) -> Option<&bollard::models::IpamConfig> {
    inspect
        .ipam
        .as_ref()
        .and_then(|i| i.config.as_ref())
        .and_then(|c| {
            c.iter().find(|c| {
                c.subnet.as_deref().is_some_and(|s| {
                    s.split('/')
                        .next()
                        .is_some_and(|a| a.parse::<Ipv4Addr>().is_ok())
                })
            })
        })
}

/// Reads the subnet (and gateway, or the subnet's first address) of a network.
pub fn read_network(
    name: &str,
    bridge: &str,
    inspect: &NetworkInspect,
) -> Result<Network, SetupError> {
    let config =
        ipam_config(inspect).ok_or_else(|| format!("network {name} has no IPv4 subnet"))?;
    let subnet = config.subnet.as_deref().unwrap_or_default();
    let (base, prefix) = subnet
        .split_once('/')
        .and_then(|(a, p)| Some((a.parse::<Ipv4Addr>().ok()?, p.parse::<u8>().ok()?)))
        .filter(|(_, p)| (8..=30).contains(p))
        .ok_or_else(|| format!("network {name}: cannot read subnet {subnet:?}"))?;
    let gateway = config
        .gateway
        .as_deref()
        .and_then(|g| g.parse().ok())
        .unwrap_or_else(|| Ipv4Addr::from(u32::from(base) + 1));
    Ok(Network {
        name: name.to_owned(),
        bridge: bridge.to_owned(),
        base,
        prefix,
        gateway,
    })
}

fn ip(args: &[&str]) -> Result<(), SetupError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("running ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn bridge_with_address(n: &Network) -> Result<(), SetupError> {
    let address = format!("{}/{}", n.gateway, n.prefix);
    ip(&["link", "add", &n.bridge, "type", "bridge"])?;
    ip(&["addr", "add", &address, "dev", &n.bridge])?;
    ip(&["link", "set", &n.bridge, "up"])
}

/// Removes the bridge if it is still there (Podman removes it with the network).
pub fn remove_bridge(bridge: &str) {
    if Path::new("/sys/class/net").join(bridge).exists() {
        let _ = ip(&["link", "del", bridge]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cni_internal_network_reads_with_its_first_address_as_gateway() {
        let inspect: NetworkInspect = serde_json::from_value(serde_json::json!({
            "Name": "n",
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.89.3.0/24", "Gateway": "<nil>"}]},
        }))
        .unwrap();
        assert!(!has_gateway(&inspect));
        let n = read_network("n", "br", &inspect).unwrap();
        assert_eq!(n.gateway, Ipv4Addr::new(10, 89, 3, 1));
        let pods: Vec<Ipv4Addr> = n.pod_addresses().collect();
        assert_eq!(pods.len(), 253);
        assert_eq!(pods[0], Ipv4Addr::new(10, 89, 3, 2));
        assert_eq!(pods[252], Ipv4Addr::new(10, 89, 3, 254));
        assert!(!n.is_pod_address(Ipv4Addr::new(10, 89, 4, 2)));
    }

    #[test]
    fn only_a_runners_bridge_name_is_removed_on_a_labels_word() {
        assert!(is_runner_bridge("prbr0123456789"));
        assert!(is_runner_bridge("prbrabcdef0123"));
        for other in [
            "eth0",
            "prbr",
            "prbr0123",
            "prbr0123456789a",
            "prbrxyz0123456",
            "cni-podman0",
        ] {
            assert!(!is_runner_bridge(other), "{other}");
        }
    }

    #[test]
    fn a_gateway_given_is_kept() {
        let inspect: NetworkInspect = serde_json::from_value(serde_json::json!({
            "Name": "n",
            "IPAM": {"Config": [{"Subnet": "10.89.3.0/24", "Gateway": "10.89.3.9"}]},
        }))
        .unwrap();
        assert!(has_gateway(&inspect));
        let n = read_network("n", "br", &inspect).unwrap();
        assert_eq!(n.gateway, Ipv4Addr::new(10, 89, 3, 9));
        assert!(n.is_pod_address(Ipv4Addr::new(10, 89, 3, 1)));
        assert!(!n.is_pod_address(Ipv4Addr::new(10, 89, 3, 9)));
    }
}
