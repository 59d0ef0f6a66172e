//! Which secret names and key names the store writes.
//!
//! The rules keep every name unambiguous in the on-token layout and inside what the Go
//! operator could already store. They are deliberately wider than Kubernetes object names:
//! tokens written by the Go operator may hold upper-case or `_` names, and the store must be
//! able to rewrite and delete those. Stricter policy (DNS-1123) belongs to the API layers.

use crate::error::{Result, StoreError};
use crate::layout::METADATA_KEY;

/// Longest secret name: a Kubernetes object name (253) is the practical limit.
pub const MAX_NAME_LEN: usize = 253;
/// Longest key name, as for Kubernetes Secret keys.
pub const MAX_KEY_LEN: usize = 253;

fn name_error(name: &str, reason: &'static str) -> StoreError {
    StoreError::InvalidName {
        name: name.to_owned(),
        reason,
    }
}

/// Checks a secret name: `/`-separated segments of `[A-Za-z0-9._-]`, no empty, `.` or `..`
/// segment, no segment starting with `.` (those labels are the store's own), and no segment
/// named `_metadata`.
pub fn validate_name(name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(name_error(name, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(name_error(name, "longer than 253 characters"));
    }
    for segment in name.split('/') {
        if segment.is_empty() {
            return Err(name_error(
                name,
                "empty path segment (leading, trailing or double '/')",
            ));
        }
        if segment.starts_with('.') {
            return Err(name_error(name, "a path segment must not start with '.'"));
        }
        if segment == METADATA_KEY {
            return Err(name_error(name, "'_metadata' is reserved"));
        }
        if !segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return Err(name_error(
                name,
                "only letters, digits, '-', '_', '.' and '/' are allowed",
            ));
        }
    }
    Ok(())
}

/// Checks a key name as Kubernetes checks Secret keys (`[-._a-zA-Z0-9]+`), minus the store's
/// reserved `_metadata`.
pub fn validate_key(name: &str, key: &str) -> Result<()> {
    let error = |reason| StoreError::InvalidKey {
        name: name.to_owned(),
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(error("must not be empty"));
    }
    if key.len() > MAX_KEY_LEN {
        return Err(error("longer than 253 characters"));
    }
    if key == "." || key == ".." {
        return Err(error("'.' and '..' are not keys"));
    }
    if key == METADATA_KEY {
        return Err(error("'_metadata' is reserved for the secret's metadata"));
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(error("only letters, digits, '-', '_' and '.' are allowed"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case("db")]
    #[case("db.example.com")]
    #[case("team/db/password")]
    #[case("Legacy_Name")]
    #[case("a")]
    fn accepts(#[case] name: &str) {
        validate_name(name).unwrap();
    }

    #[rstest]
    #[case("", "empty")]
    #[case("/abs", "segment")]
    #[case("trailing/", "segment")]
    #[case("a//b", "segment")]
    #[case(".hidden", "'.'")]
    #[case("a/../b", "'.'")]
    #[case("a/_metadata", "reserved")]
    #[case("sp ace", "allowed")]
    #[case("uni\u{e9}", "allowed")]
    fn rejects(#[case] name: &str, #[case] why: &str) {
        let err = validate_name(name).unwrap_err().to_string();
        assert!(err.contains(why), "{err}");
    }

    #[test]
    fn rejects_overlong_names() {
        assert!(validate_name(&"a".repeat(253)).is_ok());
        assert!(validate_name(&"a".repeat(254)).is_err());
    }

    #[rstest]
    #[case("password", true)]
    #[case("tls.crt", true)]
    #[case(".dockerconfigjson", true)]
    #[case("data", true)]
    #[case("_metadata", false)]
    #[case("a/b", false)]
    #[case("", false)]
    #[case("..", false)]
    fn keys(#[case] key: &str, #[case] ok: bool) {
        assert_eq!(validate_key("s", key).is_ok(), ok, "{key}");
    }
}
