//! The HSMSecret controller end to end: the API emulator over HTTP, agents on SoftHSM2
//! behind real gRPC with mTLS, the controller in process. Each test asserts on Kubernetes
//! objects and on the HSM, never on logs.

mod common;

use common::*;
use hsm_api::secret::{HSMSecret, SyncStatus};
use hsm_operator::agents::AgentApi;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAIT: Duration = Duration::from_secs(15);

async fn status_of(client: &kube::Client, name: &str, reason: &str) -> HSMSecret {
    let api = Api::<HSMSecret>::namespaced(client.clone(), APPS);
    eventually(
        WAIT,
        &format!("HSMSecret {name} to report {reason}"),
        || {
            let api = api.clone();
            async move {
                api.get_opt(name).await.unwrap().filter(|h| {
                    h.status
                        .as_ref()
                        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
                        .is_some_and(|c| c.reason == reason)
                })
            }
        },
    )
    .await
}

async fn create(client: &kube::Client, object: &HSMSecret) {
    Api::<HSMSecret>::namespaced(client.clone(), APPS)
        .create(&PostParams::default(), object)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_hsm_secret_becomes_a_secret_follows_hsm_writes_and_goes_with_its_hsmsecret() {
    let cluster = cluster().await;
    let pki = pki();
    let agent = TestAgent::start(&pki).await;
    let hsm: Arc<dyn AgentApi> = Arc::new(agent.client(&pki));
    hsm_write(
        &*hsm,
        "db",
        &[("username", "app"), ("password", "first")],
        1,
    )
    .await;
    let _manager = TestManager::start(cluster.client.clone(), vec![("softhsm", hsm.clone())]);

    create(
        &cluster.client,
        &hsm_secret("db", json!({"secretType": "kubernetes.io/basic-auth"})),
    )
    .await;
    let secret = secret_holds(
        &cluster.client,
        "db",
        &[("username", "app"), ("password", "first")],
    )
    .await;
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(secret.labels()["managed-by"], "hsm-secrets-operator");
    assert_eq!(secret.labels()["hsm-path"], "db");
    assert_eq!(
        secret.annotations()["hsm.j5t.io/description"],
        "db for the tests"
    );
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("HSMSecret", "db", Some(true))
    );

    let synced = status_of(&cluster.client, "db", "InSync").await;
    let status = synced.status.clone().unwrap();
    assert_eq!(status.sync_status, Some(SyncStatus::InSync));
    assert_eq!(status.hsm_checksum, status.secret_checksum);
    assert!(status.hsm_checksum.starts_with("sha256:"));
    assert_eq!(
        status.secret_ref.as_ref().and_then(|r| r.name.as_deref()),
        Some("db")
    );
    assert!(status.last_sync_time.is_some());
    assert_eq!(
        status.conditions[0].observed_generation,
        synced.metadata.generation
    );
    assert!(
        synced
            .finalizers()
            .contains(&"hsmsecret.hsm.j5t.io/finalizer".to_owned())
    );

    // A write on the HSM reaches the Secret through the agent's change stream.
    let written = Instant::now();
    hsm_write(
        &*hsm,
        "db",
        &[("username", "app"), ("password", "second")],
        2,
    )
    .await;
    secret_holds(
        &cluster.client,
        "db",
        &[("username", "app"), ("password", "second")],
    )
    .await;
    eprintln!("HSM write → Secret: {:?}", written.elapsed());

    // Editing the HSMSecret: a new Secret name is written.
    Api::<HSMSecret>::namespaced(cluster.client.clone(), APPS)
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"secretName": "db-renamed"}})),
        )
        .await
        .unwrap();
    secret_holds(
        &cluster.client,
        "db-renamed",
        &[("username", "app"), ("password", "second")],
    )
    .await;

    // Deleting the HSMSecret deletes its Secret, never the HSM's data.
    Api::<HSMSecret>::namespaced(cluster.client.clone(), APPS)
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), APPS);
    eventually(WAIT, "the Secret to be deleted", || {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt("db-renamed")
                .await
                .unwrap()
                .is_none()
                .then_some(())
        }
    })
    .await;
    let hsm_secrets = Api::<HSMSecret>::namespaced(cluster.client.clone(), APPS);
    eventually(WAIT, "the HSMSecret to be gone", || {
        let api = hsm_secrets.clone();
        async move { api.get_opt("db").await.unwrap().is_none().then_some(()) }
    })
    .await;
    let kept = hsm.read("db").await.unwrap();
    assert_eq!(kept["password"], b"second");

    let events = Api::<Event>::namespaced(cluster.client.clone(), APPS)
        .list(&ListParams::default())
        .await
        .unwrap();
    let reasons: Vec<_> = events
        .items
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    assert!(reasons.iter().any(|r| r == "SecretCreated"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "SecretUpdated"), "{reasons:?}");
}

#[tokio::test]
async fn a_secret_edited_or_deleted_by_hand_is_restored() {
    let cluster = cluster().await;
    let pki = pki();
    let agent = TestAgent::start(&pki).await;
    let hsm: Arc<dyn AgentApi> = Arc::new(agent.client(&pki));
    hsm_write(&*hsm, "api-key", &[("key", "k1")], 1).await;
    let manager = TestManager::start(cluster.client.clone(), vec![("softhsm", hsm.clone())]);
    create(&cluster.client, &hsm_secret("api-key", json!({}))).await;
    secret_holds(&cluster.client, "api-key", &[("key", "k1")]).await;
    let writes_before = manager.metrics.secret_writes.get();

    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), APPS);
    // A changed value and a key added by hand.
    secrets
        .patch(
            "api-key",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"key": "tampered", "extra": "x"}})),
        )
        .await
        .unwrap();
    secret_holds(&cluster.client, "api-key", &[("key", "k1")]).await;
    // Deleted by hand.
    secrets
        .delete("api-key", &DeleteParams::default())
        .await
        .unwrap();
    secret_holds(&cluster.client, "api-key", &[("key", "k1")]).await;
    assert_eq!(
        manager.metrics.secret_writes.get() - writes_before,
        2,
        "one write restores the edit, one recreates the deleted Secret"
    );
}

#[tokio::test]
async fn two_devices_that_disagree_give_the_resolvers_winner() {
    let cluster = cluster().await;
    let pki = pki();
    let (one, two) = (TestAgent::start(&pki).await, TestAgent::start(&pki).await);
    let a: Arc<dyn AgentApi> = Arc::new(one.client(&pki));
    let b: Arc<dyn AgentApi> = Arc::new(two.client(&pki));
    hsm_write(&*a, "shared", &[("v", "older")], 3).await;
    hsm_write(&*b, "shared", &[("v", "newer")], 4).await;
    let _manager = TestManager::start(
        cluster.client.clone(),
        vec![("one", a.clone()), ("two", b.clone())],
    );
    create(&cluster.client, &hsm_secret("shared", json!({}))).await;
    secret_holds(&cluster.client, "shared", &[("v", "newer")]).await;
    // A later write on the other device wins in turn.
    hsm_write(&*a, "shared", &[("v", "newest")], 5).await;
    secret_holds(&cluster.client, "shared", &[("v", "newest")]).await;
    // A delete on the winner (a tombstone at a newer version) leaves the Secret as it was.
    let tombstone = hsm_proto::v1::SecretMetadata {
        labels: [("sync.deleted", "true"), ("sync.version", "6")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        ..Default::default()
    };
    a.write("shared", Default::default(), tombstone)
        .await
        .unwrap();
    status_of(&cluster.client, "shared", "DeletedOnHSM").await;
    secret_holds(&cluster.client, "shared", &[("v", "newest")]).await;
}

#[tokio::test]
async fn a_lost_agent_leaves_the_last_good_value_and_status_says_why() {
    let cluster = cluster().await;
    let pki = pki();
    let mut agent = TestAgent::start(&pki).await;
    let hsm: Arc<dyn AgentApi> = Arc::new(agent.client(&pki));
    hsm_write(&*hsm, "tls", &[("tls.crt", "cert-1")], 1).await;
    let _manager = TestManager::start(cluster.client.clone(), vec![("softhsm", hsm.clone())]);
    create(&cluster.client, &hsm_secret("tls", json!({}))).await;
    secret_holds(&cluster.client, "tls", &[("tls.crt", "cert-1")]).await;

    agent.stop().await;
    let failing = status_of(&cluster.client, "tls", "DevicesUnavailable").await;
    let status = failing.status.unwrap();
    assert_eq!(status.sync_status, Some(SyncStatus::Error));
    assert!(
        status.last_error.contains("softhsm"),
        "{}",
        status.last_error
    );
    secret_holds(&cluster.client, "tls", &[("tls.crt", "cert-1")]).await;

    // The agent comes back on the same address with the same token: sync resumes.
    let hsm_token = agent.hsm.clone().unwrap();
    let back = TestAgent::start_on(&pki, hsm_token, agent.addr).await;
    status_of(&cluster.client, "tls", "InSync").await;
    hsm_write(&*hsm, "tls", &[("tls.crt", "cert-2")], 2).await;
    secret_holds(&cluster.client, "tls", &[("tls.crt", "cert-2")]).await;
    drop(back);
}

#[tokio::test]
async fn bad_input_gets_a_clear_condition_and_nothing_is_overwritten() {
    let cluster = cluster().await;
    let pki = pki();
    let agent = TestAgent::start(&pki).await;
    let hsm: Arc<dyn AgentApi> = Arc::new(agent.client(&pki));
    hsm_write(&*hsm, "taken", &[("v", "from-hsm")], 1).await;
    hsm_write(&*hsm, "bad-name", &[("v", "x")], 1).await;
    let _manager = TestManager::start(cluster.client.clone(), vec![("softhsm", hsm.clone())]);
    let secrets = Api::<Secret>::namespaced(cluster.client.clone(), APPS);
    let hsm_secrets = Api::<HSMSecret>::namespaced(cluster.client.clone(), APPS);

    // A Secret of the same name that someone else owns.
    let foreign: Secret = serde_json::from_value(json!({
        "metadata": {"name": "taken"}, "stringData": {"v": "theirs"}
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    create(&cluster.client, &hsm_secret("taken", json!({}))).await;
    let refused = status_of(&cluster.client, "taken", "SecretNameTaken").await;
    assert_eq!(refused.status.unwrap().sync_status, Some(SyncStatus::Error));
    secret_holds(&cluster.client, "taken", &[("v", "theirs")]).await;

    // A secret name Kubernetes cannot have.
    create(
        &cluster.client,
        &hsm_secret("bad-name", json!({"secretName": "Not_Valid"})),
    )
    .await;
    let invalid = status_of(&cluster.client, "bad-name", "InvalidSpec").await;
    assert!(
        invalid
            .status
            .unwrap()
            .last_error
            .contains("spec.secretName")
    );

    // A secret no device holds.
    create(&cluster.client, &hsm_secret("nowhere", json!({}))).await;
    let pending = status_of(&cluster.client, "nowhere", "NotFoundOnHSM").await;
    assert_eq!(
        pending.status.unwrap().sync_status,
        Some(SyncStatus::Pending)
    );

    // An HSMSecret without parentRef, or for another operator, is not touched at all.
    let mut orphan = hsm_secret("taken", json!({}));
    orphan.metadata.name = Some("orphan".into());
    orphan.spec.parent_ref = None;
    create(&cluster.client, &orphan).await;
    let mut elsewhere = hsm_secret("elsewhere", json!({}));
    elsewhere.spec.parent_ref.as_mut().unwrap().name = "another-operator".into();
    create(&cluster.client, &elsewhere).await;

    // A malformed object (an int32 field out of range) is reported on itself.
    let malformed = json!({
        "apiVersion": "hsm.j5t.io/v1alpha1", "kind": "HSMSecret",
        "metadata": {"name": "malformed", "namespace": APPS},
        "spec": {"parentRef": {"name": OPERATOR_NAME}, "syncInterval": 99_999_999_999i64}
    });
    let malformed_created = cluster.emulator.create_object(malformed).is_ok();
    if malformed_created {
        let raw = Api::<kube::api::DynamicObject>::namespaced_with(
            cluster.client.clone(),
            APPS,
            &kube::api::ApiResource::erase::<HSMSecret>(&()),
        );
        let reported = eventually(WAIT, "the malformed HSMSecret to be reported", || {
            let raw = raw.clone();
            async move {
                let object = raw.get("malformed").await.unwrap();
                let reason = object.data["status"]["conditions"][0]["reason"]
                    .as_str()
                    .map(str::to_owned);
                (reason.as_deref() == Some("InvalidSpec")).then_some(object)
            }
        })
        .await;
        let message = reported.data["status"]["conditions"][0]["message"]
            .as_str()
            .unwrap_or_default();
        assert!(message.contains("does not parse"), "{message}");
    }

    // The controller kept running: a good HSMSecret created last still syncs.
    hsm_write(&*hsm, "good", &[("v", "ok")], 1).await;
    create(&cluster.client, &hsm_secret("good", json!({}))).await;
    secret_holds(&cluster.client, "good", &[("v", "ok")]).await;
    for name in ["orphan", "elsewhere"] {
        let object = hsm_secrets.get(name).await.unwrap();
        assert!(object.status.is_none(), "{name} got a status");
        assert!(object.finalizers().is_empty(), "{name} got a finalizer");
    }
    assert!(secrets.get_opt("orphan").await.unwrap().is_none());
    assert!(secrets.get_opt("elsewhere").await.unwrap().is_none());
    assert!(
        malformed_created,
        "the emulator refused the malformed object, so the guard went untested"
    );
}

#[tokio::test]
async fn a_content_change_restarts_the_rollout_targets() {
    let cluster = cluster().await;
    let pki = pki();
    let agent = TestAgent::start(&pki).await;
    let hsm: Arc<dyn AgentApi> = Arc::new(agent.client(&pki));
    hsm_write(&*hsm, "cfg", &[("v", "1")], 1).await;
    let deployments =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(cluster.client.clone(), APPS);
    let deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "web", "image": "web"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();
    let _manager = TestManager::start(cluster.client.clone(), vec![("softhsm", hsm.clone())]);
    create(
        &cluster.client,
        &hsm_secret(
            "cfg",
            json!({"rolloutRestartTargets": [{"kind": "Deployment", "name": "web"}]}),
        ),
    )
    .await;
    secret_holds(&cluster.client, "cfg", &[("v", "1")]).await;
    let restarted = |d: &k8s_openapi::api::apps::v1::Deployment| {
        d.spec
            .template
            .metadata
            .as_ref()
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("kubectl.kubernetes.io/restartedAt").cloned())
    };
    assert_eq!(
        restarted(&deployments.get("web").await.unwrap()),
        None,
        "creating the Secret restarts nothing"
    );
    hsm_write(&*hsm, "cfg", &[("v", "2")], 2).await;
    secret_holds(&cluster.client, "cfg", &[("v", "2")]).await;
    eventually(WAIT, "the Deployment to be restarted", || {
        let deployments = deployments.clone();
        async move { restarted(&deployments.get("web").await.unwrap()) }
    })
    .await;
}
