//! The cache against the real embedded store.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use capstan_store::{
    EmbeddedStore, RangeRequest, RangeResponse, Revision, Store, StoreError, Txn, TxnResponse, WatchRequest,
    WatchStream,
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio::sync::oneshot;

/// A boxed store future, as `async_trait` spells them.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn Future<Output = capstan_store::Result<T>> + Send + 'a>>;

use super::{CacheConfig, CacheError, CacheEvent, CacheEventKind, CacheWatch, ListRv, Uncached, WatchCache};

/// The embedded store, counting watches and able to break the ones it opened.
struct CountingStore {
    inner: EmbeddedStore,
    watches: AtomicUsize,
    breakers: Mutex<Vec<oneshot::Sender<()>>>,
}

impl CountingStore {
    fn open(dir: &tempfile::TempDir) -> Arc<Self> {
        let inner = EmbeddedStore::open(dir.path().join("db")).unwrap();
        Arc::new(CountingStore { inner, watches: AtomicUsize::new(0), breakers: Mutex::new(Vec::new()) })
    }

    fn watches(&self) -> usize {
        self.watches.load(Ordering::SeqCst)
    }

    /// Ends every open watch with a compaction error, as when a watcher fell behind.
    fn break_watches(&self) {
        for breaker in self.breakers.lock().unwrap().drain(..) {
            let _ = breaker.send(());
        }
    }
}

// The trait is declared through `async_trait`, which this crate does not depend on; these are
// the signatures it expands to.
impl Store for CountingStore {
    fn range<'life0, 'async_trait>(&'life0 self, request: RangeRequest) -> BoxFuture<'async_trait, RangeResponse>
    where
        'life0: 'async_trait,
    {
        Box::pin(self.inner.range(request))
    }

    fn txn<'life0, 'async_trait>(&'life0 self, txn: Txn) -> BoxFuture<'async_trait, TxnResponse>
    where
        'life0: 'async_trait,
    {
        Box::pin(self.inner.txn(txn))
    }

    fn watch<'life0, 'async_trait>(&'life0 self, request: WatchRequest) -> BoxFuture<'async_trait, WatchStream>
    where
        'life0: 'async_trait,
    {
        Box::pin(async move {
            self.watches.fetch_add(1, Ordering::SeqCst);
            let requested = request.start_revision.unwrap_or_default();
            let (breaker, broken) = oneshot::channel();
            self.breakers.lock().unwrap().push(breaker);
            let failure =
                futures::stream::once(async move { Err(StoreError::Compacted { requested, compacted: None }) });
            let stream: WatchStream = Box::pin(self.inner.watch(request).await?.take_until(broken).chain(failure));
            Ok(stream)
        })
    }

    fn compact<'life0, 'async_trait>(&'life0 self, revision: Revision) -> BoxFuture<'async_trait, ()>
    where
        'life0: 'async_trait,
    {
        Box::pin(self.inner.compact(revision))
    }

    fn describe(&self) -> String {
        "counting".into()
    }
}

fn object(namespace: &str, name: &str, data: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"metadata": {"namespace": namespace, "name": name}, "data": data})).unwrap()
}

fn key(resource: &str, namespace: &str, name: &str) -> Vec<u8> {
    format!("/{resource}/{namespace}/{name}").into_bytes()
}

fn names(items: &[Arc<Value>]) -> Vec<String> {
    items.iter().map(|item| item["metadata"]["name"].as_str().unwrap().to_string()).collect()
}

fn resource_version(object: &Value) -> &str {
    object["metadata"]["resourceVersion"].as_str().unwrap()
}

async fn next(watch: &mut CacheWatch) -> Option<CacheEvent> {
    tokio::time::timeout(Duration::from_secs(10), watch.next()).await.expect("the watch stalled")
}

/// Takes `count` events, failing if the stream ends or stalls first.
async fn take(watch: &mut CacheWatch, count: usize) -> Vec<CacheEvent> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        events.push(next(watch).await.expect("the watch ended early"));
    }
    events
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_list_sees_a_write_made_just_before_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let cache = WatchCache::new(store.clone());
    assert!(cache.list("pods", None, ListRv::Latest).await.unwrap().items.is_empty());

    let (written, _) = store.put(&key("pods", "default", "web"), &object("default", "web", "v1")).await.unwrap();
    let listed = cache.list("pods", None, ListRv::Latest).await.unwrap();
    assert_eq!(names(&listed.items), ["web"]);
    assert_eq!(resource_version(&listed.items[0]), written.to_string());
    assert!(listed.revision >= written);
}

#[tokio::test(flavor = "multi_thread")]
async fn consistent_list_is_not_held_up_by_writes_to_other_keys() {
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let config = CacheConfig { freshness_timeout: Duration::from_secs(10), ..CacheConfig::default() };
    let cache = WatchCache::with_config(store.clone(), config);
    store.put(&key("pods", "default", "web"), &object("default", "web", "v1")).await.unwrap();
    cache.list("pods", None, ListRv::Latest).await.unwrap();

    // The newest revisions belong to another resource and to a key of no resource at all.
    store.put(&key("configmaps", "default", "settings"), &object("default", "settings", "v1")).await.unwrap();
    let (last, _) = store.put(b"/compact_rev_key", b"x").await.unwrap();
    let started = Instant::now();
    let listed = cache.list("pods", None, ListRv::Latest).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2), "waited {:?}", started.elapsed());
    assert_eq!(listed.revision, last);
    assert_eq!(names(&listed.items), ["web"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_watcher_gets_each_later_event_once_in_order_from_one_store_watch() {
    const WATCHERS: usize = 100;
    const WRITERS: usize = 10;
    const WRITES_PER_WRITER: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let cache = Arc::new(WatchCache::new(store.clone()));
    store.put(&key("pods", "default", "before"), &object("default", "before", "v1")).await.unwrap();
    let from = cache.list("pods", None, ListRv::Latest).await.unwrap().revision;

    let mut collectors = Vec::new();
    for _ in 0..WATCHERS {
        let mut watch = cache.watch("pods", None, from).await.unwrap();
        collectors.push(tokio::spawn(async move {
            let events = take(&mut watch, WRITERS * WRITES_PER_WRITER).await;
            events.into_iter().map(|e| (e.revision, e.kind, e.key().to_vec())).collect::<Vec<_>>()
        }));
    }
    assert_eq!(cache.watcher_count(), WATCHERS);

    // Writers on disjoint keys: creates, updates and deletes, plus writes to another resource
    // that no pod watcher may see.
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            let mut expected = Vec::new();
            for i in 0..WRITES_PER_WRITER {
                let name = format!("w{writer}-{}", i % 7);
                let key = key("pods", &format!("ns{}", i % 3), &name);
                if i % 5 == 4 {
                    let (revision, prev) = store.delete(&key).await.unwrap();
                    if prev.is_some() {
                        expected.push((revision, CacheEventKind::Deleted, key));
                        continue;
                    }
                }
                let (revision, prev) = store.put(&key, &object("ns", &name, &i.to_string())).await.unwrap();
                let kind = if prev.is_some() { CacheEventKind::Modified } else { CacheEventKind::Added };
                expected.push((revision, kind, key));
                store.put(&format!("/configmaps/ns/{writer}").into_bytes(), &object("ns", "c", "x")).await.unwrap();
            }
            expected
        }));
    }
    let mut expected = Vec::new();
    for writer in writers {
        expected.extend(writer.await.unwrap());
    }
    expected.sort_by_key(|(revision, _, _)| *revision);
    assert_eq!(expected.len(), WRITERS * WRITES_PER_WRITER);

    for collector in collectors {
        assert_eq!(collector.await.unwrap(), expected);
    }
    assert_eq!(store.watches(), 1, "the store served one watch for all watchers");
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_limits_lists_and_watches() {
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let cache = WatchCache::new(store.clone());
    let from = cache.list("pods", None, ListRv::Latest).await.unwrap().revision;
    let mut in_a = cache.watch("pods", Some("a"), from).await.unwrap();
    // "a-b" shares a prefix with "a" as text but is another namespace.
    for (namespace, name) in [("a", "one"), ("a-b", "two"), ("b", "three"), ("a", "four")] {
        store.put(&key("pods", namespace, name), &object(namespace, name, "v1")).await.unwrap();
    }
    let listed = cache.list("pods", Some("a"), ListRv::Latest).await.unwrap();
    assert_eq!(names(&listed.items), ["four", "one"]);
    let all = cache.list("pods", None, ListRv::Latest).await.unwrap();
    // Store-key order, as the store lists: "/pods/a-b/" sorts before "/pods/a/".
    assert_eq!(names(&all.items), ["two", "four", "one", "three"]);

    let events = take(&mut in_a, 2).await;
    let watched: Vec<_> = events.iter().map(|e| e.object["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(watched, ["one", "four"]);
    // A watcher on "a" that starts later replays the same two events from the history.
    let mut replay = cache.watch("pods", Some("a"), from).await.unwrap();
    assert_eq!(
        take(&mut replay, 2).await.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [events[0].revision, events[1].revision]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_from_before_the_history_is_too_old() {
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let cache = WatchCache::with_config(store.clone(), CacheConfig { history: 5, ..CacheConfig::default() });
    let start = cache.list("pods", None, ListRv::Latest).await.unwrap().revision;
    let mut revisions = Vec::new();
    for i in 0..10 {
        let name = format!("p{i}");
        revisions.push(store.put(&key("pods", "default", &name), &object("default", &name, "v1")).await.unwrap().0);
    }
    cache.list("pods", None, ListRv::Latest).await.unwrap();

    // The history holds the last five events, so a watch may start after the sixth-newest.
    let horizon = revisions[4];
    let mut watch = cache.watch("pods", None, horizon).await.unwrap();
    assert_eq!(take(&mut watch, 5).await.iter().map(|e| e.revision).collect::<Vec<_>>(), revisions[5..]);
    for too_old in [Revision(horizon.get() - 1), start, Revision(start.get() - 1)] {
        match cache.watch("pods", None, too_old).await {
            Err(CacheError::TooOld { requested, oldest }) => assert_eq!((requested, oldest), (too_old, horizon)),
            other => panic!("watch from {too_old}: expected too old, got {:?}", other.map(|_| ())),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn deletion_carries_the_last_state_at_the_deletion_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let cache = WatchCache::new(store.clone());
    let from = cache.list("pods", None, ListRv::Latest).await.unwrap().revision;
    let mut watch = cache.watch("pods", None, from).await.unwrap();
    let key = key("pods", "default", "web");
    let (created, _) = store.put(&key, &object("default", "web", "v1")).await.unwrap();
    let (updated, _) = store.put(&key, &object("default", "web", "v2")).await.unwrap();
    let (deleted, _) = store.delete(&key).await.unwrap();

    let events = take(&mut watch, 3).await;
    let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, ["ADDED", "MODIFIED", "DELETED"]);
    assert!(events[0].prev.is_none());
    assert_eq!(resource_version(events[1].prev.as_ref().unwrap()), created.to_string());
    let deletion = &events[2];
    assert_eq!(deletion.revision, deleted);
    assert_eq!(deletion.object["data"], "v2");
    assert_eq!(resource_version(&deletion.object), deleted.to_string());
    assert_eq!(resource_version(deletion.prev.as_ref().unwrap()), updated.to_string());
    assert!(cache.list("pods", None, ListRv::Latest).await.unwrap().items.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn slow_watcher_is_closed_while_others_keep_up() {
    const BUFFER: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let cache =
        WatchCache::with_config(store.clone(), CacheConfig { watcher_buffer: BUFFER, ..CacheConfig::default() });
    let from = cache.list("pods", None, ListRv::Latest).await.unwrap().revision;
    let mut slow = cache.watch("pods", None, from).await.unwrap();
    let mut fast = cache.watch("pods", None, from).await.unwrap();
    let (seen_sender, mut seen) = tokio::sync::mpsc::unbounded_channel();
    let fast_task = tokio::spawn(async move {
        while let Some(event) = fast.next().await {
            if seen_sender.send(event.revision).is_err() {
                return;
            }
        }
    });

    let mut revisions = Vec::new();
    for i in 0..20 {
        let name = format!("p{i}");
        let (revision, _) = store.put(&key("pods", "default", &name), &object("default", &name, "v1")).await.unwrap();
        revisions.push(revision);
        // Lock step with the fast watcher, so only the slow one ever falls behind.
        let got = tokio::time::timeout(Duration::from_secs(10), seen.recv()).await.unwrap().unwrap();
        assert_eq!(got, revision);
    }
    assert_eq!(cache.watcher_count(), 1, "the slow watcher was dropped");

    let mut slow_got = Vec::new();
    while let Some(event) = next(&mut slow).await {
        slow_got.push(event.revision);
    }
    assert_eq!(slow_got, revisions[..BUFFER], "the slow watcher gets what it had buffered, then its stream ends");
    fast_task.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn exact_list_is_served_only_at_the_cache_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let cache = WatchCache::new(store.clone());
    let (first, _) = store.put(&key("pods", "default", "web"), &object("default", "web", "v1")).await.unwrap();
    let (second, _) = store.put(&key("pods", "default", "db"), &object("default", "db", "v1")).await.unwrap();
    let current = cache.list("pods", None, ListRv::Latest).await.unwrap().revision;
    assert_eq!(current, second);
    assert_eq!(cache.list("pods", None, ListRv::Exact(second)).await.unwrap().items.len(), 2);
    assert!(matches!(
        cache.list("pods", None, ListRv::Exact(first)).await,
        Err(CacheError::NotCached(Uncached::ExactRevision))
    ));
    assert_eq!(cache.list("pods", None, ListRv::NotOlderThan(first)).await.unwrap().revision, second);
    assert_eq!(cache.list("pods", None, ListRv::Any).await.unwrap().items.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn revision_beyond_the_store_is_too_large() {
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let config = CacheConfig { freshness_timeout: Duration::from_millis(200), ..CacheConfig::default() };
    let cache = WatchCache::with_config(store.clone(), config);
    let current = cache.list("pods", None, ListRv::Latest).await.unwrap().revision;
    let future = Revision(current.get() + 100);
    assert!(matches!(
        cache.list("pods", None, ListRv::NotOlderThan(future)).await,
        Err(CacheError::TooLarge { requested, current: at }) if requested == future && at == current
    ));
    assert!(matches!(cache.watch("pods", None, future).await, Err(CacheError::TooLarge { .. })));
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_store_watch_ends_watchers_and_the_cache_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let cache = WatchCache::new(store.clone());
    store.put(&key("pods", "default", "web"), &object("default", "web", "v1")).await.unwrap();
    let from = cache.list("pods", None, ListRv::Latest).await.unwrap().revision;
    let mut watch = cache.watch("pods", None, from).await.unwrap();

    store.break_watches();
    assert!(next(&mut watch).await.is_none(), "the watcher's stream ends so its client re-lists");
    assert_eq!(cache.watcher_count(), 0);

    store.put(&key("pods", "default", "db"), &object("default", "db", "v1")).await.unwrap();
    let listed = cache.list("pods", None, ListRv::Latest).await.unwrap();
    assert_eq!(names(&listed.items), ["db", "web"]);
    assert_eq!(store.watches(), 2, "one store watch per feed");
    // The restarted cache holds no history from before it started.
    assert!(matches!(cache.watch("pods", None, from).await, Err(CacheError::TooOld { .. })));
    assert!(cache.watch("pods", None, listed.revision).await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn resources_share_one_store_watch_and_load_lazily() {
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let cache = WatchCache::new(store.clone());
    store.put(&key("configmaps", "default", "settings"), &object("default", "settings", "v1")).await.unwrap();
    cache.list("pods", None, ListRv::Latest).await.unwrap();
    // Written after the feed started, before the configmaps cache existed: its initial read
    // must hold it, since the feed passed the event on to nobody.
    store.put(&key("configmaps", "default", "later"), &object("default", "later", "v1")).await.unwrap();
    let listed = cache.list("configmaps", None, ListRv::Latest).await.unwrap();
    assert_eq!(names(&listed.items), ["later", "settings"]);
    assert_eq!(store.watches(), 1);
    assert!(matches!(cache.list("", None, ListRv::Any).await, Err(CacheError::NotCached(Uncached::Unavailable))));
}

#[tokio::test(flavor = "multi_thread")]
async fn values_that_are_not_objects_are_left_out_and_the_feed_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let cache = WatchCache::new(store.clone());
    let bad = key("pods", "default", "bad");
    store.put(&bad, b"[1, 2]").await.unwrap();
    let from = cache.list("pods", None, ListRv::Latest).await.unwrap().revision;
    let mut watch = cache.watch("pods", None, from).await.unwrap();
    for value in [&b"42"[..], b"not json", b"\"text\""] {
        store.put(&key("pods", "default", "worse"), value).await.unwrap();
    }
    store.put(&key("pods", "default", "good"), &object("default", "good", "v1")).await.unwrap();
    store.put(&bad, &object("default", "bad", "fixed")).await.unwrap();

    let events = take(&mut watch, 2).await;
    let seen: Vec<_> = events.iter().map(|e| (e.kind, e.object["metadata"]["name"].as_str().unwrap())).collect();
    assert_eq!(seen, [(CacheEventKind::Added, "good"), (CacheEventKind::Added, "bad")]);
    assert_eq!(names(&cache.list("pods", None, ListRv::Latest).await.unwrap().items), ["bad", "good"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn dropping_the_cache_ends_its_watches() {
    let dir = tempfile::tempdir().unwrap();
    let store = CountingStore::open(&dir);
    let cache = WatchCache::new(store.clone());
    let from = cache.list("pods", None, ListRv::Latest).await.unwrap().revision;
    let mut watch = cache.watch("pods", None, from).await.unwrap();
    drop(cache);
    assert!(next(&mut watch).await.is_none());
}
