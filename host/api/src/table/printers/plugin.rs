//! Plugins: NAME KIND VERSION STATE CALLS P99 AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, field, integer, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Kind", "The world the component implements."),
    Column::text("Version", "The first twelve hex digits of the serving component's SHA-256."),
    Column::text("State", "Pending, Loaded or Failed."),
    Column::integer("Calls", "Calls made to the plugin."),
    Column::text("P99", "The 99th percentile call latency."),
    AGE,
];

fn cells(plugin: &Value, now: Timestamp) -> Vec<Value> {
    let digest = text(plugin, "/status/digest");
    let version = if digest.is_empty() { "<none>" } else { digest.get(..12).unwrap_or(digest) };
    let state = text(plugin, "/status/state");
    let p99 = field(plugin, "/status/p99Milliseconds")
        .and_then(Value::as_f64)
        .map_or_else(|| "<none>".to_string(), format_milliseconds);
    vec![
        name(plugin),
        text(plugin, "/spec/kind").into(),
        version.into(),
        (if state.is_empty() { "Pending" } else { state }).into(),
        json!(integer(plugin, "/status/calls")),
        p99.into(),
        age(plugin, now),
    ]
}

fn format_milliseconds(ms: f64) -> String {
    if ms < 1.0 { format!("{:.0}µs", ms * 1000.0) } else { format!("{ms:.1}ms") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_is_the_short_digest_and_p99_is_in_milliseconds() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let plugin = json!({"spec": {"kind": "admission"}, "status": {
            "state": "Loaded", "digest": "0123456789abcdef", "calls": 3, "p99Milliseconds": 2.5}});
        let row = cells(&plugin, now);
        assert_eq!(&row[1..6], &[json!("admission"), json!("0123456789ab"), json!("Loaded"), json!(3), json!("2.5ms")]);
        let fresh = cells(&json!({"spec": {"kind": "admission"}}), now);
        assert_eq!(&fresh[2..6], &[json!("<none>"), json!("Pending"), json!(0), json!("<none>")]);
    }
}
