//! Pure: a Pod's spec, the Secrets and ConfigMaps it refers to and the runner's configuration
//! → what to do on this machine (files to write, and per container the executable, its
//! arguments and environment, its probes), or the reasons it cannot be done.

use crate::config::{RunnerConfig, Runtime};
use crate::probe::{Probe, ProbeError};
use crate::projected::TokenSpec;
use k8s_openapi::api::core::v1::{Container, EnvVar, ObjectFieldSelector, Pod, Volume};
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// The `PATH` a container gets unless the runner's pod environment sets one.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The data of the Secrets and ConfigMaps of the pod's namespace that it refers to; a name
/// that is absent does not exist.
#[derive(Clone, Default)]
pub struct Sources {
    /// Secret name → key → bytes.
    pub secrets: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// ConfigMap name → key → bytes (`data` and `binaryData`).
    pub config_maps: BTreeMap<String, BTreeMap<String, Vec<u8>>>,
    /// The ServiceAccount tokens the projected volumes need, as last requested.
    pub tokens: BTreeMap<TokenSpec, String>,
}

/// Names of the Secrets and ConfigMaps a pod refers to (volumes, env, envFrom).
pub fn referenced(pod: &Pod) -> (Vec<String>, Vec<String>) {
    let mut secrets = Vec::new();
    let mut maps = Vec::new();
    let Some(spec) = &pod.spec else {
        return (secrets, maps);
    };
    for v in spec.volumes.iter().flatten() {
        if let Some(name) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.push(name);
        }
        if let Some(c) = &v.config_map {
            maps.push(c.name.clone());
        }
    }
    let containers = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers);
    for c in containers {
        for e in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            if let Some(r) = &e.secret_key_ref {
                secrets.push(r.name.clone());
            }
            if let Some(r) = &e.config_map_key_ref {
                maps.push(r.name.clone());
            }
        }
        for f in c.env_from.iter().flatten() {
            if let Some(r) = &f.secret_ref {
                secrets.push(r.name.clone());
            }
            if let Some(r) = &f.config_map_ref {
                maps.push(r.name.clone());
            }
        }
    }
    let (projected_secrets, projected_maps) = crate::projected::referenced(pod);
    secrets.extend(projected_secrets);
    maps.extend(projected_maps);
    for l in [&mut secrets, &mut maps] {
        l.sort();
        l.dedup();
    }
    (secrets, maps)
}

/// Why a pod cannot run here. Never carries a Secret's value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The image is not in the runner's image table.
    #[error(
        "container {container}: image {image:?} is not known to the pod runner (give it with --image NAME=PATH, or --container-image NAME=IMAGE for containers)"
    )]
    UnknownImage {
        /// Container.
        container: String,
        /// Image.
        image: String,
    },
    /// The container's `command` names a program the image's executable is not.
    #[error(
        "container {container}: command {command:?} is not the image's executable {executable:?}"
    )]
    CommandNotInImage {
        /// Container.
        container: String,
        /// `command[0]`.
        command: String,
        /// The executable the image stands for.
        executable: PathBuf,
    },
    /// A hostPath volume the runner was given no mapping for.
    #[error("volume {volume}: hostPath {path:?} is not mapped (give it with --host-path FROM=TO)")]
    HostPathNotMapped {
        /// Volume.
        volume: String,
        /// The host path.
        path: String,
    },
    /// A volume type the runner does not provide.
    #[error(
        "volume {volume}: only secret, configMap, emptyDir, projected (serviceAccountToken, \
         secret, configMap, downwardAPI), downwardAPI and mapped hostPath volumes are supported"
    )]
    UnsupportedVolume {
        /// Volume.
        volume: String,
    },
    /// A downward API volume item the runner does not resolve.
    #[error("volume {volume}: unsupported downward API item {field}")]
    UnsupportedDownwardApi {
        /// Volume.
        volume: String,
        /// What was asked for.
        field: String,
    },
    /// A volume item path that is absolute or leaves the volume.
    #[error("volume {volume}: item path {path:?} must be relative and may not contain '..'")]
    BadItemPath {
        /// Volume.
        volume: String,
        /// The path.
        path: String,
    },
    /// The ServiceAccount token of a projected volume could not be requested (yet).
    #[error("volume {volume}: failed to fetch token for ServiceAccount {service_account:?}")]
    MissingToken {
        /// Volume.
        volume: String,
        /// The pod's ServiceAccount.
        service_account: String,
    },
    /// A mount of a volume the pod does not declare.
    #[error("container {container}: volumeMount of undeclared volume {volume}")]
    UnknownVolume {
        /// Container.
        container: String,
        /// Volume.
        volume: String,
    },
    /// A Secret that does not exist.
    #[error("secret {0:?} not found")]
    MissingSecret(String),
    /// A key missing from a Secret.
    #[error("couldn't find key {key} in Secret {name}")]
    MissingSecretKey {
        /// Secret.
        name: String,
        /// Key.
        key: String,
    },
    /// A ConfigMap that does not exist.
    #[error("configmap {0:?} not found")]
    MissingConfigMap(String),
    /// A key missing from a ConfigMap.
    #[error("couldn't find key {key} in ConfigMap {name}")]
    MissingConfigMapKey {
        /// ConfigMap.
        name: String,
        /// Key.
        key: String,
    },
    /// An env source the runner does not resolve (e.g. `resourceFieldRef`, an unknown
    /// downward API field).
    #[error("container {container}: env {name}: unsupported source {source_desc}")]
    UnsupportedEnv {
        /// Container.
        container: String,
        /// Variable.
        name: String,
        /// What was asked for.
        source_desc: String,
    },
    /// A privileged container (the runner never runs one).
    #[error("container {container}: privileged containers are not run by the pod runner")]
    Privileged {
        /// Container.
        container: String,
    },
    /// A probe the runner cannot run.
    #[error("container {container}: {source}")]
    Probe {
        /// Container.
        container: String,
        /// Why.
        #[source]
        source: ProbeError,
    },
}

impl PlanError {
    /// The short reason put on the container's waiting state (CamelCase, as a kubelet's).
    pub fn reason(&self) -> &'static str {
        match self {
            PlanError::UnknownImage { .. } => "ErrImageNeverPull",
            PlanError::CommandNotInImage { .. } => "RunContainerError",
            PlanError::HostPathNotMapped { .. }
            | PlanError::UnsupportedVolume { .. }
            | PlanError::UnsupportedDownwardApi { .. }
            | PlanError::BadItemPath { .. }
            | PlanError::MissingToken { .. } => "FailedMount",
            PlanError::UnknownVolume { .. }
            | PlanError::Privileged { .. }
            | PlanError::MissingSecret(_)
            | PlanError::MissingSecretKey { .. }
            | PlanError::MissingConfigMap(_)
            | PlanError::MissingConfigMapKey { .. }
            | PlanError::UnsupportedEnv { .. }
            | PlanError::Probe { .. } => "CreateContainerConfigError",
        }
    }

    /// Whether the pod may run once the cluster changes (a Secret created): such pods stay
    /// Pending and are retried; the others fail.
    pub fn transient(&self) -> bool {
        matches!(
            self,
            PlanError::MissingSecret(_)
                | PlanError::MissingSecretKey { .. }
                | PlanError::MissingConfigMap(_)
                | PlanError::MissingConfigMapKey { .. }
                | PlanError::MissingToken { .. }
        )
    }
}

/// A file to write before the containers start (owner-only permissions).
#[derive(Clone, PartialEq)]
pub struct FileToWrite {
    /// Where.
    pub path: PathBuf,
    /// What (possibly a Secret's value: never printed).
    pub contents: Vec<u8>,
}

impl std::fmt::Debug for FileToWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileToWrite")
            .field("path", &self.path)
            .field("bytes", &self.contents.len())
            .finish()
    }
}

/// What a container runs.
#[derive(Debug, Clone, PartialEq)]
pub enum Program {
    /// A local executable that stands for the image (the process backend).
    Executable(PathBuf),
    /// A local image (the container backends).
    Image {
        /// The local image (`localhost/hsm-agent:dev`).
        image: String,
        /// The entrypoint, `$(VAR)` expanded: the container's `command`, or None for the
        /// image's own.
        command: Option<Vec<String>>,
    },
}

/// A volume mounted into a container (the container backends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory (or file) of this machine.
    pub source: PathBuf,
    /// Where the container sees it.
    pub target: String,
    /// Whether it is mounted read-only (always for Secret, ConfigMap, projected and
    /// downwardAPI volumes, as a kubelet does).
    pub read_only: bool,
}

/// The security context of a container (container-level settings over the pod's), as the
/// container backends apply it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Security {
    /// `runAsUser`.
    pub user: Option<i64>,
    /// `runAsGroup`.
    pub group: Option<i64>,
    /// `fsGroup` and `supplementalGroups`.
    pub supplemental_groups: Vec<i64>,
    /// `runAsNonRoot`: the backend refuses to run the container as root.
    pub run_as_non_root: bool,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// `capabilities.add`.
    pub cap_add: Vec<String>,
    /// `capabilities.drop`.
    pub cap_drop: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
}

/// One container, as a local process or as a container of a local image.
#[derive(Clone, PartialEq)]
pub struct ContainerPlan {
    /// The container's name.
    pub name: String,
    /// What it runs.
    pub program: Program,
    /// Its arguments, `$(VAR)` expanded: for an executable `command[1..]` then `args` with
    /// mount paths rewritten, for an image `args` as written.
    pub args: Vec<String>,
    /// Its whole environment, in order.
    pub env: Vec<(String, String)>,
    /// Its volumes (containers only: processes see their mount paths rewritten instead).
    pub mounts: Vec<Mount>,
    /// Its security context (containers only).
    pub security: Security,
    /// Readiness probe.
    pub readiness: Option<Probe>,
    /// Liveness probe.
    pub liveness: Option<Probe>,
}

impl std::fmt::Debug for ContainerPlan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Env values may come from Secrets: names only.
        let env: Vec<&str> = self.env.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("ContainerPlan")
            .field("name", &self.name)
            .field("program", &self.program)
            .field("args", &self.args.len())
            .field("env", &env)
            .finish()
    }
}

/// What running a pod here takes.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PodPlan {
    /// Private directories to create (emptyDir and Secret/ConfigMap volumes).
    pub dirs: Vec<PathBuf>,
    /// Files to write.
    pub files: Vec<FileToWrite>,
    /// Init containers, run one after the other to completion.
    pub init_containers: Vec<ContainerPlan>,
    /// The containers.
    pub containers: Vec<ContainerPlan>,
}

/// Where a pod runs: its address and its private directory.
#[derive(Debug, Clone)]
pub struct Placement<'a> {
    /// The pod's loopback address.
    pub ip: Ipv4Addr,
    /// The pod's private directory.
    pub dir: &'a Path,
}

/// Where the kubeconfig of a ServiceAccount volume is written (beside the volumes, under a
/// name no volume can have).
pub fn kubeconfig_path(pod_dir: &Path, volume: &str) -> PathBuf {
    pod_dir.join("volumes").join(".kubeconfig").join(volume)
}

/// Plans a pod; every problem found is returned, not only the first.
pub fn plan(
    pod: &Pod,
    sources: &Sources,
    config: &RunnerConfig,
    at: &Placement<'_>,
) -> Result<PodPlan, Vec<PlanError>> {
    let mut errors = Vec::new();
    let mut out = PodPlan::default();
    let spec = pod.spec.clone().unwrap_or_default();
    let mut volumes = BTreeMap::new();
    for v in spec.volumes.iter().flatten() {
        match volume(pod, v, sources, config, at, &mut out) {
            Ok(local) => {
                volumes.insert(v.name.clone(), local);
            }
            Err(e) => errors.push(e),
        }
    }
    let kubeconfigs = service_account_kubeconfigs(pod, &volumes, config, at, &mut out);
    for (init, list) in [
        (true, &spec.init_containers),
        (false, &Some(spec.containers.clone())),
    ] {
        for c in list.iter().flatten() {
            match container(pod, c, &volumes, &kubeconfigs, sources, config, at.ip) {
                Ok(p) if init => out.init_containers.push(p),
                Ok(p) => out.containers.push(p),
                Err(mut e) => errors.append(&mut e),
            }
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

/// For local processes (containers see the volume at its mount path, where in-cluster
/// configuration reads it) and a known API server, unless the runner's pod environment
/// names a kubeconfig: the kubeconfig of each volume some container mounts at the ServiceAccount
/// path, written beside the volumes; answers volume → kubeconfig file.
fn service_account_kubeconfigs(
    pod: &Pod,
    volumes: &BTreeMap<String, PathBuf>,
    config: &RunnerConfig,
    at: &Placement<'_>,
    out: &mut PodPlan,
) -> BTreeMap<String, PathBuf> {
    let mut made = BTreeMap::new();
    let Some(api) = &config.api_server else {
        return made;
    };
    let in_place = matches!(config.runtime, Runtime::Containers(_));
    if in_place || config.pod_env.contains_key("KUBECONFIG") {
        return made;
    }
    let spec = pod.spec.clone().unwrap_or_default();
    let mounts = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .flat_map(|c| c.volume_mounts.iter().flatten());
    for m in mounts {
        if m.mount_path.trim_end_matches('/') != crate::projected::TOKEN_MOUNT_PATH
            || made.contains_key(&m.name)
        {
            continue;
        }
        let Some(local) = volumes.get(&m.name) else {
            continue;
        };
        let local = match m.sub_path.as_deref() {
            Some(sub) if !sub.is_empty() => local.join(sub),
            _ => local.clone(),
        };
        let path = kubeconfig_path(at.dir, &m.name);
        let namespace = pod.namespace().unwrap_or_default();
        out.files.push(FileToWrite {
            path: path.clone(),
            contents: crate::projected::kubeconfig(api, &local, &namespace).into_bytes(),
        });
        made.insert(m.name.clone(), path);
    }
    made
}

/// Prepares one volume; answers its local directory.
fn volume(
    pod: &Pod,
    v: &Volume,
    sources: &Sources,
    config: &RunnerConfig,
    at: &Placement<'_>,
    out: &mut PodPlan,
) -> Result<PathBuf, PlanError> {
    let dir = at.dir.join("volumes").join(&v.name);
    let keyed = |data: Option<&BTreeMap<String, Vec<u8>>>,
                 items: Option<&Vec<k8s_openapi::api::core::v1::KeyToPath>>,
                 missing_key: &dyn Fn(String) -> PlanError,
                 out: &mut PodPlan|
     -> Result<(), PlanError> {
        out.dirs.push(dir.clone());
        let Some(data) = data else { return Ok(()) };
        match items {
            Some(items) => {
                for i in items {
                    let value = data.get(&i.key).ok_or_else(|| missing_key(i.key.clone()))?;
                    out.files.push(FileToWrite {
                        path: dir.join(&i.path),
                        contents: value.clone(),
                    });
                }
            }
            None => {
                for (k, value) in data {
                    out.files.push(FileToWrite {
                        path: dir.join(k),
                        contents: value.clone(),
                    });
                }
            }
        }
        Ok(())
    };
    if let Some(s) = &v.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = sources.secrets.get(&name);
        if data.is_none() && !s.optional.unwrap_or(false) {
            return Err(PlanError::MissingSecret(name));
        }
        let missing = |key| PlanError::MissingSecretKey {
            name: name.clone(),
            key,
        };
        keyed(data, s.items.as_ref(), &missing, out)?;
        return Ok(dir);
    }
    if let Some(c) = &v.config_map {
        let data = sources.config_maps.get(&c.name);
        if data.is_none() && !c.optional.unwrap_or(false) {
            return Err(PlanError::MissingConfigMap(c.name.clone()));
        }
        let missing = |key| PlanError::MissingConfigMapKey {
            name: c.name.clone(),
            key,
        };
        keyed(data, c.items.as_ref(), &missing, out)?;
        return Ok(dir);
    }
    if let Some(p) = &v.projected {
        out.dirs.push(dir.clone());
        crate::projected::projected_files(pod, &v.name, p, sources, at.ip, &dir, &mut out.files)?;
        return Ok(dir);
    }
    if let Some(d) = &v.downward_api {
        out.dirs.push(dir.clone());
        let items = d.items.as_deref().unwrap_or_default();
        crate::projected::downward_files(pod, &v.name, items, at.ip, &dir, &mut out.files)?;
        return Ok(dir);
    }
    if v.empty_dir.is_some() {
        out.dirs.push(dir.clone());
        return Ok(dir);
    }
    if let Some(h) = &v.host_path {
        return config
            .host_paths
            .resolve(&h.path)
            .ok_or_else(|| PlanError::HostPathNotMapped {
                volume: v.name.clone(),
                path: h.path.clone(),
            });
    }
    Err(PlanError::UnsupportedVolume {
        volume: v.name.clone(),
    })
}

/// Plans one container.
fn container(
    pod: &Pod,
    c: &Container,
    volumes: &BTreeMap<String, PathBuf>,
    kubeconfigs: &BTreeMap<String, PathBuf>,
    sources: &Sources,
    config: &RunnerConfig,
    ip: Ipv4Addr,
) -> Result<ContainerPlan, Vec<PlanError>> {
    let mut errors = Vec::new();
    let image = c.image.clone().unwrap_or_default();
    let (executable, local_image) = match &config.runtime {
        Runtime::Processes => (config.images.resolve(&image).map(Path::to_path_buf), None),
        Runtime::Containers(images) => (None, images.resolve(&image).map(str::to_owned)),
    };
    if executable.is_none() && local_image.is_none() {
        errors.push(PlanError::UnknownImage {
            container: c.name.clone(),
            image,
        });
    }
    let declared = |name: &str| {
        pod.spec
            .as_ref()
            .and_then(|s| s.volumes.as_ref())
            .and_then(|vs| vs.iter().find(|v| v.name == name))
    };
    let mut mounts: Vec<(String, PathBuf)> = Vec::new();
    let mut container_mounts = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        match volumes.get(&m.name) {
            Some(local) => {
                let local = match m.sub_path.as_deref() {
                    Some(sub) if !sub.is_empty() => local.join(sub),
                    _ => local.clone(),
                };
                let api_data = declared(&m.name).is_some_and(|v| {
                    v.secret.is_some()
                        || v.config_map.is_some()
                        || v.projected.is_some()
                        || v.downward_api.is_some()
                });
                container_mounts.push(Mount {
                    source: local.clone(),
                    target: m.mount_path.clone(),
                    read_only: api_data || m.read_only.unwrap_or(false),
                });
                mounts.push((m.mount_path.trim_end_matches('/').to_owned(), local));
            }
            None if pod
                .spec
                .as_ref()
                .and_then(|s| s.volumes.as_ref())
                .is_some_and(|vs| vs.iter().any(|v| v.name == m.name)) => {} // the volume failed: already reported
            None => errors.push(PlanError::UnknownVolume {
                container: c.name.clone(),
                volume: m.name.clone(),
            }),
        }
    }
    // What a kubelet adds: the API server's Service variables, what the devices the
    // container asks for give, and here, for a local process, the kubeconfig of its
    // ServiceAccount mount.
    let mut runtime_env = config
        .api_server
        .as_ref()
        .map(crate::projected::service_env)
        .unwrap_or_default();
    for allocation in config.devices.allocated(c) {
        runtime_env.extend(allocation.envs.clone());
        for m in &allocation.mounts {
            container_mounts.push(Mount {
                source: m.host_path.clone(),
                target: m.container_path.clone(),
                read_only: m.read_only,
            });
            mounts.push((
                m.container_path.trim_end_matches('/').to_owned(),
                m.host_path.clone(),
            ));
        }
    }
    mounts.sort_by_key(|(p, _)| std::cmp::Reverse(p.len()));
    let service_account_mount = c
        .volume_mounts
        .iter()
        .flatten()
        .find(|m| m.mount_path.trim_end_matches('/') == crate::projected::TOKEN_MOUNT_PATH);
    if let Some(path) = service_account_mount.and_then(|m| kubeconfigs.get(&m.name)) {
        runtime_env.push(("KUBECONFIG".into(), path.to_string_lossy().into_owned()));
    }
    let env = match environment(pod, c, &runtime_env, sources, config, ip) {
        Ok(env) => env,
        Err(mut e) => {
            errors.append(&mut e);
            Vec::new()
        }
    };
    let probes = [&c.readiness_probe, &c.liveness_probe].map(|p| {
        p.as_ref()
            .map(|p| Probe::from_spec(p, c))
            .transpose()
            .map_err(|source| PlanError::Probe {
                container: c.name.clone(),
                source,
            })
    });
    let [readiness, liveness] = probes;
    let (readiness, liveness) = match (readiness, liveness) {
        (Ok(r), Ok(l)) => (r, l),
        (r, l) => {
            errors.extend(r.err());
            errors.extend(l.err());
            (None, None)
        }
    };
    let security = security(pod, c);
    if local_image.is_some()
        && c.security_context
            .as_ref()
            .and_then(|s| s.privileged)
            .unwrap_or(false)
    {
        errors.push(PlanError::Privileged {
            container: c.name.clone(),
        });
    }
    if let Some(image) = local_image {
        if !errors.is_empty() {
            return Err(errors);
        }
        let vars: BTreeMap<&str, &str> =
            env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let expand_all = |words: &Option<Vec<String>>| {
            words
                .as_ref()
                .map(|w| w.iter().map(|w| expand(w, &vars)).collect::<Vec<_>>())
        };
        return Ok(ContainerPlan {
            name: c.name.clone(),
            program: Program::Image {
                image,
                command: expand_all(&c.command),
            },
            args: expand_all(&c.args).unwrap_or_default(),
            env,
            mounts: container_mounts,
            security,
            readiness,
            liveness,
        });
    }
    let mut words: Vec<String> = Vec::new();
    if let (Some(command), Some(exe)) = (c.command.as_ref().and_then(|v| v.first()), &executable) {
        let same = Path::new(command).file_name() == exe.file_name();
        if !same {
            errors.push(PlanError::CommandNotInImage {
                container: c.name.clone(),
                command: command.clone(),
                executable: exe.clone(),
            });
        }
        words.extend(c.command.iter().flatten().skip(1).cloned());
    }
    words.extend(c.args.iter().flatten().cloned());
    if !errors.is_empty() {
        return Err(errors);
    }
    let vars: BTreeMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let args = words
        .iter()
        .map(|w| rewrite(&expand(w, &vars), &mounts))
        .collect();
    // The runner's own variables name paths of this machine, not of the pod: kept as given.
    let given = |k: &str| {
        config
            .pod_env
            .get(k)
            .or_else(|| runtime_env.iter().find(|(n, _)| n == k).map(|(_, v)| v))
    };
    let env = env
        .iter()
        .map(|(k, v)| match given(k) {
            Some(given) if given == v => (k.clone(), v.clone()),
            _ => (k.clone(), rewrite(v, &mounts)),
        })
        .collect();
    Ok(ContainerPlan {
        name: c.name.clone(),
        program: Program::Executable(executable.expect("checked above")),
        args,
        env,
        mounts: Vec::new(),
        security: Security::default(),
        readiness,
        liveness,
    })
}

/// The container's security context over the pod's.
fn security(pod: &Pod, c: &Container) -> Security {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = c.security_context.as_ref();
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    let mut supplemental_groups: Vec<i64> = pod_sc
        .map(|p| {
            p.fs_group
                .into_iter()
                .chain(p.supplemental_groups.iter().flatten().copied())
                .collect()
        })
        .unwrap_or_default();
    supplemental_groups.dedup();
    Security {
        user: sc
            .and_then(|s| s.run_as_user)
            .or_else(|| pod_sc.and_then(|p| p.run_as_user)),
        group: sc
            .and_then(|s| s.run_as_group)
            .or_else(|| pod_sc.and_then(|p| p.run_as_group)),
        supplemental_groups,
        run_as_non_root: sc
            .and_then(|s| s.run_as_non_root)
            .or_else(|| pod_sc.and_then(|p| p.run_as_non_root))
            .unwrap_or(false),
        read_only_root: sc
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
        cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
    }
}

/// The container's environment: the runner's pod environment, `envFrom`, then `env` (later
/// wins), each value `$(VAR)`-expanded against what came before, as the kubelet does.
fn environment(
    pod: &Pod,
    c: &Container,
    runtime_env: &[(String, String)],
    sources: &Sources,
    config: &RunnerConfig,
    ip: Ipv4Addr,
) -> Result<Vec<(String, String)>, Vec<PlanError>> {
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    set(&mut env, "PATH".into(), DEFAULT_PATH.into());
    set(&mut env, "HOSTNAME".into(), pod.name_any());
    for (k, v) in runtime_env {
        set(&mut env, k.clone(), v.clone());
    }
    for (k, v) in &config.pod_env {
        set(&mut env, k.clone(), v.clone());
    }
    let mut errors = Vec::new();
    for f in c.env_from.iter().flatten() {
        let prefix = f.prefix.clone().unwrap_or_default();
        let (data, optional, missing) = if let Some(r) = &f.secret_ref {
            (
                sources.secrets.get(&r.name),
                r.optional,
                PlanError::MissingSecret(r.name.clone()),
            )
        } else if let Some(r) = &f.config_map_ref {
            let missing = PlanError::MissingConfigMap(r.name.clone());
            (sources.config_maps.get(&r.name), r.optional, missing)
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    set(
                        &mut env,
                        format!("{prefix}{k}"),
                        String::from_utf8_lossy(v).into_owned(),
                    );
                }
            }
            None if optional.unwrap_or(false) => {}
            None => errors.push(missing),
        }
    }
    for e in c.env.iter().flatten() {
        match env_value(pod, c, e, sources, ip) {
            Ok(Some(v)) => {
                let vars: BTreeMap<&str, &str> =
                    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                let v = if e.value_from.is_none() {
                    expand(&v, &vars)
                } else {
                    v
                };
                set(&mut env, e.name.clone(), v);
            }
            Ok(None) => {}
            Err(err) => errors.push(err),
        }
    }
    if errors.is_empty() {
        Ok(env)
    } else {
        Err(errors)
    }
}

fn env_value(
    pod: &Pod,
    c: &Container,
    e: &EnvVar,
    sources: &Sources,
    ip: Ipv4Addr,
) -> Result<Option<String>, PlanError> {
    let Some(from) = &e.value_from else {
        return Ok(Some(e.value.clone().unwrap_or_default()));
    };
    let unsupported = |what: String| PlanError::UnsupportedEnv {
        container: c.name.clone(),
        name: e.name.clone(),
        source_desc: what,
    };
    if let Some(f) = &from.field_ref {
        return field(pod, f, ip)
            .map(Some)
            .ok_or_else(|| unsupported(f.field_path.clone()));
    }
    if let Some(r) = &from.secret_key_ref {
        let optional = r.optional.unwrap_or(false);
        return match sources.secrets.get(&r.name).map(|d| d.get(&r.key)) {
            Some(Some(v)) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            _ if optional => Ok(None),
            Some(None) => Err(PlanError::MissingSecretKey {
                name: r.name.clone(),
                key: r.key.clone(),
            }),
            None => Err(PlanError::MissingSecret(r.name.clone())),
        };
    }
    if let Some(r) = &from.config_map_key_ref {
        let optional = r.optional.unwrap_or(false);
        return match sources.config_maps.get(&r.name).map(|d| d.get(&r.key)) {
            Some(Some(v)) => Ok(Some(String::from_utf8_lossy(v).into_owned())),
            _ if optional => Ok(None),
            Some(None) => Err(PlanError::MissingConfigMapKey {
                name: r.name.clone(),
                key: r.key.clone(),
            }),
            None => Err(PlanError::MissingConfigMap(r.name.clone())),
        };
    }
    Err(unsupported("resourceFieldRef".into()))
}

/// The downward API's fields.
pub(crate) fn field(pod: &Pod, f: &ObjectFieldSelector, ip: Ipv4Addr) -> Option<String> {
    let spec = pod.spec.as_ref();
    let path = f.field_path.as_str();
    let keyed = |prefix: &str, map: &BTreeMap<String, String>| {
        let key = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(map.get(key).cloned().unwrap_or_default())
    };
    match path {
        "metadata.name" => Some(pod.name_any()),
        "metadata.namespace" => Some(pod.namespace().unwrap_or_default()),
        "metadata.uid" => Some(pod.uid().unwrap_or_default()),
        "spec.nodeName" => Some(spec?.node_name.clone().unwrap_or_default()),
        "spec.serviceAccountName" => Some(
            spec?
                .service_account_name
                .clone()
                .unwrap_or_else(|| "default".into()),
        ),
        "status.podIP" | "status.podIPs" => Some(ip.to_string()),
        "status.hostIP" | "status.hostIPs" => Some(Ipv4Addr::LOCALHOST.to_string()),
        _ => keyed("metadata.labels['", pod.labels())
            .or_else(|| keyed("metadata.annotations['", pod.annotations())),
    }
}

/// Kubernetes' `$(VAR)` expansion: a defined variable is replaced, `$$` is a literal `$`,
/// anything else stays as written.
pub fn expand(s: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(')
            && let Some(end) = inner.find(')')
            && let Some(v) = vars.get(&inner[..end])
        {
            out.push_str(v);
            rest = &inner[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Replaces every occurrence of a mount path (that ends where a path component ends) by
/// the local directory that stands for it. `mounts` is sorted longest path first.
pub fn rewrite(s: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    'scan: while i < s.len() {
        for (from, to) in mounts {
            if !from.is_empty() && s[i..].starts_with(from.as_str()) {
                let end = i + from.len();
                let boundary = s[end..]
                    .chars()
                    .next()
                    .is_none_or(|ch| !(ch.is_alphanumeric() || "-_.".contains(ch)));
                if boundary {
                    out.push_str(&to.to_string_lossy());
                    i = end;
                    continue 'scan;
                }
            }
        }
        let ch = s[i..].chars().next().expect("in bounds");
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HostPaths, ImageTable};
    use serde_json::json;

    fn config() -> RunnerConfig {
        let mut c = RunnerConfig::new("local", "/state");
        c.images = ImageTable::new().with("hsm-agent", "/bin/hsm-agent");
        c.host_paths = HostPaths::new().with("/sys", "/fixture/sys");
        c.pod_env.insert("KUBECONFIG".into(), "/k/config".into());
        // A path of this machine that happens to lie under a pod's mount path: not rewritten.
        c.pod_env
            .insert("RUNNER_FILE".into(), "/scratch/runner-file".into());
        c
    }

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "agent-1", "namespace": "hsm", "uid": "u-1",
                         "labels": {"app": "a"}},
            "spec": spec,
        }))
        .unwrap()
    }

    fn sources() -> Sources {
        let mut s = Sources::default();
        s.secrets.insert(
            "tls".into(),
            BTreeMap::from([
                ("tls.crt".into(), b"CERT".to_vec()),
                ("pin".into(), b"123456".to_vec()),
            ]),
        );
        s.config_maps.insert(
            "cfg".into(),
            BTreeMap::from([("level".into(), b"debug".to_vec())]),
        );
        s
    }

    fn plan_of(spec: serde_json::Value) -> Result<PodPlan, Vec<PlanError>> {
        let at = Placement {
            ip: Ipv4Addr::new(127, 0, 0, 7),
            dir: Path::new("/state/hsm/agent-1"),
        };
        plan(&pod(spec), &sources(), &config(), &at)
    }

    fn env_of(p: &ContainerPlan, k: &str) -> Option<String> {
        p.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn a_full_container_becomes_a_process_plan() {
        let p = plan_of(json!({
            "nodeName": "local", "serviceAccountName": "agent-sa",
            "volumes": [
                {"name": "tls", "secret": {"secretName": "tls"}},
                {"name": "cfg", "configMap": {"name": "cfg", "items": [{"key": "level", "path": "lvl"}]}},
                {"name": "tmp", "emptyDir": {}},
                {"name": "sys", "hostPath": {"path": "/sys"}}],
            "containers": [{
                "name": "agent", "image": "ghcr.io/org/hsm-agent:v1",
                "command": ["/usr/bin/hsm-agent"],
                "args": ["--tls-cert-file=/etc/hsm/tls/tls.crt", "--sys", "/host/sys", "--node=$(NODE)", "$$(NODE)"],
                "env": [
                    {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                    {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
                    {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                    {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                    {"name": "SA", "valueFrom": {"fieldRef": {"fieldPath": "spec.serviceAccountName"}}},
                    {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                    {"name": "PIN", "valueFrom": {"secretKeyRef": {"name": "tls", "key": "pin"}}},
                    {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "level"}}},
                    {"name": "CERT", "value": "/etc/hsm/tls/tls.crt"},
                    {"name": "WORK", "value": "/scratch/x on $(NODE)"}],
                "volumeMounts": [
                    {"name": "tls", "mountPath": "/etc/hsm/tls"},
                    {"name": "cfg", "mountPath": "/etc/cfg"},
                    {"name": "tmp", "mountPath": "/scratch"},
                    {"name": "sys", "mountPath": "/host/sys"}]}]}))
        .unwrap();
        let c = &p.containers[0];
        assert_eq!(
            c.program,
            Program::Executable(PathBuf::from("/bin/hsm-agent"))
        );
        assert_eq!(
            c.args,
            [
                "--tls-cert-file=/state/hsm/agent-1/volumes/tls/tls.crt",
                "--sys",
                "/fixture/sys",
                "--node=local",
                "$(NODE)"
            ]
        );
        for (k, v) in [
            ("POD_IP", "127.0.0.7"),
            ("NODE", "local"),
            ("NS", "hsm"),
            ("NAME", "agent-1"),
            ("SA", "agent-sa"),
            ("APP", "a"),
            ("PIN", "123456"),
            ("LEVEL", "debug"),
            ("CERT", "/state/hsm/agent-1/volumes/tls/tls.crt"),
            ("WORK", "/state/hsm/agent-1/volumes/tmp/x on local"),
            ("KUBECONFIG", "/k/config"),
            ("RUNNER_FILE", "/scratch/runner-file"),
            ("PATH", DEFAULT_PATH),
        ] {
            assert_eq!(env_of(c, k).as_deref(), Some(v), "{k}");
        }
        let files: Vec<(String, &[u8])> = p
            .files
            .iter()
            .map(|f| (f.path.display().to_string(), f.contents.as_slice()))
            .collect();
        assert!(files.contains(&(
            "/state/hsm/agent-1/volumes/tls/tls.crt".into(),
            b"CERT".as_slice()
        )));
        assert!(files.contains(&(
            "/state/hsm/agent-1/volumes/cfg/lvl".into(),
            b"debug".as_slice()
        )));
        assert!(
            p.dirs
                .contains(&PathBuf::from("/state/hsm/agent-1/volumes/tmp"))
        );
        // The plan's Debug shows no value.
        assert!(!format!("{p:?}").contains("123456"));
    }

    #[test]
    fn what_cannot_run_here_is_every_error_named() {
        let errs = plan_of(json!({
            "volumes": [{"name": "dev", "hostPath": {"path": "/dev/bus/usb"}},
                        {"name": "p", "nfs": {"server": "nfs", "path": "/"}}],
            "containers": [
                {"name": "a", "image": "nginx:1"},
                {"name": "b", "image": "hsm-agent", "command": ["/bin/sh"]},
                {"name": "c", "image": "hsm-agent", "volumeMounts": [{"name": "nope", "mountPath": "/x"}],
                 "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k"}}},
                         {"name": "Q", "valueFrom": {"secretKeyRef": {"name": "tls", "key": "nokey"}}},
                         {"name": "R", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "k", "optional": true}}}]}]}))
        .unwrap_err();
        let reasons: Vec<String> = errs
            .iter()
            .map(|e| format!("{}: {e}", e.reason()))
            .collect();
        assert_eq!(errs.len(), 7, "{reasons:#?}");
        assert!(
            matches!(&errs[0], PlanError::HostPathNotMapped { path, .. } if path == "/dev/bus/usb")
        );
        assert!(matches!(&errs[1], PlanError::UnsupportedVolume { volume } if volume == "p"));
        assert!(matches!(&errs[2], PlanError::UnknownImage { image, .. } if image == "nginx:1"));
        assert!(matches!(&errs[3], PlanError::CommandNotInImage { .. }));
        assert!(matches!(&errs[4], PlanError::UnknownVolume { .. }));
        assert_eq!(errs[5], PlanError::MissingSecret("absent".into()));
        assert!(errs[5].transient() && !errs[2].transient());
        assert!(matches!(&errs[6], PlanError::MissingSecretKey { key, .. } if key == "nokey"));
    }

    #[test]
    fn a_service_account_mount_becomes_a_kubeconfig_for_a_local_process_only() {
        let pod = pod(json!({
            "serviceAccountName": "agent-sa",
            "volumes": [{"name": "kube-api-access-x", "projected": {"sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}}]}},
                {"name": "tmp", "emptyDir": {}}],
            "containers": [
                {"name": "with", "image": "hsm-agent", "volumeMounts": [
                    {"name": "tmp", "mountPath": "/tmp"},
                    {"name": "kube-api-access-x", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true}]},
                {"name": "without", "image": "hsm-agent",
                 "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}]}]}));
        let mut sources = sources();
        sources.tokens.insert(
            TokenSpec {
                audience: None,
                expiration_seconds: 3607,
            },
            "tok".into(),
        );
        let mut config = config();
        config.pod_env.remove("KUBECONFIG");
        config.api_server = Some("https://10.0.0.1:6443".parse().unwrap());
        // The state directory lies under a mount path of the pod: the generated path is
        // still this machine's, not rewritten.
        let dir = Path::new("/tmp/state/hsm/agent-1");
        let at = Placement {
            ip: Ipv4Addr::new(127, 0, 0, 7),
            dir,
        };
        let p = plan(&pod, &sources, &config, &at).unwrap();
        let kubeconfig = "/tmp/state/hsm/agent-1/volumes/.kubeconfig/kube-api-access-x";
        assert_eq!(
            env_of(&p.containers[0], "KUBECONFIG").as_deref(),
            Some(kubeconfig)
        );
        assert_eq!(env_of(&p.containers[1], "KUBECONFIG"), None);
        for c in &p.containers {
            assert_eq!(
                env_of(c, "KUBERNETES_SERVICE_HOST").as_deref(),
                Some("10.0.0.1")
            );
            assert_eq!(
                env_of(c, "KUBERNETES_SERVICE_PORT").as_deref(),
                Some("6443")
            );
        }
        let written = p
            .files
            .iter()
            .find(|f| f.path == Path::new(kubeconfig))
            .expect("the kubeconfig is written");
        let text = String::from_utf8(written.contents.clone()).unwrap();
        assert!(
            text.contains("/tmp/state/hsm/agent-1/volumes/kube-api-access-x/token"),
            "{text}"
        );
        assert!(p.files.iter().any(|f| f.path
            == Path::new("/tmp/state/hsm/agent-1/volumes/kube-api-access-x/token")
            && f.contents == b"tok"));

        // A container runtime mounts the volume in place: no kubeconfig, the service
        // variables only.
        let mut in_containers = config.clone();
        in_containers.runtime = Runtime::Containers(
            crate::config::ContainerImages::new().with("hsm-agent", "localhost/hsm-agent:dev"),
        );
        let p = plan(&pod, &sources, &in_containers, &at).unwrap();
        assert_eq!(env_of(&p.containers[0], "KUBECONFIG"), None);
        assert_eq!(
            env_of(&p.containers[0], "KUBERNETES_SERVICE_HOST").as_deref(),
            Some("10.0.0.1")
        );
        assert!(!p.files.iter().any(|f| f.path == Path::new(kubeconfig)));

        // A KUBECONFIG the runner is given wins: nothing generated.
        config
            .pod_env
            .insert("KUBECONFIG".into(), "/admin/config".into());
        let p = plan(&pod, &sources, &config, &at).unwrap();
        assert_eq!(
            env_of(&p.containers[0], "KUBECONFIG").as_deref(),
            Some("/admin/config")
        );
        assert!(!p.files.iter().any(|f| f.path == Path::new(kubeconfig)));

        // No API server known: no service variables, no kubeconfig.
        config.pod_env.remove("KUBECONFIG");
        config.api_server = None;
        let p = plan(&pod, &sources, &config, &at).unwrap();
        assert_eq!(env_of(&p.containers[0], "KUBECONFIG"), None);
        assert_eq!(env_of(&p.containers[0], "KUBERNETES_SERVICE_HOST"), None);
    }

    #[test]
    fn a_container_asking_for_a_device_gets_its_variables_and_mounts() {
        use crate::devices::{DeviceAllocation, Devices};
        let pod = pod(json!({
            "containers": [
                {"name": "agent", "image": "hsm-agent",
                 "args": ["--token-dir=/var/lib/softhsm/tokens/t1"],
                 "env": [{"name": "OVERRIDDEN", "value": "by-the-spec"}],
                 "resources": {"limits": {"hsm.j5t.io/picohsm": "1"}}},
                {"name": "other", "image": "hsm-agent"}]}));
        let mut config = config();
        config.devices = Devices::new().with(
            "hsm.j5t.io/picohsm",
            DeviceAllocation::new()
                .with_env("SOFTHSM2_CONF", "/etc/softhsm2.conf")
                .with_env("OVERRIDDEN", "by-the-device")
                .with_mount("/node/tokens", "/var/lib/softhsm/tokens"),
        );
        let at = Placement {
            ip: Ipv4Addr::new(127, 0, 0, 7),
            dir: Path::new("/state/hsm/agent-1"),
        };
        // A local process: the variables, and the mount's path rewritten to the host's.
        let p = plan(&pod, &sources(), &config, &at).unwrap();
        let (agent, other) = (&p.containers[0], &p.containers[1]);
        assert_eq!(
            env_of(agent, "SOFTHSM2_CONF").as_deref(),
            Some("/etc/softhsm2.conf")
        );
        assert_eq!(env_of(agent, "OVERRIDDEN").as_deref(), Some("by-the-spec"));
        assert_eq!(agent.args, ["--token-dir=/node/tokens/t1"]);
        assert_eq!(env_of(other, "SOFTHSM2_CONF"), None);

        // A container: the variables and the mount.
        config.runtime = Runtime::Containers(
            crate::config::ContainerImages::new().with("hsm-agent", "localhost/hsm-agent:e2e"),
        );
        let p = plan(&pod, &sources(), &config, &at).unwrap();
        let (agent, other) = (&p.containers[0], &p.containers[1]);
        assert_eq!(
            env_of(agent, "SOFTHSM2_CONF").as_deref(),
            Some("/etc/softhsm2.conf")
        );
        assert_eq!(agent.args, ["--token-dir=/var/lib/softhsm/tokens/t1"]);
        assert_eq!(
            agent.mounts,
            [Mount {
                source: PathBuf::from("/node/tokens"),
                target: "/var/lib/softhsm/tokens".into(),
                read_only: false,
            }]
        );
        assert!(other.mounts.is_empty());
        assert_eq!(env_of(other, "SOFTHSM2_CONF"), None);
    }

    #[test]
    fn rewriting_respects_path_boundaries() {
        let m = vec![
            ("/etc/tls".to_owned(), PathBuf::from("/p/tls")),
            ("/etc".to_owned(), PathBuf::from("/p/etc")),
        ];
        assert_eq!(
            rewrite("--a=/etc/tls/x,/etc/tlsx,/etc", &m),
            "--a=/p/tls/x,/p/etc/tlsx,/p/etc"
        );
        assert_eq!(rewrite("/etcetera", &m), "/etcetera");
    }

    #[test]
    fn expansion_follows_kubernetes() {
        let vars = BTreeMap::from([("A", "1")]);
        assert_eq!(expand("$(A)-$(B)-$$(A)-$", &vars), "1-$(B)-$(A)-$");
    }

    #[test]
    fn referenced_names_are_collected_once() {
        let p = pod(json!({
            "volumes": [{"name": "t", "secret": {"secretName": "s1"}}, {"name": "c", "configMap": {"name": "m1"}}],
            "containers": [{"name": "a", "image": "x",
                "env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "s1", "key": "k"}}}],
                "envFrom": [{"secretRef": {"name": "s2"}}, {"configMapRef": {"name": "m2"}}]}]}));
        assert_eq!(
            referenced(&p),
            (
                vec!["s1".into(), "s2".into()],
                vec!["m1".into(), "m2".into()]
            )
        );
    }
}
