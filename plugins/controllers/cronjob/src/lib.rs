//! The CronJob controller as a Capstan component: creates a Job from a CronJob's `jobTemplate`
//! at each time its schedule (5-field cron or a `@hourly`-style macro, in `spec.timeZone`)
//! names, as kube-controller-manager 1.32 does — concurrency policies (`Allow`, `Forbid`,
//! `Replace`), `suspend`, `startingDeadlineSeconds` and missed schedules, history limits,
//! `status.active`/`lastScheduleTime`/`lastSuccessfulTime` — and asks to be called again at the
//! next scheduled time.
//!
//! Jobs are named `<cronjob>-<scheduled time in minutes since the epoch>`, so a schedule is run
//! at most once even when a reconcile repeats. Schedules are parsed by `croner`, time zones come
//! from `chrono-tz` (the IANA database compiled into the component: WASI has none).
//!
//! Start with [`reconcile`]; [`schedule`] does the time arithmetic.

use std::cmp::Ordering;

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::{
    Api, ApiError, Controller, DeleteOptions, EventType, GroupVersionKind, ListOptions, ObjectKey, ObjectRef,
    Propagation, ReconcileResult, Watches, meta,
};
use serde_json::{Value, json};

pub mod schedule;

/// The annotation a Job gets with its scheduled time, in the CronJob's time zone.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";

/// Upstream warns once more than this many start times were missed.
const TOO_MANY_MISSED: usize = 100;

/// The CronJob controller.
pub struct CronJobController;

/// The CronJob kind.
#[must_use]
pub fn cron_job_kind() -> GroupVersionKind {
    GroupVersionKind::new("batch", "v1", "CronJob")
}

/// The Job kind.
#[must_use]
pub fn job_kind() -> GroupVersionKind {
    GroupVersionKind::new("batch", "v1", "Job")
}

impl Controller for CronJobController {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn watches(&self) -> Watches {
        Watches { primary: cron_job_kind(), owned: vec![job_kind()], others: Vec::new() }
    }

    fn reconcile(&self, api: &dyn Api, key: &ObjectKey) -> ReconcileResult {
        capstan_plugin_sdk::controller::outcome(reconcile(api, key, meta::now_seconds()))
    }
}

capstan_plugin_sdk::controller!(CronJobController);

/// Reconciles the CronJob `key` at `now` (seconds since the epoch). Returns after how many
/// seconds its next schedule is due, if it has one.
pub fn reconcile(api: &dyn Api, key: &ObjectKey, now: i64) -> Result<Option<u64>, ApiError> {
    let Some(cron_job) = api.get(&cron_job_kind(), key)? else { return Ok(None) };
    if meta::is_terminating(&cron_job) {
        return Ok(None);
    }
    let uid = meta::uid(&cron_job).unwrap_or_default();
    let jobs: Vec<Value> = api
        .list(&job_kind(), &ListOptions::in_namespace(key.namespace.as_deref()))?
        .into_iter()
        .filter(|j| meta::is_controlled_by(j, uid))
        .collect();
    let mut next = cron_job.clone();
    track_jobs(api, &mut next, &jobs);
    let requeue = run_schedule(api, &mut next, now)?;
    if next.get("status") != cron_job.get("status") {
        api.update_status(&cron_job_kind(), &next)?;
    }
    prune_history(api, &cron_job, &jobs)?;
    Ok(requeue)
}

fn regarding(cron_job: &Value) -> ObjectRef {
    ObjectRef::to(&cron_job_kind(), cron_job)
}

fn active_refs(cron_job: &Value) -> Vec<Value> {
    cron_job.pointer("/status/active").and_then(Value::as_array).cloned().unwrap_or_default()
}

fn set_active(cron_job: &mut Value, active: &[Value]) {
    let status = &mut cron_job["status"];
    if !status.is_object() {
        *status = json!({});
    }
    if let Some(map) = status.as_object_mut() {
        if active.is_empty() {
            map.remove("active");
        } else {
            map.insert("active".into(), json!(active));
        }
    }
}

/// Updates `status.active` and `lastSuccessfulTime` from the CronJob's Jobs.
fn track_jobs(api: &dyn Api, cron_job: &mut Value, jobs: &[Value]) {
    let uid_of = |r: &Value| r.get("uid").and_then(Value::as_str).map(str::to_owned);
    let mut active = active_refs(cron_job);
    for job in jobs {
        let uid = meta::uid(job).map(str::to_owned);
        let listed = active.iter().any(|r| uid_of(r) == uid);
        match meta::job_finished(job) {
            None if !listed => {
                let message = format!("Saw a job that the controller did not create or forgot: {}", meta::name(job));
                api.record_event(&regarding(cron_job), EventType::Warning, "UnexpectedJob", &message);
            }
            Some(condition) if listed => {
                active.retain(|r| uid_of(r) != uid);
                let message = format!("Saw completed job: {}, condition: {condition}", meta::name(job));
                api.record_event(&regarding(cron_job), EventType::Normal, "SawCompletedJob", &message);
            }
            _ => {}
        }
        if meta::job_finished(job) == Some("Complete") {
            let completed = job.pointer("/status/completionTime").and_then(Value::as_str);
            let last = cron_job.pointer("/status/lastSuccessfulTime").and_then(Value::as_str);
            if let Some(completed) = completed.filter(|c| last.is_none_or(|l| later(c, l))) {
                cron_job["status"]["lastSuccessfulTime"] = json!(completed);
            }
        }
    }
    // A Job that no longer exists is no longer active.
    active.retain(|r| jobs.iter().any(|j| meta::uid(j).map(str::to_owned) == uid_of(r)));
    set_active(cron_job, &active);
}

fn later(a: &str, b: &str) -> bool {
    meta::parse_rfc3339(a).cmp(&meta::parse_rfc3339(b)) == Ordering::Greater
}

/// Starts the Job of the most recent unmet schedule, if due and allowed; returns the seconds
/// until the next one.
fn run_schedule(api: &dyn Api, cron_job: &mut Value, now: i64) -> Result<Option<u64>, ApiError> {
    let plan = match schedule::Schedule::of(cron_job) {
        Ok(plan) => plan,
        Err((reason, message)) => {
            api.record_event(&regarding(cron_job), EventType::Warning, reason, &message);
            return Ok(None);
        }
    };
    if cron_job.pointer("/spec/suspend").and_then(Value::as_bool) == Some(true) {
        return Ok(None);
    }
    let until_next = plan.next_after(now).map(|t| u64::try_from(t - now).unwrap_or(0));
    let deadline = cron_job.pointer("/spec/startingDeadlineSeconds").and_then(Value::as_i64);
    let earliest = cron_job
        .pointer("/status/lastScheduleTime")
        .and_then(Value::as_str)
        .or_else(|| Some(meta::created(cron_job)))
        .and_then(meta::parse_rfc3339)
        .unwrap_or(now);
    let earliest = deadline.map_or(earliest, |d| earliest.max(now - d));
    let (Some(scheduled), missed) = plan.most_recent(earliest, now) else { return Ok(until_next) };
    if missed > TOO_MANY_MISSED {
        let message = format!(
            "too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew"
        );
        api.record_event(&regarding(cron_job), EventType::Warning, "TooManyMissedTimes", &message);
    }
    if deadline.is_some_and(|d| scheduled + d < now) {
        let message = format!("Missed scheduled time to start a job: {}", meta::rfc3339(scheduled));
        api.record_event(&regarding(cron_job), EventType::Warning, "MissedSchedule", &message);
        return Ok(until_next);
    }
    let name = job_name(cron_job, scheduled);
    let active = active_refs(cron_job);
    let last = cron_job.pointer("/status/lastScheduleTime").and_then(Value::as_str).and_then(meta::parse_rfc3339);
    if last == Some(scheduled) || active.iter().any(|r| r.get("name").and_then(Value::as_str) == Some(&name)) {
        return Ok(until_next);
    }
    match cron_job.pointer("/spec/concurrencyPolicy").and_then(Value::as_str) {
        Some("Forbid") if !active.is_empty() => {
            let message = "Not starting job because prior execution is running and concurrency policy is Forbid";
            api.record_event(&regarding(cron_job), EventType::Normal, "JobAlreadyActive", message);
            return Ok(until_next);
        }
        Some("Replace") => replace_active(api, cron_job, &active)?,
        _ => {}
    }
    let job = job_from_template(cron_job, scheduled, &plan);
    match api.create(&job_kind(), &job) {
        Ok(created) => {
            let message = format!("Created job {}", meta::name(&created));
            api.record_event(&regarding(cron_job), EventType::Normal, "SuccessfulCreate", &message);
            let mut active = active_refs(cron_job);
            active.push(json!({
                "apiVersion": "batch/v1", "kind": "Job", "namespace": meta::namespace(&created),
                "name": meta::name(&created), "uid": meta::uid(&created),
                "resourceVersion": created.pointer("/metadata/resourceVersion"),
            }));
            set_active(cron_job, &active);
            cron_job["status"]["lastScheduleTime"] = json!(meta::rfc3339(scheduled));
        }
        // Created by an earlier reconcile whose status write was lost.
        Err(e) if e.is_conflict() => {}
        Err(e) => {
            let message = format!("Error creating job: {}", e.message);
            api.record_event(&regarding(cron_job), EventType::Warning, "FailedCreate", &message);
            return Err(e);
        }
    }
    Ok(until_next)
}

fn replace_active(api: &dyn Api, cron_job: &mut Value, active: &[Value]) -> Result<(), ApiError> {
    for reference in active {
        let name = reference.get("name").and_then(Value::as_str).unwrap_or_default();
        let key = ObjectKey { namespace: meta::namespace(cron_job).map(str::to_owned), name: name.to_owned() };
        delete_job(api, cron_job, &key)?;
    }
    set_active(cron_job, &[]);
    Ok(())
}

fn delete_job(api: &dyn Api, cron_job: &Value, key: &ObjectKey) -> Result<(), ApiError> {
    let options = DeleteOptions { propagation: Some(Propagation::Background), ..DeleteOptions::plain() };
    match api.delete(&job_kind(), key, &options) {
        Ok(()) => {
            let message = format!("Deleted job {}", key.name);
            api.record_event(&regarding(cron_job), EventType::Normal, "SuccessfulDelete", &message);
            Ok(())
        }
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(e),
    }
}

/// `<cronjob>-<scheduled time in minutes since the epoch>`.
#[must_use]
pub fn job_name(cron_job: &Value, scheduled: i64) -> String {
    format!("{}-{}", meta::name(cron_job), scheduled.div_euclid(60))
}

/// The Job to run for the schedule at `scheduled`.
#[must_use]
pub fn job_from_template(cron_job: &Value, scheduled: i64, plan: &schedule::Schedule) -> Value {
    let template = cron_job.pointer("/spec/jobTemplate").cloned().unwrap_or_else(|| json!({}));
    let mut metadata = json!({
        "name": job_name(cron_job, scheduled),
        "namespace": meta::namespace(cron_job),
        "ownerReferences": [meta::controller_reference(&cron_job_kind(), cron_job)],
        "labels": template.pointer("/metadata/labels").cloned().unwrap_or_else(|| json!({})),
        "annotations": template.pointer("/metadata/annotations").cloned().unwrap_or_else(|| json!({})),
    });
    metadata["annotations"][SCHEDULED_TIMESTAMP] = json!(plan.format(scheduled));
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": template.get("spec")})
}

/// Deletes the oldest finished Jobs beyond `successfulJobsHistoryLimit` (default 3) and
/// `failedJobsHistoryLimit` (default 1).
fn prune_history(api: &dyn Api, cron_job: &Value, jobs: &[Value]) -> Result<(), ApiError> {
    for (condition, field, default) in
        [("Complete", "successfulJobsHistoryLimit", 3), ("Failed", "failedJobsHistoryLimit", 1)]
    {
        let limit = usize::try_from(meta::int(cron_job, &format!("/spec/{field}"), default)).unwrap_or(0);
        let mut finished: Vec<&Value> =
            jobs.iter().filter(|j| meta::job_finished(j) == Some(condition) && !meta::is_terminating(j)).collect();
        if finished.len() <= limit {
            continue;
        }
        finished.sort_by_key(|j| {
            let started = j.pointer("/status/startTime").and_then(Value::as_str).and_then(meta::parse_rfc3339);
            (started, meta::created(j).to_owned(), meta::name(j).to_owned())
        });
        for job in &finished[..finished.len() - limit] {
            delete_job(api, cron_job, &ObjectKey::of(job))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
