//! Built-in admission policy `NamespaceLifecycle` (upstream's admission plugin of that name):
//! the namespaces every cluster relies on (`default`, `kube-system`, `kube-public`) may not be
//! deleted, and nothing may be created in a namespace that does not exist or is being deleted.
//!
//! `capstan server` enables it for namespace deletions only: the API server refuses creates in
//! missing or terminating namespaces itself, before admission, so a policy call on every
//! namespaced create would repeat that check. Rules that add `CREATE` make it check them too.

use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, Operation, cluster};
use serde_json::Value;

/// Denies deleting the system namespaces and creating in missing or terminating namespaces.
pub struct NamespaceLifecycle;

/// The namespaces that may not be deleted, as upstream's.
const IMMORTAL: [&str; 3] = ["default", "kube-system", "kube-public"];

/// Why a namespace may not be deleted, if it may not.
fn deletion_refusal(resource: &str, namespace: &str) -> Option<&'static str> {
    (resource == "namespaces" && IMMORTAL.contains(&namespace)).then_some("this namespace may not be deleted")
}

/// Why a namespace refuses new objects, if it does.
fn refusal(namespace: &str, found: Option<&Value>) -> Option<String> {
    match found {
        None => Some(format!("namespaces \"{namespace}\" not found")),
        Some(ns)
            if ns.pointer("/metadata/deletionTimestamp").is_some()
                || ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") =>
        {
            Some(format!("unable to create new content in namespace {namespace} because it is being terminated"))
        }
        Some(_) => None,
    }
}

impl AdmissionPolicy for NamespaceLifecycle {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn validate(&self, request: &AdmissionRequest) -> AdmissionResponse {
        if request.operation == Operation::Delete && request.resource.group.is_empty() && request.sub_resource.is_none()
        {
            return match deletion_refusal(&request.resource.resource, &request.name) {
                Some(message) => AdmissionResponse::deny(message).with_code(403),
                None => AdmissionResponse::allow(),
            };
        }
        let Some(namespace) = request.namespace.as_deref() else { return AdmissionResponse::allow() };
        if request.operation != Operation::Create || request.sub_resource.is_some() {
            return AdmissionResponse::allow();
        }
        match cluster::get("", "v1", "namespaces", None, namespace) {
            Ok(found) => match refusal(namespace, found.as_ref()) {
                Some(message) => AdmissionResponse::deny(message).with_code(if found.is_none() { 404 } else { 403 }),
                None => AdmissionResponse::allow(),
            },
            Err(e) => AdmissionResponse::deny(format!("cannot read namespace {namespace}: {e:?}")).with_code(500),
        }
    }
}

capstan_plugin_sdk::admission_policy!(NamespaceLifecycle);

#[cfg(test)]
mod tests {
    use super::{deletion_refusal, refusal};
    use serde_json::json;

    #[test]
    fn only_the_system_namespaces_are_kept_from_deletion() {
        for namespace in ["default", "kube-system", "kube-public"] {
            assert_eq!(deletion_refusal("namespaces", namespace), Some("this namespace may not be deleted"));
        }
        for (resource, name) in [("namespaces", "team-a"), ("namespaces", "kube-node-lease"), ("configmaps", "default")]
        {
            assert_eq!(deletion_refusal(resource, name), None, "{resource}/{name}");
        }
    }

    #[test]
    fn only_live_namespaces_accept_objects() {
        let live = json!({"metadata": {"name": "a"}, "status": {"phase": "Active"}});
        let terminating = json!({"metadata": {"name": "a", "deletionTimestamp": "2024-01-01T00:00:00Z"}});
        assert_eq!(refusal("a", Some(&live)), None);
        assert!(refusal("a", Some(&terminating)).is_some_and(|m| m.contains("being terminated")));
        assert!(refusal("a", None).is_some_and(|m| m.contains("not found")));
    }
}
