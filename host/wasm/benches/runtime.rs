//! Plugin runtime benchmark: per guest language, the cost of instantiating a component, of an
//! empty call and of a call carrying a 4 KB object, and of (re)loading a component cold
//! (compiling) and from the compile cache. Then the Rust `require-label` policy's call on a
//! stored Pod, back to back and with the caches cleared before each call, as a server's calls
//! mostly run (p50/p90/p99).
//!
//! `cargo bench -p capstan-wasm --bench runtime` (add `-- --quick` for a short run). The Rust
//! guest is built with the host; the Python and JavaScript ones are the SDK examples that
//! `scripts/test` builds into `target/sdk-examples/` (the bench says how to build them when they
//! are missing, and fails).

#![allow(clippy::expect_used, reason = "a benchmark aborts on the first failure")]
#![allow(clippy::cast_precision_loss, reason = "durations are printed, not computed on")]

#[path = "../tests/support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use capstan_wasm::admission::{AdmissionRequest, AdmissionWorld};
use capstan_wasm::{CacheUse, Limits, PluginSpec, Runtime, RuntimeConfig};

/// The guests measured: language, component file (relative to the repository), and how to
/// build it when it is missing.
const GUESTS: &[(&str, &str, &str)] = &[
    (
        "python",
        "target/sdk-examples/default_team.wasm",
        "sdk/python/build sdk/python/examples/default-team target/sdk-examples/default_team.wasm",
    ),
    (
        "js",
        "target/sdk-examples/registry_allow_list.wasm",
        "sdk/js/build sdk/js/examples/registry-allow-list/policy.js target/sdk-examples/registry_allow_list.wasm",
    ),
];

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (calls, loads) = if quick { (20_000, 5) } else { (200_000, 20) };
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut guests = vec![("rust", support::component("fixture_allow_all"))];
    for (lang, file, build) in GUESTS {
        match std::fs::read(repo.join(file)) {
            Ok(bytes) => guests.push((lang, bytes)),
            Err(e) => {
                eprintln!(
                    "cannot read the {lang} guest {file} ({e}); build it from the repository root with\n  {build}\n(scripts/test builds it too)"
                );
                std::process::exit(1);
            }
        }
    }
    println!(
        "{:<6} {:>9} {:>14} {:>12} {:>16} {:>14} {:>14} {:>14}",
        "lang", "size", "instantiate", "empty call", "(raw wasmtime)", "4 KB call", "load (cold)", "load (cached)"
    );
    for (lang, bytes) in &guests {
        // Python and JavaScript components take seconds to compile and tens of MB per
        // instance: fewer rounds, and calls scaled to their cost.
        let (calls, loads) = if *lang == "rust" { (calls, loads) } else { (calls / 10, loads.min(3)) };
        row(lang, bytes, calls, loads);
    }
    println!(
        "(calls reuse a pooled instance; instantiate = a new \
         instance plus `configure`, as when the pool grows; load = compile or map, link, first \
         instance; medians. Guests: Rust plugins/fixtures/allow-all, Python \
         sdk/python/examples/default-team, JavaScript sdk/js/examples/registry-allow-list; each \
         call is `validate`)"
    );
    cold_calls(if quick { 2_000 } else { 20_000 });
}

/// The Rust `require-label` policy on the Pod a server hands it, called as a server calls it:
/// between requests the server's own work (HTTP, serde, the store) pushes the call's code and
/// data out of the caches. Stood in for here by touching 8 MB before each call; percentiles of
/// the call alone, against the same call back to back.
fn cold_calls(calls: usize) {
    let runtime = Runtime::new(RuntimeConfig::default()).expect("runtime");
    let spec = PluginSpec::new("require-label").with_config(r#"{"label": "app"}"#);
    let policy = runtime.load::<AdmissionWorld>(spec, &support::component("require_label")).expect("load");
    let mut request = support::pod_request("web", Some(stored_pod()));
    "kubernetes-admin".clone_into(&mut request.user_info.username);
    request.user_info.groups = vec!["system:masters".to_owned(), "system:authenticated".to_owned()];
    request.options = Some(r#"{"kind":"CreateOptions","apiVersion":"meta.k8s.io/v1"}"#.to_owned());
    let mut clutter = vec![0_u64; (8 << 20) / 8];
    let mut sample = |touch: bool| {
        let mut took: Vec<Duration> = (0..calls)
            .map(|i| {
                if touch {
                    for (j, word) in clutter.iter_mut().enumerate().step_by(8) {
                        *word = word.wrapping_add((i ^ j) as u64);
                    }
                }
                let started = Instant::now();
                let response = policy.validate(&request).expect("call");
                let took = started.elapsed();
                assert!(response.allowed, "{:?}", response.message);
                took
            })
            .collect();
        took.sort();
        let at = |q: usize| fmt(took[(took.len() * q / 100).min(took.len() - 1)]);
        format!("p50 {}, p90 {}, p99 {}", at(50), at(90), at(99))
    };
    let hot = sample(false);
    let cold = sample(true);
    println!(
        "require-label on a stored 1.6 KB Pod, {calls} calls:\n  back to back:                 {hot}\n  \
         caches cleared (8 MB touched): {cold}"
    );
    std::hint::black_box(&clutter);
}

/// A Pod as the API server stores and admits it: defaulted spec, managed fields, labels
/// (`app` among them, so the policy allows it).
fn stored_pod() -> String {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": "web-7d9f8b6c5-x2x4q", "namespace": "default", "generateName": "web-7d9f8b6c5-",
            "uid": "6f1c3b9e-2a57-4c1e-9d0b-3f6a1e2b7c44", "creationTimestamp": "2026-11-24T10:00:00Z",
            "labels": {"app": "web", "pod-template-hash": "7d9f8b6c5", "bench": "policed"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8b6c5",
                "uid": "0b6a2e1d-5c3f-4a8e-b7d9-1e2f3a4b5c6d", "controller": true, "blockOwnerDeletion": true}],
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
                "time": "2026-11-24T10:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {
                "f:generateName": {}, "f:labels": {".": {}, "f:app": {}, "f:pod-template-hash": {}},
                "f:ownerReferences": {".": {}, "k:{\"uid\":\"0b6a2e1d-5c3f-4a8e-b7d9-1e2f3a4b5c6d\"}": {}}},
                "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {},
                "f:resources": {".": {}, "f:requests": {".": {}, "f:cpu": {}}}}}}}}]
        },
        "spec": {
            "containers": [{"name": "app", "image": "busybox:1.36", "resources": {"requests": {"cpu": "10m"}},
                "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default", "serviceAccount": "default", "securityContext": {},
            "schedulerName": "default-scheduler", "priority": 0, "enableServiceLinks": true,
            "preemptionPolicy": "PreemptLowerPriority",
            "tolerations": [
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}]
        },
        "status": {"phase": "Pending", "qosClass": "Burstable"}
    })
    .to_string()
}

/// Measures one guest and prints its row.
fn row(lang: &str, bytes: &[u8], calls: usize, loads: usize) {
    let cache = tempfile::tempdir().expect("temp dir");
    let runtime = Runtime::new(RuntimeConfig { cache_dir: Some(cache.path().to_owned()), ..RuntimeConfig::default() })
        .expect("runtime");
    let uncached =
        Runtime::new(RuntimeConfig { pooled_instances: Some(16), ..RuntimeConfig::default() }).expect("runtime");
    let cold = median(loads, || load_time(&uncached, bytes, None));
    let cached = median(loads, || load_time(&runtime, bytes, Some(true)));
    let instantiate = instantiate_time(&runtime, bytes, if lang == "rust" { loads * 10 } else { loads * 2 });
    let limits = Limits { deadline: Duration::from_secs(30), ..Limits::default() };
    let policy = runtime.load::<AdmissionWorld>(PluginSpec::new("allow-all").with_limits(limits), bytes).expect("load");
    let empty_request = request(None);
    let empty = per_call(calls, || {
        policy.validate(&empty_request).expect("call");
    });
    // Baseline: the same call straight through wasmtime on one held instance, without the
    // runtime's pool, deadline reset and metrics.
    let raw = policy
        .call(|instance, store| {
            let started = Instant::now();
            for _ in 0..calls {
                instance.capstan_plugin_admission().call_validate(&mut *store, &empty_request)?;
            }
            Ok(started.elapsed() / u32::try_from(calls).expect("calls fit u32"))
        })
        .expect("raw calls");
    let object_request = request(Some(object_of_4kb()));
    let with_object = per_call(calls, || {
        policy.validate(&object_request).expect("call");
    });
    println!(
        "{:<6} {:>7}KB {:>14} {:>12} {:>16} {:>14} {:>14} {:>14}",
        lang,
        bytes.len() / 1024,
        fmt(instantiate),
        fmt(empty),
        fmt(raw),
        fmt(with_object),
        fmt(cold),
        fmt(cached)
    );
}

/// Loads the component as a new plugin; `expect_hit` checks where it came from.
fn load_time(runtime: &Runtime, bytes: &[u8], expect_hit: Option<bool>) -> Duration {
    let started = Instant::now();
    let plugin = runtime.load::<AdmissionWorld>(PluginSpec::new("bench"), bytes).expect("load");
    let elapsed = started.elapsed();
    let cache = plugin.status().version.cache;
    if let Some(hit) = expect_hit {
        // The first cached load compiles and stores; every later one must map the artifact.
        assert!(!hit || matches!(cache, CacheUse::Hit(_) | CacheUse::Stored(_)), "{cache:?}");
    }
    elapsed
}

/// The cost of a new instance (instantiate plus `configure`), as when a pool grows: calls nested
/// inside a call find no idle instance, so each creates one.
fn instantiate_time(runtime: &Runtime, bytes: &[u8], rounds: usize) -> Duration {
    let limits = Limits { max_instances: rounds + 1, ..Limits::default() };
    let plugin =
        runtime.load::<AdmissionWorld>(PluginSpec::new("instantiate").with_limits(limits), bytes).expect("load");
    let started = Instant::now();
    nest(&plugin, rounds);
    started.elapsed() / u32::try_from(rounds).expect("rounds fit u32")
}

fn nest(plugin: &capstan_wasm::admission::AdmissionPolicy, depth: usize) {
    if depth == 0 {
        return;
    }
    plugin
        .call(|_, _| {
            nest(plugin, depth - 1);
            Ok(())
        })
        .expect("call");
}

fn per_call(calls: usize, mut call: impl FnMut()) -> Duration {
    for _ in 0..calls / 10 {
        call();
    }
    let started = Instant::now();
    for _ in 0..calls {
        call();
    }
    started.elapsed() / u32::try_from(calls).expect("calls fit u32")
}

fn median(rounds: usize, mut measure: impl FnMut() -> Duration) -> Duration {
    let mut samples: Vec<Duration> = (0..rounds).map(|_| measure()).collect();
    samples.sort();
    samples[samples.len() / 2]
}

fn fmt(d: Duration) -> String {
    let micros = d.as_secs_f64() * 1e6;
    if micros < 1000.0 { format!("{micros:.2} µs") } else { format!("{:.2} ms", micros / 1000.0) }
}

fn request(object: Option<String>) -> AdmissionRequest {
    support::pod_request("web", object)
}

/// A Pod manifest padded with annotations to 4 KB.
fn object_of_4kb() -> String {
    let mut annotations = String::new();
    let mut i = 0;
    while annotations.len() < 3900 {
        let _ = write!(annotations, r#""example.com/note-{i}":"{}","#, "x".repeat(40));
        i += 1;
    }
    annotations.pop();
    format!(
        r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"web","namespace":"default","annotations":{{{annotations}}}}},"spec":{{"containers":[{{"name":"web","image":"busybox"}}]}}}}"#
    )
}
