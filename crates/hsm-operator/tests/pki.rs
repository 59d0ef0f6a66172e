//! The manager↔agent mTLS PKI against the Kubernetes API emulator: the three Secrets as
//! specified, idempotence, renewal in time with the CA kept, Secrets of other managers and
//! of cert-manager only read, replicas racing, rotation published on the watch channel —
//! and a real agent reached over mTLS before and after a rotation.

use api_emulator::Emulator;
use chrono::{DateTime, TimeZone, Utc};
use hsm_api::names::{APP_NAME, annotations, labels, mtls};
use hsm_operator::agents::AgentApi;
use hsm_operator::agents::grpc::{ClientTls, GrpcAgent};
use hsm_operator::pki::certs::{self, LeafKind};
use hsm_operator::pki::{self, PkiConfig, PkiError, keys};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use x509_parser::oid_registry;
use x509_parser::prelude::*;

const NS: &str = "hsm-system";
const DAY: Duration = Duration::from_secs(86_400);

async fn cluster() -> (Emulator, kube::Client) {
    let emulator = Emulator::new();
    let client = emulator.client();
    add_namespace(&client, NS).await;
    (emulator, client)
}

async fn add_namespace(client: &kube::Client, name: &str) {
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
}

fn config(namespace: &str) -> PkiConfig {
    PkiConfig {
        namespace: namespace.to_owned(),
        ca_secret: mtls::CA_SECRET.to_owned(),
        server_secret: mtls::AGENT_SERVER_SECRET.to_owned(),
        client_secret: mtls::MANAGER_CLIENT_SECRET.to_owned(),
        leaf_validity: 90 * DAY,
        renew_before: 30 * DAY,
        cert_manager: false,
    }
}

/// A config under which every leaf is due at once (renewal window longer than validity).
fn always_due(namespace: &str) -> PkiConfig {
    PkiConfig {
        renew_before: 91 * DAY,
        ..config(namespace)
    }
}

/// Now, to the second (certificates hold seconds).
fn now() -> DateTime<Utc> {
    Utc.timestamp_opt(Utc::now().timestamp(), 0).unwrap()
}

fn secrets(client: &kube::Client, ns: &str) -> Api<Secret> {
    Api::namespaced(client.clone(), ns)
}

async fn get(client: &kube::Client, ns: &str, name: &str) -> Secret {
    secrets(client, ns).get(name).await.unwrap()
}

async fn get_opt(client: &kube::Client, ns: &str, name: &str) -> Option<Secret> {
    secrets(client, ns).get_opt(name).await.unwrap()
}

fn text(secret: &Secret, key: &str) -> String {
    let data = secret.data.as_ref().expect("data");
    String::from_utf8(
        data.get(key)
            .unwrap_or_else(|| panic!("no {key}"))
            .0
            .clone(),
    )
    .unwrap()
}

fn rv(secret: &Secret) -> String {
    secret.metadata.resource_version.clone().unwrap()
}

async fn versions(client: &kube::Client, ns: &str) -> Vec<Option<String>> {
    let mut out = vec![];
    for name in [
        mtls::CA_SECRET,
        mtls::AGENT_SERVER_SECRET,
        mtls::MANAGER_CLIENT_SECRET,
    ] {
        out.push(get_opt(client, ns, name).await.map(|s| rv(&s)));
    }
    out
}

fn der(pem_text: &str) -> Vec<u8> {
    ::pem::parse(pem_text).unwrap().into_contents()
}

fn common_name(cert: &X509Certificate<'_>) -> String {
    let cn = cert.subject().iter_common_name().next().unwrap();
    cn.as_str().unwrap().to_owned()
}

/// ECDSA P-256 key in the certificate, SEC1 `EC PRIVATE KEY` beside it, and they match.
fn assert_p256(cert: &X509Certificate<'_>, key_pem: &str) {
    let spki = cert.public_key();
    assert_eq!(
        spki.algorithm.algorithm,
        oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .unwrap()
        .as_oid()
        .unwrap();
    assert_eq!(curve, oid_registry::OID_EC_P256);
    assert!(
        key_pem.starts_with("-----BEGIN EC PRIVATE KEY-----"),
        "SEC1 key"
    );
    let key = keys::parse(key_pem).unwrap();
    assert_eq!(spki.subject_public_key.data.as_ref(), key.public_key_raw());
}

fn assert_tls_secret(secret: &Secret, keys: &[&str]) {
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/tls"));
    let names: Vec<&str> = secret
        .data
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(names, keys);
    let want_labels = BTreeMap::from([
        (labels::MANAGED_BY_K8S.to_owned(), APP_NAME.to_owned()),
        (labels::COMPONENT.to_owned(), "mtls".to_owned()),
    ]);
    assert_eq!(secret.metadata.labels.as_ref(), Some(&want_labels));
    let want_annotations =
        BTreeMap::from([(annotations::MTLS_MANAGED_BY.to_owned(), APP_NAME.to_owned())]);
    assert_eq!(
        secret.metadata.annotations.as_ref(),
        Some(&want_annotations)
    );
    assert!(
        secret.metadata.owner_references.is_none(),
        "survives uninstall"
    );
}

fn assert_ca(secret: &Secret, now: DateTime<Utc>) {
    assert_tls_secret(secret, &["tls.crt", "tls.key"]);
    let der = der(&text(secret, "tls.crt"));
    let (_, ca) = X509Certificate::from_der(&der).unwrap();
    assert_eq!(common_name(&ca), "hsm-mtls-ca");
    let org = ca.subject().iter_organization().next().unwrap();
    assert_eq!(org.as_str().unwrap(), "hsm-secrets-operator");
    let constraints = ca.basic_constraints().unwrap().unwrap().value;
    assert!(constraints.ca);
    assert_eq!(constraints.path_len_constraint, Some(0));
    assert!(ca.key_usage().unwrap().unwrap().value.key_cert_sign());
    assert_eq!(ca.validity().not_before.timestamp(), now.timestamp() - 60);
    let ten_years = ca.validity().not_after.timestamp() - now.timestamp();
    assert!((3650 * 86_400..=3653 * 86_400).contains(&ten_years));
    assert!(ca.verify_signature(None).is_ok(), "self-signed");
    assert_p256(&ca, &text(secret, "tls.key"));
}

fn assert_leaf(secret: &Secret, ca_secret: &Secret, kind: LeafKind, now: DateTime<Utc>) {
    assert_tls_secret(secret, &["ca.crt", "tls.crt", "tls.key"]);
    assert_eq!(text(secret, "ca.crt"), text(ca_secret, "tls.crt"));
    let ca_der = der(&text(ca_secret, "tls.crt"));
    let leaf_der = der(&text(secret, "tls.crt"));
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    assert_eq!(common_name(&leaf), kind.name());
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    assert_eq!(san.general_names, vec![GeneralName::DNSName(kind.name())]);
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert_eq!(
        (eku.server_auth, eku.client_auth),
        (kind == LeafKind::Server, kind == LeafKind::Client)
    );
    let usage = leaf.key_usage().unwrap().unwrap().value;
    assert!(usage.digital_signature() && usage.key_encipherment());
    assert!(!usage.key_cert_sign());
    assert_eq!(leaf.validity().not_before.timestamp(), now.timestamp() - 60);
    assert_eq!(
        leaf.validity().not_after.timestamp(),
        now.timestamp() + 90 * 86_400
    );
    assert!(leaf.raw_serial().len() >= 16, "128-bit serial");
    assert_eq!(leaf.issuer(), ca.subject());
    assert!(
        leaf.verify_signature(Some(ca.public_key())).is_ok(),
        "chains to the CA"
    );
    assert_p256(&leaf, &text(secret, "tls.key"));
}

#[tokio::test]
async fn a_fresh_namespace_gets_the_three_secrets_as_specified() {
    let (_emulator, client) = cluster().await;
    let at = now();
    let tls = pki::ensure(&client, &config(NS), at).await.unwrap();

    let ca = get(&client, NS, mtls::CA_SECRET).await;
    let server = get(&client, NS, mtls::AGENT_SERVER_SECRET).await;
    let manager = get(&client, NS, mtls::MANAGER_CLIENT_SECRET).await;
    assert_ca(&ca, at);
    assert_leaf(&server, &ca, LeafKind::Server, at);
    assert_leaf(&manager, &ca, LeafKind::Client, at);
    let serial = |s: &Secret| {
        let der = der(&text(s, "tls.crt"));
        X509Certificate::from_der(&der)
            .unwrap()
            .1
            .raw_serial()
            .to_vec()
    };
    assert_ne!(serial(&server), serial(&manager));
    assert_eq!(
        tls,
        ClientTls {
            ca: text(&ca, "tls.crt"),
            cert: text(&manager, "tls.crt"),
            key: text(&manager, "tls.key"),
        }
    );
    assert!(
        !format!("{tls:?}").contains("PRIVATE"),
        "Debug leaves the key out"
    );
}

#[tokio::test]
async fn a_second_ensure_changes_nothing() {
    let (_emulator, client) = cluster().await;
    let first = pki::ensure(&client, &config(NS), now()).await.unwrap();
    let before = versions(&client, NS).await;
    let later = now() + chrono::Duration::days(59);
    let second = pki::ensure(&client, &config(NS), later).await.unwrap();
    assert_eq!(versions(&client, NS).await, before);
    assert_eq!(first, second);
}

#[tokio::test]
async fn leaves_due_for_renewal_are_reissued_and_the_ca_kept() {
    let (_emulator, client) = cluster().await;
    let start = now();
    let first = pki::ensure(&client, &config(NS), start).await.unwrap();
    let ca_before = get(&client, NS, mtls::CA_SECRET).await;
    let server_before = get(&client, NS, mtls::AGENT_SERVER_SECRET).await;

    // notAfter is start + 90 days, so notAfter − renewBefore is start + 60 days: still
    // fine at that second, due one second later.
    let edge = start + chrono::Duration::days(60);
    pki::ensure(&client, &config(NS), edge).await.unwrap();
    assert_eq!(
        rv(&get(&client, NS, mtls::AGENT_SERVER_SECRET).await),
        rv(&server_before)
    );
    let due = edge + chrono::Duration::seconds(1);
    let renewed = pki::ensure(&client, &config(NS), due).await.unwrap();

    let ca = get(&client, NS, mtls::CA_SECRET).await;
    assert_eq!(rv(&ca), rv(&ca_before), "the CA is not rotated");
    let server = get(&client, NS, mtls::AGENT_SERVER_SECRET).await;
    assert_ne!(text(&server, "tls.crt"), text(&server_before, "tls.crt"));
    assert_ne!(text(&server, "tls.key"), text(&server_before, "tls.key"));
    assert_leaf(&server, &ca, LeafKind::Server, due);
    let manager = get(&client, NS, mtls::MANAGER_CLIENT_SECRET).await;
    assert_leaf(&manager, &ca, LeafKind::Client, due);
    assert_ne!(renewed.cert, first.cert);
    assert_eq!(renewed.ca, first.ca);
    assert_eq!(renewed.cert, text(&manager, "tls.crt"));
}

#[tokio::test]
async fn a_missing_broken_or_expired_ca_is_recreated_and_the_leaves_follow() {
    let (_emulator, client) = cluster().await;
    let first = pki::ensure(&client, &config(NS), now()).await.unwrap();

    // Ours but unparsable: replaced in place.
    let mut ca = get(&client, NS, mtls::CA_SECRET).await;
    let data = ca.data.as_mut().unwrap();
    data.insert(
        "tls.crt".into(),
        k8s_openapi::ByteString(b"not a certificate".to_vec()),
    );
    secrets(&client, NS)
        .replace(mtls::CA_SECRET, &PostParams::default(), &ca)
        .await
        .unwrap();
    let at = now();
    let second = pki::ensure(&client, &config(NS), at).await.unwrap();
    assert_ne!(second.ca, first.ca);
    let ca = get(&client, NS, mtls::CA_SECRET).await;
    assert_ca(&ca, at);
    let server = get(&client, NS, mtls::AGENT_SERVER_SECRET).await;
    assert_leaf(&server, &ca, LeafKind::Server, at);
    let manager = get(&client, NS, mtls::MANAGER_CLIENT_SECRET).await;
    assert_leaf(&manager, &ca, LeafKind::Client, at);

    // Deleted: made anew.
    secrets(&client, NS)
        .delete(mtls::CA_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let third = pki::ensure(&client, &config(NS), at).await.unwrap();
    assert_ne!(third.ca, second.ca);
    let ca = get(&client, NS, mtls::CA_SECRET).await;
    let server = get(&client, NS, mtls::AGENT_SERVER_SECRET).await;
    assert_leaf(&server, &ca, LeafKind::Server, at);

    // Expired (ten years on): made anew too.
    let decade = at + chrono::Duration::days(3660);
    let fourth = pki::ensure(&client, &config(NS), decade).await.unwrap();
    assert_ne!(fourth.ca, third.ca);
}

/// A Secret as another manager (cert-manager) writes it.
async fn put_foreign(client: &kube::Client, ns: &str, name: &str, data: &[(&str, &str)]) {
    let data: BTreeMap<String, String> = data
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": name, "annotations": {annotations::MTLS_MANAGED_BY: "cert-manager"}},
        "type": "kubernetes.io/tls",
        "stringData": data,
    }))
    .unwrap();
    secrets(client, ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

/// A CA of someone else's and a leaf it signed.
fn foreign_leaf(
    kind: LeafKind,
    start: DateTime<Utc>,
    validity: Duration,
) -> (certs::Issued, certs::Issued) {
    let ca = certs::issue_ca(start).unwrap();
    let key = keys::parse(&ca.key).unwrap();
    let leaf = certs::issue_leaf(kind, &ca.cert, key, start, validity).unwrap();
    (ca, leaf)
}

/// Everything logged on this thread while the guard lives.
fn capture() -> (
    hsm_store::testing::CapturedLogs,
    tracing::subscriber::DefaultGuard,
) {
    let logs = hsm_store::testing::CapturedLogs::default();
    let sink = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// Due for renewal but still valid: a warning, and the Secret is left to its manager (its
/// own renewal schedule may differ from ours; failing would stop a manager whose
/// certificates still work). Expired or unusable: an error, as nothing valid can be used.
#[tokio::test]
async fn a_secret_of_another_manager_is_read_and_never_written() {
    let (_emulator, client) = cluster().await;
    let (logs, _guard) = capture();
    let at = now();
    // The agents' certificate from cert-manager, 10 days left: inside our 30-day window.
    let (their_ca, server) = foreign_leaf(LeafKind::Server, at, 10 * DAY);
    let data = [
        ("ca.crt", their_ca.cert.as_str()),
        ("tls.crt", &server.cert),
        ("tls.key", &server.key),
    ];
    put_foreign(&client, NS, mtls::AGENT_SERVER_SECRET, &data).await;
    let before = get(&client, NS, mtls::AGENT_SERVER_SECRET).await;

    let tls = pki::ensure(&client, &config(NS), at).await.unwrap();
    let after = get(&client, NS, mtls::AGENT_SERVER_SECRET).await;
    assert_eq!(rv(&after), rv(&before), "never written");
    assert_eq!(after.data, before.data);
    assert_eq!(
        tls.ca, their_ca.cert,
        "the manager trusts the CA of the agents' certificate"
    );
    let ca = get(&client, NS, mtls::CA_SECRET).await;
    let manager = get(&client, NS, mtls::MANAGER_CLIENT_SECRET).await;
    assert_leaf(&manager, &ca, LeafKind::Client, at);
    let log = logs.text();
    assert!(
        log.contains("due for renewal") && log.contains("cert-manager"),
        "{log}"
    );
    for key in [&server.key, &their_ca.key, &tls.key] {
        let body = key.lines().nth(1).unwrap();
        assert!(!log.contains(body), "a key in the logs");
    }

    // Past its end: an error naming the Secret, and still nothing written.
    let later = at + chrono::Duration::days(11);
    let err = pki::ensure(&client, &config(NS), later).await.unwrap_err();
    assert!(
        matches!(&err, PkiError::Expired { name, manager, .. }
            if name == mtls::AGENT_SERVER_SECRET && manager == "cert-manager"),
        "{err}"
    );
    let after = get(&client, NS, mtls::AGENT_SERVER_SECRET).await;
    assert_eq!(rv(&after), rv(&before));

    // A foreign CA without its key cannot sign our leaves: a clear error, nothing written.
    add_namespace(&client, "other").await;
    let data = [("tls.crt", their_ca.cert.as_str())];
    put_foreign(&client, "other", mtls::CA_SECRET, &data).await;
    let err = pki::ensure(&client, &config("other"), at)
        .await
        .unwrap_err();
    assert!(matches!(err, PkiError::NoCaKey { .. }), "{err}");
    let list = secrets(&client, "other")
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(list.items.len(), 1);
}

#[tokio::test]
async fn cert_manager_mode_only_reads() {
    let (_emulator, client) = cluster().await;
    let cm = PkiConfig {
        cert_manager: true,
        ..config(NS)
    };
    let err = pki::ensure(&client, &cm, now()).await.unwrap_err();
    assert!(
        matches!(&err, PkiError::Missing { name, .. } if name == mtls::AGENT_SERVER_SECRET),
        "{err}"
    );
    assert!(err.to_string().contains("cert-manager"), "{err}");
    let list = secrets(&client, NS)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(list.items.is_empty(), "nothing written");

    // cert-manager's Certificates: leaves from its issuer, annotated as its own; no CA
    // Secret at all.
    let at = now();
    let (ca, server) = foreign_leaf(LeafKind::Server, at, 90 * DAY);
    let ca_key = keys::parse(&ca.key).unwrap();
    let client_leaf = certs::issue_leaf(LeafKind::Client, &ca.cert, ca_key, at, 20 * DAY).unwrap();
    let server_data = [
        ("ca.crt", ca.cert.as_str()),
        ("tls.crt", &server.cert),
        ("tls.key", &server.key),
    ];
    put_foreign(&client, NS, mtls::AGENT_SERVER_SECRET, &server_data).await;
    let err = pki::ensure(&client, &cm, at).await.unwrap_err();
    assert!(
        matches!(&err, PkiError::Missing { name, .. } if name == mtls::MANAGER_CLIENT_SECRET),
        "{err}"
    );
    let client_data = [
        ("ca.crt", ca.cert.as_str()),
        ("tls.crt", &client_leaf.cert),
        ("tls.key", &client_leaf.key),
    ];
    put_foreign(&client, NS, mtls::MANAGER_CLIENT_SECRET, &client_data).await;
    let before = versions(&client, NS).await;

    // The client leaf is inside the renewal window: read all the same (cert-manager renews).
    let tls = pki::ensure(&client, &cm, at).await.unwrap();
    assert_eq!(
        tls,
        ClientTls {
            ca: ca.cert.clone(),
            cert: client_leaf.cert.clone(),
            key: client_leaf.key.clone(),
        }
    );
    assert_eq!(versions(&client, NS).await, before);
    assert_eq!(before[0], None, "no CA Secret made");

    // Even a Secret annotated as ours is not written in cert-manager mode.
    let mut secret = get(&client, NS, mtls::MANAGER_CLIENT_SECRET).await;
    secret.metadata.annotations = Some(BTreeMap::from([(
        annotations::MTLS_MANAGED_BY.to_owned(),
        APP_NAME.to_owned(),
    )]));
    let secret = secrets(&client, NS)
        .replace(mtls::MANAGER_CLIENT_SECRET, &PostParams::default(), &secret)
        .await
        .unwrap();
    let expired = at + chrono::Duration::days(21);
    let err = pki::ensure(&client, &cm, expired).await.unwrap_err();
    assert!(matches!(err, PkiError::Expired { .. }), "{err}");
    let after = get(&client, NS, mtls::MANAGER_CLIENT_SECRET).await;
    assert_eq!(rv(&after), rv(&secret));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ensures_end_with_one_consistent_set() {
    const RACERS: usize = 3;
    let emulator = Emulator::new();
    for round in 0..6 {
        let ns = format!("race-{round}");
        add_namespace(&emulator.client(), &ns).await;
        let at = now();
        let start = std::sync::Arc::new(tokio::sync::Barrier::new(RACERS));
        let racers: Vec<_> = (0..RACERS)
            .map(|_| {
                let (client, config) = (emulator.client(), config(&ns));
                let start = start.clone();
                tokio::spawn(async move {
                    start.wait().await;
                    pki::ensure(&client, &config, at).await
                })
            })
            .collect();
        let mut results = vec![];
        for racer in racers {
            results.push(racer.await.unwrap().unwrap());
        }
        let client = emulator.client();
        let ca = get(&client, &ns, mtls::CA_SECRET).await;
        let server = get(&client, &ns, mtls::AGENT_SERVER_SECRET).await;
        let manager = get(&client, &ns, mtls::MANAGER_CLIENT_SECRET).await;
        assert_leaf(&server, &ca, LeafKind::Server, at);
        assert_leaf(&manager, &ca, LeafKind::Client, at);
        for tls in &results {
            assert_eq!(tls.ca, text(&ca, "tls.crt"), "round {round}");
            assert_eq!(tls.cert, text(&manager, "tls.crt"), "round {round}");
            assert_eq!(tls.key, text(&manager, "tls.key"), "round {round}");
        }
        let list = secrets(&client, &ns)
            .list(&ListParams::default())
            .await
            .unwrap();
        assert_eq!(list.items.len(), 3);
    }
}

async fn changed(rx: &mut tokio::sync::watch::Receiver<ClientTls>) -> ClientTls {
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("published in time")
        .unwrap();
    rx.borrow_and_update().clone()
}

#[tokio::test]
async fn rotate_publishes_new_material_after_a_renewal() {
    let (_emulator, client) = cluster().await;
    let initial = pki::ensure(&client, &config(NS), Utc::now()).await.unwrap();

    // Nothing due: ticks publish nothing.
    let (tx, mut rx) = tokio::sync::watch::channel(initial.clone());
    let ticking = tokio::spawn(pki::rotate(
        client.clone(),
        config(NS),
        Duration::from_millis(20),
        tx,
    ));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(!rx.has_changed().unwrap(), "no renewal, no publication");
    // The client Secret is lost: the next tick issues and publishes a new one.
    secrets(&client, NS)
        .delete(mtls::MANAGER_CLIENT_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let reissued = changed(&mut rx).await;
    assert_ne!(reissued.cert, initial.cert);
    let manager = get(&client, NS, mtls::MANAGER_CLIENT_SECRET).await;
    assert_eq!(reissued.cert, text(&manager, "tls.crt"));
    drop(rx);
    tokio::time::timeout(Duration::from_secs(5), ticking)
        .await
        .expect("rotate returns once no one listens")
        .unwrap();

    // Leaves due at the first check (12 h interval): renewed and published at once.
    let ca = rv(&get(&client, NS, mtls::CA_SECRET).await);
    let (tx, mut rx) = tokio::sync::watch::channel(reissued.clone());
    let ticking = tokio::spawn(pki::rotate(
        client.clone(),
        always_due(NS),
        Duration::from_secs(12 * 3600),
        tx,
    ));
    let renewed = changed(&mut rx).await;
    assert_ne!(renewed.cert, reissued.cert);
    assert_eq!(renewed.ca, reissued.ca);
    let manager = get(&client, NS, mtls::MANAGER_CLIENT_SECRET).await;
    assert_eq!(renewed.cert, text(&manager, "tls.crt"));
    assert_eq!(renewed.key, text(&manager, "tls.key"));
    assert_eq!(rv(&get(&client, NS, mtls::CA_SECRET).await), ca);
    ticking.abort();
}

#[tokio::test]
async fn rotate_retries_after_an_error_and_publishes_once_it_clears() {
    let (_emulator, client) = cluster().await;
    let initial = pki::ensure(&client, &config(NS), Utc::now()).await.unwrap();
    // Someone else's CA without its key: our leaves cannot be signed, every check fails.
    secrets(&client, NS)
        .delete(mtls::CA_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    put_foreign(
        &client,
        NS,
        mtls::CA_SECRET,
        &[("tls.crt", initial.ca.as_str())],
    )
    .await;
    secrets(&client, NS)
        .delete(mtls::MANAGER_CLIENT_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let err = pki::ensure(&client, &config(NS), Utc::now())
        .await
        .unwrap_err();
    assert!(matches!(err, PkiError::NoCaKey { .. }), "{err}");

    let (tx, mut rx) = tokio::sync::watch::channel(initial.clone());
    let ticking = tokio::spawn(pki::rotate(
        client.clone(),
        config(NS),
        Duration::from_millis(20),
        tx,
    ));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !rx.has_changed().unwrap(),
        "nothing to publish while failing"
    );
    // The foreign CA goes away: the next try makes a CA of ours and publishes new material.
    secrets(&client, NS)
        .delete(mtls::CA_SECRET, &DeleteParams::default())
        .await
        .unwrap();
    let recovered = changed(&mut rx).await;
    assert_ne!(recovered.ca, initial.ca);
    let manager = get(&client, NS, mtls::MANAGER_CLIENT_SECRET).await;
    assert_eq!(recovered.cert, text(&manager, "tls.crt"));
    ticking.abort();
}

mod agent {
    //! A real agent on SoftHSM2 behind its mTLS listener, with the server Secret's files.

    use super::*;
    use hsm_agent::device::{Device, DeviceConfig};
    use hsm_agent::pin::FixedPin;
    use hsm_agent::service::AgentService;
    use hsm_agent::tls::{TlsFiles, incoming, server_config};
    use hsm_proto::v1::hsm_agent_server::HsmAgentServer;
    use hsm_store::testing::{SOFTHSM2_MODULE, SoftHsm, TEST_PIN};
    use std::path::Path;
    use std::sync::Arc;

    /// Writes the server Secret's keys as the kubelet mounts them.
    pub fn write_files(dir: &Path, secret: &Secret) -> TlsFiles {
        let files = TlsFiles {
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
            client_ca: dir.join("ca.crt"),
        };
        std::fs::write(&files.client_ca, text(secret, "ca.crt")).unwrap();
        std::fs::write(&files.key, text(secret, "tls.key")).unwrap();
        std::fs::write(&files.cert, text(secret, "tls.crt")).unwrap();
        files
    }

    pub async fn serve(hsm: &SoftHsm, files: &TlsFiles) -> std::net::SocketAddr {
        let device = Arc::new(Device::new(
            DeviceConfig::new(SOFTHSM2_MODULE, hsm.selector()),
            Box::new(FixedPin(TEST_PIN.into())),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = incoming(listener, server_config(files).unwrap());
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(HsmAgentServer::new(AgentService::new(device)))
                .serve_with_incoming(stream)
                .await
                .unwrap();
        });
        addr
    }

    /// The certificate the agent presents to a client with `tls`.
    pub async fn presented(addr: std::net::SocketAddr, tls: &ClientTls) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_slice(tls.ca.as_bytes()).unwrap())
            .unwrap();
        let chain = vec![CertificateDer::from_pem_slice(tls.cert.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(tls.key.as_bytes()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from(mtls::AGENT_SERVER_NAME).unwrap();
        let stream = connector.connect(name, tcp).await.unwrap();
        stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
    }
}

#[tokio::test]
async fn an_agent_is_reached_over_mtls_before_and_after_a_rotation() {
    let (_emulator, client) = cluster().await;
    let hsm = hsm_store::testing::SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let before = pki::ensure(&client, &config(NS), Utc::now()).await.unwrap();
    let server = get(&client, NS, mtls::AGENT_SERVER_SECRET).await;
    let files = agent::write_files(dir.path(), &server);
    let addr = agent::serve(&hsm, &files).await;
    let url = format!("https://{addr}");

    let old = GrpcAgent::new(&url, Some(&before)).unwrap();
    assert_eq!(old.info().await.unwrap().label, hsm.label);

    // Rotation: both leaves re-issued now; the kubelet refreshes the agent's mount.
    let after = pki::ensure(&client, &always_due(NS), Utc::now())
        .await
        .unwrap();
    assert_ne!(after.cert, before.cert);
    assert_eq!(after.ca, before.ca);
    let rotated = get(&client, NS, mtls::AGENT_SERVER_SECRET).await;
    assert_ne!(text(&rotated, "tls.crt"), text(&server, "tls.crt"));
    tokio::time::sleep(Duration::from_millis(20)).await; // a new mtime
    agent::write_files(dir.path(), &rotated);

    // The open channel keeps working; new channels, with old or new material, work too.
    assert_eq!(old.info().await.unwrap().label, hsm.label);
    let new = GrpcAgent::new(&url, Some(&after)).unwrap();
    assert_eq!(new.info().await.unwrap().label, hsm.label);
    let old_again = GrpcAgent::new(&url, Some(&before)).unwrap();
    assert!(
        old_again.info().await.is_ok(),
        "the old leaf is valid until it expires"
    );
    // And the agent now presents its new certificate.
    assert_eq!(
        agent::presented(addr, &after).await,
        der(&text(&rotated, "tls.crt"))
    );
}
