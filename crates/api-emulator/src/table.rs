//! Server-side printing (`meta.k8s.io/v1` `Table`), which `kubectl get` asks for: a name and
//! age for built-ins, the CRD's `additionalPrinterColumns` for custom resources.

use serde_json::{Value, json};

use crate::resources::ResourceInfo;

/// Whether an `Accept` header asks for a Table.
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table"))
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
