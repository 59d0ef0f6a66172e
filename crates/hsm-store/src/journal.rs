//! Write journals: what makes a write atomic on a token that has no transactions.
//!
//! A write that changes more than one object first creates its journal: an object labelled
//! `.hsm-txn/<name>` whose value is the secret's *new metadata JSON* with one extra member,
//! `hsmTxn`, listing every object of the secret before and after the write (label and a salted
//! digest of the value). The write then creates the new value objects under their final labels
//! (a label may briefly exist twice), destroys the replaced ones and the old metadata, and
//! commits by relabelling the journal to `<name>/_metadata`: one atomic `C_SetAttributeValue`.
//! The journal *is* the new metadata object, so atomicity costs one relabel per write rather
//! than an extra create and destroy. The `hsmTxn` member stays in the metadata JSON, inert:
//! only an object under the journal label is ever read as a journal, and JSON readers (the Go
//! operator's included) ignore members they do not know.
//!
//! A cut anywhere leaves the journal under its journal label, and opening the store resolves
//! it from what is on the token:
//!
//! * **forward** when every value object of the new state is present (the creates all
//!   happened): destroy what the write replaced, then relabel the journal into place;
//! * **back** otherwise: destroy what the write created, and the journal.
//!
//! Only objects whose digest the journal names are touched, so an object another writer put
//! there meanwhile survives. A delete works the same way with a journal that never becomes
//! metadata: it is destroyed once everything else is. Modules that cannot relabel get the
//! journal's bytes copied into a new metadata object instead.

use crate::metadata::SecretMetadata;
use crate::token::Handle;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};

/// The member of the journal's JSON that holds the transaction.
pub const TXN_FIELD: &str = "hsmTxn";

/// The transaction record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Journal {
    /// Format version, 2.
    pub v: u32,
    /// The secret being written.
    pub name: String,
    /// Hex salt of the digests, fresh per write: the record names no bare hash of a value.
    pub salt: String,
    /// Label → salted digest of every object of the secret before the write (values and the
    /// old metadata).
    pub old: BTreeMap<String, String>,
    /// Label → salted digest of every value object after the write.
    pub new: BTreeMap<String, String>,
    /// True when the journal becomes the secret's metadata object at commit (a write);
    /// false when it is destroyed instead (a delete).
    pub becomes_metadata: bool,
}

/// Salted digest of an object whose plain SHA-256 is `digest`.
pub fn salted(salt: &[u8], digest: &[u8; 32]) -> String {
    let mut hasher = Sha256::new();
    hasher.update(salt);
    hasher.update(digest);
    hex::encode(&hasher.finalize()[..16])
}

impl Journal {
    /// A journal for a write of `name` from `old` to `new` (label → plain SHA-256 of value).
    pub fn new<'a>(
        name: &str,
        salt: [u8; 16],
        old: impl IntoIterator<Item = (String, &'a [u8; 32])>,
        new: impl IntoIterator<Item = (String, &'a [u8; 32])>,
        becomes_metadata: bool,
    ) -> Journal {
        Journal {
            v: 2,
            name: name.to_owned(),
            salt: hex::encode(salt),
            old: old
                .into_iter()
                .map(|(l, d)| (l, salted(&salt, d)))
                .collect(),
            new: new
                .into_iter()
                .map(|(l, d)| (l, salted(&salt, d)))
                .collect(),
            becomes_metadata,
        }
    }

    /// The journal object's value: `metadata` (if any) with the record added.
    pub fn encode(&self, metadata: Option<&SecretMetadata>) -> Vec<u8> {
        let mut json = match metadata {
            Some(m) => serde_json::to_value(m).expect("metadata serialises"),
            None => serde_json::Value::Object(Default::default()),
        };
        json.as_object_mut()
            .expect("metadata is a JSON object")
            .insert(
                TXN_FIELD.into(),
                serde_json::to_value(self).expect("journal serialises"),
            );
        serde_json::to_vec(&json).expect("journal serialises")
    }

    /// Reads the record back from a journal object's value.
    pub fn decode(bytes: &[u8]) -> Result<Journal, String> {
        let mut json: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let record = json
            .as_object_mut()
            .and_then(|o| o.remove(TXN_FIELD))
            .ok_or("no transaction record")?;
        serde_json::from_value(record).map_err(|e| e.to_string())
    }

    /// Every label the journal speaks of.
    pub fn labels(&self) -> BTreeSet<&str> {
        self.old
            .keys()
            .chain(self.new.keys())
            .map(String::as_str)
            .collect()
    }

    fn salt_bytes(&self) -> Vec<u8> {
        hex::decode(&self.salt).unwrap_or_default()
    }
}

/// An object on the token, as recovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen<'a> {
    /// Its handle.
    pub handle: Handle,
    /// Its label.
    pub label: &'a str,
    /// Plain SHA-256 of its value.
    pub digest: [u8; 32],
}

/// What recovery decided for one journal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolution {
    /// True when the write is completed, false when it is undone.
    pub forward: bool,
    /// The objects to destroy (the journal object itself not included).
    pub destroy: Vec<Handle>,
}

/// Decides how to finish or undo the write `journal` describes, given the objects now on the
/// token under the labels it names. Pure: the store carries out the result (and then
/// relabels or destroys the journal).
pub fn resolve(journal: &Journal, objects: &[Seen<'_>]) -> Resolution {
    let salt = journal.salt_bytes();
    let seen: Vec<(Handle, &str, String)> = objects
        .iter()
        .map(|o| (o.handle, o.label, salted(&salt, &o.digest)))
        .collect();
    let present =
        |label: &str, digest: &str| seen.iter().any(|(_, l, d)| *l == label && d == digest);
    let forward = journal.new.iter().all(|(l, d)| present(l, d));
    let target = if forward { &journal.new } else { &journal.old };
    let mut destroy = Vec::new();
    for label in journal.labels() {
        let ours: Vec<&str> = [journal.old.get(label), journal.new.get(label)]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        let mut kept = false;
        for (handle, _, digest) in seen.iter().filter(|(_, l, _)| *l == label) {
            if !ours.contains(&digest.as_str()) {
                continue; // another writer's object: not ours to touch
            }
            if !kept && target.get(label) == Some(digest) {
                kept = true;
            } else {
                destroy.push(*handle);
            }
        }
    }
    Resolution { forward, destroy }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::value_digest;

    const SALT: [u8; 16] = [7; 16];

    fn d(s: &str) -> [u8; 32] {
        value_digest(s.as_bytes())
    }
    fn seen<'a>(handle: Handle, label: &'a str, value: &str) -> Seen<'a> {
        Seen {
            handle,
            label,
            digest: d(value),
        }
    }
    fn journal() -> Journal {
        // Overwrite: a changes, b is removed, c is added; the old metadata goes.
        let (a1, b1, m1, a2, c2) = (d("a1"), d("b1"), d("m1"), d("a2"), d("c2"));
        Journal::new(
            "s",
            SALT,
            [
                ("s/a".into(), &a1),
                ("s/b".into(), &b1),
                ("s/_metadata".into(), &m1),
            ],
            [("s/a".into(), &a2), ("s/c".into(), &c2)],
            true,
        )
    }

    #[test]
    fn rolls_back_when_a_create_is_missing() {
        let objects = [
            seen(1, "s/a", "a1"),
            seen(2, "s/b", "b1"),
            seen(3, "s/_metadata", "m1"),
            seen(4, "s/a", "a2"),
        ];
        let r = resolve(&journal(), &objects);
        assert!(!r.forward);
        assert_eq!(r.destroy, vec![4]);
    }

    #[test]
    fn rolls_forward_once_all_creates_happened() {
        let objects = [
            seen(1, "s/a", "a1"),
            seen(3, "s/_metadata", "m1"),
            seen(4, "s/a", "a2"),
            seen(5, "s/c", "c2"),
        ];
        let r = resolve(&journal(), &objects);
        assert!(r.forward);
        let mut destroy = r.destroy;
        destroy.sort();
        assert_eq!(destroy, vec![1, 3]);
    }

    #[test]
    fn never_touches_objects_of_other_writers() {
        let objects = [seen(1, "s/a", "a1"), seen(9, "s/a", "someone else")];
        let r = resolve(&journal(), &objects);
        assert!(!r.destroy.contains(&9));
    }

    #[test]
    fn identical_old_and_new_values_keep_exactly_one_object() {
        let x = d("x");
        let j = Journal::new("s", SALT, [("s".into(), &x)], [("s".into(), &x)], true);
        let r = resolve(&j, &[seen(1, "s", "x"), seen(2, "s", "x")]);
        assert!(r.forward);
        assert_eq!(r.destroy, vec![2]);
    }

    #[test]
    fn the_record_rides_inside_metadata_json_and_names_no_bare_hash() {
        let meta = SecretMetadata {
            description: "d".into(),
            ..Default::default()
        };
        let j = journal();
        let bytes = j.encode(Some(&meta));
        assert_eq!(Journal::decode(&bytes).unwrap(), j);
        // The metadata reads back unchanged, the record ignored (as Go's decoder ignores it).
        let read: SecretMetadata = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(read, meta);
        let text = String::from_utf8(bytes).unwrap();
        assert!(!text.contains(&hex::encode(d("a2"))));
    }
}
