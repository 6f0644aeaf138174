//! The `controller` world: typed `describe`, `map-to-keys` and `reconcile` calls, and the
//! `client` import a controller reads and writes the cluster through.
//!
//! The world imports a host client, but [`HostState`] is shared by every world and knows no
//! cluster. The caller therefore passes its client with each call
//! ([`PluginHandle::<ControllerWorld>::reconcile`]); it is installed in a thread-local slot for
//! the duration of the call, and the import functions (which run on the calling thread, since
//! calls are synchronous) serve from it. A call made without a client sees every client
//! function fail with code 500.
//!
//! ```no_run
//! # fn demo(bytes: &[u8], client: std::sync::Arc<dyn capstan_wasm::controller::ControllerClient>)
//! # -> Result<(), Box<dyn std::error::Error>> {
//! use capstan_wasm::controller::{ControllerWorld, ObjectKey};
//! use capstan_wasm::{PluginSpec, Runtime, RuntimeConfig};
//!
//! let runtime = Runtime::new(RuntimeConfig::default())?;
//! let controller = runtime.load::<ControllerWorld>(PluginSpec::new("replicaset"), bytes)?;
//! let watches = controller.describe()?;
//! let key = ObjectKey { namespace: Some("default".into()), name: "web".into() };
//! let result = controller.reconcile(&client, &key)?;
//! # Ok(()) }
//! ```

use std::cell::RefCell;
use std::sync::Arc;

use wasmtime::Store;
use wasmtime::component::{HasSelf, InstancePre, Linker};

use crate::error::PluginError;
use crate::host::HostState;
use crate::plugin::PluginHandle;
use crate::world::World;

/// Bindings generated from `wit/` for the `controller` world.
pub mod bindings {
    #![allow(missing_docs, clippy::pedantic, reason = "generated code; the WIT documents it")]
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "capstan:plugin/controller@0.1.0",
        additional_derives: [PartialEq, Eq],
        with: {
            "capstan:plugin/types": crate::admission::bindings::capstan::plugin::types,
            "capstan:plugin/log": crate::admission::bindings::capstan::plugin::log,
        },
    });
}

use bindings::capstan::plugin::client;

pub use crate::admission::bindings::capstan::plugin::types::{GroupVersionKind, ObjectKey, ObjectRef};
pub use bindings::capstan::plugin::client::{
    ApiError, ApiResource, DeleteOptions, EventType, ListOptions, PatchType, Propagation,
};
pub use bindings::exports::capstan::plugin::reconciler::{ReconcileResult, RelatedKind, Watches};

/// What a controller's `client` import is served by: the host's caches and API client.
///
/// Implementations run on the thread calling the controller and may block (a write waits for
/// the API server); they must not call the same controller again.
pub trait ControllerClient: Send + Sync {
    /// Reads one object from the cache.
    fn get(&self, kind: &GroupVersionKind, key: &ObjectKey) -> Result<Option<String>, ApiError>;
    /// Lists objects from the cache.
    fn list(&self, kind: &GroupVersionKind, options: &ListOptions) -> Result<Vec<String>, ApiError>;
    /// Lists cached objects of `kind` in `namespace` owned by the object with `owner_uid`.
    fn list_owned(
        &self,
        kind: &GroupVersionKind,
        namespace: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<String>, ApiError>;
    /// Creates an object through the API server.
    fn create(&self, kind: &GroupVersionKind, object: &str) -> Result<String, ApiError>;
    /// Creates several objects through the API server concurrently; one result per object.
    fn create_many(&self, kind: &GroupVersionKind, objects: &[String]) -> Vec<Result<String, ApiError>>;
    /// Replaces an object through the API server.
    fn update(&self, kind: &GroupVersionKind, object: &str) -> Result<String, ApiError>;
    /// Replaces an object's status through the API server.
    fn update_status(&self, kind: &GroupVersionKind, object: &str) -> Result<String, ApiError>;
    /// Patches an object (or a subresource) through the API server.
    fn patch(
        &self,
        kind: &GroupVersionKind,
        key: &ObjectKey,
        patch_type: PatchType,
        patch: &str,
        subresource: Option<&str>,
    ) -> Result<String, ApiError>;
    /// Deletes an object through the API server.
    fn delete(&self, kind: &GroupVersionKind, key: &ObjectKey, options: &DeleteOptions) -> Result<(), ApiError>;
    /// Records an Event.
    fn record_event(&self, regarding: &ObjectRef, event_type: EventType, reason: &str, message: &str);
    /// What the controller stored under `key` with [`remember`](Self::remember).
    fn recall(&self, key: &str) -> Option<String>;
    /// Stores (or with `None` forgets) a value the controller recalls in later calls, whichever
    /// instance or version serves them.
    fn remember(&self, key: &str, value: Option<&str>) -> Result<(), ApiError>;
    /// The resources the API server serves (discovery). Clients without discovery answer 501.
    fn discover(&self) -> Result<Vec<ApiResource>, ApiError> {
        Err(ApiError {
            code: 501,
            reason: "NotImplemented".into(),
            message: "this client does not serve discovery".into(),
        })
    }
}

thread_local! {
    /// The client serving the controller call running on this thread.
    static CLIENT: RefCell<Option<Arc<dyn ControllerClient>>> = const { RefCell::new(None) };
}

/// Installs `client` for the duration of `call` on this thread.
fn with_client<R>(client: &Arc<dyn ControllerClient>, call: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<dyn ControllerClient>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            CLIENT.with(|slot| *slot.borrow_mut() = previous);
        }
    }
    let previous = CLIENT.with(|slot| slot.borrow_mut().replace(Arc::clone(client)));
    let _restore = Restore(previous);
    call()
}

fn current_client() -> Result<Arc<dyn ControllerClient>, ApiError> {
    CLIENT.with(|slot| slot.borrow().clone()).ok_or_else(|| ApiError {
        code: 500,
        reason: "InternalError".into(),
        message: "the host called this controller without a client".into(),
    })
}

/// The `controller` world, as the runtime hosts it.
pub struct ControllerWorld;

impl World for ControllerWorld {
    const NAME: &'static str = "controller";
    type Pre = bindings::ControllerPre<HostState>;
    type Instance = bindings::Controller;

    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
        wasmtime_wasi::p2::add_to_linker_sync(linker)?;
        bindings::Controller::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)
    }

    fn pre(instance_pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
        bindings::ControllerPre::new(instance_pre)
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

/// A loaded controller.
pub type Controller = PluginHandle<ControllerWorld>;

impl PluginHandle<ControllerWorld> {
    /// Asks the controller what it watches.
    pub fn describe(&self) -> Result<Watches, PluginError> {
        self.call(|controller, store| controller.capstan_plugin_reconciler().call_describe(store))
    }

    /// Asks the controller which primary keys a change of `object` (of an `others` kind) affects.
    pub fn map_to_keys(
        &self,
        client: &Arc<dyn ControllerClient>,
        kind: &GroupVersionKind,
        object: &str,
    ) -> Result<Vec<ObjectKey>, PluginError> {
        let object = object.to_owned();
        with_client(client, || {
            self.call(|controller, store| controller.capstan_plugin_reconciler().call_map_to_keys(store, kind, &object))
        })
    }

    /// Reconciles `key`, serving the controller's client calls from `client`.
    pub fn reconcile(
        &self,
        client: &Arc<dyn ControllerClient>,
        key: &ObjectKey,
    ) -> Result<ReconcileResult, PluginError> {
        with_client(client, || {
            self.call(|controller, store| controller.capstan_plugin_reconciler().call_reconcile(store, key))
        })
    }
}

impl client::Host for HostState {
    fn get(&mut self, kind: GroupVersionKind, key: ObjectKey) -> Result<Option<String>, ApiError> {
        current_client()?.get(&kind, &key)
    }

    fn list(&mut self, kind: GroupVersionKind, options: ListOptions) -> Result<Vec<String>, ApiError> {
        current_client()?.list(&kind, &options)
    }

    fn list_owned(
        &mut self,
        kind: GroupVersionKind,
        namespace: Option<String>,
        owner_uid: String,
    ) -> Result<Vec<String>, ApiError> {
        current_client()?.list_owned(&kind, namespace.as_deref(), &owner_uid)
    }

    fn create(&mut self, kind: GroupVersionKind, object: String) -> Result<String, ApiError> {
        current_client()?.create(&kind, &object)
    }

    fn create_many(&mut self, kind: GroupVersionKind, objects: Vec<String>) -> Vec<Result<String, ApiError>> {
        match current_client() {
            Ok(client) => client.create_many(&kind, &objects),
            Err(e) => objects.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    fn update(&mut self, kind: GroupVersionKind, object: String) -> Result<String, ApiError> {
        current_client()?.update(&kind, &object)
    }

    fn update_status(&mut self, kind: GroupVersionKind, object: String) -> Result<String, ApiError> {
        current_client()?.update_status(&kind, &object)
    }

    fn patch(
        &mut self,
        kind: GroupVersionKind,
        key: ObjectKey,
        patch_type: PatchType,
        patch: String,
        subresource: Option<String>,
    ) -> Result<String, ApiError> {
        current_client()?.patch(&kind, &key, patch_type, &patch, subresource.as_deref())
    }

    fn delete(&mut self, kind: GroupVersionKind, key: ObjectKey, options: DeleteOptions) -> Result<(), ApiError> {
        current_client()?.delete(&kind, &key, &options)
    }

    fn record_event(&mut self, regarding: ObjectRef, event_type: EventType, reason: String, message: String) {
        if let Ok(client) = current_client() {
            client.record_event(&regarding, event_type, &reason, &message);
        }
    }

    fn discover(&mut self) -> Result<Vec<ApiResource>, ApiError> {
        current_client()?.discover()
    }

    fn recall(&mut self, key: String) -> Option<String> {
        current_client().ok()?.recall(&key)
    }

    fn remember(&mut self, key: String, value: Option<String>) -> Result<(), ApiError> {
        current_client()?.remember(&key, value.as_deref())
    }
}
