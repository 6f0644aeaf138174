//! Per-plugin call metrics: counters and a latency histogram, cheap enough for every call.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency histogram's buckets, in seconds (Prometheus `le`); a last bucket
/// (`+Inf`) catches the rest. Fine below 100 µs, where admission policies and scheduler calls live, so a p99 against a
/// 50 µs target can be read off them.
pub const LATENCY_BUCKETS_SECONDS: [f64; 18] = [
    0.000_01, 0.000_02, 0.000_03, 0.000_04, 0.000_05, 0.000_06, 0.000_075, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.005,
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0,
];

/// A latency histogram over [`LATENCY_BUCKETS_SECONDS`], lock-free, for anything timed on a
/// hot path (plugin calls here; the API server's admission steps).
#[derive(Default)]
pub struct Histogram {
    count: AtomicU64,
    nanos_sum: AtomicU64,
    // One count per bucket of LATENCY_BUCKETS_SECONDS plus +Inf; not cumulative.
    buckets: [AtomicU64; LATENCY_BUCKETS_SECONDS.len() + 1],
}

impl Histogram {
    /// Counts one observation.
    pub fn observe(&self, latency: Duration) {
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.nanos_sum.fetch_add(nanos, Ordering::Relaxed);
        let seconds = latency.as_secs_f64();
        let bucket =
            LATENCY_BUCKETS_SECONDS.iter().position(|&le| seconds <= le).unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    /// Observations so far.
    #[must_use]
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Their total, in seconds.
    #[must_use]
    pub fn sum_seconds(&self) -> f64 {
        Duration::from_nanos(self.nanos_sum.load(Ordering::Relaxed)).as_secs_f64()
    }

    /// Cumulative buckets: `(upper bound in seconds, observations at most that long)`, the last
    /// bound infinite.
    #[must_use]
    pub fn cumulative(&self) -> Vec<(f64, u64)> {
        let mut cumulative = 0;
        self.buckets
            .iter()
            .enumerate()
            .map(|(i, count)| {
                cumulative += count.load(Ordering::Relaxed);
                (LATENCY_BUCKETS_SECONDS.get(i).copied().unwrap_or(f64::INFINITY), cumulative)
            })
            .collect()
    }

    /// Writes the histogram's series (`_bucket`, `_sum`, `_count`) named `name` with `labels`
    /// (Prometheus label pairs, already escaped, without braces) in the text exposition format.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        render_histogram(out, name, labels, &self.cumulative(), self.sum_seconds(), self.count());
    }
}

/// Writes one histogram's series in the text exposition format.
fn render_histogram(out: &mut String, name: &str, labels: &str, buckets: &[(f64, u64)], sum: f64, count: u64) {
    let separator = if labels.is_empty() { "" } else { "," };
    for (le, observed) in buckets {
        let le = if le.is_infinite() { "+Inf".to_owned() } else { le.to_string() };
        let _ = writeln!(out, "{name}_bucket{{{labels}{separator}le=\"{le}\"}} {observed}");
    }
    let braced = if labels.is_empty() { String::new() } else { format!("{{{labels}}}") };
    let _ = writeln!(out, "{name}_sum{braced} {sum}");
    let _ = writeln!(out, "{name}_count{braced} {count}");
}

/// Escapes a Prometheus label value.
#[must_use]
pub fn escape_label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Live counters of one plugin, shared by all its versions.
#[derive(Default)]
pub(crate) struct Metrics {
    errors: AtomicU64,
    timeouts: AtomicU64,
    out_of_memory: AtomicU64,
    traps: AtomicU64,
    reloads: AtomicU64,
    failed_reloads: AtomicU64,
    latency: Histogram,
    residency: Arc<Residency>,
}

/// What a plugin's live instances hold, across its versions: updated by each instance's store
/// as its linear memory grows and when it is dropped.
#[derive(Default)]
pub(crate) struct Residency {
    bytes: AtomicU64,
    instances: AtomicU64,
}

impl Residency {
    pub(crate) fn instance_created(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn grew(&self, bytes: usize) {
        self.bytes.fetch_add(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// An instance holding `bytes` of linear memory is gone.
    pub(crate) fn instance_dropped(&self, bytes: usize) {
        self.bytes.fetch_sub(u64::try_from(bytes).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.instances.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How a call ended, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Timeout,
    OutOfMemory,
    Trap,
    OtherError,
}

impl Metrics {
    pub(crate) fn record_call(&self, latency: Duration, outcome: Outcome) {
        self.latency.observe(latency);
        if outcome == Outcome::Ok {
            return;
        }
        self.errors.fetch_add(1, Ordering::Relaxed);
        let counter = match outcome {
            Outcome::Timeout => &self.timeouts,
            Outcome::OutOfMemory => &self.out_of_memory,
            Outcome::Trap => &self.traps,
            Outcome::Ok | Outcome::OtherError => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The gauge every instance's store updates.
    pub(crate) fn residency(&self) -> &Arc<Residency> {
        &self.residency
    }

    pub(crate) fn record_reload(&self, succeeded: bool) {
        let counter = if succeeded { &self.reloads } else { &self.failed_reloads };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self, plugin: &str, world: &str) -> MetricsSnapshot {
        MetricsSnapshot {
            plugin: plugin.to_owned(),
            world: world.to_owned(),
            calls: self.latency.count(),
            errors: self.errors.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
            out_of_memory: self.out_of_memory.load(Ordering::Relaxed),
            traps: self.traps.load(Ordering::Relaxed),
            reloads: self.reloads.load(Ordering::Relaxed),
            failed_reloads: self.failed_reloads.load(Ordering::Relaxed),
            latency_seconds_sum: self.latency.sum_seconds(),
            latency_buckets: self.latency.cumulative(),
            memory_bytes: self.residency.bytes.load(Ordering::Relaxed),
            instances: self.residency.instances.load(Ordering::Relaxed),
        }
    }
}

/// A plugin's counters at one moment.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsSnapshot {
    /// The plugin's name.
    pub plugin: String,
    /// The WIT world it implements.
    pub world: String,
    /// Calls made, failed or not.
    pub calls: u64,
    /// Calls that failed, for any reason.
    pub errors: u64,
    /// Calls stopped at their deadline (also counted in `errors`).
    pub timeouts: u64,
    /// Calls stopped at the memory cap (also counted in `errors`).
    pub out_of_memory: u64,
    /// Calls that trapped (also counted in `errors`).
    pub traps: u64,
    /// Successful reloads.
    pub reloads: u64,
    /// Reloads refused because the new version failed to compile, link or configure.
    pub failed_reloads: u64,
    /// Total time spent in calls, in seconds.
    pub latency_seconds_sum: f64,
    /// Cumulative latency histogram: `(upper bound in seconds, calls at most that long)`, the
    /// last bound infinite.
    pub latency_buckets: Vec<(f64, u64)>,
    /// Linear memory held by its live instances, in bytes (WebAssembly memory never shrinks: an
    /// instance keeps its largest size until it is dropped).
    pub memory_bytes: u64,
    /// Instances alive, idle or serving a call.
    pub instances: u64,
}

impl MetricsSnapshot {
    /// The latency under which at least `quantile` (0..=1) of calls finished, as the upper bound
    /// of a histogram bucket; `None` before the first call.
    #[must_use]
    #[allow(clippy::cast_precision_loss, reason = "call counts far below 2^52")]
    pub fn latency_quantile(&self, quantile: f64) -> Option<f64> {
        let target = (quantile * self.calls as f64).ceil().max(1.0);
        self.latency_buckets.iter().find(|(_, count)| *count as f64 >= target).map(|(le, _)| *le)
    }
}

/// A series' name, type (`counter` or `gauge`), help text and value in a snapshot.
type Series = (&'static str, &'static str, &'static str, fn(&MetricsSnapshot) -> u64);

/// Renders snapshots in the Prometheus text exposition format, for a `/metrics` endpoint.
#[must_use]
pub fn render_prometheus(snapshots: &[MetricsSnapshot]) -> String {
    let mut out = String::new();
    let series: [Series; 9] = [
        ("capstan_plugin_calls_total", "counter", "Calls made to a plugin.", |s| s.calls),
        ("capstan_plugin_errors_total", "counter", "Plugin calls that failed.", |s| s.errors),
        ("capstan_plugin_timeouts_total", "counter", "Plugin calls stopped at their deadline.", |s| s.timeouts),
        ("capstan_plugin_out_of_memory_total", "counter", "Plugin calls stopped at the memory cap.", |s| {
            s.out_of_memory
        }),
        ("capstan_plugin_traps_total", "counter", "Plugin calls that trapped.", |s| s.traps),
        ("capstan_plugin_reloads_total", "counter", "Successful plugin reloads.", |s| s.reloads),
        ("capstan_plugin_failed_reloads_total", "counter", "Plugin reloads refused.", |s| s.failed_reloads),
        ("capstan_plugin_memory_bytes", "gauge", "Linear memory held by a plugin's live instances.", |s| {
            s.memory_bytes
        }),
        ("capstan_plugin_instances", "gauge", "A plugin's live instances, idle or in a call.", |s| s.instances),
    ];
    for (name, kind, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for s in snapshots {
            let _ = writeln!(out, "{name}{{{}}} {}", labels(s), value(s));
        }
    }
    let name = "capstan_plugin_call_duration_seconds";
    let _ = writeln!(out, "# HELP {name} Latency of plugin calls.\n# TYPE {name} histogram");
    for s in snapshots {
        render_histogram(&mut out, name, &labels(s), &s.latency_buckets, s.latency_seconds_sum, s.calls);
    }
    out
}

fn labels(s: &MetricsSnapshot) -> String {
    format!("plugin=\"{}\",world=\"{}\"", escape_label(&s.plugin), escape_label(&s.world))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative_and_quantiles_read_bucket_bounds() {
        let metrics = Metrics::default();
        metrics.record_call(Duration::from_micros(3), Outcome::Ok);
        metrics.record_call(Duration::from_micros(25), Outcome::Ok);
        metrics.record_call(Duration::from_secs(9), Outcome::Timeout);
        let s = metrics.snapshot("p", "w");
        assert_eq!((s.calls, s.errors, s.timeouts), (3, 1, 1));
        assert_eq!(s.latency_buckets[0], (0.000_01, 1));
        assert_eq!(s.latency_buckets[1], (0.000_02, 1));
        assert_eq!(s.latency_buckets[2], (0.000_03, 2));
        assert_eq!(s.latency_buckets[4], (0.000_05, 2));
        assert_eq!(s.latency_buckets.last(), Some(&(f64::INFINITY, 3)));
        assert_eq!(s.latency_quantile(0.5), Some(0.000_03));
        assert_eq!(s.latency_quantile(0.99), Some(f64::INFINITY));
    }

    #[test]
    fn prometheus_text_names_each_plugin() {
        let metrics = Metrics::default();
        metrics.record_call(Duration::from_micros(3), Outcome::Trap);
        let text = render_prometheus(&[metrics.snapshot("needs \"quotes\"", "admission-policy")]);
        assert!(
            text.contains("capstan_plugin_traps_total{plugin=\"needs \\\"quotes\\\"\",world=\"admission-policy\"} 1")
        );
        assert!(text.contains("capstan_plugin_call_duration_seconds_bucket{plugin=\"needs \\\"quotes\\\"\",world=\"admission-policy\",le=\"+Inf\"} 1"));
    }

    #[test]
    fn a_histogram_renders_its_series_with_and_without_labels() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(15));
        histogram.observe(Duration::from_millis(2));
        let mut text = String::new();
        histogram.render(&mut text, "h", "type=\"admit\"");
        assert!(text.contains("h_bucket{type=\"admit\",le=\"0.00001\"} 0\n"), "{text}");
        assert!(text.contains("h_bucket{type=\"admit\",le=\"0.00002\"} 1\n"), "{text}");
        assert!(text.contains("h_bucket{type=\"admit\",le=\"0.005\"} 2\n"), "{text}");
        assert!(text.contains("h_count{type=\"admit\"} 2\n"), "{text}");
        let mut bare = String::new();
        histogram.render(&mut bare, "h", "");
        assert!(bare.contains("h_bucket{le=\"+Inf\"} 2\n") && bare.contains("h_sum 0.002015\n"), "{bare}");
    }
}
