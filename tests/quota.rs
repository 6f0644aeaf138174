//! ResourceQuota usage through the real kubectl on hollow nodes: the `resource-quota` controller
//! publishes `status.hard`, counts what already exists, and gives back what finished pods and
//! refused creates held, so `kubectl describe quota` tells the truth and new pods get in.

use std::time::Duration;

use capstan_e2e::{CapstanServer, eventually, json, kubectl, kubectl_fails, kubectl_stdin};

fn hollow_server() -> CapstanServer {
    CapstanServer::start_with(&["--hollow-nodes", "2"]).unwrap_or_else(|e| panic!("{e}"))
}

fn namespace(server: &CapstanServer, name: &str) {
    kubectl_stdin(
        server,
        &["apply", "-f", "-"],
        &format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n"),
    );
}

fn quota(server: &CapstanServer, namespace: &str, hard: &str) {
    let manifest = format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: quota, namespace: {namespace}}}\nspec:\n  hard: {hard}\n"
    );
    kubectl_stdin(server, &["apply", "-f", "-"], &manifest);
}

/// A pod with one container requesting `cpu`, with extra metadata lines.
fn pod(name: &str, namespace: &str, cpu: &str, metadata: &str) -> String {
    format!(
        r"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {namespace}
{metadata}
spec:
  containers:
  - name: main
    image: busybox:1
    resources: {{requests: {{cpu: {cpu}}}}}
"
    )
}

fn used(server: &CapstanServer, namespace: &str) -> serde_json::Value {
    json(&kubectl(server, &["get", "quota", "quota", "-n", namespace, "-o", "json"]))["status"]["used"].clone()
}

/// The `Used` and `Hard` columns of `resource` in `kubectl describe quota`.
fn described(server: &CapstanServer, namespace: &str, resource: &str) -> Option<(String, String)> {
    let text = kubectl(server, &["describe", "quota", "quota", "-n", namespace]);
    text.lines().find_map(|line| {
        let columns: Vec<&str> = line.split_whitespace().collect();
        (columns.len() == 3 && columns[0] == resource).then(|| (columns[1].to_owned(), columns[2].to_owned()))
    })
}

/// Waits until quota usage of `resource` reads `value`.
fn wait_used(server: &CapstanServer, namespace: &str, resource: &str, value: &str) {
    eventually(Duration::from_secs(30), &format!("quota {resource} used = {value}"), || {
        (used(server, namespace)[resource] == value).then_some(())
    });
}

#[test]
fn a_finished_pod_frees_its_quota_so_a_new_pod_is_admitted() {
    let server = hollow_server();
    namespace(&server, "jobs");
    quota(&server, "jobs", "{pods: '1', requests.cpu: '1'}");
    let short = pod("short", "jobs", "500m", "  annotations: {capstan.io/hollow-exit-after: '2'}");
    kubectl_stdin(&server, &["apply", "-f", "-"], &short);
    assert_eq!(used(&server, "jobs"), serde_json::json!({"pods": "1", "requests.cpu": "500m"}));
    let next = pod("next", "jobs", "500m", "");
    let refused = kubectl_fails(&server, &["apply", "-f", "-"], Some(&next));
    assert!(refused.stderr.contains("exceeded quota: quota, requested: pods=1"), "{}", refused.stderr);

    eventually(Duration::from_secs(30), "the short pod to finish", || {
        (kubectl(&server, &["get", "pod", "short", "-n", "jobs", "-o", "jsonpath={.status.phase}"]) == "Succeeded")
            .then_some(())
    });
    wait_used(&server, "jobs", "pods", "0");
    assert_eq!(described(&server, "jobs", "pods"), Some(("0".into(), "1".into())));
    assert_eq!(described(&server, "jobs", "requests.cpu"), Some(("0".into(), "1".into())));
    kubectl_stdin(&server, &["apply", "-f", "-"], &next);
    assert_eq!(used(&server, "jobs")["pods"], "1", "the new pod is charged");
    assert_eq!(kubectl(&server, &["get", "pod", "short", "-n", "jobs", "-o", "name"]).trim(), "pod/short");

    // A pod that fails frees its quota too.
    kubectl(&server, &["delete", "pod", "next", "-n", "jobs"]);
    let failing = pod(
        "failing",
        "jobs",
        "500m",
        "  annotations: {capstan.io/hollow-exit-after: '1', capstan.io/hollow-exit-code: '3'}",
    );
    kubectl_stdin(&server, &["apply", "-f", "-"], &failing);
    let last = pod("last", "jobs", "500m", "");
    kubectl_fails(&server, &["apply", "-f", "-"], Some(&last));
    eventually(Duration::from_secs(30), "the failing pod to fail", || {
        (kubectl(&server, &["get", "pod", "failing", "-n", "jobs", "-o", "jsonpath={.status.phase}"]) == "Failed")
            .then_some(())
    });
    wait_used(&server, "jobs", "pods", "0");
    kubectl_stdin(&server, &["apply", "-f", "-"], &last);

    // The controller is one of the defaults, a Plugin object like the others.
    let plugin = json(&kubectl(&server, &["get", "plugin", "resourcequota", "-o", "json"]));
    assert_eq!(plugin["spec"]["component"]["builtin"], "resource-quota-controller", "{plugin}");
}

#[test]
fn a_quota_created_after_pods_exist_shows_their_usage_and_counts_objects() {
    let server = hollow_server();
    namespace(&server, "busy");
    for (name, cpu) in [("a", "100m"), ("b", "250m"), ("c", "1")] {
        kubectl_stdin(&server, &["apply", "-f", "-"], &pod(name, "busy", cpu, ""));
    }
    for name in ["one", "two"] {
        let manifest = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: busy}}\n");
        kubectl_stdin(&server, &["apply", "-f", "-"], &manifest);
    }
    quota(
        &server,
        "busy",
        "{pods: '10', requests.cpu: '4', count/pods: '10', configmaps: '10', count/configmaps: '10', services: '2'}",
    );
    let config_maps = || kubectl(&server, &["get", "configmaps", "-n", "busy", "--no-headers"]).lines().count();
    eventually(Duration::from_secs(30), "usage of the pods and objects that were there first", || {
        let used = used(&server, "busy");
        let expected = serde_json::json!({
            "pods": "3", "count/pods": "3", "requests.cpu": "1350m", "services": "0",
            "configmaps": config_maps().to_string(), "count/configmaps": config_maps().to_string(),
        });
        (used == expected).then_some(())
    });
    let hard =
        json(&kubectl(&server, &["get", "quota", "quota", "-n", "busy", "-o", "json"]))["status"]["hard"].clone();
    assert_eq!(hard["requests.cpu"], "4", "status.hard mirrors spec.hard: {hard}");
    assert_eq!(described(&server, "busy", "requests.cpu"), Some(("1350m".into(), "4".into())));
    assert_eq!(described(&server, "busy", "pods"), Some(("3".into(), "10".into())));

    // Objects admission does not charge are counted when they change.
    let before = config_maps();
    kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: three, namespace: busy}\n",
    );
    wait_used(&server, "busy", "count/configmaps", &(before + 1).to_string());
    kubectl(&server, &["delete", "configmap", "one", "-n", "busy"]);
    wait_used(&server, "busy", "configmaps", &before.to_string());
}

#[test]
fn a_create_charged_then_refused_later_in_the_chain_leaves_no_usage() {
    let server = hollow_server();
    namespace(&server, "tight");
    quota(&server, "tight", "{pods: '2'}");
    kubectl_stdin(&server, &["apply", "-f", "-"], &pod("a", "tight", "100m", ""));

    // Storage refuses the second create of `a` after admission charged it.
    let twice = kubectl_fails(&server, &["create", "-f", "-"], Some(&pod("a", "tight", "100m", "")));
    assert!(twice.stderr.contains("already exists"), "{}", twice.stderr);
    wait_used(&server, "tight", "pods", "1");

    // A validating policy that runs after ResourceQuota (order 2000 > 1000) refuses the next.
    let policy = format!(
        r"apiVersion: capstan.io/v1alpha1
kind: Plugin
metadata:
  name: team-label
spec:
  kind: admission
  component:
    path: {:?}
  config: {{label: team}}
  admission:
    mutating: false
    order: 2000
    rules:
    - operations: [CREATE]
      apiGroups: ['']
      apiVersions: [v1]
      resources: [pods]
",
        capstan_testbed::component_path("require-label").unwrap_or_else(|e| panic!("{e}")).to_string_lossy()
    );
    kubectl_stdin(&server, &["apply", "-f", "-"], &policy);
    eventually(Duration::from_secs(30), "the team-label policy to load", || {
        (kubectl(&server, &["get", "plugin", "team-label", "-o", "jsonpath={.status.state}"]) == "Loaded").then_some(())
    });
    let unlabelled = kubectl_fails(&server, &["apply", "-f", "-"], Some(&pod("b", "tight", "100m", "")));
    assert!(unlabelled.stderr.contains("must have the label `team`"), "{}", unlabelled.stderr);

    // Only `a` exists: whatever the refused creates were charged is given back.
    wait_used(&server, "tight", "pods", "1");
    assert_eq!(described(&server, "tight", "pods"), Some(("1".into(), "2".into())));
    let labelled = pod("c", "tight", "100m", "  labels: {team: blue}");
    kubectl_stdin(&server, &["apply", "-f", "-"], &labelled);
    let full =
        kubectl_fails(&server, &["apply", "-f", "-"], Some(&pod("d", "tight", "100m", "  labels: {team: blue}")));
    assert!(
        full.stderr.contains("exceeded quota: quota, requested: pods=1, used: pods=2, limited: pods=2"),
        "{}",
        full.stderr
    );
}
