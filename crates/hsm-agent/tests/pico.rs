//! The agent's device on the virtual Pico HSM, through pcscd and OpenSC: the card's own PIN
//! counter shows what a wrong PIN costs, and a pulled card is recovered in place. One
//! fixture per test process (cargo-nextest).

use hsm_agent::device::{Device, DeviceConfig, NotReadyReason, Readiness};
use hsm_agent::pin::FixedPin;
use hsm_store::{MetadataChange, SecretStore, TokenSelector, secret_data};
use std::time::{Duration, Instant};
use virtual_pico::fixture::{OPENSC_MODULE, PicoFixture, USER_PIN};

fn device(pin: &str, state: &std::path::Path) -> Device {
    Device::new(
        DeviceConfig {
            state_dir: Some(state.to_path_buf()),
            min_backoff: Duration::ZERO,
            max_backoff: Duration::ZERO,
            ..DeviceConfig::new(OPENSC_MODULE, TokenSelector::First)
        },
        Box::new(FixedPin(pin.into())),
    )
}

#[test]
fn a_wrong_pin_costs_exactly_one_try_on_the_card() {
    let fixture = PicoFixture::start().unwrap();
    let state = tempfile::tempdir().unwrap();
    assert_eq!(fixture.card.card().user_tries_left(), Some(3));
    let wrong = device("000000", state.path());
    for _ in 0..5 {
        assert!(matches!(
            wrong.ensure_connected(),
            Readiness::NotReady {
                reason: NotReadyReason::PinRefused,
                ..
            }
        ));
    }
    assert_eq!(
        fixture.card.card().user_tries_left(),
        Some(2),
        "one try spent, not five"
    );
    // A restarted agent with the same wrong PIN spends none.
    let restarted = device("000000", state.path());
    restarted.ensure_connected();
    assert_eq!(fixture.card.card().user_tries_left(), Some(2));
    // The right PIN connects and restores the counter.
    let right = device(USER_PIN, state.path());
    assert_eq!(right.ensure_connected(), Readiness::Ready);
    assert_eq!(fixture.card.card().user_tries_left(), Some(3));
}

#[test]
fn a_pulled_card_is_recovered_in_place() {
    let fixture = PicoFixture::start().unwrap();
    let state = tempfile::tempdir().unwrap();
    let device = device(USER_PIN, state.path());
    device
        .with_store(|s| {
            s.write(
                "db",
                &secret_data([("password", "p1")]),
                MetadataChange::Keep,
            )
        })
        .unwrap();

    fixture.card.remove();
    std::thread::sleep(Duration::from_millis(1500));
    let err = device
        .with_store(|s| s.read("db"))
        .expect_err("the card is gone");
    assert!(
        matches!(
            err,
            hsm_agent::device::DeviceError::NotReady {
                reason: NotReadyReason::TokenLost,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(device.readiness(), Readiness::NotReady { .. }));

    fixture.card.insert();
    assert!(fixture.card.wait_connected(Duration::from_secs(10)));
    let deadline = Instant::now() + Duration::from_secs(20);
    while device.ensure_connected() != Readiness::Ready {
        assert!(Instant::now() < deadline, "{:?}", device.readiness());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(device.connections(), 2, "reconnected without a restart");
    let data = device.with_store(|s| s.read("db")).unwrap();
    assert_eq!(data["password"].expose(), b"p1");
    device
        .with_store(|s| {
            s.write(
                "db",
                &secret_data([("password", "p2")]),
                MetadataChange::Keep,
            )
        })
        .unwrap();
}
