//! Table tests; the cluster and constraints follow Kubernetes docs, "Pod Topology Spread
//! Constraints" ("Example: one topology spread constraint", "Example: multiple topology spread
//! constraints", "nodeAffinityPolicy", `minDomains`).

use super::{
    Constraint, MISSING_LABEL_REASON, PodTopologySpread, SKEW_REASON, filter, filter_counts, normalize, score,
    score_state,
};
use capstan_plugin_sdk::scheduler::node_affinity::Required;
use capstan_plugin_sdk::scheduler::{
    Code, Label, NodeChange, NodeInfo, NodeUsage, Nodes, PodInfo, PodSummary, SchedulerPlugin, host, labels,
};
use std::rc::Rc;

fn foo_bar(name: &str) -> PodSummary {
    PodSummary {
        namespace: "default".to_owned(),
        name: name.to_owned(),
        uid: name.to_owned(),
        labels: labels(&[("foo", "bar")]),
        priority: 0,
        affinity: None,
        requests: Vec::new(),
        host_ports: Vec::new(),
        terminating: false,
    }
}

fn node(id: u32, zone: Option<&str>, pods: usize) -> NodeInfo {
    let name = format!("node{id}");
    let mut node = NodeInfo::named(id, &name);
    node.labels = labels(&[("kubernetes.io/hostname", &name)]);
    if let Some(zone) = zone {
        node.labels.extend(labels(&[("zone", zone)]));
    }
    node.pods = (0..pods).map(|i| foo_bar(&format!("{name}-{i}"))).collect();
    node
}

/// The documented cluster: zoneA = node1, node2; zoneB = node3, node4; one `foo: bar` pod on
/// each of node1..node3.
fn documented() -> Nodes {
    Nodes::from_nodes([
        node(1, Some("zoneA"), 1),
        node(2, Some("zoneA"), 1),
        node(3, Some("zoneB"), 1),
        node(4, Some("zoneB"), 0),
    ])
}

fn incoming(constraints: &str) -> PodInfo {
    let mut pod = PodInfo::named("default", "mypod");
    pod.labels = labels(&[("foo", "bar")]);
    pod.object = format!(r#"{{"spec": {{"topologySpreadConstraints": {constraints}}}}}"#);
    pod
}

fn plugin() -> PodTopologySpread {
    PodTopologySpread::configure("{}").unwrap_or_else(|e| panic!("{e}"))
}

fn fitting(pod: &PodInfo, nodes: &Nodes) -> Vec<String> {
    fitting_with(&plugin(), pod, nodes)
}

/// The nodes that fit `pod`, counted by `plugin`, which keeps what it counted per node.
fn fitting_with(plugin: &PodTopologySpread, pod: &PodInfo, nodes: &Nodes) -> Vec<String> {
    let (constraints, _) = plugin.constraints(pod, "DoNotSchedule").unwrap_or_default();
    let required = Required::of(pod).unwrap_or_default();
    let counted = filter_counts(pod, constraints, &required, nodes, &plugin.counted);
    let ids: Vec<u32> = nodes.iter().map(|n| n.id).collect();
    let misfits = filter(&counted, nodes, &ids);
    let mut names: Vec<String> =
        nodes.iter().filter(|n| misfits.iter().all(|m| m.node != n.id)).map(|n| n.name.clone()).collect();
    names.sort();
    names
}

const ZONE: &str = r#"{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
    "labelSelector": {"matchLabels": {"foo": "bar"}}}"#;
const HOST: &str = r#"{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule",
    "labelSelector": {"matchLabels": {"foo": "bar"}}}"#;

#[test]
fn one_zone_constraint_sends_the_pod_to_the_emptier_zone() {
    assert_eq!(fitting(&incoming(&format!("[{ZONE}]")), &documented()), ["node3", "node4"]);
}

#[test]
fn zone_and_node_constraints_leave_only_node4() {
    assert_eq!(fitting(&incoming(&format!("[{ZONE}, {HOST}]")), &documented()), ["node4"]);
}

#[test]
fn a_node_moved_to_another_zone_counts_there_on_the_next_cycle() {
    // One plugin throughout: what it counted per node is kept from cycle to cycle.
    let plugin = plugin();
    let fitting = |pod: &PodInfo, nodes: &Nodes| fitting_with(&plugin, pod, nodes);
    let pod = incoming(&format!("[{ZONE}]"));
    let mut nodes = documented();
    assert_eq!(fitting(&pod, &nodes), ["node3", "node4"]);
    // The same constraint from a namespace without those pods: every zone at 0.
    let mut elsewhere = pod.clone();
    elsewhere.namespace = "other".into();
    assert_eq!(fitting(&elsewhere, &nodes), ["node1", "node2", "node3", "node4"]);
    assert_eq!(fitting(&pod, &nodes), ["node3", "node4"]);
    // Two pods placed on node4 and gone again (usage only): zoneB 3 against zoneA 2, then back.
    let node4_with = |pods: usize| {
        let pods: Vec<PodSummary> = (0..pods).map(|i| foo_bar(&format!("node4-{i}"))).collect();
        NodeChange::Usage(NodeUsage {
            id: 4,
            requested: Vec::new(),
            pod_count: u32::try_from(pods.len()).unwrap_or(0),
            used_ports: Vec::new(),
            pods,
        })
    };
    nodes.apply(2, false, vec![node4_with(2)]);
    assert_eq!(fitting(&pod, &nodes), ["node1", "node2"]);
    nodes.apply(2, false, vec![node4_with(0)]);
    assert_eq!(fitting(&pod, &nodes), ["node3", "node4"]);
    // node1 (with its pod) moves to zoneB: zoneA 1, zoneB 2, so only zoneA's node2 fits.
    nodes.apply(2, false, vec![NodeChange::Upsert(node(1, Some("zoneB"), 1))]);
    assert_eq!(fitting(&pod, &nodes), ["node2"]);
    // A change of usage only: node2's pod goes; zoneA 0, zoneB 2, node2 still the only fit.
    nodes.apply(
        3,
        false,
        vec![NodeChange::Usage(NodeUsage {
            id: 2,
            requested: Vec::new(),
            pod_count: 0,
            used_ports: Vec::new(),
            pods: Vec::new(),
        })],
    );
    assert_eq!(fitting(&pod, &nodes), ["node2"]);
    // node2 removed: zoneA has no node left, so zoneB's 2 is the minimum and all of it fits.
    nodes.apply(4, false, vec![NodeChange::Remove(2)]);
    assert_eq!(fitting(&pod, &nodes), ["node1", "node3", "node4"]);
}

#[test]
fn reasons_are_upstreams() {
    let nodes = Nodes::from_nodes([node(1, Some("zoneA"), 2), node(2, Some("zoneB"), 0), node(5, None, 0)]);
    let pod = incoming(&format!("[{ZONE}]"));
    let (constraints, _) = plugin().constraints(&pod, "DoNotSchedule").unwrap_or_default();
    let counted = filter_counts(&pod, constraints, &Required::default(), &nodes, &plugin().counted);
    let misfits: Vec<_> =
        filter(&counted, &nodes, &[1, 2, 5]).into_iter().map(|m| (m.node, m.status.code, m.status.reasons)).collect();
    assert_eq!(
        misfits,
        [
            (1, Code::Unschedulable, vec![SKEW_REASON.to_owned()]),
            (5, Code::UnschedulableAndUnresolvable, vec![MISSING_LABEL_REASON.to_owned()])
        ]
    );
}

#[test]
fn min_domains_counts_missing_domains_as_empty() {
    // Two zones with one pod each: with minDomains 3 the global minimum is 0, so a third pod
    // in either zone would make skew 2 > 1.
    let nodes = Nodes::from_nodes([node(1, Some("zoneA"), 1), node(2, Some("zoneB"), 1)]);
    let with_min = ZONE.replace(r#""maxSkew": 1"#, r#""maxSkew": 1, "minDomains": 3"#);
    assert!(fitting(&incoming(&format!("[{with_min}]")), &nodes).is_empty());
    assert_eq!(fitting(&incoming(&format!("[{ZONE}]")), &nodes), ["node1", "node2"]);
}

#[test]
fn node_affinity_policy_decides_which_nodes_count() {
    // zoneC's node is excluded by the pod's node selector: with Honor its pods (and domain)
    // do not count, so zoneB (0) is the minimum; with Ignore zoneC's 0 counts too.
    let mut c = node(6, Some("zoneC"), 0);
    c.labels.extend(labels(&[("disk", "hdd")]));
    let mut nodes: Vec<NodeInfo> = documented().iter().cloned().collect();
    nodes.sort_by_key(|n| n.id);
    for n in &mut nodes {
        n.labels.extend(labels(&[("disk", "ssd")]));
    }
    nodes[2].pods.push(foo_bar("extra"));
    nodes.push(c);
    let nodes = Nodes::from_nodes(nodes);
    let mut honor = incoming(&format!("[{ZONE}]"));
    honor.node_selector = labels(&[("disk", "ssd")]);
    // zoneA 2, zoneB 2 (node3 has 2, node4 0): both within skew 1 of the minimum 2 (node6 is
    // left to NodeAffinity to refuse).
    assert_eq!(fitting(&honor, &nodes).len(), 5);
    let ignoring = ZONE.replace(r#""maxSkew": 1"#, r#""maxSkew": 1, "nodeAffinityPolicy": "Ignore""#);
    let mut ignore = incoming(&format!("[{ignoring}]"));
    ignore.node_selector = labels(&[("disk", "ssd")]);
    // zoneC (0) now counts: zones A and B at 2 would exceed the skew; only zoneC's node passes.
    assert_eq!(fitting(&ignore, &nodes), ["node6"]);
}

#[test]
fn scores_prefer_the_domain_with_fewer_matching_pods() {
    let soft = ZONE.replace("DoNotSchedule", "ScheduleAnyway");
    let pod = incoming(&format!("[{soft}]"));
    let nodes = documented();
    let (constraints, own) = plugin().constraints(&pod, "ScheduleAnyway").unwrap_or_default();
    let feasible: Vec<&NodeInfo> = [1, 2, 3, 4].iter().filter_map(|&id| nodes.get(id)).collect();
    let state = score_state(&pod, constraints, own, &Required::default(), &feasible, &nodes);
    let mut scores = score(&state, &nodes, &[1, 2, 3, 4]).unwrap_or_default();
    // ln(2 + 2) = 1.386: zoneA 2 pods → round(2.77) = 3; zoneB 1 pod → round(1.39) = 1.
    assert_eq!(scores, [3, 3, 1, 1]);
    normalize(&mut scores);
    assert_eq!(scores, [33, 33, 100, 100]);
}

struct OwnedByReplicaSet;

impl host::HostView for OwnedByReplicaSet {
    fn namespace_labels(&self, _: &str) -> Option<Vec<Label>> {
        None
    }
    fn disruption_budgets(&self, _: &str) -> Vec<capstan_plugin_sdk::scheduler::DisruptionBudget> {
        Vec::new()
    }
    fn workload_selectors(&self, _: &str, labels: &[Label]) -> Vec<String> {
        if labels.iter().any(|l| l.key == "foo") {
            vec![r#"{"matchLabels": {"foo": "bar"}}"#.to_owned()]
        } else {
            Vec::new()
        }
    }
    fn fits_without(&self, _: u32, _: &[String]) -> Result<(), Vec<String>> {
        Ok(())
    }
}

#[test]
fn pods_without_constraints_get_the_system_defaults_from_their_workload() {
    let mut pod = PodInfo::named("default", "replica");
    pod.labels = labels(&[("foo", "bar")]);
    assert!(plugin().constraints(&pod, "ScheduleAnyway").is_ok_and(|(c, _)| c.is_empty()), "no workload, no default");
    host::set_native(Some(Rc::new(OwnedByReplicaSet)));
    let got = plugin().constraints(&pod, "ScheduleAnyway");
    host::set_native(None);
    let (constraints, own) = got.unwrap_or_default();
    let summary: Vec<(String, i64)> = constraints.iter().map(|c: &Constraint| (c.key.clone(), c.max_skew)).collect();
    assert_eq!(summary, [("topology.kubernetes.io/zone".to_owned(), 5), ("kubernetes.io/hostname".to_owned(), 3)]);
    assert!(!own);
    assert!(constraints.iter().all(|c| c.selector.as_ref().is_some_and(|s| s.matches(&pod.labels))));
    assert!(plugin().constraints(&pod, "DoNotSchedule").is_ok_and(|(c, _)| c.is_empty()), "defaults never filter");
}

#[test]
fn match_label_keys_narrow_the_selector_to_the_pods_revision() {
    let keyed = ZONE.replace(r#""labelSelector""#, r#""matchLabelKeys": ["pod-template-hash"], "labelSelector""#);
    let mut pod = incoming(&format!("[{keyed}]"));
    pod.labels.extend(labels(&[("pod-template-hash", "v2")]));
    // The existing foo=bar pods lack pod-template-hash=v2: no pod counts, every zone fits.
    assert_eq!(fitting(&pod, &documented()).len(), 4);
}

#[test]
fn own_constraints_are_read_wherever_the_spec_puts_them() {
    let constraint = r#"{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}"#;
    let cases = [
        (r#"{"metadata": {"name": "p"}, "spec": {}}"#.to_owned(), Ok(0)),
        (r#"{"spec": {"topologySpreadConstraints": null}}"#.to_owned(), Ok(0)),
        // After containers whose strings hold brackets and braces, which must not end the scan.
        (
            format!(
                r#"{{"metadata": {{"annotations": {{"a": "}} ]"}}}}, "spec": {{"containers": [{{"name": "x", "args": ["{{", "]"]}}], "topologySpreadConstraints": [{constraint}, {constraint}]}}}}"#
            ),
            Ok(2),
        ),
        (r#"{"spec": {"topologySpreadConstraints": [{"maxSkew": "one"}]}}"#.to_owned(), Err(())),
        (r#"{"spec": {"topologySpreadConstraints": "#.to_owned(), Err(())),
    ];
    for (object, expected) in cases {
        let got = super::own_constraints(&object).map(|c| c.len()).map_err(drop);
        assert_eq!(got, expected, "{object}");
    }
}

#[test]
fn each_pod_gets_its_own_constraints_however_often_it_is_asked() {
    let plugin = plugin();
    let mut spread = incoming(&format!("[{ZONE}]"));
    spread.uid = "a".to_owned();
    let mut plain = incoming("[]");
    plain.uid = "b".to_owned();
    let own = |pod: &PodInfo| plugin.constraints(pod, "DoNotSchedule").map(|(c, own)| (c.len(), own)).ok();
    for (pod, expected) in [(&spread, (1, true)), (&spread, (1, true)), (&plain, (0, false)), (&spread, (1, true))] {
        assert_eq!(own(pod), Some(expected), "{}", pod.uid);
    }
}
