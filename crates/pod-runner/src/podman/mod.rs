//! The Podman backend: each pod's containers as Podman containers of local images, through
//! Podman's Docker-compatible API (bollard).
//!
//! - One internal network per runner (no route out), made at set-up and removed at the end;
//!   this machine is its gateway, so probes reach the pods' addresses and the pods reach a
//!   server listening here at [`Podman::gateway`] (the Kubernetes API, for instance).
//! - Each pod: an infra container of a pause image (catatonit, built here: nothing is ever
//!   pulled) holding the pod's address on that network and its network namespace; each
//!   container of the pod joins it (`container:<id>`), so they share `localhost`.
//! - A container: the image from the runner's [`crate::ContainerImages`], `command` and
//!   `args` as written, the volumes bind-mounted from the pod's directory at their mount
//!   paths, the security context applied, its output appended to the container's log file;
//!   every (re)start is a new container, removed once it has ended.
//! - Every container and the network carry [`RUNNER_LABEL`] with the runner's id: what a
//!   killed run left is removed at set-up, and everything at [`Backend::kill_all`].
//!
//! When no Podman socket answers, the backend starts `podman system service` on a socket of
//! its own and stops it at the end.

mod setup;
pub mod spec;

pub use spec::{CONTAINER_LABEL, POD_LABEL, RUNNER_LABEL};

use crate::backend::{Backend, BackendError, Launch, PodRef, Running, Sandbox};
use crate::plan::Program;
use async_trait::async_trait;
use bollard::Docker;
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, LogsOptions, RemoveContainerOptions,
    WaitContainerOptions,
};
use futures::StreamExt;
use setup::{Network, Service};
use std::collections::{BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{OnceCell, watch};

/// How to reach Podman and what identifies this runner's containers.
#[derive(Debug, Clone)]
pub struct PodmanConfig {
    /// The runner's id: the value of [`RUNNER_LABEL`] on everything it makes, and part of its
    /// network's name. Two runners at once need two ids; a run with the id of a killed one
    /// removes what that one left.
    pub id: String,
    /// The socket to use. None: `DOCKER_HOST` (a `unix://` socket) or
    /// `/run/podman/podman.sock` if one answers, else a service of the runner's own.
    pub socket: Option<PathBuf>,
}

impl PodmanConfig {
    /// A configuration for the runner `id` with the usual sockets.
    pub fn new(id: impl Into<String>) -> Self {
        PodmanConfig {
            id: id.into(),
            socket: None,
        }
    }
}

/// What set-up made.
struct Ready {
    docker: Docker,
    socket: PathBuf,
    network: Network,
    pause: String,
}

struct Inner {
    config: PodmanConfig,
    ready: OnceCell<Arc<Ready>>,
    service: Mutex<Option<Service>>,
    addresses: Arc<Mutex<BTreeSet<Ipv4Addr>>>,
    closed: AtomicBool,
}

/// Pods as Podman containers. Cheap to clone (clones share everything).
#[derive(Clone)]
pub struct Podman {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Podman {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Podman")
            .field("id", &self.inner.config.id)
            .finish()
    }
}

fn setup_error(e: String) -> BackendError {
    BackendError::Setup(e)
}

fn podman_error(action: impl Into<String>) -> impl FnOnce(bollard::errors::Error) -> BackendError {
    let action = action.into();
    move |source| BackendError::Podman { action, source }
}

/// A name Podman accepts made from `s` (letters, digits, `_.-`).
fn sanitize(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect()
}

impl Podman {
    /// A backend that sets itself up when the first pod starts (errors then show on the
    /// pods' status). [`Podman::connect`] sets up at once.
    pub fn new(config: PodmanConfig) -> Self {
        Podman {
            inner: Arc::new(Inner {
                config,
                ready: OnceCell::new(),
                service: Mutex::new(None),
                addresses: Arc::default(),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// A backend set up now: the socket answering (a service started if needed), a killed
    /// run's leftovers removed, the pause image there, the network made.
    pub async fn connect(config: PodmanConfig) -> Result<Self, BackendError> {
        let podman = Podman::new(config);
        podman.ready().await?;
        Ok(podman)
    }

    /// This machine's address on the runner's network: where pods reach a server listening
    /// here (give it to them as `KUBERNETES_SERVICE_HOST`). None before set-up.
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.inner.ready.get().map(|r| r.network.gateway)
    }

    /// The runner's network's name. None before set-up.
    pub fn network(&self) -> Option<String> {
        self.inner.ready.get().map(|r| r.network.name.clone())
    }

    /// The socket the backend talks to. None before set-up.
    pub fn socket(&self) -> Option<PathBuf> {
        self.inner.ready.get().map(|r| r.socket.clone())
    }

    /// The runner's id (the value of [`RUNNER_LABEL`]).
    pub fn id(&self) -> &str {
        &self.inner.config.id
    }

    async fn ready(&self) -> Result<Arc<Ready>, BackendError> {
        if self.inner.closed.load(Ordering::SeqCst) {
            return Err(setup_error("the Podman backend was shut down".into()));
        }
        self.inner
            .ready
            .get_or_try_init(|| self.set_up())
            .await
            .cloned()
    }

    async fn set_up(&self) -> Result<Arc<Ready>, BackendError> {
        let config = &self.inner.config;
        let (docker, socket) = self.socket_answering().await?;
        setup::remove_labelled(&docker, &socket, &config.id)
            .await
            .map_err(setup_error)?;
        let pause = setup::pause_image(&docker).await.map_err(setup_error)?;
        let name = format!("pod-runner-{}", sanitize(&config.id));
        let network = setup::create_network(&docker, &config.id, &name)
            .await
            .map_err(setup_error)?;
        tracing::info!(network = %network.name, gateway = %network.gateway, socket = %socket.display(), "podman backend ready");
        Ok(Arc::new(Ready {
            docker,
            socket,
            network,
            pause,
        }))
    }

    async fn socket_answering(&self) -> Result<(Docker, PathBuf), BackendError> {
        let config = &self.inner.config;
        if let Some(socket) = &config.socket {
            return setup::connect(socket)
                .await
                .map(|d| (d, socket.clone()))
                .ok_or_else(|| setup_error(format!("no Podman answers on {}", socket.display())));
        }
        for socket in setup::usual_sockets() {
            if let Some(docker) = setup::connect(&socket).await {
                return Ok((docker, socket));
            }
        }
        let socket = std::env::temp_dir().join(format!(
            "pod-runner-{}-{}.sock",
            sanitize(&config.id),
            std::process::id()
        ));
        let (service, docker) = Service::start(&socket).await.map_err(setup_error)?;
        let socket = service.socket().to_owned();
        *self.inner.service.lock().unwrap_or_else(|e| e.into_inner()) = Some(service);
        Ok((docker, socket))
    }

    /// Removes everything labelled with the runner's id, then the network, then stops the
    /// service it started.
    async fn clean_up(socket: PathBuf, id: String, network: Option<Network>) {
        if let Some(docker) = setup::connect(&socket).await {
            if let Err(e) = setup::remove_labelled(&docker, &socket, &id).await {
                tracing::warn!(error = %e, "removing the runner's containers");
            }
            if let Some(n) = &network
                && let Err(e) = docker.remove_network(&n.name).await
                && !setup::not_found(&e)
            {
                tracing::warn!(error = %e, network = %n.name, "removing the network");
            }
        }
        if let Some(n) = network {
            setup::remove_bridge(&n.bridge);
        }
    }
}

#[async_trait]
impl Backend for Podman {
    async fn sandbox(&self, pod: PodRef<'_>) -> Result<Box<dyn Sandbox>, BackendError> {
        let ready = self.ready().await?;
        let ip = {
            let mut taken = self
                .inner
                .addresses
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let ip = ready
                .network
                .pod_addresses()
                .find(|ip| !taken.contains(ip))
                .ok_or_else(|| setup_error("no address left on the runner's network".into()))?;
            taken.insert(ip);
            ip
        };
        let address = AddressHold {
            ip,
            addresses: self.inner.addresses.clone(),
        };
        let uid: String = pod.uid.chars().take(8).collect();
        let name = sanitize(&format!(
            "{}-{}-{}-{uid}",
            ready.network.name, pod.namespace, pod.name
        ));
        let pod_label = format!("{}/{}", pod.namespace, pod.name);
        let labels = HashMap::from([
            (RUNNER_LABEL.to_owned(), self.inner.config.id.clone()),
            (POD_LABEL.to_owned(), pod_label.clone()),
            (CONTAINER_LABEL.to_owned(), spec::INFRA.to_owned()),
        ]);
        let body = spec::infra(&ready.pause, &ready.network.name, ip, pod.name, labels);
        let docker = &ready.docker;
        let infra = format!("{name}-infra");
        // A same-named container of an earlier pod with this uid cannot run on: replace it.
        let _ = docker
            .remove_container(
                &infra,
                Some(RemoveContainerOptions {
                    force: true,
                    ..RemoveContainerOptions::default()
                }),
            )
            .await;
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(infra.clone()),
                    ..CreateContainerOptions::default()
                }),
                body,
            )
            .await
            .map_err(podman_error(format!(
                "creating the infra container of {pod_label}"
            )))?;
        let sandbox = PodmanSandbox {
            ready: ready.clone(),
            infra: created.id,
            name,
            pod_label,
            runner: self.inner.config.id.clone(),
            _address: address,
        };
        if let Err(source) = docker.start_container(&sandbox.infra, None).await {
            sandbox.remove_infra().await;
            return Err(BackendError::Podman {
                action: format!("starting the infra container of {}", sandbox.pod_label),
                source,
            });
        }
        tracing::debug!(pod = %sandbox.pod_label, %ip, "pod sandbox started");
        Ok(Box::new(sandbox))
    }

    fn kill_all(&self) {
        if self.inner.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let service = self
            .inner
            .service
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(ready) = self.inner.ready.get() {
            let socket = ready.socket.clone();
            let id = self.inner.config.id.clone();
            let network = ready.network.clone();
            // Its own thread and runtime: this may run in Drop, inside or outside a runtime.
            let done = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(runtime) = runtime {
                    runtime.block_on(Podman::clean_up(socket, id, Some(network)));
                }
            });
            let _ = done.join();
        }
        drop(service);
    }
}

/// An address of the network held for one pod.
struct AddressHold {
    ip: Ipv4Addr,
    addresses: Arc<Mutex<BTreeSet<Ipv4Addr>>>,
}

impl Drop for AddressHold {
    fn drop(&mut self) {
        self.addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.ip);
    }
}

struct PodmanSandbox {
    ready: Arc<Ready>,
    infra: String,
    name: String,
    pod_label: String,
    runner: String,
    _address: AddressHold,
}

impl PodmanSandbox {
    async fn remove_infra(&self) {
        remove(&self.ready.docker, &self.infra).await;
    }

    async fn check_user(&self, launch: &Launch<'_>, image: &str) -> Result<(), BackendError> {
        let s = &launch.plan.security;
        if !s.run_as_non_root {
            return Ok(());
        }
        let root = match s.user {
            Some(u) => u == 0,
            None => {
                let inspect = self
                    .ready
                    .docker
                    .inspect_image(image)
                    .await
                    .map_err(podman_error(format!("inspecting image {image}")))?;
                spec::image_user_is_root(inspect.config.as_ref().and_then(|c| c.user.as_deref()))
            }
        };
        if root {
            return Err(BackendError::RunsAsRoot {
                container: launch.plan.name.clone(),
            });
        }
        Ok(())
    }
}

async fn remove(docker: &Docker, id: &str) {
    if let Err(e) = setup::remove_container(docker, id).await {
        tracing::warn!(container = id, error = %e, "removing a container");
    }
}

#[async_trait]
impl Sandbox for PodmanSandbox {
    fn ip(&self) -> Ipv4Addr {
        self._address.ip
    }

    async fn start(&self, launch: Launch<'_>) -> Result<Box<dyn Running>, BackendError> {
        let plan = launch.plan;
        let Program::Image { image, .. } = &plan.program else {
            return Err(BackendError::WrongRuntime {
                container: plan.name.clone(),
                what: "the Podman backend runs images, not local executables",
            });
        };
        self.check_user(&launch, image).await?;
        let labels = HashMap::from([
            (RUNNER_LABEL.to_owned(), self.runner.clone()),
            (POD_LABEL.to_owned(), self.pod_label.clone()),
            (CONTAINER_LABEL.to_owned(), plan.name.clone()),
        ]);
        let body = spec::container(plan, &self.infra, labels).expect("an image's plan");
        let suffix = hex::encode(rand::random::<[u8; 3]>());
        let name = sanitize(&format!("{}-{}-{suffix}", self.name, plan.name));
        let docker = self.ready.docker.clone();
        let id = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name),
                    ..CreateContainerOptions::default()
                }),
                body,
            )
            .await
            .map_err(podman_error(format!(
                "creating container {} of {}",
                plan.name, self.pod_label
            )))?
            .id;
        if let Err(source) = docker.start_container(&id, None).await {
            remove(&docker, &id).await;
            return Err(BackendError::Podman {
                action: format!("starting container {} of {}", plan.name, self.pod_label),
                source,
            });
        }
        tracing::debug!(pod = launch.pod, container = %plan.name, id = %id, "started");
        let (exit_tx, exit) = watch::channel(None);
        let log = launch.log.to_owned();
        let watcher = tokio::spawn(watch_container(docker.clone(), id.clone(), log, exit_tx));
        Ok(Box::new(PodmanContainer {
            docker,
            id,
            exit,
            watcher,
        }))
    }

    async fn close(self: Box<Self>) {
        // Whatever of the pod is left (a container still being removed), then the infra
        // container.
        if let Err(e) = setup::remove_containers(
            &self.ready.docker,
            &self.ready.socket,
            &[(POD_LABEL, &self.pod_label), (RUNNER_LABEL, &self.runner)],
        )
        .await
        {
            tracing::warn!(pod = %self.pod_label, error = %e, "removing the pod's containers");
        }
        self.remove_infra().await;
        tracing::debug!(pod = %self.pod_label, "pod sandbox removed");
    }
}

/// Follows a container: its output into the log file, its exit code into `exit`, then
/// removes it.
async fn watch_container(
    docker: Docker,
    id: String,
    log: PathBuf,
    exit: watch::Sender<Option<i32>>,
) {
    let logs = tokio::spawn(copy_logs(docker.clone(), id.clone(), log));
    let mut wait = std::pin::pin!(docker.wait_container(
        &id,
        Some(WaitContainerOptions {
            condition: "not-running".into(),
        })
    ));
    let code = match wait.next().await {
        Some(Ok(r)) => i32::try_from(r.status_code).ok(),
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => {
            i32::try_from(code).ok()
        }
        _ => None,
    };
    let code = match code {
        Some(code) => code,
        None => docker
            .inspect_container(&id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.exit_code)
            .and_then(|c| i32::try_from(c).ok())
            .unwrap_or(-1),
    };
    // The last lines reach the file, and the container is gone, before anyone hears of the
    // exit (the pod's infra container can go only after its containers).
    let _ = tokio::time::timeout(Duration::from_secs(2), logs).await;
    remove(&docker, &id).await;
    let _ = exit.send(Some(code));
}

async fn copy_logs(docker: Docker, id: String, log: PathBuf) {
    let file = tokio::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .await;
    let Ok(mut file) = file else {
        tracing::warn!(log = %log.display(), "cannot open the container's log file");
        return;
    };
    let mut lines = std::pin::pin!(docker.logs(
        &id,
        Some(LogsOptions {
            follow: true,
            stdout: true,
            stderr: true,
            ..LogsOptions::default()
        })
    ));
    while let Some(Ok(chunk)) = lines.next().await {
        if file.write_all(&chunk.into_bytes()).await.is_err() {
            break;
        }
    }
    let _ = file.flush().await;
}

struct PodmanContainer {
    docker: Docker,
    id: String,
    exit: watch::Receiver<Option<i32>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl PodmanContainer {
    fn signal(&self, signal: &str) {
        if self.exit.borrow().is_some() {
            return;
        }
        let (docker, id, signal) = (self.docker.clone(), self.id.clone(), signal.to_owned());
        tokio::spawn(async move {
            let _ = docker
                .kill_container(&id, Some(KillContainerOptions { signal }))
                .await;
        });
    }
}

#[async_trait]
impl Running for PodmanContainer {
    async fn wait(&mut self) -> std::io::Result<i32> {
        match self.exit.wait_for(Option::is_some).await {
            Ok(code) => Ok(code.unwrap_or(-1)),
            Err(_) => Err(std::io::Error::other("the container's watcher ended")),
        }
    }

    fn terminate(&mut self) {
        self.signal("SIGTERM");
    }

    fn kill(&mut self) {
        self.signal("SIGKILL");
    }
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        if self.exit.borrow().is_none() && !self.watcher.is_finished() {
            // Nobody waits for it any more: it goes now (the watcher then removes it).
            let (docker, id) = (self.docker.clone(), self.id.clone());
            if let Ok(handle) = tokio::runtime::Handle::try_current() {
                handle.spawn(async move {
                    let _ = docker
                        .kill_container(
                            &id,
                            Some(KillContainerOptions {
                                signal: "SIGKILL".into(),
                            }),
                        )
                        .await;
                });
            }
        }
    }
}
