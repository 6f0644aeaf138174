//! Shared informers: one list+watch per kind, kept in an in-memory cache indexed by namespace,
//! telling every interested controller what changed.
//!
//! The watch is kube-runtime's `watcher` over the API server (re-listing after `410 Expired` or
//! a broken stream); a re-list replaces the cache atomically and reports objects that vanished
//! meanwhile as deleted. Writes a controller makes are fed back into the cache at once
//! ([`Informer::observe`]) so its next read sees them; the watch event that follows, carrying
//! the same resourceVersion, is then no change.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use futures::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::discovery::{ApiCapabilities, Scope};
use kube::runtime::watcher;
use serde_json::Value;
use tokio::sync::watch;

use crate::Key;
use crate::error::ControllerError;

/// One object in a cache: its JSON value and text (serialised once, served many times).
#[derive(Debug)]
pub struct Cached {
    /// The object.
    pub value: Value,
    /// The object as JSON text.
    pub json: String,
}

impl Cached {
    fn new(value: Value) -> Arc<Self> {
        let json = value.to_string();
        Arc::new(Self { value, json })
    }

    fn resource_version(&self) -> Option<u64> {
        resource_version(&self.value)
    }
}

fn resource_version(object: &Value) -> Option<u64> {
    object.pointer("/metadata/resourceVersion").and_then(Value::as_str).and_then(|rv| rv.parse().ok())
}

/// What happened to one object.
#[derive(Clone, Debug)]
pub enum Change {
    /// Created, or first seen.
    Added(Arc<Cached>),
    /// Changed: the old and new states.
    Updated(Arc<Cached>, Arc<Cached>),
    /// Deleted: its last known state.
    Deleted(Arc<Cached>),
}

impl Change {
    /// The object's latest state (the last known one for a deletion).
    #[must_use]
    pub fn object(&self) -> &Arc<Cached> {
        match self {
            Self::Added(object) | Self::Updated(_, object) | Self::Deleted(object) => object,
        }
    }
}

/// Called for every change of an informer's kind.
pub type Handler = Arc<dyn Fn(&Change) + Send + Sync>;

/// The cached objects of one kind, by (namespace, name); cluster-scoped objects have namespace
/// `""`. Ordered, so one namespace is a range.
type Objects = BTreeMap<(String, String), Arc<Cached>>;

/// One kind's list+watch and cache.
pub struct Informer {
    resource: ApiResource,
    namespaced: bool,
    objects: RwLock<Objects>,
    /// resourceVersions at which objects were deleted (by this process or seen in the watch),
    /// so a late watch event or write-through of an older version does not bring them back.
    tombstones: Mutex<HashMap<(String, String), u64>>,
    handlers: RwLock<Vec<Handler>>,
    synced: watch::Sender<bool>,
}

impl Informer {
    /// The kind's API resource (group, version, plural).
    #[must_use]
    pub fn resource(&self) -> &ApiResource {
        &self.resource
    }

    /// Whether the kind is namespaced.
    #[must_use]
    pub fn namespaced(&self) -> bool {
        self.namespaced
    }

    fn read(&self) -> RwLockReadGuard<'_, Objects> {
        self.objects.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Objects> {
        self.objects.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a handler; it is first told about every object already cached, as additions.
    pub fn subscribe(&self, handler: &Handler) {
        let existing: Vec<Arc<Cached>> = self.read().values().cloned().collect();
        self.handlers.write().unwrap_or_else(PoisonError::into_inner).push(Arc::clone(handler));
        for object in existing {
            handler(&Change::Added(object));
        }
    }

    fn notify(&self, change: &Change) {
        let handlers = self.handlers.read().unwrap_or_else(PoisonError::into_inner).clone();
        for handler in handlers {
            handler(change);
        }
    }

    /// One object from the cache.
    #[must_use]
    pub fn get(&self, key: &Key) -> Option<Arc<Cached>> {
        self.read().get(&cache_key(key)).cloned()
    }

    /// The cached objects of `namespace` (all of them when `None`), passing `filter`.
    pub fn list(&self, namespace: Option<&str>, filter: impl Fn(&Value) -> bool) -> Vec<Arc<Cached>> {
        let objects = self.read();
        let pick = |object: &&Arc<Cached>| filter(&object.value);
        match namespace {
            Some(ns) => {
                let start = (ns.to_owned(), String::new());
                objects.range(start..).take_while(|((n, _), _)| n == ns).map(|(_, o)| o).filter(pick).cloned().collect()
            }
            None => objects.values().filter(pick).cloned().collect(),
        }
    }

    /// How many objects are cached.
    #[must_use]
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the cache is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the first list has completed.
    #[must_use]
    pub fn has_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Waits until the first list has completed.
    pub async fn wait_synced(&self) {
        let mut synced = self.synced.subscribe();
        let _ = synced.wait_for(|s| *s).await;
    }

    /// Records an object as the API server returned it from a write, unless the cache already
    /// holds the same or a newer version.
    pub fn observe(&self, object: Value) {
        self.apply(object);
    }

    /// Records that this process deleted the object `key`.
    pub fn observe_deleted(&self, key: &Key) {
        let key = cache_key(key);
        let removed = self.write().remove(&key);
        if let Some(object) = removed {
            if let Some(rv) = object.resource_version() {
                self.tombstones.lock().unwrap_or_else(PoisonError::into_inner).insert(key, rv);
            }
            self.notify(&Change::Deleted(object));
        }
    }

    fn apply(&self, value: Value) {
        let key = object_cache_key(&value);
        let rv = resource_version(&value);
        if let (Some(rv), Some(dead)) =
            (rv, self.tombstones.lock().unwrap_or_else(PoisonError::into_inner).get(&key).copied())
            && rv <= dead
        {
            return;
        }
        let new = Cached::new(value);
        let mut objects = self.write();
        let change = match objects.get(&key) {
            Some(old) if newer_or_same(old, rv) => return,
            Some(old) => Change::Updated(Arc::clone(old), Arc::clone(&new)),
            None => Change::Added(Arc::clone(&new)),
        };
        objects.insert(key, new);
        drop(objects);
        self.notify(&change);
    }

    fn delete(&self, value: &Value) {
        let key = object_cache_key(value);
        // A write-through of an older state arriving after the deletion must not bring it back.
        if let Some(rv) = resource_version(value) {
            let mut tombstones = self.tombstones.lock().unwrap_or_else(PoisonError::into_inner);
            let dead = tombstones.entry(key.clone()).or_insert(rv);
            *dead = (*dead).max(rv);
        }
        let removed = self.write().remove(&key);
        if let Some(object) = removed {
            self.notify(&Change::Deleted(object));
        }
    }

    /// Replaces the cache with a fresh list, reporting what changed meanwhile.
    fn replace(&self, listed: Vec<Value>) {
        let mut fresh = Objects::new();
        for value in listed {
            fresh.insert(object_cache_key(&value), Cached::new(value));
        }
        let mut changes = Vec::new();
        {
            let mut objects = self.write();
            for (key, old) in objects.iter() {
                match fresh.get(key) {
                    None => changes.push(Change::Deleted(Arc::clone(old))),
                    Some(new) if new.json != old.json => {
                        changes.push(Change::Updated(Arc::clone(old), Arc::clone(new)));
                    }
                    Some(_) => {}
                }
            }
            for (key, new) in &fresh {
                if !objects.contains_key(key) {
                    changes.push(Change::Added(Arc::clone(new)));
                }
            }
            *objects = fresh;
        }
        self.tombstones.lock().unwrap_or_else(PoisonError::into_inner).clear();
        for change in &changes {
            self.notify(change);
        }
        self.synced.send_replace(true);
    }
}

fn newer_or_same(old: &Cached, rv: Option<u64>) -> bool {
    matches!((old.resource_version(), rv), (Some(old), Some(new)) if old >= new)
}

fn cache_key(key: &Key) -> (String, String) {
    (key.namespace.clone().unwrap_or_default(), key.name.clone())
}

fn object_cache_key(value: &Value) -> (String, String) {
    let text = |pointer: &str| value.pointer(pointer).and_then(Value::as_str).unwrap_or_default().to_owned();
    (text("/metadata/namespace"), text("/metadata/name"))
}

/// The informers of one process, one per kind, shared by every controller.
#[derive(Clone)]
pub struct Informers {
    client: kube::Client,
    by_kind: Arc<tokio::sync::Mutex<HashMap<String, Arc<Informer>>>>,
}

impl Informers {
    /// No informers yet; they start on first use.
    #[must_use]
    pub fn new(client: kube::Client) -> Self {
        Self { client, by_kind: Arc::default() }
    }

    /// The API client the informers watch through.
    #[must_use]
    pub fn client(&self) -> &kube::Client {
        &self.client
    }

    /// The informer of `group`/`version`/`kind`, started (and its first list awaited) on first
    /// use.
    pub async fn informer(&self, group: &str, version: &str, kind: &str) -> Result<Arc<Informer>, ControllerError> {
        let name = format!("{group}/{version}/{kind}");
        let mut by_kind = self.by_kind.lock().await;
        if let Some(informer) = by_kind.get(&name) {
            return Ok(Arc::clone(informer));
        }
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        let (resource, capabilities): (ApiResource, ApiCapabilities) = kube::discovery::pinned_kind(&self.client, &gvk)
            .await
            .map_err(|e| ControllerError::Discovery { kind: name.clone(), reason: e.to_string() })?;
        let informer = Arc::new(Informer {
            resource: resource.clone(),
            namespaced: capabilities.scope == Scope::Namespaced,
            objects: RwLock::default(),
            tombstones: Mutex::default(),
            handlers: RwLock::default(),
            synced: watch::Sender::new(false),
        });
        by_kind.insert(name.clone(), Arc::clone(&informer));
        drop(by_kind);
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource);
        tokio::spawn(run(api, Arc::clone(&informer), name));
        informer.wait_synced().await;
        Ok(informer)
    }

    /// The informers started so far, by `group/version/kind`.
    pub async fn started(&self) -> Vec<(String, Arc<Informer>)> {
        self.by_kind.lock().await.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
    }
}

/// Runs one kind's watch for as long as the process lives.
async fn run(api: Api<DynamicObject>, informer: Arc<Informer>, kind: String) {
    let mut stream = watcher(api, watcher::Config::default().any_semantic()).boxed();
    let mut listing: Vec<Value> = Vec::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(e) => {
                // The watcher backs off and re-lists by itself; an error here is a transient
                // failure worth seeing in the log.
                tracing::warn!(%kind, error = %e, "informer watch failed; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
        };
        match event {
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(object) => listing.push(to_value(&object)),
            watcher::Event::InitDone => informer.replace(std::mem::take(&mut listing)),
            watcher::Event::Apply(object) => informer.apply(to_value(&object)),
            watcher::Event::Delete(object) => informer.delete(&to_value(&object)),
        }
    }
}

fn to_value(object: &DynamicObject) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn informer() -> Informer {
        Informer {
            resource: ApiResource::erase::<k8s_openapi::api::apps::v1::ReplicaSet>(&()),
            namespaced: true,
            objects: RwLock::default(),
            tombstones: Mutex::default(),
            handlers: RwLock::default(),
            synced: watch::Sender::new(false),
        }
    }

    fn replica_set(rv: &str) -> Value {
        serde_json::json!({"metadata": {"namespace": "default", "name": "web", "resourceVersion": rv}})
    }

    #[test]
    fn a_deleted_object_is_not_brought_back_by_an_older_write_through() {
        let informer = informer();
        informer.apply(replica_set("5"));
        // The watch delivers the deletion first; the DELETE response (the object's last state)
        // is processed afterwards.
        informer.delete(&replica_set("7"));
        informer.observe(replica_set("6"));
        assert!(informer.read().is_empty(), "no ghost left in the cache");
        // A new object of the same name is newer than the deletion and is cached.
        informer.apply(replica_set("9"));
        assert_eq!(informer.read().len(), 1);
    }
}
