//! `ResourceQuota` accounting shared by the `resource-quota` admission policy (which charges
//! each new pod) and the `resource-quota` controller (which recomputes `status.used` from what
//! exists): what one object uses, which objects still count, and quota maps to and from JSON.
//!
//! Usage is a map from quota resource name (`pods`, `requests.cpu`, `count/configmaps`, …) to a
//! quantity in thousandths ([`Milli`]), as `status.used` and `spec.hard` hold it.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::quantity::{self, Milli};

/// Quota resource name → amount in thousandths.
pub type Usage = BTreeMap<String, Milli>;

/// One kind whose objects a quota can count: its API group, version, kind and plural resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counted {
    /// The API group; empty for the core group.
    pub group: &'static str,
    /// The version read.
    pub version: &'static str,
    /// The kind.
    pub kind: &'static str,
    /// The plural resource name, as in `count/<plural>`.
    pub plural: &'static str,
}

impl Counted {
    /// The object-count resource name: `count/configmaps`, `count/deployments.apps`.
    #[must_use]
    pub fn count_name(&self) -> String {
        if self.group.is_empty() {
            format!("count/{}", self.plural)
        } else {
            format!("count/{}.{}", self.plural, self.group)
        }
    }

    /// The legacy name upstream also counts this kind under (`configmaps`, `pods`, …), if any.
    #[must_use]
    pub fn legacy_name(&self) -> Option<&'static str> {
        const LEGACY: [&str; 7] = [
            "pods",
            "services",
            "configmaps",
            "secrets",
            "persistentvolumeclaims",
            "replicationcontrollers",
            "resourcequotas",
        ];
        (self.group.is_empty() && LEGACY.contains(&self.plural)).then_some(self.plural)
    }
}

/// The kinds quotas count (all namespaced), pods first.
pub const COUNTED: [Counted; 10] = [
    Counted { group: "", version: "v1", kind: "Pod", plural: "pods" },
    Counted { group: "", version: "v1", kind: "Service", plural: "services" },
    Counted { group: "", version: "v1", kind: "ConfigMap", plural: "configmaps" },
    Counted { group: "", version: "v1", kind: "Secret", plural: "secrets" },
    Counted { group: "", version: "v1", kind: "PersistentVolumeClaim", plural: "persistentvolumeclaims" },
    Counted { group: "", version: "v1", kind: "ReplicationController", plural: "replicationcontrollers" },
    Counted { group: "apps", version: "v1", kind: "Deployment", plural: "deployments" },
    Counted { group: "apps", version: "v1", kind: "StatefulSet", plural: "statefulsets" },
    Counted { group: "batch", version: "v1", kind: "Job", plural: "jobs" },
    Counted { group: "batch", version: "v1", kind: "CronJob", plural: "cronjobs" },
];

/// Pods, as [`COUNTED`] lists them.
pub const PODS: Counted = COUNTED[0];

/// The quota resource names an object of `counted` adds to, with its own amounts (pods: their
/// requests and limits; services: node ports and load balancers; claims: requested storage).
#[must_use]
pub fn object_usage(counted: &Counted, object: &Value) -> Usage {
    let mut usage = match counted.plural {
        "pods" if counted.group.is_empty() => pod_resources(object),
        "services" if counted.group.is_empty() => service_resources(object),
        "persistentvolumeclaims" if counted.group.is_empty() => claim_resources(object),
        _ => Usage::new(),
    };
    usage.insert(counted.count_name(), 1000);
    if let Some(legacy) = counted.legacy_name() {
        usage.insert(legacy.to_owned(), 1000);
    }
    usage
}

/// What one pod uses: `pods`, `count/pods`, and its containers' requests and limits of CPU and
/// memory (`requests.cpu` also as `cpu`, `requests.memory` as `memory`).
#[must_use]
pub fn pod_usage(pod: &Value) -> Usage {
    object_usage(&PODS, pod)
}

fn pod_resources(pod: &Value) -> Usage {
    let mut usage = Usage::new();
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
                *usage.entry(resource.to_owned()).or_insert(0) += amount;
            }
        }
    }
    usage
}

fn service_resources(service: &Value) -> Usage {
    let kind = service.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
    let node_ports = match kind {
        "NodePort" | "LoadBalancer" => service.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len),
        _ => 0,
    };
    Usage::from([
        ("services.nodeports".to_owned(), node_ports as Milli * 1000),
        ("services.loadbalancers".to_owned(), if kind == "LoadBalancer" { 1000 } else { 0 }),
    ])
}

fn claim_resources(claim: &Value) -> Usage {
    let storage = claim
        .pointer("/spec/resources/requests/storage")
        .and_then(Value::as_str)
        .and_then(quantity::parse)
        .unwrap_or(0);
    Usage::from([("requests.storage".to_owned(), storage)])
}

/// Whether an object still counts against quota: not being deleted and, for a pod, not finished
/// (`Succeeded`/`Failed` pods hold no resources, as upstream).
#[must_use]
pub fn counts(object: &Value) -> bool {
    let phase = object.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    object.pointer("/metadata/deletionTimestamp").is_none_or(Value::is_null)
        && phase != "Succeeded"
        && phase != "Failed"
}

/// Adds `usage` into `total`.
pub fn add(total: &mut Usage, usage: &Usage) {
    for (resource, amount) in usage {
        *total.entry(resource.clone()).or_insert(0) += amount;
    }
}

/// The summed usage of the `objects` of `counted` that still count.
#[must_use]
pub fn total<'a>(counted: &Counted, objects: impl IntoIterator<Item = &'a Value>) -> Usage {
    let mut sum = Usage::new();
    for object in objects.into_iter().filter(|o| counts(o)) {
        add(&mut sum, &object_usage(counted, object));
    }
    sum
}

/// The kinds that feed a quota resource name (`cpu` → pods, `count/secrets` → secrets);
/// empty for names no tracked kind provides.
#[must_use]
pub fn sources(resource: &str) -> Vec<&'static Counted> {
    COUNTED
        .iter()
        .filter(|counted| {
            let own = match counted.plural {
                "pods" if counted.group.is_empty() => POD_RESOURCES.contains(&resource),
                "services" if counted.group.is_empty() => resource.starts_with("services."),
                "persistentvolumeclaims" if counted.group.is_empty() => resource == "requests.storage",
                _ => false,
            };
            own || counted.count_name() == resource || counted.legacy_name() == Some(resource)
        })
        .collect()
}

/// The pod resource names besides counts.
const POD_RESOURCES: [&str; 6] = ["requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory"];

/// Reads a quantity map (`spec.hard`, `status.used`); entries that are not quantities are left
/// out.
#[must_use]
pub fn quantities(value: Option<&Value>) -> Usage {
    value
        .and_then(Value::as_object)
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str().and_then(quantity::parse)?))).collect())
        .unwrap_or_default()
}

/// Writes a quantity map as JSON (`{"pods": "2", "requests.cpu": "500m"}`).
#[must_use]
pub fn to_json(usage: &Usage) -> Value {
    Value::Object(usage.iter().map(|(k, v)| (k.clone(), json!(quantity::format(*v)))).collect::<Map<_, _>>())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{COUNTED, PODS, Usage, counts, object_usage, pod_usage, quantities, sources, to_json, total};

    #[test]
    fn a_pod_uses_its_requests_and_limits_and_counts_once() {
        let pod = json!({"spec": {"containers": [
            {"resources": {"requests": {"cpu": "250m", "memory": "64Mi"}, "limits": {"cpu": "1"}}},
            {"resources": {"requests": {"cpu": "250m"}}},
        ]}});
        let usage = pod_usage(&pod);
        for (resource, amount) in [
            ("pods", 1000),
            ("count/pods", 1000),
            ("requests.cpu", 500),
            ("cpu", 500),
            ("limits.cpu", 1000),
            ("requests.memory", (64 * 1000) << 20),
            ("limits.memory", 0),
        ] {
            assert_eq!(usage[resource], amount, "{resource}");
        }
    }

    #[test]
    fn object_counts_use_upstream_names() {
        // (kind index in COUNTED, object, resource, amount)
        let cases = [
            (2, json!({}), "count/configmaps", 1000),
            (2, json!({}), "configmaps", 1000),
            (3, json!({}), "secrets", 1000),
            (1, json!({"spec": {"type": "NodePort", "ports": [{}, {}]}}), "services.nodeports", 2000),
            (1, json!({"spec": {"type": "LoadBalancer", "ports": [{}]}}), "services.loadbalancers", 1000),
            (1, json!({"spec": {}}), "services.nodeports", 0),
            (4, json!({"spec": {"resources": {"requests": {"storage": "1Gi"}}}}), "requests.storage", 1000 << 30),
            (6, json!({}), "count/deployments.apps", 1000),
        ];
        for (index, object, resource, amount) in cases {
            assert_eq!(object_usage(&COUNTED[index], &object).get(resource), Some(&amount), "{resource}");
        }
        assert!(!object_usage(&COUNTED[6], &json!({})).contains_key("deployments"), "no legacy name for apps");
    }

    #[test]
    fn finished_and_terminating_objects_do_not_count() {
        let cases = [
            (json!({"status": {"phase": "Running"}}), true),
            (json!({"status": {"phase": "Succeeded"}}), false),
            (json!({"status": {"phase": "Failed"}}), false),
            (json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}), false),
            (json!({}), true),
        ];
        for (object, expected) in cases {
            assert_eq!(counts(&object), expected, "{object}");
        }
        let pods = [json!({"status": {"phase": "Running"}}), json!({"status": {"phase": "Succeeded"}})];
        assert_eq!(total(&PODS, &pods)["pods"], 1000);
    }

    #[test]
    fn resource_names_map_to_the_kinds_that_feed_them() {
        let plural = |name: &str| sources(name).iter().map(|c| c.plural).collect::<Vec<_>>();
        assert_eq!(plural("cpu"), ["pods"]);
        assert_eq!(plural("count/pods"), ["pods"]);
        assert_eq!(plural("configmaps"), ["configmaps"]);
        assert_eq!(plural("services.nodeports"), ["services"]);
        assert_eq!(plural("requests.storage"), ["persistentvolumeclaims"]);
        assert_eq!(plural("count/jobs.batch"), ["jobs"]);
        assert!(plural("nvidia.com/gpu").is_empty());
    }

    #[test]
    fn quantity_maps_round_trip() {
        let usage = Usage::from([("pods".to_owned(), 2000), ("cpu".to_owned(), 500)]);
        assert_eq!(quantities(Some(&to_json(&usage))), usage);
        assert_eq!(to_json(&usage), json!({"pods": "2", "cpu": "500m"}));
    }
}
