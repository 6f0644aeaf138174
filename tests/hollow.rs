//! Hollow nodes through the real kubectl: `capstan server --hollow-nodes N` registers Ready nodes
//! with leases, runs pods bound to them, finishes their graceful deletion, and ends pods that ask
//! to exit.

use capstan_e2e::{CapstanServer, json, kubectl, kubectl_stdin};
use serde_json::json;

fn hollow_server(extra: &[&str]) -> CapstanServer {
    let mut args = vec!["--hollow-nodes", "3", "--hollow-zones", "2"];
    args.extend_from_slice(extra);
    CapstanServer::start_with(&args).unwrap_or_else(|e| panic!("{e}"))
}

fn pod(name: &str, node: &str, annotations: &str) -> String {
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
  annotations: {{{annotations}}}
spec:
  nodeName: {node}
  containers:
  - name: app
    image: busybox
"
    )
}

#[test]
fn hollow_nodes_register_ready_with_zones_labels_taints_and_leases() {
    let server =
        hollow_server(&["--hollow-node-labels", "tier=gold", "--hollow-node-taints", "dedicated=batch:NoSchedule"]);
    let nodes = json(&kubectl(&server, &["get", "nodes", "-o", "json"]));
    let items = nodes["items"].as_array().expect("items");
    let names: Vec<_> = items.iter().filter_map(|n| n["metadata"]["name"].as_str()).collect();
    assert_eq!(names, ["hollow-node-0", "hollow-node-1", "hollow-node-2"]);
    for node in items {
        let ready = node["status"]["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Ready"));
        assert_eq!(ready.map(|c| &c["status"]), Some(&json!("True")), "{node}");
        assert_eq!(node["metadata"]["labels"]["tier"], "gold");
        assert_eq!(node["spec"]["taints"][0]["key"], "dedicated");
        assert_eq!(node["status"]["allocatable"]["pods"], "110");
    }
    let zones: Vec<_> =
        items.iter().filter_map(|n| n["metadata"]["labels"]["topology.kubernetes.io/zone"].as_str()).collect();
    assert_eq!(zones, ["zone-0", "zone-1", "zone-0"]);
    // The table kubectl prints shows them Ready.
    let table = kubectl(&server, &["get", "nodes"]);
    assert_eq!(table.matches(" Ready ").count(), 3, "{table}");

    let lease = json(&kubectl(&server, &["get", "lease", "-n", "kube-node-lease", "hollow-node-1", "-o", "json"]));
    assert_eq!(lease["spec"]["holderIdentity"], "hollow-node-1");
    assert!(lease["spec"]["renewTime"].is_string(), "{lease}");
}

#[test]
fn pods_bound_to_hollow_nodes_run_and_are_deleted() {
    let server = hollow_server(&[]);
    kubectl_stdin(&server, &["apply", "-f", "-"], &pod("web", "hollow-node-1", ""));
    kubectl(&server, &["wait", "--for=condition=Ready", "pod/web", "--timeout=30s"]);
    let web = json(&kubectl(&server, &["get", "pod", "web", "-o", "json"]));
    assert_eq!(web["status"]["phase"], "Running");
    assert!(web["status"]["podIP"].as_str().is_some_and(|ip| ip.starts_with("10.128.1.")), "{web}");
    assert_eq!(web["status"]["hostIP"], "10.127.0.1");
    assert_eq!(web["status"]["containerStatuses"][0]["ready"], true);

    // A graceful delete is finished by the node: kubectl's wait for deletion returns.
    kubectl(&server, &["delete", "pod", "web", "--timeout=30s"]);
    let left = kubectl(&server, &["get", "pods", "-o", "name"]);
    assert_eq!(left.trim(), "", "pods left: {left}");
}

#[test]
fn a_pod_asking_to_exit_ends_with_its_exit_code() {
    let server = hollow_server(&[]);
    let manifests = [
        pod("done", "hollow-node-0", "capstan.io/hollow-exit-after: \"0.5\""),
        pod("broken", "hollow-node-2", "capstan.io/hollow-exit-after: \"0.5\", capstan.io/hollow-exit-code: \"2\""),
    ];
    for manifest in manifests {
        kubectl_stdin(&server, &["apply", "-f", "-"], &manifest);
    }
    kubectl(&server, &["wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/done", "--timeout=30s"]);
    kubectl(&server, &["wait", "--for=jsonpath={.status.phase}=Failed", "pod/broken", "--timeout=30s"]);
    let broken = json(&kubectl(&server, &["get", "pod", "broken", "-o", "json"]));
    assert_eq!(broken["status"]["containerStatuses"][0]["state"]["terminated"]["exitCode"], 2);
}

/// Runs `capstan token ARGS` against `server`.
fn capstan_token(server: &capstan_testbed::CapstanServer, args: &[&str]) -> std::process::Output {
    let binary = capstan_testbed::capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    std::process::Command::new(binary)
        .arg("token")
        .args(args)
        .arg("--data-dir")
        .arg(server.dir().join("data"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run capstan token: {e}"))
}

#[test]
fn capstan_agent_joins_hollow_nodes_to_a_server_with_a_join_token() {
    let server = capstan_e2e::server();
    // `capstan token create` makes a bootstrap token (a Secret in kube-system) a node joins with.
    let created = capstan_token(&server, &["create", "--ttl", "10m", "--description", "e2e join"]);
    assert!(created.status.success(), "{}", String::from_utf8_lossy(&created.stderr));
    let token = String::from_utf8_lossy(&created.stdout).trim().to_string();
    let (id, secret) = token.split_once('.').expect("a token id.secret");
    assert_eq!((id.len(), secret.len()), (6, 16), "{token}");
    let listed = capstan_token(&server, &["list"]);
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    assert!(listed.lines().any(|l| l.starts_with(&token) && l.ends_with("e2e join")), "{listed}");
    let stored = json(&kubectl(
        &server,
        &["get", "secret", "-n", "kube-system", &format!("bootstrap-token-{id}"), "-o", "json"],
    ));
    assert_eq!(stored["type"], "bootstrap.kubernetes.io/token");
    // The token authenticates as a bootstrapper; a made-up one does not.
    let as_token = |token: &str| {
        std::process::Command::new("kubectl")
            .args(["--kubeconfig", "/dev/null", "--server", &format!("https://127.0.0.1:{}", server.port())])
            .arg(format!("--certificate-authority={}", server.dir().join("data/pki/ca.crt").display()))
            .args(["--token", token, "auth", "whoami", "-o", "jsonpath={.status.userInfo.username}"])
            .output()
            .expect("run kubectl")
    };
    let whoami = as_token(&token);
    assert_eq!(String::from_utf8_lossy(&whoami.stdout), format!("system:bootstrap:{id}"));
    let forged = as_token(&format!("{id}.0000000000000000"));
    assert!(!forged.status.success() && String::from_utf8_lossy(&forged.stderr).contains("Unauthorized"));
    // An expired token stops working.
    let short = capstan_token(&server, &["create", "--ttl", "1s"]);
    let short = String::from_utf8_lossy(&short.stdout).trim().to_string();
    std::thread::sleep(std::time::Duration::from_millis(2100));
    assert!(!as_token(&short).status.success(), "an expired token was accepted");

    let binary = capstan_testbed::capstan_binary().expect("capstan binary");
    let ca = server.dir().join("data/pki/ca.crt");
    let url = format!("https://127.0.0.1:{}", server.port());
    let mut agent = std::process::Command::new(binary)
        .args(["agent", "--server", &url, "--ca-file"])
        .arg(&ca)
        .args(["--hollow", "2", "--hollow-node-prefix", "remote-", "--hollow-zones", "0"])
        .env("CAPSTAN_TOKEN", &token)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start capstan agent");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let names = loop {
        let nodes = json(&kubectl(&server, &["get", "nodes", "-o", "json"]));
        let names: Vec<String> = nodes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|n| n["metadata"]["name"].as_str().map(String::from))
            .collect();
        if names.len() == 2 || std::time::Instant::now() > deadline {
            break names;
        }
        std::thread::sleep(std::time::Duration::from_millis(300));
    };
    let _ = agent.kill();
    let _ = agent.wait();
    assert_eq!(names, ["remote-0", "remote-1"]);
}
