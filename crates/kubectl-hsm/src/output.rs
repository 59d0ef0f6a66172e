//! What the plugin prints, in each output format. JSON and YAML carry the same document;
//! text is for people and never shows a secret value (only `get --key` prints one, raw).
//!
//! A secret's values are shown (JSON/YAML only) as `{"data": {key: text}, "binaryData":
//! {key: base64}}`: UTF-8 values as they are, others as base64 (the ConfigMap convention).

use crate::Failure;
use crate::cli::Output;
use crate::model::{SecretData, SecretValue};
use base64::Engine;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

/// Prints `document` as JSON or YAML, or `text()` for people.
pub fn emit<T: Serialize>(
    format: Output,
    document: &T,
    text: impl FnOnce() -> String,
) -> Result<(), Failure> {
    let out = match format {
        Output::Json => {
            let mut s = serde_json::to_string_pretty(document).map_err(Failure::Serialize)?;
            s.push('\n');
            s
        }
        Output::Yaml => serde_yaml::to_string(document).map_err(Failure::SerializeYaml)?,
        Output::Text => text(),
    };
    write_stdout(out.as_bytes())
}

/// Writes bytes to stdout.
pub fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(Failure::Output)
}

/// Rows as aligned columns.
pub fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        out.trim_end().to_owned() + "\n"
    };
    let mut out = line(&header.iter().map(|h| h.to_string()).collect::<Vec<_>>());
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// A secret's values for JSON and YAML.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Values {
    /// UTF-8 values.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Other values, base64.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub binary_data: BTreeMap<String, String>,
}

impl Values {
    /// Sorts `data` into text and binary values.
    pub fn of<'a>(data: impl IntoIterator<Item = (&'a String, &'a SecretValue)>) -> Values {
        let mut values = Values::default();
        for (key, value) in data {
            match value.as_text() {
                Some(text) => {
                    values.data.insert(key.clone(), text.to_owned());
                }
                None => {
                    values.binary_data.insert(
                        key.clone(),
                        base64::engine::general_purpose::STANDARD.encode(value.expose()),
                    );
                }
            }
        }
        values
    }
}

/// `get` as JSON or YAML.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecretDoc {
    /// The path.
    pub path: String,
    /// The values.
    #[serde(flatten)]
    pub values: Values,
    /// The checksum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
    /// Devices that answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_count: Option<i64>,
}

/// `get` as text: names and facts, no values.
pub fn secret_text(
    path: &str,
    data: &SecretData,
    checksum: Option<&str>,
    device_count: Option<i64>,
    metadata: Option<&serde_json::Value>,
) -> String {
    let mut rows = vec![("Name", path.to_owned())];
    if let Some(meta) = metadata {
        for (field, label) in [
            ("description", "Description"),
            ("format", "Format"),
            ("dataType", "Data type"),
            ("source", "Source"),
            ("createdAt", "Created"),
        ] {
            if let Some(text) = meta
                .get(field)
                .and_then(|v| v.as_str())
                .filter(|s| !s.is_empty())
            {
                rows.push((label, text.to_owned()));
            }
        }
        if let Some(labels) = meta.get("labels").and_then(|l| l.as_object()) {
            for (k, v) in labels {
                rows.push(("Label", format!("{k}={}", v.as_str().unwrap_or_default())));
            }
        }
    }
    if let Some(sum) = checksum {
        rows.push(("Checksum", sum.to_owned()));
    }
    if let Some(n) = device_count {
        rows.push(("Devices", n.to_string()));
    }
    let keys: Vec<String> = data
        .iter()
        .map(|(k, v)| format!("{k} ({} bytes)", v.expose().len()))
        .collect();
    rows.push((
        "Keys",
        if keys.is_empty() {
            "<none>".into()
        } else {
            keys.join(", ")
        },
    ));
    rows.iter()
        .map(|(label, value)| format!("{:<13} {value}\n", format!("{label}:")))
        .collect()
}
