use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::testing::FakeCluster;
use capstan_plugin_sdk::controller::{Api, ObjectKey, kinds, meta};
use serde_json::json;

use super::reconcile;

fn terminating(cluster: &FakeCluster, name: &str) {
    cluster.insert(
        &kinds::namespace(),
        json!({"metadata": {"name": name, "deletionTimestamp": "2026-11-23T10:00:00Z"},
               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Terminating"}}),
    );
}

fn names(cluster: &FakeCluster, kind: &capstan_plugin_sdk::controller::GroupVersionKind) -> Vec<String> {
    cluster.all(kind).iter().map(|o| format!("{}/{}", meta::namespace(o).unwrap_or(""), meta::name(o))).collect()
}

#[test]
fn a_terminating_namespace_is_emptied_then_finalized_and_removed() {
    let cluster = FakeCluster::new();
    terminating(&cluster, "team");
    cluster.insert(&kinds::namespace(), json!({"metadata": {"name": "other"}}));
    cluster.insert(&kinds::config_map(), json!({"metadata": {"name": "settings", "namespace": "team"}}));
    cluster.insert(&kinds::config_map(), json!({"metadata": {"name": "settings", "namespace": "other"}}));
    cluster.insert(&kinds::deployment(), json!({"metadata": {"name": "web", "namespace": "team"}}));
    // A pod something else still holds.
    cluster.insert(
        &kinds::pod(),
        json!({"metadata": {"name": "held", "namespace": "team", "finalizers": ["example.com/hold"]}}),
    );
    let key = ObjectKey { namespace: None, name: "team".into() };

    assert_eq!(reconcile(&cluster, &key).unwrap(), Some(super::RECHECK_SECONDS), "content remains: look again");
    assert_eq!(
        names(&cluster, &kinds::config_map()),
        ["other/settings"],
        "only the other namespace's ConfigMap is left"
    );
    assert!(names(&cluster, &kinds::deployment()).is_empty());
    let pod = &cluster.all(&kinds::pod())[0];
    assert!(meta::is_terminating(pod), "the held pod is being deleted");
    let namespace = cluster.get(&kinds::namespace(), &key).unwrap().unwrap();
    assert_eq!(namespace["spec"]["finalizers"], json!(["kubernetes"]), "not finalized while content remains");
    let remaining = meta::condition(&namespace, "NamespaceContentRemaining").unwrap();
    assert_eq!(remaining["status"], "True");
    assert_eq!(remaining["message"], "Some resources are remaining: pods. has 1 resource instances");
    let finalizers = meta::condition(&namespace, "NamespaceFinalizersRemaining").unwrap();
    assert_eq!(
        finalizers["message"],
        "Some content in the namespace has finalizers remaining: example.com/hold in 1 resource instances"
    );

    // The holder lets go; the next pass finalizes the namespace and deletes it for good.
    cluster.modify(&kinds::pod(), &ObjectKey::namespaced("team", "held"), |p| p["metadata"]["finalizers"] = json!([]));
    cluster
        .delete(
            &kinds::pod(),
            &ObjectKey::namespaced("team", "held"),
            &capstan_plugin_sdk::controller::DeleteOptions::plain(),
        )
        .ok();
    assert_eq!(reconcile(&cluster, &key).unwrap(), None);
    assert!(cluster.get(&kinds::namespace(), &key).unwrap().is_none(), "the namespace is gone");
    assert_eq!(names(&cluster, &kinds::namespace()), ["/other"]);
}

#[test]
fn live_namespaces_and_other_finalizers_are_left_alone() {
    let cluster = FakeCluster::new();
    cluster.insert(&kinds::namespace(), json!({"metadata": {"name": "live"}}));
    cluster.insert(&kinds::config_map(), json!({"metadata": {"name": "c", "namespace": "live"}}));
    assert_eq!(reconcile(&cluster, &ObjectKey { namespace: None, name: "live".into() }).unwrap(), None);
    assert_eq!(names(&cluster, &kinds::config_map()), ["live/c"]);

    // Emptied, the `kubernetes` finalizer is removed but another one keeps the namespace.
    cluster.insert(
        &kinds::namespace(),
        // (The fake cluster removes a deleted object without metadata finalizers on any write;
        // the API server keeps a namespace while its spec has finalizers.)
        json!({"metadata": {"name": "shared", "deletionTimestamp": "2026-11-23T10:00:00Z", "finalizers": ["example.com/agent"]},
               "spec": {"finalizers": ["kubernetes", "example.com/agent"]}}),
    );
    let key = ObjectKey { namespace: None, name: "shared".into() };
    assert_eq!(reconcile(&cluster, &key).unwrap(), None);
    let namespace = cluster.get(&kinds::namespace(), &key).unwrap().unwrap();
    assert_eq!(namespace["spec"]["finalizers"], json!(["example.com/agent"]));
}

#[test]
fn a_second_pass_over_an_unchanged_terminating_namespace_writes_nothing() {
    let cluster = FakeCluster::new();
    terminating(&cluster, "team");
    cluster.insert(
        &kinds::pod(),
        json!({"metadata": {"name": "held", "namespace": "team", "finalizers": ["example.com/hold"]}}),
    );
    let key = ObjectKey { namespace: None, name: "team".into() };
    reconcile(&cluster, &key).unwrap();
    let namespace = cluster.get(&kinds::namespace(), &key).unwrap().unwrap();
    let conditions = namespace["status"]["conditions"].as_array().unwrap().clone();
    assert_eq!(conditions.len(), 5, "{conditions:?}");
    assert!(conditions.iter().all(|c| c.get("lastProbeTime").is_none()), "NamespaceCondition has no lastProbeTime");
    let writes = cluster.writes();
    assert_eq!(reconcile(&cluster, &key).unwrap(), Some(super::RECHECK_SECONDS), "content still remains");
    assert_eq!(cluster.writes(), writes, "the held pod is already being deleted and the conditions stand");
}
