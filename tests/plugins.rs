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
    let dir = server.dir().join("data/plugins");
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
    let bytes = std::fs::read(&component).unwrap_or_else(|e| panic!("{e}"));
    let config_map = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: policy, namespace: kube-system}}\nbinaryData:\n  policy.wasm: {}\n",
        base64_encode(&bytes)
    );
    kubectl_stdin(&server, &["apply", "-f", "-"], &config_map);
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
    let pod =
        "apiVersion: v1\nkind: Pod\nmetadata: {name: probe}\nspec:\n  containers: [{name: c, image: 'busybox:1'}]\n";
    kubectl_stdin(&server, &["apply", "-f", "-"], pod);
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

/// `capstan plugin COMMAND …` in `dir`, with `env` added to its environment.
fn capstan_env(args: &[&str], dir: &std::path::Path, env: &[(&str, &std::path::Path)]) -> capstan_e2e::Run {
    let binary = capstan_testbed::capstan_binary().unwrap_or_else(|e| panic!("{e}"));
    let mut command = std::process::Command::new(binary);
    command.args(args).current_dir(dir);
    for (key, value) in env {
        command.env(key, value);
    }
    capstan_e2e::Run::from(command.output().unwrap_or_else(|e| panic!("cannot run capstan: {e}")))
}

const KINDS: [(&str, &str); 3] = [
    ("admission", "capstan:plugin/admission-policy"),
    ("scheduler", "capstan:plugin/scheduler-plugin"),
    ("controller", "capstan:plugin/controller"),
];

/// Creates, builds and inspects a project of every kind in every language in `work`; returns
/// the built components by project name (`<lang>-<kind>`).
fn new_build_and_inspect_every_template(work: &std::path::Path) -> Vec<(String, std::path::PathBuf)> {
    // The three Rust projects share one target directory kept between runs, so the SDK and its
    // dependencies are compiled once.
    let cargo_target = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-templates");
    let mut built = Vec::new();
    for (kind, world) in KINDS {
        for lang in ["rust", "python", "js"] {
            let name = format!("{lang}-{kind}");
            let created = capstan(&["plugin", "new", "--kind", kind, "--lang", lang, &name], work);
            assert!(created.ok, "{name}: {}", created.stderr);
            let manifest = std::fs::read_to_string(work.join(&name).join("plugin.yaml")).unwrap_or_default();
            assert!(manifest.contains(&format!("  kind: {kind}\n")), "{name} has a Plugin manifest:\n{manifest}");
            let started = Instant::now();
            let result = capstan_env(&["plugin", "build", &name], work, &[("CARGO_TARGET_DIR", &cargo_target)]);
            assert!(result.ok, "{name} builds:\n{}{}", result.stdout, result.stderr);
            eprintln!("{name}: built in {:.1?}", started.elapsed());
            let file = work.join(&name).join(format!("{name}.wasm"));
            let inspected = capstan(&["plugin", "inspect", &file.to_string_lossy()], work);
            assert!(inspected.ok, "{name}: {}", inspected.stderr);
            assert!(inspected.stdout.contains(&format!("world:   {world}\n")), "{name}:\n{}", inspected.stdout);
            built.push((name, file));
        }
    }
    built
}

/// The Plugin manifest `capstan plugin new` wrote for project `name`, pointing at `component`,
/// with its configuration line replaced by `config` when given.
fn template_manifest(work: &std::path::Path, name: &str, component: &std::path::Path, config: Option<&str>) -> String {
    let manifest = std::fs::read_to_string(work.join(name).join("plugin.yaml")).unwrap_or_else(|e| panic!("{e}"));
    let manifest = manifest.replace(&format!("/absolute/path/to/{name}.wasm"), &component.to_string_lossy());
    match config {
        Some(config) => manifest
            .lines()
            .map(|line| if line.starts_with("  config:") { format!("  config: {config}") } else { line.to_owned() })
            .collect::<Vec<_>>()
            .join("\n"),
        None => manifest,
    }
}

#[test]
fn capstan_plugin_new_builds_every_kind_and_language_and_the_templates_change_a_cluster() {
    let component = capstan_testbed::component_path("require-label").unwrap_or_else(|e| panic!("{e}"));
    let work = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let work = work.path();
    let inspected = capstan(&["plugin", "inspect", &component.to_string_lossy()], work);
    assert!(inspected.ok, "{}", inspected.stderr);
    assert!(inspected.stdout.contains("world:   capstan:plugin/admission-policy"), "{}", inspected.stdout);
    assert!(inspected.stdout.contains("capstan:plugin/admission@0.1.0"), "exports are listed: {}", inspected.stdout);
    assert!(inspected.stdout.contains("size:"), "{}", inspected.stdout);

    let built = new_build_and_inspect_every_template(work);
    let file = |name: &str| built.iter().find(|(n, _)| n == name).map(|(_, f)| f.clone()).unwrap_or_default();

    let server = CapstanServer::start_with(&["--hollow-nodes", "2"]).unwrap_or_else(|e| panic!("{e}"));
    // The Python scheduler template: only nodes labelled capstan.io/ready=true take pods.
    kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        &template_manifest(work, "python-scheduler", &file("python-scheduler"), None),
    );
    // Both controller templates, each writing its own annotation.
    for (name, annotation) in
        [("rust-controller", "capstan.io/rust-checksum"), ("js-controller", "capstan.io/js-checksum")]
    {
        let config = format!("{{label: capstan.io/checksum, annotation: {annotation}}}");
        kubectl_stdin(&server, &["apply", "-f", "-"], &template_manifest(work, name, &file(name), Some(&config)));
    }
    for name in ["python-scheduler", "rust-controller", "js-controller"] {
        wait_for_state(&server, name, "Loaded");
    }

    kubectl(&server, &["label", "node", "hollow-node-1", "capstan.io/ready=true"]);
    for i in 0..4 {
        let pod = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: placed-{i}}}\nspec:\n  containers: [{{name: c, image: 'busybox:1'}}]\n"
        );
        kubectl_stdin(&server, &["apply", "-f", "-"], &pod);
    }
    capstan_e2e::eventually(Duration::from_mins(1), "every pod scheduled", || {
        let nodes = kubectl(&server, &["get", "pods", "-o", "jsonpath={.items[*].spec.nodeName}"]);
        (nodes.split_whitespace().count() == 4).then_some(())
    });
    let nodes = kubectl(&server, &["get", "pods", "-o", "jsonpath={.items[*].spec.nodeName}"]);
    assert!(nodes.split_whitespace().all(|n| n == "hollow-node-1"), "only the labelled node takes pods: {nodes}");

    kubectl(&server, &["create", "configmap", "settings", "--from-literal=mode=fast", "--from-literal=size=3"]);
    kubectl(&server, &["create", "configmap", "unlabelled", "--from-literal=mode=slow"]);
    kubectl(&server, &["label", "configmap", "settings", "capstan.io/checksum=yes"]);
    let annotations = |name: &str| {
        json(&kubectl(&server, &["get", "configmap", name, "-o", "json"]))["metadata"]["annotations"].clone()
    };
    let first = capstan_e2e::eventually(Duration::from_secs(30), "both controllers annotate", || {
        let found = annotations("settings");
        let (rust, js) = (
            found["capstan.io/rust-checksum"].as_str()?.to_owned(),
            found["capstan.io/js-checksum"].as_str()?.to_owned(),
        );
        Some((rust, js))
    });
    assert_eq!(first.0, first.1, "both languages compute the same checksum");
    kubectl(&server, &["patch", "configmap", "settings", "--type=merge", "-p", r#"{"data":{"size":"4"}}"#]);
    capstan_e2e::eventually(Duration::from_secs(30), "the checksum follows the data", || {
        let found = annotations("settings");
        let rust = found["capstan.io/rust-checksum"].as_str()?;
        (rust != first.0 && Some(rust) == found["capstan.io/js-checksum"].as_str()).then_some(())
    });
    assert!(annotations("unlabelled").is_null(), "ConfigMaps without the label are left alone");

    // A trapping scheduler plugin's panic message reaches the pod's FailedScheduling event.
    kubectl(&server, &["delete", "plugin", "python-scheduler"]);
    let trap = capstan_testbed::component_path("trap-filter").unwrap_or_else(|e| panic!("{e}"));
    let trap_plugin = format!(
        "apiVersion: capstan.io/v1alpha1\nkind: Plugin\nmetadata: {{name: trap}}\nspec:\n  kind: scheduler\n  component: {{path: {:?}}}\n",
        trap.to_string_lossy()
    );
    kubectl_stdin(&server, &["apply", "-f", "-"], &trap_plugin);
    wait_for_state(&server, "trap", "Loaded");
    kubectl_stdin(
        &server,
        &["apply", "-f", "-"],
        "apiVersion: v1\nkind: Pod\nmetadata: {name: victim}\nspec:\n  containers: [{name: c, image: 'busybox:1'}]\n",
    );
    capstan_e2e::eventually(Duration::from_secs(30), "a FailedScheduling event with the panic message", || {
        let described = kubectl(&server, &["describe", "pod", "victim"]);
        (described.contains("FailedScheduling")
            && described.contains("panicked at")
            && described.contains("fixture trap while filtering victim"))
        .then_some(())
    });
}

/// Standard base64 (the tests package has no base64 crate; the format is four lines of code).
fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk.iter().enumerate().fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}
