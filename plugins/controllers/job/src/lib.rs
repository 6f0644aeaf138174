//! The Job controller as a Capstan component: runs a Job's pods until enough of them succeed
//! (`completions`, `parallelism`, `NonIndexed` or `Indexed` completion mode), fails it after
//! `backoffLimit` pod failures or past `activeDeadlineSeconds`, honours `suspend`, deletes it
//! `ttlSecondsAfterFinished` after it ends, and writes its status and conditions as
//! kube-controller-manager 1.32 does (`SuccessCriteriaMet`/`FailureTarget` first, then
//! `Complete`/`Failed` once no pod runs).
//!
//! Finished pods are counted through the `batch.kubernetes.io/job-tracking` finalizer, as
//! upstream does: a finished pod's UID goes to `status.uncountedTerminatedPods`, its finalizer is
//! removed, then it moves to `succeeded`/`failed`. A pod is thus counted once even when it is
//! deleted right after it ends.
//!
//! The API server generates a Job's selector and template labels
//! (`batch.kubernetes.io/controller-uid`, `batch.kubernetes.io/job-name`, and the legacy
//! `controller-uid`, `job-name`) and fills its defaults when the Job is created; pods are found
//! through their controller reference.
//!
//! Start with [`JobController::reconcile`]; [`pods`] builds pods, [`status`] does the counting.

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, DeleteOptions, EventType, GroupVersionKind, ListOptions, ObjectKey, ObjectRef,
    PatchType, Propagation, ReconcileResult, Watches, meta, owned,
};
use serde_json::{Value, json};

pub mod pods;
pub mod status;

/// The finalizer that keeps a pod until the Job has counted it.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";

/// Most pods created or deleted in one reconcile; the rest follow on the next.
const BURST: usize = 500;

/// The Job controller.
pub struct JobController;

/// The Job kind.
#[must_use]
pub fn job_kind() -> GroupVersionKind {
    GroupVersionKind::new("batch", "v1", "Job")
}

/// The Pod kind.
#[must_use]
pub fn pod_kind() -> GroupVersionKind {
    GroupVersionKind::new("", "v1", "Pod")
}

impl Controller for JobController {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn watches(&self) -> Watches {
        Watches { primary: job_kind(), owned: vec![pod_kind()], others: Vec::new() }
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        capstan_plugin_sdk::controller::outcome(reconcile(api, key, meta::now_seconds()))
    }
}

capstan_plugin_sdk::controller!(JobController);

/// Reconciles the Job `key` at `now` (seconds since the epoch). Returns after how many seconds
/// to look again (a deadline or a TTL), if any.
pub fn reconcile(api: &dyn Api, key: &ObjectKey, now: i64) -> Result<Option<u64>, ApiError> {
    let Some(job) = api.get(&job_kind(), key)? else {
        release_orphans(api, key)?;
        return Ok(None);
    };
    let owned = owned_pods(api, &job)?;
    if meta::is_terminating(&job) {
        release_finalizers(api, &owned)?;
        return Ok(None);
    }
    if meta::job_finished(&job).is_some() {
        release_finalizers(api, &owned)?;
        return expire(api, &job, now);
    }
    let backoff = pods::backoff_remaining(&owned, now);
    let (job, released) = status::count_finished(api, &job, &owned)?;
    let tracked: Vec<Value> = owned
        .into_iter()
        .filter(|p| {
            meta::finalizers(p).contains(&TRACKING_FINALIZER) && !released.contains(meta::uid(p).unwrap_or_default())
        })
        .collect();
    sync(api, &job, &tracked, backoff, now)
}

/// The pods the Job controls. When the API server generated the selector, only pods with the
/// Job's UID label are read from the cache (not the whole namespace); the controller reference
/// decides.
fn owned_pods(api: &dyn Api, job: &Value) -> Result<Vec<Value>, ApiError> {
    const UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
    let uid = meta::uid(job).unwrap_or_default();
    let labelled = job.pointer("/spec/template/metadata/labels").and_then(|l| l.get(UID_LABEL)).and_then(Value::as_str);
    let listed = if labelled == Some(uid) {
        let options = ListOptions {
            label_selector: Some(format!("{UID_LABEL}={uid}")),
            ..ListOptions::in_namespace(meta::namespace(job))
        };
        api.list(&pod_kind(), &options)?
    } else {
        api.list_owned(&pod_kind(), meta::namespace(job), uid)?
    };
    Ok(listed.into_iter().filter(|p| meta::is_controlled_by(p, uid)).collect())
}

/// Removes the tracking finalizer from the pods of a Job that is gone.
fn release_orphans(api: &dyn Api, key: &ObjectKey) -> Result<(), ApiError> {
    let pods = api.list(&pod_kind(), &ListOptions::in_namespace(key.namespace.as_deref()))?;
    let orphans: Vec<Value> = pods
        .into_iter()
        .filter(|p| {
            meta::controller_ref(p).is_some_and(|r| {
                r.get("kind").and_then(Value::as_str) == Some("Job")
                    && r.get("name").and_then(Value::as_str) == Some(key.name.as_str())
            })
        })
        .collect();
    release_finalizers(api, &orphans)
}

/// Removes the tracking finalizer from each of `pods` that carries it.
pub fn release_finalizers(api: &dyn Api, pods: &[Value]) -> Result<(), ApiError> {
    for pod in pods {
        let Some(kept) = meta::finalizers_without(pod, TRACKING_FINALIZER) else { continue };
        let patch = json!({"metadata": {"finalizers": kept, "uid": meta::uid(pod)}});
        match api.patch(&pod_kind(), &ObjectKey::of(pod), PatchType::Merge, &patch, None) {
            Err(e) if !e.is_not_found() => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// For a finished Job: deletes it once `ttlSecondsAfterFinished` has passed, or says when to
/// look again.
fn expire(api: &dyn Api, job: &Value, now: i64) -> Result<Option<u64>, ApiError> {
    let Some(ttl) = job.pointer("/spec/ttlSecondsAfterFinished").and_then(Value::as_i64) else { return Ok(None) };
    let finished = meta::job_finished(job)
        .and_then(|kind| meta::condition(job, kind))
        .and_then(|c| c.get("lastTransitionTime"))
        .and_then(Value::as_str)
        .and_then(meta::parse_rfc3339)
        .unwrap_or(now);
    let expires = finished + ttl;
    if now < expires {
        return Ok(Some(u64::try_from(expires - now).unwrap_or(0)));
    }
    let options = DeleteOptions {
        propagation: Some(Propagation::Foreground),
        precondition_uid: meta::uid(job).map(str::to_owned),
        precondition_resource_version: None,
    };
    match api.delete(&job_kind(), &ObjectKey::of(job), &options) {
        Err(e) if !e.is_not_found() => Err(e),
        _ => Ok(None),
    }
}

/// Whether a pod still runs for the Job (neither finished nor being deleted).
#[must_use]
pub fn is_active(pod: &Value) -> bool {
    !meta::pod_is_finished(pod) && !meta::is_terminating(pod)
}

/// Brings a running Job's pods and status forward, with its finished pods already counted
/// (`pods` are those still held by the tracking finalizer); `backoff` holds back new pods after
/// failures.
fn sync(api: &dyn Api, job: &Value, pods: &[Value], backoff: Option<u64>, now: i64) -> Result<Option<u64>, ApiError> {
    let mut next = job.clone();
    let mut requeue = None;
    let suspended = job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true);
    let active: Vec<&Value> = pods.iter().filter(|p| is_active(p)).collect();
    let ending = status::ending(job, active.len(), now);
    if let Some((kind, reason, message)) = ending {
        if !meta::condition_is_true(job, kind) {
            status::set_condition(&mut next, kind, "True", reason, message, now);
        }
        delete_pods(api, job, &active)?;
        if pods.is_empty() {
            let terminal = if kind == "SuccessCriteriaMet" { "Complete" } else { "Failed" };
            status::set_condition(&mut next, terminal, "True", reason, message, now);
            if terminal == "Complete" {
                next["status"]["completionTime"] = json!(meta::rfc3339(now));
            }
            record_end(api, job, terminal, reason, message);
        }
    } else if suspended {
        delete_pods(api, job, &active)?;
        if !meta::condition_is_true(job, "Suspended") {
            api.record_event(&ObjectRef::to(&job_kind(), job), EventType::Normal, "Suspended", "Job suspended");
        }
        status::set_condition(&mut next, "Suspended", "True", "JobSuspended", "Job suspended", now);
    } else {
        if meta::condition_is_true(job, "Suspended") {
            status::set_condition(&mut next, "Suspended", "False", "JobResumed", "Job resumed", now);
            api.record_event(&ObjectRef::to(&job_kind(), job), EventType::Normal, "Resumed", "Job resumed");
            next["status"]["startTime"] = json!(meta::rfc3339(now));
        } else if job.pointer("/status/startTime").is_none_or(Value::is_null) {
            next["status"]["startTime"] = json!(meta::rfc3339(now));
        }
        let held_back = scale(api, job, &active, backoff)?;
        requeue = [status::deadline_in(&next, now), held_back].into_iter().flatten().min();
    }
    let live: Vec<Value> = owned_pods(api, job)?.into_iter().filter(is_active).collect();
    status::fill_counts(&mut next, &live);
    if next.get("status") != job.get("status") {
        api.update_status(&job_kind(), &next)?;
    }
    Ok(requeue)
}

/// The Event upstream records when a Job ends: `Completed`, or the failure's reason.
fn record_end(api: &dyn Api, job: &Value, terminal: &str, reason: &str, message: &str) {
    let regarding = ObjectRef::to(&job_kind(), job);
    if terminal == "Complete" {
        api.record_event(&regarding, EventType::Normal, "Completed", "Job completed");
    } else {
        api.record_event(&regarding, EventType::Warning, reason, message);
    }
}

/// Creates the pods the Job lacks — unless `backoff` holds them back, which it returns — or
/// deletes those it has too many of.
fn scale(api: &dyn Api, job: &Value, active: &[&Value], backoff: Option<u64>) -> Result<Option<u64>, ApiError> {
    let wanted = pods::wanted_active(job, active.len());
    if active.len() > wanted {
        let mut extra: Vec<&Value> = active.to_vec();
        extra.sort_by(|a, b| meta::created(b).cmp(meta::created(a)));
        extra.truncate((active.len() - wanted).min(BURST));
        return delete_pods(api, job, &extra).map(|()| None);
    }
    let missing = (wanted - active.len()).min(BURST);
    if missing > 0 && backoff.is_some() {
        return Ok(backoff);
    }
    owned::create_pods(api, &ObjectRef::to(&job_kind(), job), &pods::to_create(job, active, missing))?;
    Ok(None)
}

fn delete_pods(api: &dyn Api, job: &Value, victims: &[&Value]) -> Result<(), ApiError> {
    let regarding = ObjectRef::to(&job_kind(), job);
    for victim in victims {
        let options =
            DeleteOptions { precondition_uid: meta::uid(victim).map(str::to_owned), ..DeleteOptions::plain() };
        match api.delete(&pod_kind(), &ObjectKey::of(victim), &options) {
            Ok(()) => {
                let message = format!("Deleted pod: {}", meta::name(victim));
                api.record_event(&regarding, EventType::Normal, "SuccessfulDelete", &message);
            }
            Err(e) if e.is_not_found() => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
