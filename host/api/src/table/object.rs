//! Reading stored objects for printing: fields by JSON pointer with upstream's zero values, and
//! the formats several printers share (labels, selectors, container lists).

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::duration;
use crate::selector::LabelSelector;

/// The value at `pointer` unless it is missing or null (a Go nil pointer).
pub(super) fn field<'a>(object: &'a Value, pointer: &str) -> Option<&'a Value> {
    object.pointer(pointer).filter(|value| !value.is_null())
}

/// A string field, or "" when it is missing (a Go zero value).
pub(super) fn text<'a>(object: &'a Value, pointer: &str) -> &'a str {
    object.pointer(pointer).and_then(Value::as_str).unwrap_or_default()
}

/// A string field, or `fallback` when it is missing or empty.
pub(super) fn text_or<'a>(object: &'a Value, pointer: &str, fallback: &'a str) -> &'a str {
    Some(text(object, pointer)).filter(|value| !value.is_empty()).unwrap_or(fallback)
}

/// An integer field, or 0 when it is missing.
pub(super) fn integer(object: &Value, pointer: &str) -> i64 {
    object.pointer(pointer).and_then(Value::as_i64).unwrap_or_default()
}

/// A list field, or no items when it is missing.
pub(super) fn list<'a>(object: &'a Value, pointer: &str) -> &'a [Value] {
    object.pointer(pointer).and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

/// How many entries a map field has.
pub(super) fn entries(object: &Value, pointer: &str) -> usize {
    object.pointer(pointer).and_then(Value::as_object).map_or(0, serde_json::Map::len)
}

/// A `metav1.Time` or `metav1.MicroTime` field, or `None` when it is missing or unreadable.
pub(super) fn time(object: &Value, pointer: &str) -> Option<Timestamp> {
    object.pointer(pointer).and_then(Value::as_str).and_then(|text| text.parse().ok())
}

/// The object's name as a cell.
pub(super) fn name(object: &Value) -> Value {
    text(object, "/metadata/name").into()
}

/// The object's AGE cell: time since `metadata.creationTimestamp`.
pub(super) fn age(object: &Value, now: Timestamp) -> Value {
    duration::since(time(object, "/metadata/creationTimestamp"), now).into()
}

/// Time since the timestamp at `pointer`, `<unknown>` when it is not set.
pub(super) fn since(object: &Value, pointer: &str, now: Timestamp) -> String {
    duration::since(time(object, pointer), now)
}

/// Whether `metadata.deletionTimestamp` is set: the object is being deleted.
pub(super) fn deleting(object: &Value) -> bool {
    field(object, "/metadata/deletionTimestamp").is_some()
}

/// The status of the first condition of `kind` in the list at `pointer`.
pub(super) fn condition<'a>(object: &'a Value, pointer: &str, kind: &str) -> Option<&'a str> {
    list(object, pointer)
        .iter()
        .find(|condition| text(condition, "/type") == kind)
        .map(|condition| text(condition, "/status"))
}

/// A `map[string]string` as `k=v,k2=v2` sorted by key (`labels.FormatLabels`), `<none>` if empty.
pub(super) fn format_labels(map: Option<&Value>) -> String {
    let pairs: Vec<String> = map
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect();
    // serde_json maps iterate in key order, as FormatLabels sorts.
    if pairs.is_empty() { "<none>".to_owned() } else { pairs.join(",") }
}

/// A `metav1.LabelSelector` as selector text (`metav1.FormatLabelSelector`): `<none>` when it
/// selects everything or nothing, `<error>` when it is invalid.
pub(super) fn format_label_selector(selector: Option<&Value>) -> String {
    match LabelSelector::from_json(selector.unwrap_or(&Value::Null)) {
        Ok(selector) => Some(selector.to_string()).filter(|text| !text.is_empty()).unwrap_or_else(|| "<none>".into()),
        Err(_) => "<error>".to_owned(),
    }
}

/// The CONTAINERS and IMAGES cells of a pod template: names and images joined by `,`.
pub(super) fn containers(pod_spec: &Value) -> [Value; 2] {
    let containers = list(pod_spec, "/containers");
    let joined = |field: &str| -> Value {
        containers.iter().map(|container| text(container, field)).collect::<Vec<_>>().join(",").into()
    };
    [joined("/name"), joined("/image")]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn labels_and_selectors_format_as_upstream() {
        assert_eq!(format_labels(Some(&json!({"b": "2", "a": "1"}))), "a=1,b=2");
        assert_eq!(format_labels(Some(&json!({}))), "<none>");
        assert_eq!(format_labels(None), "<none>");
        let selector = json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "a", "operator": "Exists"}]});
        assert_eq!(format_label_selector(Some(&selector)), "a,app=web");
        assert_eq!(format_label_selector(Some(&json!({}))), "<none>");
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&json!({"matchLabels": {"-": "x"}}))), "<error>");
    }

    #[test]
    fn containers_lay_out_on_one_line() {
        let spec = json!({"containers": [{"name": "web", "image": "nginx:1"}, {"name": "log", "image": "busybox"}]});
        assert_eq!(containers(&spec), [json!("web,log"), json!("nginx:1,busybox")]);
        assert_eq!(containers(&json!({})), [json!(""), json!("")]);
    }
}
