//! `ControllerRevision`: NAME CONTROLLER REVISION AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, integer, list, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Controller", "Controller of the object"),
    Column::text("Revision", "Revision indicates the revision of the state represented by Data."),
    AGE,
];

fn cells(revision: &Value, now: Timestamp) -> Vec<Value> {
    vec![name(revision), controller(revision).into(), integer(revision, "/revision").into(), age(revision, now)]
}

/// The controlling owner as `kind.group/name` in lower case, `<none>` without one.
fn controller(revision: &Value) -> String {
    let Some(owner) = list(revision, "/metadata/ownerReferences")
        .iter()
        .find(|owner| owner.get("controller") == Some(&Value::Bool(true)))
    else {
        return "<none>".to_owned();
    };
    let group = text(owner, "/apiVersion").rsplit_once('/').map_or("", |(group, _)| group);
    let kind = match (text(owner, "/kind"), group) {
        ("", "") => return text(owner, "/name").to_owned(),
        (kind, "") => kind.to_lowercase(),
        (kind, group) => format!("{kind}.{group}").to_lowercase(),
    };
    format!("{kind}/{}", text(owner, "/name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn controller_names_the_owning_workload() {
        let owned = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web", "controller": true}]}});
        assert_eq!(controller(&owned), "statefulset.apps/web");
        assert_eq!(controller(&json!({})), "<none>");
    }
}
