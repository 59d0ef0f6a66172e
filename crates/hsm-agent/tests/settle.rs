//! A write or delete that the token cuts off is answered only with its real outcome: an
//! error means the old secret stands, success that the new one does. Run on a memory token
//! cut at every call of the operation, both as a pulled card (the token reports itself gone,
//! the device reconnects) and as a failed call (the same store heals in place), through the
//! gRPC service's handlers without a network, so every cut runs in milliseconds.

use hsm_agent::service::AgentService;
use hsm_agent::testing::{MemoryConnector, memory_device};
use hsm_proto::v1::hsm_agent_server::HsmAgent;
use hsm_proto::v1::{
    DeleteSecretRequest, ReadSecretRequest, SecretData, SecretMetadata, WriteSecretRequest,
};
use hsm_store::{SecretStore, Store, StoreError};
use rstest::rstest;
use std::sync::Arc;
use std::time::Duration;
use tonic::Request;

const PIN: &str = "4321";

#[derive(Debug, Clone, Copy)]
enum Cut {
    /// The token reports itself gone from the cut on (a pulled card).
    Lost,
    /// The calls fail from the cut on, the token stays; it answers again a moment later.
    Failed,
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Create,
    Overwrite,
    Delete,
    DeleteKey,
}

type Values = Option<Vec<(String, Vec<u8>)>>;

fn write(path: &str, pairs: &[(&str, &str)], description: &str) -> WriteSecretRequest {
    WriteSecretRequest {
        path: path.into(),
        secret_data: Some(SecretData {
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }),
        metadata: Some(SecretMetadata {
            description: description.into(),
            ..Default::default()
        }),
    }
}

async fn prepare(service: &AgentService<MemoryConnector>, op: Op) {
    service
        .write_secret(Request::new(write("neighbour", &[("k", "n")], "n")))
        .await
        .unwrap();
    if !matches!(op, Op::Create) {
        let old = write("s", &[("a", "old-a"), ("b", "old-b"), ("c", "same")], "old");
        service.write_secret(Request::new(old)).await.unwrap();
    }
}

async fn run(service: &AgentService<MemoryConnector>, op: Op) -> Result<(), tonic::Status> {
    match op {
        Op::Create | Op::Overwrite => {
            let new = write("s", &[("a", "new-a"), ("c", "same"), ("d", "new-d")], "new");
            service.write_secret(Request::new(new)).await.map(drop)
        }
        Op::Delete | Op::DeleteKey => {
            let key = if matches!(op, Op::DeleteKey) { "b" } else { "" };
            service
                .delete_secret(Request::new(DeleteSecretRequest {
                    path: "s".into(),
                    key: key.into(),
                }))
                .await
                .map(drop)
        }
    }
}

/// What a new process would find on the token: the secret's values, or nothing.
fn found(connector: &MemoryConnector, name: &str) -> Values {
    let store = Store::open(connector.memory().clone()).expect("open the memory token");
    match store.read(name) {
        Ok(data) => Some(
            data.iter()
                .map(|(k, v)| (k.clone(), v.expose().to_vec()))
                .collect(),
        ),
        Err(StoreError::NotFound(_)) => None,
        Err(e) => panic!("read {name}: {e}"),
    }
}

fn service() -> AgentService<MemoryConnector> {
    let device = memory_device(MemoryConnector::new(PIN), PIN);
    AgentService::new(Arc::new(device)).with_settle_timeout(Duration::from_secs(5))
}

/// The values before and after `op`, and how many token calls it makes.
async fn reference(op: Op) -> (Values, Values, u64) {
    let service = service();
    prepare(&service, op).await;
    let connector = service.device().connector();
    let before = found(connector, "s");
    let calls = connector.token().counts();
    run(&service, op).await.unwrap();
    let made = connector.token().counts().since(&calls).total();
    (before, found(connector, "s"), made)
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_change_is_answered_with_its_real_outcome(
    #[values(Cut::Lost, Cut::Failed)] cut: Cut,
    #[values(Op::Create, Op::Overwrite, Op::Delete, Op::DeleteKey)] op: Op,
) {
    let (before, after, calls) = reference(op).await;
    assert_ne!(before, after);
    assert!(calls >= 2, "{op:?} made {calls} calls");
    let mut saw = (0, 0);
    for n in 1..=calls {
        let service = service();
        prepare(&service, op).await;
        let token = service.device().connector().token().clone();
        let healed = match cut {
            Cut::Lost => {
                token.lose_after(n);
                None
            }
            Cut::Failed => {
                token.cut_after(n);
                // The failing call passes: the token answers again once the cut has fired.
                let token = token.clone();
                Some(tokio::spawn(async move {
                    while !token.was_cut() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    token.heal();
                }))
            }
        };
        let answer = run(&service, op).await;
        assert!(
            token.was_cut() || answer.is_ok(),
            "{op:?} cut {n}: the cut never fired"
        );
        let now = found(service.device().connector(), "s");
        match answer {
            Ok(()) => {
                assert_eq!(
                    now, after,
                    "{cut:?} {op:?} cut at call {n}/{calls}: success, but not the new secret"
                );
                saw.1 += 1;
            }
            Err(status) => {
                assert!(
                    !status.message().contains("not known"),
                    "{cut:?} {op:?} cut {n}: the token came back, the outcome is known: {status:?}"
                );
                assert_eq!(
                    now, before,
                    "{cut:?} {op:?} cut at call {n}/{calls}: an error ({status:?}), but not the old secret"
                );
                saw.0 += 1;
            }
        }
        // Once the token answers again, the neighbour is whole and the device serves.
        if let Some(healed) = healed {
            healed.await.unwrap();
        }
        let neighbour = service
            .read_secret(Request::new(ReadSecretRequest {
                path: "neighbour".into(),
            }))
            .await
            .expect("the device serves after the cut");
        assert_eq!(
            neighbour.into_inner().secret_data.unwrap().data["k"],
            b"n".to_vec()
        );
    }
    // Early cuts undo the change and late ones complete it: both answers were given. Deleting
    // one key of three is one destroy after the reads: cut anywhere, it did not happen.
    let one_change = matches!(op, Op::DeleteKey);
    assert!(
        saw.0 > 0 && (saw.1 > 0 || one_change),
        "{cut:?} {op:?}: errors {} successes {}",
        saw.0,
        saw.1
    );
}
