//! Custom resources: turning a `CustomResourceDefinition` into served resources, and checking
//! custom objects against the CRD's structural OpenAPI v3 schema.
//!
//! Validation follows the apiextensions rules a user meets first: types, `required`, `enum`,
//! string/number/array/object bounds, `pattern`-free formats; unknown fields are pruned (and
//! reported for `fieldValidation`) unless `x-kubernetes-preserve-unknown-fields` is set;
//! `x-kubernetes-int-or-string` and `x-kubernetes-embedded-resource` are honoured.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::registry::{ALL_VERBS, GroupVersionKind, Model, ResourceInfo, Subresource};

/// The schema of one served version of a custom resource.
#[derive(Clone, Debug, PartialEq)]
pub struct CustomModel {
    /// The version's `openAPIV3Schema`.
    pub schema: Value,
}

/// One field-level problem found by [`validate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// `FieldValueRequired`, `FieldValueInvalid`, `FieldValueNotSupported` or `FieldValueTypeInvalid`.
    pub reason: &'static str,
    /// The dotted field path.
    pub field: String,
    /// What is wrong, as kube-apiserver words it.
    pub message: String,
}

/// The result of validating a custom object.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Checked {
    /// The object with unknown fields pruned.
    pub object: Value,
    /// Paths of pruned fields.
    pub unknown_fields: Vec<String>,
    /// Violations of the schema.
    pub errors: Vec<FieldError>,
}

/// Validates and prunes `object` against a version's schema. `metadata`, `apiVersion` and
/// `kind` are the server's business and are not checked here.
#[must_use]
pub fn validate(schema: &Value, object: Value) -> Checked {
    let mut checked = Checked::default();
    let Value::Object(mut root) = object else {
        checked.errors.push(FieldError {
            reason: "FieldValueTypeInvalid",
            field: String::new(),
            message: "must be an object".into(),
        });
        return checked;
    };
    let kept: Vec<(String, Value)> = ["apiVersion", "kind", "metadata"]
        .iter()
        .filter_map(|k| root.remove(*k).map(|v| ((*k).to_string(), v)))
        .collect();
    let mut rest = Value::Object(root);
    let mut without_meta = schema.clone();
    if let Some(props) = without_meta.get_mut("properties").and_then(Value::as_object_mut) {
        for k in ["apiVersion", "kind", "metadata"] {
            props.remove(k);
        }
    }
    check(&without_meta, &mut rest, "", &mut checked);
    if let Value::Object(map) = &mut rest {
        for (k, v) in kept {
            map.insert(k, v);
        }
    }
    checked.object = rest;
    checked
}

fn join(path: &str, field: &str) -> String {
    if path.is_empty() { field.to_string() } else { format!("{path}.{field}") }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn invalid(checked: &mut Checked, reason: &'static str, path: &str, message: String) {
    checked.errors.push(FieldError { reason, field: path.to_string(), message });
}

fn check(schema: &Value, value: &mut Value, path: &str, checked: &mut Checked) {
    if value.is_null() && schema.get("nullable").and_then(Value::as_bool) == Some(true) {
        return;
    }
    if schema.get("x-kubernetes-int-or-string").and_then(Value::as_bool) == Some(true) {
        if !matches!(type_name(value), "integer" | "string") {
            let found = type_name(value);
            invalid(
                checked,
                "FieldValueTypeInvalid",
                path,
                format!("Invalid value: \"{found}\": {path} in body must be of type integer-or-string: \"{found}\""),
            );
        }
        return;
    }
    if let Some(want) = schema.get("type").and_then(Value::as_str) {
        let found = type_name(value);
        let ok = found == want || (want == "number" && found == "integer");
        if !ok {
            invalid(
                checked,
                "FieldValueTypeInvalid",
                path,
                format!("Invalid value: \"{found}\": {path} in body must be of type {want}: \"{found}\""),
            );
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        let listed: Vec<String> = allowed.iter().map(Value::to_string).collect();
        invalid(
            checked,
            "FieldValueNotSupported",
            path,
            format!("Unsupported value: {value}: supported values: {}", listed.join(", ")),
        );
    }
    check_bounds(schema, value, path, checked);
    match value {
        Value::Object(map) => check_object(schema, map, path, checked),
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    check(item_schema, item, &format!("{path}[{i}]"), checked);
                }
            }
        }
        _ => {}
    }
}

#[allow(clippy::cast_precision_loss, reason = "lengths of objects under the 3 MiB body limit are far below 2^52")]
fn check_bounds(schema: &Value, value: &Value, path: &str, checked: &mut Checked) {
    let bound = |key: &str| schema.get(key).and_then(Value::as_f64);
    match value {
        Value::Number(n) => {
            let n = n.as_f64().unwrap_or_default();
            if let Some(min) = bound("minimum").filter(|m| n < *m) {
                invalid(
                    checked,
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {n}: {path} in body should be greater than or equal to {min}"),
                );
            }
            if let Some(max) = bound("maximum").filter(|m| n > *m) {
                invalid(
                    checked,
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {n}: {path} in body should be less than or equal to {max}"),
                );
            }
        }
        Value::String(s) => {
            let len = s.chars().count() as f64;
            if let Some(min) = bound("minLength").filter(|m| len < *m) {
                invalid(
                    checked,
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {value}: {path} in body should be at least {min} chars long"),
                );
            }
            if let Some(max) = bound("maxLength").filter(|m| len > *m) {
                invalid(
                    checked,
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {value}: {path} in body may not be more than {max} chars long"),
                );
            }
        }
        Value::Array(items) => {
            let len = items.len() as f64;
            if let Some(min) = bound("minItems").filter(|m| len < *m) {
                invalid(
                    checked,
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {len}: {path} in body should have at least {min} items"),
                );
            }
            if let Some(max) = bound("maxItems").filter(|m| len > *m) {
                invalid(
                    checked,
                    "FieldValueInvalid",
                    path,
                    format!("Invalid value: {len}: {path} in body should have at most {max} items"),
                );
            }
        }
        _ => {}
    }
}

fn check_object(schema: &Value, map: &mut Map<String, Value>, path: &str, checked: &mut Checked) {
    for required in schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str) {
        if !map.contains_key(required) {
            invalid(checked, "FieldValueRequired", &join(path, required), "Required value".into());
        }
    }
    let preserve = schema.get("x-kubernetes-preserve-unknown-fields").and_then(Value::as_bool) == Some(true)
        || schema.get("x-kubernetes-embedded-resource").and_then(Value::as_bool) == Some(true);
    let properties = schema.get("properties").and_then(Value::as_object);
    let additional = schema.get("additionalProperties").filter(|a| a.is_object());
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let child_path = join(path, &key);
        let child_schema = properties.and_then(|p| p.get(&key)).or(additional);
        match (child_schema, map.get_mut(&key)) {
            (Some(child_schema), Some(child)) => check(child_schema, child, &child_path, checked),
            (None, _) if preserve || properties.is_none() && schema.get("type").is_none() => {}
            (None, _) => {
                map.remove(&key);
                checked.unknown_fields.push(child_path);
            }
            (Some(_), None) => {}
        }
    }
}

/// The resources one CRD serves: one per served version. Strings are leaked because resource
/// descriptions are `'static`; CRDs are few and change rarely.
#[must_use]
pub fn resources_of(crd: &Value) -> Vec<ResourceInfo> {
    let leak = |s: &str| -> &'static str { Box::leak(s.to_string().into_boxed_str()) };
    let leak_list = |v: Option<&Value>| -> &'static [&'static str] {
        let items: Vec<&'static str> =
            v.and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(leak).collect();
        Box::leak(items.into_boxed_slice())
    };
    let spec = &crd["spec"];
    let (Some(group), Some(plural), Some(kind)) = (
        spec["group"].as_str(),
        spec.pointer("/names/plural").and_then(Value::as_str),
        spec.pointer("/names/kind").and_then(Value::as_str),
    ) else {
        return Vec::new();
    };
    let group = leak(group);
    let plural = leak(plural);
    let kind = leak(kind);
    let singular = leak(
        spec.pointer("/names/singular")
            .and_then(Value::as_str)
            .map_or(kind.to_ascii_lowercase(), str::to_string)
            .as_str(),
    );
    let list_kind = leak(
        spec.pointer("/names/listKind").and_then(Value::as_str).map_or(format!("{kind}List"), str::to_string).as_str(),
    );
    let short_names = leak_list(spec.pointer("/names/shortNames"));
    let categories = leak_list(spec.pointer("/names/categories"));
    let namespaced = spec["scope"].as_str() != Some("Cluster");
    let storage_resource = leak(&format!("{group}/{plural}"));
    let reversed_group: Vec<&str> = group.split('.').rev().collect();
    spec["versions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["served"].as_bool().unwrap_or(true))
        .filter_map(|v| {
            let version = leak(v["name"].as_str()?);
            let mut subresources = Vec::new();
            if v.pointer("/subresources/status").is_some() {
                subresources.push(Subresource { name: "status", kind: None, verbs: &["get", "patch", "update"] });
            }
            if v.pointer("/subresources/scale").is_some() {
                subresources.push(Subresource {
                    name: "scale",
                    kind: Some(GroupVersionKind { group: "autoscaling", version: "v1", kind: "Scale" }),
                    verbs: &["get", "patch", "update"],
                });
            }
            let schema = v
                .pointer("/schema/openAPIV3Schema")
                .cloned()
                .unwrap_or_else(|| json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true}));
            Some(ResourceInfo {
                gvk: GroupVersionKind { group, version, kind },
                plural,
                singular,
                short_names,
                categories,
                namespaced,
                verbs: ALL_VERBS,
                subresources: Box::leak(subresources.into_boxed_slice()),
                list_kind,
                definition: leak(&format!("{}.{version}.{kind}", reversed_group.join("."))),
                model: Model::Custom(Arc::new(CustomModel { schema })),
                storage_resource,
                conversion: None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn widget_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10},
                        "color": {"type": "string", "enum": ["red", "blue"]},
                        "port": {"x-kubernetes-int-or-string": true},
                        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 2},
                        "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                },
                "status": {"type": "object", "properties": {"ready": {"type": "boolean"}}},
            },
        })
    }

    #[test]
    fn custom_objects_are_checked_and_pruned() {
        let cases: Vec<(Value, Vec<&str>, Vec<&str>)> = vec![
            (json!({"spec": {"size": 3, "color": "red", "port": "http"}}), vec![], vec![]),
            (json!({"spec": {"color": "red"}}), vec!["spec.size"], vec![]),
            (json!({"spec": {"size": "three"}}), vec!["spec.size"], vec![]),
            (json!({"spec": {"size": 11}}), vec!["spec.size"], vec![]),
            (json!({"spec": {"size": 2, "color": "green"}}), vec!["spec.color"], vec![]),
            (json!({"spec": {"size": 2, "tags": ["a", "b", "c"]}}), vec!["spec.tags"], vec![]),
            (json!({"spec": {"size": 2, "tags": [1]}}), vec!["spec.tags[0]"], vec![]),
            (json!({"spec": {"size": 2, "typo": true}}), vec![], vec!["spec.typo"]),
            (json!({"spec": {"size": 2, "extra": {"anything": [1, 2]}}}), vec![], vec![]),
            (json!({"spec": {"size": 2, "port": 8080}, "status": {"ready": true}}), vec![], vec![]),
        ];
        for (spec, errors, unknown) in cases {
            let mut object = spec.clone();
            object["apiVersion"] = json!("example.com/v1");
            object["kind"] = json!("Widget");
            object["metadata"] = json!({"name": "w"});
            let checked = validate(&widget_schema(), object);
            let fields: Vec<&str> = checked.errors.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, errors, "errors for {spec}: {:?}", checked.errors);
            assert_eq!(checked.unknown_fields, unknown, "unknown fields for {spec}");
            assert_eq!(checked.object["metadata"]["name"], "w", "metadata is kept");
            for path in &unknown {
                let pointer = format!("/{}", path.replace('.', "/"));
                assert!(checked.object.pointer(&pointer).is_none(), "{path} pruned");
            }
        }
    }

    #[test]
    fn a_crd_serves_each_served_version_with_its_names() {
        let crd = json!({
            "spec": {
                "group": "example.com",
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "shortNames": ["wd"]},
                "versions": [
                    {"name": "v1", "served": true, "storage": true, "subresources": {"status": {}, "scale": {"specReplicasPath": ".spec.replicas", "statusReplicasPath": ".status.replicas"}}, "schema": {"openAPIV3Schema": widget_schema()}},
                    {"name": "v1beta1", "served": false, "storage": false},
                ],
            },
        });
        let resources = resources_of(&crd);
        assert_eq!(resources.len(), 1);
        let widgets = &resources[0];
        assert_eq!(
            (widgets.gvk.group, widgets.gvk.version, widgets.plural, widgets.list_kind),
            ("example.com", "v1", "widgets", "WidgetList")
        );
        assert_eq!(widgets.short_names, ["wd"]);
        assert_eq!(widgets.storage_resource, "example.com/widgets");
        assert_eq!(widgets.definition, "com.example.v1.Widget");
        assert!(widgets.subresource("status").is_some() && widgets.subresource("scale").is_some());
    }
}
