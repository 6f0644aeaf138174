//! Scheduler benchmark run as upstream `scheduler_perf` runs: in one process, against a real API
//! server. For each workload and each build of the default profile's plugins (the WASM
//! components, then — with `--features native-plugins` — the same crates linked natively), it
//! starts a fresh Capstan API server on an embedded store in a temporary directory (with the
//! built-in admission policies, as `capstan server` runs), registers the workload's nodes as
//! hollow nodes, creates the pods already bound and then the pods to schedule through the API,
//! starts the scheduler and waits, on a watch, until every new pod is bound. Each binding is a
//! `pods/binding` call and a `Scheduled` Event through the API server, as in a cluster.
//!
//! Hollow nodes here do not report pods `Running` (upstream's benchmark runs no kubelets either);
//! they finish graceful deletions, which the `Preemption` workload needs for its victims.
//!
//! Printed per run: pods created per second (setup); pods scheduled per second from the moment
//! the scheduler's caches synced (its informers' first list of every node and pod done, the
//! point from which upstream measures) to the last binding seen, with the whole process's
//! CPU-seconds meanwhile (API server, store, scheduler, hollow nodes, this client) and each
//! thread's, by name (`scheduler` runs the cycles), the admission policies the API server called
//! meanwhile and, for the components, each scheduler plugin's calls and the time spent in them;
//! and the same from the scheduler's start, the lists included; then a table with WASM/native
//! ratios.
//!
//! Run: build the components (`scripts/build-plugins`, or what `host/components` builds) then
//! `cargo bench -p capstan-scheduler --bench scheduler_perf --features native-plugins`.
//! `BENCH_ONLY=SchedulingBasic,Preemption` runs only the workloads named;
//! `CAPSTAN_BENCH_COMPONENTS=dir` loads the components from `dir`; `BENCH_PARALLELISM=N` sets the
//! configuration's `parallelism` (threads filtering one pod's nodes).

#![allow(clippy::expect_used, reason = "a benchmark aborts on the first failure")]
#![allow(clippy::cast_precision_loss, reason = "rates are printed, not computed on")]

mod workloads;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use capstan_scheduler::{Profile, SchedulerConfig, load_profiles};
use capstan_wasm::{Runtime, RuntimeConfig};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::runtime::watcher;
use serde_json::json;
use workloads::{Workload, cpu_seconds};

/// The allocator `capstan server` runs on, so the API server in this process costs what it does
/// there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Concurrent creates while setting up.
const CLIENTS: usize = 16;
/// The longest a run may take before the benchmark gives up.
const RUN_LIMIT: Duration = Duration::from_mins(15);

/// The built-in admission policies `capstan server` enables, read from the components directory.
fn builtin_admission(dir: &Path) -> BTreeMap<String, capstan_apiserver::plugins::BuiltinPlugin> {
    capstan_apiserver::plugins::builtin_admission_specs()
        .into_iter()
        .map(|(name, spec)| {
            let path = workloads::component_path(dir, name);
            let bytes =
                std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e} (build plugins/ first)", path.display()));
            (name.to_owned(), capstan_apiserver::plugins::BuiltinPlugin { bytes: bytes.into(), spec })
        })
        .collect()
}

/// A workload's pod as a user would create it: no UID (the server assigns one), and a priority
/// stated through a PriorityClass (the Priority admission policy refuses a bare `priority`).
fn for_api(mut pod: Pod) -> Pod {
    pod.metadata.uid = None;
    if let Some(spec) = pod.spec.as_mut()
        && let Some(priority) = spec.priority.take()
        && priority != 0
    {
        spec.priority_class_name = Some(format!("bench-{priority}"));
    }
    pod
}

/// Creates `pods` with `CLIENTS` concurrent creates; returns creates per second.
async fn create_all(client: &kube::Client, pods: Vec<Pod>) -> f64 {
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let count = pods.len();
    let began = Instant::now();
    futures::stream::iter(pods)
        .map(|pod| {
            let api = api.clone();
            async move { api.create(&PostParams::default(), &pod).await }
        })
        .buffer_unordered(CLIENTS)
        .try_collect::<Vec<_>>()
        .await
        .expect("create pod");
    count as f64 / began.elapsed().as_secs_f64()
}

/// Each live thread of this process: its id, name and CPU-seconds so far.
fn threads_cpu() -> BTreeMap<String, (String, f64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return BTreeMap::new() };
    tasks
        .flatten()
        .map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default().trim().to_owned();
            let cpu = cpu_seconds(&task.path().join("stat").to_string_lossy());
            (task.file_name().to_string_lossy().into_owned(), (name, cpu))
        })
        .collect()
}

/// CPU-seconds by thread name between two [`threads_cpu`] readings, most first (threads that
/// ended in between are not counted).
fn cpu_by_thread_name(before: &BTreeMap<String, (String, f64)>, after: &BTreeMap<String, (String, f64)>) -> String {
    let mut by_name: BTreeMap<&str, f64> = BTreeMap::new();
    for (tid, (name, cpu)) in after {
        let earlier = before.get(tid).map_or(0.0, |(_, cpu)| *cpu);
        *by_name.entry(name.as_str()).or_default() += cpu - earlier;
    }
    let mut by_name: Vec<_> = by_name.into_iter().filter(|(_, cpu)| *cpu >= 0.01).collect();
    by_name.sort_by(|a, b| b.1.total_cmp(&a.1));
    by_name.iter().map(|(name, cpu)| format!("{name} {cpu:.2}")).collect::<Vec<_>>().join(", ")
}

/// The admission policies' calls so far, from the API server's `/metrics`: plugin → (calls,
/// seconds in calls).
async fn admission_calls(client: &kube::Client) -> BTreeMap<String, (f64, f64)> {
    let request = http::Request::get("/metrics").body(Vec::new()).expect("request");
    let text = client.request_text(request).await.expect("/metrics");
    let mut calls: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for line in text.lines().filter(|l| l.contains("world=\"admission-policy\"")) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Some(plugin) = series.split("plugin=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
        let value: f64 = value.parse().unwrap_or(0.0);
        let entry = calls.entry(plugin.to_owned()).or_default();
        if series.starts_with("capstan_plugin_call_duration_seconds_count") {
            entry.0 = value;
        } else if series.starts_with("capstan_plugin_call_duration_seconds_sum") {
            entry.1 = value;
        }
    }
    calls
}

/// Calls and seconds per plugin between two readings (`before` and `after`, each plugin →
/// (calls, seconds)), those called at all.
fn calls_between(
    before: &BTreeMap<String, (f64, f64)>,
    after: &BTreeMap<String, (f64, f64)>,
) -> Vec<(String, f64, f64)> {
    after
        .iter()
        .filter_map(|(plugin, (calls, seconds))| {
            let (calls_before, seconds_before) = before.get(plugin).copied().unwrap_or_default();
            let (calls, seconds) = (calls - calls_before, seconds - seconds_before);
            (calls > 0.0).then(|| (plugin.clone(), calls, seconds))
        })
        .collect()
}

/// The policies called between two [`admission_calls`] readings: calls and mean time each.
fn admission_between(before: &BTreeMap<String, (f64, f64)>, after: &BTreeMap<String, (f64, f64)>) -> String {
    let shown: Vec<String> = calls_between(before, after)
        .into_iter()
        .map(|(plugin, calls, seconds)| format!("{plugin} {calls:.0} × {:.0} µs", seconds / calls * 1e6))
        .collect();
    shown.join(", ")
}

/// The scheduler plugins' calls so far, as [`admission_calls`] reads the policies': plugin →
/// (calls, seconds in them). Only components count: natively linked plugins keep no metrics.
fn scheduler_calls(runtime: &Runtime) -> BTreeMap<String, (f64, f64)> {
    runtime
        .metrics()
        .into_iter()
        .filter(|m| m.world == "scheduler-plugin")
        .map(|m| (m.plugin, (m.calls as f64, m.latency_seconds_sum)))
        .collect()
}

/// The scheduler plugins called between two [`scheduler_calls`] readings, costliest first:
/// calls and the seconds spent in them (instances brought up to date included).
fn scheduler_between(before: &BTreeMap<String, (f64, f64)>, after: &BTreeMap<String, (f64, f64)>) -> String {
    let mut called = calls_between(before, after);
    called.sort_by(|a, b| b.2.total_cmp(&a.2));
    let shown: Vec<String> = called
        .into_iter()
        .map(|(plugin, calls, seconds)| format!("{plugin} {calls:.0} calls {seconds:.2} s"))
        .collect();
    shown.join(", ")
}

/// What one run measured.
struct Measured {
    /// Pods bound per second once the scheduler's caches synced.
    after_sync: f64,
    /// Pods bound per CPU-second of the whole process, in the same time.
    per_cpu: f64,
    /// Pods bound per second from the scheduler's start, its informers' first lists included.
    from_start: f64,
}

/// A fresh API server with the workload's nodes.
struct Cluster {
    server: capstan_apiserver::Running,
    client: kube::Client,
    nodes: capstan_hollow::HollowNodes,
}

/// Starts an API server on an embedded store in `dir` and registers the workload's hollow nodes,
/// the namespace's service account and the workloads' priority class.
async fn cluster(workload: &Workload, components: &Path, dir: &Path) -> Cluster {
    let store =
        capstan_store::open(&capstan_store::StoreConfig::Embedded(dir.join("store.db"))).await.expect("open the store");
    let config = capstan_apiserver::Config {
        data_dir: dir.to_path_buf(),
        bind_address: IpAddr::V4(Ipv4Addr::LOCALHOST),
        port: 0,
        tls_sans: Vec::new(),
        store,
        builtin_plugins: builtin_admission(components),
        extra_metrics: capstan_apiserver::ExtraMetrics::default(),
    };
    let server = capstan_apiserver::start(config).await.expect("start the API server");
    let client = capstan_client::from_kubeconfig(&server.kubeconfig).await.expect("client");
    let hollow = capstan_hollow::HollowConfig {
        count: workload.nodes,
        name_prefix: "node-".into(),
        cpu: workload.node_cpu.into(),
        memory: "128Gi".into(),
        max_pods: 110,
        zones: 3,
        report_running: false,
        ..capstan_hollow::HollowConfig::default()
    };
    let nodes = capstan_hollow::start(client.clone(), hollow).await.expect("hollow nodes");
    // What the controllers would have made: the namespace's service account (the
    // ServiceAccount policy requires it) and the class the workloads' priorities name.
    let accounts: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), "default");
    let account = serde_json::from_value(json!({"metadata": {"name": "default"}})).expect("service account");
    accounts.create(&PostParams::default(), &account).await.expect("service account");
    let classes: Api<k8s_openapi::api::scheduling::v1::PriorityClass> = Api::all(client.clone());
    let class = serde_json::from_value(json!({"metadata": {"name": "bench-100"}, "value": 100})).expect("class");
    classes.create(&PostParams::default(), &class).await.expect("priority class");
    Cluster { server, client, nodes }
}

/// One run: a fresh API server and hollow nodes, the workload's pods created, then the
/// scheduler started with `profile` and timed until every new pod is bound.
async fn run(workload: &Workload, profile: Profile, runtime: Runtime, components: &Path, dir: &Path) -> Measured {
    let setup = Instant::now();
    let Cluster { server, client, nodes } = cluster(workload, components, dir).await;
    let existing: Vec<Pod> = (0..workload.existing)
        .map(|i| {
            let mut pod = for_api((workload.make_existing)(i));
            if let Some(spec) = pod.spec.as_mut() {
                spec.node_name = Some(format!("node-{}", i % workload.nodes));
            }
            pod
        })
        .collect();
    create_all(&client, existing).await;
    let new: Vec<Pod> =
        (workload.existing..workload.existing + workload.new).map(|i| for_api((workload.make_new)(i))).collect();
    let names: HashSet<String> = new.iter().filter_map(|p| p.metadata.name.clone()).collect();
    let created = create_all(&client, new).await;
    println!(
        "  setup: {} nodes and {} pods in {:.1} s ({created:.0} pod creates/s)",
        workload.nodes,
        workload.existing + workload.new,
        setup.elapsed().as_secs_f64()
    );

    // Bindings are counted from a watch that has seen every pod before the scheduler starts.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut events = watcher(pods, watcher::Config::default().any_semantic()).boxed();
    let mut bound = HashSet::new();
    let note = |pod: &Pod, bound: &mut HashSet<String>| {
        let name = pod.metadata.name.as_deref().unwrap_or("");
        if pod.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()) && names.contains(name)
        {
            bound.insert(name.to_owned());
        }
    };
    loop {
        match events.next().await.expect("watch ended").expect("watch") {
            watcher::Event::InitApply(pod) => note(&pod, &mut bound),
            watcher::Event::InitDone => break,
            _ => {}
        }
    }
    assert!(bound.is_empty(), "{} new pods were bound before the scheduler started", bound.len());

    let began = Instant::now();
    let builtin = workloads::component_reader(components);
    let plugins = runtime.clone();
    let scheduler = capstan_scheduler::Scheduler::start_with_profiles(client.clone(), runtime, vec![profile], builtin)
        .expect("start the scheduler");
    // Upstream's throughput is measured with the scheduler's caches synced; the list of every
    // node and pod the informers make first is reported apart. Bindings made meanwhile are
    // read from the watch afterwards: each is counted when it is seen, and only the last one's
    // time matters.
    while !scheduler.synced() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let synced = Instant::now();
    let process_cpu = cpu_seconds("/proc/self/stat");
    let threads_at_sync = threads_cpu();
    let admission_at_sync = admission_calls(&client).await;
    let plugins_at_sync = scheduler_calls(&plugins);
    let mut first = None;
    while bound.len() < names.len() {
        let event = tokio::time::timeout_at((began + RUN_LIMIT).into(), events.next())
            .await
            .unwrap_or_else(|_| panic!("only {} of {} pods bound after {RUN_LIMIT:?}", bound.len(), names.len()));
        if let watcher::Event::Apply(pod) = event.expect("watch ended").expect("watch") {
            note(&pod, &mut bound);
            if first.is_none() && !bound.is_empty() {
                first = Some(began.elapsed());
            }
        }
    }
    let (from_start, since_sync) = (began.elapsed().as_secs_f64(), synced.elapsed().as_secs_f64());
    let cpu = cpu_seconds("/proc/self/stat") - process_cpu;
    let threads = cpu_by_thread_name(&threads_at_sync, &threads_cpu());
    let admission = admission_between(&admission_at_sync, &admission_calls(&client).await);
    let called = scheduler_between(&plugins_at_sync, &scheduler_calls(&plugins));
    scheduler.stop();
    drop(nodes);
    server.task.abort();
    let placed = names.len() as f64;
    println!(
        "  {placed} pods bound {since_sync:.2} s after the scheduler's caches synced = {:.0} pods/s; process {cpu:.2} \
         CPU-s = {:.0} pods per CPU-second; CPU-s by thread: {threads}",
        placed / since_sync,
        placed / cpu,
    );
    println!("  admission policies called meanwhile: {admission}");
    if !called.is_empty() {
        println!("  scheduler plugin components called meanwhile: {called}");
    }
    println!(
        "  from the scheduler's start: {from_start:.2} s = {:.0} pods/s (caches synced after {:.0} ms, first binding \
         seen after {:.0} ms)",
        placed / from_start,
        (synced - began).as_secs_f64() * 1000.0,
        first.unwrap_or_default().as_secs_f64() * 1000.0,
    );
    Measured { after_sync: placed / since_sync, per_cpu: placed / cpu, from_start: placed / from_start }
}

/// Runs `workload` with `profile` in a runtime of its own (so nothing of one run outlives it)
/// and a temporary directory.
fn run_isolated(workload: &Workload, profile: &Profile, runtime: &Runtime, components: &Path) -> Measured {
    let dir = tempfile::Builder::new().prefix("capstan-scheduler-perf-").tempdir().expect("temporary directory");
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("tokio runtime");
    let measured = tokio.block_on(run(workload, profile.clone(), runtime.clone(), components, dir.path()));
    tokio.shutdown_timeout(Duration::from_secs(10));
    measured
}

fn main() {
    let components: PathBuf = workloads::components_dir();
    let runtime = Runtime::new(RuntimeConfig::default()).expect("plugin runtime");
    let builtin = workloads::component_reader(&components);
    let config = SchedulerConfig {
        parallelism: std::env::var("BENCH_PARALLELISM").ok().and_then(|p| p.parse().ok()),
        ..SchedulerConfig::default()
    };
    let wasm = load_profiles(&runtime, &config, &builtin).expect("load the WASM profile").remove(0);
    #[cfg(feature = "native-plugins")]
    let native = Some(capstan_scheduler::native::load_profiles(&config).expect("load the native profile").remove(0));
    #[cfg(not(feature = "native-plugins"))]
    let native: Option<Profile> = None;

    let mut summary = Vec::new();
    for workload in &workloads::workloads() {
        if !workloads::selected(workload.name) {
            continue;
        }
        println!("{} ({}), through the API server, all-WASM default profile:", workload.name, workload.shape());
        let wasm_measured = run_isolated(workload, &wasm, &runtime, &components);
        let native_measured = native.as_ref().map(|native| {
            println!(
                "{} ({}), through the API server, the same plugins linked natively:",
                workload.name,
                workload.shape()
            );
            run_isolated(workload, native, &runtime, &components)
        });
        summary.push((workload.name, wasm_measured, native_measured));
    }
    println!(
        "\nafter the caches synced (as upstream measures), and from the scheduler's start:\n{:<20} {:>20} {:>20} {:>12} {:>22}",
        "workload", "WASM pods/s (CPU)", "native pods/s (CPU)", "WASM/native", "from start: WASM/native"
    );
    for (name, wasm, native) in summary {
        let shown = format!("{:.0} ({:.0})", wasm.after_sync, wasm.per_cpu);
        match native {
            Some(native) => {
                let ratio =
                    format!("{:.2} ({:.2})", wasm.after_sync / native.after_sync, wasm.per_cpu / native.per_cpu);
                let from_start = format!(
                    "{:.0}/{:.0} = {:.2}",
                    wasm.from_start,
                    native.from_start,
                    wasm.from_start / native.from_start
                );
                let native = format!("{:.0} ({:.0})", native.after_sync, native.per_cpu);
                println!("{name:<20} {shown:>20} {native:>20} {ratio:>12} {from_start:>22}");
            }
            None => println!(
                "{name:<20} {shown:>20}   (build with --features native-plugins for native; from start {:.0})",
                wasm.from_start
            ),
        }
    }
}
