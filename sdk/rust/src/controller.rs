//! Controllers: implement [`Controller`], export it with [`controller!`](crate::controller).
//!
//! The host calls [`Controller::configure`] once per instance, [`Controller::watches`] once to
//! learn what to cache and which changes enqueue which keys, then [`Controller::reconcile`] for
//! each dirty key (never the same key twice at once). A reconcile reads through the [`Api`] it
//! is given — served from the host's informer caches — and writes through it to the API server.
//!
//! Controllers take the [`Api`] as a parameter so their logic runs natively in unit tests
//! against [`testing::FakeCluster`], an in-memory cluster.

use std::cell::RefCell;
use std::thread::LocalKey;

use serde_json::Value;

use crate::__private::controller_bindings::capstan::plugin::client as host;

pub use crate::__private::controller_bindings::capstan::plugin::types::{GroupVersionKind, ObjectKey, ObjectRef};
pub use crate::__private::controller_bindings::exports::capstan::plugin::reconciler::{
    ReconcileResult, RelatedKind, Watches,
};
pub use host::{ApiError, ApiResource, DeleteOptions, EventType, ListOptions, PatchType, Propagation};

pub mod kinds;
pub mod meta;
pub mod owned;
pub mod placement;
pub mod revision;
pub mod testing;

/// A controller.
pub trait Controller: Sized + 'static {
    /// Builds the controller from its configuration (`{}` when none).
    fn configure(config: &str) -> Result<Self, String>;

    /// What the controller watches.
    fn watches(&self) -> Watches;

    /// For a changed object of an `others` kind declared with `maps-to-keys`, the primary keys
    /// to enqueue. None unless overridden.
    fn map_to_keys(&self, api: &dyn Api, kind: &GroupVersionKind, object: &Value) -> Vec<ObjectKey> {
        let _ = (api, kind, object);
        Vec::new()
    }

    /// Reconciles the primary object named by `key`.
    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult;
}

/// The cluster as a controller sees it: reads from the host's caches, writes through the API
/// server. Objects are `serde_json::Value`s.
pub trait Api {
    /// Reads one object; `None` when it does not exist.
    fn get(&self, kind: &GroupVersionKind, key: &ObjectKey) -> Result<Option<Value>, ApiError>;
    /// Lists objects.
    fn list(&self, kind: &GroupVersionKind, options: &ListOptions) -> Result<Vec<Value>, ApiError>;
    /// Lists the cached objects of `kind` in `namespace` (all when `None`) with an owner
    /// reference to the object with `owner_uid`; the host filters before copying anything.
    fn list_owned(
        &self,
        kind: &GroupVersionKind,
        namespace: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<Value>, ApiError>;
    /// Creates an object; returns it as stored.
    fn create(&self, kind: &GroupVersionKind, object: &Value) -> Result<Value, ApiError>;
    /// Creates several objects of `kind` at once (the host sends them concurrently); one result
    /// per object, in order.
    fn create_many(&self, kind: &GroupVersionKind, objects: &[Value]) -> Vec<Result<Value, ApiError>>;
    /// Replaces an object (optimistic concurrency through its resourceVersion).
    fn update(&self, kind: &GroupVersionKind, object: &Value) -> Result<Value, ApiError>;
    /// Replaces an object's status.
    fn update_status(&self, kind: &GroupVersionKind, object: &Value) -> Result<Value, ApiError>;
    /// Patches an object (or `subresource`).
    fn patch(
        &self,
        kind: &GroupVersionKind,
        key: &ObjectKey,
        patch_type: PatchType,
        patch: &Value,
        subresource: Option<&str>,
    ) -> Result<Value, ApiError>;
    /// Deletes an object.
    fn delete(&self, kind: &GroupVersionKind, key: &ObjectKey, options: &DeleteOptions) -> Result<(), ApiError>;
    /// Records an Event about `regarding`.
    fn record_event(&self, regarding: &ObjectRef, event_type: EventType, reason: &str, message: &str);
    /// The resources the API server serves (discovery, read live).
    fn discover(&self) -> Result<Vec<ApiResource>, ApiError>;
    /// What this controller stored under `key` with [`remember`](Self::remember): state kept by
    /// the host between reconciles, whichever instance or version of the component runs them.
    fn recall(&self, key: &str) -> Option<String>;
    /// Stores `value` under `key` for later [`recall`](Self::recall)s; `None` forgets it.
    fn remember(&self, key: &str, value: Option<&str>) -> Result<(), ApiError>;
}

/// The [`ReconcileResult`] of a reconcile that may ask to be called again after some seconds
/// (a deadline, a schedule): `Ok(Some(seconds))` comes back a little after them, so that what
/// was due is past; `Ok(None)` is done; a conflict or a not-found (a cache behind a write) is
/// retried soon; other errors back off with their message.
#[must_use]
pub fn outcome<S: Into<i128>>(result: Result<Option<S>, ApiError>) -> ReconcileResult {
    use prelude::ApiErrorExt as _;
    match result {
        Ok(Some(seconds)) => {
            let seconds = u64::try_from(seconds.into().max(0)).unwrap_or(u64::MAX);
            ReconcileResult::RequeueAfter(seconds.saturating_mul(1000).saturating_add(200))
        }
        Ok(None) => ReconcileResult::Done,
        Err(e) if e.is_conflict() || e.is_not_found() => ReconcileResult::RequeueAfter(200),
        Err(e) => ReconcileResult::Error(format!("{} ({} {})", e.message, e.code, e.reason)),
    }
}

/// The [`Api`] the host serves a running component.
pub struct HostApi;

fn parse(text: &str) -> Result<Value, ApiError> {
    serde_json::from_str(text).map_err(|e| ApiError {
        code: 500,
        reason: "InternalError".into(),
        message: format!("the host returned invalid JSON: {e}"),
    })
}

impl Api for HostApi {
    fn get(&self, kind: &GroupVersionKind, key: &ObjectKey) -> Result<Option<Value>, ApiError> {
        host::get(kind, key)?.as_deref().map(parse).transpose()
    }

    fn list(&self, kind: &GroupVersionKind, options: &ListOptions) -> Result<Vec<Value>, ApiError> {
        host::list(kind, options)?.iter().map(|item| parse(item)).collect()
    }

    fn list_owned(
        &self,
        kind: &GroupVersionKind,
        namespace: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<Value>, ApiError> {
        host::list_owned(kind, namespace, owner_uid)?.iter().map(|item| parse(item)).collect()
    }

    fn create(&self, kind: &GroupVersionKind, object: &Value) -> Result<Value, ApiError> {
        parse(&host::create(kind, &object.to_string())?)
    }

    fn create_many(&self, kind: &GroupVersionKind, objects: &[Value]) -> Vec<Result<Value, ApiError>> {
        let texts: Vec<String> = objects.iter().map(Value::to_string).collect();
        host::create_many(kind, &texts).into_iter().map(|created| parse(&created?)).collect()
    }

    fn update(&self, kind: &GroupVersionKind, object: &Value) -> Result<Value, ApiError> {
        parse(&host::update(kind, &object.to_string())?)
    }

    fn update_status(&self, kind: &GroupVersionKind, object: &Value) -> Result<Value, ApiError> {
        parse(&host::update_status(kind, &object.to_string())?)
    }

    fn patch(
        &self,
        kind: &GroupVersionKind,
        key: &ObjectKey,
        patch_type: PatchType,
        patch: &Value,
        subresource: Option<&str>,
    ) -> Result<Value, ApiError> {
        parse(&host::patch(kind, key, patch_type, &patch.to_string(), subresource)?)
    }

    fn delete(&self, kind: &GroupVersionKind, key: &ObjectKey, options: &DeleteOptions) -> Result<(), ApiError> {
        host::delete(kind, key, options)
    }

    fn record_event(&self, regarding: &ObjectRef, event_type: EventType, reason: &str, message: &str) {
        host::record_event(regarding, event_type, reason, message);
    }

    fn discover(&self) -> Result<Vec<ApiResource>, ApiError> {
        host::discover()
    }

    fn recall(&self, key: &str) -> Option<String> {
        host::recall(key)
    }

    fn remember(&self, key: &str, value: Option<&str>) -> Result<(), ApiError> {
        host::remember(key, value)
    }
}

/// Constructors and helpers on the WIT types (they are defined in the bindings crate, so they
/// come as traits: `use capstan_plugin_sdk::controller::prelude::*`).
pub mod prelude {
    use serde_json::Value;

    use super::{ApiError, DeleteOptions, GroupVersionKind, ListOptions, ObjectKey, ObjectRef, meta};

    /// Helpers on [`GroupVersionKind`].
    pub trait GroupVersionKindExt {
        /// `group`/`version`/`kind`; `group` is empty for the core group.
        fn new(group: &str, version: &str, kind: &str) -> Self;
        /// The `apiVersion` string: `v1` or `apps/v1`.
        fn api_version(&self) -> String;
    }

    impl GroupVersionKindExt for GroupVersionKind {
        fn new(group: &str, version: &str, kind: &str) -> Self {
            Self { group: group.into(), version: version.into(), kind: kind.into() }
        }

        fn api_version(&self) -> String {
            if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
        }
    }

    /// Helpers on [`ObjectKey`].
    pub trait ObjectKeyExt {
        /// A namespaced key.
        fn namespaced(namespace: &str, name: &str) -> Self;
        /// The key of `object`.
        fn of(object: &Value) -> Self;
    }

    impl ObjectKeyExt for ObjectKey {
        fn namespaced(namespace: &str, name: &str) -> Self {
            Self { namespace: Some(namespace.into()), name: name.into() }
        }

        fn of(object: &Value) -> Self {
            Self { namespace: meta::namespace(object).map(str::to_owned), name: meta::name(object).to_owned() }
        }
    }

    /// Helpers on [`ListOptions`].
    pub trait ListOptionsExt {
        /// Everything in `namespace`.
        fn in_namespace(namespace: Option<&str>) -> Self;
    }

    impl ListOptionsExt for ListOptions {
        fn in_namespace(namespace: Option<&str>) -> Self {
            Self { namespace: namespace.map(str::to_owned), label_selector: None, field_selector: None }
        }
    }

    /// Helpers on [`DeleteOptions`].
    pub trait DeleteOptionsExt {
        /// The kind's default propagation, no preconditions.
        fn plain() -> Self;
    }

    impl DeleteOptionsExt for DeleteOptions {
        fn plain() -> Self {
            Self { propagation: None, precondition_uid: None, precondition_resource_version: None }
        }
    }

    /// Helpers on [`ApiError`].
    pub trait ApiErrorExt {
        /// Whether the error is a 404.
        fn is_not_found(&self) -> bool;
        /// Whether the error is a 409 (conflict or already exists).
        fn is_conflict(&self) -> bool;
    }

    impl ApiErrorExt for ApiError {
        fn is_not_found(&self) -> bool {
            self.code == 404
        }

        fn is_conflict(&self) -> bool {
            self.code == 409
        }
    }

    /// Helpers on [`ObjectRef`].
    pub trait ObjectRefExt {
        /// A reference to `object` of `kind`.
        fn to(kind: &GroupVersionKind, object: &Value) -> Self;
    }

    impl ObjectRefExt for ObjectRef {
        fn to(kind: &GroupVersionKind, object: &Value) -> Self {
            Self { kind: kind.clone(), key: ObjectKey::of(object), uid: meta::uid(object).map(str::to_owned) }
        }
    }
}

/// Where [`controller!`](crate::controller) keeps an instance's configured controller.
#[doc(hidden)]
pub type Slot<C> = RefCell<Option<C>>;

/// The bodies of the exports the macro generates.
#[doc(hidden)]
pub mod __private {
    use super::prelude::GroupVersionKindExt as _;
    use super::{Controller, GroupVersionKind, HostApi, LocalKey, ObjectKey, ReconcileResult, Slot, Watches};

    pub use crate::__private::controller_bindings::exports::capstan::plugin::lifecycle::Guest as LifecycleGuest;
    pub use crate::__private::controller_bindings::exports::capstan::plugin::reconciler::Guest as ReconcilerGuest;

    pub fn configure<C: Controller>(slot: &'static LocalKey<Slot<C>>, config: &str) -> Result<(), String> {
        let controller = C::configure(config)?;
        slot.with(|slot| *slot.borrow_mut() = Some(controller));
        Ok(())
    }

    fn with<C: Controller, R>(slot: &'static LocalKey<Slot<C>>, fallback: R, call: impl FnOnce(&C) -> R) -> R {
        slot.with(|slot| slot.borrow().as_ref().map_or(fallback, call))
    }

    pub fn describe<C: Controller>(slot: &'static LocalKey<Slot<C>>) -> Watches {
        let empty = Watches { primary: GroupVersionKind::new("", "", ""), owned: Vec::new(), others: Vec::new() };
        with(slot, empty, C::watches)
    }

    #[must_use]
    pub fn map_to_keys<C: Controller>(
        slot: &'static LocalKey<Slot<C>>,
        kind: &GroupVersionKind,
        object: &str,
    ) -> Vec<ObjectKey> {
        let Ok(object) = serde_json::from_str(object) else { return Vec::new() };
        with(slot, Vec::new(), |c| c.map_to_keys(&HostApi, kind, &object))
    }

    #[must_use]
    pub fn reconcile<C: Controller>(slot: &'static LocalKey<Slot<C>>, key: &ObjectKey) -> ReconcileResult {
        let fallback = ReconcileResult::Error("controller called before configure".into());
        with(slot, fallback, |c| c.reconcile(&HostApi, key))
    }
}

/// Exports a type implementing [`Controller`] as this component's `controller` world. Call it
/// once, at the crate's top level.
#[macro_export]
macro_rules! controller {
    ($controller:ty) => {
        const _: () = {
            use $crate::controller::__private as __capstan;

            ::std::thread_local! {
                static __CAPSTAN_CONTROLLER: $crate::controller::Slot<$controller> =
                    const { ::std::cell::RefCell::new(None) };
            }

            struct __CapstanController;

            impl __capstan::LifecycleGuest for __CapstanController {
                fn configure(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    __capstan::configure::<$controller>(&__CAPSTAN_CONTROLLER, &config)
                }
            }

            impl __capstan::ReconcilerGuest for __CapstanController {
                fn describe() -> $crate::controller::Watches {
                    __capstan::describe::<$controller>(&__CAPSTAN_CONTROLLER)
                }

                fn map_to_keys(
                    kind: $crate::controller::GroupVersionKind,
                    object: ::std::string::String,
                ) -> ::std::vec::Vec<$crate::controller::ObjectKey> {
                    __capstan::map_to_keys::<$controller>(&__CAPSTAN_CONTROLLER, &kind, &object)
                }

                fn reconcile(key: $crate::controller::ObjectKey) -> $crate::controller::ReconcileResult {
                    __capstan::reconcile::<$controller>(&__CAPSTAN_CONTROLLER, &key)
                }
            }

            $crate::__private::controller_bindings::__export_controller!(__CapstanController);
        };
    };
}
