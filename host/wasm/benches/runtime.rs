//! Plugin runtime benchmark: per guest language, the cost of instantiating a component, of an
//! empty call and of a call carrying a 4 KB object, and of (re)loading a component cold
//! (compiling) and from the compile cache.
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
