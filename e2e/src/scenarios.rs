//! The scenarios, in the order a user meets the product. Each asserts on Kubernetes objects
//! and, where the run can reach the token, on the HSM itself.

mod agents;
mod card_pulled;
mod crash;
pub mod mirror;
mod wrong_pin;

use crate::cluster::{Cluster, OPERATOR_NAMESPACE, wait_for};
use crate::install::{self, MANAGER};
use crate::rbac_usage::{self, Exemption};
use crate::softhsm::Token;
use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use hsm_api::names::{LEADER_ELECTION_ID, ports};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The namespace of the applications whose Secrets the operator keeps.
pub const APPS_NAMESPACE: &str = "e2e-apps";
/// The HSMDevice of the run.
pub const DEVICE: &str = "pico-hsm";
/// The serial of the Pico HSM the node's fixture sysfs tree shows.
pub const SERIAL: &str = "DC6A33145E23A42A";
/// The HSMSecret (and HSM secret) the scenarios follow.
pub const SECRET: &str = "e2e-database";
/// A ServiceAccount that RBAC lets write through the REST API.
pub const WRITER: &str = "e2e-writer";
/// A ServiceAccount that RBAC lets only read.
pub const READER: &str = "e2e-reader";

/// What the scenarios share.
pub struct Run {
    /// The cluster.
    pub cluster: Cluster,
    /// The token behind the device, where the run can reach it directly.
    pub token: Option<Token>,
    /// The `kubectl-hsm` binary.
    pub kubectl_hsm: PathBuf,
    /// A directory for the run's files (tokens for the REST API).
    pub dir: PathBuf,
    /// The installed objects (for uninstall).
    pub installed: Vec<Value>,
    /// Whether the manager's listeners must bind their pod's address (local-process pods).
    pub pods_share_the_host_network: bool,
    /// The password the token held when it was plugged in.
    pub password: String,
    /// The node the pods run on, where the backend lets the run reach beneath Kubernetes
    /// (crash a container, read a pod's volume).
    pub node: Option<std::sync::Arc<dyn crate::node::Node>>,
    /// The virtual Pico HSM, where the runtime plugs it into an agent's own pcscd.
    pub card: Option<std::sync::Arc<crate::card::VirtualCard>>,
}

/// One scenario: its name and what it does.
pub struct Scenario {
    /// Shown in progress lines.
    pub name: &'static str,
    /// What it proves, in a line.
    pub proves: &'static str,
}

/// The scenarios, in order; each builds on the ones before.
pub const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "install",
        proves: "deploy/ installs; both manager replicas Ready, one leads",
    },
    Scenario {
        name: "device",
        proves: "HSMDevice -> discovery -> HSMPool Ready -> agent Ready",
    },
    Scenario {
        name: "secret",
        proves: "HSMSecret -> a Secret holding what the HSM holds; a hand edit of it is undone",
    },
    Scenario {
        name: "rest",
        proves: "a REST write allowed by RBAC reaches the HSM and the Secret within 1 s; one not allowed is 403 and changes nothing",
    },
    Scenario {
        name: "plugin",
        proves: "kubectl hsm finds the manager, port-forwards through the API server, creates, gets, lists and deletes",
    },
    Scenario {
        name: "failover",
        proves: "the leader's pod killed: the other replica leads, writes still reach the Secret",
    },
    Scenario {
        name: "agent-killed",
        proves: "the agent's process killed: the node restarts it in the same pod, it is Ready again, the Secret kept its value throughout, a write afterwards reaches the HSM and the Secret",
    },
    Scenario {
        name: "wrong-pin",
        proves: "a wrong PIN in the HSMDevice's Secret: the token is offered it once (not again after a restart), the agent and the HSMSecret say why, the right PIN put back: it recovers",
    },
    Scenario {
        name: "mirror",
        proves: "a second device is mirrored what the first holds; a delete it missed reaches it when it is back, and nothing deleted comes back",
    },
    Scenario {
        name: "card-pulled",
        proves: "the virtual Pico HSM pulled during REST writes: its agent recovers in place (same pod, no restart), writes fail on the card with a reason meanwhile, and nothing acknowledged is lost (REST API, Secret, the card itself)",
    },
    Scenario {
        name: "device-deleted",
        proves: "HSMDevice deleted: its agents go, the HSM data stays",
    },
    Scenario {
        name: "uninstall",
        proves: "uninstall leaves no object behind, the HSM data stays",
    },
    Scenario {
        name: "rbac",
        proves: "every request of the operator's ServiceAccounts was allowed, and every permission deploy/ grants them was used (or is exempted with its reason)",
    },
];

impl Run {
    /// Runs scenario `name`.
    pub async fn scenario(&mut self, name: &str) -> Result<()> {
        match name {
            "install" => self.install().await,
            "device" => self.device().await,
            "secret" => self.secret().await,
            "rest" => self.rest().await,
            "plugin" => self.plugin().await,
            "failover" => self.failover().await,
            "agent-killed" => self.agent_killed().await,
            "wrong-pin" => self.wrong_pin().await,
            "mirror" => self.mirror().await,
            "card-pulled" => self.card_pulled().await,
            "device-deleted" => self.device_deleted().await,
            "uninstall" => self.uninstall().await,
            "rbac" => self.rbac(),
            other => bail!("no scenario {other}"),
        }
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client.clone(), namespace)
    }

    async fn install(&mut self) -> Result<()> {
        let mut objects = install::render(&crate::workspace_root())?;
        if self.pods_share_the_host_network {
            install::bind_to_pod_ip(&mut objects);
        }
        install::apply(&self.cluster, &objects)?;
        self.installed = objects;
        let replicas = self.ready_manager_pods(2, Duration::from_secs(120)).await?;
        crate::progress(&format!("    manager pods Ready: {}", replicas.join(", ")));
        let leader = self.leader(Duration::from_secs(60)).await?;
        crate::progress(&format!("    leader: {leader}"));
        Ok(())
    }

    async fn ready_manager_pods(&self, count: usize, timeout: Duration) -> Result<Vec<String>> {
        let pods: Api<Pod> = self.api(OPERATOR_NAMESPACE);
        wait_for(&format!("{count} Ready manager pods"), timeout, || async {
            let list = pods
                .list(&ListParams::default().labels("control-plane=controller-manager"))
                .await?;
            let ready: Vec<String> = list
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p))
                .map(|p| p.name_any())
                .collect();
            Ok((ready.len() == count).then_some(ready))
        })
        .await
    }

    /// The pod holding the leader Lease.
    async fn leader(&self, timeout: Duration) -> Result<String> {
        let leases: Api<Lease> = self.api(OPERATOR_NAMESPACE);
        wait_for("a leader", timeout, || async {
            let lease = leases.get_opt(LEADER_ELECTION_ID).await?;
            Ok(lease
                .and_then(|l| l.spec)
                .and_then(|s| s.holder_identity)
                .filter(|h| !h.is_empty()))
        })
        .await
    }

    async fn device(&mut self) -> Result<()> {
        let token = self
            .token
            .as_ref()
            .context("the device scenario needs the token")?;
        // The token already holds a secret when it is plugged in, as a device someone used
        // before; later writes go through the operator, which owns the token from now on.
        self.password = crate::softhsm::random_hex(12);
        token.hsmctl(&[
            "put",
            SECRET,
            "username=app",
            &format!("password={}", self.password),
        ])?;
        let pin = token.pin()?;
        let manifest = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {DEVICE}-pin\n  namespace: {OPERATOR_NAMESPACE}\n\
             stringData:\n  pin: \"{pin}\"\n---\n\
             apiVersion: hsm.j5t.io/v1alpha1\nkind: HSMDevice\nmetadata:\n  name: {DEVICE}\n  namespace: {OPERATOR_NAMESPACE}\n\
             spec:\n  deviceType: PicoHSM\n  discovery:\n    usb:\n      - vendorId: \"2e8a\"\n        productId: \"10fd\"\n\
             \x20 pkcs11:\n    libraryPath: {module}\n    tokenLabel: {label}\n\
             \x20   pinSecret:\n      name: {DEVICE}-pin\n      key: pin\n",
            module = crate::softhsm::MODULE,
            label = token.label(),
        );
        self.cluster
            .kubectl_with_input(&["apply", "-f", "-"], Some(&manifest))?;
        self.pool_ready_with(DEVICE, SERIAL).await?;
        let agent = agent_name();
        let pods: Api<Pod> = self.api(OPERATOR_NAMESPACE);
        wait_for(
            &format!("agent {agent} Ready"),
            Duration::from_secs(120),
            || async {
                let list = pods
                    .list(&ListParams::default().labels(&format!("app={agent}")))
                    .await?;
                Ok(list.items.iter().any(is_ready).then_some(()))
            },
        )
        .await?;
        Ok(())
    }

    async fn secret(&mut self) -> Result<()> {
        let password = self.password.clone();
        let manifest = format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {APPS_NAMESPACE}\n---\n\
             apiVersion: hsm.j5t.io/v1alpha1\nkind: HSMSecret\nmetadata:\n  name: {SECRET}\n  namespace: {APPS_NAMESPACE}\n\
             spec:\n  parentRef:\n    name: {MANAGER}\n    namespace: {OPERATOR_NAMESPACE}\n"
        );
        self.cluster
            .kubectl_with_input(&["apply", "-f", "-"], Some(&manifest))?;
        self.secret_value_becomes("password", &password, Duration::from_secs(60))
            .await?;
        // The Secret is a read-only replica: a hand edit (a changed value, a key added) is
        // undone from the HSM.
        let edit = r#"{"stringData":{"password":"edited-by-hand","added":"by-hand"}}"#;
        let started = Instant::now();
        self.cluster.kubectl(&[
            "patch",
            "secret",
            SECRET,
            "-n",
            APPS_NAMESPACE,
            "--type=merge",
            "-p",
            edit,
        ])?;
        let secrets: Api<Secret> = self.api(APPS_NAMESPACE);
        wait_for(
            "the hand edit of the Secret to be undone",
            Duration::from_secs(30),
            || async {
                let data = secrets.get_opt(SECRET).await?.and_then(|s| s.data);
                let data = data.unwrap_or_default();
                let restored = data.get("password").map(|v| v.0.as_slice())
                    == Some(password.as_bytes())
                    && !data.contains_key("added");
                Ok(restored.then_some(()))
            },
        )
        .await?;
        crate::progress(&format!(
            "    hand edit undone after {} ms",
            started.elapsed().as_millis()
        ));
        Ok(())
    }

    /// Waits until the Secret's `key` is `value`; answers how long that took.
    async fn secret_value_becomes(
        &self,
        key: &str,
        value: &str,
        timeout: Duration,
    ) -> Result<Duration> {
        let secrets: Api<Secret> = self.api(APPS_NAMESPACE);
        let started = Instant::now();
        wait_for(
            &format!("Secret {SECRET} to hold the HSM's {key}"),
            timeout,
            || async {
                let secret = secrets.get_opt(SECRET).await?;
                let current = secret
                    .and_then(|s| s.data)
                    .and_then(|d| d.get(key).map(|v| v.0.clone()));
                Ok((current.as_deref() == Some(value.as_bytes())).then_some(()))
            },
        )
        .await?;
        Ok(started.elapsed())
    }

    /// Makes ServiceAccount `name` in the apps namespace, bound in the operator's namespace
    /// to ClusterRole `role`; answers a token for it in a file.
    fn identity(&self, name: &str, role: &str) -> Result<PathBuf> {
        let manifest = format!(
            "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {APPS_NAMESPACE}\n---\n\
             apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: {name}\n  namespace: {OPERATOR_NAMESPACE}\n\
             roleRef:\n  apiGroup: rbac.authorization.k8s.io\n  kind: ClusterRole\n  name: {role}\n\
             subjects:\n  - kind: ServiceAccount\n    name: {name}\n    namespace: {APPS_NAMESPACE}\n"
        );
        self.cluster
            .kubectl_with_input(&["apply", "-f", "-"], Some(&manifest))?;
        let token = self.cluster.kubectl(&[
            "create",
            "token",
            name,
            "-n",
            APPS_NAMESPACE,
            "--duration=1h",
        ])?;
        let file = self.dir.join(format!("{name}.token"));
        crate::softhsm::write_private(&file, token.trim())?;
        Ok(file)
    }

    /// The REST API's base URL on a Ready manager pod (`skip`: not this one).
    async fn manager_url(&self, skip: Option<&str>) -> Result<String> {
        let pods: Api<Pod> = self.api(OPERATOR_NAMESPACE);
        let list = pods
            .list(&ListParams::default().labels("control-plane=controller-manager"))
            .await?;
        let pod = list
            .items
            .iter()
            .filter(|p| is_ready(p) && Some(p.name_any().as_str()) != skip)
            .find_map(|p| p.status.as_ref().and_then(|s| s.pod_ip.clone()))
            .context("no Ready manager pod with an address")?;
        Ok(format!("http://{pod}:{}", ports::MANAGER_API))
    }

    async fn rest(&mut self) -> Result<()> {
        let writer = self.identity(WRITER, "hsm-secrets-operator-hsmsecret-editor")?;
        let reader = self.identity(READER, "hsm-secrets-operator-hsmsecret-viewer")?;
        let url = format!(
            "{}/api/v1/hsm/secrets/{SECRET}",
            self.manager_url(None).await?
        );
        let token = self
            .token
            .as_ref()
            .context("the rest scenario needs the token")?;

        let denied = crate::softhsm::random_hex(12);
        let (code, body) = put(&url, &reader, &denied)?;
        ensure!(
            code == 403,
            "the reader's write answered {code}, not 403: {body}"
        );
        ensure!(
            token.value(SECRET, "password")?.as_deref() != Some(denied.as_str()),
            "the refused write reached the HSM"
        );

        let password = crate::softhsm::random_hex(12);
        let started = Instant::now();
        let (code, body) = put(&url, &writer, &password)?;
        ensure!(
            code == 200 || code == 201,
            "the writer's write answered {code}: {body}"
        );
        self.secret_value_becomes("password", &password, Duration::from_secs(10))
            .await?;
        let latency = started.elapsed();
        crate::progress(&format!("    write -> Secret: {} ms", latency.as_millis()));
        ensure!(
            latency <= Duration::from_secs(1),
            "the Secret followed the write after {latency:?}, not within 1 s"
        );
        ensure!(
            token.value(SECRET, "password")?.as_deref() == Some(password.as_str()),
            "the HSM does not hold the value the REST API acknowledged"
        );
        Ok(())
    }

    /// Runs `kubectl hsm` as a user does: it finds the manager's Service and port-forwards
    /// to a Ready manager pod through the API server; the REST API's identity is the token
    /// in `token`.
    fn kubectl_hsm(&self, token: &Path, args: &[&str]) -> Result<String> {
        let output = Command::new(&self.kubectl_hsm)
            .arg("--token-file")
            .arg(token)
            .args(args)
            .env("KUBECONFIG", &self.cluster.kubeconfig)
            .env("HOME", &self.dir)
            .env_remove("HSM_SERVER")
            .stdin(std::process::Stdio::null())
            .output()
            .context("cannot run kubectl-hsm")?;
        ensure!(
            output.status.success(),
            "kubectl hsm {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    }

    async fn plugin(&mut self) -> Result<()> {
        let writer = self.dir.join(format!("{WRITER}.token"));
        let name = "e2e-plugin";
        self.kubectl_hsm(
            &writer,
            &[
                "create",
                name,
                "--from-literal",
                "api-key=k1",
                "--from-literal",
                "region=eu",
            ],
        )?;
        let got: Value =
            serde_json::from_str(&self.kubectl_hsm(&writer, &["get", name, "-o", "json"])?)?;
        let shown = got.to_string();
        let encoded = base64::engine::general_purpose::STANDARD.encode("k1");
        ensure!(
            shown.contains("k1") || shown.contains(&encoded),
            "kubectl hsm get shows no api-key: {shown}"
        );
        let listed = self.kubectl_hsm(&writer, &["list"])?;
        ensure!(
            listed.contains(name),
            "kubectl hsm list lacks {name}: {listed}"
        );
        if let Some(token) = &self.token {
            ensure!(
                token.value(name, "api-key")?.as_deref() == Some("k1"),
                "the HSM lacks what kubectl hsm created"
            );
        }
        self.kubectl_hsm(&writer, &["delete", name, "--force"])?;
        let listed = self.kubectl_hsm(&writer, &["list"])?;
        ensure!(
            !listed.contains(name),
            "kubectl hsm list still shows {name}: {listed}"
        );
        if let Some(token) = &self.token {
            ensure!(
                !token.secrets()?.iter().any(|s| s == name),
                "the HSM still holds {name}"
            );
        }
        Ok(())
    }

    async fn failover(&mut self) -> Result<()> {
        let before = self.leader(Duration::from_secs(10)).await?;
        let pods: Api<Pod> = self.api(OPERATOR_NAMESPACE);
        let leader_pod = pods
            .list(&ListParams::default().labels("control-plane=controller-manager"))
            .await?
            .items
            .into_iter()
            .map(|p| p.name_any())
            .find(|name| before.starts_with(name.as_str()) || before.contains(name.as_str()))
            .with_context(|| format!("no manager pod matches the leader {before}"))?;
        let killed = Instant::now();
        self.cluster.kubectl(&[
            "delete",
            "pod",
            &leader_pod,
            "-n",
            OPERATOR_NAMESPACE,
            "--grace-period=0",
            "--force",
            "--wait=false",
        ])?;
        let leases: Api<Lease> = self.api(OPERATOR_NAMESPACE);
        let after = wait_for(
            "another replica to lead",
            Duration::from_secs(60),
            || async {
                let holder = leases
                    .get_opt(LEADER_ELECTION_ID)
                    .await?
                    .and_then(|l| l.spec)
                    .and_then(|s| s.holder_identity)
                    .filter(|h| !h.is_empty() && *h != before);
                Ok(holder)
            },
        )
        .await?;
        crate::progress(&format!(
            "    {before} killed; {after} leads after {} ms",
            killed.elapsed().as_millis()
        ));
        let url = format!(
            "{}/api/v1/hsm/secrets/{SECRET}",
            self.manager_url(Some(&leader_pod)).await?
        );
        let writer = self.dir.join(format!("{WRITER}.token"));
        let password = crate::softhsm::random_hex(12);
        let (code, body) = put(&url, &writer, &password)?;
        ensure!(
            code == 200 || code == 201,
            "a write after failover answered {code}: {body}"
        );
        self.secret_value_becomes("password", &password, Duration::from_secs(30))
            .await?;
        self.ready_manager_pods(2, Duration::from_secs(120)).await?;
        Ok(())
    }

    async fn device_deleted(&mut self) -> Result<()> {
        let token = self.token.as_ref().context("needs the token")?;
        let before = token.value(SECRET, "password")?;
        let agent = agent_name();
        self.delete_device(DEVICE, &agent).await?;
        ensure!(before.is_some(), "the HSM held no {SECRET} before");
        ensure!(
            token.value(SECRET, "password")? == before,
            "deleting the HSMDevice changed the HSM"
        );
        let secrets: Api<Secret> = self.api(APPS_NAMESPACE);
        ensure!(
            secrets.get_opt(SECRET).await?.is_some(),
            "the Secret went with the device"
        );
        Ok(())
    }

    async fn uninstall(&mut self) -> Result<()> {
        let token = self.token.as_ref().context("needs the token")?;
        let before = token.value(SECRET, "password")?;
        self.cluster.kubectl(&[
            "delete",
            "hsmsecret",
            SECRET,
            "-n",
            APPS_NAMESPACE,
            "--wait=true",
            "--timeout=60s",
        ])?;
        let secrets: Api<Secret> = self.api(APPS_NAMESPACE);
        ensure!(
            secrets.get_opt(SECRET).await?.is_none(),
            "the Secret outlived its HSMSecret"
        );
        install::delete(&self.cluster, &self.installed)?;
        let namespaces: Api<k8s_openapi::api::core::v1::Namespace> =
            Api::all(self.cluster.client.clone());
        wait_for(
            "the operator's namespace to be gone",
            Duration::from_secs(60),
            || async {
                Ok(namespaces
                    .get_opt(OPERATOR_NAMESPACE)
                    .await?
                    .is_none()
                    .then_some(()))
            },
        )
        .await?;
        let left = self.cluster.kubectl(&["get", "crd", "-o", "name"])?;
        ensure!(!left.contains("hsm.j5t.io"), "CRDs left behind: {left}");
        let cluster_rbac =
            self.cluster
                .kubectl(&["get", "clusterroles,clusterrolebindings", "-o", "name"])?;
        ensure!(
            !cluster_rbac.contains("hsm-secrets-operator"),
            "cluster RBAC left behind: {cluster_rbac}"
        );
        ensure!(
            token.value(SECRET, "password")? == before,
            "uninstalling changed the HSM"
        );
        Ok(())
    }

    fn rbac(&mut self) -> Result<()> {
        let Some(log) = &self.cluster.audit_log else {
            crate::progress("    skipped: this backend keeps no audit log the run can read");
            return Ok(());
        };
        let requests = rbac_usage::parse_audit_log(&std::fs::read_to_string(log)?)?;
        let granted = rbac_usage::permissions(&self.installed, OPERATOR_NAMESPACE)?;
        let report = rbac_usage::check(&granted, &requests, EXEMPTIONS);
        for line in report.to_string().lines() {
            crate::progress(&format!("    {line}"));
        }
        ensure!(
            report.requests > 0,
            "the operator's ServiceAccounts made no request: the pods did not run as them"
        );
        // Every request allowed: deploy/ grants at least what the code needs; every grant
        // used or exempted with its reason: it grants no more.
        ensure!(
            report.denied.is_empty(),
            "requests of the operator's ServiceAccounts were denied:\n{report}"
        );
        ensure!(
            report.unused.is_empty(),
            "deploy/ grants permissions the operator never used (remove them, or exempt them with the reason):\n{report}"
        );
        Ok(())
    }
}

/// The manager's ServiceAccount.
const MANAGER_ACCOUNT: &str = "hsm-secrets-operator-controller-manager";

/// The OwnerReferencesPermissionEnforcement admission plugin checks these while admitting a
/// write that sets blockOwnerDeletion; it makes no request of its own, and the API emulator,
/// like most clusters, does not run it.
const OWNER_FINALIZERS: &str = "checked only by the OwnerReferencesPermissionEnforcement admission plugin (no request of its own; not run by the emulator or by default)";

/// Permissions the run cannot exercise, and why.
pub const EXEMPTIONS: &[Exemption] = &[
    Exemption {
        subject: MANAGER_ACCOUNT,
        group: "",
        resource: "pods",
        verb: "delete",
        why: "deletes agent pods the kubelet refused (defect 14); the run's node refuses none",
    },
    Exemption {
        subject: MANAGER_ACCOUNT,
        group: "apps",
        resource: "deployments",
        verb: "delete",
        why: "deletes an agent whose device stayed away past the absence timeout; the run's devices stay plugged in",
    },
    Exemption {
        subject: MANAGER_ACCOUNT,
        group: "apps",
        resource: "statefulsets",
        verb: "patch",
        why: "rollout restart of a StatefulSet an HSMSecret names; the run names none",
    },
    Exemption {
        subject: MANAGER_ACCOUNT,
        group: "events.k8s.io",
        resource: "events",
        verb: "patch",
        why: "counts an Event that recurs within its series window; the run's events do not recur",
    },
    Exemption {
        subject: MANAGER_ACCOUNT,
        group: "hsm.j5t.io",
        resource: "hsmdevices/finalizers",
        verb: "update",
        why: OWNER_FINALIZERS,
    },
    Exemption {
        subject: MANAGER_ACCOUNT,
        group: "hsm.j5t.io",
        resource: "hsmpools/finalizers",
        verb: "update",
        why: OWNER_FINALIZERS,
    },
    Exemption {
        subject: MANAGER_ACCOUNT,
        group: "hsm.j5t.io",
        resource: "hsmsecrets/finalizers",
        verb: "update",
        why: OWNER_FINALIZERS,
    },
];

/// The agent Deployment of the run's device.
pub fn agent_name() -> String {
    format!("hsm-agent-{DEVICE}-{}", SERIAL.to_lowercase())
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// `PUT url` with the password as the secret's new `password` (and `username`), as the
/// holder of the token in `token_file`; the status code and body.
fn put(url: &str, token_file: &Path, password: &str) -> Result<(u16, String)> {
    let body = serde_json::json!({"data": {"username": "app", "password": password}});
    let (code, answer) = agents::http("PUT", url, Some(token_file), Some(&body.to_string()))?;
    Ok((code, answer.to_string()))
}
