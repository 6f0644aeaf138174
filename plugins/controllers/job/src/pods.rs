//! The pods a Job wants: how many should run, and new ones from its template (with the
//! completion index of `Indexed` Jobs).

use std::collections::BTreeSet;

use capstan_plugin_sdk::controller::meta;
use serde_json::{Value, json};

use crate::{TRACKING_FINALIZER, job_kind};

/// The annotation and label carrying an `Indexed` Job pod's completion index.
pub const INDEX_KEY: &str = "batch.kubernetes.io/job-completion-index";

/// Whether the Job's completion mode is `Indexed`.
#[must_use]
pub fn is_indexed(job: &Value) -> bool {
    job.pointer("/spec/completionMode").and_then(Value::as_str) == Some("Indexed")
}

/// `spec.completions`, if set.
#[must_use]
pub fn completions(job: &Value) -> Option<usize> {
    job.pointer("/spec/completions").and_then(Value::as_u64).map(|c| usize::try_from(c).unwrap_or(usize::MAX))
}

/// How many pods have succeeded, as far as completion goes: completed indexes of an `Indexed`
/// Job, `status.succeeded` otherwise.
#[must_use]
pub fn succeeded(job: &Value) -> usize {
    if is_indexed(job) {
        completed_indexes(job).len()
    } else {
        usize::try_from(meta::int(job, "/status/succeeded", 0)).unwrap_or(0)
    }
}

/// How many pods should run now, given `active` running ones: `parallelism`, capped by the
/// completions still missing. Without `completions`, once one pod succeeded no new pod starts
/// and running ones are left to finish.
#[must_use]
pub fn wanted_active(job: &Value, active: usize) -> usize {
    let parallelism = usize::try_from(meta::int(job, "/spec/parallelism", 1)).unwrap_or(0);
    let done = succeeded(job);
    match completions(job) {
        Some(total) => parallelism.min(total.saturating_sub(done)),
        None if done > 0 => active.min(parallelism),
        None => parallelism,
    }
}

/// The completion index of a pod of an `Indexed` Job.
#[must_use]
pub fn index_of(pod: &Value) -> Option<usize> {
    meta::annotation(pod, INDEX_KEY).or_else(|| meta::label(pod, INDEX_KEY)).and_then(|i| i.parse().ok())
}

/// `status.completedIndexes` (`"0-2,5"`) as a set.
#[must_use]
pub fn completed_indexes(job: &Value) -> BTreeSet<usize> {
    let text = job.pointer("/status/completedIndexes").and_then(Value::as_str).unwrap_or_default();
    let mut set = BTreeSet::new();
    for part in text.split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(first), Ok(last)) = (first.parse::<usize>(), last.parse::<usize>()) {
            set.extend(first..=last);
        }
    }
    set
}

/// A set of indexes in the form of `status.completedIndexes`: ascending ranges, `"0-2,5"`.
#[must_use]
pub fn format_indexes(indexes: &BTreeSet<usize>) -> String {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for &index in indexes {
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == index => *last = index,
            _ => ranges.push((index, index)),
        }
    }
    let text: Vec<String> =
        ranges.iter().map(|&(a, b)| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    text.join(",")
}

/// `count` new pods for the Job, `active` being those running: for an `Indexed` Job, the lowest
/// indexes neither completed nor running.
#[must_use]
pub fn to_create(job: &Value, active: &[&Value], count: usize) -> Vec<Value> {
    if !is_indexed(job) {
        return (0..count).map(|_| pod_from_template(job, None)).collect();
    }
    let completed = completed_indexes(job);
    let running: BTreeSet<usize> = active.iter().filter_map(|p| index_of(p)).collect();
    (0..completions(job).unwrap_or(0))
        .filter(|i| !completed.contains(i) && !running.contains(i))
        .take(count)
        .map(|i| pod_from_template(job, Some(i)))
        .collect()
}

/// A new pod from the Job's template, owned by it and held by the tracking finalizer; with
/// `index`, named, labelled, annotated and given a hostname for it.
#[must_use]
pub fn pod_from_template(job: &Value, index: Option<usize>) -> Value {
    let name = meta::name(job);
    let template = job.pointer("/spec/template").cloned().unwrap_or_else(|| json!({}));
    let mut metadata = template.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let mut spec = template.get("spec").cloned().unwrap_or_else(|| json!({}));
    if let Some(map) = metadata.as_object_mut() {
        map.remove("name");
    }
    metadata["namespace"] = json!(meta::namespace(job));
    metadata["ownerReferences"] = json!([meta::controller_reference(&job_kind(), job)]);
    metadata["finalizers"] = json!([TRACKING_FINALIZER]);
    metadata["generateName"] = json!(format!("{name}-"));
    if let Some(index) = index {
        metadata["generateName"] = json!(format!("{name}-{index}-"));
        for field in ["annotations", "labels"] {
            if !metadata[field].is_object() {
                metadata[field] = json!({});
            }
            metadata[field][INDEX_KEY] = json!(index.to_string());
        }
        if spec.get("hostname").is_none_or(Value::is_null) {
            spec["hostname"] = json!(format!("{name}-{index}"));
        }
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec})
}

/// When a pod finished: the latest `finishedAt` of its terminated containers.
fn finished_at(pod: &Value) -> Option<i64> {
    pod.pointer("/status/containerStatuses")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|c| c.pointer("/state/terminated/finishedAt").and_then(Value::as_str))
        .filter_map(meta::parse_rfc3339)
        .max()
}

/// Seconds before a new pod may start after failures, as upstream backs off: 10 s after the
/// first failure since the last success, doubling with each further one, at most 6 minutes.
/// `None` when nothing holds new pods back.
#[must_use]
pub fn backoff_remaining(pods: &[Value], now: i64) -> Option<u64> {
    let phase = |p: &Value, phase: &str| p.pointer("/status/phase").and_then(Value::as_str) == Some(phase);
    let last_success = pods.iter().filter(|p| phase(p, "Succeeded")).filter_map(finished_at).max();
    let failures: Vec<i64> = pods
        .iter()
        .filter(|p| phase(p, "Failed"))
        .filter_map(finished_at)
        .filter(|t| last_success.is_none_or(|s| *t > s))
        .collect();
    let last = *failures.iter().max()?;
    let doublings = u32::try_from(failures.len() - 1).unwrap_or(u32::MAX).min(6);
    let delay = (10_i64 << doublings).min(360);
    u64::try_from(last + delay - now).ok().filter(|wait| *wait > 0)
}
