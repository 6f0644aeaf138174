//! Reading the metadata every controller looks at from a JSON object: names, labels, owner
//! references, deletion, label selectors.

use serde_json::{Map, Value, json};

use super::GroupVersionKind;
use super::prelude::GroupVersionKindExt as _;

/// `metadata.name` (empty when absent).
#[must_use]
pub fn name(object: &Value) -> &str {
    object.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

/// `metadata.namespace`.
#[must_use]
pub fn namespace(object: &Value) -> Option<&str> {
    object.pointer("/metadata/namespace").and_then(Value::as_str)
}

/// `metadata.uid`.
#[must_use]
pub fn uid(object: &Value) -> Option<&str> {
    object.pointer("/metadata/uid").and_then(Value::as_str)
}

/// `metadata.generation` (0 when absent).
#[must_use]
pub fn generation(object: &Value) -> i64 {
    object.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0)
}

/// `metadata.creationTimestamp` (RFC 3339 sorts as text).
#[must_use]
pub fn created(object: &Value) -> &str {
    object.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or_default()
}

/// Whether the object is being deleted.
#[must_use]
pub fn is_terminating(object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// One annotation.
#[must_use]
pub fn annotation<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/annotations").and_then(|a| a.get(key)).and_then(Value::as_str)
}

/// One label.
#[must_use]
pub fn label<'a>(object: &'a Value, key: &str) -> Option<&'a str> {
    object.pointer("/metadata/labels").and_then(|a| a.get(key)).and_then(Value::as_str)
}

/// The object's finalizers.
#[must_use]
pub fn finalizers(object: &Value) -> Vec<&str> {
    object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|list| list.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// The object's owner references.
#[must_use]
pub fn owner_references(object: &Value) -> &[Value] {
    object.pointer("/metadata/ownerReferences").and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// The owner reference with `controller: true`, if any.
#[must_use]
pub fn controller_ref(object: &Value) -> Option<&Value> {
    owner_references(object).iter().find(|r| r.get("controller").and_then(Value::as_bool) == Some(true))
}

/// Whether `object` is controlled by the object with `owner_uid`.
#[must_use]
pub fn is_controlled_by(object: &Value, owner_uid: &str) -> bool {
    controller_ref(object).and_then(|r| r.get("uid")).and_then(Value::as_str) == Some(owner_uid)
}

/// A controller owner reference to `owner` of `kind`, blocking the owner's foreground deletion.
#[must_use]
pub fn controller_reference(kind: &GroupVersionKind, owner: &Value) -> Value {
    json!({
        "apiVersion": kind.api_version(),
        "kind": kind.kind,
        "name": name(owner),
        "uid": uid(owner).unwrap_or_default(),
        "controller": true,
        "blockOwnerDeletion": true,
    })
}

/// The `values` of one `matchExpressions` entry.
fn expression_values(expression: &Value) -> Vec<&str> {
    expression.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect()
}

/// A `LabelSelector` (`matchLabels` and `matchExpressions`) in the API's string form, for
/// `ListOptions::label_selector` (e.g. `app=web,tier in (a,b),!canary`). `None` when it cannot
/// be said as a string (a missing selector, an unknown operator): list and filter with
/// [`selector_matches`] instead. An empty selector is the empty string (everything).
#[must_use]
pub fn selector_string(selector: &Value) -> Option<String> {
    let object = selector.as_object()?;
    let mut terms: Vec<String> = Vec::new();
    for (key, value) in object.get("matchLabels").and_then(Value::as_object).into_iter().flatten() {
        terms.push(format!("{key}={}", value.as_str()?));
    }
    for expression in object.get("matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let key = expression.get("key").and_then(Value::as_str)?;
        let values = expression_values(expression);
        terms.push(match expression.get("operator").and_then(Value::as_str)? {
            "In" if !values.is_empty() => format!("{key} in ({})", values.join(",")),
            "NotIn" if !values.is_empty() => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.to_owned(),
            "DoesNotExist" => format!("!{key}"),
            _ => return None,
        });
    }
    Some(terms.join(","))
}

/// Whether a `LabelSelector` (`matchLabels` and `matchExpressions`) selects `labels`. An empty
/// selector selects everything; a missing one nothing.
#[must_use]
pub fn selector_matches(selector: Option<&Value>, labels: Option<&Value>) -> bool {
    let Some(selector) = selector.filter(|s| !s.is_null()) else { return false };
    let empty = Map::new();
    let labels = labels.and_then(Value::as_object).unwrap_or(&empty);
    let label = |key: &str| labels.get(key).and_then(Value::as_str);
    let match_labels = selector.get("matchLabels").and_then(Value::as_object);
    if !match_labels.into_iter().flatten().all(|(k, v)| label(k) == v.as_str()) {
        return false;
    }
    let expressions = selector.get("matchExpressions").and_then(Value::as_array);
    expressions.into_iter().flatten().all(|expression| {
        let key = expression.get("key").and_then(Value::as_str).unwrap_or_default();
        let values = expression_values(expression);
        match expression.get("operator").and_then(Value::as_str) {
            Some("In") => label(key).is_some_and(|v| values.contains(&v)),
            Some("NotIn") => label(key).is_none_or(|v| !values.contains(&v)),
            Some("Exists") => label(key).is_some(),
            Some("DoesNotExist") => label(key).is_none(),
            _ => false,
        }
    })
}

/// The object's labels (`metadata.labels`).
#[must_use]
pub fn labels(object: &Value) -> Option<&Value> {
    object.pointer("/metadata/labels")
}

/// Whether a pod's `Ready` condition is true.
#[must_use]
pub fn pod_is_ready(pod: &Value) -> bool {
    condition(pod, "Ready").is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

/// Whether a pod has finished (`Succeeded` or `Failed`).
#[must_use]
pub fn pod_is_finished(pod: &Value) -> bool {
    matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed"))
}

/// The status condition of `kind`.
#[must_use]
pub fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|list| list.iter().find(|c| c.get("type").and_then(Value::as_str) == Some(kind)))
}

/// Whether the status condition of `kind` has status `True`.
#[must_use]
pub fn condition_is_true(object: &Value, kind: &str) -> bool {
    condition(object, kind).is_some_and(|c| c.get("status").and_then(Value::as_str) == Some("True"))
}

/// Sets the condition `kind` in `conditions` (a `status.conditions` list) to `status`, `reason`
/// and `message`. Its `lastTransitionTime` becomes `now` only when the status changes, as the
/// API conventions ask; `lastProbeTime` is always `now`. Returns whether anything changed.
pub fn set_condition(
    conditions: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: i64,
) -> bool {
    put_condition(conditions, kind, status, reason, message, now, true)
}

/// [`set_condition`] for kinds whose conditions have no `lastProbeTime` (`NamespaceCondition`,
/// `HorizontalPodAutoscalerCondition`, …): the condition written is exactly what the server
/// stores, so an unchanged one compares equal and costs no write.
pub fn set_condition_without_probe_time(
    conditions: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: i64,
) -> bool {
    put_condition(conditions, kind, status, reason, message, now, false)
}

fn put_condition(
    conditions: &mut Vec<Value>,
    kind: &str,
    status: &str,
    reason: &str,
    message: &str,
    now: i64,
    probe_time: bool,
) -> bool {
    let stamp = rfc3339(now);
    let mut fresh = json!({
        "type": kind, "status": status, "reason": reason, "message": message, "lastTransitionTime": stamp,
    });
    if probe_time {
        fresh["lastProbeTime"] = json!(stamp);
    }
    let Some(existing) = conditions.iter_mut().find(|c| c.get("type").and_then(Value::as_str) == Some(kind)) else {
        conditions.push(fresh);
        return true;
    };
    let same = |field: &str, value: &str| existing.get(field).and_then(Value::as_str) == Some(value);
    if same("status", status) && same("reason", reason) && same("message", message) {
        return false;
    }
    let transition = if same("status", status) { existing.get("lastTransitionTime").cloned() } else { None };
    *existing = fresh;
    if let Some(time) = transition {
        existing["lastTransitionTime"] = time;
    }
    true
}

/// How a Job ended: `Some("Complete")` or `Some("Failed")` once that condition holds, `None`
/// while it runs.
#[must_use]
pub fn job_finished(job: &Value) -> Option<&'static str> {
    ["Complete", "Failed"].into_iter().find(|kind| condition_is_true(job, kind))
}

/// The object's finalizers without `finalizer`, or `None` when it does not carry it.
#[must_use]
pub fn finalizers_without(object: &Value, finalizer: &str) -> Option<Vec<String>> {
    let all = finalizers(object);
    all.contains(&finalizer).then(|| all.into_iter().filter(|f| *f != finalizer).map(str::to_owned).collect())
}

/// An integer field by JSON pointer, `default` when absent.
#[must_use]
pub fn int(object: &Value, pointer: &str, default: i64) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or(default)
}

/// Seconds since the Unix epoch, now.
#[must_use]
pub fn now_seconds() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// `seconds` since the epoch as an RFC 3339 timestamp in UTC (`2026-01-02T03:04:05Z`).
#[must_use]
pub fn rfc3339(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let rest = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rest / 3600, rest % 3600 / 60, rest % 60)
}

/// Seconds since the epoch of an RFC 3339 timestamp (fractions and offsets other than `Z`
/// ignored); `None` when it does not parse.
#[must_use]
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let number = |range: std::ops::Range<usize>| text.get(range)?.parse::<i64>().ok();
    let (year, month, day) = (number(0..4)?, number(5..7)?, number(8..10)?);
    let (hour, minute, second) = (number(11..13)?, number(14..16)?, number(17..19)?);
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hour * 3600 + minute * 60 + second)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{
        finalizers_without, parse_rfc3339, rfc3339, selector_matches, selector_string, set_condition,
        set_condition_without_probe_time,
    };

    #[test]
    fn timestamps_round_trip() {
        for (seconds, text) in [
            (0, "1970-01-01T00:00:00Z"),
            (1_795_000_000, "2026-11-18T11:06:40Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
        ] {
            assert_eq!(rfc3339(seconds), text);
            assert_eq!(parse_rfc3339(text), Some(seconds));
        }
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let labels = json!({"app": "web", "tier": "front"});
        let cases = [
            (json!({}), true),
            (json!({"matchLabels": {"app": "web"}}), true),
            (json!({"matchLabels": {"app": "db"}}), false),
            (json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["front", "back"]}]}), true),
            (json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["front"]}]}), false),
            (json!({"matchExpressions": [{"key": "zone", "operator": "DoesNotExist"}]}), true),
            (json!({"matchExpressions": [{"key": "zone", "operator": "Exists"}]}), false),
        ];
        for (selector, expected) in cases {
            assert_eq!(selector_matches(Some(&selector), Some(&labels)), expected, "{selector}");
        }
        assert!(!selector_matches(None, Some(&labels)));
    }

    #[test]
    fn conditions_keep_their_transition_time_until_the_status_changes() {
        let mut conditions = Vec::new();
        // (status, reason, now, changed, lastTransitionTime after)
        let steps = [
            ("True", "A", 100, true, 100),
            ("True", "A", 200, false, 100),
            ("True", "B", 300, true, 100),
            ("False", "B", 400, true, 400),
        ];
        for (status, reason, now, changed, transition) in steps {
            assert_eq!(set_condition(&mut conditions, "Ready", status, reason, "m", now), changed, "{status} {reason}");
            assert_eq!(conditions.len(), 1);
            assert_eq!(conditions[0]["lastTransitionTime"], json!(rfc3339(transition)), "{status} {reason}");
        }
    }

    #[test]
    fn finalizers_are_removed_only_when_present() {
        let object = json!({"metadata": {"finalizers": ["a", "b"]}});
        assert_eq!(finalizers_without(&object, "a"), Some(vec!["b".to_owned()]));
        assert_eq!(finalizers_without(&object, "c"), None);
    }

    #[test]
    fn conditions_without_probe_time_are_written_as_stored() {
        let mut conditions = Vec::new();
        assert!(set_condition_without_probe_time(&mut conditions, "Ready", "True", "Fine", "all good", 100));
        assert_eq!(
            conditions,
            [json!({"type": "Ready", "status": "True", "reason": "Fine", "message": "all good",
                    "lastTransitionTime": rfc3339(100)})],
            "no lastProbeTime: the kind has none"
        );
        // What the server stored comes back; the same condition later is no change.
        let stored = conditions.clone();
        assert!(!set_condition_without_probe_time(&mut conditions, "Ready", "True", "Fine", "all good", 200));
        assert_eq!(conditions, stored);
        // A new message keeps the transition time; a new status moves it.
        assert!(set_condition_without_probe_time(&mut conditions, "Ready", "True", "Fine", "still good", 300));
        assert_eq!(conditions[0]["lastTransitionTime"], rfc3339(100));
        assert!(conditions[0].get("lastProbeTime").is_none());
        assert!(set_condition_without_probe_time(&mut conditions, "Ready", "False", "Broken", "down", 400));
        assert_eq!(conditions[0]["lastTransitionTime"], rfc3339(400));
    }

    #[test]
    fn selectors_become_strings_the_server_parses() {
        let cases = [
            (json!({}), Some("")),
            (json!({"matchLabels": {"app": "web", "tier": "front"}}), Some("app=web,tier=front")),
            (
                json!({"matchLabels": {"app": "web"}, "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["a", "b"]},
                    {"key": "zone", "operator": "NotIn", "values": ["x"]},
                    {"key": "gpu", "operator": "Exists"},
                    {"key": "canary", "operator": "DoesNotExist"}]}),
                Some("app=web,env in (a,b),zone notin (x),gpu,!canary"),
            ),
            (json!({"matchExpressions": [{"key": "k", "operator": "Gt", "values": ["1"]}]}), None),
            (json!({"matchExpressions": [{"key": "k", "operator": "In", "values": []}]}), None),
            (json!(null), None),
        ];
        for (selector, wanted) in cases {
            assert_eq!(selector_string(&selector).as_deref(), wanted, "{selector}");
        }
    }
}
