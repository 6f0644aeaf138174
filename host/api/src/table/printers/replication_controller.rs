//! `ReplicationController`: NAME DESIRED CURRENT READY AGE, and with `-o wide` CONTAINERS IMAGES
//! SELECTOR (a plain label map, unlike `ReplicaSet`).

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::deployment::desired_replicas;
use super::{AGE, CONTAINERS, Column, IMAGES, NAME, Printer, SELECTOR};
use crate::table::object::{age, containers, format_labels, integer, name};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::integer("Desired", "Replicas is the number of desired replicas."),
    Column::integer("Current", "Replicas is the most recently observed number of replicas."),
    Column::integer("Ready", "The number of ready replicas for this replication controller."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cells(controller: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = containers(controller.pointer("/spec/template/spec").unwrap_or(&Value::Null));
    vec![
        name(controller),
        desired_replicas(controller).into(),
        integer(controller, "/status/replicas").into(),
        integer(controller, "/status/readyReplicas").into(),
        age(controller, now),
        names,
        images,
        format_labels(controller.pointer("/spec/selector")).into(),
    ]
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
