//! Custom resources against their CRD's structural schema, as the real server treats every
//! write: unknown fields are pruned, `null` in a non-nullable field is dropped, defaults are
//! filled in, then the object is validated (types, `required`, `enum`, bounds, lengths,
//! patterns); failures are a 422 listing every cause.

use serde_json::{Map, Value};

use crate::meta::strings;

/// What admission found.
#[derive(Debug, Default, PartialEq)]
pub struct Admission {
    /// Why the object is invalid, as (field, message); empty when valid.
    pub causes: Vec<(String, String)>,
    /// The fields pruned because the schema does not declare them (`spec.foo`), which
    /// `fieldValidation=Strict` refuses.
    pub unknown: Vec<String>,
}

/// Prunes, defaults and validates `object` (a whole custom resource) against `schema` (the
/// version's `openAPIV3Schema`).
pub fn admit(schema: &Value, object: &mut Value) -> Admission {
    let Some(props) = schema["properties"].as_object() else {
        return Admission::default();
    };
    let Some(obj) = object.as_object_mut() else {
        return Admission::default();
    };
    let mut causes = Vec::new();
    let mut unknown = Vec::new();
    for (k, v) in obj.iter_mut() {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        if let Some(s) = props.get(k) {
            prune(s, v, k, &mut unknown);
            default(s, v);
        }
    }
    // Top-level fields the schema does not know go, unless it keeps unknown fields.
    if !preserves_unknown(schema) {
        obj.retain(|k, _| {
            let known =
                matches!(k.as_str(), "apiVersion" | "kind" | "metadata") || props.contains_key(k);
            if !known {
                unknown.push(k.clone());
            }
            known
        });
    }
    obj.retain(|k, v| !(v.is_null() && props.get(k).is_some_and(|s| !nullable(s))));
    for (k, s) in props {
        if matches!(k.as_str(), "apiVersion" | "kind" | "metadata") {
            continue;
        }
        match obj.get_mut(k) {
            Some(v) => validate(s, v, k, &mut causes),
            None => {
                if let Some(d) = s.get("default") {
                    obj.insert(k.clone(), d.clone());
                }
            }
        }
    }
    for r in strings(&schema["required"]) {
        if !obj.contains_key(&r) {
            causes.push((r, "Required value".into()));
        }
    }
    Admission { causes, unknown }
}

fn preserves_unknown(s: &Value) -> bool {
    s["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
}

fn nullable(s: &Value) -> bool {
    s["nullable"].as_bool() == Some(true)
}

/// Removes what the schema does not declare, recording each removed field's path.
fn prune(s: &Value, v: &mut Value, path: &str, unknown: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            if let Some(props) = s["properties"].as_object() {
                if !preserves_unknown(s) {
                    map.retain(|k, _| {
                        let known = props.contains_key(k);
                        if !known {
                            unknown.push(format!("{path}.{k}"));
                        }
                        known
                    });
                }
                map.retain(|k, x| !(x.is_null() && props.get(k).is_some_and(|p| !nullable(p))));
                for (k, x) in map.iter_mut() {
                    if let Some(p) = props.get(k) {
                        prune(p, x, &format!("{path}.{k}"), unknown);
                    }
                }
            } else if s["additionalProperties"].is_object() {
                for (k, x) in map.iter_mut() {
                    prune(
                        &s["additionalProperties"],
                        x,
                        &format!("{path}.{k}"),
                        unknown,
                    );
                }
            } else if !preserves_unknown(s)
                && s["type"].as_str() == Some("object")
                && !s["additionalProperties"].is_boolean()
            {
                unknown.extend(map.keys().map(|k| format!("{path}.{k}")));
                map.clear();
            }
        }
        Value::Array(items) => {
            for (i, x) in items.iter_mut().enumerate() {
                prune(&s["items"], x, &format!("{path}[{i}]"), unknown);
            }
        }
        _ => {}
    }
}

fn default(s: &Value, v: &mut Value) {
    match v {
        Value::Object(map) => {
            if let Some(props) = s["properties"].as_object() {
                for (k, p) in props {
                    if !map.contains_key(k)
                        && let Some(d) = p.get("default")
                    {
                        map.insert(k.clone(), d.clone());
                    }
                    if let Some(x) = map.get_mut(k) {
                        default(p, x);
                    }
                }
            } else if s["additionalProperties"].is_object() {
                for x in map.values_mut() {
                    default(&s["additionalProperties"], x);
                }
            }
        }
        Value::Array(items) => {
            for x in items {
                default(&s["items"], x);
            }
        }
        _ => {}
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn validate(s: &Value, v: &Value, path: &str, causes: &mut Vec<(String, String)>) {
    let invalid = |causes: &mut Vec<(String, String)>, msg: String| {
        causes.push((path.to_string(), format!("Invalid value: {v}: {msg}")));
    };
    if v.is_null() {
        if !nullable(s) {
            invalid(
                causes,
                format!(
                    "{path} in body must be of type {}: \"null\"",
                    s["type"].as_str().unwrap_or("object")
                ),
            );
        }
        return;
    }
    let int_or_string = s["x-kubernetes-int-or-string"].as_bool() == Some(true);
    if let Some(want) = s["type"].as_str() {
        let got = type_name(v);
        let ok = got == want
            || (want == "number" && got == "integer")
            || (int_or_string && matches!(got, "integer" | "string"));
        if !ok {
            invalid(
                causes,
                format!("{path} in body must be of type {want}: \"{got}\""),
            );
            return;
        }
    } else if int_or_string && !matches!(type_name(v), "integer" | "string") {
        invalid(
            causes,
            format!("{path} in body must be of type integer or string"),
        );
        return;
    }
    if let Some(allowed) = s["enum"].as_array()
        && !allowed.contains(v)
    {
        let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
        causes.push((
            path.to_string(),
            format!(
                "Unsupported value: {v}: supported values: {}",
                list.join(", ")
            ),
        ));
    }
    match v {
        Value::Number(n) => {
            let x = n.as_f64().unwrap_or_default();
            if let Some(min) = s["minimum"].as_f64()
                && x < min
            {
                invalid(
                    causes,
                    format!("{path} in body should be greater than or equal to {min}"),
                );
            }
            if let Some(max) = s["maximum"].as_f64()
                && x > max
            {
                invalid(
                    causes,
                    format!("{path} in body should be less than or equal to {max}"),
                );
            }
        }
        Value::String(text) => {
            let len = text.chars().count() as u64;
            if let Some(min) = s["minLength"].as_u64()
                && len < min
            {
                invalid(
                    causes,
                    format!("{path} in body should be at least {min} chars long"),
                );
            }
            if let Some(max) = s["maxLength"].as_u64()
                && len > max
            {
                invalid(
                    causes,
                    format!("{path} in body may not be more than {max} bytes"),
                );
            }
            if let Some(p) = s["pattern"].as_str()
                && regex::Regex::new(p).is_ok_and(|re| !re.is_match(text))
            {
                invalid(causes, format!("{path} in body should match '{p}'"));
            }
        }
        Value::Array(items) => {
            if let Some(max) = s["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                causes.push((
                    path.to_string(),
                    format!("Too many: {}: must have at most {max} items", items.len()),
                ));
            }
            for (i, x) in items.iter().enumerate() {
                validate(&s["items"], x, &format!("{path}[{i}]"), causes);
            }
        }
        Value::Object(map) => validate_object(s, map, path, causes),
        _ => {}
    }
}

fn validate_object(
    s: &Value,
    map: &Map<String, Value>,
    path: &str,
    causes: &mut Vec<(String, String)>,
) {
    if let Some(props) = s["properties"].as_object() {
        for (k, x) in map {
            if let Some(p) = props.get(k) {
                validate(p, x, &format!("{path}.{k}"), causes);
            }
        }
    } else if s["additionalProperties"].is_object() {
        for (k, x) in map {
            validate(
                &s["additionalProperties"],
                x,
                &format!("{path}.{k}"),
                causes,
            );
        }
    }
    for r in strings(&s["required"]) {
        if !map.contains_key(&r) {
            causes.push((format!("{path}.{r}"), "Required value".into()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["name"],
                    "properties": {
                        "name": {"type": "string", "minLength": 1},
                        "auto": {"type": "boolean", "default": true},
                        "interval": {"type": "integer", "default": 30, "minimum": 1},
                        "mode": {"type": "string", "enum": ["a", "b"]},
                        "ref": {"type": "object", "nullable": true, "properties": {"x": {"type": "string"}}},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
            },
        })
    }

    #[test]
    fn prunes_unknown_fields_and_fills_defaults() {
        let mut o = json!({
            "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
            "spec": {"name": "n", "unknown": 1, "ref": null, "labels": {"k": "v"}},
            "status": {"anything": {"goes": 1}},
            "extra": true,
        });
        let admission = admit(&schema(), &mut o);
        assert!(admission.causes.is_empty());
        assert_eq!(admission.unknown, ["spec.unknown", "extra"]);
        assert_eq!(
            o,
            json!({
                "apiVersion": "x/v1", "kind": "X", "metadata": {"name": "a"},
                "spec": {"name": "n", "auto": true, "interval": 30, "ref": null, "labels": {"k": "v"}},
                "status": {"anything": {"goes": 1}},
            })
        );
    }

    #[test]
    fn reports_every_invalid_field() {
        let mut o = json!({"spec": {"interval": "often", "mode": "c", "labels": {"k": 1}}});
        let fields: Vec<String> = admit(&schema(), &mut o)
            .causes
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            fields,
            ["spec.interval", "spec.labels.k", "spec.mode", "spec.name"]
        );
    }
}
