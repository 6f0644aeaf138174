//! Where a DaemonSet's pods belong: which nodes should run one (and which may keep one they
//! already run), the tolerations DaemonSet pods get by default, and the node affinity that
//! pins a pod to its node through the default scheduler.

use capstan_plugin_sdk::controller::{meta, placement};
use serde_json::{Value, json};

/// What a DaemonSet may do on a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eligibility {
    /// A pod should run there (and be created when missing).
    pub should_run: bool,
    /// A pod already there may stay (an untolerated `NoSchedule` taint keeps new pods off
    /// but does not evict).
    pub should_continue: bool,
}

/// The tolerations every DaemonSet pod gets (Kubernetes docs, "DaemonSet: taints and
/// tolerations"): it survives its node becoming not-ready or unreachable, and ignores resource
/// pressure and cordoning; host-network pods also ignore an unavailable network.
#[must_use]
pub fn default_tolerations(host_network: bool) -> Vec<Value> {
    let exists = |key: &str, effect: &str| json!({"key": key, "operator": "Exists", "effect": effect});
    let mut tolerations = vec![
        exists("node.kubernetes.io/not-ready", "NoExecute"),
        exists("node.kubernetes.io/unreachable", "NoExecute"),
        exists("node.kubernetes.io/disk-pressure", "NoSchedule"),
        exists("node.kubernetes.io/memory-pressure", "NoSchedule"),
        exists("node.kubernetes.io/pid-pressure", "NoSchedule"),
        exists("node.kubernetes.io/unschedulable", "NoSchedule"),
    ];
    if host_network {
        tolerations.push(exists("node.kubernetes.io/network-unavailable", "NoSchedule"));
    }
    tolerations
}

/// The pod spec of a DaemonSet's template with the default tolerations added (those the
/// template already has are not repeated).
#[must_use]
pub fn spec_with_tolerations(daemon_set: &Value) -> Value {
    let mut spec = daemon_set.pointer("/spec/template/spec").cloned().unwrap_or_else(|| json!({}));
    let host_network = spec.get("hostNetwork").and_then(Value::as_bool) == Some(true);
    let mut tolerations: Vec<Value> = spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    for toleration in default_tolerations(host_network) {
        let same_key = |t: &Value| t.get("key") == toleration.get("key") && t.get("effect") == toleration.get("effect");
        if !tolerations.iter().any(same_key) {
            tolerations.push(toleration);
        }
    }
    spec["tolerations"] = json!(tolerations);
    spec
}

/// Whether a DaemonSet whose pods have `pod_spec` (tolerations included) runs on `node`.
#[must_use]
pub fn eligibility(pod_spec: &Value, node: &Value) -> Eligibility {
    let never = Eligibility { should_run: false, should_continue: false };
    let pinned = pod_spec.get("nodeName").and_then(Value::as_str).filter(|n| !n.is_empty());
    if pinned.is_some_and(|n| n != meta::name(node)) || !placement::node_matches_selector_and_affinity(pod_spec, node) {
        return never;
    }
    let tolerations: Vec<Value> = pod_spec.get("tolerations").and_then(Value::as_array).cloned().unwrap_or_default();
    if !placement::untolerated_taints(node, &tolerations, &["NoExecute"]).is_empty() {
        return never;
    }
    let fits = placement::untolerated_taints(node, &tolerations, &["NoSchedule"]).is_empty();
    Eligibility { should_run: fits, should_continue: true }
}

/// The node a pod is for: `spec.nodeName` once bound, before that the name its required node
/// affinity pins it to.
#[must_use]
pub fn target_node(pod: &Value) -> Option<&str> {
    if let Some(name) = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
        return Some(name);
    }
    let terms = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")?
        .as_array()?;
    terms.iter().find_map(|term| {
        let fields = term.get("matchFields")?.as_array()?;
        let pin = fields.iter().find(|r| {
            r.get("key").and_then(Value::as_str) == Some("metadata.name")
                && r.get("operator").and_then(Value::as_str) == Some("In")
        })?;
        match pin.get("values")?.as_array()?.as_slice() {
            [only] => only.as_str(),
            _ => None,
        }
    })
}

/// Pins `pod_spec` to `node` as upstream does: every required node-affinity term gets
/// `matchFields: metadata.name In [node]` in place of its field requirements (one such term
/// when there were none), so the default scheduler binds it there.
pub fn pin_to_node(pod_spec: &mut Value, node: &str) {
    let pin = json!([{"key": "metadata.name", "operator": "In", "values": [node]}]);
    let pointer = "/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms";
    let mut terms: Vec<Value> = pod_spec.pointer(pointer).and_then(Value::as_array).cloned().unwrap_or_default();
    if terms.is_empty() {
        terms.push(json!({}));
    }
    for term in &mut terms {
        term["matchFields"] = pin.clone();
    }
    pod_spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"] =
        json!(terms);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{Eligibility, eligibility, pin_to_node, spec_with_tolerations, target_node};

    fn node(labels: &serde_json::Value, taints: &serde_json::Value) -> serde_json::Value {
        json!({"metadata": {"name": "n1", "labels": labels}, "spec": {"taints": taints}})
    }

    #[test]
    fn nodes_are_eligible_by_selector_affinity_and_taints() {
        let ds = |spec: serde_json::Value| json!({"spec": {"template": {"spec": spec}}});
        let run = Eligibility { should_run: true, should_continue: true };
        let keep = Eligibility { should_run: false, should_continue: true };
        let never = Eligibility { should_run: false, should_continue: false };
        let taint = |key: &str, effect: &str| json!([{"key": key, "effect": effect}]);
        let cases = [
            (json!({}), node(&json!({}), &json!([])), run),
            (json!({"nodeSelector": {"role": "edge"}}), node(&json!({"role": "edge"}), &json!([])), run),
            (json!({"nodeSelector": {"role": "edge"}}), node(&json!({}), &json!([])), never),
            (json!({"nodeName": "n2"}), node(&json!({}), &json!([])), never),
            (json!({}), node(&json!({}), &taint("dedicated", "NoSchedule")), keep),
            (json!({}), node(&json!({}), &taint("dedicated", "NoExecute")), never),
            (json!({}), node(&json!({}), &taint("dedicated", "PreferNoSchedule")), run),
            (
                json!({"tolerations": [{"key": "dedicated", "operator": "Exists"}]}),
                node(&json!({}), &taint("dedicated", "NoSchedule")),
                run,
            ),
            // Tolerated by default:
            (json!({}), node(&json!({}), &taint("node.kubernetes.io/unschedulable", "NoSchedule")), run),
            (json!({}), node(&json!({}), &taint("node.kubernetes.io/not-ready", "NoExecute")), run),
            (json!({}), node(&json!({}), &taint("node.kubernetes.io/network-unavailable", "NoSchedule")), keep),
            (
                json!({"hostNetwork": true}),
                node(&json!({}), &taint("node.kubernetes.io/network-unavailable", "NoSchedule")),
                run,
            ),
        ];
        for (spec, n, expected) in cases {
            let pod_spec = spec_with_tolerations(&ds(spec.clone()));
            assert_eq!(eligibility(&pod_spec, &n), expected, "{spec} on {n}");
        }
    }

    #[test]
    fn pods_are_pinned_by_match_fields_keeping_label_terms() {
        let mut spec = json!({});
        pin_to_node(&mut spec, "n1");
        assert_eq!(target_node(&json!({"spec": spec})), Some("n1"));
        let mut with_terms = json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "a", "operator": "Exists"}]}]}}}});
        pin_to_node(&mut with_terms, "n2");
        let term = &with_terms["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0];
        assert_eq!(term["matchExpressions"][0]["key"], "a");
        assert_eq!(term["matchFields"][0]["values"], json!(["n2"]));
        assert_eq!(target_node(&json!({"spec": {"nodeName": "n3"}})), Some("n3"));
    }
}
