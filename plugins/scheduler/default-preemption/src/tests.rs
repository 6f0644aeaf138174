//! Table tests; the behaviour follows Kubernetes docs, "Pod Priority and Preemption"
//! ("Preemption", "Non-preempting PriorityClass", "`PodDisruptionBudget` is supported, but not
//! guaranteed") and upstream's candidate order.

use super::{
    Candidate, DefaultPreemption, NEVER_REASON, NO_VICTIMS_REASON, candidates_to_examine, ineligible, pick,
    select_victims, split_by_budget,
};
use capstan_plugin_sdk::scheduler::{
    Code, DisruptionBudget, Label, NodeInfo, NodeStatus, Nodes, PodInfo, PodSummary, SchedulerPlugin, Status, host,
    resources,
};
use std::rc::Rc;

fn victim(name: &str, priority: i32, cpu: i64, app: &str) -> PodSummary {
    PodSummary {
        namespace: "default".to_owned(),
        name: name.to_owned(),
        uid: name.to_owned(),
        labels: vec![Label { key: "app".to_owned(), value: app.to_owned() }],
        priority,
        affinity: None,
        requests: resources(&[("cpu", cpu)]),
        host_ports: Vec::new(),
        terminating: false,
    }
}

/// A node with 4 CPUs and `pods`.
fn node(id: u32, pods: Vec<PodSummary>) -> NodeInfo {
    let mut node = NodeInfo::named(id, &format!("n{id}"));
    node.allocatable = resources(&[("cpu", 4000)]);
    node.pods = pods;
    node
}

/// The dry run: the pod (needing `need` milli-CPU) fits when the pods left leave room.
fn cpu_fits(nodes: &Nodes, need: i64) -> impl Fn(u32, &[String]) -> bool + '_ {
    move |id, removed| {
        nodes.get(id).is_some_and(|n| {
            let used: i64 =
                n.pods.iter().filter(|p| !removed.contains(&p.uid)).map(|p| p.requests[0].milli_value).sum();
            used + need <= n.allocatable("cpu")
        })
    }
}

fn names(candidate: &Candidate) -> Vec<&str> {
    candidate.victims.iter().map(|p| p.name.as_str()).collect()
}

#[test]
fn only_as_many_lower_priority_pods_as_needed_are_victims() {
    let nodes = Nodes::from_nodes([node(
        0,
        vec![victim("low-a", 10, 1000, "a"), victim("low-b", 20, 1000, "a"), victim("high", 1000, 2000, "a")],
    )]);
    let fits = cpu_fits(&nodes, 1500);
    let candidate = nodes.get(0).and_then(|n| select_victims(n, 100, &[], &fits));
    // Removing both low pods frees 2 CPUs; low-b (higher priority) is reprieved first but the
    // pod then lacks room, so both go… unless one suffices: 1.5 CPUs need both 1-CPU pods.
    assert_eq!(candidate.as_ref().map(names), Some(vec!["low-b", "low-a"]));
    let fits = cpu_fits(&nodes, 1000);
    let candidate = nodes.get(0).and_then(|n| select_victims(n, 100, &[], &fits));
    assert_eq!(candidate.as_ref().map(names), Some(vec!["low-a"]), "the higher of the two is reprieved");
    let fits = cpu_fits(&nodes, 3000);
    assert!(nodes.get(0).and_then(|n| select_victims(n, 100, &[], &fits)).is_none(), "high is never a victim");
}

fn budget(app: &str, allowed: i32) -> DisruptionBudget {
    DisruptionBudget {
        namespace: "default".to_owned(),
        name: format!("pdb-{app}"),
        selector: Some(format!(r#"{{"matchLabels": {{"app": "{app}"}}}}"#)),
        disruptions_allowed: allowed,
    }
}

#[test]
fn budgets_split_pods_counting_allowed_disruptions_down() {
    let pods = vec![victim("p1", 5, 1, "db"), victim("p2", 4, 1, "db"), victim("p3", 3, 1, "web")];
    let (violating, fine) = split_by_budget(pods, &[budget("db", 1)]);
    let names = |pods: &[PodSummary]| pods.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
    assert_eq!((names(&violating), names(&fine)), (vec!["p2".to_owned()], vec!["p1".to_owned(), "p3".to_owned()]));
}

#[test]
fn candidates_are_ordered_as_upstream() {
    let c = |node, victims: &[(i32, bool)]| Candidate {
        node,
        victims: victims.iter().map(|(p, _)| victim("v", *p, 0, "a")).collect(),
        pdb_violations: victims.iter().filter(|(_, v)| *v).count(),
    };
    let cases: Vec<(Vec<Candidate>, u32, &str)> = vec![
        (vec![c(0, &[(1, true)]), c(1, &[(5, false), (5, false)])], 1, "fewest PDB violations first"),
        (vec![c(0, &[(9, false)]), c(1, &[(3, false), (2, false)])], 1, "then the lowest highest priority"),
        (vec![c(0, &[(3, false), (3, false)]), c(1, &[(3, false), (1, false)])], 1, "then the smallest sum"),
        (vec![c(0, &[(3, false)]), c(1, &[(3, false)])], 0, "then the first"),
    ];
    for (candidates, expected, why) in cases {
        assert_eq!(pick(&candidates).map(|c| c.node), Some(expected), "{why}");
    }
    assert_eq!((candidates_to_examine(50), candidates_to_examine(5000)), (50, 500));
}

struct CpuHost(Nodes, i64);

impl host::HostView for CpuHost {
    fn namespace_labels(&self, _: &str) -> Option<Vec<Label>> {
        None
    }
    fn disruption_budgets(&self, _: &str) -> Vec<DisruptionBudget> {
        vec![budget("protected", 0)]
    }
    fn workload_selectors(&self, _: &str, _: &[Label]) -> Vec<String> {
        Vec::new()
    }
    fn fits_without(&self, node: u32, removed: &[String]) -> Result<(), Vec<String>> {
        if cpu_fits(&self.0, self.1)(node, removed) { Ok(()) } else { Err(vec!["Insufficient cpu".to_owned()]) }
    }
}

#[test]
fn post_filter_prefers_the_node_without_budget_violations_and_respects_never() {
    let nodes = || {
        Nodes::from_nodes([
            node(0, vec![victim("guarded", 0, 4000, "protected")]),
            node(1, vec![victim("free", 0, 4000, "free")]),
            node(2, vec![victim("important", 500, 4000, "free")]),
        ])
    };
    host::set_native(Some(Rc::new(CpuHost(nodes(), 2000))));
    let filtered: Vec<NodeStatus> = [(0, Code::Unschedulable), (1, Code::Unschedulable), (2, Code::Unschedulable)]
        .into_iter()
        .map(|(node, code)| NodeStatus { node, status: Status::new(code, vec!["Insufficient cpu".to_owned()]) })
        .collect();
    let mut pod = PodInfo::named("default", "urgent");
    pod.priority = 100;
    let result = DefaultPreemption.post_filter(&pod, &(), &filtered, &nodes());
    assert_eq!(result.status.code, Code::Success);
    assert_eq!(result.nominated_node, Some(1));
    assert_eq!(result.victims.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["free"]);

    let unresolvable: Vec<NodeStatus> = filtered
        .iter()
        .map(|f| NodeStatus { node: f.node, status: Status::new(Code::UnschedulableAndUnresolvable, vec![]) })
        .collect();
    let result = DefaultPreemption.post_filter(&pod, &(), &unresolvable, &nodes());
    assert_eq!(
        result.status.reasons,
        ["preemption: 0/3 nodes are available: 3 Preemption is not helpful for scheduling."],
        "unresolvable nodes are not candidates"
    );
    let mixed = [filtered[0].clone(), unresolvable[1].clone()];
    assert_eq!(
        super::no_candidates(3, &mixed),
        format!("0/3 nodes are available: 1 {NO_VICTIMS_REASON}, 1 Preemption is not helpful for scheduling.")
    );

    pod.object = r#"{"spec": {"preemptionPolicy": "Never"}}"#.to_owned();
    assert_eq!(ineligible(&pod, &nodes()), Some(NEVER_REASON));
    let result = DefaultPreemption.post_filter(&pod, &(), &filtered, &nodes());
    assert_eq!((result.status.code, result.nominated_node), (Code::Unschedulable, None));
    assert_eq!(result.status.reasons, [format!("preemption: {NEVER_REASON}")]);
    host::set_native(None);
}
