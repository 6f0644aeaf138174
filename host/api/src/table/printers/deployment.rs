//! Deployments: NAME READY UP-TO-DATE AVAILABLE AGE, and with `-o wide` CONTAINERS IMAGES SELECTOR.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, CONTAINERS, Column, IMAGES, NAME, Printer, SELECTOR, ready_of_desired, template_containers};
use crate::selector::LabelSelector;
use crate::table::object::{age, integer, name};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Ready", "Number of the pod with ready state"),
    Column::text(
        "Up-to-date",
        "Total number of non-terminated pods targeted by this deployment that have the desired template spec.",
    ),
    Column::text(
        "Available",
        "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cells(deployment: &Value, now: Timestamp) -> Vec<Value> {
    let [names, images] = template_containers(deployment);
    vec![
        name(deployment),
        ready_of_desired(deployment),
        integer(deployment, "/status/updatedReplicas").into(),
        integer(deployment, "/status/availableReplicas").into(),
        age(deployment, now),
        names,
        images,
        selector(deployment).into(),
    ]
}

/// Unlike other workloads, deployments print an empty selector as nothing and a bad one as
/// `<invalid>`.
fn selector(deployment: &Value) -> String {
    LabelSelector::from_json(deployment.pointer("/spec/selector").unwrap_or(&Value::Null))
        .map_or_else(|_| "<invalid>".to_owned(), |selector| selector.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ready_compares_ready_pods_with_desired_replicas() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let cases = [
            (
                json!({"spec": {"replicas": 3}, "status": {"readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}}),
                "2/3",
                3,
                2,
            ),
            (json!({"spec": {"replicas": 0}, "status": {}}), "0/0", 0, 0),
            (
                json!({"spec": {}, "status": {"readyReplicas": 1, "updatedReplicas": 1, "availableReplicas": 1}}),
                "1/1",
                1,
                1,
            ),
        ];
        for (deployment, ready, updated, available) in cases {
            let cells = cells(&deployment, now);
            assert_eq!(cells[1..4], [json!(ready), json!(updated), json!(available)], "{deployment}");
        }
    }

    #[test]
    fn wide_cells_list_containers_and_selector() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let deployment = json!({"spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"spec": {"containers": [{"name": "web", "image": "nginx"}, {"name": "log", "image": "fluentd"}]}}}});
        assert_eq!(cells(&deployment, now)[5..], [json!("web,log"), json!("nginx,fluentd"), json!("app=web")]);
    }
}
