//! `StatefulSet`s, `DaemonSet`s and `PodDisruptionBudget`s through kubectl against a real
//! `capstan server` with hollow nodes: the scheduler in the server binds the pods, the hollow
//! nodes report them Running and Ready, and the controllers are the components from
//! `plugins/controllers/{statefulset,daemonset,disruption}`.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test aborts on a failed expectation")]

use std::time::{Duration, Instant};

use capstan_e2e::{eventually, json, kubectl, kubectl_fails, kubectl_stdin};
use capstan_testbed::CapstanServer;
use serde_json::Value;

fn server(nodes: &str) -> CapstanServer {
    CapstanServer::start_with(&["--hollow-nodes", nodes]).unwrap_or_else(|e| panic!("{e}"))
}

fn items(server: &CapstanServer, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["get"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["-o", "json"]);
    json(&kubectl(server, &all))["items"].as_array().cloned().unwrap_or_default()
}

fn live_pods(server: &CapstanServer, selector: &str) -> Vec<Value> {
    items(server, &["pods", "-l", selector])
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .collect()
}

fn name(object: &Value) -> String {
    object["metadata"]["name"].as_str().unwrap_or_default().to_owned()
}

fn is_ready(pod: &Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
}

fn image(pod: &Value) -> String {
    pod["spec"]["containers"][0]["image"].as_str().unwrap_or_default().to_owned()
}

fn rollout_status(server: &CapstanServer, target: &str) -> String {
    kubectl(server, &["rollout", "status", target, "--timeout=90s"])
}

fn stateful_set(name: &str, replicas: u32, image: &str) -> String {
    format!(
        r#"{{
  "apiVersion": "apps/v1", "kind": "StatefulSet",
  "metadata": {{"name": "{name}", "namespace": "default"}},
  "spec": {{
    "replicas": {replicas},
    "serviceName": "{name}",
    "selector": {{"matchLabels": {{"app": "{name}"}}}},
    "template": {{
      "metadata": {{"labels": {{"app": "{name}"}}}},
      "spec": {{"containers": [{{"name": "app", "image": "{image}"}}]}}
    }},
    "volumeClaimTemplates": [{{
      "metadata": {{"name": "data"}},
      "spec": {{"accessModes": ["ReadWriteOnce"], "resources": {{"requests": {{"storage": "1Gi"}}}}}}
    }}]
  }}
}}"#
    )
}

/// The names of the live pods of `selector`, sorted.
fn pod_names(server: &CapstanServer, selector: &str) -> Vec<String> {
    let mut names: Vec<String> = live_pods(server, selector).iter().map(name).collect();
    names.sort();
    names
}

#[test]
fn a_stateful_set_creates_pods_in_order_with_claims_and_scales_down_from_the_top() {
    let server = server("3");
    kubectl_stdin(&server, &["apply", "-f", "-"], &stateful_set("web", 3, "nginx:1"));
    // OrderedReady: whenever web-N exists, web-(N-1) is already Running and Ready.
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let pods = live_pods(&server, "app=web");
        let ready = |n: usize| pods.iter().any(|p| name(p) == format!("web-{n}") && is_ready(p));
        for n in 1..3 {
            if pods.iter().any(|p| name(p) == format!("web-{n}")) {
                assert!(ready(n - 1), "web-{n} exists before web-{} is ready", n - 1);
            }
        }
        if (0..3).all(ready) {
            break;
        }
        assert!(Instant::now() < deadline, "the StatefulSet did not reach 3 ready pods");
        std::thread::sleep(Duration::from_millis(50));
    }
    let status = rollout_status(&server, "statefulset/web");
    assert!(status.contains("roll out complete") || status.contains("rolling update complete"), "{status}");
    let events = kubectl(&server, &["get", "events", "--field-selector", "involvedObject.name=web", "-o", "json"]);
    let created: Vec<String> = json(&events)["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["reason"] == "SuccessfulCreate")
        .filter_map(|e| e["message"].as_str().map(str::to_owned))
        .filter(|m| m.starts_with("create Pod"))
        .collect();
    assert!(created.len() >= 3, "events: {created:?}");

    let pod = json(&kubectl(&server, &["get", "pod", "web-1", "-o", "json"]));
    assert_eq!(pod["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"], "web-1");
    assert_eq!(pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "1");
    assert!(pod["metadata"]["labels"]["controller-revision-hash"].as_str().is_some_and(|h| h.starts_with("web-")));
    assert_eq!(pod["spec"]["hostname"], "web-1");
    let volumes = pod["spec"]["volumes"].as_array().unwrap();
    assert!(volumes.iter().any(|v| v["persistentVolumeClaim"]["claimName"] == "data-web-1"), "{volumes:?}");
    let mut claims: Vec<String> = items(&server, &["pvc"]).iter().map(name).collect();
    claims.sort();
    assert_eq!(claims, ["data-web-0", "data-web-1", "data-web-2"]);
    let set = json(&kubectl(&server, &["get", "statefulset", "web", "-o", "json"]));
    assert_eq!(set["status"]["readyReplicas"], 3);
    assert_eq!(set["status"]["currentRevision"], set["status"]["updateRevision"]);
    assert_eq!(set["status"]["observedGeneration"], set["metadata"]["generation"]);

    kubectl(&server, &["scale", "statefulset/web", "--replicas=1"]);
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let names = pod_names(&server, "app=web");
        assert!(
            names.contains(&"web-1".to_owned()) || !names.contains(&"web-2".to_owned()),
            "web-1 went before web-2: {names:?}"
        );
        if names == ["web-0"] {
            break;
        }
        assert!(Instant::now() < deadline, "scale down did not finish: {names:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(items(&server, &["pvc"]).len(), 3, "claims are retained when scaling down by default");
    let printed = kubectl(&server, &["get", "statefulset", "web"]);
    assert!(printed.contains("1/1"), "{printed}");

    // Deleting the set collects its pods and revisions; the claims stay (whenDeleted: Retain).
    kubectl(&server, &["delete", "statefulset", "web"]);
    eventually(Duration::from_secs(30), "the set's pods and revisions collected", || {
        let revisions = items(&server, &["controllerrevisions", "-l", "app=web"]);
        (live_pods(&server, "app=web").is_empty() && revisions.is_empty()).then_some(())
    });
    assert_eq!(items(&server, &["pvc"]).len(), 3);
}

#[test]
fn a_partitioned_rolling_update_rolls_only_high_ordinals_and_undo_restores() {
    let server = server("3");
    let policy =
        r#""persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"}, "serviceName""#;
    let manifest = stateful_set("db", 3, "nginx:1").replacen(r#""serviceName""#, policy, 1);
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest);
    rollout_status(&server, "statefulset/db");
    eventually(Duration::from_mins(1), "3 ready pods", || {
        (live_pods(&server, "app=db").iter().filter(|p| is_ready(p)).count() == 3).then_some(())
    });
    let partition = r#"{"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}}}"#;
    kubectl(&server, &["patch", "statefulset", "db", "--type=merge", "-p", partition]);
    kubectl(&server, &["set", "image", "statefulset/db", "app=nginx:2"]);
    let status = rollout_status(&server, "statefulset/db");
    assert!(status.contains("partitioned roll out complete"), "{status}");
    let images = || -> Vec<(String, String)> {
        let mut pods: Vec<(String, String)> =
            live_pods(&server, "app=db").iter().map(|p| (name(p), image(p))).collect();
        pods.sort();
        pods
    };
    eventually(Duration::from_secs(30), "web-2 updated, 0 and 1 untouched", || {
        let want = [("db-0", "nginx:1"), ("db-1", "nginx:1"), ("db-2", "nginx:2")];
        (images() == want.map(|(n, i)| (n.to_owned(), i.to_owned()))).then_some(())
    });
    let set = json(&kubectl(&server, &["get", "statefulset", "db", "-o", "json"]));
    assert_eq!(set["status"]["updatedReplicas"], 1);
    assert_ne!(set["status"]["currentRevision"], set["status"]["updateRevision"]);
    let history = kubectl(&server, &["rollout", "history", "statefulset/db"]);
    assert!(history.contains('1') && history.contains('2'), "{history}");
    let first = kubectl(&server, &["rollout", "history", "statefulset/db", "--revision=1"]);
    assert!(first.contains("nginx:1"), "{first}");

    kubectl(
        &server,
        &[
            "patch",
            "statefulset",
            "db",
            "--type=merge",
            "-p",
            r#"{"spec": {"updateStrategy": {"rollingUpdate": {"partition": 0}}}}"#,
        ],
    );
    rollout_status(&server, "statefulset/db");
    eventually(Duration::from_mins(1), "every pod on nginx:2", || {
        images().iter().all(|(_, i)| i == "nginx:2").then_some(())
    });
    kubectl(&server, &["rollout", "undo", "statefulset/db"]);
    rollout_status(&server, "statefulset/db");
    eventually(Duration::from_mins(1), "every pod back on nginx:1", || {
        let all = images();
        (all.len() == 3 && all.iter().all(|(_, i)| i == "nginx:1")).then_some(())
    });
    let revisions = items(&server, &["controllerrevisions", "-l", "app=db"]);
    assert_eq!(revisions.len(), 2, "the undo reuses the first revision");

    // whenScaled: Delete removes a scaled-away ordinal's claim; whenDeleted: Delete the rest.
    kubectl(&server, &["scale", "statefulset/db", "--replicas=2"]);
    eventually(Duration::from_secs(30), "data-db-2 deleted with its ordinal", || {
        let mut claims: Vec<String> = items(&server, &["pvc"]).iter().map(name).collect();
        claims.sort();
        (claims == ["data-db-0", "data-db-1"]).then_some(())
    });
    kubectl(&server, &["delete", "statefulset", "db"]);
    eventually(Duration::from_secs(30), "the claims collected with the set", || {
        items(&server, &["pvc"]).is_empty().then_some(())
    });
}

fn daemon_set(name: &str, image: &str, node_selector: &str) -> String {
    format!(
        r#"{{
  "apiVersion": "apps/v1", "kind": "DaemonSet",
  "metadata": {{"name": "{name}", "namespace": "default"}},
  "spec": {{
    "selector": {{"matchLabels": {{"app": "{name}"}}}},
    "updateStrategy": {{"type": "RollingUpdate", "rollingUpdate": {{"maxUnavailable": 1}}}},
    "template": {{
      "metadata": {{"labels": {{"app": "{name}"}}}},
      "spec": {{"nodeSelector": {node_selector}, "containers": [{{"name": "app", "image": "{image}"}}]}}
    }}
  }}
}}"#
    )
}

/// The nodes the live pods of `selector` run on (bound by the scheduler), sorted.
fn nodes_of(server: &CapstanServer, selector: &str) -> Vec<String> {
    let mut nodes: Vec<String> =
        live_pods(server, selector).iter().filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned)).collect();
    nodes.sort();
    nodes
}

#[test]
fn a_daemon_set_runs_one_pod_per_eligible_node_and_follows_nodes() {
    let server = server("3");
    kubectl(&server, &["taint", "nodes", "hollow-node-2", "dedicated=db:NoSchedule"]);
    kubectl_stdin(&server, &["apply", "-f", "-"], &daemon_set("agent", "nginx:1", "{}"));
    let status = rollout_status(&server, "daemonset/agent");
    assert!(status.contains("successfully rolled out"), "{status}");
    assert_eq!(nodes_of(&server, "app=agent"), ["hollow-node-0", "hollow-node-1"], "none on the tainted node");
    let ds = json(&kubectl(&server, &["get", "daemonset", "agent", "-o", "json"]));
    assert_eq!(ds["status"]["desiredNumberScheduled"], 2);
    assert_eq!(ds["status"]["numberReady"], 2);
    let pod = &live_pods(&server, "app=agent")[0];
    let terms =
        &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"];
    assert_eq!(terms[0]["matchFields"][0]["key"], "metadata.name", "pinned through the scheduler: {terms}");
    assert_eq!(terms[0]["matchFields"][0]["values"][0], pod["spec"]["nodeName"]);

    kubectl(&server, &["taint", "nodes", "hollow-node-2", "dedicated-"]);
    eventually(Duration::from_secs(30), "a pod on the untainted node", || {
        (nodes_of(&server, "app=agent") == ["hollow-node-0", "hollow-node-1", "hollow-node-2"]).then_some(())
    });

    kubectl_stdin(&server, &["apply", "-f", "-"], &daemon_set("edge", "nginx:1", r#"{"role": "edge"}"#));
    rollout_status(&server, "daemonset/edge");
    assert!(nodes_of(&server, "app=edge").is_empty());
    kubectl(&server, &["label", "node", "hollow-node-1", "role=edge"]);
    eventually(Duration::from_secs(30), "a pod on the labelled node", || {
        (nodes_of(&server, "app=edge") == ["hollow-node-1"]).then_some(())
    });
    kubectl(&server, &["label", "node", "hollow-node-1", "role-"]);
    eventually(Duration::from_secs(30), "the pod gone from the unlabelled node", || {
        live_pods(&server, "app=edge").is_empty().then_some(())
    });

    let node = r#"{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "extra-node", "labels": {"kubernetes.io/hostname": "extra-node"}}}"#;
    kubectl_stdin(&server, &["apply", "-f", "-"], node);
    eventually(Duration::from_secs(30), "a pod for the added node", || {
        live_pods(&server, "app=agent").iter().any(|p| p.to_string().contains("\"extra-node\"")).then_some(())
    });
    kubectl(&server, &["delete", "node", "extra-node"]);
    eventually(Duration::from_secs(30), "the removed node's pod gone", || {
        (!live_pods(&server, "app=agent").iter().any(|p| p.to_string().contains("\"extra-node\""))).then_some(())
    });
}

#[test]
fn a_daemon_set_image_update_rolls_every_node() {
    let server = server("3");
    kubectl_stdin(&server, &["apply", "-f", "-"], &daemon_set("agent", "nginx:1", "{}"));
    rollout_status(&server, "daemonset/agent");
    kubectl(&server, &["set", "image", "daemonset/agent", "app=nginx:2"]);
    // maxUnavailable 1: never fewer than 2 of the 3 nodes with a ready pod.
    let deadline = Instant::now() + Duration::from_mins(1);
    loop {
        let pods = live_pods(&server, "app=agent");
        let ready_nodes: std::collections::BTreeSet<String> = pods
            .iter()
            .filter(|p| is_ready(p))
            .filter_map(|p| p["spec"]["nodeName"].as_str().map(str::to_owned))
            .collect();
        assert!(ready_nodes.len() >= 2, "only {ready_nodes:?} ready during the rollout");
        if pods.len() == 3 && pods.iter().all(|p| image(p) == "nginx:2" && is_ready(p)) {
            break;
        }
        assert!(Instant::now() < deadline, "the rollout did not finish");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(rollout_status(&server, "daemonset/agent").contains("successfully rolled out"));
    let ds = json(&kubectl(&server, &["get", "daemonset", "agent", "-o", "json"]));
    assert_eq!(ds["status"]["updatedNumberScheduled"], 3);
    let history = kubectl(&server, &["rollout", "history", "daemonset/agent"]);
    assert!(history.contains('2'), "{history}");
    kubectl(&server, &["rollout", "undo", "daemonset/agent"]);
    rollout_status(&server, "daemonset/agent");
    eventually(Duration::from_mins(1), "every node back on nginx:1", || {
        let pods = live_pods(&server, "app=agent");
        (pods.len() == 3 && pods.iter().all(|p| image(p) == "nginx:1")).then_some(())
    });

    kubectl(&server, &["delete", "daemonset", "agent"]);
    eventually(Duration::from_secs(30), "the DaemonSet's pods and revisions collected", || {
        let revisions = items(&server, &["controllerrevisions", "-l", "app=agent"]);
        (live_pods(&server, "app=agent").is_empty() && revisions.is_empty()).then_some(())
    });
}

#[test]
fn a_disruption_budget_reports_allowed_disruptions_and_evictions_honour_it() {
    let server = server("3");
    let deployment = r#"{
  "apiVersion": "apps/v1", "kind": "Deployment",
  "metadata": {"name": "web", "namespace": "default"},
  "spec": {
    "replicas": 3,
    "selector": {"matchLabels": {"app": "web"}},
    "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}}
  }
}"#;
    kubectl_stdin(&server, &["apply", "-f", "-"], deployment);
    rollout_status(&server, "deployment/web");
    let budget = |name: &str, field: &str| {
        format!(
            r#"{{"apiVersion": "policy/v1", "kind": "PodDisruptionBudget", "metadata": {{"name": "{name}", "namespace": "default"}}, "spec": {{{field}, "selector": {{"matchLabels": {{"app": "web"}}}}}}}}"#
        )
    };
    kubectl_stdin(&server, &["apply", "-f", "-"], &budget("web", r#""minAvailable": 2"#));
    let status = eventually(Duration::from_secs(30), "the budget's status", || {
        let pdb = json(&kubectl(&server, &["get", "pdb", "web", "-o", "json"]));
        (pdb["status"]["currentHealthy"] == 3).then(|| pdb["status"].clone())
    });
    assert_eq!(status["desiredHealthy"], 2);
    assert_eq!(status["expectedPods"], 3);
    assert_eq!(status["disruptionsAllowed"], 1);
    assert_eq!(status["conditions"][0]["type"], "DisruptionAllowed");
    assert_eq!(status["conditions"][0]["status"], "True");
    let printed = kubectl(&server, &["get", "pdb", "web"]);
    let header = printed.lines().next().unwrap_or_default();
    assert!(header.contains("ALLOWED DISRUPTIONS"), "{printed}");
    let row: Vec<&str> = printed.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(row[..4], ["web", "2", "N/A", "1"], "{printed}");

    kubectl_stdin(&server, &["apply", "-f", "-"], &budget("all", r#""maxUnavailable": 0"#));
    eventually(Duration::from_secs(30), "the strict budget's status", || {
        let pdb = json(&kubectl(&server, &["get", "pdb", "all", "-o", "json"]));
        (pdb["status"]["expectedPods"] == 3 && pdb["status"]["disruptionsAllowed"] == 0).then_some(())
    });
    let victim = name(&live_pods(&server, "app=web")[0]);
    let eviction = format!(
        r#"{{"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {{"name": "{victim}", "namespace": "default"}}}}"#
    );
    let path = format!("/api/v1/namespaces/default/pods/{victim}/eviction");
    let refused = kubectl_fails(&server, &["create", "--raw", &path, "-f", "-"], Some(&eviction));
    assert!(refused.stderr.contains("disruption budget"), "{}", refused.stderr);
}
