//! The pod garbage collector as a Capstan component, as kube-controller-manager's `PodGC`:
//!
//! - terminated pods (`Succeeded`/`Failed`) beyond `terminatedPodThreshold` (upstream's
//!   `--terminated-pod-gc-threshold`, 12500; 0 turns it off) are deleted, evicted ones first,
//!   then the oldest;
//! - a pod bound to a node that no longer exists is marked `Failed` with the condition
//!   `DisruptionTarget` (reason `DeletionByPodGC`) and deleted once the node has been missing
//!   for `orphanGracePeriodSeconds` (upstream's 40 s quarantine, which rides out informer lag);
//! - an unscheduled pod being deleted is deleted at once (the API server removes an unbound pod
//!   without a grace period, so a delete call stands in for upstream's force delete).
//!
//! The quarantine is remembered per component instance: if a later look lands on another
//! instance of the pool, it waits one more grace period — later, never sooner.
//!
//! Start with [`PodGc::collect`].

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, DeleteOptions, GroupVersionKind, ListOptions, ObjectKey, PatchType, ReconcileResult,
    RelatedKind, Watches, meta,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The pod garbage collector's configuration.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct Config {
    /// Terminated pods kept before the oldest are deleted; 0 keeps them all.
    pub terminated_pod_threshold: usize,
    /// How long a node must be missing before its pods are deleted.
    pub orphan_grace_period_seconds: i64,
}

impl Default for Config {
    fn default() -> Self {
        Self { terminated_pod_threshold: 12_500, orphan_grace_period_seconds: 40 }
    }
}

/// The pod garbage collector.
pub struct PodGc {
    config: Config,
}

/// Under which key the host remembers when node `node` was first found missing (seconds since
/// the epoch): kept in the host, so every instance and version of the component sees it.
fn missing_since_key(node: &str) -> String {
    format!("missing-since/{node}")
}

fn pod_kind() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "Pod")
}

fn node_kind() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "Node")
}

fn node_name(pod: &Value) -> Option<&str> {
    pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty())
}

impl Controller for PodGc {
    fn configure(config: &str) -> Result<Self, String> {
        let config = serde_json::from_str(config).map_err(|e| format!("invalid pod GC configuration: {e}"))?;
        Ok(Self { config })
    }

    fn watches(&self) -> Watches {
        Watches {
            primary: pod_kind(),
            owned: Vec::new(),
            others: vec![RelatedKind { kind: node_kind(), maps_to_keys: true }],
        }
    }

    /// A Node that is gone: the pods bound to it.
    fn map_to_keys(&self, api: &dyn Api, _kind: &GroupVersionKind, node: &Value) -> Vec<ObjectKey> {
        let key = ObjectKey { namespace: None, name: meta::name(node).to_owned() };
        if api.get(&node_kind(), &key).ok().flatten().is_some() {
            return Vec::new();
        }
        let on_node = ListOptions {
            field_selector: Some(format!("spec.nodeName={}", key.name)),
            ..ListOptions::in_namespace(None)
        };
        let pods = api.list(&pod_kind(), &on_node).unwrap_or_default();
        pods.iter().filter(|p| node_name(p) == Some(key.name.as_str())).map(ObjectKey::of).collect()
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        capstan_plugin_sdk::controller::outcome(self.collect(api, key, meta::now_seconds()))
    }
}

capstan_plugin_sdk::controller!(PodGc);

impl PodGc {
    /// Looks at pod `key` at `now`; returns after how many seconds to look again, if needed.
    pub fn collect(&self, api: &dyn Api, key: &ObjectKey, now: i64) -> Result<Option<u64>, ApiError> {
        let Some(pod) = api.get(&pod_kind(), key)? else { return Ok(None) };
        let Some(node) = node_name(&pod) else {
            if meta::is_terminating(&pod) {
                delete(api, &pod)?;
            }
            return Ok(None);
        };
        let node_key = ObjectKey { namespace: None, name: node.to_owned() };
        if api.get(&node_kind(), &node_key)?.is_none() {
            let key = missing_since_key(node);
            let since = if let Some(since) = api.recall(&key).and_then(|s| s.parse().ok()) {
                since
            } else {
                api.remember(&key, Some(&now.to_string()))?;
                now
            };
            let wait = since + self.config.orphan_grace_period_seconds - now;
            if wait > 0 {
                return Ok(Some(u64::try_from(wait).unwrap_or(0)));
            }
            return delete_orphan(api, &pod).map(|()| None);
        }
        api.remember(&missing_since_key(node), None)?;
        if meta::pod_is_finished(&pod) {
            self.collect_terminated(api)?;
        }
        Ok(None)
    }

    /// Deletes the terminated pods beyond the threshold: evicted ones first, then the oldest.
    fn collect_terminated(&self, api: &dyn Api) -> Result<(), ApiError> {
        let threshold = self.config.terminated_pod_threshold;
        if threshold == 0 {
            return Ok(());
        }
        let mut terminated: Vec<Value> = api
            .list(&pod_kind(), &ListOptions::in_namespace(None))?
            .into_iter()
            .filter(|p| meta::pod_is_finished(p) && !meta::is_terminating(p))
            .collect();
        if terminated.len() <= threshold {
            return Ok(());
        }
        terminated.sort_by_key(|p| {
            let evicted = p.pointer("/status/reason").and_then(Value::as_str) == Some("Evicted");
            (!evicted, meta::created(p).to_owned(), meta::name(p).to_owned())
        });
        let excess = terminated.len() - threshold;
        for pod in &terminated[..excess] {
            delete(api, pod)?;
        }
        Ok(())
    }
}

/// Marks a pod of a missing node failed, with the condition upstream sets, then deletes it
/// (a terminal pod is removed at once: no node is left to confirm its containers stopped).
fn delete_orphan(api: &dyn Api, pod: &Value) -> Result<(), ApiError> {
    let mut conditions = pod.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    meta::set_condition(
        &mut conditions,
        "DisruptionTarget",
        "True",
        "DeletionByPodGC",
        "PodGC: node no longer exists",
        meta::now_seconds(),
    );
    let mut status = json!({"conditions": conditions});
    if !meta::pod_is_finished(pod) {
        status["phase"] = json!("Failed");
    }
    match api.patch(&pod_kind(), &ObjectKey::of(pod), PatchType::Merge, &json!({"status": status}), Some("status")) {
        Err(e) if e.is_not_found() => return Ok(()),
        Err(e) => return Err(e),
        Ok(_) => {}
    }
    delete(api, pod)
}

fn delete(api: &dyn Api, pod: &Value) -> Result<(), ApiError> {
    let options = DeleteOptions { precondition_uid: meta::uid(pod).map(str::to_owned), ..DeleteOptions::plain() };
    match api.delete(&pod_kind(), &ObjectKey::of(pod), &options) {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use capstan_plugin_sdk::controller::prelude::*;
    use capstan_plugin_sdk::controller::testing::FakeCluster;
    use capstan_plugin_sdk::controller::{Api, Controller, DeleteOptions, ObjectKey, meta};
    use serde_json::json;

    use super::{Config, PodGc, node_kind, pod_kind};

    const NOW: i64 = 1_795_000_000;

    fn gc(config: &str) -> PodGc {
        PodGc::configure(config).unwrap()
    }

    fn pod(cluster: &FakeCluster, name: &str, node: Option<&str>, phase: &str) -> ObjectKey {
        let mut object = json!({"metadata": {"name": name, "namespace": "default"}, "status": {"phase": phase}});
        if let Some(node) = node {
            object["spec"] = json!({"nodeName": node});
        }
        ObjectKey::of(&cluster.insert(&pod_kind(), object))
    }

    fn exists(cluster: &FakeCluster, key: &ObjectKey) -> bool {
        cluster.get(&pod_kind(), key).unwrap().is_some_and(|p| !meta::is_terminating(&p))
    }

    #[test]
    fn configuration_defaults_to_upstream_values() {
        assert_eq!(gc("{}").config, Config::default());
        assert_eq!(gc("{}").config.terminated_pod_threshold, 12_500);
        let custom = gc(r#"{"terminatedPodThreshold": 2, "orphanGracePeriodSeconds": 5}"#).config;
        assert_eq!((custom.terminated_pod_threshold, custom.orphan_grace_period_seconds), (2, 5));
        assert!(PodGc::configure(r#"{"threshold": 1}"#).is_err(), "unknown fields are refused");
    }

    #[test]
    fn terminated_pods_beyond_the_threshold_go_oldest_first() {
        // (threshold, terminated pods, running pods, terminated pods left)
        for (threshold, terminated, running, left) in [(2, 5, 3, 2), (0, 5, 0, 5), (10, 5, 1, 5)] {
            let cluster = FakeCluster::new();
            cluster.insert(&node_kind(), json!({"metadata": {"name": "n1"}}));
            let keys: Vec<ObjectKey> = (0..terminated)
                .map(|i| {
                    pod(&cluster, &format!("done-{i}"), Some("n1"), if i % 2 == 0 { "Succeeded" } else { "Failed" })
                })
                .collect();
            for i in 0..running {
                pod(&cluster, &format!("run-{i}"), Some("n1"), "Running");
            }
            let collector = gc(&format!(r#"{{"terminatedPodThreshold": {threshold}}}"#));
            collector.collect(&cluster, &keys[0], NOW).unwrap();
            let remaining: Vec<bool> = keys.iter().map(|k| exists(&cluster, k)).collect();
            assert_eq!(remaining.iter().filter(|e| **e).count(), left, "threshold {threshold}");
            if left < terminated {
                assert!(!remaining[0] && remaining[terminated - 1], "the oldest go first");
            }
            let running_left = cluster.all(&pod_kind()).iter().filter(|p| p["status"]["phase"] == "Running").count();
            assert_eq!(running_left, running, "running pods stay");
        }
    }

    #[test]
    fn pods_of_a_missing_node_are_failed_and_deleted_after_the_grace_period() {
        let cluster = FakeCluster::new();
        cluster.insert(&node_kind(), json!({"metadata": {"name": "alive"}}));
        let orphan = pod(&cluster, "orphan", Some("gone"), "Running");
        let kept = pod(&cluster, "kept", Some("alive"), "Running");
        let collector = gc(r#"{"orphanGracePeriodSeconds": 40}"#);
        // (seconds after first seen, requeue, whether the orphan remains)
        for (after, requeue, remains) in [(0, Some(40), true), (25, Some(15), true), (40, None, false)] {
            assert_eq!(collector.collect(&cluster, &orphan, NOW + after).unwrap(), requeue, "{after}s");
            assert_eq!(exists(&cluster, &orphan), remains, "{after}s");
        }
        assert_eq!(collector.collect(&cluster, &kept, NOW + 100).unwrap(), None);
        assert!(exists(&cluster, &kept));
    }

    #[test]
    fn the_orphan_is_marked_before_it_is_deleted() {
        let cluster = FakeCluster::new();
        let orphan = pod(&cluster, "orphan", Some("gone"), "Running");
        // A finalizer keeps the pod so the marks can be read.
        cluster.modify(&pod_kind(), &orphan, |p| p["metadata"]["finalizers"] = json!(["test/hold"]));
        gc(r#"{"orphanGracePeriodSeconds": 0}"#).collect(&cluster, &orphan, NOW).unwrap();
        let marked = cluster.get(&pod_kind(), &orphan).unwrap().unwrap();
        assert!(meta::is_terminating(&marked));
        assert_eq!(marked["status"]["phase"], "Failed");
        let condition = meta::condition(&marked, "DisruptionTarget").unwrap();
        assert_eq!(
            (condition["status"].clone(), condition["reason"].clone()),
            (json!("True"), json!("DeletionByPodGC"))
        );
    }

    #[test]
    fn unscheduled_terminating_pods_are_deleted() {
        let cluster = FakeCluster::new();
        let pending = pod(&cluster, "pending", None, "Pending");
        let collector = gc("{}");
        collector.collect(&cluster, &pending, NOW).unwrap();
        assert!(exists(&cluster, &pending), "an unscheduled pod not being deleted stays");
        cluster.modify(&pod_kind(), &pending, |p| {
            p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        });
        collector.collect(&cluster, &pending, NOW).unwrap();
        assert!(cluster.get(&pod_kind(), &pending).unwrap().is_none());
    }

    #[test]
    fn a_deleted_node_maps_to_its_pods() {
        let cluster = FakeCluster::new();
        let node = cluster.insert(&node_kind(), json!({"metadata": {"name": "n1"}}));
        let on_node = pod(&cluster, "a", Some("n1"), "Running");
        pod(&cluster, "b", Some("n2"), "Running");
        let collector = gc("{}");
        assert!(collector.map_to_keys(&cluster, &node_kind(), &node).is_empty(), "a live node maps to nothing");
        cluster.delete(&node_kind(), &ObjectKey::of(&node), &DeleteOptions::plain()).unwrap();
        assert_eq!(collector.map_to_keys(&cluster, &node_kind(), &node), vec![on_node]);
    }
}
