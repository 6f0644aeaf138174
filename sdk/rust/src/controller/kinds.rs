//! The kinds controllers name most, as [`GroupVersionKind`]s.

use super::GroupVersionKind;
use super::prelude::GroupVersionKindExt;

macro_rules! kinds {
    ($($(#[$doc:meta])* $fn:ident => $group:literal, $version:literal, $kind:literal;)*) => {
        $(
            $(#[$doc])*
            #[must_use]
            pub fn $fn() -> GroupVersionKind {
                GroupVersionKind::new($group, $version, $kind)
            }
        )*
    };
}

kinds! {
    /// `v1` `Pod`.
    pod => "", "v1", "Pod";
    /// `v1` `Node`.
    node => "", "v1", "Node";
    /// `v1` `Namespace`.
    namespace => "", "v1", "Namespace";
    /// `v1` `Service`.
    service => "", "v1", "Service";
    /// `v1` `Endpoints`.
    endpoints => "", "v1", "Endpoints";
    /// `v1` `ServiceAccount`.
    service_account => "", "v1", "ServiceAccount";
    /// `v1` `ConfigMap`.
    config_map => "", "v1", "ConfigMap";
    /// `v1` `PersistentVolumeClaim`.
    persistent_volume_claim => "", "v1", "PersistentVolumeClaim";
    /// `discovery.k8s.io/v1` `EndpointSlice`.
    endpoint_slice => "discovery.k8s.io", "v1", "EndpointSlice";
    /// `coordination.k8s.io/v1` `Lease`.
    lease => "coordination.k8s.io", "v1", "Lease";
    /// `apps/v1` `Deployment`.
    deployment => "apps", "v1", "Deployment";
    /// `apps/v1` `ReplicaSet`.
    replica_set => "apps", "v1", "ReplicaSet";
    /// `apps/v1` `StatefulSet`.
    stateful_set => "apps", "v1", "StatefulSet";
    /// `apps/v1` `DaemonSet`.
    daemon_set => "apps", "v1", "DaemonSet";
    /// `apps/v1` `ControllerRevision`.
    controller_revision => "apps", "v1", "ControllerRevision";
    /// `batch/v1` `Job`.
    job => "batch", "v1", "Job";
    /// `batch/v1` `CronJob`.
    cron_job => "batch", "v1", "CronJob";
    /// `policy/v1` `PodDisruptionBudget`.
    pod_disruption_budget => "policy", "v1", "PodDisruptionBudget";
    /// `autoscaling/v2` `HorizontalPodAutoscaler`.
    horizontal_pod_autoscaler => "autoscaling", "v2", "HorizontalPodAutoscaler";
    /// `metrics.k8s.io/v1beta1` `PodMetrics` (read live from the resource metrics API).
    pod_metrics => "metrics.k8s.io", "v1beta1", "PodMetrics";
}
