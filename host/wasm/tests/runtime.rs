//! The plugin runtime against real components built from `plugins/`: limits, failure isolation,
//! hot reload, the compile cache and metrics.

#![allow(clippy::expect_used, reason = "a test aborts on a failed expectation")]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use capstan_wasm::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, AdmissionWorld};
use capstan_wasm::{CacheUse, Cause, Limits, PluginSpec, Runtime, RuntimeConfig, render_prometheus};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        // A cache kept between runs: these tests load components; the cache test proves
        // compiling.
        let cache_dir = Some(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("capstan-wasm-cache"));
        let config = RuntimeConfig {
            cache_dir,
            epoch_tick: Duration::from_millis(1),
            pooled_instances: Some(64),
            ..RuntimeConfig::default()
        };
        Runtime::new(config).expect("runtime")
    })
}

fn load(name: &str, component: &str, limits: Limits) -> AdmissionPolicy {
    let spec = PluginSpec::new(name).with_limits(limits);
    runtime().load::<AdmissionWorld>(spec, &support::component(component)).expect("load")
}

fn healthy() -> AdmissionPolicy {
    load("require-label", "require_label", Limits::default())
}

fn pod(name: &str, labels: &str) -> AdmissionRequest {
    let object = format!(r#"{{"apiVersion":"v1","kind":"Pod","metadata":{{"name":"{name}","labels":{labels}}}}}"#);
    support::pod_request(name, Some(object))
}

fn labelled() -> AdmissionRequest {
    pod("web", r#"{"team":"core"}"#)
}

fn assert_healthy_serves(policy: &AdmissionPolicy) {
    let response = policy.validate(&labelled()).expect("healthy plugin serves");
    assert!(response.allowed, "{response:?}");
}

#[test]
fn require_label_allows_labelled_objects_and_denies_others_with_a_message() {
    let policy = healthy();
    assert!(policy.validate(&labelled()).expect("validate").allowed);
    let denied = policy.validate(&pod("bare", "{}")).expect("validate");
    assert!(!denied.allowed);
    assert_eq!(denied.message.as_deref(), Some(r#"Pod "bare" must have the label `team`"#));
    let metrics = policy.metrics();
    assert_eq!((metrics.calls, metrics.errors), (2, 0));
}

#[test]
fn configuration_is_given_to_every_instance_and_a_bad_one_refuses_the_load() {
    let bytes = support::component("require_label");
    let spec = PluginSpec::new("require-app").with_config(r#"{"label":"app"}"#);
    let policy = runtime().load::<AdmissionWorld>(spec, &bytes).expect("load");
    assert!(!policy.validate(&labelled()).expect("validate").allowed, "`team` no longer suffices");
    assert!(policy.validate(&pod("web", r#"{"app":"web"}"#)).expect("validate").allowed);

    let bad = PluginSpec::new("require-nothing").with_config(r#"{"label":""}"#);
    let error = runtime().load::<AdmissionWorld>(bad, &bytes).err().expect("refused");
    assert_eq!(error.plugin, "require-nothing");
    assert!(matches!(&error.cause, Cause::Configure(m) if m.contains("must not be empty")), "{error}");
}

#[test]
fn a_plugin_looping_forever_is_stopped_at_its_deadline_and_others_keep_serving() {
    let deadline = Duration::from_millis(100);
    let looping = load("loop-forever", "fixture_loop_forever", Limits { deadline, ..Limits::default() });
    let healthy = healthy();

    let started = Instant::now();
    let error = looping.validate(&labelled()).expect_err("stopped");
    let elapsed = started.elapsed();
    assert!(matches!(error.cause, Cause::DeadlineExceeded(d) if d == deadline), "{error}");
    assert!(elapsed >= deadline && elapsed < deadline * 10, "stopped after {elapsed:?}");
    assert!(error.to_string().starts_with("plugin loop-forever: call exceeded its deadline"), "{error}");

    assert_healthy_serves(&healthy);
    // The looping plugin itself keeps serving: the next call gets a fresh instance (and loops).
    assert!(matches!(looping.validate(&labelled()).expect_err("stopped").cause, Cause::DeadlineExceeded(_)));
    let metrics = looping.metrics();
    assert_eq!((metrics.calls, metrics.errors, metrics.timeouts), (2, 2, 2));
}

#[test]
fn an_attempt_within_a_budget_answers_or_steps_aside_uncounted() {
    let budget = Duration::from_millis(20);
    let looping =
        load("attempt-loop", "fixture_loop_forever", Limits { deadline: Duration::from_secs(5), ..Limits::default() });
    let healthy = load("attempt-healthy", "require_label", Limits::default());

    // A call that finishes within the budget answers, and counts.
    let answered = healthy.try_admit_within(budget, false, &labelled(), None).expect("no failure");
    assert!(answered.is_some_and(|response| response.allowed));
    assert_eq!(healthy.metrics().calls, 1);

    // One that would outlast it is stopped at the budget, not the deadline, and does not count.
    let started = Instant::now();
    let attempt = looping.try_admit_within(budget, false, &labelled(), None).expect("no failure");
    assert!(attempt.is_none() && started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    assert_eq!((looping.metrics().calls, looping.metrics().timeouts), (0, 0));

    // A panic inside the attempt (as a blocking WASI import raises on an async worker thread) is
    // caught, the instance discarded, and the plugin serves the next call.
    let panicked = healthy.try_call_within(budget, |_, _| -> wasmtime::Result<()> { panic!("cannot block here") });
    assert!(matches!(panicked, Ok(None)));
    assert!(healthy.validate(&labelled()).expect("serves after the panic").allowed);

    // A genuine failure is the call's answer: a trap is not retried.
    let trapping = load("attempt-trap", "fixture_trap", Limits::default());
    let error = trapping.try_admit_within(budget, false, &labelled(), None).expect_err("traps");
    assert!(matches!(error.cause, Cause::Trap(_)), "{error}");
    // With a budget no shorter than the deadline, running out of time is the call's answer too.
    let short = load("attempt-short", "fixture_loop_forever", Limits { deadline: budget, ..Limits::default() });
    let error = short.try_admit_within(budget, false, &labelled(), None).expect_err("times out");
    assert!(matches!(error.cause, Cause::DeadlineExceeded(_)), "{error}");
    assert_eq!(short.metrics().timeouts, 1);
}

/// A cluster that counts the calls it serves: every namespace exists and is Active. One that
/// `blocks` ends a call attempt before each call, as a cluster that waits on a store does.
#[derive(Default)]
struct CountingCluster(AtomicUsize, bool);

impl CountingCluster {
    fn blocking() -> Self {
        Self(AtomicUsize::new(0), true)
    }

    fn serve(&self) {
        if self.1 {
            capstan_wasm::leave_attempt();
        }
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl capstan_wasm::admission::Cluster for CountingCluster {
    fn get(
        &self,
        _resource: &capstan_wasm::admission::GroupVersionResource,
        _namespace: Option<&str>,
        name: &str,
    ) -> Result<Option<String>, capstan_wasm::admission::ClusterError> {
        self.serve();
        Ok(Some(format!(r#"{{"metadata":{{"name":"{name}"}},"status":{{"phase":"Active"}}}}"#)))
    }

    fn list(
        &self,
        _resource: &capstan_wasm::admission::GroupVersionResource,
        _namespace: Option<&str>,
    ) -> Result<Vec<String>, capstan_wasm::admission::ClusterError> {
        self.serve();
        Ok(Vec::new())
    }

    fn replace_status(
        &self,
        _resource: &capstan_wasm::admission::GroupVersionResource,
        _namespace: Option<&str>,
        _name: &str,
        _resource_version: &str,
        status: &str,
    ) -> Result<String, capstan_wasm::admission::ClusterError> {
        self.serve();
        Ok(status.to_owned())
    }
}

#[test]
fn an_attempt_never_reaches_a_blocking_cluster_the_call_made_again_does() {
    // A cluster call that blocks (or writes) ends the attempt before it, so the call made again
    // is the only one the cluster sees.
    let policy = load("attempt-cluster", "namespace_lifecycle", Limits::default());
    let cluster = Arc::new(CountingCluster::blocking());
    let attempt = policy.try_admit_within(Duration::from_secs(1), false, &labelled(), Some(cluster.clone()));
    assert!(matches!(attempt, Ok(None)), "{attempt:?}");
    assert_eq!(cluster.0.load(Ordering::SeqCst), 0);
    let response = policy.validate_with(&labelled(), Some(cluster.clone())).expect("the call made again");
    assert!(response.allowed, "{response:?}");
    assert_eq!(cluster.0.load(Ordering::SeqCst), 1);
    assert_eq!(policy.metrics().calls, 1, "the attempt is not counted");
}

#[test]
fn an_attempt_whose_cluster_answers_at_once_completes_in_place() {
    // A read the cluster answers from memory does not end the attempt: the call completes there.
    let policy = load("attempt-cached", "namespace_lifecycle", Limits::default());
    let cluster = Arc::new(CountingCluster::default());
    let attempt = policy.try_admit_within(Duration::from_secs(1), false, &labelled(), Some(cluster.clone()));
    let response = attempt.expect("no failure").expect("answered in the attempt");
    assert!(response.allowed, "{response:?}");
    assert_eq!(cluster.0.load(Ordering::SeqCst), 1);
    assert_eq!(policy.metrics().calls, 1);
}

#[test]
fn a_trapping_plugin_fails_only_its_own_calls() {
    let trapping = load("trap", "fixture_trap", Limits::default());
    let healthy = healthy();
    for _ in 0..3 {
        let error = trapping.validate(&labelled()).expect_err("traps");
        // The guest's panic message (from its stderr) leads, the trap follows.
        let Cause::Trap(message) = &error.cause else { panic!("a trap: {error}") };
        assert!(
            message.starts_with("trapped: panicked at fixtures/trap/src/lib.rs:")
                && message.contains(r#": fixture trap while admitting "web" (wasm trap: "#)
                && message.ends_with("unreachable` instruction executed)"),
            "{error}"
        );
        assert_healthy_serves(&healthy);
    }
    assert_eq!(trapping.metrics().traps, 3);
}

#[test]
fn a_memory_hog_fails_at_its_memory_cap_and_others_keep_serving() {
    let cap = 16 << 20;
    let hog = load("memory-hog", "fixture_memory_hog", Limits { memory_bytes: cap, ..Limits::default() });
    let healthy = healthy();
    let error = hog.validate(&labelled()).expect_err("out of memory");
    assert!(matches!(error.cause, Cause::OutOfMemory { limit_bytes } if limit_bytes == cap), "{error}");
    assert_healthy_serves(&healthy);
    assert!(matches!(hog.validate(&labelled()).expect_err("again").cause, Cause::OutOfMemory { .. }));
    assert_eq!(hog.metrics().out_of_memory, 2);
}

#[test]
fn instances_report_their_memory_and_one_grown_past_the_recycle_size_is_dropped() {
    let limits = Limits { max_instances: 1, recycle_above_bytes: Some(8 << 20), ..Limits::default() };
    let plugin = load("recycled", "fixture_memory_hog", limits);
    let fresh = plugin.metrics();
    assert_eq!(fresh.instances, 1, "the first instance is made at load");
    assert!(fresh.memory_bytes > 0 && fresh.memory_bytes < 8 << 20, "{}", fresh.memory_bytes);
    let keep = |mebibytes: usize| {
        let response = plugin.validate(&pod(&format!("keep-{mebibytes}"), "{}")).expect("call");
        assert!(response.allowed, "{response:?}");
        plugin.metrics()
    };
    // Below the recycle size the instance goes back to the pool, holding what it grew to.
    let kept = keep(2);
    assert_eq!(kept.instances, 1);
    assert!(kept.memory_bytes >= fresh.memory_bytes + (2 << 20), "{} after taking 2 MiB", kept.memory_bytes);
    // Past it, the instance is dropped after the call and its memory given back.
    let dropped = keep(12);
    assert_eq!((dropped.instances, dropped.memory_bytes), (0, 0));
    // The next call gets a fresh, small instance.
    let again = keep(0);
    assert_eq!(again.instances, 1);
    assert!(again.memory_bytes < 8 << 20, "{}", again.memory_bytes);
    let text = render_prometheus(&[again]);
    assert!(text.contains("capstan_plugin_instances{plugin=\"recycled\",world=\"admission-policy\"} 1"), "{text}");
    assert!(text.contains("# TYPE capstan_plugin_memory_bytes gauge"), "{text}");
}

#[test]
fn without_a_recycle_size_an_instance_keeps_the_memory_it_grew_to() {
    let plugin = load("kept", "fixture_memory_hog", Limits { max_instances: 1, ..Limits::default() });
    plugin.validate(&pod("keep-12", "{}")).expect("call");
    let metrics = plugin.metrics();
    assert_eq!(metrics.instances, 1);
    assert!(metrics.memory_bytes >= 12 << 20, "{}", metrics.memory_bytes);
}

#[test]
fn a_reload_under_a_stream_of_concurrent_calls_loses_none() {
    let v1 = support::component("require_label");
    let v2 = support::component("fixture_require_label_v2");
    let policy = load("reloaded", "require_label", Limits { max_instances: 4, ..Limits::default() });
    let stop = Arc::new(AtomicBool::new(false));
    let (answered_by_v1, answered_by_v2) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let callers: Vec<_> = (0..4)
        .map(|_| {
            let (policy, stop) = (policy.clone(), Arc::clone(&stop));
            let (v1, v2) = (Arc::clone(&answered_by_v1), Arc::clone(&answered_by_v2));
            std::thread::spawn(move || {
                let mut calls = 0_usize;
                while !stop.load(Ordering::Relaxed) {
                    let response = policy.validate(&labelled()).expect("no call fails during reloads");
                    assert!(response.allowed);
                    let counter = if is_v2(&response) { &v2 } else { &v1 };
                    counter.fetch_add(1, Ordering::Relaxed);
                    calls += 1;
                }
                calls
            })
        })
        .collect();

    for round in 0..6 {
        std::thread::sleep(Duration::from_millis(30));
        policy.reload(if round % 2 == 0 { &v2 } else { &v1 }).expect("reload");
    }
    std::thread::sleep(Duration::from_millis(30));
    stop.store(true, Ordering::Relaxed);
    let calls: usize = callers.into_iter().map(|t| t.join().expect("caller")).sum();

    let (by_v1, by_v2) = (answered_by_v1.load(Ordering::Relaxed), answered_by_v2.load(Ordering::Relaxed));
    assert_eq!(by_v1 + by_v2, calls, "every call was answered by one version or the other");
    assert!(by_v1 > 0 && by_v2 > 0, "both versions served: v1 {by_v1}, v2 {by_v2}");
    let metrics = policy.metrics();
    assert_eq!((metrics.calls, metrics.errors, metrics.reloads), (calls as u64, 0, 6));
    // The last reload installed v1; the version serving now says so.
    assert!(!is_v2(&policy.validate(&labelled()).expect("validate")));
    assert_eq!(policy.status().version.digest, capstan_wasm::Digest::of(&v1));
}

fn is_v2(response: &AdmissionResponse) -> bool {
    response.warnings.iter().any(|w| w == "version 2")
}

#[test]
fn a_broken_new_version_leaves_the_old_one_serving_and_says_why() {
    let policy = load("guarded", "require_label", Limits::default());
    let serving = policy.status().version.digest;

    let error = policy.reload(b"\0asm definitely not a component").expect_err("refused");
    assert!(matches!(error.cause, Cause::Compile(_)), "{error}");
    assert_healthy_serves(&policy);
    let status = policy.status();
    assert_eq!(status.version.digest, serving);
    assert!(
        status.last_error.as_deref().is_some_and(|e| e.starts_with("plugin guarded: does not compile")),
        "{status:?}"
    );

    let error = policy.reload(&support::component("fixture_wrong_world")).expect_err("refused");
    assert!(matches!(&error.cause, Cause::Link { world: "admission-policy", .. }), "{error}");
    assert!(error.to_string().contains("capstan:plugin/lifecycle"), "names what is missing: {error}");
    assert_healthy_serves(&policy);
    assert_eq!(policy.status().version.digest, serving);

    assert_eq!(policy.metrics().failed_reloads, 2);
    policy.reload(&support::component("fixture_require_label_v2")).expect("a good version still loads");
    assert_eq!(policy.status().last_error, None);
}

#[test]
fn the_second_load_of_the_same_bytes_comes_from_the_compile_cache() {
    let cache = tempfile::tempdir().expect("temp dir");
    let config =
        RuntimeConfig { cache_dir: Some(cache.path().to_owned()), pooled_instances: None, ..RuntimeConfig::default() };
    let bytes = support::component("require_label");

    let first = Runtime::new(config.clone()).expect("runtime");
    let policy = first.load::<AdmissionWorld>(PluginSpec::new("cached"), &bytes).expect("load");
    let CacheUse::Stored(artifact) = policy.status().version.cache else {
        panic!("first load compiles and stores: {:?}", policy.status().version.cache)
    };
    assert!(artifact.is_file() && artifact.starts_with(cache.path()));
    assert!(
        artifact
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with(capstan_wasm::Digest::of(&bytes).as_str()))
    );

    // Same runtime, and a new one as after a restart: both map the stored artifact.
    let again = first.load::<AdmissionWorld>(PluginSpec::new("cached-again"), &bytes).expect("load");
    assert_eq!(again.status().version.cache, CacheUse::Hit(artifact.clone()));
    let restarted = Runtime::new(config).expect("runtime");
    let reloaded = restarted.load::<AdmissionWorld>(PluginSpec::new("cached"), &bytes).expect("load");
    assert_eq!(reloaded.status().version.cache, CacheUse::Hit(artifact));
    assert_healthy_serves(&reloaded);
}

#[test]
fn a_call_waiting_for_a_busy_instance_still_ends_at_its_deadline() {
    let deadline = Duration::from_millis(200);
    let looping = load("single", "fixture_loop_forever", Limits { deadline, max_instances: 1, ..Limits::default() });
    let busy = std::thread::spawn({
        let looping = looping.clone();
        move || looping.validate(&labelled())
    });
    std::thread::sleep(Duration::from_millis(50));
    let started = Instant::now();
    let error = looping.validate(&labelled()).expect_err("no instance free in time");
    let elapsed = started.elapsed();
    // The wait counts against the deadline: waiting, then running on the instance freed at the
    // first call's deadline, it is stopped at its own.
    assert!(matches!(error.cause, Cause::Busy(_) | Cause::DeadlineExceeded(_)), "{error}");
    assert!(elapsed < deadline + Duration::from_millis(150), "ended after {elapsed:?}");
    assert!(matches!(busy.join().expect("thread").expect_err("stopped").cause, Cause::DeadlineExceeded(_)));
}

#[test]
fn a_call_waiting_for_the_only_instance_runs_as_soon_as_it_is_back() {
    let deadline = Duration::from_secs(10);
    let policy = load("one-at-a-time", "require_label", Limits { deadline, max_instances: 1, ..Limits::default() });
    // The instance comes back after a call that succeeded (returned to the pool) and after one
    // that failed (discarded, so the waiting call makes a new one): either way, the waiting
    // call is woken then, not at its deadline.
    for holder_fails in [false, true] {
        let holding = Duration::from_millis(300);
        let holder = std::thread::spawn({
            let policy = policy.clone();
            move || {
                policy.call(|_, _| {
                    std::thread::sleep(holding);
                    if holder_fails { Err(wasmtime::Error::msg("the holder's call failed")) } else { Ok(()) }
                })
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        let started = Instant::now();
        let response = policy.validate(&labelled()).expect("served once the instance is back");
        let waited = started.elapsed();
        assert!(response.allowed, "{response:?}");
        assert!(waited < Duration::from_secs(2), "woken after {waited:?} (holder failed: {holder_fails})");
        assert_eq!(holder.join().expect("holder").is_err(), holder_fails);
    }
}

#[test]
fn metrics_render_as_prometheus_text_per_plugin() {
    let policy = load("metered", "fixture_allow_all", Limits::default());
    policy.mutate(&labelled()).expect("mutate");
    let text = render_prometheus(&runtime().metrics());
    assert!(text.contains(r#"capstan_plugin_calls_total{plugin="metered",world="admission-policy"} 1"#), "{text}");
    assert!(
        text.contains(r#"capstan_plugin_call_duration_seconds_count{plugin="metered",world="admission-policy"} 1"#)
    );
}
