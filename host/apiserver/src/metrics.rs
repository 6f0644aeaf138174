//! Prometheus metrics: requests by verb, resource and code, with latency; store operations with
//! latency; registered watchers; admission's latency, per step and per policy, as upstream's
//! `apiserver_admission_step_admission_duration_seconds` and
//! `apiserver_admission_webhook_admission_duration_seconds`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use capstan_store::{RangeRequest, RangeResponse, Revision, Store, Txn, TxnResponse, WatchRequest, WatchStream};
use capstan_wasm::{Histogram, escape_label};

/// Verb, resource and HTTP code.
type RequestKey = (&'static str, String, u16);

/// An admission step's labels: its type (`admit` for mutating policies, `validate`), the
/// operation and whether it rejected the request.
pub type AdmissionKey = (&'static str, &'static str, bool);

/// Store operations of one kind: count and total seconds per key type.
type CountsByType = BTreeMap<String, (u64, f64)>;

/// Request counters: count and total seconds per key.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestKey, (u64, f64)>>,
    /// By operation, then by what the key names (see [`key_type`]).
    store: Mutex<BTreeMap<&'static str, CountsByType>>,
    /// Each admission phase, matching and every policy called.
    admission_steps: Mutex<BTreeMap<AdmissionKey, Histogram>>,
    /// Each policy call, by policy name: building its request, the call, applying its answer.
    admission_policies: Mutex<BTreeMap<String, BTreeMap<AdmissionKey, Histogram>>>,
}

impl Metrics {
    /// Records one finished request.
    pub fn record(&self, verb: &'static str, resource: &str, code: u16, elapsed: Duration) {
        if let Ok(mut requests) = self.requests.lock() {
            let entry = requests.entry((verb, resource.to_string(), code)).or_default();
            entry.0 += 1;
            entry.1 += elapsed.as_secs_f64();
        }
    }

    /// Records one store operation on a key of `kind` (see [`key_type`]).
    pub fn record_store(&self, operation: &'static str, kind: &str, elapsed: Duration) {
        if let Ok(mut store) = self.store.lock() {
            let kinds = store.entry(operation).or_default();
            let entry = match kinds.get_mut(kind) {
                Some(entry) => entry,
                None => kinds.entry(kind.to_string()).or_default(),
            };
            entry.0 += 1;
            entry.1 += elapsed.as_secs_f64();
        }
    }

    /// Records one admission phase (`policy` absent) or one policy's part in it.
    pub fn record_admission(&self, policy: Option<&str>, key: AdmissionKey, elapsed: Duration) {
        let Some(policy) = policy else {
            if let Ok(mut steps) = self.admission_steps.lock() {
                steps.entry(key).or_default().observe(elapsed);
            }
            return;
        };
        if let Ok(mut policies) = self.admission_policies.lock() {
            let steps = match policies.get_mut(policy) {
                Some(steps) => steps,
                None => policies.entry(policy.to_string()).or_default(),
            };
            steps.entry(key).or_default().observe(elapsed);
        }
    }

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self, watchers: usize) -> String {
        let mut out = String::new();
        let Ok(requests) = self.requests.lock() else { return out };
        // Writing to a String cannot fail.
        if let Ok(store) = self.store.lock() {
            let _ = writeln!(out, "# HELP capstan_store_request_duration_seconds Store operation latency.");
            let _ = writeln!(out, "# TYPE capstan_store_request_duration_seconds summary");
            for (operation, kinds) in store.iter() {
                for (kind, (count, seconds)) in kinds {
                    let labels = format!("operation=\"{operation}\",type=\"{}\"", escape_label(kind));
                    let _ = writeln!(out, "capstan_store_request_duration_seconds_sum{{{labels}}} {seconds}");
                    let _ = writeln!(out, "capstan_store_request_duration_seconds_count{{{labels}}} {count}");
                }
            }
        }
        let _ = writeln!(out, "# HELP apiserver_registered_watchers Watchers served from the watch cache.");
        let _ = writeln!(out, "# TYPE apiserver_registered_watchers gauge");
        let _ = writeln!(out, "apiserver_registered_watchers {watchers}");
        let _ = writeln!(out, "# HELP apiserver_request_total Requests by verb, resource and HTTP code.");
        let _ = writeln!(out, "# TYPE apiserver_request_total counter");
        for ((verb, resource, code), (count, _)) in requests.iter() {
            let _ = writeln!(
                out,
                "apiserver_request_total{{verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"}} {count}"
            );
        }
        let _ = writeln!(out, "# HELP apiserver_request_duration_seconds Request latency by verb and resource.");
        let _ = writeln!(out, "# TYPE apiserver_request_duration_seconds summary");
        for ((verb, resource, code), (count, seconds)) in requests.iter() {
            let labels = format!("verb=\"{verb}\",resource=\"{resource}\",code=\"{code}\"");
            let _ = writeln!(out, "apiserver_request_duration_seconds_sum{{{labels}}} {seconds}");
            let _ = writeln!(out, "apiserver_request_duration_seconds_count{{{labels}}} {count}");
        }
        self.render_admission(&mut out);
        out
    }

    fn render_admission(&self, out: &mut String) {
        let labels = |(kind, operation, rejected): &AdmissionKey| {
            format!("operation=\"{operation}\",rejected=\"{rejected}\",type=\"{kind}\"")
        };
        let name = "apiserver_admission_step_admission_duration_seconds";
        let _ =
            writeln!(out, "# HELP {name} Admission latency by step type (admit, validate), operation and rejection.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        if let Ok(steps) = self.admission_steps.lock() {
            for (key, histogram) in steps.iter() {
                histogram.render(out, name, &labels(key));
            }
        }
        let name = "apiserver_admission_webhook_admission_duration_seconds";
        let _ = writeln!(out, "# HELP {name} Admission policy latency by policy, type, operation and rejection.");
        let _ = writeln!(out, "# TYPE {name} histogram");
        if let Ok(policies) = self.admission_policies.lock() {
            for (policy, steps) in policies.iter() {
                for (key, histogram) in steps {
                    histogram.render(out, name, &format!("name=\"{}\",{}", escape_label(policy), labels(key)));
                }
            }
        }
    }
}

/// What a store key names, for the `type` label of store metrics (as upstream's etcd metrics
/// label requests by resource): the key's first segment, which is a core resource's plural
/// (`pods`, `resourcequotas`) or another resource's group (`apps`, `coordination.k8s.io`).
#[must_use]
pub fn key_type(key: &[u8]) -> &str {
    let key = key.strip_prefix(b"/").unwrap_or(key);
    let first = key.split(|b| *b == b'/').next().unwrap_or_default();
    std::str::from_utf8(first).unwrap_or("")
}

/// A store that times every operation into [`Metrics`].
pub struct MeteredStore {
    inner: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl MeteredStore {
    /// Wraps `inner`.
    #[must_use]
    pub fn new(inner: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        MeteredStore { inner, metrics }
    }
}

#[async_trait]
impl Store for MeteredStore {
    async fn range(&self, request: RangeRequest) -> capstan_store::Result<RangeResponse> {
        let started = Instant::now();
        let kind = key_type(&request.range.start).to_string();
        let result = self.inner.range(request).await;
        self.metrics.record_store("range", &kind, started.elapsed());
        result
    }

    async fn txn(&self, txn: Txn) -> capstan_store::Result<TxnResponse> {
        let started = Instant::now();
        let kind = txn.compares.first().map(|c| key_type(&c.key).to_string()).unwrap_or_default();
        let result = self.inner.txn(txn).await;
        self.metrics.record_store("txn", &kind, started.elapsed());
        result
    }

    async fn watch(&self, request: WatchRequest) -> capstan_store::Result<WatchStream> {
        let started = Instant::now();
        let kind = key_type(&request.range.start).to_string();
        let result = self.inner.watch(request).await;
        self.metrics.record_store("watch", &kind, started.elapsed());
        result
    }

    async fn compact(&self, revision: Revision) -> capstan_store::Result<()> {
        let started = Instant::now();
        let result = self.inner.compact(revision).await;
        self.metrics.record_store("compact", "", started.elapsed());
        result
    }

    fn describe(&self) -> String {
        self.inner.describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_keys_are_typed_by_their_first_segment() {
        assert_eq!(key_type(b"/resourcequotas/default/q"), "resourcequotas");
        assert_eq!(key_type(b"/apps/deployments/default/web"), "apps");
        assert_eq!(key_type(b"/pods/"), "pods");
        assert_eq!(key_type(b""), "");
    }

    #[test]
    fn store_operations_are_counted_by_operation_and_type() {
        let metrics = Metrics::default();
        metrics.record_store("range", "pods", Duration::from_millis(1));
        metrics.record_store("range", "pods", Duration::from_millis(1));
        metrics.record_store("range", "resourcequotas", Duration::from_millis(1));
        let text = metrics.render(0);
        assert!(text.contains("capstan_store_request_duration_seconds_count{operation=\"range\",type=\"pods\"} 2\n"));
        let quotas = "capstan_store_request_duration_seconds_count{operation=\"range\",type=\"resourcequotas\"} 1\n";
        assert!(text.contains(quotas), "{text}");
    }
}
