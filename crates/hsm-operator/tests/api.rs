//! The REST API end to end: the API emulator over HTTP with RBAC enforced and the
//! operator's own RBAC manifests loaded, the manager's ServiceAccount making the reviews, two
//! agents on SoftHSM2 behind mTLS, the API served on a loopback port and called over HTTP.

mod common;

use api_emulator::Authorization;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use common::*;
use hsm_operator::agents::{AgentApi, AgentPool, DeviceHealth};
use hsm_operator::api::{self, AuthSettings, MirrorControl, MirrorSummary};
use http_body_util::Full;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const MANAGER_SA: &str = "hsm-secrets-operator-controller-manager";

/// Users of the API: ServiceAccounts in `apps` bound (in the operator's namespace) to the
/// roles deploy/base gives users.
const USERS: [(&str, Option<&str>); 4] = [
    ("reader", Some("hsm-secrets-operator-hsmsecret-viewer")),
    ("writer", Some("hsm-secrets-operator-hsmsecret-editor")),
    ("pin-admin", Some("hsm-secrets-operator-pin-admin")),
    ("nobody", None),
];

/// The operator's RBAC manifests, in the tests' operator namespace.
fn load_rbac(emulator: &api_emulator::Emulator) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/base");
    for file in ["rbac-manager.yaml", "rbac-users.yaml"] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        for document in serde_yaml::Deserializer::from_str(&text) {
            let mut object: Value = serde::Deserialize::deserialize(document).unwrap();
            let namespaced = ["ServiceAccount", "Role", "RoleBinding"]
                .contains(&object["kind"].as_str().unwrap());
            if namespaced {
                object["metadata"]["namespace"] = json!(OPERATOR_NS);
            }
            if let Some(subjects) = object["subjects"].as_array_mut() {
                for subject in subjects {
                    subject["namespace"] = json!(OPERATOR_NS);
                }
            }
            emulator.create_object(object).unwrap();
        }
    }
    for (user, role) in USERS {
        emulator
            .create_object(json!({"apiVersion": "v1", "kind": "ServiceAccount",
                "metadata": {"name": user, "namespace": APPS}}))
            .unwrap();
        if let Some(role) = role {
            emulator
                .create_object(json!({
                    "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
                    "metadata": {"name": format!("{user}-hsm"), "namespace": OPERATOR_NS},
                    "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
                    "subjects": [{"kind": "ServiceAccount", "name": user, "namespace": APPS}],
                }))
                .unwrap();
        }
    }
}

fn sa_token(emulator: &api_emulator::Emulator, namespace: &str, name: &str) -> String {
    emulator
        .service_account_token(
            namespace,
            name,
            &[api_emulator::authn::API_AUDIENCE],
            chrono::Duration::hours(1),
        )
        .unwrap()
}

/// A client of the served emulator as `token`.
fn client_as(server_url: &str, token: &str) -> kube::Client {
    let mut config = kube::Config::new(server_url.parse().unwrap());
    config.auth_info.token = Some(token.to_owned().into());
    kube::Client::try_from(config).unwrap()
}

/// One manager replica's REST API, served until dropped.
struct Replica {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn replica(
    client: kube::Client,
    pool: AgentPool,
    mirror: Option<Arc<dyn MirrorControl>>,
) -> Replica {
    let core = api::core(api::Setup {
        client,
        namespace: OPERATOR_NS.into(),
        jwt_secret: api::JWT_SECRET.into(),
        pool,
        mirror,
        settings: AuthSettings {
            access_ttl: Duration::ZERO,
            ..AuthSettings::default()
        },
    })
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        api::serve(listener, core, std::future::pending())
            .await
            .unwrap();
    });
    Replica { url, task }
}

/// The cluster, two agents, the pool following them, and one replica of the API.
struct World {
    cluster: Cluster,
    _pki: Pki,
    agents: Vec<TestAgent>,
    devices: Vec<Arc<dyn AgentApi>>,
    pool: AgentPool,
    manager: kube::Client,
    api: Replica,
}

impl World {
    async fn new(mirror: Option<Arc<dyn MirrorControl>>) -> World {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                std::env::var("RUST_LOG").unwrap_or_else(|_| "hsm_operator=info".into()),
            )
            .with_test_writer()
            .try_init();
        let cluster = cluster().await;
        load_rbac(&cluster.emulator);
        cluster.emulator.set_authorization(Authorization::Rbac);
        let manager = client_as(
            &cluster.server.url(),
            &sa_token(&cluster.emulator, OPERATOR_NS, MANAGER_SA),
        );
        let pki = pki();
        let agents = vec![TestAgent::start(&pki).await, TestAgent::start(&pki).await];
        let pool = AgentPool::new().with_health_interval(Duration::from_millis(200));
        let mut devices: Vec<Arc<dyn AgentApi>> = Vec::new();
        for (i, agent) in agents.iter().enumerate() {
            let client: Arc<dyn AgentApi> = Arc::new(agent.client(&pki));
            pool.insert(&format!("softhsm-{i}"), client.clone());
            devices.push(client);
        }
        assert!(pool.settled(Duration::from_secs(20)).await);
        wait_health(&pool, 2).await;
        let api = replica(manager.clone(), pool.clone(), mirror).await;
        World {
            cluster,
            _pki: pki,
            agents,
            devices,
            pool,
            manager,
            api,
        }
    }

    fn token(&self, user: &str) -> String {
        sa_token(&self.cluster.emulator, APPS, user)
    }

    /// Whether any device's index holds `name` (a tombstone included).
    fn on_any_device(&self, name: &str) -> bool {
        self.pool
            .snapshots()
            .iter()
            .any(|d| d.entries.contains_key(name))
    }
}

/// Waits until `healthy` devices are healthy.
async fn wait_health(pool: &AgentPool, healthy: usize) {
    eventually(Duration::from_secs(20), "device health", || async {
        let n = pool
            .snapshots()
            .iter()
            .filter(|d| d.health == DeviceHealth::Healthy)
            .count();
        (n == healthy).then_some(())
    })
    .await;
}

fn decoded(data: &Value) -> Vec<(String, String)> {
    data.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let bytes = STANDARD.decode(v.as_str().unwrap()).unwrap();
            (k.clone(), String::from_utf8(bytes).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn requests_are_authenticated_and_authorised_by_rbac() {
    let world = World::new(None).await;
    let url = |path: &str| format!("{}{path}", world.api.url);
    let list = url("/api/v1/hsm/secrets");

    let (status, _, body) = call(Method::GET, &list, None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "MISSING_AUTH_HEADER");
    let client = HttpClient::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let basic = Request::get(&list)
        .header("authorization", "Basic YTpi")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = client.request(basic).await.unwrap();
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let (status, _, body) = call(Method::GET, &list, Some("not-a-token"), None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "INVALID_TOKEN");
    assert!(
        body["error"]["details"]["hint"]
            .as_str()
            .unwrap()
            .contains("auth clear")
    );

    // Authenticated, without the verb.
    let nobody = world.token("nobody");
    let (status, _, body) = call(Method::GET, &list, Some(&nobody), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    assert_eq!(body["error"]["details"]["verb"], "list");

    // With it.
    let reader = world.token("reader");
    let (status, _, body) = call(Method::GET, &list, Some(&reader), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["success"], true);

    // A read-only identity cannot write, and nothing is written.
    let secret = url("/api/v1/hsm/secrets/db");
    let write = r#"{"data":{"password":"s3cret"}}"#;
    let (status, _, body) = call(Method::POST, &secret, Some(&reader), Some(write)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["details"]["verb"], "create");
    assert!(!world.on_any_device("db"));

    let writer = world.token("writer");
    let (status, _, body) = call(Method::POST, &secret, Some(&writer), Some(write)).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let (status, _, body) = call(Method::GET, &secret, Some(&reader), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        decoded(&body["data"]["data"]),
        [("password".into(), "s3cret".into())]
    );
    // Rewriting an existing secret is `update`, deleting it `delete`: not the reader's.
    let (status, _, body) = call(Method::PUT, &secret, Some(&reader), Some(write)).await;
    assert_eq!(
        (status, body["error"]["details"]["verb"].clone()),
        (StatusCode::FORBIDDEN, json!("update"))
    );
    let (status, _, _) = call(Method::DELETE, &secret, Some(&reader), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // PIN changes and mirroring are subresources of their own.
    let pin = r#"{"old_pin":"1","new_pin":"2"}"#;
    let (status, _, body) = call(
        Method::POST,
        &url("/api/v1/hsm/change-pin"),
        Some(&writer),
        Some(pin),
    )
    .await;
    assert_eq!(
        (status, body["error"]["details"]["resource"].clone()),
        (StatusCode::FORBIDDEN, json!("hsmdevices/pin"))
    );
    let (status, _, body) = call(
        Method::POST,
        &url("/api/v1/hsm/mirror/sync"),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["details"]["resource"].clone()),
        (StatusCode::FORBIDDEN, json!("hsmsecrets/mirror"))
    );
    let (status, _, body) = call(
        Method::POST,
        &url("/api/v1/hsm/mirror/sync"),
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::SERVICE_UNAVAILABLE, json!("mirror_unavailable"))
    );
    assert!(!world.on_any_device("other"));
}

#[tokio::test]
async fn an_exchanged_token_works_on_every_replica_and_after_a_restart() {
    let world = World::new(None).await;
    let exchange = |url: &str, body: &str| {
        let (url, body) = (format!("{url}/api/v1/auth/token"), body.to_owned());
        async move { call(Method::POST, &url, None, Some(&body)).await }
    };
    let sa = world.token("reader");
    let (status, _, answer) = exchange(&world.api.url, &json!({"k8s_token": sa}).to_string()).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["token_type"], "Bearer");
    assert!(answer.get("success").is_none(), "not enveloped");
    let expires =
        chrono::DateTime::parse_from_rfc3339(answer["expires_at"].as_str().unwrap()).unwrap();
    assert!(expires > chrono::Utc::now() + chrono::Duration::minutes(29));
    let token = answer["token"].as_str().unwrap().to_owned();

    // A second replica (another process, same Secret) accepts it, and so does a restarted
    // one; the identity in it is still authorised by RBAC.
    let other = replica(world.manager.clone(), world.pool.clone(), None).await;
    for base in [&world.api.url, &other.url] {
        let (status, _, body) = call(
            Method::GET,
            &format!("{base}/api/v1/hsm/secrets"),
            Some(&token),
            None,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, _, _) = call(
            Method::POST,
            &format!("{base}/api/v1/hsm/secrets/x"),
            Some(&token),
            Some(r#"{"data":{"a":"b"}}"#),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN);
    }
    let secrets = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        world.cluster.client.clone(),
        OPERATOR_NS,
    );
    assert!(
        secrets.get(api::JWT_SECRET).await.unwrap().data.unwrap()["signing-key"]
            .0
            .len()
            >= 32
    );

    // Bad exchanges.
    let (status, _, answer) = exchange(&other.url, "{}").await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("INVALID_REQUEST"))
    );
    let (status, _, answer) = exchange(&other.url, r#"{"k8s_token":"forged"}"#).await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("TOKEN_GENERATION_FAILED"))
    );
    let admin = world.cluster.emulator.admin_token();
    let (status, answer) = {
        let (s, _, a) = exchange(&other.url, &json!({"k8s_token": admin}).to_string()).await;
        (s, a)
    };
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "not a ServiceAccount: {answer}"
    );
    // A tampered token of ours is refused.
    let (status, _, body) = call(
        Method::GET,
        &format!("{}/api/v1/hsm/secrets", other.url),
        Some(&format!("{token}x")),
        None,
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (StatusCode::UNAUTHORIZED, json!("INVALID_TOKEN"))
    );
}

#[tokio::test]
async fn secrets_round_trip_with_slashes_dots_versions_and_tombstones() {
    let world = World::new(None).await;
    let writer = world.token("writer");
    let reader = world.token("reader");
    let url = |path: &str| format!("{}/api/v1/hsm/secrets/{path}", world.api.url);
    let name = "team/db.example.com";

    let body = json!({"data": {"username": "app", "password": "first"},
        "metadata": {"description": "the db", "labels": {"team": "a"}, "dataType": "plaintext"}});
    let (status, _, answer) = call(
        Method::POST,
        &url(name),
        Some(&writer),
        Some(&body.to_string()),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let data = &answer["data"];
    assert_eq!(
        (
            data["path"].clone(),
            data["keys"].clone(),
            data["version"].clone()
        ),
        (json!(name), json!(2), json!(1))
    );
    assert_eq!(data["deviceResults"].as_object().unwrap().len(), 2);
    assert!(
        data["deviceResults"]
            .as_object()
            .unwrap()
            .values()
            .all(|r| r["success"] == true)
    );

    // Read, metadata and checksum, in the Go form and the explicit one.
    let (status, _, answer) = call(Method::GET, &url(name), Some(&reader), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let mut values = decoded(&answer["data"]["data"]);
    values.sort();
    assert_eq!(
        values,
        [
            ("password".into(), "first".into()),
            ("username".into(), "app".into())
        ]
    );
    assert_eq!(answer["data"]["deviceCount"], 2);
    let expected = hsm_store::checksum::checksum([
        ("username", b"app".as_slice()),
        ("password", b"first".as_slice()),
    ]);
    assert_eq!(answer["data"]["checksum"], expected);
    for path in [
        format!("{name}/checksum"),
        format!("{name}/-/checksum"),
        "team%2Fdb.example.com/checksum".to_owned(),
    ] {
        let (status, _, answer) = call(Method::GET, &url(&path), Some(&reader), None).await;
        assert_eq!(
            (status, answer["data"]["checksum"].clone()),
            (StatusCode::OK, json!(expected)),
            "{path}"
        );
    }
    let (_, _, answer) = call(
        Method::GET,
        &url(&format!("{name}/-/metadata")),
        Some(&reader),
        None,
    )
    .await;
    let metadata = &answer["data"]["metadata"];
    assert_eq!(metadata["description"], "the db");
    assert_eq!(metadata["labels"]["team"], "a");
    assert_eq!(metadata["labels"]["sync.version"], "1");
    assert_eq!(metadata["source"], "api");

    // An update without metadata keeps it, with the next version.
    let (status, _, answer) = call(
        Method::PUT,
        &url(name),
        Some(&writer),
        Some(r#"{"data":{"username":"app","password":"second","tls.crt":"pem"}}"#),
    )
    .await;
    assert_eq!(
        (status, answer["data"]["version"].clone()),
        (StatusCode::CREATED, json!(2)),
        "{answer}"
    );
    let (_, _, answer) = call(
        Method::GET,
        &url(&format!("{name}/metadata")),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(answer["data"]["metadata"]["description"], "the db");
    assert_eq!(answer["data"]["metadata"]["labels"]["sync.version"], "2");

    // A key with a dot, deleted in the explicit form, then one in the Go form.
    let (status, _, answer) = call(
        Method::DELETE,
        &url(&format!("{name}/-/keys/tls.crt")),
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["version"], 3);
    let (status, _, answer) = call(
        Method::DELETE,
        &url("team%2Fdb.example.com/username"),
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let (_, _, answer) = call(Method::GET, &url(name), Some(&reader), None).await;
    assert_eq!(
        decoded(&answer["data"]["data"]),
        [("password".into(), "second".into())]
    );
    let (status, _, answer) = call(
        Method::DELETE,
        &url(&format!("{name}/-/keys/nope")),
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("key_not_found"))
    );

    // The list, then a delete: tombstones on both devices, above every version.
    let (_, _, answer) = call(
        Method::GET,
        &format!("{}/api/v1/hsm/secrets?prefix=team/", world.api.url),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(answer["data"]["secrets"], json!([name]));
    let (status, _, answer) = call(
        Method::DELETE,
        &url(&format!("{name}/-")),
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["message"], "Secret deleted successfully");
    let tombstone_version = answer["data"]["version"].as_i64().unwrap();
    assert_eq!(tombstone_version, 5);
    for device in world.pool.snapshots() {
        let entry = &device.entries[name];
        assert!(
            entry.tombstone && entry.sync_version == tombstone_version,
            "{entry:?}"
        );
    }
    let (status, _, answer) = call(Method::GET, &url(name), Some(&reader), None).await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("secret_not_found"))
    );
    let (_, _, answer) = call(
        Method::GET,
        &url(&format!("{name}/checksum")),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(answer["error"]["code"], "checksum_not_found");
    let (_, _, answer) = call(
        Method::GET,
        &url(&format!("{name}/metadata")),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(
        answer["data"]["metadata"]["labels"]["sync.deleted"], "true",
        "{answer}"
    );
    let (_, _, answer) = call(
        Method::GET,
        &format!("{}/api/v1/hsm/secrets", world.api.url),
        Some(&reader),
        None,
    )
    .await;
    assert_eq!(answer["data"]["count"], 0);
    let (status, _, _) = call(Method::DELETE, &url(name), Some(&writer), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Re-created, it outranks its tombstone.
    let (status, _, answer) = call(
        Method::POST,
        &url(name),
        Some(&writer),
        Some(r#"{"data":{"password":"third"}}"#),
    )
    .await;
    assert_eq!(
        (status, answer["data"]["version"].clone()),
        (StatusCode::CREATED, json!(6))
    );
    let (_, _, answer) = call(Method::GET, &url(name), Some(&reader), None).await;
    assert_eq!(
        decoded(&answer["data"]["data"]),
        [("password".into(), "third".into())]
    );

    // Deleting the last key deletes the secret.
    let (status, _, answer) = call(
        Method::DELETE,
        &url(&format!("{name}/-/keys/password")),
        Some(&writer),
        None,
    )
    .await;
    assert_eq!(
        (status, answer["data"]["secretDeleted"].clone()),
        (StatusCode::OK, json!(true))
    );
    let (status, _, _) = call(Method::GET, &url(name), Some(&reader), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn with_one_device_down_writes_answer_206_and_say_which_device_failed() {
    let mut world = World::new(None).await;
    let writer = world.token("writer");
    let url = format!("{}/api/v1/hsm/secrets/partial", world.api.url);
    world.agents[1].stop().await;
    wait_health(&world.pool, 1).await;

    let (status, _, answer) = call(
        Method::POST,
        &url,
        Some(&writer),
        Some(r#"{"data":{"k":"v"}}"#),
    )
    .await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{answer}");
    assert_eq!(answer["success"], true);
    assert_eq!(answer["message"], "Secret written to 1/2 devices");
    let results = answer["data"]["deviceResults"].as_object().unwrap();
    assert_eq!(results.values().filter(|r| r["success"] == true).count(), 1);
    let failed = results.values().find(|r| r["success"] == false).unwrap();
    assert!(!failed["error"].as_str().unwrap().is_empty());
    assert_eq!(answer["data"]["warnings"].as_array().unwrap().len(), 1);

    let (status, _, answer) = call(Method::GET, &url, Some(&writer), None).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["deviceCount"], 1);
    let (status, _, answer) = call(Method::DELETE, &url, Some(&writer), None).await;
    assert_eq!(status, StatusCode::PARTIAL_CONTENT, "{answer}");
    assert_eq!(answer["message"], "Secret deleted from 1/2 devices");
    let (status, _, answer) = call(
        Method::GET,
        &format!("{}/api/v1/hsm/status", world.api.url),
        Some(&world.token("reader")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let devices = answer["data"]["devices"].as_object().unwrap();
    assert_eq!(
        devices.values().filter(|v| **v == json!(true)).count(),
        1,
        "{answer}"
    );
    assert_eq!(answer["data"]["totalDevices"], 2);
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field_and_writes_nothing() {
    let world = World::new(None).await;
    let writer = world.token("writer");
    let url = |path: &str| format!("{}/api/v1/hsm/secrets/{path}", world.api.url);
    let big = format!(r#"{{"data":{{"a":"{}"}}}}"#, "x".repeat(1024 * 1024 + 1));
    let cases: Vec<(&str, String, &str, &str)> = vec![
        ("new", "".into(), "parse_error", "body"),
        ("new", "{not json".into(), "parse_error", "body"),
        ("new", "{}".into(), "parse_error", "data"),
        ("new", r#"{"data":{}}"#.into(), "parse_error", "data"),
        (
            "new",
            r#"{"data":{"a":7}}"#.into(),
            "parse_error",
            r#"data["a"]"#,
        ),
        (
            "new",
            r#"{"data":{"bad key":"v"}}"#.into(),
            "parse_error",
            r#"data["bad key"]"#,
        ),
        (
            "new",
            r#"{"data":{"a":"v"},"extra":1}"#.into(),
            "parse_error",
            "extra",
        ),
        (
            "new",
            r#"{"data":{"a":"v"},"metadata":{"owner":"x"}}"#.into(),
            "parse_error",
            "metadata.owner",
        ),
        (
            "new",
            r#"{"data":{"a":"v"},"metadata":{"labels":{"sync.version":"99"}}}"#.into(),
            "parse_error",
            r#"metadata.labels["sync.version"]"#,
        ),
        ("new", big, "parse_error", "data"),
        (
            "Upper",
            r#"{"data":{"a":"v"}}"#.into(),
            "invalid_path",
            "path",
        ),
        (
            "a_b",
            r#"{"data":{"a":"v"}}"#.into(),
            "invalid_path",
            "path",
        ),
        (
            "a//b",
            r#"{"data":{"a":"v"}}"#.into(),
            "invalid_path",
            "path",
        ),
        (
            "x/_metadata",
            r#"{"data":{"a":"v"}}"#.into(),
            "invalid_path",
            "path",
        ),
    ];
    for (path, body, code, field) in &cases {
        let (status, _, answer) = call(Method::POST, &url(path), Some(&writer), Some(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {answer}");
        assert_eq!(answer["success"], false);
        assert_eq!(answer["error"]["code"], *code, "{answer}");
        assert_eq!(answer["error"]["details"]["field"], *field, "{answer}");
    }
    for name in ["new", "Upper", "a_b", "a//b", "a/b", "x/_metadata"] {
        assert!(!world.on_any_device(name), "{name} was written");
    }
    let (status, _, answer) = call(Method::DELETE, &url("db/"), Some(&writer), None).await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("missing_key"))
    );
    let (status, _, answer) =
        call(Method::DELETE, &url("db/-/metadata"), Some(&writer), None).await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (StatusCode::METHOD_NOT_ALLOWED, json!("method_not_allowed"))
    );
    let pin = format!("{}/api/v1/hsm/change-pin", world.api.url);
    let admin = world.token("pin-admin");
    for (body, code) in [
        ("nope", "invalid_request"),
        (r#"{"new_pin":"1"}"#, "missing_old_pin"),
        (r#"{"old_pin":"1"}"#, "missing_new_pin"),
        (r#"{"old_pin":"1","new_pin":"1"}"#, "invalid_pin_change"),
    ] {
        let (status, _, answer) = call(Method::POST, &pin, Some(&admin), Some(body)).await;
        assert_eq!(
            (status, answer["error"]["code"].clone()),
            (StatusCode::BAD_REQUEST, json!(code))
        );
    }
}

/// A mirror pass written for the test: copies the winning copy of every secret to the
/// devices whose copy differs, through the agents.
struct CopyWinners {
    pool: AgentPool,
}

#[async_trait::async_trait]
impl MirrorControl for CopyWinners {
    async fn sync_now(&self, _force: bool) -> Result<MirrorSummary, String> {
        let devices = self.pool.snapshots();
        let names: std::collections::BTreeSet<String> = devices
            .iter()
            .flat_map(|d| d.entries.keys().cloned())
            .collect();
        let mut summary = MirrorSummary::default();
        for name in names {
            summary.secrets_examined += 1;
            let source = devices
                .iter()
                .filter_map(|d| d.entries.get(&name).map(|e| (e.sync_version, d)))
                .max_by_key(|(v, _)| *v)
                .map(|(_, d)| d)
                .unwrap();
            let slot = self.pool.device(&source.key).unwrap();
            let values = slot.agent().read(&name).await.map_err(|e| e.to_string())?;
            let (metadata, _) = slot.metadata(&name).await.map_err(|e| e.to_string())?;
            for target in devices.iter().filter(|d| {
                d.entries.get(&name).map(|e| &e.checksum)
                    != source.entries.get(&name).map(|e| &e.checksum)
            }) {
                let agent = self.pool.device(&target.key).unwrap();
                agent
                    .agent()
                    .write(&name, values.clone(), metadata.clone())
                    .await
                    .map_err(|e| e.to_string())?;
                summary.copies_written += 1;
            }
        }
        Ok(summary)
    }
}

#[tokio::test]
async fn mirror_sync_runs_the_connected_mirror_and_pin_changes_reach_every_device() {
    let world = World::new(None).await;
    let mirror: Arc<dyn MirrorControl> = Arc::new(CopyWinners {
        pool: world.pool.clone(),
    });
    let with_mirror = replica(world.manager.clone(), world.pool.clone(), Some(mirror)).await;
    hsm_write(&*world.devices[0], "only-on-one", &[("k", "v")], 3).await;
    eventually(
        Duration::from_secs(10),
        "the pool to see the write",
        || async { world.on_any_device("only-on-one").then_some(()) },
    )
    .await;
    let writer = world.token("writer");
    let (status, _, answer) = call(
        Method::POST,
        &format!("{}/api/v1/hsm/mirror/sync", with_mirror.url),
        Some(&writer),
        Some(r#"{"force":true}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(answer["data"]["reason"], "manual_api_force");
    assert_eq!(answer["data"]["summary"]["copies_written"], 1);
    assert_eq!(
        world.devices[1].read("only-on-one").await.unwrap()["k"],
        b"v"
    );
    let (status, _, answer) = call(
        Method::POST,
        &format!("{}/api/v1/hsm/mirror/sync", with_mirror.url),
        Some(&writer),
        Some(r#"{"force":"yes"}"#),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (StatusCode::BAD_REQUEST, json!("invalid_request"))
    );

    let admin = world.token("pin-admin");
    let new_pin = "87654321";
    let body = json!({"old_pin": hsm_store::testing::TEST_PIN, "new_pin": new_pin}).to_string();
    let (status, _, answer) = call(
        Method::POST,
        &format!("{}/api/v1/hsm/change-pin", world.api.url),
        Some(&admin),
        Some(&body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        (
            answer["data"]["success_count"].clone(),
            answer["data"]["total_count"].clone()
        ),
        (json!(2), json!(2))
    );
    assert!(!answer.to_string().contains(new_pin));
    // The old PIN no longer works on either device.
    let (status, _, answer) = call(
        Method::POST,
        &format!("{}/api/v1/hsm/change-pin", world.api.url),
        Some(&admin),
        Some(&body),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            json!("pin_change_failed")
        ),
        "{answer}"
    );
    assert!(!answer.to_string().contains(new_pin));
}

#[tokio::test]
async fn every_documented_route_is_served_with_cors_and_options() {
    let world = World::new(None).await;
    let admin = world.cluster.emulator.admin_token();
    let (status, headers, document) = call(
        Method::GET,
        &format!("{}/api/v1/openapi.json", world.api.url),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-origin"], "*");
    for route in api::openapi::ROUTES {
        let method = route.method.to_lowercase();
        assert!(
            document["paths"][route.path][&method].is_object(),
            "{} {} not in the document",
            route.method,
            route.path
        );
        let body = match route.method {
            "POST" | "PUT" => Some("{}"),
            _ => None,
        };
        let (status, _, answer) = call(
            route.method.parse().unwrap(),
            &format!("{}{}", world.api.url, route.example),
            Some(&admin),
            body,
        )
        .await;
        assert_ne!(
            answer["error"]["code"], "not_found",
            "{} {}: {answer}",
            route.method, route.example
        );
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{} {}",
            route.method,
            route.example
        );
        assert!(
            route.statuses.contains(&status.as_u16()) || status == StatusCode::UNAUTHORIZED,
            "{} {} answered {status}: {answer}",
            route.method,
            route.example
        );
    }
    let (status, _, answer) = call(
        Method::GET,
        &format!("{}/api/v1/nothing", world.api.url),
        Some(&admin),
        None,
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].clone()),
        (StatusCode::NOT_FOUND, json!("not_found"))
    );

    // OPTIONS answers 204 at once, without credentials, with the CORS headers.
    let (status, headers, _) = call(
        Method::OPTIONS,
        &format!("{}/api/v1/hsm/secrets/db", world.api.url),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        headers["access-control-allow-methods"],
        "GET, POST, PUT, DELETE, OPTIONS"
    );
    assert_eq!(
        headers["access-control-allow-headers"],
        "Content-Type, Authorization"
    );
    // Health is open and reports the agents' own health.
    let (status, headers, answer) = call(
        Method::GET,
        &format!("{}/api/v1/health", world.api.url),
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["access-control-allow-origin"], "*");
    assert_eq!(answer["data"]["status"], "healthy");
    assert_eq!(answer["data"]["active_nodes"], 2);
    assert_eq!(answer["data"]["replication_enabled"], true);
    let (status, _, answer) = call(
        Method::GET,
        &format!("{}/api/v1/hsm/info", world.api.url),
        Some(&world.token("reader")),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let infos = answer["data"]["deviceInfos"].as_object().unwrap();
    assert_eq!(infos.len(), 2);
    assert!(
        infos
            .values()
            .all(|i| i["serialNumber"].is_string() && i["manufacturer"].is_string())
    );
}

#[tokio::test]
async fn replicas_starting_together_share_one_signing_key_and_a_broken_one_is_not_overwritten() {
    use hsm_operator::api::auth::UserInfo;
    use hsm_operator::api::auth::jwt::{JwtKey, KeyError};
    let cluster = cluster().await;
    let load = || JwtKey::load_or_create(&cluster.client, OPERATOR_NS, "api-key");
    let (a, b, c) = tokio::join!(load(), load(), load());
    let user = UserInfo {
        username: "system:serviceaccount:apps:x".into(),
        uid: "u".into(),
        groups: vec!["system:serviceaccounts".into()],
    };
    let (token, _) = a.unwrap().issue(
        &user,
        ("apps", "x"),
        chrono::Utc::now(),
        Duration::from_secs(60),
    );
    assert_eq!(b.unwrap().verify(&token).unwrap(), user);
    assert_eq!(c.unwrap().verify(&token).unwrap(), user);

    cluster
        .emulator
        .create_object(json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "broken-key", "namespace": OPERATOR_NS},
            "data": {"signing-key": "c2hvcnQ="}}))
        .unwrap();
    let broken = JwtKey::load_or_create(&cluster.client, OPERATOR_NS, "broken-key").await;
    assert!(
        matches!(broken, Err(KeyError::Malformed { .. })),
        "{broken:?}"
    );
    let secrets = kube::Api::<k8s_openapi::api::core::v1::Secret>::namespaced(
        cluster.client.clone(),
        OPERATOR_NS,
    );
    let kept = secrets.get("broken-key").await.unwrap();
    assert_eq!(kept.data.unwrap()["signing-key"].0, b"short");
}
