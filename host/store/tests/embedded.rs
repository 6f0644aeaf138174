//! What only the embedded backend promises: its file survives restarts, and a file that is not
//! a Capstan store is refused without being touched.

#![allow(clippy::expect_used, reason = "a test aborts on a failed expectation")]

use capstan_store::{EmbeddedStore, KeyRange, RangeRequest, Store, StoreError};

#[tokio::test]
async fn reopening_keeps_every_key_and_the_revision_counter() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    let last = {
        let store = EmbeddedStore::open(&path).expect("open");
        for i in 0..100 {
            store.put(format!("/k/{i:03}").as_bytes(), b"v").await.expect("put");
        }
        store.delete(b"/k/050").await.expect("delete").0
    };
    let store = EmbeddedStore::open(&path).expect("reopen");
    assert_eq!(store.current_revision().await.expect("revision"), last);
    let all = store.range(RangeRequest::new(KeyRange::prefix("/k/"))).await.expect("range");
    assert_eq!(all.count, 99);
    let (next, _) = store.put(b"/k/new", b"v").await.expect("put");
    assert_eq!(next, last.next(), "the revision counter continues where it stopped");
}

fn assert_refused(path: &std::path::Path, contents: &[u8], reason: &str) {
    std::fs::write(path, contents).expect("write file");
    let error = EmbeddedStore::open(path).err().expect("must refuse the file");
    let message = error.to_string();
    assert!(matches!(error, StoreError::Unusable { .. }), "{error:?}");
    assert!(message.contains(&path.display().to_string()), "the message names the file: {message}");
    assert!(message.contains(reason), "the message says why ({reason}): {message}");
    assert_eq!(std::fs::read(path).expect("read back"), contents, "a refused file is left untouched");
}

#[test]
fn a_file_that_is_not_a_database_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    assert_refused(&dir.path().join("store.db"), b"{\"this\": \"is not a database\"}\n", "not an SQLite database");
}

#[test]
fn a_corrupt_database_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut contents = b"SQLite format 3\0".to_vec();
    contents.extend(std::iter::repeat_n(0xA5u8, 8192));
    assert_refused(&dir.path().join("store.db"), &contents, "not a usable SQLite database");
}

#[test]
fn another_applications_database_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("create foreign db");
        conn.execute_batch(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL); INSERT INTO invoices VALUES (1, 9.5);",
        )
        .expect("fill foreign db");
    }
    let before = std::fs::read(&path).expect("read");
    let error = EmbeddedStore::open(&path).err().expect("must refuse the file");
    assert!(error.to_string().contains("not a Capstan store"), "{error}");
    let conn = rusqlite::Connection::open(&path).expect("reopen foreign db");
    let total: f64 = conn.query_row("SELECT total FROM invoices WHERE id = 1", [], |r| r.get(0)).expect("data kept");
    assert!((total - 9.5).abs() < f64::EPSILON);
    assert!(before.len() <= std::fs::read(&path).expect("read").len());
}

/// A store written by a build before format 2 (`kv` and `kv_log` stored `WITHOUT ROWID`): keys,
/// history and counters as that build wrote them after put /a, put /b, put /a, delete /b.
fn write_format_1_store(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).expect("create");
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE capstan_meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE kv (key BLOB PRIMARY KEY, value BLOB NOT NULL, create_revision INTEGER NOT NULL,
             mod_revision INTEGER NOT NULL, version INTEGER NOT NULL) WITHOUT ROWID;
         CREATE TABLE kv_log (revision INTEGER NOT NULL, sub INTEGER NOT NULL, key BLOB NOT NULL,
             deleted INTEGER NOT NULL, value BLOB NOT NULL, create_revision INTEGER NOT NULL,
             version INTEGER NOT NULL, prev_revision INTEGER NOT NULL, PRIMARY KEY (revision, sub)) WITHOUT ROWID;
         CREATE UNIQUE INDEX kv_log_by_key ON kv_log (key, revision);
         PRAGMA application_id = 1129337684;
         INSERT INTO capstan_meta VALUES ('format', 1), ('revision', 5), ('compact_revision', 0);
         INSERT INTO kv VALUES (CAST('/a' AS BLOB), CAST('a2' AS BLOB), 2, 4, 2);
         INSERT INTO kv_log VALUES
             (2, 0, CAST('/a' AS BLOB), 0, CAST('a1' AS BLOB), 2, 1, 0),
             (3, 0, CAST('/b' AS BLOB), 0, CAST('b1' AS BLOB), 3, 1, 0),
             (4, 0, CAST('/a' AS BLOB), 0, CAST('a2' AS BLOB), 2, 2, 2),
             (5, 0, CAST('/b' AS BLOB), 1, x'', 0, 0, 3);",
    )
    .expect("fill a format-1 store");
}

#[tokio::test]
async fn a_format_1_store_is_migrated_with_its_keys_history_and_revision() {
    use capstan_store::{Revision, WatchRequest};
    use futures::StreamExt;

    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("store.db");
    write_format_1_store(&path);
    {
        let store = EmbeddedStore::open(&path).expect("open a format-1 store");
        assert_eq!(store.current_revision().await.expect("revision"), Revision(5));
        let now = store.range(RangeRequest::new(KeyRange::prefix("/"))).await.expect("range");
        let now: Vec<_> = now.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone(), kv.mod_revision)).collect();
        assert_eq!(now, [(b"/a".to_vec(), b"a2".to_vec(), Revision(4))]);
        let then = store.range(RangeRequest::new(KeyRange::prefix("/")).at(Revision(3))).await.expect("range at 3");
        let then: Vec<_> = then.kvs.iter().map(|kv| (kv.key.clone(), kv.value.clone())).collect();
        assert_eq!(then, [(b"/a".to_vec(), b"a1".to_vec()), (b"/b".to_vec(), b"b1".to_vec())]);
        let mut watch = store.watch(WatchRequest::after(KeyRange::prefix("/"), Revision(3))).await.expect("watch");
        let first = watch.next().await.expect("an event").expect("event");
        assert_eq!((first.kv.key.as_slice(), first.prev.map(|kv| kv.value)), (&b"/a"[..], Some(b"a1".to_vec())));
        let second = watch.next().await.expect("an event").expect("event");
        assert_eq!(
            (second.kind, second.prev.map(|kv| kv.value)),
            (capstan_store::EventKind::Delete, Some(b"b1".to_vec()))
        );
        let (next, _) = store.put(b"/c", b"c1").await.expect("put");
        assert_eq!(next, Revision(6), "the revision counter continues where it stopped");
    }
    let conn = rusqlite::Connection::open(&path).expect("reopen");
    let format: i64 =
        conn.query_row("SELECT value FROM capstan_meta WHERE name = 'format'", [], |r| r.get(0)).expect("format");
    assert_eq!(format, 2);
    let without_rowid: i64 = conn
        .query_row("SELECT COUNT(*) FROM sqlite_master WHERE sql LIKE '%WITHOUT ROWID%' AND name LIKE 'kv%'", [], |r| {
            r.get(0)
        })
        .expect("schema");
    assert_eq!(without_rowid, 0, "kv and kv_log are rowid tables now");
    drop(conn);
    let reopened = EmbeddedStore::open(&path).expect("open the migrated store");
    assert_eq!(reopened.current_revision().await.expect("revision"), Revision(6));
}
