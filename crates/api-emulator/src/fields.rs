//! Field sets and `managedFields`: which fields of an object each field manager owns, in the
//! real server's `FieldsV1` encoding (`f:name`, `k:{"name":"x"}`, `v:"value"`, `.`).
//!
//! Every write records ownership: an update gives its manager the fields it changed; an
//! apply gives its manager exactly the fields it applied. Server-side apply reads these sets
//! to find conflicts and the fields a manager stopped applying.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::resources::ResourceInfo;
use crate::schema::{ListType, list_type};

/// One path, each element in FieldsV1 form.
pub type FieldPath = Vec<String>;
/// A set of owned leaf paths.
pub type FieldSet = BTreeSet<FieldPath>;

/// Which part of an object a write may touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The main resource: everything but `status` when `/status` is a subresource.
    Main {
        /// Whether status is excluded.
        status_subresource: bool,
    },
    /// The `/status` subresource: only `status`.
    Status,
}

const IGNORED_META: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "generateName",
];

/// The leaf paths of `object` within `scope`.
pub fn collect(res: &ResourceInfo, object: &Value, scope: Scope) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(map) = object.as_object() else {
        return out;
    };
    for (k, v) in map {
        let in_scope = match scope {
            Scope::Main { status_subresource } => {
                !(k == "apiVersion" || k == "kind" || (status_subresource && k == "status"))
            }
            Scope::Status => k == "status",
        };
        if !in_scope {
            continue;
        }
        if k == "metadata" {
            if let Some(meta) = v.as_object() {
                for (mk, mv) in meta {
                    if !IGNORED_META.contains(&mk.as_str()) {
                        walk(res, mv, &mut vec![f(k), f(mk)], &mut vec![k, mk], &mut out);
                    }
                }
            }
            continue;
        }
        walk(res, v, &mut vec![f(k)], &mut vec![k], &mut out);
    }
    out
}

fn f(name: &str) -> String {
    format!("f:{name}")
}

/// The `k:` element of a list-map item.
pub fn key_element(item: &Value, keys: &[String]) -> String {
    let mut m = Map::new();
    for k in keys {
        if let Some(v) = item.get(k) {
            m.insert(k.clone(), v.clone());
        }
    }
    format!("k:{}", Value::Object(m))
}

fn walk<'a>(
    res: &ResourceInfo,
    value: &'a Value,
    path: &mut FieldPath,
    names: &mut Vec<&'a str>,
    out: &mut FieldSet,
) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                path.push(f(k));
                names.push(k);
                walk(res, v, path, names, out);
                names.pop();
                path.pop();
            }
        }
        Value::Array(items) => match list_type(res, names) {
            ListType::Map(keys) => {
                for item in items {
                    path.push(key_element(item, &keys));
                    let mut dot = path.clone();
                    dot.push(".".into());
                    out.insert(dot);
                    if let Some(m) = item.as_object() {
                        for (k, v) in m {
                            path.push(f(k));
                            names.push(k);
                            walk(res, v, path, names, out);
                            names.pop();
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            ListType::Set => {
                for item in items {
                    let mut p = path.clone();
                    p.push(format!("v:{item}"));
                    out.insert(p);
                }
            }
            ListType::Atomic => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

/// The value at `path`; for a list-map item's `.`, the item itself.
pub fn get<'a>(object: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = object;
    for el in path {
        if el == "." {
            continue;
        }
        cur = if let Some(name) = el.strip_prefix("f:") {
            cur.get(name)?
        } else if let Some(key) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).ok()?;
            cur.as_array()?
                .iter()
                .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))?
        } else if let Some(v) = el.strip_prefix("v:") {
            let v: Value = serde_json::from_str(v).ok()?;
            cur.as_array()?.iter().find(|item| **item == v)?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Removes the field at `path` (a list-map item for `.`, a set value for `v:`), and then
/// any map or list it leaves empty, up to (not including) the top-level fields.
pub fn remove(object: &mut Value, path: &[String]) {
    let path: Vec<&String> = path.iter().filter(|e| *e != ".").collect();
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let Some(parent) = get_mut(object, parents) else {
        return;
    };
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(m) = parent.as_object_mut() {
            m.remove(name);
        }
    } else if let Some(arr) = parent.as_array_mut() {
        let pos = if let Some(key) = last.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).unwrap_or_default();
            arr.iter()
                .position(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))
        } else if let Some(v) = last.strip_prefix("v:") {
            let v: Value = serde_json::from_str(v).unwrap_or(Value::Null);
            arr.iter().position(|item| *item == v)
        } else {
            None
        };
        if let Some(pos) = pos {
            arr.remove(pos);
        }
    }
    // Prune emptied containers below the top level.
    let is_empty = |v: &Value| match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    };
    if parents.len() > 1 && get(object, &owned(parents)).is_some_and(is_empty) {
        remove(object, &owned(parents));
    }
}

fn owned(path: &[&String]) -> Vec<String> {
    path.iter().map(|s| s.to_string()).collect()
}

fn get_mut<'a>(object: &'a mut Value, path: &[&String]) -> Option<&'a mut Value> {
    let mut cur = object;
    for el in path {
        cur = if let Some(name) = el.strip_prefix("f:") {
            cur.get_mut(name)?
        } else if let Some(key) = el.strip_prefix("k:") {
            let key: Map<String, Value> = serde_json::from_str(key).ok()?;
            cur.as_array_mut()?
                .iter_mut()
                .find(|item| key.iter().all(|(k, v)| item.get(k) == Some(v)))?
        } else {
            return None;
        };
    }
    Some(cur)
}

/// The nested FieldsV1 JSON of a set.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in set {
        let mut cur = &mut root;
        for el in path {
            cur = cur
                .entry(el.clone())
                .or_insert_with(|| json!({}))
                .as_object_mut()
                .expect("built as objects");
        }
    }
    Value::Object(root)
}

/// A set from nested FieldsV1 JSON.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn go(v: &Value, path: &mut FieldPath, out: &mut FieldSet) {
        match v.as_object() {
            Some(m) if !m.is_empty() => {
                for (k, child) in m {
                    path.push(k.clone());
                    go(child, path, out);
                    path.pop();
                }
            }
            _ => {
                out.insert(path.clone());
            }
        }
    }
    let mut out = FieldSet::new();
    if v.as_object().is_some_and(|m| !m.is_empty()) {
        go(v, &mut Vec::new(), &mut out);
    }
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Field manager name.
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    /// apiVersion the manager wrote through.
    pub api_version: String,
    /// When it last changed.
    pub time: String,
    /// `status` for writes through `/status`.
    pub subresource: Option<String>,
    /// Owned fields.
    pub fields: FieldSet,
}

/// The entries of an object's `metadata.managedFields`.
pub fn entries(object: &Value) -> Vec<Entry> {
    object["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| Entry {
                    manager: e["manager"].as_str().unwrap_or_default().into(),
                    operation: e["operation"].as_str().unwrap_or_default().into(),
                    api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                    time: e["time"].as_str().unwrap_or_default().into(),
                    subresource: e["subresource"].as_str().map(String::from),
                    fields: from_fields_v1(&e["fieldsV1"]),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Writes entries back into `metadata.managedFields` (dropping empty ones).
pub fn set_entries(object: &mut Value, entries: &[Entry]) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager, "operation": e.operation, "apiVersion": e.api_version,
                "time": e.time, "fieldsType": "FieldsV1", "fieldsV1": to_fields_v1(&e.fields),
            });
            if let Some(s) = &e.subresource {
                v["subresource"] = json!(s);
            }
            v
        })
        .collect();
    if list.is_empty() {
        if let Some(m) = object["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        object["metadata"]["managedFields"] = Value::Array(list);
    }
}

/// Records an update by `manager`: it gains the fields whose values changed from `old` to
/// `new`, others lose them, and every entry keeps only fields `new` still has.
pub fn track_update(
    res: &ResourceInfo,
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    scope: Scope,
    now: &str,
) {
    let mut list = old.map(entries).unwrap_or_default();
    let all_scope = Scope::Main {
        status_subresource: false,
    };
    let present = collect(res, new, all_scope);
    let in_scope = collect(res, new, scope);
    let changed: FieldSet = in_scope
        .into_iter()
        .filter(|p| old.is_none_or(|o| get(o, p) != get(new, p)))
        .collect();
    let subresource = (scope == Scope::Status).then(|| "status".to_string());
    for e in &mut list {
        if !(e.manager == manager && e.operation == "Update" && e.subresource == subresource) {
            e.fields.retain(|p| !changed.contains(p));
        }
        e.fields.retain(|p| present.contains(p));
    }
    if !changed.is_empty() {
        match list.iter_mut().find(|e| {
            e.manager == manager && e.operation == "Update" && e.subresource == subresource
        }) {
            Some(e) => {
                e.fields.extend(changed);
                e.time = now.to_string();
                e.api_version = api_version.to_string();
            }
            None => list.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                subresource,
                fields: changed,
            }),
        }
    }
    set_entries(new, &list);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_map_items_are_keyed_and_fields_v1_round_trips() {
        let res = crate::resources::Registry::with_builtins()
            .lookup("apps", "v1", "deployments")
            .unwrap();
        let d = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "x", "uid": "u", "labels": {"a": "1"}, "finalizers": ["f1"]},
            "spec": {"template": {"spec": {"containers": [{"name": "main", "image": "i"}]}}},
            "status": {"replicas": 1},
        });
        let set = collect(
            &res,
            &d,
            Scope::Main {
                status_subresource: true,
            },
        );
        let v1 = to_fields_v1(&set);
        assert_eq!(
            v1,
            json!({
                "f:metadata": {"f:labels": {"f:a": {}}, "f:finalizers": {"v:\"f1\"": {}}},
                "f:spec": {"f:template": {"f:spec": {"f:containers": {
                    "k:{\"name\":\"main\"}": {".": {}, "f:name": {}, "f:image": {}},
                }}}},
            })
        );
        assert_eq!(from_fields_v1(&v1), set);
        let image: FieldPath = [
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"main\"}",
            "f:image",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(get(&d, &image), Some(&json!("i")));
    }

    #[test]
    fn removing_the_last_label_removes_the_labels_map() {
        let mut o = json!({"metadata": {"name": "x", "labels": {"a": "1"}}});
        remove(
            &mut o,
            &["f:metadata".to_string(), "f:labels".into(), "f:a".into()],
        );
        assert_eq!(o, json!({"metadata": {"name": "x"}}));
    }
}
