//! The `scheduler-plugin` world: typed, batched extension-point calls over a shared node log.
//!
//! A scheduler plugin keeps its own copy of the cluster's nodes. The host keeps one [`NodeLog`]
//! — every node as the plugins see it, plus the recent changes, each stamped with a generation —
//! and before every call brings the serving instance up to date: it remembers which generation
//! it last sent that instance and sends only the changes after it (or every node, for a new
//! instance, or one that fell too far behind). So any pooled instance can serve any call, and a scheduling
//! cycle copies no node data across the boundary once instances are warm.
//!
//! The pod crosses the boundary the same way: a [`PodSnapshot`] carries a token, each instance
//! remembers the token of the pod it holds, and the host calls `set-pod` only on an instance
//! holding another pod. The extension points take no pod of their own.
//!
//! ```no_run
//! # fn demo(bytes: &[u8], pod: &capstan_wasm::scheduler::PodSnapshot) -> Result<(), Box<dyn std::error::Error>> {
//! use capstan_wasm::scheduler::{NodeInfo, NodeLog, SchedulerWorld};
//! use capstan_wasm::{PluginSpec, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let plugin = runtime.load::<SchedulerWorld>(PluginSpec::new("node-name"), bytes)?;
//! let mut nodes = NodeLog::default();
//! let id = nodes.upsert(|id| NodeInfo { id, name: "n1".into(), ..NodeInfo::empty() }, "n1");
//! let misfits = plugin.filter(&nodes, pod, &Vec::new(), &[id])?;
//! # Ok(()) }
//! ```

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use crate::error::PluginError;
use crate::host::HostState;
use crate::plugin::PluginHandle;
use crate::world::World;

/// Bindings generated from `wit/` for the `scheduler-plugin` world.
pub mod bindings {
    #![allow(missing_docs, clippy::pedantic, reason = "generated code; the WIT documents it")]
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "capstan:plugin/scheduler-plugin@0.1.0",
        additional_derives: [PartialEq, Eq, Clone],
        with: {
            "capstan:plugin/types": crate::admission::bindings::capstan::plugin::types,
            "capstan:plugin/log": crate::admission::bindings::capstan::plugin::log,
        },
    });
}

pub use crate::admission::bindings::capstan::plugin::types::{Label, ResourceAmount};
pub use bindings::capstan::plugin::scheduler_host::DisruptionBudget;
pub use bindings::exports::capstan::plugin::scheduler::{
    Code, CycleState, Description, ExtensionPoints, HostPort, NodeChange, NodeId, NodeInfo, NodeStatus, NodeUsage,
    PermitResult, PodInfo, PodSummary, PostFilterResult, PreFilterResult, Status, Taint, TaintEffect, Toleration,
    Victim,
};

/// What the `scheduler-host` import answers during a call. The scheduler implements it over its
/// informer caches; every method has an empty answer by default, which is what plugins get when
/// no host view is attached (e.g. in a benchmark without an API server).
pub trait SchedulerHost: Send + Sync {
    /// The labels of namespace `name`, if it exists.
    fn namespace_labels(&self, name: &str) -> Option<Vec<Label>> {
        let _ = name;
        None
    }

    /// The `PodDisruptionBudgets` of `namespace`.
    fn disruption_budgets(&self, namespace: &str) -> Vec<DisruptionBudget> {
        let _ = namespace;
        Vec::new()
    }

    /// The `LabelSelector` JSON of each Service, `ReplicationController`, `ReplicaSet` and
    /// `StatefulSet` in `namespace` selecting a pod with `labels`.
    fn workload_selectors(&self, namespace: &str, labels: &[Label]) -> Vec<String> {
        let _ = (namespace, labels);
        Vec::new()
    }

    /// Preemption's dry run: whether the pod in post-filter fits on `node` without the pods
    /// `removed` (UIDs).
    fn fits_without(&self, node: NodeId, removed: &[String]) -> Result<(), Vec<String>> {
        let _ = (node, removed);
        Err(vec!["the dry run of filters is only available during post-filter".to_owned()])
    }
}

/// The call context holding a call's [`SchedulerHost`].
struct HostContext(Arc<dyn SchedulerHost>);

/// The host view attached to no log: every answer empty.
struct NoHost;

impl SchedulerHost for NoHost {}

impl HostState {
    fn scheduler_host(&self) -> Arc<dyn SchedulerHost> {
        self.call_context::<HostContext>()
            .map_or_else(|| Arc::new(NoHost) as Arc<dyn SchedulerHost>, |c| Arc::clone(&c.0))
    }
}

impl bindings::capstan::plugin::scheduler_host::Host for HostState {
    fn namespace_labels(&mut self, name: String) -> Option<Vec<Label>> {
        self.scheduler_host().namespace_labels(&name)
    }

    fn disruption_budgets(&mut self, namespace: String) -> Vec<DisruptionBudget> {
        self.scheduler_host().disruption_budgets(&namespace)
    }

    fn workload_selectors(&mut self, namespace: String, labels: Vec<Label>) -> Vec<String> {
        self.scheduler_host().workload_selectors(&namespace, &labels)
    }

    fn fits_without(&mut self, node: NodeId, removed: Vec<String>) -> Result<(), Vec<String>> {
        self.scheduler_host().fits_without(node, &removed)
    }
}

/// The `scheduler-plugin` world, as the runtime hosts it.
pub struct SchedulerWorld;

impl World for SchedulerWorld {
    const NAME: &'static str = "scheduler-plugin";
    type Pre = bindings::SchedulerPluginPre<HostState>;
    type Instance = bindings::SchedulerPlugin;

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::add_to_linker_sync(linker)?;
        bindings::SchedulerPlugin::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }

    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        bindings::SchedulerPluginPre::new(instance_pre)
    }

    fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self::Instance> {
        pre.instantiate(store)
    }

    fn configure(
        instance: &Self::Instance,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>> {
        instance.capstan_plugin_lifecycle().call_configure(store, config)
    }
}

/// A loaded scheduler plugin.
pub type SchedulerPlugin = PluginHandle<SchedulerWorld>;

/// Generations are unique across every log in the process, so an instance synced from one log
/// is never mistaken for being current in another.
static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

/// A pod as plugins see it, tagged with a token unique in the process.
///
/// Instances hold the pod last sent to them (`set-pod`); the host remembers, per instance, the
/// token of that pod and sends a snapshot only to an instance holding another. A snapshot never
/// changes: a pod that changed (a retry after an update, even with the same UID) is a new
/// snapshot with a new token, so an instance never acts on a stale copy. Clones share the token,
/// as they share the content.
#[derive(Clone, Debug)]
pub struct PodSnapshot {
    info: Arc<PodInfo>,
    token: u64,
}

impl PodSnapshot {
    /// A snapshot of `info` with a fresh token.
    #[must_use]
    pub fn new(info: PodInfo) -> Self {
        Self { info: Arc::new(info), token: NEXT_POD_TOKEN.fetch_add(1, Ordering::Relaxed) }
    }

    /// The same pod under a fresh token, so every instance is sent it again (as for a new
    /// scheduling attempt), without describing the pod anew.
    #[must_use]
    pub fn renewed(&self) -> Self {
        Self { info: Arc::clone(&self.info), token: NEXT_POD_TOKEN.fetch_add(1, Ordering::Relaxed) }
    }

    /// The pod.
    #[must_use]
    pub fn info(&self) -> &PodInfo {
        &self.info
    }

    /// Its token: equal tokens mean the same snapshot (0 is never one).
    #[must_use]
    pub fn token(&self) -> u64 {
        self.token
    }
}

impl std::ops::Deref for PodSnapshot {
    type Target = PodInfo;

    fn deref(&self) -> &PodInfo {
        &self.info
    }
}

impl From<PodInfo> for PodSnapshot {
    fn from(info: PodInfo) -> Self {
        Self::new(info)
    }
}

/// Pod snapshot tokens; 0 stands for "no pod" in an instance's record.
static NEXT_POD_TOKEN: AtomicU64 = AtomicU64::new(1);

/// How many changes a log keeps for instances that fell behind; older ones get a full reset.
const KEPT_CHANGES: usize = 8192;

/// Most pod summaries the kept changes may hold between them. Each change carries its node's
/// whole pod list, so on a node running thousands of pods 8192 changes would be gigabytes; past
/// this, older changes go and an instance that far behind is sent every node afresh instead.
const KEPT_POD_SUMMARIES: usize = 65_536;

/// The nodes as scheduler plugins see them, and the recent changes to them.
///
/// Node handles ([`NodeId`]) are small integers, stable while the node exists and reused after
/// it is removed. A log may carry the [`SchedulerHost`] that serves the plugins' `scheduler-host`
/// import during calls made with it.
pub struct NodeLog {
    /// Nodes by handle: handles are small and dense, so a lookup is an index and iteration
    /// runs in handle order (a cycle's candidate list needs no sort).
    nodes: Vec<Option<NodeInfo>>,
    /// The handles in use, ascending: a cycle's candidate list is a copy of it.
    handles: Vec<NodeId>,
    ids: HashMap<String, NodeId>,
    free_ids: Vec<NodeId>,
    next_id: NodeId,
    generation: u64,
    /// The generation of each kept change, ascending, parallel to `changes`.
    change_generations: Vec<u64>,
    changes: Vec<NodeChange>,
    /// The pod summaries `changes` hold between them.
    kept_pods: usize,
    /// `changes` with each node's pods left out, for plugins that do not ask for them.
    bare_changes: Vec<NodeChange>,
    /// By handle: the generation of the change that gave the node what it holds now. A trial
    /// ([`NodeLog::with_trial`]) and its undoing leave it as it was.
    settled: Vec<u64>,
    /// The trials undone, oldest first, each as the generations of its change and of its undoing
    /// and the node's handle; one at a time, so they never overlap. An instance synced after a
    /// node settled holds it as it is unless it synced during one of the node's trials.
    trials: Vec<(u64, u64, NodeId)>,
    /// The trial under way (its node and the generation of its change), sent like any change.
    open_trial: Option<(NodeId, u64)>,
    /// Pods nominated to each node (`status.nominatedNodeName`) and not bound yet: not part of
    /// the nodes plugins see, but the framework's filter counts them (see [`NodeLog::nominated`]).
    nominated: HashMap<NodeId, Vec<PodSummary>>,
    host: Option<Arc<dyn SchedulerHost>>,
}

impl std::fmt::Debug for NodeLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLog")
            .field("nodes", &self.handles.len())
            .field("generation", &self.generation)
            .field("host", &self.host.is_some())
            .finish_non_exhaustive()
    }
}

impl Default for NodeLog {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            handles: Vec::new(),
            ids: HashMap::new(),
            free_ids: Vec::new(),
            next_id: 0,
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            change_generations: Vec::new(),
            changes: Vec::new(),
            kept_pods: 0,
            bare_changes: Vec::new(),
            settled: Vec::new(),
            trials: Vec::new(),
            open_trial: None,
            nominated: HashMap::new(),
            host: None,
        }
    }
}

impl NodeLog {
    /// Adds or replaces the node called `name`; `build` receives its handle. Returns the handle.
    pub fn upsert(&mut self, build: impl FnOnce(NodeId) -> NodeInfo, name: &str) -> NodeId {
        let id = if let Some(&id) = self.ids.get(name) {
            id
        } else {
            let id = self.free_ids.pop().unwrap_or_else(|| {
                self.next_id += 1;
                self.next_id - 1
            });
            self.ids.insert(name.to_owned(), id);
            id
        };
        let info = build(id);
        let slot = id as usize;
        // A pod placed or gone changes only the node's usage: plugins are sent just that.
        let change = match self.nodes.get(slot).and_then(Option::as_ref) {
            Some(old) if old.same_but_usage(&info) => NodeChange::Usage(info.usage()),
            _ => NodeChange::Upsert(info.clone()),
        };
        self.record(change);
        if self.nodes.len() <= slot {
            self.nodes.resize_with(slot + 1, || None);
        }
        if self.nodes[slot].replace(info).is_none()
            && let Err(at) = self.handles.binary_search(&id)
        {
            self.handles.insert(at, id);
        }
        id
    }

    /// Replaces the usage (requests, pod count, ports, pods) of the known node `usage.id` in
    /// place and records just that change: what a pod placed on or gone from a node needs,
    /// without copying or comparing the rest of the node. Returns false (and changes nothing)
    /// when there is no such node.
    pub fn set_usage(&mut self, usage: NodeUsage) -> bool {
        let Some(node) = self.nodes.get_mut(usage.id as usize).and_then(Option::as_mut) else { return false };
        node.requested.clone_from(&usage.requested);
        node.pod_count = usage.pod_count;
        node.used_ports.clone_from(&usage.used_ports);
        node.pods.clone_from(&usage.pods);
        self.record(NodeChange::Usage(usage));
        true
    }

    /// Runs `f` with `trial` in place of the known node `trial.id` (preemption's dry run: the
    /// node without some pods, or with nominated ones), then puts the node back. Instances that
    /// serve calls meanwhile see the trial like any change; those that do not are never sent the
    /// trial nor its undoing. `None` (and nothing run) when there is no such node.
    pub fn with_trial<R>(&mut self, trial: NodeInfo, f: impl FnOnce(&Self) -> R) -> Option<R> {
        let id = trial.id;
        let original = self.get(id)?.clone();
        let name = original.name.clone();
        let settled = self.settled.get(id as usize).copied().unwrap_or_default();
        self.upsert(|_| trial, &name);
        let start = self.generation;
        self.open_trial = Some((id, start));
        let result = f(self);
        self.upsert(|_| original, &name);
        self.settled[id as usize] = settled;
        self.open_trial = None;
        self.trials.push((start, self.generation, id));
        Some(result)
    }

    /// The node whose trial was open when generation `held` was current, if any.
    fn on_trial_at(&self, held: u64) -> Option<NodeId> {
        let open = self.open_trial.filter(|&(_, start)| start <= held).map(|(id, _)| id);
        let at = self.trials.partition_point(|&(start, _, _)| start <= held);
        let undone = at.checked_sub(1).and_then(|i| self.trials.get(i)).filter(|&&(_, end, _)| held < end);
        open.or(undone.map(|&(_, _, id)| id))
    }

    /// Removes the node called `name`, if known.
    pub fn remove(&mut self, name: &str) -> Option<NodeId> {
        let id = self.ids.remove(name)?;
        if self.nodes.get_mut(id as usize).and_then(Option::take).is_some()
            && let Ok(at) = self.handles.binary_search(&id)
        {
            self.handles.remove(at);
        }
        self.free_ids.push(id);
        self.nominated.remove(&id);
        self.record(NodeChange::Remove(id));
        Some(id)
    }

    /// Sets the pods nominated to node `name` (ignored while there is no such node). Plugins
    /// see no change: nominations are the framework's business.
    pub fn set_nominated(&mut self, name: &str, pods: Vec<PodSummary>) {
        let Some(&id) = self.ids.get(name) else { return };
        if pods.is_empty() {
            self.nominated.remove(&id);
        } else {
            self.nominated.insert(id, pods);
        }
    }

    /// The pods nominated to node `id` and not bound yet.
    #[must_use]
    pub fn nominated(&self, id: NodeId) -> &[PodSummary] {
        self.nominated.get(&id).map_or(&[], Vec::as_slice)
    }

    /// Whether any node has nominated pods.
    #[must_use]
    pub fn has_nominated(&self) -> bool {
        !self.nominated.is_empty()
    }

    /// Attaches the view that answers the plugins' `scheduler-host` import in calls with this log.
    pub fn set_host(&mut self, host: Arc<dyn SchedulerHost>) {
        self.host = Some(host);
    }

    /// The attached host view, if any.
    #[must_use]
    pub fn host(&self) -> Option<&Arc<dyn SchedulerHost>> {
        self.host.as_ref()
    }

    fn record(&mut self, change: NodeChange) {
        self.generation = NEXT_GENERATION.fetch_add(1, Ordering::Relaxed);
        let pods = pod_summaries(&change);
        while !self.changes.is_empty()
            && (self.changes.len() >= KEPT_CHANGES || self.kept_pods + pods > KEPT_POD_SUMMARIES)
        {
            // Drop the older half (at least one) and keep the newer.
            let drop = self.changes.len().div_ceil(2);
            self.kept_pods -= self.changes.drain(..drop).map(|c| pod_summaries(&c)).sum::<usize>();
            self.bare_changes.drain(..drop);
            self.change_generations.drain(..drop);
            let oldest = self.change_generations.first().copied().unwrap_or(self.generation);
            let gone = self.trials.partition_point(|&(_, end, _)| end < oldest);
            self.trials.drain(..gone);
        }
        self.kept_pods += pods;
        self.bare_changes.push(match &change {
            NodeChange::Upsert(node) => NodeChange::Upsert(node.without_pods()),
            NodeChange::Remove(id) => NodeChange::Remove(*id),
            NodeChange::Usage(usage) => NodeChange::Usage(NodeUsage {
                id: usage.id,
                requested: usage.requested.clone(),
                pod_count: usage.pod_count,
                used_ports: usage.used_ports.clone(),
                pods: Vec::new(),
            }),
        });
        let id = changed_node(&change) as usize;
        if self.settled.len() <= id {
            self.settled.resize(id + 1, 0);
        }
        self.settled[id] = self.generation;
        self.changes.push(change);
        self.change_generations.push(self.generation);
    }

    /// The node with handle `id`.
    #[must_use]
    pub fn get(&self, id: NodeId) -> Option<&NodeInfo> {
        self.nodes.get(id as usize).and_then(Option::as_ref)
    }

    /// The handle of the node called `name`.
    #[must_use]
    pub fn id(&self, name: &str) -> Option<NodeId> {
        self.ids.get(name).copied()
    }

    /// Every node, in ascending handle order.
    pub fn iter(&self) -> impl Iterator<Item = &NodeInfo> {
        self.nodes.iter().flatten()
    }

    /// How many nodes there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.handles.len()
    }

    /// Every node's handle, ascending.
    #[must_use]
    pub fn handles(&self) -> &[NodeId] {
        &self.handles
    }

    /// Whether there are none.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    /// The current generation.
    #[must_use]
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The changes after generation `held`, if `held` is a generation this log still keeps; a
    /// generation it trimmed, or one from another log, is not. Without `with_pods`, the nodes
    /// in them list no pods. A long run of changes comes without those a later one makes moot
    /// (see [`drop_moot`]): preemption's dry runs change a node and put it back, hundreds of times
    /// a cycle, and an instance that took no part needs none of it. Nor is it sent the trials of
    /// a node it held before the first of them (see [`NodeLog::with_trial`]): they were undone.
    #[must_use]
    pub fn changes_since(&self, held: u64, with_pods: bool) -> Option<Cow<'_, [NodeChange]>> {
        let index = self.change_generations.binary_search(&held).ok()?;
        let changes = if with_pods { &self.changes } else { &self.bare_changes };
        let changes = &changes[index + 1..];
        // Every change after `held` of a node settled by then is a trial or its undoing; if the
        // instance did not sync during one of them, it holds the node as it is.
        let trial = self.on_trial_at(held);
        let open = self.open_trial.map(|(id, _)| id);
        let undone = |change: &NodeChange| {
            let id = changed_node(change);
            Some(id) != trial && Some(id) != open && self.settled.get(id as usize).is_some_and(|&at| at <= held)
        };
        if changes.len() <= COMPACT_AFTER && !changes.iter().any(undone) {
            return Some(Cow::Borrowed(changes));
        }
        let mut keep: Vec<bool> = changes.iter().map(|change| !undone(change)).collect();
        if keep.iter().filter(|k| **k).count() > COMPACT_AFTER {
            drop_moot(changes, &mut keep);
        }
        if keep.iter().all(|k| *k) {
            return Some(Cow::Borrowed(changes));
        }
        Some(Cow::Owned(changes.iter().zip(&keep).filter(|(_, keep)| **keep).map(|(c, _)| c.clone()).collect()))
    }

    /// Every node as an upsert, the changes that bring a new instance up to date; without
    /// `with_pods`, the nodes list no pods.
    #[must_use]
    pub fn everything(&self, with_pods: bool) -> Vec<NodeChange> {
        self.iter().map(|n| NodeChange::Upsert(if with_pods { n.clone() } else { n.without_pods() })).collect()
    }
}

/// How many changes an instance may be sent as they are; past that, moot ones are dropped first.
const COMPACT_AFTER: usize = 16;

/// Unmarks in `keep` the kept `changes` a later kept one makes moot, so applying the rest in
/// order leaves an instance with the same nodes: a node's usage is moot once a later change of
/// the same node follows (its usage again, the whole node, or its removal); a whole node or a
/// removal is moot once a later whole node or removal of the same handle follows.
fn drop_moot(changes: &[NodeChange], keep: &mut [bool]) {
    // Walking from the newest: the handles changed later, each with whether a later change
    // replaced the whole node.
    let mut later: HashMap<NodeId, bool> = HashMap::new();
    for (at, change) in changes.iter().enumerate().rev() {
        if !keep[at] {
            continue;
        }
        let (id, whole) = (changed_node(change), !matches!(change, NodeChange::Usage(_)));
        match later.get_mut(&id) {
            Some(later_whole) => {
                keep[at] = whole && !*later_whole;
                *later_whole |= whole;
            }
            None => {
                later.insert(id, whole);
            }
        }
    }
}

/// The handle of the node `change` is about.
fn changed_node(change: &NodeChange) -> NodeId {
    match change {
        NodeChange::Upsert(node) => node.id,
        NodeChange::Remove(id) => *id,
        NodeChange::Usage(usage) => usage.id,
    }
}

/// How many pod summaries a change carries.
fn pod_summaries(change: &NodeChange) -> usize {
    match change {
        NodeChange::Upsert(node) => node.pods.len(),
        NodeChange::Usage(usage) => usage.pods.len(),
        NodeChange::Remove(_) => 0,
    }
}

impl NodeInfo {
    /// A node with no handle, name or state: a base for struct-update syntax.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            id: 0,
            name: String::new(),
            labels: Vec::new(),
            taints: Vec::new(),
            unschedulable: false,
            allocatable: Vec::new(),
            requested: Vec::new(),
            pod_count: 0,
            used_ports: Vec::new(),
            images: Vec::new(),
            object: None,
            pods: Vec::new(),
        }
    }

    /// Whether `other` differs from this node at most in its usage (requested, pod count, used
    /// ports, pods): then a [`NodeUsage`] change is all plugins need.
    #[must_use]
    pub fn same_but_usage(&self, other: &Self) -> bool {
        self.id == other.id
            && self.name == other.name
            && self.unschedulable == other.unschedulable
            && self.labels == other.labels
            && self.taints == other.taints
            && self.allocatable == other.allocatable
            && self.images == other.images
            && self.object == other.object
    }

    /// The node's usage.
    #[must_use]
    pub fn usage(&self) -> NodeUsage {
        NodeUsage {
            id: self.id,
            requested: self.requested.clone(),
            pod_count: self.pod_count,
            used_ports: self.used_ports.clone(),
            pods: self.pods.clone(),
        }
    }

    /// A copy of the node without its pods, as plugins that do not ask for them receive it.
    #[must_use]
    pub fn without_pods(&self) -> Self {
        Self {
            id: self.id,
            name: self.name.clone(),
            labels: self.labels.clone(),
            taints: self.taints.clone(),
            unschedulable: self.unschedulable,
            allocatable: self.allocatable.clone(),
            requested: self.requested.clone(),
            pod_count: self.pod_count,
            used_ports: self.used_ports.clone(),
            images: self.images.clone(),
            object: self.object.clone(),
            pods: Vec::new(),
        }
    }
}

impl Status {
    /// Success with no reasons.
    #[must_use]
    pub fn success() -> Self {
        Self { code: Code::Success, reasons: Vec::new() }
    }

    /// An internal error for `reason`.
    #[must_use]
    pub fn error(reason: impl Into<String>) -> Self {
        Self { code: Code::Error, reasons: vec![reason.into()] }
    }

    /// Whether the code is success.
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.code == Code::Success
    }
}

type Guest = bindings::exports::capstan::plugin::scheduler::Guest;

/// Brings the instance's nodes up to `log`'s generation, sending as little as possible. The
/// store remembers which generation it last sent (a new instance has none; a failed call
/// discards its instance), so an instance already current costs no call at all.
fn sync(guest: &Guest, store: &mut Store<HostState>, log: &NodeLog) -> wasmtime::Result<()> {
    let held = store.data().scheduler_nodes;
    if held.generation == log.generation {
        return Ok(());
    }
    // A new instance is asked once whether it wants each node's pods.
    let with_pods = match held.with_pods {
        Some(with_pods) => with_pods,
        None => guest.call_describe(&mut *store)?.wants_node_pods,
    };
    if let Some(changes) = log.changes_since(held.generation, with_pods) {
        guest.call_update_nodes(&mut *store, log.generation, false, &changes)?;
    } else {
        guest.call_update_nodes(&mut *store, log.generation, true, &log.everything(with_pods))?;
    }
    store.data_mut().scheduler_nodes = InstanceNodes { generation: log.generation, with_pods: Some(with_pods) };
    Ok(())
}

/// Makes `pod` the pod the instance acts on, unless it holds that snapshot already. The store
/// remembers the token of the pod last sent (a new instance holds none; a failed call discards
/// its instance, so a half-sent pod is never trusted).
fn set_pod(guest: &Guest, store: &mut Store<HostState>, pod: &PodSnapshot) -> wasmtime::Result<()> {
    if store.data().scheduler_pod == pod.token {
        return Ok(());
    }
    guest.call_set_pod(&mut *store, &pod.info)?;
    store.data_mut().scheduler_pod = pod.token;
    Ok(())
}

/// What the host last sent one instance of the nodes.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct InstanceNodes {
    /// The generation (0: nothing yet).
    generation: u64,
    /// Whether the instance asked for each node's pods; `None` until asked.
    with_pods: Option<bool>,
}

/// Runs `call` with `host` answering the `scheduler-host` import.
fn with_host<R>(
    store: &mut Store<HostState>,
    host: Option<&Arc<dyn SchedulerHost>>,
    call: impl FnOnce(&mut Store<HostState>) -> R,
) -> R {
    let context = host.map(|h| Arc::new(HostContext(Arc::clone(h))) as Arc<dyn std::any::Any + Send + Sync>);
    store.data_mut().set_call_context(context);
    let result = call(store);
    store.data_mut().set_call_context(None);
    result
}

impl PluginHandle<SchedulerWorld> {
    /// Runs `call` on an instance whose nodes match `nodes` and which holds `pod`, with the
    /// log's host view attached.
    fn synced<R>(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        call: impl FnOnce(&Guest, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        self.call(|plugin, store| {
            let guest = plugin.capstan_plugin_scheduler();
            sync(guest, store, nodes)?;
            set_pod(guest, store, pod)?;
            with_host(store, nodes.host(), |store| call(guest, store))
        })
    }

    /// Which extension points the plugin implements.
    pub fn describe(&self) -> Result<Description, PluginError> {
        self.call(|plugin, store| plugin.capstan_plugin_scheduler().call_describe(store))
    }

    /// `QueueSort`: the pod's key in the active queue. Called outside a cycle, it needs no
    /// nodes; the instance then holds `pod` until a call for another pod replaces it.
    pub fn queue_sort_key(&self, pod: &PodSnapshot) -> Result<i64, PluginError> {
        self.call(|plugin, store| {
            let guest = plugin.capstan_plugin_scheduler();
            set_pod(guest, store, pod)?;
            guest.call_queue_sort_key(store)
        })
    }

    /// `PreFilter`.
    pub fn pre_filter(&self, nodes: &NodeLog, pod: &PodSnapshot) -> Result<PreFilterResult, PluginError> {
        self.synced(nodes, pod, |guest, store| guest.call_pre_filter(store))
    }

    /// Filter over `ids`: the nodes that do not fit, with why, in order; the others fit.
    pub fn filter(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &CycleState,
        ids: &[NodeId],
    ) -> Result<Vec<NodeStatus>, PluginError> {
        self.synced(nodes, pod, |guest, store| guest.call_filter(store, state, ids))
    }

    /// `PostFilter`, with every filtered-out node and why. The log is locked only to bring the
    /// instance up to date, so `host` (typically a preemption dry run) may change it during the
    /// call, provided it leaves it as it found it. The dry run's own calls are served by other
    /// instances (this one is busy), so this one keeps its pod throughout.
    pub fn post_filter(
        &self,
        nodes: &Mutex<NodeLog>,
        pod: &PodSnapshot,
        state: &CycleState,
        filtered: &[NodeStatus],
        host: &Arc<dyn SchedulerHost>,
    ) -> Result<PostFilterResult, PluginError> {
        self.call(|plugin, store| {
            let guest = plugin.capstan_plugin_scheduler();
            sync(guest, store, &nodes.lock().unwrap_or_else(PoisonError::into_inner))?;
            set_pod(guest, store, pod)?;
            with_host(store, Some(host), |store| guest.call_post_filter(store, state, filtered))
        })
    }

    /// `PreScore` over the feasible nodes; returns the state for `score`.
    pub fn pre_score(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &CycleState,
        ids: &[NodeId],
    ) -> Result<Result<Vec<u8>, Status>, PluginError> {
        self.synced(nodes, pod, |guest, store| guest.call_pre_score(store, state, ids))
    }

    /// `Score`, then `NormalizeScore` when `normalize`: one score per node, in order.
    pub fn score(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &CycleState,
        ids: &[NodeId],
        normalize: bool,
    ) -> Result<Result<Vec<i64>, Status>, PluginError> {
        self.synced(nodes, pod, |guest, store| {
            let scores = match guest.call_score(&mut *store, state, ids)? {
                Ok(scores) => scores,
                Err(status) => return Ok(Err(status)),
            };
            if normalize { guest.call_normalize_score(store, state, ids, &scores) } else { Ok(Ok(scores)) }
        })
    }

    /// Reserve.
    pub fn reserve(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &CycleState,
        node: NodeId,
    ) -> Result<Status, PluginError> {
        self.synced(nodes, pod, |guest, store| guest.call_reserve(store, state, node))
    }

    /// Unreserve.
    pub fn unreserve(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &CycleState,
        node: NodeId,
    ) -> Result<(), PluginError> {
        self.synced(nodes, pod, |guest, store| guest.call_unreserve(store, state, node))
    }

    /// Permit.
    pub fn permit(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &CycleState,
        node: NodeId,
    ) -> Result<PermitResult, PluginError> {
        self.synced(nodes, pod, |guest, store| guest.call_permit(store, state, node))
    }

    /// `PreBind`.
    pub fn pre_bind(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &CycleState,
        node: NodeId,
    ) -> Result<Status, PluginError> {
        self.synced(nodes, pod, |guest, store| guest.call_pre_bind(store, state, node))
    }

    /// Bind: success means the host writes the binding.
    pub fn bind(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &CycleState,
        node: NodeId,
    ) -> Result<Status, PluginError> {
        self.synced(nodes, pod, |guest, store| guest.call_bind(store, state, node))
    }

    /// `PostBind`.
    pub fn post_bind(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &CycleState,
        node: NodeId,
    ) -> Result<(), PluginError> {
        self.synced(nodes, pod, |guest, store| guest.call_post_bind(store, state, node))
    }
}

#[cfg(test)]
mod tests {
    use super::{Label, NodeChange, NodeId, NodeInfo, NodeLog, PodInfo, PodSnapshot, PodSummary, SchedulerWorld};
    use crate::{Limits, PluginSpec, Runtime, RuntimeConfig};

    fn node(name: &str) -> impl FnOnce(u32) -> NodeInfo + '_ {
        move |id| NodeInfo { id, name: name.to_owned(), ..NodeInfo::empty() }
    }

    /// Pod number `i` of namespace `default`, requesting nothing.
    fn summary(i: usize) -> PodSummary {
        PodSummary {
            namespace: "default".into(),
            name: format!("p{i}"),
            uid: format!("u{i}"),
            labels: Vec::new(),
            priority: 0,
            affinity: None,
            requests: Vec::new(),
            host_ports: Vec::new(),
            terminating: false,
        }
    }

    /// Pod `p` (always the same UID) asking through `spec.nodeName` for node `node`.
    fn pod_for(node: &str) -> PodInfo {
        PodInfo {
            namespace: "default".into(),
            name: "p".into(),
            uid: "uid-p".into(),
            labels: Vec::new(),
            requests: Vec::new(),
            node_selector: Vec::new(),
            tolerations: Vec::new(),
            priority: 0,
            node_name: Some(node.to_owned()),
            affinity: None,
            host_ports: Vec::new(),
            images: Vec::new(),
            object: "{}".into(),
        }
    }

    /// With one instance of the NodeName component: the host sends a pod snapshot only to an
    /// instance that does not hold it. To see that it skips, the test slips the instance another
    /// pod behind the host's back: a call with the snapshot the host believes the instance holds
    /// then answers for the slipped pod, while a new snapshot (the same pod after an update) is
    /// sent and answered for.
    #[test]
    fn set_pod_is_sent_once_per_snapshot_and_again_when_the_pod_changes() {
        let bytes = capstan_components::get("node-name").unwrap_or_else(|| panic!("node-name is not built"));
        let runtime = Runtime::new(RuntimeConfig::default()).unwrap_or_else(|e| panic!("{e}"));
        let limits = Limits { max_instances: 1, ..Limits::default() };
        let spec = PluginSpec::new("node-name").with_limits(limits);
        let plugin = runtime.load::<SchedulerWorld>(spec, bytes).unwrap_or_else(|e| panic!("{e}"));
        let mut nodes = NodeLog::default();
        let n1 = nodes.upsert(node("n1"), "n1");
        let n2 = nodes.upsert(node("n2"), "n2");
        let misfits = |pod: &PodSnapshot| -> Vec<u32> {
            let statuses = plugin.filter(&nodes, pod, &Vec::new(), &[n1, n2]).unwrap_or_else(|e| panic!("{e}"));
            statuses.into_iter().map(|s| s.node).collect()
        };

        let to_n1 = PodSnapshot::new(pod_for("n1"));
        assert_eq!(misfits(&to_n1), [n2], "the first call sends the pod");
        assert_eq!(misfits(&to_n1.clone()), [n2], "a clone is the same snapshot");
        plugin
            .call(|instance, store| instance.capstan_plugin_scheduler().call_set_pod(store, &pod_for("n2")))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(misfits(&to_n1), [n1], "the instance holds the snapshot as far as the host knows: not sent again");

        let updated = PodSnapshot::new(pod_for("n2"));
        assert_ne!(updated.token(), to_n1.token());
        assert_eq!(misfits(&updated), [n1], "a new snapshot of the pod is sent");
        assert_eq!(misfits(&to_n1), [n2], "and the earlier one again, once the instance holds another");
    }

    #[test]
    fn handles_are_reused_after_removal() {
        let mut log = NodeLog::default();
        let a = log.upsert(node("a"), "a");
        let b = log.upsert(node("b"), "b");
        assert_ne!(a, b);
        assert_eq!(log.upsert(node("a"), "a"), a, "an update keeps the handle");
        assert_eq!(log.remove("a"), Some(a));
        assert_eq!(log.upsert(node("c"), "c"), a, "a freed handle is reused");
        assert_eq!(log.len(), 2);
        let d = log.upsert(node("d"), "d");
        log.remove("b");
        assert_eq!(log.handles(), [a, d], "handles stay ascending");
        let names: Vec<&str> = log.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["c", "d"], "iteration follows handle order");
    }

    #[test]
    fn changes_since_a_held_generation_are_the_later_ones() {
        let mut log = NodeLog::default();
        log.upsert(node("a"), "a");
        let held = log.generation();
        log.upsert(node("b"), "b");
        log.remove("a");
        let changes = log.changes_since(held, true).unwrap_or_default();
        assert_eq!(changes.len(), 2);
        assert!(matches!(&changes[0], NodeChange::Upsert(n) if n.name == "b"));
        assert!(matches!(changes[1], NodeChange::Remove(_)));
        assert_eq!(log.changes_since(log.generation(), true).map(|c| c.len()), Some(0));
        let other = NodeLog::default();
        assert!(other.changes_since(held, true).is_none(), "a generation from another log resets");
    }

    /// What an instance holds after applying `changes` to `start`, by handle.
    fn applied(start: &[NodeInfo], changes: &[NodeChange]) -> std::collections::BTreeMap<NodeId, NodeInfo> {
        let mut nodes: std::collections::BTreeMap<NodeId, NodeInfo> = start.iter().map(|n| (n.id, n.clone())).collect();
        for change in changes {
            match change {
                NodeChange::Upsert(node) => {
                    nodes.insert(node.id, node.clone());
                }
                NodeChange::Remove(id) => {
                    nodes.remove(id);
                }
                NodeChange::Usage(usage) => {
                    if let Some(node) = nodes.get_mut(&usage.id) {
                        node.requested.clone_from(&usage.requested);
                        node.pod_count = usage.pod_count;
                        node.used_ports.clone_from(&usage.used_ports);
                        node.pods.clone_from(&usage.pods);
                    }
                }
            }
        }
        nodes
    }

    /// Preemption's dry runs: a node trimmed and put back, again and again, among real changes.
    /// An instance that missed them all is sent only what still matters, and ends up with the
    /// same nodes as one sent every change.
    #[test]
    fn a_long_catch_up_leaves_out_moot_changes_and_ends_the_same() {
        let mut log = NodeLog::default();
        for name in ["a", "b", "c"] {
            log.upsert(node(name), name);
        }
        let start: Vec<NodeInfo> = log.iter().cloned().collect();
        let held = log.generation();
        let with_pods = |pods: u32| {
            move |id| NodeInfo {
                id,
                name: "a".into(),
                pod_count: pods,
                pods: (0..pods as usize).map(summary).collect(),
                ..NodeInfo::empty()
            }
        };
        for round in 0..20u32 {
            log.upsert(with_pods(round % 3), "a");
            log.upsert(with_pods(3), "a");
        }
        // b relabelled (the whole node), then a pod placed there (its usage): both stay.
        let labelled = |pods: u32| {
            move |id| NodeInfo {
                id,
                name: "b".into(),
                labels: vec![Label { key: "k".into(), value: "v".into() }],
                pod_count: pods,
                pods: (0..pods as usize).map(summary).collect(),
                ..NodeInfo::empty()
            }
        };
        log.upsert(labelled(0), "b");
        log.upsert(labelled(1), "b");
        log.remove("c");
        log.upsert(node("d"), "d");
        let sent = log.changes_since(held, true).unwrap_or_default();
        // a's last usage, b whole and b's usage, and d, which took c's handle: c's removal is moot.
        assert_eq!(sent.len(), 4, "{sent:?}");
        let full = &log.changes[log.changes.len() - 44..];
        assert_eq!(applied(&start, &sent), applied(&start, full));
        // A short catch-up is sent as it is.
        let recent = log.change_generations[log.change_generations.len() - 3];
        assert_eq!(log.changes_since(recent, true).map(|c| c.len()), Some(2));
    }

    /// Preemption's trials: an instance synced before a node's first trial is sent none of its
    /// trials, even after many; one synced during a trial is sent the undoing; a real change
    /// after them is sent to both, and both end with the nodes an instance sent every change has.
    #[test]
    fn trials_undone_are_not_sent_to_instances_that_never_saw_them() {
        let mut log = NodeLog::default();
        let a = log.upsert(node("a"), "a");
        log.upsert(node("b"), "b");
        let start: Vec<NodeInfo> = log.iter().cloned().collect();
        let before = log.generation();
        let first = log.changes.len();
        let trial = |pods: u32| NodeInfo { id: a, name: "a".into(), pod_count: pods, ..NodeInfo::empty() };
        let during = log.with_trial(trial(1), |log| {
            let sent = log.changes_since(before, true).unwrap_or_default();
            assert!(matches!(&sent[..], [NodeChange::Usage(u)] if u.pod_count == 1), "the trial itself: {sent:?}");
            log.generation()
        });
        let during = during.unwrap_or_default();
        let between = log.generation();
        for pods in 2..30 {
            log.with_trial(trial(pods), |_| ());
        }
        assert_eq!(log.changes_since(before, true).map(|c| c.len()), Some(0), "nothing to send");
        assert_eq!(log.changes_since(between, true).map(|c| c.len()), Some(0), "nor between trials");
        let sent_during = log.changes_since(during, true).unwrap_or_default();
        assert!(!sent_during.is_empty(), "the trial it holds must be undone");
        let mid_trial: Vec<NodeInfo> = applied(&start, &log.changes[first..=first]).into_values().collect();
        assert_eq!(applied(&mid_trial, &sent_during), applied(&start, &[]), "back to the node as it was");
        assert!(log.with_trial(NodeInfo { id: 99, ..NodeInfo::empty() }, |_| ()).is_none(), "no such node");
        // A real change of a after the trials reaches an instance from before them too.
        log.upsert(|id| NodeInfo { id, name: "a".into(), pod_count: 7, ..NodeInfo::empty() }, "a");
        let full = &log.changes[first..];
        let sent = log.changes_since(before, true).unwrap_or_default();
        assert_eq!(applied(&start, &sent), applied(&start, full));
        assert!(applied(&start, &sent).values().any(|n| n.pod_count == 7));
        assert_eq!(applied(&mid_trial, &log.changes_since(during, true).unwrap_or_default()), applied(&start, full));
    }

    #[test]
    fn plugins_that_do_not_ask_for_pods_get_nodes_without_them() {
        let mut log = NodeLog::default();
        log.upsert(node("z"), "z");
        let held = log.generation();
        let pod = summary(0);
        log.upsert(|id| NodeInfo { id, name: "a".into(), pod_count: 1, pods: vec![pod], ..NodeInfo::empty() }, "a");
        let pods = |changes: &[NodeChange]| match changes {
            [NodeChange::Upsert(node)] => (node.pod_count, node.pods.len()),
            _ => (0, usize::MAX),
        };
        assert_eq!(log.changes_since(held, true).as_deref().map(pods), Some((1, 1)));
        assert_eq!(log.changes_since(held, false).as_deref().map(pods), Some((1, 0)), "the count stays, the list goes");
        log.remove("z");
        assert_eq!(pods(&log.everything(true)), (1, 1));
        assert_eq!(pods(&log.everything(false)), (1, 0));
    }

    #[test]
    fn a_node_whose_pods_alone_changed_is_sent_as_a_usage_change() {
        let mut log = NodeLog::default();
        log.upsert(node("a"), "a");
        let held = log.generation();
        let pod = summary(0);
        log.upsert(|id| NodeInfo { id, name: "a".into(), pod_count: 1, pods: vec![pod], ..NodeInfo::empty() }, "a");
        log.upsert(|id| NodeInfo { id, name: "a".into(), unschedulable: true, ..NodeInfo::empty() }, "a");
        let changes = log.changes_since(held, true).unwrap_or_default();
        assert!(
            matches!(&changes[0], NodeChange::Usage(u) if u.pod_count == 1 && u.pods.len() == 1),
            "a pod placed: only the usage ({changes:?})"
        );
        assert!(matches!(&changes[1], NodeChange::Upsert(n) if n.unschedulable), "anything else: the whole node");
        let bare = log.changes_since(held, false).unwrap_or_default();
        assert!(matches!(&bare[0], NodeChange::Usage(u) if u.pod_count == 1 && u.pods.is_empty()));
    }

    #[test]
    fn a_usage_set_in_place_keeps_the_rest_of_the_node() {
        let mut log = NodeLog::default();
        let a = log.upsert(|id| NodeInfo { id, name: "a".into(), unschedulable: true, ..NodeInfo::empty() }, "a");
        let held = log.generation();
        let usage = super::NodeUsage {
            id: a,
            requested: Vec::new(),
            pod_count: 1,
            used_ports: Vec::new(),
            pods: vec![summary(0)],
        };
        assert!(!log.set_usage(super::NodeUsage { id: a + 1, ..usage.clone() }), "no such node");
        assert_eq!(log.generation(), held, "nothing recorded for a node that is not there");
        assert!(log.set_usage(usage));
        let node = log.get(a).cloned().unwrap_or_else(NodeInfo::empty);
        assert_eq!((node.name.as_str(), node.unschedulable, node.pod_count, node.pods.len()), ("a", true, 1, 1));
        let changes = log.changes_since(held, true).unwrap_or_default();
        assert!(matches!(&changes[..], [NodeChange::Usage(u)] if u.pods.len() == 1), "{changes:?}");
        let bare = log.changes_since(held, false).unwrap_or_default();
        assert!(matches!(&bare[..], [NodeChange::Usage(u)] if u.pod_count == 1 && u.pods.is_empty()), "{bare:?}");
    }

    #[test]
    fn changes_of_a_crowded_node_are_kept_within_the_pod_budget() {
        let crowded: Vec<PodSummary> = (0..super::KEPT_POD_SUMMARIES / 4).map(summary).collect();
        let mut log = NodeLog::default();
        log.upsert(node("a"), "a");
        let first = log.generation();
        for _ in 0..10 {
            let pods = crowded.clone();
            log.upsert(|id| NodeInfo { id, name: "a".into(), pods, ..NodeInfo::empty() }, "a");
        }
        let kept: usize = log.changes.iter().map(super::pod_summaries).sum();
        assert_eq!(kept, log.kept_pods);
        assert!(kept <= super::KEPT_POD_SUMMARIES, "{kept} pod summaries kept");
        assert!(log.changes_since(first, true).is_none(), "an instance that far behind is sent everything");
        let held = log.generation();
        log.upsert(node("b"), "b");
        assert_eq!(log.changes_since(held, true).map(|c| c.len()), Some(1), "a recent one still gets the delta");
    }
}
