//! The ReplicaSet controller as a Capstan component: keeps as many live pods as a ReplicaSet
//! asks for — creating them from its template in slow-start batches, deleting the least useful
//! ones first — adopts orphan pods its selector matches, and writes the ReplicaSet's status.
//!
//! Configured with `{"kind": "ReplicationController"}` the same component is the
//! `ReplicationController` manager (a v1 `ReplicationController` is a ReplicaSet whose selector
//! is a plain label map, defaulting to its template's labels).
//!
//! Start with [`ReplicaSetController::reconcile`]; the logic is plain functions over
//! [`Api`], tested natively against the SDK's in-memory cluster.

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, DeleteOptions, EventType, GroupVersionKind, ObjectKey, ObjectRef, ReconcileResult,
    Watches, meta, owned,
};
use serde_json::{Value, json};

/// Most pods created or deleted in one reconcile; the rest follow on the next.
const BURST: usize = 500;

/// The ReplicaSet (or `ReplicationController`) controller.
pub struct ReplicaSetController {
    kind: GroupVersionKind,
}

fn replica_set() -> GroupVersionKind {
    GroupVersionKind::new("apps", "v1", "ReplicaSet")
}

fn replication_controller() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "ReplicationController")
}

fn pod() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "Pod")
}

impl Controller for ReplicaSetController {
    fn configure(config: &str) -> Result<Self, String> {
        let config: Value = serde_json::from_str(config).map_err(|e| format!("the configuration is not JSON: {e}"))?;
        let kind = match config.get("kind").and_then(Value::as_str) {
            None | Some("ReplicaSet") => replica_set(),
            Some("ReplicationController") => replication_controller(),
            Some(other) => {
                return Err(format!("kind {other:?}: this component manages ReplicaSet or ReplicationController"));
            }
        };
        Ok(Self { kind })
    }

    fn watches(&self) -> Watches {
        Watches { primary: self.kind.clone(), owned: vec![pod()], others: Vec::new() }
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        match reconcile(api, &self.kind, key) {
            Ok(()) => ReconcileResult::Done,
            Err(e) => ReconcileResult::Error(format!("{} ({} {})", e.message, e.code, e.reason)),
        }
    }
}

capstan_plugin_sdk::controller!(ReplicaSetController);

/// The owner's pod selector as a `LabelSelector` (a `ReplicationController`'s is a label map,
/// its template's labels when absent).
fn selector_of(kind: &GroupVersionKind, owner: &Value) -> Option<Value> {
    if kind.kind != "ReplicationController" {
        return owner.pointer("/spec/selector").cloned();
    }
    let labels = owner
        .pointer("/spec/selector")
        .filter(|s| s.as_object().is_some_and(|m| !m.is_empty()))
        .or_else(|| owner.pointer("/spec/template/metadata/labels"))?;
    Some(json!({"matchLabels": labels}))
}

fn reconcile(api: &dyn Api, kind: &GroupVersionKind, key: &ObjectKey) -> Result<(), ApiError> {
    let Some(rs) = api.get(kind, key)? else { return Ok(()) };
    let uid = meta::uid(&rs).unwrap_or_default().to_owned();
    let selector = selector_of(kind, &rs);
    let selector = selector.as_ref();
    // Only the pods the selector matches are copied in (owned pods match it: the selector is
    // immutable); never the rest of the namespace.
    let all_pods = owned::list_selected(api, &pod(), key.namespace.as_deref(), selector)?;
    let mut active = Vec::new();
    for candidate in all_pods {
        if meta::is_terminating(&candidate) || meta::pod_is_finished(&candidate) {
            continue;
        }
        if meta::is_controlled_by(&candidate, &uid) {
            active.push(candidate);
        } else if meta::controller_ref(&candidate).is_none()
            && !meta::is_terminating(&rs)
            && meta::selector_matches(selector, meta::labels(&candidate))
        {
            active.push(owned::adopt(api, kind, &rs, &pod(), &candidate)?);
        }
    }
    if !meta::is_terminating(&rs) {
        let desired = usize::try_from(meta::int(&rs, "/spec/replicas", 1)).unwrap_or(0);
        if active.len() < desired {
            let count = (desired - active.len()).min(BURST);
            owned::create_pods(api, &ObjectRef::to(kind, &rs), &vec![pod_from_template(kind, &rs); count])?;
        } else if active.len() > desired {
            let excess = (active.len() - desired).min(BURST);
            delete_pods(api, kind, &rs, &mut active, excess)?;
        }
    }
    update_status(api, kind, &rs, &active)
}

/// A new pod from the template of `rs` (of `kind`).
#[must_use]
pub fn pod_from_template(kind: &GroupVersionKind, rs: &Value) -> Value {
    let template = rs.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut metadata = template.get("metadata").cloned().unwrap_or_else(|| json!({}));
    metadata["generateName"] = json!(format!("{}-", meta::name(rs)));
    metadata["namespace"] = json!(meta::namespace(rs));
    metadata["ownerReferences"] = json!([meta::controller_reference(kind, rs)]);
    if let Some(map) = metadata.as_object_mut() {
        map.remove("name");
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": template.get("spec")})
}

/// How much a pod is worth keeping: unscheduled before scheduled, pending before running,
/// not ready before ready, newer before older — the first ones go first.
fn deletion_rank(pod_object: &Value) -> (bool, bool, bool, std::cmp::Reverse<String>) {
    let scheduled = pod_object.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let running = pod_object.pointer("/status/phase").and_then(Value::as_str) == Some("Running");
    (scheduled, running, meta::pod_is_ready(pod_object), std::cmp::Reverse(meta::created(pod_object).to_owned()))
}

fn delete_pods(
    api: &dyn Api,
    kind: &GroupVersionKind,
    rs: &Value,
    active: &mut Vec<Value>,
    count: usize,
) -> Result<(), ApiError> {
    active.sort_by_key(deletion_rank);
    let regarding = ObjectRef::to(kind, rs);
    for victim in active.drain(..count) {
        match api.delete(&pod(), &ObjectKey::of(&victim), &DeleteOptions::plain()) {
            Ok(()) => {
                let message = format!("Deleted pod: {}", meta::name(&victim));
                api.record_event(&regarding, EventType::Normal, "SuccessfulDelete", &message);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The status `rs` should show for its `active` pods.
#[must_use]
pub fn status_for(rs: &Value, active: &[Value]) -> Value {
    let template_labels = rs.pointer("/spec/template/metadata/labels").and_then(Value::as_object);
    let fully_labeled = active
        .iter()
        .filter(|p| template_labels.into_iter().flatten().all(|(k, v)| meta::label(p, k) == v.as_str()))
        .count();
    let ready = active.iter().filter(|p| meta::pod_is_ready(p)).count();
    let mut status = json!({
        "replicas": active.len(),
        "fullyLabeledReplicas": fully_labeled,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "observedGeneration": meta::generation(rs),
    });
    if let Some(conditions) = rs.pointer("/status/conditions") {
        status["conditions"] = conditions.clone();
    }
    status
}

fn update_status(api: &dyn Api, kind: &GroupVersionKind, rs: &Value, active: &[Value]) -> Result<(), ApiError> {
    let status = status_for(rs, active);
    if rs.get("status") == Some(&status) {
        return Ok(());
    }
    let mut updated = rs.clone();
    updated["status"] = status;
    match api.update_status(kind, &updated) {
        Ok(_) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use capstan_plugin_sdk::controller::prelude::*;
    use capstan_plugin_sdk::controller::testing::FakeCluster;
    use capstan_plugin_sdk::controller::{Api, ObjectKey, meta};
    use serde_json::{Value, json};

    use super::{pod, replica_set, replication_controller};

    fn reconcile(api: &dyn Api, key: &ObjectKey) -> Result<(), capstan_plugin_sdk::controller::ApiError> {
        super::reconcile(api, &replica_set(), key)
    }

    fn rs(replicas: i64) -> Value {
        json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
            },
        })
    }

    fn live_pods(cluster: &FakeCluster) -> Vec<Value> {
        cluster.all(&pod()).into_iter().filter(|p| !meta::is_terminating(p)).collect()
    }

    #[test]
    fn reconcile_converges_on_the_replica_count() {
        // (pods before, replicas, pods after one reconcile, status.replicas after the next)
        let cases = [(0, 3, 3, 3), (5, 2, 2, 2), (2, 2, 2, 2), (0, 0, 0, 0), (0, 700, 500, 500)];
        for (before, replicas, after, status) in cases {
            let cluster = FakeCluster::new();
            let owner = cluster.insert(&replica_set(), rs(i64::from(replicas)));
            for _ in 0..before {
                cluster.insert(&pod(), super::pod_from_template(&replica_set(), &owner));
            }
            let key = ObjectKey::namespaced("default", "web");
            reconcile(&cluster, &key).unwrap();
            assert_eq!(live_pods(&cluster).len(), after, "{before} pods, {replicas} replicas");
            reconcile(&cluster, &key).unwrap();
            let stored = cluster.get(&replica_set(), &key).unwrap().unwrap();
            assert_eq!(stored.pointer("/status/replicas"), Some(&json!(status)));
            assert_eq!(stored.pointer("/status/observedGeneration"), Some(&json!(1)));
        }
    }

    #[test]
    fn created_pods_are_controlled_and_labelled() {
        let cluster = FakeCluster::new();
        let owner = cluster.insert(&replica_set(), rs(1));
        reconcile(&cluster, &ObjectKey::namespaced("default", "web")).unwrap();
        let created = &live_pods(&cluster)[0];
        assert!(meta::is_controlled_by(created, meta::uid(&owner).unwrap()));
        assert_eq!(meta::label(created, "app"), Some("web"));
        assert!(cluster.events().iter().any(|(reason, _)| reason == "SuccessfulCreate"));
    }

    #[test]
    fn orphans_matching_the_selector_are_adopted_and_others_left_alone() {
        let cluster = FakeCluster::new();
        cluster.insert(&replica_set(), rs(1));
        cluster
            .insert(&pod(), json!({"metadata": {"name": "stray", "namespace": "default", "labels": {"app": "web"}}}));
        cluster.insert(&pod(), json!({"metadata": {"name": "other", "namespace": "default", "labels": {"app": "db"}}}));
        reconcile(&cluster, &ObjectKey::namespaced("default", "web")).unwrap();
        let pods = live_pods(&cluster);
        assert_eq!(pods.len(), 2, "the adopted pod counts; nothing new is created");
        let stray = pods.iter().find(|p| meta::name(p) == "stray").unwrap();
        assert!(meta::controller_ref(stray).is_some());
    }

    #[test]
    fn scale_down_deletes_unready_pods_first() {
        let cluster = FakeCluster::new();
        let owner = cluster.insert(&replica_set(), rs(1));
        let mut ready = super::pod_from_template(&replica_set(), &owner);
        ready["metadata"]["name"] = json!("ready");
        ready["status"] = json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]});
        cluster.insert(&pod(), ready);
        let mut pending = super::pod_from_template(&replica_set(), &owner);
        pending["metadata"]["name"] = json!("pending");
        cluster.insert(&pod(), pending);
        reconcile(&cluster, &ObjectKey::namespaced("default", "web")).unwrap();
        let names: Vec<String> = live_pods(&cluster).iter().map(|p| meta::name(p).to_owned()).collect();
        assert_eq!(names, ["ready"]);
    }

    #[test]
    fn a_replication_controller_is_managed_by_its_label_map_selector() {
        let cluster = FakeCluster::new();
        let rc = json!({
            "metadata": {"name": "old", "namespace": "default"},
            "spec": {
                "replicas": 2,
                "selector": {"app": "old"},
                "template": {"metadata": {"labels": {"app": "old"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
            },
        });
        let owner = cluster.insert(&replication_controller(), rc);
        cluster
            .insert(&pod(), json!({"metadata": {"name": "stray", "namespace": "default", "labels": {"app": "old"}}}));
        let key = ObjectKey::namespaced("default", "old");
        super::reconcile(&cluster, &replication_controller(), &key).unwrap();
        let pods = live_pods(&cluster);
        assert_eq!(pods.len(), 2, "the stray pod is adopted and one more created");
        assert!(pods.iter().all(|p| meta::is_controlled_by(p, meta::uid(&owner).unwrap())));
        assert_eq!(meta::controller_ref(&pods[0]).unwrap()["kind"], "ReplicationController");
        super::reconcile(&cluster, &replication_controller(), &key).unwrap();
        let stored = cluster.get(&replication_controller(), &key).unwrap().unwrap();
        assert_eq!(stored["status"]["replicas"], 2);
        assert!(
            <super::ReplicaSetController as capstan_plugin_sdk::controller::Controller>::configure(
                r#"{"kind": "Deployment"}"#
            )
            .is_err()
        );
    }
}
