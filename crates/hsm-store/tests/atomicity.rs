//! A write cut off at any token call leaves either the old or the new secret, in full, never a
//! mix and never nothing where there was something: for every N, the N-th call of a create,
//! an overwrite that changes the key set, a tombstone and a delete fails (and every later one,
//! as for a crashed process), then the token is opened again. The same cut is also healed in
//! place: the store that saw the failure recovers on its next operation.

mod common;

use common::{Backend, Fresh};
use hsm_store::layout::{APPLICATION, JOURNAL_PREFIX};
use hsm_store::metadata::SecretMetadata;
use hsm_store::token::{InstrumentedToken, Token, TokenErrorKind};
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
        // A ghost (a destroy cut in half on the card) is no live journal, whatever its label.
        .filter(|h| match token.read(*h) {
            Ok(object) => object.label.starts_with(JOURNAL_PREFIX),
            Err(e) if matches!(e.kind, TokenErrorKind::ValueLost { .. }) => false,
            Err(e) => panic!("reading {h}: {e}"),
        })
        .collect();
    assert!(journals.is_empty(), "a journal survived recovery");
}

/// After a cut: the neighbours [`prepare`] wrote are whole, no journal is left, and the store
/// keeps no leftovers (a rescan finds what the index holds).
fn assert_untouched_and_clean(reopened: &dyn SecretStore, token: &dyn Token) {
    assert_eq!(
        state(reopened, "neighbour").data,
        Some(vec![("k".into(), b"n".to_vec())])
    );
    assert_eq!(
        state(reopened, "s/x").data,
        Some(vec![("data".into(), b"nested".to_vec())])
    );
    assert_clean(token);
    assert!(reopened.rescan().unwrap().is_empty());
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
        assert_untouched_and_clean(&reopened, &fresh.token());
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

/// The virtual Pico HSM through pcscd and OpenSC: one card per test process, so each cut
/// starts by plugging in the card as it was after [`prepare`] (a snapshot), and OpenSC sees
/// a removal between cuts, as with a real token.
struct CardRig {
    fresh: Fresh,
    prepared: virtual_pico::card::Card,
}

impl CardRig {
    fn new(op: Op) -> CardRig {
        let fresh = Fresh::new(Backend::Pico);
        prepare(&fresh.store(), op);
        let prepared = fresh.fixture().expect("a card").card.card();
        CardRig { fresh, prepared }
    }

    fn card(&self) -> &virtual_pico::vpcd::VirtualCard {
        &self.fresh.fixture().expect("a card").card
    }

    /// Plugs in the prepared card (pulling whatever is in the reader first).
    fn reset(&self) {
        let fixture = self.fresh.fixture().expect("a card");
        fixture.replug(self.prepared.clone()).expect("replug");
    }

    /// Plugs the card that was pulled back in, as it is.
    fn reinsert(&self) {
        let fixture = self.fresh.fixture().expect("a card");
        fixture.replug(fixture.card.card()).expect("reinsert");
    }

    /// What a new process finds: `s` old or new, the neighbours whole, no journal left.
    fn check(&self, op: Op, before: &State, after: &State, what: &str) -> bool {
        let reopened = Store::open(self.fresh.token())
            .unwrap_or_else(|e| panic!("{op:?} {what}: opening the store again: {e}"));
        let now = state(&reopened, "s");
        assert!(
            now == *before || now == *after,
            "{op:?} {what}: neither old nor new: {now:?}"
        );
        assert_untouched_and_clean(&reopened, &self.fresh.token());
        now == *after
    }
}

/// The states before and after `op` on the card, and how many token calls and APDUs it
/// takes from a freshly opened store.
fn card_reference(rig: &CardRig, op: Op) -> (State, State, u64, u64) {
    rig.reset();
    let store = Store::open(Arc::new(InstrumentedToken::new(rig.fresh.token()))).unwrap();
    let before = state(&store, "s");
    let (calls, apdus) = (store.token().counts(), rig.card().apdu_count());
    run(&store, op).unwrap();
    let made = store.token().counts().since(&calls).total();
    let sent = rig.card().apdu_count() - apdus;
    (before, state(&store, "s"), made, sent)
}

/// A token call that fails at every point of a write, on the card (OpenSC cannot relabel,
/// so this is the store's fallback path on real hardware).
#[rstest]
fn on_the_card_every_failed_call_leaves_old_or_new(
    #[values(Op::Create, Op::OverwriteChangingKeys, Op::Tombstone, Op::Delete)] op: Op,
) {
    let rig = CardRig::new(op);
    let (before, after, calls, _) = card_reference(&rig, op);
    assert_ne!(before, after);
    let mut saw = (0, 0);
    for cut in 1..=calls {
        rig.reset();
        let token = Arc::new(InstrumentedToken::new(rig.fresh.token()));
        let store = Store::open(token.clone()).unwrap();
        token.cut_after(cut);
        assert!(
            run(&store, op).is_err(),
            "{op:?} cut at call {cut} succeeded"
        );
        drop(store);
        match rig.check(op, &before, &after, &format!("cut at call {cut}/{calls}")) {
            false => saw.0 += 1,
            true => saw.1 += 1,
        }
    }
    assert!(
        saw.0 > 0 && saw.1 > 0,
        "{op:?}: old {} new {}",
        saw.0,
        saw.1
    );
}

/// The card pulled out after every APDU of a write, then plugged back in: a new process
/// finds the old or the new secret, and a write that was acknowledged is the new one.
/// Sharded so the cuts of one operation run in parallel processes.
#[rstest]
fn on_the_card_every_removal_leaves_old_or_new(
    #[values(Op::Create, Op::OverwriteChangingKeys, Op::Tombstone, Op::Delete)] op: Op,
    #[values(0, 1)] shard: u64,
) {
    let rig = CardRig::new(op);
    let (before, after, _, apdus) = card_reference(&rig, op);
    assert!(apdus >= 2, "{op:?} sent {apdus} APDUs");
    for cut in (1..=apdus).filter(|cut| cut % 2 == shard) {
        rig.reset();
        let store = rig.fresh.store();
        rig.card().drop_after(cut);
        let acknowledged = run(&store, op).is_ok();
        drop(store);
        rig.reinsert();
        let new = rig.check(
            op,
            &before,
            &after,
            &format!("pulled after APDU {cut}/{apdus}"),
        );
        assert!(
            new || !acknowledged,
            "{op:?} pulled after APDU {cut}: acknowledged but the old value is there"
        );
    }
}
