//! `ServiceAccount`: NAME SECRETS AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, list, name};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] =
    &[NAME, Column::text("Secrets", "Secrets is a list of the secrets in the same namespace that pods may use."), AGE];

fn cells(account: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(account), list(account, "/secrets").len().into(), age(account, now)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn secrets_counts_references() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        assert_eq!(cells(&json!({"secrets": [{"name": "token"}]}), now)[1], json!(1));
        assert_eq!(cells(&json!({}), now)[1], json!(0));
    }
}
