//! What hsmctl prints, in each output format. JSON and YAML carry the same document.
//!
//! A secret is shown as `{"name", "data": {key: text}, "binaryData": {key: base64},
//! "checksum", "metadata"}`: values that are UTF-8 go in `data` as they are, others in
//! `binaryData` as base64 (the convention of Kubernetes ConfigMaps).

use crate::Failure;
use crate::cli::Output;
use hsm_store::{SecretData, SecretMetadata, SecretSummary, TokenInfo};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;

fn emit<T: Serialize>(
    format: Output,
    document: &T,
    table: impl FnOnce() -> String,
) -> Result<(), Failure> {
    let text = match format {
        Output::Json => {
            let mut s = serde_json::to_string_pretty(document)
                .map_err(|e| Failure::Output(e.to_string()))?;
            s.push('\n');
            s
        }
        Output::Yaml => {
            serde_yaml::to_string(document).map_err(|e| Failure::Output(e.to_string()))?
        }
        Output::Table => table(),
    };
    std::io::stdout()
        .write_all(text.as_bytes())
        .map_err(|e| Failure::Output(e.to_string()))
}

/// Rows as aligned columns.
fn columns(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
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
    let mut out = line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        out.push_str(&line(row.clone()));
    }
    out
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InfoDoc<'a> {
    label: &'a str,
    manufacturer: &'a str,
    model: &'a str,
    serial_number: &'a str,
    firmware_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    secrets: Option<usize>,
}

/// Token facts.
pub fn token_info(format: Output, info: &TokenInfo, secrets: Option<usize>) -> Result<(), Failure> {
    let doc = InfoDoc {
        label: &info.label,
        manufacturer: &info.manufacturer,
        model: &info.model,
        serial_number: &info.serial_number,
        firmware_version: &info.firmware_version,
        secrets,
    };
    emit(format, &doc, || {
        let mut rows = vec![
            vec!["label".into(), info.label.clone()],
            vec!["manufacturer".into(), info.manufacturer.clone()],
            vec!["model".into(), info.model.clone()],
            vec!["serial".into(), info.serial_number.clone()],
            vec!["firmware".into(), info.firmware_version.clone()],
        ];
        if let Some(n) = secrets {
            rows.push(vec!["secrets".into(), n.to_string()]);
        }
        columns(&["FIELD", "VALUE"], &rows)
    })
}

#[derive(Serialize)]
struct ListEntry<'a> {
    name: &'a str,
    keys: &'a [String],
    checksum: &'a str,
}

/// The secrets of a token.
pub fn list(format: Output, entries: &[SecretSummary]) -> Result<(), Failure> {
    let doc: Vec<ListEntry<'_>> = entries
        .iter()
        .map(|e| ListEntry {
            name: &e.name,
            keys: &e.keys,
            checksum: &e.checksum,
        })
        .collect();
    emit(format, &doc, || {
        let rows: Vec<Vec<String>> = entries
            .iter()
            .map(|e| vec![e.name.clone(), e.keys.join(","), e.checksum.clone()])
            .collect();
        columns(&["NAME", "KEYS", "CHECKSUM"], &rows)
    })
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct SecretDoc<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data: BTreeMap<&'a str, &'a str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    binary_data: BTreeMap<&'a str, String>,
    checksum: &'a str,
    metadata: &'a SecretMetadata,
}

/// One secret with its values.
pub fn secret(
    format: Output,
    name: &str,
    data: &SecretData,
    checksum: &str,
    metadata: &SecretMetadata,
) -> Result<(), Failure> {
    let mut doc = SecretDoc {
        name,
        data: BTreeMap::new(),
        binary_data: BTreeMap::new(),
        checksum,
        metadata,
    };
    for (key, value) in data {
        match std::str::from_utf8(value.expose()) {
            Ok(text) => {
                doc.data.insert(key, text);
            }
            Err(_) => {
                doc.binary_data.insert(key, crate::base64(value.expose()));
            }
        }
    }
    emit(format, &doc, || {
        let rows: Vec<Vec<String>> = data
            .iter()
            .map(|(key, value)| {
                let shown = match std::str::from_utf8(value.expose()) {
                    Ok(text) if !text.contains('\n') => text.to_owned(),
                    Ok(text) => text.replace('\n', "\\n"),
                    Err(_) => format!("base64:{}", crate::base64(value.expose())),
                };
                vec![key.clone(), shown]
            })
            .collect();
        format!(
            "# {name} ({checksum})\n{}",
            columns(&["KEY", "VALUE"], &rows)
        )
    })
}

#[derive(Serialize)]
struct Written<'a> {
    name: &'a str,
    keys: usize,
    checksum: &'a str,
}

/// The result of a write.
pub fn written(format: Output, name: &str, keys: usize, checksum: &str) -> Result<(), Failure> {
    emit(
        format,
        &Written {
            name,
            keys,
            checksum,
        },
        || format!("wrote {name} ({keys} keys, {checksum})\n"),
    )
}

#[derive(Serialize)]
struct Deleted<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    key: Option<&'a str>,
    deleted: bool,
}

/// The result of a delete.
pub fn deleted(format: Output, name: &str, key: Option<&str>) -> Result<(), Failure> {
    emit(
        format,
        &Deleted {
            name,
            key,
            deleted: true,
        },
        || match key {
            Some(key) => format!("deleted key {key} of {name}\n"),
            None => format!("deleted {name}\n"),
        },
    )
}
