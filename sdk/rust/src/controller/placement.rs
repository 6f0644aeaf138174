//! Which nodes a pod may run on, read from JSON the way the scheduler's `NodeAffinity` and
//! `TaintToleration` plugins judge it: `spec.nodeSelector`, required node affinity (label
//! expressions and `metadata.name` fields) and taints against tolerations. Controllers that
//! place pods themselves (`DaemonSet`s) use it to decide where a pod should exist.

use serde_json::Value;

use super::meta;

/// Whether `node` carries every label of the pod spec's `nodeSelector` and matches one of the
/// required node-affinity terms (when there are any).
#[must_use]
pub fn node_matches_selector_and_affinity(pod_spec: &Value, node: &Value) -> bool {
    let selector = pod_spec.get("nodeSelector").and_then(Value::as_object);
    if !selector.into_iter().flatten().all(|(k, v)| meta::label(node, k) == v.as_str()) {
        return false;
    }
    let terms = pod_spec
        .pointer("/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array);
    match terms {
        None => true,
        Some(terms) => terms.iter().any(|term| term_matches(term, node)),
    }
}

/// Whether `node` matches a `NodeSelectorTerm` (all of its requirements; none matches nothing).
#[must_use]
pub fn term_matches(term: &Value, node: &Value) -> bool {
    let requirements = |field: &str| term.get(field).and_then(Value::as_array).cloned().unwrap_or_default();
    let (expressions, fields) = (requirements("matchExpressions"), requirements("matchFields"));
    if expressions.is_empty() && fields.is_empty() {
        return false;
    }
    let key = |r: &Value| r.get("key").and_then(Value::as_str).unwrap_or_default().to_owned();
    expressions.iter().all(|r| requirement_matches(r, meta::label(node, &key(r))))
        && fields.iter().all(|r| key(r) == "metadata.name" && requirement_matches(r, Some(meta::name(node))))
}

fn requirement_matches(requirement: &Value, value: Option<&str>) -> bool {
    let values: Vec<&str> =
        requirement.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
    let number = |text: &str| text.parse::<i64>().ok();
    let bound = || match values.as_slice() {
        [only] => number(only),
        _ => None,
    };
    match (requirement.get("operator").and_then(Value::as_str), value) {
        (Some("In"), Some(v)) => values.contains(&v),
        (Some("NotIn"), v) => v.is_none_or(|v| !values.contains(&v)),
        (Some("Exists"), v) => v.is_some(),
        (Some("DoesNotExist"), v) => v.is_none(),
        (Some("Gt"), Some(v)) => number(v).zip(bound()).is_some_and(|(have, want)| have > want),
        (Some("Lt"), Some(v)) => number(v).zip(bound()).is_some_and(|(have, want)| have < want),
        _ => false,
    }
}

/// Whether `toleration` tolerates `taint`: the effect matches (or the toleration names none),
/// the key matches (an empty key with `Exists` matches every key), and for `Equal` (the
/// default operator) the values are equal.
#[must_use]
pub fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let text = |object: &Value, field: &str| object.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
    let effect = text(toleration, "effect");
    let exists = text(toleration, "operator") == "Exists";
    let key = text(toleration, "key");
    let effect_ok = effect.is_empty() || effect == text(taint, "effect");
    let key_ok = if key.is_empty() { exists } else { key == text(taint, "key") };
    effect_ok && key_ok && (exists || text(toleration, "value") == text(taint, "value"))
}

/// The node's taints with one of `effects` that none of `tolerations` tolerates.
#[must_use]
pub fn untolerated_taints<'a>(node: &'a Value, tolerations: &[Value], effects: &[&str]) -> Vec<&'a Value> {
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|taint| effects.contains(&taint.get("effect").and_then(Value::as_str).unwrap_or_default()))
        .filter(|taint| !tolerations.iter().any(|t| tolerates(t, taint)))
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{node_matches_selector_and_affinity, tolerates, untolerated_taints};

    fn node(name: &str, labels: &serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": name, "labels": labels}})
    }

    #[test]
    fn selectors_and_required_affinity_pick_nodes() {
        let n = node("n1", &json!({"disk": "ssd", "cores": "8"}));
        let term = |term: serde_json::Value| json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [term]}}}});
        let cases = [
            (json!({}), true),
            (json!({"nodeSelector": {"disk": "ssd"}}), true),
            (json!({"nodeSelector": {"disk": "hdd"}}), false),
            (term(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]})), true),
            (term(json!({"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]})), false),
            (term(json!({"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["4"]}]})), true),
            (term(json!({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]})), false),
            (term(json!({})), false),
        ];
        for (spec, expected) in cases {
            assert_eq!(node_matches_selector_and_affinity(&spec, &n), expected, "{spec}");
        }
    }

    #[test]
    fn tolerations_match_taints_as_documented() {
        let taint = json!({"key": "k", "value": "v", "effect": "NoSchedule"});
        let cases = [
            (json!({"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule"}), true),
            (json!({"key": "k", "value": "v"}), true),
            (json!({"key": "k", "operator": "Exists"}), true),
            (json!({"operator": "Exists"}), true),
            (json!({"key": "k", "value": "w"}), false),
            (json!({"key": "k", "operator": "Exists", "effect": "NoExecute"}), false),
        ];
        for (toleration, expected) in cases {
            assert_eq!(tolerates(&toleration, &taint), expected, "{toleration}");
        }
        let tainted = json!({"spec": {"taints": [taint, {"key": "p", "effect": "PreferNoSchedule"}]}});
        assert_eq!(untolerated_taints(&tainted, &[], &["NoSchedule", "NoExecute"]).len(), 1);
    }
}
