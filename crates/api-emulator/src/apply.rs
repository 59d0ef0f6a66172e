//! Server-side apply: merge a manager's applied configuration into the live object, refuse
//! (409) values other managers own unless forced, drop the fields the manager applied before
//! and no longer applies (unless someone else owns them), and record the new ownership.

use serde_json::Value;

use crate::error::ApiError;
use crate::fields::{self, Entry, FieldSet, Scope};
use crate::resources::ResourceInfo;
use crate::schema::{ListType, list_type};

/// One apply request.
pub struct Apply<'a> {
    /// The resource.
    pub res: &'a ResourceInfo,
    /// The manager applying.
    pub manager: &'a str,
    /// apiVersion of the request.
    pub api_version: &'a str,
    /// Take fields from other managers instead of failing.
    pub force: bool,
    /// Main resource or `/status`.
    pub scope: Scope,
    /// Timestamp for the entry.
    pub now: &'a str,
}

impl Apply<'_> {
    /// The object after applying `config` to `live` (an empty object when creating), with
    /// `managedFields` updated; or the conflicts as a 409.
    pub fn run(&self, live: &Value, config: &Value) -> Result<Value, ApiError> {
        let applied = fields::collect(self.res, config, self.scope);
        let subresource = (self.scope == Scope::Status).then(|| "status".to_string());
        let mut entries = fields::entries(live);
        let is_mine = |e: &Entry| {
            e.manager == self.manager && e.operation == "Apply" && e.subresource == subresource
        };

        // Conflicts: a field another manager owns whose value this apply changes.
        let mut conflicts: Vec<(String, String)> = Vec::new();
        for e in entries.iter().filter(|e| !is_mine(e)) {
            for p in e.fields.intersection(&applied) {
                if p.last().is_some_and(|l| l == ".") {
                    continue;
                }
                if fields::get(live, p) != fields::get(config, p) {
                    conflicts.push((e.manager.clone(), render_path(p)));
                }
            }
        }
        if !conflicts.is_empty() && !self.force {
            return Err(conflict_error(
                self.res,
                live,
                config,
                &conflicts,
                self.api_version,
            ));
        }
        if self.force {
            let taken: FieldSet = applied
                .iter()
                .filter(|p| {
                    fields::get(live, p) != fields::get(config, p)
                        || p.last().is_some_and(|l| l == ".")
                })
                .cloned()
                .collect();
            for e in entries.iter_mut().filter(|e| !is_mine(e)) {
                e.fields.retain(|p| !taken.contains(p));
            }
        }

        // Fields this manager applied before and no longer applies, owned by nobody else.
        let previous: FieldSet = entries
            .iter()
            .find(|e| is_mine(e))
            .map(|e| e.fields.clone())
            .unwrap_or_default();
        let others: FieldSet = entries
            .iter()
            .filter(|e| !is_mine(e))
            .flat_map(|e| e.fields.iter().cloned())
            .collect();
        let mut result = live.clone();
        // Remove deepest paths first, so that an item's fields go before the item.
        let mut dropped: Vec<_> = previous
            .difference(&applied)
            .filter(|p| !others.contains(*p))
            .collect();
        dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in dropped {
            fields::remove(&mut result, p);
        }

        merge(self.res, &mut Vec::new(), &mut result, config, self.scope);

        entries.retain(|e| !is_mine(e));
        entries.push(Entry {
            manager: self.manager.to_string(),
            operation: "Apply".into(),
            api_version: self.api_version.to_string(),
            time: self.now.to_string(),
            subresource,
            fields: applied,
        });
        let present = fields::collect(
            self.res,
            &result,
            Scope::Main {
                status_subresource: false,
            },
        );
        for e in &mut entries {
            e.fields.retain(|p| present.contains(p));
        }
        fields::set_entries(&mut result, &entries);
        Ok(result)
    }
}

/// Merges an applied configuration into an object: maps field by field, list-maps item by
/// key, sets by union, everything else replaced.
fn merge<'a>(
    res: &ResourceInfo,
    names: &mut Vec<&'a str>,
    live: &mut Value,
    config: &'a Value,
    scope: Scope,
) {
    let (Some(live_map), Some(cfg)) = (live.as_object_mut(), config.as_object()) else {
        *live = config.clone();
        return;
    };
    for (k, v) in cfg {
        if names.is_empty() {
            let skip = match scope {
                Scope::Main { status_subresource } => status_subresource && k == "status",
                Scope::Status => k != "status",
            };
            if skip {
                continue;
            }
        }
        if names.len() == 1 && names[0] == "metadata" && k == "managedFields" {
            continue;
        }
        names.push(k);
        match (live_map.get_mut(k), v) {
            (Some(l @ Value::Object(_)), Value::Object(_)) => merge(res, names, l, v, scope),
            (Some(Value::Array(l)), Value::Array(items)) => match list_type(res, names) {
                ListType::Map(keys) => {
                    for item in items {
                        let pos = l
                            .iter()
                            .position(|li| keys.iter().all(|key| li.get(key) == item.get(key)));
                        match pos {
                            Some(i) => merge(res, names, &mut l[i], item, scope),
                            None => l.push(item.clone()),
                        }
                    }
                }
                ListType::Set => {
                    for item in items {
                        if !l.contains(item) {
                            l.push(item.clone());
                        }
                    }
                }
                ListType::Atomic => *l = items.clone(),
            },
            (_, Value::Null) => {
                live_map.remove(k);
            }
            _ => {
                live_map.insert(k.clone(), v.clone());
            }
        }
        names.pop();
    }
}

/// `.spec.x` / `.spec.containers[name="a"].image`, as the real server prints paths.
fn render_path(path: &[String]) -> String {
    let mut s = String::new();
    for el in path {
        if let Some(n) = el.strip_prefix("f:") {
            s.push('.');
            s.push_str(n);
        } else if let Some(k) = el.strip_prefix("k:") {
            let m: serde_json::Map<String, Value> = serde_json::from_str(k).unwrap_or_default();
            let parts: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
            s.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = el.strip_prefix("v:") {
            s.push_str(&format!("[{v}]"));
        }
    }
    s
}

fn conflict_error(
    res: &ResourceInfo,
    live: &Value,
    _config: &Value,
    conflicts: &[(String, String)],
    api_version: &str,
) -> ApiError {
    let n = conflicts.len();
    let lines: Vec<String> = conflicts
        .iter()
        .map(|(m, p)| format!("conflict with \"{m}\" using {api_version}: {p}"))
        .collect();
    let message = if n == 1 {
        format!("Apply failed with 1 conflict: {}", lines[0])
    } else {
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    let name = live["metadata"]["name"].as_str().unwrap_or_default();
    let mut details = serde_json::json!({
        "name": name,
        "kind": res.plural,
        "causes": conflicts.iter().map(|(m, p)| serde_json::json!({
            "reason": "FieldManagerConflict",
            "message": format!("conflict with \"{m}\" using {api_version}"),
            "field": p,
        })).collect::<Vec<_>>(),
    });
    if !res.group.is_empty() {
        details["group"] = res.group.clone().into();
    }
    ApiError::Conflict { message, details }
}
