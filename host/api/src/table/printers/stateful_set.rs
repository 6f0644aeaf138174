//! `StatefulSet`: NAME READY AGE, and with `-o wide` CONTAINERS IMAGES.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, CONTAINERS, Column, IMAGES, NAME, Printer, ready_of_desired, template_containers};
use crate::table::object::{age, name};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] =
    &[NAME, Column::text("Ready", "Number of the pod with ready state"), AGE, CONTAINERS, IMAGES];

fn cells(stateful_set: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = template_containers(stateful_set);
    vec![name(stateful_set), ready_of_desired(stateful_set), age(stateful_set, now), names, images]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_compares_ready_pods_with_desired_replicas() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let cases = [
            (json!({"spec": {"replicas": 3}, "status": {"readyReplicas": 2}}), "2/3"),
            (json!({"spec": {}, "status": {}}), "0/1"),
        ];
        for (stateful_set, ready) in cases {
            assert_eq!(cells(&stateful_set, now)[1], json!(ready));
        }
    }
}
