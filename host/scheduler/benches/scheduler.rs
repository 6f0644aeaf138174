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

mod workloads;

use std::time::Instant;

use capstan_scheduler::cache::Cache;
use capstan_scheduler::{CycleError, Profile, SchedulerConfig, load_profiles, pod};
use capstan_wasm::{Runtime, RuntimeConfig};
use k8s_openapi::api::core::v1::Pod;
use workloads::{Workload, node, thread_cpu_seconds};

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
    let dir = workloads::components_dir();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let builtin = workloads::component_reader(&dir);
    let config = SchedulerConfig::default();
    let wasm = load_profiles(&runtime, &config, &builtin).unwrap_or_else(|e| panic!("{e}")).remove(0);
    #[cfg(feature = "native-plugins")]
    let native = Some(capstan_scheduler::native::load_profiles(&config).unwrap_or_else(|e| panic!("{e}")).remove(0));
    #[cfg(not(feature = "native-plugins"))]
    let native: Option<Profile> = None;

    let workloads = workloads::workloads();
    let mut summary = Vec::new();
    for workload in &workloads {
        if !workloads::selected(workload.name) {
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
