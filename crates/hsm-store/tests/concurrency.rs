//! Readers running beside a writer never see a half-written secret.

mod common;

use common::{Backend, Fresh};
use hsm_store::{MetadataChange, SecretStore, secret_data};
use rstest::rstest;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

#[rstest]
fn readers_see_whole_generations(#[values(Backend::Memory, Backend::SoftHsm)] backend: Backend) {
    let fresh = Fresh::new(backend);
    let store = Arc::new(fresh.store());
    let generation = |g: u32| {
        let v = format!("gen-{g}");
        secret_data([("a", v.as_str()), ("b", v.as_str()), ("c", v.as_str())])
    };
    store
        .write("s", &generation(0), MetadataChange::Keep)
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, done, reads) = (store.clone(), done.clone(), reads.clone());
            std::thread::spawn(move || {
                while !done.load(Ordering::SeqCst) {
                    let data = store.read("s").unwrap();
                    let values: Vec<&[u8]> = data.values().map(|v| v.expose()).collect();
                    assert_eq!(values.len(), 3, "keys missing mid-write");
                    assert!(
                        values.iter().all(|v| *v == values[0]),
                        "a mix of generations"
                    );
                    reads.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    // Keep writing until the readers have raced the writer for a while, however the
    // scheduler treats the threads.
    let mut g = 0;
    while g < 40 || reads.load(Ordering::SeqCst) < 100 {
        g += 1;
        assert!(g < 100_000, "readers never ran");
        store
            .write("s", &generation(g), MetadataChange::Keep)
            .unwrap();
    }
    done.store(true, Ordering::SeqCst);
    for reader in readers {
        reader.join().unwrap();
    }
    let last = format!("gen-{g}");
    assert_eq!(store.read("s").unwrap()["a"].expose(), last.as_bytes());
}
