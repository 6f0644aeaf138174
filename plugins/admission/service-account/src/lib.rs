//! Built-in admission policy `ServiceAccount`: pods run as the `default` service account unless
//! they name one, and get the projected API token volume (`kube-api-access-…`, mounted at
//! `/var/run/secrets/kubernetes.io/serviceaccount` in every container) unless they or their
//! service account opt out with `automountServiceAccountToken: false`.
//!
//! Unlike upstream, a pod whose account does not exist (yet: the ServiceAccount controller creates
//! each namespace's `default` moments after the namespace) is admitted, without the token volume,
//! instead of refused.

use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, cluster};
use serde_json::{Value, json};

/// Where the token is mounted.
const MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Sets the service account and mounts its token.
pub struct ServiceAccount;

/// The projected volume upstream mounts: the token, the cluster CA and the namespace.
fn token_volume(name: &str) -> Value {
    json!({
        "name": name,
        "projected": {
            "defaultMode": 420,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace",
                    "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}},
            ],
        },
    })
}

/// A short suffix derived from the pod's identity, so the volume name is stable per pod.
fn suffix(seed: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in seed.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x100_0000_01b3);
    }
    (0..5)
        .map(|i| {
            let index = usize::try_from((hash >> (i * 8)) % ALPHABET.len() as u64).unwrap_or(0);
            char::from(ALPHABET[index])
        })
        .collect()
}

/// The JSON patch for `pod`; `account` is the `ServiceAccount` object when it exists.
fn patch(pod: &Value, account: Option<&Value>, seed: &str) -> Vec<Value> {
    let mut ops = Vec::new();
    if pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).is_none_or(str::is_empty) {
        ops.push(json!({"op": "add", "path": "/spec/serviceAccountName", "value": "default"}));
    }
    let Some(account) = account else { return ops };
    let opted_out = pod
        .pointer("/spec/automountServiceAccountToken")
        .or_else(|| account.get("automountServiceAccountToken"))
        .and_then(Value::as_bool)
        == Some(false);
    let containers = ["containers", "initContainers"];
    let mounted = containers.iter().any(|list| {
        pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten().any(|c| {
            c.get("volumeMounts").and_then(Value::as_array).into_iter().flatten().any(|m| m["mountPath"] == MOUNT_PATH)
        })
    });
    if opted_out || mounted {
        return ops;
    }
    let volume = format!("kube-api-access-{}", suffix(seed));
    match pod.pointer("/spec/volumes").and_then(Value::as_array) {
        Some(_) => ops.push(json!({"op": "add", "path": "/spec/volumes/-", "value": token_volume(&volume)})),
        None => ops.push(json!({"op": "add", "path": "/spec/volumes", "value": [token_volume(&volume)]})),
    }
    let mount = json!({"name": volume, "readOnly": true, "mountPath": MOUNT_PATH});
    for list in containers {
        for (index, container) in
            pod.pointer(&format!("/spec/{list}")).and_then(Value::as_array).into_iter().flatten().enumerate()
        {
            let path = format!("/spec/{list}/{index}/volumeMounts");
            if container.get("volumeMounts").is_some() {
                ops.push(json!({"op": "add", "path": format!("{path}/-"), "value": mount}));
            } else {
                ops.push(json!({"op": "add", "path": path, "value": [mount]}));
            }
        }
    }
    ops
}

impl AdmissionPolicy for ServiceAccount {
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
        let name = pod.pointer("/spec/serviceAccountName").and_then(Value::as_str).filter(|n| !n.is_empty());
        let account =
            match cluster::get("", "v1", "serviceaccounts", request.namespace.as_deref(), name.unwrap_or("default")) {
                Ok(account) => account,
                Err(e) => {
                    return AdmissionResponse::deny(format!("cannot read the service account: {e:?}")).with_code(500);
                }
            };
        let seed = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or(&request.uid);
        let ops = patch(&pod, account.as_ref(), seed);
        if ops.is_empty() {
            AdmissionResponse::allow()
        } else {
            AdmissionResponse::allow().with_patch(Value::Array(ops).to_string())
        }
    }
}

capstan_plugin_sdk::admission_policy!(ServiceAccount);

#[cfg(test)]
mod tests {
    use super::patch;
    use serde_json::json;

    #[test]
    fn defaults_the_account_and_mounts_the_token_when_the_account_exists() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b", "volumeMounts": []}]}});
        assert_eq!(patch(&pod, None, "x").len(), 1, "only the account name without the account");
        let ops = patch(&pod, Some(&json!({})), "x");
        assert_eq!(ops.len(), 4, "{ops:?}");
        let opted_out = patch(&pod, Some(&json!({"automountServiceAccountToken": false})), "x");
        assert_eq!(opted_out.len(), 1);
    }
}
