use capstan_plugin_sdk::controller::prelude::*;
use capstan_plugin_sdk::controller::testing::FakeCluster;
use capstan_plugin_sdk::controller::{Api, ObjectKey, kinds, meta};
use serde_json::{Value, json};

use super::replicas::{Bounds, History, Limit, PodUsage, Rules, Target, decide, propose};
use super::{hpa, pod_metrics, reconcile};

fn pod(name: &str, ready: bool, usage: Option<i128>, request: Option<i128>) -> PodUsage {
    PodUsage { name: name.into(), ready, usage, request }
}

/// (current, pods as (ready, usage m, request m), target %, expected replicas, expected utilization)
type Case<'a> = (i64, &'a [(bool, Option<i128>, Option<i128>)], i64, i64, Option<i64>);

#[test]
fn proposals_follow_the_documented_algorithm() {
    // (current, pods as (ready, usage m, request m), target %, expected replicas, expected utilization)
    // The first three rows are the worked examples of the HPA documentation ("Algorithm details"):
    // 200m used against a 100m target doubles; 50m halves; within 10 % nothing changes.
    let cases: &[Case] = &[
        (1, &[(true, Some(200), Some(100))], 100, 2, Some(200)),
        (2, &[(true, Some(50), Some(100)), (true, Some(50), Some(100))], 100, 1, Some(50)),
        (2, &[(true, Some(105), Some(100)), (true, Some(105), Some(100))], 100, 2, Some(105)),
        // 3 pods at 90 % against 50 %: ceil(1.8 * 3) = 6.
        (3, &[(true, Some(90), Some(100)), (true, Some(90), Some(100)), (true, Some(90), Some(100))], 50, 6, Some(90)),
        // Scale-up with a not-ready pod: it counts as 0 %, so 2 ready pods at 150 % and one at 0
        // against 50 %: ratio 2.0 over 3 pods = 6.
        (
            3,
            &[(true, Some(150), Some(100)), (true, Some(150), Some(100)), (false, Some(0), Some(100))],
            50,
            6,
            Some(150),
        ),
        // A pod without metrics on a scale-down counts as 100 % of its request: 2 pods at 10 % and
        // one missing against 50 %: (10+10+100)/3 = 40 % → ratio 0.8 → ceil(2.4) = 3: no change.
        (3, &[(true, Some(10), Some(100)), (true, Some(10), Some(100)), (true, None, Some(100))], 50, 3, Some(10)),
        // A pod without metrics on a scale-up counts as 0 %: 1 pod at 200 %, one missing, target
        // 100: (200+0)/2 = 100 % → within tolerance: no change.
        (2, &[(true, Some(200), Some(100)), (true, None, Some(100))], 100, 2, Some(200)),
    ];
    for (i, (current, pods, target, want, utilization)) in cases.iter().enumerate() {
        let pods: Vec<PodUsage> = pods
            .iter()
            .enumerate()
            .map(|(n, (ready, usage, request))| pod(&format!("p{n}"), *ready, *usage, *request))
            .collect();
        let proposal = propose(*current, &pods, Target::Utilization(*target)).unwrap();
        assert_eq!(proposal.replicas, *want, "case {i}");
        assert_eq!(proposal.utilization, *utilization, "case {i}");
    }
}

#[test]
fn average_value_targets_and_missing_requests() {
    let pods = [pod("a", true, Some(400), None), pod("b", true, Some(400), None)];
    // 400m per pod against 200m per pod: double.
    assert_eq!(propose(2, &pods, Target::AverageValue(200)).unwrap().replicas, 4);
    // A utilization target needs requests.
    let error = propose(2, &pods, Target::Utilization(50)).unwrap_err();
    assert!(error.contains("missing request"), "{error}");
    let none = [pod("a", true, None, Some(100))];
    assert!(propose(1, &none, Target::Utilization(50)).is_err());
}

fn bounds(min: i64, max: i64) -> Bounds {
    Bounds { min, max, up: Rules::default_up(), down: Rules::default_down() }
}

#[test]
fn decisions_stabilise_rate_limit_and_clamp() {
    let mut history = History::default();
    // Scale-up: at most double or +4 per 15 s, whichever is more: 1 → 5 (not 20).
    assert_eq!(decide(1, 20, &bounds(1, 30), &mut history, 0), (5, Limit::ScaleUpLimit));
    // Within the same 15 s the 4 pods added count: from 5, the start was 1 → limit max(2, 5) = 5.
    assert_eq!(decide(5, 20, &bounds(1, 30), &mut history, 10), (5, Limit::ScaleUpLimit));
    // After the period: 5 → 10.
    assert_eq!(decide(5, 20, &bounds(1, 30), &mut history, 30), (10, Limit::ScaleUpLimit));
    // maxReplicas holds.
    assert_eq!(decide(10, 50, &bounds(1, 12), &mut History::default(), 0), (12, Limit::TooMany));
    // minReplicas holds.
    assert_eq!(decide(3, 1, &bounds(2, 12), &mut History::default(), 0), (2, Limit::TooFew));
    // Scale-down follows the highest recommendation of the last 300 s.
    let mut history = History::default();
    assert_eq!(decide(4, 4, &bounds(1, 10), &mut history, 0).0, 4);
    assert_eq!(decide(4, 1, &bounds(1, 10), &mut history, 100).0, 4);
    assert_eq!(decide(4, 1, &bounds(1, 10), &mut history, 301).0, 1);
}

fn cluster_with(usage_milli: &[i64], replicas: i64) -> FakeCluster {
    let cluster = FakeCluster::new();
    cluster.insert(
        &kinds::deployment(),
        json!({"metadata": {"name": "web", "namespace": "default"},
               "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}},
               "status": {"replicas": replicas}}),
    );
    for (n, used) in usage_milli.iter().enumerate() {
        let name = format!("web-{n}");
        cluster.insert(
            &kinds::pod(),
            json!({"metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}},
                   "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]},
                   "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        cluster.insert(
            &pod_metrics(),
            json!({"metadata": {"name": name, "namespace": "default"},
                   "containers": [{"name": "c", "usage": {"cpu": format!("{used}m"), "memory": "1Mi"}}]}),
        );
    }
    cluster.insert(
        &hpa(),
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "h1"},
               "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                        "minReplicas": 1, "maxReplicas": 3,
                        "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}]}}),
    );
    cluster
}

fn status(cluster: &FakeCluster) -> Value {
    cluster.get(&hpa(), &ObjectKey::namespaced("default", "web")).unwrap().unwrap()["status"].clone()
}

#[test]
fn a_busy_deployment_is_scaled_up_to_max_with_status_and_event() {
    let cluster = cluster_with(&[200], 1);
    let key = ObjectKey::namespaced("default", "web");
    let again = reconcile(&cluster, &key, 1000).unwrap();
    assert_eq!(again, Some(super::SYNC_SECONDS));
    let deployment = cluster.get(&kinds::deployment(), &key).unwrap().unwrap();
    // 200 % against 50 % asks for 4; maxReplicas is 3.
    assert_eq!(deployment["spec"]["replicas"], 3);
    let status = status(&cluster);
    assert_eq!(status["desiredReplicas"], 3);
    assert_eq!(status["currentMetrics"][0]["resource"]["current"]["averageUtilization"], 200);
    assert_eq!(status["currentMetrics"][0]["resource"]["current"]["averageValue"], "200m");
    assert!(meta::condition_is_true(&json!({"status": status}), "ScalingActive"));
    assert_eq!(
        meta::condition(&json!({"status": status.clone()}), "ScalingLimited").unwrap()["reason"],
        "TooManyReplicas"
    );
    assert!(status["lastScaleTime"].is_string());
    let events = cluster.events();
    assert!(
        events.iter().any(|(reason, message)| reason == "SuccessfulRescale"
            && message == "New size: 3; reason: cpu resource utilization (percentage of request) above target"),
        "{events:?}"
    );
}

#[test]
fn an_idle_deployment_scales_down_to_the_highest_recommendation_of_the_window() {
    let cluster = cluster_with(&[5, 5, 5], 3);
    let key = ObjectKey::namespaced("default", "web");
    // 5 % against 50 % asks for 1 while 3 run. With no earlier recommendation (a restarted
    // controller, as upstream) the window holds only this one: down to 1 at once.
    reconcile(&cluster, &key, 0).unwrap();
    assert_eq!(cluster.get(&kinds::deployment(), &key).unwrap().unwrap()["spec"]["replicas"], 1);
    assert_eq!(status(&cluster)["desiredReplicas"], 1);
    // Load comes back: up to 3; then it goes again: the recommendation of 3 holds for 300 s.
    cluster.modify(&kinds::deployment(), &key, |d| d["spec"]["replicas"] = json!(3));
    reconcile(&cluster, &key, 100).unwrap();
    reconcile(&cluster, &key, 200).unwrap();
    assert_eq!(
        cluster.get(&kinds::deployment(), &key).unwrap().unwrap()["spec"]["replicas"],
        1,
        "no higher recommendation in the window"
    );
}

#[test]
fn missing_metrics_and_unsupported_types_report_scaling_inactive() {
    let cluster = cluster_with(&[], 2);
    cluster.insert(
        &kinds::pod(),
        json!({"metadata": {"name": "web-x", "namespace": "default", "labels": {"app": "web"}},
               "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]},
               "status": {"phase": "Running"}}),
    );
    let key = ObjectKey::namespaced("default", "web");
    reconcile(&cluster, &key, 0).unwrap();
    let condition = meta::condition(&json!({"status": status(&cluster)}), "ScalingActive").unwrap().clone();
    assert_eq!(condition["status"], "False");
    assert_eq!(condition["reason"], "FailedGetResourceMetric");
    assert_eq!(cluster.get(&kinds::deployment(), &key).unwrap().unwrap()["spec"]["replicas"], 2);

    cluster.modify(&hpa(), &key, |h| {
        h["spec"]["metrics"] = json!([{"type": "External", "external": {"metric": {"name": "queue"}, "target": {"type": "Value", "value": "1"}}}]);
    });
    reconcile(&cluster, &key, 0).unwrap();
    let condition = meta::condition(&json!({"status": status(&cluster)}), "ScalingActive").unwrap().clone();
    assert!(condition["message"].as_str().unwrap().contains("External"), "{condition}");
}

#[test]
fn a_second_sync_of_an_unchanged_hpa_writes_nothing() {
    // (utilisation per pod, replicas): on target, above target, and at the maximum.
    for (usage, replicas) in [(&[50_i64][..], 1), (&[200][..], 1), (&[200, 200, 200][..], 3)] {
        let cluster = cluster_with(usage, replicas);
        let key = ObjectKey::namespaced("default", "web");
        reconcile(&cluster, &key, 1000).unwrap();
        // Whatever the first sync scaled to is now the Deployment's state.
        let scaled = cluster.get(&kinds::deployment(), &key).unwrap().unwrap()["spec"]["replicas"].clone();
        cluster.modify(&kinds::deployment(), &key, |d| d["status"]["replicas"] = scaled.clone());
        reconcile(&cluster, &key, 1015).unwrap();
        let settled = status(&cluster);
        let writes = cluster.writes();
        reconcile(&cluster, &key, 1030).unwrap();
        assert_eq!(cluster.writes(), writes, "usage {usage:?} × {replicas}: nothing changed, nothing written");
        assert_eq!(status(&cluster), settled);
        for condition in settled["conditions"].as_array().unwrap() {
            assert!(condition.get("lastProbeTime").is_none(), "HPA conditions have no lastProbeTime: {condition}");
        }
    }
}

#[test]
fn a_kept_history_belongs_to_one_hpa_uid() {
    let history = History { recommendations: vec![(10, 3), (20, 4)], events: vec![(20, 1)] };
    let kept = history.encode("uid-1");
    assert_eq!(History::decode(&kept, "uid-1"), Some(history));
    assert_eq!(History::decode(&kept, "uid-2"), None, "an HPA recreated under the same name starts afresh");
    assert_eq!(History::decode("not json", "uid-1"), None);
}
