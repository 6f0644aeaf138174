//! An in-memory cluster for a controller's native unit tests: objects by kind and key, writes
//! that assign UIDs, resourceVersions and generations the way the API server does, and a record
//! of the Events a reconcile emitted.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::prelude::*;
use super::{
    Api, ApiError, ApiResource, DeleteOptions, EventType, GroupVersionKind, ListOptions, ObjectKey, ObjectRef,
    PatchType,
};
use super::{Propagation, meta};

type Bucket = BTreeMap<(Option<String>, String), Value>;

/// An in-memory cluster. Not a model of the API server's every rule: it stores, versions and
/// deletes (honouring finalizers), which is what controller logic depends on.
#[derive(Default)]
pub struct FakeCluster {
    objects: RefCell<BTreeMap<String, Bucket>>,
    revision: RefCell<u64>,
    events: RefCell<Vec<(String, String)>>,
    writes: std::cell::Cell<u64>,
    memory: RefCell<BTreeMap<String, String>>,
    after_get: RefCell<Option<AfterGet>>,
}

/// What [`FakeCluster::after_next_get`] runs.
type AfterGet = Box<dyn FnOnce(&FakeCluster, &GroupVersionKind, &ObjectKey)>;

fn kind_key(kind: &GroupVersionKind) -> String {
    format!("{}/{}", kind.api_version(), kind.kind)
}

fn error(code: u16, reason: &str, message: String) -> ApiError {
    ApiError { code, reason: reason.into(), message }
}

impl FakeCluster {
    /// An empty cluster.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores `object` of `kind` as if created, filling in the metadata the server sets.
    pub fn insert(&self, kind: &GroupVersionKind, object: Value) -> Value {
        self.store(kind, object, true)
    }

    /// Runs `hook` once, after the next `get` (its read already taken), to play another client's
    /// write racing the controller, e.g. an admission charge landing between its read and write.
    pub fn after_next_get(&self, hook: impl FnOnce(&FakeCluster, &GroupVersionKind, &ObjectKey) + 'static) {
        *self.after_get.borrow_mut() = Some(Box::new(hook));
    }

    /// Every object of `kind`.
    #[must_use]
    pub fn all(&self, kind: &GroupVersionKind) -> Vec<Value> {
        self.objects.borrow().get(&kind_key(kind)).map(|b| b.values().cloned().collect()).unwrap_or_default()
    }

    /// The reasons of the Events recorded so far, with their messages.
    #[must_use]
    pub fn events(&self) -> Vec<(String, String)> {
        self.events.borrow().clone()
    }

    /// How many writes (create, update, status update, patch, delete) reconciles sent so far.
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.writes.get()
    }

    fn count_write(&self) {
        self.writes.set(self.writes.get() + 1);
    }

    /// Changes a stored object in place (as another actor would), e.g. to mark pods ready.
    pub fn modify(&self, kind: &GroupVersionKind, key: &ObjectKey, change: impl FnOnce(&mut Value)) {
        let mut objects = self.objects.borrow_mut();
        if let Some(object) =
            objects.get_mut(&kind_key(kind)).and_then(|b| b.get_mut(&(key.namespace.clone(), key.name.clone())))
        {
            change(object);
        }
    }

    /// Marks every pod `Running` and `Ready`, as a node (or a hollow node) would.
    pub fn make_pods_ready(&self) {
        let pod = GroupVersionKind::new("", "v1", "Pod");
        for object in self.all(&pod) {
            self.modify(&pod, &ObjectKey::of(&object), |p| {
                p["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
            });
        }
    }

    fn next_revision(&self) -> u64 {
        let mut revision = self.revision.borrow_mut();
        *revision += 1;
        *revision
    }

    fn store(&self, kind: &GroupVersionKind, mut object: Value, create: bool) -> Value {
        let revision = self.next_revision();
        object["apiVersion"] = json!(kind.api_version());
        object["kind"] = json!(kind.kind);
        let metadata = &mut object["metadata"];
        if metadata.get("name").is_none_or(Value::is_null) {
            let prefix = metadata.get("generateName").and_then(Value::as_str).unwrap_or("object-").to_owned();
            metadata["name"] = json!(format!("{prefix}{revision:05}"));
        }
        if create {
            metadata["uid"] = json!(format!("uid-{revision}"));
            metadata["generation"] = json!(1);
            metadata["creationTimestamp"] = json!(format!("2026-01-01T00:00:{:02}Z", revision % 60));
        }
        metadata["resourceVersion"] = json!(revision.to_string());
        let key = (meta::namespace(&object).map(str::to_owned), meta::name(&object).to_owned());
        self.objects.borrow_mut().entry(kind_key(kind)).or_default().insert(key, object.clone());
        object
    }

    fn current(&self, kind: &GroupVersionKind, key: &ObjectKey) -> Option<Value> {
        self.objects
            .borrow()
            .get(&kind_key(kind))
            .and_then(|b| b.get(&(key.namespace.clone(), key.name.clone())).cloned())
    }

    fn replace(&self, kind: &GroupVersionKind, object: &Value, status_only: bool) -> Result<Value, ApiError> {
        let key = ObjectKey::of(object);
        let Some(current) = self.current(kind, &key) else {
            return Err(error(404, "NotFound", format!("{} {} not found", kind.kind, key.name)));
        };
        let sent = object.pointer("/metadata/resourceVersion").and_then(Value::as_str);
        if sent.is_some_and(|rv| Some(rv) != current.pointer("/metadata/resourceVersion").and_then(Value::as_str)) {
            return Err(error(409, "Conflict", format!("{} {} was modified", kind.kind, key.name)));
        }
        let mut next = if status_only {
            let mut next = current.clone();
            next["status"] = object.get("status").cloned().unwrap_or(Value::Null);
            next
        } else {
            let mut next = object.clone();
            next["status"] = current.get("status").cloned().unwrap_or(Value::Null);
            if next.get("spec") != current.get("spec") {
                next["metadata"]["generation"] = json!(meta::generation(&current) + 1);
            }
            next
        };
        for field in ["uid", "creationTimestamp", "deletionTimestamp"] {
            if let Some(value) = current["metadata"].get(field) {
                next["metadata"][field] = value.clone();
            }
        }
        if !status_only && meta::is_terminating(&next) && meta::finalizers(&next).is_empty() {
            self.remove(kind, &key);
            return Ok(next);
        }
        Ok(self.store(kind, next, false))
    }

    fn remove(&self, kind: &GroupVersionKind, key: &ObjectKey) {
        if let Some(bucket) = self.objects.borrow_mut().get_mut(&kind_key(kind)) {
            bucket.remove(&(key.namespace.clone(), key.name.clone()));
        }
    }
}

impl Api for FakeCluster {
    fn get(&self, kind: &GroupVersionKind, key: &ObjectKey) -> Result<Option<Value>, ApiError> {
        let read = self.current(kind, key);
        let hook = self.after_get.borrow_mut().take();
        if let Some(hook) = hook {
            hook(self, kind, key);
        }
        Ok(read)
    }

    fn list(&self, kind: &GroupVersionKind, options: &ListOptions) -> Result<Vec<Value>, ApiError> {
        let all = self.all(kind);
        Ok(all
            .into_iter()
            .filter(|o| options.namespace.is_none() || meta::namespace(o) == options.namespace.as_deref())
            .collect())
    }

    fn list_owned(
        &self,
        kind: &GroupVersionKind,
        namespace: Option<&str>,
        owner_uid: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let listed = self.list(kind, &ListOptions::in_namespace(namespace))?;
        Ok(listed.into_iter().filter(|o| meta::owner_references(o).iter().any(|r| r["uid"] == owner_uid)).collect())
    }

    fn create(&self, kind: &GroupVersionKind, object: &Value) -> Result<Value, ApiError> {
        self.count_write();
        let key = ObjectKey::of(object);
        if !key.name.is_empty() && self.current(kind, &key).is_some() {
            return Err(error(409, "AlreadyExists", format!("{} {} already exists", kind.kind, key.name)));
        }
        Ok(self.store(kind, object.clone(), true))
    }

    fn update(&self, kind: &GroupVersionKind, object: &Value) -> Result<Value, ApiError> {
        self.count_write();
        self.replace(kind, object, false)
    }

    fn update_status(&self, kind: &GroupVersionKind, object: &Value) -> Result<Value, ApiError> {
        self.count_write();
        self.replace(kind, object, true)
    }

    fn patch(
        &self,
        kind: &GroupVersionKind,
        key: &ObjectKey,
        patch_type: PatchType,
        patch: &Value,
        subresource: Option<&str>,
    ) -> Result<Value, ApiError> {
        self.count_write();
        let Some(mut current) = self.current(kind, key) else {
            return Err(error(404, "NotFound", format!("{} {} not found", kind.kind, key.name)));
        };
        if !matches!(patch_type, PatchType::Merge | PatchType::StrategicMerge) {
            return Err(error(415, "UnsupportedMediaType", "the fake cluster applies merge patches only".into()));
        }
        merge(&mut current, patch);
        current["metadata"]["resourceVersion"] = Value::Null;
        self.replace(kind, &current, subresource == Some("status"))
    }

    fn delete(&self, kind: &GroupVersionKind, key: &ObjectKey, options: &DeleteOptions) -> Result<(), ApiError> {
        self.count_write();
        let Some(mut current) = self.current(kind, key) else {
            return Err(error(404, "NotFound", format!("{} {} not found", kind.kind, key.name)));
        };
        let mut finalizers: Vec<String> = meta::finalizers(&current).into_iter().map(str::to_owned).collect();
        match options.propagation {
            Some(Propagation::Foreground) => finalizers.push("foregroundDeletion".into()),
            Some(Propagation::Orphan) => finalizers.push("orphan".into()),
            _ => {}
        }
        if finalizers.is_empty() {
            self.remove(kind, key);
            return Ok(());
        }
        current["metadata"]["finalizers"] = json!(finalizers);
        current["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:01:00Z");
        self.store(kind, current, false);
        Ok(())
    }

    fn record_event(&self, _regarding: &ObjectRef, _event_type: EventType, reason: &str, message: &str) {
        self.events.borrow_mut().push((reason.to_owned(), message.to_owned()));
    }

    /// Every kind the cluster has held an object of (plural: the kind in lower case plus `s`;
    /// namespaced when its objects have a namespace),.
    fn create_many(&self, kind: &GroupVersionKind, objects: &[Value]) -> Vec<Result<Value, ApiError>> {
        objects.iter().map(|object| self.create(kind, object)).collect()
    }

    fn recall(&self, key: &str) -> Option<String> {
        self.memory.borrow().get(key).cloned()
    }

    fn remember(&self, key: &str, value: Option<&str>) -> Result<(), ApiError> {
        let mut memory = self.memory.borrow_mut();
        match value {
            Some(value) => memory.insert(key.to_owned(), value.to_owned()),
            None => memory.remove(key),
        };
        Ok(())
    }

    fn discover(&self) -> Result<Vec<ApiResource>, ApiError> {
        let objects = self.objects.borrow();
        Ok(objects
            .iter()
            .filter_map(|(key, bucket)| {
                let (api_version, kind) = key.rsplit_once('/')?;
                let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
                Some(ApiResource {
                    kind: GroupVersionKind::new(group, version, kind),
                    plural: format!("{}s", kind.to_ascii_lowercase()),
                    namespaced: bucket.keys().any(|(namespace, _)| namespace.is_some()),
                    verbs: ["create", "delete", "get", "list", "patch", "update", "watch"].map(String::from).to_vec(),
                })
            })
            .collect())
    }
}

/// RFC 7386 merge of `patch` into `target`.
fn merge(target: &mut Value, patch: &Value) {
    let Some(fields) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    for (key, value) in fields {
        if value.is_null() {
            if let Some(map) = target.as_object_mut() {
                map.remove(key);
            }
        } else {
            merge(&mut target[key], value);
        }
    }
}
