//! The controllers, through kubectl, against a real `capstan server` with hollow nodes:
//! Deployment → ReplicaSet → pods, scaling, rolling updates, undo, garbage collection.
//!
//! No scheduler runs in `capstan server` yet, so the pod templates here bind themselves
//! (`spec.nodeName: hollow-node-0`); the hollow node then reports the pods Running and Ready.

#![allow(clippy::expect_used, clippy::unwrap_used, reason = "a test aborts on a failed expectation")]

use std::time::{Duration, Instant};

use capstan_e2e::{eventually, json, kubectl, kubectl_stdin, point_plugin_at, rebuilt};
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

    // The controllers' work and their components' calls are on the API server's /metrics.
    let metrics = kubectl(&server, &["get", "--raw", "/metrics"]);
    let value = |series: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
            .unwrap_or_else(|| panic!("no {series} in /metrics"))
    };
    assert!(value(r#"capstan_controller_reconciles_total{controller="replicaset"}"#) >= 3.0);
    assert!(value(r#"capstan_controller_queue_depth{controller="deployment"}"#) >= 0.0);
    assert!(value(r#"capstan_plugin_calls_total{plugin="replicaset",world="controller"}"#) >= 3.0);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("capstan_plugin_calls_total{") && l.contains(r#"world="scheduler-plugin""#)),
        "the scheduler's components are on /metrics"
    );
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

/// The controller Plugin objects the server created for its default controllers.
fn controller_plugin(server: &CapstanServer, name: &str) -> serde_json::Value {
    eventually(Duration::from_mins(1), &format!("Plugin {name} loaded"), || {
        let run = server.kubectl(&["get", "plugins", name, "-o", "json"]);
        let plugin: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_default();
        (plugin["status"]["state"] == "Loaded").then_some(plugin)
    })
}

#[test]
fn the_deployment_controller_is_replaced_while_a_deployment_scales_to_200() {
    let server = CapstanServer::start_with(&["--hollow-nodes", "3"]).unwrap_or_else(|e| panic!("{e}"));
    let before = controller_plugin(&server, "deployment");
    let listed = kubectl(&server, &["get", "plugins", "-l", "capstan.io/builtin=true"]);
    assert_eq!(before["spec"]["kind"], "controller");
    assert_eq!(before["spec"]["component"]["builtin"], "deployment-controller");
    for name in ["deployment", "replicaset", "garbage-collector-pods"] {
        assert!(listed.contains(name), "kubectl get plugins lists the {name} controller:\n{listed}");
    }
    let original = capstan_testbed::component_path("deployment-controller").unwrap_or_else(|e| panic!("{e}"));
    let original = std::fs::read(original).expect("the deployment controller's component");
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("deployment-v2.wasm");
    std::fs::write(&path, rebuilt(&original, "v2")).expect("the rebuilt component written");

    let manifest = r#"{"apiVersion": "apps/v1", "kind": "Deployment",
      "metadata": {"name": "big", "namespace": "default"},
      "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "big"}},
        "template": {"metadata": {"labels": {"app": "big"}},
          "spec": {"containers": [{"name": "app", "image": "nginx:1"}]}}}}"#;
    kubectl_stdin(&server, &["apply", "-f", "-"], manifest);
    kubectl(&server, &["scale", "deployment/big", "--replicas=200"]);
    // Replace the component while the controllers are busy creating pods.
    eventually(Duration::from_secs(30), "the scale-up under way", || {
        (live_pods(&server, "app=big").len() >= 20).then_some(())
    });
    point_plugin_at(&server, "deployment", &path);
    let after = eventually(Duration::from_mins(1), "the new build serving", || {
        let plugin = controller_plugin(&server, "deployment");
        (plugin["status"]["digest"] != before["status"]["digest"]).then_some(plugin)
    });
    assert!(after["status"]["lastError"].is_null(), "{}", after["status"]);

    let out = kubectl(&server, &["rollout", "status", "deployment/big", "--timeout=180s"]);
    assert!(out.contains("successfully rolled out"), "{out}");
    // Settle, then count: exactly 200 pods and a single ReplicaSet, however the reload fell.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(live_pods(&server, "app=big").len(), 200);
    assert_eq!(items(&server, &["replicasets", "-l", "app=big"]).len(), 1, "no duplicate ReplicaSet");
    let d = json(&kubectl(&server, &["get", "deployment", "big", "-o", "json"]));
    assert_eq!(d["status"]["availableReplicas"], 200, "{}", d["status"]);
    assert_eq!(d["status"]["observedGeneration"], d["metadata"]["generation"]);
}

#[test]
fn a_controller_component_that_cannot_load_leaves_the_serving_one_and_a_deleted_plugin_stops_it() {
    let server = server();
    let before = controller_plugin(&server, "replicaset");
    let dir = tempfile::tempdir().expect("a temp dir");
    let path = dir.path().join("broken.wasm");
    std::fs::write(&path, b"\0asm not really").expect("a broken component written");
    point_plugin_at(&server, "replicaset", &path);
    let failed = eventually(Duration::from_secs(30), "the load refused", || {
        let plugin = json(&kubectl(&server, &["get", "plugin", "replicaset", "-o", "json"]));
        (plugin["status"]["state"] == "Failed").then_some(plugin)
    });
    assert!(failed["status"]["lastError"].as_str().is_some_and(|e| !e.is_empty()), "{}", failed["status"]);
    assert_eq!(failed["status"]["digest"], before["status"]["digest"], "the previous build still serves");
    // ... and it does serve: a Deployment still gets its pods.
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment("still", 2, "nginx:1", "1", "0"));
    assert!(rollout_status(&server, "still").contains("successfully rolled out"));

    // Without its Plugin the ReplicaSet controller stops: scaling up creates no pods.
    kubectl(&server, &["delete", "plugin", "replicaset"]);
    std::thread::sleep(Duration::from_secs(2));
    kubectl(&server, &["scale", "deployment/still", "--replicas=4"]);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(live_pods(&server, "app=still").len(), 2, "no ReplicaSet controller, no new pods");
}

#[test]
fn a_node_that_stops_heartbeating_goes_unknown_and_its_pods_are_evicted_and_replaced() {
    let server = CapstanServer::start_with(&["--hollow-nodes", "1"]).unwrap_or_else(|e| panic!("{e}"));
    // A second node from a separate agent process, which the test then kills. (Hollow nodes
    // renew their Leases every 10 s; the grace period must be longer.)
    let binary = capstan_testbed::capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("https://127.0.0.1:{}", server.port());
    let agent = std::process::Command::new(binary)
        .args(["agent", "--server", &url, "--ca-file"])
        .arg(server.dir().join("data/pki/ca.crt"))
        .args(["--hollow", "1", "--hollow-node-prefix", "remote-", "--data-dir"])
        .arg(server.dir().join("agent"))
        .env("CAPSTAN_TOKEN", server.admin_token())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start capstan agent: {e}"));
    let mut agent = KillOnDrop(agent);
    controller_plugin(&server, "node-lifecycle");
    let patch = r#"{"spec": {"config": {"nodeMonitorGracePeriodSeconds": 20}}}"#;
    kubectl(&server, &["patch", "plugin", "node-lifecycle", "--type=merge", "-p", patch]);
    // Pods spread over both nodes: each asks for 2 of a hollow node's 8 CPUs (so one node can
    // take all four); they tolerate being unreachable for 2 s.
    let manifest = r#"{"apiVersion": "apps/v1", "kind": "Deployment",
      "metadata": {"name": "spread", "namespace": "default"},
      "spec": {"replicas": 4, "selector": {"matchLabels": {"app": "spread"}},
        "template": {"metadata": {"labels": {"app": "spread"}},
          "spec": {"containers": [{"name": "app", "image": "nginx:1", "resources": {"requests": {"cpu": "2"}}}],
                   "tolerations": [{"key": "node.kubernetes.io/unreachable", "operator": "Exists",
                                    "effect": "NoExecute", "tolerationSeconds": 2}]}}}}"#;
    kubectl_stdin(&server, &["apply", "-f", "-"], manifest);
    assert!(rollout_status(&server, "spread").contains("successfully rolled out"));
    let on_remote = |pods: &[serde_json::Value]| pods.iter().filter(|p| p["spec"]["nodeName"] == "remote-0").count();
    let doomed = on_remote(&live_pods(&server, "app=spread"));
    assert!(doomed >= 1, "the least allocated node got pods too");

    agent.stop();
    let node = eventually(Duration::from_mins(1), "remote-0 Unknown", || {
        let node = json(&kubectl(&server, &["get", "node", "remote-0", "-o", "json"]));
        let ready = node["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned())
            .unwrap_or_default();
        let tainted = node["spec"]["taints"].to_string().contains("node.kubernetes.io/unreachable");
        (ready["status"] == "Unknown" && tainted).then_some(node)
    });
    let taints = node["spec"]["taints"].to_string();
    assert!(taints.contains("NoExecute") && taints.contains("NoSchedule"), "{taints}");
    let listed = kubectl(&server, &["get", "nodes"]);
    assert!(listed.lines().any(|l| l.starts_with("remote-0") && l.contains("NotReady")), "{listed}");

    // Evicted after their 2 s, replaced on the node that still heartbeats.
    let replaced = eventually(Duration::from_mins(1), "4 pods on hollow-node-0", || {
        let pods = live_pods(&server, "app=spread");
        (pods.len() == 4 && on_remote(&pods) == 0 && pods.iter().all(|p| p["status"]["phase"] == "Running"))
            .then_some(pods)
    });
    assert!(replaced.iter().all(|p| p["spec"]["nodeName"] == "hollow-node-0"));
    let events = kubectl(&server, &["get", "events", "--field-selector", "reason=TaintManagerEviction"]);
    assert_eq!(events.matches("Marking for deletion Pod default/spread-").count(), doomed, "{events}");
}

/// A child process killed when the test ends, however it ends.
struct KillOnDrop(std::process::Child);

impl KillOnDrop {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn a_service_gets_endpoint_slices_and_endpoints_that_follow_its_ready_pods() {
    let server = server();
    let manifest = r#"{"apiVersion": "v1", "kind": "Service",
      "metadata": {"name": "front", "namespace": "default"},
      "spec": {"selector": {"app": "front"}, "ports": [{"name": "http", "port": 80, "targetPort": "web"}]}}"#;
    kubectl_stdin(&server, &["apply", "-f", "-"], manifest);
    let front = deployment("front", 3, "nginx:1", "1", "0")
        .replace(r#""image": "nginx:1"}"#, r#""image": "nginx:1", "ports": [{"name": "web", "containerPort": 8080}]}"#);
    kubectl_stdin(&server, &["apply", "-f", "-"], &front);
    assert!(rollout_status(&server, "front").contains("successfully rolled out"));
    let ips = |pods: &[serde_json::Value]| {
        let mut ips: Vec<String> =
            pods.iter().map(|p| p["status"]["podIP"].as_str().unwrap_or_default().to_owned()).collect();
        ips.sort();
        ips
    };
    let ready_in_slices = || {
        let mut ips: Vec<String> = items(&server, &["endpointslices", "-l", "kubernetes.io/service-name=front"])
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .filter(|e| e["conditions"]["ready"] == true)
            .filter_map(|e| e["addresses"][0].as_str().map(str::to_owned))
            .collect();
        ips.sort();
        ips
    };
    let expected = ips(&live_pods(&server, "app=front"));
    eventually(Duration::from_secs(30), "3 ready endpoints", || (ready_in_slices() == expected).then_some(()));
    let slice = &items(&server, &["endpointslices", "-l", "kubernetes.io/service-name=front"])[0];
    assert_eq!(slice["ports"][0]["port"], 8080, "the named target port resolved: {slice}");
    assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
    let listed = kubectl(&server, &["get", "endpoints", "front"]);
    for ip in &expected {
        assert!(listed.contains(&format!("{ip}:8080")), "kubectl get endpoints shows {ip}:8080:\n{listed}");
    }

    kubectl(&server, &["scale", "deployment/front", "--replicas=1"]);
    let remaining = eventually(Duration::from_secs(30), "1 pod left", || {
        let pods = live_pods(&server, "app=front");
        (pods.len() == 1).then_some(pods)
    });
    let expected = ips(&remaining);
    eventually(Duration::from_secs(30), "1 ready endpoint", || (ready_in_slices() == expected).then_some(()));
    eventually(Duration::from_secs(30), "Endpoints with 1 address", || {
        let ep = json(&kubectl(&server, &["get", "endpoints", "front", "-o", "json"]));
        (ep["subsets"][0]["addresses"].as_array().map(Vec::len) == Some(1)).then_some(())
    });

    kubectl(&server, &["delete", "service", "front"]);
    eventually(Duration::from_secs(30), "the slices and Endpoints gone", || {
        let slices = items(&server, &["endpointslices", "-l", "kubernetes.io/service-name=front"]);
        let endpoints = server.kubectl(&["get", "endpoints", "front"]);
        (slices.is_empty() && !endpoints.status.success()).then_some(())
    });
}

#[test]
fn every_namespace_gets_a_default_service_account_and_the_root_ca() {
    let server = server();
    kubectl(&server, &["create", "namespace", "team"]);
    eventually(Duration::from_secs(30), "the default ServiceAccount", || {
        server.kubectl(&["get", "serviceaccount", "default", "-n", "team"]).status.success().then_some(())
    });
    let ca = eventually(Duration::from_secs(30), "kube-root-ca.crt", || {
        let run = server.kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", "team", "-o", "json"]);
        let map: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap_or_default();
        map["data"]["ca.crt"].as_str().map(str::to_owned)
    });
    let expected = std::fs::read_to_string(server.dir().join("data/pki/ca.crt")).unwrap_or_default();
    assert_eq!(ca, expected, "the cluster CA is published");
    kubectl(&server, &["delete", "serviceaccount", "default", "-n", "team"]);
    std::thread::sleep(Duration::from_millis(500));
    eventually(Duration::from_secs(30), "the default ServiceAccount back", || {
        server.kubectl(&["get", "serviceaccount", "default", "-n", "team"]).status.success().then_some(())
    });

    // kubectl create token: a token that authenticates as the account, until it expires.
    let token = kubectl(&server, &["create", "token", "default", "-n", "team", "--duration=15m"]);
    let token = token.trim();
    assert_eq!(token.split('.').count(), 3, "a JWT: {token}");
    let as_account = |token: &str, args: &[&str]| {
        std::process::Command::new("kubectl")
            .args(["--kubeconfig", "/dev/null", "--server", &format!("https://127.0.0.1:{}", server.port())])
            .arg(format!("--certificate-authority={}", server.dir().join("data/pki/ca.crt").display()))
            .args(["--token", token])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run kubectl: {e}"))
    };
    let listed = as_account(token, &["get", "serviceaccounts", "-n", "team", "-o", "name"]);
    assert!(listed.status.success(), "{}", String::from_utf8_lossy(&listed.stderr));
    assert_eq!(String::from_utf8_lossy(&listed.stdout).trim(), "serviceaccount/default");
    let mut forged = token.to_owned();
    forged.pop();
    let refused = as_account(&forged, &["get", "pods", "-n", "team"]);
    assert!(!refused.status.success(), "a forged token is refused");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("Unauthorized"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let short = server.kubectl(&["create", "token", "default", "-n", "team", "--duration=1m"]);
    assert!(
        String::from_utf8_lossy(&short.stderr).contains("may not specify a duration less than 10 minutes"),
        "{}",
        String::from_utf8_lossy(&short.stderr)
    );
    let missing = server.kubectl(&["create", "token", "nobody", "-n", "team"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

#[test]
fn deleting_a_namespace_removes_everything_in_it_then_the_namespace() {
    let server = server();
    kubectl(&server, &["create", "namespace", "team"]);
    kubectl(&server, &["create", "namespace", "keep"]);
    let manifest =
        deployment("web", 2, "busybox", "1", "0").replace("\"namespace\": \"default\"", "\"namespace\": \"team\"");
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest);
    kubectl(&server, &["create", "configmap", "settings", "-n", "team", "--from-literal=a=1"]);
    kubectl(&server, &["create", "secret", "generic", "creds", "-n", "team", "--from-literal=p=2"]);
    kubectl(&server, &["create", "configmap", "settings", "-n", "keep", "--from-literal=a=1"]);
    // Something else holds one ConfigMap: the namespace waits for it.
    kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "held", "namespace": "team", "finalizers": ["example.com/hold"]}}"#,
    );
    eventually(Duration::from_secs(30), "2 running pods in team", || {
        (live_pods_in(&server, "team").len() == 2).then_some(())
    });

    kubectl(&server, &["delete", "namespace", "team", "--wait=false"]);
    let namespace = eventually(Duration::from_secs(30), "the namespace waiting for the held ConfigMap", || {
        let ns = json(&kubectl(&server, &["get", "namespace", "team", "-o", "json"]));
        let remaining = ns["status"]["conditions"]
            .as_array()
            .and_then(|c| c.iter().find(|c| c["type"] == "NamespaceContentRemaining").cloned())?;
        (remaining["message"] == "Some resources are remaining: configmaps. has 1 resource instances").then_some(ns)
    });
    assert_eq!(namespace["status"]["phase"], "Terminating");
    assert_eq!(namespace["spec"]["finalizers"], serde_json::json!(["kubernetes"]));
    let refused = capstan_e2e::kubectl_fails(&server, &["create", "configmap", "late", "-n", "team"], None);
    assert!(refused.stderr.contains("because it is being terminated"), "{}", refused.stderr);
    // Everything else went through the API: pods, the Deployment and its ReplicaSet, the Secret.
    for kind in ["pods", "deployments", "replicasets", "secrets"] {
        assert!(items(&server, &[kind, "-n", "team"]).is_empty(), "{kind} left in team");
    }

    kubectl(
        &server,
        &["patch", "configmap", "held", "-n", "team", "--type=merge", "-p", r#"{"metadata":{"finalizers":null}}"#],
    );
    eventually(Duration::from_secs(30), "the namespace gone", || {
        (!server.kubectl(&["get", "namespace", "team"]).status.success()).then_some(())
    });
    assert_eq!(items(&server, &["configmaps", "-n", "keep", "--field-selector", "metadata.name=settings"]).len(), 1);
    // Without anything holding it, a namespace goes as soon as it is emptied; `kubectl delete`
    // waits for that.
    let started = Instant::now();
    kubectl(&server, &["delete", "namespace", "keep", "--timeout=30s"]);
    assert!(!server.kubectl(&["get", "namespace", "keep"]).status.success());
    println!("namespace keep deleted in {:?}", started.elapsed());
}

fn live_pods_in(server: &CapstanServer, namespace: &str) -> Vec<serde_json::Value> {
    items(server, &["pods", "-n", namespace])
        .into_iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null() && p["status"]["phase"] == "Running")
        .collect()
}

#[test]
fn a_replication_controller_keeps_its_pods_scales_and_is_collected() {
    let server = server();
    let rc = r#"{"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "legacy"},
      "spec": {"replicas": 3, "selector": {"app": "legacy"},
        "template": {"metadata": {"labels": {"app": "legacy"}},
          "spec": {"nodeName": "hollow-node-0", "containers": [{"name": "app", "image": "busybox"}]}}}}"#;
    kubectl_stdin(&server, &["apply", "-f", "-"], rc);
    eventually(Duration::from_secs(30), "3 running pods", || {
        (live_pods(&server, "app=legacy").len() == 3).then_some(())
    });
    let pod = &live_pods(&server, "app=legacy")[0];
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "ReplicationController");
    eventually(Duration::from_secs(30), "status.readyReplicas 3", || {
        let rc = json(&kubectl(&server, &["get", "rc", "legacy", "-o", "json"]));
        (rc["status"]["readyReplicas"] == 3).then_some(())
    });
    kubectl(&server, &["scale", "rc/legacy", "--replicas=1"]);
    eventually(Duration::from_secs(30), "1 pod", || (live_pods(&server, "app=legacy").len() == 1).then_some(()));
    kubectl(&server, &["delete", "rc", "legacy"]);
    eventually(Duration::from_secs(30), "the pods collected", || {
        items(&server, &["pods", "-l", "app=legacy"]).is_empty().then_some(())
    });
}

#[test]
fn stopping_a_server_while_controllers_work_prints_no_panic() {
    let server = CapstanServer::start_capturing_stderr(&["--hollow-nodes", "1"]).unwrap_or_else(|e| panic!("{e}"));
    kubectl(&server, &["create", "namespace", "busy-0"]);
    eventually(Duration::from_secs(30), "the default ServiceAccount", || {
        server.kubectl(&["get", "serviceaccount", "default", "-n", "busy-0"]).status.success().then_some(())
    });
    // Keep the serviceaccount, garbage-collector and ReplicaSet workers reconciling while the
    // server gets SIGTERM.
    for n in 1..=10 {
        kubectl(&server, &["create", "namespace", &format!("busy-{n}")]);
    }
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment("busy", 30, "nginx", "1", "0"));
    let stderr = server.stop_with_stderr();
    assert!(!stderr.contains("panicked"), "a panic at shutdown:\n{stderr}");
    assert!(!stderr.contains("being shutdown"), "a runtime call after shutdown:\n{stderr}");
}
