//! One resource's cache: its current objects, its recent events, and its watchers.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ops::Bound;
use std::sync::{Arc, Mutex};

use capstan_store::{Event, EventKind, KeyValue, Revision, prefix_end};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use super::watcher::{CacheWatch, Watcher, in_scope};
use super::{CacheConfig, CacheError, CacheEvent, CacheEventKind, CachedList, Uncached, lock};
use crate::meta;

/// Where a resource cache is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Status {
    /// Reading its objects from the store.
    Loading,
    /// Serving.
    Ready,
    /// Discarded, because it could not load or its feed failed.
    Closed,
}

/// The cache of one storage resource.
pub(super) struct ResourceCache {
    resource: String,
    /// `/<resource>/`, the prefix of every key of the resource.
    prefix: Vec<u8>,
    history_limit: usize,
    watcher_buffer: usize,
    state: Mutex<State>,
    status: watch::Sender<Status>,
}

struct State {
    /// Changes that arrived while the initial objects were being read; `None` once loaded.
    pending: Option<Vec<Change>>,
    /// The revision the initial objects were read at.
    start: Revision,
    /// The current objects by store key, so namespace prefixes are ranges.
    objects: BTreeMap<Arc<[u8]>, Arc<Value>>,
    /// The most recent events, oldest first.
    history: VecDeque<CacheEvent>,
    /// The cache holds every event after this revision, so a watch can start at or after it.
    horizon: Revision,
    watchers: HashMap<u64, Watcher>,
    next_watcher: u64,
    closed: bool,
}

/// A store event, decoded outside the cache's lock.
struct Change {
    key: Arc<[u8]>,
    revision: Revision,
    /// The object after a write; `None` after a deletion or a write of something that is not
    /// a JSON object, both of which remove the object from the cache.
    object: Option<Value>,
}

impl Change {
    fn from_event(event: &Event) -> Self {
        let object = match event.kind {
            EventKind::Put => decode(&event.kv),
            EventKind::Delete => None,
        };
        Change { key: event.kv.key.as_slice().into(), revision: event.revision(), object }
    }
}

impl ResourceCache {
    /// A cache of `resource` that will load its objects as of `start`.
    pub(super) fn new(resource: &str, start: Revision, config: &CacheConfig) -> Self {
        let state = State {
            pending: Some(Vec::new()),
            start,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            horizon: start,
            watchers: HashMap::new(),
            next_watcher: 0,
            closed: false,
        };
        ResourceCache {
            resource: resource.to_string(),
            prefix: format!("/{resource}/").into_bytes(),
            history_limit: config.history,
            watcher_buffer: config.watcher_buffer.max(1),
            state: Mutex::new(state),
            status: watch::channel(Status::Loading).0,
        }
    }

    /// The storage resource.
    pub(super) fn resource(&self) -> &str {
        &self.resource
    }

    /// The key prefix of the resource.
    pub(super) fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Follows the cache through loading to ready or closed.
    pub(super) fn status(&self) -> watch::Receiver<Status> {
        self.status.subscribe()
    }

    /// How many watchers the cache serves.
    pub(super) fn watcher_count(&self) -> usize {
        lock(&self.state).watchers.len()
    }

    /// Installs the objects read at the start revision and applies the changes that arrived
    /// meanwhile.
    pub(super) fn finish_load(&self, loaded: Vec<(Arc<[u8]>, Value)>) {
        let mut state = lock(&self.state);
        if state.closed {
            return;
        }
        state.objects = loaded.into_iter().map(|(key, object)| (key, Arc::new(object))).collect();
        let start = state.start;
        for change in state.pending.take().unwrap_or_default() {
            // A transaction's later events can arrive after the start revision was chosen while
            // the read at that revision already holds them.
            if change.revision > start {
                state.apply(change, &self.resource, self.history_limit);
            }
        }
        drop(state);
        self.status.send_replace(Status::Ready);
    }

    /// Applies one store event. `advance` records the event's revision as applied; it runs under
    /// the cache's lock so that a snapshot never sees the revision without the change or the
    /// change without the revision.
    pub(super) fn apply(&self, event: Event, advance: impl FnOnce()) {
        let change = Change::from_event(&event);
        drop(event);
        let mut state = lock(&self.state);
        advance();
        if state.closed {
            return;
        }
        if let Some(pending) = &mut state.pending {
            pending.push(change);
            return;
        }
        state.apply(change, &self.resource, self.history_limit);
    }

    /// The objects in `namespace` (or all) and the revision they reflect, which `revision`
    /// reads. With `exact`, only when that is the cache's revision.
    pub(super) fn snapshot(
        &self,
        namespace: Option<&str>,
        revision: impl FnOnce() -> Revision,
        exact: Option<Revision>,
    ) -> Result<CachedList, CacheError> {
        let scope = self.scope(namespace);
        let end = prefix_end(&scope);
        let bounds = (Bound::Included(scope.as_slice()), end.as_deref().map_or(Bound::Unbounded, Bound::Excluded));
        let state = lock(&self.state);
        if state.closed || state.pending.is_some() {
            return Err(CacheError::NotCached(Uncached::Unavailable));
        }
        let revision = revision();
        if exact.is_some_and(|exact| exact != revision) {
            return Err(CacheError::NotCached(Uncached::ExactRevision));
        }
        let items = state.objects.range::<[u8], _>(bounds).map(|(_, object)| Arc::clone(object)).collect();
        Ok(CachedList { items, revision })
    }

    /// The object under store `key` as the cache holds it now; `NotCached` while loading.
    pub(super) fn get(&self, key: &[u8]) -> Result<Option<Arc<Value>>, CacheError> {
        let state = lock(&self.state);
        if state.closed || state.pending.is_some() {
            return Err(CacheError::NotCached(Uncached::Unavailable));
        }
        Ok(state.objects.get(key).cloned())
    }

    /// Starts a watcher for every event in `namespace` (or all) after `from`: first those still
    /// in the history, then live ones.
    pub(super) fn subscribe(
        self: &Arc<Self>,
        namespace: Option<&str>,
        from: Revision,
    ) -> Result<CacheWatch, CacheError> {
        let filter = namespace.map(|namespace| self.scope(Some(namespace)));
        let mut state = lock(&self.state);
        if state.closed || state.pending.is_some() {
            return Err(CacheError::NotCached(Uncached::Unavailable));
        }
        if from < state.horizon {
            return Err(CacheError::TooOld { requested: from, oldest: state.horizon });
        }
        let first = state.history.partition_point(|event| event.revision <= from);
        let backlog: Vec<CacheEvent> =
            state.history.range(first..).filter(|event| in_scope(filter.as_deref(), &event.key)).cloned().collect();
        let (sender, receiver) = mpsc::channel(self.watcher_buffer);
        let id = state.next_watcher;
        state.next_watcher += 1;
        state.watchers.insert(id, Watcher::new(filter, sender));
        drop(state);
        Ok(CacheWatch::new(backlog, receiver, Arc::downgrade(self), id))
    }

    /// Forgets a watcher whose stream was dropped.
    pub(super) fn unsubscribe(&self, id: u64) {
        lock(&self.state).watchers.remove(&id);
    }

    /// Discards everything and ends every watcher's stream.
    pub(super) fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.pending = None;
        state.objects.clear();
        state.history.clear();
        state.watchers.clear();
        drop(state);
        self.status.send_replace(Status::Closed);
    }

    /// The key prefix of `namespace` within the resource, or of the whole resource.
    fn scope(&self, namespace: Option<&str>) -> Vec<u8> {
        let mut scope = self.prefix.clone();
        if let Some(namespace) = namespace {
            scope.extend_from_slice(namespace.as_bytes());
            scope.push(b'/');
        }
        scope
    }
}

impl State {
    /// Updates the objects, records the event and hands it to the watchers.
    fn apply(&mut self, change: Change, resource: &str, history_limit: usize) {
        let Change { key, revision, object } = change;
        let event = if let Some(object) = object {
            let object = Arc::new(object);
            let prev = self.objects.insert(Arc::clone(&key), Arc::clone(&object));
            let kind = if prev.is_some() { CacheEventKind::Modified } else { CacheEventKind::Added };
            CacheEvent::new(kind, object, prev, revision, key)
        } else {
            // Nothing to report for a key the cache does not hold (its value was not an object).
            let Some(prev) = self.objects.remove(&key) else { return };
            let mut last = Value::clone(&prev);
            meta::metadata_mut(&mut last).insert("resourceVersion".into(), json!(revision.to_string()));
            CacheEvent::new(CacheEventKind::Deleted, Arc::new(last), Some(prev), revision, key)
        };
        self.watchers.retain(|_, watcher| watcher.offer(&event, resource));
        self.history.push_back(event.for_history());
        while self.history.len() > history_limit {
            if let Some(evicted) = self.history.pop_front() {
                self.horizon = evicted.revision;
            }
        }
    }
}

/// Decodes the objects of an initial read, skipping (and logging) values that are not objects.
pub(super) fn decode_all(kvs: Vec<KeyValue>) -> Vec<(Arc<[u8]>, Value)> {
    kvs.into_iter().filter_map(|kv| decode(&kv).map(|object| (Arc::from(kv.key), object))).collect()
}

/// Decodes a stored object and stamps its `resourceVersion`. A value that is not a JSON object
/// is logged and left out of the cache, where the store path would fail the whole request.
///
/// This is `objects::decode` with the object check first: stamping indexes `metadata`, which
/// panics on JSON that is not an object, and a panic here would stop the feed.
fn decode(kv: &KeyValue) -> Option<Value> {
    match serde_json::from_slice::<Value>(&kv.value) {
        Ok(mut object) if object.is_object() => {
            meta::metadata_mut(&mut object).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
            Some(object)
        }
        _ => {
            let key = String::from_utf8_lossy(&kv.key);
            tracing::warn!(%key, "leaving a stored value that is not a JSON object out of the watch cache");
            None
        }
    }
}
