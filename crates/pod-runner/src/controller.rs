//! The I/O shell: watches Deployments, DaemonSets and Pods as triggers, then reconciles
//! from fresh lists — pods created or deleted as the pure rollout says, workload status
//! written, and one supervisor per pod bound to this node.

use crate::desired::{self, PodSummary, Workload};
use crate::supervisor::{self, Shared};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use rand::Rng;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

const MANAGER: &str = "pod-runner";

/// A pod this runner supervises.
struct Local {
    stop: watch::Sender<Option<Duration>>,
    task: JoinHandle<()>,
    name: String,
    namespace: String,
    grace: Duration,
}

/// The runner's state between reconciles.
pub(crate) struct Controller {
    shared: Arc<Shared>,
    local: HashMap<String, Local>,
    wake: Arc<Notify>,
    watches: Vec<JoinHandle<()>>,
}

impl Drop for Controller {
    /// The runner dropped (its task aborted): nothing it started may go on, not even a
    /// supervisor that would restart a killed container.
    fn drop(&mut self) {
        for w in &self.watches {
            w.abort();
        }
        for l in self.local.values() {
            l.task.abort();
        }
    }
}

/// Starts a watch whose every event wakes the reconciler.
fn trigger<K>(api: Api<K>, wake: Arc<Notify>) -> JoinHandle<()>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
        while let Some(e) = events.next().await {
            if let Err(e) = e {
                tracing::debug!(error = %e, "watch");
            }
            wake.notify_one();
        }
    })
}

fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or_default())
}

fn suffix() -> String {
    const CHARS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| CHARS[rng.random_range(0..CHARS.len())] as char)
        .collect()
}

impl Controller {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Controller {
            shared,
            local: HashMap::new(),
            wake: Arc::new(Notify::new()),
            watches: Vec::new(),
        }
    }

    /// Runs until `shutdown` turns true, then stops every pod (SIGTERM, SIGKILL after
    /// `grace`).
    pub(crate) async fn run(mut self, mut shutdown: watch::Receiver<Option<Duration>>) {
        let client = &self.shared.client;
        if self.shared.config.register_node
            && let Err(e) = self.register_node().await
        {
            tracing::warn!(error = %e, "registering the node");
        }
        let wake = self.wake.clone();
        self.watches = vec![
            trigger(Api::<Deployment>::all(client.clone()), wake.clone()),
            trigger(Api::<DaemonSet>::all(client.clone()), wake.clone()),
            trigger(Api::<Pod>::all(client.clone()), wake.clone()),
        ];
        let grace = loop {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "reconcile");
            }
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(self.shared.config.resync) => {}
                g = shutdown.wait_for(Option::is_some) => break g.ok().and_then(|g| *g).unwrap_or_default(),
            }
        };
        for w in &self.watches {
            w.abort();
        }
        for local in self.local.values() {
            let _ = local.stop.send(Some(grace));
        }
        for (_, local) in self.local.drain() {
            let _ = local.task.await;
        }
    }

    async fn register_node(&self) -> kube::Result<()> {
        let config = &self.shared.config;
        let node = serde_json::json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": config.node_name, "labels": config.node_labels},
        });
        Api::<Node>::all(self.shared.client.clone())
            .patch(
                &config.node_name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&node),
            )
            .await
            .map(drop)
    }

    async fn reconcile(&mut self) -> kube::Result<()> {
        let client = self.shared.client.clone();
        let lp = ListParams::default();
        let deployments = Api::<Deployment>::all(client.clone())
            .list(&lp)
            .await?
            .items;
        let daemon_sets = Api::<DaemonSet>::all(client.clone()).list(&lp).await?.items;
        let pods = Api::<Pod>::all(client.clone()).list(&lp).await?.items;
        let labels = &self.shared.config.node_labels;
        for d in &deployments {
            if let Some(w) = desired::deployment(d, labels) {
                let status = d
                    .status
                    .as_ref()
                    .map(serde_json::to_value)
                    .transpose()
                    .ok()
                    .flatten();
                self.workload::<Deployment>(&w, &pods, status, desired::deployment_status)
                    .await?;
            }
        }
        for d in &daemon_sets {
            if let Some(w) = desired::daemon_set(d, labels) {
                let status = d
                    .status
                    .as_ref()
                    .map(serde_json::to_value)
                    .transpose()
                    .ok()
                    .flatten();
                self.workload::<DaemonSet>(&w, &pods, status, desired::daemon_set_status)
                    .await?;
            }
        }
        self.local_pods(&pods).await;
        Ok(())
    }

    /// One workload: its rollout step and its status.
    async fn workload<K>(
        &self,
        w: &Workload,
        pods: &[Pod],
        current: Option<serde_json::Value>,
        status_of: fn(&Workload, desired::Counts) -> serde_json::Value,
    ) -> kube::Result<()>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let owned: Vec<PodSummary> = pods
            .iter()
            .filter(|p| p.owner_references().iter().any(|o| o.uid == w.owner.uid))
            .map(|p| PodSummary::of(p, &w.revision.0))
            .collect();
        let pod_api: Api<Pod> = Api::namespaced(self.shared.client.clone(), &w.namespace);
        let step = desired::rollout(w, &owned);
        for name in &step.delete {
            tracing::info!(pod = %name, workload = %w.name, "deleting pod");
            ignore_missing(pod_api.delete(name, &DeleteParams::default()).await)?;
        }
        for _ in 0..step.create {
            let pod = desired::new_pod(w, &self.shared.config.node_name, &suffix());
            tracing::info!(pod = %pod.name_any(), workload = %w.name, "creating pod");
            pod_api.create(&PostParams::default(), &pod).await?;
        }
        let want = status_of(w, desired::counts(w, &owned));
        let have = current.unwrap_or_default();
        let differs = want.as_object().into_iter().flatten().any(|(k, v)| {
            let zero = v.as_i64() == Some(0) && have.get(k).is_none();
            have.get(k) != Some(v) && !zero
        });
        if differs {
            let api: Api<K> = Api::namespaced(self.shared.client.clone(), &w.namespace);
            let patch = serde_json::json!({"status": want});
            ignore_missing(
                api.patch_status(&w.name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await,
            )?;
        }
        Ok(())
    }

    /// Starts supervisors for new pods of this node, stops those of deleted ones, and
    /// finishes graceful deletions (delete with grace 0, as a kubelet does).
    async fn local_pods(&mut self, pods: &[Pod]) {
        let node = self.shared.config.node_name.as_str();
        let mine = pods
            .iter()
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(node));
        let mut seen = Vec::new();
        for pod in mine {
            let uid = pod.uid().unwrap_or_default();
            seen.push(uid.clone());
            let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
            if pod.metadata.deletion_timestamp.is_some() {
                let done = match self.local.get(&uid) {
                    Some(l) => {
                        let _ = l.stop.send(Some(grace_of(pod)));
                        l.task.is_finished()
                    }
                    None => true,
                };
                if done {
                    self.local.remove(&uid);
                    self.finish_deletion(pod, &uid).await;
                }
            } else if !self.local.contains_key(&uid)
                && !matches!(phase, Some("Succeeded" | "Failed"))
            {
                let (stop, rx) = watch::channel(None);
                let run = supervisor::run_pod(self.shared.clone(), pod.clone(), rx);
                let wake = self.wake.clone();
                let task = tokio::spawn(async move {
                    run.await;
                    wake.notify_one();
                });
                tracing::info!(pod = %pod.name_any(), "starting pod");
                let (name, namespace) = (pod.name_any(), pod.namespace().unwrap_or_default());
                self.local.insert(
                    uid,
                    Local {
                        stop,
                        task,
                        name,
                        namespace,
                        grace: grace_of(pod),
                    },
                );
            }
        }
        // Pods gone from the API (garbage-collected with their workload): stop them.
        self.local.retain(|uid, l| {
            if seen.contains(uid) {
                return true;
            }
            let _ = l.stop.send(Some(l.grace));
            if l.task.is_finished() {
                tracing::info!(pod = %l.name, namespace = %l.namespace, "pod stopped");
            }
            !l.task.is_finished()
        });
    }

    async fn finish_deletion(&self, pod: &Pod, uid: &str) {
        let api: Api<Pod> = Api::namespaced(
            self.shared.client.clone(),
            &pod.namespace().unwrap_or_default(),
        );
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_owned()),
                resource_version: None,
            }),
            ..DeleteParams::default()
        };
        if let Err(e) = ignore_missing(api.delete(&pod.name_any(), &params).await) {
            tracing::warn!(pod = %pod.name_any(), error = %e, "deleting the stopped pod");
        }
    }
}

fn ignore_missing<T>(r: kube::Result<T>) -> kube::Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
