//! The plugin as a real binary against a real manager: `hsm-operator`'s REST API (wired as the
//! binary wires it) on the served API emulator, with two agents on SoftHSM2 behind mTLS. What
//! the plugin writes lands on both devices and in the HSMSecret's Kubernetes Secret; what it
//! deletes is gone from both.

mod support;

use clap::Parser;
use hsm_operator::agents::AgentApi;
use hsm_operator::cli::Cli;
use hsm_operator::testing::*;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use support::Plugin;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits until `check` holds.
async fn until(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_plugin_writes_reads_lists_and_deletes_through_the_manager_on_every_device() {
    let cluster = cluster().await;
    let client = cluster.client.clone();
    let pki = operator_pki(&client, OPERATOR_NS).await;
    let (a, b) = (TestAgent::start(&pki).await, TestAgent::start(&pki).await);
    let port = free_port();
    let cli = Cli::parse_from([
        "hsm-operator".to_owned(),
        "--metrics-bind-address=0".into(),
        "--health-probe-bind-address=0".into(),
        format!("--api-bind-address=127.0.0.1:{port}"),
        format!("--operator-name={OPERATOR_NAME}"),
        format!("--namespace={OPERATOR_NS}"),
        "--manage-agents=false".into(),
        format!("--agent-endpoint=a={}", a.url()),
        format!("--agent-endpoint=b={}", b.url()),
    ]);
    let manager = tokio::spawn({
        let client = client.clone();
        async move { hsm_operator::run::run_with(cli, client).await }
    });
    let server = format!("http://127.0.0.1:{port}");
    let plugin = Plugin::new(&server, &cluster.emulator.admin_token());
    until(
        "the manager's REST API to see both devices healthy",
        async || {
            let out = plugin.cmd(&["health", "-o", "json"]).output().unwrap();
            out.status.success()
        },
    )
    .await;

    // create → on both devices, and the HSMSecret's Secret holds it.
    plugin
        .cmd(&[
            "create",
            "db",
            "--from-literal",
            "username=app",
            "--from-literal",
            "password=s3cret",
        ])
        .assert()
        .success();
    for agent in [&a, &b] {
        let values = agent.client(&pki).read("db").await.unwrap();
        assert_eq!(values["password"], b"s3cret");
    }
    Api::<hsm_api::secret::HSMSecret>::namespaced(client.clone(), APPS)
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMSecret",
                "metadata": {"name": "db", "namespace": APPS},
                "spec": {"parentRef": {"name": OPERATOR_NAME, "namespace": OPERATOR_NS}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let secrets = Api::<k8s_openapi::api::core::v1::Secret>::namespaced(client.clone(), APPS);
    until("the Secret to hold the plugin's write", async || {
        secrets
            .get_opt("db")
            .await
            .unwrap()
            .and_then(|s| s.data)
            .is_some_and(|d| d.get("password").is_some_and(|v| v.0 == b"s3cret"))
    })
    .await;

    // get -o json shows the values; text shows keys only; list names it.
    let out = plugin.cmd(&["get", "db", "-o", "json"]).output().unwrap();
    assert!(out.status.success());
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown.to_string().matches("s3cret").count(), 1, "{shown}");
    let out = plugin.cmd(&["get", "db"]).output().unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
    let out = plugin.cmd(&["list"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("db"));

    // update merges a key; the Secret follows.
    plugin
        .cmd(&["update", "db", "--from-literal", "password=rotated"])
        .assert()
        .success();
    until("the Secret to follow the update", async || {
        secrets
            .get_opt("db")
            .await
            .unwrap()
            .and_then(|s| s.data)
            .is_some_and(|d| {
                d.get("password").is_some_and(|v| v.0 == b"rotated")
                    && d.get("username").is_some_and(|v| v.0 == b"app")
            })
    })
    .await;

    // delete → gone from both devices; get is "not found" (exit 7).
    plugin.cmd(&["delete", "db", "--force"]).assert().success();
    for agent in [&a, &b] {
        assert!(agent.client(&pki).read("db").await.is_err());
    }
    plugin.cmd(&["get", "db"]).assert().code(7);
    manager.abort();
}
