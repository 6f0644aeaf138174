//! `ResourceQuota`: NAME REQUEST LIMIT AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, name, text_or};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Request", "Request represents a minimum amount of cpu/memory that a container may consume."),
    Column::text(
        "Limit",
        "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
    ),
    AGE,
];

fn cells(quota: &Value, now: Timestamp) -> Vec<Value> {
    let (mut requests, mut limits) = (Vec::new(), Vec::new());
    // serde_json maps iterate in key order, the order upstream sorts resource names in.
    for resource in quota.pointer("/status/hard").and_then(Value::as_object).into_iter().flatten().map(|(k, _)| k) {
        let used = text_or(quota, &format!("/status/used/{}", escape(resource)), "0");
        let hard = text_or(quota, &format!("/status/hard/{}", escape(resource)), "0");
        let column = if resource.starts_with("limits.") { &mut limits } else { &mut requests };
        column.push(format!("{resource}: {used}/{hard}"));
    }
    vec![name(quota), requests.join(", ").into(), limits.join(", ").into(), age(quota, now)]
}

/// Escapes a map key for use in a JSON pointer.
fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn usage_splits_into_requests_and_limits() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let quota = json!({"status": {
            "hard": {"pods": "10", "requests.cpu": "2", "limits.memory": "4Gi", "requests.nvidia.com/gpu": "1"},
            "used": {"pods": "3", "limits.memory": "1Gi"}}});
        assert_eq!(
            cells(&quota, now)[1..3],
            [json!("pods: 3/10, requests.cpu: 0/2, requests.nvidia.com/gpu: 0/1"), json!("limits.memory: 1Gi/4Gi")]
        );
    }
}
