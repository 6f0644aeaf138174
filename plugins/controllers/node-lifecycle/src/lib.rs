//! The node lifecycle controller as a Capstan component, as kube-controller-manager's
//! `node-lifecycle-controller` and `taint-eviction-controller` behave:
//!
//! - a node whose Lease (in `kube-node-lease`) and Ready heartbeat are both older than
//!   `nodeMonitorGracePeriodSeconds` (40 s) gets every condition set to `Unknown` ("Kubelet
//!   stopped posting node status."), and its pods are marked not Ready;
//! - a node that is not Ready carries `node.kubernetes.io/not-ready` (Ready `False`) or
//!   `node.kubernetes.io/unreachable` (Ready `Unknown`) taints, `NoSchedule` and `NoExecute`,
//!   removed again when it is Ready;
//! - a pod on a node with `NoExecute` taints it does not tolerate is deleted at once; one that
//!   tolerates them for `tolerationSeconds` is deleted that long after the taint was added.
//!
//! Start with [`reconcile`]; time is a parameter so the table tests can move it.

use capstan_plugin_sdk::controller::kinds::{lease, node, pod};
use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, DeleteOptions, EventType, GroupVersionKind, ListOptions, ObjectKey, ObjectRef,
    PatchType, ReconcileResult, RelatedKind, Watches, meta, outcome, placement::tolerates,
};
use serde::Deserialize;
use serde_json::{Value, json};

/// The taint of a node whose Ready condition is `False`.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// The taint of a node whose Ready condition is `Unknown`.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// The namespace of node Leases.
const LEASE_NAMESPACE: &str = "kube-node-lease";

/// Configuration, as the controller's Plugin object gives it.
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Config {
    /// How long a node may stay silent before it is marked Unknown.
    #[serde(default = "default_grace")]
    pub node_monitor_grace_period_seconds: i64,
}

fn default_grace() -> i64 {
    40
}

/// The node lifecycle controller.
pub struct NodeLifecycleController {
    config: Config,
}

impl Controller for NodeLifecycleController {
    fn configure(config: &str) -> Result<Self, String> {
        let config = serde_json::from_str(config).map_err(|e| format!("invalid configuration: {e}"))?;
        Ok(Self { config })
    }

    fn watches(&self) -> Watches {
        Watches {
            primary: node(),
            owned: Vec::new(),
            others: vec![
                RelatedKind { kind: lease(), maps_to_keys: true },
                RelatedKind { kind: pod(), maps_to_keys: true },
            ],
        }
    }

    fn map_to_keys(&self, _api: &dyn Api, kind: &GroupVersionKind, object: &Value) -> Vec<ObjectKey> {
        let name = if kind.kind == "Lease" {
            (meta::namespace(object) == Some(LEASE_NAMESPACE)).then(|| meta::name(object))
        } else {
            object.pointer("/spec/nodeName").and_then(Value::as_str)
        };
        name.filter(|n| !n.is_empty()).map(|n| ObjectKey { namespace: None, name: n.to_owned() }).into_iter().collect()
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        outcome(reconcile(api, key, &self.config, meta::now_seconds()))
    }
}

capstan_plugin_sdk::controller!(NodeLifecycleController);

/// Brings node `key` and its pods in line at time `now` (seconds since the epoch). Returns in
/// how many seconds to look again, if anything is due later.
pub fn reconcile(api: &dyn Api, key: &ObjectKey, config: &Config, now: i64) -> Result<Option<i64>, ApiError> {
    let Some(mut current) = api.get(&node(), key)? else { return Ok(None) };
    let grace = config.node_monitor_grace_period_seconds;
    let heard = last_heard(api, &current);
    let silent_for = now - heard;
    let mut next = None;
    if silent_for > grace {
        if ready_status(&current) != Some("Unknown") {
            current = mark_unknown(api, &current, now)?;
            mark_pods_not_ready(api, &current)?;
        }
    } else {
        next = Some(grace - silent_for + 1);
    }
    current = sync_taints(api, &current, now)?;
    let eviction = evict(api, &current, now)?;
    Ok(match (next, eviction) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    })
}

/// When the node was last heard from: its Lease's renewal or its Ready heartbeat, whichever is
/// later (its creation when it has neither).
fn last_heard(api: &dyn Api, node_object: &Value) -> i64 {
    let lease_key = ObjectKey::namespaced(LEASE_NAMESPACE, meta::name(node_object));
    let renewed = api
        .get(&lease(), &lease_key)
        .ok()
        .flatten()
        .and_then(|l| l.pointer("/spec/renewTime").and_then(Value::as_str).and_then(meta::parse_rfc3339));
    let heartbeat = meta::condition(node_object, "Ready")
        .and_then(|c| c.get("lastHeartbeatTime").and_then(Value::as_str))
        .and_then(meta::parse_rfc3339);
    renewed.max(heartbeat).unwrap_or_else(|| meta::parse_rfc3339(meta::created(node_object)).unwrap_or(0))
}

/// The status of the node's Ready condition; `None` before the node has posted one.
fn ready_status(node_object: &Value) -> Option<&str> {
    meta::condition(node_object, "Ready").and_then(|c| c.get("status")).and_then(Value::as_str)
}

/// Sets every condition of a silent node to `Unknown`.
fn mark_unknown(api: &dyn Api, node_object: &Value, now: i64) -> Result<Value, ApiError> {
    let stamp = meta::rfc3339(now);
    let mut updated = node_object.clone();
    let mut conditions =
        node_object.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    if !conditions.iter().any(|c| c["type"] == "Ready") {
        conditions.push(json!({"type": "Ready"}));
    }
    for condition in &mut conditions {
        condition["status"] = json!("Unknown");
        condition["reason"] = json!("NodeStatusUnknown");
        condition["message"] = json!("Kubelet stopped posting node status.");
        condition["lastTransitionTime"] = json!(stamp);
    }
    updated["status"]["conditions"] = Value::Array(conditions);
    let stored = api.update_status(&node(), &updated)?;
    let regarding = ObjectRef::to(&node(), node_object);
    let message = format!("Node {} status is now: NodeNotReady", meta::name(node_object));
    api.record_event(&regarding, EventType::Normal, "NodeNotReady", &message);
    Ok(stored)
}

/// Marks the Ready condition of the node's pods `False`, as upstream does when a node goes
/// silent (their containers' state is no longer known).
fn mark_pods_not_ready(api: &dyn Api, node_object: &Value) -> Result<(), ApiError> {
    for pod_object in pods_on(api, meta::name(node_object))? {
        let Some(ready) = meta::condition(&pod_object, "Ready") else { continue };
        if ready["status"] != "True" {
            continue;
        }
        let mut conditions =
            pod_object.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        for condition in conditions.iter_mut().filter(|c| c["type"] == "Ready") {
            condition["status"] = json!("False");
            condition["reason"] = json!("NodeNotReady");
        }
        let patch = json!({"status": {"conditions": conditions}});
        match api.patch(&pod(), &ObjectKey::of(&pod_object), PatchType::Merge, &patch, Some("status")) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn pods_on(api: &dyn Api, node_name: &str) -> Result<Vec<Value>, ApiError> {
    let options =
        ListOptions { field_selector: Some(format!("spec.nodeName={node_name}")), ..ListOptions::in_namespace(None) };
    Ok(api
        .list(&pod(), &options)?
        .into_iter()
        .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node_name))
        .collect())
}

/// The not-ready/unreachable taints the node's Ready condition calls for, others kept.
fn sync_taints(api: &dyn Api, node_object: &Value, now: i64) -> Result<Value, ApiError> {
    let wanted = match ready_status(node_object) {
        // A node that has not posted a Ready condition yet is left as it registered.
        None => return Ok(node_object.clone()),
        Some("True") => None,
        Some("False") => Some(NOT_READY),
        Some(_) => Some(UNREACHABLE),
    };
    let taints = node_object.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut next: Vec<Value> = taints
        .iter()
        .filter(|t| {
            let key = t["key"].as_str().unwrap_or_default();
            !(key == NOT_READY || key == UNREACHABLE) || Some(key) == wanted
        })
        .cloned()
        .collect();
    if let Some(key) = wanted {
        for effect in ["NoSchedule", "NoExecute"] {
            if !next.iter().any(|t| t["key"] == key && t["effect"] == effect) {
                let mut taint = json!({"key": key, "effect": effect});
                if effect == "NoExecute" {
                    taint["timeAdded"] = json!(meta::rfc3339(now));
                }
                next.push(taint);
            }
        }
    }
    if next == taints {
        return Ok(node_object.clone());
    }
    let mut updated = node_object.clone();
    updated["spec"]["taints"] = Value::Array(next);
    api.update(&node(), &updated)
}

/// Deletes the pods on the node that do not tolerate its `NoExecute` taints (now, or once
/// their `tolerationSeconds` have passed). Returns in how many seconds the next one is due.
fn evict(api: &dyn Api, node_object: &Value, now: i64) -> Result<Option<i64>, ApiError> {
    let taints: Vec<&Value> = node_object
        .pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| t["effect"] == "NoExecute")
        .collect();
    if taints.is_empty() {
        return Ok(None);
    }
    let mut next: Option<i64> = None;
    for pod_object in pods_on(api, meta::name(node_object))? {
        if meta::is_terminating(&pod_object) || meta::pod_is_finished(&pod_object) {
            continue;
        }
        let Some(due) = eviction_time(&pod_object, &taints) else { continue };
        if due > now {
            next = Some(next.map_or(due - now, |n| n.min(due - now)));
            continue;
        }
        match api.delete(&pod(), &ObjectKey::of(&pod_object), &DeleteOptions::plain()) {
            Ok(()) => {
                let regarding = ObjectRef::to(&pod(), &pod_object);
                let message = format!(
                    "Marking for deletion Pod {}/{}",
                    meta::namespace(&pod_object).unwrap_or_default(),
                    meta::name(&pod_object)
                );
                api.record_event(&regarding, EventType::Normal, "TaintManagerEviction", &message);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(next)
}

/// When `pod` must go given the node's `NoExecute` taints: `None` when it tolerates them all
/// for ever; otherwise the earliest of, per taint, its `timeAdded` plus the shortest matching
/// `tolerationSeconds` (now for a taint it does not tolerate).
#[must_use]
pub fn eviction_time(pod_object: &Value, taints: &[&Value]) -> Option<i64> {
    let tolerations = pod_object.pointer("/spec/tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    let mut due: Option<i64> = None;
    for taint in taints {
        let added = taint.get("timeAdded").and_then(Value::as_str).and_then(meta::parse_rfc3339).unwrap_or(0);
        let matching: Vec<&Value> = tolerations.iter().filter(|t| tolerates(t, taint)).collect();
        let at = if matching.is_empty() {
            Some(i64::MIN)
        } else if matching.iter().any(|t| t.get("tolerationSeconds").is_none_or(Value::is_null)) {
            None
        } else {
            matching.iter().filter_map(|t| t["tolerationSeconds"].as_i64()).min().map(|s| added + s.max(0))
        };
        if let Some(at) = at {
            due = Some(due.map_or(at, |d| d.min(at)));
        }
    }
    due
}

#[cfg(test)]
mod tests;
