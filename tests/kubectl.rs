//! The real `kubectl` against a `capstan server` started by each test: it must not notice that
//! it is not talking to kube-apiserver.

#![allow(clippy::expect_used, reason = "a test aborts on a failed expectation")]

use std::fmt::Write as _;

use std::time::Duration;

use capstan_e2e::{eventually, json, kubectl, kubectl_fails, kubectl_stdin, server};

/// The test harness starts a server again on another port when it exits at start (its port
/// taken meanwhile); one that cannot start at all is reported with its exit status, not waited
/// on for a minute.
#[test]
fn a_server_that_cannot_start_is_reported_with_its_exit_status() {
    let started = std::time::Instant::now();
    let Err(e) = capstan_e2e::CapstanServer::start_with(&["--no-such-flag"]) else {
        panic!("a server with an unknown flag started");
    };
    let message = e.to_string();
    assert!(message.contains("exited before printing its kubeconfig line (exit status: 2)"), "{message}");
    assert!(started.elapsed() < Duration::from_secs(30), "took {:?}", started.elapsed());
}

#[test]
fn version_reports_a_kubernetes_server() {
    let server = server();
    let version = json(&kubectl(&server, &["version", "-o", "json"]));
    assert_eq!(version["serverVersion"]["gitVersion"], "v1.32.2");
    assert_eq!(version["serverVersion"]["minor"], "32");
}

#[test]
fn api_resources_lists_builtin_kinds_with_short_names() {
    let server = server();
    let out = kubectl(&server, &["api-resources", "--no-headers"]);
    let rows: Vec<Vec<&str>> = out.lines().map(|l| l.split_whitespace().collect()).collect();
    let find = |name: &str| rows.iter().find(|r| r.first() == Some(&name)).cloned().unwrap_or_default();
    assert_eq!(find("pods"), ["pods", "po", "v1", "true", "Pod"]);
    assert_eq!(find("deployments"), ["deployments", "deploy", "apps/v1", "true", "Deployment"]);
    assert_eq!(find("nodes"), ["nodes", "no", "v1", "false", "Node"]);
    assert!(!find("customresourcedefinitions").is_empty(), "CRDs are served:\n{out}");
}

#[test]
fn the_default_namespaces_and_kubernetes_service_exist() {
    let server = server();
    let namespaces = kubectl(&server, &["get", "namespaces", "-o", "name"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(namespaces.lines().any(|l| l == format!("namespace/{ns}")), "{ns} missing:\n{namespaces}");
    }
    let service = json(&kubectl(&server, &["get", "service", "kubernetes", "-n", "default", "-o", "json"]));
    assert_eq!(service["spec"]["clusterIP"], "10.96.0.1");
}

const CONFIGMAP: &str = "apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: default
  labels:
    app: web
data:
  color: blue
  size: large
";

#[test]
fn create_get_and_delete_a_configmap_with_tables_and_output_formats() {
    let server = server();
    kubectl_stdin(&server, &["create", "-f", "-"], CONFIGMAP);
    let table = kubectl(&server, &["get", "configmap", "settings"]);
    let mut lines = table.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "DATA", "AGE"], "table columns:\n{table}");
    let row: Vec<&str> = lines.next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(&row[..2], ["settings", "2"]);

    let object = json(&kubectl(&server, &["get", "cm", "settings", "-o", "json"]));
    assert_eq!(object["data"]["color"], "blue");
    assert!(object["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(object["metadata"]["resourceVersion"].as_str().is_some_and(|rv| rv.parse::<u64>().is_ok()));
    let yaml = kubectl(&server, &["get", "cm", "settings", "-o", "yaml"]);
    assert!(yaml.contains("color: blue"), "{yaml}");
    let path = kubectl(&server, &["get", "cm", "settings", "-o", "jsonpath={.data.size}"]);
    assert_eq!(path, "large");
    let columns = kubectl(
        &server,
        &["get", "cm", "-l", "app=web", "-o", "custom-columns=N:.metadata.name,C:.data.color", "--no-headers"],
    );
    assert_eq!(columns.split_whitespace().collect::<Vec<_>>(), ["settings", "blue"]);

    let exists = kubectl_fails(&server, &["create", "-f", "-"], Some(CONFIGMAP));
    assert!(
        exists.stderr.contains("AlreadyExists") && exists.stderr.contains("\"settings\" already exists"),
        "{}",
        exists.stderr
    );

    kubectl(&server, &["delete", "configmap", "settings"]);
    let gone = kubectl_fails(&server, &["get", "configmap", "settings"], None);
    assert!(
        gone.stderr.contains("NotFound") && gone.stderr.contains("configmaps \"settings\" not found"),
        "{}",
        gone.stderr
    );
}

fn deployment(containers: &[(&str, &str)]) -> String {
    let mut manifest = String::from(
        "apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
",
    );
    for (name, image) in containers {
        let _ = write!(manifest, "      - name: {name}\n        image: {image}\n");
    }
    manifest
}

#[test]
fn apply_twice_with_a_changed_container_list_merges_by_name() {
    let server = server();
    let first =
        kubectl_stdin(&server, &["apply", "-f", "-"], &deployment(&[("app", "busybox:1"), ("sidecar", "busybox:1")]));
    assert!(first.contains("deployment.apps/web created"), "{first}");
    let second =
        kubectl_stdin(&server, &["apply", "-f", "-"], &deployment(&[("app", "busybox:2"), ("logger", "busybox:1")]));
    assert!(second.contains("deployment.apps/web configured"), "{second}");
    let object = json(&kubectl(&server, &["get", "deploy", "web", "-o", "json"]));
    let containers: Vec<(String, String)> = object["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (c["name"].as_str().unwrap_or_default().into(), c["image"].as_str().unwrap_or_default().into())
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        containers,
        [("app".to_string(), "busybox:2".to_string()), ("logger".to_string(), "busybox:1".to_string())]
    );
    assert_eq!(object["metadata"]["generation"], 2, "a spec change bumps generation");
    let unchanged =
        kubectl_stdin(&server, &["apply", "-f", "-"], &deployment(&[("app", "busybox:2"), ("logger", "busybox:1")]));
    assert!(unchanged.contains("unchanged"), "{unchanged}");
}

#[test]
fn patch_label_and_annotate_change_the_object() {
    let server = server();
    kubectl_stdin(&server, &["create", "-f", "-"], CONFIGMAP);
    kubectl(&server, &["patch", "cm", "settings", "--type", "merge", "-p", r#"{"data":{"color":"red"}}"#]);
    kubectl(&server, &["patch", "cm", "settings", "--type", "json", "-p", r#"[{"op":"remove","path":"/data/size"}]"#]);
    kubectl(&server, &["patch", "cm", "settings", "-p", r#"{"data":{"shape":"round"}}"#]);
    kubectl(&server, &["label", "cm", "settings", "tier=backend"]);
    kubectl(&server, &["annotate", "cm", "settings", "owner=platform"]);
    let object = json(&kubectl(&server, &["get", "cm", "settings", "-o", "json"]));
    assert_eq!(object["data"], serde_json::json!({"color": "red", "shape": "round"}));
    assert_eq!(object["metadata"]["labels"]["tier"], "backend");
    assert_eq!(object["metadata"]["annotations"]["owner"], "platform");
    let failed = kubectl_fails(
        &server,
        &["patch", "cm", "settings", "--type", "json", "-p", r#"[{"op":"test","path":"/data/color","value":"green"}]"#],
        None,
    );
    assert!(!failed.stderr.is_empty());
    let after = json(&kubectl(&server, &["get", "cm", "settings", "-o", "json"]));
    assert_eq!(after["data"]["color"], "red", "a failed patch changes nothing");
}

#[test]
fn invalid_names_are_refused_with_a_field_cause() {
    let server = server();
    let bad = CONFIGMAP.replace("name: settings", "name: Not_Valid");
    let run = kubectl_fails(&server, &["create", "-f", "-"], Some(&bad));
    assert!(run.stderr.contains("is invalid") && run.stderr.contains("metadata.name"), "{}", run.stderr);
    let missing_ns = CONFIGMAP.replace("namespace: default", "namespace: nowhere");
    let run = kubectl_fails(&server, &["create", "-f", "-"], Some(&missing_ns));
    assert!(run.stderr.contains("namespaces \"nowhere\" not found"), "{}", run.stderr);
    let mismatched = deployment(&[("app", "busybox:1")]).replace("matchLabels: {app: web}", "matchLabels: {app: db}");
    let run = kubectl_fails(&server, &["create", "-f", "-"], Some(&mismatched));
    assert!(run.stderr.contains("`selector` does not match template `labels`"), "{}", run.stderr);
    kubectl_stdin(&server, &["create", "-f", "-"], &deployment(&[("app", "busybox:1")]));
    let run = kubectl_fails(
        &server,
        &[
            "patch",
            "deploy",
            "web",
            "--type=merge",
            "-p",
            r#"{"spec":{"selector":{"matchLabels":{"app":"other"}},"template":{"metadata":{"labels":{"app":"other"}}}}}"#,
        ],
        None,
    );
    assert!(run.stderr.contains("spec.selector") && run.stderr.contains("field is immutable"), "{}", run.stderr);
}

#[test]
fn auth_can_i_answers_yes_for_the_admin() {
    let server = server();
    let out = kubectl(&server, &["auth", "can-i", "create", "pods"]);
    assert_eq!(out.trim(), "yes");
}

#[test]
fn explain_describes_pod_containers_from_openapi() {
    let server = server();
    let out = kubectl(&server, &["explain", "pod.spec.containers"]);
    assert!(out.contains("KIND:") && out.contains("Pod"), "{out}");
    assert!(out.contains("image"), "{out}");
}

#[test]
fn a_list_from_get_is_created_and_applied_again_with_client_side_validation() {
    let server = server();
    kubectl(&server, &["create", "configmap", "a", "--from-literal=x=1"]);
    kubectl(&server, &["create", "deployment", "web", "--image=busybox:1", "--replicas=0"]);
    // `kubectl get -o yaml` of several objects is a v1 List; kubectl validates its items on the
    // client against /openapi/v2 in protobuf before it creates them one by one.
    let list = kubectl(&server, &["get", "configmap/a", "deployment/web", "-o", "yaml"]);
    assert!(list.contains("kind: List"), "{list}");
    let fresh = list.lines().filter(|l| !l.contains("resourceVersion:") && !l.contains("uid:")).fold(
        String::new(),
        |mut text, line| {
            text.push_str(line);
            text.push('\n');
            text
        },
    );
    kubectl(&server, &["delete", "configmap/a", "deployment/web"]);
    let created = kubectl_stdin(&server, &["create", "-f", "-"], &fresh);
    assert!(created.contains("configmap/a created") && created.contains("deployment.apps/web created"), "{created}");
    let applied = kubectl_stdin(&server, &["apply", "-f", "-"], &fresh);
    assert!(applied.contains("configmap/a configured"), "{applied}");
    // A field the schema does not have is caught by kubectl itself, as against kube-apiserver.
    let misspelt = fresh.replacen("  data:", "  datta:", 1).replace("name: a\n", "name: b\n");
    let refused = kubectl_fails(&server, &["create", "-f", "-"], Some(&misspelt));
    assert!(
        refused.stderr.contains(r#"ValidationError(ConfigMap): unknown field "datta" in io.k8s.api.core.v1.ConfigMap"#),
        "{}",
        refused.stderr
    );
    assert!(!server.kubectl(&["get", "configmap", "b"]).status.success(), "nothing of the refused list was created");
}

#[test]
fn get_watch_sees_a_change() {
    let server = server();
    kubectl_stdin(&server, &["create", "-f", "-"], CONFIGMAP);
    let mut watch = std::process::Command::new("kubectl")
        .args(["get", "cm", "settings", "-w", "-o", "jsonpath={.data.color}{\"\\n\"}"])
        .env("KUBECONFIG", server.kubeconfig())
        .env("HOME", server.dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start kubectl get -w");
    let stdout = watch.stdout.take().expect("stdout");
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines().map_while(Result::ok) {
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let first = receiver.recv_timeout(std::time::Duration::from_secs(20)).expect("initial state");
    assert_eq!(first, "blue");
    kubectl(&server, &["patch", "cm", "settings", "--type", "merge", "-p", r#"{"data":{"color":"green"}}"#]);
    let changed = receiver.recv_timeout(std::time::Duration::from_secs(20)).expect("the change");
    let _ = watch.kill();
    let _ = watch.wait();
    assert_eq!(changed, "green");
}

#[test]
fn deleting_an_object_with_a_finalizer_waits_until_it_is_removed() {
    let server = server();
    let held = CONFIGMAP.replace("  labels:\n", "  finalizers: [example.com/hold]\n  labels:\n");
    kubectl_stdin(&server, &["create", "-f", "-"], &held);
    let run = capstan_e2e::Run::from(server.kubectl(&["delete", "cm", "settings", "--wait=false"]));
    assert!(run.ok, "{}", run.stderr);
    let object = json(&kubectl(&server, &["get", "cm", "settings", "-o", "json"]));
    assert!(object["metadata"]["deletionTimestamp"].is_string(), "marked for deletion: {object}");
    kubectl(
        &server,
        &["patch", "cm", "settings", "--type", "json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#],
    );
    let gone = kubectl_fails(&server, &["get", "cm", "settings"], None);
    assert!(gone.stderr.contains("not found"), "{}", gone.stderr);
}

#[test]
fn requests_without_credentials_get_401() {
    let server = server();
    let url = format!("https://127.0.0.1:{}/api/v1/namespaces", server.port());
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/null", "-w", "%{http_code}", &url])
        .output()
        .expect("run curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "401");
}

#[test]
fn scale_replace_and_edit_change_a_deployment() {
    let server = server();
    kubectl_stdin(&server, &["apply", "-f", "-"], &deployment(&[("app", "busybox:1")]));
    let scaled = kubectl(&server, &["scale", "deployment/web", "--replicas=5"]);
    assert!(scaled.contains("deployment.apps/web scaled"), "{scaled}");
    let replicas = kubectl(&server, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]);
    assert_eq!(replicas, "5");

    // The deployment controller writes status meanwhile; like a user, read again on a conflict.
    let (object, replaced) = eventually(Duration::from_secs(30), "a replace at the current resourceVersion", || {
        let mut object = json(&kubectl(&server, &["get", "deploy", "web", "-o", "json"]));
        object["spec"]["template"]["spec"]["containers"][0]["image"] = serde_json::json!("busybox:3");
        let run = capstan_e2e::Run::from(server.kubectl_with_stdin(&["replace", "-f", "-"], Some(&object.to_string())));
        run.ok.then_some((object, run.stdout))
    });
    assert!(replaced.contains("deployment.apps/web replaced"), "{replaced}");
    // A replace carrying a stale resourceVersion is refused: the object changed since.
    let stale = kubectl_fails(&server, &["replace", "-f", "-"], Some(&object.to_string()));
    assert!(stale.stderr.contains("the object has been modified"), "{}", stale.stderr);

    let edited = capstan_e2e::Run::from(server.kubectl_with_env(
        &["edit", "deployment", "web"],
        None,
        &[("KUBE_EDITOR", "sed -i s/busybox:3/busybox:4/")],
    ));
    assert!(edited.ok && edited.stdout.contains("deployment.apps/web edited"), "{edited:?}");
    let image = kubectl(&server, &["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[0].image}"]);
    assert_eq!(image, "busybox:4");
}

#[test]
fn delete_wait_returns_once_the_finalizer_is_removed() {
    let server = server();
    let held = CONFIGMAP.replace("  labels:\n", "  finalizers: [example.com/hold]\n  labels:\n");
    kubectl_stdin(&server, &["create", "-f", "-"], &held);
    let mut waiting = std::process::Command::new("kubectl")
        .args(["delete", "cm", "settings", "--timeout=60s"])
        .env("KUBECONFIG", server.kubeconfig())
        .env("HOME", server.dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start kubectl delete");
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(waiting.try_wait().expect("poll").is_none(), "delete must wait while the finalizer holds the object");
    kubectl(
        &server,
        &["patch", "cm", "settings", "--type", "json", "-p", r#"[{"op":"remove","path":"/metadata/finalizers"}]"#],
    );
    let output = waiting.wait_with_output().expect("kubectl delete finishes");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert!(String::from_utf8_lossy(&output.stdout).contains("configmap \"settings\" deleted"));
}

/// Sends one request with the admin token and returns (HTTP code, body).
fn request(
    server: &capstan_e2e::CapstanServer,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> (u16, serde_json::Value) {
    let dir = tempfile_body(body);
    let url = format!("https://127.0.0.1:{}{path}", server.port());
    let out = std::process::Command::new("curl")
        .args(["-sk", "-X", method, "-H", &format!("Authorization: Bearer {}", server.admin_token())])
        .args(["-H", &format!("Content-Type: {content_type}"), "--data-binary", &format!("@{}", dir.display())])
        .args(["-w", "\n%{http_code}", &url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or_default();
    (code.parse().unwrap_or_default(), serde_json::from_str(body).unwrap_or(serde_json::Value::Null))
}

fn tempfile_body(body: &[u8]) -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("capstan-body-{}-{:?}", std::process::id(), std::thread::current().id()));
    std::fs::write(&path, body).expect("write request body");
    path
}

/// Method, path, content type, body, expected code and reason.
type BadRequestCase<'a> = (&'a str, &'a str, &'a str, Vec<u8>, u16, &'a str);

#[test]
fn bad_input_gets_a_status_with_the_right_code_and_changes_nothing() {
    let server = server();
    kubectl_stdin(&server, &["create", "-f", "-"], CONFIGMAP);
    let before = kubectl(&server, &["get", "cm", "settings", "-o", "json"]);
    let collection = "/api/v1/namespaces/default/configmaps";
    let object = format!("{collection}/settings");
    let missing = format!("{collection}/missing");
    let big = format!(r#"{{"metadata":{{"name":"big"}},"data":{{"x":"{}"}}}}"#, "a".repeat(4 * 1024 * 1024));
    let cases: Vec<BadRequestCase> = vec![
        ("POST", collection, "application/json", b"{not json".to_vec(), 400, "BadRequest"),
        ("POST", collection, "application/yaml", b"metadata: [unclosed".to_vec(), 400, "BadRequest"),
        ("POST", collection, "text/plain", b"hello".to_vec(), 415, "UnsupportedMediaType"),
        ("POST", collection, "application/json", big.into_bytes(), 413, "RequestEntityTooLarge"),
        ("POST", collection, "application/json", br#"{"metadata":{"name":"UPPER"}}"#.to_vec(), 422, "Invalid"),
        ("POST", collection, "application/json", br#"{"metadata":{"name":"settings"}}"#.to_vec(), 409, "AlreadyExists"),
        (
            "PUT",
            &object,
            "application/json",
            br#"{"metadata":{"name":"settings","resourceVersion":"1"},"data":{}}"#.to_vec(),
            409,
            "Conflict",
        ),
        ("PATCH", &object, "application/merge-patch+json", b"[oops".to_vec(), 400, "BadRequest"),
        ("GET", &missing, "application/json", Vec::new(), 404, "NotFound"),
        (
            "POST",
            collection,
            "application/json",
            br#"{"metadata":{"name":"typed"},"data":{"k":5}}"#.to_vec(),
            400,
            "BadRequest",
        ),
    ];
    for (method, path, content_type, body, code, reason) in cases {
        let (got, status) = request(&server, method, path, content_type, &body);
        assert_eq!(
            (got, status["reason"].as_str().unwrap_or_default()),
            (code, reason),
            "{method} {path} {content_type}: {status}"
        );
        assert_eq!(status["kind"], "Status");
    }
    let after = kubectl(&server, &["get", "cm", "settings", "-o", "json"]);
    assert_eq!(before, after, "rejected requests change nothing");
    // (Every namespace also has the cluster CA's `kube-root-ca.crt`, as upstream publishes it.)
    let names = kubectl(&server, &["get", "cm", "-o", "name"]);
    let names: Vec<&str> = names.lines().filter(|n| *n != "configmap/kube-root-ca.crt").collect();
    assert_eq!(names, ["configmap/settings"], "no ConfigMap was created by a rejected request");
}

#[test]
fn the_python_client_creates_and_lists() {
    let server = server();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("python/client.py");
    let output = std::process::Command::new("python3")
        .arg(&script)
        .arg(server.kubeconfig())
        .output()
        .expect("run python3 (scripts/install-deps installs the kubernetes module)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.starts_with("ok "),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let listed = kubectl(&server, &["get", "cm", "from-python", "-o", "jsonpath={.data.greeting}"]);
    assert_eq!(listed, "hello");
}

const WIDGET_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.example.com
spec:
  group: example.com
  scope: Namespaced
  names:
    plural: widgets
    singular: widget
    kind: Widget
    shortNames: [wd]
  versions:
  - name: v1
    served: true
    storage: true
    subresources:
      status: {}
      scale: {specReplicasPath: .spec.replicas, statusReplicasPath: .status.replicas}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [size]
            properties:
              size: {type: integer, minimum: 1, description: "How big the widget is."}
              color: {type: string, enum: [red, blue]}
              replicas: {type: integer}
          status:
            type: object
            properties:
              ready: {type: boolean}
"#;

const WIDGET: &str = "apiVersion: example.com/v1
kind: Widget
metadata:
  name: gear
spec:
  size: 3
  color: red
";

#[test]
fn a_crd_serves_its_custom_resource_at_once() {
    let server = server();
    kubectl_stdin(&server, &["apply", "-f", "-"], WIDGET_CRD);
    let created = kubectl_stdin(&server, &["apply", "-f", "-"], WIDGET);
    assert!(created.contains("widget.example.com/gear created"), "{created}");
    let listed = kubectl(&server, &["get", "wd", "-o", "name"]);
    assert_eq!(listed.trim(), "widget.example.com/gear");
    let established =
        kubectl(&server, &["wait", "--for=condition=Established", "crd/widgets.example.com", "--timeout=10s"]);
    assert!(established.contains("condition met"), "{established}");

    let invalid = WIDGET.replace("size: 3", "size: three");
    let run = kubectl_fails(&server, &["apply", "-f", "-"], Some(&invalid.replace("gear", "cog")));
    assert!(run.stderr.contains("spec.size") && run.stderr.contains("integer"), "{}", run.stderr);
    let missing =
        kubectl_fails(&server, &["create", "-f", "-"], Some(&WIDGET.replace("  size: 3\n", "").replace("gear", "cog")));
    assert!(missing.stderr.contains("spec.size") && missing.stderr.contains("Required value"), "{}", missing.stderr);

    let explained = kubectl(&server, &["explain", "widget.spec"]);
    assert!(explained.contains("size") && explained.contains("How big the widget is"), "{explained}");

    kubectl(
        &server,
        &["patch", "widget", "gear", "--subresource=status", "--type=merge", "-p", r#"{"status":{"ready":true}}"#],
    );
    kubectl(
        &server,
        &["patch", "widget", "gear", "--type=merge", "-p", r#"{"status":{"ready":false},"spec":{"size":4}}"#],
    );
    let object = json(&kubectl(&server, &["get", "widget", "gear", "-o", "json"]));
    assert_eq!(object["status"]["ready"], true, "status changes only through /status");
    assert_eq!(object["spec"]["size"], 4);
    let scaled = kubectl(&server, &["scale", "widget", "gear", "--replicas=3"]);
    assert!(scaled.contains("widget.example.com/gear scaled"), "{scaled}");
    assert_eq!(kubectl(&server, &["get", "widget", "gear", "-o", "jsonpath={.spec.replicas}"]), "3");

    kubectl(&server, &["delete", "crd", "widgets.example.com"]);
    let gone = kubectl_fails(&server, &["get", "widgets"], None);
    // With discovery cached, kubectl reports the 404 of the list; without, the missing type.
    let missing_type = gone.stderr.contains("the server doesn't have a resource type");
    assert!(missing_type || gone.stderr.contains("could not find the requested resource"), "{}", gone.stderr);
    kubectl_stdin(&server, &["apply", "-f", "-"], WIDGET_CRD);
    let recreated = kubectl(&server, &["get", "widgets", "-o", "name"]);
    assert!(recreated.trim().is_empty(), "objects of a deleted CRD are gone: {recreated}");
}

#[test]
fn server_side_apply_tracks_field_owners_and_reports_conflicts() {
    let server = server();
    let manifest = deployment(&[("app", "busybox:1")]);
    let created = kubectl_stdin(&server, &["apply", "--server-side", "-f", "-"], &manifest);
    assert!(created.contains("deployment.apps/web serverside-applied"), "{created}");
    let object = json(&kubectl(&server, &["get", "deploy", "web", "-o", "json", "--show-managed-fields"]));
    // The Deployment controller records its own (Update) entries for the fields it writes; the
    // applied fields belong to kubectl alone.
    let entries: Vec<&serde_json::Value> =
        object["metadata"]["managedFields"].as_array().into_iter().flatten().collect();
    let appliers: Vec<&str> =
        entries.iter().filter(|m| m["operation"] == "Apply").filter_map(|m| m["manager"].as_str()).collect();
    assert_eq!(appliers, ["kubectl"], "{}", object["metadata"]["managedFields"]);
    let applied = entries.iter().find(|m| m["operation"] == "Apply").map(|m| &m["fieldsV1"]["f:spec"]["f:replicas"]);
    assert!(applied.is_some_and(serde_json::Value::is_object), "{}", object["metadata"]["managedFields"]);

    // Another manager changes replicas; re-applying a different value now conflicts.
    kubectl(&server, &["scale", "deploy/web", "--replicas=4"]);
    let changed = manifest.replace("replicas: 2", "replicas: 3");
    let conflict = kubectl_fails(&server, &["apply", "--server-side", "-f", "-"], Some(&changed));
    assert!(
        conflict.stderr.contains("Apply failed with 1 conflict") && conflict.stderr.contains(".spec.replicas"),
        "{}",
        conflict.stderr
    );
    let forced = kubectl_stdin(&server, &["apply", "--server-side", "--force-conflicts", "-f", "-"], &changed);
    assert!(forced.contains("serverside-applied"), "{forced}");
    assert_eq!(kubectl(&server, &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]), "3");

    // Fields the manager stops applying are removed.
    let without_sidecar =
        deployment(&[("app", "busybox:1"), ("sidecar", "busybox:1")]).replace("replicas: 2", "replicas: 3");
    kubectl_stdin(&server, &["apply", "--server-side", "-f", "-"], &without_sidecar);
    kubectl_stdin(&server, &["apply", "--server-side", "-f", "-"], &changed);
    let names = kubectl(&server, &["get", "deploy", "web", "-o", "jsonpath={.spec.template.spec.containers[*].name}"]);
    assert_eq!(names, "app");
}

#[test]
fn pods_print_kubectl_columns_including_wide() {
    let server = server();
    let pod = "apiVersion: v1
kind: Pod
metadata:
  name: lonely
spec:
  containers:
  - name: app
    image: busybox:1.36
";
    kubectl_stdin(&server, &["create", "-f", "-"], pod);
    let table = kubectl(&server, &["get", "pods"]);
    let header: Vec<&str> = table.lines().next().unwrap_or_default().split_whitespace().collect();
    assert_eq!(header, ["NAME", "READY", "STATUS", "RESTARTS", "AGE"], "{table}");
    let row: Vec<&str> = table.lines().nth(1).unwrap_or_default().split_whitespace().collect();
    assert_eq!(&row[..4], ["lonely", "0/1", "Pending", "0"], "{table}");
    let wide = kubectl(&server, &["get", "pods", "-o", "wide"]);
    assert!(
        wide.lines().next().is_some_and(|h| h.contains("IP") && h.contains("NODE") && h.contains("NOMINATED NODE")),
        "{wide}"
    );
    let defaults = json(&kubectl(&server, &["get", "pod", "lonely", "-o", "json"]));
    assert_eq!(defaults["spec"]["restartPolicy"], "Always");
    assert_eq!(defaults["spec"]["containers"][0]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(defaults["status"]["phase"], "Pending");
    let by_field = kubectl(&server, &["get", "pods", "--field-selector", "status.phase=Pending", "-o", "name"]);
    assert_eq!(by_field.trim(), "pod/lonely");
    let unknown = kubectl_fails(&server, &["get", "pods", "--field-selector", "spec.bogus=x"], None);
    assert!(unknown.stderr.contains("field label not supported: spec.bogus"), "{}", unknown.stderr);
}

#[test]
fn objects_survive_a_server_restart() {
    let server = server();
    kubectl_stdin(&server, &["create", "-f", "-"], CONFIGMAP);
    let before = json(&kubectl(&server, &["get", "cm", "settings", "-o", "json"]));
    let dir = server.stop().expect("the data directory");
    let server = capstan_e2e::CapstanServer::start_in(dir, &[]).expect("restart");
    let after = json(&kubectl(&server, &["get", "cm", "settings", "-o", "json"]));
    assert_eq!(before["metadata"]["uid"], after["metadata"]["uid"]);
    assert_eq!(before["metadata"]["resourceVersion"], after["metadata"]["resourceVersion"]);
    kubectl(&server, &["label", "cm", "settings", "after=restart"]);
    let relabelled = json(&kubectl(&server, &["get", "cm", "settings", "-o", "json"]));
    let (old, new) =
        (before["metadata"]["resourceVersion"].as_str(), relabelled["metadata"]["resourceVersion"].as_str());
    let parse = |rv: Option<&str>| rv.and_then(|v| v.parse::<u64>().ok()).unwrap_or_default();
    assert!(parse(new) > parse(old), "resourceVersions keep increasing across restarts: {old:?} then {new:?}");
}

#[test]
fn kubectl_works_the_same_on_an_etcd_store() {
    let etcd = capstan_testbed::EtcdServer::start().expect("start etcd");
    let server = capstan_e2e::CapstanServer::start_with(&["--etcd-endpoints", etcd.endpoint()]).expect("start on etcd");
    kubectl_stdin(&server, &["create", "-f", "-"], CONFIGMAP);
    kubectl(&server, &["patch", "cm", "settings", "--type", "merge", "-p", r#"{"data":{"color":"teal"}}"#]);
    assert_eq!(kubectl(&server, &["get", "cm", "settings", "-o", "jsonpath={.data.color}"]), "teal");
    let keys = std::process::Command::new("etcdctl")
        .args(["--endpoints", etcd.endpoint(), "get", "--prefix", "--keys-only", "/registry/configmaps/"])
        .env("ETCDCTL_API", "3")
        .output()
        .expect("run etcdctl");
    let keys = String::from_utf8_lossy(&keys.stdout);
    assert!(keys.lines().any(|k| k == "/registry/configmaps/default/settings"), "{keys}");
}

#[test]
fn an_unusable_store_file_stops_the_server_with_a_clear_message() {
    let dir = tempfile_dir();
    std::fs::create_dir_all(dir.join("data")).expect("data dir");
    std::fs::write(dir.join("data/store.db"), b"this is not a database").expect("write");
    let output = std::process::Command::new(capstan_testbed::capstan_binary().expect("capstan built"))
        .args(["server", "--port", "0", "--data-dir"])
        .arg(dir.join("data"))
        .output()
        .expect("run capstan server");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("store.db") && stderr.contains("not an SQLite database"), "{stderr}");
    assert_eq!(std::fs::read(dir.join("data/store.db")).expect("read"), b"this is not a database", "left untouched");
    let _ = std::fs::remove_dir_all(dir);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("capstan-unusable-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn one_object_is_served_in_every_version_of_its_resource() {
    let server = server();
    let hpa = "apiVersion: autoscaling/v1
kind: HorizontalPodAutoscaler
metadata:
  name: web
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: web}
  minReplicas: 1
  maxReplicas: 5
  targetCPUUtilizationPercentage: 70
";
    kubectl_stdin(&server, &["create", "-f", "-"], hpa);
    let v2 = json(&kubectl(&server, &["get", "horizontalpodautoscalers.v2.autoscaling", "web", "-o", "json"]));
    assert_eq!(v2["apiVersion"], "autoscaling/v2");
    assert_eq!(v2["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"], 70);
    let v1 = json(&kubectl(&server, &["get", "horizontalpodautoscalers.v1.autoscaling", "web", "-o", "json"]));
    assert_eq!(v1["apiVersion"], "autoscaling/v1");
    assert_eq!(v1["spec"]["targetCPUUtilizationPercentage"], 70);

    let event = "apiVersion: v1
kind: Event
metadata:
  name: web.1
involvedObject: {kind: Pod, name: web, namespace: default}
reason: Pulled
message: Successfully pulled image
type: Normal
";
    kubectl_stdin(&server, &["create", "-f", "-"], event);
    let modern = json(&kubectl(&server, &["get", "events.v1.events.k8s.io", "web.1", "-o", "json"]));
    assert_eq!(modern["apiVersion"], "events.k8s.io/v1");
    assert_eq!(modern["note"], "Successfully pulled image");
    assert_eq!(modern["regarding"]["name"], "web");
}

#[test]
fn a_watch_from_a_revision_older_than_the_cache_gets_410_expired() {
    let server = server();
    kubectl_stdin(&server, &["create", "-f", "-"], CONFIGMAP);
    let url = format!(
        "https://127.0.0.1:{}/api/v1/namespaces/default/configmaps?watch=1&resourceVersion=1&timeoutSeconds=5",
        server.port()
    );
    let out = std::process::Command::new("curl")
        .args(["-sk", "-H", &format!("Authorization: Bearer {}", server.admin_token()), &url])
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout);
    let first = json(text.lines().next().unwrap_or_default());
    assert_eq!(first["type"], "ERROR", "{text}");
    assert_eq!(first["object"]["code"], 410);
    assert_eq!(first["object"]["reason"], "Expired");
}
