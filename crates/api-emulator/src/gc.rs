//! Deletion: finalizers and `deletionTimestamp`, `propagationPolicy`, garbage collection of
//! dependents by ownerReference uid, namespace termination, and CRD removal.
//!
//! The real server runs the garbage collector and the namespace controller asynchronously;
//! here they run inside the deleting request, so they are done when it answers. Clients see
//! the same events in the same order (owner first), only sooner.

use serde_json::{Value, json};

use crate::error::ApiError;
use crate::meta::{self, finalizers};
use crate::request::{Target, present};
use crate::resources::ResourceKey;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::{Location, Store};

/// How dependents are handled (`propagationPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    /// Dependents are kept, their ownerReference to the owner removed.
    Orphan,
    /// The owner goes now; dependents are collected after it (the default).
    #[default]
    Background,
    /// Dependents go first; the owner waits with the `foregroundDeletion` finalizer.
    Foreground,
}

impl Propagation {
    /// Parses the query/body value.
    pub fn parse(s: &str) -> Result<Self, ApiError> {
        match s {
            "Orphan" => Ok(Propagation::Orphan),
            "Background" => Ok(Propagation::Background),
            "Foreground" => Ok(Propagation::Foreground),
            other => Err(ApiError::BadRequest(format!(
                "propagationPolicy: Unsupported value: \"{other}\": supported values: \
                 \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }
}

/// Options of a delete (query parameters and the DeleteOptions body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `propagationPolicy`.
    pub propagation: Option<Propagation>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
    /// `gracePeriodSeconds`.
    pub grace_period: Option<i64>,
}

const ORPHAN: &str = "orphan";
const FOREGROUND: &str = "foregroundDeletion";

/// Deletes one object; the answer is the object (still being deleted, or deleted when the
/// resource returns deleted objects) or a Success Status.
pub fn delete(store: &mut Store, t: &Target, opts: &DeleteOptions) -> Result<Value, ApiError> {
    let key = t.key();
    let obj = store
        .get(&key, &t.namespace, &t.name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.res.group, &t.res.plural, &t.name))?;
    if let Some(uid) = &opts.uid
        && obj["metadata"]["uid"].as_str() != Some(uid)
    {
        return Err(ApiError::conflict(
            &t.res.group,
            &t.res.plural,
            &t.name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                obj["metadata"]["uid"].as_str().unwrap_or_default()
            ),
        ));
    }
    if let Some(rv) = &opts.resource_version
        && obj["metadata"]["resourceVersion"].as_str() != Some(rv)
    {
        return Err(ApiError::conflict(
            &t.res.group,
            &t.res.plural,
            &t.name,
            &format!(
                "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in \
                 object meta: {}",
                obj["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap_or_default()
            ),
        ));
    }
    if opts.dry_run {
        return Ok(present(&t.res, &t.version, &obj));
    }
    let loc = (key, t.namespace.clone(), t.name.clone());
    if let Some(pending) = graceful_pod_deletion(store, &loc, opts.grace_period) {
        return Ok(present(&t.res, &t.version, &pending));
    }
    match delete_object(store, &loc, opts.propagation.unwrap_or_default()) {
        Deleted::Gone(last) if t.res.returns_deleted_object => {
            Ok(present(&t.res, &t.version, &last))
        }
        Deleted::Gone(last) => {
            let mut details = json!({"name": t.name, "kind": t.res.plural});
            if !t.res.group.is_empty() {
                details["group"] = json!(t.res.group);
            }
            if let Some(uid) = last["metadata"]["uid"].as_str() {
                details["uid"] = json!(uid);
            }
            Ok(json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": details,
            }))
        }
        Deleted::Pending(obj) => Ok(present(&t.res, &t.version, &obj)),
    }
}

/// A pod bound to a node is deleted gracefully, as on the real server: it is marked with
/// deletionTimestamp (now + grace) and deletionGracePeriodSeconds and stays until its kubelet
/// (here: whoever plays it, e.g. a pod runner) deletes it with a grace period of 0. Unbound
/// pods and pods that have finished go at once. Returns the marked pod.
fn graceful_pod_deletion(
    store: &mut Store,
    loc: &Location,
    requested: Option<i64>,
) -> Option<Value> {
    let (key, ns, name) = loc;
    if !(key.0.is_empty() && key.1 == "pods") {
        return None;
    }
    let pod = store.get(key, ns, name)?;
    let bound = pod["spec"]["nodeName"]
        .as_str()
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        pod["status"]["phase"].as_str(),
        Some("Succeeded" | "Failed")
    );
    let grace = requested
        .or_else(|| pod["spec"]["terminationGracePeriodSeconds"].as_i64())
        .unwrap_or(30);
    if !bound || finished || grace <= 0 {
        return None;
    }
    let current = pod["metadata"]["deletionGracePeriodSeconds"].as_i64();
    if current.is_some_and(|c| c <= grace) {
        // Already terminating with a grace period at least as short.
        return Some((**pod).clone());
    }
    let mut pod = (**pod).clone();
    let at = chrono::Utc::now() + chrono::Duration::seconds(grace);
    pod["metadata"]["deletionTimestamp"] = json!(at.format("%Y-%m-%dT%H:%M:%SZ").to_string());
    pod["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
    if let Some(g) = pod["metadata"]["generation"].as_i64() {
        pod["metadata"]["generation"] = json!(g + 1);
    }
    Some((*store.put(key, pod)).clone())
}

/// Deletes every object of a collection that the selectors match (`deletecollection`);
/// answers the list of what was deleted.
pub fn delete_collection(
    store: &mut Store,
    t: &Target,
    labels: &LabelSelector,
    fields: &FieldSelector,
    opts: &DeleteOptions,
) -> Result<Value, ApiError> {
    let ns = (!t.namespace.is_empty()).then_some(t.namespace.as_str());
    let matching: Vec<Value> = store
        .list(&t.key(), ns)
        .filter(|o| labels.matches(o) && fields.matches(o))
        .map(|o| present(&t.res, &t.version, o))
        .collect();
    let mut deleted = Vec::new();
    for item in &matching {
        let item_t = Target {
            namespace: item["metadata"]["namespace"]
                .as_str()
                .unwrap_or_default()
                .into(),
            name: item["metadata"]["name"].as_str().unwrap_or_default().into(),
            ..t.clone()
        };
        delete(store, &item_t, opts)?;
        deleted.push(item.clone());
    }
    Ok(json!({
        "kind": format!("{}List", t.res.kind),
        "apiVersion": t.api_version(),
        "metadata": {"resourceVersion": store.current_rv().to_string()},
        "items": deleted,
    }))
}

/// What became of a deleted object.
pub enum Deleted {
    /// Removed; its last state.
    Gone(Value),
    /// Marked with deletionTimestamp, waiting for finalizers.
    Pending(Value),
}

/// Deletes the object at `loc` with a propagation policy, honouring its finalizers.
pub fn delete_object(store: &mut Store, loc: &Location, policy: Propagation) -> Deleted {
    let (key, ns, name) = loc;
    let Some(obj) = store.get(key, ns, name).cloned() else {
        return Deleted::Gone(Value::Null);
    };
    let mut obj = (*obj).clone();
    let already = !obj["metadata"]["deletionTimestamp"].is_null();
    let mut finalizers = finalizers(&obj);
    match policy {
        Propagation::Orphan if !finalizers.iter().any(|f| f == ORPHAN) => {
            finalizers.push(ORPHAN.into())
        }
        Propagation::Foreground if !finalizers.iter().any(|f| f == FOREGROUND) => {
            finalizers.push(FOREGROUND.into())
        }
        _ => {}
    }
    let is_namespace = key.0.is_empty() && key.1 == "namespaces";
    if finalizers.is_empty() && !is_namespace {
        let last = remove_now(store, key, ns, name, None);
        return Deleted::Gone(last.unwrap_or_default());
    }
    if !already || finalizers != self::finalizers(&obj) {
        obj["metadata"]["finalizers"] = json!(finalizers);
        if !already {
            obj["metadata"]["deletionTimestamp"] = json!(meta::now());
            obj["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if let Some(g) = obj["metadata"]["generation"].as_i64() {
                obj["metadata"]["generation"] = json!(g + 1);
            }
            if is_namespace {
                obj["status"]["phase"] = json!("Terminating");
            }
        }
        store.put(key, obj.clone());
    }
    if is_namespace {
        terminate_namespace(store, name);
    }
    let removed = run_system_finalizers(store, loc);
    match store.get(key, ns, name) {
        Some(o) => Deleted::Pending((**o).clone()),
        None => Deleted::Gone(removed.unwrap_or(obj)),
    }
}

/// Carries out the `orphan` and `foregroundDeletion` finalizers the garbage collector owns;
/// returns the object's last state if that removed it.
fn run_system_finalizers(store: &mut Store, loc: &Location) -> Option<Value> {
    let (key, ns, name) = loc;
    let obj = store.get(key, ns, name).cloned()?;
    let uid = obj["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let mut fins = finalizers(&obj);
    if fins.iter().any(|f| f == ORPHAN) {
        for dep in store.dependents_of(&uid) {
            drop_owner_ref(store, &dep, &uid);
        }
        fins.retain(|f| f != ORPHAN);
    }
    if fins.iter().any(|f| f == FOREGROUND) {
        for dep in store.dependents_of(&uid) {
            delete_object(store, &dep, Propagation::Foreground);
        }
        if store.dependents_of(&uid).is_empty() {
            fins.retain(|f| f != FOREGROUND);
        }
    }
    if fins == finalizers(&obj) {
        return None;
    }
    let mut current = (**store.get(key, ns, name)?).clone();
    current["metadata"]["finalizers"] = json!(fins);
    if fins.is_empty() {
        current["metadata"]
            .as_object_mut()
            .expect("object")
            .remove("finalizers");
        remove_now(store, key, ns, name, Some(current))
    } else {
        store.put(key, current);
        None
    }
}

fn drop_owner_ref(store: &mut Store, dep: &Location, owner_uid: &str) {
    let Some(obj) = store.get(&dep.0, &dep.1, &dep.2) else {
        return;
    };
    let mut obj = (**obj).clone();
    if let Some(refs) = obj["metadata"]["ownerReferences"].as_array_mut() {
        refs.retain(|r| r["uid"].as_str() != Some(owner_uid));
        if refs.is_empty() {
            obj["metadata"]
                .as_object_mut()
                .expect("object")
                .remove("ownerReferences");
        }
    }
    store.put(&dep.0, obj);
}

/// The garbage collector's check of a written object: one whose ownerReferences all name
/// objects that do not exist is deleted (background), as the real collector does shortly
/// after such a write.
pub fn collect_if_orphaned(store: &mut Store, loc: &Location) {
    let Some(obj) = store.get(&loc.0, &loc.1, &loc.2) else {
        return;
    };
    let owners = crate::store::owner_uids(obj);
    if !owners.is_empty() && owners.iter().all(|u| store.locate(u).is_none()) {
        delete_object(store, loc, Propagation::Background);
    }
}

/// Removes an object now (one DELETED event), then collects what depended on it: dependents
/// with no owner left are deleted (background), others lose the dangling reference; an owner
/// waiting in foreground deletion for this object is finished; a terminating namespace left
/// empty goes.
pub fn remove_now(
    store: &mut Store,
    key: &ResourceKey,
    ns: &str,
    name: &str,
    last: Option<Value>,
) -> Option<Value> {
    let gone = store.remove(key, ns, name, last)?;
    let gone = (*gone).clone();
    let uid = gone["metadata"]["uid"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    if key.0 == "apiextensions.k8s.io" && key.1 == "customresourcedefinitions" {
        remove_crd_objects(store, &gone);
    }
    for dep in store.dependents_of(&uid) {
        let Some(d) = store.get(&dep.0, &dep.1, &dep.2) else {
            continue;
        };
        let live_owner = crate::store::owner_uids(d)
            .iter()
            .any(|u| u != &uid && store.locate(u).is_some());
        if live_owner {
            drop_owner_ref(store, &dep, &uid);
        } else {
            delete_object(store, &dep, Propagation::Background);
        }
    }
    // An owner in foreground deletion waits for its dependents.
    for owner in crate::store::owner_uids(&gone) {
        if let Some(loc) = store.locate(&owner).cloned()
            && store
                .get(&loc.0, &loc.1, &loc.2)
                .is_some_and(|o| finalizers(o).iter().any(|f| f == FOREGROUND))
        {
            run_system_finalizers(store, &loc);
        }
    }
    if !ns.is_empty() {
        finish_namespace_if_empty(store, ns);
    }
    Some(gone)
}

fn namespaced_objects(store: &Store, ns: &str) -> Vec<Location> {
    let keys: Vec<ResourceKey> = store
        .registry
        .all()
        .filter(|r| r.namespaced)
        .map(|r| (r.group.clone(), r.plural.clone()))
        .collect();
    let mut out = Vec::new();
    for k in keys {
        for o in store.list(&k, Some(ns)) {
            let name = o["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            out.push((k.clone(), ns.to_string(), name));
        }
    }
    out
}

/// The namespace controller's job: delete everything in a terminating namespace.
fn terminate_namespace(store: &mut Store, ns: &str) {
    for loc in namespaced_objects(store, ns) {
        if store
            .get(&loc.0, &loc.1, &loc.2)
            .is_some_and(|o| o["metadata"]["deletionTimestamp"].is_null())
        {
            delete_object(store, &loc, Propagation::Background);
        }
    }
    finish_namespace_if_empty(store, ns);
}

fn finish_namespace_if_empty(store: &mut Store, ns: &str) {
    let key: ResourceKey = (String::new(), "namespaces".into());
    let terminating = store
        .get(&key, "", ns)
        .is_some_and(|o| !o["metadata"]["deletionTimestamp"].is_null());
    if terminating && namespaced_objects(store, ns).is_empty() {
        let mut last = (**store.get(&key, "", ns).expect("checked")).clone();
        last["spec"]["finalizers"] = json!([]);
        let user_finalizers = finalizers(&last);
        if user_finalizers.is_empty() {
            remove_now(store, &key, "", ns, Some(last));
        } else if last != **store.get(&key, "", ns).expect("checked") {
            store.put(&key, last);
        }
    }
}

/// A deleted CRD takes its custom resources with it (each gets a DELETED event) and stops
/// being served.
fn remove_crd_objects(store: &mut Store, crd: &Value) {
    let group = crd["spec"]["group"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let plural = crd["spec"]["names"]["plural"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let key = (group.clone(), plural.clone());
    let locs: Vec<Location> = store
        .list(&key, None)
        .map(|o| {
            let (ns, name) = crate::store::ns_name(o);
            (key.clone(), ns, name)
        })
        .collect();
    for (k, ns, name) in locs {
        remove_now(store, &k, &ns, &name, None);
    }
    store.drop_resource(&key);
    store.registry.remove(&group, &plural);
}
