//! What only the etcd backend promises: its keys live under the Kubernetes layout, and an
//! unreachable cluster is reported with its endpoints.

#![allow(clippy::expect_used, reason = "a test aborts on a failed expectation")]

use capstan_store::{EtcdConfig, EtcdStore, Store, StoreError};
use capstan_testbed::EtcdServer;

#[tokio::test]
async fn an_unreachable_cluster_is_reported_with_its_endpoints() {
    let port = capstan_testbed::free_port().expect("free port");
    let endpoint = format!("http://127.0.0.1:{port}");
    let error = EtcdStore::connect(EtcdConfig::new(vec![endpoint.clone()])).await.err().expect("nothing listens there");
    assert!(matches!(error, StoreError::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().contains(&endpoint), "the error names the endpoint: {error}");
}

#[tokio::test]
async fn keys_are_stored_under_the_registry_prefix() {
    let server = EtcdServer::start().expect("start etcd");
    let store = EtcdStore::connect(EtcdConfig::new(vec![server.endpoint().to_string()])).await.expect("connect");
    store.put(b"/pods/default/web-1", b"{}").await.expect("put");
    let output = std::process::Command::new("etcdctl")
        .args(["--endpoints", server.endpoint(), "get", "--prefix", "--keys-only", "/registry/"])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("run etcdctl");
    let listed = String::from_utf8_lossy(&output.stdout);
    assert!(listed.lines().any(|l| l == "/registry/pods/default/web-1"), "etcdctl lists: {listed}");
    assert_eq!(store.get(b"/pods/default/web-1").await.expect("get").expect("found").key, b"/pods/default/web-1");
}
