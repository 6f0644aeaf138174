//! API server benchmark: pod creates/s with p50/p99 latency on the embedded store and on etcd,
//! LIST latency over 10,000 pods, and server RSS idle and after 10,000 pods — in one run.
//!
//! `cargo bench -p capstan-e2e --bench api` (add `-- --quick` for 1,000 pods).

#![allow(clippy::expect_used, reason = "a benchmark aborts on the first failure")]
#![allow(clippy::cast_precision_loss, reason = "rates are printed, not computed on")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use capstan_testbed::{CapstanServer, EtcdServer};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

const CLIENTS: usize = 16;

async fn client(server: &CapstanServer) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    kube::Client::try_from(config).expect("client")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "resources": {"requests": {"cpu": "10m"}}}]},
    }))
    .expect("pod")
}

/// Creates `count` pods with `CLIENTS` concurrent clients; returns creates/s, p50 and p99.
async fn create_pods(api: &Api<Pod>, count: usize) -> (f64, Duration, Duration) {
    let api = Arc::new(api.clone());
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let api = Arc::clone(&api);
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for i in (c..count).step_by(CLIENTS) {
                    let began = Instant::now();
                    api.create(&PostParams::default(), &pod(&format!("pod-{i:05}"))).await.expect("create pod");
                    latencies.push(began.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(count);
    for task in tasks {
        latencies.extend(task.await.expect("client"));
    }
    let rate = count as f64 / started.elapsed().as_secs_f64();
    latencies.sort();
    (rate, latencies[latencies.len() / 2], latencies[latencies.len() * 99 / 100])
}

async fn list_latency(api: &Api<Pod>, expected: usize) -> Duration {
    let mut best = Duration::MAX;
    for _ in 0..3 {
        let began = Instant::now();
        let list = api.list(&ListParams::default()).await.expect("list pods");
        best = best.min(began.elapsed());
        assert_eq!(list.items.len(), expected);
    }
    best
}

fn ms(d: Duration) -> String {
    format!("{:.2}ms", d.as_secs_f64() * 1e3)
}

#[tokio::main]
async fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let pods = if quick { 1000 } else { 10_000 };
    let etcd = EtcdServer::start().expect("start etcd");
    let embedded = CapstanServer::start().expect("start capstan (embedded)");
    let on_etcd = CapstanServer::start_with(&["--etcd-endpoints", etcd.endpoint()]).expect("start capstan (etcd)");
    println!(
        "{:<10} {:>12} {:>10} {:>10} {:>16} {:>12} {:>14}",
        "store",
        "creates/s",
        "p50",
        "p99",
        format!("LIST {pods}"),
        "RSS idle",
        format!("RSS {pods} pods")
    );
    for (name, server) in [("embedded", &embedded), ("etcd", &on_etcd)] {
        let api: Api<Pod> = Api::namespaced(client(server).await, "default");
        let idle = server.rss_kib().unwrap_or_default();
        let (rate, p50, p99) = create_pods(&api, pods).await;
        let list = list_latency(&api, pods).await;
        let loaded = server.rss_kib().unwrap_or_default();
        println!(
            "{name:<10} {rate:>12.0} {:>10} {:>10} {:>16} {:>9} MiB {:>11} MiB",
            ms(p50),
            ms(p99),
            ms(list),
            idle / 1024,
            loaded / 1024
        );
    }
}
