//! Built-in admission policy `ResourceQuota`: charges each new pod to the namespace's
//! `ResourceQuotas` and refuses it when a quota's `hard` limit would be exceeded; releases the
//! charge when a pod is deleted.
//!
//! Usage lives in the quota's `status.used` (computed from the namespace's pods when absent).
//! It is charged with the host's compare-and-swap on the quota's status (`cluster.replace-status`
//! at the resourceVersion read): of concurrent creates, only one can move `used` from N to N+1;
//! the others get a conflict, read the quota again and decide again — so exactly as many pods
//! are admitted as the quota allows. Dry-run requests are checked but not charged.
//!
//! Tracked: `pods`, `count/pods`, `requests.cpu`, `requests.memory`, `limits.cpu`,
//! `limits.memory`, `cpu` and `memory` (requests), as `capstan_plugin_sdk::quota` computes them.
//!
//! Admission only ever moves usage by what one request adds or removes; the `resource-quota`
//! controller (`plugins/controllers/resource-quota`) recomputes it from what exists, which frees
//! what finished pods and refused creates would otherwise hold forever.

use std::collections::BTreeMap;

use capstan_plugin_sdk::admission::cluster::{self, ClusterError};
use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, Operation};
use capstan_plugin_sdk::quantity::{self, Milli};
use capstan_plugin_sdk::quota::{self, PODS, Usage, counts, pod_usage, quantities};
use serde_json::{Value, json};

/// How many times a charge is retried after losing a race for the quota.
const ATTEMPTS: usize = 100;

/// Charges pods to quotas.
pub struct ResourceQuota;

/// The quota's current usage: its `status.used`, or the namespace's pods added up.
fn used(quota: &Value, namespace: &str) -> Result<Usage, ClusterError> {
    if let Some(used) = quota.pointer("/status/used") {
        return Ok(quantities(Some(used)));
    }
    Ok(quota::total(&PODS, &cluster::list("", "v1", "pods", Some(namespace))?))
}

/// The quota's usage after adding `delta` (negative to release), or why it cannot take it.
fn charged(name: &str, hard: &Usage, used: &Usage, delta: &Usage) -> Result<Usage, String> {
    let mut next = BTreeMap::new();
    let mut exceeded = Vec::new();
    for (resource, limit) in hard {
        let now = used.get(resource).copied().unwrap_or(0);
        let change = delta.get(resource).copied().unwrap_or(0);
        let after = (now + change).max(0);
        if change > 0 && after > *limit {
            exceeded.push((resource, change, now, *limit));
        }
        next.insert(resource.clone(), after);
    }
    if exceeded.is_empty() {
        return Ok(next);
    }
    let column = |pick: fn(&Exceeded<'_>) -> Milli| {
        exceeded.iter().map(|e| format!("{}={}", e.0, quantity::format(pick(e)))).collect::<Vec<_>>().join(",")
    };
    Err(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        column(|e| e.1),
        column(|e| e.2),
        column(|e| e.3),
    ))
}

/// A resource over its limit: name, requested, used, limit.
type Exceeded<'a> = (&'a String, Milli, Milli, Milli);

/// Applies `delta` to every quota of `namespace`, each with a compare-and-swap retried on
/// conflict; with `charge` false only checks.
fn apply(namespace: &str, delta: &Usage, charge: bool) -> Result<(), String> {
    let quotas =
        cluster::list("", "v1", "resourcequotas", Some(namespace)).map_err(|e| format!("cannot list quotas: {e:?}"))?;
    for listed in quotas {
        let name = listed.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let mut quota = listed;
        for attempt in 0..ATTEMPTS {
            let hard = quantities(quota.pointer("/spec/hard"));
            let now = used(&quota, namespace).map_err(|e| format!("cannot compute usage of quota {name}: {e:?}"))?;
            let next = charged(&name, &hard, &now, delta)?;
            if !charge || next == now && quota.pointer("/status/used").is_some() {
                break;
            }
            let status = json!({"hard": quota::to_json(&hard), "used": quota::to_json(&next)});
            match cluster::replace_status("", "v1", "resourcequotas", &quota, &status) {
                Ok(_) => break,
                Err(ClusterError::Conflict(_)) if attempt + 1 < ATTEMPTS => {
                    quota = match cluster::get("", "v1", "resourcequotas", Some(namespace), &name) {
                        Ok(Some(fresh)) => fresh,
                        Ok(None) => break,
                        Err(e) => return Err(format!("cannot read quota {name}: {e:?}")),
                    };
                }
                Err(e) => return Err(format!("cannot charge quota {name}: {e:?}")),
            }
        }
    }
    Ok(())
}

impl AdmissionPolicy for ResourceQuota {
    fn configure(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn validate(&self, request: &AdmissionRequest) -> AdmissionResponse {
        let Some(namespace) = request.namespace.as_deref() else { return AdmissionResponse::allow() };
        if request.sub_resource.is_some() {
            return AdmissionResponse::allow();
        }
        let (pod, sign) = match request.operation {
            Operation::Create => (request.object::<Value>(), 1),
            Operation::Delete => (request.old_object::<Value>(), -1),
            _ => return AdmissionResponse::allow(),
        };
        let pod = match pod {
            Ok(Some(pod)) => pod,
            Ok(None) => return AdmissionResponse::allow(),
            Err(e) => return AdmissionResponse::deny(format!("the pod is not valid JSON: {e}")).with_code(400),
        };
        // A pod already being deleted was released by its first deletion request.
        if sign < 0 && !counts(&pod) {
            return AdmissionResponse::allow();
        }
        let delta: Usage = pod_usage(&pod).into_iter().map(|(k, v)| (k, v * sign)).collect();
        let charge = !request.dry_run;
        match apply(namespace, &delta, charge) {
            Ok(()) => AdmissionResponse::allow(),
            Err(message) if sign < 0 => AdmissionResponse::allow().with_warning(message),
            Err(message) => AdmissionResponse::deny(format!("pods {:?} is forbidden: {message}", request.name)),
        }
    }
}

capstan_plugin_sdk::admission_policy!(ResourceQuota);

#[cfg(test)]
mod tests {
    use super::charged;
    use capstan_plugin_sdk::quota::pod_usage;
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn charges_within_hard_and_refuses_beyond() {
        let pod = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "250m"}}}]}});
        let delta = pod_usage(&pod);
        assert_eq!(delta["requests.cpu"], 250);
        let hard = BTreeMap::from([("pods".to_string(), 2000), ("cpu".to_string(), 1000)]);
        let used = BTreeMap::from([("pods".to_string(), 1000)]);
        let next = charged("q", &hard, &used, &delta).expect("fits");
        assert_eq!(next["pods"], 2000);
        let message = charged("q", &hard, &next, &delta).expect_err("full");
        assert!(message.contains("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"), "{message}");
    }
}
