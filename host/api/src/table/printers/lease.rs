//! Leases: NAME HOLDER AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] =
    &[NAME, Column::text("Holder", "holderIdentity contains the identity of the holder of a current lease."), AGE];

fn cells(lease: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(lease), text(lease, "/spec/holderIdentity").into(), age(lease, now)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn holder_is_the_holder_identity() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        assert_eq!(cells(&json!({"spec": {"holderIdentity": "node-1"}}), now)[1], json!("node-1"));
        assert_eq!(cells(&json!({"spec": {}}), now)[1], json!(""));
    }
}
