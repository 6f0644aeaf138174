//! NodeResourcesBalancedAllocation (Score): favours nodes whose resource use stays balanced
//! across resources once the pod is placed: the score is `(1 - std) * 100` of the requested
//! fractions of each resource (cpu and memory by default).
//!
//! Configuration: `{"resources": [{"name": "cpu", "weight": 1}, {"name": "memory", "weight": 1}]}`.

use capstan_plugin_sdk::scheduler::{
    ExtensionPoints, MAX_NODE_SCORE, NodeInfo, PodInfo, SchedulerPlugin, Status, amount, parse_config,
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
    type Cycle = ();

    fn configure(config: &str) -> Result<Self, String> {
        let args: Args = parse_config(config)?;
        Ok(Self { resources: args.resources.into_iter().map(|r| r.name).collect() })
    }

    fn cycle(&self, _pod: &PodInfo, _state: &[u8]) -> Result<(), Status> {
        Ok(())
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::SCORE
    }

    fn score(&self, pod: &PodInfo, _cycle: &(), node: &NodeInfo) -> Result<i64, Status> {
        Ok(balanced_score(&self.resources, pod, node))
    }
}

/// `(1 - std) * 100` over the fractions `requested / allocatable` of `resources` the node has.
#[must_use]
pub fn balanced_score(resources: &[String], pod: &PodInfo, node: &NodeInfo) -> i64 {
    let fractions: Vec<f64> = resources
        .iter()
        .filter_map(|name| {
            let capacity = node.allocatable(name);
            (capacity > 0).then(|| {
                let requested = node.requested(name) + amount(&pod.requests, name);
                (requested as f64 / capacity as f64).min(1.0)
            })
        })
        .collect();
    let std = match fractions.as_slice() {
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
    use super::balanced_score;
    use capstan_plugin_sdk::scheduler::{NodeInfo, PodInfo, resources};

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
