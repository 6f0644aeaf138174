//! NodeResourcesBalancedAllocation (Score): favours nodes whose resource use stays balanced
//! across resources once the pod is placed: the score is `(1 - std) * 100` of the requested
//! fractions of each resource (cpu and memory by default).
//!
//! Configuration: `{"resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}]}`.

use capstan_plugin_sdk::scheduler::{
    Column, ExtensionPoints, MAX_NODE_SCORE, NodeId, NodeInfo, Nodes, PodInfo, SchedulerPlugin, Status, amount,
    parse_config,
};
use serde::Deserialize;

/// The plugin's configuration.
#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct Args {
    resources: Vec<Resource>,
}

#[derive(Debug, Deserialize)]
struct Resource {
    name: String,
    #[serde(default)]
    #[allow(dead_code, reason = "upstream accepts a weight here but balanced allocation ignores it")]
    weight: i64,
}

impl Default for Args {
    fn default() -> Self {
        Self { resources: ["cpu", "memory"].map(|name| Resource { name: name.to_owned(), weight: 1 }).into() }
    }
}

/// The NodeResourcesBalancedAllocation plugin.
pub struct BalancedAllocation {
    resources: Vec<String>,
}

impl SchedulerPlugin for BalancedAllocation {
    /// The pod's request of each configured resource, looked up once per call.
    type Cycle = Vec<i64>;

    fn configure(config: &str) -> Result<Self, String> {
        let args: Args = parse_config(config)?;
        Ok(Self { resources: args.resources.into_iter().map(|r| r.name).collect() })
    }

    fn cycle(&self, pod: &PodInfo, _state: &[u8]) -> Result<Vec<i64>, Status> {
        Ok(self.resources.iter().map(|name| amount(&pod.requests, name)).collect())
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::SCORE
    }

    fn score(&self, _pod: &PodInfo, requests: &Vec<i64>, node: &NodeInfo) -> Result<i64, Status> {
        Ok(score_with(&self.resources, requests, node))
    }

    fn score_batch(
        &self,
        _pod: &PodInfo,
        requests: &Vec<i64>,
        nodes: &Nodes,
        ids: &[NodeId],
    ) -> Result<Vec<i64>, Status> {
        let table = nodes.resources();
        let columns: Vec<Option<Column>> = self.resources.iter().map(|name| table.column(name)).collect();
        Ok(ids
            .iter()
            .map(|&id| score_by(requests, |i| (table.allocatable(id, columns[i]), table.requested(id, columns[i]))))
            .collect())
    }
}

/// `(1 - std) * 100` over the fractions `requested / allocatable` of `resources` the node has.
#[must_use]
pub fn balanced_score(resources: &[String], pod: &PodInfo, node: &NodeInfo) -> i64 {
    let requests: Vec<i64> = resources.iter().map(|name| amount(&pod.requests, name)).collect();
    score_with(resources, &requests, node)
}

/// [`balanced_score`] with the pod's requests of `resources` already looked up (`requests[i]`
/// is the request of `resources[i]`). Allocates nothing for up to eight resources: it runs for
/// every scored node of every cycle.
#[must_use]
pub fn score_with(resources: &[String], requests: &[i64], node: &NodeInfo) -> i64 {
    score_by(requests, |i| (node.allocatable(&resources[i]), node.requested(&resources[i])))
}

/// The score, given each resource's (allocatable, requested) on the node by index.
fn score_by(requests: &[i64], node: impl Fn(usize) -> (i64, i64)) -> i64 {
    const INLINE: usize = 8;
    let mut inline = [0f64; INLINE];
    let mut spilled = Vec::new();
    let mut len = 0;
    for (i, request) in requests.iter().enumerate() {
        let (capacity, requested) = node(i);
        if capacity <= 0 {
            continue;
        }
        let fraction = ((requested + request) as f64 / capacity as f64).min(1.0);
        if len < INLINE {
            inline[len] = fraction;
        } else {
            if spilled.is_empty() {
                spilled.extend_from_slice(&inline);
            }
            spilled.push(fraction);
        }
        len += 1;
    }
    let fractions = if len <= INLINE { &inline[..len] } else { &spilled[..] };
    let std = match fractions {
        [] | [_] => 0.0,
        [a, b] => (a - b).abs() / 2.0,
        many => {
            let mean = many.iter().sum::<f64>() / many.len() as f64;
            (many.iter().map(|f| (f - mean).powi(2)).sum::<f64>() / many.len() as f64).sqrt()
        }
    };
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

capstan_plugin_sdk::scheduler_plugin!(BalancedAllocation);

#[cfg(test)]
mod tests {
    use super::{BalancedAllocation, balanced_score};
    use capstan_plugin_sdk::scheduler::{NodeInfo, Nodes, PodInfo, SchedulerPlugin, resources};

    /// The batch path reads the dense tables of `Nodes`; it must agree with the per-node path.
    #[test]
    fn batches_agree_with_single_nodes() {
        let plugin = BalancedAllocation::configure("{}").unwrap_or_else(|e| panic!("{e}"));
        let nodes: Vec<NodeInfo> = [(500, 500), (1000, 0), (600, 400), (2000, 0)]
            .iter()
            .enumerate()
            .map(|(i, &(cpu, memory))| {
                let mut node = NodeInfo::named(u32::try_from(i).unwrap_or_default(), "n");
                node.allocatable = resources(&[("cpu", 1000), ("memory", 1000), ("pods", 110_000)]);
                node.requested = resources(&[("cpu", cpu), ("memory", memory)]);
                node
            })
            .collect();
        let mut pod = PodInfo::named("d", "p");
        pod.requests = resources(&[("cpu", 100), ("memory", 300)]);
        let cycle = plugin.cycle(&pod, &[]).unwrap_or_default();
        let single: Vec<i64> = nodes.iter().map(|n| balanced_score(&plugin.resources, &pod, n)).collect();
        let batch = plugin.score_batch(&pod, &cycle, &Nodes::from_nodes(nodes), &[0, 1, 2, 3]).map_err(|s| s.reasons);
        assert_eq!(batch, Ok(single));
    }

    #[test]
    fn balanced_use_scores_higher() {
        let names = ["cpu".to_owned(), "memory".to_owned()];
        let cases = [
            // (cpu requested, memory requested) on a 1000/1000 node, pod asks 0/0
            ((500, 500), 100),
            ((1000, 0), 50),
            ((600, 400), 90),
            ((2000, 0), 50),
        ];
        for ((cpu, memory), expected) in cases {
            let mut node = NodeInfo::named(1, "n1");
            node.allocatable = resources(&[("cpu", 1000), ("memory", 1000)]);
            node.requested = resources(&[("cpu", cpu), ("memory", memory)]);
            assert_eq!(balanced_score(&names, &PodInfo::named("d", "p"), &node), expected, "{cpu}/{memory}");
        }
    }
}
