//! NodeResourcesFit (Filter, Score): a pod fits a node when each resource it requests fits in
//! what the node has left and the node has room for one more pod; nodes are scored by the
//! configured strategy — `LeastAllocated` (the default), `MostAllocated` or
//! `RequestedToCapacityRatio` — over weighted resources (cpu and memory, weight 1, by default).
//!
//! Configuration follows upstream's `NodeResourcesFitArgs`:
//! `{"scoringStrategy": {"type": "MostAllocated", "resources": [{"name": "cpu", "weight": 1}],
//! "requestedToCapacityRatio": {"shape": [{"utilization": 0, "score": 10}, {"utilization": 100,
//! "score": 0}]}}, "ignoredResources": ["example.com/foo"]}`.

use capstan_plugin_sdk::scheduler::{
    Code, Column, ExtensionPoints, MAX_NODE_SCORE, NodeId, NodeInfo, NodeStatus, Nodes, PodInfo, SchedulerPlugin,
    Status, amount, misfits, parse_config,
};
use serde::Deserialize;

/// What scoring counts for a pod that requests no CPU: 100m, as upstream.
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// What scoring counts for a pod that requests no memory: 200 MiB (in thousandths of a byte).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024 * 1000;

/// The plugin's configuration.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct Args {
    /// How nodes are scored.
    pub scoring_strategy: ScoringStrategy,
    /// Resources the filter does not check.
    pub ignored_resources: Vec<String>,
}

/// How nodes are scored.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoringStrategy {
    /// The strategy.
    #[serde(rename = "type")]
    pub kind: StrategyKind,
    /// The resources scored and their weights.
    pub resources: Vec<WeightedResource>,
    /// The shape used by `RequestedToCapacityRatio`.
    pub requested_to_capacity_ratio: Option<RequestedToCapacityRatio>,
}

impl Default for ScoringStrategy {
    fn default() -> Self {
        Self {
            kind: StrategyKind::LeastAllocated,
            resources: vec![WeightedResource::new("cpu", 1), WeightedResource::new("memory", 1)],
            requested_to_capacity_ratio: None,
        }
    }
}

/// The scoring strategies.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
pub enum StrategyKind {
    /// Favour nodes with more left free.
    LeastAllocated,
    /// Favour nodes with less left free (bin packing).
    MostAllocated,
    /// Score by a piecewise-linear function of utilisation.
    RequestedToCapacityRatio,
}

/// A resource and its weight in the score.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WeightedResource {
    /// The resource name.
    pub name: String,
    /// Its weight.
    #[serde(default = "one")]
    pub weight: i64,
}

fn one() -> i64 {
    1
}

impl WeightedResource {
    fn new(name: &str, weight: i64) -> Self {
        Self { name: name.to_owned(), weight }
    }
}

/// `RequestedToCapacityRatio`'s shape.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequestedToCapacityRatio {
    /// Points of utilisation (0–100) and score (0–10), by ascending utilisation.
    pub shape: Vec<ShapePoint>,
}

/// One point of the shape.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ShapePoint {
    /// Utilisation in percent.
    pub utilization: i64,
    /// Score, 0 to 10.
    pub score: i64,
}

/// Upstream's reason for a full node.
pub const TOO_MANY_PODS: &str = "Too many pods";

/// The NodeResourcesFit plugin.
pub struct NodeResourcesFit {
    args: Args,
}

/// The pod's side of the checks, looked up once per call rather than once per node.
pub struct Requests {
    /// The resources the filter checks (positive, not `pods`, not ignored) and their requests.
    checked: Vec<(String, i64)>,
    /// The request scoring counts for each scored resource, in the strategy's order.
    scored: Vec<i64>,
}

impl SchedulerPlugin for NodeResourcesFit {
    type Cycle = Requests;

    fn configure(config: &str) -> Result<Self, String> {
        let args: Args = parse_config(config)?;
        let strategy = &args.scoring_strategy;
        if strategy.kind == StrategyKind::RequestedToCapacityRatio
            && strategy.requested_to_capacity_ratio.as_ref().is_none_or(|r| r.shape.is_empty())
        {
            return Err("RequestedToCapacityRatio needs requestedToCapacityRatio.shape".to_owned());
        }
        if strategy.resources.iter().any(|r| r.weight <= 0) {
            return Err("resource weights must be positive".to_owned());
        }
        Ok(Self { args })
    }

    fn cycle(&self, pod: &PodInfo, _state: &[u8]) -> Result<Requests, Status> {
        Ok(self.requests(pod))
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::FILTER | ExtensionPoints::SCORE
    }

    fn filter(&self, _pod: &PodInfo, requests: &Requests, node: &NodeInfo) -> Status {
        verdict(insufficient_with(requests, node))
    }

    fn filter_batch(&self, _pod: &PodInfo, requests: &Requests, nodes: &Nodes, ids: &[NodeId]) -> Vec<NodeStatus> {
        let table = nodes.resources();
        let pods = table.column("pods");
        let columns: Vec<Option<Column>> = requests.checked.iter().map(|(name, _)| table.column(name)).collect();
        misfits(ids, |id| {
            let allowed_pods = table.allocatable(id, pods) / 1000;
            let free = |i: usize| table.allocatable(id, columns[i]) - table.requested(id, columns[i]);
            verdict(insufficient_by(requests, allowed_pods, table.pod_count(id), free))
        })
    }

    fn score(&self, _pod: &PodInfo, requests: &Requests, node: &NodeInfo) -> Result<i64, Status> {
        Ok(self.score_with(requests, node))
    }

    fn score_batch(
        &self,
        _pod: &PodInfo,
        requests: &Requests,
        nodes: &Nodes,
        ids: &[NodeId],
    ) -> Result<Vec<i64>, Status> {
        let table = nodes.resources();
        let columns: Vec<Option<Column>> =
            self.args.scoring_strategy.resources.iter().map(|r| table.column(&r.name)).collect();
        Ok(ids
            .iter()
            .map(|&id| {
                self.score_by(requests, |i| (table.allocatable(id, columns[i]), table.requested(id, columns[i])))
            })
            .collect())
    }
}

impl NodeResourcesFit {
    /// The plugin with configuration `args`.
    #[must_use]
    pub fn new(args: Args) -> Self {
        Self { args }
    }

    /// The pod's side of the filter and the score.
    #[must_use]
    pub fn requests(&self, pod: &PodInfo) -> Requests {
        let checked = pod
            .requests
            .iter()
            .filter(|r| r.milli_value > 0 && r.name != "pods" && !self.args.ignored_resources.contains(&r.name))
            .map(|r| (r.name.clone(), r.milli_value))
            .collect();
        let scored =
            self.args.scoring_strategy.resources.iter().map(|r| non_zero_request(&pod.requests, &r.name)).collect();
        Requests { checked, scored }
    }

    /// Why `pod` does not fit `node`: one reason per short resource, none when it fits.
    #[must_use]
    pub fn insufficient(&self, pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
        insufficient_with(&self.requests(pod), node)
    }

    /// The node's score for the pod, 0–100.
    #[must_use]
    pub fn node_score(&self, pod: &PodInfo, node: &NodeInfo) -> i64 {
        self.score_with(&self.requests(pod), node)
    }

    fn score_with(&self, requests: &Requests, node: &NodeInfo) -> i64 {
        let resources = &self.args.scoring_strategy.resources;
        self.score_by(requests, |i| (node.allocatable(&resources[i].name), node.requested(&resources[i].name)))
    }

    /// The score, given each scored resource's (allocatable, requested) on the node by index.
    fn score_by(&self, requests: &Requests, node: impl Fn(usize) -> (i64, i64)) -> i64 {
        let strategy = &self.args.scoring_strategy;
        let (mut total, mut weights) = (0, 0);
        for (i, (resource, request)) in strategy.resources.iter().zip(&requests.scored).enumerate() {
            let (capacity, requested) = node(i);
            let requested = requested + request;
            let score = match strategy.kind {
                StrategyKind::LeastAllocated => least_allocated(requested, capacity),
                StrategyKind::MostAllocated => most_allocated(requested, capacity),
                StrategyKind::RequestedToCapacityRatio => {
                    let shape = strategy.requested_to_capacity_ratio.as_ref().map_or(&[][..], |r| &r.shape[..]);
                    ratio_score(shape, requested, capacity)
                }
            };
            total += score * resource.weight;
            weights += resource.weight;
        }
        if weights == 0 { 0 } else { total / weights }
    }
}

/// Why a pod with `requests` does not fit `node`: one reason per short resource.
fn insufficient_with(requests: &Requests, node: &NodeInfo) -> Vec<String> {
    let free = |i: usize| {
        let name = &requests.checked[i].0;
        node.allocatable(name) - node.requested(name)
    };
    insufficient_by(requests, node.allocatable("pods") / 1000, node.pod_count, free)
}

/// Why a pod with `requests` does not fit a node allowing `allowed_pods` and holding
/// `pod_count`, where `free(i)` is what is left of the `i`th checked resource.
fn insufficient_by(requests: &Requests, allowed_pods: i64, pod_count: u32, free: impl Fn(usize) -> i64) -> Vec<String> {
    let mut reasons = Vec::new();
    if allowed_pods < i64::from(pod_count) + 1 {
        reasons.push(TOO_MANY_PODS.to_owned());
    }
    for (i, (name, request)) in requests.checked.iter().enumerate() {
        if *request > free(i) {
            reasons.push(format!("Insufficient {name}"));
        }
    }
    reasons
}

fn verdict(reasons: Vec<String>) -> Status {
    if reasons.is_empty() { Status::success() } else { Status::new(Code::Unschedulable, reasons) }
}

/// The pod's request for scoring: CPU and memory count a default when not requested.
#[must_use]
pub fn non_zero_request(requests: &[capstan_plugin_sdk::scheduler::ResourceAmount], name: &str) -> i64 {
    let value = amount(requests, name);
    match name {
        "cpu" if value == 0 => DEFAULT_MILLI_CPU_REQUEST,
        "memory" if value == 0 => DEFAULT_MEMORY_REQUEST,
        _ => value,
    }
}

/// `(capacity - requested) * 100 / capacity`; 0 when full or over.
#[must_use]
pub fn least_allocated(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 || requested > capacity {
        return 0;
    }
    (capacity - requested) * MAX_NODE_SCORE / capacity
}

/// `requested * 100 / capacity`, capped at 100.
#[must_use]
pub fn most_allocated(requested: i64, capacity: i64) -> i64 {
    if capacity == 0 {
        return 0;
    }
    requested.min(capacity) * MAX_NODE_SCORE / capacity
}

/// The shape's score at this utilisation, interpolated, scaled from 0–10 to 0–100.
#[must_use]
pub fn ratio_score(shape: &[ShapePoint], requested: i64, capacity: i64) -> i64 {
    let utilization = if capacity == 0 { 100 } else { (requested * 100 / capacity).min(100) };
    let scale = MAX_NODE_SCORE / 10;
    let Some(first) = shape.first() else { return 0 };
    if utilization <= first.utilization {
        return first.score * scale;
    }
    for pair in shape.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if utilization <= b.utilization {
            let span = (b.utilization - a.utilization).max(1);
            let value = a.score * scale + (b.score - a.score) * scale * (utilization - a.utilization) / span;
            return value;
        }
    }
    shape.last().map_or(0, |last| last.score * scale)
}

capstan_plugin_sdk::scheduler_plugin!(NodeResourcesFit);

#[cfg(test)]
mod tests {
    use super::{Args, NodeResourcesFit, SchedulerPlugin, ShapePoint, StrategyKind, ratio_score};
    use capstan_plugin_sdk::scheduler::{NodeInfo, PodInfo, resources};

    const GI: i64 = 1024 * 1024 * 1024 * 1000;

    fn node(cpu: i64, memory: i64, requested_cpu: i64, requested_memory: i64, pods: u32) -> NodeInfo {
        let mut node = NodeInfo::named(1, "n1");
        node.allocatable = resources(&[("cpu", cpu), ("memory", memory), ("pods", 110_000)]);
        node.requested = resources(&[("cpu", requested_cpu), ("memory", requested_memory)]);
        node.pod_count = pods;
        node
    }

    fn pod(cpu: i64, memory: i64) -> PodInfo {
        let mut pod = PodInfo::named("default", "p");
        pod.requests = resources(&[("cpu", cpu), ("memory", memory)]);
        pod
    }

    #[test]
    fn filter_names_every_short_resource() {
        let fit = NodeResourcesFit::new(Args::default());
        let cases: [(NodeInfo, PodInfo, &[&str]); 5] = [
            (node(4000, 8 * GI, 0, 0, 0), pod(1000, GI), &[]),
            (node(4000, 8 * GI, 3500, 0, 0), pod(1000, GI), &["Insufficient cpu"]),
            (node(4000, 8 * GI, 3500, 8 * GI, 0), pod(1000, GI), &["Insufficient cpu", "Insufficient memory"]),
            (node(4000, 8 * GI, 3000, 7 * GI, 0), pod(1000, GI), &[]),
            (node(4000, 8 * GI, 0, 0, 110), pod(0, 0), &["Too many pods"]),
        ];
        for (node, pod, reasons) in cases {
            assert_eq!(fit.insufficient(&pod, &node), reasons, "{:?} {:?}", node.requested, pod.requests);
        }
    }

    /// The batch path reads the dense tables of `Nodes`; it must agree with the per-node path,
    /// including resources only some nodes list (an extended resource appearing after the rest).
    #[test]
    fn batches_agree_with_single_nodes() {
        use capstan_plugin_sdk::scheduler::Nodes;
        let mut nodes = vec![
            node(4000, 8 * GI, 0, 0, 0),
            node(4000, 8 * GI, 3500, 0, 0),
            node(4000, 8 * GI, 3500, 8 * GI, 0),
            node(4000, 8 * GI, 0, 0, 110),
            node(1000, GI, 0, 0, 0),
        ];
        nodes[4].allocatable.push(capstan_plugin_sdk::scheduler::ResourceAmount {
            name: "example.com/gpu".to_owned(),
            milli_value: 2000,
        });
        for (i, n) in nodes.iter_mut().enumerate() {
            n.id = u32::try_from(i).unwrap_or_default();
        }
        let set = Nodes::from_nodes(nodes.clone());
        let ids: Vec<u32> = (0..5).collect();
        let mut gpu = pod(500, GI);
        gpu.requests.push(capstan_plugin_sdk::scheduler::ResourceAmount {
            name: "example.com/gpu".to_owned(),
            milli_value: 1000,
        });
        for kind in ["LeastAllocated", "MostAllocated"] {
            let config = format!(r#"{{"scoringStrategy": {{"type": "{kind}"}}}}"#);
            let fit = NodeResourcesFit::configure(&config).unwrap_or_else(|e| panic!("{e}"));
            for pod in [pod(1000, GI), pod(0, 0), gpu.clone()] {
                let requests = fit.requests(&pod);
                let reasons = |s: capstan_plugin_sdk::scheduler::Status| (s.code, s.reasons);
                let single: Vec<_> = nodes
                    .iter()
                    .map(|n| (n.id, fit.filter(&pod, &requests, n)))
                    .filter(|(_, s)| !s.is_success())
                    .map(|(id, s)| (id, reasons(s)))
                    .collect();
                let batch: Vec<_> = fit
                    .filter_batch(&pod, &requests, &set, &ids)
                    .into_iter()
                    .map(|misfit| (misfit.node, reasons(misfit.status)))
                    .collect();
                assert_eq!(batch, single, "{kind} {:?}", pod.requests);
                let single: Vec<_> = nodes.iter().map(|n| fit.node_score(&pod, n)).collect();
                let batch = fit.score_batch(&pod, &requests, &set, &ids).map_err(|s| s.reasons);
                assert_eq!(batch, Ok(single), "{kind} {:?}", pod.requests);
            }
        }
    }

    #[test]
    fn extended_resources_the_node_lacks_do_not_fit() {
        let fit = NodeResourcesFit::new(Args::default());
        let mut gpu_pod = pod(0, 0);
        gpu_pod.requests = resources(&[("example.com/gpu", 1000)]);
        assert_eq!(fit.insufficient(&gpu_pod, &node(4000, GI, 0, 0, 0)), ["Insufficient example.com/gpu"]);
        let ignoring = NodeResourcesFit::configure(r#"{"ignoredResources": ["example.com/gpu"]}"#);
        assert!(ignoring.is_ok_and(|fit| fit.insufficient(&gpu_pod, &node(4000, GI, 0, 0, 0)).is_empty()));
    }

    /// Upstream's formulas: LeastAllocated scores the free fraction, MostAllocated the used one,
    /// averaged over resources by weight.
    #[test]
    fn strategies_score_as_documented() {
        let cases = [
            // node cpu 4, mem 8Gi, 2 cpu + 4Gi requested already; pod 1 cpu + 2Gi → 75% used.
            ("LeastAllocated", 25),
            ("MostAllocated", 75),
        ];
        for (kind, expected) in cases {
            let config = format!(r#"{{"scoringStrategy": {{"type": "{kind}"}}}}"#);
            let fit = NodeResourcesFit::configure(&config).unwrap_or_else(|e| panic!("{e}"));
            let score = fit.node_score(&pod(1000, 2 * GI), &node(4000, 8 * GI, 2000, 4 * GI, 1));
            assert_eq!(score, expected, "{kind}");
        }
    }

    #[test]
    fn pods_without_requests_count_the_default_request() {
        let fit = NodeResourcesFit::new(Args::default());
        // 100m of 1000m cpu → 90; 200Mi of 2000Mi memory → 90.
        let score = fit.node_score(&pod(0, 0), &node(1000, 2000 * 1024 * 1024 * 1000, 0, 0, 0));
        assert_eq!(score, 90);
    }

    #[test]
    fn requested_to_capacity_ratio_interpolates_the_shape() {
        let shape = [ShapePoint { utilization: 0, score: 0 }, ShapePoint { utilization: 100, score: 10 }];
        let cases = [(0, 100, 0), (50, 100, 50), (100, 100, 100), (150, 100, 100), (25, 100, 25)];
        for (requested, capacity, expected) in cases {
            assert_eq!(ratio_score(&shape, requested, capacity), expected, "{requested}/{capacity}");
        }
        assert!(NodeResourcesFit::configure(r#"{"scoringStrategy": {"type": "RequestedToCapacityRatio"}}"#).is_err());
        let kind: Result<StrategyKind, _> = serde_json::from_str(r#""MostAllocated""#);
        assert!(matches!(kind, Ok(StrategyKind::MostAllocated)));
    }
}
