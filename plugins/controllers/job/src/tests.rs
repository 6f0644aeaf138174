use std::collections::BTreeSet;

use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::testing::FakeCluster;
use capstan_plugin_sdk::controller::{Api, ObjectKey, meta};
use serde_json::{Value, json};

use super::pods::{INDEX_KEY, format_indexes, index_of};
use super::{TRACKING_FINALIZER, job_kind, pod_kind, reconcile};

const NOW: i64 = 1_795_000_000;

fn job(spec: &Value) -> Value {
    let mut spec = spec.clone();
    // As the API server labels it when it generates the selector.
    spec["template"] = json!({
        "metadata": {"labels": {"batch.kubernetes.io/job-name": "pi", "job-name": "pi"}},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]},
    });
    json!({"metadata": {"name": "pi", "namespace": "default"}, "spec": spec})
}

fn key() -> ObjectKey {
    ObjectKey::namespaced("default", "pi")
}

fn stored(cluster: &FakeCluster) -> Value {
    cluster.get(&job_kind(), &key()).unwrap().unwrap()
}

fn running(cluster: &FakeCluster) -> Vec<Value> {
    cluster.all(&pod_kind()).into_iter().filter(super::is_active).collect()
}

/// Ends the first running pod with `phase`.
fn finish_one(cluster: &FakeCluster, phase: &str) {
    let pod = running(cluster).into_iter().next().expect("a running pod");
    cluster.modify(&pod_kind(), &ObjectKey::of(&pod), |p| p["status"] = json!({"phase": phase}));
}

fn condition(job: &Value, kind: &str) -> Option<(String, String)> {
    meta::condition(job, kind)
        .map(|c| (c["status"].as_str().unwrap().to_owned(), c["reason"].as_str().unwrap().to_owned()))
}

fn started(cluster: &FakeCluster, spec: &Value) {
    cluster.insert(&job_kind(), job(spec));
    reconcile(cluster, &key(), NOW).unwrap();
}

#[test]
fn a_job_runs_parallel_pods_until_its_completions_succeed() {
    let cluster = FakeCluster::new();
    started(&cluster, &json!({"completions": 3, "parallelism": 2}));
    let pods = running(&cluster);
    assert_eq!(pods.len(), 2);
    for pod in &pods {
        assert_eq!(meta::finalizers(pod), [TRACKING_FINALIZER]);
        assert_eq!(meta::label(pod, "job-name"), Some("pi"));
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
    }
    let status = stored(&cluster)["status"].clone();
    assert_eq!((status["active"].clone(), status["startTime"].as_str()), (json!(2), Some("2026-11-18T11:06:40Z")));
    // (succeeded so far, pods running after the next reconcile)
    for (done, still_running) in [(1, 2), (2, 1), (3, 0)] {
        finish_one(&cluster, "Succeeded");
        reconcile(&cluster, &key(), NOW + 5).unwrap();
        let job = stored(&cluster);
        assert_eq!(job["status"]["succeeded"], json!(done));
        assert_eq!(running(&cluster).len(), still_running, "after {done} succeeded");
    }
    let job = stored(&cluster);
    assert_eq!(condition(&job, "SuccessCriteriaMet"), Some(("True".into(), "CompletionsReached".into())));
    assert_eq!(condition(&job, "Complete"), Some(("True".into(), "CompletionsReached".into())));
    assert_eq!(job["status"]["completionTime"], "2026-11-18T11:06:45Z");
    assert_eq!(job["status"]["uncountedTerminatedPods"], json!({}));
    assert!(cluster.all(&pod_kind()).iter().all(|p| meta::finalizers(p).is_empty()), "every pod released");
}

#[test]
fn failures_beyond_the_backoff_limit_fail_the_job() {
    // (backoffLimit, failures until FailureTarget)
    for (limit, failures) in [(0, 1), (2, 3)] {
        let cluster = FakeCluster::new();
        started(&cluster, &json!({"completions": 1, "parallelism": 1, "backoffLimit": limit}));
        for _ in 0..failures {
            finish_one(&cluster, "Failed");
            reconcile(&cluster, &key(), NOW).unwrap();
        }
        let job = stored(&cluster);
        assert_eq!(job["status"]["failed"], json!(failures), "backoffLimit {limit}");
        assert_eq!(condition(&job, "Failed"), Some(("True".into(), "BackoffLimitExceeded".into())));
        assert_eq!(condition(&job, "FailureTarget"), Some(("True".into(), "BackoffLimitExceeded".into())));
        assert!(running(&cluster).is_empty());
        assert!(job["status"].get("completionTime").is_none(), "a failed job has no completion time");
        assert!(job["status"].get("succeeded").is_none(), "zero counts are left out");
        assert!(cluster.events().iter().any(|(reason, _)| reason == "BackoffLimitExceeded"));
    }
}

#[test]
fn indexed_jobs_give_each_pod_an_index_and_complete_by_index() {
    let cluster = FakeCluster::new();
    started(&cluster, &json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed"}));
    let pods = running(&cluster);
    let indexes: BTreeSet<usize> = pods.iter().filter_map(index_of).collect();
    assert_eq!(indexes, BTreeSet::from([0, 1, 2]));
    for pod in &pods {
        let index = index_of(pod).unwrap();
        assert_eq!(meta::label(pod, INDEX_KEY), Some(index.to_string().as_str()));
        assert_eq!(pod["spec"]["hostname"], json!(format!("pi-{index}")));
    }
    // Index 1 fails: it is run again; 0 and 2 succeed.
    let by_index = |i: usize| pods.iter().find(|p| index_of(p) == Some(i)).map(ObjectKey::of).unwrap();
    cluster.modify(&pod_kind(), &by_index(1), |p| p["status"] = json!({"phase": "Failed"}));
    cluster.modify(&pod_kind(), &by_index(0), |p| p["status"] = json!({"phase": "Succeeded"}));
    cluster.modify(&pod_kind(), &by_index(2), |p| p["status"] = json!({"phase": "Succeeded"}));
    reconcile(&cluster, &key(), NOW).unwrap();
    assert_eq!(stored(&cluster)["status"]["completedIndexes"], "0,2");
    let rerun: Vec<usize> = running(&cluster).iter().filter_map(index_of).collect();
    assert_eq!(rerun, [1]);
    finish_one(&cluster, "Succeeded");
    reconcile(&cluster, &key(), NOW).unwrap();
    let job = stored(&cluster);
    assert_eq!(job["status"]["completedIndexes"], "0-2");
    assert_eq!(condition(&job, "Complete").map(|c| c.0), Some("True".into()));
}

#[test]
fn the_active_deadline_deletes_pods_and_fails_the_job() {
    let cluster = FakeCluster::new();
    started(&cluster, &json!({"completions": 2, "parallelism": 2, "activeDeadlineSeconds": 30}));
    assert_eq!(reconcile(&cluster, &key(), NOW + 10).unwrap(), Some(20), "requeued for the deadline");
    reconcile(&cluster, &key(), NOW + 30).unwrap();
    let job = stored(&cluster);
    assert_eq!(condition(&job, "FailureTarget"), Some(("True".into(), "DeadlineExceeded".into())));
    assert!(running(&cluster).is_empty(), "active pods deleted");
    assert!(meta::condition(&job, "Failed").is_none(), "Failed waits for the pods to be gone");
    reconcile(&cluster, &key(), NOW + 31).unwrap();
    let job = stored(&cluster);
    assert_eq!(condition(&job, "Failed"), Some(("True".into(), "DeadlineExceeded".into())));
    assert_eq!(job["status"]["failed"], 2, "deleted pods count as failed");
    assert!(cluster.all(&pod_kind()).is_empty(), "released pods are gone");
}

#[test]
fn suspending_deletes_pods_and_resuming_restarts_the_clock() {
    let cluster = FakeCluster::new();
    started(&cluster, &json!({"completions": 1, "parallelism": 1}));
    cluster.modify(&job_kind(), &key(), |j| j["spec"]["suspend"] = json!(true));
    reconcile(&cluster, &key(), NOW + 1).unwrap();
    reconcile(&cluster, &key(), NOW + 2).unwrap();
    assert!(running(&cluster).is_empty());
    assert_eq!(condition(&stored(&cluster), "Suspended"), Some(("True".into(), "JobSuspended".into())));
    cluster.modify(&job_kind(), &key(), |j| j["spec"]["suspend"] = json!(false));
    reconcile(&cluster, &key(), NOW + 60).unwrap();
    let job = stored(&cluster);
    assert_eq!(condition(&job, "Suspended"), Some(("False".into(), "JobResumed".into())));
    let reasons: Vec<String> = cluster.events().into_iter().map(|(reason, _)| reason).collect();
    assert!(reasons.contains(&"Suspended".to_owned()) && reasons.contains(&"Resumed".to_owned()), "{reasons:?}");
    assert_eq!(job["status"]["startTime"], json!(meta::rfc3339(NOW + 60)));
    assert_eq!(running(&cluster).len(), 1);
}

#[test]
fn a_finished_job_is_deleted_after_its_ttl() {
    let cluster = FakeCluster::new();
    started(&cluster, &json!({"completions": 1, "parallelism": 1, "ttlSecondsAfterFinished": 10}));
    finish_one(&cluster, "Succeeded");
    reconcile(&cluster, &key(), NOW).unwrap();
    // (seconds after finishing, requeue, whether the Job remains)
    for (after, requeue, remains) in [(4, Some(6), true), (10, None, false)] {
        assert_eq!(reconcile(&cluster, &key(), NOW + after).unwrap(), requeue, "{after}s");
        let exists = cluster.get(&job_kind(), &key()).unwrap().is_some_and(|j| !meta::is_terminating(&j));
        assert_eq!(exists, remains, "{after}s");
    }
}

#[test]
fn pods_of_a_deleted_job_lose_the_tracking_finalizer() {
    let cluster = FakeCluster::new();
    started(&cluster, &json!({"completions": 1, "parallelism": 1}));
    cluster.delete(&job_kind(), &key(), &capstan_plugin_sdk::controller::DeleteOptions::plain()).unwrap();
    reconcile(&cluster, &key(), NOW).unwrap();
    assert!(cluster.all(&pod_kind()).iter().all(|p| meta::finalizers(p).is_empty()));
}

#[test]
fn completed_indexes_print_as_ranges() {
    for (indexes, text) in [(vec![], ""), (vec![0], "0"), (vec![0, 1, 2, 5, 7, 8], "0-2,5,7-8")] {
        let set: BTreeSet<usize> = indexes.into_iter().collect();
        assert_eq!(format_indexes(&set), text);
        let job = json!({"status": {"completedIndexes": text}});
        assert_eq!(super::pods::completed_indexes(&job), set);
    }
}

#[test]
fn failed_pods_are_replaced_after_an_exponential_backoff() {
    let failed_at = |seconds: i64| json!({"status": {"phase": "Failed", "containerStatuses": [{"state": {"terminated": {"finishedAt": meta::rfc3339(seconds)}}}]}});
    let succeeded_at = |seconds: i64| {
        let mut pod = failed_at(seconds);
        pod["status"]["phase"] = json!("Succeeded");
        pod
    };
    // (pods, seconds to wait at NOW)
    let cases = [
        (vec![], None),
        (vec![failed_at(NOW - 4)], Some(6)),
        (vec![failed_at(NOW - 30), failed_at(NOW - 4)], Some(16)),
        (vec![failed_at(NOW - 30), failed_at(NOW - 20), failed_at(NOW - 4)], Some(36)),
        (vec![failed_at(NOW - 60)], None),
        (vec![failed_at(NOW - 8), succeeded_at(NOW - 5)], None),
        // Capped at 6 minutes after the last failure (NOW - 89).
        ((0..12).map(|i| failed_at(NOW - 100 + i)).collect(), Some(271)),
    ];
    for (pods, wait) in cases {
        assert_eq!(super::pods::backoff_remaining(&pods, NOW), wait, "{pods:?}");
    }
    // A reconcile in the backoff creates nothing and asks to come back.
    let cluster = FakeCluster::new();
    started(&cluster, &json!({"completions": 1, "parallelism": 1}));
    let pod = running(&cluster).remove(0);
    cluster.modify(&pod_kind(), &ObjectKey::of(&pod), |p| p["status"] = failed_at(NOW)["status"].clone());
    assert_eq!(reconcile(&cluster, &key(), NOW + 3).unwrap(), Some(7));
    assert!(running(&cluster).is_empty());
    reconcile(&cluster, &key(), NOW + 10).unwrap();
    assert_eq!(running(&cluster).len(), 1, "replaced once the backoff passed");
}
