//! Admission policy `DenyEscalatingExec`, as the admission plugin Kubernetes once shipped under
//! that name: `kubectl exec` and `kubectl attach` (CONNECT on `pods/exec` and `pods/attach`)
//! into a pod that runs a privileged container or shares the node's PID or IPC namespace are
//! refused, since a shell there is a shell on the node.
//!
//! Not enabled by default. Enable it with a Plugin object whose rule is
//! `operations: [CONNECT]`, `resources: [pods/exec, pods/attach]`. Configuration: none.

use capstan_plugin_sdk::admission::cluster;
use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, Operation};
use serde_json::Value;

/// Refuses exec and attach into escalated pods.
pub struct DenyEscalatingExec;

/// Why exec into `pod` would escalate, if it would.
#[must_use]
pub fn escalation(pod: &Value) -> Option<&'static str> {
    let flag = |pointer: &str| pod.pointer(pointer).and_then(Value::as_bool).unwrap_or(false);
    if flag("/spec/hostPID") {
        return Some("cannot exec into or attach to a container using host pid");
    }
    if flag("/spec/hostIPC") {
        return Some("cannot exec into or attach to a container using host ipc");
    }
    let privileged = ["containers", "initContainers", "ephemeralContainers"].iter().any(|list| {
        pod.pointer(&format!("/spec/{list}"))
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c.pointer("/securityContext/privileged").and_then(Value::as_bool).unwrap_or(false))
    });
    privileged.then_some("cannot exec into or attach to a privileged container")
}

impl AdmissionPolicy for DenyEscalatingExec {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn validate(&self, request: &AdmissionRequest) -> AdmissionResponse {
        let connects = matches!(request.operation, Operation::Connect)
            && request.resource.group.is_empty()
            && request.resource.resource == "pods"
            && matches!(request.sub_resource.as_deref(), Some("exec" | "attach"));
        if !connects {
            return AdmissionResponse::allow();
        }
        let Some(namespace) = request.namespace.as_deref() else { return AdmissionResponse::allow() };
        match cluster::get("", "v1", "pods", Some(namespace), &request.name) {
            Ok(Some(pod)) => escalation(&pod).map_or_else(AdmissionResponse::allow, AdmissionResponse::deny),
            // No pod: the connect fails with NotFound after admission.
            Ok(None) => AdmissionResponse::allow(),
            Err(e) => AdmissionResponse::deny(format!("cannot read pod {}: {e:?}", request.name)).with_code(500),
        }
    }
}

capstan_plugin_sdk::admission_policy!(DenyEscalatingExec);

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::escalation;

    #[test]
    fn privileged_and_host_namespace_pods_are_escalations() {
        let cases = [
            (json!({"spec": {"containers": [{"name": "a"}]}}), None),
            (json!({"spec": {"containers": [{"securityContext": {"privileged": false}}]}}), None),
            (
                json!({"spec": {"containers": [{}, {"securityContext": {"privileged": true}}]}}),
                Some("cannot exec into or attach to a privileged container"),
            ),
            (
                json!({"spec": {"initContainers": [{"securityContext": {"privileged": true}}]}}),
                Some("cannot exec into or attach to a privileged container"),
            ),
            (json!({"spec": {"hostPID": true}}), Some("cannot exec into or attach to a container using host pid")),
            (json!({"spec": {"hostIPC": true}}), Some("cannot exec into or attach to a container using host ipc")),
        ];
        for (pod, expected) in cases {
            assert_eq!(escalation(&pod), expected, "{pod}");
        }
    }
}
