//! The emulator's own surface: reviews the test decides, the HTTP server and its kubeconfig,
//! the binary. These need the emulator, so they do not run on a real cluster.

use api_emulator::{Emulator, UserInfo};
use k8s_openapi::api::authentication::v1::TokenReview;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

#[tokio::test]
async fn token_review_answers_the_tokens_the_test_set() {
    let emu = Emulator::new();
    emu.add_token(
        "good",
        UserInfo {
            username: "system:serviceaccount:ns:sa".into(),
            uid: "u1".into(),
            groups: vec!["system:serviceaccounts".into()],
        },
    );
    let reviews: Api<TokenReview> = Api::all(emu.client());
    let review = |token: &str| -> TokenReview {
        serde_json::from_value(json!({"spec": {"token": token}})).unwrap()
    };
    let ok = reviews
        .create(&PostParams::default(), &review("good"))
        .await
        .unwrap();
    let status = ok.status.unwrap();
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(
        status.user.unwrap().username.as_deref(),
        Some("system:serviceaccount:ns:sa")
    );
    let bad = reviews
        .create(&PostParams::default(), &review("bad"))
        .await
        .unwrap();
    assert_eq!(bad.status.unwrap().authenticated, Some(false));
}

#[tokio::test]
async fn subject_access_review_follows_the_decision() {
    let emu = Emulator::new();
    let reviews: Api<SubjectAccessReview> = Api::all(emu.client());
    let sar: SubjectAccessReview = serde_json::from_value(json!({"spec": {
        "user": "alice",
        "resourceAttributes": {"group": "hsm.j5t.io", "resource": "hsmsecrets", "verb": "get"},
    }}))
    .unwrap();
    let denied = reviews.create(&PostParams::default(), &sar).await.unwrap();
    assert!(!denied.status.unwrap().allowed);
    emu.set_access_decision(|spec| {
        spec["user"] == "alice" && spec["resourceAttributes"]["verb"] == "get"
    });
    let allowed = reviews.create(&PostParams::default(), &sar).await.unwrap();
    assert!(allowed.status.unwrap().allowed);
}

#[tokio::test]
async fn served_emulator_works_through_its_kubeconfig() {
    let emu = Emulator::new();
    let server = emu.serve(0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&path).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let secrets: Api<Secret> = Api::default_namespaced(client);
    let s: Secret = serde_json::from_value(json!({"metadata": {"name": "over-http"}})).unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    // The same store, seen in-process.
    let local: Api<Secret> = Api::default_namespaced(emu.client());
    assert!(local.get("over-http").await.is_ok());
}

/// Kills the child when dropped, so a failing test leaves no server running.
struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_prints_its_address_and_writes_a_kubeconfig() {
    use std::io::BufRead as _;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");
    let mut child = Child(
        std::process::Command::new(env!("CARGO_BIN_EXE_api-emulator"))
            .args(["serve", "--kubeconfig"])
            .arg(&kubeconfig)
            .arg("--crds")
            .arg(&crds)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut line = String::new();
    std::io::BufReader::new(child.0.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.trim().starts_with("http://127.0.0.1:"), "{line}");
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(client);
    assert!(crds.get("hsmsecrets.hsm.j5t.io").await.is_ok());
}
