use std::str::FromStr as _;

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::testing::FakeCluster;
use capstan_plugin_sdk::controller::{Api, ObjectKey, meta};
use chrono_tz::Tz;
use serde_json::{Value, json};

use super::schedule::Schedule;
use super::{SCHEDULED_TIMESTAMP, cron_job_kind, job_kind, reconcile};

/// 2026-11-18T11:06:40Z, a Wednesday.
const NOW: i64 = 1_795_000_000;

fn key() -> ObjectKey {
    ObjectKey::namespaced("default", "tick")
}

/// A CronJob created `age` seconds before [`NOW`] with `spec` over a minimal job template.
fn cron_job(cluster: &FakeCluster, spec: &Value, age: i64) -> Value {
    let mut spec = spec.clone();
    spec["jobTemplate"] = json!({
        "metadata": {"labels": {"app": "tick"}},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}},
    });
    cluster.insert(&cron_job_kind(), json!({"metadata": {"name": "tick", "namespace": "default"}, "spec": spec}));
    cluster.modify(&cron_job_kind(), &key(), |c| c["metadata"]["creationTimestamp"] = json!(meta::rfc3339(NOW - age)));
    cluster.get(&cron_job_kind(), &key()).unwrap().unwrap()
}

fn jobs(cluster: &FakeCluster) -> Vec<Value> {
    cluster.all(&job_kind()).into_iter().filter(|j| !meta::is_terminating(j)).collect()
}

fn stored(cluster: &FakeCluster) -> Value {
    cluster.get(&cron_job_kind(), &key()).unwrap().unwrap()
}

fn finish(cluster: &FakeCluster, name: &str, condition: &str, at: i64) {
    let key = ObjectKey::namespaced("default", name);
    cluster.modify(&job_kind(), &key, |j| {
        j["status"] = json!({
            "startTime": meta::rfc3339(at - 10),
            "conditions": [{"type": condition, "status": "True"}],
        });
        if condition == "Complete" {
            j["status"]["completionTime"] = json!(meta::rfc3339(at));
        }
    });
}

fn has_event(cluster: &FakeCluster, reason: &str) -> bool {
    cluster.events().iter().any(|(r, _)| r == reason)
}

#[test]
fn schedules_find_their_next_time_in_their_zone() {
    // (schedule, zone, next after NOW as RFC 3339 in the zone)
    let cases = [
        ("*/5 * * * *", "UTC", "2026-11-18T11:10:00Z"),
        ("@hourly", "UTC", "2026-11-18T12:00:00Z"),
        ("@daily", "UTC", "2026-11-19T00:00:00Z"),
        ("@weekly", "UTC", "2026-11-22T00:00:00Z"),
        ("@monthly", "UTC", "2026-12-01T00:00:00Z"),
        ("@yearly", "UTC", "2027-01-01T00:00:00Z"),
        ("30 9 * * 1-5", "UTC", "2026-11-19T09:30:00Z"),
        ("0 12 * * *", "Europe/Berlin", "2026-11-19T12:00:00+01:00"),
        ("0 12 * * *", "America/New_York", "2026-11-18T12:00:00-05:00"),
        ("0 0 1,15 * *", "Asia/Kolkata", "2026-12-01T00:00:00+05:30"),
    ];
    for (text, zone, expected) in cases {
        let schedule = Schedule::parse(text, Tz::from_str(zone).unwrap()).unwrap();
        let next = schedule.next_after(NOW).unwrap();
        assert_eq!(schedule.format(next), expected, "{text} in {zone}");
    }
    for bad in ["* * * *", "61 * * * *", "@fortnightly", ""] {
        assert!(Schedule::parse(bad, Tz::UTC).is_err(), "{bad:?} is refused");
    }
}

#[test]
fn missed_times_are_counted_up_to_the_most_recent() {
    let every_minute = Schedule::parse("* * * * *", Tz::UTC).unwrap();
    let minute = NOW - NOW % 60;
    // (earliest, most recent, count)
    let cases = [
        (NOW - 30, None, 0),
        (minute - 1, Some(minute), 1),
        (minute - 180, Some(minute), 3),
        (minute - 86_400, Some(minute), 101),
    ];
    for (earliest, recent, count) in cases {
        assert_eq!(every_minute.most_recent(earliest, NOW), (recent, count), "from {earliest}");
    }
}

#[test]
fn a_due_schedule_creates_its_job_once() {
    let cluster = FakeCluster::new();
    let owner = cron_job(&cluster, &json!({"schedule": "*/1 * * * *"}), 90);
    let requeue = reconcile(&cluster, &key(), NOW).unwrap();
    assert_eq!(requeue, Some(20), "until 11:07:00");
    let created = jobs(&cluster);
    assert_eq!(created.len(), 1);
    let job = &created[0];
    let scheduled = NOW - NOW % 60;
    assert_eq!(meta::name(job), format!("tick-{}", scheduled / 60));
    assert_eq!(meta::annotation(job, SCHEDULED_TIMESTAMP), Some("2026-11-18T11:06:00Z"));
    assert_eq!(meta::label(job, "app"), Some("tick"));
    assert!(meta::is_controlled_by(job, meta::uid(&owner).unwrap()));
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");
    let status = stored(&cluster)["status"].clone();
    assert_eq!(status["lastScheduleTime"], "2026-11-18T11:06:00Z");
    assert_eq!(status["active"][0]["name"], json!(meta::name(job)));
    reconcile(&cluster, &key(), NOW + 5).unwrap();
    assert_eq!(jobs(&cluster).len(), 1, "the same schedule runs once");
    assert!(has_event(&cluster, "SuccessfulCreate"));
}

#[test]
fn concurrency_policies_decide_about_a_running_job() {
    // (policy, jobs after the next schedule, whether the first one is still there)
    for (policy, count, first_remains) in [("Allow", 2, true), ("Forbid", 1, true), ("Replace", 1, false)] {
        let cluster = FakeCluster::new();
        cron_job(&cluster, &json!({"schedule": "* * * * *", "concurrencyPolicy": policy}), 90);
        reconcile(&cluster, &key(), NOW).unwrap();
        let first = meta::name(&jobs(&cluster)[0]).to_owned();
        reconcile(&cluster, &key(), NOW + 60).unwrap();
        let names: Vec<String> = jobs(&cluster).iter().map(|j| meta::name(j).to_owned()).collect();
        assert_eq!(names.len(), count, "{policy}");
        assert_eq!(names.contains(&first), first_remains, "{policy}");
        assert_eq!(has_event(&cluster, "JobAlreadyActive"), policy == "Forbid");
    }
}

#[test]
fn a_suspended_cron_job_starts_nothing() {
    let cluster = FakeCluster::new();
    cron_job(&cluster, &json!({"schedule": "* * * * *", "suspend": true}), 90);
    assert_eq!(reconcile(&cluster, &key(), NOW).unwrap(), None);
    assert!(jobs(&cluster).is_empty());
}

#[test]
fn finished_jobs_leave_the_active_list_and_old_ones_are_pruned() {
    let cluster = FakeCluster::new();
    let spec = json!({"schedule": "* * * * *", "successfulJobsHistoryLimit": 2, "failedJobsHistoryLimit": 1});
    cron_job(&cluster, &spec, 90);
    let mut names = Vec::new();
    for minute in 0..5 {
        let now = NOW + minute * 60;
        reconcile(&cluster, &key(), now).unwrap();
        let newest = jobs(&cluster).into_iter().map(|j| meta::name(&j).to_owned()).max().unwrap();
        finish(&cluster, &newest, if minute == 1 { "Failed" } else { "Complete" }, now + 30);
        names.push(newest);
    }
    // 11:10:55, before the next schedule.
    reconcile(&cluster, &key(), NOW + 4 * 60 + 15).unwrap();
    let left: Vec<String> = jobs(&cluster).iter().map(|j| meta::name(j).to_owned()).collect();
    assert_eq!(left, [names[1].clone(), names[3].clone(), names[4].clone()], "2 complete + 1 failed kept");
    let status = stored(&cluster)["status"].clone();
    assert!(status.get("active").is_none(), "{status}");
    assert_eq!(status["lastSuccessfulTime"], json!(meta::rfc3339(NOW + 4 * 60 + 30)));
    assert!(has_event(&cluster, "SawCompletedJob"));
}

#[test]
fn missed_schedules_are_reported() {
    // (spec beyond the schedule, age of the CronJob, event expected, whether a Job starts)
    let cases = [
        (json!({}), 86_400, "TooManyMissedTimes", true),
        (json!({"startingDeadlineSeconds": 200}), 86_400, "", true),
        (json!({"timeZone": "Mars/Olympus"}), 90, "UnknownTimeZone", false),
        (json!({"schedule": "not a schedule"}), 90, "UnparseableSchedule", false),
    ];
    for (extra, age, event, starts) in cases {
        let cluster = FakeCluster::new();
        let mut spec = json!({"schedule": "* * * * *"});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        cron_job(&cluster, &spec, age);
        reconcile(&cluster, &key(), NOW).unwrap();
        assert_eq!(!jobs(&cluster).is_empty(), starts, "{spec}");
        if event.is_empty() {
            assert!(!has_event(&cluster, "TooManyMissedTimes"), "{spec}");
        } else {
            assert!(has_event(&cluster, event), "{spec}: {:?}", cluster.events());
        }
    }
}

#[test]
fn a_manually_created_job_is_noticed_but_not_tracked() {
    let cluster = FakeCluster::new();
    let owner = cron_job(&cluster, &json!({"schedule": "0 0 1 1 *"}), 90);
    let reference = meta::controller_reference(&cron_job_kind(), &owner);
    cluster.insert(
        &job_kind(),
        json!({"metadata": {"name": "tick-manual", "namespace": "default", "ownerReferences": [reference]}}),
    );
    reconcile(&cluster, &key(), NOW).unwrap();
    assert!(has_event(&cluster, "UnexpectedJob"));
    assert!(stored(&cluster)["status"].get("active").is_none());
}
