//! Store benchmark: puts/s, compare-and-swap txn/s, watch latency, and gets/s of Pod-sized
//! values among many keys, for the embedded backend and a real etcd member on the same machine,
//! in one run.
//!
//! `cargo bench -p capstan-store --bench store` (add `-- --quick` for a short run).

#![allow(clippy::expect_used, reason = "a benchmark aborts on the first failure")]
#![allow(clippy::cast_precision_loss, reason = "rates are printed, not computed on")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_store::{EmbeddedStore, EtcdConfig, EtcdStore, KeyRange, Store, WatchRequest};
use capstan_testbed::EtcdServer;
use futures::StreamExt;

struct Sizes {
    sequential_puts: usize,
    concurrent_puts: usize,
    txns: usize,
    watched: usize,
    /// Keys holding a 3 KB value each (a stored Pod with its managed fields), and gets of them.
    stored: usize,
    gets: usize,
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sizes = if quick {
        Sizes { sequential_puts: 300, concurrent_puts: 2000, txns: 1000, watched: 300, stored: 4000, gets: 4000 }
    } else {
        Sizes {
            sequential_puts: 2000,
            concurrent_puts: 20_000,
            txns: 5000,
            watched: 2000,
            stored: 16_000,
            gets: 20_000,
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let embedded: Arc<dyn Store> = Arc::new(EmbeddedStore::open(dir.path().join("bench.db")).expect("open"));
    let etcd_server = EtcdServer::start().expect("start etcd");
    let etcd: Arc<dyn Store> =
        Arc::new(EtcdStore::connect(EtcdConfig::new(vec![etcd_server.endpoint().to_string()])).await.expect("connect"));
    println!(
        "{:<10} {:>16} {:>16} {:>14} {:>14} {:>14} {:>14}",
        "backend",
        "puts/s (1 cli)",
        "puts/s (32 cli)",
        "txn/s (32 cli)",
        "put→event p50",
        "put→event p99",
        "gets/s (4 cli)"
    );
    for (name, store) in [("embedded", embedded), ("etcd", etcd)] {
        let sequential = sequential_puts(&store, sizes.sequential_puts).await;
        let concurrent = concurrent_puts(&store, sizes.concurrent_puts, 32).await;
        let txns = cas_txns(&store, sizes.txns, 32).await;
        let (p50, p99) = watch_latency(&store, sizes.watched).await;
        let gets = random_gets(&store, sizes.stored, sizes.gets, 4).await;
        println!(
            "{name:<10} {sequential:>16.0} {concurrent:>16.0} {txns:>14.0} {:>12.2}ms {:>12.2}ms {gets:>14.0}",
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3
        );
    }
    println!(
        "(values 1.5 KB; gets read 3 KB values at random among {} keys, as an API server reads Pods \
         before binding them or updating their status)",
        sizes.stored
    );
}

fn value() -> Vec<u8> {
    // About the size of a small Pod object as JSON.
    vec![b'x'; 1500]
}

async fn sequential_puts(store: &Arc<dyn Store>, n: usize) -> f64 {
    let value = value();
    let start = Instant::now();
    for i in 0..n {
        store.put(format!("/bench/seq/{i}").as_bytes(), &value).await.expect("put");
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn concurrent_puts(store: &Arc<dyn Store>, n: usize, clients: usize) -> f64 {
    let start = Instant::now();
    let written = put_all(store, n, clients, &value(), |i| format!("/bench/par/{i}")).await;
    written as f64 / start.elapsed().as_secs_f64()
}

/// Puts `value` at `key(i)` for every `i` below `n`, from `clients` concurrent clients (each
/// taking every `clients`-th key); returns how many were put.
async fn put_all(store: &Arc<dyn Store>, n: usize, clients: usize, value: &[u8], key: fn(usize) -> String) -> usize {
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = Arc::clone(store);
            let value = value.to_vec();
            tokio::spawn(async move {
                for i in (c..n).step_by(clients) {
                    store.put(key(i).as_bytes(), &value).await.expect("put");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client");
    }
    n
}

async fn cas_txns(store: &Arc<dyn Store>, n: usize, clients: usize) -> f64 {
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let key = format!("/bench/cas/{c}");
                let value = value();
                let (mut revision, _) = store.put(key.as_bytes(), &value).await.expect("put");
                for _ in 0..n / clients {
                    revision = store
                        .compare_and_put(key.as_bytes(), revision, &value)
                        .await
                        .expect("txn")
                        .expect("no other writer touches this key");
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.expect("client");
    }
    (n / clients * clients) as f64 / start.elapsed().as_secs_f64()
}

/// Time from issuing a put to its event reaching a watcher (commit included), one write at a time.
async fn watch_latency(store: &Arc<dyn Store>, n: usize) -> (Duration, Duration) {
    let mut watch = store.watch(WatchRequest::from_now(KeyRange::prefix("/bench/watch/"))).await.expect("watch");
    let value = value();
    let mut latencies = Vec::with_capacity(n);
    for i in 0..n {
        let issued = Instant::now();
        store.put(format!("/bench/watch/{i}").as_bytes(), &value).await.expect("put");
        watch.next().await.expect("event").expect("event");
        latencies.push(issued.elapsed());
    }
    latencies.sort();
    (latencies[n / 2], latencies[n * 99 / 100])
}

/// Gets/s of single keys at random among `stored` keys holding 3 KB values, from `clients`
/// concurrent clients.
async fn random_gets(store: &Arc<dyn Store>, stored: usize, gets: usize, clients: usize) -> f64 {
    fn key(i: usize) -> String {
        format!("/bench/pods/namespace-{}/pod-{i:06}", i % 7)
    }
    put_all(store, stored, 32, &[b'p'; 3000], key).await;
    let start = Instant::now();
    let readers: Vec<_> = (0..clients)
        .map(|c| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                // A fixed pseudo-random walk over the keys (an LCG), different per client.
                let mut at = c * 7919 + 1;
                for _ in 0..gets / clients {
                    at = (at * 1_103_515_245 + 12_345) % (1 << 31);
                    let found = store.get(key(at % stored).as_bytes()).await.expect("get");
                    assert_eq!(found.map(|kv| kv.value.len()), Some(3000));
                }
            })
        })
        .collect();
    for reader in readers {
        reader.await.expect("reader");
    }
    (gets / clients * clients) as f64 / start.elapsed().as_secs_f64()
}
