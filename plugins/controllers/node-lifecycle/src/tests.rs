//! Table tests against the SDK's in-memory cluster; time is moved by hand.

use capstan_plugin_sdk::controller::testing::FakeCluster;
use capstan_plugin_sdk::controller::{ObjectKey, meta};
use serde_json::{Value, json};

use super::{Config, NOT_READY, UNREACHABLE, eviction_time, lease, node, pod, reconcile};

const T0: i64 = 1_800_000_000;

fn config() -> Config {
    Config { node_monitor_grace_period_seconds: 40 }
}

fn cluster_with_node(renewed: i64, ready: &str) -> FakeCluster {
    let cluster = FakeCluster::new();
    cluster.insert(
        &node(),
        json!({"metadata": {"name": "n1", "creationTimestamp": meta::rfc3339(T0 - 3600)},
               "status": {"conditions": [
                   {"type": "Ready", "status": ready, "lastHeartbeatTime": meta::rfc3339(renewed)},
                   {"type": "MemoryPressure", "status": "False"}]}}),
    );
    cluster.insert(
        &lease(),
        json!({"metadata": {"name": "n1", "namespace": "kube-node-lease"},
               "spec": {"renewTime": format!("{}.123456Z", meta::rfc3339(renewed).trim_end_matches('Z'))}}),
    );
    cluster
}

fn add_pod(cluster: &FakeCluster, name: &str, tolerations: &Value) {
    cluster.insert(
        &pod(),
        json!({"metadata": {"name": name, "namespace": "default"},
               "spec": {"nodeName": "n1", "tolerations": tolerations},
               "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
    );
}

fn key() -> ObjectKey {
    ObjectKey { namespace: None, name: "n1".into() }
}

fn the_node(cluster: &FakeCluster) -> Value {
    cluster.all(&node()).remove(0)
}

fn taint_keys(node_object: &Value) -> Vec<(String, String)> {
    node_object["spec"]["taints"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| {
            (t["key"].as_str().unwrap_or_default().to_owned(), t["effect"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

fn pod_names(cluster: &FakeCluster) -> Vec<String> {
    cluster.all(&pod()).iter().filter(|p| !meta::is_terminating(p)).map(|p| meta::name(p).to_owned()).collect()
}

#[test]
fn a_heartbeating_node_is_left_alone_and_looked_at_again_when_its_grace_could_end() {
    let cluster = cluster_with_node(T0 - 10, "True");
    let next = reconcile(&cluster, &key(), &config(), T0).unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(next, Some(31), "40 s grace, 10 s silent");
    assert_eq!(the_node(&cluster)["status"]["conditions"][0]["status"], "True");
    assert!(taint_keys(&the_node(&cluster)).is_empty());
}

#[test]
fn a_silent_node_goes_unknown_is_tainted_unreachable_and_its_pods_not_ready() {
    let cluster = cluster_with_node(T0 - 41, "True");
    add_pod(&cluster, "p", &json!([]));
    reconcile(&cluster, &key(), &config(), T0).unwrap_or_else(|e| panic!("{}", e.message));
    let node_object = the_node(&cluster);
    for condition in node_object["status"]["conditions"].as_array().into_iter().flatten() {
        assert_eq!(condition["status"], "Unknown", "{condition}");
        assert_eq!(condition["message"], "Kubelet stopped posting node status.");
    }
    assert_eq!(
        taint_keys(&node_object),
        vec![(UNREACHABLE.into(), "NoSchedule".into()), (UNREACHABLE.into(), "NoExecute".into())]
    );
    assert!(cluster.events().iter().any(|(reason, _)| reason == "NodeNotReady"));
    // The pod tolerates nothing: it was evicted at once.
    assert!(pod_names(&cluster).is_empty());
    assert!(cluster.events().iter().any(|(reason, _)| reason == "TaintManagerEviction"));
}

#[test]
fn a_node_reporting_not_ready_is_tainted_not_ready_and_untainted_when_ready_again() {
    let cluster = cluster_with_node(T0 - 1, "False");
    reconcile(&cluster, &key(), &config(), T0).unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(
        taint_keys(&the_node(&cluster)),
        vec![(NOT_READY.into(), "NoSchedule".into()), (NOT_READY.into(), "NoExecute".into())]
    );
    cluster.modify(&node(), &key(), |n| n["status"]["conditions"][0]["status"] = json!("True"));
    reconcile(&cluster, &key(), &config(), T0 + 1).unwrap_or_else(|e| panic!("{}", e.message));
    assert!(taint_keys(&the_node(&cluster)).is_empty(), "the taints go with the condition");
}

#[test]
fn pods_tolerating_the_taint_for_a_while_are_evicted_when_it_runs_out_and_others_never() {
    let cluster = cluster_with_node(T0 - 100, "True");
    let for_a_while =
        json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]);
    let for_ever = json!([{"operator": "Exists"}]);
    add_pod(&cluster, "brief", &for_a_while);
    add_pod(&cluster, "forever", &for_ever);
    let next = reconcile(&cluster, &key(), &config(), T0).unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(next, Some(30), "the brief pod is due in 30 s");
    assert_eq!(pod_names(&cluster), vec!["brief".to_owned(), "forever".to_owned()]);
    let pods = cluster.all(&pod());
    assert!(pods.iter().all(|p| p["status"]["conditions"][0]["status"] == "False"), "pods marked not Ready");
    reconcile(&cluster, &key(), &config(), T0 + 30).unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(pod_names(&cluster), vec!["forever".to_owned()]);
}

#[test]
fn eviction_time_follows_upstream_toleration_rules() {
    let taint = json!({"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": meta::rfc3339(T0)});
    let taints = [&taint];
    let with = |tolerations: Value| json!({"spec": {"tolerations": tolerations}});
    let cases = [
        (json!([]), Some(i64::MIN)),
        (json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute"}]), None),
        (json!([{"key": UNREACHABLE, "operator": "Exists", "tolerationSeconds": 300}]), Some(T0 + 300)),
        (json!([{"key": NOT_READY, "operator": "Exists", "tolerationSeconds": 300}]), Some(i64::MIN)),
        (json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoSchedule"}]), Some(i64::MIN)),
        (json!([{"key": UNREACHABLE, "value": "", "effect": "NoExecute", "tolerationSeconds": 5}]), Some(T0 + 5)),
        (
            json!([{"operator": "Exists", "tolerationSeconds": 60}, {"operator": "Exists", "tolerationSeconds": 10}]),
            Some(T0 + 10),
        ),
    ];
    for (tolerations, expected) in cases {
        assert_eq!(eviction_time(&with(tolerations.clone()), &taints), expected, "{tolerations}");
    }
}

#[test]
fn leases_and_pods_map_to_their_node() {
    use capstan_plugin_sdk::controller::Controller;
    let controller = super::NodeLifecycleController::configure("{}").unwrap_or_else(|e| panic!("{e}"));
    let cluster = FakeCluster::new();
    let lease_object = json!({"metadata": {"name": "n1", "namespace": "kube-node-lease"}});
    let other_lease = json!({"metadata": {"name": "leader", "namespace": "kube-system"}});
    let pod_object = json!({"metadata": {"name": "p", "namespace": "d"}, "spec": {"nodeName": "n1"}});
    let pending = json!({"metadata": {"name": "q", "namespace": "d"}, "spec": {}});
    assert_eq!(controller.map_to_keys(&cluster, &lease(), &lease_object), vec![key()]);
    assert!(controller.map_to_keys(&cluster, &lease(), &other_lease).is_empty());
    assert_eq!(controller.map_to_keys(&cluster, &pod(), &pod_object), vec![key()]);
    assert!(controller.map_to_keys(&cluster, &pod(), &pending).is_empty());
    assert!(super::NodeLifecycleController::configure(r#"{"bogus": 1}"#).is_err());
}
