//! What changed between two index snapshots of one device: pure, so the follower's resync
//! logic is tested without agents.

use hsm_proto::v1::IndexEntry;
use std::collections::{BTreeMap, BTreeSet};

/// Whether two index entries describe the same content. The entries' store versions are
/// left out: an agent numbers them afresh after every re-scan.
pub fn same_content(a: &IndexEntry, b: &IndexEntry) -> bool {
    a.checksum == b.checksum
        && a.keys == b.keys
        && a.tombstone == b.tombstone
        && a.sync_version == b.sync_version
        && a.sync_timestamp == b.sync_timestamp
        && a.has_data == b.has_data
}

/// The names whose content differs between `old` and `new`: added, removed or changed.
pub fn changed_names(
    old: &BTreeMap<String, IndexEntry>,
    new: &BTreeMap<String, IndexEntry>,
) -> BTreeSet<String> {
    let removed = old.keys().filter(|name| !new.contains_key(*name));
    let added_or_changed = new.iter().filter_map(|(name, entry)| match old.get(name) {
        Some(before) if same_content(before, entry) => None,
        _ => Some(name),
    });
    removed.chain(added_or_changed).cloned().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, checksum: &str, version: u64) -> (String, IndexEntry) {
        (
            name.to_owned(),
            IndexEntry {
                name: name.into(),
                keys: vec!["data".into()],
                checksum: checksum.into(),
                version,
                has_data: true,
                ..Default::default()
            },
        )
    }

    #[test]
    fn a_renumbered_snapshot_with_the_same_content_changes_nothing() {
        let old = BTreeMap::from([entry("a", "sha256:1", 4), entry("b", "sha256:2", 7)]);
        let new = BTreeMap::from([entry("a", "sha256:1", 1), entry("b", "sha256:2", 2)]);
        assert!(changed_names(&old, &new).is_empty());
    }

    #[test]
    fn added_removed_and_changed_names_are_reported() {
        let old = BTreeMap::from([entry("a", "sha256:1", 1), entry("gone", "sha256:2", 2)]);
        let mut tomb = entry("t", "", 3);
        tomb.1.tombstone = true;
        let new = BTreeMap::from([entry("a", "sha256:9", 1), entry("new", "sha256:3", 2), tomb]);
        let names: Vec<_> = changed_names(&old, &new).into_iter().collect();
        assert_eq!(names, ["a", "gone", "new", "t"]);
    }

    #[test]
    fn a_metadata_only_change_is_a_change() {
        let old = BTreeMap::from([entry("a", "sha256:1", 1)]);
        let mut changed = entry("a", "sha256:1", 1);
        changed.1.sync_version = 2;
        assert_eq!(changed_names(&old, &BTreeMap::from([changed])).len(), 1);
    }
}
