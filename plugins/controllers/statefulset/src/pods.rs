//! The identity of one ordinal: its pod's name, labels, hostname and volumes, and its claims.

use capstan_plugin_sdk::controller::meta;
use capstan_plugin_sdk::controller::revision;
use serde_json::{Map, Value, json};

use crate::stateful_set;

/// The label naming a StatefulSet pod (for a per-pod Service).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label holding a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";
/// The label naming the `ControllerRevision` a pod was made from.
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The ordinal of the pod `pod_name` of set `set_name` (`web-3` → 3); `None` for other names.
#[must_use]
pub fn ordinal(set_name: &str, pod_name: &str) -> Option<i64> {
    let digits = pod_name.strip_prefix(set_name)?.strip_prefix('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) || (digits.len() > 1 && digits.starts_with('0'))
    {
        return None;
    }
    digits.parse().ok()
}

fn claim_templates(set: &Value) -> impl Iterator<Item = &Value> {
    set.pointer("/spec/volumeClaimTemplates").and_then(Value::as_array).into_iter().flatten()
}

/// The name of claim `template` for `ordinal`: `<template>-<set>-<ordinal>`.
#[must_use]
pub fn claim_name(template: &str, set_name: &str, ordinal: i64) -> String {
    format!("{template}-{set_name}-{ordinal}")
}

/// The ordinal a claim of `set` is for, if its name is one of the set's claim names.
#[must_use]
pub fn claim_ordinal(set: &Value, claim: &str) -> Option<i64> {
    claim_templates(set).find_map(|template| {
        let prefix = format!("{}-", meta::name(template));
        ordinal(meta::name(set), claim.strip_prefix(&prefix)?)
    })
}

/// The claims `ordinal` needs, as they are created: the template's metadata and spec, the set's
/// selector labels, and — with `persistentVolumeClaimRetentionPolicy.whenDeleted: Delete` — the
/// set as an owner, so deleting the set collects them.
#[must_use]
pub fn claims_for(set: &Value, ordinal: i64) -> Vec<Value> {
    let delete_with_set = deletes_with_set(set);
    claim_templates(set)
        .map(|template| {
            let mut metadata = template.get("metadata").cloned().unwrap_or_else(|| json!({}));
            metadata["name"] = json!(claim_name(meta::name(template), meta::name(set), ordinal));
            metadata["namespace"] = json!(meta::namespace(set));
            let mut labels = metadata.get("labels").and_then(Value::as_object).cloned().unwrap_or_default();
            let selector = set.pointer("/spec/selector/matchLabels").and_then(Value::as_object);
            labels.extend(selector.into_iter().flatten().map(|(k, v)| (k.clone(), v.clone())));
            metadata["labels"] = json!(labels);
            if let Some(fields) = metadata.as_object_mut() {
                for server_field in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
                    fields.remove(server_field);
                }
            }
            if delete_with_set {
                metadata["ownerReferences"] = json!([set_as_owner(set)]);
            }
            json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": template.get("spec")})
        })
        .collect()
}

/// The owner reference a claim deleted with its set carries: not a controller reference.
fn set_as_owner(set: &Value) -> Value {
    let mut owner = meta::controller_reference(&stateful_set(), set);
    owner["controller"] = json!(false);
    owner
}

fn deletes_with_set(set: &Value) -> bool {
    set.pointer("/spec/persistentVolumeClaimRetentionPolicy/whenDeleted").and_then(Value::as_str) == Some("Delete")
}

/// The owner references an existing claim of `set` should have under the set's current
/// `whenDeleted` policy, when they differ from its own (the policy may change after the claim
/// was made); claims the set's selector does not match are not the set's to change.
#[must_use]
pub fn claim_owner_update(set: &Value, existing: &Value) -> Option<Vec<Value>> {
    if !meta::selector_matches(set.pointer("/spec/selector"), meta::labels(existing)) {
        return None;
    }
    let uid = meta::uid(set);
    let mut references: Vec<Value> = meta::owner_references(existing)
        .iter()
        .filter(|r| r.get("uid").and_then(Value::as_str) != uid)
        .cloned()
        .collect();
    if deletes_with_set(set) {
        references.push(set_as_owner(set));
    }
    (references.as_slice() != meta::owner_references(existing)).then_some(references)
}

/// The pod of `ordinal`, from the template `revision` records (the set's own template when
/// the revision has none).
#[must_use]
pub fn new_pod(set: &Value, ordinal: i64, revision_object: &Value) -> Value {
    let set_name = meta::name(set);
    let name = format!("{set_name}-{ordinal}");
    let template = revision::template_of(revision_object)
        .or_else(|| set.pointer("/spec/template").cloned())
        .unwrap_or_else(|| json!({}));
    let mut metadata = template.get("metadata").cloned().unwrap_or_else(|| json!({}));
    metadata["name"] = json!(name);
    metadata["namespace"] = json!(meta::namespace(set));
    metadata["ownerReferences"] = json!([meta::controller_reference(&stateful_set(), set)]);
    metadata["labels"][POD_NAME_LABEL] = json!(name);
    metadata["labels"][POD_INDEX_LABEL] = json!(ordinal.to_string());
    metadata["labels"][REVISION_LABEL] = json!(meta::name(revision_object));
    if let Some(fields) = metadata.as_object_mut() {
        fields.remove("generateName");
    }
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    spec["hostname"] = json!(name);
    if let Some(service) = set.pointer("/spec/serviceName").and_then(Value::as_str).filter(|s| !s.is_empty()) {
        spec["subdomain"] = json!(service);
    }
    let mut volumes: Vec<Value> = spec.get("volumes").and_then(Value::as_array).cloned().unwrap_or_default();
    for template in claim_templates(set) {
        let volume_name = meta::name(template);
        volumes.retain(|v| v.get("name").and_then(Value::as_str) != Some(volume_name));
        let mut source = Map::new();
        source.insert("claimName".into(), json!(claim_name(volume_name, set_name, ordinal)));
        volumes.push(json!({"name": volume_name, "persistentVolumeClaim": source}));
    }
    if !volumes.is_empty() {
        spec["volumes"] = json!(volumes);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{claim_ordinal, claim_owner_update, claims_for, new_pod, ordinal};

    fn set() -> serde_json::Value {
        json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
            "spec": {
                "serviceName": "nginx",
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "a:1"}], "volumes": [{"name": "data", "emptyDir": {}}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"]}}],
                "persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Retain"},
            },
        })
    }

    #[test]
    fn ordinals_parse_only_from_the_sets_own_names() {
        let cases = [
            ("web-0", Some(0)),
            ("web-12", Some(12)),
            ("web-01", None),
            ("web-", None),
            ("webx-1", None),
            ("web-a", None),
            ("web-1-2", None),
        ];
        for (name, expected) in cases {
            assert_eq!(ordinal("web", name), expected, "{name}");
        }
        assert_eq!(claim_ordinal(&set(), "data-web-4"), Some(4));
        assert_eq!(claim_ordinal(&set(), "logs-web-4"), None);
    }

    #[test]
    fn a_pod_has_its_identity_and_its_claims_volume() {
        let revision = json!({"metadata": {"name": "web-abc"}, "data": {"spec": {"template": {"$patch": "replace", "metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "a:0"}]}}}}});
        let pod = new_pod(&set(), 2, &revision);
        assert_eq!(pod["metadata"]["name"], "web-2");
        assert_eq!(pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "web-2");
        assert_eq!(pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "2");
        assert_eq!(pod["metadata"]["labels"]["controller-revision-hash"], "web-abc");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
        assert_eq!(pod["spec"]["hostname"], "web-2");
        assert_eq!(pod["spec"]["subdomain"], "nginx");
        assert_eq!(pod["spec"]["containers"][0]["image"], "a:0", "the revision's template, not the set's");
        assert_eq!(
            pod["spec"]["volumes"],
            json!([{"name": "data", "persistentVolumeClaim": {"claimName": "data-web-2"}}])
        );
    }

    #[test]
    fn claims_carry_selector_labels_and_the_deletion_policy() {
        let claims = claims_for(&set(), 1);
        assert_eq!(claims.len(), 1);
        assert_eq!(claims[0]["metadata"]["name"], "data-web-1");
        assert_eq!(claims[0]["metadata"]["labels"]["app"], "web");
        assert_eq!(claims[0]["metadata"]["ownerReferences"][0]["kind"], "StatefulSet");
        assert_eq!(claims[0]["metadata"]["ownerReferences"][0]["controller"], false);
        let mut retained = set();
        retained["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] = json!("Retain");
        assert!(claims_for(&retained, 1)[0]["metadata"].get("ownerReferences").is_none());
        // A claim made under one policy follows a change to the other, and back.
        assert_eq!(claim_owner_update(&set(), &claims[0]), None);
        let released = claim_owner_update(&retained, &claims[0]).unwrap();
        assert!(released.is_empty());
        let mut retained_claim = claims[0].clone();
        retained_claim["metadata"]["ownerReferences"] = json!(released);
        assert_eq!(claim_owner_update(&set(), &retained_claim).unwrap().len(), 1);
    }
}
