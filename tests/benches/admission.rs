//! Admission benchmark: pod create latency (p50/p99, one client, so latency is not queueing)
//! with no admission policies, with one policy per language (Rust, Python, JavaScript), and with
//! Capstan's built-in set — in one run, side by side — plus, from the server's `/metrics`, the
//! time each admission phase and each policy took in the server (building its request, the
//! call, applying its answer: what the policy adds to a request, without the store's fsync
//! noise) and each component call's share (and so evaluations per second of one instance).
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

/// One histogram on `/metrics`, summed over the series that share one label's value.
#[derive(Default)]
struct Histogram {
    /// The grouping label's value (a plugin's or policy's name, a step's type).
    label: String,
    count: f64,
    seconds: f64,
    /// Cumulative buckets: (upper bound in seconds, observations at or under it).
    buckets: Vec<(f64, f64)>,
}

impl Histogram {
    /// Observations that took at most `seconds` (a bucket bound).
    fn within(&self, seconds: f64) -> f64 {
        self.buckets.iter().find(|(le, _)| (le - seconds).abs() < 1e-9).map_or(0.0, |(_, count)| *count)
    }

    /// The smallest bucket bound at or under which `quantile` of the observations took.
    fn quantile_bound(&self, quantile: f64) -> f64 {
        let target = quantile * self.count;
        self.buckets.iter().find(|(_, count)| *count >= target).map_or(f64::INFINITY, |(le, _)| *le)
    }

    /// One line: observations, mean, p99 bound, share within 50 µs.
    fn summary(&self) -> String {
        format!(
            "{:>6.0} × {:>6.1} µs, p99 ≤ {:>5.0} µs, {:>5.1} % within 50 µs",
            self.count,
            self.seconds / self.count * 1e6,
            self.quantile_bound(0.99) * 1e6,
            self.within(0.000_05) / self.count * 100.0
        )
    }
}

/// The value of label `key` in a series' labels.
fn label<'a>(series: &'a str, key: &str) -> Option<&'a str> {
    series.split(&format!("{key}=\"")).nth(1).and_then(|r| r.split('"').next())
}

/// Histogram `name` on `/metrics`, of the series whose labels contain `filter`, one per value
/// of label `by`.
fn histograms(metrics: &str, name: &str, filter: &str, by: &str) -> Vec<Histogram> {
    let mut out: Vec<Histogram> = Vec::new();
    for line in metrics.lines().filter(|l| l.starts_with(name) && l.contains(filter)) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Some(group) = label(series, by) else { continue };
        let value: f64 = value.parse().unwrap_or(0.0);
        let index = out.iter().position(|h| h.label == group).unwrap_or_else(|| {
            out.push(Histogram { label: group.to_string(), ..Histogram::default() });
            out.len() - 1
        });
        let histogram = &mut out[index];
        match &series[name.len()..series.find('{').unwrap_or(series.len())] {
            "_count" => histogram.count += value,
            "_sum" => histogram.seconds += value,
            "_bucket" => {
                let le = label(series, "le").and_then(|le| le.parse().ok()).unwrap_or(f64::INFINITY);
                match histogram.buckets.iter_mut().find(|(bound, _)| bound.to_bits() == le.to_bits()) {
                    Some((_, count)) => *count += value,
                    None => histogram.buckets.push((le, value)),
                }
            }
            _ => {}
        }
    }
    out.retain(|h| h.count > 0.0);
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
        let metrics = String::from_utf8_lossy(&metrics.stdout);
        for step in histograms(&metrics, "apiserver_admission_step_admission_duration_seconds", "", "type") {
            println!("    {:<36} {}", format!("{} phase, in the server", step.label), step.summary());
        }
        let calls =
            histograms(&metrics, "capstan_plugin_call_duration_seconds", "world=\"admission-policy\"", "plugin");
        for policy in histograms(&metrics, "apiserver_admission_webhook_admission_duration_seconds", "", "name") {
            println!("    {:<36} {}", format!("{}, in the server", policy.label), policy.summary());
            if let Some(call) = calls.iter().find(|c| c.label == policy.label) {
                println!(
                    "    {:<36} {}, {:>7.0} evaluations/s",
                    "  of which the component call",
                    call.summary(),
                    call.count / call.seconds
                );
            }
        }
    }
}
