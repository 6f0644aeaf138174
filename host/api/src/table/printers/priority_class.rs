//! `PriorityClass`: NAME VALUE GLOBAL-DEFAULT AGE PREEMPTIONPOLICY.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, field, integer, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::integer("Value", "value represents the integer value of this priority class."),
    Column::new(
        "Global-Default",
        "boolean",
        "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class.",
    ),
    AGE,
    Column::text("PreemptionPolicy", "preemptionPolicy is the Policy for preempting pods with lower priority."),
];

fn cells(class: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(class),
        integer(class, "/value").into(),
        field(class, "/globalDefault").and_then(Value::as_bool).unwrap_or(false).into(),
        age(class, now),
        text(class, "/preemptionPolicy").into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_value_default_and_policy() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let class = json!({"value": 1000, "globalDefault": true, "preemptionPolicy": "Never"});
        let cells = cells(&class, now);
        assert_eq!((&cells[1], &cells[2], &cells[4]), (&json!(1000), &json!(true), &json!("Never")));
    }
}
