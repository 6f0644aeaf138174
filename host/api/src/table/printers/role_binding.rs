//! `RoleBinding` and `ClusterRoleBinding`: NAME ROLE AGE, and with `-o wide` USERS GROUPS
//! SERVICEACCOUNTS.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, list, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text(
        "Role",
        "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace.",
    ),
    AGE,
    Column::text("Users", "Users in the binding").wide(),
    Column::text("Groups", "Groups in the binding").wide(),
    Column::text("ServiceAccounts", "ServiceAccounts in the binding").wide(),
];

fn cells(binding: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(binding),
        format!("{}/{}", text(binding, "/roleRef/kind"), text(binding, "/roleRef/name")).into(),
        age(binding, now),
        subjects(binding, "User").into(),
        subjects(binding, "Group").into(),
        subjects(binding, "ServiceAccount").into(),
    ]
}

/// The subjects of `kind`, service accounts as `namespace/name`, joined by `, `.
fn subjects(binding: &Value, kind: &str) -> String {
    list(binding, "/subjects")
        .iter()
        .filter(|subject| text(subject, "/kind") == kind)
        .map(|subject| match (kind, text(subject, "/namespace")) {
            ("ServiceAccount", namespace) if !namespace.is_empty() => format!("{namespace}/{}", text(subject, "/name")),
            _ => text(subject, "/name").to_owned(),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subjects_split_by_kind() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let binding = json!({"roleRef": {"kind": "ClusterRole", "name": "view"}, "subjects": [
            {"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"}, {"kind": "Group", "name": "devs"},
            {"kind": "ServiceAccount", "namespace": "ci", "name": "runner"}]});
        let cells = cells(&binding, now);
        assert_eq!(cells[1], json!("ClusterRole/view"));
        assert_eq!(cells[3..], [json!("alice, bob"), json!("devs"), json!("ci/runner")]);
    }
}
