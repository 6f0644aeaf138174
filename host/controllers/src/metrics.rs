//! Per-controller metrics: queue depth, reconcile rate, latency and errors.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Counters one controller keeps; read them with [`ControllerMetrics::snapshot`].
#[derive(Default, Debug)]
pub struct ControllerMetrics {
    reconciles: AtomicU64,
    errors: AtomicU64,
    requeues: AtomicU64,
    latency_micros: AtomicU64,
}

/// A controller's metrics at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSnapshot {
    /// Reconciles finished (any outcome).
    pub reconciles: u64,
    /// Reconciles that failed (an error result, or the component failed).
    pub errors: u64,
    /// Reconciles that asked to run again after a delay.
    pub requeues: u64,
    /// Total time spent reconciling.
    pub latency_total: Duration,
    /// Keys waiting in the queue.
    pub queue_depth: usize,
    /// Keys being reconciled.
    pub in_flight: usize,
}

/// How a reconcile ended, for the counters.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Outcome {
    Done,
    Requeue,
    Error,
}

impl ControllerMetrics {
    pub(crate) fn record(&self, outcome: Outcome, took: Duration) {
        self.reconciles.fetch_add(1, Ordering::Relaxed);
        self.latency_micros.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
        match outcome {
            Outcome::Done => {}
            Outcome::Requeue => {
                self.requeues.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Error => {
                self.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// The counters now, with the queue's depth and in-flight count.
    #[must_use]
    pub fn snapshot(&self, queue_depth: usize, in_flight: usize) -> MetricsSnapshot {
        MetricsSnapshot {
            reconciles: self.reconciles.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            requeues: self.requeues.load(Ordering::Relaxed),
            latency_total: Duration::from_micros(self.latency_micros.load(Ordering::Relaxed)),
            queue_depth,
            in_flight,
        }
    }
}

/// One metric: its name, Prometheus type and how to read it.
type Series = (&'static str, &'static str, fn(&MetricsSnapshot) -> String);

/// Renders controllers' metrics in the Prometheus text format, one series per controller.
#[must_use]
pub fn render_prometheus(controllers: &[(String, MetricsSnapshot)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let series: [Series; 5] = [
        ("capstan_controller_reconciles_total", "counter", |m| m.reconciles.to_string()),
        ("capstan_controller_reconcile_errors_total", "counter", |m| m.errors.to_string()),
        ("capstan_controller_reconcile_seconds_total", "counter", |m| m.latency_total.as_secs_f64().to_string()),
        ("capstan_controller_queue_depth", "gauge", |m| m.queue_depth.to_string()),
        ("capstan_controller_in_flight", "gauge", |m| m.in_flight.to_string()),
    ];
    for (name, kind, value) in series {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (controller, metrics) in controllers {
            let _ = writeln!(out, "{name}{{controller=\"{controller}\"}} {}", value(metrics));
        }
    }
    out
}
