//! Pods: NAME READY STATUS RESTARTS AGE, and with `-o wide` IP NODE NOMINATED NODE READINESS GATES.

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::{AGE, Column, NAME, Printer};
use crate::table::duration;
use crate::table::object::{age, condition, deleting, field, integer, list, name, text, text_or, time};

pub(super) static PRINTER: Printer = Printer { columns: COLUMNS, cells, conditions };

const COLUMNS: &[Column] = &[
    NAME,
    Column::text("Ready", "The aggregate readiness state of this pod for accepting traffic."),
    Column::text("Status", "The aggregate status of the containers in this pod."),
    Column::text(
        "Restarts",
        "The number of times the containers in this pod have been restarted and when the last container in this pod \
         has restarted.",
    ),
    AGE,
    Column::text("IP", "IP address allocated to the pod. Routable at least within the cluster.").wide(),
    Column::text("Node", "NodeName indicates in which node this pod is scheduled.").wide(),
    Column::text("Nominated Node", "The node the scheduler nominated for this pod while it preempts others.").wide(),
    Column::text("Readiness Gates", "Pod conditions, beyond container readiness, that gate the pod's readiness.")
        .wide(),
];

fn cells(pod: &Value, now: Timestamp) -> Vec<Value> {
    let summary = Summary::of(pod);
    vec![
        name(pod),
        format!("{}/{}", summary.ready, summary.total).into(),
        summary.reason.into(),
        summary.restarts.render(now).into(),
        age(pod, now),
        pod_ip(pod).into(),
        text_or(pod, "/spec/nodeName", "<none>").into(),
        text_or(pod, "/status/nominatedNodeName", "<none>").into(),
        readiness_gates(pod).into(),
    ]
}

/// Finished pods carry a `Completed` row condition, which lets clients hide them.
fn conditions(pod: &Value) -> Vec<Value> {
    let completed = |reason: &str, message: &str| json!({"type": "Completed", "status": "True", "reason": reason, "message": message});
    match text(pod, "/status/phase") {
        "Succeeded" => vec![completed("Succeeded", "The pod has completed successfully.")],
        "Failed" => vec![completed("Failed", "The pod failed.")],
        _ => Vec::new(),
    }
}

/// What the READY, STATUS and RESTARTS cells say, worked out as kubectl always has: the pod's
/// phase or reason, overridden by the first init container still in the way, else by the app
/// containers' states, else by deletion.
struct Summary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: Restarts,
}

/// A restart count and the time the latest restarted container last terminated.
#[derive(Clone, Copy, Default)]
struct Restarts {
    count: i64,
    last: Option<Timestamp>,
}

impl Restarts {
    fn add(&mut self, status: &Value) {
        self.count += integer(status, "/restartCount");
        self.last = self.last.max(time(status, "/lastState/terminated/finishedAt"));
    }

    /// `3`, or `3 (5m ago)` once a restart time is known.
    fn render(self, now: Timestamp) -> String {
        match self.last {
            Some(last) if self.count != 0 => format!("{} ({} ago)", self.count, duration::since(Some(last), now)),
            _ => self.count.to_string(),
        }
    }
}

/// Restarts seen while walking init containers: all of them, and those of sidecars alone.
struct InitRestarts {
    all: Restarts,
    sidecars: Restarts,
}

impl Summary {
    fn of(pod: &Value) -> Self {
        let sidecars = list(pod, "/spec/initContainers").iter().filter(|spec| is_sidecar_spec(spec)).count();
        let mut summary = Self {
            ready: 0,
            total: list(pod, "/spec/containers").len() + sidecars,
            reason: initial_reason(pod),
            restarts: Restarts::default(),
        };
        let (initializing, init) = summary.walk_init_containers(pod);
        if !initializing || condition(pod, "/status/conditions", "Initialized") == Some("True") {
            // Once initialized, only sidecars' restarts still count among init containers.
            summary.restarts = init.sidecars;
            summary.walk_containers(pod);
        } else {
            summary.restarts = init.all;
        }
        summary.apply_deletion(pod);
        summary
    }

    /// Stops at the first init container that has not finished; returns whether one was found.
    fn walk_init_containers(&mut self, pod: &Value) -> (bool, InitRestarts) {
        let specs = list(pod, "/spec/initContainers");
        let is_sidecar = |status: &Value| {
            let name = text(status, "/name");
            specs.iter().any(|spec| text(spec, "/name") == name && is_sidecar_spec(spec))
        };
        let mut restarts = InitRestarts { all: Restarts::default(), sidecars: Restarts::default() };
        for (index, status) in list(pod, "/status/initContainerStatuses").iter().enumerate() {
            restarts.all.add(status);
            let sidecar = is_sidecar(status);
            if sidecar {
                restarts.sidecars.add(status);
            }
            let terminated = field(status, "/state/terminated");
            if terminated.is_some_and(|terminated| integer(terminated, "/exitCode") == 0) {
                continue;
            }
            if sidecar && status.get("started") == Some(&Value::Bool(true)) {
                if is_ready(status) {
                    self.ready += 1;
                }
                continue;
            }
            let waiting = text(status, "/state/waiting/reason");
            self.reason = match terminated {
                Some(terminated) => format!("Init:{}", termination_reason(terminated)),
                None if !waiting.is_empty() && waiting != "PodInitializing" => format!("Init:{waiting}"),
                None => format!("Init:{index}/{}", specs.len()),
            };
            return (true, restarts);
        }
        (false, restarts)
    }

    /// The first container (in spec order) with a waiting or terminated reason names the status.
    fn walk_containers(&mut self, pod: &Value) {
        let mut running = false;
        for status in list(pod, "/status/containerStatuses").iter().rev() {
            self.restarts.add(status);
            let waiting = text(status, "/state/waiting/reason");
            if !waiting.is_empty() {
                waiting.clone_into(&mut self.reason);
            } else if let Some(terminated) = field(status, "/state/terminated") {
                self.reason = termination_reason(terminated);
            } else if is_ready(status) && field(status, "/state/running").is_some() {
                running = true;
                self.ready += 1;
            }
        }
        // A completed sidecar-like container must not hide containers that still run.
        if self.reason == "Completed" && running {
            let ready = condition(pod, "/status/conditions", "Ready") == Some("True");
            if ready { "Running" } else { "NotReady" }.clone_into(&mut self.reason);
        }
    }

    fn apply_deletion(&mut self, pod: &Value) {
        if !deleting(pod) {
            return;
        }
        if text(pod, "/status/reason") == "NodeLost" {
            "Unknown".clone_into(&mut self.reason);
        } else if !matches!(text(pod, "/status/phase"), "Succeeded" | "Failed") {
            "Terminating".clone_into(&mut self.reason);
        }
    }
}

/// The pod's reason if it has one, else its phase; `SchedulingGated` while scheduling gates hold it.
fn initial_reason(pod: &Value) -> String {
    let gated = list(pod, "/status/conditions")
        .iter()
        .any(|c| text(c, "/type") == "PodScheduled" && text(c, "/reason") == "SchedulingGated");
    if gated {
        return "SchedulingGated".to_owned();
    }
    text_or(pod, "/status/reason", text(pod, "/status/phase")).to_owned()
}

/// Sidecars are init containers that keep running (`restartPolicy: Always`).
fn is_sidecar_spec(spec: &Value) -> bool {
    text(spec, "/restartPolicy") == "Always"
}

fn is_ready(status: &Value) -> bool {
    status.get("ready") == Some(&Value::Bool(true))
}

/// A terminated state's reason, else its signal or exit code.
fn termination_reason(terminated: &Value) -> String {
    let reason = text(terminated, "/reason");
    if !reason.is_empty() {
        return reason.to_owned();
    }
    match integer(terminated, "/signal") {
        0 => format!("ExitCode:{}", integer(terminated, "/exitCode")),
        signal => format!("Signal:{signal}"),
    }
}

fn pod_ip(pod: &Value) -> &str {
    let first = list(pod, "/status/podIPs").first().map_or("", |ip| text(ip, "/ip"));
    // Writers that set only the singular podIP are still shown.
    Some(first).filter(|ip| !ip.is_empty()).unwrap_or_else(|| text_or(pod, "/status/podIP", "<none>"))
}

/// `true/all` readiness gates whose condition is True, `<none>` without gates.
fn readiness_gates(pod: &Value) -> String {
    let gates = list(pod, "/spec/readinessGates");
    if gates.is_empty() {
        return "<none>".to_owned();
    }
    let passing = gates
        .iter()
        .filter(|gate| condition(pod, "/status/conditions", text(gate, "/conditionType")) == Some("True"))
        .count();
    format!("{passing}/{}", gates.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2024-05-01T12:00:00Z";

    fn now() -> Timestamp {
        NOW.parse().expect("valid time")
    }

    fn pod(spec: &Value, status: &Value) -> Value {
        json!({"metadata": {"name": "web", "creationTimestamp": "2024-05-01T11:00:00Z"}, "spec": spec, "status": status})
    }

    fn one_container() -> Value {
        json!({"containers": [{"name": "app"}]})
    }

    /// READY, STATUS and RESTARTS of a pod.
    fn summary(pod: &Value) -> [String; 3] {
        let cells = cells(pod, now());
        [1, 2, 3].map(|i| cells[i].as_str().expect("string cell").to_owned())
    }

    #[test]
    fn status_follows_phase_and_container_states() {
        let running = json!({"running": {"startedAt": "2024-05-01T11:00:00Z"}});
        let cases = [
            ("pending", pod(&one_container(), &json!({"phase": "Pending"})), ["0/1", "Pending", "0"]),
            (
                "creating",
                pod(
                    &one_container(),
                    &json!({"phase": "Pending", "containerStatuses": [
                        {"name": "app", "ready": false, "restartCount": 0, "state": {"waiting": {"reason": "ContainerCreating"}}}]}),
                ),
                ["0/1", "ContainerCreating", "0"],
            ),
            (
                "running",
                pod(
                    &one_container(),
                    &json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": true, "state": running}]}),
                ),
                ["1/1", "Running", "0"],
            ),
            (
                "one of two ready",
                pod(
                    &json!({"containers": [{"name": "app"}, {"name": "log"}]}),
                    &json!({"phase": "Running", "containerStatuses": [
                        {"name": "app", "ready": true, "state": running},
                        {"name": "log", "ready": false, "state": running}]}),
                ),
                ["1/2", "Running", "0"],
            ),
            (
                "crash looping",
                pod(
                    &one_container(),
                    &json!({"phase": "Running", "containerStatuses": [{"name": "app", "ready": false, "restartCount": 5,
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-05-01T11:57:00Z"}}}]}),
                ),
                ["0/1", "CrashLoopBackOff", "5 (3m ago)"],
            ),
            (
                "completed",
                pod(
                    &one_container(),
                    &json!({"phase": "Succeeded", "containerStatuses": [{"name": "app", "ready": false,
                        "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}}]}),
                ),
                ["0/1", "Completed", "0"],
            ),
            (
                "killed without a reason",
                pod(
                    &one_container(),
                    &json!({"phase": "Failed", "containerStatuses": [{"name": "app",
                        "state": {"terminated": {"exitCode": 137, "signal": 9}}}]}),
                ),
                ["0/1", "Signal:9", "0"],
            ),
            (
                "exited without a reason",
                pod(
                    &one_container(),
                    &json!({"phase": "Failed", "containerStatuses": [{"name": "app",
                        "state": {"terminated": {"exitCode": 3}}}]}),
                ),
                ["0/1", "ExitCode:3", "0"],
            ),
        ];
        for (case, pod, expected) in cases {
            assert_eq!(summary(&pod), expected, "{case}");
        }
    }

    #[test]
    fn status_prefers_running_containers_and_pod_reasons() {
        let running = json!({"running": {"startedAt": "2024-05-01T11:00:00Z"}});
        let cases = [
            (
                "completed beside a running container, not ready",
                pod(
                    &json!({"containers": [{"name": "job"}, {"name": "server"}]}),
                    &json!({"phase": "Running", "containerStatuses": [
                        {"name": "job", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "server", "ready": true, "state": running}]}),
                ),
                ["1/2", "NotReady", "0"],
            ),
            (
                "completed beside a running container, ready",
                pod(
                    &json!({"containers": [{"name": "job"}, {"name": "server"}]}),
                    &json!({"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
                        "containerStatuses": [
                        {"name": "job", "state": {"terminated": {"exitCode": 0, "reason": "Completed"}}},
                        {"name": "server", "ready": true, "state": running}]}),
                ),
                ["1/2", "Running", "0"],
            ),
            (
                "evicted",
                pod(&one_container(), &json!({"phase": "Failed", "reason": "Evicted"})),
                ["0/1", "Evicted", "0"],
            ),
            (
                "scheduling gated",
                pod(
                    &one_container(),
                    &json!({"phase": "Pending", "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
                ),
                ["0/1", "SchedulingGated", "0"],
            ),
        ];
        for (case, pod, expected) in cases {
            assert_eq!(summary(&pod), expected, "{case}");
        }
    }

    #[test]
    fn init_containers_hold_the_status_until_they_finish() {
        let spec = json!({"initContainers": [{"name": "setup"}], "containers": [{"name": "app"}]});
        let init = |state: Value| {
            pod(
                &spec,
                &json!({"phase": "Pending", "initContainerStatuses": [{"name": "setup", "restartCount": 0, "state": state}]}),
            )
        };
        let cases = [
            ("running", init(json!({"running": {}})), "Init:0/1"),
            ("initializing", init(json!({"waiting": {"reason": "PodInitializing"}})), "Init:0/1"),
            ("crash looping", init(json!({"waiting": {"reason": "CrashLoopBackOff"}})), "Init:CrashLoopBackOff"),
            ("failed", init(json!({"terminated": {"exitCode": 1, "reason": "Error"}})), "Init:Error"),
            ("exit code", init(json!({"terminated": {"exitCode": 2}})), "Init:ExitCode:2"),
            ("signal", init(json!({"terminated": {"exitCode": 137, "signal": 9}})), "Init:Signal:9"),
            ("done", init(json!({"terminated": {"exitCode": 0, "reason": "Completed"}})), "Pending"),
        ];
        for (case, pod, status) in cases {
            assert_eq!(summary(&pod)[1], status, "{case}");
        }
    }

    #[test]
    fn sidecars_count_toward_ready_and_restarts() {
        let pod = pod(
            &json!({"initContainers": [{"name": "proxy", "restartPolicy": "Always"}], "containers": [{"name": "app"}]}),
            &json!({"phase": "Running", "conditions": [{"type": "Initialized", "status": "True"}],
                "initContainerStatuses": [{"name": "proxy", "started": true, "ready": true, "restartCount": 2,
                    "state": {"running": {}}}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 1, "state": {"running": {}},
                    "lastState": {"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:50:00Z"}}}]}),
        );
        assert_eq!(summary(&pod), ["2/2", "Running", "3 (10m ago)"]);
    }

    #[test]
    fn deletion_shows_terminating_unless_finished_or_lost() {
        let deleting = |phase: &str, reason: &str| {
            let mut pod = pod(&one_container(), &json!({"phase": phase, "reason": reason}));
            pod["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
            pod
        };
        assert_eq!(summary(&deleting("Running", ""))[1], "Terminating");
        assert_eq!(summary(&deleting("Succeeded", ""))[1], "Succeeded");
        assert_eq!(summary(&deleting("Running", "NodeLost"))[1], "Unknown");
    }

    #[test]
    fn wide_cells_show_placement_and_gates() {
        let scheduled = pod(
            &json!({"nodeName": "node-1", "readinessGates": [{"conditionType": "a"}, {"conditionType": "b"}]}),
            &json!({"podIPs": [{"ip": "10.0.0.7"}], "conditions": [{"type": "a", "status": "True"}]}),
        );
        assert_eq!(
            cells(&scheduled, now())[4..],
            [json!("60m"), json!("10.0.0.7"), json!("node-1"), json!("<none>"), json!("1/2")]
        );
        let unscheduled = pod(&json!({}), &json!({"nominatedNodeName": "node-2"}));
        assert_eq!(
            cells(&unscheduled, now())[5..],
            [json!("<none>"), json!("<none>"), json!("node-2"), json!("<none>")]
        );
    }

    #[test]
    fn finished_pods_carry_a_completed_row_condition() {
        let reasons = |phase: &str| -> Vec<Value> {
            conditions(&pod(&one_container(), &json!({"phase": phase}))).iter().map(|c| c["reason"].clone()).collect()
        };
        assert_eq!(reasons("Succeeded"), [json!("Succeeded")]);
        assert_eq!(reasons("Failed"), [json!("Failed")]);
        assert!(reasons("Running").is_empty());
    }
}
