//! The `client` a controller component imports: reads from the shared informers' caches, writes
//! through the API server.
//!
//! Reconciles run on the manager's worker threads (plain OS threads, not the async runtime), so
//! a write blocks its worker on the async client with [`Handle::block_on`] while the runtime's
//! own threads keep the informers flowing. Each write's result is fed back into the cache, so
//! the controller's next read sees its own writes even before the watch event arrives.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use capstan_api::selector::LabelSelector;
use capstan_wasm::controller::{
    ApiError, ControllerClient, DeleteOptions, EventType, GroupVersionKind, ListOptions, ObjectKey, ObjectRef,
    PatchType, Propagation,
};
use kube::api::ApiResource;
use serde_json::{Value, json};
use tokio::runtime::Handle;

use crate::Key;
use crate::events::EventRecorder;
use crate::informer::{Informer, Informers};

/// One controller's client.
pub struct HostClient {
    name: String,
    informers: Informers,
    cached: RwLock<HashMap<String, Arc<Informer>>>,
    resources: RwLock<HashMap<String, (ApiResource, bool)>>,
    handle: Handle,
    recorder: EventRecorder,
    memory: Mutex<Memory>,
}

/// Most bytes of keys and values one controller may keep with `remember`.
const MEMORY_LIMIT: usize = 16 << 20;

/// What a controller keeps between reconciles (`recall`/`remember`), with its size in bytes.
#[derive(Default)]
struct Memory {
    values: HashMap<String, String>,
    bytes: usize,
}

impl Memory {
    fn remember(&mut self, key: &str, value: Option<&str>) -> Result<(), ApiError> {
        let old = self.values.get(key).map_or(0, |v| key.len() + v.len());
        let new = value.map_or(0, |v| key.len() + v.len());
        let bytes = self.bytes - old + new;
        if bytes > MEMORY_LIMIT {
            return Err(api_error(
                413,
                "RequestEntityTooLarge",
                format!("a controller may remember at most {MEMORY_LIMIT} bytes; this value would make it {bytes}"),
            ));
        }
        match value {
            Some(value) => self.values.insert(key.to_owned(), value.to_owned()),
            None => self.values.remove(key),
        };
        self.bytes = bytes;
        Ok(())
    }
}

/// How many creates of one `create-many` are in flight at once.
const CONCURRENT_CREATES: usize = 64;

fn build_request(
    method: http::Method,
    path: &str,
    content_type: &str,
    body: Vec<u8>,
) -> Result<http::Request<Vec<u8>>, ApiError> {
    http::Request::builder()
        .method(method)
        .uri(path)
        .header(http::header::CONTENT_TYPE, content_type)
        .header(http::header::ACCEPT, "application/json")
        .body(body)
        .map_err(|e| api_error(400, "BadRequest", format!("cannot build the request: {e}")))
}

/// The object in a reply of the API server, or its error.
fn parse_reply(reply: Result<String, kube::Error>) -> Result<Value, ApiError> {
    let text = reply.map_err(from_kube)?;
    serde_json::from_str(&text)
        .map_err(|e| api_error(500, "InternalError", format!("invalid JSON from the API server: {e}")))
}

/// Whether `object` has an owner reference to the object with `uid`.
fn owned_by(object: &Value, uid: &str) -> bool {
    object
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|references| references.iter().any(|r| r.get("uid").and_then(Value::as_str) == Some(uid)))
}

fn kind_name(kind: &GroupVersionKind) -> String {
    format!("{}/{}/{}", kind.group, kind.version, kind.kind)
}

fn api_error(code: u16, reason: &str, message: impl Into<String>) -> ApiError {
    ApiError { code, reason: reason.into(), message: message.into() }
}

fn from_kube(error: kube::Error) -> ApiError {
    match error {
        kube::Error::Api(status) => api_error(status.code, &status.reason, status.message.clone()),
        other => api_error(503, "ServiceUnavailable", format!("cannot reach the API server: {other}")),
    }
}

impl HostClient {
    /// A client for controller `name`, reading from `cached` informers (the kinds it declared).
    #[must_use]
    pub fn new(name: &str, informers: Informers, handle: Handle, recorder: EventRecorder) -> Self {
        Self {
            name: name.to_owned(),
            informers,
            cached: RwLock::default(),
            resources: RwLock::default(),
            handle,
            recorder,
            memory: Mutex::default(),
        }
    }

    /// Serves reads of `kind` from `informer`.
    pub fn cache(&self, kind: &GroupVersionKind, informer: Arc<Informer>) {
        self.cached.write().unwrap_or_else(PoisonError::into_inner).insert(kind_name(kind), informer);
    }

    fn informer(&self, kind: &GroupVersionKind) -> Option<Arc<Informer>> {
        self.cached.read().unwrap_or_else(PoisonError::into_inner).get(&kind_name(kind)).cloned()
    }

    /// The kind's resource and scope: from its informer, else discovered once.
    fn resource(&self, kind: &GroupVersionKind) -> Result<(ApiResource, bool), ApiError> {
        if let Some(informer) = self.informer(kind) {
            return Ok((informer.resource().clone(), informer.namespaced()));
        }
        let name = kind_name(kind);
        if let Some(found) = self.resources.read().unwrap_or_else(PoisonError::into_inner).get(&name) {
            return Ok(found.clone());
        }
        let gvk = kube::api::GroupVersionKind::gvk(&kind.group, &kind.version, &kind.kind);
        let client = self.informers.client().clone();
        let (resource, capabilities) = self
            .handle
            .block_on(kube::discovery::pinned_kind(&client, &gvk))
            .map_err(|e| api_error(404, "NotFound", format!("the server does not serve {name}: {e}")))?;
        let found = (resource, capabilities.scope == kube::discovery::Scope::Namespaced);
        self.resources.write().unwrap_or_else(PoisonError::into_inner).insert(name, found.clone());
        Ok(found)
    }

    fn path(&self, kind: &GroupVersionKind, namespace: Option<&str>, name: Option<&str>) -> Result<String, ApiError> {
        let (resource, namespaced) = self.resource(kind)?;
        let mut path = if kind.group.is_empty() {
            format!("/api/{}", kind.version)
        } else {
            format!("/apis/{}/{}", kind.group, kind.version)
        };
        if namespaced {
            let ns = namespace.ok_or_else(|| {
                api_error(400, "BadRequest", format!("{} is namespaced: give a namespace", kind.kind))
            })?;
            path.push_str("/namespaces/");
            path.push_str(ns);
        }
        path.push('/');
        path.push_str(&resource.plural);
        if let Some(name) = name {
            path.push('/');
            path.push_str(name);
        }
        Ok(path)
    }

    fn send(&self, method: http::Method, path: &str, content_type: &str, body: Vec<u8>) -> Result<Value, ApiError> {
        let request = build_request(method, path, content_type, body)?;
        let client = self.informers.client().clone();
        parse_reply(self.handle.block_on(client.request_text(request)))
    }

    /// Writes `object` of `kind` and feeds the stored result back into the cache.
    fn write(
        &self,
        kind: &GroupVersionKind,
        method: http::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<String, ApiError> {
        let stored = self.send(method, path, content_type, body)?;
        Ok(self.written(kind, stored))
    }

    /// Feeds an object the server stored back into the cache; returns it as text.
    fn written(&self, kind: &GroupVersionKind, stored: Value) -> String {
        let text = stored.to_string();
        if let Some(informer) = self.informer(kind) {
            // A write that removed the last finalizer of an object being deleted removed the
            // object: the server answers with its last state, which must not go back into the
            // cache (the watch may already have delivered the deletion; it would be a ghost).
            // (A namespace is also held by its `spec.finalizers`.)
            if capstan_api::meta::deletion_finished(&kind.group, &kind.kind, &stored) {
                informer.observe_deleted(&Key::of(&stored));
            } else {
                informer.observe(stored);
            }
        }
        text
    }

    /// The objects of `kind` in `namespace` that pass `filter`, from the cache when the kind is
    /// cached (filtered before anything is copied), otherwise listed live.
    fn list_where(
        &self,
        kind: &GroupVersionKind,
        namespace: Option<&str>,
        filter: impl Fn(&Value) -> bool,
    ) -> Result<Vec<String>, ApiError> {
        if let Some(informer) = self.informer(kind) {
            return Ok(informer.list(namespace, filter).iter().map(|o| o.json.clone()).collect());
        }
        let path = self.path(kind, namespace, None)?;
        let listed = self.send(http::Method::GET, &path, "application/json", Vec::new())?;
        let items = listed.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        Ok(items.iter().filter(|o| filter(o)).map(Value::to_string).collect())
    }

    /// A create request for `object` (text), checked first.
    fn create_request(&self, kind: &GroupVersionKind, object: &str) -> Result<http::Request<Vec<u8>>, ApiError> {
        let value = parse_object(object)?;
        let path = self.path(kind, text_at(&value, "/metadata/namespace"), None)?;
        build_request(http::Method::POST, &self.field_manager(&path), "application/json", object.as_bytes().to_vec())
    }

    fn field_manager(&self, path: &str) -> String {
        let separator = if path.contains('?') { '&' } else { '?' };
        format!("{path}{separator}fieldManager={}", self.name)
    }
}

fn parse_object(object: &str) -> Result<Value, ApiError> {
    serde_json::from_str(object).map_err(|e| api_error(400, "BadRequest", format!("the object is not valid JSON: {e}")))
}

fn text_at<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.pointer(pointer).and_then(Value::as_str)
}

/// Whether `object` passes a field selector such as `spec.nodeName=n1,status.phase!=Failed`.
fn fields_match(selector: &str, object: &Value) -> bool {
    selector.split(',').filter(|term| !term.trim().is_empty()).all(|term| {
        let (path, want, equal) = match term.split_once("!=") {
            Some((path, value)) => (path, value, false),
            None => match term.split_once("==").or_else(|| term.split_once('=')) {
                Some((path, value)) => (path, value, true),
                None => return false,
            },
        };
        let pointer = format!("/{}", path.trim().replace('.', "/"));
        let actual = object
            .pointer(&pointer)
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_default();
        (actual == want.trim()) == equal
    })
}

impl ControllerClient for HostClient {
    fn get(&self, kind: &GroupVersionKind, key: &ObjectKey) -> Result<Option<String>, ApiError> {
        if let Some(informer) = self.informer(kind) {
            return Ok(informer.get(&Key::from(key)).map(|object| object.json.clone()));
        }
        // A kind the controller did not declare: read it live.
        let path = self.path(kind, key.namespace.as_deref(), Some(&key.name))?;
        match self.send(http::Method::GET, &path, "application/json", Vec::new()) {
            Ok(object) => Ok(Some(object.to_string())),
            Err(e) if e.code == 404 => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn list(&self, kind: &GroupVersionKind, options: &ListOptions) -> Result<Vec<String>, ApiError> {
        let labels = options
            .label_selector
            .as_deref()
            .map(LabelSelector::parse)
            .transpose()
            .map_err(|e| api_error(400, "BadRequest", format!("invalid label selector: {e}")))?;
        self.list_where(kind, options.namespace.as_deref(), |object| {
            labels.as_ref().is_none_or(|s| s.matches_object(object))
                && options.field_selector.as_deref().is_none_or(|s| fields_match(s, object))
        })
    }

    fn list_owned(
        &self,
        kind: &GroupVersionKind,
        namespace: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<String>, ApiError> {
        self.list_where(kind, namespace, |object| owned_by(object, owner_uid))
    }

    fn recall(&self, key: &str) -> Option<String> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner).values.get(key).cloned()
    }

    fn remember(&self, key: &str, value: Option<&str>) -> Result<(), ApiError> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner).remember(key, value)
    }

    fn create(&self, kind: &GroupVersionKind, object: &str) -> Result<String, ApiError> {
        let request = self.create_request(kind, object)?;
        let client = self.informers.client().clone();
        let stored = parse_reply(self.handle.block_on(client.request_text(request)))?;
        Ok(self.written(kind, stored))
    }

    fn create_many(&self, kind: &GroupVersionKind, objects: &[String]) -> Vec<Result<String, ApiError>> {
        let mut results = Vec::with_capacity(objects.len());
        for chunk in objects.chunks(CONCURRENT_CREATES) {
            let pending: Vec<_> = chunk
                .iter()
                .map(|object| {
                    let request = self.create_request(kind, object)?;
                    let client = self.informers.client().clone();
                    Ok(self.handle.spawn(async move { client.request_text(request).await }))
                })
                .collect();
            for task in pending {
                let reply = task.and_then(|task| {
                    self.handle
                        .block_on(task)
                        .map_err(|e| api_error(500, "InternalError", format!("a create was lost: {e}")))
                });
                results.push(reply.and_then(parse_reply).map(|stored| self.written(kind, stored)));
            }
        }
        results
    }

    fn update(&self, kind: &GroupVersionKind, object: &str) -> Result<String, ApiError> {
        let value = parse_object(object)?;
        let name = text_at(&value, "/metadata/name").unwrap_or_default();
        let path = self.path(kind, text_at(&value, "/metadata/namespace"), Some(name))?;
        self.write(kind, http::Method::PUT, &self.field_manager(&path), "application/json", object.as_bytes().to_vec())
    }

    fn update_status(&self, kind: &GroupVersionKind, object: &str) -> Result<String, ApiError> {
        let value = parse_object(object)?;
        let name = text_at(&value, "/metadata/name").unwrap_or_default();
        let path = format!("{}/status", self.path(kind, text_at(&value, "/metadata/namespace"), Some(name))?);
        self.write(kind, http::Method::PUT, &self.field_manager(&path), "application/json", object.as_bytes().to_vec())
    }

    fn patch(
        &self,
        kind: &GroupVersionKind,
        key: &ObjectKey,
        patch_type: PatchType,
        patch: &str,
        subresource: Option<&str>,
    ) -> Result<String, ApiError> {
        let object_path = self.path(kind, key.namespace.as_deref(), Some(&key.name))?;
        let target = match subresource {
            Some(sub) => format!("{object_path}/{sub}"),
            None => object_path,
        };
        let content_type = match patch_type {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        };
        let mut url = self.field_manager(&target);
        if matches!(patch_type, PatchType::Apply) {
            url.push_str("&force=true");
        }
        self.write(kind, http::Method::PATCH, &url, content_type, patch.as_bytes().to_vec())
    }

    fn delete(&self, kind: &GroupVersionKind, key: &ObjectKey, options: &DeleteOptions) -> Result<(), ApiError> {
        let path = self.path(kind, key.namespace.as_deref(), Some(&key.name))?;
        let mut body = json!({"kind": "DeleteOptions", "apiVersion": "v1"});
        if let Some(propagation) = options.propagation {
            body["propagationPolicy"] = json!(match propagation {
                Propagation::Background => "Background",
                Propagation::Foreground => "Foreground",
                Propagation::Orphan => "Orphan",
            });
        }
        if options.precondition_uid.is_some() || options.precondition_resource_version.is_some() {
            body["preconditions"] =
                json!({"uid": options.precondition_uid, "resourceVersion": options.precondition_resource_version});
        }
        let stored = self.send(http::Method::DELETE, &path, "application/json", body.to_string().into_bytes())?;
        if let Some(informer) = self.informer(kind) {
            // A held object (finalizers, grace period) comes back with its deletionTimestamp; a
            // removed one as a Status or as its last state. Only a held one may go back into the
            // cache: the watch may already have delivered the deletion, and re-inserting the
            // removed object would leave a ghost that nothing ever clears.
            let held = stored.get("kind").and_then(Value::as_str) == Some(kind.kind.as_str())
                && stored.pointer("/metadata/deletionTimestamp").is_some();
            if held {
                informer.observe(stored);
            } else {
                informer.observe_deleted(&Key::from(key));
            }
        }
        Ok(())
    }

    fn discover(&self) -> Result<Vec<capstan_wasm::controller::ApiResource>, ApiError> {
        let client = self.informers.client().clone();
        let discovery = self
            .handle
            .block_on(kube::discovery::Discovery::new(client).run_aggregated())
            .map_err(|e| api_error(503, "ServiceUnavailable", format!("discovery failed: {e}")))?;
        Ok(discovery
            .groups()
            .flat_map(kube::discovery::ApiGroup::recommended_resources)
            .map(|(resource, capabilities)| capstan_wasm::controller::ApiResource {
                kind: GroupVersionKind { group: resource.group, version: resource.version, kind: resource.kind },
                plural: resource.plural,
                namespaced: capabilities.scope == kube::discovery::Scope::Namespaced,
                verbs: capabilities.operations,
            })
            .collect())
    }

    fn record_event(&self, regarding: &ObjectRef, event_type: EventType, reason: &str, message: &str) {
        self.recorder.record(&self.name, regarding, event_type, reason, message);
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{MEMORY_LIMIT, Memory, fields_match, owned_by};

    #[test]
    fn remembered_values_are_replaced_forgotten_and_capped() {
        let mut memory = Memory::default();
        memory.remember("a", Some("12345")).unwrap();
        memory.remember("a", Some("1")).unwrap();
        assert_eq!((memory.values.get("a").map(String::as_str), memory.bytes), (Some("1"), 2));
        memory.remember("a", None).unwrap();
        assert_eq!((memory.values.len(), memory.bytes), (0, 0));
        let too_big = "x".repeat(MEMORY_LIMIT);
        let refused = memory.remember("b", Some(&too_big)).unwrap_err();
        assert_eq!((refused.code, memory.bytes, memory.values.len()), (413, 0, 0));
    }

    #[test]
    fn owner_filters_match_any_owner_reference_by_uid() {
        let pod = json!({"metadata": {"ownerReferences": [
            {"uid": "rs-1", "controller": true}, {"uid": "other"}]}});
        assert!(owned_by(&pod, "rs-1") && owned_by(&pod, "other"));
        assert!(!owned_by(&pod, "rs-2"));
        assert!(!owned_by(&json!({"metadata": {}}), "rs-1"));
    }

    #[test]
    fn field_selectors_compare_dotted_paths() {
        let pod = json!({"metadata": {"name": "a"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        let cases = [
            ("spec.nodeName=n1", true),
            ("spec.nodeName==n1", true),
            ("spec.nodeName!=n1", false),
            ("spec.nodeName=n1,status.phase!=Failed", true),
            ("metadata.name=b", false),
            ("spec.nodeName=", false),
        ];
        for (selector, expected) in cases {
            assert_eq!(fields_match(selector, &pod), expected, "{selector}");
        }
    }
}
