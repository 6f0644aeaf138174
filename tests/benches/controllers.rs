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

/// A value of `/metrics`: the sum of every series named `name` whose labels contain `labels`.
fn metric(metrics: &str, name: &str, labels: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum()
}

/// Per plugin on `/metrics`: (plugin, calls, seconds in calls, linear memory bytes), busiest first.
fn plugin_costs(metrics: &str) -> Vec<(String, f64, f64, f64)> {
    let mut out: Vec<(String, f64, f64, f64)> = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with("capstan_plugin_")) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Some(plugin) = series.split("plugin=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let value: f64 = value.parse().unwrap_or(0.0);
        let index = out.iter().position(|(p, ..)| p == plugin).unwrap_or_else(|| {
            out.push((plugin.to_string(), 0.0, 0.0, 0.0));
            out.len() - 1
        });
        if series.starts_with("capstan_plugin_calls_total{") {
            out[index].1 = value;
        } else if series.starts_with("capstan_plugin_call_duration_seconds_sum{") {
            out[index].2 = value;
        } else if series.starts_with("capstan_plugin_memory_bytes{") {
            out[index].3 = value;
        }
    }
    out.sort_by(|a, b| b.2.total_cmp(&a.2));
    out
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(|| "?".to_owned(), |k| format!("{} MiB", k / 1024))
}

/// Waits until `resource`'s `status.FIELD` is `wanted`, printing progress every `step` of it
/// (elapsed, the rate over the step, the server's resident memory).
fn wait_for(server: &CapstanServer, resource: &str, field: &str, wanted: u64, limit: Duration) -> Duration {
    let started = Instant::now();
    let step = (wanted / 10).max(1);
    let (mut next, mut last) = (step, (0, Duration::ZERO));
    loop {
        let object = json(&kubectl(server, &["get", resource, "-o", "json"]));
        let reached = object["status"][field].as_u64().unwrap_or(0);
        if reached >= next || reached == wanted {
            let elapsed = started.elapsed();
            #[allow(clippy::cast_precision_loss, reason = "counts far below 2^52")]
            let rate = (reached - last.0) as f64 / elapsed.saturating_sub(last.1).as_secs_f64().max(0.001);
            println!(
                "  {field} {reached:>6} after {:>7.1} s ({rate:>6.1}/s over the last step), server RSS {}",
                elapsed.as_secs_f64(),
                mib(server.rss_kib())
            );
            last = (reached, elapsed);
            next = (reached / step + 1) * step;
        }
        if reached == wanted {
            return started.elapsed();
        }
        assert!(started.elapsed() < limit, "{resource} did not reach {field}={wanted}: {}", object["status"]);
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Prints the controller's reconciles and the plugins that took the most time.
fn report(server: &CapstanServer, controller: &str, took: Duration) {
    let metrics = kubectl(server, &["get", "--raw", "/metrics"]);
    let reconciles = metric(&metrics, "capstan_controller_reconciles_total", &format!("controller=\"{controller}\""));
    println!(
        "  {controller} controller: {reconciles:.0} reconciles ({:.1}/s); server RSS {}, peak {}",
        reconciles / took.as_secs_f64(),
        mib(server.rss_kib()),
        mib(server.peak_rss_kib())
    );
    println!("  plugin time (top 8): plugin, calls, seconds in calls, linear memory now");
    for (plugin, calls, seconds, memory) in plugin_costs(&metrics).iter().take(8) {
        println!("    {plugin:<28} {calls:>8.0} {seconds:>8.2} s {:>6.0} MiB", memory / f64::from(1 << 20));
    }
}

fn main() {
    let server = CapstanServer::start_with(&["--hollow-nodes", "1"]).unwrap_or_else(|e| panic!("{e}"));
    let pods = size("CAPSTAN_BENCH_RS_PODS", 10_000);
    println!("replicaset: {pods} pods (server RSS at start {})", mib(server.rss_kib()));
    kubectl_stdin(&server, &["apply", "-f", "-"], &workload("ReplicaSet", "bench-rs", pods));
    let created = wait_for(&server, "replicaset/bench-rs", "replicas", pods, Duration::from_mins(30));
    println!(
        "replicaset: {pods} pods created in {:.2} s ({:.0} pods/s)",
        created.as_secs_f64(),
        f64::from(u32::try_from(pods).unwrap_or(u32::MAX)) / created.as_secs_f64()
    );
    report(&server, "replicaset", created);
    kubectl(&server, &["delete", "replicaset", "bench-rs", "--wait=false"]);

    let replicas = size("CAPSTAN_BENCH_DEPLOY_REPLICAS", 1_000);
    kubectl_stdin(&server, &["apply", "-f", "-"], &workload("Deployment", "bench-deploy", replicas));
    let available =
        wait_for(&server, "deployment/bench-deploy", "availableReplicas", replicas, Duration::from_mins(30));
    println!("deployment: {replicas} replicas Available in {:.2} s", available.as_secs_f64());
    report(&server, "deployment", available);
}
