//! The pcscd supervisor with the real pcscd, each run in a private mount namespace whose
//! `/run/pcscd` is a temporary directory, so the machine's own pcscd is never touched.

use hsm_agent::pcscd::{DEFAULT_PROGRAM, Pcscd, PcscdConfig, PcscdError, PcscdState};
use hsm_store::testing::CapturedLogs;
use std::path::Path;
use std::time::Duration;

fn private_pcscd(dir: &Path, debug: bool) -> PcscdConfig {
    assert!(
        Path::new(DEFAULT_PROGRAM).exists(),
        "pcscd is not installed: install the Debian package pcscd (cargo xtask test does)"
    );
    let readers = dir.join("reader.conf.d");
    std::fs::create_dir_all(&readers).unwrap();
    let run = dir.join("run");
    std::fs::create_dir_all(&run).unwrap();
    let script = format!(
        "mkdir -p /run/pcscd && mount --bind {} /run/pcscd && exec {DEFAULT_PROGRAM} -f {} -c {}",
        run.display(),
        if debug { "-d" } else { "" },
        readers.display()
    );
    PcscdConfig {
        program: "unshare".into(),
        args: vec![
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            script,
        ],
        socket: run.join("pcscd.comm"),
        start_timeout: Duration::from_secs(10),
        stop_timeout: Duration::from_secs(5),
        restart_delay: Duration::from_millis(100),
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

#[tokio::test]
async fn starts_restarts_and_stops_the_real_pcscd() {
    let captured = CapturedLogs::default();
    let writer = captured.clone();
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .finish(),
    );
    let dir = tempfile::tempdir().unwrap();
    let config = private_pcscd(dir.path(), true);
    let socket = config.socket.clone();
    let mut pcscd = Pcscd::start(config).await.unwrap();
    let PcscdState::Running(first) = pcscd.state() else {
        panic!("not running: {:?}", pcscd.state())
    };
    assert!(socket.exists());
    assert!(alive(first));

    // Killed from outside: the supervisor brings it back.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let state = tokio::time::timeout(
        Duration::from_secs(15),
        pcscd.wait_for(|s| matches!(s, PcscdState::Running(p) if *p != first)),
    )
    .await
    .expect("pcscd restarted");
    let PcscdState::Running(second) = state else {
        unreachable!()
    };
    assert_eq!(pcscd.restarts(), 1);
    assert!(socket.exists());

    pcscd.stop().await;
    assert!(!alive(second), "pcscd still running after stop");
    assert!(!socket.exists());
    let logs = captured.text();
    assert!(
        logs.contains("pcscdaemon.c"),
        "pcscd's output reaches the agent log"
    );
}

#[tokio::test]
async fn a_pcscd_that_exits_at_once_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = PcscdConfig {
        program: "false".into(),
        args: vec![],
        ..private_pcscd(dir.path(), false)
    };
    assert!(matches!(
        Pcscd::start(config).await,
        Err(PcscdError::ExitedEarly(_))
    ));
}

#[tokio::test]
async fn a_program_that_cannot_start_keeps_the_os_error() {
    let dir = tempfile::tempdir().unwrap();
    let config = PcscdConfig {
        program: dir.path().join("no-such-pcscd"),
        args: vec![],
        ..private_pcscd(dir.path(), false)
    };
    let Err(error) = Pcscd::start(config).await else {
        panic!("a missing program started");
    };
    assert!(matches!(error, PcscdError::Spawn { .. }), "{error:?}");
    let os = std::error::Error::source(&error)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .expect("the OS error is the source");
    assert_eq!(os.kind(), std::io::ErrorKind::NotFound);
}

#[tokio::test]
async fn a_pcscd_without_a_socket_is_stopped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("pid");
    let config = PcscdConfig {
        program: "sh".into(),
        args: vec![
            "-c".into(),
            format!("echo $$ > {}; exec sleep 60", marker.display()),
        ],
        start_timeout: Duration::from_millis(500),
        ..private_pcscd(dir.path(), false)
    };
    assert!(matches!(
        Pcscd::start(config).await,
        Err(PcscdError::NoSocket(_))
    ));
    let pid: u32 = std::fs::read_to_string(&marker)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the stuck process was stopped");
}
