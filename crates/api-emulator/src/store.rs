//! The object store: every object of every resource in memory, one global increasing
//! resourceVersion, a bounded history of change events for watches, and the broadcast
//! channel live watches follow.
//!
//! All mutations go through [`Store::put`] and [`Store::remove`], so every mutation produces
//! exactly one watch event, stamped with the resourceVersion it created.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use serde_json::{Value, json};
use tokio::sync::broadcast;

use crate::resources::{Registry, ResourceKey};

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object was created.
    Added,
    /// The object changed.
    Modified,
    /// The object is gone.
    Deleted,
}

impl EventType {
    /// The wire name (`ADDED`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// One change, as kept in the history and sent to live watches.
#[derive(Debug)]
pub struct Event {
    /// The resourceVersion this change created.
    pub rv: u64,
    /// Which resource.
    pub resource: ResourceKey,
    /// The object's namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// What happened.
    pub type_: EventType,
    /// The object after the change (for a deletion: its last state).
    pub object: Arc<Value>,
    /// The object before the change, so that a watch with a label selector can turn a change
    /// that moves an object out of (into) its selection into DELETED (ADDED).
    pub old: Option<Arc<Value>>,
    /// `object` as JSON, encoded once for all the watches that send it unchanged.
    pub wire: OnceLock<Bytes>,
}

/// A watch from a resourceVersion that is no longer in the kept history.
#[derive(Debug)]
pub struct TooOld {
    /// The requested version.
    pub requested: u64,
    /// The oldest version a watch can start from.
    pub oldest: u64,
}

/// A receiver of live events.
pub type Live = broadcast::Receiver<Arc<Event>>;

/// Objects keyed by (namespace, name); namespace is empty for cluster-scoped objects.
type Objects = BTreeMap<(String, String), Arc<Value>>;

/// Where an object lives: resource, namespace, name.
pub type Location = (ResourceKey, String, String);

/// The store. Guarded by one mutex in [`crate::Emulator`]; nothing here awaits.
pub struct Store {
    /// The served resources.
    pub registry: Registry,
    /// The cluster CA certificate (PEM) new namespaces get in `kube-root-ca.crt`.
    pub cluster_ca_pem: String,
    /// Bumped by every change to an RBAC object, so the authoriser knows when its snapshot
    /// is stale.
    pub rbac_generation: u64,
    /// Whether Pod creates pass the ServiceAccount admission plugin (on, as in a cluster).
    pub service_account_admission: bool,
    rv: u64,
    objects: HashMap<ResourceKey, Objects>,
    history: VecDeque<Arc<Event>>,
    history_limit: usize,
    oldest_rv: u64,
    tx: broadcast::Sender<Arc<Event>>,
    by_uid: HashMap<String, Location>,
    dependents: HashMap<String, BTreeSet<Location>>,
}

impl Store {
    /// An empty store keeping at most `history_limit` events.
    pub fn new(registry: Registry, history_limit: usize) -> Self {
        let (tx, _) = broadcast::channel(65_536);
        Store {
            registry,
            cluster_ca_pem: String::new(),
            rbac_generation: 0,
            service_account_admission: true,
            rv: 1,
            objects: HashMap::new(),
            history: VecDeque::new(),
            history_limit,
            oldest_rv: 1,
            tx,
            by_uid: HashMap::new(),
            dependents: HashMap::new(),
        }
    }

    /// The latest resourceVersion.
    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    /// The oldest resourceVersion a watch or a continued list can start from.
    pub fn oldest_rv(&self) -> u64 {
        self.oldest_rv
    }

    fn note_rbac(&mut self, resource: &ResourceKey) {
        if resource.0 == crate::rbac::RBAC_GROUP {
            self.rbac_generation += 1;
        }
    }

    /// One object.
    pub fn get(&self, resource: &ResourceKey, namespace: &str, name: &str) -> Option<&Arc<Value>> {
        self.objects
            .get(resource)?
            .get(&(namespace.to_string(), name.to_string()))
    }

    /// The objects of a resource, of one namespace or all.
    pub fn list<'a>(
        &'a self,
        resource: &ResourceKey,
        namespace: Option<&'a str>,
    ) -> Box<dyn Iterator<Item = &'a Arc<Value>> + 'a> {
        let Some(objects) = self.objects.get(resource) else {
            return Box::new(std::iter::empty());
        };
        match namespace {
            Some(ns) => Box::new(
                objects
                    .range((ns.to_string(), String::new())..)
                    .take_while(move |((n, _), _)| n == ns)
                    .map(|(_, v)| v),
            ),
            None => Box::new(objects.values()),
        }
    }

    /// Every stored object of every resource, with its resource key.
    pub fn all_objects(&self) -> impl Iterator<Item = (&ResourceKey, &Arc<Value>)> {
        self.objects
            .iter()
            .flat_map(|(k, objs)| objs.values().map(move |v| (k, v)))
    }

    /// Stores `object` (created or changed), stamping a new resourceVersion, and emits the
    /// event. Returns the stored object.
    pub fn put(&mut self, resource: &ResourceKey, mut object: Value) -> Arc<Value> {
        self.rv += 1;
        self.note_rbac(resource);
        object["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let (ns, name) = ns_name(&object);
        let object = Arc::new(object);
        let old = self
            .objects
            .entry(resource.clone())
            .or_default()
            .insert((ns.clone(), name), object.clone());
        self.unindex(resource, old.as_deref());
        self.index(resource, &object);
        let type_ = if old.is_some() {
            EventType::Modified
        } else {
            EventType::Added
        };
        self.emit(resource, ns, type_, object.clone(), old);
        object
    }

    /// Removes an object and emits DELETED with its last state (`last`, or the stored one)
    /// at a new resourceVersion.
    pub fn remove(
        &mut self,
        resource: &ResourceKey,
        namespace: &str,
        name: &str,
        last: Option<Value>,
    ) -> Option<Arc<Value>> {
        let old = self
            .objects
            .get_mut(resource)?
            .remove(&(namespace.to_string(), name.to_string()))?;
        self.unindex(resource, Some(&old));
        self.rv += 1;
        self.note_rbac(resource);
        let mut last = last.unwrap_or_else(|| (*old).clone());
        last["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let last = Arc::new(last);
        self.emit(
            resource,
            namespace.to_string(),
            EventType::Deleted,
            last.clone(),
            Some(old),
        );
        Some(last)
    }

    fn index(&mut self, resource: &ResourceKey, object: &Value) {
        let (ns, name) = ns_name(object);
        let loc = (resource.clone(), ns, name);
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            self.by_uid.insert(uid.to_string(), loc.clone());
        }
        for owner in owner_uids(object) {
            self.dependents
                .entry(owner)
                .or_default()
                .insert(loc.clone());
        }
    }

    fn unindex(&mut self, resource: &ResourceKey, object: Option<&Value>) {
        let Some(object) = object else { return };
        if let Some(uid) = object["metadata"]["uid"].as_str() {
            self.by_uid.remove(uid);
        }
        let (ns, name) = ns_name(object);
        let loc = (resource.clone(), ns, name);
        for owner in owner_uids(object) {
            if let Some(set) = self.dependents.get_mut(&owner) {
                set.remove(&loc);
                if set.is_empty() {
                    self.dependents.remove(&owner);
                }
            }
        }
    }

    /// Where the object with this uid is.
    pub fn locate(&self, uid: &str) -> Option<&Location> {
        self.by_uid.get(uid)
    }

    /// The objects whose ownerReferences name this uid.
    pub fn dependents_of(&self, uid: &str) -> Vec<Location> {
        self.dependents
            .get(uid)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Drops every object of a resource without events (its CRD is gone; the real server
    /// ends the watches of a removed resource rather than sending deletions).
    pub fn drop_resource(&mut self, resource: &ResourceKey) {
        self.objects.remove(resource);
    }

    fn emit(
        &mut self,
        resource: &ResourceKey,
        namespace: String,
        type_: EventType,
        object: Arc<Value>,
        old: Option<Arc<Value>>,
    ) {
        let event = Arc::new(Event {
            rv: self.rv,
            resource: resource.clone(),
            namespace,
            type_,
            object,
            old,
            wire: OnceLock::new(),
        });
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit {
            if let Some(dropped) = self.history.pop_front() {
                self.oldest_rv = dropped.rv;
            }
        }
        // No receivers is fine: nobody watches.
        let _ = self.tx.send(event);
    }

    /// Forgets the whole history, as an etcd compaction does: a watch must then start from
    /// the current resourceVersion or later.
    pub fn compact(&mut self) {
        self.history.clear();
        self.oldest_rv = self.rv;
    }

    /// The kept events after `rv` for `resource`, and a receiver for the ones to come, taken
    /// together so that nothing falls between them.
    pub fn watch_from(
        &self,
        resource: &ResourceKey,
        rv: u64,
    ) -> Result<(Vec<Arc<Event>>, Live), TooOld> {
        if rv < self.oldest_rv {
            return Err(TooOld {
                requested: rv,
                oldest: self.oldest_rv,
            });
        }
        let backlog = self
            .history
            .iter()
            .filter(|e| e.rv > rv && &e.resource == resource)
            .cloned()
            .collect();
        Ok((backlog, self.tx.subscribe()))
    }

    /// A receiver for events from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// (namespace, name) of an object.
pub fn ns_name(object: &Value) -> (String, String) {
    let meta = &object["metadata"];
    (
        meta["namespace"].as_str().unwrap_or_default().to_string(),
        meta["name"].as_str().unwrap_or_default().to_string(),
    )
}

/// The uids of an object's owners.
pub fn owner_uids(object: &Value) -> Vec<String> {
    object["metadata"]["ownerReferences"]
        .as_array()
        .map(|refs| {
            refs.iter()
                .filter_map(|r| r["uid"].as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}
