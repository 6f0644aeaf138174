//! The default profile's plugins linked natively (cargo feature `native-plugins`): the very
//! crates under `plugins/scheduler/` that build the components, called through the SDK's
//! [`native::Plugin`](capstan_plugin_sdk::scheduler::native::Plugin) instead of across the
//! WebAssembly boundary. The benchmark schedules the same workload through both and prints the
//! ratio; nothing else uses this build.
//!
//! The host's types (wasmtime's bindings) and the SDK's (wit-bindgen's) come from the same WIT,
//! field for field; [`Convert`] copies one into the other, as the canonical ABI copies values
//! into and out of a component's memory.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Mutex, PoisonError};

use capstan_plugin_sdk::scheduler as sdk;
use capstan_wasm::scheduler::{self as host, NodeId, NodeLog, PodInfo, PodSnapshot, SchedulerHost};
use capstan_wasm::{Cause, PluginError};

type Instance = Box<dyn sdk::native::Plugin + Send>;

/// The natively linked plugin crate whose component is called `component` (as the default
/// profile names them), configured with `config`; `None` when no such crate is linked.
#[must_use]
pub fn builtin(component: &str, config: &str) -> Option<Result<Instance, String>> {
    let make: fn(&str) -> Result<Instance, String> = match component {
        "priority-sort" => priority_sort::native_plugin,
        "node-unschedulable" => node_unschedulable::native_plugin,
        "node-name" => node_name::native_plugin,
        "taint-toleration" => taint_toleration::native_plugin,
        "node-affinity" => node_affinity::native_plugin,
        "node-ports" => node_ports::native_plugin,
        "node-resources-fit" => node_resources_fit::native_plugin,
        "pod-topology-spread" => pod_topology_spread::native_plugin,
        "inter-pod-affinity" => inter_pod_affinity::native_plugin,
        "default-preemption" => default_preemption::native_plugin,
        "node-resources-balanced-allocation" => node_resources_balanced_allocation::native_plugin,
        "image-locality" => image_locality::native_plugin,
        "default-binder" => default_binder::native_plugin,
        _ => return None,
    };
    Some(make(config))
}

/// Makes a new instance of a natively linked plugin.
type Make = Box<dyn Fn() -> Result<Instance, String> + Send + Sync>;

/// A natively linked plugin: instances called one call at a time each, and as many of them as
/// calls at once (parallel filtering), like a component's instance pool.
pub struct NativePlugin {
    name: String,
    make: Make,
    idle: Mutex<Vec<Linked>>,
}

/// The instance and what was last sent to it of the nodes and which pod, as a component
/// instance's store remembers them.
struct Linked {
    instance: Instance,
    generation: u64,
    with_pods: bool,
    /// The token of the pod last set (0: none).
    pod: u64,
}

impl Linked {
    fn new(instance: Instance) -> Self {
        let with_pods = instance.describe().wants_node_pods;
        Self { instance, generation: 0, with_pods, pod: 0 }
    }
}

impl std::fmt::Debug for NativePlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativePlugin").field("name", &self.name).finish_non_exhaustive()
    }
}

/// Copies a value of one binding's type into the other's.
pub trait Convert<T> {
    /// The copy.
    fn convert(self) -> T;
}

impl<From: Convert<To>, To> Convert<Vec<To>> for Vec<From> {
    fn convert(self) -> Vec<To> {
        self.into_iter().map(Convert::convert).collect()
    }
}

impl<From: Convert<To>, To> Convert<Option<To>> for Option<From> {
    fn convert(self) -> Option<To> {
        self.map(Convert::convert)
    }
}

impl<From: Convert<To> + Clone, To> Convert<Vec<To>> for &[From] {
    fn convert(self) -> Vec<To> {
        self.iter().cloned().map(Convert::convert).collect()
    }
}

macro_rules! identity {
    ($($t:ty),*) => {$(
        impl Convert<$t> for $t {
            fn convert(self) -> $t {
                self
            }
        }
    )*};
}
identity!(String, u8, u16, u32, u64, i32, i64, bool);

impl<A: Convert<C>, B: Convert<D>, C, D> Convert<(C, D)> for (A, B) {
    fn convert(self) -> (C, D) {
        (self.0.convert(), self.1.convert())
    }
}

/// Records with the same fields on both sides, in both directions.
macro_rules! records {
    ($($from:path => $to:path { $($field:ident),* $(,)? })*) => {$(
        impl Convert<$to> for $from {
            fn convert(self) -> $to {
                $to { $($field: self.$field.convert()),* }
            }
        }
    )*};
}

/// Enums with the same unit cases on both sides.
macro_rules! enums {
    ($($from:ident => $to:ident { $($case:ident),* $(,)? })*) => {$(
        impl Convert<$to> for $from {
            fn convert(self) -> $to {
                match self { $($from::$case => $to::$case),* }
            }
        }
    )*};
}

use capstan_wasm::scheduler::{
    Code as HCode, Description as HDescription, DisruptionBudget as HBudget, HostPort as HPort, Label as HLabel,
    NodeInfo as HNode, NodeStatus as HNodeStatus, PermitResult as HPermit, PodSummary as HSummary,
    PostFilterResult as HPost, PreFilterResult as HPre, ResourceAmount as HAmount, Status as HStatus, Taint as HTaint,
    TaintEffect as HEffect, Toleration as HToleration, Victim as HVictim,
};
use sdk::{
    Code as SCode, Description as SDescription, DisruptionBudget as SBudget, HostPort as SPort, Label as SLabel,
    NodeInfo as SNode, NodeStatus as SNodeStatus, PermitResult as SPermit, PodInfo as SPod, PodSummary as SSummary,
    PostFilterResult as SPost, PreFilterResult as SPre, ResourceAmount as SAmount, Status as SStatus, Taint as STaint,
    TaintEffect as SEffect, Toleration as SToleration, Victim as SVictim,
};

enums! {
    HCode => SCode { Success, Error, Unschedulable, UnschedulableAndUnresolvable, Wait, Skip }
    SCode => HCode { Success, Error, Unschedulable, UnschedulableAndUnresolvable, Wait, Skip }
    HEffect => SEffect { NoSchedule, PreferNoSchedule, NoExecute }
}

records! {
    HLabel => SLabel { key, value }
    SLabel => HLabel { key, value }
    HAmount => SAmount { name, milli_value }
    HTaint => STaint { key, value, effect }
    HPort => SPort { ip, protocol, port }
    HSummary => SSummary { namespace, name, uid, labels, priority, affinity, requests, host_ports, terminating }
    HNode => SNode {
        id, name, labels, taints, unschedulable, allocatable, requested, pod_count, used_ports, images, object, pods,
    }
    HToleration => SToleration { key, exists, value, effect }
    host::NodeUsage => sdk::NodeUsage { id, requested, pod_count, used_ports, pods }
    PodInfo => SPod {
        namespace, name, uid, labels, requests, node_selector, tolerations, priority, node_name, affinity,
        host_ports, images, object,
    }
    HStatus => SStatus { code, reasons }
    SStatus => HStatus { code, reasons }
    HNodeStatus => SNodeStatus { node, status }
    SNodeStatus => HNodeStatus { node, status }
    SPre => HPre { status, nodes, state }
    SVictim => HVictim { namespace, name, uid }
    SPost => HPost { status, nominated_node, victims }
    SPermit => HPermit { status, timeout_ms }
    HBudget => SBudget { namespace, name, selector, disruptions_allowed }
}

impl Convert<sdk::NodeChange> for host::NodeChange {
    fn convert(self) -> sdk::NodeChange {
        match self {
            Self::Upsert(node) => sdk::NodeChange::Upsert(node.convert()),
            Self::Remove(id) => sdk::NodeChange::Remove(id),
            Self::Usage(usage) => sdk::NodeChange::Usage(usage.convert()),
        }
    }
}

impl Convert<HDescription> for SDescription {
    fn convert(self) -> HDescription {
        use host::ExtensionPoints as H;
        use sdk::ExtensionPoints as S;
        let pairs = [
            (S::QUEUE_SORT, H::QUEUE_SORT),
            (S::PRE_FILTER, H::PRE_FILTER),
            (S::FILTER, H::FILTER),
            (S::POST_FILTER, H::POST_FILTER),
            (S::PRE_SCORE, H::PRE_SCORE),
            (S::SCORE, H::SCORE),
            (S::NORMALIZE_SCORE, H::NORMALIZE_SCORE),
            (S::RESERVE, H::RESERVE),
            (S::PERMIT, H::PERMIT),
            (S::PRE_BIND, H::PRE_BIND),
            (S::BIND, H::BIND),
            (S::POST_BIND, H::POST_BIND),
        ];
        let extension_points = pairs
            .into_iter()
            .filter(|(sdk, _)| self.extension_points.contains(*sdk))
            .fold(H::empty(), |points, (_, host)| points | host);
        HDescription {
            extension_points,
            wants_node_objects: self.wants_node_objects,
            wants_node_pods: self.wants_node_pods,
        }
    }
}

/// The host's `scheduler-host` view, as the SDK's native host calls see it.
struct View(Arc<dyn SchedulerHost>);

impl sdk::host::HostView for View {
    fn namespace_labels(&self, name: &str) -> Option<Vec<SLabel>> {
        self.0.namespace_labels(name).convert()
    }
    fn disruption_budgets(&self, namespace: &str) -> Vec<SBudget> {
        self.0.disruption_budgets(namespace).convert()
    }
    fn workload_selectors(&self, namespace: &str, labels: &[SLabel]) -> Vec<String> {
        let labels: Vec<HLabel> = labels.convert();
        self.0.workload_selectors(namespace, &labels)
    }
    fn fits_without(&self, node: NodeId, removed: &[String]) -> Result<(), Vec<String>> {
        self.0.fits_without(node, removed)
    }
}

impl NativePlugin {
    /// Plugin `name`, its instances made by `make`; the first is made at once, so a plugin that
    /// cannot be configured fails here.
    pub fn new(name: &str, make: Make) -> Result<Self, String> {
        let first = Linked::new(make()?);
        Ok(Self { name: name.to_owned(), make, idle: Mutex::new(vec![first]) })
    }

    /// Runs `call` on the instance: a panic becomes the error a trapping component gives.
    fn call<R>(&self, call: impl FnOnce(&mut Instance) -> R) -> Result<R, PluginError> {
        self.call_linked(|linked| call(&mut linked.instance))
    }

    fn call_linked<R>(&self, call: impl FnOnce(&mut Linked) -> R) -> Result<R, PluginError> {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut linked = match idle {
            Some(linked) => linked,
            None => (self.make)().map(Linked::new).map_err(|e| PluginError {
                plugin: self.name.clone(),
                cause: Cause::Trap(format!("cannot make an instance: {e}")),
            })?,
        };
        let result = catch_unwind(AssertUnwindSafe(|| call(&mut linked))).map_err(|panic| {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            PluginError { plugin: self.name.clone(), cause: Cause::Trap(format!("panicked: {message}")) }
        })?;
        // As a trapped component instance, one that panicked is dropped rather than reused.
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(linked);
        Ok(result)
    }

    /// Runs `call` on an instance brought up to `nodes` and holding `pod`, with the log's host
    /// view attached.
    fn synced<R>(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        call: impl FnOnce(&mut Instance) -> R,
    ) -> Result<R, PluginError> {
        self.call_linked(|linked| {
            sync(linked, nodes);
            set_pod(linked, pod);
            with_view(nodes.host(), || call(&mut linked.instance))
        })
    }

    /// Which extension points the plugin implements.
    pub fn describe(&self) -> Result<HDescription, PluginError> {
        self.call(|i| i.describe().convert())
    }

    /// `QueueSort`.
    pub fn queue_sort_key(&self, pod: &PodSnapshot) -> Result<i64, PluginError> {
        self.call_linked(|linked| {
            set_pod(linked, pod);
            linked.instance.queue_sort_key()
        })
    }

    /// `PreFilter`.
    pub fn pre_filter(&self, nodes: &NodeLog, pod: &PodSnapshot) -> Result<HPre, PluginError> {
        self.synced(nodes, pod, |i| i.pre_filter().convert())
    }

    /// Filter over `ids`: the nodes that do not fit.
    pub fn filter(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &[u8],
        ids: &[NodeId],
    ) -> Result<Vec<HNodeStatus>, PluginError> {
        self.synced(nodes, pod, |i| i.filter(state, ids).convert())
    }

    /// `PostFilter`; `host` answers the plugin's host calls (the preemption dry run).
    pub fn post_filter(
        &self,
        nodes: &Mutex<NodeLog>,
        pod: &PodSnapshot,
        state: &[u8],
        filtered: &[HNodeStatus],
        host: &Arc<dyn SchedulerHost>,
    ) -> Result<HPost, PluginError> {
        self.call_linked(|linked| {
            sync(linked, &nodes.lock().unwrap_or_else(PoisonError::into_inner));
            set_pod(linked, pod);
            with_view(Some(host), || linked.instance.post_filter(state, &filtered.convert()).convert())
        })
    }

    /// `PreScore`.
    pub fn pre_score(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &[u8],
        ids: &[NodeId],
    ) -> Result<Result<Vec<u8>, HStatus>, PluginError> {
        self.synced(nodes, pod, |i| i.pre_score(state, ids).map_err(Convert::convert))
    }

    /// `Score`, then `NormalizeScore` when `normalize`.
    pub fn score(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &[u8],
        ids: &[NodeId],
        normalize: bool,
    ) -> Result<Result<Vec<i64>, HStatus>, PluginError> {
        self.synced(nodes, pod, |i| {
            let scores = i.score(state, ids);
            let scores = if normalize { scores.and_then(|s| i.normalize_score(state, s)) } else { scores };
            scores.map_err(Convert::convert)
        })
    }

    /// Reserve.
    pub fn reserve(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &[u8],
        node: NodeId,
    ) -> Result<HStatus, PluginError> {
        self.synced(nodes, pod, |i| i.reserve(state, node).convert())
    }

    /// Unreserve.
    pub fn unreserve(&self, nodes: &NodeLog, pod: &PodSnapshot, state: &[u8], node: NodeId) -> Result<(), PluginError> {
        self.synced(nodes, pod, |i| i.unreserve(state, node))
    }

    /// Permit.
    pub fn permit(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &[u8],
        node: NodeId,
    ) -> Result<HPermit, PluginError> {
        self.synced(nodes, pod, |i| i.permit(state, node).convert())
    }

    /// `PreBind`.
    pub fn pre_bind(
        &self,
        nodes: &NodeLog,
        pod: &PodSnapshot,
        state: &[u8],
        node: NodeId,
    ) -> Result<HStatus, PluginError> {
        self.synced(nodes, pod, |i| i.pre_bind(state, node).convert())
    }

    /// Bind.
    pub fn bind(&self, nodes: &NodeLog, pod: &PodSnapshot, state: &[u8], node: NodeId) -> Result<HStatus, PluginError> {
        self.synced(nodes, pod, |i| i.bind(state, node).convert())
    }

    /// `PostBind`.
    pub fn post_bind(&self, nodes: &NodeLog, pod: &PodSnapshot, state: &[u8], node: NodeId) -> Result<(), PluginError> {
        self.synced(nodes, pod, |i| i.post_bind(state, node))
    }
}

/// Runs `call` with `host` answering the SDK's host calls on this thread, as a component's
/// `scheduler-host` import is answered during a call.
fn with_view<R>(host: Option<&Arc<dyn SchedulerHost>>, call: impl FnOnce() -> R) -> R {
    let Some(host) = host else { return call() };
    sdk::host::set_native(Some(std::rc::Rc::new(View(Arc::clone(host)))));
    let result = call();
    sdk::host::set_native(None);
    result
}

/// Makes `pod` the instance's pod unless it holds it already, as the WebAssembly path does:
/// the copy (`convert`) stands for the canonical ABI's copy into the component.
fn set_pod(linked: &mut Linked, pod: &PodSnapshot) {
    if linked.pod == pod.token() {
        return;
    }
    linked.instance.set_pod(pod.info().clone().convert());
    linked.pod = pod.token();
}

/// Brings the instance's nodes up to `log`, as the WebAssembly path does: only the changes it
/// missed since the generation last sent, or everything.
fn sync(linked: &mut Linked, log: &NodeLog) {
    if linked.generation == log.generation() {
        return;
    }
    if let Some(changes) = log.changes_since(linked.generation, linked.with_pods) {
        linked.instance.update_nodes(log.generation(), false, changes.convert());
    } else {
        linked.instance.update_nodes(log.generation(), true, log.everything(linked.with_pods).convert());
    }
    linked.generation = log.generation();
}

/// `config`'s profiles with every plugin its natively linked crate: the same plugins, order,
/// weights and args as [`load_profiles`](crate::load_profiles) gives as components.
pub fn load_profiles(config: &crate::SchedulerConfig) -> Result<Vec<crate::Profile>, String> {
    config
        .profiles
        .iter()
        .map(|profile| {
            let plugins = profile
                .plugins
                .iter()
                .map(|plugin| {
                    let crate::config::ComponentRef::Builtin(component) = &plugin.component else {
                        return Err(format!("plugin {}: only built-in plugins are linked natively", plugin.name));
                    };
                    let (component, args) = (component.clone(), plugin.args.to_string());
                    let make: Make = Box::new(move || {
                        builtin(&component, &args).unwrap_or_else(|| Err(format!("{component} is not linked natively")))
                    });
                    let native =
                        NativePlugin::new(&plugin.name, make).map_err(|e| format!("plugin {}: {e}", plugin.name))?;
                    let native = Arc::new(native);
                    crate::framework::ProfilePlugin::new(&plugin.name, crate::Backend::Native(native), plugin.weight)
                        .map_err(|e| e.to_string())
                })
                .collect::<Result<_, _>>()?;
            Ok(crate::Profile {
                scheduler_name: profile.scheduler_name.clone(),
                plugins,
                percentage_of_nodes_to_score: config.percentage_of_nodes_to_score,
                parallelism: config.filter_threads(),
                filter_cost: crate::framework::FilterCost::default(),
            })
        })
        .collect()
}
