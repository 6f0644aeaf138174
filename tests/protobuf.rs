//! kubectl's generator commands send protobuf bodies (client-go's typed clients); the server
//! decodes them into the same objects a JSON client would create.

use capstan_e2e::{CapstanServer, Run, json, kubectl, server};

fn get(server: &CapstanServer, args: &[&str]) -> serde_json::Value {
    json(&kubectl(server, &[&["get"], args, &["-o", "json"]].concat()))
}

#[test]
fn create_namespace_sends_protobuf_and_succeeds() {
    let server = server();
    let run = Run::from(server.kubectl(&["create", "namespace", "team-a", "-v=8"]));
    assert!(run.ok, "kubectl create namespace failed:\n{}", run.stderr);
    assert!(
        run.stderr.contains("Content-Type: application/vnd.kubernetes.protobuf"),
        "kubectl did not send protobuf, so this test proves nothing:\n{}",
        run.stderr
    );
    let namespace = get(&server, &["namespace", "team-a"]);
    assert_eq!(namespace["metadata"]["name"], "team-a");
    assert!(namespace["metadata"]["uid"].as_str().is_some_and(|u| !u.is_empty()));
    assert!(namespace["metadata"]["creationTimestamp"].as_str().is_some_and(|t| !t.starts_with("1970")));
    assert_eq!(namespace["status"]["phase"], "Active");
}

#[test]
fn configmaps_secrets_and_service_accounts_from_generators() {
    let server = server();
    kubectl(&server, &["create", "configmap", "settings", "--from-literal=mode=fast", "--from-literal=empty="]);
    let config_map = get(&server, &["configmap", "settings"]);
    assert_eq!(config_map["data"], serde_json::json!({"mode": "fast", "empty": ""}));

    kubectl(&server, &["create", "secret", "generic", "creds", "--from-literal=password=s3cr=t"]);
    let secret = get(&server, &["secret", "creds"]);
    assert_eq!(secret["type"], "Opaque");
    assert_eq!(secret["data"]["password"], "czNjcj10", "base64 of s3cr=t");

    kubectl(&server, &["create", "serviceaccount", "robot"]);
    assert_eq!(get(&server, &["serviceaccount", "robot"])["metadata"]["name"], "robot");

    kubectl(&server, &["create", "quota", "small", "--hard=pods=4,requests.cpu=500m"]);
    let quota = get(&server, &["resourcequota", "small"]);
    assert_eq!(quota["spec"]["hard"], serde_json::json!({"pods": "4", "requests.cpu": "500m"}));

    kubectl(&server, &["create", "role", "reader", "--verb=get,list", "--resource=pods"]);
    let role = get(&server, &["role", "reader"]);
    assert_eq!(role["rules"][0]["verbs"], serde_json::json!(["get", "list"]));
    kubectl(&server, &["create", "rolebinding", "reader", "--role=reader", "--serviceaccount=default:robot"]);
    let binding = get(&server, &["rolebinding", "reader"]);
    assert_eq!(binding["roleRef"]["name"], "reader");
    assert_eq!(binding["subjects"][0]["kind"], "ServiceAccount");
}

#[test]
fn workloads_and_services_from_generators() {
    let server = server();
    kubectl(&server, &["create", "deployment", "web", "--image=nginx:1.27", "--replicas=2", "--port=80"]);
    let deployment = get(&server, &["deployment", "web"]);
    assert_eq!(deployment["spec"]["replicas"], 2);
    assert_eq!(deployment["spec"]["selector"]["matchLabels"]["app"], "web");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["image"], "nginx:1.27");
    assert_eq!(container["ports"][0]["containerPort"], 80);
    assert_eq!(deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "25%", "defaulted as upstream");

    kubectl(&server, &["create", "service", "clusterip", "api", "--tcp=80:8080"]);
    let service = get(&server, &["service", "api"]);
    assert_eq!(service["spec"]["ports"][0]["port"], 80);
    assert_eq!(service["spec"]["ports"][0]["targetPort"], 8080);
    assert_eq!(service["spec"]["type"], "ClusterIP");
    assert_eq!(service["spec"]["selector"]["app"], "api");

    kubectl(&server, &["expose", "deployment", "web", "--port=8081", "--target-port=80", "--name=web-svc"]);
    let exposed = get(&server, &["service", "web-svc"]);
    assert_eq!(exposed["spec"]["selector"]["app"], "web");
    assert_eq!(exposed["spec"]["ports"][0]["targetPort"], 80);

    kubectl(&server, &["create", "job", "once", "--image=busybox:1.36", "--", "echo", "hi"]);
    let job = get(&server, &["job", "once"]);
    assert_eq!(job["spec"]["template"]["spec"]["containers"][0]["command"], serde_json::json!(["echo", "hi"]));
    assert_eq!(job["spec"]["template"]["spec"]["restartPolicy"], "Never");

    kubectl(
        &server,
        &["run", "shell", "--image=busybox:1.36", "--labels=role=debug", "--env=MODE=x", "--", "sleep", "3600"],
    );
    let pod = get(&server, &["pod", "shell"]);
    assert_eq!(pod["metadata"]["labels"]["role"], "debug");
    assert_eq!(pod["spec"]["containers"][0]["env"][0], serde_json::json!({"name": "MODE", "value": "x"}));
    assert_eq!(pod["spec"]["containers"][0]["args"], serde_json::json!(["sleep", "3600"]));

    kubectl(&server, &["create", "poddisruptionbudget", "web", "--selector=app=web", "--min-available=50%"]);
    assert_eq!(get(&server, &["pdb", "web"])["spec"]["minAvailable"], "50%");
    kubectl(&server, &["create", "priorityclass", "high", "--value=1000", "--description=urgent"]);
    assert_eq!(get(&server, &["priorityclass", "high"])["value"], 1000);
}
