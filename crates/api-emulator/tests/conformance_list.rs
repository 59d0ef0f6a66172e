//! List with label and field selectors, through kube (which form-encodes them).

mod common;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use rstest::rstest;
use serde_json::json;

async fn fixture(env: &api_emulator::testing::TestEnv) -> Api<ConfigMap> {
    let api: Api<ConfigMap> = env.api();
    for (name, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web", "tier": "back"})),
        ("c", json!({"app": "db"})),
        ("d", json!({})),
    ] {
        let cm: ConfigMap =
            serde_json::from_value(json!({"metadata": {"name": name, "labels": labels}})).unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    api
}

async fn names(api: &Api<ConfigMap>, lp: &ListParams) -> Vec<String> {
    let mut n: Vec<String> = api
        .list(lp)
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        // A real cluster puts kube-root-ca.crt in every namespace.
        .filter(|n| n != "kube-root-ca.crt")
        .collect();
    n.sort();
    n
}

#[rstest]
#[case("app=web", &["a", "b"])]
#[case("app==web", &["a", "b"])]
#[case("app!=web", &["c", "d"])]
#[case("app in (web, db)", &["a", "b", "c"])]
#[case("app notin (web)", &["c", "d"])]
#[case("tier", &["a", "b"])]
#[case("!tier", &["c", "d"])]
#[case("app=web,tier!=front", &["b"])]
#[tokio::test]
async fn label_selectors(#[case] selector: &str, #[case] expected: &[&str]) {
    let env = common::env().await;
    let api = fixture(&env).await;
    assert_eq!(
        names(&api, &ListParams::default().labels(selector)).await,
        expected,
        "{selector}"
    );
}

#[rstest]
#[case("metadata.name=b", &["b"])]
#[case("metadata.name!=b", &["a", "c", "d"])]
#[tokio::test]
async fn field_selectors(#[case] selector: &str, #[case] expected: &[&str]) {
    let env = common::env().await;
    let api = fixture(&env).await;
    assert_eq!(
        names(&api, &ListParams::default().fields(selector)).await,
        expected,
        "{selector}"
    );
}

#[tokio::test]
async fn namespace_field_selector_across_namespaces() {
    let env = common::env().await;
    fixture(&env).await;
    let all: Api<ConfigMap> = Api::all(env.client.clone());
    let lp = ListParams::default().fields(&format!("metadata.namespace={}", env.namespace));
    assert_eq!(names(&all, &lp).await, ["a", "b", "c", "d"]);
}

#[tokio::test]
async fn malformed_selector_is_400() {
    let env = common::env().await;
    let api = fixture(&env).await;
    let r = api.list(&ListParams::default().labels("app in web")).await;
    assert_eq!(common::reason(r).0, 400);
}

#[tokio::test]
async fn limit_and_continue_page_through_everything_once() {
    let env = common::env().await;
    let api: Api<ConfigMap> = env.api();
    for i in 0..5 {
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": format!("p{i}"), "labels": {"page": "yes"}}}),
        )
        .unwrap();
        api.create(&PostParams::default(), &cm).await.unwrap();
    }
    let mut names = Vec::new();
    let mut pages = 0;
    let mut token: Option<String> = None;
    loop {
        let mut lp = ListParams::default().labels("page=yes").limit(2);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        assert!(page.items.len() <= 2);
        names.extend(page.items.into_iter().filter_map(|c| c.metadata.name));
        match page.metadata.continue_ {
            Some(t) if !t.is_empty() => token = Some(t),
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(names, ["p0", "p1", "p2", "p3", "p4"]);
}

#[tokio::test]
async fn a_malformed_continue_token_is_400() {
    let env = common::env().await;
    let api = fixture(&env).await;
    let r = api
        .list(&ListParams::default().limit(1).continue_token("garbage"))
        .await;
    assert_eq!(common::reason(r).0, 400);
}
