//! The switch that runs the conformance tests on a real cluster, exercised against a served
//! emulator standing in for the cluster: the same kubeconfig path, CRD installation by
//! server-side apply, a namespace of its own, and its removal afterwards.

use api_emulator::Emulator;
use api_emulator::testing::TestEnv;
use hsm_api::{HSMSecret, HSMSecretSpec};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, PostParams};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubeconfig_selects_that_cluster_and_the_namespace_is_removed_after() {
    let cluster = Emulator::new();
    let server = cluster.serve(0).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let crds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds");

    let env = TestEnv::on_cluster(&kubeconfig, Some(&crds)).await;
    assert!(env.is_real());
    assert!(env.emulator().is_none());
    let ns = env.namespace.clone();
    let api: Api<HSMSecret> = env.api();
    api.create(
        &PostParams::default(),
        &HSMSecret::new("s", HSMSecretSpec::default()),
    )
    .await
    .unwrap();
    // Everything happened on the "cluster".
    let on_cluster: Api<HSMSecret> = Api::namespaced(cluster.client(), &ns);
    assert!(on_cluster.get("s").await.is_ok());

    drop(env);
    let namespaces: Api<Namespace> = Api::all(cluster.client());
    assert!(
        matches!(namespaces.get(&ns).await, Err(kube::Error::Api(s)) if s.code == 404),
        "the test namespace is deleted"
    );
}
