//! Hollow nodes: Capstan's built-in kwok.
//!
//! A hollow node is a real `Node` object — registered with capacity, labels and taints, kept
//! alive by a `Lease` in `kube-node-lease` like a kubelet's — that has no container runtime
//! behind it. Pods bound to it are reported `Running` and `Ready` with a pod IP from the node's
//! pod CIDR, and pods being deleted from it are finalized at once. Everything goes through the
//! API server, so the scheduler, controllers and kubectl see hollow nodes exactly as they see
//! real ones. Scheduler and controller tests and benchmarks run thousands of them in one process.
//!
//! Start with [`HollowConfig`] and [`start`]. A pod annotated with [`EXIT_AFTER_ANNOTATION`]
//! (seconds) terminates after that long with the exit code in [`EXIT_CODE_ANNOTATION`], so Jobs
//! can complete on hollow nodes.
//!
//! This crate must not be used to stand in for a real node in tests of the node agent.

mod node;
mod pods;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Taint;
use kube::Client;

pub use node::{HollowNode, parse_taint};

/// Pods carrying this annotation (a number of seconds) terminate after running that long.
pub const EXIT_AFTER_ANNOTATION: &str = "capstan.io/hollow-exit-after";
/// The exit code of a pod that terminates (default 0: `Succeeded`; otherwise `Failed`).
pub const EXIT_CODE_ANNOTATION: &str = "capstan.io/hollow-exit-code";
/// The label every hollow node carries (`"true"`).
pub const HOLLOW_LABEL: &str = "capstan.io/hollow";

/// What hollow nodes to run.
#[derive(Clone, Debug)]
pub struct HollowConfig {
    /// How many nodes.
    pub count: usize,
    /// Node names are this prefix followed by the node's index (`hollow-node-0`, …).
    pub name_prefix: String,
    /// CPU capacity of each node, as a quantity (`"8"`, `"3500m"`).
    pub cpu: String,
    /// Memory capacity of each node, as a quantity (`"32Gi"`).
    pub memory: String,
    /// The most pods each node accepts.
    pub max_pods: u32,
    /// Nodes are spread round-robin over this many zones (`topology.kubernetes.io/zone=zone-<i>`);
    /// zero for no zone labels.
    pub zones: usize,
    /// Extra labels on every node.
    pub labels: BTreeMap<String, String>,
    /// Taints on every node.
    pub taints: Vec<Taint>,
    /// How often each node renews its Lease.
    pub heartbeat: Duration,
    /// Report pods bound to the nodes `Running` and `Ready`, as a kubelet would. Off, bound pods
    /// keep the status the scheduler left (as in upstream `scheduler_perf`, which runs no
    /// kubelets); graceful deletions are finished either way.
    pub report_running: bool,
}

impl Default for HollowConfig {
    fn default() -> Self {
        Self {
            count: 1,
            name_prefix: "hollow-node-".into(),
            cpu: "8".into(),
            memory: "32Gi".into(),
            max_pods: 110,
            zones: 3,
            labels: BTreeMap::new(),
            taints: Vec::new(),
            heartbeat: Duration::from_secs(10),
            report_running: true,
        }
    }
}

/// Why hollow nodes could not start.
#[derive(Debug, thiserror::Error)]
pub enum HollowError {
    /// An API call failed.
    #[error("hollow node {node}: cannot {action}: {source}")]
    Api {
        /// The node.
        node: String,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: Box<kube::Error>,
    },
    /// The configuration is unusable.
    #[error("invalid hollow node configuration: {0}")]
    Config(String),
}

/// Running hollow nodes; they stop heartbeating and running pods when this is dropped.
pub struct HollowNodes {
    names: Vec<String>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl HollowNodes {
    /// The names of the nodes.
    #[must_use]
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

impl Drop for HollowNodes {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How many registrations and lease renewals are in flight at once.
const CONCURRENCY: usize = 16;
/// Lease renewals per second across all nodes, at most, so thousands of nodes do not flood the
/// API server; the interval stretches (and lease durations with it) when there are more nodes.
const MAX_RENEWALS_PER_SECOND: u64 = 100;

/// Registers the nodes (reusing ones that already exist), then keeps their Leases fresh and
/// runs the pods bound to them.
pub async fn start(client: Client, config: HollowConfig) -> Result<HollowNodes, HollowError> {
    if config.count > node::MAX_NODES {
        return Err(HollowError::Config(format!("at most {} hollow nodes are supported", node::MAX_NODES)));
    }
    let heartbeat = config.heartbeat.max(Duration::from_secs(config.count as u64 / MAX_RENEWALS_PER_SECOND));
    let nodes: Vec<Arc<HollowNode>> =
        (0..config.count).map(|index| Arc::new(HollowNode::new(index, &config, heartbeat))).collect();
    futures::stream::iter(nodes.iter().cloned())
        .map(|node| {
            let client = client.clone();
            async move { node.register(&client).await }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<()>>()
        .await?;
    tracing::info!(count = nodes.len(), "hollow nodes registered");
    let names = nodes.iter().map(|n| n.name().to_owned()).collect();
    let tasks = vec![
        tokio::spawn(node::heartbeat(client.clone(), nodes.clone(), heartbeat)),
        tokio::spawn(pods::run(client, nodes, config.report_running)),
    ];
    Ok(HollowNodes { names, tasks })
}
