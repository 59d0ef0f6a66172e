//! kubectl against the served emulator (or the real cluster): get, apply, describe, delete
//! and get --watch, for built-ins and the project's custom resources.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::process::Command;

async fn kubectl(
    kubeconfig: &Path,
    ns: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(["--namespace", ns])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(20), child.wait_with_output())
        .await
        .expect("kubectl finishes")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

const MANIFEST: &str = "
apiVersion: hsm.j5t.io/v1alpha1
kind: HSMSecret
metadata:
  name: db
spec:
  secretName: SECRET
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  a: VALUE
";

fn manifest(secret: &str, value: &str) -> String {
    MANIFEST.replace("SECRET", secret).replace("VALUE", value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_describe_delete() {
    let mut env = common::env().await;
    let kc = env.kubeconfig().await;
    let ns = env.namespace.clone();

    let (ok, out) = kubectl(
        &kc,
        &ns,
        &["apply", "-f", "-"],
        Some(&manifest("db-secret", "\"1\"")),
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("hsmsecret.hsm.j5t.io/db created"), "{out}");
    assert!(out.contains("configmap/cfg created"), "{out}");

    let (ok, out) = kubectl(&kc, &ns, &["get", "hsmsec"], None).await;
    assert!(ok, "{out}");
    assert!(
        out.contains("SECRET NAME") && out.contains("db-secret"),
        "{out}"
    );

    let (ok, out) = kubectl(
        &kc,
        &ns,
        &["apply", "-f", "-"],
        Some(&manifest("db2", "\"2\"")),
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("hsmsecret.hsm.j5t.io/db configured"), "{out}");
    let (ok, out) = kubectl(
        &kc,
        &ns,
        &["get", "configmap", "cfg", "-o", "jsonpath={.data.a}"],
        None,
    )
    .await;
    assert!(ok && out.trim() == "2", "{out}");

    // An event recorded through events.k8s.io shows in describe (which reads core Events).
    let hsm: kube::Api<hsm_api::HSMSecret> = env.api();
    let obj = hsm.get("db").await.unwrap();
    let recorder = kube::runtime::events::Recorder::new(
        env.client.clone(),
        kube::runtime::events::Reporter {
            controller: "emu-test".into(),
            instance: None,
        },
    );
    let event = kube::runtime::events::Event {
        type_: kube::runtime::events::EventType::Warning,
        reason: "SyncFailed".into(),
        note: Some("device offline".into()),
        action: "Sync".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &kube::Resource::object_ref(&obj, &()))
        .await
        .unwrap();
    let (ok, out) = kubectl(&kc, &ns, &["describe", "hsmsecret", "db"], None).await;
    assert!(ok, "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("Secret Name:") && l.trim_end().ends_with(" db2")),
        "{out}"
    );
    assert!(
        out.contains("SyncFailed") && out.contains("device offline"),
        "{out}"
    );
    let (ok, out) = kubectl(&kc, &ns, &["describe", "configmap", "cfg"], None).await;
    assert!(ok && out.contains("Name:         cfg"), "{out}");

    let (ok, out) = kubectl(
        &kc,
        &ns,
        &["delete", "-f", "-"],
        Some(&manifest("db2", "\"2\"")),
    )
    .await;
    assert!(ok, "{out}");
    assert!(out.contains("hsmsecret.hsm.j5t.io \"db\" deleted"), "{out}");
    let (ok, out) = kubectl(&kc, &ns, &["get", "hsmsecret", "db"], None).await;
    assert!(!ok && out.contains("NotFound"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_get_watch_follows_changes() {
    let mut env = common::env().await;
    let kc = env.kubeconfig().await;
    let ns = env.namespace.clone();
    let mut watch = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args([
            "--namespace",
            &ns,
            "get",
            "hsmsecrets",
            "--watch",
            "--output-watch-events",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    // Let the watch start before the changes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (ok, out) = kubectl(
        &kc,
        &ns,
        &["apply", "-f", "-"],
        Some(&manifest("w", "\"1\"")),
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&kc, &ns, &["delete", "hsmsecret", "db"], None).await;
    assert!(ok, "{out}");
    let mut seen = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.len() < 3 {
        match tokio::time::timeout_at(deadline, lines.next_line()).await {
            Ok(Ok(Some(l))) => seen.push(l),
            other => panic!("watch ended early: {other:?}; saw {seen:?}"),
        }
    }
    watch.kill().await.unwrap();
    let words: Vec<Vec<&str>> = seen
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(words[0][..3], ["EVENT", "NAME", "SECRET"], "{seen:?}");
    assert_eq!(words[1][..3], ["ADDED", "db", "w"], "{seen:?}");
    assert_eq!(words[2][..3], ["DELETED", "db", "w"], "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_refuses_fields_the_schema_does_not_declare() {
    let mut env = common::env().await;
    let kc = env.kubeconfig().await;
    let ns = env.namespace.clone();
    let typo = "
apiVersion: hsm.j5t.io/v1alpha1
kind: HSMSecret
metadata:
  name: typo
spec:
  secretNmae: x
";
    let (ok, out) = kubectl(&kc, &ns, &["apply", "-f", "-"], Some(typo)).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("strict decoding error") && out.contains("spec.secretNmae"),
        "{out}"
    );
    // Without strict validation the field is dropped.
    let (ok, out) = kubectl(
        &kc,
        &ns,
        &["apply", "--validate=false", "-f", "-"],
        Some(typo),
    )
    .await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(
        &kc,
        &ns,
        &["get", "hsmsecret", "typo", "-o", "jsonpath={.spec}"],
        None,
    )
    .await;
    assert!(ok && !out.contains("secretNmae"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_scale_writes_the_replicas_through_the_scale_subresource() {
    let mut env = common::env().await;
    let kc = env.kubeconfig().await;
    let ns = env.namespace.clone();
    let deployment = "
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: main, image: busybox}]
";
    let (ok, out) = kubectl(&kc, &ns, &["apply", "-f", "-"], Some(deployment)).await;
    assert!(ok, "{out}");
    let (ok, out) = kubectl(&kc, &ns, &["scale", "deployment/web", "--replicas=3"], None).await;
    assert!(ok && out.contains("scaled"), "{out}");
    let deploys: kube::Api<k8s_openapi::api::apps::v1::Deployment> = env.api();
    let scale = deploys.get_scale("web").await.unwrap();
    assert_eq!(scale.spec.unwrap().replicas, Some(3));
    assert_eq!(scale.status.unwrap().selector.as_deref(), Some("app=web"));
    assert_eq!(deploys.get("web").await.unwrap().spec.replicas, Some(3));
}
