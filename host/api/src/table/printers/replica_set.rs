//! `ReplicaSet`: NAME DESIRED CURRENT READY AGE, and with `-o wide` CONTAINERS IMAGES SELECTOR.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, CONTAINERS, Column, IMAGES, NAME, Printer, SELECTOR, desired_replicas, template_containers};
use crate::table::object::{age, format_label_selector, integer, name};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &replica_columns("The number of ready replicas for this replica set.");

fn cells(replica_set: &Value, now: Timestamp) -> Vec<Value> {
    replica_cells(replica_set, now, format_label_selector(replica_set.pointer("/spec/selector")))
}

/// The columns of the kinds that keep a number of pod replicas (`ReplicaSet`,
/// `ReplicationController`), `ready` describing the READY column in the kind's words.
pub(super) const fn replica_columns(ready: &'static str) -> [Column; 8] {
    [
        NAME,
        Column::integer("Desired", "Replicas is the number of desired replicas."),
        Column::integer("Current", "Replicas is the most recently observed number of replicas."),
        Column::integer("Ready", ready),
        AGE,
        CONTAINERS,
        IMAGES,
        SELECTOR,
    ]
}

/// The cells for [`replica_columns`]; the kinds write their selectors differently, so the
/// caller formats it.
pub(super) fn replica_cells(controller: &Value, now: Timestamp, selector: String) -> Vec<Value> {
    let [names, images] = template_containers(controller);
    vec![
        name(controller),
        desired_replicas(controller).into(),
        integer(controller, "/status/replicas").into(),
        integer(controller, "/status/readyReplicas").into(),
        age(controller, now),
        names,
        images,
        selector.into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_desired_current_and_ready_replicas() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let replica_set = json!({"metadata": {"name": "web-5d9c", "creationTimestamp": "2024-05-01T11:48:00Z"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d9c"}}},
            "status": {"replicas": 3, "readyReplicas": 1}});
        assert_eq!(
            cells(&replica_set, now),
            [
                json!("web-5d9c"),
                json!(3),
                json!(3),
                json!(1),
                json!("12m"),
                json!(""),
                json!(""),
                json!("app=web,pod-template-hash=5d9c")
            ]
        );
    }
}
