//! The on-token layout shared with the Go operator, so that tokens written by either stay
//! readable by the other.
//!
//! One `CKO_DATA` object per key, labelled `<name>/<key>`, except the key `data`, whose label
//! is `<name>`; the metadata JSON in `<name>/_metadata`; every object private, on the token,
//! modifiable, with `CKA_APPLICATION = "hsm-secrets-operator"` and a `CKA_OBJECT_ID` naming
//! the inferred data type. The store adds one thing the Go operator never writes: a short-lived
//! journal object per write (label under [`JOURNAL_PREFIX`]), which makes writes atomic.

use std::collections::HashSet;

/// `CKA_APPLICATION` of every object the operator owns. Objects without it are foreign and
/// never listed, read, changed or deleted.
pub const APPLICATION: &str = "hsm-secrets-operator";
/// The key whose label is the bare secret name.
pub const DATA_KEY: &str = "data";
/// The pseudo-key of the metadata object.
pub const METADATA_KEY: &str = "_metadata";
/// Label prefix of write journals. A secret name cannot start with `.`, so no secret label
/// collides with it.
pub const JOURNAL_PREFIX: &str = ".hsm-txn/";

/// The label of one key of a secret.
pub fn value_label(name: &str, key: &str) -> String {
    if key == DATA_KEY {
        name.to_owned()
    } else {
        format!("{name}/{key}")
    }
}

/// The label of a secret's metadata object.
pub fn metadata_label(name: &str) -> String {
    format!("{name}/{METADATA_KEY}")
}

/// The label of the journal of a write to `name`.
pub fn journal_label(name: &str) -> String {
    format!("{JOURNAL_PREFIX}{name}")
}

/// What the Go operator infers a value to be; recorded as `CKA_OBJECT_ID`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// Printable text.
    Plaintext,
    /// Starts with `{` or `[`.
    Json,
    /// Starts with `-----` and is longer than 20 bytes.
    Pem,
    /// Contains control bytes other than tab, LF, CR.
    Binary,
    /// Only base64 characters, length a multiple of 4.
    Base64,
    /// Declared X.509 certificate (never inferred).
    X509Cert,
    /// Declared private key (never inferred).
    PrivateKey,
    /// Declared Docker config (never inferred).
    DockerConfig,
}

impl DataType {
    /// Infers the type of a value exactly as the Go operator does, in its order: PEM, JSON,
    /// base64, binary, plaintext. (So `"test"` is base64, as there.)
    pub fn infer(value: &[u8]) -> DataType {
        if value.len() > 20 && value.starts_with(b"-----") {
            return DataType::Pem;
        }
        if matches!(value.first(), Some(b'{' | b'[')) {
            return DataType::Json;
        }
        if !value.is_empty()
            && value.len().is_multiple_of(4)
            && value
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        {
            return DataType::Base64;
        }
        if value.iter().any(|&b| b < 32 && !matches!(b, 9 | 10 | 13)) {
            return DataType::Binary;
        }
        DataType::Plaintext
    }

    /// The last arc of the type's OID, `1.3.6.1.4.1.99999.1.<arc>`.
    pub fn arc(self) -> u8 {
        match self {
            DataType::Plaintext => 1,
            DataType::Json => 2,
            DataType::Pem => 3,
            DataType::Binary => 4,
            DataType::Base64 => 5,
            DataType::X509Cert => 6,
            DataType::PrivateKey => 7,
            DataType::DockerConfig => 8,
        }
    }

    /// The name the Go operator uses in metadata (`dataType`).
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Plaintext => "plaintext",
            DataType::Json => "json",
            DataType::Pem => "pem",
            DataType::Binary => "binary",
            DataType::Base64 => "base64",
            DataType::X509Cert => "x509-cert",
            DataType::PrivateKey => "private-key",
            DataType::DockerConfig => "docker-config",
        }
    }

    /// DER of the type's OID (tag, length, contents), as Go's `asn1.Marshal` writes it.
    pub fn oid_der(self) -> Vec<u8> {
        // 1.3 -> 0x2b; 6, 1, 4, 1; 99999 = 6·128² + 13·128 + 31 -> 0x86 0x8d 0x1f; 1; arc.
        vec![
            0x06,
            0x0a,
            0x2b,
            0x06,
            0x01,
            0x04,
            0x01,
            0x86,
            0x8d,
            0x1f,
            0x01,
            self.arc(),
        ]
    }
}

/// What one object's label means, once every metadata label on the token is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// A key of a secret.
    Value {
        /// The secret's name.
        name: String,
        /// The key.
        key: String,
    },
    /// A secret's metadata object.
    Metadata {
        /// The secret's name.
        name: String,
    },
    /// The journal of an interrupted write.
    Journal {
        /// The secret being written.
        name: String,
    },
}

/// Resolves labels to secrets.
///
/// A label `a/b/c` could be key `c` of secret `a/b` or key `data` of secret `a/b/c`; the Go
/// operator guessed "before the last `/`". Here a metadata object anchors a name: if
/// `a/b/c/_metadata` exists, `a/b/c` is a secret. The store always writes metadata, so every
/// secret it writes is unambiguous; unanchored labels fall back to the Go rule.
#[derive(Debug, Default)]
pub struct LabelResolver {
    anchors: HashSet<String>,
}

impl LabelResolver {
    /// Builds the resolver from every label on the token.
    pub fn new<'a>(labels: impl IntoIterator<Item = &'a str>) -> Self {
        let anchors = labels
            .into_iter()
            .filter(|l| !l.starts_with(JOURNAL_PREFIX))
            .filter_map(|l| l.strip_suffix(METADATA_KEY)?.strip_suffix('/'))
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect();
        LabelResolver { anchors }
    }

    /// Where `label` belongs; `None` for a label that cannot be part of a secret.
    pub fn place(&self, label: &str) -> Option<Placement> {
        if let Some(name) = label.strip_prefix(JOURNAL_PREFIX) {
            return Some(Placement::Journal {
                name: name.to_owned(),
            });
        }
        if label.is_empty() {
            return None;
        }
        if let Some(name) = label
            .strip_suffix(METADATA_KEY)
            .and_then(|l| l.strip_suffix('/'))
            .filter(|n| !n.is_empty())
        {
            return Some(Placement::Metadata {
                name: name.to_owned(),
            });
        }
        let value = |name: &str, key: &str| Placement::Value {
            name: name.to_owned(),
            key: key.to_owned(),
        };
        if self.anchors.contains(label) {
            return Some(value(label, DATA_KEY));
        }
        match label.rsplit_once('/') {
            Some((parent, key)) if !parent.is_empty() && !key.is_empty() => {
                Some(value(parent, key))
            }
            Some(_) => None,
            None => Some(value(label, DATA_KEY)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[test]
    fn labels_follow_the_go_layout() {
        assert_eq!(value_label("db", "data"), "db");
        assert_eq!(value_label("db", "password"), "db/password");
        assert_eq!(metadata_label("team/db"), "team/db/_metadata");
    }

    #[rstest]
    #[case(b"-----BEGIN CERTIFICATE-----\nMIIB".as_slice(), DataType::Pem)]
    #[case(b"-----short".as_slice(), DataType::Plaintext)]
    #[case(b"{\"a\":1}".as_slice(), DataType::Json)]
    #[case(b"[1]".as_slice(), DataType::Json)]
    #[case(b"test".as_slice(), DataType::Base64)]
    #[case(b"dGVzdA==".as_slice(), DataType::Base64)]
    #[case(b"hello world".as_slice(), DataType::Plaintext)]
    #[case(b"tab\tand\nnewline".as_slice(), DataType::Plaintext)]
    #[case(b"bin\x00ary".as_slice(), DataType::Binary)]
    #[case(b"".as_slice(), DataType::Plaintext)]
    fn infers_like_the_go_operator(#[case] value: &[u8], #[case] expected: DataType) {
        assert_eq!(DataType::infer(value), expected);
    }

    #[test]
    fn oid_der_matches_go_asn1_marshal() {
        // asn1.Marshal(asn1.ObjectIdentifier{1,3,6,1,4,1,99999,1,2}) in Go.
        assert_eq!(
            hex::encode(DataType::Json.oid_der()),
            "060a2b0601040186 8d1f0102".replace(' ', "")
        );
    }

    #[test]
    fn metadata_anchors_resolve_nested_names() {
        let labels = [
            "team/db/_metadata",
            "team/db",
            "team/db/password",
            "team/_metadata",
            "team/db2",
            "legacy/user",
            "plain",
            ".hsm-txn/team/db",
        ];
        let r = LabelResolver::new(labels);
        let v = |n: &str, k: &str| {
            Some(Placement::Value {
                name: n.into(),
                key: k.into(),
            })
        };
        assert_eq!(r.place("team/db"), v("team/db", "data"));
        assert_eq!(r.place("team/db/password"), v("team/db", "password"));
        assert_eq!(r.place("team/db2"), v("team", "db2"));
        assert_eq!(r.place("legacy/user"), v("legacy", "user"));
        assert_eq!(r.place("plain"), v("plain", "data"));
        assert_eq!(
            r.place("team/_metadata"),
            Some(Placement::Metadata {
                name: "team".into()
            })
        );
        assert_eq!(
            r.place(".hsm-txn/team/db"),
            Some(Placement::Journal {
                name: "team/db".into()
            })
        );
        assert_eq!(r.place("/x"), None);
        assert_eq!(r.place("x/"), None);
    }
}
