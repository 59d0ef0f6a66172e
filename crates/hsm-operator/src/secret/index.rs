//! Which HSMSecrets name an HSM secret: the HSM path is an HSMSecret's `metadata.name`, and
//! several namespaces may each have one. Fed by the HSMSecret watch, read when an agent
//! announces changed names, so that an HSM write reconciles exactly the HSMSecrets it
//! concerns.

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;
use kube::{Resource, ResourceExt};
use parking_lot::RwLock;
use std::collections::HashMap;

/// The namespaces of one name's HSMSecrets, sorted, without repeats. Nearly always one: a
/// sorted `Vec` holds it in one small allocation, where a `BTreeSet` node takes ~300 bytes
/// (10 000 HSMSecrets made that 3 MiB).
type Namespaces = Vec<String>;

/// HSM secret name → the HSMSecrets (namespace) that replicate it.
#[derive(Debug, Default)]
pub struct NameIndex {
    live: RwLock<HashMap<String, Namespaces>>,
    /// The relist under way (between `Init` and `InitDone`).
    relist: RwLock<Option<HashMap<String, Namespaces>>>,
}

fn insert(map: &mut HashMap<String, Namespaces>, name: String, namespace: String) {
    let namespaces = map.entry(name).or_default();
    if let Err(at) = namespaces.binary_search(&namespace) {
        namespaces.insert(at, namespace);
    }
}

impl NameIndex {
    /// Follows one watch event.
    pub fn apply<K: Resource>(&self, event: &Event<K>) {
        match event {
            Event::Apply(object) => insert(
                &mut self.live.write(),
                object.name_any(),
                object.namespace().unwrap_or_default(),
            ),
            Event::Delete(object) => {
                let mut live = self.live.write();
                let name = object.name_any();
                let namespace = object.namespace().unwrap_or_default();
                if let Some(namespaces) = live.get_mut(&name) {
                    namespaces.retain(|ns| *ns != namespace);
                    if namespaces.is_empty() {
                        live.remove(&name);
                    }
                }
            }
            Event::Init => *self.relist.write() = Some(HashMap::new()),
            Event::InitApply(object) => {
                if let Some(relist) = self.relist.write().as_mut() {
                    insert(
                        relist,
                        object.name_any(),
                        object.namespace().unwrap_or_default(),
                    );
                }
            }
            Event::InitDone => {
                if let Some(relist) = self.relist.write().take() {
                    *self.live.write() = relist;
                }
            }
        }
    }

    /// The HSMSecrets replicating HSM secret `name`.
    pub fn lookup<K>(&self, name: &str) -> Vec<ObjectRef<K>>
    where
        K: Resource<DynamicType = ()>,
    {
        self.live
            .read()
            .get(name)
            .map(|namespaces| {
                namespaces
                    .iter()
                    .map(|ns| ObjectRef::new(name).within(ns))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many names are indexed.
    pub fn len(&self) -> usize {
        self.live.read().len()
    }

    /// Whether nothing is indexed.
    pub fn is_empty(&self) -> bool {
        self.live.read().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn object(ns: &str, name: &str) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.name = Some(name.into());
        cm.metadata.namespace = Some(ns.into());
        cm
    }

    fn names(index: &NameIndex, name: &str) -> Vec<String> {
        index
            .lookup::<ConfigMap>(name)
            .into_iter()
            .map(|r| r.namespace.unwrap_or_default())
            .collect()
    }

    #[test]
    fn one_name_in_several_namespaces() {
        let index = NameIndex::default();
        index.apply(&Event::Apply(object("a", "db")));
        index.apply(&Event::Apply(object("b", "db")));
        index.apply(&Event::Apply(object("a", "other")));
        assert_eq!(names(&index, "db"), ["a", "b"]);
        index.apply(&Event::Delete(object("a", "db")));
        assert_eq!(names(&index, "db"), ["b"]);
        index.apply(&Event::Delete(object("b", "db")));
        assert!(names(&index, "db").is_empty());
        assert_eq!(index.len(), 1);
    }

    #[test]
    fn namespaces_stay_sorted_and_unrepeated() {
        let index = NameIndex::default();
        for ns in ["c", "a", "b", "a", "c"] {
            index.apply(&Event::Apply(object(ns, "db")));
        }
        assert_eq!(names(&index, "db"), ["a", "b", "c"]);
        index.apply(&Event::Delete(object("b", "db")));
        index.apply(&Event::Delete(object("b", "db")));
        assert_eq!(names(&index, "db"), ["a", "c"]);
    }

    #[test]
    fn a_relist_replaces_what_was_known() {
        let index = NameIndex::default();
        index.apply(&Event::Apply(object("a", "gone")));
        index.apply(&Event::<ConfigMap>::Init);
        index.apply(&Event::InitApply(object("a", "kept")));
        assert_eq!(
            names(&index, "gone"),
            ["a"],
            "the old view serves until the relist is done"
        );
        index.apply(&Event::<ConfigMap>::InitDone);
        assert!(names(&index, "gone").is_empty());
        assert_eq!(names(&index, "kept"), ["a"]);
    }
}
