//! The store contract, run unchanged against every backend: the embedded SQLite store and a
//! real etcd member.

#![allow(clippy::expect_used, reason = "a test aborts on a failed expectation")]

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use capstan_store::{
    Compactor, Compare, Event, EventKind, KeyRange, RangeRequest, Revision, Store, StoreError, Txn, TxnOp, TxnOpResult,
    WatchRequest,
};
use futures::StreamExt;
use support::Fixture;

/// Generates one test per (backend, case). Cases that compact or assert exact revisions get an
/// etcd member of their own; the others share one under per-test key prefixes.
macro_rules! conformance {
    (shared: [$($shared:ident),* $(,)?], private: [$($private:ident),* $(,)?]) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $shared() { super::$shared(super::Fixture::embedded().store).await }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $private() { super::$private(super::Fixture::embedded().store).await }
            )*
        }
        mod etcd {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $shared() { super::$shared(super::Fixture::etcd_shared().await.store).await }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $private() {
                    let fixture = super::Fixture::etcd_private().await;
                    super::$private(fixture.store.clone()).await
                }
            )*
        }
    };
}

conformance! {
    shared: [
        delete_returns_the_old_value_and_resets_the_key,
        range_by_prefix_honours_limit_and_count,
        large_ranges_are_read_whole,
        range_at_an_old_revision_sees_the_past,
        range_at_a_future_revision_is_refused,
        txn_compares_choose_the_branch,
        txn_writes_share_one_revision,
        txn_writing_a_key_twice_is_refused,
        create_refuses_an_existing_key,
        eight_writers_compare_and_swap_to_the_exact_count,
        watch_sees_every_change_after_r_once_in_order,
        watch_reports_previous_values_and_deletes,
        watch_delivers_a_txn_as_consecutive_events,
        watch_stops_at_its_range,
    ],
    private: [
        writes_advance_the_revision_and_track_versions,
        deleting_a_missing_key_changes_nothing,
        txn_without_writes_keeps_the_revision,
        compaction_keeps_the_latest_values,
        watch_from_a_compacted_revision_fails,
        compactor_compacts_to_the_previous_round,
    ]
}

async fn put(store: &dyn Store, key: &str, value: &str) -> Revision {
    store.put(key.as_bytes(), value.as_bytes()).await.expect("put").0
}

fn keys(kvs: &[capstan_store::KeyValue]) -> Vec<String> {
    kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

async fn writes_advance_the_revision_and_track_versions(store: Arc<dyn Store>) {
    let start = store.current_revision().await.expect("revision");
    let r1 = put(&*store, "/pods/default/a", "one").await;
    let (r2, prev) = store.put(b"/pods/default/a", b"two").await.expect("put");
    let r3 = put(&*store, "/pods/default/b", "three").await;
    assert!(start < r1 && r1 < r2 && r2 < r3, "revisions must strictly increase: {start} {r1} {r2} {r3}");
    let prev = prev.expect("second put reports the first value");
    assert_eq!((prev.value.as_slice(), prev.mod_revision, prev.version), (&b"one"[..], r1, 1));
    let a = store.get(b"/pods/default/a").await.expect("get").expect("a exists");
    assert_eq!(a.value, b"two");
    assert_eq!((a.create_revision, a.mod_revision, a.version), (r1, r2, 2));
    assert_eq!(store.current_revision().await.expect("revision"), r3);
}

async fn delete_returns_the_old_value_and_resets_the_key(store: Arc<dyn Store>) {
    let r1 = put(&*store, "/k", "v1").await;
    put(&*store, "/k", "v2").await;
    let (deleted_at, prev) = store.delete(b"/k").await.expect("delete");
    let prev = prev.expect("delete reports the old value");
    assert_eq!((prev.value.as_slice(), prev.version, prev.create_revision), (&b"v2"[..], 2, r1));
    assert!(store.get(b"/k").await.expect("get").is_none());
    let recreated = put(&*store, "/k", "v3").await;
    assert!(recreated > deleted_at);
    let kv = store.get(b"/k").await.expect("get").expect("recreated");
    assert_eq!((kv.version, kv.create_revision), (1, recreated), "a recreated key starts over");
}

async fn deleting_a_missing_key_changes_nothing(store: Arc<dyn Store>) {
    let before = put(&*store, "/present", "x").await;
    let (revision, prev) = store.delete(b"/absent").await.expect("delete");
    assert!(prev.is_none());
    assert_eq!(revision, before, "a delete that deletes nothing does not advance the revision");
}

async fn range_by_prefix_honours_limit_and_count(store: Arc<dyn Store>) {
    for key in ["/pods/ns/c", "/pods/ns/a", "/pods/ns/b", "/pods/ns0/x", "/pods/nsa", "/pods/n"] {
        put(&*store, key, "v").await;
    }
    let all = store.range(RangeRequest::new(KeyRange::prefix("/pods/ns/"))).await.expect("range");
    assert_eq!(keys(&all.kvs), ["/pods/ns/a", "/pods/ns/b", "/pods/ns/c"]);
    assert_eq!((all.count, all.more), (3, false));
    let page = store.range(RangeRequest::new(KeyRange::prefix("/pods/ns/")).limit(2)).await.expect("range");
    assert_eq!(keys(&page.kvs), ["/pods/ns/a", "/pods/ns/b"]);
    assert_eq!((page.count, page.more), (3, true));
    let rest = store
        .range(RangeRequest::new(KeyRange::prefix_from(b"/pods/ns/", "/pods/ns/b\0")).limit(2))
        .await
        .expect("range");
    assert_eq!(keys(&rest.kvs), ["/pods/ns/c"]);
    let counted = store.range(RangeRequest::new(KeyRange::prefix("/pods/")).count_only()).await.expect("range");
    assert_eq!((counted.count, counted.kvs.len()), (6, 0));
    let one = store.range(RangeRequest::new(KeyRange::key("/pods/ns"))).await.expect("range");
    assert_eq!(one.count, 0, "a single-key read does not match keys it prefixes");
}

async fn large_ranges_are_read_whole(store: Arc<dyn Store>) {
    // More keys than one etcd response may carry by default (4 MiB).
    let value = vec![b'x'; 5000];
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = Arc::clone(&store);
            let value = value.clone();
            tokio::spawn(async move {
                for i in 0..150 {
                    store.put(format!("/big/{w}-{i:03}").as_bytes(), &value).await.expect("put");
                }
            })
        })
        .collect();
    for writer in writers {
        writer.await.expect("writer");
    }
    let all = store.range(RangeRequest::new(KeyRange::prefix("/big/"))).await.expect("range");
    assert_eq!((all.kvs.len(), all.count, all.more), (1200, 1200, false));
    assert!(all.kvs.windows(2).all(|p| p[0].key < p[1].key), "keys in order, none twice");
    let some = store.range(RangeRequest::new(KeyRange::prefix("/big/")).limit(700)).await.expect("range");
    assert_eq!((some.kvs.len(), some.count, some.more), (700, 1200, true));
}

async fn range_at_an_old_revision_sees_the_past(store: Arc<dyn Store>) {
    let r1 = put(&*store, "/h/a", "a1").await;
    put(&*store, "/h/b", "b1").await;
    let r3 = put(&*store, "/h/a", "a2").await;
    store.delete(b"/h/b").await.expect("delete");
    put(&*store, "/h/c", "c1").await;
    let at = |revision| store.range(RangeRequest::new(KeyRange::prefix("/h/")).at(revision));
    let past = at(r1).await.expect("range at r1");
    assert_eq!(keys(&past.kvs), ["/h/a"]);
    assert_eq!(past.kvs[0].value, b"a1");
    let mid = at(r3).await.expect("range at r3");
    assert_eq!(keys(&mid.kvs), ["/h/a", "/h/b"]);
    assert_eq!((mid.kvs[0].value.as_slice(), mid.kvs[0].version), (&b"a2"[..], 2));
    let limited = store.range(RangeRequest::new(KeyRange::prefix("/h/")).at(r3).limit(1)).await.expect("range");
    assert_eq!((keys(&limited.kvs), limited.count, limited.more), (vec!["/h/a".to_string()], 2, true));
    let now = store.range(RangeRequest::new(KeyRange::prefix("/h/"))).await.expect("range");
    assert_eq!(keys(&now.kvs), ["/h/a", "/h/c"]);
}

async fn range_at_a_future_revision_is_refused(store: Arc<dyn Store>) {
    let current = put(&*store, "/f", "v").await;
    let future = Revision(current.0 + 1000);
    let result = store.range(RangeRequest::new(KeyRange::key("/f")).at(future)).await;
    assert!(matches!(result, Err(StoreError::FutureRevision { requested, .. }) if requested == future), "{result:?}");
}

async fn txn_compares_choose_the_branch(store: Arc<dyn Store>) {
    let written = put(&*store, "/cas", "v1").await;
    let stale = Revision(written.0 - 1);
    let conflict = store.compare_and_put(b"/cas", stale, b"lost").await.expect("txn");
    let current = conflict.expect_err("a stale revision must not win").expect("key exists");
    assert_eq!((current.value.as_slice(), current.mod_revision), (&b"v1"[..], written));
    let won = store.compare_and_put(b"/cas", written, b"v2").await.expect("txn").expect("matching revision wins");
    assert!(won > written);
    let gone = store.compare_and_delete(b"/cas", written).await.expect("txn");
    assert!(gone.is_err(), "deleting at an old revision is refused");
    store.compare_and_delete(b"/cas", won).await.expect("txn").expect("deleting at the current revision works");
    assert!(store.get(b"/cas").await.expect("get").is_none());
}

async fn txn_writes_share_one_revision(store: Arc<dyn Store>) {
    put(&*store, "/t/old", "x").await;
    let response = store
        .txn(Txn {
            compares: vec![Compare::exists("/t/old"), Compare::missing("/t/new")],
            success: vec![
                TxnOp::Put { key: b"/t/new".to_vec(), value: b"n".to_vec() },
                TxnOp::Delete(b"/t/old".to_vec()),
                TxnOp::Get(b"/t/new".to_vec()),
            ],
            failure: vec![],
        })
        .await
        .expect("txn");
    assert!(response.succeeded);
    let new = store.get(b"/t/new").await.expect("get").expect("written");
    assert_eq!(new.mod_revision, response.revision);
    assert!(matches!(&response.results[1], TxnOpResult::Delete { prev: Some(kv) } if kv.value == b"x"));
    assert!(store.get(b"/t/old").await.expect("get").is_none());
}

async fn txn_writing_a_key_twice_is_refused(store: Arc<dyn Store>) {
    put(&*store, "/dup", "kept").await;
    let result = store
        .txn(Txn {
            success: vec![
                TxnOp::Put { key: b"/dup".to_vec(), value: b"a".to_vec() },
                TxnOp::Put { key: b"/dup".to_vec(), value: b"b".to_vec() },
            ],
            ..Txn::default()
        })
        .await;
    assert!(result.is_err(), "{result:?}");
    assert_eq!(store.get(b"/dup").await.expect("get").expect("still there").value, b"kept");
}

async fn txn_without_writes_keeps_the_revision(store: Arc<dyn Store>) {
    let before = put(&*store, "/r", "v").await;
    let response = store
        .txn(Txn {
            compares: vec![Compare::missing("/r")],
            success: vec![TxnOp::Put { key: b"/r".to_vec(), value: b"w".to_vec() }],
            failure: vec![TxnOp::Get(b"/r".to_vec())],
        })
        .await
        .expect("txn");
    assert!(!response.succeeded);
    assert_eq!(response.revision, before);
    assert!(matches!(&response.results[0], TxnOpResult::Get(Some(kv)) if kv.value == b"v"));
}

async fn create_refuses_an_existing_key(store: Arc<dyn Store>) {
    let created = store.create(b"/once", b"first").await.expect("create").expect("created");
    let existing = store.create(b"/once", b"second").await.expect("create").expect_err("already exists");
    assert_eq!((existing.value.as_slice(), existing.mod_revision), (&b"first"[..], created));
}

async fn eight_writers_compare_and_swap_to_the_exact_count(store: Arc<dyn Store>) {
    const WRITERS: u64 = 8;
    const INCREMENTS: u64 = 40;
    store.put(b"/counter", b"0").await.expect("put");
    let tasks: Vec<_> = (0..WRITERS)
        .map(|_| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                for _ in 0..INCREMENTS {
                    loop {
                        let kv = store.get(b"/counter").await.expect("get").expect("counter");
                        let n: u64 = String::from_utf8_lossy(&kv.value).parse().expect("number");
                        let next = (n + 1).to_string();
                        if store
                            .compare_and_put(b"/counter", kv.mod_revision, next.as_bytes())
                            .await
                            .expect("cas")
                            .is_ok()
                        {
                            break;
                        }
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("writer");
    }
    let kv = store.get(b"/counter").await.expect("get").expect("counter");
    assert_eq!(String::from_utf8_lossy(&kv.value), (WRITERS * INCREMENTS).to_string());
    assert_eq!(kv.version as u64, WRITERS * INCREMENTS + 1, "every successful swap is one version");
}

/// What a writer was told about one acknowledged change.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Change {
    revision: Revision,
    key: Vec<u8>,
    deleted: bool,
}

fn change(event: &Event) -> Change {
    Change { revision: event.revision(), key: event.kv.key.clone(), deleted: event.kind == EventKind::Delete }
}

/// Reads `count` events from a watch, failing on errors or if they do not arrive in time.
async fn collect(stream: &mut capstan_store::WatchStream, count: usize) -> Vec<Event> {
    let mut events = Vec::with_capacity(count);
    while events.len() < count {
        let next = tokio::time::timeout(std::time::Duration::from_mins(1), stream.next()).await;
        match next {
            Ok(Some(Ok(event))) => events.push(event),
            Ok(Some(Err(e))) => panic!("watch failed after {} events: {e}", events.len()),
            Ok(None) => panic!("watch ended after {} of {count} events", events.len()),
            Err(elapsed) => panic!("watch stalled after {} of {count} events: {elapsed}", events.len()),
        }
    }
    events
}

async fn watch_sees_every_change_after_r_once_in_order(store: Arc<dyn Store>) {
    const WRITERS: usize = 8;
    const WRITES_EACH: usize = 1250; // 10,000 writes in all
    for i in 0..50 {
        put(&*store, &format!("/w/before-{i}"), "x").await;
    }
    let r = store.current_revision().await.expect("revision");
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut acknowledged = Vec::with_capacity(WRITES_EACH);
                for i in 0..WRITES_EACH {
                    let key = format!("/w/{w}/{}", i % 50).into_bytes();
                    let (revision, deleted) = if i % 7 == 6 {
                        let (revision, prev) = store.delete(&key).await.expect("delete");
                        if prev.is_none() {
                            continue;
                        }
                        (revision, true)
                    } else {
                        (store.put(&key, format!("{i}").as_bytes()).await.expect("put").0, false)
                    };
                    acknowledged.push(Change { revision, key, deleted });
                }
                acknowledged
            })
        })
        .collect();
    // One watcher starts at R before the writes land; another starts at R midway through, so it
    // must stitch history and live events together.
    let mut early = store.watch(WatchRequest::after(KeyRange::prefix("/w/"), r)).await.expect("watch");
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut late = store.watch(WatchRequest::after(KeyRange::prefix("/w/"), r)).await.expect("watch");
    let mut expected = Vec::new();
    for writer in writers {
        expected.extend(writer.await.expect("writer"));
    }
    expected.sort();
    for stream in [&mut early, &mut late] {
        let events = collect(stream, expected.len()).await;
        let seen: Vec<Change> = events.iter().map(change).collect();
        assert!(
            seen.windows(2).all(|pair| pair[0].revision < pair[1].revision),
            "events must arrive in strictly increasing revision order"
        );
        assert_eq!(seen, expected, "the watch must report exactly the acknowledged writes after R");
        let extra = tokio::time::timeout(std::time::Duration::from_millis(300), stream.next()).await;
        assert!(extra.is_err(), "no event may arrive twice or from nowhere: {extra:?}");
    }
}

async fn watch_reports_previous_values_and_deletes(store: Arc<dyn Store>) {
    let r0 = put(&*store, "/p/a", "one").await;
    let mut watch = store.watch(WatchRequest::after(KeyRange::prefix("/p/"), r0)).await.expect("watch");
    let r1 = put(&*store, "/p/a", "two").await;
    let (r2, _) = store.delete(b"/p/a").await.expect("delete");
    let events = collect(&mut watch, 2).await;
    assert_eq!(events[0].kind, EventKind::Put);
    assert_eq!((events[0].kv.value.as_slice(), events[0].kv.mod_revision, events[0].kv.version), (&b"two"[..], r1, 2));
    assert_eq!(events[0].prev.as_ref().map(|p| p.value.as_slice()), Some(&b"one"[..]));
    assert_eq!(events[1].kind, EventKind::Delete);
    assert_eq!((events[1].kv.key.as_slice(), events[1].kv.mod_revision), (&b"/p/a"[..], r2));
    let prev = events[1].prev.as_ref().expect("a delete carries the deleted value");
    assert_eq!((prev.value.as_slice(), prev.mod_revision), (&b"two"[..], r1));
}

async fn watch_delivers_a_txn_as_consecutive_events(store: Arc<dyn Store>) {
    let r0 = put(&*store, "/x/1", "a").await;
    let mut watch = store.watch(WatchRequest::after(KeyRange::prefix("/x/"), r0)).await.expect("watch");
    let response = store
        .txn(Txn {
            success: vec![
                TxnOp::Put { key: b"/x/2".to_vec(), value: b"b".to_vec() },
                TxnOp::Delete(b"/x/1".to_vec()),
                TxnOp::Put { key: b"/x/3".to_vec(), value: b"c".to_vec() },
            ],
            ..Txn::default()
        })
        .await
        .expect("txn");
    let events = collect(&mut watch, 3).await;
    let seen: Vec<(String, bool, Revision)> = events
        .iter()
        .map(|e| (String::from_utf8_lossy(&e.kv.key).into_owned(), e.kind == EventKind::Delete, e.revision()))
        .collect();
    let r = response.revision;
    assert_eq!(seen, [("/x/2".into(), false, r), ("/x/1".into(), true, r), ("/x/3".into(), false, r)]);
}

async fn watch_stops_at_its_range(store: Arc<dyn Store>) {
    let r0 = put(&*store, "/scope", "outside").await;
    let mut watch = store.watch(WatchRequest::after(KeyRange::key("/scope/in"), r0)).await.expect("watch");
    put(&*store, "/scope/other", "x").await;
    put(&*store, "/scope/in0", "x").await;
    let inside = put(&*store, "/scope/in", "y").await;
    let events = collect(&mut watch, 1).await;
    assert_eq!((events[0].kv.key.as_slice(), events[0].revision()), (&b"/scope/in"[..], inside));
}

async fn compaction_keeps_the_latest_values(store: Arc<dyn Store>) {
    let mut history = BTreeMap::new();
    for i in 0..5 {
        history.insert(put(&*store, "/c/a", &format!("a{i}")).await, i);
    }
    put(&*store, "/c/gone", "x").await;
    store.delete(b"/c/gone").await.expect("delete");
    let c = put(&*store, "/c/b", "b0").await;
    let after = put(&*store, "/c/a", "a5").await;
    store.compact(c).await.expect("compact");

    let before_c = Revision(c.0 - 1);
    let refused = store.range(RangeRequest::new(KeyRange::prefix("/c/")).at(before_c)).await;
    assert!(matches!(refused, Err(StoreError::Compacted { requested, .. }) if requested == before_c), "{refused:?}");
    let at_c = store.range(RangeRequest::new(KeyRange::prefix("/c/")).at(c)).await.expect("range at c");
    assert_eq!(keys(&at_c.kvs), ["/c/a", "/c/b"]);
    assert_eq!(at_c.kvs[0].value, b"a4", "the value current at the compaction point survives");
    let now = store.get(b"/c/a").await.expect("get").expect("a");
    assert_eq!((now.value.as_slice(), now.mod_revision, now.version), (&b"a5"[..], after, 6));

    let mut watch = store.watch(WatchRequest::after(KeyRange::prefix("/c/"), before_c)).await.expect("watch");
    let events = collect(&mut watch, 2).await;
    assert_eq!(events.iter().map(Event::revision).collect::<Vec<_>>(), [c, after]);
    assert_eq!(events[1].prev.as_ref().map(|p| p.value.as_slice()), Some(&b"a4"[..]), "previous values survive");

    let again = store.compact(c).await;
    assert!(matches!(again, Err(StoreError::Compacted { .. })), "{again:?}");
    let future = store.compact(Revision(after.0 + 100)).await;
    assert!(matches!(future, Err(StoreError::FutureRevision { .. })), "{future:?}");
}

async fn watch_from_a_compacted_revision_fails(store: Arc<dyn Store>) {
    let old = put(&*store, "/z/a", "1").await;
    put(&*store, "/z/a", "2").await;
    let c = put(&*store, "/z/a", "3").await;
    store.compact(c).await.expect("compact");
    let mut watch = store.watch(WatchRequest::after(KeyRange::prefix("/z/"), old)).await.expect("watch");
    let first = tokio::time::timeout(std::time::Duration::from_secs(10), watch.next()).await.expect("an answer");
    assert!(
        matches!(first, Some(Err(StoreError::Compacted { requested, .. })) if requested == old.next()),
        "expected the compaction error, got {first:?}"
    );
}

async fn compactor_compacts_to_the_previous_round(store: Arc<dyn Store>) {
    let mut compactor = Compactor::new(Arc::clone(&store));
    let first = put(&*store, "/k/a", "1").await;
    assert_eq!(compactor.round().await.expect("round"), None, "the first round only records a revision");
    put(&*store, "/k/a", "2").await;
    let compacted = compactor.round().await.expect("round").expect("the second round compacts");
    assert!(compacted > first, "compacted to the revision of the first round");
    let refused = store.range(RangeRequest::new(KeyRange::key("/k/a")).at(first)).await;
    assert!(matches!(refused, Err(StoreError::Compacted { .. })), "{refused:?}");

    // A second server sharing the store loses the race for this round and does not compact.
    let mut other = Compactor::new(Arc::clone(&store));
    assert_eq!(other.round().await.expect("round"), None);
}
