//! Admission through the real kubectl: policies' warnings, patches, failure policies, deadlines,
//! dry-run and subresources; CEL match conditions; the built-in policies Capstan ships and enables
//! by default.

use std::time::{Duration, Instant};

use capstan_e2e::{CapstanServer, Run, eventually, json, kubectl, kubectl_fails, kubectl_stdin, sdk_example, server};

/// A Plugin object for an admission component.
fn policy(name: &str, component: &str, mutating: bool, extra: &str, rules: &str) -> String {
    format!(
        r"apiVersion: capstan.io/v1alpha1
kind: Plugin
metadata:
  name: {name}
spec:
  kind: admission
  component:
    path: {component:?}
{extra}
  admission:
    mutating: {mutating}
    rules:
{rules}
"
    )
}

fn component(name: &str) -> String {
    capstan_testbed::component_path(name).unwrap_or_else(|e| panic!("{e}")).to_string_lossy().into_owned()
}

/// Applies a Plugin and waits until it is loaded.
fn load(server: &CapstanServer, manifest: &str, name: &str) {
    kubectl_stdin(server, &["apply", "-f", "-"], manifest);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let state = kubectl(server, &["get", "plugin", name, "-o", "jsonpath={.status.state}"]);
        if state == "Loaded" {
            return;
        }
        assert!(Instant::now() < deadline, "plugin {name} never loaded: {state}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

const CONFIGMAP_RULES: &str = "    - operations: [CREATE]
      apiGroups: ['']
      apiVersions: [v1]
      resources: [configmaps]";

const DEPLOYMENT_RULES: &str = "    - operations: [CREATE, UPDATE]
      apiGroups: [apps]
      apiVersions: [v1]
      resources: [deployments]";

fn deployment(name: &str) -> String {
    format!(
        r"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
spec:
  selector:
    matchLabels: {{tier: {name}}}
  template:
    metadata:
      labels: {{tier: {name}}}
    spec:
      containers:
      - name: main
        image: busybox:1
"
    )
}

fn run(server: &CapstanServer, args: &[&str], stdin: Option<&str>) -> Run {
    Run::from(server.kubectl_with_stdin(args, stdin))
}

/// Creates a namespace with labels (`kubectl create` sends protobuf, which Capstan does not read).
fn namespace(server: &CapstanServer, name: &str, labels: &str) {
    let manifest = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n");
    kubectl_stdin(server, &["apply", "-f", "-"], &manifest);
}

fn config_map(name: &str, namespace: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\n")
}

#[test]
fn a_mutating_policy_patches_and_warns_then_validation_sees_the_patch_and_dry_run_writes_nothing() {
    let server = server();
    let setter = policy(
        "label-setter",
        &component("fixture-label-setter"),
        true,
        "  config:\n    labels: {app: set-by-policy}\n    warning: label-setter saw it",
        DEPLOYMENT_RULES,
    );
    load(&server, &setter, "label-setter");
    let require = policy("require-app", &component("require-label"), false, "  config: {label: app}", DEPLOYMENT_RULES);
    load(&server, &require, "require-app");

    let created = run(&server, &["apply", "-f", "-"], Some(&deployment("web")));
    assert!(created.ok, "the patched deployment passes validation: {}", created.stderr);
    assert!(
        created.stderr.contains(
            "Warning: label-setter saw it (dryRun=false, subResource=none, kind=Deployment, \
             options=CreateOptions from kubectl-client-side-apply)"
        ),
        "kubectl shows the policy's warning:\n{}",
        created.stderr
    );
    let labels = json(&kubectl(&server, &["get", "deployment", "web", "-o", "json"]))["metadata"]["labels"].clone();
    assert_eq!(labels["app"], "set-by-policy", "the mutating policy's patch is stored: {labels}");

    let dry = run(&server, &["create", "--dry-run=server", "-o", "name", "-f", "-"], Some(&deployment("dry")));
    assert!(dry.ok, "{}", dry.stderr);
    assert!(dry.stderr.contains("(dryRun=true"), "policies see dryRun=true:\n{}", dry.stderr);
    let missing = kubectl_fails(&server, &["get", "deployment", "dry"], None);
    assert!(missing.stderr.contains("NotFound"), "a dry run writes nothing: {}", missing.stderr);
}

/// The value of a series on `/metrics`, if it is there.
fn metric<T: std::str::FromStr>(metrics: &str, series: &str) -> Option<T> {
    metrics.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[test]
fn admission_latency_is_on_metrics_per_phase_and_per_policy_with_its_outcome() {
    let server = server();
    let require = policy("require-app", &component("require-label"), false, "  config: {label: app}", DEPLOYMENT_RULES);
    load(&server, &require, "require-app");
    let denied = run(&server, &["apply", "-f", "-"], Some(&deployment("unlabelled")));
    assert!(!denied.ok && denied.stderr.contains("denied the request"), "{}", denied.stderr);
    let labelled = deployment("labelled").replacen("  name: labelled\n", "  name: labelled\n  labels: {app: web}\n", 1);
    let created = run(&server, &["apply", "-f", "-"], Some(&labelled));
    assert!(created.ok, "{}", created.stderr);

    let metrics = kubectl(&server, &["get", "--raw", "/metrics"]);
    let policy = "apiserver_admission_webhook_admission_duration_seconds";
    for rejected in [true, false] {
        let labels = format!("name=\"require-app\",operation=\"CREATE\",rejected=\"{rejected}\",type=\"validate\"");
        let count = metric::<u64>(&metrics, &format!("{policy}_count{{{labels}}}"));
        assert_eq!(count, Some(1), "one {rejected} call of the policy is counted:\n{metrics}");
        let all = metric::<u64>(&metrics, &format!("{policy}_bucket{{{labels},le=\"+Inf\"}}"));
        assert_eq!(all, Some(1), "its histogram holds it:\n{metrics}");
        let took = metric::<f64>(&metrics, &format!("{policy}_sum{{{labels}}}"));
        assert!(took.is_some_and(|s| s > 0.0), "it took time:\n{metrics}");
    }
    let step = "apiserver_admission_step_admission_duration_seconds_count";
    let rejections =
        metric::<u64>(&metrics, &format!("{step}{{operation=\"CREATE\",rejected=\"true\",type=\"validate\"}}"));
    assert!(rejections >= Some(1), "the validating phase that refused the deployment is counted:\n{metrics}");
    let mutations =
        metric::<u64>(&metrics, &format!("{step}{{operation=\"CREATE\",rejected=\"false\",type=\"admit\"}}"));
    assert!(mutations >= Some(2), "both creates passed a mutating phase (with no policy in it):\n{metrics}");
}

#[test]
fn scale_goes_through_admission_with_its_subresource() {
    let server = server();
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment("web"));
    let rules = "    - operations: [UPDATE]
      apiGroups: [apps]
      apiVersions: [v1]
      resources: [deployments/scale]";
    let setter =
        policy("scale-watcher", &component("fixture-label-setter"), false, "  config:\n    warning: scale seen", rules);
    load(&server, &setter, "scale-watcher");
    let scaled = run(&server, &["scale", "deployment", "web", "--replicas=3"], None);
    assert!(scaled.ok, "{}", scaled.stderr);
    assert!(
        scaled.stderr.contains("Warning: scale seen (dryRun=false, subResource=scale, kind=Scale, options="),
        "the scale subresource is admitted as a Scale:\n{}",
        scaled.stderr
    );
    let labelled = run(&server, &["label", "deployment", "web", "x=y"], None);
    assert!(!labelled.stderr.contains("scale seen"), "a rule for deployments/scale skips the main resource");
}

#[test]
fn a_policy_past_its_deadline_follows_its_failure_policy() {
    let server = server();
    let rules = CONFIGMAP_RULES;
    let looping = |failure: &str| {
        policy("spinner", &component("fixture-loop-forever"), false, "", rules)
            .replace("  admission:\n", &format!("  admission:\n    timeoutSeconds: 1\n    failurePolicy: {failure}\n"))
    };
    load(&server, &looping("Fail"), "spinner");
    let failed = kubectl_fails(&server, &["apply", "-f", "-"], Some(&config_map("refused", "default")));
    assert!(
        failed.stderr.contains(r#"failed calling admission plugin "spinner""#) && failed.stderr.contains("deadline"),
        "Fail refuses the request and says why:\n{}",
        failed.stderr
    );
    kubectl_fails(&server, &["get", "configmap", "refused"], None);
    kubectl_stdin(&server, &["apply", "-f", "-"], &looping("Ignore"));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let attempt = run(&server, &["apply", "-f", "-"], Some(&config_map("admitted", "default")));
        if attempt.ok {
            break;
        }
        assert!(Instant::now() < deadline, "Ignore never admitted the request: {}", attempt.stderr);
    }
    kubectl(&server, &["get", "configmap", "admitted"]);
}

#[test]
fn a_panicking_policy_fails_each_call_with_its_message_and_the_server_serves_on() {
    // The guest's panic message goes to its stderr: a blocking WASI write, which the first call,
    // tried on the request's worker thread, cannot make there. That call is made again on a
    // blocking thread, and the next ones start there; all of them fail the same clear way.
    let server = server();
    let rules = CONFIGMAP_RULES;
    load(&server, &policy("panicky", &component("fixture-trap"), false, "", rules), "panicky");
    for name in ["first", "second", "third"] {
        let failed = kubectl_fails(&server, &["apply", "-f", "-"], Some(&config_map(name, "default")));
        assert!(
            failed.stderr.contains(r#"failed calling admission plugin "panicky""#)
                && failed.stderr.contains(&format!("fixture trap while admitting \"{name}\"")),
            "the policy's panic is the refusal's reason:\n{}",
            failed.stderr
        );
    }
    kubectl(&server, &["delete", "plugin", "panicky"]);
    eventually(Duration::from_secs(20), "a create once the policy is gone", || {
        run(&server, &["apply", "-f", "-"], Some(&config_map("after", "default"))).ok.then_some(())
    });
    kubectl(&server, &["get", "configmap", "after"]);
}

#[test]
fn namespace_selectors_pick_the_namespaces_a_policy_sees() {
    let server = server();
    namespace(&server, "watched", "policy: 'on'");
    namespace(&server, "ignored", "");
    let rules = CONFIGMAP_RULES;
    let manifest = policy("selective", &component("require-label"), false, "  config: {label: app}", rules)
        .replace("  admission:\n", "  admission:\n    namespaceSelector: {matchLabels: {policy: 'on'}}\n");
    // A selector that does not parse is refused when the Plugin is written, naming the field.
    let broken = manifest.replace(
        "    namespaceSelector:",
        "    objectSelector: {matchExpressions: [{key: tier, operator: Near, values: [x]}]}\n    namespaceSelector:",
    );
    let refused = kubectl_fails(&server, &["apply", "-f", "-"], Some(&broken));
    assert!(refused.stderr.contains("spec.admission.objectSelector: Invalid value"), "{}", refused.stderr);
    load(&server, &manifest, "selective");
    let denied = kubectl_fails(&server, &["apply", "-f", "-"], Some(&config_map("c", "watched")));
    assert!(denied.stderr.contains("must have the label `app`"), "{}", denied.stderr);
    kubectl_stdin(&server, &["apply", "-f", "-"], &config_map("c", "ignored"));
}

#[test]
fn match_conditions_decide_which_requests_a_policy_sees() {
    let server = server();
    let rules = |resource: &str| {
        format!("    - {{operations: [CREATE], apiGroups: [''], apiVersions: [v1], resources: [{resource}]}}")
    };
    let with =
        |manifest: String, admission: &str| manifest.replace("  admission:\n", &format!("  admission:\n{admission}"));
    let require =
        policy("conditional", &component("require-label"), false, "  config: {label: app}", &rules("configmaps"));

    // An expression that is not CEL is refused when the Plugin is written, naming the field.
    let broken = with(require.clone(), "    matchConditions:\n    - {name: typo, expression: 'object.metadata.('}\n");
    let refused = kubectl_fails(&server, &["apply", "-f", "-"], Some(&broken));
    assert!(
        refused.stderr.contains("spec.admission.matchConditions[0].expression: Invalid value")
            && refused.stderr.contains("compilation failed"),
        "{}",
        refused.stderr
    );

    // Drafts (label `draft`) are skipped; everything else still needs `app`.
    let conditions = "    matchConditions:\n    - {name: not-a-draft, expression: \"!has(object.metadata.labels) || !('draft' in \
                      object.metadata.labels)\"}\n    - {name: people, expression: \"request.userInfo.username != ''\"}\n";
    load(&server, &with(require, conditions), "conditional");
    let denied = kubectl_fails(&server, &["create", "configmap", "plain"], None);
    assert!(denied.stderr.contains("must have the label `app`"), "{}", denied.stderr);
    let draft = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: sketch, labels: {draft: 'yes'}}\n";
    kubectl_stdin(&server, &["create", "-f", "-"], draft);

    // A condition that fails to evaluate follows the failure policy: Fail refuses, Ignore skips.
    let failing = |failure: &str| {
        let manifest =
            policy("strict", &component("require-label"), false, "  config: {label: app}", &rules("secrets"));
        with(
            manifest,
            &format!(
                "    failurePolicy: {failure}\n    matchConditions:\n    - {{name: no-spec, expression: 'object.spec.x == 1'}}\n"
            ),
        )
    };
    load(&server, &failing("Fail"), "strict");
    let failed = kubectl_fails(&server, &["create", "secret", "generic", "s1"], None);
    assert!(
        failed
            .stderr
            .contains("failed calling admission plugin \"strict\": failed to evaluate match condition no-spec"),
        "{}",
        failed.stderr
    );
    load(&server, &failing("Ignore"), "strict");
    eventually(Duration::from_secs(30), "the Ignore failure policy", || {
        server.kubectl(&["create", "secret", "generic", "s2"]).status.success().then_some(())
    });
}

fn pod(name: &str, extra_spec: &str) -> String {
    format!(
        r"apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
{extra_spec}
  containers:
  - name: main
    image: busybox:1
"
    )
}

#[test]
fn built_in_policies_are_listed_and_default_pods() {
    let server = server();
    let plugins = kubectl(&server, &["get", "plugins"]);
    for builtin in [
        "namespace-lifecycle",
        "service-account",
        "limit-ranger",
        "priority",
        "default-toleration-seconds",
        "pod-security",
        "resource-quota",
    ] {
        assert!(plugins.lines().any(|l| l.starts_with(builtin) && l.contains("Loaded")), "{builtin}:\n{plugins}");
    }
    kubectl_stdin(&server, &["apply", "-f", "-"], &pod("plain", ""));
    let spec = json(&kubectl(&server, &["get", "pod", "plain", "-o", "json"]))["spec"].clone();
    assert_eq!(spec["serviceAccountName"], "default", "{spec}");
    assert_eq!(spec["priority"], 0, "{spec}");
    let tolerations = spec["tolerations"].to_string();
    assert!(
        tolerations.contains("node.kubernetes.io/not-ready") && tolerations.contains("300"),
        "default toleration seconds: {tolerations}"
    );

    kubectl_stdin(&server, &["apply", "-f", "-"], &pod("critical", "  priorityClassName: system-node-critical"));
    let priority = kubectl(&server, &["get", "pod", "critical", "-o", "jsonpath={.spec.priority}"]);
    assert_eq!(priority, "2000001000");
    let unknown = kubectl_fails(&server, &["apply", "-f", "-"], Some(&pod("odd", "  priorityClassName: nope")));
    assert!(unknown.stderr.contains("no PriorityClass with name nope was found"), "{}", unknown.stderr);

    let missing = kubectl_fails(&server, &["apply", "-f", "-"], Some(&config_map("c", "nowhere")));
    assert!(missing.stderr.contains("namespaces \"nowhere\" not found"), "{}", missing.stderr);

    // NamespaceLifecycle keeps the system namespaces, as upstream; other namespaces go.
    for system in ["default", "kube-system", "kube-public"] {
        let refused = kubectl_fails(&server, &["delete", "namespace", system, "--wait=false"], None);
        assert!(
            refused.stderr.contains("Forbidden") && refused.stderr.contains("this namespace may not be deleted"),
            "{system}: {}",
            refused.stderr
        );
        kubectl(&server, &["get", "namespace", system]);
    }
    namespace(&server, "short-lived", "");
    kubectl(&server, &["delete", "namespace", "short-lived", "--wait=false"]);
}

#[test]
fn limit_ranges_default_and_bound_containers() {
    let server = server();
    let range = r#"apiVersion: v1
kind: LimitRange
metadata:
  name: cpu
spec:
  limits:
  - type: Container
    default: {cpu: "500m"}
    defaultRequest: {cpu: "100m"}
    max: {cpu: "1"}
    maxLimitRequestRatio: {cpu: "5"}
"#;
    kubectl_stdin(&server, &["apply", "-f", "-"], range);
    kubectl_stdin(&server, &["apply", "-f", "-"], &pod("defaulted", ""));
    let resources =
        json(&kubectl(&server, &["get", "pod", "defaulted", "-o", "json"]))["spec"]["containers"][0]["resources"]
            .clone();
    assert_eq!(resources["limits"]["cpu"], "500m", "{resources}");
    assert_eq!(resources["requests"]["cpu"], "100m", "{resources}");
    let big =
        pod("big", "").replace("    image: busybox:1\n", "    image: busybox:1\n    resources: {limits: {cpu: '2'}}\n");
    let refused = kubectl_fails(&server, &["apply", "-f", "-"], Some(&big));
    assert!(refused.stderr.contains("maximum cpu usage per Container is 1, but limit is 2"), "{}", refused.stderr);
    let greedy = pod("greedy", "").replace(
        "    image: busybox:1\n",
        "    image: busybox:1\n    resources: {requests: {cpu: 100m}, limits: {cpu: 800m}}\n",
    );
    let refused = kubectl_fails(&server, &["apply", "-f", "-"], Some(&greedy));
    assert!(
        refused.stderr.contains("cpu max limit to request ratio per Container is 5, but provided ratio is 8.000000"),
        "{}",
        refused.stderr
    );
}

#[test]
fn pod_security_restricted_rejects_a_privileged_pod_and_warn_only_warns() {
    let server = server();
    namespace(&server, "locked", "pod-security.kubernetes.io/enforce: restricted");
    namespace(&server, "watched", "pod-security.kubernetes.io/warn: baseline");
    let privileged = pod("root", "")
        .replace("    image: busybox:1\n", "    image: busybox:1\n    securityContext: {privileged: true}\n");
    let refused = kubectl_fails(&server, &["apply", "-n", "locked", "-f", "-"], Some(&privileged));
    assert!(
        refused.stderr.contains(r#"violates PodSecurity "restricted:latest""#) && refused.stderr.contains("privileged"),
        "{}",
        refused.stderr
    );
    let warned = run(&server, &["apply", "-n", "watched", "-f", "-"], Some(&privileged));
    assert!(warned.ok, "{}", warned.stderr);
    assert!(
        warned.stderr.contains(r#"Warning: would violate PodSecurity "baseline:latest""#),
        "warn mode warns:\n{}",
        warned.stderr
    );
}

#[test]
fn resource_quota_admits_exactly_its_limit_under_20_concurrent_creates() {
    let server = server();
    namespace(&server, "q", "");
    let quota =
        "apiVersion: v1\nkind: ResourceQuota\nmetadata: {name: pods, namespace: q}\nspec:\n  hard: {pods: '7'}\n";
    kubectl_stdin(&server, &["apply", "-f", "-"], quota);
    let results: Vec<Run> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..20)
            .map(|i| {
                let server = &server;
                scope.spawn(move || run(server, &["apply", "-n", "q", "-f", "-"], Some(&pod(&format!("p{i}"), ""))))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or_else(|_| panic!("a kubectl thread panicked"))).collect()
    });
    let admitted = results.iter().filter(|r| r.ok).count();
    let refusals: Vec<&Run> = results.iter().filter(|r| !r.ok).collect();
    assert_eq!(admitted, 7, "exactly the quota is admitted; refusals: {:?}", refusals.first().map(|r| &r.stderr));
    assert!(
        refusals
            .iter()
            .all(|r| r.stderr.contains("exceeded quota: pods, requested: pods=1, used: pods=7, limited: pods=7")),
        "{:?}",
        refusals.first().map(|r| &r.stderr)
    );
    let listed = kubectl(&server, &["get", "pods", "-n", "q", "--no-headers"]);
    assert_eq!(listed.lines().count(), 7, "{listed}");
    let used = kubectl(&server, &["get", "quota", "pods", "-n", "q", "-o", "jsonpath={.status.used.pods}"]);
    assert_eq!(used, "7");

    // Which 7 of the 20 got in is up to the race; release one of them.
    let first = listed.split_whitespace().next().unwrap_or_default().to_owned();
    kubectl(&server, &["delete", "pod", &first, "-n", "q", "--wait=false"]);
    let used = kubectl(&server, &["get", "quota", "pods", "-n", "q", "-o", "jsonpath={.status.used.pods}"]);
    assert_eq!(used, "6", "deleting releases the pod's charge");
}

const POD_RULES: &str = "    - operations: [CREATE]
      apiGroups: ['']
      apiVersions: [v1]
      resources: [pods]";

#[test]
fn a_python_policy_gives_pods_their_namespace_team_label() {
    let component = sdk_example("sdk/python/build", "sdk/python/examples/default-team", "default_team.wasm");
    let server = server();
    load(&server, &policy("default-team", &component, true, "", POD_RULES), "default-team");
    namespace(&server, "payments", "team: billing");
    kubectl_stdin(&server, &["apply", "-n", "payments", "-f", "-"], &pod("teamless", ""));
    let team =
        kubectl(&server, &["get", "pod", "teamless", "-n", "payments", "-o", "jsonpath={.metadata.labels.team}"]);
    assert_eq!(team, "billing", "the Python policy labelled the pod from its namespace");
    kubectl_stdin(&server, &["apply", "-f", "-"], &pod("elsewhere", ""));
    let none = kubectl(&server, &["get", "pod", "elsewhere", "-o", "jsonpath={.metadata.labels}"]);
    assert!(!none.contains("team"), "namespaces without a team label add none: {none}");
}

#[test]
fn a_javascript_policy_denies_images_from_registries_off_its_allow_list() {
    let component =
        sdk_example("sdk/js/build", "sdk/js/examples/registry-allow-list/policy.js", "registry_allow_list.wasm");
    let server = server();
    let config = "  config:\n    allowedRegistries: [registry.example.com]";
    load(&server, &policy("registries", &component, false, config, POD_RULES), "registries");
    let refused = kubectl_fails(&server, &["apply", "-f", "-"], Some(&pod("hub", "")));
    assert!(
        refused.stderr.contains(r#"admission webhook "registries" denied the request"#)
            && refused.stderr.contains(r#"from registry "docker.io", which is not on the allow-list"#),
        "{}",
        refused.stderr
    );
    let ours = pod("ours", "").replace("busybox:1", "registry.example.com/tools/busybox:1");
    kubectl_stdin(&server, &["apply", "-f", "-"], &ours);
}

/// Starts a server with two hollow nodes, so pods run (hollowly) and `kubectl exec` gets as far
/// as the node.
fn hollow_server() -> CapstanServer {
    CapstanServer::start_with(&["--hollow-nodes", "2"]).unwrap_or_else(|e| panic!("{e}"))
}

/// Waits until pod `name` runs.
fn wait_running(server: &CapstanServer, name: &str) {
    capstan_e2e::eventually(Duration::from_secs(30), &format!("pod {name} to run"), || {
        (kubectl(server, &["get", "pod", name, "-o", "jsonpath={.status.phase}"]) == "Running").then_some(())
    });
}

const ESCALATION: &str = "cannot exec into or attach to a privileged container";

#[test]
fn connect_admission_refuses_exec_into_a_privileged_pod_before_the_node_and_sees_port_forward_options() {
    let server = hollow_server();
    let privileged = pod("root", "")
        .replace("    image: busybox:1\n", "    image: busybox:1\n    securityContext: {privileged: true}\n");
    kubectl_stdin(&server, &["apply", "-f", "-"], &privileged);
    kubectl_stdin(&server, &["apply", "-f", "-"], &pod("plain", ""));
    wait_running(&server, "root");
    wait_running(&server, "plain");

    // No policy: admission lets the exec through; it fails at the hollow node instead.
    let unguarded = kubectl_fails(&server, &["exec", "root", "--", "true"], None);
    assert!(unguarded.stderr.contains("Error from server"), "{}", unguarded.stderr);
    assert!(!unguarded.stderr.contains("Forbidden"), "{}", unguarded.stderr);

    let rules = "    - operations: [CONNECT]
      apiGroups: ['']
      apiVersions: [v1]
      resources: [pods/exec, pods/attach]";
    load(
        &server,
        &policy("deny-escalating-exec", &component("deny-escalating-exec"), false, "", rules),
        "deny-escalating-exec",
    );
    let refused = kubectl_fails(&server, &["exec", "root", "--", "true"], None);
    assert!(
        refused
            .stderr
            .contains(&format!(r#"admission webhook "deny-escalating-exec" denied the request: {ESCALATION}"#)),
        "{}",
        refused.stderr
    );
    let attach = kubectl_fails(&server, &["attach", "root"], None);
    assert!(attach.stderr.contains(ESCALATION), "attach is refused too: {}", attach.stderr);

    // An ordinary pod gets past admission and fails where the unguarded exec did.
    let ordinary = kubectl_fails(&server, &["exec", "plain", "--", "true"], None);
    assert!(ordinary.stderr.contains("Error from server"), "{}", ordinary.stderr);

    // Port-forward is a connect too: its options object reaches policies by kind.
    let forward_rules = "    - operations: [CONNECT]
      apiGroups: ['']
      apiVersions: [v1]
      resources: [pods/portforward]";
    let labelled =
        policy("forward-label", &component("require-label"), false, "  config: {label: team}", forward_rules);
    load(&server, &labelled, "forward-label");
    let forward = kubectl_fails(&server, &["port-forward", "pod/plain", "0:80"], None);
    assert!(
        forward.stderr.contains(r#"PodPortForwardOptions "plain" must have the label `team`"#),
        "{}",
        forward.stderr
    );
    assert!(!ordinary.stderr.contains("Forbidden") && !ordinary.stderr.contains(ESCALATION), "{}", ordinary.stderr);
}
