//! Server-side apply of the objects the manager owns, sent only when the desired object
//! differs from what is there.
//!
//! "Differs" has two halves, both pure ([`needs_apply`]): every field the manager sets must
//! hold its value in the live object (so a hand edit of one of them is undone, while fields
//! the server defaults or others own are left alone), and the live object must carry the
//! fingerprint of the desired object as last applied ([`annotations::APPLIED_HASH`]), so a
//! field the manager stops setting (a `nodeSelector` removed from the HSMDevice) is removed
//! by the next apply.

use crate::secret::FIELD_MANAGER;
use hsm_api::names::annotations;
use kube::api::{Api, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::fmt::Debug;

/// The fingerprint of an object as the manager wants it: FNV-1a over its JSON (stable across
/// releases and platforms), in hex.
pub fn fingerprint<K: Serialize>(object: &K) -> String {
    let json = serde_json::to_vec(object).expect("a Kubernetes object serialises");
    let hash = json.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// `desired` with its fingerprint annotation, ready to apply.
pub fn stamped<K: Resource + Serialize>(mut desired: K) -> K {
    let hash = fingerprint(&desired);
    desired
        .annotations_mut()
        .insert(annotations::APPLIED_HASH.into(), hash);
    desired
}

/// Whether every value `desired` sets is in `live`: objects key by key, lists element by
/// element with the same length, anything else equal. A `null` in `desired` asks nothing.
pub fn contains(live: &Value, desired: &Value) -> bool {
    match (live, desired) {
        (_, Value::Null) => true,
        (Value::Object(live), Value::Object(desired)) => desired.iter().all(|(k, v)| {
            v.is_null()
                || live
                    .get(k)
                    .is_some_and(|live_value| contains(live_value, v))
        }),
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| contains(l, d))
        }
        (live, desired) => live == desired,
    }
}

/// Whether `stamped_desired` (from [`stamped`]) must be applied over `live`.
pub fn needs_apply<K: Resource + Serialize>(stamped_desired: &K, live: Option<&K>) -> bool {
    let Some(live) = live else {
        return true;
    };
    let want = stamped_desired.annotations().get(annotations::APPLIED_HASH);
    if live.annotations().get(annotations::APPLIED_HASH) != want {
        return true;
    }
    let (Ok(live), Ok(desired)) = (
        serde_json::to_value(live),
        serde_json::to_value(stamped_desired),
    ) else {
        return true;
    };
    !contains(&live, &desired)
}

/// Applies `desired` (server-side apply, the manager's field manager, forced) unless `live`
/// already is it; returns whether it was sent.
pub async fn apply_if_changed<K>(
    api: &Api<K>,
    desired: K,
    live: Option<&K>,
) -> Result<bool, kube::Error>
where
    K: Resource + Serialize + DeserializeOwned + Clone + Debug,
{
    let desired = stamped(desired);
    if !needs_apply(&desired, live) {
        return Ok(false);
    }
    api.patch(
        &desired.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&desired),
    )
    .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use serde_json::json;

    fn config_map(value: Value) -> ConfigMap {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn contains_ignores_what_the_server_added() {
        let live = json!({"spec": {"a": 1, "b": [{"x": 1, "y": 2}], "defaulted": true}});
        assert!(contains(&live, &json!({"spec": {"a": 1, "b": [{"x": 1}]}})));
        assert!(contains(&live, &json!({"spec": {"a": 1, "gone": null}})));
        assert!(!contains(&live, &json!({"spec": {"a": 2}})));
        assert!(!contains(
            &live,
            &json!({"spec": {"b": [{"x": 1}, {"x": 2}]}})
        ));
        assert!(!contains(&live, &json!({"spec": {"c": 1}})));
    }

    #[test]
    fn an_unchanged_object_is_not_applied_and_any_change_is() {
        let desired = config_map(json!({"metadata": {"name": "a"}, "data": {"k": "v"}}));
        let stamped_desired = stamped(desired.clone());
        assert!(needs_apply(&stamped_desired, None));
        // What the server returns: the same, plus its own fields.
        let mut live = stamped_desired.clone();
        live.metadata.uid = Some("u".into());
        live.metadata.resource_version = Some("7".into());
        assert!(!needs_apply(&stamped_desired, Some(&live)));

        // Someone edited a field the manager sets: applied again.
        let mut edited = live.clone();
        edited.data.as_mut().unwrap().insert("k".into(), "w".into());
        assert!(needs_apply(&stamped_desired, Some(&edited)));

        // The manager stopped setting a field: the fingerprint differs.
        let fewer = stamped(config_map(json!({"metadata": {"name": "a"}})));
        assert!(needs_apply(&fewer, Some(&live)));
        assert_ne!(fingerprint(&desired), fingerprint(&fewer));
        assert_eq!(fingerprint(&desired), fingerprint(&desired.clone()));
    }
}
