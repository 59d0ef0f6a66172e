//! Nothing the store logs, at any level, and no error it returns, contains a secret value or
//! the PIN. Every log line of a full run (writes, reads, a cut write and its recovery, a
//! wrong PIN) is captured and searched.

use hsm_store::testing::{CapturedLogs, SoftHsm};
use hsm_store::token::InstrumentedToken;
use hsm_store::{MetadataChange, Pkcs11Token, SecretStore, Store, secret_data};
use secrecy::SecretString;
use std::sync::Arc;

#[test]
fn logs_and_errors_never_contain_secrets() {
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let secret = "SECRET-VALUE-7f3a9c";
    assert!(!format!("{:?}", secret_data([("k", secret)])).contains(secret));
    let wrong_pin = "PIN-31337-WRONG";
    let mut errors = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let hsm = SoftHsm::new();
        // While nothing is logged in, so the token really checks it.
        errors.push(
            Pkcs11Token::open(&hsm.module, &hsm.selector(), &SecretString::from(wrong_pin))
                .unwrap_err()
                .to_string(),
        );
        let token = Arc::new(InstrumentedToken::new(hsm.open().unwrap()));
        let store = Store::open(token.clone()).unwrap();
        store
            .write(
                "db",
                &secret_data([("password", secret), ("user", "u")]),
                MetadataChange::Keep,
            )
            .unwrap();
        store.read("db").unwrap();
        // A write cut part way, then recovery in a new store.
        token.cut_after(3);
        errors.push(
            store
                .write(
                    "db",
                    &secret_data([("password", "x"), ("new", secret)]),
                    MetadataChange::Keep,
                )
                .unwrap_err()
                .to_string(),
        );
        let reopened = Store::open(hsm.open().unwrap()).unwrap();
        reopened.read("db").unwrap();
        errors.push(reopened.read("missing").unwrap_err().to_string());
    });
    let logs = captured.text();
    assert!(
        logs.contains("resolved an interrupted write"),
        "recovery was logged: {logs}"
    );
    for text in errors.iter().map(String::as_str).chain([logs.as_str()]) {
        assert!(!text.contains(secret), "secret value leaked: {text}");
        assert!(!text.contains(wrong_pin), "PIN leaked: {text}");
    }
}
