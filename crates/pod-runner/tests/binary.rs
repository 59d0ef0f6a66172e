//! The `pod-runner` binary against the API emulator served over HTTP (found through a
//! kubeconfig, as with any cluster): it runs a Deployment's pod, and when it is killed
//! outright (SIGKILL, no chance to clean up) the pod's process dies with it.

use api_emulator::Emulator;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the runner if the test fails half-way.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_binary_runs_pods_and_they_die_with_it() {
    let emulator = Emulator::new();
    let server = emulator.serve(0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let client = emulator.client();
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "bin"},
        "spec": {"selector": {"matchLabels": {"app": "bin"}},
                 "template": {"metadata": {"labels": {"app": "bin"}}, "spec": {"containers": [{
                     "name": "echo", "image": "registry.example/echo:latest",
                     "env": [{"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                             {"name": "ECHO_PORT", "value": "18120"}],
                     "readinessProbe": {"tcpSocket": {"port": 18120}, "periodSeconds": 1}}]}}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let mut runner = Killed(
        Command::new(env!("CARGO_BIN_EXE_pod-runner"))
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .arg(format!(
                "--image=echo={}",
                env!("CARGO_BIN_EXE_pod-runner-echo")
            ))
            .arg(format!("--state-dir={}", dir.path().join("pods").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    let ip = loop {
        let list = pods
            .list(&ListParams::default().labels("app=bin"))
            .await
            .unwrap()
            .items;
        if let Some(p) = list.iter().find(|p| pod_runner::desired::is_ready(p)) {
            break p.status.as_ref().unwrap().pod_ip.clone().unwrap();
        }
        assert!(runner.0.try_wait().unwrap().is_none(), "the runner exited");
        assert!(Instant::now() < deadline, "no ready pod");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(std::net::TcpStream::connect((ip.as_str(), 18120)).is_ok());

    runner.0.kill().unwrap();
    runner.0.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect((ip.as_str(), 18120)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the pod's process outlived the runner"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[test]
fn bad_options_are_refused_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_pod-runner"))
        .args(["--image", "no-equals-sign"])
        .env("KUBECONFIG", "/nonexistent")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("expected NAME=VALUE") && stderr.contains("no-equals-sign"),
        "{stderr}"
    );
}
