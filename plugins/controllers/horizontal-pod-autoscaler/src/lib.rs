//! The `HorizontalPodAutoscaler` controller as a Capstan component (autoscaling/v2), as
//! kube-controller-manager's runs it: every 15 seconds each HPA reads its scale target
//! (Deployment, ReplicaSet, StatefulSet, `ReplicationController`), the pods it selects and their
//! usage from the resource metrics API (`metrics.k8s.io`, fed by the node agents), proposes a
//! replica count per metric ([`replicas::propose`]), takes the largest, stabilises and
//! rate-limits it by `spec.behavior` ([`replicas::decide`]) and writes it through the target's
//! `scale` subresource; the status carries the current metrics and the `AbleToScale`,
//! `ScalingActive` and `ScalingLimited` conditions, and each rescale records a
//! `SuccessfulRescale` event.
//!
//! `Resource` metrics (cpu, memory; `Utilization` or `AverageValue`) and `ContainerResource`
//! metrics are supported; `Pods`, `Object` and `External` metrics need a custom metrics API,
//! which Capstan does not serve — an HPA using only those reports `ScalingActive=False`.

pub mod replicas;

use std::collections::HashMap;

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, EventType, GroupVersionKind, ListOptions, ObjectKey, ObjectRef, PatchType,
    ReconcileResult, RelatedKind, Watches, kinds, meta,
};
use capstan_plugin_sdk::quantity;
use serde_json::{Value, json};

use replicas::{Bounds, History, Limit, PodUsage, Policy, Proposal, Rules, Select, Target};

/// How often each HPA is synced (kube-controller-manager's
/// `--horizontal-pod-autoscaler-sync-period`).
pub const SYNC_SECONDS: i64 = 15;

pub use capstan_plugin_sdk::controller::kinds::{horizontal_pod_autoscaler as hpa, pod_metrics};

/// The kinds an HPA may scale that the controller caches.
fn scalable_kinds() -> [GroupVersionKind; 4] {
    [
        kinds::deployment(),
        kinds::replica_set(),
        kinds::stateful_set(),
        GroupVersionKind::new("", "v1", "ReplicationController"),
    ]
}

/// The controller; it remembers recent recommendations and rescales per HPA, as upstream does
/// (in the host, through `recall`/`remember`, so every instance and version shares them).
#[derive(Default)]
pub struct HpaController;

impl Controller for HpaController {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn watches(&self) -> Watches {
        let mut others: Vec<RelatedKind> =
            scalable_kinds().into_iter().map(|kind| RelatedKind { kind, maps_to_keys: false }).collect();
        others.push(RelatedKind { kind: kinds::pod(), maps_to_keys: false });
        Watches { primary: hpa(), owned: Vec::new(), others }
    }

    fn map_to_keys(&self, _api: &dyn Api, _kind: &GroupVersionKind, _object: &Value) -> Vec<ObjectKey> {
        Vec::new()
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        capstan_plugin_sdk::controller::outcome(reconcile(api, key, meta::now_seconds()))
    }
}

capstan_plugin_sdk::controller!(HpaController);

/// The outcome of reading the metrics: a proposal, and the status entry of each metric.
struct Metrics {
    desired: i64,
    current: Vec<Value>,
    reason: String,
}

/// One sync of one HPA: the status being written and what to report.
struct Pass<'a> {
    api: &'a dyn Api,
    hpa: &'a Value,
    now: i64,
    status: Value,
    conditions: Vec<Value>,
}

impl<'a> Pass<'a> {
    fn new(api: &'a dyn Api, hpa: &'a Value, now: i64) -> Self {
        let status = hpa.get("status").cloned().unwrap_or_else(|| json!({}));
        let conditions = status["conditions"].as_array().cloned().unwrap_or_default();
        Pass { api, hpa, now, status, conditions }
    }

    fn condition(&mut self, kind: &str, status: &str, reason: &str, message: &str) {
        meta::set_condition_without_probe_time(&mut self.conditions, kind, status, reason, message, self.now);
    }

    fn event(&self, event_type: EventType, reason: &str, message: &str) {
        self.api.record_event(&ObjectRef::to(&hpa(), self.hpa), event_type, reason, message);
    }

    /// A failure: a condition, a warning event, and the status written.
    fn fail(mut self, kind: &str, reason: &str, message: &str) -> Result<Option<i64>, ApiError> {
        self.condition(kind, "False", reason, message);
        self.event(EventType::Warning, reason, message);
        self.finish()
    }

    /// Writes the status if it changed; the HPA is synced again after [`SYNC_SECONDS`].
    fn finish(mut self) -> Result<Option<i64>, ApiError> {
        self.status["conditions"] = json!(self.conditions);
        if self.hpa.get("status") != Some(&self.status) {
            let mut updated = self.hpa.clone();
            updated["status"] = self.status;
            match self.api.update_status(&hpa(), &updated) {
                Ok(_) => {}
                Err(e) if e.is_not_found() => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        Ok(Some(SYNC_SECONDS))
    }
}

/// Syncs one HPA; returns when to sync it again.
pub(crate) fn reconcile(api: &dyn Api, key: &ObjectKey, now: i64) -> Result<Option<i64>, ApiError> {
    let history_key = format!("history/{}/{}", key.namespace.as_deref().unwrap_or(""), key.name);
    let Some(hpa_object) = api.get(&hpa(), key)? else {
        api.remember(&history_key, None)?;
        return Ok(None);
    };
    if meta::is_terminating(&hpa_object) {
        return Ok(None);
    }
    let mut pass = Pass::new(api, &hpa_object, now);
    let spec = &hpa_object["spec"];
    let namespace = key.namespace.as_deref();
    let reference = &spec["scaleTargetRef"];
    let target_name = reference["name"].as_str().unwrap_or_default();
    let target_key = ObjectKey { namespace: namespace.map(str::to_owned), name: target_name.to_owned() };
    let Some(target_kind) = reference_kind(reference) else {
        return pass.fail("AbleToScale", "FailedGetScale", "the scaleTargetRef names no kind");
    };
    let target = match api.get(&target_kind, &target_key) {
        Ok(Some(target)) => target,
        Err(e) if !e.is_not_found() => return Err(e),
        _ => {
            let message = format!(
                "the HPA controller was unable to get the target's current scale: {} {target_name} not found",
                target_kind.kind
            );
            return pass.fail("AbleToScale", "FailedGetScale", &message);
        }
    };
    let current = meta::int(&target, "/spec/replicas", 1);
    let min = meta::int(&hpa_object, "/spec/minReplicas", 1);
    let max = meta::int(&hpa_object, "/spec/maxReplicas", min.max(1));
    pass.status["currentReplicas"] =
        json!(target.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(current));
    if let Some(generation) = hpa_object.pointer("/metadata/generation") {
        pass.status["observedGeneration"] = generation.clone();
    }
    if current == 0 && min != 0 {
        pass.status["desiredReplicas"] = json!(0);
        pass.condition(
            "ScalingActive",
            "False",
            "ScalingDisabled",
            "scaling is disabled since the replica count of the target is zero",
        );
        return pass.finish();
    }
    let pods = selected_pods(api, &target, namespace)?;
    let metrics = match read_metrics(api, spec, &pods, current, namespace) {
        Ok(metrics) => metrics,
        Err((reason, message)) => {
            pass.status["desiredReplicas"] = json!(current);
            return pass.fail("ScalingActive", &reason, &message);
        }
    };
    let message = format!("the HPA was able to successfully calculate a replica count from {}", metrics.reason);
    pass.condition("ScalingActive", "True", "ValidMetricFound", &message);
    let bounds = Bounds {
        min,
        max,
        up: rules(&spec["behavior"]["scaleUp"], Rules::default_up()),
        down: rules(&spec["behavior"]["scaleDown"], Rules::default_down()),
    };
    let uid = meta::uid(&hpa_object).unwrap_or("");
    let mut history = api.recall(&history_key).and_then(|text| History::decode(&text, uid)).unwrap_or_default();
    let (replicas, limit) = replicas::decide(current, metrics.desired, &bounds, &mut history, now);
    api.remember(&history_key, Some(&history.encode(uid)))?;
    let (limited, reason, message) = limit_condition(limit);
    pass.condition("ScalingLimited", limited, reason, message);
    pass.status["currentMetrics"] = json!(metrics.current);
    pass.status["desiredReplicas"] = json!(replicas);
    if replicas == current {
        pass.condition("AbleToScale", "True", "ReadyForNewScale", "recommended size matches current size");
        return pass.finish();
    }
    let scale = json!({"spec": {"replicas": replicas}});
    if let Err(e) = api.patch(&target_kind, &target_key, PatchType::Merge, &scale, Some("scale")) {
        let message = format!("the HPA controller was unable to update the target scale: {}", e.message);
        pass.event(EventType::Warning, "FailedRescale", &message);
        pass.condition("AbleToScale", "False", "FailedUpdateScale", &message);
        return pass.finish();
    }
    let message = if replicas > current {
        format!("New size: {replicas}; reason: {} above target", metrics.reason)
    } else {
        format!("New size: {replicas}; reason: All metrics below target")
    };
    pass.event(EventType::Normal, "SuccessfulRescale", &message);
    pass.status["lastScaleTime"] = json!(meta::rfc3339(now));
    let message = format!("the HPA controller was able to update the target scale to {replicas}");
    pass.condition("AbleToScale", "True", "SucceededRescale", &message);
    pass.finish()
}

/// The `ScalingLimited` condition for a decision's limit.
fn limit_condition(limit: Limit) -> (&'static str, &'static str, &'static str) {
    match limit {
        Limit::None => ("False", "DesiredWithinRange", "the desired count is within the acceptable range"),
        Limit::TooMany => {
            ("True", "TooManyReplicas", "the desired replica count is more than the maximum replica count")
        }
        Limit::TooFew => ("True", "TooFewReplicas", "the desired replica count is less than the minimum replica count"),
        Limit::ScaleUpLimit => {
            ("True", "ScaleUpLimit", "the desired replica count is increasing faster than the maximum scale rate")
        }
        Limit::ScaleDownLimit => {
            ("True", "ScaleDownLimit", "the desired replica count is decreasing faster than the maximum scale rate")
        }
    }
}

/// The kind `scaleTargetRef` names.
fn reference_kind(reference: &Value) -> Option<GroupVersionKind> {
    let api_version = reference["apiVersion"].as_str().unwrap_or("apps/v1");
    let kind = reference["kind"].as_str()?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    Some(GroupVersionKind::new(group, version, kind))
}

/// The live pods the target's selector matches (deleted and failed pods are not counted).
fn selected_pods(api: &dyn Api, target: &Value, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let selector = target.pointer("/spec/selector");
    // A ReplicationController's selector is a plain label map.
    let selector = selector.map(|s| {
        if s.get("matchLabels").is_some() || s.get("matchExpressions").is_some() {
            s.clone()
        } else {
            json!({"matchLabels": s})
        }
    });
    // The host's cache answers the selector; the filter below stays for selectors it cannot
    // take as a string.
    let options = ListOptions {
        label_selector: selector.as_ref().and_then(meta::selector_string),
        ..ListOptions::in_namespace(namespace)
    };
    Ok(api
        .list(&kinds::pod(), &options)?
        .into_iter()
        .filter(|p| selector.as_ref().is_some_and(|s| meta::selector_matches(Some(s), meta::labels(p))))
        .filter(|p| !meta::is_terminating(p) && p.pointer("/status/phase").and_then(Value::as_str) != Some("Failed"))
        .collect())
}

/// Reads every metric of the spec and returns the largest proposal, or why none can be made.
fn read_metrics(
    api: &dyn Api,
    spec: &Value,
    pods: &[Value],
    current: i64,
    namespace: Option<&str>,
) -> Result<Metrics, (String, String)> {
    let default_cpu = [
        json!({"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}),
    ];
    let specs = spec["metrics"].as_array().filter(|m| !m.is_empty()).map_or(&default_cpu[..], Vec::as_slice);
    let usage = pod_usage(api, namespace).map_err(|e| {
        (
            "FailedGetResourceMetric".to_string(),
            format!(
                "unable to get metrics for resource: unable to fetch metrics from resource metrics API: {}",
                e.message
            ),
        )
    })?;
    let mut best: Option<Metrics> = None;
    let mut errors = Vec::new();
    for metric in specs {
        match one_metric(metric, pods, &usage, current) {
            Ok((proposal, entry, reason)) => {
                if best.as_ref().is_none_or(|b| proposal.replicas > b.desired) {
                    let mut current = best.map(|b| b.current).unwrap_or_default();
                    current.push(entry);
                    best = Some(Metrics { desired: proposal.replicas, current, reason });
                } else if let Some(b) = best.as_mut() {
                    b.current.push(entry);
                }
            }
            Err(message) => errors.push(message),
        }
    }
    match best {
        Some(metrics) => Ok(metrics),
        None => Err(("FailedGetResourceMetric".into(), errors.join("; "))),
    }
}

/// Usage per pod name, per container: `pod → [(container, {cpu, memory})]`.
type Usage = HashMap<String, Vec<(String, Value)>>;

fn pod_usage(api: &dyn Api, namespace: Option<&str>) -> Result<Usage, ApiError> {
    let listed = api.list(&pod_metrics(), &ListOptions::in_namespace(namespace))?;
    Ok(listed
        .iter()
        .map(|m| {
            let containers = m["containers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| (c["name"].as_str().unwrap_or_default().to_owned(), c["usage"].clone()))
                .collect();
            (meta::name(m).to_owned(), containers)
        })
        .collect())
}

/// One metric's proposal, its `currentMetrics` entry and the reason text events use.
fn one_metric(
    metric: &Value,
    pods: &[Value],
    usage: &Usage,
    current: i64,
) -> Result<(Proposal, Value, String), String> {
    let kind = metric["type"].as_str().unwrap_or_default();
    let (block, container) = match kind {
        "Resource" => (&metric["resource"], None),
        "ContainerResource" => (&metric["containerResource"], metric["containerResource"]["container"].as_str()),
        other => {
            return Err(format!("metrics of type {other} need a custom metrics API, which Capstan does not serve"));
        }
    };
    let resource = block["name"].as_str().unwrap_or("cpu");
    let target = match block["target"]["type"].as_str() {
        Some("AverageValue") => Target::AverageValue(
            block["target"]["averageValue"].as_str().and_then(quantity::parse).ok_or("invalid averageValue")?,
        ),
        _ => Target::Utilization(block["target"]["averageUtilization"].as_i64().unwrap_or(80)),
    };
    let pod_usages: Vec<PodUsage> = pods
        .iter()
        .map(|pod| {
            let containers = pod.pointer("/spec/containers").and_then(Value::as_array).cloned().unwrap_or_default();
            let chosen = containers.iter().filter(|c| container.is_none_or(|name| c["name"] == name));
            let request = chosen
                .map(|c| {
                    c.pointer(&format!("/resources/requests/{resource}"))
                        .and_then(Value::as_str)
                        .and_then(quantity::parse)
                })
                .sum::<Option<i128>>();
            let used = usage.get(meta::name(pod)).map(|list| {
                list.iter()
                    .filter(|(name, _)| container.is_none_or(|c| c == name))
                    .filter_map(|(_, u)| u[resource].as_str().and_then(quantity::parse))
                    .sum::<i128>()
            });
            PodUsage { name: meta::name(pod).to_owned(), ready: meta::pod_is_ready(pod), usage: used, request }
        })
        .collect();
    let proposal =
        replicas::propose(current, &pod_usages, target).map_err(|e| format!("invalid metrics ({resource}): {e}"))?;
    let mut now = json!({"averageValue": quantity::format(proposal.average)});
    if let Some(utilization) = proposal.utilization {
        now["averageUtilization"] = json!(utilization);
    }
    let entry = match container {
        None => json!({"type": "Resource", "resource": {"name": resource, "current": now}}),
        Some(c) => {
            json!({"type": "ContainerResource", "containerResource": {"name": resource, "container": c, "current": now}})
        }
    };
    let reason = match target {
        Target::Utilization(_) => format!("{resource} resource utilization (percentage of request)"),
        Target::AverageValue(_) => format!("{resource} resource"),
    };
    Ok((proposal, entry, reason))
}

/// One direction of `spec.behavior`, with upstream's defaults for what it leaves out.
fn rules(spec: &Value, default: Rules) -> Rules {
    if !spec.is_object() {
        return default;
    }
    let policies: Vec<Policy> = spec["policies"]
        .as_array()
        .map(|list| {
            list.iter()
                .filter_map(|p| {
                    let value = p["value"].as_i64()?;
                    let period = p["periodSeconds"].as_i64()?;
                    match p["type"].as_str()? {
                        "Pods" => Some(Policy::Pods { value, period }),
                        "Percent" => Some(Policy::Percent { value, period }),
                        _ => None,
                    }
                })
                .collect()
        })
        .unwrap_or(default.policies);
    let select = match spec["selectPolicy"].as_str() {
        Some("Min") => Select::Min,
        Some("Disabled") => Select::Disabled,
        Some("Max") => Select::Max,
        _ => default.select,
    };
    Rules {
        stabilization: spec["stabilizationWindowSeconds"].as_i64().unwrap_or(default.stabilization),
        policies,
        select,
    }
}

#[cfg(test)]
mod tests;
