//! The verbs — create, get, list, update, patch — over the store, with the real server's
//! metadata rules: names, uid, timestamps, generation, optimistic concurrency, status
//! subresource semantics, finalizer rules, managedFields, and no-op updates that change
//! nothing (no new resourceVersion, no event).

use std::sync::Arc;

use serde_json::{Value, json};

use crate::admission::{
    admit_custom, check_event, check_finalizers, check_immutable, check_namespace, check_type,
    ensure_object,
};
use crate::apply::Apply;
use crate::error::ApiError;
use crate::fields;
use crate::gc;
use crate::meta;
use crate::paging::{self, Continue, Page};
use crate::patch::{self, PatchType};
use crate::request::{Target, WriteOptions, present};
use crate::resources::ResourceInfo;
use crate::selector::{FieldSelector, LabelSelector};
use crate::store::Store;

/// Creates an object (POST to a collection).
pub fn create(
    store: &mut Store,
    t: &Target,
    body: Value,
    o: &WriteOptions,
) -> Result<Value, ApiError> {
    create_with(store, t, body, o, None)
}

/// Creates an object; `managed` is the managedFields an apply computed, else the create is
/// recorded as an Update by the request's manager.
fn create_with(
    store: &mut Store,
    t: &Target,
    mut body: Value,
    o: &WriteOptions,
    managed: Option<Value>,
) -> Result<Value, ApiError> {
    ensure_object(&mut body)?;
    check_type(t, &body)?;
    let mut body = crate::events::inbound(&t.res, body);
    check_namespace(store, t, &mut body)?;
    if store.service_account_admission
        && t.res.builtin
        && t.res.group.is_empty()
        && t.res.plural == "pods"
    {
        crate::service_account_admission::admit_pod(store, &t.namespace, &mut body)?;
    }
    let meta_obj = &mut body["metadata"];
    let mut name = meta_obj["name"].as_str().unwrap_or_default().to_string();
    if name.is_empty()
        && let Some(prefix) = meta_obj["generateName"].as_str()
        && !prefix.is_empty()
    {
        name = format!("{prefix}{}", meta::random_suffix());
        meta_obj["name"] = json!(name);
    }
    meta::validate_name(&t.res, &name)?;
    meta::validate_labels(&t.res, &name, &body)?;
    meta::validate_owner_references(&t.res, &name, &body)?;
    check_event(t, &name, &body)?;
    let key = t.key();
    if store.get(&key, &t.namespace, &name).is_some() {
        return Err(ApiError::already_exists(&t.res.group, &t.res.plural, &name));
    }
    let now = meta::now();
    body["apiVersion"] = json!(t.res.api_version(t.res.storage_version()));
    body["kind"] = json!(t.res.kind);
    let m = body["metadata"].as_object_mut().expect("checked");
    m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    m.insert("creationTimestamp".into(), json!(now));
    for k in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        m.remove(k);
    }
    if t.res.has_generation {
        m.insert("generation".into(), json!(1));
    } else {
        m.remove("generation");
    }
    if t.res.status_subresource
        && let Some(o) = body.as_object_mut()
    {
        o.remove("status");
    }
    meta::apply_defaults(&t.res, &mut body, true);
    admit_custom(t, &name, &mut body, o.strict_fields)?;
    match managed {
        Some(m) if !m.is_null() => body["metadata"]["managedFields"] = m,
        _ => {
            body["metadata"]
                .as_object_mut()
                .expect("checked")
                .remove("managedFields");
            fields::track_update(
                &t.res,
                None,
                &mut body,
                &o.field_manager,
                &t.api_version(),
                t.scope(),
                &now,
            );
        }
    }
    if is_crd(&t.res) {
        let info = crate::crd::resource_from_crd(&body)?;
        body["status"] = crate::crd::accepted_status(&body, &now);
        if !o.dry_run {
            store.registry.insert(info);
        }
    }
    if o.dry_run {
        return Ok(present(&t.res, &t.version, &body));
    }
    let stored = store.put(&key, body);
    gc::collect_if_orphaned(store, &(key, t.namespace.clone(), name.clone()));
    if t.res.builtin && t.res.group.is_empty() && t.res.plural == "namespaces" {
        populate_namespace(store, &name);
    }
    Ok(present(&t.res, &t.version, &stored))
}

/// What the real cluster's controllers put in every new namespace: the `default`
/// ServiceAccount and the `kube-root-ca.crt` ConfigMap with the cluster CA.
fn populate_namespace(store: &mut Store, namespace: &str) {
    let ca = store.cluster_ca_pem.clone();
    let fixtures = [
        (
            "serviceaccounts",
            json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
        ),
        (
            "configmaps",
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "kube-root-ca.crt"}, "data": {"ca.crt": ca}}),
        ),
    ];
    for (plural, object) in fixtures {
        let Some(res) = store.registry.lookup("", "v1", plural) else {
            continue;
        };
        let t = Target {
            res,
            version: "v1".into(),
            namespace: namespace.to_string(),
            name: String::new(),
            status: false,
        };
        let opts = WriteOptions {
            field_manager: "kube-controller-manager".into(),
            explicit_manager: true,
            ..Default::default()
        };
        // A fresh namespace has neither; nothing can fail but a bug.
        if let Err(e) = create(store, &t, object, &opts) {
            tracing::warn!("populating namespace {namespace}: {e}");
        }
    }
}

fn is_crd(res: &ResourceInfo) -> bool {
    res.group == "apiextensions.k8s.io" && res.plural == "customresourcedefinitions"
}

/// Reads one object.
pub fn get(store: &Store, t: &Target) -> Result<Value, ApiError> {
    store
        .get(&t.key(), &t.namespace, &t.name)
        .map(|o| present(&t.res, &t.version, o))
        .ok_or_else(|| ApiError::not_found(&t.res.group, &t.res.plural, &t.name))
}

/// Lists a collection with selectors, in pages when `limit` is given (see [`crate::paging`]).
pub fn list(
    store: &Store,
    t: &Target,
    labels: &LabelSelector,
    fields: &FieldSelector,
    page: &Page,
) -> Result<Value, ApiError> {
    let ns = (!t.namespace.is_empty()).then_some(t.namespace.as_str());
    let cont = page
        .continue_token
        .as_deref()
        .map(Continue::decode)
        .transpose()?;
    if let Some(c) = &cont
        && c.rv < store.oldest_rv()
    {
        return Err(paging::expired());
    }
    let mut matching = store
        .list(&t.key(), ns)
        .filter(|o| {
            cont.as_ref()
                .is_none_or(|c| crate::store::ns_name(o) > c.after)
        })
        .filter(|o| labels.matches(o) && fields.matches(o));
    let limit = page.limit.filter(|l| *l > 0).unwrap_or(usize::MAX);
    let page_items: Vec<&Arc<Value>> = matching.by_ref().take(limit).collect();
    let remaining = matching.count();
    let rv = cont.as_ref().map_or(store.current_rv(), |c| c.rv);
    let mut metadata = json!({ "resourceVersion": rv.to_string() });
    if remaining > 0
        && let Some(last) = page_items.last()
    {
        metadata["continue"] = json!(
            Continue {
                rv,
                after: crate::store::ns_name(last)
            }
            .encode()
        );
        // The real server counts what is left only for lists without selectors.
        if labels.0.is_empty() && fields.0.is_empty() {
            metadata["remainingItemCount"] = json!(remaining);
        }
    }
    let items: Vec<Value> = page_items
        .into_iter()
        .map(|o| present(&t.res, &t.version, o))
        .collect();
    Ok(json!({
        "kind": format!("{}List", t.res.kind),
        "apiVersion": t.api_version(),
        "metadata": metadata,
        "items": items,
    }))
}

/// Replaces an object (PUT), with the body's resourceVersion as a precondition when set.
pub fn update(
    store: &mut Store,
    t: &Target,
    mut body: Value,
    o: &WriteOptions,
) -> Result<Value, ApiError> {
    ensure_object(&mut body)?;
    check_type(t, &body)?;
    let body_name = body["metadata"]["name"].as_str().unwrap_or_default();
    if body_name != t.name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({})",
            t.name
        )));
    }
    let old = store
        .get(&t.key(), &t.namespace, &t.name)
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.res.group, &t.res.plural, &t.name))?;
    let body = crate::events::inbound(&t.res, body);
    commit_update(store, t, &old, body, o, Ownership::Update)
}

/// How a write's managedFields are recorded.
enum Ownership {
    /// Fields changed go to the manager as an Update.
    Update,
    /// Computed by apply already.
    Applied,
}

/// Applies a patch of any type.
pub fn patch(
    store: &mut Store,
    t: &Target,
    type_: PatchType,
    body: &[u8],
    o: &WriteOptions,
) -> Result<Value, ApiError> {
    let old = store.get(&t.key(), &t.namespace, &t.name).cloned();
    let (old, new) = match (type_, old) {
        (PatchType::Apply, old) => {
            let config: Value = serde_yaml::from_slice(body)
                .map_err(|e| ApiError::BadRequest(format!("error decoding YAML: {e}")))?;
            return apply(store, t, old, config, o);
        }
        (_, None) => return Err(ApiError::not_found(&t.res.group, &t.res.plural, &t.name)),
        (_, Some(old)) => {
            let mut new = crate::events::outbound(&t.res, &old);
            patch::patch_object(&t.res, type_, &mut new, body)?;
            (old, new)
        }
    };
    let new = crate::events::inbound(&t.res, new);
    commit_update(store, t, &old, new, o, Ownership::Update)
}

fn apply(
    store: &mut Store,
    t: &Target,
    old: Option<Arc<Value>>,
    mut config: Value,
    o: &WriteOptions,
) -> Result<Value, ApiError> {
    ensure_object(&mut config)?;
    if config.get("apiVersion").is_none() || config.get("kind").is_none() {
        return Err(ApiError::BadRequest(
            "apiVersion and kind must be set in an applied configuration".into(),
        ));
    }
    check_type(t, &config)?;
    if !o.explicit_manager || o.field_manager.is_empty() {
        return Err(ApiError::BadRequest(
            "PATCH, application/apply-patch+yaml requires a non-empty fieldManager".into(),
        ));
    }
    // As the real server does, an applied configuration may leave out the name: the URL's.
    if config["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .is_empty()
    {
        config["metadata"]["name"] = Value::String(t.name.clone());
    }
    let name = config["metadata"]["name"].as_str().unwrap_or_default();
    if name != t.name {
        return Err(ApiError::BadRequest(format!(
            "the name of the object ({name}) does not match the name on the URL ({})",
            t.name
        )));
    }
    let now = meta::now();
    let applier = Apply {
        res: &t.res,
        manager: &o.field_manager,
        api_version: &t.api_version(),
        force: o.force,
        scope: t.scope(),
        now: &now,
    };
    match old {
        None if t.status => Err(ApiError::not_found(&t.res.group, &t.res.plural, &t.name)),
        None => {
            let base = json!({"metadata": {"name": t.name}});
            let mut body = applier.run(&base, &config)?;
            let managed = body["metadata"]["managedFields"].take();
            create_with(store, t, body, o, Some(managed))
        }
        Some(old) => {
            if let Some(rv) = config["metadata"]["resourceVersion"].as_str()
                && old["metadata"]["resourceVersion"].as_str() != Some(rv)
            {
                return Err(ApiError::stale(&t.res.group, &t.res.plural, &t.name));
            }
            let new = applier.run(&crate::events::outbound(&t.res, &old), &config)?;
            let new = crate::events::inbound(&t.res, new);
            commit_update(store, t, &old, new, o, Ownership::Applied)
        }
    }
}

/// The common end of update, patch and apply: enforce the rules that tie the new object to
/// the old one, then store it (or return the old one unchanged for a no-op).
fn commit_update(
    store: &mut Store,
    t: &Target,
    old: &Arc<Value>,
    mut new: Value,
    o: &WriteOptions,
    ownership: Ownership,
) -> Result<Value, ApiError> {
    ensure_object(&mut new)?;
    let old_rv = old["metadata"]["resourceVersion"]
        .as_str()
        .unwrap_or_default();
    match new["metadata"]["resourceVersion"].as_str() {
        Some(rv) if !rv.is_empty() && rv != old_rv => {
            return Err(ApiError::stale(&t.res.group, &t.res.plural, &t.name));
        }
        _ => {}
    }
    let managed = new["metadata"]["managedFields"].clone();
    if t.status {
        // `/status` changes nothing but status.
        let status = new.get("status").cloned();
        new = (**old).clone();
        match status {
            Some(s) => new["status"] = s,
            None => {
                new.as_object_mut().expect("object").remove("status");
            }
        }
    } else {
        if t.res.status_subresource {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    new.as_object_mut().expect("checked").remove("status");
                }
            }
        }
        let m = new["metadata"].as_object_mut().expect("checked");
        for k in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "namespace",
            "name",
        ] {
            match old["metadata"].get(k) {
                Some(v) => {
                    m.insert(k.into(), v.clone());
                }
                None => {
                    m.remove(k);
                }
            }
        }
        if let Some(g) = old["metadata"].get("generation") {
            m.insert("generation".into(), g.clone());
        }
        meta::carry_allocated(&t.res, old, &mut new);
        meta::apply_defaults(&t.res, &mut new, false);
    }
    new["apiVersion"] = old["apiVersion"].clone();
    new["kind"] = old["kind"].clone();
    new["metadata"]["resourceVersion"] = json!(old_rv);
    if matches!(ownership, Ownership::Applied) {
        new["metadata"]["managedFields"] = managed;
    } else if let Some(m) = old["metadata"].get("managedFields") {
        new["metadata"]["managedFields"] = m.clone();
    } else if let Some(m) = new["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    meta::validate_labels(&t.res, &t.name, &new)?;
    meta::validate_owner_references(&t.res, &t.name, &new)?;
    admit_custom(t, &t.name, &mut new, o.strict_fields)?;
    check_finalizers(t, old, &new)?;
    if !t.status {
        check_immutable(t, old, &new)?;
    }
    if t.res.has_generation && meta::spec_part(&t.res, &new) != meta::spec_part(&t.res, old) {
        let g = old["metadata"]["generation"].as_i64().unwrap_or(0);
        new["metadata"]["generation"] = json!(g + 1);
    }
    if matches!(ownership, Ownership::Update) {
        fields::track_update(
            &t.res,
            Some(old),
            &mut new,
            &o.field_manager,
            &t.api_version(),
            t.scope(),
            &meta::now(),
        );
    }
    if without_times(&new) == without_times(old) {
        return Ok(present(&t.res, &t.version, old));
    }
    if is_crd(&t.res) && !t.status {
        let info = crate::crd::resource_from_crd(&new)?;
        if !o.dry_run {
            store.registry.insert(info);
        }
    }
    if o.dry_run {
        return Ok(present(&t.res, &t.version, &new));
    }
    let key = t.key();
    let deleting = !new["metadata"]["deletionTimestamp"].is_null();
    let no_finalizers = new["metadata"]["finalizers"]
        .as_array()
        .is_none_or(Vec::is_empty);
    if deleting && no_finalizers {
        // The last finalizer is gone: the object goes now (one DELETED event).
        let gone = gc::remove_now(store, &key, &t.namespace, &t.name, Some(new));
        return Ok(present(&t.res, &t.version, &gone.unwrap_or_default()));
    }
    let stored = store.put(&key, new);
    gc::collect_if_orphaned(store, &(key, t.namespace.clone(), t.name.clone()));
    Ok(present(&t.res, &t.version, &stored))
}

/// The object with managedFields timestamps blanked: a write that changes nothing else
/// is a no-op, as on the real server.
fn without_times(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(entries) = v["metadata"]["managedFields"].as_array_mut() {
        for e in entries {
            if let Some(m) = e.as_object_mut() {
                m.remove("time");
            }
        }
    }
    v
}
