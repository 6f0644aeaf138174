//! Nodes: NAME STATUS ROLES AGE VERSION, and with `-o wide` INTERNAL-IP EXTERNAL-IP OS-IMAGE
//! KERNEL-VERSION CONTAINER-RUNTIME.

use std::collections::BTreeSet;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, list, name, text, text_or};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Status", "The status of the node"),
    Column::text("Roles", "The roles of the node"),
    AGE,
    Column::text("Version", "Kubelet Version reported by the node."),
    Column::text("Internal-IP", "List of addresses reachable to the node.").wide(),
    Column::text("External-IP", "List of addresses reachable to the node.").wide(),
    Column::text("OS-Image", "OS Image reported by the node from /etc/os-release.").wide(),
    Column::text("Kernel-Version", "Kernel Version reported by the node from 'uname -r'.").wide(),
    Column::text("Container-Runtime", "ContainerRuntime Version reported by the node through runtime remote API.")
        .wide(),
];

/// Labels `node-role.kubernetes.io/<role>` name roles by their suffix.
const ROLE_PREFIX: &str = "node-role.kubernetes.io/";
/// The older label `kubernetes.io/role=<role>` names a role by its value.
const ROLE_LABEL: &str = "kubernetes.io/role";

fn cells(node: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(node),
        status(node).into(),
        roles(node).into(),
        age(node, now),
        text(node, "/status/nodeInfo/kubeletVersion").into(),
        address(node, "InternalIP").into(),
        address(node, "ExternalIP").into(),
        text_or(node, "/status/nodeInfo/osImage", "<unknown>").into(),
        text_or(node, "/status/nodeInfo/kernelVersion", "<unknown>").into(),
        text_or(node, "/status/nodeInfo/containerRuntimeVersion", "<unknown>").into(),
    ]
}

/// `Ready`, `NotReady` or `Unknown`, then `SchedulingDisabled` for cordoned nodes.
fn status(node: &Value) -> String {
    let ready = list(node, "/status/conditions").iter().rev().find(|condition| text(condition, "/type") == "Ready");
    let mut status = match ready {
        Some(condition) if text(condition, "/status") == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }
    .to_owned();
    if node.pointer("/spec/unschedulable") == Some(&Value::Bool(true)) {
        status.push_str(",SchedulingDisabled");
    }
    status
}

fn roles(node: &Value) -> String {
    let labels = node.pointer("/metadata/labels").and_then(Value::as_object);
    let roles: BTreeSet<&str> = labels
        .into_iter()
        .flatten()
        .filter_map(|(key, value)| match key.strip_prefix(ROLE_PREFIX) {
            Some(role) => Some(role),
            None if key == ROLE_LABEL => value.as_str(),
            None => None,
        })
        .filter(|role| !role.is_empty())
        .collect();
    if roles.is_empty() { "<none>".to_owned() } else { roles.into_iter().collect::<Vec<_>>().join(",") }
}

/// The first address of `kind`, `<none>` without one.
fn address<'a>(node: &'a Value, kind: &str) -> &'a str {
    list(node, "/status/addresses")
        .iter()
        .find(|address| text(address, "/type") == kind)
        .map_or("<none>", |address| text(address, "/address"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn status_reads_the_ready_condition_and_cordoning() {
        let cases = [
            (json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}), "Ready"),
            (json!({"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}), "NotReady"),
            (json!({"status": {"conditions": [{"type": "MemoryPressure", "status": "False"}]}}), "Unknown"),
            (
                json!({"spec": {"unschedulable": true}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                "Ready,SchedulingDisabled",
            ),
        ];
        for (node, expected) in cases {
            assert_eq!(status(&node), expected, "{node}");
        }
    }

    #[test]
    fn roles_come_from_role_labels() {
        let node = json!({"metadata": {"labels": {
            "node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/": "", "kubernetes.io/role": "worker",
            "kubernetes.io/hostname": "n1"}}});
        assert_eq!(roles(&node), "control-plane,worker");
        assert_eq!(roles(&json!({})), "<none>");
    }

    #[test]
    fn wide_cells_show_addresses_and_node_info() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let node = json!({"status": {"addresses": [{"type": "Hostname", "address": "n1"}, {"type": "InternalIP", "address": "10.0.0.1"}],
            "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Debian", "containerRuntimeVersion": "capstan://0.1"}}});
        assert_eq!(
            cells(&node, now)[4..],
            [
                json!("v1.32.0"),
                json!("10.0.0.1"),
                json!("<none>"),
                json!("Debian"),
                json!("<unknown>"),
                json!("capstan://0.1")
            ]
        );
    }
}
