//! The default profile's PodTopologySpread, InterPodAffinity and DefaultPreemption plugins, and
//! pod scheduling gates, through the real kubectl, against `capstan server --hollow-nodes N --hollow-zones Z` (hollow
//! nodes run the bound pods, so Deployments become Running pods and preempted pods go away).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use capstan_e2e::{CapstanServer, json, kubectl, kubectl_fails, kubectl_stdin};

fn hollow(nodes: &str, extra: &[&str]) -> CapstanServer {
    capstan_testbed::component_path("pod-topology-spread").unwrap_or_else(|e| panic!("{e}"));
    let mut args = vec!["--hollow-nodes", nodes];
    args.extend_from_slice(extra);
    CapstanServer::start_with(&args).unwrap_or_else(|e| panic!("{e}"))
}

/// Waits up to 60 s for `check` to return `Some`; panics with `what` (and the last value seen).
fn eventually<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) => assert!(Instant::now() < deadline, "timed out waiting for {what}; last seen: {last}"),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Pod name → node name for the pods labelled `app=<app>`.
fn placements(server: &CapstanServer, app: &str) -> BTreeMap<String, String> {
    let pods = json(&kubectl(server, &["get", "pods", "-l", &format!("app={app}"), "-o", "json"]));
    pods["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            let name = p["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            (name, p["spec"]["nodeName"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

fn node_zones(server: &CapstanServer) -> BTreeMap<String, String> {
    let nodes = json(&kubectl(server, &["get", "nodes", "-o", "json"]));
    nodes["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            (name, n["metadata"]["labels"]["topology.kubernetes.io/zone"].as_str().unwrap_or_default().to_owned())
        })
        .collect()
}

fn deployment(name: &str, replicas: u32, pod_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  replicas: {replicas}
  selector:
    matchLabels: {{app: {name}}}
  template:
    metadata:
      labels: {{app: {name}}}
    spec:
{pod_spec}      containers:
      - name: app
        image: busybox:1.36
        resources:
          requests: {{cpu: 100m}}
"
    )
}

/// Kubernetes docs, "Pod Topology Spread Constraints": `maxSkew: 1` over three zones spreads
/// six replicas two per zone.
#[test]
fn a_zone_spread_constraint_spreads_six_replicas_two_per_zone() {
    let server = hollow("6", &["--hollow-zones", "3"]);
    let spread = "      topologySpreadConstraints:
      - maxSkew: 1
        topologyKey: topology.kubernetes.io/zone
        whenUnsatisfiable: DoNotSchedule
        labelSelector:
          matchLabels: {app: spread}
";
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment("spread", 6, spread));
    let zones = node_zones(&server);
    let per_zone = eventually("six spread pods bound", || {
        let placed = placements(&server, "spread");
        let bound: Vec<&String> = placed.values().filter(|n| !n.is_empty()).collect();
        if bound.len() < 6 {
            return Err(format!("{placed:?}"));
        }
        let mut counts: BTreeMap<String, usize> = BTreeMap::new();
        for node in bound {
            *counts.entry(zones.get(node).cloned().unwrap_or_default()).or_default() += 1;
        }
        Ok(counts)
    });
    let expected: BTreeMap<String, usize> = (0..3).map(|z| (format!("zone-{z}"), 2)).collect();
    assert_eq!(per_zone, expected);
}

const ANTI_AFFINITY: &str = "      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
          - labelSelector:
              matchLabels: {app: solo}
            topologyKey: kubernetes.io/hostname
";

/// Kubernetes docs, "Assigning Pods to Nodes" (the redis-cache example): required anti-affinity
/// on the hostname allows one replica per node; the extra one stays Pending with upstream's reason.
#[test]
fn required_anti_affinity_puts_one_pod_per_node_and_the_extra_stays_pending() {
    let server = hollow("3", &[]);
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment("solo", 4, ANTI_AFFINITY));
    let placed = eventually("three solo pods on three nodes and one pending", || {
        let placed = placements(&server, "solo");
        let bound: Vec<&String> = placed.values().filter(|n| !n.is_empty()).collect();
        (placed.len() == 4 && bound.len() == 3).then(|| placed.clone()).ok_or_else(|| format!("{placed:?}"))
    });
    let mut nodes: Vec<&String> = placed.values().filter(|n| !n.is_empty()).collect();
    nodes.sort();
    nodes.dedup();
    assert_eq!(nodes.len(), 3, "one replica per node: {placed:?}");
    let pending = placed.iter().find(|(_, node)| node.is_empty()).map(|(name, _)| name.clone()).unwrap_or_default();
    let wanted = "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules.";
    eventually("the FailedScheduling event in kubectl describe", || {
        let text = kubectl(&server, &["describe", "pod", &pending]);
        (text.contains("FailedScheduling") && text.contains(wanted)).then_some(()).ok_or(text)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        placements(&server, "solo").get(&pending).map(String::as_str),
        Some(""),
        "the extra replica stays Pending"
    );
}

fn pod(server: &CapstanServer, name: &str, labels: &str, cpu: &str, spec: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {labels}\nspec:\n{spec}  containers:\n  - name: c\n    image: busybox:1.36\n    resources:\n      requests: {{cpu: {cpu:?}}}\n"
    );
    kubectl_stdin(server, &["apply", "-f", "-"], &manifest);
}

fn field(server: &CapstanServer, pod: &str, path: &str) -> String {
    kubectl(server, &["get", "pod", pod, "-o", &format!("jsonpath={{{path}}}")])
}

fn bound_node(server: &CapstanServer, pod: &str) -> String {
    eventually(&format!("pod {pod} bound"), || {
        let node = field(server, pod, ".spec.nodeName");
        (!node.is_empty()).then_some(node).ok_or_default()
    })
}

trait OkOrDefault<T> {
    fn ok_or_default(self) -> Result<T, String>;
}

impl<T> OkOrDefault<T> for Option<T> {
    fn ok_or_default(self) -> Result<T, String> {
        self.ok_or_else(|| "nothing yet".to_owned())
    }
}

/// Kubernetes docs, "Assigning Pods to Nodes" (the web-store example): required pod affinity on
/// the hostname co-locates with the labelled pod, whichever node that is.
#[test]
fn required_affinity_co_locates_with_a_labelled_pod() {
    let server = hollow("4", &[]);
    pod(&server, "cache", "{app: store}", "100m", "");
    let cache_node = bound_node(&server, "cache");
    let affinity = "  affinity:
    podAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector:
          matchExpressions: [{key: app, operator: In, values: [store]}]
        topologyKey: kubernetes.io/hostname
";
    for i in 0..3 {
        let name = format!("web-{i}");
        pod(&server, &name, "{app: web}", "100m", affinity);
        assert_eq!(bound_node(&server, &name), cache_node, "{name} must join the store pod's node");
    }
    let lonely = affinity.replace("[store]", "[absent]");
    pod(&server, "lonely", "{app: web}", "100m", &lonely);
    eventually("the lonely pod's FailedScheduling event", || {
        let text = kubectl(&server, &["describe", "pod", "lonely"]);
        text.contains("0/4 nodes are available: 4 node(s) didn't match pod affinity rules.").then_some(()).ok_or(text)
    });
}

/// PriorityClasses `low` (10) and `high` (1000).
const LOW_AND_HIGH: &str = "apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: low}
value: 10
---
apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high}
value: 1000
";

/// Kubernetes docs, "Pod Priority and Preemption": a pending high-priority pod evicts
/// lower-priority pods from a full node, is nominated to it, and then runs there; a pod with
/// `preemptionPolicy: Never` waits instead.
#[test]
fn a_high_priority_pod_preempts_low_priority_pods_and_never_does_not() {
    let server = hollow("1", &["--hollow-node-cpu", "2"]);
    let polite = "apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata: {name: high-polite}
value: 1000
preemptionPolicy: Never
";
    kubectl_stdin(&server, &["apply", "-f", "-"], &format!("{LOW_AND_HIGH}---\n{polite}"));
    pod(&server, "low-a", "{app: low}", "1", "  priorityClassName: low\n");
    pod(&server, "low-b", "{app: low}", "1", "  priorityClassName: low\n");
    assert_eq!(bound_node(&server, "low-a"), "hollow-node-0");
    assert_eq!(bound_node(&server, "low-b"), "hollow-node-0");

    pod(&server, "polite", "{app: high}", "1", "  priorityClassName: high-polite\n");
    eventually("the polite pod to be refused without preempting", || {
        let text = kubectl(&server, &["describe", "pod", "polite"]);
        // Upstream's wording: the diagnosis, then DefaultPreemption's reason for not preempting.
        let wanted =
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never.";
        text.contains(wanted).then_some(()).ok_or(text)
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(placements(&server, "low").len(), 2, "preemptionPolicy: Never must not evict");
    assert_eq!(field(&server, "polite", ".status.nominatedNodeName"), "");
    kubectl(&server, &["delete", "pod", "polite"]);

    pod(&server, "urgent", "{app: high}", "1", "  priorityClassName: high\n");
    let node = eventually("the urgent pod to be nominated", || {
        let node = field(&server, "urgent", ".status.nominatedNodeName");
        (!node.is_empty()).then_some(node).ok_or_default()
    });
    assert_eq!(node, "hollow-node-0");
    eventually("one low-priority victim deleted", || {
        let left = placements(&server, "low");
        (left.len() == 1).then_some(()).ok_or_else(|| format!("{left:?}"))
    });
    let events = kubectl(&server, &["get", "events", "--field-selector", "reason=Preempted", "-o", "json"]);
    let messages: Vec<String> = json(&events)["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert!(messages[0].contains("on node hollow-node-0"), "{messages:?}");
    assert_eq!(bound_node(&server, "urgent"), "hollow-node-0");
    eventually("the urgent pod Running", || {
        let phase = field(&server, "urgent", ".status.phase");
        (phase == "Running").then_some(()).ok_or(phase)
    });
}

/// Preemption weighs what removing pods changes for the plugins that look at other pods: a
/// high-priority pod whose required anti-affinity refuses the only node (a lower-priority pod
/// there matches it) preempts that pod, as upstream's InterPodAffinity lets the dry run see the
/// node without it. The node has room to spare, so only the anti-affinity stands in the way.
#[test]
fn a_pod_preempts_the_lower_priority_pod_its_anti_affinity_refuses() {
    let server = hollow("1", &["--hollow-node-cpu", "4"]);
    kubectl_stdin(&server, &["apply", "-f", "-"], LOW_AND_HIGH);
    pod(&server, "old-db", "{app: db}", "100m", "  priorityClassName: low\n");
    assert_eq!(bound_node(&server, "old-db"), "hollow-node-0");
    let alone = "  priorityClassName: high
  affinity:
    podAntiAffinity:
      requiredDuringSchedulingIgnoredDuringExecution:
      - labelSelector: {matchLabels: {app: db}}
        topologyKey: kubernetes.io/hostname
";
    pod(&server, "new-db", "{app: db-primary}", "100m", alone);
    eventually("the lower-priority pod preempted", || {
        let left = placements(&server, "db");
        left.is_empty().then_some(()).ok_or_else(|| format!("{left:?}"))
    });
    assert_eq!(bound_node(&server, "new-db"), "hollow-node-0");
}

/// Kubernetes docs, "Pod Scheduling Readiness": a pod created with scheduling gates shows
/// `SchedulingGated` and is not scheduled while any gate is left; gates can be removed one by one
/// but not added; once the last goes, the pod is scheduled.
#[test]
fn a_gated_pod_waits_until_its_last_scheduling_gate_is_removed() {
    let server = hollow("2", &[]);
    let gates = "  schedulingGates:\n  - name: example.com/foo\n  - name: example.com/bar\n";
    pod(&server, "test-pod", "{app: gated}", "100m", gates);
    let table = kubectl(&server, &["get", "pod", "test-pod"]);
    assert!(table.lines().nth(1).is_some_and(|row| row.contains("SchedulingGated")), "{table}");
    // A pod created later is scheduled: the scheduler has passed the gated one by.
    pod(&server, "later", "{app: free}", "100m", "");
    bound_node(&server, "later");
    assert_eq!(field(&server, "test-pod", ".spec.nodeName"), "", "still gated");
    let events = kubectl(&server, &["get", "events", "--field-selector", "involvedObject.name=test-pod", "-o", "name"]);
    assert_eq!(events, "", "the scheduler never tried the gated pod");
    let added = kubectl_fails(
        &server,
        &[
            "patch",
            "pod",
            "test-pod",
            "--type=json",
            "-p",
            r#"[{"op": "add", "path": "/spec/schedulingGates/-", "value": {"name": "example.com/baz"}}]"#,
        ],
        None,
    );
    assert!(
        added.stderr.contains("only deletion is allowed, but found new scheduling gate 'example.com/baz'"),
        "{}",
        added.stderr
    );
    kubectl(
        &server,
        &["patch", "pod", "test-pod", "--type=json", "-p", r#"[{"op": "remove", "path": "/spec/schedulingGates/0"}]"#],
    );
    assert_eq!(field(&server, "test-pod", ".spec.schedulingGates[*].name"), "example.com/bar");
    pod(&server, "later-still", "{app: free}", "100m", "");
    bound_node(&server, "later-still");
    assert_eq!(field(&server, "test-pod", ".spec.nodeName"), "", "one gate left still holds it");
    kubectl(
        &server,
        &["patch", "pod", "test-pod", "--type=json", "-p", r#"[{"op": "remove", "path": "/spec/schedulingGates"}]"#],
    );
    bound_node(&server, "test-pod");
    eventually("the released pod Running", || {
        let phase = field(&server, "test-pod", ".status.phase");
        (phase == "Running").then_some(()).ok_or(phase)
    });
}
