//! `cargo xtask bench store`: the store on SoftHSM2 beside a minimal raw cryptoki loop doing
//! the same token work (the floor), then the calls per operation counted two ways: calls
//! through the store's `Token` trait, and the calls the module really receives, counted by
//! OpenSC's pkcs11-spy in a second, untimed run of this program. Prints PASS or FAIL against
//! each target and exits non-zero on a miss.
//!
//! Secrets have 5 keys of 1 KiB. The floor writes the same objects the store leaves on the
//! token (5 values + metadata) with bare `C_CreateObject` calls, overwrites by destroying and
//! creating them (as the Go operator did), and reads values from handles it already holds
//! (with cryptoki's `get_attributes`, which asks the module for the sizes first).

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_store::layout::{APPLICATION, DataType};
use hsm_store::testing::{Pkcs11Spy, SOFTHSM2_MODULE, SoftHsm, SpiedCalls};
use hsm_store::token::InstrumentedToken;
use hsm_store::{MetadataChange, SecretData, SecretStore, SecretValue, Store};
use std::sync::Arc;
use std::time::{Duration, Instant};

const KEYS: usize = 5;
const VALUE_LEN: usize = 1024;
const SECRETS: usize = 200;
const LIST_SECRETS: usize = 1000;

fn value(secret: usize, key: usize, round: usize) -> Vec<u8> {
    let seed = format!("{secret}-{key}-{round}-");
    seed.bytes().cycle().take(VALUE_LEN).collect()
}

fn data(secret: usize, round: usize) -> SecretData {
    (0..KEYS)
        .map(|k| (format!("key{k}"), SecretValue::new(value(secret, k, round))))
        .collect()
}

fn raw_create(session: &Session, label: String, value: Vec<u8>) -> ObjectHandle {
    session
        .create_object(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Modifiable(true),
            Attribute::Label(label.into_bytes()),
            Attribute::Application(APPLICATION.as_bytes().to_vec()),
            Attribute::ObjectId(DataType::infer(&value).oid_der()),
            Attribute::Value(value),
        ])
        .expect("create")
}

fn raw_write(session: &Session, secret: usize, round: usize) -> Vec<ObjectHandle> {
    let mut handles: Vec<ObjectHandle> = (0..KEYS)
        .map(|k| {
            raw_create(
                session,
                format!("s{secret}/key{k}"),
                value(secret, k, round),
            )
        })
        .collect();
    handles.push(raw_create(
        session,
        format!("s{secret}/_metadata"),
        b"{}".to_vec(),
    ));
    handles
}

fn per_second(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64()
}

struct Row {
    what: &'static str,
    store: f64,
    floor: f64,
}

/// Targets (issue 4): store / floor for read and writes, and list speed-up over a scan.
const RATIO_TARGET: f64 = 0.8;
const LIST_SPEEDUP_TARGET: f64 = 100.0;

fn main() {
    if hsm_store::testing::is_spied_run() {
        count_module_calls();
        return;
    }
    let hsm_store_token = SoftHsm::new();
    let hsm_floor = SoftHsm::new();
    let floor = hsm_floor.raw_session();
    let token = Arc::new(InstrumentedToken::new(
        hsm_store_token.open().expect("open"),
    ));
    let store = Store::open(token.clone()).expect("store");
    let mut rows = Vec::new();
    let mut calls: Vec<(&str, f64)> = Vec::new();

    // Store and floor alternate in chunks, so machine noise and token growth hit both alike.
    const CHUNK: usize = 10;
    let mut floor_handles: Vec<Vec<ObjectHandle>> = Vec::new();

    // Create.
    let (mut store_time, mut floor_time) = (Duration::ZERO, Duration::ZERO);
    let before = token.counts();
    for chunk in (0..SECRETS).collect::<Vec<_>>().chunks(CHUNK) {
        let started = Instant::now();
        floor_handles.extend(chunk.iter().map(|&i| raw_write(&floor, i, 0)));
        floor_time += started.elapsed();
        let started = Instant::now();
        for &i in chunk {
            store
                .write(&format!("s{i}"), &data(i, 0), MetadataChange::Keep)
                .expect("write");
        }
        store_time += started.elapsed();
    }
    calls.push((
        "write (new secret)",
        token.counts().since(&before).total() as f64 / SECRETS as f64,
    ));
    rows.push(Row {
        what: "write, new secret (secrets/s)",
        store: per_second(SECRETS, store_time),
        floor: per_second(SECRETS, floor_time),
    });

    // Overwrite every key.
    let (mut store_time, mut floor_time) = (Duration::ZERO, Duration::ZERO);
    let before = token.counts();
    for chunk in (0..SECRETS).collect::<Vec<_>>().chunks(CHUNK) {
        let started = Instant::now();
        for &i in chunk {
            for h in floor_handles[i].drain(..) {
                floor.destroy_object(h).expect("destroy");
            }
            floor_handles[i] = raw_write(&floor, i, 1);
        }
        floor_time += started.elapsed();
        let started = Instant::now();
        for &i in chunk {
            store
                .write(&format!("s{i}"), &data(i, 1), MetadataChange::Keep)
                .expect("overwrite");
        }
        store_time += started.elapsed();
    }
    calls.push((
        "write (all keys change)",
        token.counts().since(&before).total() as f64 / SECRETS as f64,
    ));
    rows.push(Row {
        what: "write, all keys change (secrets/s)",
        store: per_second(SECRETS, store_time),
        floor: per_second(SECRETS, floor_time),
    });

    // Read.
    let rounds = 5;
    let (mut store_time, mut floor_time) = (Duration::ZERO, Duration::ZERO);
    let before = token.counts();
    for _ in 0..rounds {
        for chunk in (0..SECRETS).collect::<Vec<_>>().chunks(CHUNK) {
            let started = Instant::now();
            for &i in chunk {
                for h in &floor_handles[i][..KEYS] {
                    let v = floor
                        .get_attributes(*h, &[AttributeType::Label, AttributeType::Value])
                        .expect("read");
                    std::hint::black_box(v);
                }
            }
            floor_time += started.elapsed();
            let started = Instant::now();
            for &i in chunk {
                std::hint::black_box(store.read(&format!("s{i}")).expect("read"));
            }
            store_time += started.elapsed();
        }
    }
    calls.push((
        "read",
        token.counts().since(&before).total() as f64 / (rounds * SECRETS) as f64,
    ));
    rows.push(Row {
        what: "read (secrets/s)",
        store: per_second(rounds * SECRETS, store_time),
        floor: per_second(rounds * SECRETS, floor_time),
    });

    // A sync pass that finds nothing changed: checksum of every secret.
    let before = token.counts();
    for i in 0..SECRETS {
        std::hint::black_box(store.checksum(&format!("s{i}")).expect("checksum"));
    }
    calls.push((
        "no-change sync (checksum)",
        token.counts().since(&before).total() as f64 / SECRETS as f64,
    ));

    // List 1000 secrets: from the index, and by the full scan the index replaces.
    for i in SECRETS..LIST_SECRETS {
        store
            .write(&format!("s{i}"), &data(i, 0), MetadataChange::Keep)
            .expect("write");
    }
    let list_rounds = 200;
    let before = token.counts();
    let started = Instant::now();
    for _ in 0..list_rounds {
        assert_eq!(std::hint::black_box(store.list("")).len(), LIST_SECRETS);
    }
    let index_list = started.elapsed() / list_rounds;
    calls.push((
        "list 1000 (index)",
        token.counts().since(&before).total() as f64 / list_rounds as f64,
    ));
    let before = token.counts();
    let started = Instant::now();
    let scan_rounds = 3;
    for _ in 0..scan_rounds {
        std::hint::black_box(store.rescan().expect("rescan"));
    }
    let scan_list = started.elapsed() / scan_rounds;
    calls.push((
        "list 1000 (full scan)",
        token.counts().since(&before).total() as f64 / scan_rounds as f64,
    ));
    assert_eq!(store.list("").len(), LIST_SECRETS);

    println!(
        "hsm-store on SoftHSM2: {SECRETS} secrets of {KEYS} keys x {VALUE_LEN} B (floor: raw cryptoki loop)"
    );
    println!();
    println!("| operation | store | floor | store / floor |");
    println!("|---|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.2} |",
            r.what,
            r.store,
            r.floor,
            r.store / r.floor
        );
    }
    println!();
    println!("| list of {LIST_SECRETS} secrets | time | speed-up |");
    println!("|---|---:|---:|");
    println!(
        "| from the index | {:.1} µs | {:.0}x |",
        index_list.as_secs_f64() * 1e6,
        scan_list.as_secs_f64() / index_list.as_secs_f64()
    );
    println!(
        "| full token scan | {:.1} ms | 1x |",
        scan_list.as_secs_f64() * 1e3
    );
    println!();
    println!("| Token-trait calls per operation (the store's own count) | calls |");
    println!("|---|---:|");
    for (what, n) in &calls {
        println!("| {what} | {n:.1} |");
    }
    println!();
    print!("{}", hsm_store::testing::rerun_spied());
    println!();
    let speedup = scan_list.as_secs_f64() / index_list.as_secs_f64();
    let mut pass = true;
    for r in &rows {
        pass &= verdict(
            r.store / r.floor >= RATIO_TARGET,
            &format!(
                "{}: store / floor {:.2} (target >= {RATIO_TARGET})",
                r.what,
                r.store / r.floor
            ),
        );
    }
    pass &= verdict(
        speedup >= LIST_SPEEDUP_TARGET,
        &format!(
            "list of {LIST_SECRETS}: index {speedup:.0}x faster than a scan (target >= {LIST_SPEEDUP_TARGET:.0}x)"
        ),
    );
    if !pass {
        std::process::exit(1);
    }
}

/// Prints `PASS: what` or `FAIL: what`, and returns `ok`.
fn verdict(ok: bool, what: &str) -> bool {
    println!("{}: {what}", if ok { "PASS" } else { "FAIL" });
    ok
}

/// Secrets in the spied run (every call is logged, with its data).
const SPIED_SECRETS: usize = 20;

/// The spied run: the same operations and the floor's, on a token behind pkcs11-spy, printing
/// per operation the store's Token-trait calls and the module calls the spy saw.
fn count_module_calls() {
    let spy = Pkcs11Spy::in_front_of(SOFTHSM2_MODULE);
    let hsm = SoftHsm::on_module(spy.module());
    let token = Arc::new(InstrumentedToken::new(hsm.open().expect("open")));
    let store = Store::open(token.clone()).expect("store");
    // The floor on a token of its own, as in the timed run (its objects would otherwise
    // stand under the store's labels).
    let floor_hsm = SoftHsm::on_module(spy.module());
    let floor = floor_hsm.raw_session();
    let mut rows: Vec<(String, f64, SpiedCalls)> = Vec::new();
    let mut measure = |what: &str, n: usize, op: &mut dyn FnMut(usize)| {
        let before = token.counts();
        let ((), calls) = spy.during(|| (0..n).for_each(&mut *op));
        let trait_calls = token.counts().since(&before).total() as f64 / n as f64;
        rows.push((format!("{what} (x{n})"), trait_calls, calls));
    };
    let secrets = SPIED_SECRETS;
    let mut floor_handles: Vec<Vec<ObjectHandle>> = Vec::new();
    measure("store: write, new secret", secrets, &mut |i| {
        store
            .write(&format!("s{i}"), &data(i, 0), MetadataChange::Keep)
            .expect("write");
    });
    measure("floor: write, new secret", secrets, &mut |i| {
        floor_handles.push(raw_write(&floor, i, 0));
    });
    measure("store: write, all keys change", secrets, &mut |i| {
        store
            .write(&format!("s{i}"), &data(i, 1), MetadataChange::Keep)
            .expect("overwrite");
    });
    measure("floor: write, all keys change", secrets, &mut |i| {
        for h in floor_handles[i].drain(..) {
            floor.destroy_object(h).expect("destroy");
        }
        floor_handles[i] = raw_write(&floor, i, 1);
    });
    measure("store: read", secrets, &mut |i| {
        std::hint::black_box(store.read(&format!("s{i}")).expect("read"));
    });
    measure("floor: read (cryptoki get_attributes)", secrets, &mut |i| {
        for h in &floor_handles[i][..KEYS] {
            std::hint::black_box(
                floor
                    .get_attributes(*h, &[AttributeType::Label, AttributeType::Value])
                    .expect("read"),
            );
        }
    });
    measure("store: no-change sync (checksum)", secrets, &mut |i| {
        std::hint::black_box(store.checksum(&format!("s{i}")).expect("checksum"));
    });
    measure(&format!("store: list {secrets} (index)"), 1, &mut |_| {
        std::hint::black_box(store.list(""));
    });
    measure(
        &format!("store: list {secrets} (full scan)"),
        1,
        &mut |_| {
            std::hint::black_box(store.rescan().expect("rescan"));
        },
    );
    println!(
        "Calls per operation, counted two ways ({secrets} secrets of {KEYS} keys; a second run of \
         this program with OpenSC's pkcs11-spy in front of SoftHSM2)"
    );
    println!();
    println!(
        "| operation | Token-trait calls (store's count) | PKCS#11 module calls (pkcs11-spy) | module calls by function |"
    );
    println!("|---|---:|---:|---|");
    for (what, trait_calls, calls) in &rows {
        let n: f64 = what
            .rsplit_once("(x")
            .and_then(|(_, n)| n.trim_end_matches(')').parse().ok())
            .unwrap_or(1.0);
        let by_function: Vec<String> = calls
            .by_function()
            .into_iter()
            .map(|(call, count)| format!("{call} {:.1}", count as f64 / n))
            .collect();
        let trait_calls = if what.starts_with("floor") {
            "-".to_owned()
        } else {
            format!("{trait_calls:.1}")
        };
        println!(
            "| {what} | {trait_calls} | {:.1} | {} |",
            calls.total() as f64 / n,
            by_function.join(", ")
        );
    }
}
