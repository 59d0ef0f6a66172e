//! The agent listens on its pod's address when the downward API gives it as `POD_IP` (as
//! the manager's agent pods do), so that agents sharing a host (the local pod runner gives
//! each pod its own loopback address) can all use ports 9090 and 8093; without it, or with
//! it empty, on every address; an explicit `--bind-address` wins.

use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the agent when the test ends, also on failure.
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An address of 127.0.0.0/8 other than 127.0.0.1, and a port free on it.
fn address() -> (Ipv4Addr, u16) {
    let ip = Ipv4Addr::new(127, 0, 201, (std::process::id() % 250) as u8 + 2);
    let port = TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    (ip, port)
}

/// The agent with a PIN file and a token it will not find: it still serves health.
fn start(dir: &std::path::Path, pod_ip: Option<&str>, extra: &[&str], health: u16) -> Agent {
    std::fs::write(dir.join("pin"), "1234").unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hsm-agent"));
    command
        .args([
            "--device-name=d",
            "--token-label=none",
            "--insecure-plaintext",
        ])
        .arg("--pkcs11-library=/usr/lib/softhsm/libsofthsm2.so")
        .arg(format!("--pin-file={}", dir.join("pin").display()))
        .arg(format!("--state-dir={}", dir.join("state").display()))
        .arg(format!("--health-port={health}"))
        .arg("--port=0")
        .args(extra)
        .env_remove("POD_IP")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(ip) = pod_ip {
        command.env("POD_IP", ip);
    }
    Agent(command.spawn().unwrap())
}

fn listening(agent: &mut Agent, ip: Ipv4Addr, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect((ip, port)).is_err() {
        assert!(agent.0.try_wait().unwrap().is_none(), "the agent exited");
        assert!(Instant::now() < deadline, "nothing listens on {ip}:{port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn binds_to_pod_ip_when_given() {
    let dir = tempfile::tempdir().unwrap();
    let (ip, port) = address();
    let mut agent = start(dir.path(), Some(&ip.to_string()), &[], port);
    listening(&mut agent, ip, port);
    // Only there: not on the host's 127.0.0.1.
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
}

#[test]
fn an_empty_pod_ip_or_none_binds_every_address() {
    for pod_ip in [None, Some("")] {
        let dir = tempfile::tempdir().unwrap();
        let (ip, port) = address();
        let mut agent = start(dir.path(), pod_ip, &[], port);
        listening(&mut agent, ip, port);
        listening(&mut agent, Ipv4Addr::LOCALHOST, port);
    }
}

#[test]
fn an_explicit_bind_address_wins_over_pod_ip() {
    let dir = tempfile::tempdir().unwrap();
    let (ip, port) = address();
    let mut agent = start(
        dir.path(),
        Some(&ip.to_string()),
        &["--bind-address=127.0.0.1"],
        port,
    );
    listening(&mut agent, Ipv4Addr::LOCALHOST, port);
    assert!(TcpStream::connect((ip, port)).is_err());
}
