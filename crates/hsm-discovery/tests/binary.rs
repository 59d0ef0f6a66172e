//! The binary as the manager's DaemonSet starts it (`--mode=discovery`, `NODE_NAME`,
//! `POD_NAMESPACE`, `POD_NAME`), outside a cluster: `KUBECONFIG` names the API emulator served
//! over HTTP and `--sysfs-root` the fixture tree. It writes its reports and stops on SIGTERM;
//! unknown flags and other modes are refused.

mod common;

use common::cluster::{NODE, NS, POD, cluster, put_device, summary, until};
use hsm_discovery::testing::fixture_sysfs;
use serde_json::json;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BINARY: &str = env!("CARGO_BIN_EXE_hsm-discovery");

/// Kills the child if the test fails before it is stopped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_daemonset_arguments_start_it_against_a_kubeconfig() {
    let (emulator, client) = cluster().await;
    put_device(
        &client,
        "pico",
        json!({"deviceType": "PicoHSM", "nodeSelector": {"hsm": "yes"},
               "discovery": {"usb": [{"vendorId": "2e8a", "productId": "10fd"}]}}),
    )
    .await;
    let server = emulator.serve(0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();

    let child = Command::new(BINARY)
        .args(["--mode=discovery", "--no-device-plugin", "--sysfs-root"])
        .arg(fixture_sysfs())
        .env("KUBECONFIG", &kubeconfig)
        .env("NODE_NAME", NODE)
        .env("POD_NAMESPACE", NS)
        .env("POD_NAME", POD)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let reports = until(&client, "the binary's report", |r| r.contains_key("pico")).await;
    assert_eq!(
        summary(&common::cluster::reports(&reports), "pico"),
        [(
            "DC6A33145E23A42A".into(),
            "/dev/bus/usb/001/015".into(),
            true
        )]
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after SIGTERM");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}

#[test]
fn other_modes_unknown_flags_and_a_missing_node_are_refused() {
    for args in [
        vec!["--mode=agent"],
        vec!["--mode=discovery", "--no-such-flag"],
        vec!["--mode=discovery", "--sync-interval=soon"],
    ] {
        let output = Command::new(BINARY)
            .args(&args)
            .env("NODE_NAME", NODE)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{args:?}");
        assert!(!output.stderr.is_empty());
    }
    let output = Command::new(BINARY)
        .arg("--mode=discovery")
        .env_remove("NODE_NAME")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("node-name"));
}
