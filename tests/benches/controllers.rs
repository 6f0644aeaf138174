//! Controller throughput against a real `capstan server` with hollow nodes: how fast the
//! ReplicaSet controller creates pods, and how long a Deployment takes to become Available.
//! Sizes come from `CAPSTAN_BENCH_RS_PODS` (default 10 000) and `CAPSTAN_BENCH_DEPLOY_REPLICAS`
//! (default 1 000). Pod templates bind themselves to a hollow node (no scheduler runs yet).
//! Run: `cargo build -p capstan && cargo bench --profile dev -p capstan-e2e --bench controllers`
//! (the server started is the `capstan` binary of the bench's own profile directory).

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a benchmark aborts on failure")]

use std::time::{Duration, Instant};

use capstan_e2e::{json, kubectl, kubectl_stdin};
use capstan_testbed::CapstanServer;

fn size(variable: &str, default: u64) -> u64 {
    std::env::var(variable).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn workload(kind: &str, name: &str, replicas: u64) -> String {
    format!(
        r#"{{"apiVersion": "apps/v1", "kind": "{kind}", "metadata": {{"name": "{name}", "namespace": "default"}},
  "spec": {{"replicas": {replicas}, "selector": {{"matchLabels": {{"app": "{name}"}}}},
    "template": {{"metadata": {{"labels": {{"app": "{name}"}}}},
      "spec": {{"nodeName": "hollow-node-0", "containers": [{{"name": "app", "image": "nginx"}}]}}}}}}}}"#
    )
}

fn wait_for(server: &CapstanServer, resource: &str, field: &str, wanted: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let object = json(&kubectl(server, &["get", resource, "-o", "json"]));
        if object["status"][field].as_u64() == Some(wanted) {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{resource} did not reach {field}={wanted}: {}", object["status"]);
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn main() {
    let server = CapstanServer::start_with(&["--hollow-nodes", "1"]).unwrap_or_else(|e| panic!("{e}"));
    let pods = size("CAPSTAN_BENCH_RS_PODS", 10_000);
    kubectl_stdin(&server, &["apply", "-f", "-"], &workload("ReplicaSet", "bench-rs", pods));
    let created = wait_for(&server, "replicaset/bench-rs", "replicas", pods, Duration::from_mins(30));
    println!(
        "replicaset: {pods} pods created in {:.2} s ({:.0} pods/s)",
        created.as_secs_f64(),
        f64::from(u32::try_from(pods).unwrap_or(u32::MAX)) / created.as_secs_f64()
    );
    kubectl(&server, &["delete", "replicaset", "bench-rs", "--wait=false"]);

    let replicas = size("CAPSTAN_BENCH_DEPLOY_REPLICAS", 1_000);
    kubectl_stdin(&server, &["apply", "-f", "-"], &workload("Deployment", "bench-deploy", replicas));
    let available =
        wait_for(&server, "deployment/bench-deploy", "availableReplicas", replicas, Duration::from_mins(30));
    println!("deployment: {replicas} replicas Available in {:.2} s", available.as_secs_f64());
}
