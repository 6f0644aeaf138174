//! Validation of built-in kinds, close to kube-apiserver's: metadata (labels, annotations),
//! required fields, value ranges, and fields that may not change after creation. Each problem
//! becomes one cause of a 422 Invalid.

use capstan_api::ResourceInfo;
use serde_json::Value;

use crate::meta;
use crate::status::Cause;

/// Checks `object` (and, for updates, what changed since `old`).
#[must_use]
pub fn validate(info: &ResourceInfo, object: &Value, old: Option<&Value>) -> Vec<Cause> {
    let mut causes = Vec::new();
    metadata(object, &mut causes);
    match (info.gvk.group, info.gvk.kind) {
        ("", "Pod") => pod(object, old, &mut causes),
        ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet") => workload(object, old, &mut causes),
        ("", "ReplicationController") => replication_controller(object, &mut causes),
        ("batch", "Job") => job(object, old, &mut causes),
        ("", "Service") => service(object, old, &mut causes),
        ("", "ConfigMap" | "Secret") => data_keys(object, &mut causes),
        ("capstan.io", "Plugin") => plugin(object, &mut causes),
        _ => {}
    }
    causes
}

/// A Plugin's admission selectors, which must parse, and `matchConditions`: named, unique, and
/// valid CEL.
fn plugin(object: &Value, causes: &mut Vec<Cause>) {
    for field in ["objectSelector", "namespaceSelector"] {
        let Some(selector) = object.pointer(&format!("/spec/admission/{field}")) else { continue };
        if let Err(e) = capstan_api::selector::LabelSelector::from_json(selector) {
            causes.push(invalid(&format!("spec.admission.{field}"), selector, &e.to_string()));
        }
    }
    let Some(conditions) = object.pointer("/spec/admission/matchConditions") else { return };
    let Ok(conditions) = serde_json::from_value::<Vec<capstan_api::plugin::MatchCondition>>(conditions.clone()) else {
        return; // the schema reports a malformed list
    };
    causes.extend(crate::conditions::problems(&conditions));
}

fn required(field: &str) -> Cause {
    Cause { reason: "FieldValueRequired", field: field.into(), message: "Required value".into() }
}

fn invalid(field: &str, value: &Value, why: &str) -> Cause {
    Cause { reason: "FieldValueInvalid", field: field.into(), message: format!("Invalid value: {value}: {why}") }
}

fn duplicate(field: &str, value: &str) -> Cause {
    Cause { reason: "FieldValueDuplicate", field: field.into(), message: format!("Duplicate value: {value:?}") }
}

fn forbidden(field: &str, why: &str) -> Cause {
    Cause { reason: "FieldValueForbidden", field: field.into(), message: format!("Forbidden: {why}") }
}

fn immutable(field: &str, value: &Value) -> Cause {
    Cause {
        reason: "FieldValueInvalid",
        field: field.into(),
        message: format!("Invalid value: {value}: field is immutable"),
    }
}

/// A label key: an optional DNS subdomain prefix and '/', then a name of at most 63
/// alphanumerics, '-', '_' or '.', starting and ending alphanumeric.
fn qualified_name_ok(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| meta::subdomain_errors(p).is_none());
    prefix_ok && label_value_ok(name) && !name.is_empty()
}

fn label_value_ok(value: &str) -> bool {
    let bytes = value.as_bytes();
    bytes.is_empty()
        || bytes.len() <= 63
            && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
}

fn metadata(object: &Value, causes: &mut Vec<Cause>) {
    let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
    for (key, value) in labels.into_iter().flatten() {
        if !qualified_name_ok(key) {
            causes.push(invalid("metadata.labels", &Value::String(key.clone()), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
        let text = value.as_str().unwrap_or_default();
        if !label_value_ok(text) {
            causes.push(invalid("metadata.labels", value, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        }
    }
    let annotations = object.pointer("/metadata/annotations").and_then(Value::as_object);
    let mut total = 0;
    for (key, value) in annotations.into_iter().flatten() {
        if !qualified_name_ok(key) {
            causes.push(invalid(
                "metadata.annotations",
                &Value::String(key.clone()),
                "name part must consist of alphanumeric characters, '-', '_' or '.'",
            ));
        }
        total += key.len() + value.as_str().map_or(0, str::len);
    }
    if total > 256 * 1024 {
        causes.push(Cause {
            reason: "FieldValueTooLong",
            field: "metadata.annotations".into(),
            message: "Too long: must have at most 262144 bytes".into(),
        });
    }
}

fn containers(spec: &Value, list: &str, prefix: &str, causes: &mut Vec<Cause>) {
    let mut names: Vec<&str> = Vec::new();
    for (i, container) in spec.get(list).and_then(Value::as_array).into_iter().flatten().enumerate() {
        let field = format!("{prefix}.{list}[{i}]");
        match container.get("name").and_then(Value::as_str) {
            None | Some("") => causes.push(required(&format!("{field}.name"))),
            Some(name) => {
                if let Some(why) = meta::label_errors(name) {
                    causes.push(invalid(&format!("{field}.name"), &Value::String(name.into()), &why));
                }
                if names.contains(&name) {
                    causes.push(duplicate(&format!("{field}.name"), name));
                }
                names.push(name);
            }
        }
        if container.get("image").and_then(Value::as_str).is_none_or(str::is_empty) {
            causes.push(required(&format!("{field}.image")));
        }
        for (p, port) in container.get("ports").and_then(Value::as_array).into_iter().flatten().enumerate() {
            let number = port.get("containerPort").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&number) {
                causes.push(invalid(
                    &format!("{field}.ports[{p}].containerPort"),
                    &port["containerPort"],
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
}

/// The names of a pod spec's scheduling gates.
fn scheduling_gates(spec: &Value) -> Vec<&str> {
    let gates = spec.get("schedulingGates").and_then(Value::as_array);
    gates.into_iter().flatten().map(|gate| gate.get("name").and_then(Value::as_str).unwrap_or_default()).collect()
}

fn pod_spec(spec: &Value, prefix: &str, causes: &mut Vec<Cause>) {
    let gates = scheduling_gates(spec);
    for (i, name) in gates.iter().enumerate() {
        let field = format!("{prefix}.schedulingGates[{i}].name");
        if !qualified_name_ok(name) {
            causes.push(invalid(&field, &Value::String((*name).into()), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"));
        } else if gates[..i].contains(name) {
            causes.push(duplicate(&field, name));
        }
    }
    if spec.get("containers").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        causes.push(required(&format!("{prefix}.containers")));
    }
    containers(spec, "initContainers", prefix, causes);
    containers(spec, "containers", prefix, causes);
    if let Some(policy) =
        spec.get("restartPolicy").filter(|p| !matches!(p.as_str(), Some("Always" | "OnFailure" | "Never")))
    {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: format!("{prefix}.restartPolicy"),
            message: format!("Unsupported value: {policy}: supported values: \"Always\", \"OnFailure\", \"Never\""),
        });
    }
}

fn pod(object: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let spec = object.get("spec").cloned().unwrap_or_default();
    pod_spec(&spec, "spec", causes);
    let gates = scheduling_gates(&spec);
    let Some(old) = old else {
        if !gates.is_empty() && spec.get("nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()) {
            causes.push(forbidden("spec.nodeName", "cannot be set until all schedulingGates have been removed"));
        }
        return;
    };
    let old_gates = old.get("spec").map(scheduling_gates).unwrap_or_default();
    if let Some(added) = gates.iter().find(|gate| !old_gates.contains(gate)) {
        causes.push(forbidden(
            "spec.schedulingGates",
            &format!("only deletion is allowed, but found new scheduling gate '{added}'"),
        ));
    }
    // Only images, activeDeadlineSeconds, tolerations (additions) and scheduling gates may change;
    // compare everything else.
    let strip = |pod: &Value| {
        let mut spec = pod.get("spec").cloned().unwrap_or_default();
        for list in ["containers", "initContainers"] {
            if let Some(items) = spec.get_mut(list).and_then(Value::as_array_mut) {
                for c in items {
                    if let Some(map) = c.as_object_mut() {
                        map.remove("image");
                    }
                }
            }
        }
        if let Some(map) = spec.as_object_mut() {
            for field in ["activeDeadlineSeconds", "tolerations", "schedulingGates", "nodeName"] {
                map.remove(field);
            }
        }
        spec
    };
    if strip(object) != strip(old) {
        causes.push(forbidden("spec", "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds`, `spec.tolerations` (only additions to existing tolerations) or `spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"));
    }
    let old_node = old.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty());
    if old_node.is_some() && object.pointer("/spec/nodeName").and_then(Value::as_str) != old_node {
        causes.push(immutable("spec.nodeName", object.pointer("/spec/nodeName").unwrap_or(&Value::Null)));
    }
}

/// Whether a `LabelSelector`'s `matchLabels` all appear in `labels`.
fn selector_matches(selector: &Value, labels: &Value) -> bool {
    let Some(match_labels) = selector.get("matchLabels").and_then(Value::as_object) else { return true };
    match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn workload(object: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let spec = object.get("spec").cloned().unwrap_or_default();
    let selector = spec.get("selector");
    let empty_selector = selector.is_none_or(|s| {
        s.get("matchLabels").and_then(Value::as_object).is_none_or(serde_json::Map::is_empty)
            && s.get("matchExpressions").and_then(Value::as_array).is_none_or(Vec::is_empty)
    });
    if empty_selector {
        causes.push(required("spec.selector"));
    }
    let labels = spec.pointer("/template/metadata/labels").cloned().unwrap_or_default();
    if let Some(selector) = selector.filter(|_| !empty_selector)
        && !selector_matches(selector, &labels)
    {
        causes.push(invalid("spec.template.metadata.labels", &labels, "`selector` does not match template `labels`"));
    }
    if let Some(replicas) = spec.get("replicas").and_then(Value::as_i64).filter(|r| *r < 0) {
        causes.push(invalid("spec.replicas", &Value::from(replicas), "must be greater than or equal to 0"));
    }
    if let Some(template) = spec.pointer("/template/spec") {
        pod_spec(template, "spec.template.spec", causes);
    } else {
        causes.push(required("spec.template.spec.containers"));
    }
    if let Some(old_selector) = old.and_then(|o| o.pointer("/spec/selector"))
        && selector != Some(old_selector)
    {
        causes.push(immutable("spec.selector", selector.unwrap_or(&Value::Null)));
    }
}

fn replication_controller(object: &Value, causes: &mut Vec<Cause>) {
    if let Some(template) = object.pointer("/spec/template/spec") {
        pod_spec(template, "spec.template.spec", causes);
    }
}

fn job(object: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    match object.pointer("/spec/template/spec") {
        Some(template) => {
            pod_spec(template, "spec.template.spec", causes);
            let policy = template.get("restartPolicy").and_then(Value::as_str);
            if !matches!(policy, Some("OnFailure" | "Never")) {
                causes.push(Cause {
                    reason: "FieldValueNotSupported",
                    field: "spec.template.spec.restartPolicy".into(),
                    message: format!(
                        "Unsupported value: {:?}: supported values: \"OnFailure\", \"Never\"",
                        policy.unwrap_or_default()
                    ),
                });
            }
        }
        None => causes.push(required("spec.template.spec.containers")),
    }
    if let Some(old) = old
        && old.pointer("/spec/template") != object.pointer("/spec/template")
    {
        causes.push(immutable("spec.template", object.pointer("/spec/template").unwrap_or(&Value::Null)));
    }
}

fn service(object: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let spec = object.get("spec").cloned().unwrap_or_default();
    let kind = spec.get("type").and_then(Value::as_str).unwrap_or("ClusterIP");
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let ports = spec.get("ports").and_then(Value::as_array).cloned().unwrap_or_default();
    if ports.is_empty() && kind != "ExternalName" && !headless {
        causes.push(required("spec.ports"));
    }
    for (i, port) in ports.iter().enumerate() {
        let number = port.get("port").and_then(Value::as_i64).unwrap_or(0);
        if !(1..=65535).contains(&number) {
            causes.push(invalid(
                &format!("spec.ports[{i}].port"),
                &port["port"],
                "must be between 1 and 65535, inclusive",
            ));
        }
        if ports.len() > 1 && port.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            causes.push(required(&format!("spec.ports[{i}].name")));
        }
    }
    if let Some(old_ip) =
        old.and_then(|o| o.pointer("/spec/clusterIP")).filter(|ip| ip.as_str().is_some_and(|s| !s.is_empty()))
        && spec.get("clusterIP").is_some_and(|ip| ip != old_ip)
    {
        causes.push(immutable("spec.clusterIP", &spec["clusterIP"]));
    }
}

fn data_keys(object: &Value, causes: &mut Vec<Cause>) {
    for field in ["data", "binaryData", "stringData"] {
        for key in object.get(field).and_then(Value::as_object).into_iter().flatten().map(|(k, _)| k) {
            let ok = !key.is_empty()
                && key.len() <= 253
                && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
                && key != "."
                && key != "..";
            if !ok {
                causes.push(invalid(
                    &format!("{field}[{key}]"),
                    &Value::String(key.clone()),
                    "a valid config key must consist of alphanumeric characters, '-', '_' or '.'",
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn fields(kind: (&str, &str, &str), object: &Value, old: Option<&Value>) -> Vec<String> {
        let registry = capstan_api::Registry::builtin();
        let info = registry.lookup(kind.0, kind.1, kind.2).expect("registered");
        validate(info, object, old).into_iter().map(|c| c.field).collect()
    }

    #[test]
    fn pods_need_named_containers_with_images() {
        let pods = ("", "v1", "pods");
        let cases = [
            (json!({"spec": {"containers": [{"name": "app", "image": "busybox"}]}}), vec![]),
            (json!({"spec": {}}), vec!["spec.containers"]),
            (json!({"spec": {"containers": [{"name": "App_1", "image": "x"}]}}), vec!["spec.containers[0].name"]),
            (json!({"spec": {"containers": [{"name": "a"}]}}), vec!["spec.containers[0].image"]),
            (
                json!({"spec": {"containers": [{"name": "a", "image": "x"}, {"name": "a", "image": "y"}]}}),
                vec!["spec.containers[1].name"],
            ),
            (
                json!({"spec": {"restartPolicy": "Sometimes", "containers": [{"name": "a", "image": "x"}]}}),
                vec!["spec.restartPolicy"],
            ),
            (
                json!({"metadata": {"labels": {"bad key!": "x"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}}),
                vec!["metadata.labels"],
            ),
        ];
        for (pod, want) in cases {
            assert_eq!(fields(pods, &pod, None), want, "{pod}");
        }
    }

    #[test]
    fn pod_updates_may_change_images_only() {
        let pods = ("", "v1", "pods");
        let old = json!({"spec": {"containers": [{"name": "a", "image": "x", "command": ["sh"]}]}});
        let new_image = json!({"spec": {"containers": [{"name": "a", "image": "y", "command": ["sh"]}]}});
        assert!(fields(pods, &new_image, Some(&old)).is_empty());
        let new_command = json!({"spec": {"containers": [{"name": "a", "image": "x", "command": ["bash"]}]}});
        assert_eq!(fields(pods, &new_command, Some(&old)), ["spec"]);
    }

    #[test]
    fn scheduling_gates_are_named_once_and_may_only_be_removed() {
        let pods = ("", "v1", "pods");
        let pod = |gates: &[&str], node: &str| {
            let gates: Vec<_> = gates.iter().map(|name| json!({"name": name})).collect();
            json!({"spec": {"nodeName": node, "schedulingGates": gates, "containers": [{"name": "a", "image": "x"}]}})
        };
        assert!(fields(pods, &pod(&["example.com/a", "b"], ""), None).is_empty());
        assert_eq!(fields(pods, &pod(&["a", "a"], ""), None), ["spec.schedulingGates[1].name"]);
        assert_eq!(fields(pods, &pod(&["not a name!"], ""), None), ["spec.schedulingGates[0].name"]);
        assert_eq!(fields(pods, &pod(&["a"], "n1"), None), ["spec.nodeName"], "no node while gated");
        let old = pod(&["a", "b"], "");
        assert!(fields(pods, &pod(&["b"], ""), Some(&old)).is_empty(), "removing a gate");
        assert!(fields(pods, &pod(&[], ""), Some(&old)).is_empty(), "removing every gate");
        let registry = capstan_api::Registry::builtin();
        let info = registry.lookup("", "v1", "pods").expect("registered");
        let added = validate(info, &pod(&["a", "b", "c"], ""), Some(&old));
        assert_eq!(
            added.iter().map(|c| (c.field.as_str(), c.message.as_str())).collect::<Vec<_>>(),
            [("spec.schedulingGates", "Forbidden: only deletion is allowed, but found new scheduling gate 'c'")]
        );
    }

    #[test]
    fn deployments_need_a_matching_selector_that_never_changes() {
        let deployments = ("apps", "v1", "deployments");
        let template =
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "a", "image": "x"}]}});
        let good = json!({"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}});
        assert!(fields(deployments, &good, None).is_empty());
        let mismatched = json!({"spec": {"selector": {"matchLabels": {"app": "db"}}, "template": template}});
        assert_eq!(fields(deployments, &mismatched, None), ["spec.template.metadata.labels"]);
        let missing = json!({"spec": {"template": template}});
        assert_eq!(fields(deployments, &missing, None), ["spec.selector"]);
        let changed = json!({"spec": {"selector": {"matchLabels": {"app": "web", "tier": "x"}}, "template": {"metadata": {"labels": {"app": "web", "tier": "x"}}, "spec": template["spec"]}}});
        assert_eq!(fields(deployments, &changed, Some(&good)), ["spec.selector"]);
    }

    #[test]
    fn services_need_ports_in_range() {
        let services = ("", "v1", "services");
        let cases = [
            (json!({"spec": {"ports": [{"port": 80}]}}), vec![]),
            (json!({"spec": {}}), vec!["spec.ports"]),
            (json!({"spec": {"clusterIP": "None"}}), vec![]),
            (json!({"spec": {"ports": [{"port": 70000}]}}), vec!["spec.ports[0].port"]),
            (json!({"spec": {"ports": [{"port": 80}, {"port": 81, "name": "b"}]}}), vec!["spec.ports[0].name"]),
        ];
        for (service, want) in cases {
            assert_eq!(fields(services, &service, None), want, "{service}");
        }
    }
}
