//! `CSINode`: NAME DRIVERS AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, list, name};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] =
    &[NAME, Column::integer("Drivers", "Drivers indicates the number of CSI drivers registered on the node"), AGE];

fn cells(node: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(node), list(node, "/spec/drivers").len().into(), age(node, now)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_registered_drivers() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        assert_eq!(cells(&json!({"spec": {"drivers": [{"name": "a"}, {"name": "b"}]}}), now)[1], json!(2));
    }
}
