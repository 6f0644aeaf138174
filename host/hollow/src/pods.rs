//! Running pods on hollow nodes: report bound pods Running and Ready, finish graceful deletions,
//! and terminate pods that ask to.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::node::{HollowNode, node_of, pod_key};
use crate::{CONCURRENCY, EXIT_AFTER_ANNOTATION, EXIT_CODE_ANNOTATION};

/// What the pod runner shares between its tasks.
struct Runner {
    client: Client,
    nodes: HashMap<String, Arc<HollowNode>>,
    /// UIDs of pods already reported started (or being reported), so status echoes of our own
    /// writes are not acted on again.
    started: Mutex<HashSet<String>>,
    /// UIDs of pods whose deletion is being finished.
    finishing: Mutex<HashSet<String>>,
    writes: Semaphore,
    /// Whether bound pods are reported running (see [`crate::HollowConfig::report_running`]).
    report_running: bool,
}

/// Watches all pods and runs the ones bound to `nodes`, until the task is aborted.
pub(crate) async fn run(client: Client, nodes: Vec<Arc<HollowNode>>, report_running: bool) {
    let runner = Arc::new(Runner {
        client: client.clone(),
        nodes: nodes.into_iter().map(|node| (node.name().to_owned(), node)).collect(),
        started: Mutex::new(HashSet::new()),
        finishing: Mutex::new(HashSet::new()),
        writes: Semaphore::new(CONCURRENCY),
        report_running,
    });
    let pods: Api<Pod> = Api::all(client);
    let mut events = watcher::watcher(pods, watcher::Config::default().any_semantic()).default_backoff().boxed();
    while let Some(event) = events.next().await {
        match event {
            Ok(Event::Apply(pod) | Event::InitApply(pod)) => runner.clone().observe(pod),
            Ok(Event::Delete(pod)) => runner.forget(&pod),
            Ok(Event::Init | Event::InitDone) => {}
            Err(error) => tracing::warn!(%error, "hollow nodes: pod watch failed; retrying"),
        }
    }
}

impl Runner {
    fn observe(self: Arc<Self>, pod: Pod) {
        let Some(node) = node_of(&pod).and_then(|name| self.nodes.get(name)).cloned() else {
            return;
        };
        let uid = pod.uid().unwrap_or_default();
        if pod.metadata.deletion_timestamp.is_some() {
            if lock(&self.finishing).insert(uid) {
                tokio::spawn(async move { self.finish_deletion(pod).await });
            }
            return;
        }
        if !self.report_running {
            return;
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if matches!(phase, Some("Succeeded" | "Failed")) || !lock(&self.started).insert(uid.clone()) {
            return;
        }
        tokio::spawn(async move {
            if let Err(error) = self.start(&pod, &node).await {
                tracing::warn!(pod = %pod_key(&pod), %error, "hollow node cannot report the pod running");
                lock(&self.started).remove(&uid);
            }
        });
    }

    fn forget(&self, pod: &Pod) {
        let uid = pod.uid().unwrap_or_default();
        lock(&self.started).remove(&uid);
        lock(&self.finishing).remove(&uid);
    }

    async fn start(self: &Arc<Self>, pod: &Pod, node: &HollowNode) -> Result<(), kube::Error> {
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network).unwrap_or(false);
        let pod_ip = if host_network { node.address() } else { node.allocate_pod_ip() };
        let status = running_status(pod, &node.address().to_string(), &pod_ip.to_string());
        self.patch_status(pod, &status).await?;
        if let Some(after) = exit_after(pod) {
            let runner = self.clone();
            let pod = pod.clone();
            tokio::spawn(async move {
                tokio::time::sleep(after).await;
                let code = pod.annotations().get(EXIT_CODE_ANNOTATION).and_then(|c| c.parse().ok()).unwrap_or(0);
                if let Err(error) = runner.patch_status(&pod, &terminated_status(&pod, code)).await {
                    tracing::warn!(pod = %pod_key(&pod), %error, "hollow node cannot report the pod terminated");
                }
            });
        }
        Ok(())
    }

    async fn patch_status(&self, pod: &Pod, status: &Value) -> Result<(), kube::Error> {
        let _permit = self.writes.acquire().await;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await?;
        Ok(())
    }

    /// A hollow node has nothing to stop: it removes the pod at once, as a kubelet does once its
    /// containers have exited.
    async fn finish_deletion(&self, pod: Pod) {
        let _permit = self.writes.acquire().await;
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &pod.namespace().unwrap_or_default());
        let params = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions { uid: pod.uid(), resource_version: None }),
            ..DeleteParams::default()
        };
        match api.delete(&pod.name_any(), &params).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 409) => {}
            Err(error) => {
                tracing::warn!(pod = %pod_key(&pod), %error, "hollow node cannot finish deleting the pod");
                lock(&self.finishing).remove(&pod.uid().unwrap_or_default());
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn exit_after(pod: &Pod) -> Option<Duration> {
    let seconds: f64 = pod.annotations().get(EXIT_AFTER_ANNOTATION)?.parse().ok()?;
    (seconds.is_finite() && seconds >= 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// A container's name and image.
type Named = (String, String);

/// The pod's init containers and app containers.
fn containers(pod: &Pod) -> (Vec<Named>, Vec<Named>) {
    let pairs = |list: Option<&Vec<k8s_openapi::api::core::v1::Container>>| {
        list.map(|containers| {
            containers.iter().map(|c| (c.name.clone(), c.image.clone().unwrap_or_default())).collect()
        })
        .unwrap_or_default()
    };
    let spec = pod.spec.as_ref();
    (pairs(spec.and_then(|s| s.init_containers.as_ref())), pairs(spec.map(|s| &s.containers)))
}

fn container_status(pod: &Pod, name: &str, image: &str, ready: bool, state: &Value) -> Value {
    json!({
        "name": name,
        "image": image,
        "imageID": format!("hollow://{image}"),
        "containerID": format!("hollow://{}/{name}", pod.uid().unwrap_or_default()),
        "ready": ready,
        "started": ready,
        "restartCount": 0,
        "state": state,
    })
}

fn conditions(ready: bool, reason: Option<&str>) -> Value {
    let now = Time(Timestamp::now());
    let condition = |kind: &str, status: bool| {
        let mut condition =
            json!({"type": kind, "status": if status { "True" } else { "False" }, "lastTransitionTime": now});
        if let (false, Some(reason)) = (status, reason) {
            condition["reason"] = json!(reason);
        }
        condition
    };
    json!([
        condition("PodReadyToStartContainers", ready),
        condition("Initialized", true),
        condition("Ready", ready),
        condition("ContainersReady", ready),
        condition("PodScheduled", true),
    ])
}

fn running_status(pod: &Pod, host_ip: &str, pod_ip: &str) -> Value {
    let now = Time(Timestamp::now());
    let (init, app) = containers(pod);
    let completed = json!({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": now, "finishedAt": now}});
    let running = json!({"running": {"startedAt": now}});
    json!({
        "phase": "Running",
        "conditions": conditions(true, None),
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "qosClass": "BestEffort",
        "initContainerStatuses": init.iter().map(|(n, i)| container_status(pod, n, i, false, &completed)).collect::<Vec<_>>(),
        "containerStatuses": app.iter().map(|(n, i)| container_status(pod, n, i, true, &running)).collect::<Vec<_>>(),
    })
}

fn terminated_status(pod: &Pod, exit_code: i32) -> Value {
    let now = Time(Timestamp::now());
    let (_, app) = containers(pod);
    let reason = if exit_code == 0 { "Completed" } else { "Error" };
    let state = json!({"terminated": {"exitCode": exit_code, "reason": reason, "finishedAt": now}});
    json!({
        "phase": if exit_code == 0 { "Succeeded" } else { "Failed" },
        "conditions": conditions(false, Some("PodCompleted")),
        "containerStatuses": app.iter().map(|(n, i)| container_status(pod, n, i, false, &state)).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(clippy::needless_pass_by_value, reason = "callers build the annotations inline")]
    fn pod(annotations: Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1", "annotations": annotations},
            "spec": {"nodeName": "hollow-node-0",
                     "initContainers": [{"name": "setup", "image": "busybox"}],
                     "containers": [{"name": "app", "image": "nginx"}, {"name": "side", "image": "envoy"}]},
        }))
        .expect("pod")
    }

    #[test]
    fn a_running_pod_reports_every_container_ready() {
        let status = running_status(&pod(json!({})), "10.127.0.0", "10.128.0.2");
        assert_eq!(status["phase"], "Running");
        assert_eq!(status["podIP"], "10.128.0.2");
        assert_eq!(status["containerStatuses"].as_array().map(Vec::len), Some(2));
        assert_eq!(status["containerStatuses"][1]["name"], "side");
        assert_eq!(status["containerStatuses"][1]["ready"], true);
        assert_eq!(status["initContainerStatuses"][0]["state"]["terminated"]["reason"], "Completed");
        let ready = status["conditions"].as_array().and_then(|c| c.iter().find(|c| c["type"] == "Ready")).cloned();
        assert_eq!(ready.map(|c| c["status"].clone()), Some(json!("True")));
    }

    #[test]
    fn exit_annotations_decide_when_and_how_a_pod_ends() {
        let pod = pod(json!({EXIT_AFTER_ANNOTATION: "1.5", EXIT_CODE_ANNOTATION: "3"}));
        assert_eq!(exit_after(&pod), Some(Duration::from_millis(1500)));
        let status = terminated_status(&pod, 3);
        assert_eq!(status["phase"], "Failed");
        assert_eq!(status["containerStatuses"][0]["state"]["terminated"]["exitCode"], 3);
        assert_eq!(terminated_status(&pod, 0)["phase"], "Succeeded");
        assert_eq!(exit_after(&self::pod(json!({EXIT_AFTER_ANNOTATION: "soon"}))), None);
    }
}
