//! The `admission-policy` world: typed `validate` and `mutate` calls.
//!
//! ```no_run
//! # fn demo(bytes: &[u8]) -> Result<(), Box<dyn std::error::Error>> {
//! use capstan_wasm::{PluginSpec, Runtime, RuntimeConfig};
//! use capstan_wasm::admission::AdmissionWorld;
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let policy = runtime.load::<AdmissionWorld>(PluginSpec::new("require-label"), bytes)?;
//! # let request: capstan_wasm::admission::AdmissionRequest = todo!();
//! let response = policy.validate(&request)?;
//! # Ok(()) }
//! ```

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use crate::error::PluginError;
use crate::host::HostState;
use crate::plugin::PluginHandle;
use crate::world::World;

/// Bindings generated from `wit/` for the `admission-policy` world.
pub mod bindings {
    #![allow(missing_docs, clippy::pedantic, reason = "generated code; the WIT documents it")]
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "capstan:plugin/admission-policy@0.1.0",
        additional_derives: [PartialEq, Eq],
    });
}

use std::sync::Arc;

use bindings::capstan::plugin::{cluster, log, types};

pub use bindings::capstan::plugin::cluster::ClusterError;

pub use bindings::capstan::plugin::types::{GroupVersionKind, GroupVersionResource};
pub use bindings::exports::capstan::plugin::admission::{AdmissionRequest, AdmissionResponse, Operation, UserInfo};

/// The `admission-policy` world, as the runtime hosts it.
pub struct AdmissionWorld;

impl World for AdmissionWorld {
    const NAME: &'static str = "admission-policy";
    type Pre = bindings::AdmissionPolicyPre<HostState>;
    type Instance = bindings::AdmissionPolicy;

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::add_to_linker_sync(linker)?;
        bindings::AdmissionPolicy::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }

    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        bindings::AdmissionPolicyPre::new(instance_pre)
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

/// A loaded admission policy.
pub type AdmissionPolicy = PluginHandle<AdmissionWorld>;

/// The cluster a policy's `cluster` import reads (and, for quota, writes), supplied by the host
/// for one call. The API server implements it over its store; see `wit/admission.wit`.
///
/// A call may be an attempt on an async runtime's worker thread
/// ([`PluginHandle::try_admit_within`]): an implementation must call
/// [`leave_attempt`](crate::leave_attempt) before it blocks or writes, so the call is made again
/// where that is allowed. A read it answers at once (from a cache) keeps the call where it is.
pub trait Cluster: Send + Sync + 'static {
    /// Reads one object as JSON; `None` when it does not exist.
    fn get(
        &self,
        resource: &GroupVersionResource,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<String>, ClusterError>;

    /// Lists objects as JSON, in one namespace or all.
    fn list(&self, resource: &GroupVersionResource, namespace: Option<&str>) -> Result<Vec<String>, ClusterError>;

    /// Compare-and-swap of one object's status; returns the stored object.
    fn replace_status(
        &self,
        resource: &GroupVersionResource,
        namespace: Option<&str>,
        name: &str,
        resource_version: &str,
        status: &str,
    ) -> Result<String, ClusterError>;
}

/// The call context holding a call's [`Cluster`].
struct ClusterContext(Arc<dyn Cluster>);

impl PluginHandle<AdmissionWorld> {
    /// Asks the policy to validate `request`; its `cluster` import is refused.
    pub fn validate(&self, request: &AdmissionRequest) -> Result<AdmissionResponse, PluginError> {
        self.validate_with(request, None)
    }

    /// Asks the policy to mutate `request`; its `cluster` import is refused.
    pub fn mutate(&self, request: &AdmissionRequest) -> Result<AdmissionResponse, PluginError> {
        self.mutate_with(request, None)
    }

    /// Asks the policy to validate `request`, its `cluster` import served by `cluster`.
    pub fn validate_with(
        &self,
        request: &AdmissionRequest,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> Result<AdmissionResponse, PluginError> {
        self.call(admission_call(false, request, cluster))
    }

    /// Asks the policy to mutate `request`, its `cluster` import served by `cluster`.
    pub fn mutate_with(
        &self,
        request: &AdmissionRequest,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> Result<AdmissionResponse, PluginError> {
        self.call(admission_call(true, request, cluster))
    }

    /// Tries [`mutate_with`](Self::mutate_with) (`mutating`) or
    /// [`validate_with`](Self::validate_with) within `budget`, where blocking is costly; `Ok(None)`
    /// asks for the call to be made again where it may block (see
    /// [`PluginHandle::try_call_within`]).
    pub fn try_admit_within(
        &self,
        budget: std::time::Duration,
        mutating: bool,
        request: &AdmissionRequest,
        cluster: Option<Arc<dyn Cluster>>,
    ) -> Result<Option<AdmissionResponse>, PluginError> {
        self.try_call_within(budget, admission_call(mutating, request, cluster))
    }
}

/// One `mutate` or `validate` call of `request` with `cluster` serving the imports.
fn admission_call(
    mutating: bool,
    request: &AdmissionRequest,
    cluster: Option<Arc<dyn Cluster>>,
) -> impl FnOnce(&bindings::AdmissionPolicy, &mut Store<HostState>) -> wasmtime::Result<AdmissionResponse> + '_ {
    move |policy, store| {
        with_cluster(store, cluster, |store| {
            let admission = policy.capstan_plugin_admission();
            if mutating { admission.call_mutate(store, request) } else { admission.call_validate(store, request) }
        })
    }
}

fn with_cluster<R>(
    store: &mut Store<HostState>,
    cluster: Option<Arc<dyn Cluster>>,
    call: impl FnOnce(&mut Store<HostState>) -> R,
) -> R {
    store
        .data_mut()
        .set_call_context(cluster.map(|c| Arc::new(ClusterContext(c)) as Arc<dyn std::any::Any + Send + Sync>));
    let result = call(store);
    store.data_mut().set_call_context(None);
    result
}

impl HostState {
    fn cluster(&self) -> Result<Arc<ClusterContext>, ClusterError> {
        // The `Cluster` leaves an attempt itself before it blocks or writes.
        self.call_context::<ClusterContext>().ok_or_else(|| {
            ClusterError::Forbidden("cluster access is only available while admitting a request".to_string())
        })
    }
}

impl cluster::Host for HostState {
    fn get(
        &mut self,
        resource: GroupVersionResource,
        namespace: Option<String>,
        name: String,
    ) -> Result<Option<String>, ClusterError> {
        self.cluster()?.0.get(&resource, namespace.as_deref(), &name)
    }

    fn list(&mut self, resource: GroupVersionResource, namespace: Option<String>) -> Result<Vec<String>, ClusterError> {
        self.cluster()?.0.list(&resource, namespace.as_deref())
    }

    fn replace_status(
        &mut self,
        resource: GroupVersionResource,
        namespace: Option<String>,
        name: String,
        resource_version: String,
        status: String,
    ) -> Result<String, ClusterError> {
        self.cluster()?.0.replace_status(&resource, namespace.as_deref(), &name, &resource_version, &status)
    }
}

impl types::Host for HostState {}

impl log::Host for HostState {
    fn enabled(&mut self, level: log::Level) -> bool {
        match level {
            log::Level::Trace => tracing::enabled!(tracing::Level::TRACE),
            log::Level::Debug => tracing::enabled!(tracing::Level::DEBUG),
            log::Level::Info => tracing::enabled!(tracing::Level::INFO),
            log::Level::Warn => tracing::enabled!(tracing::Level::WARN),
            log::Level::Error => tracing::enabled!(tracing::Level::ERROR),
        }
    }

    fn log(&mut self, level: log::Level, message: String) {
        let level = match level {
            log::Level::Trace => tracing::Level::TRACE,
            log::Level::Debug => tracing::Level::DEBUG,
            log::Level::Info => tracing::Level::INFO,
            log::Level::Warn => tracing::Level::WARN,
            log::Level::Error => tracing::Level::ERROR,
        };
        HostState::log(self, level, &message);
    }
}
