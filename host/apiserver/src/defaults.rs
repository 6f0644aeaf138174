//! Defaulting of built-in kinds: the values Kubernetes fills in when a field is left empty.

use capstan_api::ResourceInfo;
use serde_json::{Value, json};

/// Fills defaults into new objects.
#[derive(Clone, Debug, Default)]
pub struct Defaults;

fn set_default(object: &mut Value, field: &str, value: Value) {
    // An empty object is "left empty" too: protobuf clients send `status: {}` for Go structs.
    let empty_object = |v: &Value| value.is_object() && v.as_object().is_some_and(serde_json::Map::is_empty);
    if object.get(field).is_none_or(|v| v.is_null() || empty_object(v)) {
        object[field] = value;
    }
}

impl Defaults {
    /// Applies the defaults of `info`'s kind to `object`.
    pub fn apply(&self, info: &ResourceInfo, object: &mut Value) {
        match (info.gvk.group, info.gvk.kind) {
            ("", "Pod") => pod(object),
            ("", "Namespace") => namespace(object),
            ("", "Service") => service(object),
            ("", "Secret") => secret(object),
            ("batch", "Job") => job(object),
            ("batch", "CronJob") => cron_job(object),
            ("apps", "Deployment") => deployment(object),
            ("apps", "StatefulSet") => stateful_set(object),
            ("apps", "DaemonSet") => daemon_set(object),
            _ => {}
        }
    }
}

fn pod(object: &mut Value) {
    let Some(spec) = object.get_mut("spec") else { return };
    pod_spec(spec);
    requests_from_limits(spec);
    let qos = qos_class(&object["spec"]);
    set_default(object, "status", json!({}));
    let status = &mut object["status"];
    set_default(status, "phase", json!("Pending"));
    set_default(status, "qosClass", json!(qos));
    scheduling_gated(object);
}

/// A new pod held by scheduling gates says so in its `PodScheduled` condition (reason
/// `SchedulingGated`, which `kubectl get pods` shows as its status), as kube-apiserver writes it
/// on create; a pod without gates carries no such condition.
fn scheduling_gated(pod: &mut Value) {
    let gated = pod.pointer("/spec/schedulingGates").and_then(Value::as_array).is_some_and(|g| !g.is_empty());
    let Some(status) = pod.get_mut("status").and_then(Value::as_object_mut) else { return };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    let Some(list) = conditions.as_array_mut() else { return };
    list.retain(|c| c["type"] != "PodScheduled" || (!gated && c["reason"] != "SchedulingGated"));
    if gated {
        list.push(json!({
            "type": "PodScheduled",
            "status": "False",
            "reason": "SchedulingGated",
            "message": "Scheduling is blocked due to non-empty scheduling gates",
            "lastProbeTime": null,
            "lastTransitionTime": crate::meta::now(),
        }));
    }
    if list.is_empty() {
        status.remove("conditions");
    }
}

/// Defaults of a pod spec (also used inside workload templates).
pub fn pod_spec(spec: &mut Value) {
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    set_default(spec, "enableServiceLinks", json!(true));
    for list in ["initContainers", "containers"] {
        if let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) {
            containers.iter_mut().for_each(container);
        }
    }
}

fn container(container: &mut Value) {
    let image = container.get("image").and_then(Value::as_str).unwrap_or_default();
    // Kubernetes pulls `:latest` (or untagged) images every time and others only when missing.
    let last = image.rsplit('/').next().unwrap_or_default();
    let untagged = !last.contains(':') && !image.contains('@');
    let policy = if untagged || image.ends_with(":latest") { "Always" } else { "IfNotPresent" };
    set_default(container, "imagePullPolicy", json!(policy));
    set_default(container, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(container, "terminationMessagePolicy", json!("File"));
    set_default(container, "resources", json!({}));
    if let Some(ports) = container.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            set_default(port, "protocol", json!("TCP"));
        }
    }
}

/// A pod's container that states a limit but no request for a resource requests its limit (only
/// in pods, not in templates, as upstream).
fn requests_from_limits(spec: &mut Value) {
    for list in ["initContainers", "containers"] {
        for container in spec.get_mut(list).and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(limits) = container.pointer("/resources/limits").and_then(Value::as_object).cloned() else {
                continue;
            };
            let resources = &mut container["resources"];
            if !resources["requests"].is_object() {
                resources["requests"] = json!({});
            }
            for (resource, limit) in limits {
                if resources["requests"].get(&resource).is_none() {
                    resources["requests"][resource] = limit;
                }
            }
        }
    }
}

/// Guaranteed when every container has equal CPU and memory requests and limits, `BestEffort`
/// when none sets any, Burstable otherwise.
fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> =
        spec.get("containers").and_then(Value::as_array).map(|c| c.iter().collect()).unwrap_or_default();
    let resources = |c: &Value, kind: &str, name: &str| c.pointer(&format!("/resources/{kind}/{name}")).cloned();
    let any = containers.iter().any(|c| {
        ["requests", "limits"]
            .iter()
            .any(|k| c.pointer(&format!("/resources/{k}")).and_then(Value::as_object).is_some_and(|m| !m.is_empty()))
    });
    if !any {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = resources(c, "limits", r);
            limit.is_some() && (resources(c, "requests", r).is_none() || resources(c, "requests", r) == limit)
        })
    });
    if guaranteed { "Guaranteed" } else { "Burstable" }
}

fn secret(object: &mut Value) {
    set_default(object, "type", json!("Opaque"));
    merge_string_data(object);
}

/// A Secret's `stringData` is write-only: its entries are merged into `data` (base64,
/// overriding the same keys there) and it is dropped, on create and update, as upstream does.
pub fn merge_string_data(object: &mut Value) {
    use base64::Engine as _;
    let Some(Value::Object(strings)) = object.as_object_mut().and_then(|o| o.remove("stringData")) else { return };
    if !object["data"].is_object() {
        object["data"] = json!({});
    }
    for (key, value) in strings {
        let text = value.as_str().map_or_else(|| value.to_string(), str::to_owned);
        object["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(text));
    }
}

fn namespace(object: &mut Value) {
    set_default(object, "spec", json!({}));
    set_default(&mut object["spec"], "finalizers", json!(["kubernetes"]));
    set_default(object, "status", json!({"phase": "Active"}));
    let name = object.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let labels = &mut object["metadata"]["labels"];
    if labels.is_null() {
        *labels = json!({});
    }
    labels["kubernetes.io/metadata.name"] = name;
}

fn service(object: &mut Value) {
    let Some(spec) = object.get_mut("spec") else { return };
    set_default(spec, "type", json!("ClusterIP"));
    set_default(spec, "sessionAffinity", json!("None"));
    set_default(spec, "ipFamilies", json!(["IPv4"]));
    set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
    set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for port in ports {
            set_default(port, "protocol", json!("TCP"));
            let number = port.get("port").cloned().unwrap_or(Value::Null);
            set_default(port, "targetPort", number);
        }
    }
}

fn deployment(object: &mut Value) {
    let Some(spec) = object.get_mut("spec") else { return };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    set_default(
        spec,
        "strategy",
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}}),
    );
    if let Some(template_spec) = spec.pointer_mut("/template/spec") {
        pod_spec(template_spec);
    }
}

fn stateful_set(object: &mut Value) {
    let Some(spec) = object.get_mut("spec") else { return };
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    set_default(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
    if spec.pointer("/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
        set_default(&mut spec["updateStrategy"], "rollingUpdate", json!({}));
        set_default(&mut spec["updateStrategy"]["rollingUpdate"], "partition", json!(0));
    }
    set_default(spec, "persistentVolumeClaimRetentionPolicy", json!({}));
    for field in ["whenDeleted", "whenScaled"] {
        set_default(&mut spec["persistentVolumeClaimRetentionPolicy"], field, json!("Retain"));
    }
    if let Some(template_spec) = spec.pointer_mut("/template/spec") {
        pod_spec(template_spec);
    }
}

fn daemon_set(object: &mut Value) {
    let Some(spec) = object.get_mut("spec") else { return };
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
    if spec.pointer("/updateStrategy/type").and_then(Value::as_str) == Some("RollingUpdate") {
        set_default(&mut spec["updateStrategy"], "rollingUpdate", json!({}));
        set_default(&mut spec["updateStrategy"]["rollingUpdate"], "maxUnavailable", json!(1));
        set_default(&mut spec["updateStrategy"]["rollingUpdate"], "maxSurge", json!(0));
    }
    if let Some(template_spec) = spec.pointer_mut("/template/spec") {
        pod_spec(template_spec);
    }
}

/// A Job's defaults, and its generated selector: unless `manualSelector`, the selector is the
/// Job's UID and the template is labelled with it and the Job's name (as upstream's Job strategy
/// does on create; the template is immutable afterwards).
fn job(object: &mut Value) {
    let uid = object.pointer("/metadata/uid").cloned().unwrap_or(Value::Null);
    let name = object.pointer("/metadata/name").cloned().unwrap_or(Value::Null);
    let Some(spec) = object.get_mut("spec") else { return };
    job_spec(spec);
    let manual = spec.get("manualSelector").and_then(Value::as_bool) == Some(true);
    if manual || spec.get("selector").is_some_and(|s| !s.is_null()) {
        return;
    }
    spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}});
    set_default(spec, "template", json!({}));
    set_default(&mut spec["template"], "metadata", json!({}));
    set_default(&mut spec["template"]["metadata"], "labels", json!({}));
    let labels = &mut spec["template"]["metadata"]["labels"];
    for (label, value) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels[label] = value.clone();
    }
}

/// The defaults of a Job spec (also inside a CronJob's `jobTemplate`).
fn job_spec(spec: &mut Value) {
    if spec.get("parallelism").is_none_or(Value::is_null) && spec.get("completions").is_none_or(Value::is_null) {
        spec["completions"] = json!(1);
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    if let Some(template_spec) = spec.pointer_mut("/template/spec") {
        pod_spec(template_spec);
    }
}

fn cron_job(object: &mut Value) {
    let Some(spec) = object.get_mut("spec") else { return };
    set_default(spec, "concurrencyPolicy", json!("Allow"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "successfulJobsHistoryLimit", json!(3));
    set_default(spec, "failedJobsHistoryLimit", json!(1));
    if let Some(job_spec_value) = spec.pointer_mut("/jobTemplate/spec") {
        job_spec(job_spec_value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_string_data_is_merged_into_data() {
        let mut object =
            json!({"kind": "Secret", "data": {"a": "MQ==", "b": "MQ=="}, "stringData": {"b": "2", "c": "3"}});
        super::secret(&mut object);
        assert_eq!(
            object,
            json!({"kind": "Secret", "type": "Opaque", "data": {"a": "MQ==", "b": "Mg==", "c": "Mw=="}})
        );
    }

    #[test]
    fn workload_defaults_follow_kubernetes() {
        let mut set = json!({"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "a:1"}]}}}});
        stateful_set(&mut set);
        assert_eq!(set["spec"]["podManagementPolicy"], "OrderedReady");
        assert_eq!(set["spec"]["updateStrategy"], json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}}));
        assert_eq!(set["spec"]["persistentVolumeClaimRetentionPolicy"]["whenScaled"], "Retain");
        assert_eq!(set["spec"]["template"]["spec"]["restartPolicy"], "Always");
        let mut on_delete = json!({"spec": {"updateStrategy": {"type": "OnDelete"}}});
        daemon_set(&mut on_delete);
        assert_eq!(on_delete["spec"]["updateStrategy"], json!({"type": "OnDelete"}));
        let mut ds = json!({"spec": {}});
        daemon_set(&mut ds);
        assert_eq!(ds["spec"]["updateStrategy"]["rollingUpdate"], json!({"maxUnavailable": 1, "maxSurge": 0}));
    }

    #[test]
    fn a_gated_pod_is_created_with_the_scheduling_gated_condition() {
        let mut gated = json!({"spec": {"schedulingGates": [{"name": "example.com/a"}], "containers": []}});
        pod(&mut gated);
        let conditions = &gated["status"]["conditions"];
        assert_eq!(conditions.as_array().map(Vec::len), Some(1), "{gated}");
        assert_eq!(
            (&conditions[0]["type"], &conditions[0]["status"], &conditions[0]["reason"]),
            (&json!("PodScheduled"), &json!("False"), &json!("SchedulingGated"))
        );
        // An admission plugin that removes the gates removes the condition with them.
        gated["spec"]["schedulingGates"] = json!([]);
        pod(&mut gated);
        assert_eq!(gated["status"].get("conditions"), None, "{gated}");
        let mut free = json!({"spec": {"containers": []}});
        pod(&mut free);
        assert_eq!(free["status"].get("conditions"), None);
    }

    #[test]
    fn pod_defaults_follow_kubernetes() {
        let info = capstan_api::Registry::builtin();
        let pods = info.lookup("", "v1", "pods").expect("pods");
        let cases = [
            ("busybox", "Always", json!({}), "BestEffort"),
            ("busybox:latest", "Always", json!({"requests": {"cpu": "100m"}}), "Burstable"),
            (
                "registry.local:5000/busybox:1.36",
                "IfNotPresent",
                json!({"limits": {"cpu": "1", "memory": "1Gi"}}),
                "Guaranteed",
            ),
        ];
        for (image, pull, resources, qos) in cases {
            let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": image, "resources": resources}]}});
            Defaults.apply(pods, &mut pod);
            assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], pull, "{image}");
            assert_eq!(pod["status"]["qosClass"], qos, "{image}");
            assert_eq!(pod["spec"]["restartPolicy"], "Always");
            assert_eq!(pod["status"]["phase"], "Pending");
        }
        // A limit without a request becomes the request too; a stated request is kept.
        let resources = json!({"limits": {"cpu": "1", "memory": "1Gi"}, "requests": {"cpu": "500m"}});
        let mut pod = json!({"spec": {"containers": [{"name": "c", "image": "x:1", "resources": resources}]}});
        Defaults.apply(pods, &mut pod);
        assert_eq!(pod["spec"]["containers"][0]["resources"]["requests"], json!({"cpu": "500m", "memory": "1Gi"}));
    }

    #[test]
    fn jobs_get_api_defaults_and_a_selector_from_their_uid() {
        let registry = capstan_api::Registry::builtin();
        let jobs = registry.lookup("batch", "v1", "jobs").expect("jobs");
        // (spec, parallelism, completions, selector generated)
        let cases = [
            (json!({}), json!(1), json!(1), true),
            (json!({"parallelism": 3}), json!(3), Value::Null, true),
            (json!({"completions": 4}), json!(1), json!(4), true),
            (json!({"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}), json!(1), json!(1), false),
        ];
        for (mut spec, parallelism, completions, generated) in cases {
            spec["template"] =
                json!({"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x:1"}]}});
            let mut object = json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": spec});
            Defaults.apply(jobs, &mut object);
            let spec = &object["spec"];
            assert_eq!((&spec["parallelism"], &spec["completions"]), (&parallelism, &completions), "{spec}");
            assert_eq!((&spec["backoffLimit"], &spec["completionMode"]), (&json!(6), &json!("NonIndexed")));
            let labels = &spec["template"]["metadata"]["labels"];
            if generated {
                assert_eq!(spec["selector"], json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}}));
                assert_eq!(
                    (&labels["controller-uid"], &labels["batch.kubernetes.io/job-name"]),
                    (&json!("u1"), &json!("pi"))
                );
                assert_eq!(
                    (&labels["batch.kubernetes.io/controller-uid"], &labels["job-name"]),
                    (&json!("u1"), &json!("pi"))
                );
            } else {
                assert_eq!(spec["selector"], json!({"matchLabels": {"a": "b"}}));
                assert!(labels.is_null());
            }
            assert_eq!(spec["template"]["spec"]["dnsPolicy"], "ClusterFirst");
        }
    }

    #[test]
    fn cron_jobs_get_api_defaults() {
        let registry = capstan_api::Registry::builtin();
        let cron_jobs = registry.lookup("batch", "v1", "cronjobs").expect("cronjobs");
        let mut object = json!({"spec": {"schedule": "@hourly", "jobTemplate": {"spec": {"template": {"spec": {}}}}}});
        Defaults.apply(cron_jobs, &mut object);
        let spec = &object["spec"];
        assert_eq!(spec["concurrencyPolicy"], "Allow");
        assert_eq!((&spec["successfulJobsHistoryLimit"], &spec["failedJobsHistoryLimit"]), (&json!(3), &json!(1)));
        assert_eq!(spec["jobTemplate"]["spec"]["backoffLimit"], 6);
        assert!(spec["jobTemplate"]["spec"].get("selector").is_none(), "a Job's selector is made when it is");
    }
}
