//! Namespaces: NAME STATUS AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[NAME, Column::text("Status", "The status of the namespace"), AGE];

fn cells(namespace: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(namespace), text(namespace, "/status/phase").into(), age(namespace, now)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_the_phase() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let namespace = json!({"metadata": {"name": "default", "creationTimestamp": "2024-03-01T12:00:00Z"},
            "status": {"phase": "Active"}});
        assert_eq!(cells(&namespace, now), [json!("default"), json!("Active"), json!("61d")]);
    }
}
