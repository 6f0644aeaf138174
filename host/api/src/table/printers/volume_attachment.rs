//! `VolumeAttachment`: NAME ATTACHER PV NODE ATTACHED AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, field, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    // Upstream marks this column as a name too.
    Column::text("Attacher", "attacher indicates the name of the volume driver that MUST handle this request.")
        .naming(),
    Column::text("PV", "persistentVolumeName represents the name of the persistent volume to attach."),
    Column::text("Node", "nodeName represents the node that the volume should be attached to."),
    Column::new("Attached", "boolean", "attached indicates the volume is successfully attached."),
    AGE,
];

fn cells(attachment: &Value, now: Timestamp) -> Vec<Value> {
    vec![
        name(attachment),
        text(attachment, "/spec/attacher").into(),
        text(attachment, "/spec/source/persistentVolumeName").into(),
        text(attachment, "/spec/nodeName").into(),
        field(attachment, "/status/attached").and_then(Value::as_bool).unwrap_or(false).into(),
        age(attachment, now),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shows_driver_volume_node_and_state() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let attachment = json!({"spec": {"attacher": "csi.example", "source": {"persistentVolumeName": "pv1"}, "nodeName": "n1"},
            "status": {"attached": true}});
        assert_eq!(cells(&attachment, now)[1..5], [json!("csi.example"), json!("pv1"), json!("n1"), json!(true)]);
    }
}
