//! Scheduler benchmark modelled on upstream `scheduler_perf` (workload `SchedulingBasic`): 5,000 nodes,
//! 1,000 pods already bound, then 10,000 new pods scheduled one by one through the all-WASM
//! default profile (PrioritySort … DefaultBinder as components), each assumed in the cache so the
//! next cycle sees it. Prints pods/s for the scheduling cycles (the API server's binding writes
//! are not part of this number).
//!
//! Run: `cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release` then
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
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target"), PathBuf::from);
    target.join("wasm32-wasip2/release")
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

fn main() {
    const NODES: usize = 5000;
    const EXISTING: usize = 1000;
    const NEW: usize = 10_000;
    let dir = components_dir();
    let runtime = Runtime::new(RuntimeConfig::default()).unwrap_or_else(|e| panic!("{e}"));
    let builtin: capstan_scheduler::BuiltinComponents = Arc::new(move |name: &str| {
        let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
        std::fs::read(&path).map_err(|e| format!("{}: {e} (build plugins/ first)", path.display()))
    });
    let profiles = load_profiles(&runtime, &SchedulerConfig::default(), &builtin).unwrap_or_else(|e| panic!("{e}"));
    let profile = &profiles[0];

    let mut cache = Cache::default();
    for i in 0..NODES {
        cache.upsert_node(&node(i));
    }
    for i in 0..EXISTING {
        cache.upsert_pod(&pod(i, Some(&format!("node-{}", i % NODES))));
    }
    let pods: Vec<Pod> = (EXISTING..EXISTING + NEW).map(|i| pod(i, None)).collect();

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
        "SchedulingBasic (all-WASM default profile, {NODES} nodes, {EXISTING} existing pods, {NEW} new pods): \
         {placed} pods in {:.2} s = {:.0} pods/s (scheduling cycles, no API writes)",
        elapsed.as_secs_f64(),
        f64::from(u32::try_from(placed).unwrap_or(u32::MAX)) / elapsed.as_secs_f64()
    );
    for plugin in &profile.plugins {
        let m = plugin.handle.metrics();
        println!("  {:<34} {m:?}", plugin.name);
    }
}
