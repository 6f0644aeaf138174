//! Built-in admission policy Priority: a pod's `priorityClassName` becomes its `priority` (and
//! `preemptionPolicy`) from the PriorityClass; pods without one get the global default class's
//! value, or 0. An unknown class is refused.

use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, cluster};
use serde_json::{Value, json};

/// Resolves priority classes.
pub struct Priority;

/// The patch setting the pod's priority from `class` (or 0 with no class).
fn patch(class: Option<&Value>) -> Value {
    let value = class.and_then(|c| c.get("value")).and_then(Value::as_i64).unwrap_or(0);
    let mut ops = vec![json!({"op": "add", "path": "/spec/priority", "value": value})];
    if let Some(name) = class.and_then(|c| c.pointer("/metadata/name")) {
        ops.push(json!({"op": "add", "path": "/spec/priorityClassName", "value": name}));
    }
    let preemption = class.and_then(|c| c.get("preemptionPolicy")).cloned().unwrap_or(json!("PreemptLowerPriority"));
    ops.push(json!({"op": "add", "path": "/spec/preemptionPolicy", "value": preemption}));
    Value::Array(ops)
}

fn resolve(name: Option<&str>) -> Result<Option<Value>, String> {
    match name.filter(|n| !n.is_empty()) {
        Some(name) => match cluster::get("scheduling.k8s.io", "v1", "priorityclasses", None, name) {
            Ok(Some(class)) => Ok(Some(class)),
            Ok(None) => Err(format!("no PriorityClass with name {name} was found")),
            Err(e) => Err(format!("cannot read PriorityClass {name}: {e:?}")),
        },
        None => cluster::list("scheduling.k8s.io", "v1", "priorityclasses", None)
            .map(|classes| classes.into_iter().find(|c| c.get("globalDefault") == Some(&json!(true))))
            .map_err(|e| format!("cannot list PriorityClasses: {e:?}")),
    }
}

impl AdmissionPolicy for Priority {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn mutate(&self, request: &AdmissionRequest) -> AdmissionResponse {
        if request.sub_resource.is_some() {
            return AdmissionResponse::allow();
        }
        let pod: Value = match request.object() {
            Ok(Some(pod)) => pod,
            Ok(None) => return AdmissionResponse::allow(),
            Err(e) => return AdmissionResponse::deny(format!("the pod is not valid JSON: {e}")).with_code(400),
        };
        let name = pod.pointer("/spec/priorityClassName").and_then(Value::as_str);
        let class = match resolve(name) {
            Ok(class) => class,
            Err(message) => return AdmissionResponse::deny(message),
        };
        let wanted = class.as_ref().and_then(|c| c.get("value")).and_then(Value::as_i64).unwrap_or(0);
        if let Some(given) = pod.pointer("/spec/priority").and_then(Value::as_i64)
            && given != wanted
        {
            return AdmissionResponse::deny(
                "the integer value of priority must not be provided in pod spec; priority admission controller \
                 computed it from the given PriorityClass name",
            );
        }
        AdmissionResponse::allow().with_patch(patch(class.as_ref()).to_string())
    }
}

capstan_plugin_sdk::admission_policy!(Priority);

#[cfg(test)]
mod tests {
    use super::patch;
    use serde_json::json;

    #[test]
    fn a_class_sets_priority_and_preemption() {
        let class = json!({"metadata": {"name": "high"}, "value": 1000, "preemptionPolicy": "Never"});
        let ops = patch(Some(&class));
        assert_eq!(ops[0]["value"], 1000);
        assert_eq!(ops[2]["value"], "Never");
        assert_eq!(patch(None)[0]["value"], 0);
    }
}
