//! One printer per kind, as kube-apiserver's `pkg/printers/internalversion` has them: the column
//! definitions and how one object becomes the cells of one row.

mod config_map;
mod controller_revision;
mod cron_job;
mod csi_driver;
mod csi_node;
mod daemon_set;
mod default;
mod deployment;
mod endpoint_slice;
mod endpoints;
mod event;
mod horizontal_pod_autoscaler;
mod ingress;
mod ingress_class;
mod job;
mod lease;
mod namespace;
mod network_policy;
mod node;
mod persistent_volume;
mod persistent_volume_claim;
mod plugin;
mod pod;
mod pod_disruption_budget;
mod priority_class;
mod replica_set;
mod replication_controller;
mod resource_quota;
mod role_binding;
mod secret;
mod service;
mod service_account;
mod stateful_set;
mod storage_class;
mod volume_attachment;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use crate::registry::GroupVersionKind;
use crate::table::object::{containers, field, integer};

/// The printer for `gvk`'s kind; kinds upstream has no printer for (roles, limit ranges,
/// custom resource definitions, ...) get its default table.
pub(super) fn printer_for(gvk: &GroupVersionKind) -> &'static Printer {
    match (gvk.group, gvk.kind) {
        ("", "Pod") => &pod::PRINTER,
        ("", "Service") => &service::PRINTER,
        ("", "Node") => &node::PRINTER,
        ("", "Namespace") => &namespace::PRINTER,
        ("", "ConfigMap") => &config_map::PRINTER,
        ("", "Secret") => &secret::PRINTER,
        ("", "ServiceAccount") => &service_account::PRINTER,
        ("", "Event") => &event::CORE_PRINTER,
        ("events.k8s.io", "Event") => &event::EVENTS_PRINTER,
        ("", "Endpoints") => &endpoints::PRINTER,
        ("", "PersistentVolume") => &persistent_volume::PRINTER,
        ("", "PersistentVolumeClaim") => &persistent_volume_claim::PRINTER,
        ("", "ReplicationController") => &replication_controller::PRINTER,
        ("", "ResourceQuota") => &resource_quota::PRINTER,
        ("apps", "Deployment") => &deployment::PRINTER,
        ("apps", "ReplicaSet") => &replica_set::PRINTER,
        ("apps", "StatefulSet") => &stateful_set::PRINTER,
        ("apps", "DaemonSet") => &daemon_set::PRINTER,
        ("apps", "ControllerRevision") => &controller_revision::PRINTER,
        ("batch", "Job") => &job::PRINTER,
        ("batch", "CronJob") => &cron_job::PRINTER,
        ("autoscaling", "HorizontalPodAutoscaler") => &horizontal_pod_autoscaler::PRINTER,
        ("policy", "PodDisruptionBudget") => &pod_disruption_budget::PRINTER,
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => &role_binding::PRINTER,
        ("coordination.k8s.io", "Lease") => &lease::PRINTER,
        ("discovery.k8s.io", "EndpointSlice") => &endpoint_slice::PRINTER,
        ("networking.k8s.io", "Ingress") => &ingress::PRINTER,
        ("networking.k8s.io", "IngressClass") => &ingress_class::PRINTER,
        ("networking.k8s.io", "NetworkPolicy") => &network_policy::PRINTER,
        ("storage.k8s.io", "StorageClass") => &storage_class::PRINTER,
        ("storage.k8s.io", "CSIDriver") => &csi_driver::PRINTER,
        ("storage.k8s.io", "CSINode") => &csi_node::PRINTER,
        ("storage.k8s.io", "VolumeAttachment") => &volume_attachment::PRINTER,
        ("scheduling.k8s.io", "PriorityClass") => &priority_class::PRINTER,
        ("capstan.io", "Plugin") => &plugin::PRINTER,
        _ => &default::PRINTER,
    }
}

/// A kind's table: its columns and how to fill a row.
pub(super) struct Printer {
    /// Column definitions, in cell order.
    pub(super) columns: &'static [Column],
    /// The cells of one object's row, one per column.
    pub(super) cells: fn(&Value, Timestamp) -> Vec<Value>,
    /// `metav1.TableRowCondition`s for the row (pods mark completed rows).
    pub(super) conditions: fn(&Value) -> Vec<Value>,
}

impl Printer {
    const fn new(columns: &'static [Column], cells: fn(&Value, Timestamp) -> Vec<Value>) -> Self {
        Self { columns, cells, conditions: |_| Vec::new() }
    }
}

/// A `metav1.TableColumnDefinition`.
pub(super) struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    description: &'static str,
    priority: u8,
}

impl Column {
    const fn new(name: &'static str, kind: &'static str, description: &'static str) -> Self {
        Self { name, kind, format: "", description, priority: 0 }
    }

    /// A `string` column.
    const fn text(name: &'static str, description: &'static str) -> Self {
        Self::new(name, "string", description)
    }

    /// An `integer` column.
    const fn integer(name: &'static str, description: &'static str) -> Self {
        Self::new(name, "integer", description)
    }

    /// Shown only with `kubectl get -o wide`.
    const fn wide(self) -> Self {
        Self { priority: 1, ..self }
    }

    /// Marks the column that holds the object's name.
    const fn naming(self) -> Self {
        Self { format: "name", ..self }
    }

    pub(super) fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some \
    resources may allow a client to request the generation of an appropriate name automatically. Name is primarily \
    intended for creation idempotence and configuration definition. Cannot be updated. More info: \
    https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

const CREATION_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was \
    created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set \
    this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for \
    lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// The NAME column most tables start with.
const NAME: Column = Column::text("Name", NAME_DOC).naming();
/// The AGE column: time since creation.
const AGE: Column = Column::text("Age", CREATION_DOC);
/// The wide CONTAINERS column of workloads.
const CONTAINERS: Column = Column::text("Containers", "Names of each container in the template.").wide();
/// The wide IMAGES column of workloads.
const IMAGES: Column = Column::text("Images", "Images referenced by each container in the template.").wide();
/// The wide SELECTOR column of workloads.
const SELECTOR: Column =
    Column::text("Selector", "A label query over pods that should match the replica count.").wide();

/// The CONTAINERS and IMAGES cells of a workload: those of its pod template (`spec.template`).
fn template_containers(workload: &Value) -> [Value; 2] {
    containers(workload.pointer("/spec/template/spec").unwrap_or(&Value::Null))
}

/// `spec.replicas`, which the API defaults to 1.
fn desired_replicas(workload: &Value) -> i64 {
    field(workload, "/spec/replicas").and_then(Value::as_i64).unwrap_or(1)
}

/// The READY cell of deployments and stateful sets: ready pods out of desired replicas (`2/3`).
fn ready_of_desired(workload: &Value) -> Value {
    format!("{}/{}", integer(workload, "/status/readyReplicas"), desired_replicas(workload)).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Registry;

    #[test]
    fn every_printer_fills_one_cell_per_column() {
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        let empty = json!({});
        for info in Registry::builtin().resources() {
            let printer = printer_for(&info.gvk);
            assert_eq!((printer.cells)(&empty, now).len(), printer.columns.len(), "{}", info.gvk.kind);
            assert!(printer.columns.iter().any(|c| c.format == "name"), "{} has a name column", info.gvk.kind);
        }
    }
}
