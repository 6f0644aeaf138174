//! `NetworkPolicy`: NAME POD-SELECTOR AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, format_label_selector, name};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] =
    &[NAME, Column::text("Pod-Selector", "Selects the pods to which this NetworkPolicy object applies."), AGE];

fn cells(policy: &Value, now: Timestamp) -> Vec<Value> {
    // podSelector is required and never null; an absent one selects every pod.
    let selector =
        policy.pointer("/spec/podSelector").cloned().unwrap_or_else(|| Value::Object(serde_json::Map::new()));
    vec![name(policy), format_label_selector(Some(&selector)).into(), age(policy, now)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_the_pod_selector() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let policy = json!({"spec": {"podSelector": {"matchLabels": {"role": "db"}}}});
        assert_eq!(cells(&policy, now)[1], json!("role=db"));
        assert_eq!(cells(&json!({"spec": {"podSelector": {}}}), now)[1], json!("<none>"));
    }
}
