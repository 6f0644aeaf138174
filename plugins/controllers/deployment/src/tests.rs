//! Rollouts driven against the SDK's in-memory cluster, with ReplicaSets "settling" (all their
//! pods available) between reconciles the way the ReplicaSet controller and nodes would.

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::testing::FakeCluster;
use capstan_plugin_sdk::controller::{Api, ObjectKey, meta};
use serde_json::{Value, json};

use super::{HASH_LABEL, REVISION, deployment, reconcile, replica_set};

fn key() -> ObjectKey {
    ObjectKey::namespaced("default", "web")
}

fn web(replicas: i64, image: &str, strategy: &Value) -> Value {
    json!({
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "web"}},
            "strategy": strategy,
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}},
        },
    })
}

/// Every ReplicaSet's pods exist and are available.
fn settle(cluster: &FakeCluster) {
    for rs in cluster.all(&replica_set()) {
        let n = rs.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
        cluster.modify(&replica_set(), &ObjectKey::of(&rs), |rs| {
            rs["status"] = json!({"replicas": n, "readyReplicas": n, "availableReplicas": n});
        });
    }
}

fn sizes(cluster: &FakeCluster) -> Vec<(String, i64)> {
    let mut all: Vec<(String, i64)> = cluster
        .all(&replica_set())
        .iter()
        .map(|rs| {
            (
                meta::annotation(rs, REVISION).unwrap_or_default().to_owned(),
                rs["spec"]["replicas"].as_i64().unwrap_or(0),
            )
        })
        .collect();
    all.sort();
    all
}

fn set_image(cluster: &FakeCluster, image: &str) {
    cluster.modify(&deployment(), &key(), |d| d["spec"]["template"]["spec"]["containers"][0]["image"] = json!(image));
}

fn run(cluster: &FakeCluster, rounds: usize) -> Vec<Vec<(String, i64)>> {
    (0..rounds)
        .map(|_| {
            reconcile(cluster, &key()).unwrap();
            settle(cluster);
            sizes(cluster)
        })
        .collect()
}

#[test]
fn a_new_deployment_gets_one_replica_set_of_its_size() {
    let cluster = FakeCluster::new();
    cluster.insert(&deployment(), web(3, "nginx:1", &json!({})));
    let history = run(&cluster, 2);
    assert_eq!(history[1], vec![("1".to_owned(), 3)]);
    let rs = &cluster.all(&replica_set())[0];
    assert!(meta::label(rs, HASH_LABEL).is_some());
    assert_eq!(
        rs.pointer("/spec/selector/matchLabels/pod-template-hash"),
        rs.pointer("/metadata/labels/pod-template-hash")
    );
    let d = cluster.get(&deployment(), &key()).unwrap().unwrap();
    assert_eq!(meta::annotation(&d, REVISION), Some("1"));
    assert_eq!(d.pointer("/status/availableReplicas"), Some(&json!(3)));
    assert_eq!(meta::condition(&d, "Progressing").unwrap()["reason"], "NewReplicaSetAvailable");
    assert_eq!(meta::condition(&d, "Available").unwrap()["status"], "True");
}

#[test]
fn rolling_update_steps_within_surge_and_unavailability() {
    // (maxSurge, maxUnavailable, the sizes of (old, new) after each reconcile)
    type Steps = Vec<Vec<(&'static str, i64)>>;
    let cases: [(Value, Value, Steps); 2] = [
        (
            json!(1),
            json!(0),
            vec![
                vec![("1", 3), ("2", 1)],
                vec![("1", 2), ("2", 1)],
                vec![("1", 2), ("2", 2)],
                vec![("1", 1), ("2", 2)],
            ],
        ),
        (json!(0), json!(1), vec![vec![("1", 3), ("2", 0)], vec![("1", 2), ("2", 0)], vec![("1", 2), ("2", 1)]]),
    ];
    for (surge, unavailable, expected) in cases {
        let strategy =
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": surge, "maxUnavailable": unavailable}});
        let cluster = FakeCluster::new();
        cluster.insert(&deployment(), web(3, "nginx:1", &strategy));
        run(&cluster, 2);
        set_image(&cluster, "nginx:2");
        let history = run(&cluster, expected.len());
        let expected: Vec<Vec<(String, i64)>> =
            expected.iter().map(|step| step.iter().map(|(r, n)| ((*r).to_owned(), *n)).collect()).collect();
        assert_eq!(history, expected, "surge {surge}, unavailable {unavailable}");
        let finished = run(&cluster, 6);
        assert_eq!(finished.last().unwrap(), &vec![("1".to_owned(), 0), ("2".to_owned(), 3)]);
    }
}

#[test]
fn recreate_scales_old_to_zero_before_starting_new() {
    let cluster = FakeCluster::new();
    cluster.insert(&deployment(), web(2, "nginx:1", &json!({"type": "Recreate"})));
    run(&cluster, 2);
    set_image(&cluster, "nginx:2");
    let history = run(&cluster, 2);
    assert_eq!(history[0], vec![("1".to_owned(), 0)]);
    assert_eq!(history[1], vec![("1".to_owned(), 0), ("2".to_owned(), 2)]);
}

#[test]
fn undo_reuses_the_old_replica_set_under_a_new_revision() {
    let cluster = FakeCluster::new();
    cluster.insert(&deployment(), web(2, "nginx:1", &json!({})));
    run(&cluster, 2);
    set_image(&cluster, "nginx:2");
    run(&cluster, 6);
    set_image(&cluster, "nginx:1");
    let history = run(&cluster, 6);
    assert_eq!(history.last().unwrap(), &vec![("2".to_owned(), 0), ("3".to_owned(), 2)]);
    assert_eq!(cluster.all(&replica_set()).len(), 2, "no third ReplicaSet");
}

#[test]
fn history_beyond_the_limit_is_deleted() {
    let cluster = FakeCluster::new();
    let mut d = web(1, "v0", &json!({}));
    d["spec"]["revisionHistoryLimit"] = json!(1);
    cluster.insert(&deployment(), d);
    for version in 1..=3 {
        set_image(&cluster, &format!("v{version}"));
        run(&cluster, 6);
    }
    // v0 was never rolled out: v1 is revision 1.
    assert_eq!(sizes(&cluster), vec![("2".to_owned(), 0), ("3".to_owned(), 1)]);
}

#[test]
fn a_paused_deployment_scales_but_does_not_roll() {
    let cluster = FakeCluster::new();
    cluster.insert(&deployment(), web(2, "nginx:1", &json!({})));
    run(&cluster, 2);
    cluster.modify(&deployment(), &key(), |d| {
        d["spec"]["paused"] = json!(true);
        d["spec"]["replicas"] = json!(4);
        d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    });
    let history = run(&cluster, 2);
    assert_eq!(history[1], vec![("1".to_owned(), 4)]);
    let d = cluster.get(&deployment(), &key()).unwrap().unwrap();
    assert_eq!(meta::condition(&d, "Progressing").unwrap()["reason"], "DeploymentPaused");
}
