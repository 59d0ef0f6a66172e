//! The agent's device on the virtual Pico HSM, through pcscd and OpenSC: the card's own PIN
//! counter shows what a wrong PIN costs, and a pulled card is recovered in place. One
//! fixture per test process (cargo-nextest).

use hsm_agent::device::{Device, DeviceConfig, NotReadyReason, Readiness};
use hsm_agent::pin::FixedPin;
use hsm_proto::v1::{ReadSecretRequest, SecretData, WriteSecretRequest};
use hsm_store::{MetadataChange, SecretStore, TokenSelector, secret_data};
use std::sync::Arc;
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

type Client = hsm_proto::v1::hsm_agent_client::HsmAgentClient<tonic::transport::Channel>;

/// The agent's gRPC service on the card's device, over a real socket.
async fn serve(state: &std::path::Path) -> (Arc<Device>, Client) {
    let device = Arc::new(device(USER_PIN, state));
    let service = hsm_agent::service::AgentService::new(device.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(hsm_proto::v1::hsm_agent_server::HsmAgentServer::new(
                service,
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let client = Client::connect(format!("http://{addr}")).await.unwrap();
    (device, client)
}

/// A write of round `round`: two keys with the same value, so a read that mixes two writes
/// shows it.
fn write(name: &str, round: u32) -> WriteSecretRequest {
    WriteSecretRequest {
        path: name.into(),
        secret_data: Some(SecretData {
            data: ["a", "b"]
                .into_iter()
                .map(|k| (k.to_owned(), format!("round-{round}").into_bytes()))
                .collect(),
        }),
        metadata: None,
    }
}

/// The round a secret holds, or `None` when the agent cannot read it now.
async fn try_read(client: &mut Client, name: &str) -> Option<u32> {
    let read = client
        .read_secret(ReadSecretRequest { path: name.into() })
        .await
        .ok()?;
    let data = read.into_inner().secret_data.unwrap();
    let a = &data.data["a"];
    assert_eq!(a, &data.data["b"], "a read mixed two writes");
    Some(
        String::from_utf8_lossy(a)["round-".len()..]
            .parse()
            .unwrap(),
    )
}

/// What a secret holds once the agent answers again: its round, or `None` when it is gone.
async fn state_when_back(client: &mut Client, name: &str) -> Option<u32> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(round) = try_read(client, name).await {
            return Some(round);
        }
        let gone = client
            .read_secret(ReadSecretRequest { path: name.into() })
            .await
            .is_err_and(|e| e.code() == tonic::Code::NotFound);
        if gone {
            return None;
        }
        assert!(Instant::now() < deadline, "{name} never became readable");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A change made through the agent while the card is pulled under it.
#[derive(Debug, Clone, Copy)]
enum Change {
    /// Round 1 overwritten by round 2.
    Overwrite,
    /// The secret deleted.
    Delete,
}

impl Change {
    /// Sends it; true when the agent acknowledged it.
    async fn send(self, client: &mut Client) -> bool {
        match self {
            Change::Overwrite => client.write_secret(write("s", 2)).await.is_ok(),
            Change::Delete => client
                .delete_secret(hsm_proto::v1::DeleteSecretRequest {
                    path: "s".into(),
                    key: String::new(),
                })
                .await
                .is_ok(),
        }
    }

    /// What the secret holds once the change is applied.
    fn applied(self) -> Option<u32> {
        match self {
            Change::Overwrite => Some(2),
            Change::Delete => None,
        }
    }
}

/// The card pulled after every APDU of one gRPC change, and plugged back in once pcscd has
/// seen it gone: an acknowledged change reads back applied, a failed one left the old value,
/// never anything else. (The stream test below shows the same at random points; this one
/// covers every point.)
async fn every_pull_during(change: Change, shards: u64, shard: u64) {
    let fixture = Arc::new(PicoFixture::start().unwrap());
    let state = tempfile::tempdir().unwrap();
    let (device, mut client) = serve(state.path()).await;
    client.write_secret(write("s", 1)).await.unwrap();
    let prepared = fixture.card.card();
    let before = fixture.card.apdu_count();
    assert!(change.send(&mut client).await);
    let apdus = fixture.card.apdu_count() - before;
    assert!(apdus > 5, "{change:?} took {apdus} APDUs");
    let (mut old, mut new) = (0, 0);
    let mut connections = device.connections();
    for cut in (1..=apdus).filter(|cut| cut % shards == shard) {
        fixture.replug(prepared.clone()).unwrap();
        // The card in the reader is another one now: let the agent find out, as its health
        // probe does (an answer from its index alone would not touch the card).
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(
            tokio::task::spawn_blocking({
                let device = device.clone();
                move || device.probe()
            })
            .await
            .unwrap(),
            Readiness::Ready
        ) || device.connections() < connections + 1
        {
            assert!(Instant::now() < deadline, "the agent never reconnected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        connections = device.connections();
        assert_eq!(state_when_back(&mut client, "s").await, Some(1));
        fixture.card.drop_after(cut);
        let plug_back = {
            let fixture = fixture.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(10);
                while !fixture.card.is_removal_noticed() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
                fixture.card.insert();
            })
        };
        let acknowledged = change.send(&mut client).await;
        plug_back.join().unwrap();
        let now = state_when_back(&mut client, "s").await;
        let what = format!("{change:?} pulled after APDU {cut}/{apdus}");
        match acknowledged {
            true => assert_eq!(now, change.applied(), "acknowledged, {what}"),
            false => assert_eq!(now, Some(1), "failed, {what}"),
        }
        if acknowledged { new += 1 } else { old += 1 }
    }
    assert!(old > 0 && new > 0, "{change:?}: old {old} new {new}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_pull_during_a_grpc_write_even_apdus() {
    every_pull_during(Change::Overwrite, 2, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_pull_during_a_grpc_write_odd_apdus() {
    every_pull_during(Change::Overwrite, 2, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_pull_during_a_grpc_delete() {
    every_pull_during(Change::Delete, 1, 0).await;
}

/// The card pulled and plugged back in during a stream of gRPC writes and reads: reads never
/// see a mix, every acknowledged write reads back, and a write that failed left the old
/// value. The agent recovers without a restart and the stream goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_card_pulled_during_a_stream_of_grpc_writes_loses_nothing_acknowledged() {
    let fixture = Arc::new(PicoFixture::start().unwrap());
    let state = tempfile::tempdir().unwrap();
    let (device, mut client) = serve(state.path()).await;
    const SECRETS: [&str; 3] = ["s0", "s1", "s2"];
    let mut acknowledged = [0u32; 3];
    for name in SECRETS {
        client.write_secret(write(name, 0)).await.unwrap();
    }

    // A write takes tens of APDUs: with a USB-like delay per APDU, a pull lands inside one.
    fixture.card.set_latency(Duration::from_millis(2));
    // Pull the card three times into the stream, each time for 1.5 s, each once the agent
    // has recovered from the pull before (re-opening the card takes hundreds of APDUs: a
    // pull during it would make two pulls one recovery).
    let puller = {
        let (fixture, device) = (fixture.clone(), device.clone());
        std::thread::spawn(move || {
            for (pulled, first) in [300, 1000, 700].into_iter().enumerate() {
                let deadline = Instant::now() + Duration::from_secs(30);
                while device.connections() < pulled as u64 + 1 {
                    assert!(Instant::now() < deadline, "no recovery from pull {pulled}");
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(first));
                fixture.card.remove();
                std::thread::sleep(Duration::from_millis(1500));
                fixture.card.insert();
                assert!(fixture.card.wait_connected(Duration::from_secs(10)));
            }
        })
    };
    let (mut failed, mut after_recovery) = (0, 0);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut round = 0;
    while !puller.is_finished() || after_recovery < 10 {
        assert!(Instant::now() < deadline, "the stream never recovered");
        round += 1;
        for (i, name) in SECRETS.iter().enumerate() {
            match client.write_secret(write(name, round)).await {
                Ok(_) => {
                    acknowledged[i] = round;
                    if puller.is_finished() {
                        after_recovery += 1;
                    }
                }
                Err(_) => failed += 1,
            }
            // What a read sees is the last acknowledged write, never a failed one.
            if let Some(seen) = try_read(&mut client, name).await {
                assert_eq!(seen, acknowledged[i], "{name} after round {round}");
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    puller.join().unwrap();
    // Whether a write is refused depends on where a pull lands: a write caught by one is
    // answered once recovery has decided its outcome, often as a success. That every pull
    // was seen is the connection count below; `failed` is only reported.
    eprintln!("{failed} writes refused across the pulls");
    assert_eq!(
        device.connections(),
        4,
        "recovered in place after each pull"
    );
    for (i, name) in SECRETS.iter().enumerate() {
        assert_eq!(
            try_read(&mut client, name).await,
            Some(acknowledged[i]),
            "{name}"
        );
    }
}
