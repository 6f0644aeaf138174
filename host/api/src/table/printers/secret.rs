//! Secrets: NAME TYPE DATA AGE.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Type", "Used to facilitate programmatic handling of secret data."),
    Column::text("Data", "Data contains the secret data."),
    AGE,
];

fn cells(secret: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(secret), text(secret, "/type").into(), keys(secret).into(), age(secret, now)]
}

/// Upstream counts the decoded secret, where `stringData` has been merged into `data`.
fn keys(secret: &Value) -> usize {
    ["data", "stringData"]
        .into_iter()
        .filter_map(|field| secret.get(field).and_then(Value::as_object))
        .flat_map(serde_json::Map::keys)
        .collect::<BTreeSet<_>>()
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn data_counts_distinct_keys() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let secret = json!({"type": "Opaque", "data": {"a": "MQ==", "b": "Mg=="}, "stringData": {"b": "2", "c": "3"}});
        assert_eq!(cells(&secret, now)[1..3], [json!("Opaque"), json!(3)]);
    }
}
