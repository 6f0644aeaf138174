//! DefaultPreemption (PostFilter): when a pod fits on no node, find a node where deleting pods of
//! lower priority makes it fit, as Kubernetes docs, "Pod Priority and Preemption", describe:
//!
//! - a pod with `preemptionPolicy: Never` never preempts; nor does a pod whose nominated node
//!   still has lower-priority pods terminating (it is already waiting for them);
//! - only nodes filtered out as `Unschedulable` are candidates (not `UnschedulableAndUnresolvable`:
//!   deleting pods cannot fix a taint or a missing label);
//! - on each candidate, every lower-priority pod is removed and the profile's filters re-run
//!   through the host's dry run (`fits-without`); then victims are reprieved one by one, those
//!   whose `PodDisruptionBudget` would be violated first, highest priority first, keeping every pod
//!   whose return still lets the pod fit;
//! - the node is chosen as upstream's `pickOneNodeForPreemption` does: fewest PDB violations,
//!   then the lowest highest-victim priority, the smallest sum of priorities, the fewest victims.
//!
//! The host deletes the victims and writes the pod's `status.nominatedNodeName`.

use std::collections::HashMap;

use capstan_plugin_sdk::scheduler::selector::LabelSelector;
use capstan_plugin_sdk::scheduler::{
    Code, DisruptionBudget, ExtensionPoints, NodeId, NodeInfo, NodeStatus, Nodes, PodInfo, PodSummary,
    PostFilterResult, SchedulerPlugin, Status, Victim, host,
};
use serde::Deserialize;

/// Why a pod with `preemptionPolicy: Never` did not preempt (upstream's wording).
pub const NEVER_REASON: &str = "not eligible due to preemptionPolicy=Never.";
/// Why a pod still waiting for its earlier victims did not preempt again.
pub const TERMINATING_REASON: &str = "not eligible due to a terminating pod on the nominated node.";
/// Why a candidate node could not be freed.
pub const NO_VICTIMS_REASON: &str = "No preemption victims found for incoming pod.";
/// Why a node filtered out as unresolvable is no candidate.
pub const NOT_HELPFUL_REASON: &str = "Preemption is not helpful for scheduling";

/// At least this share of nodes is examined for candidates (upstream's `minCandidateNodesPercentage`).
pub const MIN_CANDIDATE_NODES_PERCENTAGE: usize = 10;
/// At least this many nodes are examined (upstream's `minCandidateNodesAbsolute`).
pub const MIN_CANDIDATE_NODES_ABSOLUTE: usize = 100;

#[derive(Deserialize, Default)]
struct PodFields {
    #[serde(default)]
    spec: SpecFields,
    #[serde(default)]
    status: StatusFields,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SpecFields {
    #[serde(default)]
    preemption_policy: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct StatusFields {
    #[serde(default)]
    nominated_node_name: Option<String>,
}

/// A node where preemption would work, and what it costs.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// The node.
    pub node: NodeId,
    /// The pods to delete, highest priority first.
    pub victims: Vec<PodSummary>,
    /// How many of them a `PodDisruptionBudget` protects.
    pub pdb_violations: usize,
}

/// Splits `pods` (highest priority first) into those whose eviction would violate a budget and
/// the rest, counting each budget's allowed disruptions down as upstream's
/// `filterPodsWithPDBViolation` does.
#[must_use]
pub fn split_by_budget(pods: Vec<PodSummary>, budgets: &[DisruptionBudget]) -> (Vec<PodSummary>, Vec<PodSummary>) {
    let selectors: Vec<Option<LabelSelector>> =
        budgets.iter().map(|b| b.selector.as_deref().and_then(|s| LabelSelector::parse(s).ok())).collect();
    let mut allowed: Vec<i64> = budgets.iter().map(|b| i64::from(b.disruptions_allowed)).collect();
    let (mut violating, mut fine) = (Vec::new(), Vec::new());
    for pod in pods {
        let mut violates = false;
        for (i, budget) in budgets.iter().enumerate() {
            let Some(selector) = &selectors[i] else { continue };
            if budget.namespace != pod.namespace || selector.is_empty() || !selector.matches(&pod.labels) {
                continue;
            }
            allowed[i] -= 1;
            violates |= allowed[i] < 0;
        }
        if violates { violating.push(pod) } else { fine.push(pod) }
    }
    (violating, fine)
}

/// The victims on `node` for a pod of `priority`, or `None` when removing every lower-priority
/// pod still does not make it fit. `fits` is the dry run over the UIDs removed.
pub fn select_victims(
    node: &NodeInfo,
    priority: i32,
    budgets: &[DisruptionBudget],
    fits: &dyn Fn(NodeId, &[String]) -> bool,
) -> Option<Candidate> {
    let mut lower: Vec<PodSummary> = node.pods.iter().filter(|p| p.priority < priority).cloned().collect();
    if lower.is_empty() {
        return None;
    }
    let mut removed: Vec<String> = lower.iter().map(|p| p.uid.clone()).collect();
    if !fits(node.id, &removed) {
        return None;
    }
    lower.sort_by_key(|p| std::cmp::Reverse(p.priority));
    let (violating, fine) = split_by_budget(lower, budgets);
    let mut candidate = Candidate { node: node.id, victims: Vec::new(), pdb_violations: 0 };
    for (pod, protected) in violating.into_iter().map(|p| (p, true)).chain(fine.into_iter().map(|p| (p, false))) {
        removed.retain(|uid| *uid != pod.uid);
        if fits(node.id, &removed) {
            continue;
        }
        removed.push(pod.uid.clone());
        candidate.pdb_violations += usize::from(protected);
        candidate.victims.push(pod);
    }
    candidate.victims.sort_by_key(|p| std::cmp::Reverse(p.priority));
    Some(candidate)
}

/// Upstream's order of candidates: fewest PDB violations, lowest highest-victim priority,
/// smallest sum of (priority + 2³¹), fewest victims; the first of equals.
#[must_use]
pub fn pick(candidates: &[Candidate]) -> Option<&Candidate> {
    candidates.iter().min_by_key(|c| {
        let highest = c.victims.first().map_or(i64::from(i32::MIN), |p| i64::from(p.priority));
        let sum: i64 = c.victims.iter().map(|p| i64::from(p.priority) + (1i64 << 31)).sum();
        (c.pdb_violations, highest, sum, c.victims.len())
    })
}

/// How many candidate nodes upstream examines among `potential`.
#[must_use]
pub fn candidates_to_examine(potential: usize) -> usize {
    (potential * MIN_CANDIDATE_NODES_PERCENTAGE / 100).max(MIN_CANDIDATE_NODES_ABSOLUTE).min(potential)
}

/// The DefaultPreemption plugin.
pub struct DefaultPreemption;

/// A failed preemption: the reason as upstream's DefaultPreemption words it, `preemption: …`,
/// which the host appends to the pod's "0/N nodes are available" message.
fn unschedulable(reason: &str) -> PostFilterResult {
    let status = Status::unschedulable(format!("preemption: {reason}"));
    PostFilterResult { status, nominated_node: None, victims: Vec::new() }
}

/// Upstream's summary when no node could be freed: `0/N nodes are available: 2 No preemption
/// victims found for incoming pod., 1 Preemption is not helpful for scheduling.` (the doubled
/// period is upstream's too).
#[must_use]
pub fn no_candidates(total: usize, filtered: &[NodeStatus]) -> String {
    let unresolvable = filtered.iter().filter(|f| f.status.code != Code::Unschedulable).count();
    let parts: Vec<String> = [(filtered.len() - unresolvable, NO_VICTIMS_REASON), (unresolvable, NOT_HELPFUL_REASON)]
        .into_iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, reason)| format!("{n} {reason}"))
        .collect();
    format!("0/{total} nodes are available: {}.", parts.join(", "))
}

/// Why `pod` may not preempt at all, if it may not.
#[must_use]
pub fn ineligible(pod: &PodInfo, nodes: &Nodes) -> Option<&'static str> {
    let fields: PodFields = serde_json::from_str(&pod.object).unwrap_or_default();
    if fields.spec.preemption_policy.as_deref() == Some("Never") {
        return Some(NEVER_REASON);
    }
    let nominated = fields.status.nominated_node_name.filter(|n| !n.is_empty())?;
    let node = nodes.iter().find(|n| n.name == nominated)?;
    node.pods.iter().any(|p| p.terminating && p.priority < pod.priority).then_some(TERMINATING_REASON)
}

impl SchedulerPlugin for DefaultPreemption {
    type Cycle = ();

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn cycle(&self, _pod: &PodInfo, _state: &[u8]) -> Result<(), Status> {
        Ok(())
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::POST_FILTER
    }

    /// It picks victims among the pods on each node.
    fn wants_node_pods(&self) -> bool {
        true
    }

    fn post_filter(&self, pod: &PodInfo, _cycle: &(), filtered: &[NodeStatus], nodes: &Nodes) -> PostFilterResult {
        if let Some(reason) = ineligible(pod, nodes) {
            return unschedulable(reason);
        }
        let host = host::get();
        let fits = |node: NodeId, removed: &[String]| host.fits_without(node, removed).is_ok();
        let mut budgets: HashMap<String, Vec<DisruptionBudget>> = HashMap::new();
        let potential: Vec<&NodeInfo> = filtered
            .iter()
            .filter(|f| f.status.code == Code::Unschedulable)
            .filter_map(|f| nodes.get(f.node))
            .collect();
        let wanted = candidates_to_examine(potential.len());
        let mut candidates = Vec::new();
        for node in potential {
            if candidates.len() >= wanted {
                break;
            }
            for victim in &node.pods {
                budgets.entry(victim.namespace.clone()).or_insert_with(|| host.disruption_budgets(&victim.namespace));
            }
            let relevant: Vec<DisruptionBudget> = budgets.values().flatten().cloned().collect();
            if let Some(candidate) = select_victims(node, pod.priority, &relevant, &fits) {
                candidates.push(candidate);
            }
        }
        let Some(best) = pick(&candidates) else { return unschedulable(&no_candidates(nodes.len(), filtered)) };
        PostFilterResult {
            status: Status::success(),
            nominated_node: Some(best.node),
            victims: best
                .victims
                .iter()
                .map(|p| Victim { namespace: p.namespace.clone(), name: p.name.clone(), uid: p.uid.clone() })
                .collect(),
        }
    }
}

capstan_plugin_sdk::scheduler_plugin!(DefaultPreemption);

#[cfg(test)]
mod tests;
