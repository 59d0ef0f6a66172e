//! Where each device's agent is, and the one place where an address becomes a pool entry.
//!
//! Addresses come from two sources: `--agent-endpoint DEVICE=URL` (agents outside the
//! cluster, tests) and the agent pods the manager runs, as the Go manager learns them: a
//! Ready pod labelled `app.kubernetes.io/component=hsm-agent` is reached at its pod IP on
//! port 9090. Every replica follows them (the REST API, served by all, reads through the
//! pool). Renewed mTLS material reconnects every agent without losing what the pool knows.

use super::grpc::{ClientTls, GrpcAgent};
use super::{AgentError, AgentPool};
use crate::placement::gate::running_and_ready;
use futures::StreamExt;
use hsm_api::names::{components, labels, ports};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// The agents' addresses and the TLS material to reach them with.
pub struct Endpoints {
    pool: AgentPool,
    state: Mutex<State>,
}

struct State {
    tls: Option<ClientTls>,
    /// Device key → URL.
    urls: BTreeMap<String, String>,
}

impl Endpoints {
    /// No agent yet; `tls` is the material to use (`None`: plaintext).
    pub fn new(pool: AgentPool, tls: Option<ClientTls>) -> Arc<Self> {
        Arc::new(Endpoints {
            pool,
            state: Mutex::new(State {
                tls,
                urls: BTreeMap::new(),
            }),
        })
    }

    /// Device `key`'s agent is at `url`: followed from now on (a changed URL replaces the
    /// old connection; the same URL changes nothing).
    pub fn set(&self, key: &str, url: &str) -> Result<(), AgentError> {
        let mut state = self.state.lock();
        if state.urls.get(key).map(String::as_str) == Some(url) {
            return Ok(());
        }
        let agent = GrpcAgent::new(url, state.tls.as_ref())?;
        self.pool.insert(key, Arc::new(agent));
        state.urls.insert(key.to_owned(), url.to_owned());
        tracing::info!(device = key, %url, "following agent");
        Ok(())
    }

    /// Device `key`'s agent is gone.
    pub fn remove(&self, key: &str) {
        if self.state.lock().urls.remove(key).is_some() {
            self.pool.remove(key);
            tracing::info!(device = key, "stopped following agent");
        }
    }

    /// The device keys whose agents are followed.
    pub fn keys(&self) -> BTreeSet<String> {
        self.state.lock().urls.keys().cloned().collect()
    }

    /// Renewed TLS material: every agent is reconnected with it.
    pub fn set_tls(&self, tls: ClientTls) {
        let mut state = self.state.lock();
        state.tls = Some(tls);
        for (key, url) in &state.urls {
            match GrpcAgent::new(url, state.tls.as_ref()) {
                Ok(agent) => self.pool.insert(key, Arc::new(agent)),
                Err(error) => {
                    tracing::error!(device = %key, %error, "cannot reconnect with renewed TLS material")
                }
            }
        }
    }

    fn scheme(&self) -> &'static str {
        match self.state.lock().tls {
            Some(_) => "https",
            None => "http",
        }
    }
}

/// The pool key and URL of an agent pod that can be reached now: Ready, not terminating,
/// with an IP and the device and serial labels the manager gives agents. The key is the Go
/// manager's `<device>-<serial>`.
pub fn agent_pod_endpoint(pod: &Pod, scheme: &str) -> Option<(String, String)> {
    if pod.metadata.deletion_timestamp.is_some() || !running_and_ready(pod) {
        return None;
    }
    let key = agent_pod_key(pod)?;
    let ip: std::net::IpAddr = pod.status.as_ref()?.pod_ip.as_deref()?.parse().ok()?;
    let addr = std::net::SocketAddr::new(ip, ports::AGENT_GRPC);
    Some((key, format!("{scheme}://{addr}")))
}

/// `<device>-<serial>` from an agent pod's labels.
pub fn agent_pod_key(pod: &Pod) -> Option<String> {
    let pod_labels = pod.labels();
    let device = pod_labels.get(labels::DEVICE)?;
    let serial = pod_labels.get(labels::SERIAL_NUMBER)?;
    Some(format!("{device}-{serial}"))
}

/// The agent pods, as a watch selector.
pub fn agent_pods() -> watcher::Config {
    watcher::Config::default().labels(&format!("{}={}", labels::COMPONENT, components::HSM_AGENT))
}

/// Follows the agent pods in every namespace until the watch ends: a Ready pod's address is
/// followed, a deleted pod's dropped. A pod that stops being Ready stays followed: the pool
/// asks the agent itself how it is (a card pulled out makes the pod unready, and the agent
/// says so with a reason), and its address stays valid until the pod goes.
pub async fn follow_agent_pods(client: Client, endpoints: Arc<Endpoints>) {
    let mut events = watcher(Api::<Pod>::all(client), agent_pods())
        .default_backoff()
        .boxed();
    // Pod name → key, for the pods whose address is followed.
    let mut followed: BTreeMap<(String, String), String> = BTreeMap::new();
    let mut relisted: Option<BTreeSet<(String, String)>> = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(%error, "watching agent pods");
                continue;
            }
        };
        match event {
            watcher::Event::Init => relisted = Some(BTreeSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let id = (pod.namespace().unwrap_or_default(), pod.name_any());
                if let Some(seen) = relisted.as_mut() {
                    seen.insert(id.clone());
                }
                if let Some((key, url)) = agent_pod_endpoint(&pod, endpoints.scheme()) {
                    match endpoints.set(&key, &url) {
                        Ok(()) => {
                            followed.insert(id, key);
                        }
                        Err(error) => tracing::error!(%error, pod = %id.1, "agent pod address"),
                    }
                } else if pod.metadata.deletion_timestamp.is_some() {
                    forget(&mut followed, &endpoints, &id);
                }
            }
            watcher::Event::Delete(pod) => {
                forget(
                    &mut followed,
                    &endpoints,
                    &(pod.namespace().unwrap_or_default(), pod.name_any()),
                );
            }
            watcher::Event::InitDone => {
                let seen = relisted.take().unwrap_or_default();
                let gone: Vec<_> = followed
                    .keys()
                    .filter(|id| !seen.contains(*id))
                    .cloned()
                    .collect();
                for id in gone {
                    forget(&mut followed, &endpoints, &id);
                }
            }
        }
    }
}

/// Drops a pod's address, unless another pod of the same device has taken over the key.
fn forget(
    followed: &mut BTreeMap<(String, String), String>,
    endpoints: &Endpoints,
    id: &(String, String),
) {
    if let Some(key) = followed.remove(id)
        && !followed.values().any(|k| *k == key)
    {
        endpoints.remove(&key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ip: Option<&str>, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hsm-agent-pico-x", "namespace": "hsm-system", "labels": {
                "app.kubernetes.io/component": "hsm-agent",
                "hsm.j5t.io/device": "pico", "hsm.j5t.io/serial-number": "DC6A"}},
            "spec": {"containers": []},
            "status": {"phase": "Running", "podIP": ip,
                       "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_ready_agent_pod_is_reached_at_its_ip_on_the_grpc_port() {
        assert_eq!(
            agent_pod_endpoint(&pod(Some("10.1.2.3"), true), "https"),
            Some(("pico-DC6A".into(), "https://10.1.2.3:9090".into()))
        );
        assert_eq!(
            agent_pod_endpoint(&pod(Some("fd00::7"), true), "http"),
            Some(("pico-DC6A".into(), "http://[fd00::7]:9090".into()))
        );
    }

    #[test]
    fn an_unready_addressless_terminating_or_unlabelled_pod_is_not_an_endpoint() {
        assert_eq!(
            agent_pod_endpoint(&pod(Some("10.1.2.3"), false), "https"),
            None
        );
        assert_eq!(agent_pod_endpoint(&pod(None, true), "https"), None);
        assert_eq!(
            agent_pod_endpoint(&pod(Some("not-an-ip"), true), "https"),
            None
        );
        let mut terminating = pod(Some("10.1.2.3"), true);
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        assert_eq!(agent_pod_endpoint(&terminating, "https"), None);
        let mut unlabelled = pod(Some("10.1.2.3"), true);
        unlabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove("hsm.j5t.io/serial-number");
        assert_eq!(agent_pod_endpoint(&unlabelled, "https"), None);
    }
}
