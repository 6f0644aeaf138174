//! NodeAffinity (Filter, Score): a node fits when it carries every `spec.nodeSelector` label
//! and matches one of the required `nodeSelectorTerms`; among those, nodes matching more
//! preferred terms (by weight) score higher (Kubernetes docs, "Assigning Pods to Nodes").

pub use capstan_plugin_sdk::scheduler::node_affinity::{Requirement, Term};
use capstan_plugin_sdk::scheduler::{
    ExtensionPoints, NodeInfo, Nodes, PodInfo, PreFilterResult, SchedulerPlugin, Status, find_label, normalize_to_max,
};
use serde::Deserialize;

/// Upstream's reason, shown in `FailedScheduling` events.
pub const REASON: &str = "node(s) didn't match Pod's node affinity/selector";

/// `spec.affinity`, the part this plugin reads.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Affinity {
    /// `nodeAffinity`.
    #[serde(default)]
    pub node_affinity: Option<NodeAffinitySpec>,
}

/// `spec.affinity.nodeAffinity`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeAffinitySpec {
    /// Hard requirement: the node must match one term.
    #[serde(default)]
    pub required_during_scheduling_ignored_during_execution: Option<NodeSelector>,
    /// Soft preferences with weights.
    #[serde(default)]
    pub preferred_during_scheduling_ignored_during_execution: Vec<PreferredTerm>,
}

/// A `NodeSelector`: any of its terms matches (OR).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelector {
    /// The terms.
    #[serde(default)]
    pub node_selector_terms: Vec<Term>,
}

/// A `PreferredSchedulingTerm`.
#[derive(Debug, Deserialize)]
pub struct PreferredTerm {
    /// 1–100.
    pub weight: i64,
    /// The term.
    pub preference: Term,
}

/// The NodeAffinity plugin.
pub struct NodeAffinity;

impl SchedulerPlugin for NodeAffinity {
    type Cycle = Affinity;

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn cycle(&self, pod: &PodInfo, _state: &[u8]) -> Result<Affinity, Status> {
        match &pod.affinity {
            Some(json) => serde_json::from_str(json).map_err(|e| Status::error(format!("spec.affinity: {e}"))),
            None => Ok(Affinity::default()),
        }
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::PRE_FILTER
            | ExtensionPoints::FILTER
            | ExtensionPoints::PRE_SCORE
            | ExtensionPoints::SCORE
            | ExtensionPoints::NORMALIZE_SCORE
    }

    /// Skip, as upstream, when the pod has neither a node selector nor required node affinity.
    fn pre_filter(&self, pod: &PodInfo, _nodes: &Nodes) -> PreFilterResult {
        let status = match self.cycle(pod, &[]) {
            Ok(affinity) => {
                let required = affinity
                    .node_affinity
                    .as_ref()
                    .is_some_and(|a| a.required_during_scheduling_ignored_during_execution.is_some());
                if required || !pod.node_selector.is_empty() { Status::success() } else { Status::skip() }
            }
            Err(status) => status,
        };
        PreFilterResult { status, nodes: None, state: Vec::new() }
    }

    /// Skip, as upstream, when the pod has no preferred node affinity terms.
    fn pre_score(
        &self,
        _pod: &PodInfo,
        affinity: &Affinity,
        _nodes: &[&NodeInfo],
        _all: &Nodes,
    ) -> Result<Vec<u8>, Status> {
        let preferred = affinity
            .node_affinity
            .as_ref()
            .is_some_and(|a| !a.preferred_during_scheduling_ignored_during_execution.is_empty());
        if preferred { Ok(Vec::new()) } else { Err(Status::skip()) }
    }

    fn filter(&self, pod: &PodInfo, affinity: &Affinity, node: &NodeInfo) -> Status {
        if fits(pod, affinity, node) { Status::success() } else { Status::unresolvable(REASON) }
    }

    fn score(&self, _pod: &PodInfo, affinity: &Affinity, node: &NodeInfo) -> Result<i64, Status> {
        Ok(preferred_weight(affinity, node))
    }

    fn normalize_score(&self, _pod: &PodInfo, _cycle: &Affinity, scores: &mut [i64]) -> Result<(), Status> {
        normalize_to_max(scores, false);
        Ok(())
    }
}

/// Whether `node` satisfies the pod's node selector and required node affinity.
#[must_use]
pub fn fits(pod: &PodInfo, affinity: &Affinity, node: &NodeInfo) -> bool {
    let selector_ok = pod.node_selector.iter().all(|l| find_label(&node.labels, &l.key) == Some(l.value.as_str()));
    let required =
        affinity.node_affinity.as_ref().and_then(|a| a.required_during_scheduling_ignored_during_execution.as_ref());
    selector_ok && required.is_none_or(|selector| selector.node_selector_terms.iter().any(|term| term.matches(node)))
}

/// The summed weights of the preferred terms `node` matches.
#[must_use]
pub fn preferred_weight(affinity: &Affinity, node: &NodeInfo) -> i64 {
    affinity.node_affinity.as_ref().map_or(0, |a| {
        a.preferred_during_scheduling_ignored_during_execution
            .iter()
            .filter(|p| p.preference.matches(node))
            .map(|p| p.weight)
            .sum()
    })
}

capstan_plugin_sdk::scheduler_plugin!(NodeAffinity);

#[cfg(test)]
mod tests {
    use super::{NodeAffinity, PodInfo, SchedulerPlugin, fits, preferred_weight};
    use capstan_plugin_sdk::scheduler::{NodeInfo, labels};

    fn node(name: &str, pairs: &[(&str, &str)]) -> NodeInfo {
        let mut node = NodeInfo::named(1, name);
        node.labels = labels(pairs);
        node
    }

    /// The example of the Kubernetes documentation "Assigning Pods to Nodes": required
    /// `topology.kubernetes.io/zone In [antarctica-east1, antarctica-west1]`, preferred (weight 1)
    /// `another-node-label-key In [another-node-label-value]`.
    const DOC_EXAMPLE: &str = r#"{"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["antarctica-east1", "antarctica-west1"]}]}]},
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 1, "preference": {"matchExpressions": [
            {"key": "another-node-label-key", "operator": "In", "values": ["another-node-label-value"]}]}}]}}"#;

    #[test]
    fn documented_example_filters_and_scores() {
        let mut pod = PodInfo::named("default", "with-node-affinity");
        pod.affinity = Some(DOC_EXAMPLE.to_owned());
        let affinity = NodeAffinity.cycle(&pod, &[]).unwrap_or_else(|status| panic!("{status:?}"));
        let cases = [
            (node("a", &[("topology.kubernetes.io/zone", "antarctica-east1")]), true, 0),
            (
                node(
                    "b",
                    &[
                        ("topology.kubernetes.io/zone", "antarctica-west1"),
                        ("another-node-label-key", "another-node-label-value"),
                    ],
                ),
                true,
                1,
            ),
            (node("c", &[("topology.kubernetes.io/zone", "europe")]), false, 0),
            (node("d", &[("another-node-label-key", "another-node-label-value")]), false, 1),
        ];
        for (node, fit, weight) in cases {
            assert_eq!(fits(&pod, &affinity, &node), fit, "{}", node.name);
            assert_eq!(preferred_weight(&affinity, &node), weight, "{}", node.name);
        }
    }

    #[test]
    fn operators_match_as_documented() {
        let term = |op: &str, values: &str| {
            format!(
                r#"{{"nodeAffinity": {{"requiredDuringSchedulingIgnoredDuringExecution": {{"nodeSelectorTerms":
                [{{"matchExpressions": [{{"key": "k", "operator": "{op}", "values": {values}}}]}}]}}}}}}"#
            )
        };
        let cases = [
            ("In", r#"["1"]"#, Some("1"), true),
            ("In", r#"["1"]"#, None, false),
            ("NotIn", r#"["1"]"#, Some("1"), false),
            ("NotIn", r#"["1"]"#, None, true),
            ("Exists", "[]", Some("x"), true),
            ("DoesNotExist", "[]", Some("x"), false),
            ("Gt", r#"["5"]"#, Some("6"), true),
            ("Gt", r#"["5"]"#, Some("5"), false),
            ("Lt", r#"["5"]"#, Some("4"), true),
            ("Lt", r#"["5"]"#, Some("abc"), false),
        ];
        for (op, values, label, fit) in cases {
            let mut pod = PodInfo::named("d", "p");
            pod.affinity = Some(term(op, values));
            let affinity = NodeAffinity.cycle(&pod, &[]).unwrap_or_else(|status| panic!("{status:?}"));
            let node = node("n", &label.map(|v| vec![("k", v)]).unwrap_or_default());
            assert_eq!(fits(&pod, &affinity, &node), fit, "{op} {values} {label:?}");
        }
    }

    #[test]
    fn node_selector_needs_every_label_and_match_fields_the_name() {
        let mut pod = PodInfo::named("d", "p");
        pod.node_selector = labels(&[("disktype", "ssd")]);
        let none = super::Affinity::default();
        assert!(fits(&pod, &none, &node("a", &[("disktype", "ssd"), ("x", "y")])));
        assert!(!fits(&pod, &none, &node("b", &[("disktype", "hdd")])));
        pod.node_selector.clear();
        pod.affinity = Some(
            r#"{"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms":
            [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}"#
                .to_owned(),
        );
        let affinity = NodeAffinity.cycle(&pod, &[]).unwrap_or_else(|status| panic!("{status:?}"));
        assert!(fits(&pod, &affinity, &node("b", &[])));
        assert!(!fits(&pod, &affinity, &node("a", &[])));
    }
}
