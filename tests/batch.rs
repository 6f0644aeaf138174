//! Jobs, `CronJob`s and the pod garbage collector, through kubectl, against a real
//! `capstan server --hollow-nodes 2` (its scheduler binds the pods; hollow nodes run them, and
//! the `capstan.io/hollow-exit-after`/`-exit-code` annotations make them finish).
//!
//! Each test starts its own server; the CronJob tests wait for real minute boundaries, so run
//! with more threads than cores: `cargo test -p capstan-e2e --test batch -- --test-threads=8`.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test aborts on a failed expectation")]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use capstan_e2e::{Run, eventually, json, kubectl, kubectl_stdin};
use capstan_testbed::CapstanServer;
use serde_json::Value;

fn server() -> CapstanServer {
    CapstanServer::start_with(&["--hollow-nodes", "2"]).unwrap_or_else(|e| panic!("{e}"))
}

fn items(server: &CapstanServer, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    json(&kubectl(server, &all))["items"].as_array().cloned().unwrap_or_default()
}

fn get(server: &CapstanServer, what: &str) -> Value {
    json(&kubectl(server, &["get", what, "-o", "json"]))
}

/// A pod template whose pods exit with `exit_code` after `exit_after` seconds (or run until
/// deleted when `None`).
fn template(exit_after: Option<u32>, exit_code: i32) -> String {
    let annotations = exit_after.map_or_else(String::new, |after| {
        format!(
            r#""annotations": {{"capstan.io/hollow-exit-after": "{after}", "capstan.io/hollow-exit-code": "{exit_code}"}}"#
        )
    });
    format!(
        r#"{{"metadata": {{{annotations}}}, "spec": {{"restartPolicy": "Never", "containers": [{{"name": "work", "image": "busybox"}}]}}}}"#
    )
}

fn job(name: &str, spec: &str, template: &str) -> String {
    format!(
        r#"{{"apiVersion": "batch/v1", "kind": "Job", "metadata": {{"name": "{name}", "namespace": "default"}},
            "spec": {{{spec}, "template": {template}}}}}"#
    )
}

fn cron_job(name: &str, spec: &str, template: &str) -> String {
    format!(
        r#"{{"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {{"name": "{name}", "namespace": "default"}},
            "spec": {{{spec}, "jobTemplate": {{"spec": {{"template": {template}}}}}}}}}"#
    )
}

fn wait(server: &CapstanServer, condition: &str, what: &str) {
    let out = kubectl(server, &["wait", &format!("--for=condition={condition}"), what, "--timeout=90s"]);
    assert!(out.contains("condition met"), "{out}");
}

fn condition<'a>(object: &'a Value, kind: &str) -> Option<&'a Value> {
    object["status"]["conditions"].as_array()?.iter().find(|c| c["type"] == kind)
}

fn pods_of(server: &CapstanServer, job: &str) -> Vec<Value> {
    items(server, &["pods", "-l", &format!("batch.kubernetes.io/job-name={job}")])
}

fn gone(server: &CapstanServer, what: &str) -> bool {
    let run = Run::from(server.kubectl(&["get", what, "-o", "name"]));
    !run.ok && run.stderr.contains("NotFound")
}

fn events(server: &CapstanServer, reason: &str) -> Vec<Value> {
    items(server, &["events", "--field-selector", &format!("reason={reason}")])
}

/// Seconds of the day of an RFC 3339 UTC timestamp (the tests run within a day).
fn seconds(stamp: &str) -> u64 {
    let time = stamp.split('T').nth(1).unwrap();
    let parts: Vec<u64> =
        time.trim_end_matches('Z').split(':').map(|p| p.split('.').next().unwrap().parse().unwrap()).collect();
    parts[0] * 3600 + parts[1] * 60 + parts[2]
}

/// Seconds until the next minute starts.
fn seconds_to_next_minute() -> u64 {
    60 - SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() % 60
}

#[test]
fn a_job_runs_its_completions_in_parallel_and_completes() {
    let server = server();
    let spec = r#""completions": 3, "parallelism": 2"#;
    kubectl_stdin(&server, &["create", "-f", "-"], &job("pi", spec, &template(Some(1), 0)));
    let running = eventually(Duration::from_secs(30), "two running pods", || {
        let pods = pods_of(&server, "pi");
        (pods.iter().filter(|p| p["status"]["phase"] == "Running").count() == 2).then_some(pods)
    });
    let job_object = get(&server, "job/pi");
    let uid = job_object["metadata"]["uid"].as_str().unwrap();
    assert_eq!(job_object["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], uid);
    for pod in &running {
        let labels = &pod["metadata"]["labels"];
        assert_eq!(
            (labels["batch.kubernetes.io/controller-uid"].as_str(), labels["controller-uid"].as_str()),
            (Some(uid), Some(uid))
        );
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    }
    wait(&server, "complete", "job/pi");
    let done = get(&server, "job/pi");
    assert_eq!(done["status"]["succeeded"], 3);
    assert_eq!(condition(&done, "SuccessCriteriaMet").unwrap()["status"], "True");
    assert_eq!(condition(&done, "Complete").unwrap()["reason"], "CompletionsReached");
    assert!(done["status"]["startTime"].is_string() && done["status"]["completionTime"].is_string());
    let pods = pods_of(&server, "pi");
    assert_eq!(pods.iter().filter(|p| p["status"]["phase"] == "Succeeded").count(), 3);
    assert!(pods.iter().all(|p| p["metadata"]["finalizers"].as_array().is_none_or(Vec::is_empty)), "pods released");
    let table = kubectl(&server, &["get", "jobs"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]);
    assert!(table.contains("Complete") && table.contains("3/3"), "{table}");
}

#[test]
fn a_failing_job_stops_at_its_backoff_limit() {
    let server = server();
    kubectl_stdin(&server, &["create", "-f", "-"], &job("fails", r#""backoffLimit": 1"#, &template(Some(1), 3)));
    wait(&server, "failed", "job/fails");
    let failed = get(&server, "job/fails");
    assert_eq!(condition(&failed, "Failed").unwrap()["reason"], "BackoffLimitExceeded");
    assert_eq!(condition(&failed, "FailureTarget").unwrap()["reason"], "BackoffLimitExceeded");
    assert_eq!(failed["status"]["failed"], 2, "the first failure is retried, the second ends it");
    // The retry waits out upstream's first backoff step, 10 s after the failure.
    let mut pods = pods_of(&server, "fails");
    pods.sort_by_key(|p| p["metadata"]["creationTimestamp"].as_str().unwrap().to_owned());
    assert_eq!(pods.len(), 2);
    let failed_at = pods[0]["status"]["containerStatuses"][0]["state"]["terminated"]["finishedAt"].as_str().unwrap();
    let retried_at = pods[1]["metadata"]["creationTimestamp"].as_str().unwrap();
    assert!(seconds(retried_at) >= seconds(failed_at) + 10, "failed {failed_at}, retried {retried_at}");
    assert!(failed["status"]["completionTime"].is_null());
    assert!(kubectl(&server, &["get", "job", "fails"]).contains("Failed"));
}

#[test]
fn an_indexed_job_gives_each_pod_its_index() {
    let server = server();
    let spec = r#""completions": 3, "parallelism": 3, "completionMode": "Indexed""#;
    kubectl_stdin(&server, &["create", "-f", "-"], &job("idx", spec, &template(Some(1), 0)));
    wait(&server, "complete", "job/idx");
    let pods = pods_of(&server, "idx");
    let indexes: BTreeSet<String> = pods
        .iter()
        .map(|p| {
            let index = p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"].as_str().unwrap();
            assert_eq!(p["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"], index);
            assert_eq!(p["spec"]["hostname"], format!("idx-{index}"));
            index.to_owned()
        })
        .collect();
    assert_eq!(indexes, BTreeSet::from(["0".to_owned(), "1".to_owned(), "2".to_owned()]));
    assert_eq!(get(&server, "job/idx")["status"]["completedIndexes"], "0-2");
}

#[test]
fn the_active_deadline_fails_a_job_and_stops_its_pods() {
    let server = server();
    let spec = r#""parallelism": 2, "completions": 2, "activeDeadlineSeconds": 4"#;
    kubectl_stdin(&server, &["create", "-f", "-"], &job("slow", spec, &template(None, 0)));
    wait(&server, "failed", "job/slow");
    let failed = get(&server, "job/slow");
    assert_eq!(condition(&failed, "Failed").unwrap()["reason"], "DeadlineExceeded");
    eventually(Duration::from_secs(30), "the job's pods to be gone", || {
        pods_of(&server, "slow").is_empty().then_some(())
    });
    assert_eq!(get(&server, "job/slow")["status"]["active"], Value::Null);
}

#[test]
fn a_finished_job_is_deleted_after_its_ttl() {
    let server = server();
    let spec = r#""ttlSecondsAfterFinished": 2"#;
    kubectl_stdin(&server, &["create", "-f", "-"], &job("brief", spec, &template(Some(1), 0)));
    wait(&server, "complete", "job/brief");
    eventually(Duration::from_secs(30), "the job to be deleted", || gone(&server, "job/brief").then_some(()));
    eventually(Duration::from_secs(30), "its pods to be deleted", || {
        pods_of(&server, "brief").is_empty().then_some(())
    });
}

#[test]
fn deleting_a_job_deletes_its_pods() {
    let server = server();
    let spec = r#""parallelism": 2, "completions": 4"#;
    kubectl_stdin(&server, &["create", "-f", "-"], &job("long", spec, &template(None, 0)));
    eventually(Duration::from_secs(30), "two running pods", || {
        (pods_of(&server, "long").iter().filter(|p| p["status"]["phase"] == "Running").count() == 2).then_some(())
    });
    kubectl(&server, &["delete", "job", "long"]);
    eventually(Duration::from_secs(30), "the pods to be collected", || {
        pods_of(&server, "long").is_empty().then_some(())
    });
}

#[test]
fn a_cron_job_runs_on_schedule_keeps_its_history_and_can_be_run_by_hand() {
    let server = server();
    let spec = r#""schedule": "*/1 * * * *", "successfulJobsHistoryLimit": 1"#;
    kubectl_stdin(&server, &["create", "-f", "-"], &cron_job("tick", spec, &template(Some(1), 0)));
    // By hand: a plain Job create, owned by the CronJob.
    kubectl(&server, &["create", "job", "--from=cronjob/tick", "tick-by-hand"]);
    wait(&server, "complete", "job/tick-by-hand");
    let by_hand = get(&server, "job/tick-by-hand");
    assert_eq!(by_hand["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    let scheduled = eventually(Duration::from_secs(75), "a scheduled job", || {
        items(&server, &["jobs"]).into_iter().find(|j| j["metadata"]["name"] != "tick-by-hand")
    });
    let name = scheduled["metadata"]["name"].as_str().unwrap().to_owned();
    let stamp =
        scheduled["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].as_str().unwrap();
    let minutes: i64 = name.strip_prefix("tick-").unwrap().parse().unwrap();
    assert!(stamp.ends_with(":00Z"), "{stamp}");
    let cron = get(&server, "cronjob/tick");
    assert_eq!(cron["status"]["lastScheduleTime"], stamp, "minutes since epoch {minutes}");
    wait(&server, "complete", &format!("job/{name}"));
    // One successful Job is kept: the older one made by hand goes.
    eventually(Duration::from_secs(30), "the history to be pruned", || gone(&server, "job/tick-by-hand").then_some(()));
    assert!(!gone(&server, &format!("job/{name}")));
    let cron = eventually(Duration::from_secs(20), "lastSuccessfulTime", || {
        let cron = get(&server, "cronjob/tick");
        cron["status"]["lastSuccessfulTime"].is_string().then_some(cron)
    });
    assert!(cron["status"]["active"].is_null(), "{}", cron["status"]);
    let table = kubectl(&server, &["get", "cronjobs"]);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["NAME", "SCHEDULE", "TIMEZONE", "SUSPEND", "ACTIVE", "LAST", "SCHEDULE", "AGE"]);
    assert!(table.contains("*/1 * * * *"), "{table}");
}

#[test]
fn a_forbidding_cron_job_does_not_start_a_second_job_while_one_runs() {
    let server = server();
    let spec = r#""schedule": "* * * * *", "concurrencyPolicy": "Forbid", "timeZone": "Europe/Berlin""#;
    kubectl_stdin(&server, &["create", "-f", "-"], &cron_job("solo", spec, &template(None, 0)));
    let first = eventually(Duration::from_secs(75), "the first job", || items(&server, &["jobs"]).into_iter().next());
    let stamp = first["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].as_str().unwrap();
    assert!(stamp.ends_with("+01:00") || stamp.ends_with("+02:00"), "written in the CronJob's zone: {stamp}");
    let cron = get(&server, "cronjob/solo");
    assert_eq!(cron["status"]["active"][0]["name"], first["metadata"]["name"]);
    // Past the next scheduled minute, the first job still runs and no other started.
    std::thread::sleep(Duration::from_secs(seconds_to_next_minute() + 8));
    let jobs = items(&server, &["jobs"]);
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert!(!events(&server, "JobAlreadyActive").is_empty(), "the skipped run is reported");
}

#[test]
fn pods_bound_to_a_node_that_does_not_exist_are_collected() {
    let server = server();
    let pod = r#"{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "stranded", "namespace": "default"},
                  "spec": {"nodeName": "no-such-node", "containers": [{"name": "c", "image": "busybox"}]}}"#;
    kubectl_stdin(&server, &["create", "-f", "-"], pod);
    // Upstream's 40 s quarantine first.
    std::thread::sleep(Duration::from_secs(20));
    assert!(!gone(&server, "pod/stranded"), "kept during the grace period");
    // The quarantine is remembered per component instance: a look from another instance of the
    // pool waits one more grace period (later, never sooner).
    eventually(Duration::from_mins(2), "the pod to be collected", || gone(&server, "pod/stranded").then_some(()));
}
