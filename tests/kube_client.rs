//! The kube-rs client, as Rust controllers use it, against a `capstan server`: typed create,
//! list and watch.

#![allow(clippy::expect_used, reason = "a test aborts on a failed expectation")]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;

async fn client(server: &capstan_e2e::CapstanServer) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    kube::Client::try_from(config).expect("client")
}

fn config_map(name: &str, color: &str) -> ConfigMap {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "kube-rs"}},
        "data": {"color": color},
    }))
    .expect("config map")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kube_rs_creates_lists_and_watches() {
    let server = capstan_e2e::server();
    let client = client(&server).await;
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    for (name, color) in [("one", "red"), ("two", "blue")] {
        api.create(&PostParams::default(), &config_map(name, color)).await.expect("create");
    }
    let listed = api.list(&ListParams::default().labels("app=kube-rs")).await.expect("list");
    let names: Vec<_> = listed.items.iter().filter_map(|cm| cm.metadata.name.clone()).collect();
    assert_eq!(names, ["one", "two"]);
    assert!(listed.metadata.resource_version.is_some());

    let stream = watcher(api.clone(), watcher::Config::default().labels("app=kube-rs")).boxed();
    let mut stream = stream.into_stream();
    // The watcher lists first (Init … InitDone), then streams changes.
    let mut seen_init_done = false;
    while !seen_init_done {
        let event =
            tokio::time::timeout(Duration::from_secs(20), stream.try_next()).await.expect("timely").expect("ok");
        seen_init_done = matches!(event, Some(watcher::Event::InitDone));
    }
    api.create(&PostParams::default(), &config_map("three", "green")).await.expect("create");
    let event = tokio::time::timeout(Duration::from_secs(20), stream.try_next()).await.expect("timely").expect("ok");
    match event {
        Some(watcher::Event::Apply(cm)) => assert_eq!(cm.metadata.name.as_deref(), Some("three")),
        other => panic!("expected the new config map, got {other:?}"),
    }
}
