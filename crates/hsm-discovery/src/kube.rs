//! The Kubernetes shell: the HSMDevices of the pod's namespace (watched), the node's labels,
//! and the pod's own annotations, written with JSON merge patches that carry only the keys
//! that changed.

use futures::StreamExt;
use hsm_api::HSMDevice;
use hsm_api::device::HSMDeviceSpec;
use hsm_api::report::PodDiscoveryReport;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client};
use std::collections::BTreeMap;
use tokio::sync::watch;

/// Who the pod is.
#[derive(Clone, Debug)]
pub struct PodIdentity {
    /// The pod's namespace (and the HSMDevices').
    pub namespace: String,
    /// The pod's name.
    pub pod_name: String,
    /// The node.
    pub node_name: String,
}

/// Why the API refused.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct KubeError {
    /// What was being done.
    pub what: String,
    /// Why it failed.
    #[source]
    pub source: kube::Error,
}

/// Watches the HSMDevices of a namespace; the receiver holds the current set (name → spec)
/// once the first list has arrived. Ends when the receiver is dropped.
pub fn watch_devices(
    client: Client,
    namespace: &str,
) -> watch::Receiver<Option<BTreeMap<String, HSMDeviceSpec>>> {
    let (tx, rx) = watch::channel(None);
    let api: Api<HSMDevice> = Api::namespaced(client, namespace);
    let (store, writer) = reflector::store();
    let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
    tokio::spawn(async move {
        futures::pin_mut!(stream);
        loop {
            let event = tokio::select! {
                _ = tx.closed() => return,
                event = stream.next() => event,
            };
            match event {
                None => return,
                Some(Err(error)) => {
                    tracing::warn!(error = %crate::error_chain(&error), "watching HSMDevices");
                }
                // The store changes at once on these; a re-list swaps in at InitDone.
                Some(Ok(
                    watcher::Event::Apply(_) | watcher::Event::Delete(_) | watcher::Event::InitDone,
                )) => {
                    let devices = store
                        .state()
                        .iter()
                        .filter_map(|d| Some((d.metadata.name.clone()?, d.spec.clone())))
                        .collect();
                    tx.send_replace(Some(devices));
                }
                Some(Ok(_)) => {}
            }
        }
    });
    rx
}

/// The node's labels; `None` (and a warning) when the Node cannot be read — the caller keeps
/// the hostname label only.
pub async fn node_labels(client: &Client, node: &str) -> Option<BTreeMap<String, String>> {
    match Api::<Node>::all(client.clone()).get(node).await {
        Ok(node) => Some(node.metadata.labels.unwrap_or_default()),
        Err(error) => {
            tracing::warn!(error = %crate::error_chain(&error), %node, "cannot read the node's labels");
            None
        }
    }
}

/// The pod's annotations as last read or written, and the writer.
pub struct PodAnnotations {
    api: Api<Pod>,
    pod_name: String,
    current: BTreeMap<String, String>,
    refresh: std::time::Duration,
}

impl PodAnnotations {
    /// Reads the pod's annotations; unchanged reports will be re-written every `refresh`.
    pub async fn load(
        client: Client,
        identity: &PodIdentity,
        refresh: std::time::Duration,
    ) -> Result<Self, KubeError> {
        let api: Api<Pod> = Api::namespaced(client, &identity.namespace);
        let pod = api
            .get(&identity.pod_name)
            .await
            .map_err(|source| KubeError {
                what: format!("cannot read pod {}", identity.pod_name),
                source,
            })?;
        Ok(PodAnnotations {
            api,
            pod_name: identity.pod_name.clone(),
            current: pod.metadata.annotations.unwrap_or_default(),
            refresh,
        })
    }

    /// Writes `desired` (one report per device); nothing is sent when nothing changed and no
    /// refresh is due.
    /// Returns whether a patch was sent.
    pub async fn publish(
        &mut self,
        desired: &BTreeMap<String, PodDiscoveryReport>,
    ) -> Result<bool, KubeError> {
        let Some(patch) = crate::report::annotation_patch(&self.current, desired, self.refresh)
        else {
            return Ok(false);
        };
        let pod = self
            .api
            .patch(
                &self.pod_name,
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|source| KubeError {
                what: format!("cannot patch pod {}", self.pod_name),
                source,
            })?;
        self.current = pod.metadata.annotations.unwrap_or_default();
        Ok(true)
    }
}
