//! Request bodies, read field by field so that every refusal names the field at fault
//! (`data["pass word"]`, `metadata.labels["sync.version"]`, `metadata.colour`). Pure: the
//! core gets typed requests or a [`FieldError`], and nothing is written for a bad body.

use secrecy::SecretString;
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Largest secret, all values together (a Kubernetes Secret's limit; the agent's too).
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;
/// Most keys in one secret (the agent's limit).
pub const MAX_KEYS: usize = 512;
/// Longest metadata string, and longest label key plus value (the agent's limit).
pub const MAX_METADATA_FIELD: usize = 4096;
/// Labels the API writes itself; a client may not set them.
pub const RESERVED_LABEL_PREFIX: &str = "sync.";

/// A rejected body field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// The field, as the body names it (`body` for the body as a whole).
    pub field: String,
    /// What is wrong with it. Never repeats a value.
    pub reason: String,
}

fn field_error(field: impl Into<String>, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// `POST`/`PUT /api/v1/hsm/secrets/{path}`: the secret's keys with plain-string values.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WriteBody {
    /// Key → value, as plain strings (reads return them base64-encoded). At least one key.
    pub data: BTreeMap<String, String>,
    /// Metadata to store; when absent the secret keeps the metadata it has.
    #[serde(default)]
    pub metadata: Option<MetadataBody>,
    /// Accepted for the Go clients and ignored: every write goes to every device.
    #[serde(default)]
    pub mirror: Option<bool>,
}

/// The user part of a secret's metadata (the `sync.*` labels are the API's).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct MetadataBody {
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Labels (not `sync.*`).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Format hint (`json`, `text`, …).
    #[serde(default)]
    pub format: String,
    /// Data type (`plaintext`, `pem`, …).
    #[serde(default)]
    pub data_type: String,
    /// Creation time, RFC 3339 (kept from the current copy when empty).
    #[serde(default)]
    pub created_at: String,
    /// Who writes (`api` when empty).
    #[serde(default)]
    pub source: String,
}

/// `POST /api/v1/hsm/change-pin` (`Debug` shows no PIN: they are [`SecretString`]s).
#[derive(Debug)]
pub struct PinChange {
    /// The PIN now.
    pub old_pin: SecretString,
    /// The PIN to set.
    pub new_pin: SecretString,
}

/// The body of `POST /api/v1/hsm/change-pin`, for the OpenAPI document.
#[derive(Debug, Deserialize, ToSchema)]
pub struct PinChangeBody {
    /// The PIN now.
    pub old_pin: String,
    /// The PIN to set (different from `old_pin`).
    pub new_pin: String,
}

/// What is wrong with a PIN change body (each has its Go error code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PinBodyError {
    /// Not a JSON object of strings, or unknown fields.
    #[error(transparent)]
    Invalid(FieldError),
    /// `old_pin` empty or absent.
    #[error("old_pin is required")]
    MissingOld,
    /// `new_pin` empty or absent.
    #[error("new_pin is required")]
    MissingNew,
    /// Both are the same.
    #[error("new PIN must be different from old PIN")]
    Same,
}

/// `POST /api/v1/hsm/mirror/sync` (an empty body is allowed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MirrorBody {
    /// Rewrite copies even where devices agree.
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/auth/token`.
#[derive(Debug, Deserialize, ToSchema)]
pub struct TokenBody {
    /// A ServiceAccount token (TokenRequest, `kubectl create token`).
    pub k8s_token: String,
}

/// The body as a JSON object; an empty body is `{}` when `empty_ok`.
fn object(body: &[u8], empty_ok: bool) -> Result<Map<String, Value>, FieldError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return match empty_ok {
            true => Ok(Map::new()),
            false => Err(field_error("body", "a JSON object is required")),
        };
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(field_error("body", "must be a JSON object")),
        Err(e) => Err(field_error(
            "body",
            format!("not valid JSON (line {}, column {})", e.line(), e.column()),
        )),
    }
}

fn only_fields(map: &Map<String, Value>, prefix: &str, known: &[&str]) -> Result<(), FieldError> {
    match map.keys().find(|k| !known.contains(&k.as_str())) {
        Some(unknown) => Err(field_error(
            format!("{prefix}{unknown}"),
            format!("unknown field; expected one of {}", known.join(", ")),
        )),
        None => Ok(()),
    }
}

fn string(value: &Value, field: &str) -> Result<String, FieldError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Null => Ok(String::new()),
        _ => Err(field_error(field, "must be a string")),
    }
}

/// Reads a write body.
pub fn write(body: &[u8]) -> Result<WriteBody, FieldError> {
    let map = object(body, false)?;
    only_fields(&map, "", &["data", "metadata", "mirror"])?;
    let data = match map.get("data") {
        None | Some(Value::Null) => return Err(field_error("data", "required")),
        Some(Value::Object(data)) => data,
        Some(_) => {
            return Err(field_error(
                "data",
                "must be an object of key → string value",
            ));
        }
    };
    let data = secret_data(data)?;
    let metadata = match map.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(metadata(m)?),
        Some(_) => return Err(field_error("metadata", "must be an object")),
    };
    let mirror = match map.get("mirror") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => return Err(field_error("mirror", "must be true or false")),
    };
    Ok(WriteBody {
        data,
        metadata,
        mirror,
    })
}

fn secret_data(data: &Map<String, Value>) -> Result<BTreeMap<String, String>, FieldError> {
    if data.is_empty() {
        return Err(field_error("data", "must hold at least one key"));
    }
    if data.len() > MAX_KEYS {
        return Err(field_error(
            "data",
            format!("{} keys; at most {MAX_KEYS}", data.len()),
        ));
    }
    let mut out = BTreeMap::new();
    let mut total = 0usize;
    for (key, value) in data {
        let field = format!("data[{key:?}]");
        hsm_store::name::validate_key("", key).map_err(|e| match e {
            hsm_store::StoreError::InvalidKey { reason, .. } => field_error(&field, reason),
            other => field_error(&field, other.to_string()),
        })?;
        let Value::String(value) = value else {
            return Err(field_error(field, "must be a string"));
        };
        total += value.len();
        out.insert(key.clone(), value.clone());
    }
    if total > MAX_SECRET_BYTES {
        return Err(field_error(
            "data",
            format!("values total {total} bytes; at most {MAX_SECRET_BYTES}"),
        ));
    }
    Ok(out)
}

fn metadata(map: &Map<String, Value>) -> Result<MetadataBody, FieldError> {
    const FIELDS: [&str; 6] = [
        "description",
        "labels",
        "format",
        "dataType",
        "createdAt",
        "source",
    ];
    only_fields(map, "metadata.", &FIELDS)?;
    let text = |name: &str| -> Result<String, FieldError> {
        let field = format!("metadata.{name}");
        let value = map
            .get(name)
            .map_or(Ok(String::new()), |v| string(v, &field))?;
        if value.len() > MAX_METADATA_FIELD {
            return Err(field_error(
                field,
                format!("longer than {MAX_METADATA_FIELD} bytes"),
            ));
        }
        Ok(value)
    };
    let labels = match map.get("labels") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(labels)) => labels
            .iter()
            .map(|(k, v)| label(k, v))
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(field_error("metadata.labels", "must be an object")),
    };
    Ok(MetadataBody {
        description: text("description")?,
        labels,
        format: text("format")?,
        data_type: text("dataType")?,
        created_at: text("createdAt")?,
        source: text("source")?,
    })
}

fn label(key: &str, value: &Value) -> Result<(String, String), FieldError> {
    let field = format!("metadata.labels[{key:?}]");
    let value = string(value, &field)?;
    if key.is_empty() || key.len() + value.len() > MAX_METADATA_FIELD {
        return Err(field_error(field, "empty key, or key and value too long"));
    }
    if key.starts_with(RESERVED_LABEL_PREFIX) {
        return Err(field_error(field, "sync.* labels are set by the API"));
    }
    Ok((key.to_owned(), value))
}

/// Reads a PIN change body. The PINs go straight into [`SecretString`]s.
pub fn pin_change(body: &[u8]) -> Result<PinChange, PinBodyError> {
    let map = object(body, false).map_err(PinBodyError::Invalid)?;
    only_fields(&map, "", &["old_pin", "new_pin"]).map_err(PinBodyError::Invalid)?;
    let pin = |name: &str| -> Result<String, PinBodyError> {
        map.get(name)
            .map_or(Ok(String::new()), |v| string(v, name))
            .map_err(PinBodyError::Invalid)
    };
    let (old, new) = (pin("old_pin")?, pin("new_pin")?);
    if old.is_empty() {
        return Err(PinBodyError::MissingOld);
    }
    if new.is_empty() {
        return Err(PinBodyError::MissingNew);
    }
    if old == new {
        return Err(PinBodyError::Same);
    }
    Ok(PinChange {
        old_pin: SecretString::from(old),
        new_pin: SecretString::from(new),
    })
}

/// Reads a mirror trigger body (empty: no force).
pub fn mirror(body: &[u8]) -> Result<MirrorBody, FieldError> {
    let map = object(body, true)?;
    only_fields(&map, "", &["force"])?;
    match map.get("force") {
        None | Some(Value::Null) => Ok(MirrorBody::default()),
        Some(Value::Bool(force)) => Ok(MirrorBody { force: *force }),
        Some(_) => Err(field_error("force", "must be true or false")),
    }
}

/// Reads a token exchange body: the ServiceAccount token, never echoed.
pub fn token(body: &[u8]) -> Result<SecretString, FieldError> {
    let map = object(body, false)?;
    match map.get("k8s_token") {
        Some(Value::String(token)) if !token.is_empty() => Ok(SecretString::from(token.clone())),
        Some(Value::String(_)) | None | Some(Value::Null) => {
            Err(field_error("k8s_token", "required"))
        }
        Some(_) => Err(field_error("k8s_token", "must be a string")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    fn field(body: &str) -> String {
        write(body.as_bytes()).unwrap_err().field
    }

    #[test]
    fn a_good_write_body_parses() {
        let body = write(
            br#"{"data":{"user":"app","tls.crt":""},"metadata":{"description":"d","labels":{"team":"a"},"dataType":"pem"},"mirror":true}"#,
        )
        .unwrap();
        assert_eq!(body.data["user"], "app");
        assert_eq!(body.data["tls.crt"], "");
        let metadata = body.metadata.unwrap();
        assert_eq!(metadata.labels["team"], "a");
        assert_eq!(metadata.data_type, "pem");
        assert_eq!(body.mirror, Some(true));
    }

    #[test]
    fn each_bad_write_body_names_its_field() {
        assert_eq!(field(""), "body");
        assert_eq!(field("{not json"), "body");
        assert_eq!(field("[1]"), "body");
        assert_eq!(field("{}"), "data");
        assert_eq!(field(r#"{"data":{}}"#), "data");
        assert_eq!(field(r#"{"data":"x"}"#), "data");
        assert_eq!(field(r#"{"data":{"a":1}}"#), r#"data["a"]"#);
        assert_eq!(field(r#"{"data":{"bad key":"v"}}"#), r#"data["bad key"]"#);
        assert_eq!(
            field(r#"{"data":{"_metadata":"v"}}"#),
            r#"data["_metadata"]"#
        );
        assert_eq!(field(r#"{"data":{"a":"v"},"colour":1}"#), "colour");
        assert_eq!(
            field(r#"{"data":{"a":"v"},"metadata":{"colour":"x"}}"#),
            "metadata.colour"
        );
        assert_eq!(
            field(r#"{"data":{"a":"v"},"metadata":{"labels":{"sync.version":"9"}}}"#),
            r#"metadata.labels["sync.version"]"#
        );
        assert_eq!(
            field(r#"{"data":{"a":"v"},"metadata":{"description":7}}"#),
            "metadata.description"
        );
        assert_eq!(field(r#"{"data":{"a":"v"},"mirror":"yes"}"#), "mirror");
        let big = format!(
            r#"{{"data":{{"a":"{}"}}}}"#,
            "x".repeat(MAX_SECRET_BYTES + 1)
        );
        let error = write(big.as_bytes()).unwrap_err();
        assert_eq!(error.field, "data");
        assert!(!error.to_string().contains("xxxx"), "{error}");
    }

    #[test]
    fn pin_bodies_have_the_go_error_kinds_and_never_echo_a_pin() {
        let ok = pin_change(br#"{"old_pin":"123456","new_pin":"654321"}"#).unwrap();
        assert_eq!(ok.new_pin.expose_secret(), "654321");
        assert!(matches!(pin_change(b"nope"), Err(PinBodyError::Invalid(_))));
        assert_eq!(
            pin_change(br#"{"new_pin":"1"}"#).err(),
            Some(PinBodyError::MissingOld)
        );
        assert_eq!(
            pin_change(br#"{"old_pin":"1"}"#).err(),
            Some(PinBodyError::MissingNew)
        );
        let same = pin_change(br#"{"old_pin":"secret-1","new_pin":"secret-1"}"#).unwrap_err();
        assert_eq!(same, PinBodyError::Same);
        assert!(!same.to_string().contains("secret-1"));
    }

    #[test]
    fn mirror_and_token_bodies() {
        assert_eq!(mirror(b"").unwrap(), MirrorBody::default());
        assert!(mirror(br#"{"force":true}"#).unwrap().force);
        assert_eq!(mirror(br#"{"force":1}"#).unwrap_err().field, "force");
        assert_eq!(mirror(br#"{"other":1}"#).unwrap_err().field, "other");
        assert_eq!(token(br#"{"k8s_token":"t"}"#).unwrap().expose_secret(), "t");
        assert_eq!(
            token(br#"{"k8s_token":""}"#).unwrap_err().field,
            "k8s_token"
        );
        assert_eq!(token(b"").unwrap_err().field, "body");
    }
}
