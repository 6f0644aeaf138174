//! Built-in admission policy ResourceQuota: charges each new pod to the namespace's
//! ResourceQuotas and refuses it when a quota's `hard` limit would be exceeded; releases the
//! charge when a pod is deleted.
//!
//! Usage lives in the quota's `status.used` (computed from the namespace's pods when absent).
//! It is charged with the host's compare-and-swap on the quota's status (`cluster.replace-status`
//! at the resourceVersion read): of concurrent creates, only one can move `used` from N to N+1;
//! the others get a conflict, read the quota again and decide again — so exactly as many pods
//! are admitted as the quota allows. Dry-run requests are checked but not charged.
//!
//! Tracked: `pods`, `count/pods`, `requests.cpu`, `requests.memory`, `limits.cpu`,
//! `limits.memory`, `cpu` and `memory` (requests).

use std::collections::BTreeMap;

use capstan_plugin_sdk::admission::cluster::{self, ClusterError};
use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, Operation};
use capstan_plugin_sdk::quantity::{self, Milli};
use serde_json::{Map, Value, json};

/// How many times a charge is retried after losing a race for the quota.
const ATTEMPTS: usize = 100;

/// Charges pods to quotas.
pub struct ResourceQuota;

/// What one pod uses, by quota resource name.
fn usage(pod: &Value) -> BTreeMap<String, Milli> {
    let mut usage = BTreeMap::new();
    usage.insert("pods".to_string(), 1000);
    usage.insert("count/pods".to_string(), 1000);
    for container in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
        for (section, resource) in
            [("requests", "cpu"), ("requests", "memory"), ("limits", "cpu"), ("limits", "memory")]
        {
            let amount = container
                .pointer(&format!("/resources/{section}/{resource}"))
                .and_then(Value::as_str)
                .and_then(quantity::parse)
                .unwrap_or(0);
            *usage.entry(format!("{section}.{resource}")).or_insert(0) += amount;
            if section == "requests" {
                *usage.entry(resource.to_string()).or_insert(0) += amount;
            }
        }
    }
    usage
}

fn quantities(value: Option<&Value>) -> BTreeMap<String, Milli> {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str().and_then(quantity::parse)?))).collect())
        .unwrap_or_default()
}

/// Whether a pod still counts against quota (upstream: not finished, not being deleted).
fn counts(pod: &Value) -> bool {
    let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    pod.pointer("/metadata/deletionTimestamp").is_none() && phase != "Succeeded" && phase != "Failed"
}

/// The quota's current usage: its `status.used`, or the namespace's pods added up.
fn used(quota: &Value, namespace: &str) -> Result<BTreeMap<String, Milli>, ClusterError> {
    if let Some(used) = quota.pointer("/status/used") {
        return Ok(quantities(Some(used)));
    }
    let mut total = BTreeMap::new();
    for pod in cluster::list("", "v1", "pods", Some(namespace))?.iter().filter(|p| counts(p)) {
        for (resource, amount) in usage(pod) {
            *total.entry(resource).or_insert(0) += amount;
        }
    }
    Ok(total)
}

/// The quota's usage after adding `delta` (negative to release), or why it cannot take it.
fn charged(
    name: &str,
    hard: &BTreeMap<String, Milli>,
    used: &BTreeMap<String, Milli>,
    delta: &BTreeMap<String, Milli>,
) -> Result<BTreeMap<String, Milli>, String> {
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
    let list =
        |f: &dyn Fn(&(&String, Milli, Milli, Milli)) -> String| exceeded.iter().map(f).collect::<Vec<_>>().join(",");
    Err(format!(
        "exceeded quota: {name}, requested: {}, used: {}, limited: {}",
        list(&|e| format!("{}={}", e.0, quantity::format(e.1))),
        list(&|e| format!("{}={}", e.0, quantity::format(e.2))),
        list(&|e| format!("{}={}", e.0, quantity::format(e.3))),
    ))
}

fn as_quantities(values: &BTreeMap<String, Milli>) -> Value {
    Value::Object(values.iter().map(|(k, v)| (k.clone(), json!(quantity::format(*v)))).collect::<Map<_, _>>())
}

/// Applies `delta` to every quota of `namespace`, each with a compare-and-swap retried on
/// conflict; with `charge` false only checks.
fn apply(namespace: &str, delta: &BTreeMap<String, Milli>, charge: bool) -> Result<(), String> {
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
            let status = json!({"hard": as_quantities(&hard), "used": as_quantities(&next)});
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
        let delta: BTreeMap<String, Milli> = usage(&pod).into_iter().map(|(k, v)| (k, v * sign)).collect();
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
    use super::{charged, usage};
    use serde_json::json;
    use std::collections::BTreeMap;

    #[test]
    fn charges_within_hard_and_refuses_beyond() {
        let pod = json!({"spec": {"containers": [{"resources": {"requests": {"cpu": "250m"}}}]}});
        let delta = usage(&pod);
        assert_eq!(delta["requests.cpu"], 250);
        let hard = BTreeMap::from([("pods".to_string(), 2000), ("cpu".to_string(), 1000)]);
        let used = BTreeMap::from([("pods".to_string(), 1000)]);
        let next = charged("q", &hard, &used, &delta).expect("fits");
        assert_eq!(next["pods"], 2000);
        let message = charged("q", &hard, &next, &delta).expect_err("full");
        assert!(message.contains("exceeded quota: q, requested: pods=1, used: pods=2, limited: pods=2"), "{message}");
    }
}
