//! JSON merge patch (RFC 7386) and JSON patch (RFC 6902), both backed by the `json-patch` crate.

use json_patch::{PatchErrorKind, PatchOperation};
use serde_json::Value;

use super::{PatchError, json_type};

/// RFC 7386 JSON merge patch (`application/merge-patch+json`).
///
/// Objects merge recursively, `null` removes a key, and anything else (lists included) replaces
/// the original value. Both the object and the patch must be JSON objects: a resource is always
/// one, and a scalar or list body would replace the whole resource.
pub fn json_merge(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    require_object(original, "the object being patched")?;
    require_object(patch, "a merge patch body")?;
    let mut merged = original.clone();
    json_patch::merge(&mut merged, patch);
    Ok(merged)
}

/// RFC 6902 JSON patch (`application/json-patch+json`).
///
/// The operations apply in order and all or nothing: a failed `test`, a path that does not exist
/// or an out-of-range index rejects the whole patch. The result must still be a JSON object.
pub fn json_patch(original: &Value, patch: &Value) -> Result<Value, PatchError> {
    require_object(original, "the object being patched")?;
    let operations: json_patch::Patch = serde_json::from_value(patch.clone())
        .map_err(|error| PatchError::InvalidJsonPatch { reason: error.to_string() })?;
    let mut patched = original.clone();
    json_patch::patch(&mut patched, &operations).map_err(|error| PatchError::OperationFailed {
        index: error.operation,
        op: operations.get(error.operation).map_or("unknown", operation_name),
        path: error.path.as_str().to_owned(),
        reason: describe(&error.kind),
    })?;
    require_object(&patched, "the result of a JSON patch")?;
    Ok(patched)
}

fn require_object(value: &Value, what: &'static str) -> Result<(), PatchError> {
    if value.is_object() { Ok(()) } else { Err(PatchError::NotAnObject { what, found: json_type(value) }) }
}

fn operation_name(operation: &PatchOperation) -> &'static str {
    match operation {
        PatchOperation::Add(_) => "add",
        PatchOperation::Remove(_) => "remove",
        PatchOperation::Replace(_) => "replace",
        PatchOperation::Move(_) => "move",
        PatchOperation::Copy(_) => "copy",
        PatchOperation::Test(_) => "test",
    }
}

/// Says what went wrong in terms of the request rather than the crate's internals.
fn describe(kind: &PatchErrorKind) -> &'static str {
    match kind {
        PatchErrorKind::TestFailed => "the value at the path is not the one the test expects",
        PatchErrorKind::InvalidPointer => "the path does not exist in the object, or an array index is out of range",
        PatchErrorKind::InvalidFromPointer => "the \"from\" path does not exist in the object",
        PatchErrorKind::CannotMoveInsideItself => "a value cannot be moved into itself",
        _ => "the operation does not apply to this object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    struct Case {
        name: &'static str,
        original: Value,
        patch: Value,
        expected: Value,
    }

    /// The examples of RFC 7386 appendix A, each nested one level down (under `v`) because a
    /// Kubernetes patch body and object are always objects.
    #[test]
    fn json_merge_follows_rfc_7386_examples() {
        let cases = [
            Case {
                name: "scalar replaced",
                original: json!({"v": {"a": "b"}}),
                patch: json!({"v": {"a": "c"}}),
                expected: json!({"v": {"a": "c"}}),
            },
            Case {
                name: "key added",
                original: json!({"v": {"a": "b"}}),
                patch: json!({"v": {"b": "c"}}),
                expected: json!({"v": {"a": "b", "b": "c"}}),
            },
            Case {
                name: "null removes key",
                original: json!({"v": {"a": "b"}}),
                patch: json!({"v": {"a": null}}),
                expected: json!({"v": {}}),
            },
            Case {
                name: "null removes only its key",
                original: json!({"v": {"a": "b", "b": "c"}}),
                patch: json!({"v": {"a": null}}),
                expected: json!({"v": {"b": "c"}}),
            },
            Case {
                name: "list replaced by scalar",
                original: json!({"v": {"a": ["b"]}}),
                patch: json!({"v": {"a": "c"}}),
                expected: json!({"v": {"a": "c"}}),
            },
            Case {
                name: "scalar replaced by list",
                original: json!({"v": {"a": "c"}}),
                patch: json!({"v": {"a": ["b"]}}),
                expected: json!({"v": {"a": ["b"]}}),
            },
            Case {
                name: "nested objects merge and nested null removes",
                original: json!({"v": {"a": {"b": "c"}}}),
                patch: json!({"v": {"a": {"b": "d", "c": null}}}),
                expected: json!({"v": {"a": {"b": "d"}}}),
            },
            Case {
                name: "list of objects replaced whole",
                original: json!({"v": {"a": [{"b": "c"}]}}),
                patch: json!({"v": {"a": [1]}}),
                expected: json!({"v": {"a": [1]}}),
            },
            Case {
                name: "list replaced by list",
                original: json!({"v": ["a", "b"]}),
                patch: json!({"v": ["c", "d"]}),
                expected: json!({"v": ["c", "d"]}),
            },
            Case {
                name: "object replaced by list",
                original: json!({"v": {"a": "b"}}),
                patch: json!({"v": ["c"]}),
                expected: json!({"v": ["c"]}),
            },
            Case {
                name: "object replaced by null removes it",
                original: json!({"v": {"a": "foo"}}),
                patch: json!({"v": null}),
                expected: json!({}),
            },
            Case {
                name: "object replaced by string",
                original: json!({"v": {"a": "foo"}}),
                patch: json!({"v": "bar"}),
                expected: json!({"v": "bar"}),
            },
            Case {
                name: "null in patch for missing key is not added",
                original: json!({"v": {"e": null}}),
                patch: json!({"v": {"a": 1}}),
                expected: json!({"v": {"e": null, "a": 1}}),
            },
            Case {
                name: "list replaced by object",
                original: json!({"v": [1, 2]}),
                patch: json!({"v": {"a": "b", "c": null}}),
                expected: json!({"v": {"a": "b"}}),
            },
            Case {
                name: "nested null inside new object is dropped",
                original: json!({}),
                patch: json!({"v": {"a": {"bb": {"ccc": null}}}}),
                expected: json!({"v": {"a": {"bb": {}}}}),
            },
        ];
        for case in cases {
            let merged = json_merge(&case.original, &case.patch).expect(case.name);
            assert_eq!(merged, case.expected, "{}", case.name);
        }
    }

    #[test]
    fn json_merge_rejects_non_object_bodies() {
        for patch in [json!(["a"]), json!("spec"), json!(null)] {
            let error = json_merge(&json!({"a": 1}), &patch).expect_err("non-object body");
            assert!(matches!(error, PatchError::NotAnObject { what: "a merge patch body", .. }), "{error}");
            assert_eq!(error.status_code(), 400);
        }
        let error = json_merge(&json!([1]), &json!({})).expect_err("non-object original");
        assert!(matches!(error, PatchError::NotAnObject { what: "the object being patched", .. }));
    }

    #[test]
    fn json_patch_applies_operations_in_order() {
        let original = json!({"metadata": {"labels": {"app": "web", "tier": "front"}}, "spec": {"replicas": 1, "args": ["a", "b"]}});
        let cases = [
            Case {
                name: "add a map key",
                original: original.clone(),
                patch: json!([{"op": "add", "path": "/metadata/labels/env", "value": "prod"}]),
                expected: json!({"metadata": {"labels": {"app": "web", "tier": "front", "env": "prod"}}, "spec": {"replicas": 1, "args": ["a", "b"]}}),
            },
            Case {
                name: "add appends with dash",
                original: original.clone(),
                patch: json!([{"op": "add", "path": "/spec/args/-", "value": "c"}]),
                expected: json!({"metadata": {"labels": {"app": "web", "tier": "front"}}, "spec": {"replicas": 1, "args": ["a", "b", "c"]}}),
            },
            Case {
                name: "remove a key and an index",
                original: original.clone(),
                patch: json!([{"op": "remove", "path": "/metadata/labels/tier"}, {"op": "remove", "path": "/spec/args/0"}]),
                expected: json!({"metadata": {"labels": {"app": "web"}}, "spec": {"replicas": 1, "args": ["b"]}}),
            },
            Case {
                name: "test then replace",
                original: original.clone(),
                patch: json!([
                    {"op": "test", "path": "/spec/replicas", "value": 1},
                    {"op": "replace", "path": "/spec/replicas", "value": 3}
                ]),
                expected: json!({"metadata": {"labels": {"app": "web", "tier": "front"}}, "spec": {"replicas": 3, "args": ["a", "b"]}}),
            },
            Case {
                name: "move and copy",
                original: original.clone(),
                patch: json!([
                    {"op": "copy", "from": "/metadata/labels/app", "path": "/metadata/labels/name"},
                    {"op": "move", "from": "/metadata/labels/tier", "path": "/metadata/labels/layer"}
                ]),
                expected: json!({"metadata": {"labels": {"app": "web", "name": "web", "layer": "front"}}, "spec": {"replicas": 1, "args": ["a", "b"]}}),
            },
            Case { name: "empty patch", original: original.clone(), patch: json!([]), expected: original.clone() },
        ];
        for case in cases {
            let patched = json_patch(&case.original, &case.patch).expect(case.name);
            assert_eq!(patched, case.expected, "{}", case.name);
        }
    }

    #[test]
    fn json_patch_failures_name_the_operation() {
        let original = json!({"spec": {"replicas": 1}});
        let failing = [
            (
                "test mismatch",
                json!([{"op": "replace", "path": "/spec/replicas", "value": 2}, {"op": "test", "path": "/spec/replicas", "value": 1}]),
                1,
                "test",
            ),
            ("remove missing key", json!([{"op": "remove", "path": "/spec/paused"}]), 0, "remove"),
            (
                "replace missing parent",
                json!([{"op": "replace", "path": "/status/phase", "value": "Running"}]),
                0,
                "replace",
            ),
            ("add under missing parent", json!([{"op": "add", "path": "/metadata/labels/a", "value": "b"}]), 0, "add"),
        ];
        for (name, patch, index, op) in failing {
            let error = json_patch(&original, &patch).expect_err(name);
            match &error {
                PatchError::OperationFailed { index: got_index, op: got_op, .. } => {
                    assert_eq!((*got_index, *got_op), (index, op), "{name}: {error}");
                }
                other => panic!("{name}: unexpected error {other}"),
            }
            assert_eq!(error.status_code(), 422, "{name}");
        }
    }

    #[test]
    fn json_patch_rejects_malformed_bodies() {
        let original = json!({"spec": {}});
        let malformed = [
            ("object body", json!({"op": "add", "path": "/a", "value": 1})),
            ("unknown op", json!([{"op": "frobnicate", "path": "/a"}])),
            ("missing value", json!([{"op": "add", "path": "/a"}])),
            ("pointer without slash", json!([{"op": "add", "path": "a", "value": 1}])),
        ];
        for (name, patch) in malformed {
            let error = json_patch(&original, &patch).expect_err(name);
            assert!(matches!(error, PatchError::InvalidJsonPatch { .. }), "{name}: {error}");
            assert_eq!(error.status_code(), 400, "{name}");
        }
    }

    #[test]
    fn json_patch_must_leave_an_object() {
        let error =
            json_patch(&json!({"a": 1}), &json!([{"op": "replace", "path": "", "value": [1]}])).expect_err("root list");
        assert!(matches!(error, PatchError::NotAnObject { what: "the result of a JSON patch", .. }), "{error}");
    }
}
