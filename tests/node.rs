//! The node agent end to end: a real `capstan server` running its node agent with a real
//! containerd (installed by `scripts/install-deps node` when missing), driven with the real
//! `kubectl`. Each test has its own server, cluster CIDR and bridge.

use std::process::Command;
use std::time::{Duration, Instant};

use capstan_e2e::{
    BUSYBOX, NodeServer, cgroups_of, http_get, json, kubectl, kubectl_for, kubectl_stdin, node_server, sandboxes,
    start_node, start_node_with,
};
use capstan_testbed::{CapstanServer, capstan_binary, ensure_installed};

fn wait_for(server: &CapstanServer, what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if done() {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let pods = server.kubectl(&["get", "pods", "-A", "-o", "yaml"]);
    let events = server.kubectl(&["get", "events", "-A"]);
    panic!(
        "timed out after {timeout:?} waiting for {what}\npods:\n{}\nevents:\n{}",
        String::from_utf8_lossy(&pods.stdout),
        String::from_utf8_lossy(&events.stdout)
    );
}

fn pod(server: &CapstanServer, name: &str) -> serde_json::Value {
    json(&kubectl(server, &["get", "pod", name, "-o", "json"]))
}

fn wait_phase(server: &CapstanServer, name: &str, phase: &str, timeout: Duration) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    wait_for(server, &format!("pod {name} {phase}"), timeout, || {
        last = pod(server, name);
        last["status"]["phase"] == phase
    });
    last
}

#[test]
fn node_registers_and_heartbeats() {
    let server = node_server("node-a", 101);
    let node = json(&kubectl(&server, &["get", "node", "node-a", "-o", "json"]));
    assert_eq!(node["spec"]["podCIDR"], "10.101.0.0/24");
    assert!(
        node["status"]["nodeInfo"]["containerRuntimeVersion"].as_str().unwrap_or_default().starts_with("containerd://")
    );
    assert!(node["status"]["capacity"]["cpu"].as_str().is_some_and(|c| c.parse::<u32>().is_ok_and(|c| c >= 1)));
    assert!(node["status"]["capacity"]["memory"].as_str().is_some_and(|m| m.ends_with("Ki")));
    let addresses = node["status"]["addresses"].as_array().cloned().unwrap_or_default();
    assert!(addresses.iter().any(|a| a["type"] == "InternalIP"), "{addresses:?}");
    let lease = json(&kubectl(&server, &["get", "lease", "-n", "kube-node-lease", "node-a", "-o", "json"]));
    assert_eq!(lease["spec"]["holderIdentity"], "node-a");
    let first = lease["spec"]["renewTime"].clone();
    std::thread::sleep(Duration::from_secs(11));
    let lease = json(&kubectl(&server, &["get", "lease", "-n", "kube-node-lease", "node-a", "-o", "json"]));
    assert_ne!(lease["spec"]["renewTime"], first, "the lease was not renewed");
}

#[test]
fn pod_runs_with_config_and_secret_and_is_cleaned_up_on_delete() {
    let server = node_server("node-b", 102);
    // The pod gets its projected service-account token only once the `default` account exists
    // (the serviceaccount controller makes it just after start).
    wait_for(&server, "the default service account", Duration::from_mins(1), || {
        server.kubectl(&["get", "serviceaccount", "default"]).status.success()
    });
    let configmap = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"colour": "blue", "size": "large"}});
    kubectl_stdin(&server, &["apply", "-f", "-"], &configmap.to_string());
    let secret = serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"},
        "stringData": {"password": "hunter2"}});
    kubectl_stdin(&server, &["apply", "-f", "-"], &secret.to_string());
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "nodeName": "node-b",
            "terminationGracePeriodSeconds": 5,
            "containers": [{
                "name": "web", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "mkdir -p /www && echo \"$COLOUR $PASSWORD $POD_NAME $GREETING\" > /www/env.txt && cp /config/size /www/size.txt && cp /secret/password /www/password.txt && exec httpd -f -p 8080 -h /www"],
                "env": [
                    {"name": "COLOUR", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "colour"}}},
                    {"name": "GREETING", "value": "hi-$(COLOUR)"},
                    {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "password"}}},
                    {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                ],
                "resources": {"limits": {"memory": "64Mi", "cpu": "250m"}},
                "volumeMounts": [
                    {"name": "config", "mountPath": "/config"},
                    {"name": "secret", "mountPath": "/secret", "readOnly": true},
                ],
            }],
            "volumes": [
                {"name": "config", "configMap": {"name": "settings"}},
                {"name": "secret", "secret": {"secretName": "creds"}},
            ],
        },
    });
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest.to_string());
    let running = wait_phase(&server, "web", "Running", Duration::from_mins(1));
    let ip = running["status"]["podIP"].as_str().unwrap_or_default().to_string();
    assert!(ip.starts_with("10.102.0."), "pod IP {ip} is not from the node's pod CIDR");
    assert_eq!(running["status"]["podIPs"][0]["ip"], ip.as_str());
    assert!(running["status"]["hostIP"].as_str().is_some_and(|h| !h.is_empty()));
    let status = &running["status"]["containerStatuses"][0];
    assert_eq!(status["restartCount"], 0);
    assert!(status["containerID"].as_str().unwrap_or_default().starts_with("containerd://"));
    let mut env = String::new();
    wait_for(&server, "the pod to answer HTTP", Duration::from_secs(20), || {
        env = http_get(&ip, 8080, "/env.txt").unwrap_or_default();
        env.contains("200 OK")
    });
    assert!(env.contains("blue hunter2 web hi-blue"), "{env}");
    assert!(http_get(&ip, 8080, "/size.txt").unwrap_or_default().contains("large"));
    assert!(http_get(&ip, 8080, "/password.txt").unwrap_or_default().contains("hunter2"));
    let uid = running["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    let memory_limits: Vec<String> = cgroups_of(&uid)
        .iter()
        .filter(|p| p.starts_with("/sys/fs/cgroup/memory"))
        .flat_map(|p| std::fs::read_dir(p).into_iter().flatten().flatten())
        .filter_map(|c| std::fs::read_to_string(c.path().join("memory.limit_in_bytes")).ok())
        .map(|s| s.trim().to_string())
        .collect();
    assert!(memory_limits.contains(&"67108864".to_string()), "64Mi limit not applied: {memory_limits:?}");
    let events = kubectl(&server, &["get", "events", "--field-selector", "involvedObject.name=web"]);
    assert!(events.contains("Started"), "{events}");

    // A changed ConfigMap reaches the running pod's volume (the node re-syncs volumes every
    // 30 s); a removed key goes away; the service-account token is kept until it is due.
    let token_path = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    let token_before = kubectl(&server, &["exec", "web", "--", "cat", token_path]);
    assert!(token_before.split('.').count() == 3, "no projected token: {token_before}");
    let updated = serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"},
        "data": {"size": "small"}});
    kubectl_stdin(&server, &["replace", "-f", "-"], &updated.to_string());
    wait_for(&server, "the ConfigMap change in the volume", Duration::from_secs(90), || {
        server.kubectl(&["exec", "web", "--", "cat", "/config/size"]).stdout == b"small"
    });
    let listed = kubectl(&server, &["exec", "web", "--", "ls", "/config"]);
    assert_eq!(listed.trim(), "size", "a removed key is still mounted");
    assert_eq!(kubectl(&server, &["exec", "web", "--", "cat", token_path]), token_before, "token re-issued early");

    // httpd as PID 1 ignores SIGTERM: the delete waits out the 5 s grace period, then kills it.
    let start = Instant::now();
    kubectl(&server, &["delete", "pod", "web", "--timeout=60s"]);
    let took = start.elapsed();
    assert!(took < Duration::from_secs(20), "delete took {took:?}");
    assert!(cgroups_of(&uid).is_empty(), "cgroups left behind: {:?}", cgroups_of(&uid));
    assert_eq!(sandboxes(&server).trim(), "", "containers left behind");
    assert!(http_get(&ip, 8080, "/env.txt").is_err(), "the pod still answers after deletion");
}

#[test]
fn init_containers_run_in_order_and_pod_succeeds() {
    let server = node_server("node-c", 103);
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "job"},
        "spec": {
            "nodeName": "node-c",
            "restartPolicy": "Never",
            "initContainers": [
                {"name": "first", "image": BUSYBOX, "command": ["sh", "-c", "echo one > /work/log"], "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
                {"name": "second", "image": BUSYBOX, "command": ["sh", "-c", "echo two >> /work/log"], "volumeMounts": [{"name": "work", "mountPath": "/work"}]},
            ],
            "containers": [{"name": "main", "image": BUSYBOX, "command": ["sh", "-c", "test \"$(cat /work/log | tr '\\n' ' ')\" = 'one two '"], "volumeMounts": [{"name": "work", "mountPath": "/work"}]}],
            "volumes": [{"name": "work", "emptyDir": {}}],
        },
    });
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest.to_string());
    let done = wait_phase(&server, "job", "Succeeded", Duration::from_mins(1));
    assert_eq!(done["status"]["initContainerStatuses"][1]["state"]["terminated"]["exitCode"], 0);
    assert_eq!(done["status"]["containerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
    kubectl(&server, &["delete", "pod", "job"]);
}

#[test]
fn crashing_container_restarts_with_back_off() {
    let server = node_server("node-d", 104);
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "crash"},
        "spec": {"nodeName": "node-d", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "crash", "image": BUSYBOX, "command": ["sh", "-c", "echo crashing; sleep 1; exit 3"]}]},
    });
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest.to_string());
    let mut seen = serde_json::Value::Null;
    wait_for(&server, "CrashLoopBackOff", Duration::from_secs(40), || {
        seen = pod(&server, "crash");
        seen["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "CrashLoopBackOff"
    });
    let status = &seen["status"]["containerStatuses"][0];
    assert_eq!(status["lastState"]["terminated"]["exitCode"], 3, "{status}");
    let start = Instant::now();
    wait_for(&server, "the first restart", Duration::from_secs(30), || {
        pod(&server, "crash")["status"]["containerStatuses"][0]["restartCount"] == 1
    });
    let first = start.elapsed();
    let previous = kubectl(&server, &["logs", "crash", "--previous"]);
    assert_eq!(previous, "crashing\n");
    wait_for(&server, "the second restart", Duration::from_mins(1), || {
        pod(&server, "crash")["status"]["containerStatuses"][0]["restartCount"] == 2
    });
    let second = start.elapsed().saturating_sub(first);
    assert!(second > Duration::from_secs(15), "the second back-off ({second:?}) did not grow past 10s");
    let events = kubectl(&server, &["get", "events", "--field-selector", "involvedObject.name=crash"]);
    assert!(events.contains("BackOff"), "{events}");
    kubectl(&server, &["delete", "pod", "crash"]);
}

#[test]
fn missing_image_reports_err_image_pull() {
    let server = node_server("node-e", 105);
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "nothing"},
        "spec": {"nodeName": "node-e", "containers": [{"name": "c", "image": "capstan.local/absent:1"}]},
    });
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest.to_string());
    wait_for(&server, "ErrImagePull", Duration::from_mins(1), || {
        let reason = &pod(&server, "nothing")["status"]["containerStatuses"][0]["state"]["waiting"]["reason"];
        reason == "ErrImagePull" || reason == "ImagePullBackOff"
    });
    let events = kubectl(&server, &["get", "events", "--field-selector", "involvedObject.name=nothing"]);
    assert!(events.contains("Pulling") && events.contains("Failed"), "{events}");
    kubectl(&server, &["delete", "pod", "nothing"]);
}

#[test]
fn agent_without_containerd_joins_not_ready_with_install_hint() {
    let server = CapstanServer::start().unwrap_or_else(|e| panic!("{e}"));
    let url = format!("https://127.0.0.1:{}", server.port());
    let ca = server.dir().join("data/pki/ca.crt");
    let agent_dir = server.dir().join("agent");
    let mut agent = Command::new(capstan_binary().unwrap_or_else(|e| panic!("{e}")))
        .args(["agent", "--server", &url, "--token", &server.admin_token(), "--node-name", "lonely"])
        .arg("--ca-file")
        .arg(&ca)
        .arg("--data-dir")
        .arg(&agent_dir)
        .env("PATH", "/nonexistent")
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start capstan agent: {e}"));
    let mut message = String::new();
    wait_for(&server, "the agent's node", Duration::from_secs(30), || {
        let out = server.kubectl(&["get", "node", "lonely", "-o", "json"]);
        if !out.status.success() {
            return false;
        }
        let node = json(&String::from_utf8_lossy(&out.stdout));
        let ready =
            node["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Ready").cloned());
        message =
            ready.as_ref().map(|r| format!("{} {} {}", r["status"], r["reason"], r["message"])).unwrap_or_default();
        ready.is_some()
    });
    let _ = agent.kill();
    let _ = agent.wait();
    assert!(message.starts_with("\"False\""), "{message}");
    assert!(message.contains("install-deps node"), "{message}");
    let table = kubectl(&server, &["get", "nodes"]);
    assert!(table.contains("NotReady"), "{table}");
}

#[test]
fn logs_and_exec_reach_the_node_through_the_api_server() {
    let server = node_server("node-f", 106);
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "talker"},
        "spec": {"nodeName": "node-f", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "talker", "image": BUSYBOX,
                "command": ["sh", "-c", "i=0; while true; do echo line $i; i=$((i+1)); sleep 0.2; done"]}]},
    });
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest.to_string());
    wait_phase(&server, "talker", "Running", Duration::from_mins(1));
    wait_for(&server, "five log lines", Duration::from_secs(20), || {
        server.kubectl(&["logs", "talker"]).stdout.starts_with(b"line 0\nline 1\nline 2\nline 3\nline 4\n")
    });
    let tail = kubectl(&server, &["logs", "talker", "--tail=2"]);
    assert_eq!(tail.lines().count(), 2, "{tail}");
    let stamped = kubectl(&server, &["logs", "talker", "--tail=1", "--timestamps", "-c", "talker"]);
    let (time, line) = stamped.trim_end().split_once(' ').unwrap_or_default();
    assert!(time.len() > 20 && time.ends_with('Z') && time.contains('T'), "{stamped}");
    assert!(line.starts_with("line "), "{stamped}");
    // `--since` keeps only recent lines (one every 0.2 s: about five in the last second).
    let all = kubectl(&server, &["logs", "talker"]).lines().count();
    let recent = kubectl(&server, &["logs", "talker", "--since=1s"]).lines().count();
    assert!(recent > 0 && recent < all && recent <= 10, "--since=1s gave {recent} of {all} lines");
    // Following: lines keep arriving after the tail.
    let followed = kubectl_for(&server, &["logs", "-f", "talker", "--tail=1"], b"", Duration::from_secs(3));
    assert!(followed.lines().count() >= 5, "follow streamed only: {followed}");
    let wrong = capstan_e2e::kubectl_fails(&server, &["logs", "talker", "-c", "nope"], None);
    assert!(!wrong.stderr.is_empty());

    let exec = server.kubectl(&["exec", "talker", "--", "sh", "-c", "echo out; echo err >&2; exit 7"]);
    assert_eq!(exec.status.code(), Some(7), "{}", String::from_utf8_lossy(&exec.stderr));
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "out\n");
    assert!(String::from_utf8_lossy(&exec.stderr).contains("err"));
    let hostname = kubectl(&server, &["exec", "talker", "--", "hostname"]);
    assert_eq!(hostname.trim(), "talker");

    // The node's port answers only clients with a certificate signed by the cluster CA.
    ensure_installed("curl", "tools").unwrap_or_else(|e| panic!("{e}"));
    let node = json(&kubectl(&server, &["get", "node", "node-f", "-o", "json"]));
    let port = node["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"].as_u64().unwrap_or_default();
    assert_ne!(port, 0);
    let url = format!("https://127.0.0.1:{port}/api/v1/namespaces/default/pods/talker/log");
    let anonymous =
        Command::new("curl").args(["-sk", "-m", "5", &url]).output().unwrap_or_else(|e| panic!("curl: {e}"));
    assert!(!anonymous.status.success(), "the node answered without a client certificate");
    assert!(!String::from_utf8_lossy(&anonymous.stdout).contains("line"));
}

#[test]
fn agent_restart_adopts_running_pods() {
    let server = start_node(None, "node-g", 107);
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "steady"},
        "spec": {"nodeName": "node-g", "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "steady", "image": BUSYBOX, "command": ["sleep", "3600"]}]},
    });
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest.to_string());
    let before = wait_phase(&server, "steady", "Running", Duration::from_mins(1));
    let dir = server.stop().unwrap_or_else(|| panic!("the server had no directory"));
    let server = NodeServer::new(start_node(Some(dir), "node-g", 107));
    std::thread::sleep(Duration::from_secs(3));
    let after = wait_phase(&server, "steady", "Running", Duration::from_secs(30));
    let id = |pod: &serde_json::Value| pod["status"]["containerStatuses"][0]["containerID"].clone();
    assert_eq!(id(&after), id(&before), "the restarted agent replaced the running container");
    assert_eq!(after["status"]["containerStatuses"][0]["restartCount"], 0);
    assert_eq!(after["status"]["podIP"], before["status"]["podIP"]);
    kubectl(&server, &["delete", "pod", "steady", "--timeout=60s"]);
    assert_eq!(sandboxes(&server).trim(), "", "containers left behind");
}

fn ready_condition(pod: &serde_json::Value) -> String {
    pod["status"]["conditions"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["type"] == "Ready"))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

#[test]
fn probes_gate_readiness_and_restart_unhealthy_containers() {
    let server = node_server("node-h", 108);
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "probed"},
        "spec": {"nodeName": "node-h", "terminationGracePeriodSeconds": 1,
            "containers": [
                {"name": "app", "image": BUSYBOX, "command": ["sleep", "3600"],
                    "readinessProbe": {"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1},
                    "livenessProbe": {"exec": {"command": ["test", "!", "-f", "/tmp/dead"]}, "periodSeconds": 1, "failureThreshold": 1}},
                {"name": "web", "image": BUSYBOX, "ports": [{"name": "http", "containerPort": 8080}],
                    "command": ["sh", "-c", "mkdir -p /www && echo ok > /www/index.html && exec httpd -f -p 8080 -h /www"],
                    "readinessProbe": {"httpGet": {"path": "/index.html", "port": "http"}, "periodSeconds": 1},
                    "livenessProbe": {"tcpSocket": {"port": 8080}, "periodSeconds": 1}},
            ]},
    });
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest.to_string());
    let mut seen = serde_json::Value::Null;
    wait_for(&server, "web ready while app is not", Duration::from_secs(30), || {
        seen = pod(&server, "probed");
        seen["status"]["containerStatuses"][1]["ready"] == true
    });
    assert_eq!(seen["status"]["phase"], "Running");
    assert_eq!(seen["status"]["containerStatuses"][0]["ready"], false, "{seen}");
    assert_eq!(ready_condition(&seen), "False");
    kubectl(&server, &["exec", "probed", "-c", "app", "--", "touch", "/tmp/ready"]);
    wait_for(&server, "the pod to become Ready", Duration::from_secs(20), || {
        ready_condition(&pod(&server, "probed")) == "True"
    });

    kubectl(&server, &["exec", "probed", "-c", "app", "--", "touch", "/tmp/dead"]);
    wait_for(&server, "the liveness restart", Duration::from_secs(40), || {
        seen = pod(&server, "probed");
        seen["status"]["containerStatuses"][0]["restartCount"] == 1
            && seen["status"]["containerStatuses"][0]["state"]["running"].is_object()
    });
    // A fresh container: /tmp/ready is gone, so it is not ready again.
    assert_eq!(seen["status"]["containerStatuses"][0]["ready"], false, "{seen}");
    assert_eq!(seen["status"]["containerStatuses"][1]["restartCount"], 0);
    let events = kubectl(&server, &["get", "events", "--field-selector", "involvedObject.name=probed"]);
    assert!(events.contains("Unhealthy") && events.contains("failed liveness probe"), "{events}");
}

#[test]
fn static_pod_runs_and_appears_as_a_mirror_pod() {
    let server = node_server("node-i", 109);
    let manifests = server.dir().join("data/node/manifests");
    std::fs::create_dir_all(&manifests).unwrap_or_else(|e| panic!("{e}"));
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: static-web\n  namespace: kube-system\nspec:\n  terminationGracePeriodSeconds: 1\n  containers:\n  - name: web\n    image: {BUSYBOX}\n    command: [sleep, '3600']\n"
    );
    std::fs::write(manifests.join("web.yaml"), manifest).unwrap_or_else(|e| panic!("{e}"));
    let mut seen = serde_json::Value::Null;
    wait_for(&server, "the mirror pod Running", Duration::from_mins(1), || {
        let out = server.kubectl(&["get", "pod", "-n", "kube-system", "static-web-node-i", "-o", "json"]);
        if !out.status.success() {
            return false;
        }
        seen = json(&String::from_utf8_lossy(&out.stdout));
        seen["status"]["phase"] == "Running"
    });
    assert!(seen["metadata"]["annotations"]["kubernetes.io/config.mirror"].is_string(), "{seen}");
    assert_eq!(seen["spec"]["nodeName"], "node-i");
    std::fs::remove_file(manifests.join("web.yaml")).unwrap_or_else(|e| panic!("{e}"));
    wait_for(&server, "the mirror pod to go away", Duration::from_mins(1), || {
        !server.kubectl(&["get", "pod", "-n", "kube-system", "static-web-node-i"]).status.success()
    });
    assert_eq!(sandboxes(&server).trim(), "", "containers left behind");
}

/// A network namespace joined to the host by a veth pair — the host end `172.31.<octet>.1/30`,
/// the namespace end `.2` with its default route through the host — standing in for a second
/// machine. Dropping it removes the namespace and the pair.
struct NetNs {
    name: String,
    octet: u8,
}

impl NetNs {
    fn create(octet: u8) -> Self {
        let name = format!("capstan-e2e-{octet}");
        let (host_end, ns_end) = (format!("cve{octet}h"), format!("cve{octet}n"));
        let _ = Command::new("ip").args(["netns", "del", &name]).status();
        let _ = Command::new("ip").args(["link", "del", &host_end]).status();
        let netns = NetNs { name, octet };
        let ip = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().unwrap_or_else(|e| panic!("cannot run ip: {e}"));
            assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
        };
        ip(&["netns", "add", &netns.name]);
        ip(&["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end]);
        ip(&["link", "set", &ns_end, "netns", &netns.name]);
        ip(&["addr", "add", &format!("{}/30", netns.host_ip()), "dev", &host_end]);
        ip(&["link", "set", &host_end, "up"]);
        let inside = |args: &[&str]| ip(&[&["netns", "exec", &netns.name, "ip"], args].concat());
        inside(&["addr", "add", &format!("{}/30", netns.ip()), "dev", &ns_end]);
        inside(&["link", "set", &ns_end, "up"]);
        inside(&["link", "set", "lo", "up"]);
        inside(&["route", "add", "default", "via", &netns.host_ip()]);
        netns
    }

    /// The host's address on the link.
    fn host_ip(&self) -> String {
        format!("172.31.{}.1", self.octet)
    }

    /// The namespace's address.
    fn ip(&self) -> String {
        format!("172.31.{}.2", self.octet)
    }

    /// `program` run inside the namespace. (`nsenter --net`, not `ip netns exec`: that one also
    /// remounts `/sys`, hiding the cgroup hierarchy runc needs.)
    fn command(&self, program: &str) -> Command {
        let mut command = Command::new("nsenter");
        command.arg(format!("--net=/var/run/netns/{}", self.name)).arg("--").arg(program);
        command
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}

/// A `capstan agent` process running node `node` of a server with admin kubeconfig
/// `kubeconfig`; when dropped, its pods are deleted, then it is stopped with SIGTERM (then
/// SIGKILL).
struct AgentProcess {
    child: std::process::Child,
    kubeconfig: std::path::PathBuf,
    node: &'static str,
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["delete", "pods", "-A", "--timeout=60s", "--field-selector"])
            .arg(format!("spec.nodeName={}", self.node))
            .output();
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn second_node_joins_with_capstan_agent_from_a_network_namespace_and_runs_pods() {
    let octet = 130;
    let netns = NetNs::create(octet);
    // The control plane listens on every address, its certificate naming the address the other
    // "machine" reaches it at.
    let server = NodeServer::new(start_node_with(
        None,
        "node-j1",
        octet,
        &["--bind-address", "0.0.0.0", "--tls-san", &netns.host_ip()],
    ));
    let binary = capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let token = Command::new(&binary)
        .args(["token", "create", "--description", "second node"])
        .arg("--data-dir")
        .arg(server.dir().join("data"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run capstan token create: {e}"));
    assert!(token.status.success(), "{}", String::from_utf8_lossy(&token.stderr));
    let token = String::from_utf8_lossy(&token.stdout).trim().to_string();

    let agent_dir = server.dir().join("agent");
    let log = std::fs::File::create(server.dir().join("agent.log")).unwrap_or_else(|e| panic!("agent.log: {e}"));
    let log_err = log.try_clone().unwrap_or_else(|e| panic!("agent.log: {e}"));
    let url = format!("https://{}:{}", netns.host_ip(), server.port());
    let cidr = format!("10.{octet}.0.0/16");
    let agent = AgentProcess {
        kubeconfig: server.kubeconfig().to_path_buf(),
        node: "node-j2",
        child: netns
            .command(binary.to_str().unwrap_or_default())
            .args(["agent", "--server", &url, "--token", &token, "--node-name", "node-j2"])
            .args(["--cluster-cidr", &cidr, "--kubelet-port", "0"])
            .arg("--ca-file")
            .arg(server.dir().join("data/pki/ca.crt"))
            .arg("--data-dir")
            .arg(&agent_dir)
            .env("RUST_LOG", "info")
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start capstan agent in {}: {e}", netns.name)),
    };
    let agent_log = || std::fs::read_to_string(server.dir().join("agent.log")).unwrap_or_default();
    wait_for(&server, "node-j2 to register", Duration::from_mins(1), || {
        server.kubectl(&["get", "node", "node-j2"]).status.success()
    });
    capstan_e2e::wait_node_ready(&server, "node-j2");
    capstan_e2e::import_busybox(&server, &agent_dir);
    let node = json(&kubectl(&server, &["get", "node", "node-j2", "-o", "json"]));
    let addresses = node["status"]["addresses"].to_string();
    assert!(addresses.contains(&netns.ip()), "node-j2 does not report its own address: {addresses}");
    let pod_cidr = node["spec"]["podCIDR"].as_str().unwrap_or_default().to_string();
    let first_cidr = json(&kubectl(&server, &["get", "node", "node-j1", "-o", "json"]))["spec"]["podCIDR"].clone();
    assert!(
        pod_cidr.starts_with(&format!("10.{octet}.")) && first_cidr != pod_cidr.as_str(),
        "{pod_cidr} {first_cidr}"
    );

    // The scheduler places a pod by node label; it runs on the joined node, in its pod CIDR.
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "remote-web"},
        "spec": {
            "nodeSelector": {"kubernetes.io/hostname": "node-j2"},
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "web", "image": BUSYBOX, "imagePullPolicy": "IfNotPresent",
                "command": ["sh", "-c", "mkdir -p /www && hostname > /www/name.txt && echo serving && exec httpd -f -p 8080 -h /www"],
            }],
        },
    });
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest.to_string());
    let running = wait_phase(&server, "remote-web", "Running", Duration::from_mins(1));
    assert_eq!(running["spec"]["nodeName"], "node-j2", "{}", agent_log());
    assert_eq!(running["status"]["hostIP"], netns.ip().as_str());
    let ip = running["status"]["podIP"].as_str().unwrap_or_default().to_string();
    let prefix = pod_cidr.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "pod IP {ip} is not from node-j2's pod CIDR {pod_cidr}");
    // The pod answers HTTP on that node (from inside its "machine").
    ensure_installed("curl", "tools").unwrap_or_else(|e| panic!("{e}"));
    let mut page = String::new();
    wait_for(&server, "the remote pod to answer HTTP", Duration::from_secs(20), || {
        let out = netns
            .command("curl")
            .args(["-sS", "-m", "3", &format!("http://{ip}:8080/name.txt")])
            .output()
            .unwrap_or_else(|e| panic!("cannot run curl: {e}"));
        page = String::from_utf8_lossy(&out.stdout).into_owned();
        if !out.status.success() {
            eprintln!("curl http://{ip}:8080/name.txt in {}: {}", netns.name, String::from_utf8_lossy(&out.stderr));
        }
        out.status.success()
    });
    assert_eq!(page.trim(), "remote-web");
    // Logs and exec go through the API server to the joined node's own port.
    wait_for(&server, "the remote pod's log", Duration::from_secs(20), || {
        server.kubectl(&["logs", "remote-web"]).stdout == b"serving\n"
    });
    let exec = server.kubectl(&["exec", "remote-web", "--", "sh", "-c", "cat /www/name.txt; exit 3"]);
    assert_eq!(exec.status.code(), Some(3), "{}", String::from_utf8_lossy(&exec.stderr));
    assert_eq!(String::from_utf8_lossy(&exec.stdout), "remote-web\n");

    // Deleting the pod stops it on the joined node.
    kubectl(&server, &["delete", "pod", "remote-web", "--timeout=60s"]);
    let uid = running["metadata"]["uid"].as_str().unwrap_or_default().to_string();
    assert!(cgroups_of(&uid).is_empty(), "cgroups left behind: {:?}", cgroups_of(&uid));
    drop(agent);
    drop(netns);
}
