//! Events are one collection served in two shapes, as on the real server: `v1` Events
//! (`involvedObject`, `message`, …) and `events.k8s.io/v1` Events (`regarding`, `note`, …).
//! They are stored in the core shape; this converts at the edges, so an event recorded
//! through `events.k8s.io` (kube's `Recorder`) shows in `kubectl describe`, which reads core
//! Events.

use serde_json::{Map, Value};

use crate::resources::{ResourceInfo, ResourceKey};

/// (events.k8s.io field, core field) pairs that differ only by name.
const RENAMED: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("reportingController", "reportingComponent"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
];

/// Whether `res` is `events.k8s.io` Events, stored as core Events.
pub fn is_events_group(res: &ResourceInfo) -> bool {
    res.group == "events.k8s.io" && res.plural == "events"
}

/// The store key of a resource: core Events for both Event resources.
pub fn storage_key(res: &ResourceInfo) -> ResourceKey {
    if is_events_group(res) {
        (String::new(), "events".into())
    } else {
        (res.group.clone(), res.plural.clone())
    }
}

fn rename(
    object: &Value,
    pairs: impl Iterator<Item = (&'static str, &'static str)>,
    api_version: &str,
) -> Value {
    let Some(map) = object.as_object() else {
        return object.clone();
    };
    let mut out = Map::new();
    let lookup: Vec<(&str, &str)> = pairs.collect();
    for (k, v) in map {
        let name = lookup
            .iter()
            .find(|(from, _)| from == k)
            .map_or(k.as_str(), |(_, to)| to);
        out.insert(name.to_string(), v.clone());
    }
    out.insert("apiVersion".into(), Value::from(api_version));
    out.insert("kind".into(), Value::from("Event"));
    Value::Object(out)
}

/// An object written through `res`, in its stored shape.
pub fn inbound(res: &ResourceInfo, object: Value) -> Value {
    if is_events_group(res) {
        rename(&object, RENAMED.iter().copied(), "v1")
    } else {
        object
    }
}

/// A stored object, in the shape of `res`.
pub fn outbound(res: &ResourceInfo, object: &Value) -> Value {
    if is_events_group(res) {
        rename(
            object,
            RENAMED.iter().map(|(a, b)| (*b, *a)),
            "events.k8s.io/v1",
        )
    } else {
        object.clone()
    }
}
