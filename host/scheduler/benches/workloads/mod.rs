//! What both scheduler benchmarks share: the workloads (modelled on upstream `scheduler_perf`),
//! the objects they are made of, where the components are, and CPU accounting.

#![allow(dead_code, reason = "each benchmark uses part of it")]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde_json::json;

pub fn components_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CAPSTAN_BENCH_COMPONENTS") {
        return PathBuf::from(dir);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target"), PathBuf::from);
    target.join("wasm-plugins/wasm32-wasip2/release")
}

pub fn node(i: usize, cpu: &str) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": format!("node-{i}"), "labels": {
            "kubernetes.io/hostname": format!("node-{i}"),
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "status": {"allocatable": {"cpu": cpu, "memory": "128Gi", "pods": "110"}}
    }))
    .unwrap_or_default()
}

pub fn pod_with(i: usize, cpu: &str, priority: i32) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": "default", "uid": format!("uid-{i}"),
                     "labels": {"app": "bench"}},
        "spec": {"priority": priority, "containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": cpu, "memory": "500Mi"}}}]}
    }))
    .unwrap_or_default()
}

pub fn pod(i: usize) -> Pod {
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
pub struct Workload {
    pub name: &'static str,
    pub nodes: usize,
    pub node_cpu: &'static str,
    pub existing: usize,
    pub make_existing: fn(usize) -> Pod,
    pub new: usize,
    pub make_new: fn(usize) -> Pod,
}

impl Workload {
    pub fn shape(&self) -> String {
        format!("{} nodes, {} existing pods, {} new pods", self.nodes, self.existing, self.new)
    }
}

/// This thread's CPU time (user + system) in seconds, from `/proc/thread-self/stat`: on a
/// machine shared with builds, pods per CPU-second varies far less than pods per wall second.
pub fn thread_cpu_seconds() -> f64 {
    cpu_seconds("/proc/thread-self/stat")
}

/// User + system CPU seconds from a `/proc/.../stat` file (0 when unreadable).
pub fn cpu_seconds(path: &str) -> f64 {
    let stat = std::fs::read_to_string(path).unwrap_or_default();
    // Fields after the parenthesised command: state is field 3, utime 14 and stime 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<f64>().ok()).sum();
    ticks / 100.0
}

/// The workloads, in the order they run.
pub fn workloads() -> [Workload; 5] {
    [
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
    ]
}

/// Whether `BENCH_ONLY` (comma-separated workload names) selects `name`; all run without it.
pub fn selected(name: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| only.split(',').any(|w| w == name))
}

/// The component built from crate `name` (`node-resources-fit`) in `dir`.
pub fn component_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{}.wasm", name.replace('-', "_")))
}

/// Reads the components in `dir`, as the scheduler reads the ones Capstan ships.
pub fn component_reader(dir: &Path) -> capstan_scheduler::BuiltinComponents {
    let dir = dir.to_path_buf();
    Arc::new(move |name: &str| {
        let path = component_path(&dir, name);
        std::fs::read(&path).map_err(|e| format!("{}: {e} (build plugins/ first)", path.display()))
    })
}
