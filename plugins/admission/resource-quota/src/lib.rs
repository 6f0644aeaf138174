//! Built-in admission policy `ResourceQuota`: charges each new object to the namespace's
//! `ResourceQuotas` that count it and refuses it when a quota's `hard` limit would be exceeded;
//! releases the charge when the object is deleted. It also validates quotas' scopes as upstream.
//!
//! Usage lives in the quota's `status.used` (computed from the namespace's objects when absent).
//! It is charged with the host's compare-and-swap on the quota's status (`cluster.replace-status`
//! at the resourceVersion read): of concurrent creates, only one can move `used` from N to N+1;
//! the others get a conflict, read the quota again and decide again — so exactly as many objects
//! are admitted as the quota allows. Dry-run requests are checked but not charged.
//!
//! Tracked, as `capstan_plugin_sdk::quota` computes them: object counts (`pods`, `services`,
//! `configmaps`, `secrets`, `persistentvolumeclaims`, `replicationcontrollers`,
//! `resourcequotas`, and `count/<resource>.<group>` for any resource), `services.nodeports`,
//! `services.loadbalancers`, `requests.storage`, and pods' `requests.cpu`, `requests.memory`,
//! `limits.cpu`, `limits.memory`, `cpu` and `memory`. A quota with scopes (`spec.scopes`,
//! `spec.scopeSelector`) counts only the pods its scopes select.
//!
//! Updates of pods, Services and claims are charged what they add (a Service turned `NodePort`, a
//! claim expanded); what an update frees is left to the controller, as upstream. A quota on pods'
//! CPU or memory (`requests.cpu`, `limits.memory`, `cpu`, …) refuses a pod whose containers do
//! not state that request or limit (`must specify limits.cpu for: app`).
//!
//! Admission only ever moves usage by what one request adds or removes; the `resource-quota`
//! controller (`plugins/controllers/resource-quota`) recomputes it from what exists, which frees
//! what finished pods and refused creates would otherwise hold forever.

use std::collections::BTreeMap;

use capstan_plugin_sdk::admission::cluster::{self, ClusterError};
use capstan_plugin_sdk::admission::{AdmissionPolicy, AdmissionRequest, AdmissionResponse, Operation};
use capstan_plugin_sdk::quantity::{self, Milli};
use capstan_plugin_sdk::quota::{self, Scopes, Usage, counts, quantities};
use serde_json::{Value, json};

/// How many times a charge is retried after losing a race for the quota.
const ATTEMPTS: usize = 100;

/// Charges objects to quotas.
pub struct ResourceQuota;

/// The quota's current usage: its `status.used`, with what is missing from it (a quota the
/// controller has not looked at yet, a limit just added) computed from the namespace's objects.
fn used(quota: &Value, hard: &Usage, namespace: &str) -> Result<Usage, ClusterError> {
    let mut used = quantities(quota.pointer("/status/used"));
    let missing: Usage = hard.iter().filter(|(r, _)| !used.contains_key(*r)).map(|(r, l)| (r.clone(), *l)).collect();
    if !missing.is_empty() {
        let computed = quota::compute(&missing, &Scopes::of(quota), |counted| {
            cluster::list(counted.group, counted.version, counted.plural, Some(namespace))
        })?;
        used.extend(computed);
    }
    Ok(used)
}

/// The quota's usage after adding `delta` (negative to release), or why it cannot take it, in
/// upstream's words.
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
        exceeded.iter().map(|e| format!("{}={}", e.0, quantity::format_for(e.0, pick(e)))).collect::<Vec<_>>().join(",")
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

/// What is admitted, as the quotas see it.
struct Admitted<'a> {
    namespace: &'a str,
    group: &'a str,
    plural: &'a str,
    /// The object's name; a quota being deleted is not charged for its own deletion.
    name: &'a str,
    object: &'a Value,
    /// What the object adds (negative: what its deletion frees).
    delta: Usage,
    /// Whether the object is a pod being added or grown: quotas on CPU or memory then require
    /// each of its containers to state that request or limit.
    stating: bool,
}

/// Applies the object's usage to every quota of its namespace that counts it, each with a
/// compare-and-swap retried on conflict; with `charge` false only checks.
fn apply(admitted: &Admitted<'_>, charge: bool) -> Result<(), String> {
    let namespace = admitted.namespace;
    let quotas =
        cluster::list("", "v1", "resourcequotas", Some(namespace)).map_err(|e| format!("cannot list quotas: {e:?}"))?;
    for listed in quotas {
        let name = listed.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let hard = quantities(listed.pointer("/spec/hard"));
        let own = admitted.group.is_empty() && admitted.plural == "resourcequotas" && name == admitted.name;
        let interesting = admitted.delta.keys().any(|r| hard.contains_key(r));
        if own || !interesting || !Scopes::of(&listed).matches(admitted.group, admitted.plural, admitted.object) {
            continue;
        }
        if admitted.stating
            && let Some(missing) = quota::unstated(admitted.object, &hard)
        {
            return Err(format!("failed quota: {name}: {missing}"));
        }
        let mut quota = listed;
        for attempt in 0..ATTEMPTS {
            let hard = quantities(quota.pointer("/spec/hard"));
            let now =
                used(&quota, &hard, namespace).map_err(|e| format!("cannot compute usage of quota {name}: {e:?}"))?;
            let next = charged(&name, &hard, &now, &admitted.delta)?;
            if !charge || next == now && quota.pointer("/status/used").is_some() {
                break;
            }
            // `status.hard` mirrors `spec.hard` as written, as upstream's controller keeps it.
            let written = quota.pointer("/spec/hard").cloned().unwrap_or_else(|| json!({}));
            let status = json!({"hard": written, "used": quota::to_json(&next)});
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

/// Upstream's validation of a quota's scopes, and on update that they did not change.
fn validate_quota(request: &AdmissionRequest, quota: &Value) -> Option<AdmissionResponse> {
    let spec = quota.get("spec").cloned().unwrap_or_else(|| json!({}));
    let mut errors = quota::validate_scopes(&spec);
    if request.operation == Operation::Update {
        let old = request.old_object::<Value>().ok().flatten().unwrap_or_default();
        let set = |object: &Value| {
            let scopes = object.pointer("/spec/scopes").and_then(Value::as_array);
            scopes
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect::<std::collections::BTreeSet<_>>()
        };
        if set(&old) != set(quota) {
            let scopes = quota.pointer("/spec/scopes").cloned().unwrap_or(Value::Null);
            errors.push(format!("spec.scopes: Invalid value: {scopes}: field is immutable"));
        }
    }
    let message = match errors.len() {
        0 => return None,
        1 => errors.remove(0),
        _ => format!("[{}]", errors.join(", ")),
    };
    Some(AdmissionResponse::deny(format!("ResourceQuota {:?} is invalid: {message}", request.name)).with_code(422))
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
        let (group, plural) = (request.resource.group.as_str(), request.resource.resource.as_str());
        let quota_kind = group.is_empty() && plural == "resourcequotas";
        // Upstream charges updates of the kinds whose usage an update can grow (a pod resized, a
        // Service turned NodePort, a claim expanded); other kinds only count objects.
        let grows = group.is_empty() && matches!(plural, "pods" | "services" | "persistentvolumeclaims");
        let (object, sign) = match request.operation {
            Operation::Create => (request.object::<Value>(), 1),
            Operation::Delete => (request.old_object::<Value>(), -1),
            Operation::Update if quota_kind || grows => (request.object::<Value>(), 0),
            _ => return AdmissionResponse::allow(),
        };
        let object = match object {
            Ok(Some(object)) => object,
            Ok(None) => return AdmissionResponse::allow(),
            Err(e) => return AdmissionResponse::deny(format!("the object is not valid JSON: {e}")).with_code(400),
        };
        if quota_kind
            && sign >= 0
            && let Some(invalid) = validate_quota(request, &object)
        {
            return invalid;
        }
        let usage = |object: &Value| quota::resource_usage(group, plural, object);
        let delta: Usage = match sign {
            // An object already being deleted was released by its first deletion request.
            -1 if !counts(&object) => return AdmissionResponse::allow(),
            0 if quota_kind => return AdmissionResponse::allow(),
            0 => {
                let old = match request.old_object::<Value>() {
                    Ok(Some(old)) => old,
                    Ok(None) => return AdmissionResponse::allow(),
                    Err(e) => {
                        return AdmissionResponse::deny(format!("the old object is not valid JSON: {e}"))
                            .with_code(400);
                    }
                };
                let before = if counts(&old) { usage(&old) } else { Usage::new() };
                let after = if counts(&object) { usage(&object) } else { Usage::new() };
                quota::increase(&after, &before)
            }
            _ => usage(&object).into_iter().map(|(k, v)| (k, v * sign)).collect(),
        };
        if delta.is_empty() {
            return AdmissionResponse::allow();
        }
        let stating = sign >= 0 && group.is_empty() && plural == "pods";
        let admitted = Admitted { namespace, group, plural, name: &request.name, object: &object, delta, stating };
        match apply(&admitted, !request.dry_run) {
            Ok(()) => AdmissionResponse::allow(),
            Err(message) if sign < 0 => AdmissionResponse::allow().with_warning(message),
            Err(message) => {
                let resource = if group.is_empty() { plural.to_owned() } else { format!("{plural}.{group}") };
                AdmissionResponse::deny(format!("{resource} {:?} is forbidden: {message}", request.name))
            }
        }
    }
}

capstan_plugin_sdk::admission_policy!(ResourceQuota);

#[cfg(test)]
mod tests {
    use super::charged;
    use capstan_plugin_sdk::quantity::Milli;
    use capstan_plugin_sdk::quota::{pod_usage, resource_usage};
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

    #[test]
    fn refusals_name_every_exceeded_resource_as_upstream() {
        let map =
            |entries: &[(&str, Milli)]| entries.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect::<BTreeMap<_, _>>();
        let claim = json!({"spec": {"resources": {"requests": {"storage": "2Gi"}}}});
        let service = json!({"spec": {"type": "LoadBalancer", "ports": [{}, {}]}});
        // (hard, used, group, plural, object, refusal or None when it fits)
        let cases = [
            (
                map(&[("count/configmaps", 1000)]),
                map(&[("count/configmaps", 1000)]),
                "",
                "configmaps",
                json!({}),
                Some("requested: count/configmaps=1, used: count/configmaps=1, limited: count/configmaps=1"),
            ),
            (map(&[("configmaps", 2000)]), map(&[("configmaps", 1000)]), "", "configmaps", json!({}), None),
            (
                map(&[("count/deployments.apps", 0)]),
                map(&[]),
                "apps",
                "deployments",
                json!({}),
                Some(
                    "requested: count/deployments.apps=1, used: count/deployments.apps=0, limited: count/deployments.apps=0",
                ),
            ),
            (
                map(&[("requests.storage", 1000 << 30), ("persistentvolumeclaims", 5000)]),
                map(&[("requests.storage", 1000 << 30)]),
                "",
                "persistentvolumeclaims",
                claim,
                Some("requested: requests.storage=2Gi, used: requests.storage=1Gi, limited: requests.storage=1Gi"),
            ),
            (
                map(&[("services.loadbalancers", 0), ("services.nodeports", 1000), ("services", 9000)]),
                map(&[]),
                "",
                "services",
                service,
                Some(
                    "requested: services.loadbalancers=1,services.nodeports=2, used: services.loadbalancers=0,services.nodeports=0, limited: services.loadbalancers=0,services.nodeports=1",
                ),
            ),
            (map(&[("count/widgets.example.com", 1000)]), map(&[]), "example.com", "widgets", json!({}), None),
        ];
        for (hard, used, group, plural, object, refusal) in cases {
            let result = charged("q", &hard, &used, &resource_usage(group, plural, &object));
            match refusal {
                None => assert!(result.is_ok(), "{plural}: {result:?}"),
                Some(part) => {
                    let message = result.expect_err(plural);
                    assert!(message.starts_with("exceeded quota: q, ") && message.contains(part), "{message}");
                }
            }
        }
    }
}
