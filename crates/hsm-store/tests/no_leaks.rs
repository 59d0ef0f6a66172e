//! Nothing the store logs, at any level, and no error it returns, contains a secret value or
//! a PIN (the correct one or a wrong one), as text, hex, base64 or a byte-array `Debug`. Every
//! log line of a full run (writes, reads, a cut write and its recovery, a wrong PIN) is
//! captured without colour and searched; a value logged on purpose shows the search works.

use hsm_store::testing::{CapturedLogs, SoftHsm, TEST_PIN, leaks};
use hsm_store::token::InstrumentedToken;
use hsm_store::{MetadataChange, Pkcs11Token, SecretStore, Store, secret_data};
use secrecy::SecretString;
use std::sync::Arc;

const SECRET: &str = "SECRET-VALUE-7f3a9c";
const CORRECT_PIN: &str = "CORRECT-PIN-27182818";
const WRONG_PIN: &str = "PIN-31337-WRONG";
const BINARY: [u8; 8] = [0xfe, 0x01, 0x9a, 0x00, 0x41, 0xde, 0x77, 0x3c];

fn needles() -> [(&'static str, &'static [u8]); 4] {
    [
        ("the secret value", SECRET.as_bytes()),
        ("the binary value", &BINARY),
        ("the correct PIN", CORRECT_PIN.as_bytes()),
        ("the wrong PIN", WRONG_PIN.as_bytes()),
    ]
}

#[test]
fn logs_and_errors_never_contain_secrets() {
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let values = secret_data([("password", SECRET), ("user", "u")]);
    assert!(leaks(&format!("{values:?} {values:#?}"), &needles()).is_empty());
    let mut errors = Vec::new();
    tracing::subscriber::with_default(subscriber, || {
        let hsm = SoftHsm::new();
        let pin = SecretString::from(CORRECT_PIN);
        hsm.open()
            .unwrap()
            .change_pin(&SecretString::from(TEST_PIN), &pin)
            .unwrap();
        let open = || Pkcs11Token::open(&hsm.module, &hsm.selector(), &pin).unwrap();
        // While nothing is logged in, so the token really checks it.
        let refused = Pkcs11Token::open(&hsm.module, &hsm.selector(), &WRONG_PIN.into())
            .expect_err("a wrong PIN");
        errors.push(format!("{refused:?} {refused}"));
        let token = Arc::new(InstrumentedToken::new(open()));
        let store = Store::open(token.clone()).unwrap();
        let mut written = values.clone();
        written.insert("blob".into(), hsm_store::SecretValue::new(BINARY.to_vec()));
        store.write("db", &written, MetadataChange::Keep).unwrap();
        store.read("db").unwrap();
        // A write cut part way, then recovery in a new store.
        token.cut_after(3);
        let cut = store
            .write(
                "db",
                &secret_data([("password", "x"), ("new", SECRET)]),
                MetadataChange::Keep,
            )
            .unwrap_err();
        errors.push(format!("{cut:?} {cut}"));
        let reopened = Store::open(open()).unwrap();
        reopened.read("db").unwrap();
        let missing = reopened.read("missing").unwrap_err();
        errors.push(format!("{missing:?} {missing}"));
    });
    let logs = captured.text();
    assert!(!logs.contains('\u{1b}'), "the capture has no colour codes");
    assert!(
        logs.contains("resolved an interrupted write"),
        "recovery was logged: {logs}"
    );
    for text in errors.iter().map(String::as_str).chain([logs.as_str()]) {
        let found = leaks(text, &needles());
        assert!(found.is_empty(), "leaked {found:?}: {text}");
    }
}

/// The search finds what it is meant to find: values and PINs logged on purpose, in each form.
#[test]
fn the_search_catches_values_logged_on_purpose() {
    use base64::Engine;
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        let values = secret_data([("password", SECRET)]);
        let exposed: Vec<Vec<u8>> = values.values().map(|v| v.expose().to_vec()).collect();
        tracing::debug!(?exposed, "careless");
        tracing::info!(pin = CORRECT_PIN, "careless");
        tracing::warn!("careless {}", hex::encode_upper(BINARY));
        tracing::trace!(
            "careless {}",
            base64::engine::general_purpose::STANDARD.encode(WRONG_PIN)
        );
    });
    let found = leaks(&captured.text(), &needles());
    for expected in [
        "the secret value as byte-array Debug",
        "the correct PIN as text",
        "the binary value as HEX",
        "the wrong PIN as base64",
    ] {
        assert!(
            found.iter().any(|f| f == expected),
            "missed {expected}: {found:?}"
        );
    }
}
