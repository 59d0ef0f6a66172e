//! Facts about pods the placement plan needs, as pure functions: which nodes' discovery pods
//! are current (the discovery gate), and which agent pods the kubelet rejected.

use super::plan::DiscoveryGate;
use hsm_api::names::labels;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use std::collections::BTreeSet;

/// The reason a kubelet gives a pod it refused at admission, e.g. because the device plugin
/// could not allocate the device.
pub const UNEXPECTED_ADMISSION_ERROR: &str = "UnexpectedAdmissionError";

/// Whether `pod` is Running and its Ready condition is True.
pub fn running_and_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else {
        return false;
    };
    status.phase.as_deref() == Some("Running")
        && status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True")
}

/// The discovery gate: open when the HSMDevice has no discovery DaemonSet; otherwise the
/// nodes whose discovery pod (one of `pods`, the DaemonSet's) is not terminating, runs the
/// DaemonSet's current generation, and is Running and Ready — so an agent never starts on a
/// node before discovery there has seen the device with the current settings.
pub fn discovery_gate(daemon_set: Option<&DaemonSet>, pods: &[Pod]) -> DiscoveryGate {
    let Some(daemon_set) = daemon_set else {
        return DiscoveryGate::Open;
    };
    let generation = daemon_set.metadata.generation.map(|g| g.to_string());
    let nodes: BTreeSet<String> = pods
        .iter()
        .filter(|pod| pod.metadata.deletion_timestamp.is_none())
        .filter(|pod| {
            generation.is_some()
                && pod.labels().get(labels::POD_TEMPLATE_GENERATION) == generation.as_ref()
        })
        .filter(|pod| running_and_ready(pod))
        .filter_map(|pod| pod.spec.as_ref()?.node_name.clone())
        .collect();
    DiscoveryGate::Nodes(nodes)
}

/// The agent pods (of `pods`) that a kubelet refused at admission: they stay Failed forever
/// and hold the Deployment back, so the manager deletes them.
pub fn rejected_pods(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter(|pod| {
            pod.status.as_ref().is_some_and(|s| {
                s.phase.as_deref() == Some("Failed")
                    && s.reason.as_deref() == Some(UNEXPECTED_ADMISSION_ERROR)
            })
        })
        .map(|pod| pod.name_any())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(node: &str, generation: &str, phase: &str, ready: bool) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("discovery-{node}"), "labels": {"pod-template-generation": generation}},
            "spec": {"nodeName": node, "containers": []},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": if ready {"True"} else {"False"}}]}
        }))
        .unwrap()
    }

    fn daemon_set(generation: i64) -> DaemonSet {
        let mut ds = DaemonSet::default();
        ds.metadata.generation = Some(generation);
        ds
    }

    #[test]
    fn without_a_daemon_set_the_gate_is_open() {
        assert_eq!(discovery_gate(None, &[]), DiscoveryGate::Open);
    }

    #[test]
    fn only_current_running_ready_live_pods_open_their_node() {
        let mut terminating = pod("n5", "2", "Running", true);
        terminating.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::now(),
            ));
        let pods = [
            pod("n1", "2", "Running", true),
            pod("n2", "1", "Running", true),
            pod("n3", "2", "Pending", false),
            pod("n4", "2", "Running", false),
            terminating,
        ];
        assert_eq!(
            discovery_gate(Some(&daemon_set(2)), &pods),
            DiscoveryGate::Nodes(BTreeSet::from(["n1".to_owned()]))
        );
        assert_eq!(
            discovery_gate(Some(&DaemonSet::default()), &pods),
            DiscoveryGate::Nodes(BTreeSet::new()),
            "a DaemonSet without a generation admits no pod"
        );
    }

    #[test]
    fn rejected_agent_pods_are_the_failed_ones_refused_at_admission() {
        let mut refused = pod("n1", "1", "Failed", false);
        refused.status.as_mut().unwrap().reason = Some(UNEXPECTED_ADMISSION_ERROR.into());
        refused.metadata.name = Some("refused".into());
        let mut crashed = pod("n1", "1", "Failed", false);
        crashed.status.as_mut().unwrap().reason = Some("Error".into());
        let running = pod("n1", "1", "Running", true);
        assert_eq!(
            rejected_pods(&[refused, crashed, running]),
            vec!["refused".to_owned()]
        );
    }
}
