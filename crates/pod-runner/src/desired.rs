//! Pure: which pods a Deployment or DaemonSet wants on this node, the Pod objects to create,
//! the rollout step (Recreate) from the pods that exist, and the workload's status counts.

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Pod, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::ResourceExt;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// The label that names a Deployment pod's template version (as the ReplicaSet controller's).
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";
/// The label that names a DaemonSet pod's template version (the DaemonSet's generation).
pub const POD_TEMPLATE_GENERATION: &str = "pod-template-generation";

/// A Deployment or DaemonSet as the runner sees it: its pod template, how many pods it wants
/// on this node, and the label that marks its current template version.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// Namespace of the workload and its pods.
    pub namespace: String,
    /// The workload's name.
    pub name: String,
    /// The owner reference its pods carry.
    pub owner: OwnerReference,
    /// The pod template.
    pub template: PodTemplateSpec,
    /// Pods wanted.
    pub replicas: usize,
    /// The label key/value of the current template version.
    pub revision: (String, String),
    /// Whether the pods may run on this node (nodeSelector and required node affinity).
    pub schedulable: bool,
    /// The workload's generation, reported back as `observedGeneration`.
    pub generation: i64,
}

/// Whether a pod spec's nodeSelector and required node affinity accept a node's labels.
pub fn node_matches(spec: Option<&PodSpec>, labels: &BTreeMap<String, String>) -> bool {
    let Some(spec) = spec else { return true };
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let terms = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|n| {
            n.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    // Terms are ORed; the expressions of one term ANDed. No terms: no constraint.
    let affinity_ok = terms.is_empty()
        || terms.iter().any(|t| {
            t.match_expressions
                .iter()
                .flatten()
                .all(|e| requirement_matches(e, labels))
        });
    selector_ok && affinity_ok
}

fn requirement_matches(e: &NodeSelectorRequirement, labels: &BTreeMap<String, String>) -> bool {
    let value = labels.get(&e.key);
    let values = e.values.as_deref().unwrap_or_default();
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        // Gt/Lt and unknown operators: not satisfied here.
        _ => false,
    }
}

fn owner_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.into(),
        kind: kind.into(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// A short stable hash of a pod template (its JSON).
pub fn template_hash(template: &PodTemplateSpec) -> String {
    let json = serde_json::to_vec(template).unwrap_or_default();
    hex::encode(&Sha256::digest(&json)[..5])
}

/// The view of a Deployment; its pods are owned directly by it (there are no ReplicaSets).
pub fn deployment(d: &Deployment, node_labels: &BTreeMap<String, String>) -> Option<Workload> {
    let spec = &d.spec;
    Some(Workload {
        namespace: d.namespace().unwrap_or_default(),
        name: d.name_any(),
        owner: owner_ref("apps/v1", "Deployment", &d.metadata),
        replicas: spec.replicas.unwrap_or(1).max(0) as usize,
        revision: (POD_TEMPLATE_HASH.into(), template_hash(&spec.template)),
        schedulable: node_matches(spec.template.spec.as_ref(), node_labels),
        template: spec.template.clone(),
        generation: d.metadata.generation.unwrap_or_default(),
    })
}

/// The view of a DaemonSet on the one node this runner plays: one pod if the node matches.
pub fn daemon_set(d: &DaemonSet, node_labels: &BTreeMap<String, String>) -> Option<Workload> {
    let spec = &d.spec;
    let generation = d.metadata.generation.unwrap_or_default();
    let schedulable = node_matches(spec.template.spec.as_ref(), node_labels);
    Some(Workload {
        namespace: d.namespace().unwrap_or_default(),
        name: d.name_any(),
        owner: owner_ref("apps/v1", "DaemonSet", &d.metadata),
        replicas: usize::from(schedulable),
        revision: (POD_TEMPLATE_GENERATION.into(), generation.to_string()),
        schedulable,
        template: spec.template.clone(),
        generation,
    })
}

/// A new Pod of the workload, bound to `node` when the workload may run there (otherwise
/// left unbound, as a scheduler would leave it). `suffix` makes the name unique.
pub fn new_pod(w: &Workload, node: &str, suffix: &str) -> Pod {
    let mut labels = w
        .template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(w.revision.0.clone(), w.revision.1.clone());
    let name = if w.revision.0 == POD_TEMPLATE_HASH {
        format!("{}-{}-{suffix}", w.name, w.revision.1)
    } else {
        format!("{}-{suffix}", w.name)
    };
    let mut spec = w.template.spec.clone().unwrap_or_default();
    if w.schedulable {
        spec.node_name = Some(node.to_owned());
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(w.namespace.clone()),
            labels: Some(labels),
            annotations: w
                .template
                .metadata
                .as_ref()
                .and_then(|m| m.annotations.clone()),
            owner_references: Some(vec![w.owner.clone()]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

/// What the runner knows of an existing pod of a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct PodSummary {
    /// Pod name.
    pub name: String,
    /// Its value of the workload's revision label.
    pub revision: Option<String>,
    /// Whether it is being deleted.
    pub terminating: bool,
    /// Whether its Ready condition is true.
    pub ready: bool,
}

impl PodSummary {
    /// Summarises a pod for a workload whose revision label is `revision_key`.
    pub fn of(pod: &Pod, revision_key: &str) -> Self {
        PodSummary {
            name: pod.name_any(),
            revision: pod.labels().get(revision_key).cloned(),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            ready: is_ready(pod),
        }
    }
}

/// Whether a pod's Ready condition is true.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// One step of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rollout {
    /// How many pods to create.
    pub create: usize,
    /// Pods to delete.
    pub delete: Vec<String>,
}

/// The Recreate step: pods of an old template version go first; new ones are created only
/// once no old pod is left (not even a terminating one); then the count is brought to
/// `replicas`.
pub fn rollout(w: &Workload, pods: &[PodSummary]) -> Rollout {
    let current = |p: &&PodSummary| p.revision.as_deref() == Some(w.revision.1.as_str());
    let old: Vec<&PodSummary> = pods.iter().filter(|p| !current(p)).collect();
    if !old.is_empty() {
        return Rollout {
            create: 0,
            delete: old
                .iter()
                .filter(|p| !p.terminating)
                .map(|p| p.name.clone())
                .collect(),
        };
    }
    let mut live: Vec<&PodSummary> = pods.iter().filter(|p| !p.terminating).collect();
    live.sort_by(|a, b| a.name.cmp(&b.name));
    if live.len() > w.replicas {
        // Not-ready pods go first, as the ReplicaSet controller prefers.
        live.sort_by_key(|p| p.ready);
        return Rollout {
            create: 0,
            delete: live[..live.len() - w.replicas]
                .iter()
                .map(|p| p.name.clone())
                .collect(),
        };
    }
    Rollout {
        create: w.replicas - live.len(),
        delete: Vec::new(),
    }
}

/// A workload's status counts, from its pods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Pods wanted.
    pub desired: i32,
    /// Live pods.
    pub current: i32,
    /// Live pods of the current template.
    pub updated: i32,
    /// Ready pods.
    pub ready: i32,
    /// Ready pods of the current template.
    pub updated_ready: i32,
}

/// Counts the pods of a workload.
pub fn counts(w: &Workload, pods: &[PodSummary]) -> Counts {
    let live: Vec<&PodSummary> = pods.iter().filter(|p| !p.terminating).collect();
    let updated = |p: &&&PodSummary| p.revision.as_deref() == Some(w.revision.1.as_str());
    let n = |it: usize| i32::try_from(it).unwrap_or(i32::MAX);
    Counts {
        desired: n(w.replicas),
        current: n(live.len()),
        updated: n(live.iter().filter(updated).count()),
        ready: n(live.iter().filter(|p| p.ready).count()),
        updated_ready: n(live.iter().filter(updated).filter(|p| p.ready).count()),
    }
}

/// The status a Deployment should have.
pub fn deployment_status(w: &Workload, c: Counts) -> serde_json::Value {
    serde_json::json!({
        "observedGeneration": w.generation,
        "replicas": c.current,
        "updatedReplicas": c.updated,
        "readyReplicas": c.ready,
        "availableReplicas": c.ready,
        "unavailableReplicas": (c.desired - c.ready).max(0),
    })
}

/// The status a DaemonSet should have (one node: this one).
pub fn daemon_set_status(w: &Workload, c: Counts) -> serde_json::Value {
    serde_json::json!({
        "observedGeneration": w.generation,
        "desiredNumberScheduled": c.desired,
        "currentNumberScheduled": c.current.min(c.desired),
        "numberMisscheduled": (c.current - c.desired).max(0),
        "updatedNumberScheduled": c.updated,
        "numberReady": c.ready,
        "numberAvailable": c.ready,
        "numberUnavailable": (c.desired - c.ready).max(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn ds(generation: i64, node_selector: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({
            "metadata": {"name": "disc", "namespace": "ns", "uid": "u1", "generation": generation},
            "spec": {"selector": {"matchLabels": {"app": "d"}}, "template": {
                "metadata": {"labels": {"app": "d"}},
                "spec": {"nodeSelector": node_selector, "containers": [{"name": "c", "image": "x"}]}}}
        }))
        .unwrap()
    }

    fn dep(replicas: i32, image: &str) -> Deployment {
        serde_json::from_value(json!({
            "metadata": {"name": "agent", "namespace": "ns", "uid": "u2", "generation": 3},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "a"}}, "template": {
                "metadata": {"labels": {"app": "a"}, "annotations": {"x": "y"}},
                "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    fn summary(name: &str, rev: &str, terminating: bool, ready: bool) -> PodSummary {
        PodSummary {
            name: name.into(),
            revision: Some(rev.into()),
            terminating,
            ready,
        }
    }

    #[test]
    fn a_daemon_set_pod_carries_the_generation_node_and_owner() {
        let node = labels(&[("kubernetes.io/hostname", "local"), ("hsm", "yes")]);
        let w = daemon_set(&ds(4, json!({"hsm": "yes"})), &node).unwrap();
        assert_eq!(w.replicas, 1);
        let pod = new_pod(&w, "local", "abcde");
        assert_eq!(pod.metadata.name.as_deref(), Some("disc-abcde"));
        assert_eq!(
            pod.labels()
                .get(POD_TEMPLATE_GENERATION)
                .map(String::as_str),
            Some("4")
        );
        assert_eq!(pod.labels().get("app").map(String::as_str), Some("d"));
        assert_eq!(
            pod.spec.as_ref().unwrap().node_name.as_deref(),
            Some("local")
        );
        let owner = &pod.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("DaemonSet", "u1", Some(true))
        );
    }

    #[test]
    fn a_daemon_set_whose_selector_misses_the_node_wants_no_pod() {
        let node = labels(&[("kubernetes.io/hostname", "local")]);
        let w = daemon_set(&ds(1, json!({"hsm": "yes"})), &node).unwrap();
        assert_eq!(w.replicas, 0);
        assert_eq!(
            rollout(&w, &[summary("disc-a", "1", false, true)]).delete,
            vec!["disc-a"]
        );
    }

    #[test]
    fn required_node_affinity_is_honoured() {
        let spec: PodSpec = serde_json::from_value(json!({"containers": [], "affinity": {"nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
                {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}}}))
        .unwrap();
        assert!(node_matches(
            Some(&spec),
            &labels(&[("kubernetes.io/hostname", "n1")])
        ));
        assert!(!node_matches(
            Some(&spec),
            &labels(&[("kubernetes.io/hostname", "n2")])
        ));
        assert!(node_matches(None, &labels(&[])));
    }

    #[test]
    fn deployment_pods_are_named_by_template_hash_and_owned_by_the_deployment() {
        let w = deployment(&dep(2, "x"), &labels(&[])).unwrap();
        let other = deployment(&dep(2, "y"), &labels(&[])).unwrap();
        assert_ne!(w.revision, other.revision);
        let pod = new_pod(&w, "local", "q1w2e");
        assert_eq!(
            pod.metadata.name.unwrap(),
            format!("agent-{}-q1w2e", w.revision.1)
        );
        assert_eq!(pod.metadata.annotations.unwrap()["x"], "y");
        assert_eq!(pod.metadata.owner_references.unwrap()[0].kind, "Deployment");
    }

    #[test]
    fn replicas_are_honoured() {
        let w = deployment(&dep(3, "x"), &labels(&[])).unwrap();
        let h = w.revision.1.clone();
        assert_eq!(rollout(&w, &[]).create, 3);
        assert_eq!(rollout(&w, &[summary("a", &h, false, true)]).create, 2);
        // A terminating pod does not count: its replacement is made.
        assert_eq!(rollout(&w, &[summary("a", &h, true, true)]).create, 3);
        let four: Vec<_> = ["a", "b", "c", "d"]
            .iter()
            .map(|n| summary(n, &h, false, *n != "c"))
            .collect();
        assert_eq!(
            rollout(&w, &four),
            Rollout {
                create: 0,
                delete: vec!["c".into()]
            }
        );
    }

    #[test]
    fn recreate_deletes_old_pods_before_creating_new_ones() {
        let w = deployment(&dep(1, "new"), &labels(&[])).unwrap();
        let h = w.revision.1.clone();
        let step = rollout(
            &w,
            &[
                summary("old1", "other", false, true),
                summary("old2", "other", true, false),
            ],
        );
        assert_eq!(
            step,
            Rollout {
                create: 0,
                delete: vec!["old1".into()]
            }
        );
        // Still terminating: wait.
        assert_eq!(
            rollout(&w, &[summary("old2", "other", true, false)]),
            Rollout::default()
        );
        assert_eq!(rollout(&w, &[]).create, 1);
        assert_eq!(
            rollout(&w, &[summary("n", &h, false, false)]),
            Rollout::default()
        );
    }

    #[test]
    fn status_counts_follow_the_pods() {
        let node = labels(&[("hsm", "yes")]);
        let w = daemon_set(&ds(2, json!({"hsm": "yes"})), &node).unwrap();
        let c = counts(
            &w,
            &[
                summary("p", "2", false, true),
                summary("q", "1", true, true),
            ],
        );
        assert_eq!(
            c,
            Counts {
                desired: 1,
                current: 1,
                updated: 1,
                ready: 1,
                updated_ready: 1
            }
        );
        let s = daemon_set_status(&w, c);
        assert_eq!(s["desiredNumberScheduled"], 1);
        assert_eq!(s["numberReady"], 1);
        assert_eq!(s["updatedNumberScheduled"], 1);
        assert_eq!(s["observedGeneration"], 2);
        let w = deployment(&dep(2, "x"), &labels(&[])).unwrap();
        let h = w.revision.1.clone();
        let s = deployment_status(
            &w,
            counts(
                &w,
                &[
                    summary("a", &h, false, true),
                    summary("b", &h, false, false),
                ],
            ),
        );
        assert_eq!(
            (
                s["replicas"].as_i64(),
                s["readyReplicas"].as_i64(),
                s["updatedReplicas"].as_i64()
            ),
            (Some(2), Some(1), Some(2))
        );
        assert_eq!(s["observedGeneration"], 3);
    }
}
