//! Counting a Job's finished pods and deciding how it ends.

use std::collections::BTreeSet;

use capstan_plugin_sdk::controller::{Api, ApiError, meta};
use serde_json::{Value, json};

use crate::pods::{completed_indexes, completions, format_indexes, index_of, is_indexed, succeeded};
use crate::{TRACKING_FINALIZER, job_kind, release_finalizers};

/// Why a Job ends: the interim condition (`SuccessCriteriaMet` or `FailureTarget`), its reason
/// and message, which the final `Complete`/`Failed` condition repeats.
pub type Ending = (&'static str, &'static str, &'static str);

const BACKOFF_LIMIT: Ending = ("FailureTarget", "BackoffLimitExceeded", "Job has reached the specified backoff limit");
const DEADLINE: Ending = ("FailureTarget", "DeadlineExceeded", "Job was active longer than specified deadline");
const COMPLETED: Ending = ("SuccessCriteriaMet", "CompletionsReached", "Reached expected number of succeeded pods");

fn uid_set(job: &Value, which: &str) -> BTreeSet<String> {
    let pointer = format!("/status/uncountedTerminatedPods/{which}");
    job.pointer(&pointer)
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// Counts the Job's finished pods still held by the tracking finalizer: records their UIDs in
/// `status.uncountedTerminatedPods` (and completed indexes), releases them, then adds them to
/// `succeeded`/`failed`. A pod being deleted before it succeeded counts as failed. Returns the
/// Job as stored and the UIDs of the pods released.
pub fn count_finished(api: &dyn Api, job: &Value, owned: &[Value]) -> Result<(Value, BTreeSet<String>), ApiError> {
    let mut succeeded_uids = uid_set(job, "succeeded");
    let mut failed_uids = uid_set(job, "failed");
    let mut indexes = completed_indexes(job);
    let total = completions(job).unwrap_or(0);
    let tracked = owned.iter().filter(|p| meta::finalizers(p).contains(&TRACKING_FINALIZER));
    let mut finished = Vec::new();
    for pod in tracked {
        let uid = meta::uid(pod).unwrap_or_default().to_owned();
        match pod.pointer("/status/phase").and_then(Value::as_str) {
            Some("Succeeded") => {
                if let Some(index) = index_of(pod).filter(|i| is_indexed(job) && *i < total) {
                    indexes.insert(index);
                }
                succeeded_uids.insert(uid);
            }
            Some("Failed") => {
                failed_uids.insert(uid);
            }
            _ if meta::is_terminating(pod) => {
                failed_uids.insert(uid);
            }
            _ => continue,
        }
        finished.push(pod.clone());
    }
    if succeeded_uids.is_empty() && failed_uids.is_empty() {
        return Ok((job.clone(), BTreeSet::new()));
    }
    let mut next = job.clone();
    next["status"]["uncountedTerminatedPods"] = json!({"succeeded": succeeded_uids, "failed": failed_uids});
    if is_indexed(job) {
        next["status"]["completedIndexes"] = json!(format_indexes(&indexes));
    }
    let recorded = api.update_status(&job_kind(), &next)?;
    release_finalizers(api, &finished)?;
    let mut counted = recorded.clone();
    let add = |field: &str, more: usize| meta::int(&recorded, &format!("/status/{field}"), 0) + more as i64;
    // Zero counts are left out, as upstream's `omitempty` does.
    for (field, more) in [("succeeded", succeeded_uids.len()), ("failed", failed_uids.len())] {
        let total = add(field, more);
        if total > 0 {
            counted["status"][field] = json!(total);
        }
    }
    counted["status"]["uncountedTerminatedPods"] = json!({});
    let stored = api.update_status(&job_kind(), &counted)?;
    Ok((stored, succeeded_uids.into_iter().chain(failed_uids).collect()))
}

/// How the Job ends, if it does: an interim condition already set, too many failures, its
/// deadline passed, or enough completions. `running` is the number of pods still running.
#[must_use]
pub fn ending(job: &Value, running: usize, now: i64) -> Option<Ending> {
    if meta::condition_is_true(job, "FailureTarget") {
        let reason = meta::condition(job, "FailureTarget").and_then(|c| c.get("reason")).and_then(Value::as_str);
        return Some(if reason == Some(DEADLINE.1) { DEADLINE } else { BACKOFF_LIMIT });
    }
    if meta::condition_is_true(job, "SuccessCriteriaMet") {
        return Some(COMPLETED);
    }
    if meta::int(job, "/status/failed", 0) > meta::int(job, "/spec/backoffLimit", 6) {
        return Some(BACKOFF_LIMIT);
    }
    if deadline_in(job, now) == Some(0) {
        return Some(DEADLINE);
    }
    let done = succeeded(job);
    let complete = match completions(job) {
        Some(total) => done >= total,
        None => done > 0 && running == 0,
    };
    complete.then_some(COMPLETED)
}

/// Seconds until `activeDeadlineSeconds` passes (0 once it has), for a Job that has one and
/// runs.
#[must_use]
pub fn deadline_in(job: &Value, now: i64) -> Option<u64> {
    if job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        return None;
    }
    let limit = job.pointer("/spec/activeDeadlineSeconds").and_then(Value::as_i64)?;
    let started = job.pointer("/status/startTime").and_then(Value::as_str).and_then(meta::parse_rfc3339)?;
    Some(u64::try_from(started + limit - now).unwrap_or(0))
}

/// Sets a condition in the Job's status.
pub fn set_condition(job: &mut Value, kind: &str, status: &str, reason: &str, message: &str, now: i64) {
    let mut conditions = job.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
    if meta::set_condition(&mut conditions, kind, status, reason, message, now) {
        job["status"]["conditions"] = json!(conditions);
    }
}

/// Writes `active` and `ready` from the Job's running pods `live`.
pub fn fill_counts(job: &mut Value, live: &[Value]) {
    let status = &mut job["status"];
    if !status.is_object() {
        *status = json!({});
    }
    let ready = live.iter().filter(|p| meta::pod_is_ready(p)).count();
    if let Some(map) = status.as_object_mut() {
        map.remove("active");
        if !live.is_empty() {
            map.insert("active".into(), json!(live.len()));
        }
        map.insert("ready".into(), json!(ready));
        map.entry("uncountedTerminatedPods").or_insert_with(|| json!({}));
    }
}
