//! The test environment the conformance tests share: a `kube::Client` on a fresh namespace,
//! either on an in-process emulator or — when `HSM_TEST_KUBECONFIG` names a kubeconfig — on
//! that real cluster, so the same test bodies check the emulator's fidelity.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use crate::Emulator;

/// The environment variable naming a real cluster's kubeconfig.
pub const REAL_CLUSTER_ENV: &str = "HSM_TEST_KUBECONFIG";

/// A client and a namespace of its own; the namespace is deleted when the environment is
/// dropped (on a real cluster; an emulator just goes away).
pub struct TestEnv {
    /// The client.
    pub client: Client,
    /// The test's namespace.
    pub namespace: String,
    emulator: Option<Emulator>,
    kubeconfig: Option<PathBuf>,
    served: Option<(crate::server::Server, tempfile::TempDir, PathBuf)>,
}

impl TestEnv {
    /// A fresh environment with the CRDs of `crd_dir` (if given) installed. Panics when the
    /// real cluster cannot be reached: a test helper, not a library call.
    pub async fn new(crd_dir: Option<&Path>) -> TestEnv {
        match std::env::var_os(REAL_CLUSTER_ENV) {
            Some(path) => Self::on_cluster(Path::new(&path), crd_dir).await,
            None => {
                let emu = Emulator::new();
                Self::setup(emu.admin_client(), Some(emu), None, crd_dir).await
            }
        }
    }

    /// An environment on the cluster of a kubeconfig, as when `HSM_TEST_KUBECONFIG` names it.
    pub async fn on_cluster(kubeconfig: &Path, crd_dir: Option<&Path>) -> TestEnv {
        let client = real_client(kubeconfig).await;
        Self::setup(client, None, Some(kubeconfig.to_path_buf()), crd_dir).await
    }

    async fn setup(
        client: Client,
        emulator: Option<Emulator>,
        kubeconfig: Option<PathBuf>,
        crd_dir: Option<&Path>,
    ) -> TestEnv {
        if let Some(dir) = crd_dir {
            install_crds(&client, dir).await;
        }
        let namespace = format!("emu-test-{}", crate::meta::random_suffix());
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": namespace, "labels": {"app.kubernetes.io/created-by": "api-emulator-tests"}},
        }))
        .expect("valid namespace");
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .expect("create the test namespace");
        TestEnv {
            client,
            namespace,
            emulator,
            kubeconfig,
            served: None,
        }
    }

    /// A kubeconfig file for out-of-process clients (kubectl): the real cluster's, or one
    /// for the emulator, which is then served on a free 127.0.0.1 port until the
    /// environment is dropped.
    pub async fn kubeconfig(&mut self) -> PathBuf {
        if let Some(path) = &self.kubeconfig {
            return path.clone();
        }
        if let Some((_, _, path)) = &self.served {
            return path.clone();
        }
        let emu = self
            .emulator
            .clone()
            .expect("an emulator when no real cluster");
        let server = emu.serve(0).await.expect("serve the emulator");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("kubeconfig");
        server
            .write_kubeconfig(&path)
            .expect("write the kubeconfig");
        self.served = Some((server, dir, path.clone()));
        path
    }

    /// The emulator, when not on a real cluster. Tests of emulator-only controls skip
    /// themselves when this is `None`.
    pub fn emulator(&self) -> Option<&Emulator> {
        self.emulator.as_ref()
    }

    /// A client from the kubeconfig that impersonates `user` (with `groups`), as
    /// `kubectl --as` does: requests are authorised as that user. On the emulator this
    /// also turns RBAC enforcement on (a real cluster always enforces it).
    pub async fn client_as(&mut self, user: &str, groups: &[&str]) -> Client {
        if let Some(emu) = &self.emulator {
            emu.set_authorization(crate::Authorization::Rbac);
        }
        let path = self.kubeconfig().await;
        let kc = Kubeconfig::read_from(&path).expect("read the kubeconfig");
        let mut config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("a usable kubeconfig");
        config.auth_info.impersonate = Some(user.to_string());
        if !groups.is_empty() {
            config.auth_info.impersonate_groups =
                Some(groups.iter().map(|g| g.to_string()).collect());
        }
        Client::try_from(config).expect("a client")
    }

    /// Whether this runs against a real cluster.
    pub fn is_real(&self) -> bool {
        self.kubeconfig.is_some()
    }

    /// A namespaced API in the test namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.namespace)
    }
}

async fn real_client(path: &Path) -> Client {
    let kc = Kubeconfig::read_from(path).expect("read HSM_TEST_KUBECONFIG");
    let config = Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
        .await
        .expect("a usable kubeconfig");
    Client::try_from(config).expect("a client for the real cluster")
}

async fn install_crds(client: &Client, dir: &Path) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in crate::crd::read_crd_dir(dir).expect("read the CRDs") {
        let name = crd["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        crds.patch(
            &name,
            &PatchParams::apply("api-emulator-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .expect("apply a CRD");
        let established = kube::runtime::conditions::is_crd_established();
        tokio::time::timeout(
            std::time::Duration::from_secs(30),
            kube::runtime::wait::await_condition(crds.clone(), &name, established),
        )
        .await
        .expect("the CRD is established in time")
        .expect("watch the CRD");
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let Some(path) = self.kubeconfig.clone() else {
            return;
        };
        let ns = self.namespace.clone();
        // A fresh runtime on its own thread: the test's runtime may be shutting down.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            rt.block_on(async {
                let client = real_client(&path).await;
                let _ = Api::<Namespace>::all(client)
                    .delete(&ns, &DeleteParams::background())
                    .await;
            });
        })
        .join();
    }
}
