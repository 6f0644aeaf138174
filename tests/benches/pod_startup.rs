//! Node agent benchmark: pod startup latency (create → Running, image already present) for 50
//! pods on one node with a real containerd, p50/p99 printed. Target: p99 ≤ 1 s.
//!
//! `cargo build -p capstan && cargo bench -p capstan-e2e --bench pod_startup` (add `-- --pods N`).

#![allow(clippy::expect_used, reason = "a benchmark aborts on the first failure")]
#![allow(clippy::cast_precision_loss, reason = "durations are printed, not computed on")]

use std::collections::HashMap;
use std::process::Command;
use std::time::{Duration, Instant};

use capstan_testbed::{CapstanServer, capstan_binary, ensure_installed};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::watcher;

const NODE: &str = "bench-node";

async fn client(server: &CapstanServer) -> kube::Client {
    let kubeconfig = Kubeconfig::read_from(server.kubeconfig()).expect("read kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await.expect("config");
    kube::Client::try_from(config).expect("client")
}

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "app", "image": "capstan.local/busybox:latest", "command": ["sleep", "3600"],
                "resources": {"limits": {"cpu": "50m", "memory": "16Mi"}}}],
        },
    }))
    .expect("pod")
}

fn capstan(args: &[&str], dir: &std::path::Path) {
    let status = Command::new(capstan_binary().expect("capstan binary"))
        .args(args)
        .current_dir(dir)
        .status()
        .expect("run capstan");
    assert!(status.success(), "capstan {args:?} failed");
}

/// CPU time (user + system) used so far by process `pid`, from `/proc/<pid>/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
    // After the command: state is field 3, utime 14 and stime 15 (1-based, in clock ticks).
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    ticks as f64 / 100.0
}

/// CPU seconds of the server, of its containerd, and of the whole machine (all CPUs, from
/// `/proc/stat`), to show where a burst's time goes.
fn cpu_split(server: u32, containerd: Option<u32>) -> [f64; 3] {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let busy: u64 = stat
        .lines()
        .next()
        .map(|l| l.split_whitespace().skip(1).take(8).enumerate().filter(|(i, _)| *i != 3 && *i != 4))
        .into_iter()
        .flatten()
        .filter_map(|(_, v)| v.parse::<u64>().ok())
        .sum();
    [cpu_seconds(server), containerd.map_or(0.0, cpu_seconds), busy as f64 / 100.0]
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let index = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[index]
}

/// Deletes the bench pods and waits until they are gone from the API and from containerd.
async fn delete_all(pods: &Api<Pod>, socket: &std::path::Path) {
    pods.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=bench")).await.expect("delete");
    let deadline = Instant::now() + Duration::from_mins(2);
    while Instant::now() < deadline {
        let listed = pods.list(&ListParams::default().labels("app=bench")).await.expect("list").items.is_empty();
        let containers = Command::new("ctr")
            .arg("--address")
            .arg(socket)
            .args(["-n", "k8s.io", "containers", "list", "-q"])
            .output()
            .expect("run ctr");
        if listed && containers.stdout.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    panic!("the bench pods were not deleted within 120s");
}

#[tokio::main]
#[allow(clippy::too_many_lines, reason = "one benchmark run, phase after phase")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let count = args
        .iter()
        .position(|a| a == "--pods")
        .and_then(|i| args.get(i + 1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(50usize);
    for command in ["containerd", "runc", "ctr", "busybox", "cc"] {
        ensure_installed(command, "node").expect("install node dependencies");
    }
    let server = CapstanServer::start_with(&[
        "--node=true",
        "--node-name",
        NODE,
        "--cluster-cidr",
        "10.120.0.0/16",
        "--kubelet-port",
        "0",
    ])
    .expect("start capstan server");
    let client = client(&server).await;
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let out =
            server.kubectl(&["get", "node", NODE, "-o", "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}"]);
        if out.stdout == b"True" {
            break;
        }
        assert!(Instant::now() < deadline, "the node did not become Ready");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Measure the steady state: every shipped component compiled and loaded first.
    let plugins: Api<kube::api::DynamicObject> = Api::all_with(
        client.clone(),
        &kube::api::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("capstan.io", "v1alpha1", "Plugin")),
    );
    let deadline = Instant::now() + Duration::from_mins(2);
    loop {
        let listed = plugins.list(&ListParams::default()).await.expect("list plugins").items;
        if !listed.is_empty() && listed.iter().all(|p| p.data["status"]["state"] == "Loaded") {
            break;
        }
        assert!(Instant::now() < deadline, "the shipped components did not all load");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let dir = server.dir().to_path_buf();
    capstan(&["image", "build-busybox", "busybox.tar"], &dir);
    capstan(&["image", "import", "busybox.tar", "--data-dir", "data"], &dir);

    let socket = dir.join("data/node/containerd/containerd.sock");
    let pods: Api<Pod> = Api::namespaced(client, "default");
    let mut events = Box::pin(watcher(pods.clone(), watcher::Config::default().labels("app=bench")));
    let mut created: HashMap<String, Instant> = HashMap::new();
    let mut running: HashMap<String, Duration> = HashMap::new();
    let containerd = Command::new("pgrep")
        .args(["-f", &format!("containerd --config {}", dir.join("data/node/containerd").display())])
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().next()?.parse().ok());
    let cpu_before = cpu_split(server.pid(), containerd);
    let started = Instant::now();
    for i in 0..count {
        let name = format!("bench-{i}");
        created.insert(name.clone(), Instant::now());
        pods.create(&PostParams::default(), &pod(&name)).await.expect("create pod");
    }
    let created_in = started.elapsed();
    let deadline = Instant::now() + Duration::from_mins(5);
    while running.len() < count && Instant::now() < deadline {
        let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(5), events.next()).await else { continue };
        let event = event.expect("watch pods");
        if let watcher::Event::Apply(pod) | watcher::Event::InitApply(pod) = event {
            let name = pod.metadata.name.clone().unwrap_or_default();
            let phase = pod.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_default();
            if phase == "Running"
                && let Some(at) = created.get(&name)
            {
                running.entry(name).or_insert_with(|| at.elapsed());
            }
        }
    }
    let all_running = started.elapsed();
    let cpu_after = cpu_split(server.pid(), containerd);
    let mut latencies: Vec<Duration> = running.values().copied().collect();
    latencies.sort();
    assert_eq!(latencies.len(), count, "only {} of {count} pods reached Running", latencies.len());
    println!("pod startup (create → Running, image present) on one node with containerd:");
    println!("  burst: {count} pods created at once");
    println!("  creates took {:.2}s; all Running after {:.2}s", created_in.as_secs_f64(), all_running.as_secs_f64());
    println!(
        "  p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms (target p99 ≤ 1000 ms), min {:.0} ms",
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.last().copied().unwrap_or_default().as_secs_f64() * 1000.0,
        latencies.first().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    let [server_cpu, containerd_cpu, machine_cpu] = [0, 1, 2].map(|i| cpu_after[i] - cpu_before[i]);
    println!(
        "  CPU during the burst: capstan server {server_cpu:.1} s, containerd {containerd_cpu:.1} s, whole machine \
         {machine_cpu:.1} s (shims, runc, CNI and anything else running = the rest)"
    );

    delete_all(&pods, &socket).await;

    // One at a time: the latency of a single pod start without queueing behind others.
    let mut sequential = Vec::new();
    for i in 0..count {
        let name = format!("one-{i}");
        let at = Instant::now();
        pods.create(&PostParams::default(), &pod(&name)).await.expect("create pod");
        loop {
            let Ok(Some(event)) = tokio::time::timeout(Duration::from_secs(30), events.next()).await else {
                panic!("pod {name} did not reach Running");
            };
            if let Ok(watcher::Event::Apply(pod)) = event
                && pod.metadata.name.as_deref() == Some(name.as_str())
                && pod.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
            {
                sequential.push(at.elapsed());
                break;
            }
        }
    }
    sequential.sort();
    println!(
        "  one at a time ({count} pods): p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        percentile(&sequential, 0.50).as_secs_f64() * 1000.0,
        percentile(&sequential, 0.99).as_secs_f64() * 1000.0,
        sequential.last().copied().unwrap_or_default().as_secs_f64() * 1000.0
    );
    delete_all(&pods, &socket).await;
    let conflist = dir.join("data/node/containerd/cni/net.d/10-capstan.conflist");
    if let Some(bridge) = std::fs::read_to_string(conflist)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|c| c["plugins"][0]["bridge"].as_str().map(String::from))
    {
        let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    }
}
