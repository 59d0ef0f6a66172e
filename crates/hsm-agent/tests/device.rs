//! The device on real SoftHSM2: connects, serves, and never offers a refused PIN twice, not
//! even after a restart.

use hsm_agent::device::{Device, DeviceConfig, NotReadyReason, Readiness};
use hsm_agent::pin::FilePin;
use hsm_store::testing::{SOFTHSM2_MODULE, SoftHsm, TEST_PIN};
use hsm_store::{MetadataChange, SecretStore, secret_data};
use std::time::Duration;

fn config(hsm: &SoftHsm, state: &std::path::Path) -> DeviceConfig {
    DeviceConfig {
        state_dir: Some(state.to_path_buf()),
        min_backoff: Duration::ZERO,
        max_backoff: Duration::ZERO,
        ..DeviceConfig::new(SOFTHSM2_MODULE, hsm.selector())
    }
}

#[test]
fn serves_with_the_right_pin() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, format!("{TEST_PIN}\n")).unwrap();
    let device = Device::new(config(&hsm, dir.path()), Box::new(FilePin(pin)));
    assert_eq!(device.ensure_connected(), Readiness::Ready);
    device
        .with_store(|s| s.write("a", &secret_data([("k", "v")]), MetadataChange::Keep))
        .unwrap();
    assert_eq!(device.with_store(|s| Ok(s.list(""))).unwrap(), ["a"]);
    assert_eq!(device.login_attempts(), 1);
}

#[test]
fn a_refused_pin_is_never_offered_again() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let pin = dir.path().join("pin");
    std::fs::write(&pin, "0000").unwrap();
    let device = Device::new(config(&hsm, dir.path()), Box::new(FilePin(pin.clone())));
    for _ in 0..5 {
        match device.ensure_connected() {
            Readiness::NotReady { reason, message } => {
                assert_eq!(reason, NotReadyReason::PinRefused);
                assert!(!message.contains("0000"));
            }
            Readiness::Ready => panic!("connected with a wrong PIN"),
        }
    }
    assert_eq!(
        device.login_attempts(),
        1,
        "one wrong PIN costs exactly one try"
    );

    // A restarted agent with the same wrong PIN does not spend another.
    let restarted = Device::new(config(&hsm, dir.path()), Box::new(FilePin(pin.clone())));
    assert!(matches!(
        restarted.ensure_connected(),
        Readiness::NotReady {
            reason: NotReadyReason::PinRefused,
            ..
        }
    ));
    assert_eq!(restarted.login_attempts(), 0);

    // Once the PIN source changes, it connects.
    std::fs::write(&pin, TEST_PIN).unwrap();
    assert_eq!(restarted.ensure_connected(), Readiness::Ready);
    assert_eq!(restarted.login_attempts(), 1);
}

#[test]
fn missing_token_and_module_are_reported() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let pin = || Box::new(hsm_agent::pin::FixedPin(TEST_PIN.into()));
    let absent = Device::new(
        DeviceConfig {
            selector: hsm_store::TokenSelector::Label("no-such-card".into()),
            ..config(&hsm, dir.path())
        },
        pin(),
    );
    assert!(matches!(
        absent.ensure_connected(),
        Readiness::NotReady {
            reason: NotReadyReason::TokenAbsent,
            ..
        }
    ));
    let no_module = Device::new(
        DeviceConfig {
            module: "/nonexistent/module.so".into(),
            ..config(&hsm, dir.path())
        },
        pin(),
    );
    assert!(matches!(
        no_module.ensure_connected(),
        Readiness::NotReady {
            reason: NotReadyReason::ModuleUnavailable,
            ..
        }
    ));
    assert_eq!(absent.login_attempts() + no_module.login_attempts(), 0);
}

/// A PIN source that blocks until released, and says when it is being asked.
struct GatedPin {
    asked: std::sync::mpsc::Sender<()>,
    release: std::sync::Mutex<std::sync::mpsc::Receiver<()>>,
}

impl hsm_agent::pin::PinSource for GatedPin {
    fn current(&self) -> Result<secrecy::SecretString, hsm_agent::pin::PinError> {
        let _ = self.asked.send(());
        let _ = self.release.lock().unwrap().recv();
        Ok(TEST_PIN.into())
    }
    fn describe(&self) -> String {
        "a gate".into()
    }
}

#[test]
fn readiness_answers_while_a_connection_is_under_way() {
    let hsm = SoftHsm::new();
    let dir = tempfile::tempdir().unwrap();
    let (asked_tx, asked) = std::sync::mpsc::channel();
    let (release, release_rx) = std::sync::mpsc::channel();
    let device = std::sync::Arc::new(Device::new(
        config(&hsm, dir.path()),
        Box::new(GatedPin {
            asked: asked_tx,
            release: std::sync::Mutex::new(release_rx),
        }),
    ));
    let connecting = {
        let device = device.clone();
        std::thread::spawn(move || device.ensure_connected())
    };
    // The connection attempt is now waiting inside the PIN source.
    asked.recv_timeout(Duration::from_secs(10)).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    {
        let device = device.clone();
        std::thread::spawn(move || tx.send(device.readiness()).unwrap());
    }
    let during = rx
        .recv_timeout(Duration::from_secs(5))
        .expect("readiness must not wait for the connection attempt");
    assert!(matches!(
        during,
        Readiness::NotReady {
            reason: NotReadyReason::Connecting,
            ..
        }
    ));
    release.send(()).unwrap();
    assert_eq!(connecting.join().unwrap(), Readiness::Ready);
    assert_eq!(device.readiness(), Readiness::Ready);
    assert_eq!(device.connections(), 1);
}
