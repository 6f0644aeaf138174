//! The controllers, through kubectl, against a real `capstan server` with hollow nodes:
//! Deployment → ReplicaSet → pods, scaling, rolling updates, undo, garbage collection.
//!
//! No scheduler runs in `capstan server` yet, so the pod templates here bind themselves
//! (`spec.nodeName: hollow-node-0`); the hollow node then reports the pods Running and Ready.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test aborts on a failed expectation")]

use std::time::{Duration, Instant};

use capstan_e2e::{eventually, json, kubectl, kubectl_stdin};
use capstan_testbed::CapstanServer;

fn server() -> CapstanServer {
    CapstanServer::start_with(&["--hollow-nodes", "2"]).unwrap_or_else(|e| panic!("{e}"))
}

fn deployment(name: &str, replicas: u32, image: &str, max_surge: &str, max_unavailable: &str) -> String {
    format!(
        r#"{{
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {{"name": "{name}", "namespace": "default"}},
  "spec": {{
    "replicas": {replicas},
    "selector": {{"matchLabels": {{"app": "{name}"}}}},
    "strategy": {{"type": "RollingUpdate", "rollingUpdate": {{"maxSurge": {max_surge}, "maxUnavailable": {max_unavailable}}}}},
    "template": {{
      "metadata": {{"labels": {{"app": "{name}"}}}},
      "spec": {{"nodeName": "hollow-node-0", "containers": [{{"name": "app", "image": "{image}"}}]}}
    }}
  }}
}}"#
    )
}

fn items(server: &CapstanServer, args: &[&str]) -> Vec<serde_json::Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    json(&kubectl(server, &all))["items"].as_array().cloned().unwrap_or_default()
}

fn live_pods(server: &CapstanServer, selector: &str) -> Vec<serde_json::Value> {
    items(server, &["pods", "-l", selector])
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn rollout_status(server: &CapstanServer, name: &str) -> String {
    kubectl(server, &["rollout", "status", &format!("deployment/{name}"), "--timeout=90s"])
}

#[test]
fn a_deployment_creates_a_replica_set_and_its_pods_and_scales() {
    let server = server();
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment("web", 3, "nginx:1", "1", "0"));
    assert!(rollout_status(&server, "web").contains("successfully rolled out"));
    let replica_sets = items(&server, &["replicasets", "-l", "app=web"]);
    assert_eq!(replica_sets.len(), 1);
    let rs = &replica_sets[0];
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    assert_eq!(rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "1");
    assert_eq!(live_pods(&server, "app=web").len(), 3);
    let d = json(&kubectl(&server, &["get", "deployment", "web", "-o", "json"]));
    assert_eq!(d["status"]["availableReplicas"], 3);
    assert_eq!(d["status"]["observedGeneration"], d["metadata"]["generation"]);

    kubectl(&server, &["scale", "deployment/web", "--replicas=5"]);
    rollout_status(&server, "web");
    eventually(Duration::from_secs(30), "5 pods", || (live_pods(&server, "app=web").len() == 5).then_some(()));
    kubectl(&server, &["scale", "deployment/web", "--replicas=1"]);
    eventually(Duration::from_secs(30), "1 pod", || (live_pods(&server, "app=web").len() == 1).then_some(()));
    let events = kubectl(&server, &["get", "events", "-o", "json"]);
    assert!(events.contains("ScalingReplicaSet") && events.contains("SuccessfulCreate"), "controllers record Events");
}

#[test]
fn set_image_rolls_over_within_max_unavailable_and_undo_restores() {
    let server = server();
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment("api", 4, "nginx:1", "1", "1"));
    rollout_status(&server, "api");
    kubectl(&server, &["set", "image", "deployment/api", "app=nginx:2"]);
    // While it rolls, at least replicas - maxUnavailable pods stay ready.
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let d = json(&kubectl(&server, &["get", "deployment", "api", "-o", "json"]));
        let ready = live_pods(&server, "app=api")
            .iter()
            .filter(|p| {
                p["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
            })
            .count();
        assert!(ready >= 3, "only {ready} pods ready during the rollout");
        if d["status"]["updatedReplicas"] == 4 && d["status"]["replicas"] == 4 && d["status"]["availableReplicas"] == 4
        {
            break;
        }
        assert!(Instant::now() < deadline, "the rollout did not finish: {}", d["status"]);
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rollout_status(&server, "api").contains("successfully rolled out"));
    let images: Vec<String> = live_pods(&server, "app=api")
        .iter()
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap().to_owned())
        .collect();
    assert!(images.iter().all(|i| i == "nginx:2"), "{images:?}");
    let history = kubectl(&server, &["rollout", "history", "deployment/api"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");

    kubectl(&server, &["rollout", "undo", "deployment/api"]);
    rollout_status(&server, "api");
    eventually(Duration::from_mins(1), "pods back on nginx:1", || {
        let pods = live_pods(&server, "app=api");
        (pods.len() == 4 && pods.iter().all(|p| p["spec"]["containers"][0]["image"] == "nginx:1")).then_some(())
    });
    assert_eq!(items(&server, &["replicasets", "-l", "app=api"]).len(), 2, "undo reuses the first ReplicaSet");
    let d = json(&kubectl(&server, &["get", "deployment", "api", "-o", "json"]));
    assert_eq!(d["metadata"]["annotations"]["deployment.kubernetes.io/revision"], "3");
}

#[test]
fn deleting_a_deployment_collects_its_replica_sets_and_pods_unless_orphaned() {
    let server = server();
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment("gone", 2, "nginx:1", "1", "0"));
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment("kept", 2, "nginx:1", "1", "0"));
    rollout_status(&server, "gone");
    rollout_status(&server, "kept");

    kubectl(&server, &["delete", "deployment", "gone"]);
    eventually(Duration::from_mins(1), "the ReplicaSet and pods of `gone` collected", || {
        (items(&server, &["replicasets", "-l", "app=gone"]).is_empty() && live_pods(&server, "app=gone").is_empty())
            .then_some(())
    });

    kubectl(&server, &["delete", "deployment", "kept", "--cascade=orphan"]);
    eventually(Duration::from_secs(30), "the orphaned Deployment gone", || {
        items(&server, &["deployments"]).iter().all(|d| d["metadata"]["name"] != "kept").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let replica_sets = items(&server, &["replicasets", "-l", "app=kept"]);
    assert_eq!(replica_sets.len(), 1, "the ReplicaSet survives");
    assert!(replica_sets[0]["metadata"]["ownerReferences"].as_array().is_none_or(Vec::is_empty), "and lost its owner");
    assert_eq!(live_pods(&server, "app=kept").len(), 2, "its pods survive");
}
