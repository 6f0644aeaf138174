//! What an owner controls: claiming the objects its selector matches (adopting orphans, as
//! kube-controller-manager's `ControllerRefManager` does), and the state of the pods it runs.

use serde_json::{Value, json};

use super::prelude::*;
use super::{Api, ApiError, EventType, GroupVersionKind, ListOptions, ObjectKey, ObjectRef, PatchType, kinds, meta};

/// The objects of `dependent_kind` in `owner`'s namespace that `owner` (of `owner_kind`) controls:
/// those whose controller reference names it, plus orphans its `spec.selector` matches, which
/// are adopted (given a controller reference to it) unless the owner is being deleted.
pub fn claim(
    api: &dyn Api,
    owner_kind: &GroupVersionKind,
    owner: &Value,
    dependent_kind: &GroupVersionKind,
) -> Result<Vec<Value>, ApiError> {
    let uid = meta::uid(owner).unwrap_or_default();
    let selector = owner.pointer("/spec/selector");
    let mut claimed = Vec::new();
    for object in list_selected(api, dependent_kind, meta::namespace(owner), selector)? {
        if meta::is_controlled_by(&object, uid) {
            claimed.push(object);
        } else if meta::controller_ref(&object).is_none()
            && !meta::is_terminating(owner)
            && !meta::is_terminating(&object)
            && meta::selector_matches(selector, meta::labels(&object))
        {
            claimed.push(adopt(api, owner_kind, owner, dependent_kind, &object)?);
        }
    }
    Ok(claimed)
}

/// The objects of `kind` in `namespace` (all namespaces when `None`) that `selector`, a
/// `LabelSelector`, selects; a missing selector selects nothing. The host filters by the
/// selector's string form before anything is copied into the component, so a controller never
/// holds the rest of the namespace; a selector with no string form is applied here instead.
pub fn list_selected(
    api: &dyn Api,
    kind: &GroupVersionKind,
    namespace: Option<&str>,
    selector: Option<&Value>,
) -> Result<Vec<Value>, ApiError> {
    let Some(selector) = selector.filter(|s| !s.is_null()) else { return Ok(Vec::new()) };
    let options =
        ListOptions { label_selector: meta::selector_string(selector), ..ListOptions::in_namespace(namespace) };
    let listed = api.list(kind, &options)?;
    Ok(listed.into_iter().filter(|object| meta::selector_matches(Some(selector), meta::labels(object))).collect())
}

/// Creates `pods` in slow-start batches of 1, 2, 4, … (each batch at once, through
/// `create_many`), recording a `SuccessfulCreate` or `FailedCreate` Event about `regarding` for
/// each, and stops after the first batch with a failure, returning its first error — as
/// kube-controller-manager's `slowStartBatch` does, so a refused create (quota, admission) costs
/// one small batch rather than every call. Returns the pods created.
pub fn create_pods(api: &dyn Api, regarding: &ObjectRef, pods: &[Value]) -> Result<Vec<Value>, ApiError> {
    let mut created = Vec::with_capacity(pods.len());
    let mut batch = 1;
    let mut rest = pods;
    while !rest.is_empty() {
        let (now, later) = rest.split_at(batch.min(rest.len()));
        let mut failed = None;
        for result in api.create_many(&kinds::pod(), now) {
            match result {
                Ok(pod) => {
                    let message = format!("Created pod: {}", meta::name(&pod));
                    api.record_event(regarding, EventType::Normal, "SuccessfulCreate", &message);
                    created.push(pod);
                }
                Err(e) => {
                    let message = format!("Error creating: {}", e.message);
                    api.record_event(regarding, EventType::Warning, "FailedCreate", &message);
                    failed = failed.or(Some(e));
                }
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        rest = later;
        batch *= 2;
    }
    Ok(created)
}

/// Makes `owner` the controller of the orphan `object` (the UID in the patch makes it fail
/// rather than adopt a new object that took the name).
pub fn adopt(
    api: &dyn Api,
    owner_kind: &GroupVersionKind,
    owner: &Value,
    dependent_kind: &GroupVersionKind,
    object: &Value,
) -> Result<Value, ApiError> {
    let mut references = meta::owner_references(object).to_vec();
    references.push(meta::controller_reference(owner_kind, owner));
    let patch = json!({"metadata": {"ownerReferences": references, "uid": meta::uid(object)}});
    api.patch(dependent_kind, &ObjectKey::of(object), PatchType::Merge, &patch, None)
}

/// Whether a pod is `Running` and `Ready`.
#[must_use]
pub fn pod_is_running_and_ready(pod: &Value) -> bool {
    pod.pointer("/status/phase").and_then(Value::as_str) == Some("Running") && meta::pod_is_ready(pod)
}

/// Seconds until a ready pod becomes available (ready for `min_ready_seconds`), at `now`:
/// `Some(0)` when available, `None` when not ready at all.
#[must_use]
pub fn pod_available_in(pod: &Value, min_ready_seconds: i64, now: i64) -> Option<i64> {
    if meta::is_terminating(pod) || !meta::pod_is_ready(pod) {
        return None;
    }
    if min_ready_seconds <= 0 {
        return Some(0);
    }
    let since = meta::condition(pod, "Ready")
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(meta::parse_rfc3339)
        .unwrap_or(now);
    Some((since + min_ready_seconds - now).max(0))
}

/// Whether a pod has been ready for `min_ready_seconds` at `now` (and is not being deleted).
#[must_use]
pub fn pod_is_available(pod: &Value, min_ready_seconds: i64, now: i64) -> bool {
    pod_available_in(pod, min_ready_seconds, now) == Some(0)
}

/// An `IntOrString` field (`3` or `"25%"`) scaled against `total`: percentages round up or
/// down as asked; `None` when absent or malformed.
#[must_use]
pub fn scaled_int_or_percent(value: Option<&Value>, total: i64, round_up: bool) -> Option<i64> {
    match value? {
        Value::Number(n) => n.as_i64(),
        Value::String(text) => {
            let Some(percent) = text.strip_suffix('%') else { return text.parse().ok() };
            let scaled = total * percent.trim().parse::<i64>().ok()?;
            Some(if round_up { (scaled + 99).div_euclid(100) } else { scaled.div_euclid(100) })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{pod_available_in, scaled_int_or_percent};
    use crate::controller::meta;

    #[test]
    fn int_or_percent_scales_with_the_asked_rounding() {
        let cases = [
            (json!(2), 10, true, Some(2)),
            (json!("25%"), 10, true, Some(3)),
            (json!("25%"), 10, false, Some(2)),
            (json!("100%"), 3, false, Some(3)),
            (json!("5"), 10, false, Some(5)),
            (json!("x%"), 10, false, None),
            (json!(null), 10, false, None),
        ];
        for (value, total, up, expected) in cases {
            assert_eq!(scaled_int_or_percent(Some(&value), total, up), expected, "{value} of {total}");
        }
    }

    #[test]
    fn availability_waits_out_min_ready_seconds() {
        let ready_at = |stamp: &str| json!({"status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": stamp}]}});
        let now = meta::parse_rfc3339("2026-01-01T00:00:10Z").unwrap_or_default();
        assert_eq!(pod_available_in(&ready_at("2026-01-01T00:00:05Z"), 0, now), Some(0));
        assert_eq!(pod_available_in(&ready_at("2026-01-01T00:00:05Z"), 10, now), Some(5));
        assert_eq!(pod_available_in(&ready_at("2026-01-01T00:00:00Z"), 10, now), Some(0));
        assert_eq!(pod_available_in(&json!({"status": {"phase": "Pending"}}), 0, now), None);
    }
}
