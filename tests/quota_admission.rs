//! ResourceQuota admission through the real kubectl on hollow nodes: object counts of any kind
//! refuse the create beyond the limit with upstream's message, quotas with scopes and scope
//! selectors count only the pods they select (in admission and in `status.used`), scopes are
//! validated as upstream, and concurrent creates admit exactly the limit. Updates are charged what
//! they add, and quotas on CPU or memory refuse pods whose containers do not state them.

use std::time::Duration;

use capstan_e2e::{CapstanServer, Run, eventually, json, kubectl, kubectl_fails, kubectl_stdin};

fn hollow_server() -> CapstanServer {
    CapstanServer::start_with(&["--hollow-nodes", "1"]).unwrap_or_else(|e| panic!("{e}"))
}

/// Creates namespace `name` and waits for the `kube-root-ca.crt` config map every namespace gets,
/// so that config map counts below are what the test made.
fn namespace(server: &CapstanServer, name: &str) {
    kubectl(server, &["create", "namespace", name]);
    eventually(Duration::from_secs(30), "the namespace's kube-root-ca.crt", || {
        server
            .kubectl(&["get", "configmap", "kube-root-ca.crt", "-n", name, "-o", "name"])
            .status
            .success()
            .then_some(())
    });
}

/// Applies quota `name` in `namespace` with `spec` (YAML lines indented by two spaces).
fn quota(server: &CapstanServer, namespace: &str, name: &str, spec: &str) -> Run {
    let manifest = format!(
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}"
    );
    Run::from(server.kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifest)))
}

/// A pod with one container; `cpu` requests that much (none: best effort), `spec` adds lines.
fn pod(name: &str, namespace: &str, cpu: Option<&str>, spec: &str) -> String {
    let resources = cpu.map(|cpu| format!("    resources: {{requests: {{cpu: {cpu}}}}}\n")).unwrap_or_default();
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n{spec}  containers:\n  \
         - name: main\n    image: busybox:1\n{resources}"
    )
}

/// Runs kubectl expecting a refusal whose message contains `expected`.
fn refused(server: &CapstanServer, args: &[&str], stdin: Option<&str>, expected: &str) -> Run {
    let run = kubectl_fails(server, args, stdin);
    assert!(run.stderr.contains(expected), "expected {expected:?} in:\n{}", run.stderr);
    run
}

fn used(server: &CapstanServer, namespace: &str, name: &str, resource: &str) -> String {
    let used = json(&kubectl(server, &["get", "quota", name, "-n", namespace, "-o", "json"]))["status"]["used"].clone();
    used[resource].as_str().unwrap_or_default().to_owned()
}

fn wait_used(server: &CapstanServer, namespace: &str, name: &str, resource: &str, value: &str) {
    eventually(Duration::from_secs(30), &format!("quota {name} {resource} used = {value}"), || {
        (used(server, namespace, name, resource) == value).then_some(())
    });
}

#[test]
fn object_counts_refuse_the_create_beyond_the_limit_with_upstreams_message() {
    let server = hollow_server();
    namespace(&server, "counts");
    let hard = "  hard: {pods: '2', count/configmaps: '2', services: '5', services.nodeports: '1', \
                count/deployments.apps: '1'}\n";
    let applied = quota(&server, "counts", "objects", hard);
    assert!(applied.ok, "{}", applied.stderr);

    for name in ["a", "b"] {
        kubectl_stdin(&server, &["create", "-f", "-"], &pod(name, "counts", Some("10m"), ""));
    }
    let third = refused(
        &server,
        &["create", "-f", "-"],
        Some(&pod("c", "counts", Some("10m"), "")),
        r#"pods "c" is forbidden: exceeded quota: objects, requested: pods=1, used: pods=2, limited: pods=2"#,
    );
    assert!(third.stderr.contains("Error from server (Forbidden)"), "{}", third.stderr);

    // kube-root-ca.crt is the first config map.
    kubectl(&server, &["create", "configmap", "settings", "-n", "counts"]);
    let count = "requested: count/configmaps=1, used: count/configmaps=2, limited: count/configmaps=2";
    let more = ["create", "configmap", "more", "-n", "counts"];
    refused(&server, &more, None, &format!(r#"configmaps "more" is forbidden: exceeded quota: objects, {count}"#));
    // Deleting one gives its place back at once.
    kubectl(&server, &["delete", "configmap", "settings", "-n", "counts"]);
    assert_eq!(used(&server, "counts", "objects", "count/configmaps"), "1");
    kubectl(&server, &more);

    // Services count as objects and by node ports.
    kubectl(&server, &["create", "service", "clusterip", "inside", "--tcp=80:80", "-n", "counts"]);
    kubectl(&server, &["create", "service", "nodeport", "door", "--tcp=80:80", "-n", "counts"]);
    let ports = "requested: services.nodeports=1, used: services.nodeports=1, limited: services.nodeports=1";
    let door = ["create", "service", "nodeport", "door2", "--tcp=81:81", "-n", "counts"];
    refused(&server, &door, None, &format!("exceeded quota: objects, {ports}"));
    assert_eq!(used(&server, "counts", "objects", "services"), "2");
    // An update is charged what it adds: turning a ClusterIP Service into a NodePort one needs a
    // node port, while an update that adds nothing passes.
    let to_node_port = ["patch", "service", "inside", "-n", "counts", "-p", r#"{"spec":{"type":"NodePort"}}"#];
    refused(
        &server,
        &to_node_port,
        None,
        &format!(r#"services "inside" is forbidden: exceeded quota: objects, {ports}"#),
    );
    kubectl(&server, &["label", "service", "door", "-n", "counts", "tier=edge"]);
    assert_eq!(used(&server, "counts", "objects", "services.nodeports"), "1");

    // Any group's resources, as count/<resource>.<group>.
    kubectl(&server, &["create", "deployment", "web", "--image=busybox:1", "--replicas=0", "-n", "counts"]);
    let api = ["create", "deployment", "api", "--image=busybox:1", "--replicas=0", "-n", "counts"];
    let deployments =
        r#"deployments.apps "api" is forbidden: exceeded quota: objects, requested: count/deployments.apps=1"#;
    refused(&server, &api, None, deployments);
    // The controller's recomputation agrees with what admission charged.
    wait_used(&server, "counts", "objects", "count/deployments.apps", "1");
    wait_used(&server, "counts", "objects", "count/configmaps", "2");
    wait_used(&server, "counts", "objects", "pods", "2");

    // Dry-run checks without charging.
    refused(
        &server,
        &["create", "configmap", "dry", "-n", "counts", "--dry-run=server"],
        None,
        "exceeded quota: objects",
    );
}

#[test]
fn quotas_on_cpu_or_memory_require_every_container_to_state_them() {
    let server = hollow_server();
    namespace(&server, "compute");
    let applied = quota(&server, "compute", "compute", "  hard: {requests.cpu: '1', limits.memory: 1Gi}\n");
    assert!(applied.ok, "{}", applied.stderr);

    // A pod stating neither is refused with upstream's message, naming what each container lacks.
    refused(
        &server,
        &["run", "bare", "--image=busybox:1", "-n", "compute"],
        None,
        r#"pods "bare" is forbidden: failed quota: compute: must specify limits.memory for: bare; requests.cpu for: bare"#,
    );
    // Limits alone will do: the API server defaults the requests to them, as upstream.
    let limited = "apiVersion: v1\nkind: Pod\nmetadata: {name: limited, namespace: compute}\nspec:\n  containers:\n  \
                   - {name: main, image: 'busybox:1', resources: {limits: {cpu: 500m, memory: 256Mi}}}\n";
    kubectl_stdin(&server, &["create", "-f", "-"], limited);
    let requests =
        ["get", "pod", "limited", "-n", "compute", "-o", "jsonpath={.spec.containers[0].resources.requests}"];
    assert_eq!(json(&kubectl(&server, &requests)), serde_json::json!({"cpu": "500m", "memory": "256Mi"}));
    assert_eq!(used(&server, "compute", "compute", "requests.cpu"), "500m");

    // With a LimitRange filling defaults (LimitRanger mutates before quota validates), a bare pod
    // is admitted and charged its defaults.
    let defaults = "apiVersion: v1\nkind: LimitRange\nmetadata: {name: defaults, namespace: compute}\nspec:\n  \
                    limits:\n  - type: Container\n    default: {cpu: 200m, memory: 128Mi}\n    \
                    defaultRequest: {cpu: 100m, memory: 64Mi}\n";
    kubectl_stdin(&server, &["apply", "-f", "-"], defaults);
    kubectl(&server, &["run", "plain", "--image=busybox:1", "-n", "compute"]);
    assert_eq!(used(&server, "compute", "compute", "requests.cpu"), "600m");
    assert_eq!(used(&server, "compute", "compute", "limits.memory"), "384Mi");

    // A pod's request is the larger of its containers' sum and its biggest init container.
    let init = "apiVersion: v1\nkind: Pod\nmetadata: {name: init, namespace: compute}\nspec:\n  initContainers:\n  \
                - {name: setup, image: 'busybox:1', resources: {limits: {cpu: 500m, memory: 64Mi}}}\n  containers:\n  \
                - {name: main, image: 'busybox:1', resources: {limits: {cpu: 100m, memory: 64Mi}}}\n";
    refused(
        &server,
        &["create", "-f", "-"],
        Some(init),
        "exceeded quota: compute, requested: requests.cpu=500m, used: requests.cpu=600m, limited: requests.cpu=1",
    );
}

#[test]
fn scoped_quotas_count_and_limit_only_the_pods_they_select() {
    let server = hollow_server();
    namespace(&server, "scoped");
    kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        "apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n",
    );
    // Pods that were there first: the controller counts only those each quota selects.
    kubectl_stdin(&server, &["create", "-f", "-"], &pod("burstable", "scoped", Some("100m"), ""));
    kubectl_stdin(&server, &["create", "-f", "-"], &pod("besteffort", "scoped", None, ""));
    let best_effort = quota(&server, "scoped", "best-effort", "  hard: {pods: '2'}\n  scopes: [BestEffort]\n");
    assert!(best_effort.ok, "{}", best_effort.stderr);
    let high = "  hard: {pods: '1', requests.cpu: '1'}\n  scopeSelector:\n    matchExpressions:\n    \
                - {scopeName: PriorityClass, operator: In, values: [high]}\n";
    assert!(quota(&server, "scoped", "high", high).ok);
    wait_used(&server, "scoped", "best-effort", "pods", "1");
    wait_used(&server, "scoped", "high", "pods", "0");

    // Burstable pods do not count against the BestEffort quota; best-effort ones do.
    for name in ["burstable2", "burstable3"] {
        kubectl_stdin(&server, &["create", "-f", "-"], &pod(name, "scoped", Some("50m"), ""));
    }
    kubectl_stdin(&server, &["create", "-f", "-"], &pod("besteffort2", "scoped", None, ""));
    let besteffort3 = pod("besteffort3", "scoped", None, "");
    let full = "exceeded quota: best-effort, requested: pods=1, used: pods=2, limited: pods=2";
    refused(&server, &["create", "-f", "-"], Some(&besteffort3), full);

    // The PriorityClass quota counts pods of class `high` only.
    let important = pod("important", "scoped", Some("100m"), "  priorityClassName: high\n");
    kubectl_stdin(&server, &["create", "-f", "-"], &important);
    let second = pod("important2", "scoped", Some("100m"), "  priorityClassName: high\n");
    let full = "exceeded quota: high, requested: pods=1, used: pods=1, limited: pods=1";
    refused(&server, &["create", "-f", "-"], Some(&second), full);
    kubectl_stdin(&server, &["create", "-f", "-"], &pod("ordinary", "scoped", Some("100m"), ""));
    assert_eq!(used(&server, "scoped", "high", "requests.cpu"), "100m");

    // status.used stays what admission charged once the controller has recomputed it.
    let pods = kubectl(&server, &["get", "pods", "-n", "scoped", "--no-headers"]);
    assert_eq!(pods.lines().count(), 7, "{pods}");
    kubectl(&server, &["delete", "pod", "burstable", "-n", "scoped", "--wait=false"]);
    wait_used(&server, "scoped", "best-effort", "pods", "2");
    wait_used(&server, "scoped", "high", "pods", "1");
    let scope = kubectl(
        &server,
        &["get", "quota", "high", "-n", "scoped", "-o", "jsonpath={.spec.scopeSelector.matchExpressions[0].values[0]}"],
    );
    assert_eq!(scope, "high");

    // Scopes are validated as upstream.
    let invalid = quota(&server, "scoped", "bad", "  hard: {requests.cpu: '1'}\n  scopes: [BestEffort]\n");
    assert!(!invalid.ok);
    assert!(
        invalid.stderr.contains(r#"spec.scopes: Invalid value: ["BestEffort"]: unsupported scope applied to resource"#),
        "{}",
        invalid.stderr
    );
    let conflicting = quota(&server, "scoped", "bad", "  hard: {pods: '1'}\n  scopes: [Terminating, NotTerminating]\n");
    assert!(!conflicting.ok && conflicting.stderr.contains("conflicting scopes"), "{}", conflicting.stderr);
    let changed = quota(&server, "scoped", "best-effort", "  hard: {pods: '2'}\n  scopes: [NotBestEffort]\n");
    assert!(!changed.ok && changed.stderr.contains("field is immutable"), "{}", changed.stderr);
}

#[test]
fn concurrent_creates_admit_exactly_the_object_count() {
    let server = hollow_server();
    namespace(&server, "race");
    assert!(quota(&server, "race", "maps", "  hard: {count/configmaps: '6', secrets: '3'}\n").ok);
    let results: Vec<(bool, Run)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let server = &server;
                scope.spawn(move || {
                    let name = format!("x{i}");
                    let config_map = i % 2 == 0;
                    let args: Vec<&str> = if config_map {
                        vec!["create", "configmap", &name, "-n", "race"]
                    } else {
                        vec!["create", "secret", "generic", &name, "-n", "race"]
                    };
                    (config_map, Run::from(server.kubectl(&args)))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a kubectl thread panicked"))).collect()
    });
    let admitted = |config_maps: bool| results.iter().filter(|(kind, run)| *kind == config_maps && run.ok).count();
    let first_refusal = results.iter().find(|(_, run)| !run.ok).map(|(_, run)| run.stderr.clone());
    // kube-root-ca.crt holds one of the six config maps.
    assert_eq!(admitted(true), 5, "{first_refusal:?}");
    assert_eq!(admitted(false), 3, "{first_refusal:?}");
    assert!(
        results.iter().filter(|(_, run)| !run.ok).all(|(_, run)| run.stderr.contains("exceeded quota: maps")),
        "{first_refusal:?}"
    );
    let listed = kubectl(&server, &["get", "configmaps", "-n", "race", "--no-headers"]);
    assert_eq!(listed.lines().count(), 6, "{listed}");
    assert_eq!(used(&server, "race", "maps", "count/configmaps"), "6");
    assert_eq!(used(&server, "race", "maps", "secrets"), "3");
}

/// Store reads of `ResourceQuotas` so far, from `/metrics`.
fn quota_reads(server: &CapstanServer) -> u64 {
    let metrics = kubectl(server, &["get", "--raw", "/metrics"]);
    let series = "capstan_store_request_duration_seconds_count{operation=\"range\",type=\"resourcequotas\"}";
    metrics.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok()).unwrap_or_default()
}

#[test]
fn a_namespace_without_quotas_costs_creates_no_store_reads_and_a_new_quota_counts_at_once() {
    let server = hollow_server();
    // Its kube-root-ca.crt config map was the namespace's first create: the quota policy's live
    // lookup found no quota there.
    namespace(&server, "free");
    let creates = 40;
    let list: Vec<String> = (0..creates)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: cm-{i}, namespace: free}}\n"))
        .collect();
    let list = list.join("---\n");
    let before = quota_reads(&server);
    kubectl_stdin(&server, &["create", "-f", "-"], &list);
    let reads = quota_reads(&server) - before;
    // Each create listed the namespace's quotas from the store before.
    assert!(reads <= 1, "{creates} creates in a namespace without quotas read its quotas from the store {reads} times");

    // A quota made now counts from the next create on: the cache lists it, and listed quotas are
    // read from the store.
    let applied = quota(&server, "free", "cap", &format!("  hard: {{count/configmaps: '{}'}}\n", creates + 1));
    assert!(applied.ok, "{}", applied.stderr);
    refused(
        &server,
        &["create", "configmap", "one-more", "-n", "free"],
        None,
        &format!("exceeded quota: cap, requested: count/configmaps=1, used: count/configmaps={}", creates + 1),
    );
}
