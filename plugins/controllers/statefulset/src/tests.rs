use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::testing::FakeCluster;
use capstan_plugin_sdk::controller::{Api, DeleteOptions, GroupVersionKind, ObjectKey, meta};
use serde_json::{Value, json};

use super::{REVISION_LABEL, claim, pod, reconcile, stateful_set};

fn set(replicas: i64, extra: &Value) -> Value {
    let mut spec = json!({
        "replicas": replicas,
        "serviceName": "web",
        "selector": {"matchLabels": {"app": "web"}},
        "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "a:1"}]}},
        "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}],
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    json!({"metadata": {"name": "web", "namespace": "default"}, "spec": spec})
}

fn key() -> ObjectKey {
    ObjectKey::namespaced("default", "web")
}

fn names(cluster: &FakeCluster, kind: &GroupVersionKind) -> Vec<String> {
    let mut names: Vec<String> = cluster.all(kind).iter().map(|o| meta::name(o).to_owned()).collect();
    names.sort();
    names
}

fn converge(cluster: &FakeCluster, rounds: usize) {
    for _ in 0..rounds {
        reconcile(cluster, &key()).unwrap();
        cluster.make_pods_ready();
    }
    reconcile(cluster, &key()).unwrap();
}

fn change_spec(cluster: &FakeCluster, change: impl FnOnce(&mut Value)) {
    let mut current = cluster.get(&stateful_set(), &key()).unwrap().unwrap();
    change(&mut current["spec"]);
    cluster.update(&stateful_set(), &current).unwrap();
}

fn stored(cluster: &FakeCluster) -> Value {
    cluster.get(&stateful_set(), &key()).unwrap().unwrap()
}

fn image_of(cluster: &FakeCluster, name: &str) -> String {
    let p = cluster.get(&pod(), &ObjectKey::namespaced("default", name)).unwrap().unwrap();
    p["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn ordered_ready_creates_one_pod_at_a_time_and_parallel_all_at_once() {
    // (policy, pods after one reconcile with nothing ready)
    for (policy, first) in [("OrderedReady", vec!["web-0"]), ("Parallel", vec!["web-0", "web-1", "web-2"])] {
        let cluster = FakeCluster::new();
        cluster.insert(&stateful_set(), set(3, &json!({"podManagementPolicy": policy})));
        reconcile(&cluster, &key()).unwrap();
        reconcile(&cluster, &key()).unwrap();
        assert_eq!(names(&cluster, &pod()), first, "{policy}: nothing is ready yet");
        converge(&cluster, 3);
        assert_eq!(names(&cluster, &pod()), ["web-0", "web-1", "web-2"], "{policy}");
        assert_eq!(names(&cluster, &claim()), ["data-web-0", "data-web-1", "data-web-2"], "{policy}");
        let status = &stored(&cluster)["status"];
        assert_eq!((status["replicas"].as_i64(), status["readyReplicas"].as_i64()), (Some(3), Some(3)));
        assert_eq!(status["currentRevision"], status["updateRevision"]);
    }
}

#[test]
fn ordinals_start_where_the_spec_says() {
    let cluster = FakeCluster::new();
    cluster.insert(&stateful_set(), set(2, &json!({"ordinals": {"start": 5}})));
    converge(&cluster, 2);
    assert_eq!(names(&cluster, &pod()), ["web-5", "web-6"]);
}

#[test]
fn scale_down_removes_the_highest_ordinal_first_one_at_a_time() {
    let cluster = FakeCluster::new();
    cluster.insert(&stateful_set(), set(3, &json!({})));
    converge(&cluster, 3);
    change_spec(&cluster, |s| s["replicas"] = json!(1));
    reconcile(&cluster, &key()).unwrap();
    assert_eq!(names(&cluster, &pod()), ["web-0", "web-1"], "web-2 goes first");
    reconcile(&cluster, &key()).unwrap();
    assert_eq!(names(&cluster, &pod()), ["web-0"]);
    assert_eq!(names(&cluster, &claim()).len(), 3, "claims are retained by default");
}

#[test]
fn when_scaled_delete_removes_the_claims_of_removed_ordinals() {
    let cluster = FakeCluster::new();
    let policy = json!({"persistentVolumeClaimRetentionPolicy": {"whenScaled": "Delete", "whenDeleted": "Retain"}});
    cluster.insert(&stateful_set(), set(2, &policy));
    converge(&cluster, 2);
    change_spec(&cluster, |s| s["replicas"] = json!(1));
    converge(&cluster, 2);
    assert_eq!(names(&cluster, &claim()), ["data-web-0"]);
}

#[test]
fn a_partitioned_rolling_update_replaces_only_ordinals_at_or_above_the_partition() {
    // (partition, pods updated at the end)
    for (partition, updated) in [(0, vec!["web-0", "web-1", "web-2"]), (2, vec!["web-2"]), (1, vec!["web-1", "web-2"])]
    {
        let cluster = FakeCluster::new();
        cluster.insert(&stateful_set(), set(3, &json!({})));
        converge(&cluster, 3);
        change_spec(&cluster, |s| {
            s["template"]["spec"]["containers"][0]["image"] = json!("a:2");
            s["updateStrategy"] = json!({"type": "RollingUpdate", "rollingUpdate": {"partition": partition}});
        });
        reconcile(&cluster, &key()).unwrap();
        assert_eq!(names(&cluster, &pod()), ["web-0", "web-1"], "the highest ordinal goes first");
        converge(&cluster, 8);
        let new: Vec<String> = names(&cluster, &pod()).into_iter().filter(|n| image_of(&cluster, n) == "a:2").collect();
        assert_eq!(new, updated, "partition {partition}");
        let status = &stored(&cluster)["status"];
        assert_eq!(status["updatedReplicas"], json!(updated.len()));
        assert_eq!(status["currentRevision"] == status["updateRevision"], partition == 0, "{status}");
    }
}

#[test]
fn max_unavailable_lets_several_pods_roll_at_once() {
    let cluster = FakeCluster::new();
    cluster.insert(&stateful_set(), set(4, &json!({})));
    converge(&cluster, 4);
    change_spec(&cluster, |s| {
        s["template"]["spec"]["containers"][0]["image"] = json!("a:2");
        s["updateStrategy"] = json!({"rollingUpdate": {"maxUnavailable": 2}});
    });
    reconcile(&cluster, &key()).unwrap();
    assert_eq!(names(&cluster, &pod()), ["web-0", "web-1"]);
}

#[test]
fn on_delete_recreates_deleted_pods_at_the_update_revision_only() {
    let cluster = FakeCluster::new();
    cluster.insert(&stateful_set(), set(2, &json!({"updateStrategy": {"type": "OnDelete"}})));
    converge(&cluster, 2);
    change_spec(&cluster, |s| s["template"]["spec"]["containers"][0]["image"] = json!("a:2"));
    converge(&cluster, 2);
    assert_eq!((image_of(&cluster, "web-0"), image_of(&cluster, "web-1")), ("a:1".into(), "a:1".into()));
    cluster.delete(&pod(), &ObjectKey::namespaced("default", "web-0"), &DeleteOptions::plain()).unwrap();
    converge(&cluster, 1);
    assert_eq!((image_of(&cluster, "web-0"), image_of(&cluster, "web-1")), ("a:2".into(), "a:1".into()));
}

#[test]
fn revisions_are_recorded_and_a_rollback_reuses_the_old_one() {
    let cluster = FakeCluster::new();
    cluster.insert(&stateful_set(), set(1, &json!({})));
    converge(&cluster, 1);
    let first = stored(&cluster)["status"]["updateRevision"].clone();
    change_spec(&cluster, |s| s["template"]["spec"]["containers"][0]["image"] = json!("a:2"));
    converge(&cluster, 3);
    let pod_revision = cluster.get(&pod(), &ObjectKey::namespaced("default", "web-0")).unwrap().unwrap();
    assert_eq!(meta::label(&pod_revision, REVISION_LABEL), stored(&cluster)["status"]["updateRevision"].as_str());
    change_spec(&cluster, |s| s["template"]["spec"]["containers"][0]["image"] = json!("a:1"));
    converge(&cluster, 3);
    assert_eq!(stored(&cluster)["status"]["updateRevision"], first);
    assert_eq!(image_of(&cluster, "web-0"), "a:1");
    let revisions = cluster.all(&capstan_plugin_sdk::controller::revision::controller_revision());
    assert_eq!(revisions.len(), 2);
    assert_eq!(revisions.iter().map(|r| r["revision"].as_i64().unwrap_or(0)).max(), Some(3));
}

#[test]
fn failed_pods_are_replaced() {
    let cluster = FakeCluster::new();
    cluster.insert(&stateful_set(), set(1, &json!({})));
    converge(&cluster, 1);
    let before = meta::uid(&cluster.get(&pod(), &ObjectKey::namespaced("default", "web-0")).unwrap().unwrap())
        .map(str::to_owned);
    cluster.modify(&pod(), &ObjectKey::namespaced("default", "web-0"), |p| p["status"]["phase"] = json!("Failed"));
    converge(&cluster, 1);
    let after = cluster.get(&pod(), &ObjectKey::namespaced("default", "web-0")).unwrap().unwrap();
    assert_ne!(meta::uid(&after).map(str::to_owned), before);
}

#[test]
fn claims_follow_a_changed_deletion_policy() {
    let cluster = FakeCluster::new();
    cluster.insert(&stateful_set(), set(2, &json!({})));
    converge(&cluster, 2);
    let owners = |cluster: &FakeCluster| -> usize {
        cluster.all(&claim()).iter().map(|c| meta::owner_references(c).len()).sum()
    };
    assert_eq!(owners(&cluster), 0, "retained claims have no owner");
    change_spec(&cluster, |s| s["persistentVolumeClaimRetentionPolicy"] = json!({"whenDeleted": "Delete"}));
    converge(&cluster, 1);
    assert_eq!(owners(&cluster), 2, "each claim is now owned by the set");
}
