//! One pod on this machine: its address, its private files, its containers started,
//! probed, restarted and stopped, and its status written back.

use crate::backend::{Backend, BackendError, Launch, PodRef, Running, Sandbox};
use crate::config::RunnerConfig;
use crate::plan::{self, ContainerPlan, Placement, PlanError, PodPlan, Sources};
use crate::probe::{Probe, Tracker};
use crate::status::{self, Container, Observed, State};
use crate::tokens::PodTokens;
use chrono::Utc;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, Patch, PatchParams};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};

/// What every pod's supervisor shares.
pub(crate) struct Shared {
    pub client: kube::Client,
    pub config: RunnerConfig,
    pub backend: Arc<dyn Backend>,
}

/// The stop signal: `Some(grace)` once the pod must stop.
pub(crate) type StopRx = watch::Receiver<Option<Duration>>;

/// A pod's private directory.
pub fn pod_dir(state_dir: &Path, namespace: &str, pod: &str) -> PathBuf {
    state_dir.join(namespace).join(pod)
}

/// A container's log file.
pub fn log_path(state_dir: &Path, namespace: &str, pod: &str, container: &str) -> PathBuf {
    pod_dir(state_dir, namespace, pod)
        .join("logs")
        .join(format!("{container}.log"))
}

/// The observed state and the wake-up of the status writer.
struct Reporter {
    observed: Mutex<Observed>,
    changed: Notify,
}

impl Reporter {
    fn update(&self, f: impl FnOnce(&mut Observed)) {
        f(&mut self.observed.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_one();
    }

    fn snapshot(&self) -> Observed {
        self.observed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Writes the status whenever it changed, until aborted.
    async fn write_loop(self: Arc<Self>, api: Api<Pod>, name: String) {
        let mut last = serde_json::Value::Null;
        loop {
            self.changed.notified().await;
            let status = status::pod_status(&self.snapshot());
            if status::same(&status, &last) {
                continue;
            }
            let patch = serde_json::json!({"status": status});
            match api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => last = status,
                Err(e) => tracing::debug!(pod = %name, error = %e, "writing pod status"),
            }
        }
    }
}

fn stopped(stop: &StopRx) -> Option<Duration> {
    *stop.borrow()
}

/// Waits for the stop signal; a dropped sender stops at once.
async fn until_stop(stop: &mut StopRx) -> Duration {
    match stop.wait_for(Option::is_some).await {
        Ok(g) => g.unwrap_or_default(),
        Err(_) => Duration::ZERO,
    }
}

/// Runs a pod until told to stop; returns once every process of it is gone.
pub(crate) async fn run_pod(shared: Arc<Shared>, pod: Pod, mut stop: StopRx) {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(shared.client.clone(), &ns);
    let spec = pod.spec.clone().unwrap_or_default();
    let new = |c: &k8s_openapi::api::core::v1::Container| {
        Container::new(&c.name, c.image.as_deref().unwrap_or_default())
    };
    let reporter = Arc::new(Reporter {
        observed: Mutex::new(Observed {
            ip: None,
            started: Utc::now(),
            initialized: spec.init_containers.as_ref().is_none_or(Vec::is_empty),
            init_containers: spec.init_containers.iter().flatten().map(new).collect(),
            containers: spec.containers.iter().map(new).collect(),
            failed: None,
            restart_always: spec.restart_policy.as_deref().unwrap_or("Always") == "Always",
        }),
        changed: Notify::new(),
    });
    let writer = tokio::spawn(reporter.clone().write_loop(api, name.clone()));
    let dir = pod_dir(&shared.config.state_dir, &ns, &name);
    let uid = pod.uid().unwrap_or_default();
    let pod_ref = PodRef {
        namespace: &ns,
        name: &name,
        uid: &uid,
    };
    let sandbox = tokio::select! {
        made = shared.backend.sandbox(pod_ref) => made,
        _ = until_stop(&mut stop) => {
            writer.abort();
            return;
        }
    };
    let sandbox = match sandbox {
        Ok(sandbox) => sandbox,
        Err(e) => {
            tracing::warn!(pod = %name, error = %e, "setting up the pod's sandbox");
            let reason = match e {
                BackendError::Address(_) => "NoAddress",
                _ => "FailedCreatePodSandBox",
            };
            reporter.update(|o| o.failed = Some((reason.into(), e.to_string())));
            until_stop(&mut stop).await;
            writer.abort();
            return;
        }
    };
    let ip = sandbox.ip();
    reporter.update(|o| o.ip = Some(ip));
    let mut tokens = PodTokens::default();
    if let Some(plan) = prepare(&shared, &pod, &reporter, &dir, ip, &mut tokens, &mut stop).await {
        let pod_ref = format!("{ns}/{name}");
        let run = PodRun {
            shared: &shared,
            reporter: &reporter,
            dir: &dir,
            ip,
            pod: &pod_ref,
            never_restart: spec.restart_policy.as_deref() == Some("Never"),
            sandbox: &*sandbox,
        };
        if run.init(&plan.init_containers, &stop).await {
            reporter.update(|o| o.initialized = true);
            let all = plan
                .containers
                .iter()
                .enumerate()
                .map(|(i, c)| run.container(i, c, stop.clone()));
            tokio::select! {
                _ = futures::future::join_all(all) => {}
                _ = refresh(&shared, &pod, &dir, ip, tokens, stop.clone()) => {}
            }
        } else {
            until_stop(&mut stop).await;
        }
    }
    // Let the last status go out unless the pod is being stopped (then nobody reads it).
    if stopped(&stop).is_none() {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    writer.abort();
    sandbox.close().await;
    // Secrets do not outlive the pod; the logs stay for `kubectl logs`.
    let _ = std::fs::remove_dir_all(dir.join("volumes"));
}

/// Resolves and plans the pod and writes its files; retries while what is missing may
/// appear (a Secret not created yet). None when the pod cannot run or was stopped.
async fn prepare(
    shared: &Shared,
    pod: &Pod,
    reporter: &Reporter,
    dir: &Path,
    ip: Ipv4Addr,
    tokens: &mut PodTokens,
    stop: &mut StopRx,
) -> Option<PodPlan> {
    loop {
        if stopped(stop).is_some() {
            return None;
        }
        let sources = fetch_sources(shared, pod, tokens).await;
        let planned = plan::plan(pod, &sources, &shared.config, &Placement { ip, dir });
        let errors =
            match planned.map(|p| write_files(dir, &p, containers(&shared.config)).map(|()| p)) {
                Ok(Ok(plan)) => return Some(plan),
                Ok(Err(e)) => {
                    let msg = format!("writing the pod's files: {e}");
                    reporter.update(|o| o.failed = Some(("FailedMount".into(), msg)));
                    until_stop(stop).await;
                    return None;
                }
                Err(errors) => errors,
            };
        let message = errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        let reason = errors[0].reason();
        let transient = errors.iter().all(PlanError::transient);
        tracing::warn!(pod = %pod.name_any(), %message, "pod cannot start");
        reporter.update(|o| {
            for c in o.containers.iter_mut().chain(o.init_containers.iter_mut()) {
                c.state = State::Waiting {
                    reason: reason.into(),
                    message: message.clone(),
                };
            }
            if !transient {
                o.failed = Some((reason.into(), message.clone()));
            }
        });
        if !transient {
            until_stop(stop).await;
            return None;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = until_stop(stop) => return None,
        }
    }
}

/// Reads the Secrets and ConfigMaps the pod refers to (an unreadable one counts as absent)
/// and its ServiceAccount tokens (requested anew when due).
async fn fetch_sources(shared: &Shared, pod: &Pod, tokens: &mut PodTokens) -> Sources {
    let client = &shared.client;
    let ns = pod.namespace().unwrap_or_default();
    let (secret_names, map_names) = plan::referenced(pod);
    let mut sources = Sources {
        tokens: tokens
            .current(client, pod, shared.config.token_refresh_fraction)
            .await,
        ..Sources::default()
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for name in secret_names {
        if let Ok(Some(s)) = secrets.get_opt(&name).await {
            let mut data: BTreeMap<String, Vec<u8>> = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            sources.secrets.insert(name, data);
        }
    }
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    for name in map_names {
        if let Ok(Some(m)) = maps.get_opt(&name).await {
            let mut data: BTreeMap<String, Vec<u8>> = m
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            data.extend(
                m.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            sources.config_maps.insert(name, data);
        }
    }
    sources
}

/// Creates the pod's directories and files. For local processes all are owner-only. For
/// containers, whose user may be anyone, the volume directories are open to all (0777, as a
/// kubelet's emptyDir; Secret and ConfigMap volumes are mounted read-only) and the files
/// readable by all (0644, a kubelet's default mode): the pod's own directory stays
/// owner-only, so nobody else on this machine reaches them.
fn write_files(dir: &Path, plan: &PodPlan, containers: bool) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let (dir_mode, file_mode) = if containers {
        (0o777, 0o644)
    } else {
        (0o700, 0o600)
    };
    let mkdir = |d: &Path, mode: u32| {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(d)?;
        if mode != 0o700 {
            // The umask narrowed what DirBuilder made.
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode))?;
        }
        Ok::<(), std::io::Error>(())
    };
    mkdir(dir, 0o700)?;
    mkdir(&dir.join("logs"), 0o700)?;
    for d in &plan.dirs {
        mkdir(d, dir_mode)?;
    }
    for f in &plan.files {
        if let Some(parent) = f.path.parent() {
            mkdir(parent, dir_mode)?;
        }
        if std::fs::read(&f.path).is_ok_and(|old| old == f.contents) {
            continue;
        }
        // A new version replaces the old one whole (write aside, then rename), as a
        // kubelet's atomic writer does: a reader sees the old or the new contents.
        let mut aside = f.path.clone().into_os_string();
        aside.push(".new");
        let aside = PathBuf::from(aside);
        let _ = std::fs::remove_file(&aside);
        use std::io::Write;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file_mode)
            .open(&aside)?
            .write_all(&f.contents)?;
        std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(file_mode))?;
        std::fs::rename(&aside, &f.path)?;
    }
    Ok(())
}

/// Keeps the pod's Secret and ConfigMap files and ServiceAccount tokens up to date, as a
/// kubelet does, every `resync`; runs until stopped.
async fn refresh(
    shared: &Shared,
    pod: &Pod,
    dir: &Path,
    ip: Ipv4Addr,
    mut tokens: PodTokens,
    mut stop: StopRx,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(shared.config.resync) => {}
            _ = until_stop(&mut stop) => return,
        }
        let sources = fetch_sources(shared, pod, &mut tokens).await;
        // While a source is missing the files stay as they are (the kubelet keeps them too).
        if let Ok(plan) = plan::plan(pod, &sources, &shared.config, &Placement { ip, dir })
            && let Err(e) = write_files(dir, &plan, containers(&shared.config))
        {
            tracing::warn!(pod = %pod.name_any(), error = %e, "refreshing the pod's files");
        }
    }
}

/// Whether the pod's containers are containers (not local processes).
fn containers(config: &RunnerConfig) -> bool {
    matches!(config.runtime, crate::config::Runtime::Containers(_))
}

/// How one container run ended.
enum Ended {
    Exited(i32),
    LivenessFailed,
    Stop(Duration),
}

struct PodRun<'a> {
    shared: &'a Shared,
    reporter: &'a Reporter,
    dir: &'a Path,
    ip: Ipv4Addr,
    pod: &'a str,
    /// `restartPolicy: Never`: a container that ended is not started again, whatever its
    /// exit code (`OnFailure` restarts only failures, `Always` every end).
    never_restart: bool,
    sandbox: &'a dyn Sandbox,
}

async fn tick(interval: &mut Option<tokio::time::Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn interval(p: &Option<Probe>) -> Option<tokio::time::Interval> {
    p.as_ref().map(|p| {
        let mut i =
            tokio::time::interval_at(tokio::time::Instant::now() + p.initial_delay, p.period);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    })
}

impl PodRun<'_> {
    async fn start(&self, plan: &ContainerPlan) -> Result<Box<dyn Running>, String> {
        let (ns, name) = self.pod.split_once('/').unwrap_or_default();
        let log = log_path(&self.shared.config.state_dir, ns, name, &plan.name);
        let launch = Launch {
            pod: self.pod,
            plan,
            log: &log,
            workdir: self.dir,
        };
        self.sandbox.start(launch).await.map_err(|e| e.to_string())
    }

    /// Runs the init containers in order; false if one failed (the pod then fails).
    async fn init(&self, inits: &[ContainerPlan], stop: &StopRx) -> bool {
        for (i, plan) in inits.iter().enumerate() {
            let started = Utc::now();
            let mut proc = match self.start(plan).await {
                Ok(p) => p,
                Err(e) => {
                    self.reporter
                        .update(|o| o.failed = Some(("Init:RunContainerError".into(), e)));
                    return false;
                }
            };
            self.reporter
                .update(|o| o.init_containers[i].state = State::Running { started });
            let code = match self
                .supervise(&mut *proc, &None, &None, i, &mut stop.clone())
                .await
            {
                Ended::Exited(code) => code,
                Ended::LivenessFailed | Ended::Stop(_) => {
                    proc.kill();
                    return false;
                }
            };
            let finished = Utc::now();
            self.reporter.update(|o| {
                o.init_containers[i].state = State::Terminated {
                    exit_code: code,
                    started,
                    finished,
                };
                if code != 0 {
                    o.failed = Some((
                        "Init:Error".into(),
                        format!("init container {} exited with {code}", plan.name),
                    ));
                }
            });
            if code != 0 {
                return false;
            }
        }
        true
    }

    /// Runs one container: restarts it as the restart policy says, with backoff.
    async fn container(&self, i: usize, plan: &ContainerPlan, mut stop: StopRx) {
        let config = &self.shared.config;
        let mut backoff = config.restart_backoff;
        let always = self.reporter.snapshot().restart_always;
        loop {
            if stopped(&stop).is_some() {
                return;
            }
            let started = Utc::now();
            let mut proc = match self.start(plan).await {
                Ok(p) => p,
                Err(e) => {
                    self.reporter.update(|o| {
                        o.containers[i].state = State::Waiting {
                            reason: "RunContainerError".into(),
                            message: e,
                        };
                    });
                    if !self.back_off(&mut backoff, &mut stop).await {
                        return;
                    }
                    continue;
                }
            };
            self.reporter.update(|o| {
                o.containers[i].state = State::Running { started };
                o.containers[i].ready = plan.readiness.is_none();
            });
            let ended = self
                .supervise(&mut *proc, &plan.readiness, &plan.liveness, i, &mut stop)
                .await;
            let code = match ended {
                Ended::Exited(code) => code,
                Ended::LivenessFailed => self.halt(&mut *proc, Duration::from_secs(2)).await,
                Ended::Stop(grace) => {
                    let code = self.halt(&mut *proc, grace).await;
                    let finished = Utc::now();
                    self.reporter.update(|o| {
                        o.containers[i].state = State::Terminated {
                            exit_code: code,
                            started,
                            finished,
                        };
                        o.containers[i].ready = false;
                    });
                    return;
                }
            };
            let finished = Utc::now();
            let ended = State::Terminated {
                exit_code: code,
                started,
                finished,
            };
            tracing::info!(pod = self.pod, container = %plan.name, code, "container exited");
            if (!always && code == 0) || self.never_restart {
                self.reporter.update(|o| {
                    o.containers[i].state = ended;
                    o.containers[i].ready = false;
                });
                return;
            }
            let message = format!(
                "back-off {}s restarting failed container {}",
                backoff.as_secs(),
                plan.name
            );
            self.reporter.update(|o| {
                let c = &mut o.containers[i];
                c.last = Some(ended);
                c.ready = false;
                c.state = State::Waiting {
                    reason: "CrashLoopBackOff".into(),
                    message,
                };
            });
            if !self.back_off(&mut backoff, &mut stop).await {
                return;
            }
            self.reporter.update(|o| o.containers[i].restarts += 1);
        }
    }

    /// Waits the backoff (doubling it for next time); false if stopped meanwhile.
    async fn back_off(&self, backoff: &mut Duration, stop: &mut StopRx) -> bool {
        let wait = *backoff;
        *backoff = (*backoff * 2).min(self.shared.config.restart_backoff_max);
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = until_stop(stop) => false,
        }
    }

    /// SIGTERM, then SIGKILL after `grace`; answers the exit code.
    async fn halt(&self, proc: &mut dyn Running, grace: Duration) -> i32 {
        proc.terminate();
        if let Ok(Ok(code)) = tokio::time::timeout(grace, proc.wait()).await {
            return code;
        }
        proc.kill();
        proc.wait().await.unwrap_or(137)
    }

    /// Watches a running container: its exit, its probes, the stop signal.
    async fn supervise(
        &self,
        proc: &mut dyn Running,
        readiness: &Option<Probe>,
        liveness: &Option<Probe>,
        i: usize,
        stop: &mut StopRx,
    ) -> Ended {
        let (mut ready_tick, mut live_tick) = (interval(readiness), interval(liveness));
        let mut ready = Tracker::starting(false);
        let mut live = Tracker::starting(true);
        loop {
            tokio::select! {
                code = proc.wait() => return Ended::Exited(code.unwrap_or(-1)),
                grace = until_stop(stop) => return Ended::Stop(grace),
                _ = tick(&mut ready_tick) => {
                    let probe = readiness.as_ref().expect("ticks only with a probe");
                    let ok = ready.record(probe, probe.check(self.ip).await);
                    self.reporter.update(|o| o.containers[i].ready = ok);
                }
                _ = tick(&mut live_tick) => {
                    let probe = liveness.as_ref().expect("ticks only with a probe");
                    if !live.record(probe, probe.check(self.ip).await) {
                        tracing::info!(pod = self.pod, "liveness probe failed: restarting the container");
                        return Ended::LivenessFailed;
                    }
                }
            }
        }
    }
}
