//! Readers running beside a writer never see a half-written secret.

mod common;

use common::{Backend, Fresh};
use hsm_store::{MetadataChange, SecretStore, secret_data};
use rstest::rstest;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

#[rstest]
fn readers_see_whole_generations(#[values(Backend::Memory, Backend::SoftHsm)] backend: Backend) {
    let fresh = Fresh::new(backend);
    let store = Arc::new(fresh.store());
    let generation = |g: u32| {
        let v = format!("gen-{g}");
        secret_data([("a", v.as_str()), ("b", v.as_str()), ("c", v.as_str())])
            .into_iter()
            .collect::<hsm_store::SecretData>()
    };
    store
        .write("s", &generation(0), MetadataChange::Keep)
        .unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let (store, done) = (store.clone(), done.clone());
            std::thread::spawn(move || {
                let mut reads = 0;
                while !done.load(Ordering::SeqCst) {
                    let data = store.read("s").unwrap();
                    let values: Vec<&[u8]> = data.values().map(|v| v.expose()).collect();
                    assert_eq!(values.len(), 3, "keys missing mid-write");
                    assert!(
                        values.iter().all(|v| *v == values[0]),
                        "a mix of generations"
                    );
                    reads += 1;
                }
                reads
            })
        })
        .collect();
    for g in 1..=40 {
        store
            .write("s", &generation(g), MetadataChange::Keep)
            .unwrap();
    }
    done.store(true, Ordering::SeqCst);
    let reads: u32 = readers.into_iter().map(|r| r.join().unwrap()).sum();
    assert!(reads > 0);
    assert_eq!(store.read("s").unwrap()["a"].expose(), b"gen-40");
}
