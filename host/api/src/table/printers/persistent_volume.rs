//! `PersistentVolume`: NAME CAPACITY ACCESS MODES RECLAIM POLICY STATUS CLAIM STORAGECLASS
//! VOLUMEATTRIBUTESCLASS REASON AGE, and with `-o wide` VOLUMEMODE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, deleting, field, list, name, text, text_or};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Capacity", "capacity is the description of the persistent volume's resources and capacity."),
    Column::text("Access Modes", "accessModes contains all ways the volume can be mounted."),
    Column::text("Reclaim Policy", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
    Column::text("Status", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
    Column::text("Claim", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
    Column::text("StorageClass", "StorageClass of the pv"),
    Column::text("VolumeAttributesClass", "VolumeAttributesClass of the pv"),
    Column::text("Reason", "reason is a brief CamelCase string that describes any failure."),
    AGE,
    Column::text("VolumeMode", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state.").wide(),
];

/// The annotation that named a storage class before `storageClassName`; it still wins.
const BETA_STORAGE_CLASS: &str = "/metadata/annotations/volume.beta.kubernetes.io~1storage-class";

fn cells(volume: &Value, now: Timestamp) -> Vec<Value> {
    let claim = field(volume, "/spec/claimRef")
        .map(|claim| format!("{}/{}", text(claim, "/namespace"), text(claim, "/name")))
        .unwrap_or_default();
    vec![
        name(volume),
        quantity(volume, "/spec/capacity/storage").into(),
        access_modes(list(volume, "/spec/accessModes")).into(),
        text(volume, "/spec/persistentVolumeReclaimPolicy").into(),
        phase(volume).into(),
        claim.into(),
        storage_class(volume).into(),
        text_or(volume, "/spec/volumeAttributesClassName", "<unset>").into(),
        text(volume, "/status/reason").into(),
        age(volume, now),
        text_or(volume, "/spec/volumeMode", "<unset>").into(),
    ]
}

/// A quantity as written, `0` when absent (a zero `resource.Quantity`).
pub(super) fn quantity<'a>(object: &'a Value, pointer: &str) -> &'a str {
    text_or(object, pointer, "0")
}

/// The phase, or `Terminating` once deletion started.
pub(super) fn phase(object: &Value) -> &str {
    if deleting(object) { "Terminating" } else { text(object, "/status/phase") }
}

/// Access modes abbreviated in a fixed order: `RWO,ROX,RWX,RWOP`.
pub(super) fn access_modes(modes: &[Value]) -> String {
    let has = |mode: &str| modes.iter().any(|m| m.as_str() == Some(mode));
    [("ReadWriteOnce", "RWO"), ("ReadOnlyMany", "ROX"), ("ReadWriteMany", "RWX"), ("ReadWriteOncePod", "RWOP")]
        .into_iter()
        .filter(|(mode, _)| has(mode))
        .map(|(_, short)| short)
        .collect::<Vec<_>>()
        .join(",")
}

/// The beta annotation if set, else `spec.storageClassName`.
pub(super) fn storage_class(object: &Value) -> &str {
    text_or(object, BETA_STORAGE_CLASS, text(object, "/spec/storageClassName"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn row_describes_capacity_binding_and_class() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let volume = json!({"metadata": {"name": "pv1"},
            "spec": {"capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteMany", "ReadWriteOnce"],
                "persistentVolumeReclaimPolicy": "Retain", "claimRef": {"namespace": "default", "name": "data"},
                "storageClassName": "fast", "volumeMode": "Filesystem"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            cells(&volume, now),
            [
                json!("pv1"),
                json!("10Gi"),
                json!("RWO,RWX"),
                json!("Retain"),
                json!("Bound"),
                json!("default/data"),
                json!("fast"),
                json!("<unset>"),
                json!(""),
                json!("<unknown>"),
                json!("Filesystem"),
            ]
        );
    }

    #[test]
    fn beta_annotation_and_deletion_take_precedence() {
        let volume = json!({"metadata": {"deletionTimestamp": "2024-05-01T11:00:00Z",
                "annotations": {"volume.beta.kubernetes.io/storage-class": "legacy"}},
            "spec": {"storageClassName": "fast"}, "status": {"phase": "Released"}});
        assert_eq!((phase(&volume), storage_class(&volume)), ("Terminating", "legacy"));
    }
}
