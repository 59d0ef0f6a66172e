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

/// The card applies an APDU of a write and is pulled before it answers (the command took
/// effect, the host never hears so), after every APDU in turn: a new process finds the old
/// or the new secret.
#[rstest]
fn on_the_card_every_lost_answer_leaves_old_or_new(
    #[values(Op::Create, Op::OverwriteChangingKeys, Op::Tombstone, Op::Delete)] op: Op,
    #[values(0, 1)] shard: u64,
) {
    let rig = CardRig::new(op);
    let (before, after, _, apdus) = card_reference(&rig, op);
    let mut checked = 0;
    for cut in (1..=apdus).filter(|cut| cut % 2 == shard) {
        rig.reset();
        let store = rig.fresh.store();
        let applied = rig.card().apdu_count() + cut;
        rig.card().lose_answer_after(cut);
        let acknowledged = run(&store, op).is_ok();
        drop(store);
        assert!(
            rig.card().apdu_count() >= applied,
            "{op:?}: APDU {cut} was not reached"
        );
        rig.reinsert();
        let new = rig.check(
            op,
            &before,
            &after,
            &format!("answer to APDU {cut}/{apdus} lost"),
        );
        assert!(
            new || !acknowledged,
            "{op:?} answer to APDU {cut} lost: acknowledged but the old value is there"
        );
        checked += 1;
    }
    assert!(checked > 0);
}

/// Power fails inside an UPDATE BINARY of a write: the file holds the first half of what
/// that command carried (the card gives no atomicity within one UPDATE BINARY), the answer
/// never comes. Every UPDATE BINARY of the write in turn: old or new, never a mix.
#[rstest]
fn on_the_card_every_torn_update_leaves_old_or_new(
    #[values(Op::Create, Op::OverwriteChangingKeys, Op::Tombstone, Op::Delete)] op: Op,
) {
    let rig = CardRig::new(op);
    rig.reset();
    let store = Store::open(rig.fresh.token()).unwrap();
    let before = state(&store, "s");
    let logged = rig.card().apdu_log().len();
    run(&store, op).unwrap();
    let sent = rig.card().apdu_log()[logged..].to_vec();
    let after = state(&store, "s");
    drop(store);
    // Which APDUs of the write are UPDATE BINARY with data to tear.
    let updates: Vec<u64> = sent
        .iter()
        .enumerate()
        .filter(|(_, apdu)| apdu.header[1] == 0xD7)
        .map(|(i, _)| i as u64 + 1)
        .collect();
    assert!(!updates.is_empty(), "{op:?} wrote no file");
    for &cut in &updates {
        rig.reset();
        let store = rig.fresh.store();
        rig.card().tear_at(cut);
        assert!(
            run(&store, op).is_err(),
            "{op:?} torn in APDU {cut} still succeeded"
        );
        drop(store);
        rig.reinsert();
        rig.check(op, &before, &after, &format!("torn inside APDU {cut}"));
    }
}

/// Asked by [`every_cut_is_old_or_new_in_a_new_process`] to play the new process: the
/// token's label and whether relabelling is allowed.
const CHILD_LABEL: &str = "HSM_STORE_CRASH_CHILD_LABEL";
const CHILD_RELABEL: &str = "HSM_STORE_CRASH_CHILD_RELABEL";

/// A write cut at every call, then the token opened by a new process that loads SoftHSM2
/// afresh (nothing of the writer's module state survives, as after a real crash): old or
/// new, the neighbours whole, no journal left. The same test, run with [`CHILD_LABEL`] set,
/// is that new process.
#[test]
fn every_cut_is_old_or_new_in_a_new_process() {
    if let Ok(label) = std::env::var(CHILD_LABEL) {
        return child_reopens(&label, std::env::var(CHILD_RELABEL).as_deref() == Ok("1"));
    }
    for op in [
        Op::Create,
        Op::OverwriteChangingKeys,
        Op::Tombstone,
        Op::Delete,
    ] {
        for relabel in [true, false] {
            let (before, after, calls) = reference(Backend::SoftHsm, op, relabel);
            let mut saw = (0, 0);
            for cut in 1..=calls {
                let fresh = Fresh::new(Backend::SoftHsm);
                prepare(&fresh.store(), op);
                let token = Arc::new(InstrumentedToken::new(fresh.token()));
                if !relabel {
                    token.refuse_relabel();
                }
                let store = Store::open(token.clone()).unwrap();
                token.cut_after(cut);
                assert!(run(&store, op).is_err(), "{op:?} cut at {cut} succeeded");
                // The writer's sessions close, as its process ends.
                drop(store);
                drop(token);
                let Fresh::SoftHsm(hsm) = &fresh else {
                    unreachable!()
                };
                let found = state_in_a_new_process(&hsm.label, relabel);
                if found == format!("{before:?}") {
                    saw.0 += 1;
                } else if found == format!("{after:?}") {
                    saw.1 += 1;
                } else {
                    panic!("{op:?} cut at {cut}/{calls}: neither old nor new: {found}");
                }
            }
            assert!(
                saw.0 > 0 && saw.1 > 0,
                "{op:?}: old {} new {}",
                saw.0,
                saw.1
            );
        }
    }
}

/// Runs this test binary as the new process on the token `label`; returns the state of `s`
/// it found (as `Debug`).
fn state_in_a_new_process(label: &str, relabel: bool) -> String {
    let output = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "every_cut_is_old_or_new_in_a_new_process",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_LABEL, label)
        .env(CHILD_RELABEL, if relabel { "1" } else { "0" })
        .output()
        .expect("run the new process");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the new process failed: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find_map(|line| line.split_once("STATE ").map(|(_, state)| state))
        .unwrap_or_else(|| panic!("no state from the new process: {stdout}"))
        .to_owned()
}

/// The new process: loads SoftHSM2 (the configuration comes through the environment from
/// the writer), opens the token, and reports what it finds.
fn child_reopens(label: &str, relabel: bool) {
    let module = hsm_store::Module::load(hsm_store::testing::SOFTHSM2_MODULE).unwrap();
    let open = || {
        hsm_store::Pkcs11Token::open(
            &module,
            &hsm_store::TokenSelector::Label(label.to_owned()),
            &hsm_store::testing::TEST_PIN.into(),
        )
        .unwrap()
    };
    let token = Arc::new(InstrumentedToken::new(open()));
    if !relabel {
        token.refuse_relabel();
    }
    let store = Store::open(token).unwrap();
    let found = state(&store, "s");
    assert_untouched_and_clean(&store, &open());
    println!("STATE {found:?}");
}

/// A module that cannot relabel commits a write by copying its journal into place; a copy
/// torn part way (power lost inside the card's write) stands under the metadata label with
/// half the journal's bytes. Recovery replaces it with a whole copy: the new secret, with its
/// metadata.
#[test]
fn a_torn_copy_of_a_committing_journal_is_replaced() {
    use hsm_store::token::{MemoryToken, NewObject};
    let memory = Arc::new(MemoryToken::new());
    let token = Arc::new(InstrumentedToken::new(memory.clone()));
    token.refuse_relabel();
    let store = Store::open(token.clone()).unwrap();
    prepare(&store, Op::Create);
    // Create: three values and the journal (4 calls), the refused relabel, then the copy.
    token.cut_after(6);
    run(&store, Op::Create).unwrap_err();
    drop(store);
    let journal = memory
        .find(APPLICATION, None)
        .unwrap()
        .into_iter()
        .map(|h| memory.read(h).unwrap())
        .find(|o| o.label.starts_with(JOURNAL_PREFIX))
        .expect("the journal is left");
    memory
        .create(&NewObject {
            label: "s/_metadata",
            application: APPLICATION,
            object_id: hsm_store::layout::DataType::Json.oid_der(),
            value: &journal.value[..journal.value.len() / 2],
        })
        .unwrap();
    let reopened = Store::open(memory.clone()).unwrap();
    let now = state(&reopened, "s");
    assert_eq!(now.metadata.map(|m| m.description), Some("new".into()));
    assert_untouched_and_clean(&reopened, memory.as_ref());
}
