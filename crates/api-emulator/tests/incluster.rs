//! In-cluster configuration, as in a pod: a process started with `KUBERNETES_SERVICE_HOST`/
//! `_PORT` and a ServiceAccount directory at `/var/run/secrets/kubernetes.io/serviceaccount`
//! gets a `kube::Client` from `kube::Config::incluster()` and acts as that ServiceAccount.
//!
//! kube reads that fixed path and offers no way to point it elsewhere, so the child process
//! runs in a private mount namespace (`unshare --mount`, as root) where the directory the
//! emulator wrote is bind-mounted there; the machine's own `/run` is untouched.

use std::process::Stdio;

use api_emulator::{Authorization, Emulator};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

const CHILD_ENV: &str = "HSM_INCLUSTER_CHILD";

/// Mounts a tmpfs on /run (private to the namespace), binds the directory given as `$0` at
/// the ServiceAccount path, and runs the rest of the arguments.
const MOUNT_AND_RUN: &str = "mount -t tmpfs tmpfs /run \
    && mkdir -p /run/secrets/kubernetes.io/serviceaccount \
    && mount --bind \"$0\" /run/secrets/kubernetes.io/serviceaccount \
    && exec \"$@\"";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_with_in_cluster_config_acts_as_its_service_account() {
    let emu = Emulator::builder()
        .authorization(Authorization::Rbac)
        .audit(true)
        .build();
    let admin = emu.admin_client();
    let sas: Api<ServiceAccount> = Api::default_namespaced(admin.clone());
    let sa: ServiceAccount =
        serde_json::from_value(json!({"metadata": {"name": "manager"}})).unwrap();
    sas.create(&PostParams::default(), &sa).await.unwrap();
    emu.load_objects_from_str(
        "
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: cm-reader, namespace: default}
rules: [{apiGroups: [''], resources: [configmaps], verbs: [list]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: cm-reader, namespace: default}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: cm-reader}
subjects: [{kind: ServiceAccount, name: manager, namespace: default}]
",
    )
    .unwrap();
    let server = emu.serve_tls(0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    emu.write_service_account_dir("default", "manager", dir.path())
        .unwrap();

    let out = tokio::process::Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            MOUNT_AND_RUN,
        ])
        .arg(dir.path())
        .arg(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "child_lists_through_in_cluster_config",
            "--nocapture",
        ])
        .env("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        .env("KUBERNETES_SERVICE_PORT", server.addr().port().to_string())
        .env(CHILD_ENV, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(std::time::Duration::from_secs(60), out)
        .await
        .expect("the child finishes")
        .expect("unshare runs (this test needs root)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("in-cluster user: system:serviceaccount:default:manager"),
        "{text}"
    );
    let seen: Vec<(String, String, bool)> = emu
        .audit_log()
        .into_iter()
        .filter(|e| e.user == "system:serviceaccount:default:manager")
        .map(|e| (e.verb, e.resource, e.allowed))
        .collect();
    assert!(
        seen.contains(&("list".into(), "configmaps".into(), true)),
        "{seen:?}"
    );
    assert!(
        seen.contains(&("list".into(), "secrets".into(), false)),
        "{seen:?}"
    );
}

/// The child's part, run only by the test above (in its mount namespace).
#[tokio::test]
#[ignore = "run by a_process_with_in_cluster_config_acts_as_its_service_account"]
async fn child_lists_through_in_cluster_config() {
    assert!(
        std::env::var_os(CHILD_ENV).is_some(),
        "run only as the child of the in-cluster test"
    );
    let config = kube::Config::incluster().expect("in-cluster config");
    assert_eq!(config.default_namespace, "default");
    let client = kube::Client::try_from(config).expect("a client");
    let reviews: Api<SelfSubjectReview> = Api::all(client.clone());
    let me = reviews
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({})).unwrap(),
        )
        .await
        .expect("whoami");
    let name = me.status.unwrap().user_info.unwrap().username.unwrap();
    println!("in-cluster user: {name}");
    let cms: Api<ConfigMap> = Api::default_namespaced(client.clone());
    cms.list(&ListParams::default())
        .await
        .expect("list configmaps");
    let secrets: Api<Secret> = Api::default_namespaced(client);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => panic!("expected 403 listing secrets, got {other:?}"),
    }
}
