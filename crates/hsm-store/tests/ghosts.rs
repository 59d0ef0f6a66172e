//! Ghosts: objects whose value a destroy cut in half has removed while their description
//! stays (a SmartCard-HSM behind OpenSC; see `TokenErrorKind::ValueLost`). The module can
//! neither read nor destroy them, so the store must never let one stop it: it opens, lists,
//! reads, writes and deletes around them. (The end-to-end case, the card pulled during
//! every write, is in `atomicity.rs`.)

mod common;

use common::values;
use hsm_store::layout::{APPLICATION, value_label};
use hsm_store::token::Token;
use hsm_store::{MemoryToken, MetadataChange, SecretStore, Store, StoreError, secret_data};
use std::sync::Arc;

#[test]
fn a_ghost_never_stops_the_store() {
    let token = Arc::new(MemoryToken::new());
    let store = Store::open(token.clone()).unwrap();
    store
        .write(
            "s",
            &secret_data([("a", "1"), ("b", "2")]),
            MetadataChange::Keep,
        )
        .unwrap();
    store
        .write("other", &secret_data([("k", "v")]), MetadataChange::Keep)
        .unwrap();
    let b = token
        .find(APPLICATION, Some(&value_label("s", "b")))
        .unwrap();
    token.lose_value(b[0]);

    // The store that saw it happen finds the entry stale and reads the token again.
    assert_eq!(values(&store, "s"), vec![("a".into(), b"1".to_vec())]);

    // A new process opens, and the ghost is no key of anything.
    let reopened = Store::open(token.clone()).unwrap();
    assert_eq!(values(&reopened, "s"), vec![("a".into(), b"1".to_vec())]);
    assert_eq!(
        values(&reopened, "other"),
        vec![("k".into(), b"v".to_vec())]
    );
    assert!(reopened.rescan().unwrap().is_empty());

    // Writing the ghost's key again, and deleting the secret, work around it.
    reopened
        .write("s", &secret_data([("b", "new")]), MetadataChange::Keep)
        .unwrap();
    assert_eq!(values(&reopened, "s"), vec![("b".into(), b"new".to_vec())]);
    let again = Store::open(token.clone()).unwrap();
    assert_eq!(values(&again, "s"), vec![("b".into(), b"new".to_vec())]);
    again.delete("s").unwrap();
    assert!(matches!(again.read("s"), Err(StoreError::NotFound(_))));
    assert!(Store::open(token.clone()).unwrap().list("").eq(&["other"]));
    // Only the ghost is left of `s`.
    assert_eq!(
        token
            .find(APPLICATION, Some(&value_label("s", "b")))
            .unwrap(),
        b
    );
}
