//! Strategic-merge-patch metadata of the built-in kinds.
//!
//! Kubernetes declares how a field merges in Go struct tags (`patchStrategy:"merge"
//! patchMergeKey:"name"`) and list markers (`+listType=map`, `+listMapKey=name`); kube-apiserver
//! publishes them as `x-kubernetes-patch-strategy`, `x-kubernetes-patch-merge-key`,
//! `x-kubernetes-list-type` and `x-kubernetes-list-map-keys`. The typed model (`k8s-openapi`)
//! drops them, so this table carries them. Its rows are every field of the served kinds that
//! Kubernetes 1.32's published OpenAPI spec marks with a patch strategy, with the list markers
//! that spec gives the same field.

use serde_json::{Map, Value, json};

/// How one field of one definition merges.
#[derive(Clone, Copy, Debug)]
pub(super) struct PatchMeta {
    /// Definition holding the field (`io.k8s.api.core.v1.PodSpec`).
    pub definition: &'static str,
    /// The field's JSON name (`containers`).
    pub property: &'static str,
    /// `merge`, `retainKeys`, `merge,retainKeys` or `replace`.
    pub strategy: &'static str,
    /// The key that identifies an element of a merged list of objects.
    pub merge_key: Option<&'static str>,
    /// `atomic`, `set` or `map`.
    pub list_type: Option<&'static str>,
    /// The keys of a `map` list.
    pub list_map_keys: &'static [&'static str],
}

const fn meta(
    definition: &'static str,
    property: &'static str,
    strategy: &'static str,
    merge_key: Option<&'static str>,
    list_type: Option<&'static str>,
    list_map_keys: &'static [&'static str],
) -> PatchMeta {
    PatchMeta { definition, property, strategy, merge_key, list_type, list_map_keys }
}

/// Every patch-strategy field of the built-in kinds, by definition then field.
#[rustfmt::skip] // One row per line reads as the table it is.
pub(super) const PATCH_META: &[PatchMeta] = &[
    meta("io.k8s.api.apps.v1.DaemonSetStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.apps.v1.DeploymentSpec", "strategy", "retainKeys", None, None, &[]),
    meta("io.k8s.api.apps.v1.DeploymentStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.apps.v1.ReplicaSetStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.apps.v1.StatefulSetStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.batch.v1.JobStatus", "conditions", "merge", Some("type"), Some("atomic"), &[]),
    meta("io.k8s.api.core.v1.Container", "env", "merge", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.Container", "ports", "merge", Some("containerPort"), Some("map"), &["containerPort", "protocol"]),
    meta("io.k8s.api.core.v1.Container", "volumeDevices", "merge", Some("devicePath"), Some("map"), &["devicePath"]),
    meta("io.k8s.api.core.v1.Container", "volumeMounts", "merge", Some("mountPath"), Some("map"), &["mountPath"]),
    meta("io.k8s.api.core.v1.ContainerStatus", "allocatedResourcesStatus", "merge", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.ContainerStatus", "volumeMounts", "merge", Some("mountPath"), Some("map"), &["mountPath"]),
    meta("io.k8s.api.core.v1.EphemeralContainer", "env", "merge", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.EphemeralContainer", "ports", "merge", Some("containerPort"), Some("map"), &["containerPort", "protocol"]),
    meta("io.k8s.api.core.v1.EphemeralContainer", "volumeDevices", "merge", Some("devicePath"), Some("map"), &["devicePath"]),
    meta("io.k8s.api.core.v1.EphemeralContainer", "volumeMounts", "merge", Some("mountPath"), Some("map"), &["mountPath"]),
    meta("io.k8s.api.core.v1.NamespaceStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.core.v1.NodeSpec", "podCIDRs", "merge", None, Some("set"), &[]),
    meta("io.k8s.api.core.v1.NodeStatus", "addresses", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.core.v1.NodeStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.core.v1.PersistentVolumeClaimStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.core.v1.PodSpec", "containers", "merge", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.PodSpec", "ephemeralContainers", "merge", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.PodSpec", "hostAliases", "merge", Some("ip"), Some("map"), &["ip"]),
    meta("io.k8s.api.core.v1.PodSpec", "imagePullSecrets", "merge", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.PodSpec", "initContainers", "merge", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.PodSpec", "resourceClaims", "merge,retainKeys", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.PodSpec", "schedulingGates", "merge", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.PodSpec", "topologySpreadConstraints", "merge", Some("topologyKey"), Some("map"), &["topologyKey", "whenUnsatisfiable"]),
    meta("io.k8s.api.core.v1.PodSpec", "volumes", "merge,retainKeys", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.PodStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.core.v1.PodStatus", "hostIPs", "merge", Some("ip"), Some("atomic"), &[]),
    meta("io.k8s.api.core.v1.PodStatus", "podIPs", "merge", Some("ip"), Some("map"), &["ip"]),
    meta("io.k8s.api.core.v1.PodStatus", "resourceClaimStatuses", "merge,retainKeys", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.ReplicationControllerStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.core.v1.ServiceAccount", "secrets", "merge", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.api.core.v1.ServiceSpec", "ports", "merge", Some("port"), Some("map"), &["port", "protocol"]),
    meta("io.k8s.api.core.v1.ServiceStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.policy.v1.PodDisruptionBudgetSpec", "selector", "replace", None, None, &[]),
    meta("io.k8s.api.policy.v1.PodDisruptionBudgetStatus", "conditions", "merge", Some("type"), Some("map"), &["type"]),
    meta("io.k8s.api.storage.v1.CSINodeSpec", "drivers", "merge", Some("name"), Some("map"), &["name"]),
    meta("io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.JSONSchemaProps", "x-kubernetes-validations", "merge", Some("rule"), Some("map"), &["rule"]),
    meta("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "finalizers", "merge", None, Some("set"), &[]),
    meta("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta", "ownerReferences", "merge", Some("uid"), Some("map"), &["uid"]),
];

/// Writes the table's extensions onto the property schemas of `schemas`. Rows whose definition
/// is not generated (a kind the registry does not serve) are skipped.
pub(super) fn apply(schemas: &mut Map<String, Value>) {
    for row in PATCH_META {
        let Some(Value::Object(property)) = schemas
            .get_mut(row.definition)
            .and_then(|definition| definition.get_mut("properties"))
            .and_then(|properties| properties.get_mut(row.property))
        else {
            continue;
        };
        property.insert("x-kubernetes-patch-strategy".into(), json!(row.strategy));
        if let Some(key) = row.merge_key {
            property.insert("x-kubernetes-patch-merge-key".into(), json!(key));
        }
        if let Some(list_type) = row.list_type {
            property.insert("x-kubernetes-list-type".into(), json!(list_type));
        }
        if !row.list_map_keys.is_empty() {
            property.insert("x-kubernetes-list-map-keys".into(), json!(row.list_map_keys));
        }
    }
}
