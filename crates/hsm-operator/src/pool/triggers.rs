//! Which watch events of discovery pods and DaemonSets are worth an aggregation: a pool is
//! reconciled when what it reads of them changes (a pod's reports, phase, node or deletion;
//! a DaemonSet's desired pod count), not on every status write a kubelet makes. Deletions
//! always pass.

use hsm_api::names::{annotations, components, device_from_report_key, labels, pool_name};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

/// Remembers a fingerprint per object and lets through the events that change it.
pub struct Changes<K> {
    seen: HashMap<String, u64>,
    fingerprint: fn(&K) -> u64,
}

impl<K: Resource> Changes<K> {
    /// Tracks changes of `fingerprint`.
    pub fn new(fingerprint: fn(&K) -> u64) -> Self {
        Changes {
            seen: HashMap::new(),
            fingerprint,
        }
    }

    fn key(object: &K) -> String {
        object.meta().uid.clone().unwrap_or_else(|| {
            format!(
                "{}/{}",
                object.meta().namespace.as_deref().unwrap_or_default(),
                object.meta().name.as_deref().unwrap_or_default()
            )
        })
    }

    /// The objects of `event` whose fingerprint changed, or that were deleted.
    pub fn observe(&mut self, event: Event<K>) -> Option<K> {
        match event {
            Event::Apply(object) | Event::InitApply(object) => {
                let print = (self.fingerprint)(&object);
                let changed = self.seen.insert(Self::key(&object), print) != Some(print);
                changed.then_some(object)
            }
            Event::Delete(object) => {
                self.seen.remove(&Self::key(&object));
                Some(object)
            }
            Event::Init | Event::InitDone => None,
        }
    }
}

fn hash_of(value: impl Hash) -> u64 {
    let mut hasher = DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
}

/// What aggregation reads of a discovery pod: its reports (either key form), phase, node and
/// whether it is being deleted.
pub fn pod_fingerprint(pod: &Pod) -> u64 {
    let reports: Vec<(&String, &String)> = pod
        .annotations()
        .iter()
        .filter(|(k, _)| {
            k.as_str() == annotations::DEVICE_REPORT || device_from_report_key(k).is_some()
        })
        .collect();
    hash_of((
        reports,
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        pod.spec.as_ref().and_then(|s| s.node_name.as_deref()),
        pod.metadata.deletion_timestamp.is_some(),
    ))
}

/// What aggregation reads of a discovery DaemonSet: how many pods it wants.
pub fn daemonset_fingerprint(ds: &DaemonSet) -> u64 {
    hash_of(ds.status.as_ref().map(|s| s.desired_number_scheduled))
}

/// The pool a discovery pod or DaemonSet reports for: `<device>-pool` by its device label.
pub fn pool_of<K: Resource, P: Resource<DynamicType = ()>>(object: &K) -> Option<ObjectRef<P>> {
    let labels = object.meta().labels.as_ref()?;
    if labels.get(labels::COMPONENT).map(String::as_str) != Some(components::DISCOVERY) {
        return None;
    }
    let device = labels.get(labels::DEVICE)?;
    let namespace = object.meta().namespace.as_deref()?;
    Some(ObjectRef::new(&pool_name(device)).within(namespace))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hsm_api::HSMPool;
    use serde_json::json;

    fn pod(annotations: serde_json::Value, phase: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "annotations": annotations,
                         "labels": {"app.kubernetes.io/component": "discovery",
                                    "hsm.j5t.io/device": "pico"}},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True"}]}
        }))
        .unwrap()
    }

    #[test]
    fn only_report_phase_and_deletion_changes_pass() {
        let mut changes = Changes::new(pod_fingerprint);
        let first = pod(json!({"hsm.j5t.io/device-report.pico": "{}"}), "Running");
        assert!(changes.observe(Event::InitApply(first.clone())).is_some());
        assert!(changes.observe(Event::Apply(first.clone())).is_none());

        // A kubelet's condition update or another annotation: nothing to aggregate.
        let mut probed = first.clone();
        probed.status.as_mut().unwrap().conditions = None;
        probed
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("other".into(), "x".into());
        assert!(changes.observe(Event::Apply(probed)).is_none());

        let reported = pod(
            json!({"hsm.j5t.io/device-report.pico": "{\"a\":1}"}),
            "Running",
        );
        assert!(changes.observe(Event::Apply(reported.clone())).is_some());
        let go_key = pod(json!({"hsm.j5t.io/device-report": "{}"}), "Running");
        assert!(changes.observe(Event::Apply(go_key)).is_some());
        let failed = pod(json!({"hsm.j5t.io/device-report": "{}"}), "Failed");
        assert!(changes.observe(Event::Apply(failed.clone())).is_some());
        assert!(changes.observe(Event::Delete(failed.clone())).is_some());
        assert!(changes.observe(Event::Delete(failed)).is_some(), "always");
        assert!(changes.observe(Event::<Pod>::Init).is_none());
    }

    #[test]
    fn discovery_objects_map_to_their_devices_pool() {
        let p = pod(json!({}), "Running");
        assert_eq!(
            pool_of::<Pod, HSMPool>(&p),
            Some(ObjectRef::new("pico-pool").within("ns"))
        );
        let mut other = p.clone();
        other
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("app.kubernetes.io/component".into(), "agent".into());
        assert_eq!(pool_of::<Pod, HSMPool>(&other), None);
    }
}
