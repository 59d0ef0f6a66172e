//! The index answers listing, checksums, metadata and change detection without touching the
//! token, and reads cost one attribute read per key and no search.

mod common;

use common::{Backend, Fresh};
use hsm_store::{MetadataChange, SecretStore, secret_data};
use rstest::rstest;

#[rstest]
fn index_operations_make_no_token_calls(
    #[values(Backend::Memory, Backend::SoftHsm)] backend: Backend,
) {
    let fresh = Fresh::new(backend);
    let writer = fresh.store();
    for i in 0..20 {
        writer
            .write(
                &format!("s{i}"),
                &secret_data([("a", "1"), ("b", "2"), ("c", "3")]),
                MetadataChange::Keep,
            )
            .unwrap();
    }
    drop(writer);
    let store = fresh.instrumented();
    let opened = store.token().counts();
    assert_eq!(opened.find, 1, "opening scans with one search");
    assert_eq!(opened.read, 20 * 4, "and reads each object once");

    assert_eq!(store.list("").len(), 20);
    assert_eq!(store.entries().len(), 20);
    for i in 0..20 {
        store.checksum(&format!("s{i}")).unwrap();
        store.metadata(&format!("s{i}")).unwrap();
        store.summary(&format!("s{i}")).unwrap();
    }
    let _ = store.changes_since(0);
    assert_eq!(store.token().counts().since(&opened).total(), 0);

    let before = store.token().counts();
    store.read("s3").unwrap();
    let read = store.token().counts().since(&before);
    assert_eq!((read.find, read.read, read.total()), (0, 3, 3));

    // Writing what is already there costs nothing.
    let before = store.token().counts();
    let out = store
        .write(
            "s3",
            &secret_data([("a", "1"), ("b", "2"), ("c", "3")]),
            MetadataChange::Keep,
        )
        .unwrap();
    assert!(!out.changed);
    assert_eq!(store.token().counts().since(&before).total(), 0);

    // Changing one key replaces only that object (plus the journal around it).
    let before = store.token().counts();
    store
        .write(
            "s3",
            &secret_data([("a", "1"), ("b", "changed"), ("c", "3")]),
            MetadataChange::Keep,
        )
        .unwrap();
    let w = store.token().counts().since(&before);
    assert_eq!((w.find, w.read, w.create, w.destroy), (0, 0, 2, 2));

    // Adding one key to a secret is a single create: atomic without a journal.
    let before = store.token().counts();
    store
        .write(
            "s4",
            &secret_data([("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")]),
            MetadataChange::Keep,
        )
        .unwrap();
    let w = store.token().counts().since(&before);
    assert_eq!((w.create, w.destroy, w.total()), (1, 0, 1));
}
