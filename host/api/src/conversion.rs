//! Version conversion for resources served at several group-versions over one storage version:
//! `autoscaling/v1` and `autoscaling/v2` `HorizontalPodAutoscalers` (stored as v2), and
//! `events.k8s.io/v1` and core `v1` Events (stored as core v1), as kube-apiserver converts them.

use serde_json::{Map, Value, json};

/// How one served version maps to the stored version.
#[derive(Clone, Copy, Debug)]
pub struct Conversion {
    /// Turns an object of the served version into the stored version.
    pub to_storage: fn(Value) -> Value,
    /// Turns a stored object into the served version.
    pub from_storage: fn(Value) -> Value,
}

/// Where autoscaling/v1 keeps the v2 metrics it cannot express, so they survive a round trip.
const HPA_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/metrics";
const HPA_CURRENT_METRICS_ANNOTATION: &str = "autoscaling.alpha.kubernetes.io/current-metrics";

/// autoscaling/v1 ↔ autoscaling/v2 `HorizontalPodAutoscaler`.
pub const HPA_V1: Conversion = Conversion { to_storage: hpa_v1_to_v2, from_storage: hpa_v2_to_v1 };
/// events.k8s.io/v1 ↔ core/v1 Event.
pub const EVENTS_V1: Conversion = Conversion { to_storage: event_to_core, from_storage: event_from_core };

fn is_cpu_utilization(metric: &Value) -> bool {
    metric["type"] == "Resource" && metric.pointer("/resource/name") == Some(&json!("cpu"))
}

fn take_annotation(object: &mut Value, name: &str) -> Option<Vec<Value>> {
    let annotations = object.pointer_mut("/metadata/annotations")?.as_object_mut()?;
    let text = annotations.remove(name)?;
    if annotations.is_empty()
        && let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut)
    {
        metadata.remove("annotations");
    }
    serde_json::from_str(text.as_str()?).ok()
}

fn put_annotation(object: &mut Value, name: &str, values: &[Value]) {
    if values.is_empty() {
        return;
    }
    if !object.pointer("/metadata/annotations").is_some_and(Value::is_object) {
        object["metadata"]["annotations"] = json!({});
    }
    object["metadata"]["annotations"][name] = Value::String(Value::Array(values.to_vec()).to_string());
}

fn hpa_v1_to_v2(mut object: Value) -> Value {
    object["apiVersion"] = json!("autoscaling/v2");
    let mut metrics = take_annotation(&mut object, HPA_METRICS_ANNOTATION).unwrap_or_default();
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        if let Some(target) = spec.remove("targetCPUUtilizationPercentage") {
            metrics.retain(|m| !is_cpu_utilization(m));
            metrics.insert(0, json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}));
        }
        if !metrics.is_empty() {
            spec.insert("metrics".into(), Value::Array(metrics));
        }
    }
    let mut current = take_annotation(&mut object, HPA_CURRENT_METRICS_ANNOTATION).unwrap_or_default();
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        if let Some(utilization) = status.remove("currentCPUUtilizationPercentage") {
            current.retain(|m| !is_cpu_utilization(m));
            current.insert(0, json!({"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": utilization}}}));
        }
        if !current.is_empty() {
            status.insert("currentMetrics".into(), Value::Array(current));
        }
    }
    object
}

fn hpa_v2_to_v1(mut object: Value) -> Value {
    object["apiVersion"] = json!("autoscaling/v1");
    let mut others = Vec::new();
    if let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) {
        spec.remove("behavior");
        for metric in spec.remove("metrics").and_then(|m| m.as_array().cloned()).unwrap_or_default() {
            let utilization =
                metric.pointer("/resource/target/averageUtilization").filter(|_| is_cpu_utilization(&metric));
            match utilization {
                Some(target) => {
                    spec.insert("targetCPUUtilizationPercentage".into(), target.clone());
                }
                None => others.push(metric),
            }
        }
    }
    let mut other_current = Vec::new();
    if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
        status.remove("conditions");
        for metric in status.remove("currentMetrics").and_then(|m| m.as_array().cloned()).unwrap_or_default() {
            let utilization =
                metric.pointer("/resource/current/averageUtilization").filter(|_| is_cpu_utilization(&metric));
            match utilization {
                Some(current) => {
                    status.insert("currentCPUUtilizationPercentage".into(), current.clone());
                }
                None => other_current.push(metric),
            }
        }
    }
    put_annotation(&mut object, HPA_METRICS_ANNOTATION, &others);
    put_annotation(&mut object, HPA_CURRENT_METRICS_ANNOTATION, &other_current);
    object
}

/// Field renames between events.k8s.io/v1 (left) and core/v1 (right).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("regarding", "involvedObject"),
    ("note", "message"),
    ("deprecatedSource", "source"),
    ("deprecatedFirstTimestamp", "firstTimestamp"),
    ("deprecatedLastTimestamp", "lastTimestamp"),
    ("deprecatedCount", "count"),
    ("reportingController", "reportingComponent"),
];

fn rename(object: Value, pairs: impl Iterator<Item = (&'static str, &'static str)>, api_version: &str) -> Value {
    let Value::Object(mut map) = object else { return object };
    let mut renamed = Map::new();
    for (from, to) in pairs {
        if let Some(value) = map.remove(from) {
            renamed.insert(to.to_string(), value);
        }
    }
    map.extend(renamed);
    map.insert("apiVersion".into(), json!(api_version));
    Value::Object(map)
}

fn event_to_core(object: Value) -> Value {
    rename(object, EVENT_FIELDS.iter().copied(), "v1")
}

fn event_from_core(object: Value) -> Value {
    rename(object, EVENT_FIELDS.iter().map(|(a, b)| (*b, *a)), "events.k8s.io/v1")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hpa_round_trips_between_v1_and_v2() {
        let v1 = json!({
            "apiVersion": "autoscaling/v1", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 1, "maxReplicas": 5, "targetCPUUtilizationPercentage": 70},
            "status": {"currentReplicas": 2, "desiredReplicas": 3, "currentCPUUtilizationPercentage": 85},
        });
        let v2 = (HPA_V1.to_storage)(v1.clone());
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
        assert_eq!(v2["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"], 85);
        assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());
        assert_eq!((HPA_V1.from_storage)(v2), v1);
    }

    #[test]
    fn hpa_v2_metrics_v1_cannot_express_survive_in_annotations() {
        let memory = json!({"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}});
        let v2 = json!({
            "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"},
            "spec": {"maxReplicas": 5, "metrics": [memory]},
        });
        let v1 = (HPA_V1.from_storage)(v2.clone());
        assert!(v1["metadata"]["annotations"][HPA_METRICS_ANNOTATION].is_string());
        assert_eq!((HPA_V1.to_storage)(v1), v2);
    }

    #[test]
    fn events_map_between_groups() {
        let modern = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e"},
            "regarding": {"kind": "Pod", "name": "web"}, "note": "Pulled image", "reason": "Pulled",
            "reportingController": "kubelet", "reportingInstance": "node-1", "type": "Normal", "eventTime": "2026-01-01T00:00:00.000000Z",
        });
        let core = (EVENTS_V1.to_storage)(modern.clone());
        assert_eq!(core["involvedObject"]["name"], "web");
        assert_eq!(core["message"], "Pulled image");
        assert_eq!(core["reportingComponent"], "kubelet");
        assert_eq!(core["apiVersion"], "v1");
        assert_eq!((EVENTS_V1.from_storage)(core), modern);
    }
}
