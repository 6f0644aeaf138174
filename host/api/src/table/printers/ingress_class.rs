//! `IngressClass`: NAME CONTROLLER PARAMETERS AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, field, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Controller", "Controller that is responsible for handling this class"),
    Column::text("Parameters", "A reference to a resource with additional parameters"),
    AGE,
];

fn cells(class: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(class), text(class, "/spec/controller").into(), parameters(class).into(), age(class, now)]
}

/// `Kind.group/name` of the parameters resource, `<none>` without one.
fn parameters(class: &Value) -> String {
    let Some(parameters) = field(class, "/spec/parameters") else { return "<none>".to_owned() };
    let kind = match field(parameters, "/apiGroup").and_then(Value::as_str) {
        Some(group) => format!("{}.{group}", text(parameters, "/kind")),
        None => text(parameters, "/kind").to_owned(),
    };
    format!("{kind}/{}", text(parameters, "/name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parameters_name_their_kind_and_group() {
        let with = json!({"spec": {"parameters": {"apiGroup": "k8s.example.com", "kind": "Params", "name": "p"}}});
        assert_eq!(parameters(&with), "Params.k8s.example.com/p");
        assert_eq!(parameters(&json!({"spec": {}})), "<none>");
    }
}
