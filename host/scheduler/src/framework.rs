//! The framework runtime: one scheduling cycle of one pod through a profile's plugins — PreFilter,
//! Filter over the nodes (until enough feasible ones are found), PostFilter, PreScore, Score and
//! NormalizeScore with weights, then Reserve, Permit, PreBind and Bind.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use capstan_wasm::PluginError;
use capstan_wasm::scheduler::{
    Code, ExtensionPoints, Label, NodeId, NodeInfo, NodeLog, NodeStatus, PodSnapshot, PodSummary, SchedulerHost,
    Status, Victim,
};

use crate::backend::Backend;

/// One plugin in a profile.
#[derive(Clone)]
pub struct ProfilePlugin {
    /// Its name in the profile (`NodeResourcesFit`, or the Plugin object's name).
    pub name: String,
    /// The loaded component (or, in the `native-plugins` build, the linked crate).
    pub handle: Backend,
    /// What it implements (from `describe`).
    pub points: ExtensionPoints,
    /// Whether it looks at the pods on nodes (`wants-node-pods` in its description): only such a
    /// plugin's PreFilter can come out differently when preemption's dry run takes pods away.
    pub sees_pods: bool,
    /// Its score weight.
    pub weight: i64,
}

impl ProfilePlugin {
    /// Loads the description of `handle` and wraps it.
    pub fn new(name: &str, handle: impl Into<Backend>, weight: i64) -> Result<Self, PluginError> {
        let handle = handle.into();
        let description = handle.describe()?;
        Ok(Self {
            name: name.to_owned(),
            handle,
            points: description.extension_points,
            sees_pods: description.wants_node_pods,
            weight,
        })
    }
}

/// A scheduling profile: the plugins pods with this `spec.schedulerName` go through.
#[derive(Clone)]
pub struct Profile {
    /// `spec.schedulerName` it serves.
    pub scheduler_name: String,
    /// Its plugins, in order.
    pub plugins: Vec<ProfilePlugin>,
    /// `percentageOfNodesToScore`; 0 picks upstream's adaptive default.
    pub percentage_of_nodes_to_score: u32,
    /// How many threads filter one pod's candidate nodes at once (`parallelism`): each takes an
    /// equal share of a batch, with instances of its own.
    pub parallelism: usize,
    /// What filtering one node has cost lately, which decides whether a batch is worth sharing.
    pub filter_cost: FilterCost,
}

/// The least filtering work, in nanoseconds, worth a thread of its own. Handing a share to
/// another thread costs a wake-up and a call into another instance of every filter plugin
/// (which must be kept in sync with the nodes too): tens of microseconds. With the default
/// plugins a node costs tens of nanoseconds to filter, so `SchedulingBasic`'s 500-node batches stay
/// on one thread (split, they ran 10 % slower on 2 cores); costly filters (inter-pod affinity
/// over many pods, spreading) or larger batches are shared.
const MIN_SHARE_NANOS: u64 = 200_000;

/// Filtering's recent cost per node in nanoseconds, a moving average over batches, shared by
/// the clones of a profile. It falls fast and rises slowly: a batch that also brought a new
/// instance up to date with every node (the first after a start or a reload, or a new share's
/// instance) is an outlier, while costly filters show in batch after batch.
#[derive(Clone, Debug, Default)]
pub struct FilterCost(Arc<AtomicU64>);

impl FilterCost {
    fn per_node(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    /// Takes in a batch of `nodes` that took `elapsed` on `threads` threads.
    fn record(&self, nodes: usize, elapsed: std::time::Duration, threads: usize) {
        let spent = elapsed.as_nanos().saturating_mul(threads as u128) / nodes.max(1) as u128;
        let spent = u64::try_from(spent).unwrap_or(u64::MAX);
        let average = self.per_node();
        let average = if spent < average {
            average - (average - spent) / 2
        } else {
            average.saturating_add((spent - average) / 16)
        };
        self.0.store(average, Ordering::Relaxed);
    }

    /// Sets the cost per node, as if measured.
    #[cfg(test)]
    fn set_per_node(&self, nanos: u64) {
        self.0.store(nanos, Ordering::Relaxed);
    }
}

/// The threads that filter in parallel, one pool for the process, sized to the cores (a profile
/// asking for more threads than that gets more, smaller shares on the same threads).
fn filter_pool() -> Option<&'static rayon::ThreadPool> {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(crate::config::cores())
            .thread_name(|i| format!("sched-filter-{i}"))
            .build()
            .map_err(|e| tracing::warn!(error = %e, "cannot start the filter threads; filtering on one"))
            .ok()
    })
    .as_ref()
}

/// What filtering some nodes found: those that fit, and why the others do not.
type Filtered = (Vec<NodeId>, Vec<(NodeId, Status)>);

/// What a successful scheduling cycle decided.
#[derive(Debug)]
pub struct Decision {
    /// The chosen node.
    pub node: String,
    /// Its handle.
    pub node_id: NodeId,
    /// How many nodes were feasible among those filtered.
    pub feasible: usize,
    /// Each plugin's cycle state, by plugin index.
    pub states: Vec<Vec<u8>>,
}

/// What a PostFilter plugin decided to make room for a pod that fits nowhere.
#[derive(Debug, Clone)]
pub struct Preemption {
    /// The node the pod is nominated to.
    pub node: String,
    /// The pods to delete from it.
    pub victims: Vec<Victim>,
}

/// Why a cycle did not place the pod.
#[derive(Debug, thiserror::Error)]
pub enum CycleError {
    /// No node fits; the message is kube-scheduler's "0/N nodes are available: …".
    #[error("{message}")]
    Unschedulable {
        /// The diagnosis.
        message: String,
        /// What PostFilter decided, if it found a way to make the pod fit.
        preemption: Option<Preemption>,
    },
    /// A plugin failed (trapped, timed out, returned an error).
    #[error("running {point} plugin \"{plugin}\": {message}")]
    Plugin {
        /// The extension point.
        point: &'static str,
        /// The plugin.
        plugin: String,
        /// What happened.
        message: String,
    },
}

impl CycleError {
    #[allow(clippy::needless_pass_by_value, reason = "called from `map_err` closures that own the error")]
    fn plugin(point: &'static str, plugin: &ProfilePlugin, message: impl ToString) -> Self {
        Self::Plugin { point, plugin: plugin.name.clone(), message: message.to_string() }
    }

    fn status(point: &'static str, plugin: &ProfilePlugin, status: &Status) -> Self {
        Self::plugin(point, plugin, format!("{:?}: {}", status.code, status.reasons.join("; ")))
    }
}

/// How many feasible nodes to find before scoring, as upstream: all below 100 nodes, else the
/// percentage (adaptive `50 - nodes/125`, at least 5 %, when 0), never fewer than 100.
#[must_use]
pub fn feasible_nodes_to_find(nodes: usize, percentage: u32) -> usize {
    const MIN_FEASIBLE: usize = 100;
    if nodes < MIN_FEASIBLE || percentage >= 100 {
        return nodes;
    }
    let percentage = if percentage == 0 { 50usize.saturating_sub(nodes / 125).max(5) } else { percentage as usize };
    (nodes * percentage / 100).max(MIN_FEASIBLE)
}

/// Kube-scheduler's diagnosis: `0/N nodes are available: 2 Insufficient cpu, 1 node(s) were
/// unschedulable.` — each reason with the count of nodes giving it, sorted.
#[must_use]
pub fn diagnosis(total_nodes: usize, failures: &[(NodeId, Status)]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, status) in failures {
        for reason in &status.reasons {
            *counts.entry(reason).or_default() += 1;
        }
    }
    let mut parts: Vec<String> = counts.into_iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    parts.sort();
    if parts.is_empty() {
        format!("0/{total_nodes} nodes are available.")
    } else {
        format!("0/{total_nodes} nodes are available: {}.", parts.join(", "))
    }
}

impl Profile {
    fn with(&self, point: ExtensionPoints) -> impl Iterator<Item = (usize, &ProfilePlugin)> {
        self.plugins.iter().enumerate().filter(move |(_, p)| p.points.contains(point))
    }

    /// The QueueSort key of `pod`: the first QueueSort plugin's, or 0.
    pub fn queue_sort_key(&self, pod: &PodSnapshot) -> Result<i64, CycleError> {
        match self.with(ExtensionPoints::QUEUE_SORT).next() {
            Some((_, plugin)) => {
                plugin.handle.queue_sort_key(pod).map_err(|e| CycleError::plugin("QueueSort", plugin, e))
            }
            None => Ok(0),
        }
    }

    /// Runs the scheduling cycle of `pod` against `nodes`. `start` rotates where filtering
    /// begins, so successive pods spread their search as upstream's `nextStartNodeIndex` does.
    pub fn schedule(&self, nodes: &mut NodeLog, pod: &PodSnapshot, start: &mut usize) -> Result<Decision, CycleError> {
        let mut states = vec![Vec::new(); self.plugins.len()];
        // Plugins whose PreFilter said Skip: their Filter is not called this cycle.
        let mut skipped = vec![false; self.plugins.len()];
        let mut candidates: Option<Vec<NodeId>> = None;
        for (index, plugin) in self.with(ExtensionPoints::PRE_FILTER) {
            let result =
                plugin.handle.pre_filter(nodes, pod).map_err(|e| CycleError::plugin("PreFilter", plugin, e))?;
            match result.status.code {
                Code::Success => {}
                Code::Skip => skipped[index] = true,
                Code::Unschedulable | Code::UnschedulableAndUnresolvable => {
                    let failures: Vec<_> = nodes.iter().map(|n| (n.id, result.status.clone())).collect();
                    return Err(CycleError::Unschedulable {
                        message: diagnosis(nodes.len(), &failures),
                        preemption: None,
                    });
                }
                Code::Error | Code::Wait => return Err(CycleError::status("PreFilter", plugin, &result.status)),
            }
            states[index] = result.state;
            if let Some(allowed) = result.nodes {
                candidates = Some(match candidates {
                    Some(previous) => previous.into_iter().filter(|id| allowed.contains(id)).collect(),
                    None => allowed,
                });
            }
        }
        // The log iterates in handle order; only a PreFilter's list needs sorting.
        let mut ids: Vec<NodeId> = match candidates {
            Some(mut ids) => {
                ids.sort_unstable();
                ids
            }
            None => nodes.handles().to_vec(),
        };
        if !ids.is_empty() {
            let offset = *start % ids.len();
            ids.rotate_left(offset);
        }
        let (feasible, failures, evaluated) = self.filter(nodes, pod, &states, &skipped, &ids)?;
        *start = start.wrapping_add(evaluated);
        if feasible.is_empty() {
            let filtered: Vec<NodeStatus> =
                failures.iter().map(|(node, status)| NodeStatus { node: *node, status: status.clone() }).collect();
            let mut message = diagnosis(nodes.len(), &failures);
            let (preemption, post_filter_message) = self.post_filter(nodes, pod, &states, &skipped, &filtered)?;
            // As upstream: the PostFilter's reason follows the diagnosis ("… preemption: …").
            if let Some(post) = post_filter_message.filter(|_| preemption.is_none()) {
                message = format!("{message} {post}");
            }
            if let Some(preemption) = &preemption {
                tracing::info!(pod = %pod.name, node = %preemption.node, victims = preemption.victims.len(),
                    "post-filter nominated a node");
            }
            return Err(CycleError::Unschedulable { message, preemption });
        }
        let chosen = if feasible.len() == 1 { feasible[0] } else { self.score(nodes, pod, &mut states, &feasible)? };
        let name = nodes.get(chosen).map(|n| n.name.clone()).unwrap_or_default();
        Ok(Decision { node: name, node_id: chosen, feasible: feasible.len(), states })
    }

    /// Filters `ids` in order until enough feasible nodes are found; each node stops at its
    /// first failing plugin. A node with nominated pods is checked a second time with them, as
    /// upstream (see [`Self::fits_with_nominated`]). Returns the feasible nodes, the failures,
    /// and how many were looked at.
    #[allow(clippy::type_complexity, reason = "a private triple read once by the caller")]
    fn filter(
        &self,
        nodes: &mut NodeLog,
        pod: &PodSnapshot,
        states: &[Vec<u8>],
        skipped: &[bool],
        ids: &[NodeId],
    ) -> Result<(Vec<NodeId>, Vec<(NodeId, Status)>, usize), CycleError> {
        let wanted = feasible_nodes_to_find(ids.len(), self.percentage_of_nodes_to_score);
        let mut feasible = Vec::new();
        let mut failures = Vec::new();
        let mut evaluated = 0;
        while feasible.len() < wanted && evaluated < ids.len() {
            // At least a quarter of `wanted` per batch: when most nodes fail (a zone constraint,
            // anti-affinity) batches sized to the shortfall would shrink geometrically, each one a
            // call per plugin. The surplus is trimmed below, as upstream stops at `wanted`.
            let chunk_len = (wanted - feasible.len()).max(wanted.div_ceil(4)).min(ids.len() - evaluated);
            let batch = &ids[evaluated..evaluated + chunk_len];
            evaluated += chunk_len;
            let (mut survivors, misfits) = self.filter_batch(nodes, pod, states, skipped, batch)?;
            failures.extend(misfits);
            if nodes.has_nominated() {
                let mut checked = Vec::with_capacity(survivors.len());
                for id in survivors {
                    match self.fits_with_nominated(nodes, pod, states, skipped, id)? {
                        None => checked.push(id),
                        Some(refusal) => failures.push((id, refusal)),
                    }
                }
                survivors = checked;
            }
            feasible.extend(survivors);
        }
        if feasible.len() > wanted {
            // Nodes after the last one needed count as not looked at, as upstream.
            feasible.truncate(wanted);
            let last = feasible.last().and_then(|id| ids.iter().position(|n| n == id)).unwrap_or(evaluated);
            evaluated = last + 1;
        }
        Ok((feasible, failures, evaluated))
    }

    /// Filters `batch`, split into equal shares across up to `parallelism` threads when the
    /// work is worth it (see [`MIN_SHARE_NANOS`]); the shares' results are joined in the
    /// batch's order, so the nodes kept are the same however many threads ran.
    fn filter_batch(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        states: &[Vec<u8>],
        skipped: &[bool],
        batch: &[NodeId],
    ) -> Result<Filtered, CycleError> {
        let started = std::time::Instant::now();
        let work = self.filter_cost.per_node().saturating_mul(batch.len() as u64);
        let shares = self.parallelism.min(usize::try_from(work / MIN_SHARE_NANOS).unwrap_or(usize::MAX));
        // The pool starts with the first batch worth sharing, not before.
        let pool = (shares > 1).then(filter_pool).flatten();
        let Some(pool) = pool else {
            let result = self.run_filters(nodes, pod, states, skipped, batch.to_vec());
            self.filter_cost.record(batch.len(), started.elapsed(), 1);
            return result;
        };
        let share = batch.len().div_ceil(shares);
        let results: Vec<Result<Filtered, CycleError>> = pool.install(|| {
            use rayon::prelude::*;
            batch.par_chunks(share).map(|part| self.run_filters(nodes, pod, states, skipped, part.to_vec())).collect()
        });
        self.filter_cost.record(batch.len(), started.elapsed(), shares);
        let mut joined: Filtered = (Vec::with_capacity(batch.len()), Vec::new());
        for result in results {
            let (kept, misfits) = result?;
            joined.0.extend(kept);
            joined.1.extend(misfits);
        }
        Ok(joined)
    }

    /// Runs the Filter plugins in order over `survivors`, each over the nodes the ones before
    /// it kept.
    fn run_filters(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        states: &[Vec<u8>],
        skipped: &[bool],
        mut survivors: Vec<NodeId>,
    ) -> Result<Filtered, CycleError> {
        let mut failures = Vec::new();
        for (index, plugin) in self.with(ExtensionPoints::FILTER) {
            if survivors.is_empty() {
                break;
            }
            if skipped[index] {
                continue;
            }
            let misfits = plugin
                .handle
                .filter(nodes, pod, &states[index], &survivors)
                .map_err(|e| CycleError::plugin("Filter", plugin, e))?;
            if misfits.is_empty() {
                continue;
            }
            // The misfits come in the order of the nodes asked about.
            let mut misfits = misfits.into_iter().peekable();
            let mut kept = Vec::with_capacity(survivors.len());
            for id in survivors {
                let Some(misfit) = misfits.next_if(|m| m.node == id) else {
                    kept.push(id);
                    continue;
                };
                match misfit.status.code {
                    Code::Success | Code::Skip => kept.push(id),
                    Code::Error => return Err(CycleError::status("Filter", plugin, &misfit.status)),
                    _ => failures.push((id, misfit.status)),
                }
            }
            if misfits.next().is_some() {
                return Err(CycleError::plugin(
                    "Filter",
                    plugin,
                    "returned nodes it was not asked about, or out of order",
                ));
            }
            survivors = kept;
        }
        Ok((survivors, failures))
    }

    /// Upstream's second filter pass: the pods nominated to node `id` (after a preemption, not
    /// bound yet) whose priority is at least the pod's count as if they were on it already, so
    /// a pod of equal or lower priority does not take the room preemption made for them. `None`
    /// when the pod still fits, else why not. Plugins that read the node see the nominated pods
    /// (resources, ports, pod count, pods); state a PreFilter computed beforehand does not
    /// include them, as there is no `AddPod` extension.
    fn fits_with_nominated(
        &self,
        nodes: &mut NodeLog,
        pod: &PodSnapshot,
        states: &[Vec<u8>],
        skipped: &[bool],
        id: NodeId,
    ) -> Result<Option<Status>, CycleError> {
        let ahead: Vec<PodSummary> =
            nodes.nominated(id).iter().filter(|p| p.priority >= pod.priority && p.uid != pod.uid).cloned().collect();
        if ahead.is_empty() {
            return Ok(None);
        }
        let Some(grown) = nodes.get(id).map(|node| with_pods(node, &ahead)) else { return Ok(None) };
        nodes.with_trial(grown, |nodes| self.filter_node(nodes, pod, states, skipped, id)).unwrap_or(Ok(None))
    }

    /// Runs the Filter plugins on one node: `None` when it fits, else the first failure.
    fn filter_node(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        states: &[Vec<u8>],
        skipped: &[bool],
        id: NodeId,
    ) -> Result<Option<Status>, CycleError> {
        let (_, failures) = self.run_filters(nodes, pod, states, skipped, vec![id])?;
        Ok(failures.into_iter().next().map(|(_, status)| status))
    }

    /// Runs PostFilter until a plugin succeeds. The log is lent to a [`DryRun`] for the call, so
    /// the plugin's `fits-without` can run this profile's filters on a node without some pods.
    /// Returns the nomination, if any, and the last failing plugin's reasons.
    fn post_filter(
        &self,
        nodes: &mut NodeLog,
        pod: &PodSnapshot,
        states: &[Vec<u8>],
        skipped: &[bool],
        filtered: &[NodeStatus],
    ) -> Result<(Option<Preemption>, Option<String>), CycleError> {
        if self.with(ExtensionPoints::POST_FILTER).next().is_none() {
            return Ok((None, None));
        }
        let base = nodes.host().cloned();
        let log = Arc::new(Mutex::new(std::mem::take(nodes)));
        let dry_run: Arc<dyn SchedulerHost> = Arc::new(DryRun {
            log: Arc::clone(&log),
            profile: self.clone(),
            states: states.to_vec(),
            skipped: skipped.to_vec(),
            pod: pod.clone(),
            base,
        });
        let mut outcome = Ok(None);
        let mut failure = None;
        for (index, plugin) in self.with(ExtensionPoints::POST_FILTER) {
            match plugin.handle.post_filter(&log, pod, &states[index], filtered, &dry_run) {
                Ok(result) if result.status.code == Code::Success => {
                    outcome = Ok(Some(result));
                    break;
                }
                Ok(result) => {
                    if !result.status.reasons.is_empty() {
                        failure = Some(result.status.reasons.join(" "));
                    }
                }
                Err(e) => {
                    outcome = Err(CycleError::plugin("PostFilter", plugin, e));
                    break;
                }
            }
        }
        drop(dry_run);
        *nodes = std::mem::take(&mut *log.lock().unwrap_or_else(PoisonError::into_inner));
        let Some(result) = outcome? else { return Ok((None, failure)) };
        let node = result.nominated_node.and_then(|id| nodes.get(id)).map(|n| n.name.clone());
        Ok((node.map(|node| Preemption { node, victims: result.victims }), None))
    }

    /// Runs PreScore and Score (normalised, weighted) and picks the best node; ties are broken
    /// at random, as upstream. A plugin whose PreScore answers `Skip` (as its error) is not
    /// scored, as upstream's skip-score set.
    fn score(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        states: &mut [Vec<u8>],
        feasible: &[NodeId],
    ) -> Result<NodeId, CycleError> {
        let mut skipped = vec![false; self.plugins.len()];
        for (index, plugin) in self.with(ExtensionPoints::PRE_SCORE) {
            match plugin
                .handle
                .pre_score(nodes, pod, &states[index], feasible)
                .map_err(|e| CycleError::plugin("PreScore", plugin, e))?
            {
                Ok(state) => states[index] = state,
                Err(outcome) if outcome.code == Code::Skip => skipped[index] = true,
                Err(outcome) => return Err(CycleError::status("PreScore", plugin, &outcome)),
            }
        }
        let mut totals = vec![0i64; feasible.len()];
        for (index, plugin) in self.with(ExtensionPoints::SCORE) {
            if skipped[index] {
                continue;
            }
            let normalize = plugin.points.contains(ExtensionPoints::NORMALIZE_SCORE);
            let scores = plugin
                .handle
                .score(nodes, pod, &states[index], feasible, normalize)
                .map_err(|e| CycleError::plugin("Score", plugin, e))?
                .map_err(|status| CycleError::status("Score", plugin, &status))?;
            if scores.len() != feasible.len() {
                return Err(CycleError::plugin("Score", plugin, "returned a score count unlike the node count"));
            }
            for (total, score) in totals.iter_mut().zip(scores) {
                *total += score * plugin.weight;
            }
        }
        let mut best = (i64::MIN, feasible[0]);
        let mut ties = 0u32;
        for (&id, &total) in feasible.iter().zip(&totals) {
            if total > best.0 {
                best = (total, id);
                ties = 1;
            } else if total == best.0 {
                ties += 1;
                if rand::random_range(0..ties) == 0 {
                    best.1 = id;
                }
            }
        }
        Ok(best.1)
    }

    /// Reserve, Permit, PreBind and Bind for a decided pod. `Ok(true)` means a Bind plugin
    /// asked the host to write the binding; `Ok(false)` that one bound it itself.
    pub fn bind_plugins(&self, nodes: &NodeLog, pod: &PodSnapshot, decision: &Decision) -> Result<bool, CycleError> {
        let node = decision.node_id;
        let cycle_states = &decision.states;
        for (index, plugin) in self.with(ExtensionPoints::RESERVE) {
            let status = plugin
                .handle
                .reserve(nodes, pod, &cycle_states[index], node)
                .map_err(|e| CycleError::plugin("Reserve", plugin, e))?;
            if !status.is_success() {
                self.unreserve(nodes, pod, decision);
                return Err(CycleError::status("Reserve", plugin, &status));
            }
        }
        let result = self.permit_and_bind(nodes, pod, decision);
        if result.is_err() {
            self.unreserve(nodes, pod, decision);
        }
        result
    }

    fn permit_and_bind(&self, nodes: &NodeLog, pod: &PodSnapshot, decision: &Decision) -> Result<bool, CycleError> {
        let (node, cycle_states) = (decision.node_id, &decision.states);
        for (index, plugin) in self.with(ExtensionPoints::PERMIT) {
            let result = plugin
                .handle
                .permit(nodes, pod, &cycle_states[index], node)
                .map_err(|e| CycleError::plugin("Permit", plugin, e))?;
            if !result.status.is_success() {
                return Err(CycleError::status("Permit", plugin, &result.status));
            }
        }
        for (index, plugin) in self.with(ExtensionPoints::PRE_BIND) {
            let status = plugin
                .handle
                .pre_bind(nodes, pod, &cycle_states[index], node)
                .map_err(|e| CycleError::plugin("PreBind", plugin, e))?;
            if !status.is_success() {
                return Err(CycleError::status("PreBind", plugin, &status));
            }
        }
        for (index, plugin) in self.with(ExtensionPoints::BIND) {
            let status = plugin
                .handle
                .bind(nodes, pod, &cycle_states[index], node)
                .map_err(|e| CycleError::plugin("Bind", plugin, e))?;
            match status.code {
                Code::Skip => {}
                Code::Success => return Ok(true),
                _ => return Err(CycleError::status("Bind", plugin, &status)),
            }
        }
        Err(CycleError::Plugin { point: "Bind", plugin: String::new(), message: "no bind plugin bound the pod".into() })
    }

    fn unreserve(&self, nodes: &NodeLog, pod: &PodSnapshot, decision: &Decision) {
        for (index, plugin) in self.with(ExtensionPoints::RESERVE) {
            if let Err(e) = plugin.handle.unreserve(nodes, pod, &decision.states[index], decision.node_id) {
                tracing::warn!(plugin = %plugin.name, error = %e, "unreserve failed");
            }
        }
    }

    /// Runs PostBind.
    pub fn post_bind(&self, nodes: &NodeLog, pod: &PodSnapshot, decision: &Decision) {
        for (index, plugin) in self.with(ExtensionPoints::POST_BIND) {
            if let Err(e) = plugin.handle.post_bind(nodes, pod, &decision.states[index], decision.node_id) {
                tracing::warn!(plugin = %plugin.name, error = %e, "post-bind failed");
            }
        }
    }
}

/// Preemption's dry run, lent to a PostFilter call: runs a profile's PreFilter and Filter plugins
/// for one pod on one node as if some of its pods were gone, then puts the node back.
struct DryRun {
    log: Arc<Mutex<NodeLog>>,
    profile: Profile,
    /// The cycle's PreFilter states and Skips, kept for the plugins that do not see pods.
    states: Vec<Vec<u8>>,
    skipped: Vec<bool>,
    pod: PodSnapshot,
    /// The view the log carried, for the rest of the `scheduler-host` import.
    base: Option<Arc<dyn SchedulerHost>>,
}

impl DryRun {
    /// PreFilter again, then Filter on `node`. As upstream's dry run updates only the PreFilter
    /// state of plugins that account for other pods (its `AddPod`/`RemovePod` extensions) and
    /// keeps the cycle's for the rest, only the plugins that see pods run PreFilter again; the
    /// others keep the cycle's state and Skip. A plugin that Skipped in the cycle stays skipped,
    /// as upstream's extensions are not called for skipped plugins: what made it skip (no
    /// constraint of its own, no existing pod's term) cannot appear by taking pods away.
    fn filters(&self, log: &NodeLog, node: NodeId) -> Result<(), Vec<String>> {
        let mut states = self.states.clone();
        let mut skipped = self.skipped.clone();
        let failed = |plugin: &ProfilePlugin, e: PluginError| vec![format!("plugin {} failed: {e}", plugin.name)];
        let again = self.profile.with(ExtensionPoints::PRE_FILTER).filter(|(i, p)| p.sees_pods && !self.skipped[*i]);
        for (index, plugin) in again {
            let result = plugin.handle.pre_filter(log, &self.pod).map_err(|e| failed(plugin, e))?;
            match result.status.code {
                Code::Success => {}
                Code::Skip => skipped[index] = true,
                _ => return Err(result.status.reasons),
            }
            if result.nodes.is_some_and(|allowed| !allowed.contains(&node)) {
                return Err(vec![format!("node(s) didn't satisfy plugin {}", plugin.name)]);
            }
            states[index] = result.state;
        }
        match self.profile.filter_node(log, &self.pod, &states, &skipped, node) {
            Ok(None) => Ok(()),
            Ok(Some(refusal)) => Err(refusal.reasons),
            Err(e) => Err(vec![e.to_string()]),
        }
    }
}

/// `node` with the pods `added` on it too: their requests, ports and count added.
fn with_pods(node: &NodeInfo, added: &[PodSummary]) -> NodeInfo {
    let mut grown = node.clone();
    grown.pod_count = node.pod_count.saturating_add(u32::try_from(added.len()).unwrap_or(u32::MAX));
    for pod in added {
        for amount in &pod.requests {
            match grown.requested.iter_mut().find(|r| r.name == amount.name) {
                Some(total) => total.milli_value += amount.milli_value,
                None => grown.requested.push(amount.clone()),
            }
        }
        grown.used_ports.extend(pod.host_ports.iter().cloned());
        grown.pods.push(pod.clone());
    }
    grown
}

/// `node` without the pods whose UIDs are in `removed`: their requests, ports and count taken off.
#[must_use]
pub fn without_pods(node: &NodeInfo, removed: &[String]) -> NodeInfo {
    let mut trimmed = node.clone();
    let (gone, kept): (Vec<_>, Vec<_>) = node.pods.iter().cloned().partition(|p| removed.contains(&p.uid));
    trimmed.pods = kept;
    trimmed.pod_count = node.pod_count.saturating_sub(u32::try_from(gone.len()).unwrap_or(u32::MAX));
    for pod in &gone {
        for amount in &pod.requests {
            if let Some(total) = trimmed.requested.iter_mut().find(|r| r.name == amount.name) {
                total.milli_value -= amount.milli_value;
            }
        }
        for port in &pod.host_ports {
            if let Some(at) = trimmed.used_ports.iter().position(|p| p == port) {
                trimmed.used_ports.remove(at);
            }
        }
    }
    trimmed
}

impl SchedulerHost for DryRun {
    fn namespace_labels(&self, name: &str) -> Option<Vec<Label>> {
        self.base.as_ref()?.namespace_labels(name)
    }

    fn disruption_budgets(&self, namespace: &str) -> Vec<capstan_wasm::scheduler::DisruptionBudget> {
        self.base.as_ref().map(|b| b.disruption_budgets(namespace)).unwrap_or_default()
    }

    fn workload_selectors(&self, namespace: &str, labels: &[Label]) -> Vec<String> {
        self.base.as_ref().map(|b| b.workload_selectors(namespace, labels)).unwrap_or_default()
    }

    fn fits_without(&self, node: NodeId, removed: &[String]) -> Result<(), Vec<String>> {
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(original) = log.get(node) else { return Err(vec![format!("node {node} is gone")]) };
        // As upstream's dry run: pods nominated to the node of at least this pod's priority count
        // as if placed, so two preemptors do not both count on the same room.
        let ahead: Vec<PodSummary> = log
            .nominated(node)
            .iter()
            .filter(|p| p.priority >= self.pod.priority && p.uid != self.pod.uid && !removed.contains(&p.uid))
            .cloned()
            .collect();
        let trimmed = without_pods(original, removed);
        let trimmed = if ahead.is_empty() { trimmed } else { with_pods(&trimmed, &ahead) };
        log.with_trial(trimmed, |log| self.filters(log, node))
            .unwrap_or_else(|| Err(vec![format!("node {node} is gone")]))
    }
}

/// Profiles by scheduler name.
pub type Profiles = BTreeMap<String, Arc<Profile>>;

#[cfg(test)]
mod tests {
    use super::{ExtensionPoints, Profile, Status, diagnosis, feasible_nodes_to_find};
    use capstan_wasm::scheduler::Code;

    #[test]
    fn feasible_nodes_follow_upstream_percentages() {
        let cases = [
            (50, 0, 50),
            (100, 0, 100),
            (1000, 0, 420),
            (5000, 0, 500),
            (5000, 50, 2500),
            (200, 10, 100),
            (300, 100, 300),
        ];
        for (nodes, pct, expected) in cases {
            assert_eq!(feasible_nodes_to_find(nodes, pct), expected, "{nodes} nodes at {pct}%");
        }
    }

    #[test]
    fn diagnosis_counts_reasons_like_kube_scheduler() {
        let status = |reason: &str| Status { code: Code::Unschedulable, reasons: vec![reason.to_owned()] };
        let failures = [
            (0, status("Insufficient cpu")),
            (1, status("node(s) had untolerated taint {dedicated: gpu}")),
            (2, status("Insufficient cpu")),
        ];
        assert_eq!(
            diagnosis(3, &failures),
            "0/3 nodes are available: 1 node(s) had untolerated taint {dedicated: gpu}, 2 Insufficient cpu."
        );
        assert_eq!(diagnosis(0, &[]), "0/0 nodes are available.");
    }

    /// One slow batch (an instance brought up to date with every node) does not make filtering
    /// look costly for long; costly batch after batch does.
    #[test]
    fn filter_cost_falls_fast_and_rises_slowly() {
        use std::time::Duration;
        let cost = super::FilterCost::default();
        cost.record(500, Duration::from_millis(100), 1);
        assert_eq!(cost.per_node(), 200_000 / 16, "an outlier moves it a sixteenth of the way");
        for _ in 0..12 {
            cost.record(500, Duration::from_micros(10), 1);
        }
        assert!(cost.per_node() < 100, "cheap batches bring it back at once: {}", cost.per_node());
        for _ in 0..60 {
            cost.record(500, Duration::from_micros(500), 2);
        }
        assert!(cost.per_node() > 1_900, "2 µs per node, batch after batch: {}", cost.per_node());
    }

    /// `parallelism` splits a large batch across threads, each share on instances of its own;
    /// the nodes kept and the reasons for the others are those one thread finds, in order.
    #[test]
    fn filtering_in_parallel_finds_what_one_thread_finds() {
        use std::sync::Arc;

        use capstan_wasm::{Runtime, RuntimeConfig};
        use k8s_openapi::api::core::v1::{Node, Pod};
        use serde_json::json;

        let runtime = Runtime::new(RuntimeConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let builtin: crate::BuiltinComponents = Arc::new(|name: &str| {
            capstan_components::get(name).map(<[u8]>::to_vec).ok_or_else(|| format!("{name} is not built"))
        });
        let load = |threads| {
            let config = crate::SchedulerConfig { parallelism: Some(threads), ..crate::SchedulerConfig::default() };
            let profile = crate::load_profiles(&runtime, &config, &builtin).unwrap_or_else(|e| panic!("{e}")).remove(0);
            // Costly enough per node that 1,000 nodes fill four shares.
            profile.filter_cost.set_per_node(super::MIN_SHARE_NANOS);
            profile
        };
        let mut cache = crate::cache::Cache::default();
        for i in 0..1000 {
            let taints = if i % 3 == 0 {
                json!([{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}])
            } else {
                json!([])
            };
            let cpu = if i % 5 == 0 { "1" } else { "4" };
            let node: Node = serde_json::from_value(json!({"metadata": {"name": format!("n{i}")},
                "spec": {"taints": taints}, "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"}}}))
            .unwrap_or_else(|e| panic!("{e}"));
            cache.upsert_node(&node);
        }
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "uid-p"},
            "spec": {"containers": [{"name": "c", "image": "pause", "resources": {"requests": {"cpu": "2"}}}]}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let info = crate::pod::pod_info(&pod).unwrap_or_else(|e| panic!("{e}"));
        let ids = cache.nodes().handles().to_vec();
        let filter = |profile: &Profile| {
            let (mut states, mut skipped) =
                (vec![Vec::new(); profile.plugins.len()], vec![false; profile.plugins.len()]);
            for (index, plugin) in profile.with(ExtensionPoints::PRE_FILTER) {
                let result = plugin.handle.pre_filter(cache.nodes(), &info).unwrap_or_else(|e| panic!("{e}"));
                skipped[index] = result.status.code == Code::Skip;
                states[index] = result.state;
            }
            let calls = |p: &Profile| -> u64 {
                p.plugins.iter().filter_map(|p| p.handle.wasm()).map(|w| w.metrics().calls).sum()
            };
            let before = calls(profile);
            let found =
                profile.filter_batch(cache.nodes(), &info, &states, &skipped, &ids).unwrap_or_else(|e| panic!("{e}"));
            (found, calls(profile) - before)
        };
        let ((mut alone, alone_calls), (mut shared, shared_calls)) = (filter(&load(1)), filter(&load(4)));
        assert_eq!(alone.0.len(), 1000 - 334 - 133, "neither tainted nor too small");
        assert_eq!(alone.1.len(), 334 + 133);
        assert!(alone.1.iter().any(|(_, s)| s.reasons == ["Insufficient cpu"]), "{:?}", alone.1.first());
        assert!(shared.0 == alone.0, "the same nodes kept, in the same order");
        // Each share lists its failures plugin by plugin; upstream keeps them as a map by node.
        alone.1.sort_by_key(|(id, _)| *id);
        shared.1.sort_by_key(|(id, _)| *id);
        assert!(shared.1 == alone.1, "the same nodes refused for the same reasons");
        assert!(shared_calls > alone_calls, "four threads split the batch: {shared_calls} calls against {alone_calls}");
    }

    /// Upstream's two-pass filter (`addNominatedPods`): after a preemption, the preemptor is
    /// nominated to the node while its victims terminate; pods of equal or lower priority must
    /// not take the room made for it, higher-priority ones and what it leaves are free.
    #[cfg(feature = "native-plugins")]
    #[test]
    fn a_nominated_pod_holds_its_room_against_equal_or_lower_priority() {
        use k8s_openapi::api::core::v1::{Node, Pod};
        use serde_json::json;

        let profile = crate::native::load_profiles(&crate::SchedulerConfig::default())
            .unwrap_or_else(|e| panic!("{e}"))
            .remove(0);
        let node: Node = serde_json::from_value(json!({"metadata": {"name": "n1"},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}}))
        .unwrap_or_default();
        let pod = |name: &str, priority: i32, cpu: &str, nominated: Option<&str>| -> Pod {
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
                "spec": {"priority": priority, "containers": [{"name": "c", "image": "pause",
                    "resources": {"requests": {"cpu": cpu}}}]},
                "status": {"nominatedNodeName": nominated}
            }))
            .unwrap_or_default()
        };
        let mut cache = crate::cache::Cache::default();
        cache.upsert_node(&node);
        let waiting = pod("waiting", 100, "3", Some("n1"));
        cache.nominate(&waiting);
        let schedule = |cache: &mut crate::cache::Cache, pod: &Pod| {
            let info = crate::pod::pod_info(pod).unwrap_or_else(|e| panic!("{e}"));
            profile.schedule(cache.nodes_mut(), &info, &mut 0).map(|d| d.node).map_err(|e| e.to_string())
        };
        let low = schedule(&mut cache, &pod("low", 0, "2", None));
        assert!(low.as_ref().is_err_and(|e| e.contains("Insufficient cpu")), "a lower-priority pod: {low:?}");
        let equal = schedule(&mut cache, &pod("equal", 100, "2", None));
        assert!(equal.is_err(), "an equal-priority pod does not take the room either: {equal:?}");
        assert_eq!(schedule(&mut cache, &pod("small", 0, "1", None)), Ok("n1".to_owned()), "what is left is free");
        assert_eq!(schedule(&mut cache, &pod("high", 200, "2", None)), Ok("n1".to_owned()), "higher priority");
        assert_eq!(schedule(&mut cache, &waiting), Ok("n1".to_owned()), "the nominated pod itself fits");
        cache.nominate(&pod("waiting", 100, "3", None));
        assert_eq!(schedule(&mut cache, &pod("low", 0, "2", None)), Ok("n1".to_owned()), "nomination withdrawn");
    }
}
