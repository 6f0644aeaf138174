//! Hollow nodes through the real kubectl: `capstan server --hollow-nodes N` registers Ready nodes
//! with leases, runs pods bound to them, finishes their graceful deletion, and ends pods that ask
//! to exit.

use capstan_e2e::{CapstanServer, json, kubectl, kubectl_stdin};
use serde_json::json;

fn hollow_server(extra: &[&str]) -> CapstanServer {
    let mut args = vec!["--hollow-nodes", "3", "--hollow-zones", "2"];
    args.extend_from_slice(extra);
    CapstanServer::start_with(&args).unwrap_or_else(|e| panic!("{e}"))
}

fn pod(name: &str, node: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{{annotations}}}
spec:
  nodeName: {node}
  containers:
  - name: app
    image: busybox
"
    )
}

#[test]
fn hollow_nodes_register_ready_with_zones_labels_taints_and_leases() {
    let server =
        hollow_server(&["--hollow-node-labels", "tier=gold", "--hollow-node-taints", "dedicated=batch:NoSchedule"]);
    let nodes = json(&kubectl(&server, &["get", "nodes", "-o", "json"]));
    let items = nodes["items"].as_array().expect("items");
    let names: Vec<_> = items.iter().filter_map(|n| n["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["hollow-node-0", "hollow-node-1", "hollow-node-2"]);
    for node in items {
        let ready = node["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
        assert_eq!(ready.map(|c| &c["status"]), Some(&json!("True")), "{node}");
        assert_eq!(node["metadata"]["labels"]["tier"], "gold");
        assert_eq!(node["spec"]["taints"][0]["key"], "dedicated");
        assert_eq!(node["status"]["allocatable"]["pods"], "110");
    }
    let zones: Vec<_> =
        items.iter().filter_map(|n| n["metadata"]["labels"]["topology.kubernetes.io/zone"].as_str()).collect();
    assert_eq!(zones, ["zone-0", "zone-1", "zone-0"]);
    // The table kubectl prints shows them Ready.
    let table = kubectl(&server, &["get", "nodes"]);
    assert_eq!(table.matches(" Ready ").count(), 3, "{table}");

    let lease = json(&kubectl(&server, &["get", "lease", "-n", "kube-node-lease", "hollow-node-1", "-o", "json"]));
    assert_eq!(lease["spec"]["holderIdentity"], "hollow-node-1");
    assert!(lease["spec"]["renewTime"].is_string(), "{lease}");
}

#[test]
fn pods_bound_to_hollow_nodes_run_and_are_deleted() {
    let server = hollow_server(&[]);
    kubectl_stdin(&server, &["apply", "-f", "-"], &pod("web", "hollow-node-1", ""));
    kubectl(&server, &["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"]);
    let web = json(&kubectl(&server, &["get", "pod", "web", "-o", "json"]));
    assert_eq!(web["status"]["phase"], "Running");
    assert!(web["status"]["podIP"].as_str().is_some_and(|ip| ip.starts_with("10.128.1.")), "{web}");
    assert_eq!(web["status"]["hostIP"], "10.127.0.1");
    assert_eq!(web["status"]["containerStatuses"][0]["ready"], true);

    // A graceful delete is finished by the node: kubectl's wait for deletion returns.
    kubectl(&server, &["delete", "pod", "web", "--timeout=30s"]);
    let left = kubectl(&server, &["get", "pods", "-o", "name"]);
    assert_eq!(left.trim(), "", "pods left: {left}");
}

#[test]
fn a_pod_asking_to_exit_ends_with_its_exit_code() {
    let server = hollow_server(&[]);
    let manifests = [
        pod("done", "hollow-node-0", "capstan.io/hollow-exit-after: \"0.5\""),
        pod("broken", "hollow-node-2", "capstan.io/hollow-exit-after: \"0.5\", capstan.io/hollow-exit-code: \"2\""),
    ];
    for manifest in manifests {
        kubectl_stdin(&server, &["apply", "-f", "-"], &manifest);
    }
    kubectl(&server, &["wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/done", "--timeout=30s"]);
    kubectl(&server, &["wait", "--for=jsonpath={.status.phase}=Failed", "pod/broken", "--timeout=30s"]);
    let broken = json(&kubectl(&server, &["get", "pod", "broken", "-o", "json"]));
    assert_eq!(broken["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 2);
}
