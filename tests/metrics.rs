//! Resource metrics end to end, on a real containerd node: the node agent samples CPU and memory
//! (CRI stats, /proc), the API server serves them as `metrics.k8s.io/v1beta1`, `kubectl top`
//! shows them, and the `HorizontalPodAutoscaler` controller scales a Deployment on them — up when
//! its pod burns CPU, down when the load is gone.

use std::time::Duration;

use capstan_e2e::{BUSYBOX, eventually, json, kubectl, kubectl_stdin, node_server};

/// A Deployment whose pod burns CPU up to its limit (200m: twice its 100m request).
fn burner() -> String {
    let script = "while :; do :; done";
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "burner"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "burner"}},
            "template": {
                "metadata": {"labels": {"app": "burner"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "burn", "image": BUSYBOX, "command": ["sh", "-c", script],
                        "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "64Mi"}},
                    }],
                },
            },
        },
    })
    .to_string()
}

/// Millicores from a `kubectl top` CPU column (`197m`).
fn millicores(text: &str) -> Option<u64> {
    text.strip_suffix('m').and_then(|m| m.parse().ok())
}

#[test]
fn kubectl_top_shows_usage_and_an_hpa_scales_on_it() {
    let server = node_server("node-m", 120);
    kubectl_stdin(&server, &["apply", "-f", "-"], &burner());

    // `kubectl top node`: the node's CPU and memory.
    let node_row = eventually(Duration::from_mins(1), "kubectl top node", || {
        let out = server.kubectl(&["top", "node", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.success() && text.starts_with("node-m")).then_some(text)
    });
    let columns: Vec<&str> = node_row.split_whitespace().collect();
    assert!(millicores(columns[1]).is_some(), "CPU column of {node_row:?}");
    assert!(columns[3].ends_with("Mi"), "memory column of {node_row:?}");

    // `kubectl top pod`: the burner uses about its 200m limit (at least 100m).
    let pod_row = eventually(Duration::from_mins(1), "kubectl top pod of the burner at full speed", || {
        let out = server.kubectl(&["top", "pod", "-l", "app=burner", "--no-headers"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let cpu = text.split_whitespace().nth(1).and_then(millicores)?;
        (cpu >= 100).then_some(text)
    });
    assert!(pod_row.starts_with("burner-"), "{pod_row}");
    let cpu = pod_row.split_whitespace().nth(1).and_then(millicores).unwrap_or_default();
    assert!(cpu <= 260, "a 200m limit caps the burner, it used {cpu}m: {pod_row}");
    let raw = json(&kubectl(&server, &["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods"]));
    assert_eq!(raw["kind"], "PodMetricsList");
    assert_eq!(raw["items"][0]["containers"][0]["name"], "burn");
    let missing = server.kubectl(&["get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/absent"]);
    assert!(!missing.status.success() && String::from_utf8_lossy(&missing.stderr).contains("NotFound"));

    // An HPA at 50 % of the request: the burner runs at ~200 %, so 1 → 3 (maxReplicas).
    kubectl(&server, &["autoscale", "deployment", "burner", "--cpu-percent=50", "--min=1", "--max=3"]);
    eventually(Duration::from_mins(2), "the HPA to scale the burner to 3", || {
        let replicas = kubectl(&server, &["get", "deployment", "burner", "-o", "jsonpath={.spec.replicas}"]);
        (replicas == "3").then_some(())
    });
    let hpa = json(&kubectl(&server, &["get", "hpa", "burner", "-o", "json"]));
    let utilization = hpa["status"]["currentMetrics"][0]["resource"]["current"]["averageUtilization"].as_i64();
    assert!(utilization.is_some_and(|u| u >= 100), "{}", hpa["status"]);
    let events =
        kubectl(&server, &["get", "events", "--field-selector", "involvedObject.kind=HorizontalPodAutoscaler"]);
    assert!(events.contains("SuccessfulRescale") && events.contains("New size: 3"), "{events}");
    let listed = kubectl(&server, &["get", "hpa", "burner"]);
    assert!(listed.contains("cpu: ") && listed.contains("/50%"), "{listed}");

    // The load goes away; with no scale-down stabilization the HPA goes back to 1.
    kubectl(
        &server,
        &[
            "patch",
            "hpa",
            "burner",
            "--type=merge",
            "-p",
            r#"{"spec":{"behavior":{"scaleDown":{"stabilizationWindowSeconds":0}}}}"#,
        ],
    );
    let idle = serde_json::json!([{"op": "replace", "path": "/spec/template/spec/containers/0/command", "value": ["sh", "-c", "sleep 3600"]}]);
    kubectl(&server, &["patch", "deployment", "burner", "--type=json", "-p", &idle.to_string()]);
    eventually(Duration::from_mins(3), "the HPA to scale the idle burner back to 1", || {
        let replicas = kubectl(&server, &["get", "deployment", "burner", "-o", "jsonpath={.spec.replicas}"]);
        (replicas == "1").then_some(())
    });
    let events =
        kubectl(&server, &["get", "events", "--field-selector", "involvedObject.kind=HorizontalPodAutoscaler"]);
    assert!(events.contains("New size: 1; reason: All metrics below target"), "{events}");
}
