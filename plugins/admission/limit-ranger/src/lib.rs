//! Built-in admission policy LimitRanger: applies the namespace's LimitRanges (type
//! `Container`) to pods — `default` limits and `defaultRequest` requests fill what containers
//! leave out, then `min` and `max` bound every container's requests and limits.

use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, cluster};
use capstan_plugin_sdk::quantity;
use serde_json::{Map, Value, json};

/// Applies LimitRanges.
pub struct LimitRanger;

/// The container limits of the namespace's LimitRanges.
fn container_limits(ranges: &[Value]) -> Vec<&Value> {
    ranges
        .iter()
        .filter_map(|r| r.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .filter(|l| l.get("type").and_then(Value::as_str) == Some("Container"))
        .collect()
}

fn entries(value: Option<&Value>) -> Vec<(String, Value)> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
        .unwrap_or_default()
}

/// One container's resources with defaults filled in.
fn defaulted(resources: &Value, limits: &[&Value]) -> Value {
    let mut resources = resources.as_object().cloned().unwrap_or_default();
    for limit in limits {
        let default_limits = entries(limit.get("default"));
        let default_requests = entries(limit.get("defaultRequest"));
        let section = |resources: &mut Map<String, Value>, name: &str| -> Map<String, Value> {
            resources.get(name).and_then(Value::as_object).cloned().unwrap_or_default()
        };
        let mut container_limits = section(&mut resources, "limits");
        let mut container_requests = section(&mut resources, "requests");
        for (resource, value) in &default_limits {
            container_limits.entry(resource.clone()).or_insert_with(|| value.clone());
        }
        for (resource, value) in default_requests.iter().chain(&default_limits) {
            // A request defaults to the defaultRequest, else to the container's limit.
            let fallback = container_limits.get(resource).cloned().unwrap_or_else(|| value.clone());
            let wanted = default_requests.iter().find(|(r, _)| r == resource).map_or(fallback, |(_, v)| v.clone());
            container_requests.entry(resource.clone()).or_insert(wanted);
        }
        if !container_limits.is_empty() {
            resources.insert("limits".into(), Value::Object(container_limits));
        }
        if !container_requests.is_empty() {
            resources.insert("requests".into(), Value::Object(container_requests));
        }
    }
    Value::Object(resources)
}

/// Why `resources` breaks a `min` or `max`, if it does.
fn violation(container: &str, resources: &Value, limits: &[&Value]) -> Option<String> {
    let amount = |section: &str, resource: &str| {
        resources.get(section).and_then(|s| s.get(resource)).and_then(Value::as_str).and_then(quantity::parse)
    };
    for limit in limits {
        for (resource, bound) in entries(limit.get("min")) {
            let Some(bound) = bound.as_str().and_then(quantity::parse) else { continue };
            match amount("requests", &resource) {
                Some(request) if request >= bound => {}
                Some(_) => {
                    return Some(format!(
                        "minimum {resource} usage per Container is {}, but request is {}",
                        quantity::format(bound),
                        quantity::format(amount("requests", &resource).unwrap_or(0))
                    ));
                }
                None => {
                    return Some(format!(
                        "minimum {resource} usage per Container is {}, but no request is specified",
                        quantity::format(bound)
                    ));
                }
            }
        }
        for (resource, bound) in entries(limit.get("max")) {
            let Some(bound) = bound.as_str().and_then(quantity::parse) else { continue };
            match amount("limits", &resource) {
                Some(have) if have <= bound => {}
                Some(have) => {
                    return Some(format!(
                        "maximum {resource} usage per Container is {}, but limit is {} (container {container})",
                        quantity::format(bound),
                        quantity::format(have)
                    ));
                }
                None => {
                    return Some(format!(
                        "maximum {resource} usage per Container is {}, but no limit is specified",
                        quantity::format(bound)
                    ));
                }
            }
        }
    }
    None
}

/// The patch defaulting every container's resources, or why the pod breaks a bound.
fn admit(pod: &Value, ranges: &[Value]) -> Result<Vec<Value>, String> {
    let limits = container_limits(ranges);
    let mut ops = Vec::new();
    if limits.is_empty() {
        return Ok(ops);
    }
    for list in ["containers", "initContainers"] {
        for (index, container) in
            pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let current = container.get("resources").cloned().unwrap_or(json!({}));
            let resources = defaulted(&current, &limits);
            let name = container.get("name").and_then(Value::as_str).unwrap_or_default();
            if let Some(message) = violation(name, &resources, &limits) {
                return Err(message);
            }
            if resources != current {
                ops.push(json!({"op": "add", "path": format!("/spec/{list}/{index}/resources"), "value": resources}));
            }
        }
    }
    Ok(ops)
}

impl AdmissionPolicy for LimitRanger {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn mutate(&self, request: &AdmissionRequest) -> AdmissionResponse {
        if request.sub_resource.is_some() {
            return AdmissionResponse::allow();
        }
        let pod: Value = match request.object() {
            Ok(Some(pod)) => pod,
            Ok(None) => return AdmissionResponse::allow(),
            Err(e) => return AdmissionResponse::deny(format!("the pod is not valid JSON: {e}")).with_code(400),
        };
        let ranges = match cluster::list("", "v1", "limitranges", request.namespace.as_deref()) {
            Ok(ranges) => ranges,
            Err(e) => return AdmissionResponse::deny(format!("cannot list LimitRanges: {e:?}")).with_code(500),
        };
        match admit(&pod, &ranges) {
            Ok(ops) if ops.is_empty() => AdmissionResponse::allow(),
            Ok(ops) => AdmissionResponse::allow().with_patch(Value::Array(ops).to_string()),
            Err(message) => AdmissionResponse::deny(format!("pod {:?} is forbidden: {message}", request.name)),
        }
    }
}

capstan_plugin_sdk::admission_policy!(LimitRanger);

#[cfg(test)]
mod tests {
    use super::admit;
    use serde_json::json;

    #[test]
    fn defaults_then_bounds() {
        let ranges = [json!({"spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m"}, "defaultRequest": {"cpu": "100m"}, "max": {"cpu": "1"}}]}})];
        let bare = json!({"spec": {"containers": [{"name": "a"}]}});
        let ops = admit(&bare, &ranges).expect("admitted");
        assert_eq!(ops[0]["value"], json!({"limits": {"cpu": "500m"}, "requests": {"cpu": "100m"}}));
        let big = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"cpu": "2"}}}]}});
        let message = admit(&big, &ranges).expect_err("too big");
        assert!(message.contains("maximum cpu usage per Container is 1, but limit is 2"), "{message}");
    }
}
