//! Table tests against the SDK's in-memory cluster.

use std::collections::BTreeMap;

use capstan_plugin_sdk::controller::testing::FakeCluster;
use capstan_plugin_sdk::controller::{Controller, ObjectKey, meta};
use serde_json::{Value, json};

use super::{
    EndpointSliceController, MAX_ENDPOINTS_PER_SLICE, desired_endpoints, desired_slices, endpoints, pod, reconcile,
    service, slice,
};

fn web_service() -> Value {
    json!({"metadata": {"name": "web", "namespace": "d", "uid": "svc-uid", "labels": {"tier": "front"}},
           "spec": {"selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "targetPort": "http"},
                              {"name": "metrics", "port": 9000, "targetPort": 9090, "protocol": "TCP"}]}})
}

fn web_pod(name: &str, ip: &str, ready: bool, container_port: i64) -> Value {
    json!({"metadata": {"name": name, "namespace": "d", "uid": format!("uid-{name}"), "labels": {"app": "web"}},
           "spec": {"nodeName": "n1",
                    "containers": [{"name": "c", "ports": [{"name": "http", "containerPort": container_port}]}]},
           "status": {"phase": "Running", "podIP": ip,
                      "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}})
}

fn key() -> ObjectKey {
    ObjectKey { namespace: Some("d".into()), name: "web".into() }
}

fn zones() -> BTreeMap<String, String> {
    BTreeMap::from([("n1".to_owned(), "zone-a".to_owned())])
}

#[test]
fn named_target_ports_resolve_per_pod_and_group_pods_into_slices() {
    let svc = web_service();
    let (a, b, c) = (
        web_pod("a", "10.0.0.1", true, 8080),
        web_pod("b", "10.0.0.2", false, 8080),
        web_pod("c", "10.0.0.3", true, 8081),
    );
    let slices = desired_slices(&svc, &[&c, &b, &a], &zones());
    assert_eq!(slices.len(), 2, "two port mappings, two slices: {slices:?}");
    let (ports, members) = slices.iter().find(|(_, m)| m.len() == 2).cloned().unwrap_or_default();
    assert_eq!(ports[0], json!({"name": "http", "port": 8080, "protocol": "TCP"}));
    assert_eq!(ports[1], json!({"name": "metrics", "port": 9090, "protocol": "TCP"}));
    assert_eq!(members[0]["addresses"], json!(["10.0.0.1"]), "ordered by pod name");
    assert_eq!(members[0]["conditions"], json!({"ready": true, "serving": true, "terminating": false}));
    assert_eq!(members[1]["conditions"], json!({"ready": false, "serving": false, "terminating": false}));
    assert_eq!(members[0]["zone"], "zone-a");
    assert_eq!(members[0]["targetRef"]["name"], "a");
}

#[test]
fn terminating_pods_stay_in_slices_as_terminating_but_leave_endpoints() {
    let svc = web_service();
    let mut going = web_pod("going", "10.0.0.9", true, 8080);
    going["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
    let slices = desired_slices(&svc, &[&going], &zones());
    assert_eq!(slices[0].1[0]["conditions"], json!({"ready": false, "serving": true, "terminating": true}));
    assert_eq!(desired_endpoints(&svc, &[&going]), json!([]));
}

#[test]
fn endpoints_split_ready_and_not_ready_addresses() {
    let svc = web_service();
    let (a, b) = (web_pod("a", "10.0.0.1", true, 8080), web_pod("b", "10.0.0.2", false, 8080));
    let subsets = desired_endpoints(&svc, &[&b, &a]);
    assert_eq!(subsets.as_array().map(Vec::len), Some(1));
    assert_eq!(subsets[0]["addresses"][0]["ip"], "10.0.0.1");
    assert_eq!(subsets[0]["notReadyAddresses"][0]["ip"], "10.0.0.2");
    assert_eq!(subsets[0]["ports"][0], json!({"name": "http", "port": 8080, "protocol": "TCP"}));
    let mut publish = web_service();
    publish["spec"]["publishNotReadyAddresses"] = json!(true);
    assert_eq!(desired_endpoints(&publish, &[&b])[0]["addresses"][0]["ip"], "10.0.0.2");
}

#[test]
fn large_services_are_split_into_slices_of_at_most_100() {
    let svc = web_service();
    let pods: Vec<Value> =
        (0..250).map(|i| web_pod(&format!("p{i:03}"), &format!("10.0.{}.{}", i / 200, i % 200), true, 8080)).collect();
    let refs: Vec<&Value> = pods.iter().collect();
    let sizes: Vec<usize> = desired_slices(&svc, &refs, &zones()).iter().map(|(_, m)| m.len()).collect();
    assert_eq!(sizes, vec![MAX_ENDPOINTS_PER_SLICE, MAX_ENDPOINTS_PER_SLICE, 50]);
}

#[test]
fn reconcile_writes_slices_and_endpoints_and_follows_the_pods() {
    let cluster = FakeCluster::new();
    let svc = cluster.insert(&service(), web_service());
    cluster.insert(&pod(), web_pod("a", "10.0.0.1", true, 8080));
    cluster.insert(&pod(), web_pod("pending", "", false, 8080));
    let mut other = web_pod("other", "10.0.0.7", true, 8080);
    other["metadata"]["labels"] = json!({"app": "db"});
    cluster.insert(&pod(), other);
    reconcile(&cluster, &key()).unwrap_or_else(|e| panic!("{}", e.message));
    let slices = cluster.all(&slice());
    assert_eq!(slices.len(), 1);
    let s = &slices[0];
    assert_eq!(meta::label(s, "kubernetes.io/service-name"), Some("web"));
    assert_eq!(meta::label(s, "endpointslice.kubernetes.io/managed-by"), Some("endpointslice-controller.k8s.io"));
    assert_eq!(meta::label(s, "tier"), Some("front"), "the Service's labels are copied");
    assert_eq!(s["addressType"], "IPv4");
    assert_eq!(s["metadata"]["ownerReferences"][0]["uid"], svc["metadata"]["uid"]);
    assert_eq!(s["endpoints"].as_array().map(Vec::len), Some(1), "only the selected pod with an IP");
    let ep = cluster.all(&endpoints()).remove(0);
    assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.0.0.1");

    cluster.insert(&pod(), web_pod("b", "10.0.0.2", true, 8080));
    reconcile(&cluster, &key()).unwrap_or_else(|e| panic!("{}", e.message));
    assert_eq!(cluster.all(&slice()).len(), 1, "updated in place, not recreated");
    assert_eq!(cluster.all(&slice())[0]["endpoints"].as_array().map(Vec::len), Some(2));

    cluster.modify(&service(), &key(), |s| s["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z"));
    reconcile(&cluster, &key()).unwrap_or_else(|e| panic!("{}", e.message));
    assert!(cluster.all(&slice()).iter().all(meta::is_terminating), "slices of a deleted Service go");
}

#[test]
fn services_without_a_selector_are_left_alone() {
    let cluster = FakeCluster::new();
    let mut manual = web_service();
    manual["spec"].as_object_mut().map(|s| s.remove("selector"));
    cluster.insert(&service(), manual);
    cluster.insert(
        &endpoints(),
        json!({"metadata": {"name": "web", "namespace": "d"}, "subsets": [{"addresses": [{"ip": "1.2.3.4"}]}]}),
    );
    reconcile(&cluster, &key()).unwrap_or_else(|e| panic!("{}", e.message));
    assert!(cluster.all(&slice()).is_empty());
    assert_eq!(cluster.all(&endpoints())[0]["subsets"][0]["addresses"][0]["ip"], "1.2.3.4", "hand-made endpoints kept");
}

#[test]
fn pods_map_to_the_services_selecting_them() {
    let cluster = FakeCluster::new();
    cluster.insert(&service(), web_service());
    let controller = EndpointSliceController::configure("{}").unwrap_or_else(|e| panic!("{e}"));
    let keys = controller.map_to_keys(&cluster, &pod(), &web_pod("a", "10.0.0.1", true, 80));
    assert_eq!(keys, vec![key()]);
    let mut elsewhere = web_pod("a", "10.0.0.1", true, 80);
    elsewhere["metadata"]["namespace"] = json!("other");
    assert!(controller.map_to_keys(&cluster, &pod(), &elsewhere).is_empty());
}
