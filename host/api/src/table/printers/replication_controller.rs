//! `ReplicationController`: NAME DESIRED CURRENT READY AGE, and with `-o wide` CONTAINERS IMAGES
//! SELECTOR (a plain label map, unlike `ReplicaSet`).

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::replica_set::{replica_cells, replica_columns};
use super::{Column, Printer};
use crate::table::object::format_labels;

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &replica_columns("The number of ready replicas for this replication controller.");

fn cells(controller: &Value, now: Timestamp) -> Vec<Value> {
    replica_cells(controller, now, format_labels(controller.pointer("/spec/selector")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selector_is_a_label_map() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let controller =
            json!({"spec": {"replicas": 2, "selector": {"app": "web"}}, "status": {"replicas": 2, "readyReplicas": 2}});
        let cells = cells(&controller, now);
        assert_eq!(cells[1..4], [json!(2), json!(2), json!(2)]);
        assert_eq!(cells[7], json!("app=web"));
    }
}
