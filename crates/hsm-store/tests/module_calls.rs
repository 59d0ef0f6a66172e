//! What the module really receives, counted by OpenSC's pkcs11-spy in front of SoftHSM2 (the
//! store's own call counts stop at its `Token` trait, and one trait call can be several
//! module calls). A warm read of a 5-key secret is at the floor: one `C_GetAttributeValue`
//! per key, the buffer sizes coming from the index.

use hsm_store::testing::{Pkcs11Spy, SOFTHSM2_MODULE, SoftHsm};
use hsm_store::{MetadataChange, SecretStore, Store, secret_data};

#[test]
fn a_warm_read_of_five_keys_is_five_module_calls() {
    let spy = Pkcs11Spy::in_front_of(SOFTHSM2_MODULE);
    let hsm = SoftHsm::on_module(spy.module());
    let store = Store::open(hsm.open().unwrap()).unwrap();
    let values = secret_data([
        ("a", "alpha"),
        ("b", "bravo-bravo"),
        ("c", ""),
        ("d", "delta delta delta"),
        ("e", "echo"),
    ]);
    store
        .write("db/five", &values, MetadataChange::Keep)
        .unwrap();
    // From a freshly opened store: the read's sizes come from the scan, not the write.
    let store = Store::open(hsm.open().unwrap()).unwrap();
    let (read, calls) = spy.during(|| store.read("db/five").unwrap());
    assert_eq!(read, values);
    assert_eq!(
        calls.0,
        vec!["C_GetAttributeValue"; 5],
        "a warm read of 5 keys made {calls}"
    );
    let (_, calls) = spy.during(|| store.read("db/five").unwrap());
    assert_eq!(calls.total(), 5, "{calls}");
}

#[test]
fn an_object_grown_behind_the_index_is_still_read_whole() {
    use cryptoki::object::Attribute;
    let spy = Pkcs11Spy::in_front_of(SOFTHSM2_MODULE);
    let hsm = SoftHsm::on_module(spy.module());
    let store = Store::open(hsm.open().unwrap()).unwrap();
    store
        .write("s", &secret_data([("k", "value")]), MetadataChange::Keep)
        .unwrap();
    // Another tool relabels the object in place, longer (SoftHSM2 keeps values read-only):
    // the label no longer fits the buffer the index sizes, the module says so, and the store
    // reads it the long way, sees the change and re-scans.
    let session = hsm.raw_session();
    let handle = session
        .find_objects(&[Attribute::Label(b"s/k".to_vec())])
        .unwrap()[0];
    session
        .update_attributes(handle, &[Attribute::Label(b"s/kk".to_vec())])
        .unwrap();
    let (read, calls) = spy.during(|| store.read("s").unwrap());
    assert_eq!(read, secret_data([("kk", "value")]));
    assert!(calls.total() > 1, "{calls}");
}
