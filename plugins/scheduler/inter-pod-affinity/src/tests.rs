//! Table tests; the cases follow Kubernetes docs, "Assigning Pods to Nodes" → "Inter-pod affinity
//! and anti-affinity" (the `security: S1` example and the redis/web-store co-location example).

use super::{
    AFFINITY_REASON, ANTI_AFFINITY_REASON, Affinity, EXISTING_ANTI_AFFINITY_REASON, InterPodAffinity, Kept, Namespaces,
    filter, filter_state, normalize, score,
};
use capstan_plugin_sdk::scheduler::{
    Code, Label, NodeChange, NodeInfo, NodeUsage, Nodes, PodInfo, PodSummary, host, labels,
};
use std::cell::Cell;
use std::rc::Rc;

fn node(id: u32, zone: &str, pods: Vec<PodSummary>) -> NodeInfo {
    let mut node = NodeInfo::named(id, &format!("n{id}"));
    let host_name = format!("n{id}");
    node.labels = labels(&[("topology.kubernetes.io/zone", zone), ("kubernetes.io/hostname", &host_name)]);
    node.pods = pods;
    node
}

fn existing(namespace: &str, name: &str, pairs: &[(&str, &str)], affinity: Option<&str>) -> PodSummary {
    PodSummary {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        uid: name.to_owned(),
        labels: labels(pairs),
        priority: 0,
        affinity: affinity.map(str::to_owned),
        requests: Vec::new(),
        host_ports: Vec::new(),
        terminating: false,
    }
}

fn pod(pairs: &[(&str, &str)], affinity: &str) -> (PodInfo, Affinity) {
    let mut pod = PodInfo::named("default", "incoming");
    pod.labels = labels(pairs);
    pod.affinity = Some(affinity.to_owned());
    let parsed = serde_json::from_str(affinity).unwrap_or_default();
    (pod, parsed)
}

fn verdicts(pod: &PodInfo, affinity: &Affinity, nodes: &Nodes) -> Vec<(String, Code, Vec<String>)> {
    let state = filter_state(pod, affinity, nodes, &Namespaces::default(), &Kept::default());
    let ids: Vec<u32> = nodes.iter().map(|n| n.id).collect();
    let misfits = filter(affinity, &state, nodes, &ids);
    let mut out: Vec<_> = nodes
        .iter()
        .map(|n| match misfits.iter().find(|m| m.node == n.id) {
            Some(m) => (n.name.clone(), m.status.code, m.status.reasons.clone()),
            None => (n.name.clone(), Code::Success, Vec::new()),
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

const S1_AFFINITY: &str = r#"{"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
    {"labelSelector": {"matchExpressions": [{"key": "security", "operator": "In", "values": ["S1"]}]},
     "topologyKey": "topology.kubernetes.io/zone"}]},
  "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm":
    {"labelSelector": {"matchExpressions": [{"key": "security", "operator": "In", "values": ["S2"]}]},
     "topologyKey": "topology.kubernetes.io/zone"}}]}}"#;

#[test]
fn required_affinity_needs_a_matching_pod_in_the_zone() {
    let nodes = Nodes::from_nodes([
        node(0, "a", vec![existing("default", "s1", &[("security", "S1")], None)]),
        node(1, "a", vec![]),
        node(2, "b", vec![existing("default", "s2", &[("security", "S2")], None)]),
        node(3, "c", vec![existing("other", "s1-elsewhere", &[("security", "S1")], None)]),
    ]);
    let (incoming, affinity) = pod(&[], S1_AFFINITY);
    let got = verdicts(&incoming, &affinity, &nodes);
    let ok = |n: &str| (n.to_owned(), Code::Success, vec![]);
    let refused = |n: &str| (n.to_owned(), Code::UnschedulableAndUnresolvable, vec![AFFINITY_REASON.to_owned()]);
    assert_eq!(got, [ok("n0"), ok("n1"), refused("n2"), refused("n3")], "a pod in another namespace does not count");
    let plugin = InterPodAffinity::new(1);
    let state = plugin.score_state(&incoming, &affinity, &nodes, &Namespaces::default());
    let mut scores = score(&state, &nodes, &[0, 1, 2, 3]);
    assert_eq!(scores, [0, 0, -100, 0], "the preferred anti-affinity to S2 scores zone b down");
    normalize(&mut scores);
    assert_eq!(scores, [100, 100, 0, 100]);
}

#[test]
fn a_pod_matching_its_own_affinity_may_start_the_first_domain() {
    let affinity = r#"{"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "store"}}, "topologyKey": "kubernetes.io/hostname"}]}}"#;
    let nodes = Nodes::from_nodes([node(0, "a", vec![]), node(1, "a", vec![])]);
    let (incoming, parsed) = pod(&[("app", "store")], affinity);
    assert!(verdicts(&incoming, &parsed, &nodes).iter().all(|v| v.1 == Code::Success));
    let (other, parsed) = pod(&[("app", "web")], affinity);
    assert!(verdicts(&other, &parsed, &nodes).iter().all(|v| v.1 == Code::UnschedulableAndUnresolvable));
}

const REDIS_ANTI: &str = r#"{"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
    {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["store"]}]},
     "topologyKey": "kubernetes.io/hostname"}]}}"#;

#[test]
fn anti_affinity_spreads_replicas_one_per_node_both_ways() {
    let nodes = Nodes::from_nodes([
        node(0, "a", vec![existing("default", "redis-1", &[("app", "store")], Some(REDIS_ANTI))]),
        node(1, "a", vec![existing("default", "web-1", &[("app", "web-store")], None)]),
        node(2, "b", vec![]),
    ]);
    let (redis, parsed) = pod(&[("app", "store")], REDIS_ANTI);
    let got = verdicts(&redis, &parsed, &nodes);
    assert_eq!(got[0], ("n0".to_owned(), Code::Unschedulable, vec![ANTI_AFFINITY_REASON.to_owned()]));
    assert_eq!((got[1].1, got[2].1), (Code::Success, Code::Success));
    // A pod without terms is still refused by the existing pod's anti-affinity (symmetry).
    let (plain, parsed) = pod(&[("app", "store")], "{}");
    let got = verdicts(&plain, &parsed, &nodes);
    assert_eq!(got[0], ("n0".to_owned(), Code::Unschedulable, vec![EXISTING_ANTI_AFFINITY_REASON.to_owned()]));
    let (unrelated, parsed) = pod(&[("app", "other")], "{}");
    assert!(verdicts(&unrelated, &parsed, &nodes).iter().all(|v| v.1 == Code::Success));
}

#[test]
fn existing_pods_terms_follow_their_nodes_across_cycles() {
    let kept = Kept::default();
    let (plain, parsed) = pod(&[("app", "store")], "{}");
    let refused = |nodes: &Nodes| {
        let state = filter_state(&plain, &parsed, nodes, &Namespaces::default(), &kept);
        filter(&parsed, &state, nodes, &[0, 1]).iter().map(|m| m.node).collect::<Vec<_>>()
    };
    let redis = |uid: &str, affinity| existing("default", uid, &[("app", "store")], affinity);
    let mut nodes = Nodes::from_nodes([node(0, "a", vec![redis("r1", Some(REDIS_ANTI))]), node(1, "a", vec![])]);
    assert_eq!(refused(&nodes), [0]);
    // r1 goes and r2, without terms, takes its place (a change of usage): nothing refuses the
    // pod any more, though the same cache parsed r1's terms the cycle before.
    let usage =
        NodeUsage { id: 0, requested: Vec::new(), pod_count: 1, used_ports: Vec::new(), pods: vec![redis("r2", None)] };
    nodes.apply(2, false, vec![NodeChange::Usage(usage)]);
    assert!(refused(&nodes).is_empty());
    // r3 with terms lands on n1 (the node itself changed).
    nodes.apply(3, false, vec![NodeChange::Upsert(node(1, "a", vec![redis("r3", Some(REDIS_ANTI))]))]);
    assert_eq!(refused(&nodes), [1]);
    // After a reset the nodes start over; what was known before must not be taken for them
    // (three upserts: were revisions counted afresh, n0's would be the 3 it had with r2).
    let empty = || NodeChange::Upsert(node(1, "a", vec![]));
    nodes.apply(4, true, vec![empty(), empty(), NodeChange::Upsert(node(0, "a", vec![redis("r1", Some(REDIS_ANTI))]))]);
    assert_eq!(refused(&nodes), [0]);
}

/// Namespace `team-a` labelled `team=a` (while the flag is set); every other one unlabelled.
struct Labelled(Cell<bool>);

impl host::HostView for Labelled {
    fn namespace_labels(&self, name: &str) -> Option<Vec<Label>> {
        Some(if name == "team-a" && self.0.get() { labels(&[("team", "a")]) } else { Vec::new() })
    }
    fn disruption_budgets(&self, _: &str) -> Vec<capstan_plugin_sdk::scheduler::DisruptionBudget> {
        Vec::new()
    }
    fn workload_selectors(&self, _: &str, _: &[Label]) -> Vec<String> {
        Vec::new()
    }
    fn fits_without(&self, _: u32, _: &[String]) -> Result<(), Vec<String>> {
        Ok(())
    }
}

#[test]
fn namespaces_and_namespace_selectors_widen_the_term() {
    host::set_native(Some(Rc::new(Labelled(Cell::new(true)))));
    let by_list = r#"{"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"db": "x"}}, "namespaces": ["team-b"], "topologyKey": "kubernetes.io/hostname"}]}}"#;
    let by_selector = r#"{"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"db": "x"}}, "namespaceSelector": {"matchLabels": {"team": "a"}},
         "topologyKey": "kubernetes.io/hostname"}]}}"#;
    let every = r#"{"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"db": "x"}}, "namespaceSelector": {}, "topologyKey": "kubernetes.io/hostname"}]}}"#;
    let nodes = Nodes::from_nodes([
        node(0, "a", vec![existing("team-a", "db-a", &[("db", "x")], None)]),
        node(1, "a", vec![existing("team-b", "db-b", &[("db", "x")], None)]),
        node(2, "a", vec![existing("default", "db", &[("db", "y")], None)]),
    ]);
    let cases = [(by_list, [false, true, false]), (by_selector, [true, false, false]), (every, [true, true, false])];
    for (affinity, expected) in cases {
        let (incoming, parsed) = pod(&[], affinity);
        let got: Vec<bool> = verdicts(&incoming, &parsed, &nodes).iter().map(|v| v.1 == Code::Success).collect();
        assert_eq!(got, expected, "{affinity}");
    }
    host::set_native(None);
}

#[test]
fn existing_pods_required_affinity_scores_at_the_hard_weight() {
    let wants_web = r#"{"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}"#;
    let nodes = Nodes::from_nodes([
        node(0, "a", vec![existing("default", "cache", &[("app", "cache")], Some(wants_web))]),
        node(1, "b", vec![]),
    ]);
    let (web, parsed) = pod(&[("app", "web")], "{}");
    let plugin = InterPodAffinity::new(5);
    let state = plugin.score_state(&web, &parsed, &nodes, &Namespaces::default());
    assert_eq!(score(&state, &nodes, &[0, 1]), [5, 0]);
}

/// The plugin keeps the last decoded Filter state: a different state must never be mistaken for it.
#[test]
fn cached_filter_state_follows_the_bytes() {
    use capstan_plugin_sdk::scheduler::SchedulerPlugin;
    use capstan_plugin_sdk::scheduler::state::encode;
    let plugin = InterPodAffinity::new(1);
    let state = |value: &str| {
        let filter = super::FilterState {
            anti: [("kubernetes.io/hostname".to_owned(), vec![(value.to_owned(), 1)])].into(),
            ..super::FilterState::default()
        };
        encode(b'f', &filter).unwrap_or_default()
    };
    let (a, b) = (state("n1"), state("n2"));
    let pod = PodInfo::named("default", "p");
    for (bytes, want) in [(&a, "n1"), (&a, "n1"), (&b, "n2"), (&a, "n1")] {
        let cycle = plugin.cycle(&pod, bytes).unwrap_or_default();
        let values: Vec<&String> =
            cycle.filter.values().anti.values().flat_map(|v| v.iter().map(|(value, _)| value)).collect();
        assert_eq!(values, [want]);
    }
}

/// PreFilter leaves its counts for Filter in the same instance; a state handed again after the
/// nodes were relabelled is numbered afresh, not read with the old numbering.
#[test]
fn filter_reads_prefilters_counts_as_the_nodes_are_now() {
    use capstan_plugin_sdk::scheduler::SchedulerPlugin;
    let zone_anti = REDIS_ANTI.replace("kubernetes.io/hostname", "topology.kubernetes.io/zone");
    let redis = existing("default", "r1", &[("app", "store")], Some(&zone_anti));
    let mut nodes = Nodes::from_nodes([node(0, "a", vec![redis]), node(1, "a", vec![]), node(2, "b", vec![])]);
    let plugin = InterPodAffinity::new(1);
    let (pod, _) = pod(&[("app", "store")], "{}");
    let state = plugin.pre_filter(&pod, &nodes).state;
    let refused = |nodes: &Nodes| {
        let cycle = plugin.cycle(&pod, &state).unwrap_or_default();
        plugin.filter_batch(&pod, &cycle, nodes, &[0, 1, 2]).iter().map(|m| m.node).collect::<Vec<_>>()
    };
    assert_eq!(refused(&nodes), [0, 1], "zone a holds the pod whose anti-affinity refuses it");
    nodes.apply(2, false, vec![NodeChange::Upsert(node(1, "b", vec![]))]);
    assert_eq!(refused(&nodes), [0], "n1 moved to zone b");
}

/// What each node's pods add is kept per way of matching: a pod matching differently, a change on
/// one node, and the labels of the pod's namespace (what existing pods' namespace selectors
/// read) all count afresh.
#[test]
fn kept_counts_follow_the_incoming_pod_its_namespace_and_changed_nodes() {
    let team = Rc::new(Labelled(Cell::new(true)));
    host::set_native(Some(team.clone()));
    let team_anti = r#"{"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "store"}}, "namespaceSelector": {"matchLabels": {"team": "a"}},
         "topologyKey": "kubernetes.io/hostname"}]}}"#;
    let wants_web = r#"{"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}"#;
    let avoid_web = r#"{"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 10,
        "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": "topology.kubernetes.io/zone"}}]}}"#;
    let mut nodes = Nodes::from_nodes([
        node(0, "a", vec![existing("other", "guard", &[("app", "guard")], Some(team_anti))]),
        node(1, "a", vec![existing("default", "cache", &[("app", "cache")], Some(wants_web))]),
        node(2, "b", vec![existing("default", "web-1", &[("app", "web")], None)]),
    ]);
    let plugin = InterPodAffinity::new(1);
    let namespaces = || Namespaces::default();
    let refused = |pod: &PodInfo, affinity: &Affinity, nodes: &Nodes| {
        let state = filter_state(pod, affinity, nodes, &namespaces(), &plugin.kept);
        filter(affinity, &state, nodes, &[0, 1, 2]).iter().map(|m| m.node).collect::<Vec<_>>()
    };
    let (mut store, plain) = pod(&[("app", "store")], "{}");
    store.namespace = "team-a".to_owned();
    assert_eq!(refused(&store, &plain, &nodes), [0], "guard's anti-affinity selects the pod's namespace");
    team.0.set(false);
    assert!(refused(&store, &plain, &nodes).is_empty(), "the namespace lost the label guard selects");
    team.0.set(true);
    assert_eq!(refused(&store, &plain, &nodes), [0]);
    let (other, plain) = pod(&[("app", "other")], "{}");
    assert!(refused(&other, &plain, &nodes).is_empty(), "a pod guard does not select");

    let scores = |pod: &PodInfo, affinity: &Affinity, nodes: &Nodes| {
        score(&plugin.score_state(pod, affinity, nodes, &namespaces()), nodes, &[0, 1, 2])
    };
    let (web, avoiding) = pod(&[("app", "web")], avoid_web);
    assert_eq!(scores(&web, &avoiding, &nodes), [1, 1, -10], "cache wants web in zone a; web-1 is in zone b");
    let (plain_web, plain) = pod(&[("app", "web")], "{}");
    assert_eq!(scores(&plain_web, &plain, &nodes), [1, 1, 0], "without its own terms");
    assert_eq!(scores(&web, &avoiding, &nodes), [1, 1, -10]);
    // web-1 leaves n2 (a change of usage): zone b has nothing to avoid any more.
    let usage = NodeUsage { id: 2, requested: Vec::new(), pod_count: 0, used_ports: Vec::new(), pods: Vec::new() };
    nodes.apply(2, false, vec![NodeChange::Usage(usage)]);
    assert_eq!(scores(&web, &avoiding, &nodes), [1, 1, 0]);
    host::set_native(None);
}

/// PreFilter writes its numbered counts straight into the cycle state: another instance reading
/// that state must find what the values would have said, and filter alike.
#[test]
fn prefilters_state_reads_the_same_in_another_instance() {
    use capstan_plugin_sdk::scheduler::SchedulerPlugin;
    use capstan_plugin_sdk::scheduler::state::encode;
    let zone_anti = REDIS_ANTI.replace("kubernetes.io/hostname", "topology.kubernetes.io/zone");
    // The zone's key is counted first, the host's second: the state lists them in key order.
    let nodes = Nodes::from_nodes([
        node(0, "a", vec![existing("default", "r2", &[("app", "store")], Some(&zone_anti))]),
        node(1, "b", vec![existing("default", "r1", &[("app", "store")], Some(REDIS_ANTI))]),
        node(2, "a", vec![]),
        node(3, "c", vec![existing("default", "w1", &[("app", "web")], None)]),
        node(4, "c", vec![]),
    ]);
    let (web, parsed) = pod(&[("app", "store")], "{}");
    let (writer, reader) = (InterPodAffinity::new(1), InterPodAffinity::new(1));
    let state = writer.pre_filter(&web, &nodes).state;
    let numbered = filter_state(&web, &parsed, &nodes, &Namespaces::default(), &Kept::default());
    assert_eq!(state, encode(b'f', &numbered.values()).unwrap_or_default(), "written as its values");
    let refused = |plugin: &InterPodAffinity| {
        let cycle = plugin.cycle(&web, &state).unwrap_or_default();
        plugin.filter_batch(&web, &cycle, &nodes, &[0, 1, 2, 3, 4]).iter().map(|m| m.node).collect::<Vec<_>>()
    };
    assert_eq!(refused(&writer), [0, 1, 2], "r2's zone and r1's host refuse it");
    assert_eq!(refused(&reader), refused(&writer));
}
