//! `DaemonSet`: NAME DESIRED CURRENT READY UP-TO-DATE AVAILABLE NODE SELECTOR AGE, and with
//! `-o wide` CONTAINERS IMAGES SELECTOR.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, CONTAINERS, Column, IMAGES, NAME, Printer, SELECTOR};
use crate::table::object::{age, containers, format_label_selector, format_labels, integer, name};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::integer("Desired", "The total number of nodes that should be running the daemon pod."),
    Column::integer("Current", "The number of nodes that are running at least one daemon pod and are supposed to."),
    Column::integer(
        "Ready",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready.",
    ),
    Column::integer("Up-to-date", "The total number of nodes that are running updated daemon pod."),
    Column::integer(
        "Available",
        "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available.",
    ),
    Column::text("Node Selector", "NodeSelector is a selector which must be true for the pod to fit on a node."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

fn cells(daemon_set: &Value, now: Timestamp) -> Vec<Value> {
    let pod_spec = daemon_set.pointer("/spec/template/spec").unwrap_or(&Value::Null);
    let [names, images] = containers(pod_spec);
    vec![
        name(daemon_set),
        integer(daemon_set, "/status/desiredNumberScheduled").into(),
        integer(daemon_set, "/status/currentNumberScheduled").into(),
        integer(daemon_set, "/status/numberReady").into(),
        integer(daemon_set, "/status/updatedNumberScheduled").into(),
        integer(daemon_set, "/status/numberAvailable").into(),
        format_labels(pod_spec.get("nodeSelector")).into(),
        age(daemon_set, now),
        names,
        images,
        format_label_selector(daemon_set.pointer("/spec/selector")).into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn counts_scheduled_pods_and_shows_the_node_selector() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let daemon_set = json!({
            "spec": {"template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"}}}},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                "updatedNumberScheduled": 3, "numberAvailable": 2}});
        let cells = cells(&daemon_set, now);
        assert_eq!(cells[1..7], [json!(3), json!(3), json!(2), json!(3), json!(2), json!("kubernetes.io/os=linux")]);
        assert_eq!(cells[10], json!("<none>"));
    }
}
