//! Opening a token fails with a distinct, typed error for each cause, and no error ever
//! contains the PIN.

use hsm_store::testing::{SOFTHSM2_MODULE, SoftHsm};
use hsm_store::{Module, Pkcs11Token, StoreError, TokenSelector};
use secrecy::SecretString;

#[test]
fn a_wrong_pin_is_its_own_error_and_is_not_shown() {
    let hsm = SoftHsm::new();
    let pin = "98765-wrong";
    let err =
        Pkcs11Token::open(&hsm.module, &hsm.selector(), &SecretString::from(pin)).unwrap_err();
    assert!(matches!(err, StoreError::PinIncorrect), "{err:?}");
    assert!(!format!("{err} {err:?}").contains(pin));
    // The right PIN still works afterwards.
    hsm.open().unwrap();
}

#[test]
fn a_missing_token_names_what_is_there() {
    let hsm = SoftHsm::new();
    let err = Pkcs11Token::open(
        &hsm.module,
        &TokenSelector::Label("no-such-token".into()),
        &SecretString::from("1234"),
    )
    .unwrap_err();
    match err {
        StoreError::TokenNotFound {
            selector,
            available,
        } => {
            assert!(selector.contains("no-such-token"));
            assert!(available.contains(&hsm.label), "{available}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_missing_module_is_a_load_error() {
    let err = Module::load("/nonexistent/libpkcs11.so").unwrap_err();
    assert!(matches!(err, StoreError::ModuleLoad { .. }), "{err:?}");
    let not_a_module = tempfile::NamedTempFile::new().unwrap();
    let err = Module::load(not_a_module.path()).unwrap_err();
    assert!(matches!(err, StoreError::ModuleLoad { .. }), "{err:?}");
    // The loader's own error is kept as the source, and reaches a message through the chain.
    let loader = std::error::Error::source(&err).expect("a source");
    assert!(
        std::error::Error::source(loader).is_some(),
        "the dlopen error is kept: {loader:?}"
    );
    let text = hsm_store::error::chain(&err);
    assert!(
        text.starts_with("cannot load PKCS#11 module") && text.contains("not a PKCS#11 library: "),
        "{text}"
    );
    assert!(std::path::Path::new(SOFTHSM2_MODULE).exists());
}

#[test]
fn tokens_are_found_by_serial_too() {
    let hsm = SoftHsm::new();
    let (_, info) = hsm
        .module
        .tokens()
        .unwrap()
        .into_iter()
        .find(|(_, i)| i.label == hsm.label)
        .unwrap();
    Pkcs11Token::open(
        &hsm.module,
        &TokenSelector::Serial(info.serial_number),
        &SecretString::from(hsm_store::testing::TEST_PIN),
    )
    .unwrap();
}

#[test]
fn the_pin_can_be_changed_and_a_wrong_old_pin_is_refused() {
    let hsm = SoftHsm::new();
    let token = hsm.open().unwrap();
    let err = token
        .change_pin(&SecretString::from("0000"), &SecretString::from("5555"))
        .unwrap_err();
    assert!(matches!(err, StoreError::PinIncorrect), "{err:?}");
    token
        .change_pin(
            &SecretString::from(hsm_store::testing::TEST_PIN),
            &SecretString::from("5555"),
        )
        .unwrap();
    drop(token);
    let err = Pkcs11Token::open(
        &hsm.module,
        &hsm.selector(),
        &SecretString::from(hsm_store::testing::TEST_PIN),
    )
    .unwrap_err();
    assert!(matches!(err, StoreError::PinIncorrect), "{err:?}");
    Pkcs11Token::open(&hsm.module, &hsm.selector(), &SecretString::from("5555")).unwrap();
}
