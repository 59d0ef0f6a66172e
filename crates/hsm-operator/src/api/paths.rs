//! Which secret (and which part of it) a URL under `/api/v1/hsm/secrets/` names. Pure.
//!
//! The Go manager's routes took the secret name as one path segment, so names with `/` could
//! not be addressed (its defect 5) and `DELETE /secrets/x/metadata` deleted a key called
//! `metadata`. Here the rest of the URL is one wildcard, read segment by segment as the client
//! sent it (each segment percent-decoded on its own), with two forms:
//!
//! - **Go form**, every Go URL keeping its meaning:
//!   - `GET …/{name}/metadata`, `GET …/{name}/checksum`: the sub-resources;
//!   - `GET …/{name}`, `POST`/`PUT …/{name}`: the secret, `name` being all segments;
//!   - `DELETE …/{name}`: the secret when there is one segment, else the key named by the
//!     last segment of the secret named by the others (Go's `DELETE /secrets/:path/:key`).
//! - **Explicit form**, unambiguous for any name: the segment `-` ends the name, and what
//!   follows says which part is meant: `…/{name}/-` (the secret), `…/{name}/-/metadata`,
//!   `…/{name}/-/checksum`, `…/{name}/-/keys/{key}`.
//!
//! A `/` inside a name may also be sent percent-encoded (`team%2Fdb`), which keeps it inside
//! one segment, so `GET …/team%2Fdb/metadata` is the metadata of `team/db` in the Go form too.

use percent_encoding::percent_decode_str;

/// The separator segment of the explicit form.
pub const SEPARATOR: &str = "-";

/// What a request does to the secret, as far as the URL is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    /// `GET`.
    Read,
    /// `POST` or `PUT`.
    Write,
    /// `DELETE`.
    Delete,
}

/// What the URL names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The secret itself.
    Secret(String),
    /// Its metadata record.
    Metadata(String),
    /// Its checksum.
    Checksum(String),
    /// One key of it.
    Key {
        /// The secret.
        name: String,
        /// The key.
        key: String,
    },
}

/// A URL that names nothing this API serves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// Nothing after `/secrets/`.
    #[error("secret path is required")]
    Missing,
    /// A segment is not valid percent-encoded UTF-8.
    #[error("segment {segment:?} is not valid percent-encoded UTF-8")]
    Encoding {
        /// The segment as sent.
        segment: String,
    },
    /// The part after `/-/` is not `metadata`, `checksum` or `keys/{key}`.
    #[error("unknown sub-resource {0:?}: expected metadata, checksum or keys/<key>")]
    UnknownPart(String),
    /// The sub-resource exists, but not for this method (e.g. `DELETE …/-/metadata`).
    #[error("{part} does not take this method")]
    WrongMethod {
        /// The sub-resource.
        part: &'static str,
    },
    /// `DELETE …/{name}/{key}` or `…/-/keys/` with an empty key.
    #[error("key parameter is required")]
    MissingKey,
}

/// Reads the URL path after `/api/v1/hsm/secrets/` (as sent, still percent-encoded).
pub fn parse(verb: Verb, raw: &str) -> Result<Target, PathError> {
    if raw.is_empty() {
        return Err(PathError::Missing);
    }
    let raw_segments: Vec<&str> = raw.split('/').collect();
    if let Some(at) = raw_segments.iter().position(|s| *s == SEPARATOR) {
        let name = join(&raw_segments[..at])?;
        let rest = decode_all(&raw_segments[at + 1..])?;
        return explicit(verb, name, &rest);
    }
    let segments = decode_all(&raw_segments)?;
    let last = segments.last().map(String::as_str);
    match (verb, segments.len(), last) {
        (Verb::Read, 2.., Some("metadata")) => {
            Ok(Target::Metadata(segments[..segments.len() - 1].join("/")))
        }
        (Verb::Read, 2.., Some("checksum")) => {
            Ok(Target::Checksum(segments[..segments.len() - 1].join("/")))
        }
        (Verb::Delete, 2.., Some(key)) => {
            key_target(segments[..segments.len() - 1].join("/"), key.to_owned())
        }
        _ => Ok(Target::Secret(segments.join("/"))),
    }
}

fn explicit(verb: Verb, name: String, rest: &[String]) -> Result<Target, PathError> {
    if name.is_empty() {
        return Err(PathError::Missing);
    }
    let rest: Vec<&str> = rest.iter().map(String::as_str).collect();
    match (rest.as_slice(), verb) {
        ([], _) => Ok(Target::Secret(name)),
        (["metadata"], Verb::Read) => Ok(Target::Metadata(name)),
        (["checksum"], Verb::Read) => Ok(Target::Checksum(name)),
        (["keys", key], Verb::Delete) => key_target(name, (*key).to_owned()),
        (["metadata"], _) => Err(PathError::WrongMethod { part: "metadata" }),
        (["checksum"], _) => Err(PathError::WrongMethod { part: "checksum" }),
        (["keys", _], _) => Err(PathError::WrongMethod { part: "keys" }),
        (["keys"], Verb::Delete) => Err(PathError::MissingKey),
        (other, _) => Err(PathError::UnknownPart(other.join("/"))),
    }
}

fn key_target(name: String, key: String) -> Result<Target, PathError> {
    if key.is_empty() {
        return Err(PathError::MissingKey);
    }
    Ok(Target::Key { name, key })
}

fn decode(segment: &str) -> Result<String, PathError> {
    percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| PathError::Encoding {
            segment: segment.to_owned(),
        })
}

fn decode_all(segments: &[&str]) -> Result<Vec<String>, PathError> {
    segments.iter().map(|s| decode(s)).collect()
}

fn join(segments: &[&str]) -> Result<String, PathError> {
    Ok(decode_all(segments)?.join("/"))
}

/// A secret name a write may create: `/`-separated segments, each a DNS-1123 subdomain
/// (lower-case letters, digits, `-` and `.`, starting and ending with a letter or digit), at
/// most 253 characters — the agent's rule for writes, checked here so that a bad name is a
/// 400 naming the path before any device is asked. Reads and deletes accept the store's
/// wider rule ([`readable_name`]), so secrets the Go operator wrote stay reachable.
pub fn writable_name(name: &str) -> Result<(), String> {
    readable_name(name)?;
    for segment in name.split('/') {
        let bytes = segment.as_bytes();
        let edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
        let inner_ok = bytes.iter().all(|b| edge(b) || *b == b'-' || *b == b'.');
        if !inner_ok || !bytes.first().is_some_and(edge) || !bytes.last().is_some_and(edge) {
            return Err(format!(
                "segment {segment:?} is not a DNS-1123 subdomain (lower-case letters, digits, \
                 '-' and '.', starting and ending with a letter or digit)"
            ));
        }
    }
    Ok(())
}

/// A secret name the store can address (reads and deletes).
pub fn readable_name(name: &str) -> Result<(), String> {
    hsm_store::name::validate_name(name).map_err(|e| match e {
        hsm_store::StoreError::InvalidName { reason, .. } => reason.to_owned(),
        other => other.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Target::*;
    use Verb::*;

    fn s(x: &str) -> String {
        x.to_owned()
    }

    #[test]
    fn every_go_url_keeps_its_meaning() {
        assert_eq!(parse(Read, "db"), Ok(Secret(s("db"))));
        assert_eq!(parse(Write, "db"), Ok(Secret(s("db"))));
        assert_eq!(parse(Delete, "db"), Ok(Secret(s("db"))));
        assert_eq!(parse(Read, "db/metadata"), Ok(Metadata(s("db"))));
        assert_eq!(parse(Read, "db/checksum"), Ok(Checksum(s("db"))));
        assert_eq!(
            parse(Delete, "db/password"),
            Ok(Key {
                name: s("db"),
                key: s("password")
            })
        );
        // Go's overlap: DELETE …/x/metadata deletes the key `metadata`, as it did.
        assert_eq!(
            parse(Delete, "db/metadata"),
            Ok(Key {
                name: s("db"),
                key: s("metadata")
            })
        );
    }

    #[test]
    fn names_with_slashes_and_dots_are_addressable() {
        assert_eq!(
            parse(Read, "team/db.example.com"),
            Ok(Secret(s("team/db.example.com")))
        );
        assert_eq!(parse(Write, "a/b/c"), Ok(Secret(s("a/b/c"))));
        assert_eq!(parse(Read, "a/b/metadata"), Ok(Metadata(s("a/b"))));
        assert_eq!(parse(Delete, "team%2Fdb"), Ok(Secret(s("team/db"))));
        assert_eq!(
            parse(Read, "team%2Fdb/checksum"),
            Ok(Checksum(s("team/db")))
        );
        assert_eq!(
            parse(Delete, "team%2Fdb/k.crt"),
            Ok(Key {
                name: s("team/db"),
                key: s("k.crt")
            })
        );
    }

    #[test]
    fn the_explicit_form_is_unambiguous() {
        assert_eq!(parse(Delete, "team/db/-"), Ok(Secret(s("team/db"))));
        assert_eq!(
            parse(Read, "team/metadata/-"),
            Ok(Secret(s("team/metadata")))
        );
        assert_eq!(
            parse(Read, "team/metadata/-/metadata"),
            Ok(Metadata(s("team/metadata")))
        );
        assert_eq!(parse(Read, "a/b/-/checksum"), Ok(Checksum(s("a/b"))));
        assert_eq!(
            parse(Delete, "a/b/-/keys/tls.key"),
            Ok(Key {
                name: s("a/b"),
                key: s("tls.key")
            })
        );
        assert_eq!(
            parse(Delete, "a/b/-/keys/metadata"),
            Ok(Key {
                name: s("a/b"),
                key: s("metadata")
            })
        );
    }

    #[test]
    fn urls_that_name_nothing_are_errors() {
        assert_eq!(parse(Read, ""), Err(PathError::Missing));
        assert_eq!(parse(Read, "-"), Err(PathError::Missing));
        assert_eq!(parse(Delete, "db/"), Err(PathError::MissingKey));
        assert_eq!(parse(Delete, "db/-/keys/"), Err(PathError::MissingKey));
        assert_eq!(
            parse(Delete, "db/-/metadata"),
            Err(PathError::WrongMethod { part: "metadata" })
        );
        assert_eq!(
            parse(Read, "db/-/keys/x"),
            Err(PathError::WrongMethod { part: "keys" })
        );
        assert_eq!(
            parse(Read, "db/-/nope"),
            Err(PathError::UnknownPart(s("nope")))
        );
        assert!(matches!(
            parse(Read, "bad%ff"),
            Err(PathError::Encoding { .. })
        ));
    }

    #[test]
    fn write_names_follow_the_agents_rule() {
        for ok in ["db", "db.example.com", "team/db", "a-1/b.2/c"] {
            writable_name(ok).unwrap();
        }
        for bad in [
            "",
            "DB",
            "db_x",
            "-db",
            "db-",
            "a//b",
            "/a",
            "a/",
            ".a",
            "a/_metadata",
        ] {
            assert!(writable_name(bad).is_err(), "{bad}");
        }
        readable_name("Legacy_Name").unwrap();
        assert!(readable_name("a//b").is_err());
    }
}
