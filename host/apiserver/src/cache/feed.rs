//! The feed: one store watch over the whole keyspace, handing each event to the cache of the
//! resource its key belongs to and recording how far it has got.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::{Arc, Mutex};

use capstan_store::{Event, KeyRange, RangeRequest, Revision, Store, StoreError, WatchRequest, WatchStream};
use futures::StreamExt;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use super::resource::{ResourceCache, Status, decode_all};
use super::{CacheConfig, CacheError, Uncached, lock};

/// How far the feed has got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Progress {
    /// Every event up to this revision has been applied to the resource caches.
    revision: Revision,
    /// The store watch failed; nothing more will be applied.
    failed: bool,
}

/// One store watch and the resource caches it feeds. A feed that fails stays failed; the
/// [`super::WatchCache`] starts a new one.
pub(super) struct Feed {
    store: Arc<dyn Store>,
    config: CacheConfig,
    progress: watch::Sender<Progress>,
    /// The resource caches by storage resource. The feed looks events up here, and advances its
    /// revision under this lock for events no cache wants, so a cache registering here starts
    /// from a revision that covers every event it will not be handed.
    caches: Mutex<HashMap<String, Arc<ResourceCache>>>,
}

impl Feed {
    /// Opens the store watch at the store's current revision and starts dispatching.
    pub(super) async fn start(
        store: Arc<dyn Store>,
        config: CacheConfig,
    ) -> Result<(Arc<Feed>, AbortHandle), StoreError> {
        let revision = store.current_revision().await?;
        // The whole keyspace rather than one prefix per resource: every write then arrives
        // here, so the feed's revision proves a consistent read fresh (see the module docs).
        let stream = store.watch(WatchRequest::after(KeyRange::prefix(Vec::new()), revision)).await?;
        let (progress, _) = watch::channel(Progress { revision, failed: false });
        let feed = Arc::new(Feed { store, config, progress, caches: Mutex::default() });
        let task = tokio::spawn(Arc::clone(&feed).run(stream)).abort_handle();
        Ok((feed, task))
    }

    /// Whether the store watch has failed.
    pub(super) fn failed(&self) -> bool {
        self.progress.borrow().failed
    }

    /// The revision every resource cache has been brought up to.
    pub(super) fn revision(&self) -> Revision {
        self.progress.borrow().revision
    }

    /// Waits, up to the freshness timeout, until every event up to `target` has been applied.
    /// `Ok(false)` means the time ran out.
    pub(super) async fn reached(&self, target: Revision) -> Result<bool, CacheError> {
        let mut progress = self.progress.subscribe();
        let waited = tokio::time::timeout(
            self.config.freshness_timeout,
            progress.wait_for(|p| p.failed || p.revision >= target),
        )
        .await;
        match waited {
            Ok(Ok(progress)) if !progress.failed => Ok(true),
            Ok(_) => Err(CacheError::NotCached(Uncached::Unavailable)),
            Err(_elapsed) => Ok(false),
        }
    }

    /// The ready cache of `resource`, registering and loading it on first use. A cache that
    /// does not finish loading within the freshness timeout keeps loading in the background
    /// while the caller is sent to the store.
    pub(super) async fn cache(self: &Arc<Self>, resource: &str) -> Result<Arc<ResourceCache>, CacheError> {
        if resource.is_empty() || resource.contains('/') {
            return Err(CacheError::NotCached(Uncached::Unavailable));
        }
        let cache = {
            let mut caches = lock(&self.caches);
            // Checked under the lock `fail` takes to close the caches, so no cache is
            // registered with a feed that will never feed it.
            if self.failed() {
                return Err(CacheError::NotCached(Uncached::Unavailable));
            }
            if let Some(cache) = caches.get(resource) {
                Arc::clone(cache)
            } else {
                let start = self.revision();
                let cache = Arc::new(ResourceCache::new(resource, start, &self.config));
                caches.insert(resource.to_string(), Arc::clone(&cache));
                tokio::spawn(Arc::clone(self).load(Arc::clone(&cache), start));
                cache
            }
        };
        let mut status = cache.status();
        let loaded =
            tokio::time::timeout(self.config.freshness_timeout, status.wait_for(|s| *s != Status::Loading)).await;
        match loaded {
            Ok(Ok(status)) if *status == Status::Ready => Ok(cache),
            _ => Err(CacheError::NotCached(Uncached::Unavailable)),
        }
    }

    /// How many watchers all resource caches serve.
    pub(super) fn watcher_count(&self) -> usize {
        lock(&self.caches).values().map(|cache| cache.watcher_count()).sum()
    }

    /// Reads a new cache's objects at its start revision. Decoding runs on the blocking pool
    /// because a large resource takes long enough to stall other tasks.
    async fn load(self: Arc<Self>, cache: Arc<ResourceCache>, start: Revision) {
        let request = RangeRequest::new(KeyRange::prefix(cache.prefix().to_vec())).at(start);
        let response = match self.store.range(request).await {
            Ok(response) => response,
            Err(error) => return self.abandon(&cache, &error),
        };
        match tokio::task::spawn_blocking(move || decode_all(response.kvs)).await {
            Ok(objects) => cache.finish_load(objects),
            Err(error) => self.abandon(&cache, &error),
        }
    }

    /// Forgets a cache that could not load, so the next request for it tries again.
    fn abandon(&self, cache: &Arc<ResourceCache>, error: &dyn Display) {
        tracing::warn!(resource = cache.resource(), %error, "cannot load the watch cache; reading the store instead");
        let mut caches = lock(&self.caches);
        if caches.get(cache.resource()).is_some_and(|registered| Arc::ptr_eq(registered, cache)) {
            caches.remove(cache.resource());
        }
        drop(caches);
        cache.close();
    }

    async fn run(self: Arc<Self>, mut stream: WatchStream) {
        let _fail_on_exit = FailOnDrop(Arc::clone(&self));
        let error = loop {
            match stream.next().await {
                Some(Ok(event)) => self.dispatch(event),
                Some(Err(error)) => break error,
                None => break StoreError::Closed,
            }
        };
        tracing::warn!(%error, "the watch cache's store watch ended; caches restart on their next use");
    }

    fn dispatch(&self, event: Event) {
        let revision = event.revision();
        let cache = {
            let caches = lock(&self.caches);
            let cache = resource_of(&event.kv.key).and_then(|resource| caches.get(resource)).map(Arc::clone);
            if cache.is_none() {
                self.advance(revision);
            }
            cache
        };
        if let Some(cache) = cache {
            cache.apply(event, || self.advance(revision));
        }
    }

    fn advance(&self, revision: Revision) {
        self.progress.send_if_modified(|progress| {
            let newer = revision > progress.revision;
            if newer {
                progress.revision = revision;
            }
            newer
        });
    }

    /// Marks the feed failed, wakes everyone waiting on it, and closes every cache so their
    /// watchers' streams end.
    fn fail(&self) {
        self.progress.send_modify(|progress| progress.failed = true);
        let caches: Vec<_> = lock(&self.caches).drain().map(|(_, cache)| cache).collect();
        for cache in caches {
            cache.close();
        }
    }
}

/// Fails the feed however its task ends — the store watch failing, a panic, or an abort when the
/// [`super::WatchCache`] is dropped — so no request waits on it and every watcher's stream ends.
struct FailOnDrop(Arc<Feed>);

impl Drop for FailOnDrop {
    fn drop(&mut self) {
        self.0.fail();
    }
}

/// The storage resource a store key belongs to: its first path segment, when the key has more.
fn resource_of(key: &[u8]) -> Option<&str> {
    let rest = key.strip_prefix(b"/")?;
    let end = rest.iter().position(|byte| *byte == b'/')?;
    std::str::from_utf8(&rest[..end]).ok()
}

#[cfg(test)]
mod tests {
    use super::resource_of;

    #[test]
    fn resource_of_takes_the_first_segment_of_object_keys_only() {
        let cases: &[(&[u8], Option<&str>)] = &[
            (b"/pods/default/web", Some("pods")),
            (b"/namespaces/default", Some("namespaces")),
            (b"/compact_rev_key", None),
            (b"pods/default/web", None),
            (b"", None),
        ];
        for (key, want) in cases {
            assert_eq!(resource_of(key), *want, "key {key:?}");
        }
    }
}
