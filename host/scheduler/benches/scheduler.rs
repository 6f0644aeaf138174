//! Scheduler benchmark modelled on upstream `scheduler_perf`: workload `SchedulingBasic` (5,000
//! nodes, 1,000 pods already bound, then 10,000 new pods), then `TopologySpreading` (2,000 pods
//! with a zone constraint) and `PodAntiAffinity` (2,000 pods with required anti-affinity on the
//! hostname), each scheduled one by one through the all-WASM default profile (`PrioritySort` …
//! `DefaultBinder` as components) and assumed in the cache so the next cycle sees it. Prints
//! pods/s for the scheduling cycles (the API server's binding writes are not part of this
//! number).
//!
//! Run: `cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release
//! --target-dir $CARGO_TARGET_DIR/wasm-plugins` (what `host/components` builds too) then
//! `cargo bench -p capstan-scheduler --bench scheduler`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use capstan_scheduler::cache::Cache;
use capstan_scheduler::{SchedulerConfig, load_profiles, pod};
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

fn node(i: usize) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i}"), "labels": {
            "kubernetes.io/hostname": format!("node-{i}"),
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "status": {"allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"}}
    }))
    .unwrap_or_default()
}

fn pod(i: usize, node: Option<&str>) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": "default", "uid": format!("uid-{i}"),
                     "labels": {"app": "bench"}},
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}
    }))
    .unwrap_or_default()
}

/// A pod spread over zones (`maxSkew: 1`, `DoNotSchedule`), as `scheduler_perf`'s
/// `TopologySpreading` workload.
fn spread_pod(i: usize) -> Pod {
    let mut pod = pod(i, None);
    let spec = serde_json::json!([{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
        "whenUnsatisfiable": "DoNotSchedule", "labelSelector": {"matchLabels": {"app": "bench"}}}]);
    if let Some(s) = pod.spec.as_mut() {
        s.topology_spread_constraints = serde_json::from_value(spec).ok();
    }
    pod
}

/// A pod with required anti-affinity to its own kind on the hostname, as `scheduler_perf`'s
/// `PodAntiAffinity` workload.
fn anti_affinity_pod(i: usize) -> Pod {
    let mut pod = pod(i, None);
    let affinity = serde_json::json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"app": "bench"}}, "topologyKey": "kubernetes.io/hostname"}]}});
    if let Some(s) = pod.spec.as_mut() {
        s.affinity = serde_json::from_value(affinity).ok();
    }
    pod
}

/// Schedules `new` pods made by `make` onto `nodes` nodes holding `existing` pods; prints pods/s.
fn run(
    name: &str,
    profile: &capstan_scheduler::Profile,
    (nodes, existing, new): (usize, usize, usize),
    make: fn(usize) -> Pod,
) {
    let mut cache = Cache::default();
    for i in 0..nodes {
        cache.upsert_node(&node(i));
    }
    for i in 0..existing {
        cache.upsert_pod(&pod(i, Some(&format!("node-{}", i % nodes))));
    }
    let pods: Vec<Pod> = (existing..existing + new).map(make).collect();
    let mut start = 0;
    let began = Instant::now();
    let mut placed = 0usize;
    for pod in &pods {
        let info = pod::pod_info(pod).unwrap_or_else(|e| panic!("{e}"));
        let decision = profile.schedule(cache.nodes_mut(), &info, &mut start).unwrap_or_else(|e| panic!("{e}"));
        cache.assume(pod, &decision.node);
        profile.bind_plugins(cache.nodes(), &info, &decision).unwrap_or_else(|e| panic!("{e}"));
        placed += 1;
    }
    let elapsed = began.elapsed();
    println!(
        "{name} (all-WASM default profile, {nodes} nodes, {existing} existing pods, {new} new pods): \
         {placed} pods in {:.2} s = {:.0} pods/s (scheduling cycles, no API writes)",
        elapsed.as_secs_f64(),
        f64::from(u32::try_from(placed).unwrap_or(u32::MAX)) / elapsed.as_secs_f64()
    );
}

fn main() {
    let dir = components_dir();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let builtin: capstan_scheduler::BuiltinComponents = Arc::new(move |name: &str| {
        let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
        std::fs::read(&path).map_err(|e| format!("{}: {e} (build plugins/ first)", path.display()))
    });
    let profiles = load_profiles(&runtime, &SchedulerConfig::default(), &builtin).unwrap_or_else(|e| panic!("{e}"));
    let profile = &profiles[0];
    run("SchedulingBasic", profile, (5000, 1000, 10_000), |i| pod(i, None));
    for plugin in &profile.plugins {
        let m = plugin.handle.metrics();
        println!("  {:<34} {} calls, {:.3} s", plugin.name, m.calls, m.latency_seconds_sum);
    }
    if std::env::var("BENCH_ONLY").is_ok_and(|w| w == "SchedulingBasic") {
        return;
    }
    run("TopologySpreading", profile, (5000, 0, 2000), spread_pod);
    run("PodAntiAffinity", profile, (5000, 0, 2000), anti_affinity_pod);
}
