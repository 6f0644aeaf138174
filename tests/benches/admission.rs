//! Admission benchmark: pod create latency (p50/p99, one client, so latency is not queueing)
//! with no admission policies, with one policy per language (Rust, Python, JavaScript), and with
//! Capstan's built-in set — in one run, side by side — plus each plugin's evaluations from
//! `/metrics` (calls, mean time per call, and so evaluations per second of one instance).
//!
//! What one policy adds is measured within one server: its objectSelector picks the pods
//! labelled `bench: policed`, and the creates alternate between those and pods it skips, so
//! both halves see the same machine load and the difference is the policy's cost.
//!
//! `cargo bench -p capstan-e2e --bench admission` (add `-- --quick` for 100 pods per case
//! instead of 4,000; `BENCH_ONLY=Rust` runs only the cases whose name contains `Rust`, `BENCH_PODS=N` creates N pods per
//! case). The
//! Python and JavaScript policies are built with the SDK scripts into `target/sdk-examples`
//! first (about half a minute each, once).

#![allow(clippy::expect_used, reason = "a benchmark aborts on the first failure")]

use std::time::{Duration, Instant};

use capstan_testbed::CapstanServer;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

async fn client(server: &CapstanServer) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    kube::Client::try_from(config).expect("client")
}

/// A pod labelled `bench: <bench>` (`policed` pods are the ones a measured policy selects).
fn pod(name: &str, bench: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench", "bench": bench}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "resources": {"requests": {"cpu": "10m"}}}]},
    }))
    .expect("pod")
}

/// p50 and p99 of some latencies.
fn percentiles(mut latencies: Vec<Duration>) -> (Duration, Duration) {
    latencies.sort();
    let count = latencies.len();
    (latencies[count / 2], latencies[count * 99 / 100])
}

/// Creates `count` pods one after another, alternating `plain` and `policed` ones; returns
/// the latencies of each half.
async fn create_latency(server: &CapstanServer, count: usize) -> [Vec<Duration>; 2] {
    let api: Api<Pod> = Api::namespaced(client(server).await, "default");
    for i in 0..10 {
        let bench = if i % 2 == 0 { "plain" } else { "policed" };
        api.create(&PostParams::default(), &pod(&format!("warm-{i}"), bench)).await.expect("create pod");
    }
    let mut halves = [Vec::with_capacity(count), Vec::with_capacity(count)];
    for i in 0..count {
        let bench = if i % 2 == 0 { "plain" } else { "policed" };
        let began = Instant::now();
        api.create(&PostParams::default(), &pod(&format!("pod-{i:05}"), bench)).await.expect("create pod");
        halves[i % 2].push(began.elapsed());
    }
    halves
}

/// Applies admission Plugin `name` for creates of the pods labelled `bench: policed`, from
/// `component` with `config`, and waits until it is loaded.
fn one_policy(server: &CapstanServer, name: &str, component: &str, mutating: bool, config: &str) {
    let manifest = format!(
        "apiVersion: capstan.io/v1alpha1\nkind: Plugin\nmetadata: {{name: {name}}}\nspec:\n  kind: admission\n  \
         component: {{path: {component:?}}}\n  config: {config}\n  admission:\n    mutating: {mutating}\n    \
         objectSelector: {{matchLabels: {{bench: policed}}}}\n    rules:\n    \
         - {{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [pods]}}\n"
    );
    let out = server.kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    // Compiling an 18 MB Python or 12 MB JavaScript component takes a while on a busy machine.
    let deadline = Instant::now() + Duration::from_mins(3);
    while Instant::now() < deadline {
        let state = server.kubectl(&["get", "plugin", name, "-o", "jsonpath={.status.state}"]);
        if String::from_utf8_lossy(&state.stdout) == "Loaded" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = server.kubectl(&["get", "plugin", name, "-o", "jsonpath={.status}"]);
    panic!("policy {name} never loaded: {}", String::from_utf8_lossy(&status.stdout));
}

/// One admission plugin's calls as `/metrics` counts them.
#[derive(Default)]
struct Evaluations {
    plugin: String,
    calls: f64,
    seconds: f64,
    /// The call-duration histogram: (upper bound in seconds, calls at or under it).
    buckets: Vec<(f64, f64)>,
}

impl Evaluations {
    /// Calls that took at most `seconds` (a bucket bound).
    fn within(&self, seconds: f64) -> f64 {
        self.buckets.iter().find(|(le, _)| (le - seconds).abs() < 1e-9).map_or(0.0, |(_, count)| *count)
    }

    /// The smallest bucket bound at or under which `quantile` of the calls took.
    fn quantile_bound(&self, quantile: f64) -> f64 {
        let target = quantile * self.calls;
        self.buckets.iter().find(|(_, count)| *count >= target).map_or(f64::INFINITY, |(le, _)| *le)
    }
}

/// Per admission plugin on `/metrics`: calls, the seconds they took in all, and the histogram
/// of call durations.
fn evaluations(metrics: &str) -> Vec<Evaluations> {
    let mut out: Vec<Evaluations> = Vec::new();
    for line in metrics.lines().filter(|l| l.contains("world=\"admission-policy\"")) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Some(plugin) = series.split("plugin=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let value: f64 = value.parse().unwrap_or(0.0);
        let index = out.iter().position(|e| e.plugin == plugin).unwrap_or_else(|| {
            out.push(Evaluations { plugin: plugin.to_string(), ..Evaluations::default() });
            out.len() - 1
        });
        if series.starts_with("capstan_plugin_calls_total") {
            out[index].calls = value;
        } else if series.starts_with("capstan_plugin_call_duration_seconds_sum") {
            out[index].seconds = value;
        } else if series.starts_with("capstan_plugin_call_duration_seconds_bucket") {
            let le = series.split("le=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or("+Inf");
            out[index].buckets.push((le.parse().unwrap_or(f64::INFINITY), value));
        }
    }
    out
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let count = std::env::var("BENCH_PODS").ok().and_then(|n| n.parse().ok()).unwrap_or(if quick { 100 } else { 4000 });
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let empty = std::env::temp_dir().join(format!("capstan-no-components-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("empty components dir");
    let empty = empty.to_string_lossy().into_owned();
    println!("pod create latency, one client, {count} pods per case (half of them selected by the measured policy)");
    let mut baseline_p99 = Duration::ZERO;
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    for case in
        ["no policies", "one Rust policy", "one Python policy", "one JavaScript policy", "built-in set (7 policies)"]
            .into_iter()
            .filter(|case| case.contains(only.as_str()))
    {
        // An empty components directory leaves the built-in policies out. No case runs the
        // controllers or the scheduler, whose work on each new pod would compete with the API
        // server for the two cores and be counted as admission's cost.
        let quiet = ["--controllers=false", "--scheduler=false"];
        let server = match case {
            "built-in set (7 policies)" => CapstanServer::start_with(&quiet),
            _ => CapstanServer::start_with(&[&quiet[..], &["--components-dir", &empty]].concat()),
        }
        .expect("server");
        // The ServiceAccount policy admits pods only once their service account exists; the
        // controller that makes `default` is not running.
        let account = server.kubectl(&["create", "serviceaccount", "default", "-n", "default"]);
        let made = String::from_utf8_lossy(&account.stderr);
        assert!(account.status.success() || made.contains("AlreadyExists"), "{made}");
        match case {
            "one Rust policy" => {
                let component = capstan_testbed::component_path("require-label").expect("require-label component");
                one_policy(&server, "require-app", &component.to_string_lossy(), false, "{label: app}");
            }
            "one Python policy" => {
                let component = capstan_e2e::sdk_example(
                    "sdk/python/build",
                    "sdk/python/examples/default-team",
                    "default_team.wasm",
                );
                one_policy(&server, "default-team", &component, true, "{}");
            }
            "one JavaScript policy" => {
                let component = capstan_e2e::sdk_example(
                    "sdk/js/build",
                    "sdk/js/examples/registry-allow-list/policy.js",
                    "registry_allow_list.wasm",
                );
                one_policy(&server, "registries", &component, false, "{allowedRegistries: [docker.io]}");
            }
            _ => {}
        }
        let [plain, policed] = runtime.block_on(create_latency(&server, count));
        let micros = |d: Duration| d.as_secs_f64() * 1e6;
        match case {
            "no policies" | "built-in set (7 policies)" => {
                let (p50, p99) = percentiles([plain, policed].concat());
                if case == "no policies" {
                    baseline_p99 = p99;
                }
                println!(
                    "  {case:<28} p50 {:>8.1} µs  p99 {:>8.1} µs  (p99 vs none: {:+.1} µs)",
                    micros(p50),
                    micros(p99),
                    micros(p99) - micros(baseline_p99)
                );
            }
            _ => {
                let ((skipped50, skipped99), (called50, called99)) = (percentiles(plain), percentiles(policed));
                println!(
                    "  {case:<28} p50 {:>8.1} µs  p99 {:>8.1} µs  (pods it skips: p50 {:>8.1} µs  p99 {:>8.1} µs; \
                     adds p50 {:+.1} µs  p99 {:+.1} µs)",
                    micros(called50),
                    micros(called99),
                    micros(skipped50),
                    micros(skipped99),
                    micros(called50) - micros(skipped50),
                    micros(called99) - micros(skipped99),
                );
            }
        }
        let metrics = server.kubectl(&["get", "--raw", "/metrics"]);
        for plugin in evaluations(&String::from_utf8_lossy(&metrics.stdout)) {
            let (calls, seconds) = (plugin.calls, plugin.seconds);
            if calls > 0.0 && seconds > 0.0 {
                println!(
                    "    {:<28} {calls:>6.0} calls, {:>6.1} µs per call, p99 ≤ {:>5.0} µs, {:>5.1} % within 50 µs, {:>7.0} evaluations/s",
                    plugin.plugin,
                    seconds / calls * 1e6,
                    plugin.quantile_bound(0.99) * 1e6,
                    plugin.within(0.000_05) / calls * 100.0,
                    calls / seconds
                );
            }
        }
    }
}
