//! Shared by the conformance tests: the environment (emulator or the real cluster named by
//! `HSM_TEST_KUBECONFIG`) with the project's CRDs installed.

#![allow(dead_code)]

use std::path::PathBuf;

use api_emulator::testing::TestEnv;

/// The project's CRD manifests.
pub fn crd_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../deploy/crds")
}

/// A fresh environment with the project's CRDs.
pub async fn env() -> TestEnv {
    TestEnv::new(Some(&crd_dir())).await
}

/// The `reason` of a kube API error, or a panic.
pub fn reason<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}
