//! Plugin objects through the real kubectl: an admission policy loaded from a component denies
//! and admits writes, reports itself in `kubectl get plugins`, and survives a broken update.

use std::time::{Duration, Instant};

use capstan_e2e::{CapstanServer, json, kubectl, kubectl_fails, kubectl_stdin, server};

fn plugin(component: &str) -> String {
    format!(
        r"apiVersion: capstan.io/v1alpha1
kind: Plugin
metadata:
  name: require-app-label
spec:
  kind: admission
  component:
    path: {component:?}
  config:
    label: app
  admission:
    failurePolicy: Fail
    rules:
    - operations: [CREATE, UPDATE]
      apiGroups: [apps]
      apiVersions: [v1]
      resources: [deployments]
"
    )
}

fn deployment(name: &str, labels: &str) -> String {
    format!(
        r"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  labels: {labels}
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

/// The cells of the plugin's row in `kubectl get plugins`.
fn plugin_row(server: &CapstanServer) -> Vec<String> {
    let table = kubectl(server, &["get", "plugins", "--no-headers"]);
    let line = table.lines().find(|l| l.starts_with("require-app-label")).unwrap_or_default();
    line.split_whitespace().map(str::to_string).collect()
}

#[test]
fn an_admission_plugin_denies_admits_reports_and_survives_a_broken_update() {
    let component = capstan_testbed::component_path("require-label").unwrap_or_else(|e| panic!("{e}"));
    let server = server();
    let component = component.to_string_lossy().into_owned();
    kubectl_stdin(&server, &["apply", "-f", "-"], &plugin(&component));

    let denied = kubectl_fails(&server, &["apply", "-f", "-"], Some(&deployment("bare", "{tier: bare}")));
    assert!(
        denied.stderr.contains(r#"admission webhook "require-app-label" denied the request"#)
            && denied.stderr.contains("must have the label `app`"),
        "kubectl should show the policy's message:\n{}",
        denied.stderr
    );
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment("labelled", "{app: web}"));
    kubectl(&server, &["get", "deployment", "labelled"]);
    let unlabel = kubectl_fails(&server, &["label", "deployment", "labelled", "app-"], None);
    assert!(unlabel.stderr.contains("must have the label `app`"), "updates are admitted too:\n{}", unlabel.stderr);

    let deadline = Instant::now() + Duration::from_secs(20);
    let row = loop {
        let row = plugin_row(&server);
        let calls: u64 = row.get(4).and_then(|c| c.parse().ok()).unwrap_or(0);
        if row.get(3).map(String::as_str) == Some("Loaded") && calls >= 3 {
            break row;
        }
        assert!(Instant::now() < deadline, "plugin never showed Loaded with 3 calls: {row:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(row.get(1).map(String::as_str), Some("admission"), "{row:?}");
    let yaml = kubectl(&server, &["get", "plugin", "require-app-label", "-o", "yaml"]);
    assert!(yaml.contains("digest:"), "status shows a digest:\n{yaml}");
    let digest =
        json(&kubectl(&server, &["get", "plg", "require-app-label", "-o", "json"]))["status"]["digest"].clone();

    let broken = server.dir().join("broken.wasm");
    std::fs::write(&broken, "this is not a component")
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", broken.display()));
    kubectl_stdin(&server, &["apply", "-f", "-"], &plugin(&broken.to_string_lossy()));
    let still_denied = kubectl_fails(&server, &["apply", "-f", "-"], Some(&deployment("bare", "{tier: bare}")));
    assert!(
        still_denied.stderr.contains("must have the label `app`"),
        "the old version keeps serving:\n{}",
        still_denied.stderr
    );
    let status = json(&kubectl(&server, &["get", "plugin", "require-app-label", "-o", "json"]))["status"].clone();
    assert_eq!(status["state"], "Failed", "{status}");
    assert_eq!(status["digest"], digest, "the serving version's digest stays: {status}");
    let reason = status["lastError"].as_str().unwrap_or_default();
    assert!(reason.contains("does not compile as a WebAssembly component"), "status says why: {status}");
}

/// Waits until `kubectl get plugin NAME` shows `state`.
fn wait_for_state(server: &CapstanServer, name: &str, state: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let run = server.kubectl(&["get", "plugin", name, "-o", "jsonpath={.status.state}"]);
        if String::from_utf8_lossy(&run.stdout) == state {
            return;
        }
        assert!(Instant::now() < deadline, "plugin {name} never reached {state}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_component_dropped_into_the_plugins_directory_is_loaded_and_removed_with_its_file() {
    let component = capstan_testbed::component_path("require-label").unwrap_or_else(|e| panic!("{e}"));
    let server = server();
    let dir = server.dir().join("plugins");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    let settings = "config: {label: app}\nadmission:\n  rules:\n  - {operations: [CREATE], apiGroups: [apps], apiVersions: [v1], resources: [deployments]}\n";
    std::fs::write(dir.join("dropped.yaml"), settings).unwrap_or_else(|e| panic!("{e}"));
    std::fs::copy(&component, dir.join("dropped.wasm")).unwrap_or_else(|e| panic!("{e}"));
    wait_for_state(&server, "dropped", "Loaded");
    let denied = kubectl_fails(&server, &["apply", "-f", "-"], Some(&deployment("bare", "{tier: bare}")));
    assert!(denied.stderr.contains(r#"admission webhook "dropped" denied the request"#), "{}", denied.stderr);
    std::fs::remove_file(dir.join("dropped.wasm")).unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.kubectl(&["get", "plugin", "dropped"]).status.success() {
        assert!(Instant::now() < deadline, "the plugin outlived its file");
        std::thread::sleep(Duration::from_millis(200));
    }
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment("bare", "{tier: bare}"));
}

#[test]
fn a_component_in_a_config_map_is_loaded() {
    let component = capstan_testbed::component_path("require-label").unwrap_or_else(|e| panic!("{e}"));
    let server = server();
    let component = component.to_string_lossy().into_owned();
    kubectl(
        &server,
        &["create", "configmap", "policy", "-n", "kube-system", &format!("--from-file=policy.wasm={component}")],
    );
    let manifest = plugin(&component).replace(
        &format!("    path: {component:?}"),
        "    configMap: {namespace: kube-system, name: policy, key: policy.wasm}",
    );
    kubectl_stdin(&server, &["apply", "-f", "-"], &manifest);
    wait_for_state(&server, "require-app-label", "Loaded");
    let denied = kubectl_fails(&server, &["apply", "-f", "-"], Some(&deployment("bare", "{tier: bare}")));
    assert!(denied.stderr.contains("must have the label `app`"), "{}", denied.stderr);
}

#[test]
fn plugin_metrics_are_on_the_metrics_endpoint() {
    let server = server();
    kubectl(&server, &["run", "probe", "--image=busybox:1"]);
    let metrics = kubectl(&server, &["get", "--raw", "/metrics"]);
    assert!(
        metrics.lines().any(|l| l.starts_with("capstan_plugin_calls_total{") && l.contains("pod-security")),
        "the built-in policies' call counts are exported:\n{}",
        metrics.lines().filter(|l| l.starts_with("capstan_plugin")).collect::<Vec<_>>().join("\n")
    );
    assert!(metrics.contains("capstan_plugin_call_duration_seconds_bucket{"), "a latency histogram");
}

fn capstan(args: &[&str], dir: &std::path::Path) -> capstan_e2e::Run {
    let binary = capstan_testbed::capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let output = std::process::Command::new(binary)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run capstan: {e}"));
    capstan_e2e::Run::from(output)
}

#[test]
fn capstan_plugin_inspect_new_and_build() {
    let component = capstan_testbed::component_path("require-label").unwrap_or_else(|e| panic!("{e}"));
    let work = std::env::temp_dir().join(format!("capstan-plugin-cli-{}", std::process::id()));
    std::fs::create_dir_all(&work).unwrap_or_else(|e| panic!("{e}"));
    let inspected = capstan(&["plugin", "inspect", &component.to_string_lossy()], &work);
    assert!(inspected.ok, "{}", inspected.stderr);
    assert!(inspected.stdout.contains("world:   capstan:plugin/admission-policy"), "{}", inspected.stdout);
    assert!(inspected.stdout.contains("capstan:plugin/admission@0.1.0"), "exports are listed: {}", inspected.stdout);
    assert!(inspected.stdout.contains("size:"), "{}", inspected.stdout);

    for lang in ["rust", "python", "js"] {
        let name = format!("{lang}-policy");
        let created = capstan(&["plugin", "new", "--kind", "admission", "--lang", lang, &name], &work);
        assert!(created.ok, "{}", created.stderr);
        assert!(work.join(&name).join("plugin.yaml").is_file(), "{lang} template has a Plugin manifest");
    }
    let built = capstan(&["plugin", "build", "python-policy"], &work);
    assert!(built.ok, "{}{}", built.stdout, built.stderr);
    let inspected = capstan(&["plugin", "inspect", "python-policy/python-policy.wasm"], &work);
    assert!(inspected.stdout.contains("world:   capstan:plugin/admission-policy"), "{}", inspected.stdout);
    let _ = std::fs::remove_dir_all(&work);
}
