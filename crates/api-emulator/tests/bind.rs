//! `api-emulator serve --bind ADDR`: the server listens on that address, the kubeconfig names
//! it, and with `--tls` the serving certificate does too, so that clients which dial it (pods
//! on a bridge whose gateway is this machine) verify the server with the cluster CA.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// Starts the binary with `args` and answers the child and the URL it printed.
async fn serve(dir: &Path, args: &[&str]) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_api-emulator"))
        .args(["serve", "--kubeconfig"])
        .arg(dir.join("kubeconfig"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the server starts")
        .unwrap()
        .expect("it prints its URL");
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_server_on_another_address_is_verified_there_with_the_cluster_ca() {
    let dir = tempfile::tempdir().unwrap();
    // 127.0.0.2 is this machine's, but not the 127.0.0.1 every certificate names: the
    // certificate must name it for the handshake to pass.
    let (_child, url) = serve(dir.path(), &["--tls", "--bind", "127.0.0.2"]).await;
    assert!(url.starts_with("https://127.0.0.2:"), "{url}");
    let kubeconfig = kube::config::Kubeconfig::read_from(dir.path().join("kubeconfig")).unwrap();
    let server = kubeconfig.clusters[0]
        .cluster
        .as_ref()
        .and_then(|c| c.server.clone())
        .unwrap();
    assert_eq!(server, url);
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let version = client.apiserver_version().await.unwrap();
    assert!(!version.git_version.is_empty());
    // Nothing listens on 127.0.0.1 at that port.
    let port = url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_address_is_refused_with_a_reason() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_api-emulator"))
        .args([
            "serve",
            "--kubeconfig",
            "/nonexistent/kubeconfig",
            "--bind",
            "0.0.0.0",
        ])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("every address"), "{stderr}");
}
