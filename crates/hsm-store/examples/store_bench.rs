//! `cargo xtask bench store`: the store on SoftHSM2 beside a minimal raw cryptoki loop doing
//! the same token work (the floor), with PKCS#11 calls per operation.
//!
//! Secrets have 5 keys of 1 KiB. The floor writes the same objects the store leaves on the
//! token (5 values + metadata) with bare `C_CreateObject` calls, overwrites by destroying and
//! creating them (as the Go operator did), and reads values from handles it already holds.

use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::Session;
use hsm_store::layout::{APPLICATION, DataType};
use hsm_store::testing::SoftHsm;
use hsm_store::token::{InstrumentedToken, Token};
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

fn main() {
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
    println!("| PKCS#11 calls per operation | calls |");
    println!("|---|---:|");
    for (what, n) in &calls {
        println!("| {what} | {n:.1} |");
    }
    let _ = token.info();
}
