//! Scheduler benchmark modelled on upstream `scheduler_perf`, each pod scheduled one by one
//! through the default profile and assumed in the cache so the next cycle sees it (binding
//! writes to an API server are not part of the numbers). Workloads:
//!
//! - `SchedulingBasic`: 5,000 nodes, 1,000 pods already bound, 10,000 new pods;
//! - `TopologySpreading`: 5,000 nodes over 3 zones, 5,000 pods with a zone constraint
//!   (`maxSkew: 1`, `DoNotSchedule`);
//! - `PodAntiAffinity`: 5,000 nodes, 2,000 pods with required anti-affinity to their own kind on
//!   the hostname;
//! - `PodAffinity`: 5,000 nodes over 3 zones, 1,000 pods bound, 2,000 new pods with required
//!   affinity to their own kind in the zone;
//! - `Preemption`: 500 nodes of 4 CPUs filled by 2,000 low-priority 1-CPU pods, then 500
//!   high-priority 1-CPU pods, each of which preempts (PostFilter picks victims, the benchmark
//!   deletes them from the cache as the API server would, and the pod's next cycle places it).
//!
//! Each workload prints pods/s for the all-WASM default profile. Built with
//! `--features native-plugins`, it also runs the very same plugin crates linked natively and
//! prints both rates and their ratio.
//!
//! Run: `cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release
//! --target-dir $CARGO_TARGET_DIR/wasm-plugins` (what `host/components` builds too) then
//! `cargo bench -p capstan-scheduler --bench scheduler [--features native-plugins]`.
//! `BENCH_ONLY=SchedulingBasic,Preemption` runs only the workloads named;
//! `CAPSTAN_BENCH_COMPONENTS=dir` loads the components from `dir`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use capstan_scheduler::cache::Cache;
use capstan_scheduler::{CycleError, Profile, SchedulerConfig, load_profiles, pod};
use capstan_wasm::{Runtime, RuntimeConfig};
use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

fn components_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAPSTAN_BENCH_COMPONENTS") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target"), PathBuf::from);
    target.join("wasm-plugins/wasm32-wasip2/release")
}

fn node(i: usize, cpu: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i}"), "labels": {
            "kubernetes.io/hostname": format!("node-{i}"),
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "status": {"allocatable": {"cpu": cpu, "memory": "128Gi", "pods": "110"}}
    }))
    .unwrap_or_default()
}

fn pod_with(i: usize, cpu: &str, priority: i32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": "default", "uid": format!("uid-{i}"),
                     "labels": {"app": "bench"}},
        "spec": {"priority": priority, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": cpu, "memory": "500Mi"}}}]}
    }))
    .unwrap_or_default()
}

fn pod(i: usize) -> Pod {
    pod_with(i, "100m", 0)
}

fn with_spec(mut pod: Pod, field: &str, value: serde_json::Value) -> Pod {
    if let Some(spec) = pod.spec.take() {
        let mut spec = serde_json::to_value(spec).unwrap_or_default();
        spec[field] = value;
        pod.spec = serde_json::from_value(spec).ok();
    }
    pod
}

/// `TopologySpreading`'s pod: spread over zones.
fn spread_pod(i: usize) -> Pod {
    let constraint = json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "bench"}}}]);
    with_spec(pod(i), "topologySpreadConstraints", constraint)
}

/// `PodAntiAffinity`'s pod: never two on one host.
fn anti_affinity_pod(i: usize) -> Pod {
    let affinity = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "bench"}}, "topologyKey": "kubernetes.io/hostname"}]}});
    with_spec(pod(i), "affinity", affinity)
}

/// `PodAffinity`'s pod: with its own kind, in one zone.
fn affinity_pod(i: usize) -> Pod {
    let affinity = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "bench"}}, "topologyKey": "topology.kubernetes.io/zone"}]}});
    with_spec(pod(i), "affinity", affinity)
}

/// A workload: its nodes, the pods bound before measuring, and the pods measured.
struct Workload {
    name: &'static str,
    nodes: usize,
    node_cpu: &'static str,
    existing: usize,
    make_existing: fn(usize) -> Pod,
    new: usize,
    make_new: fn(usize) -> Pod,
}

impl Workload {
    fn shape(&self) -> String {
        format!("{} nodes, {} existing pods, {} new pods", self.nodes, self.existing, self.new)
    }
}

/// This thread's CPU time (user + system) in seconds, from `/proc/thread-self/stat`: on a
/// machine shared with builds, pods per CPU-second varies far less than pods per wall second.
fn thread_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the parenthesised command: state is field 3, utime 14 and stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// Schedules the workload's new pods through `profile`; returns pods per wall second and per
/// CPU-second. A pod that fits nowhere
/// and gets a PostFilter nomination has its victims deleted from the cache and is scheduled
/// again (counted once).
fn run(workload: &Workload, profile: &Profile) -> (f64, f64) {
    let mut cache = Cache::default();
    for i in 0..workload.nodes {
        cache.upsert_node(&node(i, workload.node_cpu));
    }
    for i in 0..workload.existing {
        let mut pod = (workload.make_existing)(i);
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = Some(format!("node-{}", i % workload.nodes));
        }
        cache.upsert_pod(&pod);
    }
    let pods: Vec<Pod> = (workload.existing..workload.existing + workload.new).map(workload.make_new).collect();
    let mut start = 0;
    let began = Instant::now();
    let cpu_began = thread_cpu_seconds();
    let (mut placed, mut preempted) = (0usize, 0usize);
    for pod in &pods {
        let info = pod::pod_info(pod).unwrap_or_else(|e| panic!("{e}"));
        let decision = match profile.schedule(cache.nodes_mut(), &info, &mut start) {
            Ok(decision) => decision,
            Err(CycleError::Unschedulable { preemption: Some(preemption), message }) => {
                assert!(!preemption.victims.is_empty(), "{}: nominated without victims: {message}", pod::key(pod));
                for victim in &preemption.victims {
                    cache.remove_pod(&format!("{}/{}", victim.namespace, victim.name));
                }
                preempted += preemption.victims.len();
                profile.schedule(cache.nodes_mut(), &info, &mut start).unwrap_or_else(|e| panic!("{e}"))
            }
            Err(e) => panic!("{}: {e}", pod::key(pod)),
        };
        cache.assume(pod, &decision.node);
        profile.bind_plugins(cache.nodes(), &info, &decision).unwrap_or_else(|e| panic!("{e}"));
        placed += 1;
    }
    let elapsed = began.elapsed().as_secs_f64();
    let cpu = thread_cpu_seconds() - cpu_began;
    let placed = f64::from(u32::try_from(placed).unwrap_or(u32::MAX));
    let rate = placed / elapsed;
    let victims = if preempted > 0 { format!(", {preempted} victims") } else { String::new() };
    println!(
        "  {placed} pods in {elapsed:.2} s = {rate:.0} pods/s; {cpu:.2} CPU-s = {:.0} pods per CPU-second{victims}",
        placed / cpu
    );
    (rate, placed / cpu)
}

fn main() {
    let dir = components_dir();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let builtin: capstan_scheduler::BuiltinComponents = Arc::new(move |name: &str| {
        let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
        std::fs::read(&path).map_err(|e| format!("{}: {e} (build plugins/ first)", path.display()))
    });
    let config = SchedulerConfig::default();
    let wasm = load_profiles(&runtime, &config, &builtin).unwrap_or_else(|e| panic!("{e}")).remove(0);
    #[cfg(feature = "native-plugins")]
    let native = Some(capstan_scheduler::native::load_profiles(&config).unwrap_or_else(|e| panic!("{e}")).remove(0));
    #[cfg(not(feature = "native-plugins"))]
    let native: Option<Profile> = None;

    let workloads = [
        Workload {
            name: "SchedulingBasic",
            nodes: 5000,
            node_cpu: "32",
            existing: 1000,
            make_existing: pod,
            new: 10_000,
            make_new: pod,
        },
        Workload {
            name: "TopologySpreading",
            nodes: 5000,
            node_cpu: "32",
            existing: 0,
            make_existing: spread_pod,
            new: 5000,
            make_new: spread_pod,
        },
        Workload {
            name: "PodAntiAffinity",
            nodes: 5000,
            node_cpu: "32",
            existing: 0,
            make_existing: anti_affinity_pod,
            new: 2000,
            make_new: anti_affinity_pod,
        },
        Workload {
            name: "PodAffinity",
            nodes: 5000,
            node_cpu: "32",
            existing: 1000,
            make_existing: affinity_pod,
            new: 2000,
            make_new: affinity_pod,
        },
        Workload {
            name: "Preemption",
            nodes: 500,
            node_cpu: "4",
            existing: 2000,
            make_existing: |i| pod_with(i, "1", 0),
            new: 500,
            make_new: |i| pod_with(i, "1", 100),
        },
    ];
    let only = std::env::var("BENCH_ONLY").ok();
    let mut summary = Vec::new();
    for workload in &workloads {
        if only.as_deref().is_some_and(|only| !only.split(',').any(|w| w == workload.name)) {
            continue;
        }
        println!("{} ({}), all-WASM default profile:", workload.name, workload.shape());
        let before: Vec<_> =
            wasm.plugins.iter().map(|p| p.handle.wasm().map(capstan_wasm::PluginHandle::metrics)).collect();
        let wasm_rate = run(workload, &wasm);
        for (plugin, before) in wasm.plugins.iter().zip(before) {
            if let (Some(after), Some(before)) = (plugin.handle.wasm().map(capstan_wasm::PluginHandle::metrics), before)
            {
                let (calls, seconds) =
                    (after.calls - before.calls, after.latency_seconds_sum - before.latency_seconds_sum);
                if calls > 0 {
                    println!("    {:<34} {calls:>8} calls {seconds:>8.3} s", plugin.name);
                }
            }
        }
        let native_rate = native.as_ref().map(|native| {
            println!("{} ({}), the same plugins linked natively:", workload.name, workload.shape());
            run(workload, native)
        });
        summary.push((workload.name, wasm_rate, native_rate));
    }
    println!("\n{:<20} {:>20} {:>20} {:>12}", "workload", "WASM pods/s (CPU)", "native pods/s (CPU)", "WASM/native");
    for (name, (wasm, wasm_cpu), native) in summary {
        let shown = format!("{wasm:.0} ({wasm_cpu:.0})");
        match native {
            Some((native, native_cpu)) => {
                let ratio = format!("{:.2} ({:.2})", wasm / native, wasm_cpu / native_cpu);
                println!("{name:<20} {shown:>20} {:>20} {ratio:>12}", format!("{native:.0} ({native_cpu:.0})"));
            }
            None => println!("{name:<20} {shown:>20}   (build with --features native-plugins for native)"),
        }
    }
}
