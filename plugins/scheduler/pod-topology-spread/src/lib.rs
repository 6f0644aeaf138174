//! PodTopologySpread (PreFilter, Filter, PreScore, Score, NormalizeScore): spreads matching pods
//! over topology domains as Kubernetes docs, "Pod Topology Spread Constraints", describe.
//!
//! - `whenUnsatisfiable: DoNotSchedule` constraints filter: placing the pod in a node's domain
//!   must not make that domain's count of matching pods exceed the smallest domain's by more
//!   than `maxSkew` (the smallest counts as 0 while there are fewer domains than `minDomains`);
//!   a node without the topology key is refused.
//! - `ScheduleAnyway` constraints score: fewer matching pods in the domain scores higher.
//! - `labelSelector` picks the pods counted (in the pod's namespace, terminating pods aside),
//!   narrowed by `matchLabelKeys`; `nodeAffinityPolicy` (default Honor) and `nodeTaintsPolicy`
//!   (default Ignore) decide which nodes' pods count.
//! - A pod without constraints gets the system defaults (`zone` maxSkew 5 and `hostname` maxSkew
//!   3, both `ScheduleAnyway`), counting the pods selected by the Services, `ReplicationControllers`,
//!   ReplicaSets and `StatefulSets` that select the pod (asked of the host); none → no constraints.

use std::sync::Arc;

use capstan_plugin_sdk::json;
use capstan_plugin_sdk::scheduler::node_affinity::Required;
use capstan_plugin_sdk::scheduler::selector::LabelSelector;
use capstan_plugin_sdk::scheduler::state::{decode, encode};
use capstan_plugin_sdk::scheduler::{
    ByValue, Code, DomainCounts, Domains, ExtensionPoints, MAX_NODE_SCORE, Memo, NodeCache, NodeId, NodeInfo,
    NodeStatus, Nodes, PodInfo, PreFilterResult, SchedulerPlugin, Status, TaintEffect, host, misfits, unknown_node,
};
use serde::{Deserialize, Serialize};

/// Upstream's reason when placing the pod would exceed `maxSkew`.
pub const SKEW_REASON: &str = "node(s) didn't match pod topology spread constraints";
/// Upstream's reason when the node lacks a constraint's topology key.
pub const MISSING_LABEL_REASON: &str = "node(s) didn't match pod topology spread constraints (missing required label)";

const HOSTNAME: &str = "kubernetes.io/hostname";
const ZONE: &str = "topology.kubernetes.io/zone";

/// A constraint as written in `spec.topologySpreadConstraints` (or the plugin's defaults).
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SpreadConstraint {
    /// The largest allowed difference between domains.
    pub max_skew: i32,
    /// The node label whose values are the domains.
    pub topology_key: String,
    /// `DoNotSchedule` (filter) or `ScheduleAnyway` (score).
    pub when_unsatisfiable: String,
    /// Which pods count.
    #[serde(default)]
    pub label_selector: Option<LabelSelector>,
    /// Pod label keys whose values (from the incoming pod) narrow the selector.
    #[serde(default)]
    pub match_label_keys: Vec<String>,
    /// Below this many domains, the smallest domain counts as 0.
    #[serde(default)]
    pub min_domains: Option<i32>,
    /// `Honor` (default) counts only nodes matching the pod's node selector and affinity.
    #[serde(default)]
    pub node_affinity_policy: Option<String>,
    /// `Honor` counts only nodes whose taints the pod tolerates; `Ignore` (default) counts all.
    #[serde(default)]
    pub node_taints_policy: Option<String>,
}

/// A constraint ready to count with: its selector final.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Constraint {
    /// `maxSkew`.
    pub max_skew: i64,
    /// `topologyKey`.
    pub key: String,
    /// The pods counted (a missing selector becomes one that never matches).
    pub selector: Option<LabelSelector>,
    /// `minDomains` (1 when unset).
    pub min_domains: i64,
    /// Count only nodes matching the pod's required node placement.
    pub honor_affinity: bool,
    /// Count only nodes whose `NoSchedule`/`NoExecute` taints the pod tolerates.
    pub honor_taints: bool,
}

/// The plugin's arguments (`PodTopologySpreadArgs`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Args {
    #[serde(default)]
    default_constraints: Vec<SpreadConstraint>,
    #[serde(default = "system")]
    defaulting_type: String,
}

fn system() -> String {
    "System".to_owned()
}

/// The system default constraints (upstream's `systemDefaultConstraints`).
#[must_use]
pub fn system_defaults() -> Vec<SpreadConstraint> {
    let soft = |key: &str, max_skew| SpreadConstraint {
        max_skew,
        topology_key: key.to_owned(),
        when_unsatisfiable: "ScheduleAnyway".to_owned(),
        ..SpreadConstraint::default()
    };
    vec![soft(ZONE, 5), soft(HOSTNAME, 3)]
}

/// The PodTopologySpread plugin.
pub struct PodTopologySpread {
    /// Constraints for pods that have none.
    pub defaults: Vec<SpreadConstraint>,
    /// The last pod's own constraints, by UID: PreFilter and PreScore ask for them, and
    /// preemption's dry run asks again for every set of victims it tries, while a pod's
    /// `topologySpreadConstraints` cannot change.
    own: Memo<String, Vec<SpreadConstraint>>,
    /// What PreFilter counted on each node, kept for the next pod that counts the same way.
    pub counted: Matched,
}

/// Per node, what PreFilter counts there for each hard constraint (the matching pods, or none
/// when the constraint leaves the node out; nothing at all for a node lacking a topology key),
/// kept across cycles: pods of one workload count alike, and only the nodes changed since the
/// last pod are counted again. Made for one way of counting (`key`: the constraints, the pod's
/// namespace, node placement and tolerations) and forgotten when another comes.
pub type Matched = NodeCache<String, Vec<Option<i64>>>;

impl SpreadConstraint {
    fn prepare(&self, pod: &PodInfo, selector: Option<LabelSelector>) -> Constraint {
        let mut selector = selector.or_else(|| self.label_selector.clone());
        if let Some(selector) = selector.as_mut() {
            for key in &self.match_label_keys {
                if let Some(value) = pod.label(key) {
                    selector.require(key, value);
                }
            }
        }
        Constraint {
            max_skew: i64::from(self.max_skew.max(1)),
            key: self.topology_key.clone(),
            selector,
            min_domains: i64::from(self.min_domains.unwrap_or(1).max(1)),
            honor_affinity: self.node_affinity_policy.as_deref() != Some("Ignore"),
            honor_taints: self.node_taints_policy.as_deref() == Some("Honor"),
        }
    }
}

/// The pod's own `spec.topologySpreadConstraints`. Only the way to them is read (the SDK's
/// `json::find`): PreFilter and PreScore each ask, and parsing the whole pod object for one
/// field cost more than the rest of either.
fn own_constraints(object: &str) -> Result<Vec<SpreadConstraint>, String> {
    match json::find(object, &["spec", "topologySpreadConstraints"]).map_err(|e| e.to_string())? {
        None | Some("null") => Ok(Vec::new()),
        Some(constraints) => serde_json::from_str(constraints).map_err(|e| e.to_string()),
    }
}

/// The selector every workload selecting the pod agrees on, as upstream's `DefaultSelector`:
/// the conjunction of their selectors; `None` when no workload selects the pod.
#[must_use]
pub fn workload_selector(pod: &PodInfo) -> Option<LabelSelector> {
    let mut combined: Option<LabelSelector> = None;
    for json in host::get().workload_selectors(&pod.namespace, &pod.labels) {
        let Ok(selector) = LabelSelector::parse(&json) else { continue };
        let into = combined.get_or_insert_with(LabelSelector::default);
        into.match_labels.extend(selector.match_labels);
        into.match_expressions.extend(selector.match_expressions);
    }
    combined.filter(|s| !s.is_empty())
}

impl PodTopologySpread {
    /// The pod's constraints with `when` (`DoNotSchedule` or `ScheduleAnyway`), and whether they
    /// are the pod's own (not defaults).
    pub fn constraints(&self, pod: &PodInfo, when: &str) -> Result<(Vec<Constraint>, bool), Status> {
        let own = self.own(pod)?;
        if !own.is_empty() {
            let picked = own.iter().filter(|c| c.when_unsatisfiable == when).map(|c| c.prepare(pod, None)).collect();
            return Ok((picked, true));
        }
        if self.defaults.iter().all(|c| c.when_unsatisfiable != when) {
            return Ok((Vec::new(), false));
        }
        let Some(selector) = workload_selector(pod) else { return Ok((Vec::new(), false)) };
        let picked = self
            .defaults
            .iter()
            .filter(|c| c.when_unsatisfiable == when)
            .map(|c| c.prepare(pod, Some(selector.clone())))
            .collect();
        Ok((picked, false))
    }
}

impl PodTopologySpread {
    /// The plugin with `defaults` for pods without constraints of their own.
    #[must_use]
    pub fn new(defaults: Vec<SpreadConstraint>) -> Self {
        Self { defaults, own: Memo::default(), counted: Matched::default() }
    }

    /// `pod`'s own constraints, read once per pod (a pod without a UID, as in tests, each time).
    fn own(&self, pod: &PodInfo) -> Result<Arc<Vec<SpreadConstraint>>, Status> {
        self.own.get_or_try(
            |uid| !pod.uid.is_empty() && *uid == pod.uid,
            || {
                let own = own_constraints(&pod.object)
                    .map_err(|e| Status::error(format!("topologySpreadConstraints: {e}")))?;
                Ok((pod.uid.clone(), own))
            },
        )
    }
}

/// Whether `constraint` counts the pods of `node` for `pod`.
fn counts_node(constraint: &Constraint, pod: &PodInfo, required: &Required, node: &NodeInfo) -> bool {
    if constraint.honor_affinity && !required.matches(node) {
        return false;
    }
    if constraint.honor_taints {
        let untolerated = node.taints.iter().any(|t| {
            matches!(t.effect, TaintEffect::NoSchedule | TaintEffect::NoExecute)
                && !pod.tolerations.iter().any(|tol| tol.tolerates(t))
        });
        if untolerated {
            return false;
        }
    }
    true
}

/// Pods on `node` in `namespace`, not terminating, that `selector` selects.
#[must_use]
pub fn matching_pods(node: &NodeInfo, selector: Option<&LabelSelector>, namespace: &str) -> i64 {
    let Some(selector) = selector else { return 0 };
    node.pods.iter().filter(|p| !p.terminating && p.namespace == namespace && selector.matches(&p.labels)).count()
        as i64
}

/// Whether node `id` has the topology key of every constraint (its domains, one per constraint).
fn has_all_keys<'a>(domains: impl IntoIterator<Item = &'a Domains>, id: NodeId) -> bool {
    domains.into_iter().all(|d| d.of_node(id).is_some())
}

/// A fresh count per constraint, in the constraints' order.
fn counts_for(constraints: &[Constraint], nodes: &Nodes) -> Vec<DomainCounts> {
    constraints.iter().map(|c| DomainCounts::new(nodes, &c.key)).collect()
}

/// One constraint's counts for Filter: matching pods per domain.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Counted {
    /// The constraint.
    pub constraint: Constraint,
    /// Matching pods per domain value.
    pub counts: ByValue,
    /// Whether the incoming pod matches the selector itself.
    pub self_match: bool,
}

/// PreFilter's counting for the hard constraints over every node, reusing what `matched` kept
/// for the nodes that did not change.
#[must_use]
pub fn filter_counts(
    pod: &PodInfo,
    constraints: Vec<Constraint>,
    required: &Required,
    nodes: &Nodes,
    matched: &Matched,
) -> Vec<Counted> {
    let mut counts = counts_for(&constraints, nodes);
    let key =
        format!("{constraints:?} {} {:?} {:?} {:?}", pod.namespace, pod.node_selector, pod.affinity, pod.tolerations);
    let domains: Vec<Arc<Domains>> = constraints.iter().map(|c| nodes.domains(&c.key)).collect();
    let count = |node: &NodeInfo| {
        if !has_all_keys(domains.iter().map(AsRef::as_ref), node.id) {
            return Vec::new();
        }
        let counted = |c: &Constraint| counts_node(c, pod, required, node);
        constraints
            .iter()
            .map(|c| counted(c).then(|| matching_pods(node, c.selector.as_ref(), &pod.namespace)))
            .collect()
    };
    matched.with(key, nodes, count, |kept| {
        for node in nodes.iter() {
            let Some(on_node) = kept.get(node.id) else { continue };
            for (counts, n) in counts.iter_mut().zip(on_node) {
                if let Some(n) = n {
                    counts.add(node.id, *n);
                }
            }
        }
    });
    constraints
        .into_iter()
        .zip(&counts)
        .map(|(c, counts)| Counted {
            self_match: c.selector.as_ref().is_some_and(|s| s.matches(&pod.labels)),
            constraint: c,
            counts: counts.by_value(),
        })
        .collect()
}

/// Filter over the nodes `ids`: those where placing the pod would break a constraint, with why.
#[must_use]
pub fn filter(counted: &[Counted], nodes: &Nodes, ids: &[NodeId]) -> Vec<NodeStatus> {
    // Per constraint, once per batch: its counts by domain, and the smallest count.
    let prepared: Vec<(&Counted, DomainCounts, i64)> = counted
        .iter()
        .map(|entry| {
            let min = if (entry.counts.len() as i64) < entry.constraint.min_domains {
                0
            } else {
                entry.counts.iter().map(|(_, n)| *n).min().unwrap_or(0)
            };
            (entry, DomainCounts::from_values(nodes, &entry.constraint.key, &entry.counts), min)
        })
        .collect();
    misfits(ids, |id| {
        for (entry, counts, min) in &prepared {
            let Some(here) = counts.at(id) else { return Status::unresolvable(MISSING_LABEL_REASON) };
            if here + i64::from(entry.self_match) - min > entry.constraint.max_skew {
                return Status::unschedulable(SKEW_REASON);
            }
        }
        Status::success()
    })
}

/// What PreScore leaves for Score.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ScoreState {
    /// The soft constraints.
    pub constraints: Vec<Constraint>,
    /// Per constraint (hostname aside): matching pods per domain value.
    pub counts: Vec<ByValue>,
    /// Per constraint: `ln(domains + 2)`.
    pub weights: Vec<f64>,
    /// Feasible nodes lacking a topology key of the pod's own constraints: scored 0.
    pub ignored: Vec<NodeId>,
    /// The incoming pod's namespace.
    pub namespace: String,
}

/// PreScore over the feasible `nodes`, counting pods over `all`.
#[must_use]
pub fn score_state(
    pod: &PodInfo,
    constraints: Vec<Constraint>,
    require_all: bool,
    required: &Required,
    nodes: &[&NodeInfo],
    all: &Nodes,
) -> ScoreState {
    // The domains of the feasible nodes are scored; their pods are counted over every node.
    let mut counts = counts_for(&constraints, all);
    let mut ignored = Vec::new();
    for node in nodes {
        if require_all && !has_all_keys(counts.iter().map(DomainCounts::domains), node.id) {
            ignored.push(node.id);
            continue;
        }
        for (c, counts) in constraints.iter().zip(&mut counts) {
            if c.key != HOSTNAME {
                counts.add(node.id, 0);
            }
        }
    }
    let weights = constraints
        .iter()
        .zip(&counts)
        .map(|(c, counts)| {
            let size = if c.key == HOSTNAME { nodes.len() - ignored.len() } else { counts.len() };
            ((size + 2) as f64).ln()
        })
        .collect();
    for node in all.iter() {
        if require_all && !has_all_keys(counts.iter().map(DomainCounts::domains), node.id) {
            continue;
        }
        for (c, counts) in constraints.iter().zip(&mut counts) {
            if counts.counted(node.id).is_some() && counts_node(c, pod, required, node) {
                counts.add(node.id, matching_pods(node, c.selector.as_ref(), &pod.namespace));
            }
        }
    }
    let counts = counts.iter().map(DomainCounts::by_value).collect();
    ScoreState { constraints, counts, weights, ignored, namespace: pod.namespace.clone() }
}

/// Score over the nodes `ids`: matching pods in each node's domains, weighted; −1 marks an
/// ignored node.
pub fn score(state: &ScoreState, nodes: &Nodes, ids: &[NodeId]) -> Result<Vec<i64>, Status> {
    let counts: Vec<DomainCounts> = state
        .constraints
        .iter()
        .zip(&state.counts)
        .map(|(c, counts)| DomainCounts::from_values(nodes, &c.key, counts))
        .collect();
    ids.iter()
        .map(|&id| {
            if state.ignored.contains(&id) {
                return Ok(-1);
            }
            let node = nodes.get(id).ok_or_else(|| unknown_node(id))?;
            let mut total = 0.0;
            for ((c, counts), weight) in state.constraints.iter().zip(&counts).zip(&state.weights) {
                let Some(count) = counts.at(id) else { continue };
                let count =
                    if c.key == HOSTNAME { matching_pods(node, c.selector.as_ref(), &state.namespace) } else { count };
                total += count as f64 * weight + (c.max_skew - 1) as f64;
            }
            Ok(total.round() as i64)
        })
        .collect()
}

/// Upstream's normalisation: fewer matching pods scores higher; ignored nodes (−1) score 0.
pub fn normalize(scores: &mut [i64]) {
    let kept = || scores.iter().copied().filter(|s| *s >= 0);
    let min = kept().min().unwrap_or(0);
    let max = kept().max().unwrap_or(0);
    for score in scores.iter_mut() {
        *score = if *score < 0 {
            0
        } else if max == 0 {
            MAX_NODE_SCORE
        } else {
            MAX_NODE_SCORE * (max + min - *score) / max
        };
    }
}

/// The plugin's cycle data.
#[derive(Default)]
pub struct Cycle {
    /// PreFilter's counts.
    pub filter: Vec<Counted>,
    /// PreScore's counts.
    pub score: ScoreState,
}

impl SchedulerPlugin for PodTopologySpread {
    type Cycle = Cycle;

    fn configure(config: &str) -> Result<Self, String> {
        let args: Args = capstan_plugin_sdk::scheduler::parse_config(config)?;
        let defaults = match args.defaulting_type.as_str() {
            "System" => system_defaults(),
            "List" => args.default_constraints,
            other => return Err(format!("defaultingType must be System or List, not {other}")),
        };
        if defaults.iter().any(|c| c.label_selector.is_some()) {
            return Err("defaultConstraints may not set labelSelector".to_owned());
        }
        Ok(Self::new(defaults))
    }

    fn cycle(&self, _pod: &PodInfo, state: &[u8]) -> Result<Cycle, Status> {
        Ok(match state.split_first().map(|(tag, _)| *tag) {
            Some(b'f') => Cycle { filter: decode(state)?.map(|(_, v)| v).unwrap_or_default(), ..Cycle::default() },
            Some(_) => Cycle { score: decode(state)?.map(|(_, v)| v).unwrap_or_default(), ..Cycle::default() },
            None => Cycle::default(),
        })
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::PRE_FILTER
            | ExtensionPoints::FILTER
            | ExtensionPoints::PRE_SCORE
            | ExtensionPoints::SCORE
            | ExtensionPoints::NORMALIZE_SCORE
    }

    /// It counts the matching pods in each domain.
    fn wants_node_pods(&self) -> bool {
        true
    }

    fn pre_filter(&self, pod: &PodInfo, nodes: &Nodes) -> PreFilterResult {
        let failed = |status| PreFilterResult { status, nodes: None, state: Vec::new() };
        let constraints = match self.constraints(pod, "DoNotSchedule") {
            Ok((constraints, _)) if constraints.is_empty() => {
                return failed(Status::new(Code::Skip, Vec::new()));
            }
            Ok((constraints, _)) => constraints,
            Err(status) => return failed(status),
        };
        let required = match Required::of(pod) {
            Ok(required) => required,
            Err(e) => return failed(Status::error(e)),
        };
        match encode(b'f', &filter_counts(pod, constraints, &required, nodes, &self.counted)) {
            Ok(state) => PreFilterResult { status: Status::success(), nodes: None, state },
            Err(status) => failed(status),
        }
    }

    fn filter_batch(&self, _pod: &PodInfo, cycle: &Cycle, nodes: &Nodes, ids: &[NodeId]) -> Vec<NodeStatus> {
        filter(&cycle.filter, nodes, ids)
    }

    fn pre_score(&self, pod: &PodInfo, _cycle: &Cycle, nodes: &[&NodeInfo], all: &Nodes) -> Result<Vec<u8>, Status> {
        let (constraints, own) = self.constraints(pod, "ScheduleAnyway")?;
        if constraints.is_empty() {
            // Nothing to spread: Skip, as upstream, so Score is not called.
            return Err(Status::skip());
        }
        let required = Required::of(pod).map_err(Status::error)?;
        encode(b's', &score_state(pod, constraints, own, &required, nodes, all))
    }

    fn score_batch(&self, _pod: &PodInfo, cycle: &Cycle, nodes: &Nodes, ids: &[NodeId]) -> Result<Vec<i64>, Status> {
        score(&cycle.score, nodes, ids)
    }

    fn normalize_score(&self, _pod: &PodInfo, _cycle: &Cycle, scores: &mut [i64]) -> Result<(), Status> {
        normalize(scores);
        Ok(())
    }
}

capstan_plugin_sdk::scheduler_plugin!(PodTopologySpread);

#[cfg(test)]
mod tests;
