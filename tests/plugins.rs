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
