//! The store's contract, on every backend: the in-memory token and real SoftHSM2.

mod common;

use common::{Backend, Fresh};
use hsm_store::layout::APPLICATION;
use hsm_store::metadata::{SYNC_VERSION, SecretMetadata};
use hsm_store::token::{NewObject, Token};
use hsm_store::{MetadataChange, SecretStore, StoreError, secret_data};
use rstest::rstest;

fn text(store: &dyn SecretStore, name: &str) -> Vec<(String, String)> {
    store
        .read(name)
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), String::from_utf8(v.expose().to_vec()).unwrap()))
        .collect()
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn meta(version: i64, description: &str) -> SecretMetadata {
    let mut m = SecretMetadata {
        description: description.into(),
        ..Default::default()
    };
    m.labels.insert(SYNC_VERSION.into(), version.to_string());
    m
}

#[rstest]
fn write_read_list_checksum(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let store = fresh.store();
    let data = secret_data([("username", "admin"), ("password", "s3cr3t"), ("data", "d")]);
    let out = store
        .write("db", &data, MetadataChange::Replace(meta(1, "primary db")))
        .unwrap();
    assert!(out.changed);
    assert_eq!(
        text(&store, "db"),
        pairs(&[("data", "d"), ("password", "s3cr3t"), ("username", "admin")])
    );
    assert_eq!(store.list(""), vec!["db"]);
    assert_eq!(
        store.checksum("db").unwrap(),
        hsm_store::checksum::checksum([
            ("data", b"d".as_slice()),
            ("password", b"s3cr3t"),
            ("username", b"admin")
        ])
    );
    assert_eq!(store.metadata("db").unwrap(), meta(1, "primary db"));

    // A fresh process sees the same.
    let reopened = fresh.store();
    assert_eq!(text(&reopened, "db"), text(&store, "db"));
    assert_eq!(
        reopened.checksum("db").unwrap(),
        store.checksum("db").unwrap()
    );
    assert_eq!(reopened.metadata("db").unwrap(), meta(1, "primary db"));
}

#[rstest]
fn exact_name_matching(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let store = fresh.store();
    for name in ["foo", "foobar", "foo-old", "foo/bar", "fo"] {
        store
            .write(name, &secret_data([("k", name)]), MetadataChange::Keep)
            .unwrap();
    }
    store
        .write("foo", &secret_data([("other", "x")]), MetadataChange::Keep)
        .unwrap();
    assert_eq!(text(&store, "foo"), pairs(&[("other", "x")]));
    store.delete("foo").unwrap();
    assert!(matches!(store.read("foo"), Err(StoreError::NotFound(_))));
    let reopened = fresh.store();
    for name in ["foobar", "foo-old", "foo/bar", "fo"] {
        assert_eq!(text(&reopened, name), pairs(&[("k", name)]), "{name}");
    }
    assert_eq!(
        reopened.list(""),
        vec!["fo", "foo-old", "foo/bar", "foobar"]
    );
    assert_eq!(reopened.list("foo"), vec!["foo-old", "foo/bar", "foobar"]);
}

#[rstest]
fn names_with_dots_and_slashes(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let store = fresh.store();
    store
        .write(
            "db.example.com",
            &secret_data([("tls.crt", "c")]),
            MetadataChange::Keep,
        )
        .unwrap();
    store
        .write(
            "team/db",
            &secret_data([("data", "parent"), ("user", "u")]),
            MetadataChange::Keep,
        )
        .unwrap();
    store
        .write(
            "team/db/pw",
            &secret_data([("data", "child"), ("x", "y")]),
            MetadataChange::Keep,
        )
        .unwrap();
    // `team/db/user` as a secret's `data` would share the label of key `user` of `team/db`.
    let err = store
        .write(
            "team/db/user",
            &secret_data([("data", "child")]),
            MetadataChange::Keep,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::LabelConflict { .. }), "{err}");
    let err = store
        .write(
            "team/db/pw",
            &secret_data([("data", "c")]),
            MetadataChange::Keep,
        )
        .and_then(|_| store.write("team/db", &secret_data([("pw", "p")]), MetadataChange::Keep))
        .unwrap_err();
    assert!(matches!(err, StoreError::LabelConflict { .. }), "{err}");
    let reopened = fresh.store();
    assert_eq!(
        text(&reopened, "db.example.com"),
        pairs(&[("tls.crt", "c")])
    );
    assert_eq!(
        text(&reopened, "team/db"),
        pairs(&[("data", "parent"), ("user", "u")])
    );
    assert_eq!(text(&reopened, "team/db/pw"), pairs(&[("data", "c")]));
}

#[rstest]
fn foreign_objects_are_never_touched(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let token = fresh.token();
    // Another application's data objects, under labels the operator would use.
    for label in ["app", "app/key", "app/_metadata"] {
        token
            .create(&NewObject {
                label,
                application: "someone-else",
                object_id: hsm_store::layout::DataType::Plaintext.oid_der(),
                value: b"not yours",
            })
            .unwrap();
    }
    let store = fresh.store();
    assert!(store.list("").is_empty());
    assert!(matches!(store.read("app"), Err(StoreError::NotFound(_))));
    store
        .write("app", &secret_data([("key", "mine")]), MetadataChange::Keep)
        .unwrap();
    store.delete_key("app", "key").unwrap();
    store.delete("app").unwrap();
    store.rescan().unwrap();
    assert_eq!(token.find("someone-else", None).unwrap().len(), 3);
    assert!(token.find(APPLICATION, None).unwrap().is_empty());
}

#[rstest]
fn tombstones_carry_a_version_and_keep_metadata(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let store = fresh.store();
    store
        .write(
            "api",
            &secret_data([("token", "t")]),
            MetadataChange::Replace(meta(7, "api token")),
        )
        .unwrap();
    store.tombstone("api", "2026-01-01T00:00:00Z").unwrap();
    let reopened = fresh.store();
    assert!(matches!(reopened.read("api"), Err(StoreError::NotFound(_))));
    assert!(reopened.list("").is_empty());
    let m = reopened.metadata("api").unwrap();
    assert!(m.is_tombstone());
    assert_eq!(m.sync_version(), 8);
    assert_eq!(m.description, "api token");
    let summary = reopened.summary("api").unwrap();
    assert!(summary.tombstone && !summary.has_data);
}

#[rstest]
fn user_metadata_survives_a_sync_rewrite(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let store = fresh.store();
    let mut user = meta(1, "owned by team a");
    user.labels.insert("team".into(), "a".into());
    store
        .write(
            "s",
            &secret_data([("k", "v1")]),
            MetadataChange::Replace(user),
        )
        .unwrap();
    let mut sync = SecretMetadata::default();
    sync.labels.insert(SYNC_VERSION.into(), "2".into());
    store
        .write(
            "s",
            &secret_data([("k", "v2")]),
            MetadataChange::Merge(sync),
        )
        .unwrap();
    store
        .write("s", &secret_data([("k", "v3")]), MetadataChange::Keep)
        .unwrap();
    let m = fresh.store().metadata("s").unwrap();
    assert_eq!(m.description, "owned by team a");
    assert_eq!(m.labels["team"], "a");
    assert_eq!(m.sync_version(), 2);
}

#[rstest]
fn keys_are_deleted_one_at_a_time(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let store = fresh.store();
    store
        .write(
            "s",
            &secret_data([("a", "1"), ("b", "2")]),
            MetadataChange::Keep,
        )
        .unwrap();
    store.delete_key("s", "a").unwrap();
    assert!(matches!(
        store.delete_key("s", "a"),
        Err(StoreError::KeyNotFound { .. })
    ));
    assert!(matches!(
        store.delete_key("nope", "a"),
        Err(StoreError::NotFound(_))
    ));
    let reopened = fresh.store();
    assert_eq!(text(&reopened, "s"), pairs(&[("b", "2")]));
    assert_eq!(
        reopened.checksum("s").unwrap(),
        hsm_store::checksum::checksum([("b", b"2".as_slice())])
    );
}

#[rstest]
fn bad_input_is_rejected_and_loses_nothing(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let store = fresh.store();
    store
        .write("good", &secret_data([("k", "v")]), MetadataChange::Keep)
        .unwrap();
    for name in ["", "/x", "x/", ".hsm-txn/good", "good/_metadata", "a b"] {
        let err = store
            .write(name, &secret_data([("k", "v")]), MetadataChange::Keep)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::InvalidName { .. }),
            "{name}: {err}"
        );
    }
    let err = store
        .write(
            "good",
            &secret_data([("k", "v2"), ("_metadata", "x")]),
            MetadataChange::Keep,
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidKey { .. }), "{err}");
    assert_eq!(text(&fresh.store(), "good"), pairs(&[("k", "v")]));
}

#[rstest]
fn changes_since_a_version(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let store = fresh.store();
    store
        .write("a", &secret_data([("k", "1")]), MetadataChange::Keep)
        .unwrap();
    store
        .write("b", &secret_data([("k", "1")]), MetadataChange::Keep)
        .unwrap();
    let v = store.version();
    assert!(store.changes_since(v).changed.is_empty());
    store
        .write("a", &secret_data([("k", "2")]), MetadataChange::Keep)
        .unwrap();
    store.delete("b").unwrap();
    // Writing the same again is no change.
    store
        .write("a", &secret_data([("k", "2")]), MetadataChange::Keep)
        .unwrap();
    let changes = store.changes_since(v);
    assert!(changes.complete);
    assert_eq!(
        changes
            .changed
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>(),
        ["a"]
    );
    assert_eq!(changes.removed, ["b"]);
    assert!(store.changes_since(changes.version).changed.is_empty());
}

#[rstest]
fn rescan_sees_other_writers(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let ours = fresh.store();
    ours.write("kept", &secret_data([("k", "1")]), MetadataChange::Keep)
        .unwrap();
    ours.write("gone", &secret_data([("k", "1")]), MetadataChange::Keep)
        .unwrap();
    ours.write("changed", &secret_data([("k", "1")]), MetadataChange::Keep)
        .unwrap();
    let v = ours.version();

    let other = fresh.store();
    other
        .write("new", &secret_data([("k", "1")]), MetadataChange::Keep)
        .unwrap();
    other.delete("gone").unwrap();
    other
        .write("changed", &secret_data([("k", "2")]), MetadataChange::Keep)
        .unwrap();

    let report = ours.rescan().unwrap();
    assert_eq!(report.added, ["new"]);
    assert_eq!(report.changed, ["changed"]);
    assert_eq!(report.removed, ["gone"]);
    assert_eq!(text(&ours, "changed"), pairs(&[("k", "2")]));
    let changes = ours.changes_since(v);
    let mut names: Vec<_> = changes.changed.iter().map(|s| s.name.as_str()).collect();
    names.sort();
    assert_eq!(names, ["changed", "new"]);
    assert_eq!(changes.removed, ["gone"]);
}

#[rstest]
fn a_stale_index_heals_on_read(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let ours = fresh.store();
    ours.write("s", &secret_data([("k", "1")]), MetadataChange::Keep)
        .unwrap();
    let other = fresh.store();
    other
        .write(
            "s",
            &secret_data([("k", "2"), ("j", "3")]),
            MetadataChange::Keep,
        )
        .unwrap();
    // Our index still points at the destroyed object: the read notices and re-scans.
    assert_eq!(text(&ours, "s"), pairs(&[("j", "3"), ("k", "2")]));
}

#[rstest]
fn a_reopened_store_numbers_on_and_asks_old_followers_to_resync(
    #[values(Backend::Memory, Backend::SoftHsm, Backend::Pico)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let first = fresh.store();
    first
        .write("a", &secret_data([("k", "1")]), MetadataChange::Keep)
        .unwrap();
    first
        .write("b", &secret_data([("k", "1")]), MetadataChange::Keep)
        .unwrap();
    let last = first.version();
    drop(first);
    let second = hsm_store::Store::open_continuing(fresh.token(), last).unwrap();
    assert!(second.version() > last);
    assert!(
        !second.changes_since(last).complete,
        "a follower of the old store must resync"
    );
    assert!(!second.changes_since(0).complete);
    assert!(second.changes_since(second.version()).complete);
}
