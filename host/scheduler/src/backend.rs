//! Where a profile plugin's code runs: a WebAssembly component (always, in the server), or — in
//! the `native-plugins` build the benchmark compares against — the same plugin crate linked
//! into the host. The framework calls both through [`Backend`]'s methods, which mirror
//! [`SchedulerPlugin`]'s.

#[cfg(feature = "native-plugins")]
use std::sync::Arc;
use std::sync::Mutex;

use capstan_wasm::PluginError;
use capstan_wasm::scheduler::{
    CycleState, Description, NodeId, NodeLog, NodeStatus, PermitResult, PodInfo, PostFilterResult, PreFilterResult,
    SchedulerHost, SchedulerPlugin, Status,
};

/// A profile plugin's implementation.
#[derive(Clone)]
pub enum Backend {
    /// A loaded component.
    Wasm(SchedulerPlugin),
    /// The plugin crate linked natively.
    #[cfg(feature = "native-plugins")]
    Native(Arc<crate::native::NativePlugin>),
}

impl From<SchedulerPlugin> for Backend {
    fn from(plugin: SchedulerPlugin) -> Self {
        Self::Wasm(plugin)
    }
}

/// Calls the same method on whichever backend holds the plugin.
macro_rules! dispatch {
    ($self:ident . $method:ident ( $($arg:expr),* )) => {
        match $self {
            Backend::Wasm(plugin) => plugin.$method($($arg),*),
            #[cfg(feature = "native-plugins")]
            Backend::Native(plugin) => plugin.$method($($arg),*),
        }
    };
}

#[allow(missing_docs, reason = "each method is `SchedulerPlugin`'s of the same name")]
impl Backend {
    /// The component, when the plugin is one (Plugin objects, reloads and metrics need it).
    #[must_use]
    pub fn wasm(&self) -> Option<&SchedulerPlugin> {
        match self {
            Self::Wasm(plugin) => Some(plugin),
            #[cfg(feature = "native-plugins")]
            Self::Native(_) => None,
        }
    }

    pub fn describe(&self) -> Result<Description, PluginError> {
        dispatch!(self.describe())
    }

    pub fn queue_sort_key(&self, pod: &PodInfo) -> Result<i64, PluginError> {
        dispatch!(self.queue_sort_key(pod))
    }

    pub fn pre_filter(&self, nodes: &NodeLog, pod: &PodInfo) -> Result<PreFilterResult, PluginError> {
        dispatch!(self.pre_filter(nodes, pod))
    }

    pub fn filter(
        &self,
        nodes: &NodeLog,
        pod: &PodInfo,
        state: &CycleState,
        ids: &[NodeId],
    ) -> Result<Vec<Status>, PluginError> {
        dispatch!(self.filter(nodes, pod, state, ids))
    }

    pub fn post_filter(
        &self,
        nodes: &Mutex<NodeLog>,
        pod: &PodInfo,
        state: &CycleState,
        filtered: &[NodeStatus],
        host: &std::sync::Arc<dyn SchedulerHost>,
    ) -> Result<PostFilterResult, PluginError> {
        dispatch!(self.post_filter(nodes, pod, state, filtered, host))
    }

    pub fn pre_score(
        &self,
        nodes: &NodeLog,
        pod: &PodInfo,
        state: &CycleState,
        ids: &[NodeId],
    ) -> Result<Result<Vec<u8>, Status>, PluginError> {
        dispatch!(self.pre_score(nodes, pod, state, ids))
    }

    pub fn score(
        &self,
        nodes: &NodeLog,
        pod: &PodInfo,
        state: &CycleState,
        ids: &[NodeId],
        normalize: bool,
    ) -> Result<Result<Vec<i64>, Status>, PluginError> {
        dispatch!(self.score(nodes, pod, state, ids, normalize))
    }

    pub fn reserve(
        &self,
        nodes: &NodeLog,
        pod: &PodInfo,
        state: &CycleState,
        node: NodeId,
    ) -> Result<Status, PluginError> {
        dispatch!(self.reserve(nodes, pod, state, node))
    }

    pub fn unreserve(
        &self,
        nodes: &NodeLog,
        pod: &PodInfo,
        state: &CycleState,
        node: NodeId,
    ) -> Result<(), PluginError> {
        dispatch!(self.unreserve(nodes, pod, state, node))
    }

    pub fn permit(
        &self,
        nodes: &NodeLog,
        pod: &PodInfo,
        state: &CycleState,
        node: NodeId,
    ) -> Result<PermitResult, PluginError> {
        dispatch!(self.permit(nodes, pod, state, node))
    }

    pub fn pre_bind(
        &self,
        nodes: &NodeLog,
        pod: &PodInfo,
        state: &CycleState,
        node: NodeId,
    ) -> Result<Status, PluginError> {
        dispatch!(self.pre_bind(nodes, pod, state, node))
    }

    pub fn bind(
        &self,
        nodes: &NodeLog,
        pod: &PodInfo,
        state: &CycleState,
        node: NodeId,
    ) -> Result<Status, PluginError> {
        dispatch!(self.bind(nodes, pod, state, node))
    }

    pub fn post_bind(
        &self,
        nodes: &NodeLog,
        pod: &PodInfo,
        state: &CycleState,
        node: NodeId,
    ) -> Result<(), PluginError> {
        dispatch!(self.post_bind(nodes, pod, state, node))
    }
}
