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
