//! Write journals: what makes a write atomic on a token that has no transactions.
//!
//! A write that touches more than one object first creates a journal object naming every
//! label of the secret before and after, each with the SHA-256 of its value. It then creates
//! the new objects (under their final labels: a label may briefly exist twice), destroys the
//! replaced ones, and destroys the journal. A cut anywhere leaves the journal behind, and
//! opening the store resolves it from what is on the token:
//!
//! * **forward** when every object of the new state is present (the creates all happened):
//!   destroy what the write meant to replace;
//! * **back** otherwise: destroy what the write created.
//!
//! Only objects whose digest the journal names are touched, so an object another writer put
//! there meanwhile survives. Cost: one create and one destroy per write, and none at all when
//! a write changes a single object.

use crate::token::Handle;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The journal's JSON. Digests are hex SHA-256 of object values.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Journal {
    /// Format version, 1.
    pub v: u32,
    /// The secret being written.
    pub name: String,
    /// Label → digest of every object of the secret before the write.
    pub old: BTreeMap<String, String>,
    /// Label → digest of every object of the secret after the write.
    pub new: BTreeMap<String, String>,
}

impl Journal {
    /// A journal for a write of `name` from `old` to `new` (label → digest).
    pub fn new(
        name: &str,
        old: impl IntoIterator<Item = (String, [u8; 32])>,
        new: impl IntoIterator<Item = (String, [u8; 32])>,
    ) -> Journal {
        let hex = |it: &mut dyn Iterator<Item = (String, [u8; 32])>| {
            it.map(|(l, d)| (l, hex::encode(d))).collect()
        };
        Journal {
            v: 1,
            name: name.to_owned(),
            old: hex(&mut old.into_iter()),
            new: hex(&mut new.into_iter()),
        }
    }

    /// The JSON stored on the token.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("journal always serialises")
    }

    /// Every label the journal speaks of.
    pub fn labels(&self) -> BTreeSet<&str> {
        self.old
            .keys()
            .chain(self.new.keys())
            .map(String::as_str)
            .collect()
    }
}

/// An object on the token, as recovery sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen<'a> {
    /// Its handle.
    pub handle: Handle,
    /// Its label.
    pub label: &'a str,
    /// Hex SHA-256 of its value.
    pub digest: String,
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
/// token under the labels it names. Pure: the store carries out the result.
pub fn resolve(journal: &Journal, objects: &[Seen<'_>]) -> Resolution {
    let present = |label: &str, digest: &str| {
        objects
            .iter()
            .any(|o| o.label == label && o.digest == digest)
    };
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
        for object in objects.iter().filter(|o| o.label == label) {
            if !ours.contains(&object.digest.as_str()) {
                continue; // another writer's object: not ours to touch
            }
            if !kept && target.get(label) == Some(&object.digest) {
                kept = true;
            } else {
                destroy.push(object.handle);
            }
        }
    }
    Resolution { forward, destroy }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> [u8; 32] {
        crate::checksum::value_digest(s.as_bytes())
    }
    fn seen<'a>(handle: Handle, label: &'a str, value: &str) -> Seen<'a> {
        Seen {
            handle,
            label,
            digest: hex::encode(d(value)),
        }
    }
    fn journal() -> Journal {
        // Overwrite: a changes, b is removed, c is added, meta changes.
        Journal::new(
            "s",
            [
                ("s/a".into(), d("a1")),
                ("s/b".into(), d("b1")),
                ("s/_metadata".into(), d("m1")),
            ],
            [
                ("s/a".into(), d("a2")),
                ("s/c".into(), d("c2")),
                ("s/_metadata".into(), d("m2")),
            ],
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
            seen(6, "s/_metadata", "m2"),
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
        let j = Journal::new("s", [("s".into(), d("x"))], [("s".into(), d("x"))]);
        let r = resolve(&j, &[seen(1, "s", "x"), seen(2, "s", "x")]);
        assert!(r.forward);
        assert_eq!(r.destroy, vec![2]);
    }
}
