//! `PodDisruptionBudget`: NAME MIN AVAILABLE MAX UNAVAILABLE ALLOWED DISRUPTIONS AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, field, integer, name};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Min Available", "The minimum number of pods that must be available."),
    Column::text("Max Unavailable", "The maximum number of pods that may be unavailable."),
    Column::integer("Allowed Disruptions", "Calculated number of pods that may be disrupted at this time."),
    AGE,
];

fn cells(budget: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(budget),
        int_or_string(budget, "/spec/minAvailable").into(),
        int_or_string(budget, "/spec/maxUnavailable").into(),
        integer(budget, "/status/disruptionsAllowed").into(),
        age(budget, now),
    ]
}

/// An `IntOrString` as written (`2`, `50%`), `N/A` when unset.
fn int_or_string(budget: &Value, pointer: &str) -> String {
    match field(budget, pointer) {
        Some(Value::String(text)) => text.clone(),
        Some(other) => other.to_string(),
        None => "N/A".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounds_print_as_written_or_not_applicable() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let budget = json!({"spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(cells(&budget, now)[1..4], [json!("2"), json!("N/A"), json!(1)]);
        let percent = json!({"spec": {"maxUnavailable": "25%"}});
        assert_eq!(cells(&percent, now)[1..3], [json!("N/A"), json!("25%")]);
    }
}
