//! `ReplicaSet`: NAME DESIRED CURRENT READY AGE, and with `-o wide` CONTAINERS IMAGES SELECTOR.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::deployment::desired_replicas;
use super::{AGE, CONTAINERS, Column, IMAGES, NAME, Printer, SELECTOR};
use crate::table::object::{age, containers, format_label_selector, integer, name};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::integer("Desired", "Replicas is the number of desired replicas."),
    Column::integer("Current", "Replicas is the most recently observed number of replicas."),
    Column::integer("Ready", "The number of ready replicas for this replica set."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cells(replica_set: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = containers(replica_set.pointer("/spec/template/spec").unwrap_or(&Value::Null));
    vec![
        name(replica_set),
        desired_replicas(replica_set).into(),
        integer(replica_set, "/status/replicas").into(),
        integer(replica_set, "/status/readyReplicas").into(),
        age(replica_set, now),
        names,
        images,
        format_label_selector(replica_set.pointer("/spec/selector")).into(),
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
