//! The owned Secrets as the controller caches them from its watch: only what a sync compares
//! — identity and owner, type, labels and annotations as flat sorted lists, and the data's
//! checksum and key names instead of its values.
//!
//! Why: every safety-net round compares each HSMSecret's Secret with what the devices hold,
//! and that comparison needs no value (the checksums are the on-token formula, so the
//! Secret's and the index entry's compare directly). A whole `Secret` costs about 2.5 KiB in
//! memory even for a one-key secret (each label, annotation and data map is a B-tree node of
//! ~540 bytes before its strings): 10 000 HSMSecrets made it a quarter of the manager's heap.
//! A write, rare by comparison, reads the Secret itself from the API first.

use super::build;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::NamespaceResourceScope;
use kube::runtime::watcher::Event;
use std::borrow::Cow;
use std::collections::BTreeMap;

/// An owned Secret, as cached (see the module).
#[derive(Debug, Clone, PartialEq)]
pub struct CachedSecret {
    /// Name, namespace, uid, resourceVersion and ownerReferences (the owner triggers the
    /// HSMSecret's reconcile); no labels, annotations or managedFields.
    metadata: ObjectMeta,
    type_: Option<String>,
    labels: Box<[(String, String)]>,
    annotations: Box<[(String, String)]>,
    /// The data's checksum (the on-token formula, [`build::secret_checksum`]).
    checksum: String,
}

/// A map as a sorted list (a `BTreeMap` iterates in order).
fn flat(map: Option<BTreeMap<String, String>>) -> Box<[(String, String)]> {
    map.into_iter().flatten().collect()
}

fn lookup<'a>(list: &'a [(String, String)], key: &str) -> Option<&'a String> {
    list.binary_search_by(|(k, _)| k.as_str().cmp(key))
        .ok()
        .map(|i| &list[i].1)
}

impl From<Secret> for CachedSecret {
    fn from(secret: Secret) -> Self {
        let checksum = build::secret_checksum(&secret);
        let Secret {
            metadata, type_, ..
        } = secret;
        let ObjectMeta {
            name,
            namespace,
            uid,
            resource_version,
            owner_references,
            labels,
            annotations,
            ..
        } = metadata;
        CachedSecret {
            metadata: ObjectMeta {
                name,
                namespace,
                uid,
                resource_version,
                owner_references,
                ..ObjectMeta::default()
            },
            type_,
            labels: flat(labels),
            annotations: flat(annotations),
            checksum,
        }
    }
}

impl CachedSecret {
    /// The checksum of the Secret's data.
    pub fn checksum(&self) -> &str {
        &self.checksum
    }

    /// The Secret's type.
    pub fn type_(&self) -> Option<&str> {
        self.type_.as_deref()
    }

    /// Whether the Secret already is `desired` in everything the operator sets, as
    /// [`build::up_to_date`] says of a whole Secret: data (by checksum: `data_checksum` is
    /// the desired data's, so `desired` may be built without its values), type and owner
    /// exactly, labels and annotations at least.
    pub fn up_to_date(&self, desired: &Secret, data_checksum: &str) -> bool {
        let contains = |have: &[(String, String)], want: &Option<BTreeMap<String, String>>| {
            want.iter()
                .flatten()
                .all(|(k, v)| lookup(have, k) == Some(v))
        };
        self.checksum == data_checksum
            && self.type_ == desired.type_
            && contains(&self.labels, &desired.metadata.labels)
            && contains(&self.annotations, &desired.metadata.annotations)
            && self.metadata.owner_references == desired.metadata.owner_references
    }
}

/// `event` with its Secrets cached.
pub fn cached_event(event: Event<Secret>) -> Event<CachedSecret> {
    match event {
        Event::Apply(s) => Event::Apply(s.into()),
        Event::Delete(s) => Event::Delete(s.into()),
        Event::Init => Event::Init,
        Event::InitApply(s) => Event::InitApply(s.into()),
        Event::InitDone => Event::InitDone,
    }
}

impl Resource for CachedSecret {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Secret::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Secret::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Secret::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Secret::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use kube::ResourceExt;

    fn secret() -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("apps".into()),
                uid: Some("u-1".into()),
                resource_version: Some("7".into()),
                labels: Some(BTreeMap::from([
                    ("managed-by".into(), "hsm-secrets-operator".into()),
                    ("team".into(), "a".into()),
                ])),
                annotations: Some(BTreeMap::from([("note".into(), "x".into())])),
                owner_references: Some(vec![OwnerReference {
                    api_version: "hsm.j5t.io/v1alpha1".into(),
                    kind: "HSMSecret".into(),
                    name: "db".into(),
                    uid: "owner".into(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]),
                ..ObjectMeta::default()
            },
            type_: Some("Opaque".into()),
            data: Some(BTreeMap::from([
                ("password".into(), ByteString(b"s3cret".to_vec())),
                ("user".into(), ByteString(b"admin".to_vec())),
            ])),
            ..Secret::default()
        }
    }

    /// The cached form answers `up_to_date` as the whole Secret does, for the Secret itself
    /// and for each way it can differ from what is desired.
    #[test]
    fn a_cached_secret_is_up_to_date_exactly_when_the_whole_one_is() {
        let existing = secret();
        let cached = CachedSecret::from(existing.clone());
        let mut variants = vec![existing.clone()];
        let mut fewer_labels = existing.clone();
        fewer_labels
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .remove("team");
        variants.push(fewer_labels);
        let mut other_label = existing.clone();
        other_label
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("team".into(), "b".into());
        variants.push(other_label);
        let mut new_annotation = existing.clone();
        new_annotation.metadata.annotations = Some(BTreeMap::from([("new".into(), "y".into())]));
        variants.push(new_annotation);
        let mut no_annotations = existing.clone();
        no_annotations.metadata.annotations = None;
        variants.push(no_annotations);
        let mut other_value = existing.clone();
        other_value
            .data
            .as_mut()
            .unwrap()
            .insert("password".into(), ByteString(b"other".to_vec()));
        variants.push(other_value);
        let mut fewer_keys = existing.clone();
        fewer_keys.data.as_mut().unwrap().remove("user");
        variants.push(fewer_keys);
        let mut other_type = existing.clone();
        other_type.type_ = Some("kubernetes.io/tls".into());
        variants.push(other_type);
        let mut other_owner = existing.clone();
        other_owner.metadata.owner_references.as_mut().unwrap()[0].uid = "someone".into();
        variants.push(other_owner);
        for (i, desired) in variants.iter().enumerate() {
            assert_eq!(
                cached.up_to_date(desired, &build::secret_checksum(desired)),
                build::up_to_date(&existing, desired),
                "variant {i}"
            );
        }
        let checksum = build::secret_checksum(&existing);
        assert!(cached.up_to_date(&existing, &checksum));
        assert!(!cached.up_to_date(&variants[5], &build::secret_checksum(&variants[5])));
        // Built without its values, the desired Secret is compared by the checksum given.
        let mut without_values = existing.clone();
        without_values.data = None;
        assert!(cached.up_to_date(&without_values, &checksum));
        assert!(!cached.up_to_date(&without_values, "another"));
    }

    #[test]
    fn the_cache_keeps_identity_and_owner_but_no_values() {
        let cached = CachedSecret::from(secret());
        assert_eq!(cached.name_any(), "db");
        assert_eq!(cached.namespace().as_deref(), Some("apps"));
        assert_eq!(cached.uid().as_deref(), Some("u-1"));
        assert_eq!(cached.resource_version().as_deref(), Some("7"));
        assert_eq!(cached.owner_references()[0].uid, "owner");
        assert_eq!(cached.checksum(), build::secret_checksum(&secret()));
        assert_eq!(cached.type_(), Some("Opaque"));
        let printed = format!("{cached:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
    }
}
