//! kubectl against `api-emulator serve --tls --authz rbac`: the generators of `kubectl
//! create` (protobuf bodies), `create token`, `auth can-i`, `auth whoami`, a user from
//! `--token-file`, and the serve flags that set up objects, ServiceAccount directories and
//! the audit log. These need the emulator's binary, so they do not run on a real cluster.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;

/// A served emulator, killed when dropped.
struct Served {
    child: tokio::process::Child,
    kubeconfig: PathBuf,
    dir: tempfile::TempDir,
}

const OBJECTS: &str = "
apiVersion: v1
kind: Namespace
metadata: {name: apps}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: manager, namespace: apps}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: secrets-writer, namespace: apps}
rules:
- {apiGroups: [''], resources: [secrets], verbs: [get, list, create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: manager, namespace: apps}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: secrets-writer}
subjects:
- {kind: ServiceAccount, name: manager, namespace: apps}
- {kind: User, name: carol}
";

async fn serve() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let objects = dir.path().join("objects.yaml");
    std::fs::write(&objects, OBJECTS).unwrap();
    let tokens = dir.path().join("tokens.csv");
    std::fs::write(&tokens, "carol-token,carol,c-1,\"team-a,team-b\"\n").unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_api-emulator"))
        .args(["serve", "--tls", "--authz", "rbac", "--kubeconfig"])
        .arg(&kubeconfig)
        .arg("--objects")
        .arg(&objects)
        .arg("--token-file")
        .arg(&tokens)
        .arg("--audit-log")
        .arg(dir.path().join("audit.jsonl"))
        .arg("--service-account-dir")
        .arg(format!("apps/manager={}", dir.path().join("sa").display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the server starts")
        .unwrap()
        .unwrap();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    Served {
        child,
        kubeconfig,
        dir,
    }
}

async fn kubectl(kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(20), out)
        .await
        .expect("kubectl finishes")
        .expect("kubectl runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_create_and_auth_work_against_tls_and_rbac() {
    let served = serve().await;
    let kc = served.kubeconfig.as_path();
    for args in [
        &["create", "namespace", "made-by-kubectl"][..],
        &[
            "create",
            "secret",
            "generic",
            "s1",
            "--from-literal=a=b",
            "-n",
            "apps",
        ],
        &[
            "create",
            "configmap",
            "c1",
            "--from-literal=a=b",
            "-n",
            "apps",
        ],
        &["create", "serviceaccount", "extra", "-n", "apps"],
    ] {
        let (ok, out) = kubectl(kc, args).await;
        assert!(ok && out.contains("created"), "{args:?}: {out}");
    }
    let (ok, out) = kubectl(
        kc,
        &[
            "get",
            "secret",
            "s1",
            "-n",
            "apps",
            "-o",
            "jsonpath={.data.a}",
        ],
    )
    .await;
    assert!(ok && out.trim() == "Yg==", "{out}");
    let (ok, out) = kubectl(
        kc,
        &[
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
    )
    .await;
    assert!(ok && out.trim() == "kubernetes-admin", "{out}");

    let (ok, token) = kubectl(kc, &["create", "token", "manager", "-n", "apps"]).await;
    assert!(ok && token.trim().split('.').count() == 3, "{token}");
    let as_manager = |args: &[&str]| {
        let mut a = vec!["--token", token.trim()];
        a.extend_from_slice(args);
        a.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let run = |args: Vec<String>| async move {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        kubectl(kc, &refs).await
    };
    let (ok, out) = run(as_manager(&[
        "auth",
        "whoami",
        "-o",
        "jsonpath={.status.userInfo.username}",
    ]))
    .await;
    assert!(
        ok && out.trim() == "system:serviceaccount:apps:manager",
        "{out}"
    );
    let (_, out) = run(as_manager(&[
        "auth", "can-i", "create", "secrets", "-n", "apps",
    ]))
    .await;
    assert_eq!(out.trim(), "yes");
    let (_, out) = run(as_manager(&[
        "auth", "can-i", "delete", "secrets", "-n", "apps",
    ]))
    .await;
    assert_eq!(out.trim(), "no");
    let (ok, out) = run(as_manager(&[
        "create",
        "secret",
        "generic",
        "s2",
        "--from-literal=x=y",
        "-n",
        "apps",
    ]))
    .await;
    assert!(ok, "{out}");
    let (ok, out) = run(as_manager(&["get", "configmaps", "-n", "apps"])).await;
    assert!(!ok, "{out}");
    assert!(
        out.contains("configmaps is forbidden: User \"system:serviceaccount:apps:manager\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"apps\""),
        "{out}"
    );
    // A user of the static token file, bound by name.
    let (_, out) = kubectl(
        kc,
        &[
            "--token",
            "carol-token",
            "auth",
            "can-i",
            "list",
            "secrets",
            "-n",
            "apps",
        ],
    )
    .await;
    assert_eq!(out.trim(), "yes");
    let (ok, out) = kubectl(kc, &["--token", "wrong", "get", "secrets", "-n", "apps"]).await;
    assert!(!ok && out.contains("Unauthorized"), "{out}");

    // The ServiceAccount directory the server wrote holds a working token.
    let sa_dir = served.dir.path().join("sa");
    assert_eq!(
        std::fs::read_to_string(sa_dir.join("namespace")).unwrap(),
        "apps"
    );
    assert!(
        std::fs::read_to_string(sa_dir.join("ca.crt"))
            .unwrap()
            .contains("BEGIN CERTIFICATE")
    );
    let dir_token = std::fs::read_to_string(sa_dir.join("token")).unwrap();
    let (ok, out) = kubectl(
        kc,
        &[
            "--token",
            dir_token.trim(),
            "get",
            "secrets",
            "-n",
            "apps",
            "-o",
            "name",
        ],
    )
    .await;
    assert!(ok && out.contains("secret/s2"), "{out}");

    // The audit log holds every request, the denied one included.
    let audit = std::fs::read_to_string(served.dir.path().join("audit.jsonl")).unwrap();
    let entries: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(
        entries
            .iter()
            .any(|e| e["user"] == "system:serviceaccount:apps:manager"
                && e["verb"] == "list"
                && e["resource"] == "configmaps"
                && e["allowed"] == false
                && e["code"] == 403)
    );
    assert!(
        entries
            .iter()
            .any(|e| e["user"] == "carol" && e["resource"] == "selfsubjectaccessreviews")
    );
    drop(served.child);
}
