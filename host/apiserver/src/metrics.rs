//! Prometheus metrics: requests by verb, resource and code, with latency.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::Duration;

/// Verb, resource and HTTP code.
type RequestKey = (&'static str, String, u16);

/// Request counters: count and total seconds per key.
#[derive(Default)]
pub struct Metrics {
    requests: Mutex<BTreeMap<RequestKey, (u64, f64)>>,
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

    /// The Prometheus text exposition.
    #[must_use]
    pub fn render(&self, watchers: usize) -> String {
        let mut out = String::new();
        let Ok(requests) = self.requests.lock() else { return out };
        // Writing to a String cannot fail.
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
        out
    }
}
