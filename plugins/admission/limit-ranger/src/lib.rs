//! Built-in admission policy `LimitRanger`: applies the namespace's `LimitRanges` to pods — for
//! type `Container`, `default` limits and `defaultRequest` requests fill what containers leave
//! out, then `min`, `max` and `maxLimitRequestRatio` bound every container's requests and
//! limits; for type `Pod`, the same bounds apply to the sums over the pod's containers.

use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, cluster};
use capstan_plugin_sdk::quantity;
use serde_json::{Map, Value, json};

/// Applies `LimitRanges`.
pub struct LimitRanger;

/// The limits of type `kind` (`Container`, `Pod`) of the namespace's `LimitRanges`.
fn limits_of<'a>(ranges: &'a [Value], kind: &str) -> Vec<&'a Value> {
    ranges
        .iter()
        .filter_map(|r| r.pointer("/spec/limits").and_then(Value::as_array))
        .flatten()
        .filter(|l| l.get("type").and_then(Value::as_str) == Some(kind))
        .collect()
}

/// A pod's requests and limits: the sums over its (defaulted) containers.
fn pod_totals(containers: &[Value]) -> Value {
    let mut totals = json!({"requests": {}, "limits": {}});
    for section in ["requests", "limits"] {
        let mut sums: std::collections::BTreeMap<String, quantity::Milli> = std::collections::BTreeMap::new();
        for resources in containers {
            for (resource, amount) in entries(resources.get(section)) {
                *sums.entry(resource).or_insert(0) += amount.as_str().and_then(quantity::parse).unwrap_or(0);
            }
        }
        totals[section] = sums
            .into_iter()
            .map(|(k, v)| {
                let text = quantity::format_for(&k, v);
                (k, Value::String(text))
            })
            .collect();
    }
    totals
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

/// Why `resources` (of a `kind`: `Container`, `Pod`) breaks a `maxLimitRequestRatio`, if it
/// does, in upstream's words.
fn ratio_violation(kind: &str, resources: &Value, limits: &[&Value]) -> Option<String> {
    let amount = |section: &str, resource: &str| {
        resources.get(section).and_then(|s| s.get(resource)).and_then(Value::as_str).and_then(quantity::parse)
    };
    for limit in limits {
        for (resource, bound) in entries(limit.get("maxLimitRequestRatio")) {
            let Some(bound) = bound.as_str().and_then(quantity::parse) else { continue };
            let Some(have) = amount("limits", &resource) else { continue };
            match amount("requests", &resource).filter(|r| *r > 0) {
                None => {
                    return Some(format!(
                        "{resource} max limit to request ratio per {kind} is {}, but no request is specified or \
                         request is 0",
                        quantity::format(bound)
                    ));
                }
                Some(request) if have * 1000 > bound * request => {
                    return Some(format!(
                        "{resource} max limit to request ratio per {kind} is {}, but provided ratio is {:.6}",
                        quantity::format(bound),
                        have as f64 / request as f64
                    ));
                }
                Some(_) => {}
            }
        }
    }
    None
}

/// Why `resources` breaks a `min`, `max` or `maxLimitRequestRatio`, if it does.
fn violation(container: &str, resources: &Value, limits: &[&Value]) -> Option<String> {
    bound_violation("Container", Some(container), resources, limits)
        .or_else(|| ratio_violation("Container", resources, limits))
}

/// Why `resources` (of a `kind`, named `container` for a container) breaks a `min` or `max`.
fn bound_violation(kind: &str, container: Option<&str>, resources: &Value, limits: &[&Value]) -> Option<String> {
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
                        "minimum {resource} usage per {kind} is {}, but request is {}",
                        quantity::format_for(&resource, bound),
                        quantity::format_for(&resource, amount("requests", &resource).unwrap_or(0))
                    ));
                }
                None => {
                    return Some(format!(
                        "minimum {resource} usage per {kind} is {}, but no request is specified",
                        quantity::format_for(&resource, bound)
                    ));
                }
            }
        }
        for (resource, bound) in entries(limit.get("max")) {
            let Some(bound) = bound.as_str().and_then(quantity::parse) else { continue };
            match amount("limits", &resource) {
                Some(have) if have <= bound => {}
                Some(have) => {
                    let which = container.map(|c| format!(" (container {c})")).unwrap_or_default();
                    return Some(format!(
                        "maximum {resource} usage per {kind} is {}, but limit is {}{which}",
                        quantity::format_for(&resource, bound),
                        quantity::format_for(&resource, have)
                    ));
                }
                None => {
                    return Some(format!(
                        "maximum {resource} usage per {kind} is {}, but no limit is specified",
                        quantity::format_for(&resource, bound)
                    ));
                }
            }
        }
    }
    None
}

/// The patch defaulting every container's resources, or why the pod breaks a bound.
fn admit(pod: &Value, ranges: &[Value]) -> Result<Vec<Value>, String> {
    let limits = limits_of(ranges, "Container");
    let pod_limits = limits_of(ranges, "Pod");
    let mut ops = Vec::new();
    if limits.is_empty() && pod_limits.is_empty() {
        return Ok(ops);
    }
    let mut app_containers = Vec::new();
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
            if list == "containers" {
                app_containers.push(resources);
            }
        }
    }
    let totals = pod_totals(&app_containers);
    if let Some(message) =
        bound_violation("Pod", None, &totals, &pod_limits).or_else(|| ratio_violation("Pod", &totals, &pod_limits))
    {
        return Err(message);
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

    #[test]
    fn limit_to_request_ratio_and_pod_totals() {
        // From the Kubernetes documentation's LimitRange examples: a limit at most 2× the request.
        let ranges = [json!({"spec": {"limits": [{"type": "Container", "maxLimitRequestRatio": {"memory": "2"}}]}})];
        let pod = |requests: &str, limits: &str| {
            json!({"spec": {"containers": [{"name": "a", "resources": {
                "requests": {"memory": requests}, "limits": {"memory": limits}}}]}})
        };
        assert!(admit(&pod("100Mi", "200Mi"), &ranges).is_ok());
        let message = admit(&pod("100Mi", "300Mi"), &ranges).expect_err("ratio 3");
        assert_eq!(message, "memory max limit to request ratio per Container is 2, but provided ratio is 3.000000");
        let no_request = json!({"spec": {"containers": [{"name": "a", "resources": {"limits": {"memory": "1Gi"}}}]}});
        let message = admit(&no_request, &ranges).expect_err("no request");
        assert!(message.ends_with("but no request is specified or request is 0"), "{message}");

        // Type Pod bounds the sum over the containers.
        let ranges = [json!({"spec": {"limits": [{"type": "Pod", "max": {"cpu": "1"}}]}})];
        let two = |cpu: &str| {
            json!({"spec": {"containers": [
                {"name": "a", "resources": {"limits": {"cpu": cpu}}},
                {"name": "b", "resources": {"limits": {"cpu": cpu}}}]}})
        };
        assert!(admit(&two("500m"), &ranges).is_ok());
        let message = admit(&two("600m"), &ranges).expect_err("1200m in all");
        assert_eq!(message, "maximum cpu usage per Pod is 1, but limit is 1200m");
    }
}
