//! Where a profile plugin's code runs: a WebAssembly component (always, in the server), or — in
//! the `native-plugins` build the benchmark compares against — the same plugin crate linked
//! into the host. The framework calls both through [`Backend`]'s methods, which mirror
//! [`SchedulerPlugin`]'s.

#[cfg(feature = "native-plugins")]
use std::sync::Arc;
use std::sync::Mutex;

use capstan_wasm::PluginError;
use capstan_wasm::scheduler::{
    CycleState, Description, NodeId, NodeLog, NodeStatus, PermitResult, PodSnapshot, PostFilterResult, PreFilterResult,
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

/// Defines each method as a call of the same method on whichever backend holds the plugin.
macro_rules! delegate {
    ($(fn $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty;)*) => {$(
        #[allow(missing_docs, reason = "each method is `SchedulerPlugin`'s of the same name")]
        pub fn $name(&self, $($arg: $ty),*) -> Result<$ret, PluginError> {
            match self {
                Backend::Wasm(plugin) => plugin.$name($($arg),*),
                #[cfg(feature = "native-plugins")]
                Backend::Native(plugin) => plugin.$name($($arg),*),
            }
        }
    )*};
}

type Nodes<'a> = &'a NodeLog;

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

    delegate! {
        fn describe() -> Description;
        fn queue_sort_key(pod: &PodSnapshot) -> i64;
        fn pre_filter(nodes: Nodes<'_>, pod: &PodSnapshot) -> PreFilterResult;
        fn filter(nodes: Nodes<'_>, pod: &PodSnapshot, state: &CycleState, ids: &[NodeId]) -> Vec<NodeStatus>;
        fn post_filter(
            nodes: &Mutex<NodeLog>,
            pod: &PodSnapshot,
            state: &CycleState,
            filtered: &[NodeStatus],
            host: &std::sync::Arc<dyn SchedulerHost>
        ) -> PostFilterResult;
        fn pre_score(nodes: Nodes<'_>, pod: &PodSnapshot, state: &CycleState, ids: &[NodeId]) -> Result<Vec<u8>, Status>;
        fn score(
            nodes: Nodes<'_>,
            pod: &PodSnapshot,
            state: &CycleState,
            ids: &[NodeId],
            normalize: bool
        ) -> Result<Vec<i64>, Status>;
        fn reserve(nodes: Nodes<'_>, pod: &PodSnapshot, state: &CycleState, node: NodeId) -> Status;
        fn unreserve(nodes: Nodes<'_>, pod: &PodSnapshot, state: &CycleState, node: NodeId) -> ();
        fn permit(nodes: Nodes<'_>, pod: &PodSnapshot, state: &CycleState, node: NodeId) -> PermitResult;
        fn pre_bind(nodes: Nodes<'_>, pod: &PodSnapshot, state: &CycleState, node: NodeId) -> Status;
        fn bind(nodes: Nodes<'_>, pod: &PodSnapshot, state: &CycleState, node: NodeId) -> Status;
        fn post_bind(nodes: Nodes<'_>, pod: &PodSnapshot, state: &CycleState, node: NodeId) -> ();
    }
}
