//! Label and field selectors, with the grammar of `k8s.io/apimachinery/pkg/labels` and
//! `pkg/fields`: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`, `k>1`,
//! `k<1`, comma-separated requirements that must all hold.

use serde_json::Value;

use crate::error::ApiError;
use crate::resources::ResourceInfo;

/// One label requirement.
#[derive(Debug, Clone, PartialEq)]
pub enum Requirement {
    /// `k=v`, `k==v`
    Equals(String, String),
    /// `k!=v` (also true when `k` is absent)
    NotEquals(String, String),
    /// `k in (…)`
    In(String, Vec<String>),
    /// `k notin (…)` (also true when `k` is absent)
    NotIn(String, Vec<String>),
    /// `k`
    Exists(String),
    /// `!k`
    DoesNotExist(String),
    /// `k>n` (integer comparison)
    GreaterThan(String, i64),
    /// `k<n`
    LessThan(String, i64),
}

/// A parsed label selector: all requirements must match. Empty matches everything.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelSelector(pub Vec<Requirement>);

impl LabelSelector {
    /// Parses the `labelSelector` query parameter.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in split_top_level(s) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            reqs.push(parse_requirement(part)?);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object's labels match.
    pub fn matches(&self, object: &Value) -> bool {
        let labels = &object["metadata"]["labels"];
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Equals(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::DoesNotExist(k) => get(k).is_none(),
            Requirement::GreaterThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x > *n),
            Requirement::LessThan(k, n) => get(k)
                .and_then(|x| x.parse::<i64>().ok())
                .is_some_and(|x| x < *n),
        })
    }
}

/// Splits on commas outside parentheses.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn bad(s: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!("unable to parse requirement: {why}: \"{s}\""))
}

fn parse_requirement(s: &str) -> Result<Requirement, ApiError> {
    if let Some(k) = s.strip_prefix('!') {
        let k = k.trim();
        check_key(k, s)?;
        return Ok(Requirement::DoesNotExist(k.into()));
    }
    for (op, ctor) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((k, v)) = s.split_once(op) {
            let (k, v) = (k.trim(), v.trim());
            check_key(k, s)?;
            check_value(v, s)?;
            return Ok(ctor(k.into(), v.into()));
        }
    }
    for (op, gt) in [(">", true), ("<", false)] {
        if let Some((k, v)) = s.split_once(op) {
            let k = k.trim();
            check_key(k, s)?;
            let n: i64 = v
                .trim()
                .parse()
                .map_err(|_| bad(s, "for 'Gt', 'Lt' operators, the value must be an integer"))?;
            return Ok(if gt {
                Requirement::GreaterThan(k.into(), n)
            } else {
                Requirement::LessThan(k.into(), n)
            });
        }
    }
    let mut words = s.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim();
    let rest = words.next().unwrap_or_default().trim();
    check_key(key, s)?;
    if rest.is_empty() {
        return Ok(Requirement::Exists(key.into()));
    }
    let (notin, set) = if let Some(r) = rest.strip_prefix("notin") {
        (true, r)
    } else if let Some(r) = rest.strip_prefix("in") {
        (false, r)
    } else {
        return Err(bad(s, "found unexpected operator"));
    };
    let set = set.trim();
    let inner = set
        .strip_prefix('(')
        .and_then(|x| x.strip_suffix(')'))
        .ok_or_else(|| bad(s, "expected a parenthesised set of values"))?;
    let values: Vec<String> = inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    for v in &values {
        check_value(v, s)?;
    }
    Ok(if notin {
        Requirement::NotIn(key.into(), values)
    } else {
        Requirement::In(key.into(), values)
    })
}

fn check_key(k: &str, s: &str) -> Result<(), ApiError> {
    let name = k.rsplit('/').next().unwrap_or(k);
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(bad(s, "invalid label key"))
    }
}

fn check_value(v: &str, s: &str) -> Result<(), ApiError> {
    let ok = v.len() <= 63
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(bad(s, "invalid label value"))
    }
}

/// A parsed field selector: `path=value`, `path==value`, `path!=value`, comma-separated.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

impl FieldSelector {
    /// Parses the `fieldSelector` parameter. Custom resources support only
    /// `metadata.name` and `metadata.namespace`, as on the real server; built-ins accept any
    /// field path (the real server supports a per-kind list, e.g. `involvedObject.name` for
    /// events, `spec.nodeName` for pods).
    pub fn parse(s: &str, res: &ResourceInfo) -> Result<Self, ApiError> {
        let mut reqs = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (path, eq, value) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(ApiError::BadRequest(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                )));
            };
            let path = path.trim();
            if !res.builtin && path != "metadata.name" && path != "metadata.namespace" {
                return Err(ApiError::BadRequest(format!(
                    "field label not supported: {path}"
                )));
            }
            reqs.push((path.to_string(), eq, value.trim().to_string()));
        }
        Ok(FieldSelector(reqs))
    }

    /// Whether an object matches.
    pub fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, eq, value)| {
            let mut cur = object;
            for seg in path.split('.') {
                cur = &cur[seg];
            }
            let actual = match cur {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                other => other.to_string(),
            };
            (actual == *value) == *eq
        })
    }

    /// The name this selector pins with `metadata.name=`, if any.
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(p, eq, _)| p == "metadata.name" && *eq)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use serde_json::json;

    fn obj() -> Value {
        json!({"metadata": {"name": "a", "namespace": "ns1", "labels": {"app": "web", "tier": "front", "n": "5"}}})
    }

    #[rstest]
    #[case("", true)]
    #[case("app=web", true)]
    #[case("app==web", true)]
    #[case("app=db", false)]
    #[case("app!=db", true)]
    #[case("app!=web", false)]
    #[case("missing!=x", true)]
    #[case("app in (web,db)", true)]
    #[case("app in (db)", false)]
    #[case("app notin (db, cache)", true)]
    #[case("app notin (web)", false)]
    #[case("missing notin (web)", true)]
    #[case("tier", true)]
    #[case("missing", false)]
    #[case("!missing", true)]
    #[case("!tier", false)]
    #[case("app=web,tier=front", true)]
    #[case("app=web,tier=back", false)]
    #[case("app in (web,db),!missing,tier", true)]
    #[case(" app = web ", true)]
    #[case("n>4", true)]
    #[case("n<5", false)]
    fn label_selector_matches(#[case] selector: &str, #[case] expected: bool) {
        let s = LabelSelector::parse(selector).unwrap();
        assert_eq!(s.matches(&obj()), expected, "{selector}");
    }

    #[rstest]
    #[case("app=(web")]
    #[case("app in web")]
    #[case("app in (we b)")]
    #[case("bad key=x")]
    #[case("n>x")]
    fn malformed_label_selector_is_400(#[case] selector: &str) {
        let e = LabelSelector::parse(selector).unwrap_err();
        assert_eq!(e.code(), 400, "{selector}");
    }

    #[rstest]
    #[case("metadata.name=a", true)]
    #[case("metadata.name==a", true)]
    #[case("metadata.name!=a", false)]
    #[case("metadata.namespace=ns1,metadata.name=a", true)]
    #[case("metadata.namespace=ns2", false)]
    fn field_selector_matches(#[case] selector: &str, #[case] expected: bool) {
        let res = crate::resources::Registry::with_builtins()
            .lookup("", "v1", "secrets")
            .unwrap();
        let s = FieldSelector::parse(selector, &res).unwrap();
        assert_eq!(s.matches(&obj()), expected, "{selector}");
    }
}
