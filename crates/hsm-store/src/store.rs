//! The secret store: the on-token layout, atomic writes through journals, and the index.
//!
//! Opening scans the token once (finishing or undoing any write a crash cut short), and from
//! then on listing, checksums, metadata and change detection come from the index; a read
//! costs one `C_GetAttributeValue` per key and no search (the index knows each value's
//! length, so no call is spent asking for it). Writes are serialised; reads run
//! concurrently. A write that fails part way marks the store for recovery, which runs before
//! the next operation, so the store heals in place once the token answers again.

use crate::checksum::{checksum, value_digest};
use crate::data::{SecretData, SecretValue};
use crate::error::{Result, StoreError};
use crate::index::{Changes, Entry, Index, ObjRef, RescanReport, SecretSummary};
use crate::journal::{self, Journal, Seen};
use crate::layout::{
    APPLICATION, DATA_KEY, DataType, JOURNAL_PREFIX, LabelResolver, Placement, journal_label,
    metadata_label, value_label,
};
use crate::metadata::{MetadataChange, SYNC_DELETED, SYNC_TIMESTAMP, SYNC_VERSION, SecretMetadata};
use crate::name::{validate_key, validate_name};
use crate::token::{Handle, NewObject, StoredObject, Token, TokenError, TokenErrorKind, TokenInfo};
use parking_lot::{RwLock, RwLockWriteGuard};
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};

/// What a write did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOutcome {
    /// False when the token already held exactly this (no PKCS#11 call was made).
    pub changed: bool,
    /// The secret's store version after the write.
    pub version: u64,
    /// The secret's checksum after the write.
    pub checksum: String,
}

/// The store's operations, for callers that hold it behind a trait object.
pub trait SecretStore: Send + Sync {
    /// Token facts (one `C_GetTokenInfo`).
    fn info(&self) -> Result<TokenInfo>;
    /// Names of live secrets starting with `prefix` (plain string prefix), sorted. No token call.
    fn list(&self, prefix: &str) -> Vec<String>;
    /// Every secret the index knows, tombstones included. No token call.
    fn entries(&self) -> Vec<SecretSummary>;
    /// One secret's summary. No token call.
    fn summary(&self, name: &str) -> Option<SecretSummary>;
    /// A live secret's keys and values.
    fn read(&self, name: &str) -> Result<SecretData>;
    /// A secret's metadata (tombstones included). No token call.
    fn metadata(&self, name: &str) -> Result<SecretMetadata>;
    /// A live secret's checksum. No token call.
    fn checksum(&self, name: &str) -> Result<String>;
    /// Replaces the secret's keys with `data`, atomically.
    fn write(
        &self,
        name: &str,
        data: &SecretData,
        metadata: MetadataChange,
    ) -> Result<WriteOutcome>;
    /// Removes every object of the secret, atomically.
    fn delete(&self, name: &str) -> Result<()>;
    /// Removes one key, atomically.
    fn delete_key(&self, name: &str, key: &str) -> Result<()>;
    /// Replaces the secret by a tombstone whose `sync.version` is one above the current one.
    fn tombstone(&self, name: &str, timestamp: &str) -> Result<WriteOutcome>;
    /// What changed since store version `since`. No token call.
    fn changes_since(&self, since: u64) -> Changes;
    /// The store's current version.
    fn version(&self) -> u64;
    /// Re-scans the token to pick up changes made by other writers.
    fn rescan(&self) -> Result<RescanReport>;
}

/// The store over a token `T` (a PKCS#11 token, a memory token, or a wrapper of either).
pub struct Store<T: Token> {
    token: T,
    index: RwLock<Index>,
    /// Set while a write is under way or after one failed: the token may not match the index.
    needs_recovery: AtomicBool,
    /// Cleared once the module refuses to relabel; journals are then copied into place.
    relabel_supported: AtomicBool,
}

impl<T: Token> std::fmt::Debug for Store<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let index = self.index.read();
        f.debug_struct("Store")
            .field("secrets", &index.entries.len())
            .field("version", &index.version)
            .finish()
    }
}

/// One value object a write wants on the token.
struct Planned<'a> {
    label: String,
    key: &'a str,
    value: &'a [u8],
    data_type: DataType,
    digest: [u8; 32],
}

impl<T: Token> Store<T> {
    /// Opens the store: scans the token once, resolving journals of interrupted writes.
    pub fn open(token: T) -> Result<Self> {
        Self::open_continuing(token, 0)
    }

    /// Opens the store again after a loss, numbering versions on from `previous_version`
    /// (the last version of the store it replaces), so that clients following changes from
    /// the old store are told to resynchronise instead of receiving a wrong delta.
    pub fn open_continuing(token: T, previous_version: u64) -> Result<Self> {
        let store = Store {
            token,
            index: RwLock::new(Index::continuing_after(previous_version)),
            needs_recovery: AtomicBool::new(false),
            relabel_supported: AtomicBool::new(true),
        };
        let scanned = store.scan()?;
        store.index.write().install(scanned);
        Ok(store)
    }

    /// The token underneath.
    pub fn token(&self) -> &T {
        &self.token
    }

    /// Reads every object of the application, resolves journals of interrupted writes (then
    /// reads again), and builds index entries.
    fn scan(&self) -> Result<BTreeMap<String, Entry>> {
        for _ in 0..3 {
            let objects = self.read_all()?;
            let resolver = LabelResolver::new(objects.iter().map(|(_, o)| o.label.as_str()));
            if !self.resolve_journals(&objects, &resolver)? {
                return Ok(Self::entries_from(&objects, &resolver));
            }
        }
        Err(StoreError::Malformed {
            label: JOURNAL_PREFIX.to_owned(),
            reason: "write journals remain after three recovery passes".into(),
        })
    }

    /// Every object of the application, with label and value.
    fn read_all(&self) -> Result<Vec<(Handle, StoredObject)>> {
        let mut handles = self.token.find(APPLICATION, None)?;
        handles.sort_unstable();
        let mut objects = Vec::with_capacity(handles.len());
        for handle in handles {
            match self.token.read(handle) {
                Ok(object) => objects.push((handle, object)),
                Err(e) if e.kind == TokenErrorKind::ObjectGone => {}
                // Only a destroy leaves a ghost, and every destroy the store makes finishes
                // a write: what the ghost held was on its way out. Counting it as destroyed
                // is what that write's recovery does with it.
                Err(TokenError {
                    kind: TokenErrorKind::ValueLost { label },
                    ..
                }) => tracing::warn!(
                    %label,
                    "ignoring an object whose value was destroyed by an interrupted delete; \
                     the module cannot remove it, re-initialising the token reclaims it"
                ),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(objects)
    }

    /// Groups objects into secrets. Duplicates of a label (left by foreign tools) are kept
    /// aside for the next write of the secret to remove.
    fn entries_from(
        objects: &[(Handle, StoredObject)],
        resolver: &LabelResolver,
    ) -> BTreeMap<String, Entry> {
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        let mut values: BTreeMap<String, Vec<(String, &[u8])>> = BTreeMap::new();
        for (handle, object) in objects {
            let obj = ObjRef {
                handle: *handle,
                digest: value_digest(&object.value),
                len: object.value.len(),
            };
            match resolver.place(&object.label) {
                Some(Placement::Value { name, key }) => {
                    let entry = entries.entry(name.clone()).or_default();
                    if entry.keys.contains_key(&key) {
                        entry.duplicates.push(*handle);
                    } else {
                        entry.keys.insert(key.clone(), obj);
                        values.entry(name).or_default().push((key, &object.value));
                    }
                }
                Some(Placement::Metadata { name }) => {
                    let entry = entries.entry(name.clone()).or_default();
                    if entry.metadata_obj.is_some() {
                        entry.duplicates.push(*handle);
                        continue;
                    }
                    entry.metadata_obj = Some(obj);
                    match serde_json::from_slice::<SecretMetadata>(&object.value) {
                        Ok(m) => entry.metadata = Some(m),
                        Err(e) => tracing::warn!(
                            secret = %name, error = %e,
                            "metadata object is not valid JSON; treating it as empty"
                        ),
                    }
                }
                Some(Placement::Journal { .. }) => {}
                None => tracing::warn!(
                    label = %object.label,
                    "ignoring an object whose label names no secret"
                ),
            }
        }
        for (name, entry) in entries.iter_mut() {
            let pairs = values.remove(name).unwrap_or_default();
            entry.checksum = checksum(pairs.iter().map(|(k, v)| (k.as_str(), *v)));
        }
        entries
    }

    /// Finishes or undoes every interrupted write. Returns whether there was any (the caller
    /// then reads the token again).
    fn resolve_journals(
        &self,
        objects: &[(Handle, StoredObject)],
        resolver: &LabelResolver,
    ) -> Result<bool> {
        let mut found = false;
        let mut destroyed: HashSet<Handle> = HashSet::new();
        for (handle, object) in objects {
            let Some(Placement::Journal { name }) = resolver.place(&object.label) else {
                continue;
            };
            found = true;
            let journal = match Journal::decode(&object.value) {
                Ok(journal) if journal.name == name => journal,
                Ok(_) | Err(_) => {
                    tracing::warn!(secret = %name, "removing an unreadable write journal");
                    self.destroy_tolerant(*handle)?;
                    continue;
                }
            };
            let labels = journal.labels();
            let seen: Vec<Seen<'_>> = objects
                .iter()
                .filter(|(h, o)| !destroyed.contains(h) && labels.contains(o.label.as_str()))
                .map(|(h, o)| Seen {
                    handle: *h,
                    label: &o.label,
                    digest: value_digest(&o.value),
                })
                .collect();
            let resolution = journal::resolve(&journal, &seen);
            for h in &resolution.destroy {
                self.destroy_tolerant(*h)?;
                destroyed.insert(*h);
            }
            if resolution.forward && journal.becomes_metadata {
                // A module without relabelling may have copied the journal into place already.
                let meta_label = metadata_label(&name);
                let own_digest = value_digest(&object.value);
                let copied = objects.iter().any(|(h, o)| {
                    !destroyed.contains(h)
                        && o.label == meta_label
                        && value_digest(&o.value) == own_digest
                });
                if copied {
                    self.destroy_tolerant(*handle)?;
                } else {
                    self.install_journal(&name, *handle, &object.value)?;
                }
            } else {
                self.destroy_tolerant(*handle)?;
            }
            tracing::info!(
                secret = %name,
                outcome = if resolution.forward { "completed" } else { "undone" },
                "resolved an interrupted write"
            );
        }
        Ok(found)
    }

    /// Commits a write: the journal becomes the secret's metadata object, by relabelling it
    /// (one atomic call) or, where the module cannot relabel, by copying it and destroying it.
    fn install_journal(&self, name: &str, journal: Handle, bytes: &[u8]) -> Result<ObjRef> {
        let label = metadata_label(name);
        let digest = value_digest(bytes);
        if self.relabel_supported.load(Ordering::SeqCst) {
            match self.token.relabel(journal, &label) {
                Ok(()) => {
                    return Ok(ObjRef {
                        handle: journal,
                        digest,
                        len: bytes.len(),
                    });
                }
                Err(e) if e.kind == TokenErrorKind::Unsupported => {
                    tracing::info!("the module cannot relabel objects; copying journals instead");
                    self.relabel_supported.store(false, Ordering::SeqCst);
                }
                Err(e) => return Err(e.into()),
            }
        }
        let handle = self.create_json(&label, bytes)?;
        self.token.destroy(journal)?;
        Ok(ObjRef {
            handle,
            digest,
            len: bytes.len(),
        })
    }

    fn destroy_tolerant(&self, handle: Handle) -> Result<(), TokenError> {
        match self.token.destroy(handle) {
            Err(e) if e.kind == TokenErrorKind::ObjectGone => Ok(()),
            other => other,
        }
    }

    /// Takes the index for writing, first re-scanning if an earlier write was cut short.
    fn write_index(&self) -> Result<RwLockWriteGuard<'_, Index>> {
        let mut index = self.index.write();
        if self.needs_recovery.load(Ordering::SeqCst) {
            let scanned = self.scan()?;
            index.install(scanned);
            self.needs_recovery.store(false, Ordering::SeqCst);
        }
        Ok(index)
    }

    /// Makes the token hold exactly `values` and `metadata` for `name` (`None` metadata: the
    /// secret goes), through a journal when more than one call is needed. Returns the new
    /// entry, or `None` when the token already held exactly that (then no call was made).
    fn apply(
        &self,
        index: &Index,
        name: &str,
        values: &[Planned<'_>],
        metadata: Option<&SecretMetadata>,
        new_checksum: String,
    ) -> Result<Option<Entry>> {
        let old = index.entries.get(name);
        let old_values: Vec<(&String, &ObjRef)> =
            old.map(|o| o.keys.iter().collect()).unwrap_or_default();
        let old_metadata_obj = old.and_then(|o| o.metadata_obj);
        let old_digest = |key: &str| {
            old_values
                .iter()
                .find(|(k, _)| k.as_str() == key)
                .map(|(_, o)| o.digest)
        };
        let creates: Vec<&Planned<'_>> = values
            .iter()
            .filter(|p| old_digest(p.key) != Some(p.digest))
            .collect();
        let mut destroys: Vec<Handle> = old_values
            .iter()
            .filter(|(k, o)| {
                !values
                    .iter()
                    .any(|p| p.key == k.as_str() && p.digest == o.digest)
            })
            .map(|(_, o)| o.handle)
            .collect();
        destroys.extend(old.map(|o| o.duplicates.clone()).unwrap_or_default());
        let metadata_changed = match metadata {
            Some(m) => {
                old_metadata_obj.is_none() || old.and_then(|o| o.metadata.as_ref()) != Some(m)
            }
            None => old_metadata_obj.is_some(),
        };
        if creates.is_empty() && destroys.is_empty() && !metadata_changed {
            return Ok(None);
        }
        let metadata_calls = match (metadata_changed, metadata, old_metadata_obj) {
            (false, _, _) => 0,
            (true, Some(_), Some(_)) => 2,
            (true, _, _) => 1,
        };

        self.needs_recovery.store(true, Ordering::SeqCst);
        let mut created: BTreeMap<&str, Handle> = BTreeMap::new();
        let mut metadata_obj = if metadata_changed {
            None
        } else {
            old_metadata_obj
        };
        if creates.len() + destroys.len() + metadata_calls == 1 {
            // A single call is atomic by itself.
            if let Some(p) = creates.first() {
                created.insert(p.key, self.create_value(p)?);
            } else if let Some(handle) = destroys.first() {
                self.destroy_tolerant(*handle)?;
            } else if let Some(m) = metadata {
                let bytes = m.to_json();
                let handle = self.create_json(&metadata_label(name), &bytes)?;
                metadata_obj = Some(ObjRef {
                    handle,
                    digest: value_digest(&bytes),
                    len: bytes.len(),
                });
            } else if let Some(o) = old_metadata_obj {
                self.destroy_tolerant(o.handle)?;
            }
        } else {
            let meta_label = metadata_label(name);
            let old_objects = old_values
                .iter()
                .map(|(k, o)| (value_label(name, k), &o.digest))
                .chain(
                    old_metadata_obj
                        .as_ref()
                        .map(|o| (meta_label.clone(), &o.digest)),
                );
            let journal = Journal::new(
                name,
                rand::random(),
                old_objects,
                values.iter().map(|p| (p.label.clone(), &p.digest)),
                metadata.is_some(),
            );
            let bytes = journal.encode(metadata);
            let journal_handle = self.create_json(&journal_label(name), &bytes)?;
            for p in &creates {
                created.insert(p.key, self.create_value(p)?);
            }
            for handle in destroys
                .iter()
                .chain(old_metadata_obj.as_ref().map(|o| &o.handle))
            {
                self.destroy_tolerant(*handle)?;
            }
            if metadata.is_some() {
                metadata_obj = Some(self.install_journal(name, journal_handle, &bytes)?);
            } else {
                self.token.destroy(journal_handle)?;
            }
        }
        self.needs_recovery.store(false, Ordering::SeqCst);

        let mut entry = Entry {
            checksum: new_checksum,
            metadata: metadata.cloned(),
            metadata_obj,
            ..Default::default()
        };
        for p in values {
            let handle = match created.get(p.key) {
                Some(h) => *h,
                None => old
                    .and_then(|o| o.keys.get(p.key))
                    .map(|o| o.handle)
                    .expect("a value not created was kept from the old state"),
            };
            entry.keys.insert(
                p.key.to_owned(),
                ObjRef {
                    handle,
                    digest: p.digest,
                    len: p.value.len(),
                },
            );
        }
        Ok(Some(entry))
    }

    /// Creates an object holding JSON (metadata or a journal).
    fn create_json(&self, label: &str, bytes: &[u8]) -> Result<Handle> {
        Ok(self.token.create(&NewObject {
            label,
            application: APPLICATION,
            object_id: DataType::Json.oid_der(),
            value: bytes,
        })?)
    }

    fn create_value(&self, p: &Planned<'_>) -> Result<Handle> {
        Ok(self.token.create(&NewObject {
            label: &p.label,
            application: APPLICATION,
            object_id: p.data_type.oid_der(),
            value: p.value,
        })?)
    }

    /// Reads every key of an entry, checking each object is still what the index says.
    fn read_entry(&self, name: &str, entry: &Entry) -> Result<Option<SecretData>> {
        let mut data = SecretData::new();
        for (key, obj) in &entry.keys {
            let label = value_label(name, key);
            let object = match self.token.read_sized(obj.handle, label.len(), obj.len) {
                Ok(o) => o,
                Err(e)
                    if matches!(
                        e.kind,
                        TokenErrorKind::ObjectGone | TokenErrorKind::ValueLost { .. }
                    ) =>
                {
                    return Ok(None);
                }
                Err(e) => return Err(e.into()),
            };
            if object.label != label || value_digest(&object.value) != obj.digest {
                return Ok(None);
            }
            data.insert(key.clone(), SecretValue::from(object.value));
        }
        Ok(Some(data))
    }

    fn plan_value<'a>(name: &str, key: &'a str, value: &'a [u8]) -> Planned<'a> {
        Planned {
            label: value_label(name, key),
            key,
            value,
            data_type: DataType::infer(value),
            digest: value_digest(value),
        }
    }

    /// Writes `name` as `data` with `metadata` under the held index lock.
    fn write_locked(
        &self,
        index: &mut Index,
        name: &str,
        data: &SecretData,
        metadata: SecretMetadata,
    ) -> Result<WriteOutcome> {
        let planned: Vec<Planned<'_>> = data
            .iter()
            .map(|(k, v)| Self::plan_value(name, k, v.expose()))
            .collect();
        let new_checksum = checksum(data.iter().map(|(k, v)| (k.as_str(), v.expose())));
        match self.apply(index, name, &planned, Some(&metadata), new_checksum.clone())? {
            Some(entry) => Ok(WriteOutcome {
                changed: true,
                version: index.put(name, entry),
                checksum: new_checksum,
            }),
            None => Ok(WriteOutcome {
                changed: false,
                version: index.entries.get(name).map(|e| e.version).unwrap_or(0),
                checksum: new_checksum,
            }),
        }
    }

    /// Refuses a write whose labels another secret owns (see [`StoreError::LabelConflict`]).
    fn check_label_conflicts(index: &Index, name: &str, data: &SecretData) -> Result<()> {
        let owns = |owner: &str, key: &str| {
            index
                .entries
                .get(owner)
                .is_some_and(|e| e.keys.contains_key(key))
        };
        for key in data.keys() {
            let label = value_label(name, key);
            // The other reading of the same label: `a/b/k` as key `data` of secret `a/b/k`,
            // or `a/b` (key `data`) as key `b` of secret `a`.
            let other = if key == DATA_KEY {
                name.rsplit_once('/')
                    .map(|(p, k)| (p.to_owned(), k.to_owned()))
            } else {
                Some((label.clone(), DATA_KEY.to_owned()))
            };
            if let Some((owner, owner_key)) = other
                && owner != name
                && owns(&owner, &owner_key)
            {
                return Err(StoreError::LabelConflict {
                    name: name.to_owned(),
                    label,
                    owner,
                });
            }
        }
        Ok(())
    }

    fn not_found(name: &str) -> StoreError {
        StoreError::NotFound(name.to_owned())
    }
}

impl<T: Token> SecretStore for Store<T> {
    fn info(&self) -> Result<TokenInfo> {
        Ok(self.token.info()?)
    }

    fn list(&self, prefix: &str) -> Vec<String> {
        self.index
            .read()
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(n, _)| n.starts_with(prefix))
            .filter(|(_, e)| !e.keys.is_empty())
            .map(|(n, _)| n.clone())
            .collect()
    }

    fn entries(&self) -> Vec<SecretSummary> {
        let index = self.index.read();
        index.entries.iter().map(|(n, e)| e.summary(n)).collect()
    }

    fn summary(&self, name: &str) -> Option<SecretSummary> {
        self.index.read().entries.get(name).map(|e| e.summary(name))
    }

    fn read(&self, name: &str) -> Result<SecretData> {
        {
            let index = self.index.read();
            if !self.needs_recovery.load(Ordering::SeqCst) {
                let entry = index
                    .entries
                    .get(name)
                    .filter(|e| !e.keys.is_empty())
                    .ok_or_else(|| Self::not_found(name))?;
                if let Some(data) = self.read_entry(name, entry)? {
                    return Ok(data);
                }
            }
        }
        // The token changed under the index (another writer, or a write cut short): re-scan
        // once and read again.
        self.needs_recovery.store(true, Ordering::SeqCst);
        let index = self.write_index()?;
        let entry = index
            .entries
            .get(name)
            .filter(|e| !e.keys.is_empty())
            .ok_or_else(|| Self::not_found(name))?;
        self.read_entry(name, entry)?
            .ok_or_else(|| StoreError::Malformed {
                label: name.to_owned(),
                reason: "the secret changed while it was being read".into(),
            })
    }

    fn metadata(&self, name: &str) -> Result<SecretMetadata> {
        self.index
            .read()
            .entries
            .get(name)
            .and_then(|e| e.metadata.clone())
            .ok_or_else(|| Self::not_found(name))
    }

    fn checksum(&self, name: &str) -> Result<String> {
        self.index
            .read()
            .entries
            .get(name)
            .filter(|e| !e.keys.is_empty())
            .map(|e| e.checksum.clone())
            .ok_or_else(|| Self::not_found(name))
    }

    fn write(
        &self,
        name: &str,
        data: &SecretData,
        metadata: MetadataChange,
    ) -> Result<WriteOutcome> {
        validate_name(name)?;
        for key in data.keys() {
            validate_key(name, key)?;
        }
        let mut index = self.write_index()?;
        Self::check_label_conflicts(&index, name, data)?;
        let current = index.entries.get(name).and_then(|e| e.metadata.as_ref());
        let metadata = metadata.apply(current);
        self.write_locked(&mut index, name, data, metadata)
    }

    fn delete(&self, name: &str) -> Result<()> {
        let mut index = self.write_index()?;
        if !index.entries.contains_key(name) {
            return Err(Self::not_found(name));
        }
        self.apply(&index, name, &[], None, String::new())?;
        index.remove(name);
        Ok(())
    }

    fn delete_key(&self, name: &str, key: &str) -> Result<()> {
        let mut index = self.write_index()?;
        let entry = index
            .entries
            .get(name)
            .ok_or_else(|| Self::not_found(name))?;
        if !entry.keys.contains_key(key) {
            return Err(StoreError::KeyNotFound {
                name: name.to_owned(),
                key: key.to_owned(),
            });
        }
        let entry = entry.clone();
        let mut data = self
            .read_entry(name, &entry)?
            .ok_or_else(|| StoreError::Malformed {
                label: name.to_owned(),
                reason: "the secret changed on the token; re-scan and retry".into(),
            })?;
        data.remove(key);
        let metadata = entry.metadata.clone().unwrap_or_default();
        self.write_locked(&mut index, name, &data, metadata)?;
        Ok(())
    }

    fn tombstone(&self, name: &str, timestamp: &str) -> Result<WriteOutcome> {
        validate_name(name)?;
        let mut index = self.write_index()?;
        let current = index
            .entries
            .get(name)
            .and_then(|e| e.metadata.clone())
            .unwrap_or_default();
        let mut update = SecretMetadata::default();
        update.labels.insert(
            SYNC_VERSION.into(),
            (current.sync_version() + 1).to_string(),
        );
        update.labels.insert(SYNC_DELETED.into(), "true".into());
        update
            .labels
            .insert(SYNC_TIMESTAMP.into(), timestamp.to_owned());
        let metadata = current.merged_with(&update);
        self.write_locked(&mut index, name, &SecretData::new(), metadata)
    }

    fn changes_since(&self, since: u64) -> Changes {
        self.index.read().changes_since(since)
    }

    fn version(&self) -> u64 {
        self.index.read().version
    }

    fn rescan(&self) -> Result<RescanReport> {
        let mut index = self.index.write();
        let scanned = self.scan()?;
        self.needs_recovery.store(false, Ordering::SeqCst);
        Ok(index.install(scanned))
    }
}
