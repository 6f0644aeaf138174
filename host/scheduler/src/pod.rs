//! What the plugins see of a pod and a node: `PodInfo` and `NodeInfo` built from API objects,
//! with Kubernetes' resource arithmetic (effective requests, quantities in thousandths).

use std::collections::BTreeMap;

use capstan_wasm::scheduler::{
    HostPort, Label, NodeInfo, PodInfo, PodSnapshot, PodSummary, ResourceAmount, Taint, TaintEffect, Toleration,
};
use k8s_openapi::api::core::v1::{Container, Node, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// `namespace/name`, the key of a pod in the queue and cache.
#[must_use]
pub fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace.as_deref().unwrap_or("default"), pod.metadata.name.as_deref().unwrap_or(""))
}

/// Parses a quantity into thousandths of its base unit (`250m` → 250, `1Ki` → 1 024 000).
/// Returns `None` for text that is not a quantity.
#[must_use]
pub fn milli_value(quantity: &str) -> Option<i64> {
    let text = quantity.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+')).unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1e3,
        "m" => 1.0,
        "k" => 1e6,
        "M" => 1e9,
        "G" => 1e12,
        "T" => 1e15,
        "P" => 1e18,
        "Ki" => 1024.0 * 1e3,
        "Mi" => 1024.0 * 1024.0 * 1e3,
        "Gi" => 1024.0 * 1024.0 * 1024.0 * 1e3,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1e3,
        "Pi" => 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1024.0 * 1e3,
        exponent if exponent.starts_with(['e', 'E']) => {
            let power: i32 = exponent[1..].parse().ok()?;
            10f64.powi(power) * 1e3
        }
        _ => return None,
    };
    Some((number * factor).ceil() as i64)
}

fn add_all(total: &mut BTreeMap<String, i64>, list: Option<&BTreeMap<String, Quantity>>) {
    for (name, quantity) in list.into_iter().flatten() {
        *total.entry(name.clone()).or_default() += milli_value(&quantity.0).unwrap_or(0);
    }
}

fn container_requests(container: &Container) -> BTreeMap<String, i64> {
    let mut requests = BTreeMap::new();
    if let Some(resources) = &container.resources {
        // A limit without a request defaults the request, as the API server does.
        add_all(&mut requests, resources.limits.as_ref());
        let mut explicit = BTreeMap::new();
        add_all(&mut explicit, resources.requests.as_ref());
        requests.extend(explicit);
    }
    requests
}

/// The pod's effective requests: the sum over containers, raised to any single init container
/// that needs more, plus the pod overhead — Kubernetes' rule.
#[must_use]
pub fn effective_requests(pod: &Pod) -> Vec<ResourceAmount> {
    let Some(spec) = &pod.spec else { return Vec::new() };
    let mut total: BTreeMap<String, i64> = BTreeMap::new();
    for container in &spec.containers {
        for (name, value) in container_requests(container) {
            *total.entry(name).or_default() += value;
        }
    }
    for init in spec.init_containers.iter().flatten() {
        for (name, value) in container_requests(init) {
            let entry = total.entry(name).or_default();
            *entry = (*entry).max(value);
        }
    }
    add_all(&mut total, spec.overhead.as_ref());
    total.into_iter().map(|(name, milli_value)| ResourceAmount { name, milli_value }).collect()
}

/// The host ports the pod's containers ask for.
#[must_use]
pub fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = &pod.spec else { return Vec::new() };
    spec.containers
        .iter()
        .flat_map(|c| c.ports.iter().flatten())
        .filter_map(|p| {
            let port = u16::try_from(p.host_port?).ok().filter(|&port| port > 0)?;
            Some(HostPort {
                ip: p.host_ip.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".to_owned()),
                port,
            })
        })
        .collect()
}

fn labels(map: Option<&BTreeMap<String, String>>) -> Vec<Label> {
    map.into_iter().flatten().map(|(key, value)| Label { key: key.clone(), value: value.clone() }).collect()
}

fn effect(text: &str) -> Option<TaintEffect> {
    match text {
        "NoSchedule" => Some(TaintEffect::NoSchedule),
        "PreferNoSchedule" => Some(TaintEffect::PreferNoSchedule),
        "NoExecute" => Some(TaintEffect::NoExecute),
        _ => None,
    }
}

/// The pod as plugins see it (`object` is its JSON), as a snapshot with a fresh token. The
/// scheduler describes each version of a pod once, as it is queued; each scheduling attempt
/// renews that snapshot's token ([`PodSnapshot::renewed`]), so instances are sent the pod anew.
pub fn pod_info(pod: &Pod) -> Result<PodSnapshot, serde_json::Error> {
    let no_spec;
    let spec = if let Some(spec) = &pod.spec {
        spec
    } else {
        no_spec = PodSpec::default();
        &no_spec
    };
    let tolerations = spec
        .tolerations
        .iter()
        .flatten()
        .map(|t| Toleration {
            key: t.key.clone().unwrap_or_default(),
            exists: t.operator.as_deref() == Some("Exists"),
            value: t.value.clone().unwrap_or_default(),
            effect: t.effect.as_deref().and_then(effect),
        })
        .collect();
    let affinity = spec.affinity.as_ref().map(serde_json::to_string).transpose()?;
    let images =
        spec.containers.iter().chain(spec.init_containers.iter().flatten()).filter_map(|c| c.image.clone()).collect();
    Ok(PodInfo {
        namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        labels: labels(pod.metadata.labels.as_ref()),
        requests: effective_requests(pod),
        node_selector: labels(spec.node_selector.as_ref()),
        tolerations,
        priority: spec.priority.unwrap_or(0),
        node_name: spec.node_name.clone().filter(|n| !n.is_empty()),
        affinity,
        host_ports: host_ports(pod),
        images,
        object: serde_json::to_string(pod)?,
    }
    .into())
}

/// What plugins see of a pod on a node: its identity, labels, priority, pod (anti-)affinity and
/// usage.
#[must_use]
pub fn pod_summary(pod: &Pod) -> PodSummary {
    let spec = pod.spec.as_ref();
    let affinity = spec
        .and_then(|s| s.affinity.as_ref())
        .filter(|a| a.pod_affinity.is_some() || a.pod_anti_affinity.is_some())
        .and_then(|a| serde_json::to_string(a).ok());
    PodSummary {
        namespace: pod.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned()),
        name: pod.metadata.name.clone().unwrap_or_default(),
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        labels: labels(pod.metadata.labels.as_ref()),
        priority: spec.and_then(|s| s.priority).unwrap_or(0),
        affinity,
        requests: effective_requests(pod),
        host_ports: host_ports(pod),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    }
}

/// The node's own part of its `NodeInfo` (everything but what its pods use).
#[must_use]
pub fn node_info(node: &Node) -> NodeInfo {
    let spec = node.spec.clone().unwrap_or_default();
    let status = node.status.clone().unwrap_or_default();
    let taints = spec
        .taints
        .iter()
        .flatten()
        .filter_map(|t| {
            Some(Taint { key: t.key.clone(), value: t.value.clone().unwrap_or_default(), effect: effect(&t.effect)? })
        })
        .collect();
    let allocatable = status
        .allocatable
        .as_ref()
        .or(status.capacity.as_ref())
        .into_iter()
        .flatten()
        .map(|(name, q)| ResourceAmount { name: name.clone(), milli_value: milli_value(&q.0).unwrap_or(0) })
        .collect();
    let images = status
        .images
        .iter()
        .flatten()
        .filter_map(|image| Some((image.names.as_ref()?.first()?.clone(), image.size_bytes.unwrap_or(0))))
        .collect();
    NodeInfo {
        id: 0,
        name: node.metadata.name.clone().unwrap_or_default(),
        labels: labels(node.metadata.labels.as_ref()),
        taints,
        unschedulable: spec.unschedulable.unwrap_or(false),
        allocatable,
        requested: Vec::new(),
        pod_count: 0,
        used_ports: Vec::new(),
        images,
        object: None,
        pods: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::{effective_requests, milli_value};
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn quantities_become_thousandths() {
        let cases = [
            ("250m", Some(250)),
            ("1", Some(1000)),
            ("1.5", Some(1500)),
            ("1Ki", Some(1_024_000)),
            ("128Mi", Some(128 * 1024 * 1024 * 1000)),
            ("1G", Some(1_000_000_000_000)),
            ("1e3", Some(1_000_000)),
            ("abc", None),
        ];
        for (text, expected) in cases {
            assert_eq!(milli_value(text), expected, "{text}");
        }
    }

    /// Kubernetes' "Resource Management for Pods and Containers" rule: the effective request is
    /// the larger of the containers' sum and the largest init container, plus overhead; a limit
    /// alone defaults the request.
    #[test]
    fn effective_requests_follow_the_init_container_rule() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "containers": [
                    {"name": "a", "resources": {"requests": {"cpu": "100m"}}},
                    {"name": "b", "resources": {"limits": {"cpu": "200m", "memory": "1Mi"}}}
                ],
                "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "500m"}}}],
                "overhead": {"cpu": "10m"}
            }
        }))
        .unwrap_or_default();
        let requests: Vec<_> = effective_requests(&pod).into_iter().map(|r| (r.name, r.milli_value)).collect();
        assert_eq!(requests, [("cpu".to_owned(), 510), ("memory".to_owned(), 1024 * 1024 * 1000)]);
    }
}
