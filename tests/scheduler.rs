//! The scheduler through the real kubectl: pods land on nodes that fit, taints and required node
//! affinity are honoured, an unschedulable pod shows `FailedScheduling` in `kubectl describe`,
//! a scheduler plugin applied as a Plugin object changes placement without a restart, and a
//! trapping plugin fails its cycle with a clear event while the scheduler keeps working.
//!
//! Nodes are Node objects created with kubectl (no kubelet runs them); the scheduler only needs
//! their labels, taints and allocatable resources.

use std::time::{Duration, Instant};

use capstan_e2e::{CapstanServer, kubectl, kubectl_stdin};

/// A server whose scheduler finds the default plugin components.
fn server() -> CapstanServer {
    // Builds the plugins workspace when its components are missing.
    capstan_testbed::component_path("node-resources-fit").unwrap_or_else(|e| panic!("{e}"));
    capstan_e2e::server()
}

/// Creates a node with `cpu` cores allocatable, labels and taints (YAML flow lists/maps).
fn node(server: &CapstanServer, name: &str, cpu: u32, labels: &str, taints: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n  taints: {taints}\n"
    );
    kubectl_stdin(server, &["apply", "-f", "-"], &manifest);
    let status = format!(
        r#"{{"status": {{"capacity": {{"cpu": "{cpu}", "memory": "8Gi", "pods": "110"}},
            "allocatable": {{"cpu": "{cpu}", "memory": "8Gi", "pods": "110"}}}}}}"#
    );
    kubectl(server, &["patch", "node", name, "--subresource=status", "--type=merge", "-p", &status]);
}

/// Creates pod `name` with a cpu request and extra spec lines (indented two spaces).
fn pod(server: &CapstanServer, name: &str, cpu: &str, extra_spec: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{extra_spec}  containers:\n  - name: c\n    image: busybox:1.36\n    resources:\n      requests: {{cpu: {cpu:?}}}\n"
    );
    kubectl_stdin(server, &["apply", "-f", "-"], &manifest);
}

/// Waits up to 30 s for `check` to return `Some`, re-reading; panics with `what` otherwise.
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn node_of(server: &CapstanServer, pod: &str) -> String {
    eventually(&format!("pod {pod} to be bound"), || {
        let node = kubectl(server, &["get", "pod", pod, "-o", "jsonpath={.spec.nodeName}"]);
        (!node.is_empty()).then_some(node)
    })
}

fn describe_shows(server: &CapstanServer, pod: &str, wanted: &[&str]) -> String {
    eventually(&format!("kubectl describe pod {pod} to show {wanted:?}"), || {
        let text = kubectl(server, &["describe", "pod", pod]);
        wanted.iter().all(|w| text.contains(w)).then_some(text)
    })
}

#[test]
fn pods_land_on_the_node_that_fits() {
    let server = server();
    node(&server, "small", 1, "{}", "[]");
    node(&server, "big", 4, "{}", "[]");
    pod(&server, "needs-two-cores", "2", "");
    assert_eq!(node_of(&server, "needs-two-cores"), "big");
    describe_shows(&server, "needs-two-cores", &["Scheduled", "Successfully assigned default/needs-two-cores to big"]);
    let scheduled = kubectl(
        &server,
        &["get", "pod", "needs-two-cores", "-o", "jsonpath={.status.conditions[?(@.type=='PodScheduled')].status}"],
    );
    assert_eq!(scheduled, "True");
    // The big node has 2 cores left: a second 2-core pod fits there, a third fits nowhere.
    pod(&server, "second", "2", "");
    assert_eq!(node_of(&server, "second"), "big");
    pod(&server, "third", "2", "");
    describe_shows(&server, "third", &["FailedScheduling", "0/2 nodes are available: 2 Insufficient cpu."]);
}

#[test]
fn a_tainted_node_is_avoided_unless_tolerated() {
    let server = server();
    node(&server, "gpu", 4, "{kind: gpu}", "[{key: dedicated, value: gpu, effect: NoSchedule}]");
    node(&server, "plain", 4, "{kind: plain}", "[]");
    for i in 0..3 {
        let name = format!("untolerating-{i}");
        pod(&server, &name, "100m", "");
        assert_eq!(node_of(&server, &name), "plain");
    }
    let toleration = "  tolerations: [{key: dedicated, operator: Equal, value: gpu, effect: NoSchedule}]\n  nodeSelector: {kind: gpu}\n";
    pod(&server, "tolerating", "100m", toleration);
    assert_eq!(node_of(&server, "tolerating"), "gpu");
    pod(&server, "forced-to-gpu", "100m", "  nodeSelector: {kind: gpu}\n");
    describe_shows(
        &server,
        "forced-to-gpu",
        &[
            "FailedScheduling",
            "0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taint {dedicated: gpu}.",
        ],
    );
}

#[test]
fn required_node_affinity_is_honoured() {
    let server = server();
    node(&server, "east", 8, "{topology.kubernetes.io/zone: east}", "[]");
    node(&server, "west", 2, "{topology.kubernetes.io/zone: west}", "[]");
    let affinity = "  affinity:\n    nodeAffinity:\n      requiredDuringSchedulingIgnoredDuringExecution:\n        nodeSelectorTerms:\n        - matchExpressions:\n          - {key: topology.kubernetes.io/zone, operator: In, values: [west]}\n";
    for i in 0..3 {
        let name = format!("west-only-{i}");
        pod(&server, &name, "100m", affinity);
        assert_eq!(node_of(&server, &name), "west", "the emptier east node must not win over the required zone");
    }
}

#[test]
fn an_unschedulable_pod_shows_failed_scheduling_and_is_retried_when_a_node_appears() {
    let server = server();
    node(&server, "tiny", 1, "{}", "[]");
    pod(&server, "huge", "16", "");
    let text = describe_shows(&server, "huge", &["FailedScheduling", "0/1 nodes are available: 1 Insufficient cpu."]);
    assert!(text.contains("PodScheduled") && text.contains("False"), "{text}");
    node(&server, "roomy", 32, "{}", "[]");
    assert_eq!(node_of(&server, "huge"), "roomy", "a new node moves the unschedulable pod back to the queue");
}

fn plugin_manifest(name: &str, component: &str, weight: u32, config: &str) -> String {
    format!(
        "apiVersion: capstan.io/v1alpha1\nkind: Plugin\nmetadata:\n  name: {name}\nspec:\n  kind: scheduler\n  component:\n    path: {component:?}\n  config: {config}\n  scheduler:\n    weight: {weight}\n"
    )
}

#[test]
fn a_scheduler_plugin_applied_with_kubectl_changes_placement_without_a_restart() {
    let server = server();
    node(&server, "roomy", 16, "{}", "[]");
    node(&server, "fast", 2, "{fast: 'true'}", "[]");
    pod(&server, "before", "100m", "");
    assert_eq!(node_of(&server, "before"), "roomy", "LeastAllocated prefers the emptier node");
    let component = capstan_testbed::component_path("prefer-node-label").unwrap_or_else(|e| panic!("{e}"));
    let manifest = plugin_manifest("prefer-fast", &component.display().to_string(), 100, "{label: fast}");
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest);
    // The plugin joins the default profile from the next cycle on; a pod created after the
    // load lands on the labelled node.
    eventually("the plugin to steer a new pod onto the labelled node", || {
        let name = format!("after-{}", Instant::now().elapsed().as_nanos());
        pod(&server, &name, "100m", "");
        let node = node_of(&server, &name);
        kubectl(&server, &["delete", "pod", &name, "--wait=false"]);
        (node == "fast").then_some(())
    });
    kubectl(&server, &["delete", "plugin", "prefer-fast"]);
    eventually("placement to return to the default once the plugin is deleted", || {
        let name = format!("again-{}", Instant::now().elapsed().as_nanos());
        pod(&server, &name, "100m", "");
        let node = node_of(&server, &name);
        kubectl(&server, &["delete", "pod", &name, "--wait=false"]);
        (node == "roomy").then_some(())
    });
}

#[test]
fn a_trapping_plugin_fails_its_cycle_with_a_clear_event_not_the_scheduler() {
    let server = server();
    node(&server, "n1", 4, "{}", "[]");
    let component = capstan_testbed::component_path("trap-filter").unwrap_or_else(|e| panic!("{e}"));
    kubectl_stdin(&server, &["apply", "-f", "-"], &plugin_manifest("trap", &component.display().to_string(), 1, "{}"));
    // Once the scheduler has loaded it (on a busy machine compiling takes a while), the victim.
    eventually("the trap plugin loaded", || {
        let state = kubectl(&server, &["get", "plugin", "trap", "-o", "jsonpath={.status.state}"]);
        (state == "Loaded").then_some(())
    });
    pod(&server, "victim", "100m", "");
    describe_shows(&server, "victim", &["FailedScheduling", "running Filter plugin \"trap\"", "wasm trap"]);
    let bound = kubectl(&server, &["get", "pod", "victim", "-o", "jsonpath={.spec.nodeName}"]);
    assert!(bound.is_empty(), "a failed cycle must not bind: {bound}");
    kubectl(&server, &["delete", "plugin", "trap"]);
    assert_eq!(node_of(&server, "victim"), "n1", "the scheduler survived and schedules once the plugin is gone");
}
