use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::testing::FakeCluster;
use capstan_plugin_sdk::controller::{Api, Controller, GroupVersionKind, ObjectKey, meta};
use serde_json::{Value, json};

use super::{DisruptionController, pod, pod_disruption_budget, reconcile};

fn deployment() -> GroupVersionKind {
    GroupVersionKind::new("apps", "v1", "Deployment")
}

fn replica_set() -> GroupVersionKind {
    GroupVersionKind::new("apps", "v1", "ReplicaSet")
}

/// A Deployment of `replicas` → its ReplicaSet → `pods` pods, `ready` of them ready.
fn workload(cluster: &FakeCluster, replicas: i64, pods: usize, ready: usize) {
    let d = cluster.insert(
        &deployment(),
        json!({"metadata": {"name": "web", "namespace": "default"}, "spec": {"replicas": replicas}}),
    );
    let rs = cluster.insert(
        &replica_set(),
        json!({"metadata": {"name": "web-1", "namespace": "default", "ownerReferences": [meta::controller_reference(&deployment(), &d)]}, "spec": {"replicas": replicas}}),
    );
    for n in 0..pods {
        let status = if n < ready {
            json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]})
        } else {
            json!({"phase": "Pending"})
        };
        cluster.insert(
            &pod(),
            json!({
                "metadata": {"name": format!("web-{n}"), "namespace": "default", "labels": {"app": "web"}, "ownerReferences": [meta::controller_reference(&replica_set(), &rs)]},
                "status": status,
            }),
        );
    }
}

fn budget(cluster: &FakeCluster, spec: &Value) -> Value {
    let mut spec = spec.clone();
    spec["selector"] = json!({"matchLabels": {"app": "web"}});
    cluster.insert(
        &pod_disruption_budget(),
        json!({"metadata": {"name": "web-pdb", "namespace": "default"}, "spec": spec}),
    );
    reconcile(cluster, &ObjectKey::namespaced("default", "web-pdb")).unwrap();
    cluster.get(&pod_disruption_budget(), &ObjectKey::namespaced("default", "web-pdb")).unwrap().unwrap()["status"]
        .clone()
}

#[test]
fn status_counts_healthy_pods_against_the_budget() {
    // (budget spec, deployment replicas, pods, ready, (currentHealthy, desiredHealthy, expectedPods, disruptionsAllowed), condition)
    let cases = [
        (json!({"minAvailable": 2}), 3, 3, 3, (3, 2, 3, 1), "True"),
        (json!({"minAvailable": 2}), 3, 3, 2, (2, 2, 3, 0), "False"),
        (json!({"maxUnavailable": 1}), 4, 3, 3, (3, 3, 4, 0), "False"),
        (json!({"maxUnavailable": "50%"}), 4, 4, 4, (4, 2, 4, 2), "True"),
        (json!({"minAvailable": "50%"}), 4, 4, 3, (3, 2, 4, 1), "True"),
    ];
    for (spec, replicas, pods, ready, (healthy, desired, expected, allowed), condition) in cases {
        let cluster = FakeCluster::new();
        workload(&cluster, replicas, pods, ready);
        let status = budget(&cluster, &spec);
        let got = (
            &status["currentHealthy"],
            &status["desiredHealthy"],
            &status["expectedPods"],
            &status["disruptionsAllowed"],
        );
        assert_eq!(got, (&json!(healthy), &json!(desired), &json!(expected), &json!(allowed)), "{spec}");
        assert_eq!(status["conditions"][0]["type"], "DisruptionAllowed");
        assert_eq!(status["conditions"][0]["status"], condition, "{spec}");
        assert_eq!(status["observedGeneration"], 1);
    }
}

#[test]
fn a_pod_without_a_controller_fails_a_percentage_budget_safely() {
    let cluster = FakeCluster::new();
    cluster.insert(&pod(), json!({"metadata": {"name": "bare", "namespace": "default", "labels": {"app": "web"}}, "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}));
    let status = budget(&cluster, &json!({"maxUnavailable": 1}));
    assert_eq!(status["disruptionsAllowed"], 0);
    assert_eq!(status["conditions"][0]["reason"], "SyncFailed");
    let counted = budget(&FakeCluster::new(), &json!({"minAvailable": 1}));
    assert_eq!(counted["disruptionsAllowed"], 0, "nothing expected, nothing to disrupt");
}

#[test]
fn pods_map_to_the_budgets_selecting_them() {
    let cluster = FakeCluster::new();
    budget(&cluster, &json!({"minAvailable": 1}));
    let selected = json!({"metadata": {"name": "p", "namespace": "default", "labels": {"app": "web"}}});
    let other = json!({"metadata": {"name": "q", "namespace": "default", "labels": {"app": "db"}}});
    assert_eq!(
        DisruptionController.map_to_keys(&cluster, &pod(), &selected),
        vec![ObjectKey::namespaced("default", "web-pdb")]
    );
    assert!(DisruptionController.map_to_keys(&cluster, &pod(), &other).is_empty());
}
