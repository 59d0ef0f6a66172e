//! The emulator's security surface: ServiceAccount tokens from TokenRequest (audience,
//! expiry, bound to the ServiceAccount's uid), TokenReview answered from them, 401 for bad
//! tokens, RBAC enforced when enabled, the audit log, TLS with the emulator's CA, body
//! limits, protobuf bodies and the pod runtime hook. These need the emulator's own controls,
//! so they do not run on a real cluster.

use std::sync::Arc;

use api_emulator::pods::{LogOptions, PodRuntimeError};
use api_emulator::{Authorization, Emulator, PodRuntime};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use k8s_openapi::api::authentication::v1::{SelfSubjectReview, TokenRequest, TokenReview};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::{Value, json};

fn sa(name: &str) -> ServiceAccount {
    serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
}

/// A ServiceAccount `robot` in `default` and a token for it from TokenRequest.
async fn robot_token(emu: &Emulator, request: Value) -> String {
    let sas: Api<ServiceAccount> = Api::default_namespaced(emu.admin_client());
    if sas.get_opt("robot").await.unwrap().is_none() {
        sas.create(&PostParams::default(), &sa("robot"))
            .await
            .unwrap();
    }
    let tr: TokenRequest = serde_json::from_value(request).unwrap();
    let answer = sas
        .create_token_request("robot", &PostParams::default(), &tr)
        .await
        .unwrap();
    answer.status.unwrap().token.unwrap()
}

async fn code<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> u16 {
    match r {
        Err(kube::Error::Api(s)) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn whoami(client: kube::Client) -> Result<String, kube::Error> {
    let api: Api<SelfSubjectReview> = Api::all(client);
    let review: SelfSubjectReview = serde_json::from_value(json!({})).unwrap();
    let answer = api.create(&PostParams::default(), &review).await?;
    Ok(answer.status.unwrap().user_info.unwrap().username.unwrap())
}

#[tokio::test]
async fn a_requested_token_authenticates_as_its_service_account_until_it_is_deleted() {
    let emu = Emulator::new();
    let token = robot_token(&emu, json!({"spec": {}})).await;
    assert_eq!(token.split('.').count(), 3, "a JWT");
    let client = emu.client_with_token(&token);
    assert_eq!(
        whoami(client.clone()).await.unwrap(),
        "system:serviceaccount:default:robot"
    );
    let sas: Api<ServiceAccount> = Api::default_namespaced(emu.admin_client());
    sas.delete("robot", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(whoami(client.clone()).await).await, 401);
    // A new ServiceAccount of the same name has another uid: the old token stays invalid.
    sas.create(&PostParams::default(), &sa("robot"))
        .await
        .unwrap();
    assert_eq!(code(whoami(client).await).await, 401);
}

#[tokio::test]
async fn expired_malformed_foreign_and_wrong_audience_tokens_get_401() {
    let emu = Emulator::new();
    robot_token(&emu, json!({"spec": {}})).await;
    let expired = emu
        .service_account_token(
            "default",
            "robot",
            &[api_emulator::authn::API_AUDIENCE],
            chrono::Duration::seconds(-5),
        )
        .unwrap();
    let other_audience = robot_token(&emu, json!({"spec": {"audiences": ["vault"]}})).await;
    let other_emulator = Emulator::new();
    robot_token(&other_emulator, json!({"spec": {}})).await;
    let foreign = other_emulator
        .service_account_token(
            "default",
            "robot",
            &[api_emulator::authn::API_AUDIENCE],
            chrono::Duration::hours(1),
        )
        .unwrap();
    for token in [
        expired.as_str(),
        other_audience.as_str(),
        foreign.as_str(),
        "garbage",
        "a.b.c",
    ] {
        let r = whoami(emu.client_with_token(token)).await;
        assert_eq!(code(r).await, 401, "{token}");
    }
    // A token for another audience is what a TokenReview for that audience accepts.
    let reviews: Api<TokenReview> = Api::all(emu.admin_client());
    let review = |token: &str, aud: &[&str]| -> TokenReview {
        serde_json::from_value(json!({"spec": {"token": token, "audiences": aud}})).unwrap()
    };
    let ok = reviews
        .create(&PostParams::default(), &review(&other_audience, &["vault"]))
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(ok.authenticated, Some(true));
    let user = ok.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:default:robot")
    );
    assert!(
        user.groups
            .unwrap()
            .contains(&"system:serviceaccounts:default".to_string())
    );
    for (token, aud) in [
        (other_audience.as_str(), &[][..]),
        (expired.as_str(), &[][..]),
        ("garbage", &["vault"][..]),
    ] {
        let status = reviews
            .create(&PostParams::default(), &review(token, aud))
            .await
            .unwrap()
            .status
            .unwrap();
        assert_eq!(status.authenticated, Some(false), "{token}");
        assert!(status.error.is_some());
    }
}

#[tokio::test]
async fn token_requests_are_validated_and_pod_bound_tokens_die_with_the_pod() {
    let emu = Emulator::new();
    let sas: Api<ServiceAccount> = Api::default_namespaced(emu.admin_client());
    let short: TokenRequest =
        serde_json::from_value(json!({"spec": {"expirationSeconds": 60}})).unwrap();
    assert_eq!(
        code(
            sas.create_token_request("nobody", &PostParams::default(), &short)
                .await
        )
        .await,
        404
    );
    robot_token(&emu, json!({"spec": {}})).await;
    assert_eq!(
        code(
            sas.create_token_request("robot", &PostParams::default(), &short)
                .await
        )
        .await,
        422
    );
    let pods: Api<Pod> = Api::default_namespaced(emu.admin_client());
    let pod: Pod = serde_json::from_value(
        json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}),
    )
    .unwrap();
    let pod = pods.create(&PostParams::default(), &pod).await.unwrap();
    let token = robot_token(
        &emu,
        json!({"spec": {"boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": "p", "uid": pod.metadata.uid}}}),
    )
    .await;
    let client = emu.client_with_token(&token);
    assert!(whoami(client.clone()).await.is_ok());
    pods.delete("p", &DeleteParams::default()).await.unwrap();
    assert_eq!(code(whoami(client).await).await, 401);
}

#[tokio::test]
async fn rbac_is_enforced_only_when_enabled_and_the_audit_log_shows_each_decision() {
    let emu = Emulator::builder().audit(true).build();
    let token = robot_token(&emu, json!({"spec": {}})).await;
    let cms: Api<ConfigMap> = Api::default_namespaced(emu.client_with_token(&token));
    cms.list(&ListParams::default()).await.unwrap();
    emu.set_authorization(Authorization::Rbac);
    assert_eq!(code(cms.list(&ListParams::default()).await).await, 403);
    // Anonymous requests are denied too; the admin is not.
    let anonymous: Api<ConfigMap> = Api::default_namespaced(emu.client());
    assert_eq!(
        code(anonymous.list(&ListParams::default()).await).await,
        403
    );
    let admin: Api<ConfigMap> = Api::default_namespaced(emu.admin_client());
    admin.list(&ListParams::default()).await.unwrap();

    let robot = "system:serviceaccount:default:robot";
    let entries: Vec<_> = emu
        .audit_log()
        .into_iter()
        .filter(|e| e.user == robot)
        .collect();
    let seen: Vec<(&str, &str, bool, u16)> = entries
        .iter()
        .map(|e| (e.verb.as_str(), e.resource.as_str(), e.allowed, e.code))
        .collect();
    assert_eq!(
        seen,
        [
            ("list", "configmaps", true, 200),
            ("list", "configmaps", false, 403)
        ]
    );
    assert_eq!(entries[0].namespace, "default");
}

#[tokio::test]
async fn a_binding_to_a_missing_role_grants_nothing_until_the_role_exists() {
    let emu = Emulator::builder()
        .authorization(Authorization::Rbac)
        .build();
    let token = robot_token(&emu, json!({"spec": {}})).await;
    emu.create_object(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "b", "namespace": "default"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "later"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}],
    }))
    .unwrap();
    let secrets: Api<Secret> = Api::default_namespaced(emu.client_with_token(&token));
    assert_eq!(code(secrets.list(&ListParams::default()).await).await, 403);
    emu.create_object(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": {"name": "later", "namespace": "default"},
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]}],
    }))
    .unwrap();
    secrets.list(&ListParams::default()).await.unwrap();
}

async fn raw(emu: &Emulator, req: Request<Bytes>) -> (StatusCode, Value) {
    let resp = emu.handle(req);
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

#[tokio::test]
async fn huge_and_deeply_nested_bodies_are_refused_and_the_emulator_goes_on() {
    let emu = Emulator::new();
    let post = |body: Vec<u8>| {
        Request::post("/api/v1/namespaces/default/configmaps")
            .header("content-type", "application/json")
            .body(Bytes::from(body))
            .unwrap()
    };
    let huge = json!({"metadata": {"name": "huge"}, "data": {"a": "x".repeat(4 << 20)}});
    let (status, body) = raw(&emu, post(serde_json::to_vec(&huge).unwrap())).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["reason"], "RequestEntityTooLarge");
    let deep = format!(
        "{{\"metadata\": {{\"name\": \"deep\"}}, \"data\": {}{}}}",
        "[".repeat(1_000_000),
        "]".repeat(1_000_000)
    );
    let (status, body) = raw(&emu, post(deep.into_bytes())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    let yaml_deep = format!("metadata: {{name: deep}}\ndata: {}", "[".repeat(1_000_000));
    let (status, _) = raw(&emu, post(yaml_deep.into_bytes())).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    let ok = json!({"metadata": {"name": "fine"}, "data": {"a": "1"}});
    let (status, _) = raw(&emu, post(serde_json::to_vec(&ok).unwrap())).await;
    assert_eq!(status, StatusCode::CREATED);
}

#[tokio::test]
async fn protobuf_bodies_of_built_in_kinds_are_decoded() {
    let emu = Emulator::new();
    let cm = json!({"metadata": {"name": "pb", "namespace": "default"}, "data": {"k": "v"}});
    let req = Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(Bytes::from(api_emulator::protobuf::encode_config_map(&cm)))
        .unwrap();
    let (status, body) = raw(&emu, req).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let cms: Api<ConfigMap> = Api::default_namespaced(emu.client());
    let stored = cms.get("pb").await.unwrap();
    assert_eq!(stored.data.unwrap()["k"], "v");
    let garbage = Request::post("/api/v1/namespaces/default/configmaps")
        .header("content-type", "application/vnd.kubernetes.protobuf")
        .body(Bytes::from_static(b"k8s\0\x0a\xff"))
        .unwrap();
    assert_eq!(raw(&emu, garbage).await.0, StatusCode::BAD_REQUEST);
}

/// A runtime answering logs from what a runner would have captured.
struct CapturedLogs;

impl PodRuntime for CapturedLogs {
    fn logs(&self, ns: &str, pod: &str, o: &LogOptions) -> Result<Vec<u8>, PodRuntimeError> {
        match o.container.as_deref() {
            Some("main") | None => Ok(format!("hello from {ns}/{pod}\n").into_bytes()),
            Some(c) => Err(PodRuntimeError::NotRunning(format!(
                "container {c} is not valid for pod {pod}"
            ))),
        }
    }
}

#[tokio::test]
async fn pod_logs_come_from_the_registered_runtime() {
    let emu = Emulator::new();
    let pods: Api<Pod> = Api::default_namespaced(emu.client());
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "main", "image": "x"}]}})).unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    assert_eq!(code(pods.logs("p", &Default::default()).await).await, 400);
    assert_eq!(
        code(pods.logs("nope", &Default::default()).await).await,
        404
    );
    emu.set_pod_runtime(Arc::new(CapturedLogs));
    assert_eq!(
        pods.logs("p", &Default::default()).await.unwrap(),
        "hello from default/p\n"
    );
    let other = kube::api::LogParams {
        container: Some("side".into()),
        ..Default::default()
    };
    assert_eq!(code(pods.logs("p", &other).await).await, 400);
}

#[tokio::test]
async fn tls_serving_is_trusted_through_the_kubeconfig_ca_only() {
    let emu = Emulator::new();
    let server = emu.serve_tls(0).await.unwrap();
    assert!(server.url().starts_with("https://127.0.0.1:"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    server.write_kubeconfig(&path).unwrap();
    let kc = Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kc.clone(), &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    assert_eq!(whoami(client).await.unwrap(), "kubernetes-admin");
    // Without the CA the server is not trusted.
    let mut untrusted = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .unwrap();
    untrusted.root_cert = None;
    let client = kube::Client::try_from(untrusted).unwrap();
    assert!(matches!(
        whoami(client).await,
        Err(kube::Error::HyperError(_) | kube::Error::Service(_))
    ));
}

#[tokio::test]
async fn impersonation_needs_the_impersonate_verb() {
    let emu = Emulator::builder()
        .authorization(Authorization::Rbac)
        .build();
    let token = robot_token(&emu, json!({"spec": {}})).await;
    let as_robot = |user: &str| {
        let value = http::HeaderValue::from_str(user).unwrap();
        let auth = http::HeaderValue::from_str(&format!("Bearer {token}")).unwrap();
        Request::post("/apis/authentication.k8s.io/v1/selfsubjectreviews")
            .header(http::header::AUTHORIZATION, auth)
            .header("impersonate-user", value)
            .body(Bytes::from_static(b"{}"))
            .unwrap()
    };
    let (status, body) = raw(&emu, as_robot("alice")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        body["message"],
        "users \"alice\" is forbidden: User \"system:serviceaccount:default:robot\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope"
    );
    emu.create_object(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": {"name": "impersonator"},
        "rules": [{"apiGroups": [""], "resources": ["users"], "verbs": ["impersonate"], "resourceNames": ["alice"]}],
    }))
    .unwrap();
    emu.create_object(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "impersonator"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "impersonator"},
        "subjects": [{"kind": "ServiceAccount", "name": "robot", "namespace": "default"}],
    }))
    .unwrap();
    let (status, body) = raw(&emu, as_robot("alice")).await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["status"]["userInfo"]["username"], "alice");
    assert_eq!(raw(&emu, as_robot("bob")).await.0, StatusCode::FORBIDDEN);
}
