//! Tokens written by the Go operator read here, and the reverse. The Go side is emulated with
//! raw cryptoki calls doing exactly what its `pkcs11_client.go` does: the same attributes on
//! write, and on read a single `FindObjects(100)` over `CKO_DATA` with prefix matching.

use cryptoki::object::{Attribute, AttributeType, ObjectClass};
use cryptoki::session::Session;
use hsm_store::layout::{APPLICATION, DataType};
use hsm_store::metadata::SecretMetadata;
use hsm_store::testing::SoftHsm;
use hsm_store::{MetadataChange, SecretStore, Store, secret_data};
use std::collections::{BTreeMap, BTreeSet};

/// The Go operator's WriteSecret, minus its delete phase (the token starts empty).
fn go_write(session: &Session, path: &str, data: &[(&str, &[u8])], metadata: Option<&str>) {
    let create = |label: String, value: &[u8]| {
        session
            .create_object(&[
                Attribute::Class(ObjectClass::DATA),
                Attribute::Label(label.into_bytes()),
                Attribute::Application(APPLICATION.as_bytes().to_vec()),
                Attribute::Value(value.to_vec()),
                Attribute::Token(true),
                Attribute::Private(true),
                Attribute::Modifiable(true),
                Attribute::ObjectId(DataType::infer(value).oid_der()),
            ])
            .unwrap();
    };
    for (key, value) in data {
        let label = if *key == "data" {
            path.to_owned()
        } else {
            format!("{path}/{key}")
        };
        create(label, value);
    }
    if let Some(json) = metadata {
        create(format!("{path}/_metadata"), json.as_bytes());
    }
}

/// Every data object the Go operator would see: the first 100 `CKO_DATA` objects.
fn go_objects(session: &Session) -> Vec<(String, Vec<u8>)> {
    let handles = session
        .find_objects(&[Attribute::Class(ObjectClass::DATA)])
        .unwrap();
    handles
        .into_iter()
        .take(100)
        .map(|h| {
            let attrs = session
                .get_attributes(h, &[AttributeType::Label, AttributeType::Value])
                .unwrap();
            let mut label = String::new();
            let mut value = Vec::new();
            for a in attrs {
                match a {
                    Attribute::Label(l) => label = String::from_utf8(l).unwrap(),
                    Attribute::Value(v) => value = v,
                    _ => {}
                }
            }
            (label, value)
        })
        .collect()
}

/// The Go operator's ReadSecret.
fn go_read(session: &Session, path: &str) -> BTreeMap<String, Vec<u8>> {
    go_objects(session)
        .into_iter()
        .filter(|(l, _)| l.starts_with(path) && !l.ends_with("/_metadata"))
        .map(|(l, v)| {
            let key = l[path.len()..].trim_start_matches('/');
            let key = if key.is_empty() { "data" } else { key };
            (key.to_owned(), v)
        })
        .collect()
}

/// The Go operator's ListSecrets.
fn go_list(session: &Session) -> BTreeSet<String> {
    go_objects(session)
        .into_iter()
        .filter(|(l, _)| !l.ends_with("/_metadata"))
        .map(|(l, _)| match l.rsplit_once('/') {
            Some((p, _)) => p.to_owned(),
            None => l,
        })
        .collect()
}

/// The Go operator's ReadMetadata.
fn go_read_metadata(session: &Session, path: &str) -> SecretMetadata {
    let label = format!("{path}/_metadata");
    let (_, json) = go_objects(session)
        .into_iter()
        .find(|(l, _)| *l == label)
        .expect("metadata object");
    serde_json::from_slice(&json).unwrap()
}

fn text(store: &dyn SecretStore, name: &str) -> BTreeMap<String, Vec<u8>> {
    store
        .read(name)
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.expose().to_vec()))
        .collect()
}

#[test]
fn a_token_written_by_the_go_operator_reads_here() {
    let hsm = SoftHsm::new();
    let session = hsm.raw_session();
    go_write(
        &session,
        "db-credentials",
        &[
            ("username", b"admin"),
            ("password", b"s3cr3t"),
            ("data", b"legacy"),
        ],
        Some(
            r#"{"description":"primary","labels":{"sync.version":"3","sync.timestamp":"2025-09-01T10:00:00Z"},"dataType":"plaintext","source":"api"}"#,
        ),
    );
    go_write(&session, "token-only", &[("data", b"abc123==")], None);
    go_write(
        &session,
        "app-config",
        &[("config.json", br#"{"a":1}"#)],
        Some("{}"),
    );

    let store = Store::open(hsm.open().unwrap()).unwrap();
    assert_eq!(
        store.list(""),
        ["app-config", "db-credentials", "token-only"]
    );
    let db = text(&store, "db-credentials");
    assert_eq!(db["username"], b"admin");
    assert_eq!(db["password"], b"s3cr3t");
    assert_eq!(db["data"], b"legacy");
    assert_eq!(text(&store, "token-only")["data"], b"abc123==");
    let m = store.metadata("db-credentials").unwrap();
    assert_eq!((m.description.as_str(), m.sync_version()), ("primary", 3));
    assert_eq!(m.source, "api");
    assert_eq!(
        store.checksum("db-credentials").unwrap(),
        hsm_store::checksum::checksum([
            ("data", b"legacy".as_slice()),
            ("password", b"s3cr3t"),
            ("username", b"admin")
        ])
    );

    // And the Go operator reads what this store then writes over it.
    store
        .write(
            "db-credentials",
            &secret_data([("username", "admin"), ("password", "rotated")]),
            MetadataChange::Keep,
        )
        .unwrap();
    let go = go_read(&session, "db-credentials");
    assert_eq!(go.len(), 2);
    assert_eq!(go["password"], b"rotated");
    assert_eq!(
        go_read_metadata(&session, "db-credentials").description,
        "primary"
    );
}

#[test]
fn a_token_written_here_reads_in_the_go_operator() {
    let hsm = SoftHsm::new();
    let store = Store::open(hsm.open().unwrap()).unwrap();
    let mut meta = SecretMetadata {
        description: "tls for api".into(),
        ..Default::default()
    };
    meta.labels.insert("sync.version".into(), "5".into());
    let pem = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIU\n-----END CERTIFICATE-----\n";
    store
        .write(
            "api-tls",
            &secret_data([("tls.crt", pem), ("data", "main"), ("blob", "bin\u{1}ary")]),
            MetadataChange::Replace(meta.clone()),
        )
        .unwrap();
    store
        .write(
            "plain",
            &secret_data([("data", "hello world")]),
            MetadataChange::Keep,
        )
        .unwrap();

    let session = hsm.raw_session();
    let go = go_read(&session, "api-tls");
    assert_eq!(go["tls.crt"], pem.as_bytes());
    assert_eq!(go["data"], b"main");
    assert_eq!(go["blob"], b"bin\x01ary");
    assert_eq!(go.len(), 3, "metadata never shows as a key");
    assert_eq!(go_read(&session, "plain")["data"], b"hello world");
    assert_eq!(
        go_list(&session),
        BTreeSet::from(["api-tls".to_owned(), "plain".to_owned()])
    );
    assert_eq!(go_read_metadata(&session, "api-tls"), meta);

    // Every object carries the attributes the Go operator writes.
    for handle in session
        .find_objects(&[Attribute::Class(ObjectClass::DATA)])
        .unwrap()
    {
        let attrs = session
            .get_attributes(
                handle,
                &[
                    AttributeType::Token,
                    AttributeType::Private,
                    AttributeType::Modifiable,
                    AttributeType::Application,
                    AttributeType::ObjectId,
                    AttributeType::Value,
                    AttributeType::Label,
                ],
            )
            .unwrap();
        let mut value = Vec::new();
        let mut oid = Vec::new();
        let mut label = String::new();
        for a in attrs {
            match a {
                Attribute::Token(t) | Attribute::Private(t) | Attribute::Modifiable(t) => {
                    assert!(t)
                }
                Attribute::Application(app) => assert_eq!(app, APPLICATION.as_bytes()),
                Attribute::ObjectId(o) => oid = o,
                Attribute::Value(v) => value = v,
                Attribute::Label(l) => label = String::from_utf8(l).unwrap(),
                _ => {}
            }
        }
        let expected = if label.ends_with("/_metadata") {
            DataType::Json
        } else {
            DataType::infer(&value)
        };
        assert_eq!(oid, expected.oid_der(), "{label}");
    }
}

#[test]
fn a_key_deleted_by_the_go_operator_disappears_on_rescan() {
    let hsm = SoftHsm::new();
    let store = Store::open(hsm.open().unwrap()).unwrap();
    store
        .write(
            "s",
            &secret_data([("a", "1"), ("b", "2")]),
            MetadataChange::Keep,
        )
        .unwrap();
    let session = hsm.raw_session();
    // Go's DeleteSecretKey: exact label find, destroy.
    let h = session
        .find_objects(&[
            Attribute::Class(ObjectClass::DATA),
            Attribute::Label(b"s/a".to_vec()),
        ])
        .unwrap();
    session.destroy_object(h[0]).unwrap();
    let report = store.rescan().unwrap();
    assert_eq!(report.changed, ["s"]);
    assert_eq!(text(&store, "s").keys().collect::<Vec<_>>(), ["b"]);
}
