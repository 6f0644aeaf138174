//! `HorizontalPodAutoscaler`: NAME REFERENCE TARGETS MINPODS MAXPODS REPLICAS AGE.

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;

use super::{AGE, Column, NAME, Printer};
use crate::table::object::{age, field, integer, list, name, text};

pub(super) static PRINTER: Printer = Printer::new(COLUMNS, cells);

const COLUMNS: &[Column] = &[
    NAME,
    Column::text(
        "Reference",
        "reference to scaled resource; horizontal pod autoscaler will learn the current resource consumption and will set the desired number of pods by using its Scale subresource.",
    ),
    Column::text(
        "Targets",
        "metrics contains the specifications for which to use to calculate the desired replica count.",
    ),
    Column::text(
        "MinPods",
        "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down.",
    ),
    Column::text(
        "MaxPods",
        "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up.",
    ),
    Column::text("Replicas", "currentReplicas is current number of replicas of pods managed by this autoscaler."),
    AGE,
];

/// At most this many metrics are listed; the rest are counted.
const SHOWN: usize = 2;

fn cells(autoscaler: &Value, now: Timestamp) -> Vec<Value> {
    let min_pods = field(autoscaler, "/spec/minReplicas").map_or_else(|| "<unset>".to_owned(), Value::to_string);
    vec![
        name(autoscaler),
        format!("{}/{}", text(autoscaler, "/spec/scaleTargetRef/kind"), text(autoscaler, "/spec/scaleTargetRef/name"))
            .into(),
        targets(autoscaler).into(),
        min_pods.into(),
        integer(autoscaler, "/spec/maxReplicas").into(),
        integer(autoscaler, "/status/currentReplicas").into(),
        age(autoscaler, now),
    ]
}

/// Each metric as `current/target`, matched to its status by position.
fn targets(autoscaler: &Value) -> String {
    let specs = list(autoscaler, "/spec/metrics");
    if specs.is_empty() {
        return "<none>".to_owned();
    }
    let statuses = list(autoscaler, "/status/currentMetrics");
    let shown: Vec<String> =
        specs.iter().take(SHOWN).enumerate().map(|(index, spec)| metric(spec, statuses.get(index))).collect();
    match specs.len() {
        total if total > SHOWN => format!("{} + {} more...", shown.join(", "), total - SHOWN),
        _ => shown.join(", "),
    }
}

fn metric(spec: &Value, status: Option<&Value>) -> String {
    // The source's field is named after its type: resource, containerResource, pods, ...
    let (source, prefix) = match text(spec, "/type") {
        "Resource" => ("resource", true),
        "ContainerResource" => ("containerResource", true),
        "Pods" => ("pods", false),
        "Object" => ("object", false),
        "External" => ("external", false),
        _ => return "<unknown type>".to_owned(),
    };
    let target = spec.get(source).and_then(|source| source.get("target")).unwrap_or(&Value::Null);
    let current = status.and_then(|status| field(status, &format!("/{source}/current")));
    let reading = |field_name: &str| {
        current.and_then(|current| field(current, field_name)).map_or_else(|| "<unknown>".to_owned(), render)
    };
    let value = if field(target, "/averageValue").is_some() {
        let avg = if prefix || source == "pods" { "" } else { " (avg)" };
        format!("{}/{}{avg}", reading("/averageValue"), render(&target["averageValue"]))
    } else if prefix {
        let goal = field(target, "/averageUtilization").map_or_else(|| "<auto>".to_owned(), |u| format!("{u}%"));
        let used = current
            .and_then(|current| field(current, "/averageUtilization"))
            .map_or_else(|| "<unknown>".to_owned(), |u| format!("{u}%"));
        format!("{used}/{goal}")
    } else {
        format!("{}/{}", reading("/value"), field(target, "/value").map_or_else(String::new, render))
    };
    if prefix { format!("{}: {value}", text(spec, &format!("/{source}/name"))) } else { value }
}

/// A quantity or number as written.
fn render(value: &Value) -> String {
    value.as_str().map_or_else(|| value.to_string(), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn targets_pair_current_readings_with_goals() {
        let autoscaler = json!({
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web"}, "minReplicas": 2, "maxReplicas": 5,
                "metrics": [
                    {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                    {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "10"}}},
                    {"type": "External", "external": {"metric": {"name": "q"}, "target": {"type": "Value", "value": "5"}}}]},
            "status": {"currentReplicas": 3, "currentMetrics": [
                {"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 50}}}]}});
        let now: Timestamp = "2024-05-01T12:00:00Z".parse().expect("valid time");
        assert_eq!(
            cells(&autoscaler, now)[1..6],
            [json!("Deployment/web"), json!("cpu: 50%/80%, <unknown>/10 + 1 more..."), json!("2"), json!(5), json!(3)]
        );
        assert_eq!(targets(&json!({})), "<none>");
    }

    #[test]
    fn object_and_external_averages_are_marked() {
        let spec = json!({"type": "Object", "object": {"target": {"type": "AverageValue", "averageValue": "1k"}}});
        let status = json!({"type": "Object", "object": {"current": {"averageValue": "500"}}});
        assert_eq!(metric(&spec, Some(&status)), "500/1k (avg)");
        let memory = json!({"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "1Gi"}}});
        assert_eq!(metric(&memory, None), "memory: <unknown>/1Gi");
    }
}
