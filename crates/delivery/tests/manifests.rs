//! deploy/: every overlay renders with kubectl's kustomize, matches its snapshot, fits the
//! schemas of its kinds, and applies to the API emulator with `kubectl apply`.

mod schemas;

use delivery::manifests::{self, OVERLAYS};
use rstest::rstest;
use schemas::Checked;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

fn overlay(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/overlays")
        .join(name)
}

fn objects(name: &str) -> Vec<Value> {
    manifests::documents(&manifests::render(&overlay(name)).unwrap()).unwrap()
}

/// The kinds of other projects the components use; their objects are checked on the emulator
/// against the CRD schemas in tests/fixtures.
const FOREIGN: &[&str] = &[
    "cert-manager.io/v1 Certificate",
    "cert-manager.io/v1 Issuer",
    "monitoring.coreos.com/v1 ServiceMonitor",
    "hsm.j5t.io/v1alpha1 HSMDevice",
];

#[rstest]
fn renders_as_its_snapshot(
    #[values(
        "default",
        "talos",
        "cert-manager",
        "monitoring",
        "vendor-library",
        "e2e"
    )]
    name: &str,
) {
    assert!(OVERLAYS.contains(&name));
    // The CRDs have their own snapshots (hsm-api); here they are named, not repeated.
    let objects: Vec<Value> = objects(name)
        .into_iter()
        .map(|o| {
            if o["kind"] == "CustomResourceDefinition" {
                serde_json::json!({"apiVersion": o["apiVersion"], "kind": o["kind"],
                                   "metadata": o["metadata"]})
            } else {
                o
            }
        })
        .collect();
    insta::assert_snapshot!(
        format!("overlay-{name}"),
        to_yaml(&objects.iter().collect::<Vec<_>>())
    );
}

#[test]
fn every_overlay_is_tested() {
    let on_disk: BTreeSet<String> = std::fs::read_dir(overlay(""))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let listed: BTreeSet<String> = OVERLAYS.iter().map(|s| (*s).to_owned()).collect();
    assert_eq!(on_disk, listed);
}

#[rstest]
fn every_object_fits_its_schema(
    #[values(
        "default",
        "talos",
        "cert-manager",
        "monitoring",
        "vendor-library",
        "e2e"
    )]
    name: &str,
) {
    for object in objects(name) {
        match schemas::check(&object) {
            Ok(Checked::Builtin) => {}
            Ok(Checked::Foreign(kind)) => assert!(FOREIGN.contains(&kind.as_str()), "{kind}"),
            Err(e) => panic!("{name}: {e}"),
        }
    }
}

/// The manager's Deployment carries what the contract and the fixed defects ask.
#[test]
fn the_manager_has_its_identity_and_the_go_managers_flags() {
    let objects = objects("default");
    let deployment = objects
        .iter()
        .find(|o| o["kind"] == "Deployment")
        .expect("the manager Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let env: BTreeSet<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in ["OPERATOR_NAME", "POD_NAMESPACE", "SERVICE_ACCOUNT_NAME"] {
        assert!(env.contains(name), "{name} missing");
    }
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "--mode=manager");
    for flag in [
        "--leader-elect",
        "--health-probe-bind-address=:8081",
        "--metrics-bind-address=:8080",
        "--agent-image=localhost/hsm-agent:dev",
        "--discovery-image=localhost/hsm-discovery:dev",
    ] {
        assert!(args.contains(&flag), "{flag} missing");
    }
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
}

/// Each ServiceAccount gets the rules its code uses, and no more.
#[test]
fn rbac_grants_each_component_what_it_uses() {
    let objects = objects("default");
    let rules = |kind: &str, name: &str| -> BTreeSet<String> {
        let role = objects
            .iter()
            .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{kind} {name}"));
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| {
                let list = |k: &str| -> Vec<String> {
                    rule[k]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|v| v.as_str().unwrap().to_owned())
                        .collect()
                };
                let (groups, resources, verbs) =
                    (list("apiGroups"), list("resources"), list("verbs"));
                let mut out = Vec::new();
                for g in &groups {
                    for r in &resources {
                        for v in &verbs {
                            out.push(format!("{g}/{r}:{v}"));
                        }
                    }
                }
                out
            })
            .collect()
    };
    let manager = rules("ClusterRole", "hsm-secrets-operator-manager");
    for grant in [
        "/pods:delete",
        "hsm.j5t.io/hsmsecrets/finalizers:update",
        "hsm.j5t.io/hsmsecrets/status:patch",
        "hsm.j5t.io/hsmpools/status:patch",
        "hsm.j5t.io/hsmpools:patch",
        "hsm.j5t.io/hsmdevices:watch",
        "hsm.j5t.io/hsmdevices/finalizers:update",
        "apps/daemonsets:patch",
        "apps/daemonsets:watch",
        "/pods:watch",
        "apps/deployments:create",
        "apps/deployments:delete",
        "apps/statefulsets:patch",
        "/secrets:create",
        "/secrets:update",
        "events.k8s.io/events:create",
        "authentication.k8s.io/tokenreviews:create",
        "authorization.k8s.io/subjectaccessreviews:create",
    ] {
        assert!(manager.contains(grant), "manager lacks {grant}");
    }
    assert!(!manager.iter().any(|g| g.contains('*')), "{manager:?}");
    // What the code never does is not granted (the e2e run proves the rest is used).
    for spare in [
        "hsm.j5t.io/hsmdevices:update",
        "hsm.j5t.io/hsmsecrets:update",
        "hsm.j5t.io/hsmpools:delete",
        "apps/daemonsets:delete",
        "/pods:get",
        "/events:create",
    ] {
        assert!(!manager.contains(spare), "the manager is granted {spare}");
    }
    // Users of the REST API: the manager authorises them by SubjectAccessReview on these.
    let editor = rules("ClusterRole", "hsm-secrets-operator-hsmsecret-editor");
    for grant in [
        "hsm.j5t.io/hsmsecrets:create",
        "hsm.j5t.io/hsmsecrets:update",
        "hsm.j5t.io/hsmsecrets:delete",
        "hsm.j5t.io/hsmsecrets/mirror:create",
    ] {
        assert!(editor.contains(grant), "the editor lacks {grant}");
    }
    assert!(!editor.iter().any(|g| g.contains("pin")), "{editor:?}");
    let viewer = rules("ClusterRole", "hsm-secrets-operator-hsmsecret-viewer");
    assert!(viewer.contains("hsm.j5t.io/hsmsecrets:get"));
    assert!(viewer.contains("hsm.j5t.io/hsmdevices:get"));
    assert!(
        !viewer
            .iter()
            .any(|g| g.ends_with(":create") || g.ends_with(":update"))
    );
    assert_eq!(
        rules("ClusterRole", "hsm-secrets-operator-pin-admin"),
        BTreeSet::from(["hsm.j5t.io/hsmdevices/pin:update".to_owned()])
    );
    let leases = rules("Role", "hsm-secrets-operator-leader-election");
    assert!(leases.contains("coordination.k8s.io/leases:patch"));
    assert!(!leases.contains("coordination.k8s.io/leases:update"));
    let expect = |got: BTreeSet<String>, want: &[&str]| {
        let want: BTreeSet<String> = want.iter().map(|s| (*s).to_owned()).collect();
        assert_eq!(got, want);
    };
    expect(
        rules("Role", "hsm-agent"),
        &[
            "hsm.j5t.io/hsmdevices:list",
            "hsm.j5t.io/hsmdevices:watch",
            "/secrets:list",
            "/secrets:watch",
        ],
    );
    expect(
        rules("Role", "hsm-discovery"),
        &[
            "hsm.j5t.io/hsmdevices:list",
            "hsm.j5t.io/hsmdevices:watch",
            "/pods:get",
            "/pods:patch",
        ],
    );
}

async fn kubectl(
    kubeconfig: &Path,
    cache: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String) {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("kubectl runs");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).await.unwrap();
    }
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("kubectl finishes")
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What the server serves, as "apiVersion Kind" (from `kubectl api-resources`).
async fn served(kubeconfig: &Path, cache: &Path) -> BTreeSet<String> {
    let (ok, out) = kubectl(kubeconfig, cache, &["api-resources", "--no-headers"], None).await;
    assert!(ok, "{out}");
    out.lines()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            let n = words.len();
            (n >= 4).then(|| format!("{} {}", words[n - 3], words[n - 1]))
        })
        .collect()
}

fn to_yaml(objects: &[&Value]) -> String {
    objects
        .iter()
        .map(|o| serde_yaml::to_string(o).unwrap())
        .collect::<Vec<_>>()
        .join("---\n")
}

#[rstest]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applies_to_the_api_emulator(
    #[values(
        "default",
        "talos",
        "cert-manager",
        "monitoring",
        "vendor-library",
        "e2e"
    )]
    name: &str,
) {
    let dir = tempfile::tempdir().unwrap();
    let emulator = api_emulator::Emulator::new();
    let server = emulator.serve(0).await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let cache = dir.path().join("cache");
    let fixtures = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/third-party-crds.yaml"),
    )
    .unwrap();
    let (ok, out) = kubectl(&kubeconfig, &cache, &["apply", "-f", "-"], Some(&fixtures)).await;
    assert!(ok, "{out}");

    let objects = objects(name);
    let served = served(&kubeconfig, &cache).await;
    let kind_of = |o: &Value| {
        format!(
            "{} {}",
            o["apiVersion"].as_str().unwrap(),
            o["kind"].as_str().unwrap()
        )
    };
    let (crds, rest): (Vec<&Value>, Vec<&Value>) = objects
        .iter()
        .partition(|o| o["kind"] == "CustomResourceDefinition");
    let (rest, unserved): (Vec<&Value>, Vec<&Value>) = rest.into_iter().partition(|o| {
        let kind = kind_of(o);
        served.contains(&kind) || FOREIGN.contains(&kind.as_str())
    });
    let unserved: Vec<String> = unserved.into_iter().map(kind_of).collect();
    assert!(
        unserved.is_empty(),
        "the emulator does not serve {unserved:?}"
    );
    for batch in [crds, rest] {
        let (ok, out) = kubectl(
            &kubeconfig,
            &cache,
            &["apply", "-f", "-"],
            Some(&to_yaml(&batch)),
        )
        .await;
        assert!(ok, "{name}: {out}");
        let (ok, listed) = kubectl(
            &kubeconfig,
            &cache,
            &["get", "-f", "-", "-o", "name"],
            Some(&to_yaml(&batch)),
        )
        .await;
        assert!(ok, "{listed}");
        assert_eq!(listed.lines().count(), batch.len(), "{listed}");
    }
}
