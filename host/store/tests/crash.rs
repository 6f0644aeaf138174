//! Durability under `kill -9`: a child process writes as fast as it can and reports every
//! acknowledged write; it is killed at a random moment; after reopening, every acknowledged
//! write is there with its revision and the revision counter continues after them.

#![allow(clippy::expect_used, reason = "a test aborts on a failed expectation")]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use capstan_store::{EmbeddedStore, Revision, Store};
use rand::Rng;

const ROUNDS: usize = 20;
const CHILD_DB: &str = "CAPSTAN_CRASH_TEST_DB";
const CHILD_ROUND: &str = "CAPSTAN_CRASH_TEST_ROUND";

#[test]
fn kill_9_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    // Every round reopens the file the previous round's crash left behind.
    let db = dir.path().join("store.db");
    let mut total = 0;
    for round in 0..ROUNDS {
        let acknowledged = crash_one_writer(&db, round);
        assert!(!acknowledged.is_empty(), "round {round}: the writer acknowledged nothing before it was killed");
        total += acknowledged.len();
        verify_after_restart(&db, round, &acknowledged);
    }
    eprintln!("{ROUNDS} crashes, {total} acknowledged writes, none lost");
}

/// Runs the writer in a child process, kills it with SIGKILL, and returns what it acknowledged.
fn crash_one_writer(db: &Path, round: usize) -> Vec<(String, Revision)> {
    let exe = std::env::current_exe().expect("test binary path");
    let mut child = Command::new(exe)
        .args(["--exact", "crash_child_writer", "--ignored", "--nocapture", "--test-threads=1"])
        .env(CHILD_DB, db)
        .env(CHILD_ROUND, round.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn writer");
    let stdout = child.stdout.take().expect("piped stdout");
    let (lines, received) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let mut acknowledged = Vec::new();
    // Wait for the first acknowledgement so the kill lands in the middle of writing.
    while acknowledged.is_empty() {
        record(
            &mut acknowledged,
            &received.recv_timeout(Duration::from_secs(30)).expect("writer acknowledged in time"),
        );
    }
    std::thread::sleep(Duration::from_millis(rand::rng().random_range(10..200)));
    child.kill().expect("SIGKILL the writer");
    child.wait().expect("reap the writer");
    reader.join().expect("reader thread");
    // Lines already in the pipe were printed after their write was acknowledged: they count.
    for line in received.try_iter() {
        record(&mut acknowledged, &line);
    }
    acknowledged
}

fn record(acknowledged: &mut Vec<(String, Revision)>, line: &str) {
    if let Some(rest) = line.strip_prefix("ack ") {
        let (key, revision) = rest.split_once(' ').expect("ack line: key revision");
        acknowledged.push((key.to_string(), Revision(revision.parse().expect("revision"))));
    }
}

fn verify_after_restart(db: &Path, round: usize, acknowledged: &[(String, Revision)]) {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let store = EmbeddedStore::open(db).expect("reopen after crash");
        for (key, revision) in acknowledged {
            let kv =
                store.get(key.as_bytes()).await.expect("get").unwrap_or_else(|| {
                    panic!("round {round}: acknowledged write {key} at revision {revision} was lost")
                });
            assert_eq!(kv.mod_revision, *revision, "round {round}: {key} has the wrong revision");
            assert_eq!(kv.value, key.as_bytes(), "round {round}: {key} has the wrong value");
        }
        let newest = acknowledged.iter().map(|(_, r)| *r).max().expect("at least one write");
        let current = store.current_revision().await.expect("revision");
        assert!(current >= newest, "round {round}: revision went back from {newest} to {current}");
        let (next, _) = store.put(b"/crash/after-restart", b"x").await.expect("put after restart");
        assert_eq!(next, current.next(), "round {round}: the revision counter continues");
    });
}

/// The child side of the crash test; it only runs when the test above starts it.
#[test]
#[ignore = "helper process for kill_9_loses_no_acknowledged_write, started by it"]
fn crash_child_writer() {
    let (Ok(db), Ok(round)) = (std::env::var(CHILD_DB), std::env::var(CHILD_ROUND)) else {
        panic!("run by kill_9_loses_no_acknowledged_write, not directly");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    runtime.block_on(async move {
        let store = std::sync::Arc::new(EmbeddedStore::open(&db).expect("open store"));
        let writers: Vec<_> = (0..4)
            .map(|writer| {
                let store = store.clone();
                let round = round.clone();
                tokio::spawn(async move {
                    for i in 0.. {
                        let key = format!("/crash/{round}/{writer}/{i}");
                        let (revision, _) = store.put(key.as_bytes(), key.as_bytes()).await.expect("put");
                        println!("ack {key} {revision}");
                    }
                })
            })
            .collect();
        for writer in writers {
            writer.await.expect("writer");
        }
    });
}
