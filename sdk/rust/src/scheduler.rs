//! Scheduler plugins: implement [`SchedulerPlugin`], export it with
//! [`scheduler_plugin!`](crate::scheduler_plugin).
//!
//! The SDK keeps the instance's copy of the cluster's nodes ([`Nodes`]) up to date from the
//! host's `update-nodes` changes, keeps the pod the host sent last (`set-pod`) and hands it to
//! every extension point as `&PodInfo`, and turns the batched WIT calls (one call per pod over many
//! nodes) into one trait call per node, so a filter or score plugin is a function of one pod and
//! one node. Override only the extension points the plugin lists in
//! [`SchedulerPlugin::extension_points`]; the others are never called.
//!
//! The trait works on plain Rust values, so the same plugin code also runs natively: unit tests
//! call its methods directly, and the host can link it for comparison.

use std::cell::RefCell;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::LocalKey;

use crate::__private::scheduler_bindings::exports::capstan::plugin::scheduler as wit;

pub use crate::__private::scheduler_bindings::capstan::plugin::scheduler_host::DisruptionBudget;
pub use crate::__private::scheduler_bindings::capstan::plugin::types::{Label, ResourceAmount};
pub use crate::__private::scheduler_bindings::{
    MAX_NODE_SCORE, amount, find_label, labels, normalize_to_max, resources,
};
pub use crate::admission::parse_config;
pub use wit::{
    Code, Description, ExtensionPoints, HostPort, NodeChange, NodeId, NodeInfo, NodeStatus, NodeUsage, PermitResult,
    PodInfo, PodSummary, PostFilterResult, PreFilterResult, Status, Taint, TaintEffect, Toleration, Victim,
};

/// A scheduler plugin: the extension points it implements, over plain values.
pub trait SchedulerPlugin: Sized + 'static {
    /// What the plugin derives once per call from the pod and its cycle state (e.g. the parsed
    /// affinity), then reads for every node of the batch. `()` when nothing.
    type Cycle;

    /// Builds the plugin from its configuration (`{}` when none); an error refuses this version.
    fn configure(config: &str) -> Result<Self, String>;

    /// Derives [`Self::Cycle`] from the pod and the state its `pre-filter`/`pre-score` returned.
    fn cycle(&self, pod: &PodInfo, state: &[u8]) -> Result<Self::Cycle, Status>;

    /// The extension points this plugin implements.
    fn extension_points(&self) -> ExtensionPoints;

    /// Whether [`NodeInfo::object`] should carry each node's JSON (costlier updates).
    fn wants_node_objects(&self) -> bool {
        false
    }

    /// Whether [`NodeInfo::pods`] should list each node's pods (costlier updates); without it
    /// the list is empty and only the sums (`requested`, `pod_count`, `used_ports`) are kept.
    fn wants_node_pods(&self) -> bool {
        false
    }

    /// QueueSort: the pod's key; higher keys are scheduled first.
    fn queue_sort_key(&self, pod: &PodInfo) -> i64 {
        let _ = pod;
        0
    }

    /// PreFilter: checks the pod once per cycle, may narrow the nodes and compute state.
    fn pre_filter(&self, pod: &PodInfo, nodes: &Nodes) -> PreFilterResult {
        let _ = (pod, nodes);
        PreFilterResult { status: Status::success(), nodes: None, state: Vec::new() }
    }

    /// Filter: whether the pod fits on one node.
    fn filter(&self, pod: &PodInfo, cycle: &Self::Cycle, node: &NodeInfo) -> Status {
        let _ = (pod, cycle, node);
        Status::success()
    }

    /// Filter over a batch of nodes: the entries of `ids` the pod does not fit, in order, each
    /// with its status (a node not listed fits); by default [`Self::filter`] on each. Override it
    /// to read the dense per-node tables of [`Nodes`] (e.g. [`Nodes::resources`]) instead of each
    /// node's lists: what runs for every node of every cycle is then a walk over contiguous
    /// memory.
    fn filter_batch(&self, pod: &PodInfo, cycle: &Self::Cycle, nodes: &Nodes, ids: &[NodeId]) -> Vec<NodeStatus> {
        misfits(ids, |id| nodes.get(id).map_or_else(|| unknown_node(id), |node| self.filter(pod, cycle, node)))
    }

    /// PostFilter: called when no node fits, with why each node was filtered out.
    fn post_filter(
        &self,
        pod: &PodInfo,
        cycle: &Self::Cycle,
        filtered: &[NodeStatus],
        nodes: &Nodes,
    ) -> PostFilterResult {
        let _ = (pod, cycle, filtered, nodes);
        PostFilterResult {
            status: Status::new(Code::Unschedulable, Vec::new()),
            nominated_node: None,
            victims: Vec::new(),
        }
    }

    /// PreScore: prepares scoring over the feasible nodes (`nodes`; `all` holds every node);
    /// returns state for `score`.
    fn pre_score(
        &self,
        pod: &PodInfo,
        cycle: &Self::Cycle,
        nodes: &[&NodeInfo],
        all: &Nodes,
    ) -> Result<Vec<u8>, Status> {
        let _ = (pod, cycle, nodes, all);
        Ok(Vec::new())
    }

    /// Score: the raw score of one node.
    fn score(&self, pod: &PodInfo, cycle: &Self::Cycle, node: &NodeInfo) -> Result<i64, Status> {
        let _ = (pod, cycle, node);
        Ok(0)
    }

    /// Score over a batch of nodes (one score per entry of `ids`, in order); by default
    /// [`Self::score`] on each. Override it for the same reason as [`Self::filter_batch`].
    fn score_batch(
        &self,
        pod: &PodInfo,
        cycle: &Self::Cycle,
        nodes: &Nodes,
        ids: &[NodeId],
    ) -> Result<Vec<i64>, Status> {
        ids.iter()
            .map(|&id| nodes.get(id).ok_or_else(|| unknown_node(id)).and_then(|n| self.score(pod, cycle, n)))
            .collect()
    }

    /// NormalizeScore: maps the raw scores (one per node, in order) into 0..=100 in place.
    fn normalize_score(&self, pod: &PodInfo, cycle: &Self::Cycle, scores: &mut [i64]) -> Result<(), Status> {
        let _ = (pod, cycle, scores);
        Ok(())
    }

    /// Reserve: the pod is about to be placed on `node`.
    fn reserve(&self, pod: &PodInfo, cycle: &Self::Cycle, node: &NodeInfo) -> Status {
        let _ = (pod, cycle, node);
        Status::success()
    }

    /// Unreserve: undo `reserve`.
    fn unreserve(&self, pod: &PodInfo, cycle: &Self::Cycle, node: &NodeInfo) {
        let _ = (pod, cycle, node);
    }

    /// Permit: allow, delay or reject binding.
    fn permit(&self, pod: &PodInfo, cycle: &Self::Cycle, node: &NodeInfo) -> PermitResult {
        let _ = (pod, cycle, node);
        PermitResult { status: Status::success(), timeout_ms: 0 }
    }

    /// PreBind: runs before binding.
    fn pre_bind(&self, pod: &PodInfo, cycle: &Self::Cycle, node: &NodeInfo) -> Status {
        let _ = (pod, cycle, node);
        Status::success()
    }

    /// Bind: binds the pod, or returns [`Code::Skip`] to leave it to the next binder.
    fn bind(&self, pod: &PodInfo, cycle: &Self::Cycle, node: &NodeInfo) -> Status {
        let _ = (pod, cycle, node);
        Status::new(Code::Skip, Vec::new())
    }

    /// PostBind: the pod was bound to `node`.
    fn post_bind(&self, pod: &PodInfo, cycle: &Self::Cycle, node: &NodeInfo) {
        let _ = (pod, cycle, node);
    }
}

/// The instance's copy of the cluster's nodes, kept by the SDK from `update-nodes`.
///
/// Node handles are small dense integers, so the nodes sit in a vector indexed by handle: a
/// lookup is an index, not a hash. Alongside, it counts what lets a plugin tell in O(1) that it
/// has nothing to do for a pod (pods carrying affinity terms, tainted and cordoned nodes, nodes
/// reporting images), as
/// upstream's plugins skip themselves.
#[derive(Default)]
pub struct Nodes {
    by_id: Vec<Option<NodeInfo>>,
    resources: Resources,
    /// [`Nodes::domains`] by label key, built on first use and dropped when a node is added,
    /// changed or removed (a change of usage only keeps them).
    domains: RefCell<Vec<(String, Arc<Domains>)>>,
    /// Per node handle: [`Nodes::revision`].
    revisions: Vec<u64>,
    /// The last revision handed out; kept through a reset, so a revision never repeats.
    clock: u64,
    /// The latest revisions handed out, oldest first, each with its node: what [`PerNode`]
    /// brings up to date instead of looking at every node.
    touched: std::collections::VecDeque<(u64, NodeId)>,
    /// Which node set this is (a reset makes a new one): what [`PerNode`] last refreshed from.
    instance: NodeSetId,
    len: usize,
    generation: u64,
    pods_with_affinity: usize,
    tainted: usize,
    with_images: usize,
    unschedulable: usize,
}

/// A number telling node sets apart, new for each (and after each reset).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NodeSetId(u64);

impl Default for NodeSetId {
    fn default() -> Self {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        Self(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

/// How many of the latest revisions [`Nodes`] remembers by node.
const TOUCHED: usize = 1024;

/// The error for a node handle the instance does not know.
#[must_use]
pub fn unknown_node(node: NodeId) -> Status {
    Status::error(format!("node {node} is unknown to the plugin"))
}

/// The entries of `ids` whose status from `filter` is neither success nor skip, in order, each
/// with its status: what a batched filter returns.
pub fn misfits(ids: &[NodeId], mut filter: impl FnMut(NodeId) -> Status) -> Vec<NodeStatus> {
    ids.iter()
        .filter_map(|&node| {
            let status = filter(node);
            (!matches!(status.code, Code::Success | Code::Skip)).then_some(NodeStatus { node, status })
        })
        .collect()
}

/// What one node adds to the counts [`Nodes`] keeps: pods with affinity, and whether it is
/// tainted, cordoned and lists images.
fn node_counts(node: &NodeInfo) -> [usize; 4] {
    let affinity = node.pods.iter().filter(|p| p.affinity.is_some()).count();
    let tainted = usize::from(node.taints.iter().any(|t| t.effect != TaintEffect::PreferNoSchedule));
    [affinity, tainted, usize::from(node.unschedulable), usize::from(!node.images.is_empty())]
}

impl Nodes {
    /// A node set holding `nodes` (for tests and native use).
    #[must_use]
    pub fn from_nodes(nodes: impl IntoIterator<Item = NodeInfo>) -> Self {
        let mut set = Self::default();
        set.apply(1, true, nodes.into_iter().map(NodeChange::Upsert).collect());
        set
    }

    /// The node with handle `id`.
    #[must_use]
    pub fn get(&self, id: NodeId) -> Option<&NodeInfo> {
        self.by_id.get(id as usize).and_then(Option::as_ref)
    }

    /// Every node, by handle.
    pub fn iter(&self) -> impl Iterator<Item = &NodeInfo> {
        self.by_id.iter().flatten()
    }

    /// How many nodes there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The generation of the last applied update.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// How many pods on all nodes carry pod affinity or anti-affinity terms.
    #[must_use]
    pub fn pods_with_affinity(&self) -> usize {
        self.pods_with_affinity
    }

    /// How many nodes have a `NoSchedule` or `NoExecute` taint.
    #[must_use]
    pub fn tainted(&self) -> usize {
        self.tainted
    }

    /// How many nodes list container images (`status.images`).
    #[must_use]
    pub fn with_images(&self) -> usize {
        self.with_images
    }

    /// How many nodes are cordoned (`spec.unschedulable`).
    #[must_use]
    pub fn unschedulable(&self) -> usize {
        self.unschedulable
    }

    /// Every node's allocatable and requested amounts and pod count as dense tables.
    #[must_use]
    pub fn resources(&self) -> &Resources {
        &self.resources
    }

    /// Node `id`'s revision: a number that changes whenever anything about the node changes, its
    /// pods included, and is never reused by this instance (0 for an unknown node). A plugin
    /// keeps what it derives from a node's pods (e.g. their parsed affinity terms) beside the
    /// revision, and derives it again only when the revision moves.
    #[must_use]
    pub fn revision(&self, id: NodeId) -> u64 {
        self.revisions.get(id as usize).copied().unwrap_or(0)
    }

    /// Gives node `id` a new revision.
    fn touch(&mut self, id: NodeId) {
        let id = id as usize;
        if self.revisions.len() <= id {
            self.revisions.resize(id + 1, 0);
        }
        self.clock += 1;
        self.revisions[id] = self.clock;
        if self.touched.len() == TOUCHED {
            self.touched.pop_front();
        }
        self.touched.push_back((self.clock, id as NodeId));
    }

    /// The nodes given a revision after `clock`, when this node set still remembers them all; a
    /// node may be named more than once.
    fn touched_since(&self, clock: u64) -> Option<impl Iterator<Item = NodeId>> {
        let oldest = self.touched.front().map_or(self.clock, |&(revision, _)| revision - 1);
        (clock >= oldest && clock <= self.clock)
            .then(|| self.touched.iter().filter(move |&&(revision, _)| revision > clock).map(|&(_, id)| id))
    }

    /// The domains of label `key`: every node's value of it, numbered. Built once and reused
    /// until a node is added, changed or removed, so a plugin that groups nodes by a topology
    /// key on every cycle (spreading, affinity) reads a number per node instead of searching
    /// its labels and comparing strings.
    #[must_use]
    pub fn domains(&self, key: &str) -> Arc<Domains> {
        let mut cached = self.domains.borrow_mut();
        if let Some((_, domains)) = cached.iter().find(|(k, _)| k == key) {
            return Arc::clone(domains);
        }
        let domains = Arc::new(Domains::of(self, key));
        cached.push((key.to_owned(), Arc::clone(&domains)));
        domains
    }

    fn take(&mut self, id: NodeId) -> Option<NodeInfo> {
        let old = self.by_id.get_mut(id as usize).and_then(Option::take)?;
        self.domains.get_mut().clear();
        if let Some(revision) = self.revisions.get_mut(id as usize) {
            *revision = 0;
        }
        self.resources.clear(id);
        let [affinity, tainted, unschedulable, with_images] = node_counts(&old);
        self.pods_with_affinity -= affinity;
        self.tainted -= tainted;
        self.unschedulable -= unschedulable;
        self.with_images -= with_images;
        self.len -= 1;
        Some(old)
    }

    /// Replaces what the pods on a known node use, keeping the rest of the node.
    fn set_usage(&mut self, usage: NodeUsage) {
        if self.get(usage.id).is_none() {
            return;
        }
        self.touch(usage.id);
        let Some(node) = self.by_id.get_mut(usage.id as usize).and_then(Option::as_mut) else { return };
        let with_affinity = |pods: &[PodSummary]| pods.iter().filter(|p| p.affinity.is_some()).count();
        self.pods_with_affinity -= with_affinity(&node.pods);
        self.pods_with_affinity += with_affinity(&usage.pods);
        node.requested = usage.requested;
        node.pod_count = usage.pod_count;
        node.used_ports = usage.used_ports;
        node.pods = usage.pods;
        self.resources.set_requested(node);
    }

    /// Applies `update-nodes`.
    pub fn apply(&mut self, generation: u64, reset: bool, changes: Vec<NodeChange>) {
        if reset {
            *self = Self { clock: self.clock, ..Self::default() };
        }
        for change in changes {
            match change {
                NodeChange::Upsert(node) => {
                    let id = node.id as usize;
                    self.take(node.id);
                    if self.by_id.len() <= id {
                        self.by_id.resize_with(id + 1, || None);
                    }
                    let [affinity, tainted, unschedulable, with_images] = node_counts(&node);
                    self.pods_with_affinity += affinity;
                    self.tainted += tainted;
                    self.unschedulable += unschedulable;
                    self.with_images += with_images;
                    self.len += 1;
                    self.resources.set(&node);
                    self.domains.get_mut().clear();
                    self.touch(node.id);
                    self.by_id[id] = Some(node);
                }
                NodeChange::Remove(id) => {
                    self.take(id);
                }
                NodeChange::Usage(usage) => self.set_usage(usage),
            }
        }
        self.generation = generation;
    }
}

/// One node label's values over every node, as topology-aware plugins group nodes: each distinct
/// value is a domain, numbered densely from 0 in the order of the nodes' handles. See
/// [`Nodes::domains`].
#[derive(Debug, Default)]
pub struct Domains {
    /// The label key.
    key: String,
    /// Per node handle: its domain, or [`Domains::NONE`] (no such node, or it lacks the label).
    by_node: Vec<u32>,
    /// Per domain: the label's value.
    values: Vec<String>,
    /// Value → domain.
    index: foldhash::HashMap<String, u32>,
}

impl Domains {
    const NONE: u32 = u32::MAX;

    fn of(nodes: &Nodes, key: &str) -> Self {
        let mut domains = Self { key: key.to_owned(), by_node: vec![Self::NONE; nodes.by_id.len()], ..Self::default() };
        for node in nodes.iter() {
            let Some(value) = node.label(key) else { continue };
            let domain = if let Some(&domain) = domains.index.get(value) {
                domain
            } else {
                let domain = u32::try_from(domains.values.len()).unwrap_or(Self::NONE);
                domains.values.push(value.to_owned());
                domains.index.insert(value.to_owned(), domain);
                domain
            };
            domains.by_node[node.id as usize] = domain;
        }
        domains
    }

    /// The label key whose values these are.
    #[must_use]
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Node `id`'s domain; `None` when the node lacks the label (or is unknown).
    #[must_use]
    pub fn of_node(&self, id: NodeId) -> Option<usize> {
        self.by_node.get(id as usize).copied().filter(|&d| d != Self::NONE).map(|d| d as usize)
    }

    /// The domain whose value is `value`, if a node has it.
    #[must_use]
    pub fn find(&self, value: &str) -> Option<usize> {
        self.index.get(value).map(|&d| d as usize)
    }

    /// The label value of `domain` (a number below [`Domains::len`]).
    #[must_use]
    pub fn value(&self, domain: usize) -> &str {
        self.values.get(domain).map_or("", String::as_str)
    }

    /// How many distinct values the nodes have.
    #[must_use]
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether no node has the label.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Counted domains by label value, as cycle state carries [`DomainCounts`]: a list rather than a
/// map, so encoding and decoding it compares no strings.
pub type ByValue = Vec<(String, i64)>;

/// A number per domain of one topology key (matching pods, a score), for the domains counted so
/// far. Numbered by this instance's [`Domains`], it goes into cycle state keyed by value
/// ([`DomainCounts::by_value`]): another instance serving a later call numbers them its own way
/// ([`DomainCounts::from_values`]).
#[derive(Debug)]
pub struct DomainCounts {
    domains: Arc<Domains>,
    counts: Vec<Option<i64>>,
}

impl DomainCounts {
    /// No domain of `key` counted yet.
    #[must_use]
    pub fn new(nodes: &Nodes, key: &str) -> Self {
        let domains = nodes.domains(key);
        Self { counts: vec![None; domains.len()], domains }
    }

    /// The counts of a cycle state ([`DomainCounts::by_value`]); values no node has are dropped.
    #[must_use]
    pub fn from_values(nodes: &Nodes, key: &str, by_value: &[(String, i64)]) -> Self {
        let mut counts = Self::new(nodes, key);
        for (value, count) in by_value {
            if let Some(d) = counts.domains.find(value) {
                counts.counts[d] = Some(*count);
            }
        }
        counts
    }

    /// The domains counted over.
    #[must_use]
    pub fn domains(&self) -> &Domains {
        &self.domains
    }

    /// Adds `n` to node `id`'s domain, counting it (even for 0); nothing when the node lacks the
    /// key.
    pub fn add(&mut self, id: NodeId, n: i64) {
        if let Some(d) = self.domains.of_node(id) {
            *self.counts[d].get_or_insert(0) += n;
        }
    }

    /// Node `id`'s count when its domain was counted; `None` when it was not (or the node lacks
    /// the key).
    #[must_use]
    pub fn counted(&self, id: NodeId) -> Option<i64> {
        self.domains.of_node(id).and_then(|d| self.counts[d])
    }

    /// Node `id`'s count, 0 when its domain was not counted; `None` when the node lacks the key.
    #[must_use]
    pub fn at(&self, id: NodeId) -> Option<i64> {
        self.domains.of_node(id).map(|d| self.counts[d].unwrap_or(0))
    }

    /// How many domains were counted.
    #[must_use]
    pub fn len(&self) -> usize {
        self.counts.iter().flatten().count()
    }

    /// Whether none was.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.counts.iter().all(Option::is_none)
    }

    /// The counted domains' counts by value, in domain order, for cycle state.
    #[must_use]
    pub fn by_value(&self) -> ByValue {
        self.counted_values().map(|(value, n)| (value.to_owned(), n)).collect()
    }

    fn counted_values(&self) -> impl Iterator<Item = (&str, i64)> {
        self.counts.iter().enumerate().filter_map(|(d, n)| n.map(|n| (self.domains.value(d), n)))
    }
}

/// Written as its [`DomainCounts::by_value`] would be, without copying the values.
impl serde::Serialize for DomainCounts {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.counted_values())
    }
}

/// A resource's column in [`Resources`], looked up once per call by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column(usize);

/// Every node's allocatable and requested amount of every resource any node lists, and its pod
/// count, as tables indexed by node handle: a node's amounts sit side by side, and nodes by
/// handle one after another, so a batch walks contiguous memory rather than each node's lists
/// and the strings in them.
#[derive(Default, Debug)]
pub struct Resources {
    names: Vec<String>,
    /// `allocatable[id * names.len() + column]`.
    allocatable: Vec<i64>,
    /// `requested[id * names.len() + column]`.
    requested: Vec<i64>,
    pod_counts: Vec<u32>,
}

impl Resources {
    /// The column of resource `name`, if any node lists it.
    #[must_use]
    pub fn column(&self, name: &str) -> Option<Column> {
        self.names.iter().position(|n| n == name).map(Column)
    }

    /// Node `id`'s allocatable amount of the resource in `column` (absent: 0).
    #[must_use]
    pub fn allocatable(&self, id: NodeId, column: Option<Column>) -> i64 {
        self.cell(&self.allocatable, id, column)
    }

    /// Node `id`'s requested amount of the resource in `column` (absent: 0).
    #[must_use]
    pub fn requested(&self, id: NodeId, column: Option<Column>) -> i64 {
        self.cell(&self.requested, id, column)
    }

    /// How many pods node `id` holds.
    #[must_use]
    pub fn pod_count(&self, id: NodeId) -> u32 {
        self.pod_counts.get(id as usize).copied().unwrap_or(0)
    }

    fn cell(&self, table: &[i64], id: NodeId, column: Option<Column>) -> i64 {
        column.and_then(|Column(c)| table.get(id as usize * self.names.len() + c)).copied().unwrap_or(0)
    }

    /// The column of `name`, widening every row when it is new.
    fn intern(&mut self, name: &str) -> usize {
        if let Some(Column(c)) = self.column(name) {
            return c;
        }
        let (old, new) = (self.names.len(), self.names.len() + 1);
        // Every table holds one row per handle up to the highest seen.
        let rows = self.pod_counts.len();
        for table in [&mut self.allocatable, &mut self.requested] {
            let mut wider = vec![0; rows * new];
            for (row, cells) in table.chunks(old.max(1)).enumerate().take(rows) {
                if old > 0 {
                    wider[row * new..row * new + old].copy_from_slice(cells);
                }
            }
            *table = wider;
        }
        self.names.push(name.to_owned());
        old
    }

    fn set(&mut self, node: &NodeInfo) {
        for amount in node.allocatable.iter().chain(&node.requested) {
            self.intern(&amount.name);
        }
        let (id, width) = (node.id as usize, self.names.len());
        if self.pod_counts.len() <= id {
            self.pod_counts.resize(id + 1, 0);
            self.allocatable.resize((id + 1) * width, 0);
            self.requested.resize((id + 1) * width, 0);
        }
        self.clear(node.id);
        self.pod_counts[id] = node.pod_count;
        for (table, list) in [(&mut self.allocatable, &node.allocatable), (&mut self.requested, &node.requested)] {
            for amount in list {
                if let Some(c) = self.names.iter().position(|n| *n == amount.name) {
                    table[id * width + c] = amount.milli_value;
                }
            }
        }
    }

    /// Rewrites only node `id`'s requested amounts and pod count (its allocatable stays).
    fn set_requested(&mut self, node: &NodeInfo) {
        for amount in &node.requested {
            self.intern(&amount.name);
        }
        let (id, width) = (node.id as usize, self.names.len());
        if self.pod_counts.len() <= id {
            return self.set(node);
        }
        self.pod_counts[id] = node.pod_count;
        let row = &mut self.requested[id * width..(id + 1) * width];
        row.fill(0);
        for amount in &node.requested {
            if let Some(c) = self.names.iter().position(|n| *n == amount.name) {
                row[c] = amount.milli_value;
            }
        }
    }

    fn clear(&mut self, id: NodeId) {
        let (id, width) = (id as usize, self.names.len());
        if let Some(count) = self.pod_counts.get_mut(id) {
            *count = 0;
            self.allocatable[id * width..(id + 1) * width].fill(0);
            self.requested[id * width..(id + 1) * width].fill(0);
        }
    }
}

/// What a plugin may ask the host during a call (the world's `scheduler-host` import): namespace
/// labels, `PodDisruptionBudgets`, the selectors of the workloads selecting a pod, and preemption's
/// dry run of the profile's filters.
///
/// In a component the calls go to the host. Natively (unit tests) they go to the view set with
/// [`host::set_native`], by default one with no namespaces, budgets or workloads.
pub mod host {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::{DisruptionBudget, Label, NodeId};

    /// The host's answers, as a trait so native tests can give their own.
    pub trait HostView {
        /// The labels of namespace `name`, if it exists.
        fn namespace_labels(&self, name: &str) -> Option<Vec<Label>>;
        /// The `PodDisruptionBudgets` of `namespace`.
        fn disruption_budgets(&self, namespace: &str) -> Vec<DisruptionBudget>;
        /// The `LabelSelector` JSON of each Service, `ReplicationController`, `ReplicaSet` and
        /// `StatefulSet` in `namespace` selecting a pod with `labels`.
        fn workload_selectors(&self, namespace: &str, labels: &[Label]) -> Vec<String>;
        /// During post-filter: whether the pod fits on `node` once the pods `removed` (UIDs) are
        /// gone; the reasons it does not otherwise.
        fn fits_without(&self, node: NodeId, removed: &[String]) -> Result<(), Vec<String>>;
    }

    /// The component's import.
    struct Imported;

    impl HostView for Imported {
        fn namespace_labels(&self, name: &str) -> Option<Vec<Label>> {
            imported::namespace_labels(name)
        }
        fn disruption_budgets(&self, namespace: &str) -> Vec<DisruptionBudget> {
            imported::disruption_budgets(namespace)
        }
        fn workload_selectors(&self, namespace: &str, labels: &[Label]) -> Vec<String> {
            imported::workload_selectors(namespace, labels)
        }
        fn fits_without(&self, node: NodeId, removed: &[String]) -> Result<(), Vec<String>> {
            imported::fits_without(node, removed)
        }
    }

    #[cfg(target_arch = "wasm32")]
    mod imported {
        pub use crate::__private::scheduler_bindings::capstan::plugin::scheduler_host::{
            disruption_budgets, fits_without, namespace_labels, workload_selectors,
        };
    }

    /// Outside a component there is no import: every answer is empty.
    #[cfg(not(target_arch = "wasm32"))]
    mod imported {
        use super::{DisruptionBudget, Label, NodeId};

        pub fn namespace_labels(_name: &str) -> Option<Vec<Label>> {
            None
        }
        pub fn disruption_budgets(_namespace: &str) -> Vec<DisruptionBudget> {
            Vec::new()
        }
        pub fn workload_selectors(_namespace: &str, _labels: &[Label]) -> Vec<String> {
            Vec::new()
        }
        pub fn fits_without(_node: NodeId, _removed: &[String]) -> Result<(), Vec<String>> {
            Err(vec!["no host".to_owned()])
        }
    }

    thread_local! {
        static NATIVE: RefCell<Option<Rc<dyn HostView>>> = const { RefCell::new(None) };
    }

    /// Natively, makes `view` answer this thread's host calls (`None` restores the empty view).
    pub fn set_native(view: Option<Rc<dyn HostView>>) {
        NATIVE.with(|slot| *slot.borrow_mut() = view);
    }

    /// The host: the import in a component, the native view otherwise.
    #[must_use]
    pub fn get() -> Rc<dyn HostView> {
        NATIVE.with(|slot| slot.borrow().clone()).unwrap_or_else(|| Rc::new(Imported))
    }
}

/// Kubernetes label selectors (`matchLabels` and `matchExpressions`, as in
/// `metav1.LabelSelector`) over a pod's labels.
pub mod selector {
    use serde::{Deserialize, Serialize};

    use super::{Label, find_label};

    /// One `matchExpressions` entry.
    #[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
    pub struct Requirement {
        /// The label key.
        pub key: String,
        /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
        pub operator: String,
        /// The values for `In` and `NotIn`.
        #[serde(default)]
        pub values: Vec<String>,
    }

    /// A `metav1.LabelSelector`. An empty selector matches every set of labels; a missing one
    /// (an `Option` that is `None` where it is used) matches none.
    #[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
    #[serde(rename_all = "camelCase")]
    pub struct LabelSelector {
        /// Labels that must be present with these values.
        #[serde(default)]
        pub match_labels: std::collections::BTreeMap<String, String>,
        /// Requirements that must all hold.
        #[serde(default)]
        pub match_expressions: Vec<Requirement>,
    }

    impl LabelSelector {
        /// Parses a selector's JSON text.
        pub fn parse(json: &str) -> Result<Self, String> {
            serde_json::from_str(json).map_err(|e| format!("invalid label selector: {e}"))
        }

        /// Whether `labels` satisfy every label and requirement.
        #[must_use]
        pub fn matches(&self, labels: &[Label]) -> bool {
            self.match_labels.iter().all(|(k, v)| find_label(labels, k) == Some(v.as_str()))
                && self.match_expressions.iter().all(|r| r.matches(find_label(labels, &r.key)))
        }

        /// Whether the selector has neither labels nor requirements (it then matches everything).
        #[must_use]
        pub fn is_empty(&self) -> bool {
            self.match_labels.is_empty() && self.match_expressions.is_empty()
        }

        /// Adds `key` = `value` to the selector (how `matchLabelKeys` narrows it).
        pub fn require(&mut self, key: &str, value: &str) {
            self.match_expressions.push(Requirement {
                key: key.to_owned(),
                operator: "In".to_owned(),
                values: vec![value.to_owned()],
            });
        }
    }

    impl Requirement {
        /// Whether a label with this key and `value` (absent: `None`) satisfies the requirement.
        #[must_use]
        pub fn matches(&self, value: Option<&str>) -> bool {
            match (self.operator.as_str(), value) {
                ("In", Some(v)) => self.values.iter().any(|x| x == v),
                ("NotIn", v) => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
                ("Exists", v) => v.is_some(),
                ("DoesNotExist", v) => v.is_none(),
                _ => false,
            }
        }
    }
}

/// A pod's required node placement — `spec.nodeSelector` and the required terms of
/// `spec.affinity.nodeAffinity` — parsed once and matched against many nodes (what
/// PodTopologySpread's `nodeAffinityPolicy: Honor` counts by).
pub mod node_affinity {
    use serde::Deserialize;

    use super::{NodeInfo, PodInfo, find_label};

    /// A `NodeSelectorRequirement`.
    #[derive(Clone, Debug, Default, Deserialize)]
    pub struct Requirement {
        /// The label (or field) key.
        pub key: String,
        /// `In`, `NotIn`, `Exists`, `DoesNotExist`, `Gt`, `Lt`.
        pub operator: String,
        /// The operator's values.
        #[serde(default)]
        pub values: Vec<String>,
    }

    impl Requirement {
        fn matches(&self, value: Option<&str>) -> bool {
            let number = |v: &str| -> Option<(i64, i64)> {
                let [want] = &self.values[..] else { return None };
                Some((v.parse().ok()?, want.parse().ok()?))
            };
            match (self.operator.as_str(), value) {
                ("In", Some(v)) => self.values.iter().any(|x| x == v),
                ("NotIn", v) => v.is_none_or(|v| !self.values.iter().any(|x| x == v)),
                ("Exists", v) => v.is_some(),
                ("DoesNotExist", v) => v.is_none(),
                ("Gt", Some(v)) => number(v).is_some_and(|(have, want)| have > want),
                ("Lt", Some(v)) => number(v).is_some_and(|(have, want)| have < want),
                _ => false,
            }
        }
    }

    /// A `NodeSelectorTerm`: all of its requirements must hold; an empty term matches nothing.
    #[derive(Clone, Debug, Default, Deserialize)]
    #[serde(rename_all = "camelCase")]
    pub struct Term {
        /// Requirements on node labels.
        #[serde(default)]
        pub match_expressions: Vec<Requirement>,
        /// Requirements on node fields (`metadata.name`).
        #[serde(default)]
        pub match_fields: Vec<Requirement>,
    }

    impl Term {
        /// Whether `node` meets every requirement; a term with none matches nothing, as upstream.
        #[must_use]
        pub fn matches(&self, node: &NodeInfo) -> bool {
            if self.match_expressions.is_empty() && self.match_fields.is_empty() {
                return false;
            }
            self.match_expressions.iter().all(|r| r.matches(find_label(&node.labels, &r.key)))
                && self.match_fields.iter().all(|r| r.key == "metadata.name" && r.matches(Some(&node.name)))
        }
    }

    #[derive(Default, Deserialize)]
    struct Affinity {
        #[serde(default, rename = "nodeAffinity")]
        node_affinity: Option<NodeAffinity>,
    }

    #[derive(Default, Deserialize)]
    struct NodeAffinity {
        #[serde(default, rename = "requiredDuringSchedulingIgnoredDuringExecution")]
        required: Option<NodeSelector>,
    }

    #[derive(Default, Deserialize)]
    struct NodeSelector {
        #[serde(default, rename = "nodeSelectorTerms")]
        terms: Vec<Term>,
    }

    /// What a pod requires of its node's labels and name.
    #[derive(Clone, Debug, Default)]
    pub struct Required {
        selector: Vec<(String, String)>,
        /// Any one must match; `None` when the pod has no required node affinity.
        terms: Option<Vec<Term>>,
    }

    impl Required {
        /// The requirements of `pod`.
        pub fn of(pod: &PodInfo) -> Result<Self, String> {
            let affinity: Affinity = match &pod.affinity {
                Some(json) => serde_json::from_str(json).map_err(|e| format!("spec.affinity: {e}"))?,
                None => Affinity::default(),
            };
            Ok(Self {
                selector: pod.node_selector.iter().map(|l| (l.key.clone(), l.value.clone())).collect(),
                terms: affinity.node_affinity.and_then(|a| a.required).map(|s| s.terms),
            })
        }

        /// Whether `node` satisfies the node selector and one of the required terms.
        #[must_use]
        pub fn matches(&self, node: &NodeInfo) -> bool {
            self.selector.iter().all(|(k, v)| find_label(&node.labels, k) == Some(v.as_str()))
                && self.terms.as_ref().is_none_or(|terms| terms.iter().any(|t| t.matches(node)))
        }
    }
}

/// A value per node kept across cycles beside the node's [`Nodes::revision`], so a plugin that
/// derives something from every node on every cycle (pods' parsed terms, how many pods a
/// selector matches) works it out again only for the nodes that changed since.
pub struct PerNode<T> {
    /// By node handle: the revision the value was made at (0 for none) and the value.
    kept: Vec<(u64, T)>,
    /// The node set and its clock at the last refresh.
    refreshed: Option<(NodeSetId, u64)>,
}

impl<T> Default for PerNode<T> {
    fn default() -> Self {
        Self { kept: Vec::new(), refreshed: None }
    }
}

impl<T: Default> PerNode<T> {
    /// Brings every node's value up to date: `make` is called for each node that is new or
    /// changed since its value was made. Only the nodes changed since the last refresh are looked
    /// at when the node set still remembers them (see [`Nodes::revision`]).
    pub fn refresh(&mut self, nodes: &Nodes, mut make: impl FnMut(&NodeInfo) -> T) {
        if self.refreshed.is_some_and(|(set, _)| set != nodes.instance) {
            // Another node set (or this one reset): its revisions say nothing about these.
            self.clear();
        }
        let mut bring = |node: &NodeInfo| {
            let (id, revision) = (node.id as usize, nodes.revision(node.id));
            if self.kept.len() <= id {
                self.kept.resize_with(id + 1, || (0, T::default()));
            }
            if self.kept[id].0 != revision {
                self.kept[id] = (revision, make(node));
            }
        };
        // Cleared above unless refreshed from this very node set.
        match self.refreshed.and_then(|(_, clock)| nodes.touched_since(clock)) {
            Some(changed) => changed.filter_map(|id| nodes.get(id)).for_each(&mut bring),
            None => nodes.iter().for_each(&mut bring),
        }
        self.refreshed = Some((nodes.instance, nodes.clock));
    }

    /// Node `id`'s value as of the last [`PerNode::refresh`].
    #[must_use]
    pub fn get(&self, id: NodeId) -> Option<&T> {
        self.kept.get(id as usize).map(|(_, value)| value)
    }

    /// Forgets every value: what they were made from changed.
    pub fn clear(&mut self) {
        self.kept.clear();
        self.refreshed = None;
    }
}

/// A [`PerNode`] behind a lock, made for one key (a way of deriving the values: the incoming
/// pod's constraints, say) and forgotten when another key comes, so a plugin's `&self` methods
/// can keep per-node work across cycles.
pub struct NodeCache<K, T>(Mutex<(K, PerNode<T>)>);

impl<K: Default, T> Default for NodeCache<K, T> {
    fn default() -> Self {
        Self(Mutex::new((K::default(), PerNode::default())))
    }
}

impl<K: PartialEq, T: Default> NodeCache<K, T> {
    /// Runs `f` with the values for `key`, brought up to date with `make` (see
    /// [`PerNode::refresh`]); all of them made afresh when the key differs from the last one.
    pub fn with<R>(
        &self,
        key: K,
        nodes: &Nodes,
        make: impl FnMut(&NodeInfo) -> T,
        f: impl FnOnce(&PerNode<T>) -> R,
    ) -> R {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if kept.0 != key {
            kept.1.clear();
            kept.0 = key;
        }
        kept.1.refresh(nodes, make);
        f(&kept.1)
    }

    /// Forgets every value (what they were made from changed).
    pub fn clear(&self) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).1.clear();
    }
}

/// One value a plugin made and the key it made it for, kept for when the same key comes back
/// (the decoded cycle state, a pod's parsed fields): the last one only, behind a lock, so a
/// plugin's `&self` methods can use it.
pub struct Memo<K, V>(Mutex<Option<(K, Arc<V>)>>);

impl<K, V> Default for Memo<K, V> {
    fn default() -> Self {
        Self(Mutex::new(None))
    }
}

impl<K, V> Memo<K, V> {
    /// The kept value when `hit` accepts its key; otherwise what `make` returns (key and value),
    /// kept in its place. An error keeps nothing.
    pub fn get_or_try<E>(
        &self,
        hit: impl FnOnce(&K) -> bool,
        make: impl FnOnce() -> Result<(K, V), E>,
    ) -> Result<Arc<V>, E> {
        let mut kept = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((key, value)) = kept.as_ref()
            && hit(key)
        {
            return Ok(Arc::clone(value));
        }
        let (key, value) = make()?;
        let value = Arc::new(value);
        *kept = Some((key, Arc::clone(&value)));
        Ok(value)
    }

    /// Keeps `value` for `key` in place of whatever was kept: a value made before anyone asks
    /// (the state PreFilter made, for Filter in the same instance).
    pub fn set(&self, key: K, value: V) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some((key, Arc::new(value)));
    }
}

/// Cycle state as JSON behind a tag byte, for plugins that keep one kind of state after
/// PreFilter and another after PreScore (the host hands each later point the last one).
pub mod state {
    use serde::Serialize;
    use serde::de::DeserializeOwned;

    use super::Status;

    /// `value` as JSON after the byte `tag`.
    pub fn encode<T: Serialize>(tag: u8, value: &T) -> Result<Vec<u8>, Status> {
        let mut bytes = vec![tag];
        serde_json::to_writer(&mut bytes, value).map_err(|e| Status::error(format!("encoding cycle state: {e}")))?;
        Ok(bytes)
    }

    /// Whether two states are the same bytes, compared eight at a time: a plugin that keeps the
    /// state it decoded last compares a large state on every call, and WebAssembly's `memcmp`
    /// goes byte by byte.
    #[must_use]
    pub fn same(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
        let tails = a8.remainder() == b8.remainder();
        tails
            && a8.zip(b8).all(|(x, y)| {
                u64::from_ne_bytes(x.try_into().unwrap_or_default())
                    == u64::from_ne_bytes(y.try_into().unwrap_or_default())
            })
    }

    /// The tag and the JSON after it, parsed; `None` for empty state.
    pub fn decode<T: DeserializeOwned>(state: &[u8]) -> Result<Option<(u8, T)>, Status> {
        let Some((&tag, body)) = state.split_first() else { return Ok(None) };
        let value = serde_json::from_slice(body).map_err(|e| Status::error(format!("decoding cycle state: {e}")))?;
        Ok(Some((tag, value)))
    }
}

/// A configured plugin, its nodes and the pod it acts on: what one instance holds.
#[doc(hidden)]
pub struct Instance<P> {
    plugin: P,
    nodes: Nodes,
    /// The pod of the last `set-pod`; the extension points act on it.
    pod: Option<PodInfo>,
}

/// Where [`scheduler_plugin!`](crate::scheduler_plugin) keeps an instance's state.
#[doc(hidden)]
pub type Slot<P> = RefCell<Option<Instance<P>>>;

/// The same plugin code linked natively into the host, for the benchmark's WASM-versus-native
/// ratio: [`scheduler_plugin!`](crate::scheduler_plugin) gives every plugin crate, outside
/// `wasm32`, a `native_plugin(config)` function returning a [`native::Plugin`] — the world's
/// `scheduler` interface over one owned instance, with the component's exports' very bodies.
pub mod native {
    use super::{
        Description, Instance, NodeChange, NodeId, NodeInfo, NodeStatus, Nodes, PermitResult, PodInfo,
        PostFilterResult, PreFilterResult, SchedulerPlugin, Status, unknown_node,
    };

    /// One instance of a plugin: the `scheduler` interface of the `scheduler-plugin` world,
    /// method for method (the component's exports call these same bodies).
    #[allow(missing_docs, reason = "each method is the WIT function of the same name, documented there")]
    pub trait Plugin {
        fn describe(&self) -> Description;
        fn update_nodes(&mut self, generation: u64, reset: bool, changes: Vec<NodeChange>);
        fn set_pod(&mut self, pod: PodInfo);
        fn queue_sort_key(&self) -> i64;
        fn pre_filter(&self) -> PreFilterResult;
        fn filter(&self, state: &[u8], nodes: &[NodeId]) -> Vec<NodeStatus>;
        fn post_filter(&self, state: &[u8], filtered: &[NodeStatus]) -> PostFilterResult;
        fn pre_score(&self, state: &[u8], nodes: &[NodeId]) -> Result<Vec<u8>, Status>;
        fn score(&self, state: &[u8], nodes: &[NodeId]) -> Result<Vec<i64>, Status>;
        fn normalize_score(&self, state: &[u8], scores: Vec<i64>) -> Result<Vec<i64>, Status>;
        fn reserve(&self, state: &[u8], node: NodeId) -> Status;
        fn unreserve(&self, state: &[u8], node: NodeId);
        fn permit(&self, state: &[u8], node: NodeId) -> PermitResult;
        fn pre_bind(&self, state: &[u8], node: NodeId) -> Status;
        fn bind(&self, state: &[u8], node: NodeId) -> Status;
        fn post_bind(&self, state: &[u8], node: NodeId);
    }

    /// A new instance of `P` configured with `config` (what `configure` does in a component).
    pub fn instance<P: SchedulerPlugin + Send>(config: &str) -> Result<Box<dyn Plugin + Send>, String> {
        Ok(Box::new(Instance::<P>::new(config)?))
    }

    fn resolve<'a>(nodes: &'a Nodes, ids: &[NodeId]) -> Result<Vec<&'a NodeInfo>, Status> {
        ids.iter().map(|&id| nodes.get(id).ok_or_else(|| unknown_node(id))).collect()
    }

    impl<P: SchedulerPlugin> Instance<P> {
        pub(super) fn new(config: &str) -> Result<Self, String> {
            Ok(Self { plugin: P::configure(config)?, nodes: Nodes::default(), pod: None })
        }

        /// Runs `f` with the pod set last; `failed` turns a status into the call's result when
        /// no pod was set.
        fn with_pod<R>(&self, failed: impl FnOnce(Status) -> R, f: impl FnOnce(&PodInfo) -> R) -> R {
            match &self.pod {
                Some(pod) => f(pod),
                None => failed(Status::error("extension point called before set-pod")),
            }
        }

        /// Runs `f` with the pod and its cycle data; `failed` turns a status into the call's
        /// result when there is no pod or the cycle data cannot be built.
        fn with_cycle<R>(
            &self,
            state: &[u8],
            failed: impl FnOnce(Status) -> R,
            f: impl FnOnce(&PodInfo, &P::Cycle) -> R,
        ) -> R {
            let Some(pod) = &self.pod else { return failed(Status::error("extension point called before set-pod")) };
            match self.plugin.cycle(pod, state) {
                Ok(cycle) => f(pod, &cycle),
                Err(status) => failed(status),
            }
        }

        fn with_node<R>(
            &self,
            state: &[u8],
            node: NodeId,
            failed: impl FnOnce(Status) -> R,
            f: impl FnOnce(&P, &PodInfo, &P::Cycle, &NodeInfo) -> R,
        ) -> R {
            let Some(info) = self.nodes.get(node) else { return failed(unknown_node(node)) };
            self.with_cycle(state, failed, |pod, cycle| f(&self.plugin, pod, cycle, info))
        }
    }

    impl<P: SchedulerPlugin> Plugin for Instance<P> {
        fn describe(&self) -> Description {
            Description {
                extension_points: self.plugin.extension_points(),
                wants_node_objects: self.plugin.wants_node_objects(),
                wants_node_pods: self.plugin.wants_node_pods(),
            }
        }

        fn update_nodes(&mut self, generation: u64, reset: bool, changes: Vec<NodeChange>) {
            self.nodes.apply(generation, reset, changes);
        }

        fn set_pod(&mut self, pod: PodInfo) {
            self.pod = Some(pod);
        }

        fn queue_sort_key(&self) -> i64 {
            self.with_pod(|_| 0, |pod| self.plugin.queue_sort_key(pod))
        }

        fn pre_filter(&self) -> PreFilterResult {
            let failed = |status| PreFilterResult { status, nodes: None, state: Vec::new() };
            self.with_pod(failed, |pod| self.plugin.pre_filter(pod, &self.nodes))
        }

        fn filter(&self, state: &[u8], nodes: &[NodeId]) -> Vec<NodeStatus> {
            self.with_cycle(
                state,
                |e| super::misfits(nodes, |_| e.clone()),
                |pod, cycle| self.plugin.filter_batch(pod, cycle, &self.nodes, nodes),
            )
        }

        fn post_filter(&self, state: &[u8], filtered: &[NodeStatus]) -> PostFilterResult {
            let failed = |status| PostFilterResult { status, nominated_node: None, victims: Vec::new() };
            self.with_cycle(state, failed, |pod, cycle| self.plugin.post_filter(pod, cycle, filtered, &self.nodes))
        }

        fn pre_score(&self, state: &[u8], nodes: &[NodeId]) -> Result<Vec<u8>, Status> {
            self.with_cycle(state, Err, |pod, cycle| {
                let infos = resolve(&self.nodes, nodes)?;
                self.plugin.pre_score(pod, cycle, &infos, &self.nodes)
            })
        }

        fn score(&self, state: &[u8], nodes: &[NodeId]) -> Result<Vec<i64>, Status> {
            self.with_cycle(state, Err, |pod, cycle| self.plugin.score_batch(pod, cycle, &self.nodes, nodes))
        }

        fn normalize_score(&self, state: &[u8], mut scores: Vec<i64>) -> Result<Vec<i64>, Status> {
            self.with_cycle(state, Err, |pod, cycle| {
                self.plugin.normalize_score(pod, cycle, &mut scores)?;
                Ok(scores)
            })
        }

        fn reserve(&self, state: &[u8], node: NodeId) -> Status {
            self.with_node(state, node, |e| e, P::reserve)
        }

        fn unreserve(&self, state: &[u8], node: NodeId) {
            self.with_node(state, node, drop, P::unreserve);
        }

        fn permit(&self, state: &[u8], node: NodeId) -> PermitResult {
            let failed = |status| PermitResult { status, timeout_ms: 0 };
            self.with_node(state, node, failed, P::permit)
        }

        fn pre_bind(&self, state: &[u8], node: NodeId) -> Status {
            self.with_node(state, node, |e| e, P::pre_bind)
        }

        fn bind(&self, state: &[u8], node: NodeId) -> Status {
            self.with_node(state, node, |e| e, P::bind)
        }

        fn post_bind(&self, state: &[u8], node: NodeId) {
            self.with_node(state, node, drop, P::post_bind);
        }
    }
}

/// The bodies of the exports the macro generates: [`native::Plugin`]'s, over the instance in
/// the component's slot.
#[doc(hidden)]
pub mod __private {
    use super::native::Plugin as _;
    use super::{
        Description, Instance, LocalKey, NodeChange, NodeId, NodeStatus, PermitResult, PodInfo, PostFilterResult,
        PreFilterResult, SchedulerPlugin, Slot, Status,
    };

    pub use crate::__private::scheduler_bindings::exports::capstan::plugin::lifecycle::Guest as LifecycleGuest;
    pub use crate::__private::scheduler_bindings::exports::capstan::plugin::scheduler::Guest as SchedulerGuest;

    /// Each export's body, over the instance's slot.
    pub struct Exports<P: SchedulerPlugin>(pub &'static LocalKey<Slot<P>>);

    fn unconfigured() -> Status {
        Status::error("plugin called before configure")
    }

    #[allow(clippy::must_use_candidate, reason = "called only by the generated export glue")]
    impl<P: SchedulerPlugin> Exports<P> {
        fn with<R>(&self, missing: impl FnOnce(Status) -> R, f: impl FnOnce(&mut Instance<P>) -> R) -> R {
            self.0.with(|slot| match slot.borrow_mut().as_mut() {
                Some(instance) => f(instance),
                None => missing(unconfigured()),
            })
        }

        pub fn configure(&self, config: &str) -> Result<(), String> {
            let instance = Instance::new(config)?;
            self.0.with(|slot| *slot.borrow_mut() = Some(instance));
            Ok(())
        }

        pub fn describe(&self) -> Description {
            let missing = |_| Description {
                extension_points: super::ExtensionPoints::empty(),
                wants_node_objects: false,
                wants_node_pods: false,
            };
            self.with(missing, |i| i.describe())
        }

        pub fn update_nodes(&self, generation: u64, reset: bool, changes: Vec<NodeChange>) {
            self.with(drop, |i| i.update_nodes(generation, reset, changes));
        }

        pub fn set_pod(&self, pod: PodInfo) {
            self.with(drop, |i| i.set_pod(pod));
        }

        pub fn queue_sort_key(&self) -> i64 {
            self.with(|_| 0, |i| i.queue_sort_key())
        }

        pub fn pre_filter(&self) -> PreFilterResult {
            let missing = |status| PreFilterResult { status, nodes: None, state: Vec::new() };
            self.with(missing, |i| i.pre_filter())
        }

        pub fn filter(&self, state: &[u8], nodes: &[NodeId]) -> Vec<NodeStatus> {
            self.with(|e| super::misfits(nodes, |_| e.clone()), |i| i.filter(state, nodes))
        }

        pub fn post_filter(&self, state: &[u8], filtered: &[NodeStatus]) -> PostFilterResult {
            let missing = |status| PostFilterResult { status, nominated_node: None, victims: Vec::new() };
            self.with(missing, |i| i.post_filter(state, filtered))
        }

        pub fn pre_score(&self, state: &[u8], nodes: &[NodeId]) -> Result<Vec<u8>, Status> {
            self.with(Err, |i| i.pre_score(state, nodes))
        }

        pub fn score(&self, state: &[u8], nodes: &[NodeId]) -> Result<Vec<i64>, Status> {
            self.with(Err, |i| i.score(state, nodes))
        }

        pub fn normalize_score(&self, state: &[u8], scores: Vec<i64>) -> Result<Vec<i64>, Status> {
            self.with(Err, |i| i.normalize_score(state, scores))
        }

        pub fn reserve(&self, state: &[u8], node: NodeId) -> Status {
            self.with(|e| e, |i| i.reserve(state, node))
        }

        pub fn unreserve(&self, state: &[u8], node: NodeId) {
            self.with(drop, |i| i.unreserve(state, node));
        }

        pub fn permit(&self, state: &[u8], node: NodeId) -> PermitResult {
            self.with(|status| PermitResult { status, timeout_ms: 0 }, |i| i.permit(state, node))
        }

        pub fn pre_bind(&self, state: &[u8], node: NodeId) -> Status {
            self.with(|e| e, |i| i.pre_bind(state, node))
        }

        pub fn bind(&self, state: &[u8], node: NodeId) -> Status {
            self.with(|e| e, |i| i.bind(state, node))
        }

        pub fn post_bind(&self, state: &[u8], node: NodeId) {
            self.with(drop, |i| i.post_bind(state, node));
        }
    }
}

/// Exports a type implementing [`SchedulerPlugin`] as this component's `scheduler-plugin`
/// world. Call it once, at the crate's top level; only on `wasm32` targets does it export
/// anything, so the crate's native tests link. Elsewhere it defines
/// `pub fn native_plugin(config: &str)`, the same plugin as a [`native::Plugin`] the host can
/// link (its `native-plugins` build).
#[macro_export]
macro_rules! scheduler_plugin {
    ($plugin:ty) => {
        /// This crate's plugin configured with `config`, linked natively rather than loaded as a
        /// component (what the scheduler's `native-plugins` build compares WebAssembly against).
        #[cfg(not(target_arch = "wasm32"))]
        pub fn native_plugin(
            config: &str,
        ) -> ::std::result::Result<
            ::std::boxed::Box<dyn $crate::scheduler::native::Plugin + ::std::marker::Send>,
            ::std::string::String,
        > {
            $crate::scheduler::native::instance::<$plugin>(config)
        }

        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::scheduler::__private as __capstan;
            use $crate::scheduler::{NodeChange, NodeId, NodeStatus, PodInfo, Status};

            ::std::thread_local! {
                static __CAPSTAN_PLUGIN: $crate::scheduler::Slot<$plugin> = const { ::std::cell::RefCell::new(None) };
            }
            const __EXPORTS: __capstan::Exports<$plugin> = __capstan::Exports(&__CAPSTAN_PLUGIN);

            struct __CapstanSchedulerPlugin;

            impl __capstan::LifecycleGuest for __CapstanSchedulerPlugin {
                fn configure(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    __EXPORTS.configure(&config)
                }
            }

            impl __capstan::SchedulerGuest for __CapstanSchedulerPlugin {
                fn describe() -> $crate::scheduler::Description {
                    __EXPORTS.describe()
                }
                fn update_nodes(generation: u64, reset: bool, changes: ::std::vec::Vec<NodeChange>) {
                    __EXPORTS.update_nodes(generation, reset, changes)
                }
                fn set_pod(pod: PodInfo) {
                    __EXPORTS.set_pod(pod)
                }
                fn queue_sort_key() -> i64 {
                    __EXPORTS.queue_sort_key()
                }
                fn pre_filter() -> $crate::scheduler::PreFilterResult {
                    __EXPORTS.pre_filter()
                }
                fn filter(state: ::std::vec::Vec<u8>, nodes: ::std::vec::Vec<NodeId>) -> ::std::vec::Vec<NodeStatus> {
                    __EXPORTS.filter(&state, &nodes)
                }
                fn post_filter(
                    state: ::std::vec::Vec<u8>,
                    filtered: ::std::vec::Vec<NodeStatus>,
                ) -> $crate::scheduler::PostFilterResult {
                    __EXPORTS.post_filter(&state, &filtered)
                }
                fn pre_score(
                    state: ::std::vec::Vec<u8>,
                    nodes: ::std::vec::Vec<NodeId>,
                ) -> ::std::result::Result<::std::vec::Vec<u8>, Status> {
                    __EXPORTS.pre_score(&state, &nodes)
                }
                fn score(
                    state: ::std::vec::Vec<u8>,
                    nodes: ::std::vec::Vec<NodeId>,
                ) -> ::std::result::Result<::std::vec::Vec<i64>, Status> {
                    __EXPORTS.score(&state, &nodes)
                }
                fn normalize_score(
                    state: ::std::vec::Vec<u8>,
                    _nodes: ::std::vec::Vec<NodeId>,
                    scores: ::std::vec::Vec<i64>,
                ) -> ::std::result::Result<::std::vec::Vec<i64>, Status> {
                    __EXPORTS.normalize_score(&state, scores)
                }
                fn reserve(state: ::std::vec::Vec<u8>, node: NodeId) -> Status {
                    __EXPORTS.reserve(&state, node)
                }
                fn unreserve(state: ::std::vec::Vec<u8>, node: NodeId) {
                    __EXPORTS.unreserve(&state, node)
                }
                fn permit(state: ::std::vec::Vec<u8>, node: NodeId) -> $crate::scheduler::PermitResult {
                    __EXPORTS.permit(&state, node)
                }
                fn pre_bind(state: ::std::vec::Vec<u8>, node: NodeId) -> Status {
                    __EXPORTS.pre_bind(&state, node)
                }
                fn bind(state: ::std::vec::Vec<u8>, node: NodeId) -> Status {
                    __EXPORTS.bind(&state, node)
                }
                fn post_bind(state: ::std::vec::Vec<u8>, node: NodeId) {
                    __EXPORTS.post_bind(&state, node)
                }
            }

            $crate::__private::scheduler_bindings::__export_scheduler_plugin!(__CapstanSchedulerPlugin);
        };
    };
}

/// A node label a plugin looks for, as configuration: `{"label": "disk", "value": "ssd"}`, or
/// without `value` to accept any value.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeLabel {
    /// The label's key.
    pub label: String,
    /// The value it must have; any when absent.
    #[serde(default)]
    pub value: Option<String>,
}

impl NodeLabel {
    /// Whether `node` carries the label (with the value, when one is given).
    #[must_use]
    pub fn matches(&self, node: &NodeInfo) -> bool {
        node.label(&self.label).is_some_and(|v| self.value.as_deref().is_none_or(|want| want == v))
    }
}

impl std::fmt::Display for NodeLabel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}={value}", self.label),
            None => f.write_str(&self.label),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::{NodeChange, NodeInfo, NodeUsage, Nodes, labels};

    fn node(id: u32, zone: Option<&str>) -> NodeInfo {
        let mut node = NodeInfo::named(id, &format!("n{id}"));
        node.labels = zone.map(|z| labels(&[("zone", z)])).unwrap_or_default();
        node
    }

    #[test]
    fn states_are_the_same_only_byte_for_byte() {
        use super::state::same;
        let a = b"0123456789abcdefXYZ".to_vec();
        assert!(same(&a, &a.clone()));
        for (at, byte) in [(0, b'x'), (9, b'x'), (17, b'x')] {
            let mut b = a.clone();
            b[at] = byte;
            assert!(!same(&a, &b), "a change at {at}");
        }
        assert!(!same(&a, &a[..18]));
        assert!(same(b"", b""));
    }

    #[test]
    fn domains_number_values_and_follow_node_changes_but_not_usage() {
        let mut nodes = Nodes::from_nodes([node(0, Some("a")), node(1, Some("b")), node(2, None), node(3, Some("a"))]);
        let zones = nodes.domains("zone");
        let of = |d: &super::Domains, id| d.of_node(id).map(|n| d.value(n).to_owned());
        assert_eq!(
            (0..5).map(|id| of(&zones, id)).collect::<Vec<_>>(),
            [Some("a".to_owned()), Some("b".to_owned()), None, Some("a".to_owned()), None]
        );
        assert_eq!((zones.len(), zones.find("b"), zones.find("c")), (2, zones.of_node(1), None));
        assert!(nodes.domains("rack").is_empty());

        let usage = NodeUsage { id: 0, requested: Vec::new(), pod_count: 3, used_ports: Vec::new(), pods: Vec::new() };
        nodes.apply(2, false, vec![NodeChange::Usage(usage)]);
        assert!(Arc::ptr_eq(&zones, &nodes.domains("zone")), "a change of usage keeps the domains");

        nodes.apply(3, false, vec![NodeChange::Upsert(node(2, Some("c"))), NodeChange::Remove(1)]);
        let zones = nodes.domains("zone");
        assert_eq!((zones.len(), of(&zones, 1), of(&zones, 2)), (2, None, Some("c".to_owned())));
        nodes.apply(4, true, vec![NodeChange::Upsert(node(7, Some("z")))]);
        assert_eq!(nodes.domains("zone").of_node(0), None, "a reset forgets every node");
    }

    #[test]
    fn a_nodes_revision_moves_on_every_change_and_never_repeats() {
        let mut nodes = Nodes::from_nodes([node(0, None), node(1, None)]);
        let mut seen = vec![nodes.revision(0), nodes.revision(1)];
        let usage = NodeUsage { id: 1, requested: Vec::new(), pod_count: 1, used_ports: Vec::new(), pods: Vec::new() };
        nodes.apply(2, false, vec![NodeChange::Usage(usage)]);
        assert_eq!(nodes.revision(0), seen[0], "an untouched node keeps its revision");
        seen.push(nodes.revision(1));
        nodes.apply(3, false, vec![NodeChange::Upsert(node(0, Some("a")))]);
        seen.push(nodes.revision(0));
        nodes.apply(4, false, vec![NodeChange::Remove(1)]);
        assert_eq!(nodes.revision(1), 0, "a removed node has none");
        nodes.apply(5, true, vec![NodeChange::Upsert(node(0, None)), NodeChange::Upsert(node(1, None))]);
        seen.extend([nodes.revision(0), nodes.revision(1)]);
        let mut distinct = seen.clone();
        distinct.sort_unstable();
        distinct.dedup();
        assert_eq!((distinct.len(), seen.contains(&0)), (seen.len(), false), "{seen:?}");
    }

    #[test]
    fn per_node_values_are_made_again_only_for_changed_nodes() {
        let mut nodes = Nodes::from_nodes([node(0, None), node(1, None), node(2, None)]);
        let mut per_node = super::PerNode::<u32>::default();
        let made = std::cell::RefCell::new(Vec::new());
        let refresh = |nodes: &Nodes, per_node: &mut super::PerNode<u32>| {
            made.borrow_mut().clear();
            per_node.refresh(nodes, |n| {
                made.borrow_mut().push(n.id);
                n.pod_count
            });
            made.borrow().clone()
        };
        assert_eq!(refresh(&nodes, &mut per_node), [0, 1, 2], "every node once");
        assert_eq!(refresh(&nodes, &mut per_node), Vec::<u32>::new());
        let usage = |id, pod_count| {
            NodeChange::Usage(NodeUsage {
                id,
                requested: Vec::new(),
                pod_count,
                used_ports: Vec::new(),
                pods: Vec::new(),
            })
        };
        nodes.apply(2, false, vec![usage(1, 4), NodeChange::Remove(2)]);
        assert_eq!(refresh(&nodes, &mut per_node), [1]);
        assert_eq!(per_node.get(1), Some(&4));
        per_node.clear();
        assert_eq!(refresh(&nodes, &mut per_node), [0, 1], "all after clear");
        // More changes than the nodes remember: every node is looked at, and node 1, changed
        // before the ones remembered, is made too.
        nodes.apply(3, false, vec![usage(1, 5)]);
        for generation in 4..4 + super::TOUCHED as u64 {
            nodes.apply(generation, false, vec![usage(0, 7)]);
        }
        assert_eq!(refresh(&nodes, &mut per_node), [0, 1]);
        assert_eq!(per_node.get(0), Some(&7));
        // Another node set, or this one reset, is made afresh, though its revisions may repeat.
        let other = Nodes::from_nodes([node(0, None), node(1, None)]);
        assert_eq!(refresh(&other, &mut per_node), [0, 1]);
        assert_eq!(per_node.get(0), Some(&0));
        nodes.apply(9999, true, vec![NodeChange::Upsert(node(1, None))]);
        assert_eq!(refresh(&nodes, &mut per_node), [1]);
    }
}
