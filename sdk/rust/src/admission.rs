//! Admission policies: implement [`AdmissionPolicy`], export it with
//! [`admission_policy!`](crate::admission_policy).
//!
//! The host calls [`AdmissionPolicy::configure`] once per instance with the Plugin object's
//! configuration, then [`AdmissionPolicy::validate`] or [`AdmissionPolicy::mutate`] for each
//! request the Plugin object's rules match. An instance serves one call at a time, so `&self` is
//! all a policy needs; instances share nothing, so keep no state that must be global.

use std::cell::RefCell;
use std::thread::LocalKey;

use serde::de::DeserializeOwned;

use crate::__private::admission_bindings::exports::capstan::plugin::admission as wit;

pub use crate::__private::admission_bindings::capstan::plugin::types::{GroupVersionKind, GroupVersionResource, Json};
pub use wit::{AdmissionRequest, AdmissionResponse, Operation, UserInfo};

/// An admission policy.
pub trait AdmissionPolicy: Sized + 'static {
    /// Builds the policy from its configuration: the JSON document in the Plugin object (`{}`
    /// when none). An error rejects this version of the plugin, with the message in the Plugin
    /// object's status. [`parse_config`] parses it into a serde type.
    fn configure(config: &str) -> Result<Self, String>;

    /// Validating admission: allow or deny the request. Allows everything unless overridden.
    fn validate(&self, request: &AdmissionRequest) -> AdmissionResponse {
        let _ = request;
        AdmissionResponse::allow()
    }

    /// Mutating admission: allow, deny, or allow with a JSON patch
    /// ([`AdmissionResponse::with_patch`]). Allows everything unchanged unless overridden.
    fn mutate(&self, request: &AdmissionRequest) -> AdmissionResponse {
        let _ = request;
        AdmissionResponse::allow()
    }
}

/// Parses a configuration document into `T`, with an error message fit for the Plugin status.
pub fn parse_config<T: DeserializeOwned>(config: &str) -> Result<T, String> {
    serde_json::from_str(config).map_err(|e| format!("invalid configuration: {e}"))
}

impl AdmissionRequest {
    /// The object being written, parsed into `T` (e.g. a k8s-openapi type or
    /// `serde_json::Value`); `None` on delete.
    pub fn object<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.object.as_deref().map(serde_json::from_str).transpose()
    }

    /// The object before this write, parsed into `T`; `None` on create.
    pub fn old_object<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.old_object.as_deref().map(serde_json::from_str).transpose()
    }
}

impl AdmissionResponse {
    /// Allows the request unchanged.
    #[must_use]
    pub fn allow() -> Self {
        Self {
            allowed: true,
            message: None,
            code: None,
            warnings: Vec::new(),
            patch: None,
            audit_annotations: Vec::new(),
        }
    }

    /// Denies the request with `message`, shown to the user, and code 403.
    #[must_use]
    pub fn deny(message: impl Into<String>) -> Self {
        Self { allowed: false, message: Some(message.into()), ..Self::allow() }
    }

    /// Sets the HTTP status code of a denial (e.g. 422 for invalid input).
    #[must_use]
    pub fn with_code(mut self, code: u16) -> Self {
        self.code = Some(code);
        self
    }

    /// Adds a warning for the client.
    #[must_use]
    pub fn with_warning(mut self, warning: impl Into<String>) -> Self {
        self.warnings.push(warning.into());
        self
    }

    /// Sets the RFC 6902 JSON patch a mutating policy applies, e.g.
    /// `[{"op":"add","path":"/metadata/labels/team","value":"core"}]`.
    #[must_use]
    pub fn with_patch(mut self, patch: impl Into<String>) -> Self {
        self.patch = Some(patch.into());
        self
    }

    /// Adds an annotation to the request's audit event.
    #[must_use]
    pub fn with_audit_annotation(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.audit_annotations.push((key.into(), value.into()));
        self
    }
}

/// Where [`admission_policy!`](crate::admission_policy) keeps an instance's configured policy.
#[doc(hidden)]
pub type Slot<P> = RefCell<Option<P>>;

/// The bodies of the exports the macro generates.
#[doc(hidden)]
pub mod __private {
    use super::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, LocalKey, Slot};

    pub use crate::__private::admission_bindings::exports::capstan::plugin::admission::Guest as AdmissionGuest;
    pub use crate::__private::admission_bindings::exports::capstan::plugin::lifecycle::Guest as LifecycleGuest;

    pub fn configure<P: AdmissionPolicy>(slot: &'static LocalKey<Slot<P>>, config: &str) -> Result<(), String> {
        let policy = P::configure(config)?;
        slot.with(|slot| *slot.borrow_mut() = Some(policy));
        Ok(())
    }

    pub fn call<P: AdmissionPolicy>(
        slot: &'static LocalKey<Slot<P>>,
        request: &AdmissionRequest,
        point: fn(&P, &AdmissionRequest) -> AdmissionResponse,
    ) -> AdmissionResponse {
        slot.with(|slot| match slot.borrow().as_ref() {
            Some(policy) => point(policy, request),
            None => AdmissionResponse::deny("policy called before configure").with_code(500),
        })
    }
}

/// Exports a type implementing [`AdmissionPolicy`] as this component's `admission-policy` world.
/// Call it once, at the crate's top level.
#[macro_export]
macro_rules! admission_policy {
    ($policy:ty) => {
        const _: () = {
            use $crate::admission::__private as __capstan;

            ::std::thread_local! {
                static __CAPSTAN_POLICY: $crate::admission::Slot<$policy> = const { ::std::cell::RefCell::new(None) };
            }

            struct __CapstanAdmissionPolicy;

            impl __capstan::LifecycleGuest for __CapstanAdmissionPolicy {
                fn configure(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    __capstan::configure::<$policy>(&__CAPSTAN_POLICY, &config)
                }
            }

            impl __capstan::AdmissionGuest for __CapstanAdmissionPolicy {
                fn validate(request: $crate::admission::AdmissionRequest) -> $crate::admission::AdmissionResponse {
                    __capstan::call::<$policy>(
                        &__CAPSTAN_POLICY,
                        &request,
                        <$policy as $crate::admission::AdmissionPolicy>::validate,
                    )
                }

                fn mutate(request: $crate::admission::AdmissionRequest) -> $crate::admission::AdmissionResponse {
                    __capstan::call::<$policy>(
                        &__CAPSTAN_POLICY,
                        &request,
                        <$policy as $crate::admission::AdmissionPolicy>::mutate,
                    )
                }
            }

            $crate::__private::admission_bindings::__export_admission_policy!(__CapstanAdmissionPolicy);
        };
    };
}

/// Reading cluster objects during admission (the world's `cluster` import).
///
/// ```no_run
/// use capstan_plugin_sdk::admission::cluster;
///
/// let namespace = cluster::get("", "v1", "namespaces", None, "default");
/// ```
pub mod cluster {
    use serde_json::Value;

    use crate::__private::admission_bindings::capstan::plugin::cluster as wit;
    use crate::__private::admission_bindings::capstan::plugin::types::GroupVersionResource;

    pub use wit::ClusterError;

    fn resource(group: &str, version: &str, resource: &str) -> GroupVersionResource {
        GroupVersionResource { group: group.to_owned(), version: version.to_owned(), resource: resource.to_owned() }
    }

    fn parse(text: &str) -> Result<Value, ClusterError> {
        serde_json::from_str(text).map_err(|e| ClusterError::Failed(format!("the host sent invalid JSON: {e}")))
    }

    /// Reads one object of `group`/`version`/`resource` (plural, e.g. `namespaces`); `None` when
    /// it does not exist.
    pub fn get(
        group: &str,
        version: &str,
        resource_name: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<Value>, ClusterError> {
        wit::get(&resource(group, version, resource_name), namespace, name)?.as_deref().map(parse).transpose()
    }

    /// Lists the objects of a resource, in `namespace` or in all namespaces.
    pub fn list(
        group: &str,
        version: &str,
        resource_name: &str,
        namespace: Option<&str>,
    ) -> Result<Vec<Value>, ClusterError> {
        wit::list(&resource(group, version, resource_name), namespace)?.iter().map(|o| parse(o)).collect()
    }

    /// Replaces the status of `object` (as read, with its `metadata.resourceVersion`) if it has
    /// not changed since; [`ClusterError::Conflict`] otherwise. Refused on dry-run requests.
    pub fn replace_status(
        group: &str,
        version: &str,
        resource_name: &str,
        object: &Value,
        status: &Value,
    ) -> Result<Value, ClusterError> {
        let meta = |field: &str| object.pointer(&format!("/metadata/{field}")).and_then(Value::as_str);
        let stored = wit::replace_status(
            &resource(group, version, resource_name),
            meta("namespace"),
            meta("name").unwrap_or_default(),
            meta("resourceVersion").unwrap_or_default(),
            &status.to_string(),
        )?;
        parse(&stored)
    }
}
