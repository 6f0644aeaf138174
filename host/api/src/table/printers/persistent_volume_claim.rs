//! `PersistentVolumeClaim`: NAME STATUS VOLUME CAPACITY ACCESS MODES STORAGECLASS
//! VOLUMEATTRIBUTESCLASS AGE, and with `-o wide` VOLUMEMODE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::persistent_volume::{access_modes, phase, quantity, storage_class};
use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, list, name, text, text_or};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Status", "phase represents the current phase of PersistentVolumeClaim."),
    Column::text("Volume", "volumeName is the binding reference to the PersistentVolume backing this claim."),
    Column::text("Capacity", "capacity represents the actual resources of the underlying volume."),
    Column::text("Access Modes", "accessModes contains the actual access modes the volume backing the PVC has."),
    Column::text("StorageClass", "StorageClass of the pvc"),
    Column::text("VolumeAttributesClass", "VolumeAttributesClass of the pvc"),
    AGE,
    Column::text("VolumeMode", "volumeMode defines what type of volume is required by the claim.").wide(),
];

fn cells(claim: &Value, now: Timestamp) -> Vec<Value> {
    let volume = text(claim, "/spec/volumeName");
    // Capacity and access modes are the bound volume's, so they stay empty until binding.
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (quantity(claim, "/status/capacity/storage").to_owned(), access_modes(list(claim, "/status/accessModes")))
    };
    vec![
        name(claim),
        phase(claim).into(),
        volume.into(),
        capacity.into(),
        modes.into(),
        storage_class(claim).into(),
        text_or(claim, "/spec/volumeAttributesClassName", "<unset>").into(),
        age(claim, now),
        text_or(claim, "/spec/volumeMode", "<unset>").into(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn capacity_shows_once_bound() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let pending = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}},
            "status": {"phase": "Pending"}});
        assert_eq!(cells(&pending, now)[1..6], [json!("Pending"), json!(""), json!(""), json!(""), json!("fast")]);
        let bound = json!({"spec": {"volumeName": "pv1"},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOnce"]}});
        assert_eq!(cells(&bound, now)[1..6], [json!("Bound"), json!("pv1"), json!("10Gi"), json!("RWO"), json!("")]);
    }
}
