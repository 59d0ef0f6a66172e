//! No cap on the number of objects: the Go operator saw only the first 100 data objects.

use hsm_store::testing::SoftHsm;
use hsm_store::{MetadataChange, SecretStore, Store, secret_data};

#[test]
fn a_thousand_secrets_on_softhsm2() {
    let hsm = SoftHsm::new();
    let store = Store::open(hsm.open().unwrap()).unwrap();
    for i in 0..1000 {
        let value = format!("value-{i}");
        store
            .write(
                &format!("secret-{i:04}"),
                &secret_data([("k", value.as_str())]),
                MetadataChange::Keep,
            )
            .unwrap();
    }
    let reopened = Store::open(hsm.open().unwrap()).unwrap();
    let names = reopened.list("");
    assert_eq!(names.len(), 1000);
    assert_eq!(names[0], "secret-0000");
    assert_eq!(names[999], "secret-0999");
    for i in [0, 500, 999] {
        let data = reopened.read(&format!("secret-{i:04}")).unwrap();
        assert_eq!(data["k"].expose(), format!("value-{i}").as_bytes());
    }
    reopened.delete("secret-0999").unwrap();
    assert_eq!(
        Store::open(hsm.open().unwrap()).unwrap().list("").len(),
        999
    );
}
