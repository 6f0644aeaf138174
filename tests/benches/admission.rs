//! Admission benchmark: pod create latency (p50/p99, one client, so latency is not queueing)
//! with no admission policies, with one Rust policy, and with Capstan's built-in set — in one
//! run, side by side — plus what the plugins reported on `/metrics`.
//!
//! `cargo bench -p capstan-e2e --bench admission` (add `-- --quick` for 100 pods per case).

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

fn pod(name: &str) -> Pod {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"app": "bench"}},
        "spec": {"containers": [{"name": "app", "image": "busybox:1.36", "resources": {"requests": {"cpu": "10m"}}}]},
    }))
    .expect("pod")
}

/// Creates `count` pods one after another; returns p50 and p99.
async fn create_latency(server: &CapstanServer, count: usize) -> (Duration, Duration) {
    let api: Api<Pod> = Api::namespaced(client(server).await, "default");
    for i in 0..10 {
        api.create(&PostParams::default(), &pod(&format!("warm-{i}"))).await.expect("create pod");
    }
    let mut latencies = Vec::with_capacity(count);
    for i in 0..count {
        let began = Instant::now();
        api.create(&PostParams::default(), &pod(&format!("pod-{i:05}"))).await.expect("create pod");
        latencies.push(began.elapsed());
    }
    latencies.sort();
    (latencies[count / 2], latencies[count * 99 / 100])
}

fn one_rust_policy(server: &CapstanServer) {
    let component = capstan_testbed::component_path("require-label").expect("require-label component");
    let manifest = format!(
        "apiVersion: capstan.io/v1alpha1\nkind: Plugin\nmetadata: {{name: require-app}}\nspec:\n  kind: admission\n  \
         component: {{path: {:?}}}\n  config: {{label: app}}\n  admission:\n    rules:\n    - {{operations: [CREATE], \
         apiGroups: [''], apiVersions: [v1], resources: [pods]}}\n",
        component.display()
    );
    let out = server.kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifest));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let state = server.kubectl(&["get", "plugin", "require-app", "-o", "jsonpath={.status.state}"]);
        if String::from_utf8_lossy(&state.stdout) == "Loaded" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the policy never loaded");
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let count = if quick { 100 } else { 1000 };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let empty = std::env::temp_dir().join(format!("capstan-no-components-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("empty components dir");
    let empty = empty.to_string_lossy().into_owned();
    println!("pod create latency, one client, {count} pods per case");
    let mut baseline_p99 = Duration::ZERO;
    for case in ["no policies", "one Rust policy", "built-in set (7 policies)"] {
        // An empty components directory leaves the built-in policies out.
        let server = match case {
            "built-in set (7 policies)" => CapstanServer::start(),
            _ => CapstanServer::start_with(&["--components-dir", &empty]),
        }
        .expect("server");
        if case == "one Rust policy" {
            one_rust_policy(&server);
        }
        let (p50, p99) = runtime.block_on(create_latency(&server, count));
        if case == "no policies" {
            baseline_p99 = p99;
        }
        println!(
            "  {case:<28} p50 {:>8.1} µs  p99 {:>8.1} µs  (p99 vs none: {:+.1} µs)",
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            (p99.as_secs_f64() - baseline_p99.as_secs_f64()) * 1e6
        );
        let metrics = server.kubectl(&["get", "--raw", "/metrics"]);
        for line in String::from_utf8_lossy(&metrics.stdout).lines() {
            if line.starts_with("capstan_plugin_calls_total")
                || line.starts_with("capstan_plugin_call_duration_seconds_sum")
            {
                println!("    {line}");
            }
        }
    }
}
