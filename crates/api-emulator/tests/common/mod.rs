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

/// Polls `check` until it holds (real clusters collect garbage asynchronously), for up to
/// 30 seconds.
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..300 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("not in time: {what}");
}

/// Whether `get` answers 404.
pub async fn is_gone<K: Clone + serde::de::DeserializeOwned + std::fmt::Debug>(
    api: &kube::Api<K>,
    name: &str,
) -> bool {
    matches!(api.get(name).await, Err(kube::Error::Api(s)) if s.code == 404)
}

/// (type, name, has deletionTimestamp) of the next `n` events of a watch, bookmarks skipped.
pub async fn next_events<K: kube::Resource>(
    stream: &mut (impl futures::Stream<Item = kube::Result<kube::api::WatchEvent<K>>> + Unpin),
    n: usize,
) -> Vec<(String, String, bool)> {
    use futures::StreamExt as _;
    use kube::api::WatchEvent;
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(std::time::Duration::from_secs(30), stream.next())
            .await
            .expect("an event in time")
            .expect("the watch goes on")
            .expect("a decodable event");
        let (t, o) = match ev {
            WatchEvent::Added(o) => ("ADDED", o),
            WatchEvent::Modified(o) => ("MODIFIED", o),
            WatchEvent::Deleted(o) => ("DELETED", o),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => panic!("watch error {e:?}"),
        };
        let deleting = o.meta().deletion_timestamp.is_some();
        out.push((
            t.into(),
            o.meta().name.clone().unwrap_or_default(),
            deleting,
        ));
    }
    out
}
