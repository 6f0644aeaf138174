use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::testing::FakeCluster;
use capstan_plugin_sdk::controller::{Api, Controller, DeleteOptions, ObjectKey, meta};
use serde_json::{Value, json};

use super::{DaemonSetController, REVISION_LABEL, daemon_set, node, placement, pod, reconcile};

fn ds(extra: &Value) -> Value {
    let mut spec = json!({
        "selector": {"matchLabels": {"app": "agent"}},
        "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "c", "image": "a:1"}]}},
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    json!({"metadata": {"name": "agent", "namespace": "kube-system"}, "spec": spec})
}

fn key() -> ObjectKey {
    ObjectKey::namespaced("kube-system", "agent")
}

fn add_node(cluster: &FakeCluster, name: &str, labels: &Value, taints: &Value) {
    cluster.insert(&node(), json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}}));
}

fn cluster_with_nodes(count: usize) -> FakeCluster {
    let cluster = FakeCluster::new();
    for n in 0..count {
        add_node(&cluster, &format!("n{n}"), &json!({}), &json!([]));
    }
    cluster
}

/// Pods on each node, sorted by node name.
fn placements(cluster: &FakeCluster) -> Vec<String> {
    let mut nodes: Vec<String> = cluster
        .all(&pod())
        .iter()
        .filter(|p| !meta::is_terminating(p))
        .filter_map(|p| placement::target_node(p).map(str::to_owned))
        .collect();
    nodes.sort();
    nodes
}

fn converge(cluster: &FakeCluster, rounds: usize) {
    for _ in 0..rounds {
        reconcile(cluster, &key()).unwrap();
        cluster.make_pods_ready();
    }
    reconcile(cluster, &key()).unwrap();
}

fn status(cluster: &FakeCluster) -> Value {
    cluster.get(&daemon_set(), &key()).unwrap().unwrap()["status"].clone()
}

fn set_image(cluster: &FakeCluster, image: &str, strategy: &Value) {
    let mut current = cluster.get(&daemon_set(), &key()).unwrap().unwrap();
    current["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image);
    current["spec"]["updateStrategy"] = strategy.clone();
    cluster.update(&daemon_set(), &current).unwrap();
}

fn images(cluster: &FakeCluster) -> Vec<String> {
    let mut images: Vec<String> = cluster
        .all(&pod())
        .iter()
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_owned())
        .collect();
    images.sort();
    images
}

#[test]
fn one_pod_per_eligible_node() {
    // (node labels and taints, DaemonSet spec extras, nodes with a pod)
    let cases = [
        (vec![(json!({}), json!([])), (json!({}), json!([]))], json!({}), vec!["n0", "n1"]),
        (
            vec![(json!({"role": "edge"}), json!([])), (json!({}), json!([]))],
            json!({"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"nodeSelector": {"role": "edge"}, "containers": [{"name": "c", "image": "a:1"}]}}}),
            vec!["n0"],
        ),
        (
            vec![(json!({}), json!([{"key": "gpu", "effect": "NoSchedule"}])), (json!({}), json!([]))],
            json!({}),
            vec!["n1"],
        ),
        (
            vec![(json!({}), json!([{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}]))],
            json!({}),
            vec!["n0"],
        ),
    ];
    for (nodes, extra, expected) in cases {
        let cluster = FakeCluster::new();
        for (n, (labels, taints)) in nodes.iter().enumerate() {
            add_node(&cluster, &format!("n{n}"), labels, taints);
        }
        cluster.insert(&daemon_set(), ds(&extra));
        converge(&cluster, 1);
        assert_eq!(placements(&cluster), expected, "{nodes:?} {extra}");
        let s = status(&cluster);
        assert_eq!(s["desiredNumberScheduled"], json!(expected.len()));
        assert_eq!(s["numberAvailable"], json!(expected.len()));
        assert_eq!(s["updatedNumberScheduled"], json!(expected.len()));
    }
}

#[test]
fn pods_follow_nodes_and_their_labels() {
    let cluster = cluster_with_nodes(2);
    let selector = json!({"template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"nodeSelector": {"role": "edge"}, "containers": [{"name": "c", "image": "a:1"}]}}});
    cluster.insert(&daemon_set(), ds(&selector));
    converge(&cluster, 1);
    assert!(placements(&cluster).is_empty());
    cluster.modify(&node(), &ObjectKey { namespace: None, name: "n1".into() }, |n| {
        n["metadata"]["labels"]["role"] = json!("edge");
    });
    converge(&cluster, 1);
    assert_eq!(placements(&cluster), ["n1"]);
    cluster.modify(&node(), &ObjectKey { namespace: None, name: "n1".into() }, |n| n["metadata"]["labels"] = json!({}));
    converge(&cluster, 1);
    assert!(placements(&cluster).is_empty(), "a node that no longer matches loses its pod");
    cluster.modify(&node(), &ObjectKey { namespace: None, name: "n0".into() }, |n| {
        n["metadata"]["labels"]["role"] = json!("edge");
    });
    converge(&cluster, 1);
    cluster.delete(&node(), &ObjectKey { namespace: None, name: "n0".into() }, &DeleteOptions::plain()).unwrap();
    converge(&cluster, 1);
    assert!(placements(&cluster).is_empty(), "a removed node's pod goes");
    let keys = DaemonSetController.map_to_keys(&cluster, &node(), &json!({"metadata": {"name": "n9"}}));
    assert_eq!(keys, vec![key()]);
}

#[test]
fn a_no_execute_taint_evicts_and_a_no_schedule_taint_only_keeps_new_pods_off() {
    let cluster = cluster_with_nodes(2);
    cluster.insert(&daemon_set(), ds(&json!({})));
    converge(&cluster, 1);
    cluster.modify(&node(), &ObjectKey { namespace: None, name: "n0".into() }, |n| {
        n["spec"]["taints"] = json!([{"key": "x", "effect": "NoSchedule"}]);
    });
    cluster.modify(&node(), &ObjectKey { namespace: None, name: "n1".into() }, |n| {
        n["spec"]["taints"] = json!([{"key": "x", "effect": "NoExecute"}]);
    });
    converge(&cluster, 1);
    assert_eq!(placements(&cluster), ["n0"]);
    assert_eq!(status(&cluster)["numberMisscheduled"], 1);
}

#[test]
fn rolling_update_respects_max_unavailable() {
    // (maxUnavailable, old pods deleted by the first reconcile after the change)
    for (max_unavailable, first_step) in [(json!(1), 1), (json!(2), 2), (json!("100%"), 4)] {
        let cluster = cluster_with_nodes(4);
        cluster.insert(&daemon_set(), ds(&json!({})));
        converge(&cluster, 1);
        set_image(
            &cluster,
            "a:2",
            &json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": max_unavailable}}),
        );
        reconcile(&cluster, &key()).unwrap();
        let old = images(&cluster).iter().filter(|i| *i == "a:1").count();
        assert_eq!(4 - old, first_step, "maxUnavailable {max_unavailable}");
        converge(&cluster, 8);
        assert_eq!(images(&cluster), ["a:2"; 4]);
        let s = status(&cluster);
        assert_eq!((s["updatedNumberScheduled"].as_i64(), s["numberAvailable"].as_i64()), (Some(4), Some(4)));
    }
}

#[test]
fn rolling_update_with_surge_starts_new_pods_before_removing_old_ones() {
    let cluster = cluster_with_nodes(3);
    cluster.insert(&daemon_set(), ds(&json!({})));
    converge(&cluster, 1);
    set_image(
        &cluster,
        "a:2",
        &json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}),
    );
    reconcile(&cluster, &key()).unwrap();
    assert_eq!(images(&cluster), ["a:1", "a:1", "a:1", "a:2"], "one surge pod, no old pod gone");
    converge(&cluster, 8);
    assert_eq!(images(&cluster), ["a:2"; 3]);
}

#[test]
fn on_delete_waits_for_the_user() {
    let cluster = cluster_with_nodes(2);
    cluster.insert(&daemon_set(), ds(&json!({})));
    converge(&cluster, 1);
    set_image(&cluster, "a:2", &json!({"type": "OnDelete"}));
    converge(&cluster, 2);
    assert_eq!(images(&cluster), ["a:1", "a:1"]);
    let victim = cluster.all(&pod()).remove(0);
    cluster.delete(&pod(), &ObjectKey::of(&victim), &DeleteOptions::plain()).unwrap();
    converge(&cluster, 1);
    assert_eq!(images(&cluster), ["a:1", "a:2"]);
    let updated = cluster.all(&pod()).into_iter().find(|p| p["spec"]["containers"][0]["image"] == "a:2").unwrap();
    let revisions = cluster.all(&capstan_plugin_sdk::controller::revision::controller_revision());
    assert_eq!(revisions.len(), 2);
    assert!(revisions.iter().any(|r| meta::label(r, REVISION_LABEL) == meta::label(&updated, REVISION_LABEL)));
}
