//! Object-metadata rules shared by the API server and its clients (the controller manager's
//! write-through cache), so that both agree on what an object's state means.

use serde_json::Value;

/// Whether `object` (of `group`/`kind`) is held back from removal by finalizers.
///
/// Every object is held by a non-empty `metadata.finalizers`; a Namespace (core group) is also
/// held by a non-empty `spec.finalizers`, which the namespace controller clears through
/// `namespaces/<name>/finalize` once the namespace is empty.
#[must_use]
pub fn held_by_finalizers(group: &str, kind: &str, object: &Value) -> bool {
    let held = |pointer: &str| object.pointer(pointer).and_then(Value::as_array).is_some_and(|f| !f.is_empty());
    held("/metadata/finalizers") || (group.is_empty() && kind == "Namespace" && held("/spec/finalizers"))
}

/// Whether `object` is being deleted (`metadata.deletionTimestamp`) and no finalizer holds it
/// any more: a write that leaves it so removes it.
#[must_use]
pub fn deletion_finished(group: &str, kind: &str, object: &Value) -> bool {
    object.pointer("/metadata/deletionTimestamp").is_some() && !held_by_finalizers(group, kind, object)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn finalizers_hold_as_the_kind_says() {
        let cases = [
            ("", "Pod", json!({"metadata": {}}), false),
            ("", "Pod", json!({"metadata": {"finalizers": []}}), false),
            ("", "Pod", json!({"metadata": {"finalizers": ["a/b"]}}), true),
            // `spec.finalizers` means nothing outside a core Namespace.
            ("", "Pod", json!({"metadata": {}, "spec": {"finalizers": ["kubernetes"]}}), false),
            ("example.com", "Namespace", json!({"spec": {"finalizers": ["kubernetes"]}}), false),
            ("", "Namespace", json!({"metadata": {}, "spec": {"finalizers": ["kubernetes"]}}), true),
            ("", "Namespace", json!({"metadata": {}, "spec": {"finalizers": []}}), false),
            ("", "Namespace", json!({"metadata": {"finalizers": ["x"]}, "spec": {}}), true),
        ];
        for (group, kind, object, held) in cases {
            assert_eq!(held_by_finalizers(group, kind, &object), held, "{group}/{kind} {object}");
        }
    }

    #[test]
    fn deletion_finishes_only_when_marked_and_unheld() {
        let marked = json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {}});
        assert!(deletion_finished("", "Namespace", &marked));
        let mut held = marked.clone();
        held["spec"]["finalizers"] = json!(["kubernetes"]);
        assert!(!deletion_finished("", "Namespace", &held));
        assert!(!deletion_finished("", "Namespace", &json!({"metadata": {}, "spec": {}})));
    }
}
