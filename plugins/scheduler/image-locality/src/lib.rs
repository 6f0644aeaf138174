//! ImageLocality (PreScore, Score): a node that already holds the pod's container images scores
//! higher, by the images' sizes, each scaled by how widely the image is spread over the nodes so
//! that one popular image does not pull every pod onto the same nodes (upstream's
//! `imagelocality` plugin; Kubernetes docs, "Scheduling Framework" and "Scheduler
//! Configuration", list it in the default profile with weight 1).
//!
//! The sum is clamped between 23 MB and 1000 MB per container and mapped onto 0..=100.

use std::collections::BTreeMap;

use capstan_plugin_sdk::scheduler::state::{decode, encode};
use capstan_plugin_sdk::scheduler::{
    ExtensionPoints, MAX_NODE_SCORE, NodeInfo, Nodes, PodInfo, SchedulerPlugin, Status,
};
use serde::{Deserialize, Serialize};

/// Below this sum of image sizes a node scores 0 (upstream's `minThreshold`, 23 MB).
pub const MIN_THRESHOLD: i64 = 23 * 1024 * 1024;
/// The sum at which a node with one container scores 100 (upstream's `maxContainerThreshold`,
/// 1000 MB); it scales with the pod's container count.
pub const MAX_CONTAINER_THRESHOLD: i64 = 1000 * 1024 * 1024;

/// The ImageLocality plugin.
pub struct ImageLocality;

/// What PreScore learns once per pod: for each of its images, on how many nodes it is present.
#[derive(Default, Serialize, Deserialize)]
pub struct Spread {
    /// Image name (normalised) → nodes holding it.
    pub nodes_with: BTreeMap<String, u32>,
    /// All nodes.
    pub total_nodes: u32,
    /// The pod's images, normalised.
    pub images: Vec<String>,
}

/// An image name with its tag: `nginx` is `nginx:latest`, as the runtime pulls it.
#[must_use]
pub fn normalized(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') || last.contains('@') { image.to_owned() } else { format!("{image}:latest") }
}

/// The size of `image` on `node`, if the node holds it under any of its names.
fn size_on(node: &NodeInfo, image: &str) -> Option<i64> {
    node.images.iter().find(|(name, _)| normalized(name) == image).map(|(_, size)| *size)
}

/// Counts, for each of `images`, the nodes that hold it.
#[must_use]
pub fn spread<'a>(images: &[String], nodes: impl Iterator<Item = &'a NodeInfo>) -> Spread {
    let images: Vec<String> = images.iter().map(|i| normalized(i)).collect();
    let mut result = Spread { images: images.clone(), ..Spread::default() };
    for node in nodes {
        result.total_nodes += 1;
        for image in &images {
            if size_on(node, image).is_some() {
                *result.nodes_with.entry(image.clone()).or_default() += 1;
            }
        }
    }
    result
}

/// The node's score: the pod's images on it, each size scaled by its spread, clamped to the
/// thresholds for `containers` containers and mapped onto 0..=100.
#[must_use]
pub fn score(spread: &Spread, node: &NodeInfo, containers: usize) -> i64 {
    let total = i64::from(spread.total_nodes.max(1));
    let sum: i64 = spread
        .images
        .iter()
        .filter_map(|image| {
            let size = size_on(node, image)?;
            let holders = i64::from(spread.nodes_with.get(image).copied().unwrap_or(0));
            Some((size as f64 * holders as f64 / total as f64) as i64)
        })
        .sum();
    let max = MAX_CONTAINER_THRESHOLD * (containers.max(1) as i64);
    let clamped = sum.clamp(MIN_THRESHOLD, max);
    MAX_NODE_SCORE * (clamped - MIN_THRESHOLD) / (max - MIN_THRESHOLD)
}

impl SchedulerPlugin for ImageLocality {
    type Cycle = Spread;

    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn cycle(&self, _pod: &PodInfo, state: &[u8]) -> Result<Spread, Status> {
        Ok(decode(state)?.map(|(_, spread)| spread).unwrap_or_default())
    }

    fn extension_points(&self) -> ExtensionPoints {
        ExtensionPoints::PRE_SCORE | ExtensionPoints::SCORE
    }

    fn pre_score(&self, pod: &PodInfo, _cycle: &Spread, _nodes: &[&NodeInfo], all: &Nodes) -> Result<Vec<u8>, Status> {
        if all.with_images() == 0 {
            // No node reports images (as hollow nodes): Skip, known without looking at each.
            return Err(Status::skip());
        }
        let spread = spread(&pod.images, all.iter());
        if spread.nodes_with.is_empty() {
            // No node has any of the images: every node would score 0, so Skip Score.
            return Err(Status::skip());
        }
        encode(b's', &spread)
    }

    fn score(&self, pod: &PodInfo, spread: &Spread, node: &NodeInfo) -> Result<i64, Status> {
        Ok(score(spread, node, pod.images.len()))
    }
}

capstan_plugin_sdk::scheduler_plugin!(ImageLocality);

#[cfg(test)]
mod tests {
    use super::{ImageLocality, MAX_CONTAINER_THRESHOLD, MIN_THRESHOLD, Spread, normalized, score, spread};
    use capstan_plugin_sdk::scheduler::{Code, NodeInfo, Nodes, PodInfo, SchedulerPlugin};

    const MB: i64 = 1024 * 1024;

    fn node(id: u32, images: &[(&str, i64)]) -> NodeInfo {
        let mut node = NodeInfo::named(id, &format!("n{id}"));
        node.images = images.iter().map(|(name, size)| ((*name).to_owned(), *size)).collect();
        node
    }

    #[test]
    fn names_without_a_tag_mean_latest() {
        assert_eq!(normalized("nginx"), "nginx:latest");
        assert_eq!(normalized("registry:5000/app"), "registry:5000/app:latest");
        assert_eq!(normalized("nginx:1.25"), "nginx:1.25");
        assert_eq!(normalized("nginx@sha256:abc"), "nginx@sha256:abc");
    }

    /// Cases shaped like upstream's `image_locality_test.go`: sizes summed per node, scaled by
    /// spread, clamped to 23 MB … 1000 MB × containers.
    #[test]
    fn scores_follow_upstream_thresholds_and_spread() {
        let images = vec!["gcr.io/40:latest".to_owned(), "gcr.io/300".to_owned()];
        let a = node(0, &[("gcr.io/40:latest", 40 * MB), ("gcr.io/300:latest", 300 * MB)]);
        let b = node(1, &[("gcr.io/40:latest", 40 * MB)]);
        let empty = node(2, &[]);
        let nodes = [a.clone(), b.clone(), empty.clone()];
        let s = spread(&images, nodes.iter());
        assert_eq!(s.total_nodes, 3);
        // a: 40 MB × 2/3 + 300 MB × 1/3 = 126.67 MB; b: 26.67 MB; empty: below the minimum.
        let sum_a = (40 * MB * 2 / 3) + (300 * MB / 3);
        let expected_a = 100 * (sum_a - MIN_THRESHOLD) / (2 * MAX_CONTAINER_THRESHOLD - MIN_THRESHOLD);
        let cases = [
            (&a, expected_a),
            (&b, 100 * (40 * MB * 2 / 3 - MIN_THRESHOLD) / (2000 * MB - MIN_THRESHOLD)),
            (&empty, 0),
        ];
        for (node, expected) in cases {
            let got = score(&s, node, 2);
            assert!((got - expected).abs() <= 1, "{}: {got} vs {expected}", node.name);
        }
        let huge = node(3, &[("gcr.io/big:latest", 5000 * MB)]);
        let only = spread(&["gcr.io/big".to_owned()], [huge.clone()].iter());
        assert_eq!(score(&only, &huge, 1), 100, "sums above the maximum clamp to 100");
        assert_eq!(score(&only, &node(4, &[("gcr.io/big:latest", 10 * MB)]), 1), 0, "below 23 MB scores 0");
    }

    /// Upstream skips Score when no node holds any of the pod's images; without any node
    /// reporting images that is known at once.
    #[test]
    fn pre_score_skips_when_no_node_holds_the_images() {
        let mut pod = PodInfo::named("default", "p");
        pod.images = vec!["gcr.io/40".to_owned()];
        let pre_score = |nodes: Vec<NodeInfo>| {
            let all = Nodes::from_nodes(nodes);
            let infos: Vec<&NodeInfo> = all.iter().collect();
            ImageLocality.pre_score(&pod, &Spread::default(), &infos, &all).map_err(|status| status.code)
        };
        assert_eq!(pre_score(vec![node(0, &[]), node(1, &[])]), Err(Code::Skip), "no node lists images");
        assert_eq!(pre_score(vec![node(0, &[("other:1", 40 * MB)])]), Err(Code::Skip), "none holds these");
        assert!(pre_score(vec![node(0, &[("gcr.io/40:latest", 40 * MB)]), node(1, &[])]).is_ok());
    }
}
