//! The representations a client may ask for in `Accept` besides the objects themselves:
//! server-side printing (`meta.k8s.io/v1` `Table`), which `kubectl get` asks for — a name and
//! age for built-ins, the CRD's `additionalPrinterColumns` for custom resources — and
//! `PartialObjectMetadata`, which kube's metadata watches ask for.

use std::sync::Arc;

use serde_json::{Value, json};

use crate::resources::ResourceInfo;

/// The representation of objects in a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// The objects.
    Object,
    /// A `Table` (one row per object).
    Table,
    /// `PartialObjectMetadata`: apiVersion, kind and metadata only.
    Metadata,
}

impl Form {
    /// The form the first entry of an `Accept` header asks for.
    pub fn from_accept(accept: &str) -> Self {
        let first = accept.split(',').next().unwrap_or_default();
        if first.contains("as=Table") {
            Form::Table
        } else if first.contains("as=PartialObjectMetadata") {
            Form::Metadata
        } else {
            Form::Object
        }
    }

    /// A list in this form.
    pub fn list(self, res: &ResourceInfo, list: Value) -> Value {
        let items = list["items"].as_array().cloned().unwrap_or_default();
        match self {
            Form::Object => list,
            Form::Table => table(res, &items, list["metadata"]["resourceVersion"].as_str()),
            Form::Metadata => json!({
                "kind": "PartialObjectMetadataList",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": list["metadata"],
                "items": items.iter().map(partial).collect::<Vec<_>>(),
            }),
        }
    }

    /// One object in this form.
    pub fn object(self, res: &ResourceInfo, object: Value) -> Value {
        match self {
            Form::Object => object,
            Form::Table => table(res, &[object], None),
            Form::Metadata => partial(&object),
        }
    }

    /// How a watch renders its objects in this form (`None`: as they are).
    pub fn render(self, res: &Arc<ResourceInfo>) -> crate::watch::Render {
        match self {
            Form::Object => None,
            Form::Table => {
                let res = res.clone();
                Some(Arc::new(move |o: &Value| {
                    table(&res, std::slice::from_ref(o), None)
                }))
            }
            Form::Metadata => Some(Arc::new(partial)),
        }
    }
}

/// `PartialObjectMetadata` of an object.
pub fn partial(object: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": object["metadata"],
    })
}

/// A Table of `objects`.
pub fn table(res: &ResourceInfo, objects: &[Value], resource_version: Option<&str>) -> Value {
    let mut columns = vec![json!({
        "name": "Name", "type": "string", "format": "name", "priority": 0,
        "description": "Name must be unique within a namespace.",
    })];
    let custom = !res.printer_columns.is_empty();
    for c in &res.printer_columns {
        columns.push(json!({"name": c.name, "type": c.type_, "format": "", "priority": 0, "description": ""}));
    }
    let namespace_status = res.group.is_empty() && res.plural == "namespaces";
    if namespace_status {
        columns.push(json!({"name": "Status", "type": "string", "format": "", "priority": 0, "description": ""}));
    }
    if !custom {
        columns.push(json!({"name": "Age", "type": "string", "format": "", "priority": 0, "description": ""}));
    }
    let rows: Vec<Value> = objects
        .iter()
        .map(|o| {
            let mut cells = vec![o["metadata"]["name"].clone()];
            for c in &res.printer_columns {
                let v = lookup(o, &c.json_path);
                cells.push(if c.type_ == "date" {
                    v.as_str().map(|s| json!(age(s))).unwrap_or(Value::Null)
                } else {
                    v.clone()
                });
            }
            if namespace_status {
                cells.push(o["status"]["phase"].clone());
            }
            if !custom {
                cells.push(json!(age(o["metadata"]["creationTimestamp"]
                    .as_str()
                    .unwrap_or_default())));
            }
            json!({
                "cells": cells,
                "object": {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": o["metadata"],
                },
            })
        })
        .collect();
    let mut metadata = json!({});
    if let Some(rv) = resource_version {
        metadata["resourceVersion"] = json!(rv);
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": columns,
        "rows": rows,
    })
}

fn lookup<'a>(o: &'a Value, path: &str) -> &'a Value {
    let mut cur = o;
    for seg in path.trim_start_matches('.').split('.') {
        cur = &cur[seg];
    }
    cur
}

/// kubectl's short human duration since a timestamp (`5s`, `3m2s`, `4h`, `12d`).
pub fn age(timestamp: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(timestamp) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    let (m, h, d) = (secs / 60, secs / 3600, secs / 86_400);
    if secs < 120 {
        format!("{secs}s")
    } else if m < 10 {
        format!("{m}m{}s", secs % 60)
    } else if h < 3 {
        format!("{m}m")
    } else if h < 8 {
        format!("{h}h{}m", m % 60)
    } else if h < 48 {
        format!("{h}h")
    } else {
        format!("{d}d")
    }
}
