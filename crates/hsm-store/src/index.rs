//! The in-memory index of a token: every secret's keys, object handles, value digests,
//! checksum and metadata, and a change version per secret. Listing, checksums, metadata and
//! "what changed since V" are answered from it without touching the token.

use crate::metadata::SecretMetadata;
use crate::token::Handle;
use std::collections::{BTreeMap, VecDeque};

/// How many removals the index remembers for [`Index::changes_since`].
const REMOVED_HISTORY: usize = 10_000;

/// One object of a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ObjRef {
    pub handle: Handle,
    pub digest: [u8; 32],
    /// The value's length: a read knows its buffer size and needs no call to ask for it.
    pub len: usize,
}

/// One secret.
#[derive(Debug, Clone, Default)]
pub(crate) struct Entry {
    pub keys: BTreeMap<String, ObjRef>,
    pub metadata_obj: Option<ObjRef>,
    pub metadata: Option<SecretMetadata>,
    pub checksum: String,
    pub version: u64,
    /// Extra objects under a label already taken (left by foreign tools); the next write of
    /// the secret removes them.
    pub duplicates: Vec<Handle>,
}

impl Entry {
    /// Same objects with the same contents (versions aside).
    pub fn same_contents(&self, other: &Entry) -> bool {
        self.keys == other.keys
            && self.metadata_obj.map(|m| m.digest) == other.metadata_obj.map(|m| m.digest)
    }

    pub fn summary(&self, name: &str) -> SecretSummary {
        let metadata = self.metadata.clone().unwrap_or_default();
        SecretSummary {
            name: name.to_owned(),
            keys: self.keys.keys().cloned().collect(),
            checksum: self.checksum.clone(),
            version: self.version,
            has_data: !self.keys.is_empty(),
            tombstone: metadata.is_tombstone(),
            sync_version: metadata.sync_version(),
            sync_timestamp: metadata.sync_timestamp().to_owned(),
        }
    }
}

/// What the index knows of one secret, without its values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSummary {
    /// The secret's name.
    pub name: String,
    /// Its keys, sorted.
    pub keys: Vec<String>,
    /// `sha256:<hex>` over its keys and values (Go formula).
    pub checksum: String,
    /// The store version at which it last changed.
    pub version: u64,
    /// False for a tombstone or a metadata-only secret, which reads as not found.
    pub has_data: bool,
    /// Metadata says `sync.deleted=true`.
    pub tombstone: bool,
    /// Metadata `sync.version` (0 if absent).
    pub sync_version: i64,
    /// Metadata `sync.timestamp` ("" if absent).
    pub sync_timestamp: String,
}

/// Changes since a version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    /// The store's version now; pass it next time.
    pub version: u64,
    /// False when the asked version is older than the history the index keeps: the caller
    /// must take a full snapshot instead.
    pub complete: bool,
    /// Secrets created or changed since, as they are now.
    pub changed: Vec<SecretSummary>,
    /// Names removed since.
    pub removed: Vec<String>,
}

/// What a re-scan found different from the index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RescanReport {
    /// Secrets that appeared.
    pub added: Vec<String>,
    /// Secrets whose objects changed.
    pub changed: Vec<String>,
    /// Secrets that disappeared.
    pub removed: Vec<String>,
}

impl RescanReport {
    /// Nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    pub entries: BTreeMap<String, Entry>,
    pub version: u64,
    /// Versions below this have no removal history.
    floor: u64,
    removed: VecDeque<(u64, String)>,
}

impl Index {
    /// An empty index whose versions continue after `previous`, the last version of an
    /// earlier store on the same token: asking for changes since any earlier version gets
    /// `complete: false` (the caller must take a snapshot), never a wrong delta.
    pub fn continuing_after(previous: u64) -> Index {
        Index {
            version: previous,
            floor: if previous == 0 { 0 } else { previous + 1 },
            ..Default::default()
        }
    }

    /// Stores `entry` for `name` at a new version.
    pub fn put(&mut self, name: &str, mut entry: Entry) -> u64 {
        self.version += 1;
        entry.version = self.version;
        self.entries.insert(name.to_owned(), entry);
        self.version
    }

    /// Removes `name`, remembering the removal.
    pub fn remove(&mut self, name: &str) -> u64 {
        self.version += 1;
        self.entries.remove(name);
        self.removed.push_back((self.version, name.to_owned()));
        if self.removed.len() > REMOVED_HISTORY
            && let Some((v, _)) = self.removed.pop_front()
        {
            self.floor = v;
        }
        self.version
    }

    /// Replaces the contents with a fresh scan, bumping versions only where something changed.
    pub fn install(&mut self, scanned: BTreeMap<String, Entry>) -> RescanReport {
        let mut report = RescanReport::default();
        let gone: Vec<String> = self
            .entries
            .keys()
            .filter(|n| !scanned.contains_key(*n))
            .cloned()
            .collect();
        for name in gone {
            self.remove(&name);
            report.removed.push(name);
        }
        for (name, entry) in scanned {
            match self.entries.get(&name) {
                Some(old) if old.same_contents(&entry) => {
                    // Handles may differ after a re-open; keep the fresh ones.
                    let version = old.version;
                    self.entries.insert(name, Entry { version, ..entry });
                }
                Some(_) => {
                    self.put(&name, entry);
                    report.changed.push(name);
                }
                None => {
                    self.put(&name, entry);
                    report.added.push(name);
                }
            }
        }
        report
    }

    pub fn changes_since(&self, since: u64) -> Changes {
        Changes {
            version: self.version,
            complete: since >= self.floor,
            changed: self
                .entries
                .iter()
                .filter(|(_, e)| e.version > since)
                .map(|(n, e)| e.summary(n))
                .collect(),
            removed: self
                .removed
                .iter()
                .filter(|(v, n)| *v > since && !self.entries.contains_key(n))
                .map(|(_, n)| n.clone())
                .collect(),
        }
    }
}
