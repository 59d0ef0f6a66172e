//! The agent binary as a pod runs it: the Go manager's arguments, a SoftHSM2 token of its
//! own (this test process never logs in to it), mTLS, health endpoints, and a clean stop on
//! SIGTERM.

mod common;

use common::{ca, leaf};
use hsm_proto::v1::hsm_agent_client::HsmAgentClient;
use hsm_proto::v1::{ReadSecretRequest, SecretData, WriteSecretRequest};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A token directory with one token, made by softhsm2-util in its own process.
fn token_dir(dir: &Path) {
    std::fs::create_dir(dir.join("tokens")).unwrap();
    std::fs::write(
        dir.join("softhsm2.conf"),
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
            dir.join("tokens").display()
        ),
    )
    .unwrap();
    let status = Command::new("softhsm2-util")
        .args([
            "--init-token",
            "--free",
            "--label",
            "agent",
            "--so-pin",
            "12345678",
            "--pin",
            "1234",
        ])
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .stdout(Stdio::null())
        .status()
        .expect("softhsm2-util (Debian package softhsm2)");
    assert!(status.success());
    std::fs::write(dir.join("pin"), "1234\n").unwrap();
}

/// Stops the agent if a test fails half-way.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(dir: &Path, extra: &[String], grpc: u16, health: u16) -> Agent {
    let mut command = agent_command(dir, extra, grpc, health);
    command.arg(format!("--pin-file={}", dir.join("pin").display()));
    Agent(command.spawn().unwrap())
}

/// The agent's command as the manager runs it, without a PIN source.
fn agent_command(dir: &Path, extra: &[String], grpc: u16, health: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_hsm-agent"));
    command
        .args([
            "--mode=agent",
            "--device-name=pico-hsm",
            &format!("--port={grpc}"),
            &format!("--health-port={health}"),
            "--token-label=agent",
            "--slot-id=0",
            &format!("--pkcs11-library={MODULE}"),
            "--bind-address=127.0.0.1",
        ])
        .arg(format!("--state-dir={}", dir.join("state").display()))
        .args(extra)
        .env("SOFTHSM2_CONF", dir.join("softhsm2.conf"))
        .env_remove("HSM_PIN")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

async fn wait_ready(agent: &mut Agent, health: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_status(health, "/readyz").await != Some(200) {
        assert!(Instant::now() < deadline, "the agent never became ready");
        assert!(agent.0.try_wait().unwrap().is_none(), "the agent exited");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// With no PIN flag and no HSM_PIN, the PIN comes from the Secret that the HSMDevice's
/// `pinSecret` names, in the namespace it names, read through the Kubernetes API (here the
/// emulator over HTTP, found through KUBECONFIG, as in-cluster config would be).
#[tokio::test]
async fn takes_its_pin_from_the_hsmdevices_pin_secret() {
    use k8s_openapi::api::core::v1::{Namespace, Secret};
    use kube::Api;
    use kube::api::PostParams;
    let dir = tempfile::tempdir().unwrap();
    token_dir(dir.path());
    let emulator = api_emulator::Emulator::new();
    emulator
        .load_crds(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds"))
        .unwrap();
    let client = emulator.client();
    let post = PostParams::default();
    for ns in ["hsm-system", "pins"] {
        let namespace: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": ns}})).unwrap();
        Api::<Namespace>::all(client.clone())
            .create(&post, &namespace)
            .await
            .unwrap();
    }
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pico-pin"}, "stringData": {"pin": "1234"}
    }))
    .unwrap();
    Api::<Secret>::namespaced(client.clone(), "pins")
        .create(&post, &secret)
        .await
        .unwrap();
    let device: hsm_api::device::HSMDevice = serde_json::from_value(serde_json::json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMDevice",
        "metadata": {"name": "pico-hsm"},
        "spec": {"deviceType": "PicoHSM",
                 "pkcs11": {"pinSecret": {"name": "pico-pin", "key": "pin", "namespace": "pins"}}}
    }))
    .unwrap();
    Api::<hsm_api::device::HSMDevice>::namespaced(client, "hsm-system")
        .create(&post, &device)
        .await
        .unwrap();
    let server = emulator.serve(0).await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();

    let (grpc, health) = (free_port(), free_port());
    let mut command = agent_command(dir.path(), &["--insecure-plaintext".into()], grpc, health);
    command
        .env("KUBECONFIG", &kubeconfig)
        .env("POD_NAMESPACE", "hsm-system")
        .env_remove("KUBERNETES_SERVICE_HOST");
    let mut agent = Agent(command.spawn().unwrap());
    wait_ready(&mut agent, health).await;
}

async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await.ok()?;
    response.get(9..12)?.parse().ok()
}

#[tokio::test]
async fn runs_with_the_go_managers_arguments_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    token_dir(dir.path());
    let root = ca("hsm-mtls-ca");
    let server = leaf(&root, "hsm-agent", true);
    let manager = leaf(&root, "hsm-manager", false);
    for (name, content) in [
        ("tls.crt", &server.0),
        ("tls.key", &server.1),
        ("ca.crt", &root.pem),
    ] {
        std::fs::write(dir.path().join(name), content).unwrap();
    }
    let tls = |name: &str| dir.path().join(name).display().to_string();
    let (grpc, health) = (free_port(), free_port());
    let mut agent = start(
        dir.path(),
        &[
            format!("--tls-cert-file={}", tls("tls.crt")),
            format!("--tls-key-file={}", tls("tls.key")),
            format!("--tls-client-ca-file={}", tls("ca.crt")),
        ],
        grpc,
        health,
    );

    wait_ready(&mut agent, health).await;
    assert_eq!(http_status(health, "/healthz").await, Some(200));

    let channel = Channel::from_shared(format!("https://127.0.0.1:{grpc}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&root.pem))
                .identity(Identity::from_pem(&manager.0, &manager.1))
                .domain_name("hsm-agent"),
        )
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = HsmAgentClient::new(channel);
    client
        .write_secret(WriteSecretRequest {
            path: "db".into(),
            secret_data: Some(SecretData {
                data: [("password".to_owned(), b"p".to_vec())].into(),
            }),
            metadata: None,
        })
        .await
        .unwrap();
    let read = client
        .read_secret(ReadSecretRequest { path: "db".into() })
        .await
        .unwrap();
    assert_eq!(
        read.into_inner().secret_data.unwrap().data["password"],
        b"p"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = agent.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the agent did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", grpc))
            .await
            .is_err()
    );
}

#[tokio::test]
async fn refuses_to_serve_in_the_clear_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    token_dir(dir.path());
    let mut agent = start(dir.path(), &[], free_port(), free_port());
    let status = agent.0.wait().unwrap();
    assert!(!status.success());
    let mut stderr = String::new();
    use std::io::Read;
    agent
        .0
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(stderr.contains("mTLS is required"), "{stderr}");
}
