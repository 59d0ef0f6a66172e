//! A write cut off at any token call leaves either the old or the new secret, in full, never a
//! mix and never nothing where there was something: for every N, the N-th call of a create,
//! an overwrite that changes the key set, a tombstone and a delete fails (and every later one,
//! as for a crashed process), then the token is opened again. The same cut is also healed in
//! place: the store that saw the failure recovers on its next operation.

mod common;

use common::{Backend, Fresh};
use hsm_store::layout::{APPLICATION, JOURNAL_PREFIX};
use hsm_store::metadata::SecretMetadata;
use hsm_store::token::{InstrumentedToken, Token};
use hsm_store::{MetadataChange, SecretData, SecretStore, Store, StoreError, secret_data};
use rstest::rstest;
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq)]
struct State {
    data: Option<Vec<(String, Vec<u8>)>>,
    metadata: Option<SecretMetadata>,
}

fn state(store: &dyn SecretStore, name: &str) -> State {
    let data = match store.read(name) {
        Ok(d) => Some(
            d.iter()
                .map(|(k, v)| (k.clone(), v.expose().to_vec()))
                .collect(),
        ),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => panic!("read {name}: {e}"),
    };
    State {
        data,
        metadata: store.metadata(name).ok(),
    }
}

fn described(d: &str) -> MetadataChange {
    MetadataChange::Replace(SecretMetadata {
        description: d.into(),
        ..Default::default()
    })
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    OverwriteChangingKeys,
    Tombstone,
    Delete,
}

fn old_secret() -> SecretData {
    secret_data([("a", "old-a"), ("b", "old-b"), ("c", "same")])
}

fn prepare(store: &dyn SecretStore, op: Op) {
    store
        .write(
            "neighbour",
            &secret_data([("k", "n")]),
            MetadataChange::Keep,
        )
        .unwrap();
    store
        .write(
            "s/x",
            &secret_data([("data", "nested")]),
            MetadataChange::Keep,
        )
        .unwrap();
    if !matches!(op, Op::Create) {
        store.write("s", &old_secret(), described("old")).unwrap();
    }
}

fn run(store: &dyn SecretStore, op: Op) -> Result<(), StoreError> {
    match op {
        Op::Create => store
            .write(
                "s",
                &secret_data([("a", "1"), ("b", "2"), ("c", "3")]),
                described("new"),
            )
            .map(drop),
        Op::OverwriteChangingKeys => store
            .write(
                "s",
                &secret_data([("a", "new-a"), ("c", "same"), ("d", "new-d")]),
                described("new"),
            )
            .map(drop),
        Op::Tombstone => store.tombstone("s", "2026-01-01T00:00:00Z").map(drop),
        Op::Delete => store.delete("s"),
    }
}

/// The states before and after `op`, and how many token calls it makes from a freshly
/// opened store (exactly as in the cut runs).
fn reference(backend: Backend, op: Op, relabel: bool) -> (State, State, u64) {
    let fresh = Fresh::new(backend);
    prepare(&fresh.store(), op);
    let store = reopen_with(&fresh, relabel);
    let before = state(&store, "s");
    let calls = store.token().counts();
    run(&store, op).unwrap();
    let made = store.token().counts().since(&calls).total();
    (before, state(&store, "s"), made)
}

fn assert_clean(token: &dyn Token) {
    let journals: Vec<_> = token
        .find(APPLICATION, None)
        .unwrap()
        .into_iter()
        .filter(|h| token.read(*h).unwrap().label.starts_with(JOURNAL_PREFIX))
        .collect();
    assert!(journals.is_empty(), "a journal survived recovery");
}

/// `relabel: false` runs the fallback for modules that cannot relabel objects.
#[rstest]
fn every_cut_leaves_old_or_new(
    #[values(Backend::Memory, Backend::SoftHsm)] backend: Backend,
    #[values(Op::Create, Op::OverwriteChangingKeys, Op::Tombstone, Op::Delete)] op: Op,
    #[values(true, false)] relabel: bool,
) {
    let (before, after, calls) = reference(backend, op, relabel);
    assert_ne!(before, after);
    assert!(calls >= 2, "{op:?} made {calls} calls");
    let mut saw = (0, 0);
    for cut in 1..=calls {
        let fresh = Fresh::new(backend);
        prepare(&fresh.store(), op);
        let token = Arc::new(InstrumentedToken::new(fresh.token()));
        if !relabel {
            token.refuse_relabel();
        }
        let store = Store::open(token.clone()).unwrap();
        token.cut_after(cut);
        assert!(
            run(&store, op).is_err(),
            "{op:?} cut at call {cut} still succeeded"
        );
        assert!(token.was_cut());

        // As after a crash: a new process opens the token (with the same module abilities).
        let reopened = reopen_with(&fresh, relabel);
        let now = state(&reopened, "s");
        if now == before {
            saw.0 += 1;
        } else if now == after {
            saw.1 += 1;
        } else {
            panic!("{op:?} cut at call {cut}/{calls}: neither old nor new: {now:?}");
        }
        assert_eq!(
            state(&reopened, "neighbour").data,
            Some(vec![("k".into(), b"n".to_vec())])
        );
        assert_eq!(
            state(&reopened, "s/x").data,
            Some(vec![("data".into(), b"nested".to_vec())])
        );
        assert_clean(&fresh.token());
        // The store keeps no leftovers: a rescan finds what the index holds.
        assert!(reopened.rescan().unwrap().is_empty());
    }
    // Early cuts undo the write and late ones complete it: both paths ran.
    assert!(
        saw.0 > 0 && saw.1 > 0,
        "{op:?}: old {} new {}",
        saw.0,
        saw.1
    );
}

fn reopen_with(fresh: &Fresh, relabel: bool) -> Store<Arc<InstrumentedToken<common::AnyToken>>> {
    let token = Arc::new(InstrumentedToken::new(fresh.token()));
    if !relabel {
        token.refuse_relabel();
    }
    Store::open(token).unwrap()
}

#[rstest]
fn a_cut_store_heals_in_place(
    #[values(Backend::Memory, Backend::SoftHsm)] backend: Backend,
    #[values(Op::Create, Op::OverwriteChangingKeys, Op::Delete)] op: Op,
) {
    let (before, after, calls) = reference(backend, op, true);
    for cut in 1..=calls {
        let fresh = Fresh::new(backend);
        prepare(&fresh.store(), op);
        let token = Arc::new(InstrumentedToken::new(fresh.token()));
        let store = Store::open(token.clone()).unwrap();
        token.cut_after(cut);
        run(&store, op).unwrap_err();
        token.heal();
        let now = state(&store, "s");
        assert!(now == before || now == after, "cut {cut}: {now:?}");
        // And it keeps working.
        store
            .write("s", &secret_data([("z", "later")]), MetadataChange::Keep)
            .unwrap();
        assert_eq!(
            state(&fresh.store(), "s").data,
            Some(vec![("z".into(), b"later".to_vec())])
        );
    }
}
