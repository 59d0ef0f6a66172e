//! The agent image serving a SoftHSM2 token volume over gRPC with mTLS, under the Go agent's
//! security context: read-only root, no privilege escalation, every capability dropped, the
//! pcscd directories and /tmp as the only writable places (the pod's emptyDirs). A test-only
//! layer adds SoftHSM2 (and the vpcd reader the e2e tests use); below it is the agent image
//! `cargo xtask images` ships. The agent also runs its pcscd (`--pcscd=always`), which proves
//! /run/pcscd and /var/lock/pcsc are ready for a read-only root.

mod common;

use common::{Cleanup, binary, build_image};
use delivery::components::{AGENT, TEST_TOKEN_DIR as TOKEN_DIR};
use delivery::podman;
use hsm_proto::v1::hsm_agent_client::HsmAgentClient;
use hsm_proto::v1::{ReadSecretRequest, SecretData, WriteSecretRequest};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};

/// The agent image plus SoftHSM2 and its configuration.
fn build_test_layer(cleanup: &Cleanup, agent: &str) -> String {
    let image = "localhost/hsm-agent-softhsm:test".to_owned();
    podman::build_test_layer(cleanup.dir.path(), agent, &image, &cleanup.labels()).unwrap();
    image
}

/// A token made on the host by softhsm2-util, as an init job would make one on a volume.
fn token(dir: &Path) {
    let tokens = dir.join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    let conf = dir.join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!("directories.tokendir = {}\n", tokens.display()),
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
        .env("SOFTHSM2_CONF", &conf)
        .stdout(Stdio::null())
        .status()
        .expect("softhsm2-util (Debian package softhsm2)");
    assert!(status.success());
    std::fs::create_dir_all(dir.join("pin")).unwrap();
    std::fs::write(dir.join("pin/pin"), "1234\n").unwrap();
}

/// mTLS files for the agent (`tls/`) and the manager's client identity.
struct Pki {
    ca: String,
    client: (String, String),
}

fn pki(dir: &Path) -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "hsm-mtls-ca");
    let ca_key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&ca_key).unwrap().pem();
    let issuer = Issuer::new(params, ca_key);
    let leaf = |name: &str, usage| {
        let mut params = CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        (
            params.signed_by(&key, &issuer).unwrap().pem(),
            key.serialize_pem(),
        )
    };
    let server = leaf("hsm-agent", ExtendedKeyUsagePurpose::ServerAuth);
    let tls = dir.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    std::fs::write(tls.join("tls.crt"), &server.0).unwrap();
    std::fs::write(tls.join("tls.key"), &server.1).unwrap();
    std::fs::write(tls.join("ca.crt"), &ca).unwrap();
    Pki {
        client: leaf("hsm-manager", ExtendedKeyUsagePurpose::ClientAuth),
        ca,
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Runs the agent container as the manager's Deployment describes the pod; returns its id.
fn run_agent(cleanup: &Cleanup, image: &str, dir: &Path, grpc: u16, health: u16) -> String {
    let volume = |host: &Path, at: &str, mode: &str| format!("{}:{at}:{mode}", host.display());
    let out = Command::new("podman")
        .args(["run", "--detach", "--label", &cleanup.label])
        // The Go agent's container securityContext.
        .args([
            "--user=0:0",
            "--read-only",
            "--read-only-tmpfs=false",
            "--cap-drop=ALL",
        ])
        .args(["--security-opt=no-new-privileges"])
        // Its emptyDirs and volumes.
        .args([
            "--tmpfs=/tmp",
            "--tmpfs=/run/pcscd",
            "--tmpfs=/var/lock/pcsc",
        ])
        .args(["--volume", &volume(&dir.join("tls"), "/etc/hsm/tls", "ro")])
        .args(["--volume", &volume(&dir.join("pin"), "/etc/hsm/pin", "ro")])
        .args(["--volume", &volume(&dir.join("tokens"), TOKEN_DIR, "rw")])
        .args(["--env=SOFTHSM2_CONF=/etc/softhsm2.conf"])
        .args(["--publish", &format!("127.0.0.1:{grpc}:9090")])
        .args(["--publish", &format!("127.0.0.1:{health}:8093")])
        .arg(image)
        // The Go manager's arguments, then the test's token.
        .args([
            "--mode=agent",
            "--device-name=pico-hsm",
            "--port=9090",
            "--health-port=8093",
        ])
        .args([
            "--tls-cert-file=/etc/hsm/tls/tls.crt",
            "--tls-key-file=/etc/hsm/tls/tls.key",
            "--tls-client-ca-file=/etc/hsm/tls/ca.crt",
        ])
        .args([
            "--token-label=agent",
            "--slot-id=0",
            "--pkcs11-library=/usr/lib/softhsm/libsofthsm2.so",
        ])
        .args(["--pin-file=/etc/hsm/pin/pin", "--pcscd=always"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "podman run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn logs(id: &str) -> String {
    let out = Command::new("podman").args(["logs", id]).output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn running(id: &str) -> bool {
    let out = Command::new("podman")
        .args(["inspect", "--format", "{{.State.Running}}", id])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "true"
}

async fn ready(port: u16) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request = b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    let mut response = String::new();
    stream.write_all(request).await.is_ok()
        && stream.read_to_string(&mut response).await.is_ok()
        && response.starts_with("HTTP/1.1 200")
}

#[tokio::test]
async fn serves_a_softhsm2_token_over_mtls_with_a_read_only_root_and_no_capabilities() {
    let Some(binary) = binary(&AGENT) else {
        panic!("the workspace has an hsm-agent binary");
    };
    let cleanup = Cleanup::new("agent-mtls");
    let agent = build_image(&cleanup, &AGENT, &binary, "mtls-test");
    let image = build_test_layer(&cleanup, &agent);
    let dir = cleanup.dir.path().join("pod");
    token(&dir);
    let pki = pki(&dir);
    let (grpc, health) = (free_port(), free_port());
    let id = run_agent(&cleanup, &image, &dir, grpc, health);

    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready(health).await {
        assert!(running(&id), "the agent container stopped:\n{}", logs(&id));
        assert!(
            Instant::now() < deadline,
            "the agent never became ready:\n{}",
            logs(&id)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let channel = Channel::from_shared(format!("https://127.0.0.1:{grpc}"))
        .unwrap()
        .tls_config(
            ClientTlsConfig::new()
                .ca_certificate(Certificate::from_pem(&pki.ca))
                .identity(Identity::from_pem(&pki.client.0, &pki.client.1))
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
                data: [("password".to_owned(), b"from-the-image".to_vec())].into(),
            }),
            metadata: None,
        })
        .await
        .unwrap();
    let read = client
        .read_secret(ReadSecretRequest { path: "db".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        read.secret_data.unwrap().data["password"],
        b"from-the-image"
    );

    // The write went to the token volume, the only persistent writable place.
    let written = walk(&dir.join("tokens"));
    assert!(
        written.iter().any(|f| f.ends_with(".object")),
        "{written:?}"
    );
    // Under the Go agent's security context, and with its pcscd running beside it.
    let inspect = |format: &str| {
        let out = Command::new("podman")
            .args(["inspect", "--format", format, &id])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(inspect("{{.HostConfig.ReadonlyRootfs}}"), "true");
    assert_eq!(inspect("{{.EffectiveCaps}}"), "[]");
    let top = Command::new("podman")
        .args(["top", &id, "args"])
        .output()
        .unwrap();
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(top.contains("/usr/sbin/pcscd"), "{top}");
}

fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}
