//! The disruption controller as a Capstan component: it keeps each `PodDisruptionBudget`'s
//! status (policy/v1) — the pods it covers that are healthy (`currentHealthy`), how many must
//! stay so (`desiredHealthy`), how many it expects (`expectedPods`), and so how many may be
//! disrupted now (`disruptionsAllowed`, what the `pods/eviction` subresource spends), with the
//! `DisruptionAllowed` condition — as kube-controller-manager's disruption controller does.
//!
//! `minAvailable` as a number counts the matching pods; `maxUnavailable`, and `minAvailable`
//! as a percentage, are measured against the scale of the pods' controllers (Deployment,
//! ReplicaSet, StatefulSet, `ReplicationController`). Start with [`reconcile`]; [`budget`] holds
//! the arithmetic.

pub mod budget;

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, GroupVersionKind, ListOptions, ObjectKey, ReconcileResult, RelatedKind, Watches, meta,
    owned,
};
use serde_json::{Map, Value, json};

use budget::{Budget, Expected};

/// How long an eviction's entry in `status.disruptedPods` holds a pod out of the healthy count
/// (upstream's `DeletionTimeout`).
const DISRUPTION_TIMEOUT_SECONDS: i64 = 120;

/// The disruption controller.
pub struct DisruptionController;

/// The `PodDisruptionBudget` kind.
#[must_use]
pub fn pod_disruption_budget() -> GroupVersionKind {
    GroupVersionKind::new("policy", "v1", "PodDisruptionBudget")
}

fn pod() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "Pod")
}

/// The kinds whose scale a budget may be measured against.
fn scalable_kinds() -> [GroupVersionKind; 4] {
    [
        GroupVersionKind::new("apps", "v1", "Deployment"),
        GroupVersionKind::new("apps", "v1", "ReplicaSet"),
        GroupVersionKind::new("apps", "v1", "StatefulSet"),
        GroupVersionKind::new("", "v1", "ReplicationController"),
    ]
}

impl Controller for DisruptionController {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn watches(&self) -> Watches {
        let mut others = vec![RelatedKind { kind: pod(), maps_to_keys: true }];
        others.extend(scalable_kinds().into_iter().map(|kind| RelatedKind { kind, maps_to_keys: true }));
        Watches { primary: pod_disruption_budget(), owned: Vec::new(), others }
    }

    /// A pod maps to the budgets selecting it; a controller (its scale changed) to every budget
    /// in its namespace.
    fn map_to_keys(&self, api: &dyn Api, kind: &GroupVersionKind, object: &Value) -> Vec<ObjectKey> {
        let budgets = api.list(&pod_disruption_budget(), &ListOptions::in_namespace(meta::namespace(object)));
        let is_pod = kind.kind == "Pod";
        budgets
            .unwrap_or_default()
            .iter()
            .filter(|b| !is_pod || meta::selector_matches(b.pointer("/spec/selector"), meta::labels(object)))
            .map(ObjectKey::of)
            .collect()
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        capstan_plugin_sdk::controller::outcome(reconcile(api, key))
    }
}

capstan_plugin_sdk::controller!(DisruptionController);

/// Reconciles one budget; `Some(seconds)` asks to look again when an eviction record expires.
pub fn reconcile(api: &dyn Api, key: &ObjectKey) -> Result<Option<i64>, ApiError> {
    let Some(pdb) = api.get(&pod_disruption_budget(), key)? else { return Ok(None) };
    if meta::is_terminating(&pdb) {
        return Ok(None);
    }
    let now = meta::now_seconds();
    let selector = pdb.pointer("/spec/selector");
    let pods = owned::list_selected(api, &pod(), key.namespace.as_deref(), selector)?;
    let disrupted = live_disruptions(&pdb, &pods, now);
    let healthy = pods
        .iter()
        .filter(|p| !meta::is_terminating(p) && meta::pod_is_ready(p) && !disrupted.contains_key(meta::name(p)))
        .count() as i64;
    let outcome = match budget::expected(&pdb, pods.len() as i64, || controllers_scale(api, &pods)) {
        Ok(expected) => Ok(Budget::compute(&expected, healthy)),
        Err(message) => Err(message),
    };
    let status = status_for(&pdb, outcome, healthy, &disrupted, now);
    if pdb.get("status") != Some(&status) {
        let mut updated = pdb.clone();
        updated["status"] = status;
        match api.update_status(&pod_disruption_budget(), &updated) {
            Ok(_) => {}
            Err(e) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        }
    }
    let expiry = disrupted
        .values()
        .filter_map(|stamp| stamp.as_str().and_then(meta::parse_rfc3339))
        .map(|at| at + DISRUPTION_TIMEOUT_SECONDS - now)
        .min();
    Ok(expiry)
}

/// The `disruptedPods` entries still in force: the pod exists, is not yet being deleted, and
/// the eviction is recent.
fn live_disruptions(pdb: &Value, pods: &[Value], now: i64) -> Map<String, Value> {
    let recorded = pdb.pointer("/status/disruptedPods").and_then(Value::as_object).cloned().unwrap_or_default();
    recorded
        .into_iter()
        .filter(|(name, stamp)| {
            let fresh =
                stamp.as_str().and_then(meta::parse_rfc3339).is_some_and(|at| at + DISRUPTION_TIMEOUT_SECONDS > now);
            fresh && pods.iter().any(|p| meta::name(p) == name && !meta::is_terminating(p))
        })
        .collect()
}

/// The summed scale of the controllers of `pods` (a ReplicaSet owned by a Deployment counts
/// as the Deployment); an error names a pod whose controller has no known scale.
fn controllers_scale(api: &dyn Api, pods: &[Value]) -> Result<i64, String> {
    let mut seen: Vec<String> = Vec::new();
    let mut total = 0;
    for p in pods {
        let Some(reference) = meta::controller_ref(p) else {
            return Err(format!("found no controller for pod \"{}\"", meta::name(p)));
        };
        let (scale, uid) = scale_of(api, meta::namespace(p), reference)?;
        if !seen.contains(&uid) {
            seen.push(uid);
            total += scale;
        }
    }
    Ok(total)
}

/// The scale and UID of the controller `reference` names (following a ReplicaSet up to its
/// Deployment).
fn scale_of(api: &dyn Api, namespace: Option<&str>, reference: &Value) -> Result<(i64, String), String> {
    let text = |field: &str| reference.get(field).and_then(Value::as_str).unwrap_or_default();
    let kind = scalable_kinds()
        .into_iter()
        .find(|k| k.kind == text("kind") && k.api_version() == text("apiVersion"))
        .ok_or_else(|| format!("{} {} has no scale a disruption budget can read", text("kind"), text("name")))?;
    let key = ObjectKey { namespace: namespace.map(str::to_owned), name: text("name").to_owned() };
    let owner = api
        .get(&kind, &key)
        .map_err(|e| e.message)?
        .filter(|o| meta::uid(o) == Some(text("uid")))
        .ok_or_else(|| format!("{} {} not found", text("kind"), text("name")))?;
    if kind.kind == "ReplicaSet"
        && let Some(parent) =
            meta::controller_ref(&owner).filter(|r| r.get("kind").and_then(Value::as_str) == Some("Deployment"))
    {
        return scale_of(api, namespace, parent);
    }
    Ok((meta::int(&owner, "/spec/replicas", 1), meta::uid(&owner).unwrap_or_default().to_owned()))
}

/// The status for a computed budget (or the reason it could not be computed).
fn status_for(
    pdb: &Value,
    outcome: Result<Budget, String>,
    healthy: i64,
    disrupted: &Map<String, Value>,
    now: i64,
) -> Value {
    let (budget, condition) = match outcome {
        Ok(budget) if budget.disruptions_allowed > 0 => (budget, ("True", "SufficientPods", String::new())),
        Ok(budget) => (budget, ("False", "InsufficientPods", String::new())),
        Err(message) => {
            (Budget { expected: Expected::default(), disruptions_allowed: 0 }, ("False", "SyncFailed", message))
        }
    };
    let (status, reason, message) = condition;
    let previous = meta::condition(pdb, "DisruptionAllowed");
    let same_status = previous.and_then(|c| c.get("status")).and_then(Value::as_str) == Some(status);
    let transition = previous
        .filter(|_| same_status)
        .and_then(|c| c.get("lastTransitionTime"))
        .cloned()
        .unwrap_or_else(|| json!(meta::rfc3339(now)));
    json!({
        "observedGeneration": meta::generation(pdb),
        "currentHealthy": healthy,
        "desiredHealthy": budget.expected.desired_healthy,
        "expectedPods": budget.expected.expected_pods,
        "disruptionsAllowed": budget.disruptions_allowed,
        "disruptedPods": disrupted,
        "conditions": [{
            "type": "DisruptionAllowed",
            "status": status,
            "reason": reason,
            "message": message,
            "observedGeneration": meta::generation(pdb),
            "lastTransitionTime": transition,
        }],
    })
}

#[cfg(test)]
mod tests;
