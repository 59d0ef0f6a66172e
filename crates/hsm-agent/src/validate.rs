//! Checks on what clients send, before anything reaches the token. Each failure names the
//! field, for an `InvalidArgument` status; none repeats a value.

use hsm_proto::v1::{SecretData, SecretMetadata};

/// Largest secret, all values together: a Kubernetes Secret's limit.
pub const MAX_SECRET_BYTES: usize = 1024 * 1024;
/// Most keys in one secret.
pub const MAX_KEYS: usize = 512;
/// Longest metadata string field or label.
pub const MAX_METADATA_FIELD: usize = 4096;

/// A rejected request field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The field, as the request names it (`path`, `secret_data.data["k"]`, …).
    pub field: String,
    /// What is wrong.
    pub reason: String,
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A path to write: `/`-separated segments, each a DNS-1123 subdomain (lower-case letters,
/// digits, `-` and `.`, starting and ending with a letter or digit), 253 characters at most.
/// Every HSMSecret name is such a path.
pub fn write_path(path: &str) -> Result<(), Invalid> {
    read_path(path)?;
    for segment in path.split('/') {
        let bytes = segment.as_bytes();
        let edge_ok = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        if !bytes.iter().all(|b| edge_ok(b) || *b == b'-' || *b == b'.')
            || !bytes.first().is_some_and(edge_ok)
            || !bytes.last().is_some_and(edge_ok)
        {
            return Err(invalid(
                "path",
                format!(
                    "segment {segment:?} is not a DNS-1123 subdomain (lower-case letters, \
                     digits, '-' and '.', starting and ending with a letter or digit)"
                ),
            ));
        }
    }
    Ok(())
}

/// A path to read or delete: what the store can address. Wider than [`write_path`] so that
/// secrets the Go operator wrote with other names (upper case, `_`) stay reachable.
pub fn read_path(path: &str) -> Result<(), Invalid> {
    if path.is_empty() {
        return Err(invalid("path", "must not be empty"));
    }
    hsm_store::name::validate_name(path).map_err(|e| match e {
        hsm_store::StoreError::InvalidName { reason, .. } => invalid("path", reason),
        other => invalid("path", other.to_string()),
    })
}

/// The data of a write: key names, value sizes, key count. An empty map is allowed (with
/// metadata it is a tombstone, as in the Go agent).
pub fn secret_data(path: &str, data: &SecretData) -> Result<(), Invalid> {
    if data.data.len() > MAX_KEYS {
        return Err(invalid(
            "secret_data.data",
            format!("{} keys; at most {MAX_KEYS}", data.data.len()),
        ));
    }
    let mut total = 0usize;
    for (key, value) in &data.data {
        hsm_store::name::validate_key(path, key).map_err(|e| match e {
            hsm_store::StoreError::InvalidKey { reason, .. } => {
                invalid(format!("secret_data.data[{key:?}]"), reason)
            }
            other => invalid("secret_data.data", other.to_string()),
        })?;
        total += value.len();
    }
    if total > MAX_SECRET_BYTES {
        return Err(invalid(
            "secret_data.data",
            format!("values total {total} bytes; at most {MAX_SECRET_BYTES}"),
        ));
    }
    Ok(())
}

/// Metadata strings and labels stay small.
pub fn metadata(metadata: &SecretMetadata) -> Result<(), Invalid> {
    for (field, value) in [
        ("metadata.description", &metadata.description),
        ("metadata.format", &metadata.format),
        ("metadata.data_type", &metadata.data_type),
        ("metadata.created_at", &metadata.created_at),
        ("metadata.source", &metadata.source),
    ] {
        if value.len() > MAX_METADATA_FIELD {
            return Err(invalid(
                field,
                format!("longer than {MAX_METADATA_FIELD} bytes"),
            ));
        }
    }
    for (key, value) in &metadata.labels {
        if key.is_empty() || key.len() + value.len() > MAX_METADATA_FIELD {
            return Err(invalid(
                format!("metadata.labels[{key:?}]"),
                "empty key, or key and value too long",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_paths() {
        for ok in ["db", "db.example.com", "team/db", "a-1/b.2/c"] {
            write_path(ok).unwrap();
        }
        for bad in [
            "", "DB", "db_x", "-db", "db-", "a//b", "/a", "a/", ".a", "a/-b",
        ] {
            let e = write_path(bad).unwrap_err();
            assert_eq!(e.field, "path", "{bad}");
        }
        // Legacy names stay readable.
        read_path("Legacy_Name").unwrap();
        assert!(read_path("a/_metadata").is_err());
    }

    #[test]
    fn data_limits_name_the_field() {
        let mut data = SecretData::default();
        data.data.insert("ok.key".into(), vec![0; 10]);
        secret_data("s", &data).unwrap();
        data.data.insert("bad/key".into(), vec![]);
        let e = secret_data("s", &data).unwrap_err();
        assert_eq!(e.field, "secret_data.data[\"bad/key\"]");
        data.data.remove("bad/key");
        data.data.insert("big".into(), vec![0; MAX_SECRET_BYTES]);
        let e = secret_data("s", &data).unwrap_err();
        assert!(e.reason.contains("at most"), "{e}");
    }
}
