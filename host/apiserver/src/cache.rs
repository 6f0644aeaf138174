//! The watch cache: lists and watches served from memory, so thousands of watchers cost the
//! store nothing.
//!
//! This is kube-apiserver's cacher, shaped for Capstan's store:
//!
//! - **One store watch per server.** A [`WatchCache`] opens a single store watch over the whole
//!   keyspace (the *feed*, in `feed.rs`) and hands each event to the cache of the resource its
//!   key belongs to (`/<storage_resource>/...`). Events for resources nobody has asked about are
//!   dropped without being decoded.
//! - **One cache per resource, started lazily** (`resource.rs`): on first use a resource cache
//!   reads its prefix from the store at the revision the feed has dispatched up to, and from
//!   then on applies the feed's events. It keeps the current objects (decoded JSON with
//!   `resourceVersion` stamped) and a bounded ring of recent events.
//! - **Watchers** (`watcher.rs`) replay the part of the ring newer than their start revision and
//!   then receive live events through a bounded channel. A watcher whose channel is full is
//!   closed, as upstream closes watchers that cannot keep up; its client re-watches from the last
//!   revision it saw.
//!
//! # Consistent reads
//!
//! A list without `resourceVersion` must reflect every write that completed before it began
//! (upstream's "consistent reads from cache", KEP-2340). The cache reads the store's current
//! revision `R` and waits until the feed has dispatched revision `R`. Because the feed watches
//! the whole keyspace, every write produces an event on it, in revision order, so having
//! dispatched an event at `R` means every write up to `R` — to this resource or any other — has
//! been applied; that is the role etcd's progress notifications play upstream. A resource's
//! snapshot is taken under the same lock the feed holds while it applies an event and records
//! its revision, so the revision a list reports is exactly the state it returns. If the feed does
//! not get there within [`CacheConfig::freshness_timeout`] the cache answers
//! [`Uncached::Stale`] and the caller reads the store.
//!
//! Two limits: a transaction that writes several keys produces several events at one revision,
//! and a read can observe some of them before the rest arrive (Capstan's API server writes one
//! key per transaction); and on etcd, writes outside the store's key prefix advance the revision
//! without an event, so a consistent read right after one waits for the next write or times out
//! and falls back to the store.
//!
//! # Failure
//!
//! When the store watch fails — compacted because the feed fell behind, or any store error — the
//! feed and every resource cache are discarded and every watcher's stream ends, so clients
//! re-list. The next list or watch starts a new feed and reloads resources as they are used.
//! Watches from before a cache's start revision then fail with [`CacheError::TooOld`] (410), as
//! they do upstream after the watch cache re-initialises.

mod feed;
mod resource;
mod watcher;

#[cfg(test)]
mod tests;

use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use capstan_store::{Revision, Store, StoreError};
use serde_json::Value;
use tokio::task::AbortHandle;

use crate::status::ApiError;

pub use watcher::CacheWatch;

use feed::Feed;

/// How a list chooses the state it reads, from `resourceVersion` and `resourceVersionMatch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListRv {
    /// No `resourceVersion`: the latest state, including every write completed before the list.
    Latest,
    /// `resourceVersion=0`: whatever state the cache holds, however old.
    Any,
    /// `resourceVersion=N` (the default match): any state at `N` or newer.
    NotOlderThan(Revision),
    /// `resourceVersionMatch=Exact`: exactly the state at `N`. Served only when the cache is at
    /// exactly `N`; otherwise [`Uncached::ExactRevision`] sends the caller to the store.
    Exact(Revision),
}

/// Objects listed from the cache.
#[derive(Clone, Debug)]
pub struct CachedList {
    /// The objects, `resourceVersion` stamped, in store-key order — the order the store lists
    /// in, so `continue` keys from either agree. That is by namespace, then name, except that
    /// `/` sorts after `-` and `.`: namespace `a-b` comes before `a`.
    pub items: Vec<Arc<Value>>,
    /// The revision the objects reflect.
    pub revision: Revision,
}

/// What happened to an object, as a Kubernetes watch event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheEventKind {
    /// The object was created.
    Added,
    /// The object was updated.
    Modified,
    /// The object was deleted.
    Deleted,
}

impl CacheEventKind {
    /// The watch event `type`: `ADDED`, `MODIFIED` or `DELETED`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            CacheEventKind::Added => "ADDED",
            CacheEventKind::Modified => "MODIFIED",
            CacheEventKind::Deleted => "DELETED",
        }
    }
}

/// One change to one object, as the cache delivers it to watchers. Cloning is cheap: the
/// objects are shared.
#[derive(Clone, Debug)]
pub struct CacheEvent {
    /// Added, modified or deleted.
    pub kind: CacheEventKind,
    /// The object after the change; for a deletion, its last state with `resourceVersion` set to
    /// the revision of the deletion (as kube-apiserver sends it).
    pub object: Arc<Value>,
    /// The object before the change (`None` when added), so callers can tell when an object
    /// starts or stops matching a selector.
    pub prev: Option<Arc<Value>>,
    /// The revision of the change.
    pub revision: Revision,
    key: Arc<[u8]>,
    /// `object` as JSON, encoded by the first watcher that sends it and shared by the others.
    json: Arc<OnceLock<bytes::Bytes>>,
}

impl CacheEvent {
    fn new(
        kind: CacheEventKind,
        object: Arc<Value>,
        prev: Option<Arc<Value>>,
        revision: Revision,
        key: Arc<[u8]>,
    ) -> Self {
        Self { kind, object, prev, revision, key, json: Arc::default() }
    }

    /// The object's store key.
    #[must_use]
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// `object` as compact JSON, encoded once for every watcher of this event.
    #[must_use]
    pub fn object_json(&self) -> bytes::Bytes {
        self.json.get_or_init(|| bytes::Bytes::from(crate::body::json_bytes(&self.object))).clone()
    }

    /// The event without its shared encoding, as history keeps it: a watcher that starts from
    /// history encodes what it replays, and history does not hold every object twice.
    fn for_history(&self) -> Self {
        Self { json: Arc::default(), ..self.clone() }
    }
}

/// Why the cache sent a request back to the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Uncached {
    /// An exact-revision list asked for a revision other than the cache's.
    ExactRevision,
    /// The cache did not reach the requested revision within the freshness timeout.
    Stale,
    /// The resource's cache is still loading, or the cache is restarting after its store watch
    /// failed, or the resource name cannot be cached (it is empty or contains `/`).
    Unavailable,
}

/// Why a cache request failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The cache cannot answer; serve the request from the store instead.
    #[error("the watch cache cannot serve this request ({0:?}); read the store instead")]
    NotCached(Uncached),
    /// A watch asked for history the cache no longer holds; the client must re-list (410).
    #[error("too old resource version: {requested} ({oldest})")]
    TooOld {
        /// The revision the watch asked to start after.
        requested: Revision,
        /// The oldest revision a watch can start after.
        oldest: Revision,
    },
    /// The requested revision is newer than the cache reached within the freshness timeout,
    /// and newer than the store's.
    #[error("Too large resource version: {requested}, current: {current}")]
    TooLarge {
        /// The revision asked for.
        requested: Revision,
        /// The store's current revision.
        current: Revision,
    },
    /// The store failed while the cache consulted it.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<CacheError> for ApiError {
    fn from(error: CacheError) -> Self {
        match error {
            CacheError::TooOld { .. } => ApiError::Expired(error.to_string()),
            // Upstream answers 504 with a ResourceVersionTooLarge cause and a Retry-After; the
            // closest we have tells the client to come back later too.
            CacheError::TooLarge { .. } => ApiError::Unavailable(error.to_string()),
            CacheError::Store(store) => store.into(),
            CacheError::NotCached(_) => ApiError::Internal(error.to_string()),
        }
    }
}

/// Sizes and timeouts of the cache.
#[derive(Clone, Debug)]
pub struct CacheConfig {
    /// How many recent events each resource keeps for watches that start in the past.
    pub history: usize,
    /// How many live events may wait for one watcher before it is closed as too slow.
    pub watcher_buffer: usize,
    /// How long a request waits for the cache to load a resource or reach a revision before it
    /// is sent back to the store.
    pub freshness_timeout: Duration,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig { history: 10_000, watcher_buffer: 1_000, freshness_timeout: Duration::from_secs(3) }
    }
}

/// The API server's watch cache: one store watch feeding one in-memory cache per resource.
///
/// Resources are named by their storage resource (the first segment of their store keys, as
/// [`crate::objects::ObjectRef::key`] builds them); pass a namespace only for namespaced
/// resources.
pub struct WatchCache {
    store: Arc<dyn Store>,
    config: CacheConfig,
    /// The running feed, replaced when its store watch fails.
    current: Mutex<Option<Running>>,
    /// Serialises starting a feed, so concurrent first requests open one store watch.
    starting: tokio::sync::Mutex<()>,
}

/// A feed and the task that drives it.
struct Running {
    feed: Arc<Feed>,
    task: AbortHandle,
}

impl WatchCache {
    /// A cache over `store` with default sizes; nothing is read until the first request.
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_config(store, CacheConfig::default())
    }

    /// A cache over `store` with the given sizes and timeouts.
    #[must_use]
    pub fn with_config(store: Arc<dyn Store>, config: CacheConfig) -> Self {
        WatchCache { store, config, current: Mutex::new(None), starting: tokio::sync::Mutex::new(()) }
    }

    /// Lists `resource` (in `namespace`, or all) as `rv` asks.
    ///
    /// [`CacheError::NotCached`] means the caller should read the store instead.
    pub async fn list(&self, resource: &str, namespace: Option<&str>, rv: ListRv) -> Result<CachedList, CacheError> {
        let feed = self.feed().await?;
        let cache = feed.cache(resource).await?;
        let exact = match rv {
            ListRv::Any => None,
            ListRv::Exact(revision) => Some(revision),
            ListRv::Latest => {
                let target = self.store.current_revision().await?;
                if !feed.reached(target).await? {
                    return Err(CacheError::NotCached(Uncached::Stale));
                }
                None
            }
            ListRv::NotOlderThan(target) => {
                self.reach(&feed, target).await?;
                None
            }
        };
        cache.snapshot(namespace, || feed.revision(), exact)
    }

    /// The object of `resource` under store `key` as the cache holds it now, which may be behind
    /// the store: for read-modify-writes whose compare-and-swap catches a stale copy.
    pub async fn get(&self, resource: &str, key: &[u8]) -> Result<Option<Arc<Value>>, CacheError> {
        let feed = self.feed().await?;
        feed.cache(resource).await?.get(key)
    }

    /// Watches `resource` (in `namespace`, or all): every change after revision `from`, in
    /// order, each once.
    ///
    /// The stream ends when the watcher falls too far behind or the cache restarts; the client
    /// then re-watches from the last revision it saw. `from` older than the cache's history is
    /// [`CacheError::TooOld`]; a caller serving `resourceVersion=0` or none lists first and
    /// watches from the list's revision.
    pub async fn watch(
        &self,
        resource: &str,
        namespace: Option<&str>,
        from: Revision,
    ) -> Result<CacheWatch, CacheError> {
        let feed = self.feed().await?;
        let cache = feed.cache(resource).await?;
        self.reach(&feed, from).await?;
        cache.subscribe(namespace, from)
    }

    /// How many watchers the cache is serving, for metrics.
    #[must_use]
    pub fn watcher_count(&self) -> usize {
        lock(&self.current).as_ref().map_or(0, |running| running.feed.watcher_count())
    }

    /// Waits until the feed has dispatched `target`. When it does not in time, the answer depends
    /// on why: a revision the store has not reached is too large; otherwise the cache is just
    /// behind and the store must answer.
    async fn reach(&self, feed: &Feed, target: Revision) -> Result<(), CacheError> {
        if feed.reached(target).await? {
            return Ok(());
        }
        let current = self.store.current_revision().await?;
        if target > current {
            Err(CacheError::TooLarge { requested: target, current })
        } else {
            Err(CacheError::NotCached(Uncached::Stale))
        }
    }

    /// The running feed, starting one when there is none or the last one failed.
    async fn feed(&self) -> Result<Arc<Feed>, CacheError> {
        if let Some(feed) = self.live_feed() {
            return Ok(feed);
        }
        let _starting = self.starting.lock().await;
        if let Some(feed) = self.live_feed() {
            return Ok(feed);
        }
        let (feed, task) = Feed::start(Arc::clone(&self.store), self.config.clone()).await?;
        let replaced = lock(&self.current).replace(Running { feed: Arc::clone(&feed), task });
        // A replaced feed has failed and its task has ended; aborting is only belt and braces.
        if let Some(old) = replaced {
            old.task.abort();
        }
        Ok(feed)
    }

    fn live_feed(&self) -> Option<Arc<Feed>> {
        lock(&self.current).as_ref().filter(|running| !running.feed.failed()).map(|running| Arc::clone(&running.feed))
    }
}

impl Drop for WatchCache {
    fn drop(&mut self) {
        // The feed's task owns the feed, so it would outlive the cache and keep the store watch
        // open.
        if let Some(running) = self.current.get_mut().unwrap_or_else(PoisonError::into_inner).take() {
            running.task.abort();
        }
    }
}

/// Locks a mutex whether or not a panic poisoned it. Nothing the cache does under its locks is
/// expected to panic; if the feed's task does, it fails the feed and closes the caches on the
/// way out, which needs these locks.
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
