//! One hollow node: its Node object, its Lease, and the addresses it hands out.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::{CONCURRENCY, HOLLOW_LABEL, HollowConfig, HollowError};

/// Node indexes map into `10.128.0.0/9` (a /24 per node), so this many fit.
pub(crate) const MAX_NODES: usize = 32_768;
const LEASE_NAMESPACE: &str = "kube-node-lease";
const KUBELET_VERSION: &str = "v1.32.2-capstan-hollow";

/// A hollow node's identity and what it reports.
pub struct HollowNode {
    name: String,
    index: usize,
    object: Value,
    lease_seconds: i32,
    next_pod_ip: AtomicU32,
}

impl HollowNode {
    pub(crate) fn new(index: usize, config: &HollowConfig, heartbeat: Duration) -> Self {
        let name = format!("{}{index}", config.name_prefix);
        let mut labels = json!({
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "node.kubernetes.io/instance-type": "hollow",
            HOLLOW_LABEL: "true",
        });
        if config.zones > 0 {
            labels["topology.kubernetes.io/zone"] = json!(format!("zone-{}", index % config.zones));
        }
        for (key, value) in &config.labels {
            labels[key] = json!(value);
        }
        let mut node = Self {
            name,
            index,
            object: Value::Null,
            lease_seconds: i32::try_from(heartbeat.as_secs().saturating_mul(4)).unwrap_or(i32::MAX).max(40),
            next_pod_ip: AtomicU32::new(0),
        };
        node.object = json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node.name, "labels": labels},
            "spec": {"podCIDR": node.pod_cidr(), "podCIDRs": [node.pod_cidr()], "taints": config.taints},
            "status": node.status(config),
        });
        node
    }

    /// The node's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The node's address.
    #[must_use]
    pub fn address(&self) -> Ipv4Addr {
        let [_, _, high, low] = (self.index as u32).to_be_bytes();
        Ipv4Addr::new(10, 127, high, low)
    }

    fn pod_network(&self) -> [u8; 3] {
        let [_, _, high, low] = (self.index as u32).to_be_bytes();
        [10, 128 + high, low]
    }

    fn pod_cidr(&self) -> String {
        let [a, b, c] = self.pod_network();
        format!("{a}.{b}.{c}.0/24")
    }

    /// The next pod IP from the node's /24 (`.2` … `.254`, then round again).
    pub(crate) fn allocate_pod_ip(&self) -> Ipv4Addr {
        let [a, b, c] = self.pod_network();
        let n = self.next_pod_ip.fetch_add(1, Ordering::Relaxed) % 253;
        Ipv4Addr::new(a, b, c, (n + 2) as u8)
    }

    fn status(&self, config: &HollowConfig) -> Value {
        let now = Time(Timestamp::now());
        let condition = |kind: &str, status: &str, reason: &str, message: &str| {
            json!({"type": kind, "status": status, "reason": reason, "message": message,
                   "lastHeartbeatTime": now, "lastTransitionTime": now})
        };
        let resources = json!({
            "cpu": config.cpu, "memory": config.memory, "pods": config.max_pods.to_string(),
            "ephemeral-storage": "100Gi",
        });
        json!({
            "capacity": resources,
            "allocatable": resources,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "hollow node has sufficient memory"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "hollow node has no disk pressure"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "hollow node has sufficient PID"),
                condition("Ready", "True", "KubeletReady", "hollow node is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": self.address().to_string()},
                {"type": "Hostname", "address": self.name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": format!("hollow-{}", self.index), "systemUUID": format!("hollow-{}", self.index),
                "bootID": format!("hollow-{}", self.index), "kernelVersion": "hollow",
                "osImage": "Capstan hollow node", "containerRuntimeVersion": "hollow://0",
                "kubeletVersion": KUBELET_VERSION, "kubeProxyVersion": KUBELET_VERSION,
                "operatingSystem": "linux", "architecture": "amd64",
            },
        })
    }

    /// Creates the Node (or reports Ready on one that exists) and its Lease.
    pub(crate) async fn register(&self, client: &Client) -> Result<(), HollowError> {
        let nodes: Api<Node> = Api::all(client.clone());
        let object: Node = serde_json::from_value(self.object.clone())
            .map_err(|e| HollowError::Config(format!("node {} does not form a Node: {e}", self.name)))?;
        let created = match nodes.create(&PostParams::default(), &object).await {
            Ok(_) => true,
            Err(kube::Error::Api(status)) if status.code == 409 => false,
            Err(e) => return Err(self.api_error("create its Node", e)),
        };
        // Status given at creation may be dropped by the server, and an existing node needs a
        // fresh Ready condition: report it through the status subresource either way.
        let status = json!({"status": self.object["status"]});
        nodes
            .patch_status(&self.name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|e| self.api_error("report its status", e))?;
        self.renew_lease(client).await?;
        tracing::debug!(node = %self.name, created, "hollow node registered");
        Ok(())
    }

    /// Renews the node's Lease, creating it when missing.
    pub(crate) async fn renew_lease(&self, client: &Client) -> Result<(), HollowError> {
        let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
        let renew = json!({"spec": {
            "holderIdentity": self.name,
            "leaseDurationSeconds": self.lease_seconds,
            "renewTime": MicroTime(Timestamp::now()),
        }});
        match leases.patch(&self.name, &PatchParams::default(), &Patch::Merge(&renew)).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                let mut lease = renew;
                lease["metadata"] = json!({"name": self.name});
                let lease: Lease = serde_json::from_value(lease)
                    .map_err(|e| HollowError::Config(format!("lease of {} does not form a Lease: {e}", self.name)))?;
                leases
                    .create(&PostParams::default(), &lease)
                    .await
                    .map_err(|e| self.api_error("create its Lease", e))?;
                Ok(())
            }
            Err(e) => Err(self.api_error("renew its Lease", e)),
        }
    }

    fn api_error(&self, action: &'static str, source: kube::Error) -> HollowError {
        HollowError::Api { node: self.name.clone(), action, source: Box::new(source) }
    }
}

/// Renews every node's Lease once per `interval`, for as long as the task runs.
pub(crate) async fn heartbeat(client: Client, nodes: Vec<Arc<HollowNode>>, interval: Duration) {
    let mut ticker = tokio::time::interval(interval);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let failures = futures::stream::iter(nodes.iter().cloned())
            .map(|node| {
                let client = client.clone();
                async move { node.renew_lease(&client).await }
            })
            .buffer_unordered(CONCURRENCY)
            .filter_map(|result| async move { result.err() })
            .collect::<Vec<_>>()
            .await;
        if let Some(first) = failures.first() {
            tracing::warn!(failed = failures.len(), error = %first, "hollow node lease renewals failed");
        }
    }
}

/// Parses a taint written as kubectl writes them: `key[=value]:Effect`.
pub fn parse_taint(text: &str) -> Result<Taint, HollowError> {
    let invalid =
        || HollowError::Config(format!("taint '{text}' is not key[=value]:NoSchedule|PreferNoSchedule|NoExecute"));
    let (key_value, effect) = text.rsplit_once(':').ok_or_else(invalid)?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return Err(invalid());
    }
    let (key, value) = key_value.split_once('=').map_or((key_value, None), |(k, v)| (k, Some(v.to_owned())));
    if key.is_empty() {
        return Err(invalid());
    }
    Ok(Taint { key: key.to_owned(), value, effect: effect.to_owned(), time_added: None })
}

/// The name of a node, for log lines.
pub(crate) fn node_of(pod: &k8s_openapi::api::core::v1::Pod) -> Option<&str> {
    pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref()).filter(|name| !name.is_empty())
}

/// The identity of a pod, for log lines and bookkeeping.
pub(crate) fn pod_key(pod: &k8s_openapi::api::core::v1::Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_taints_like_kubectl() {
        let taint = parse_taint("dedicated=gpu:NoSchedule").map_err(|e| e.to_string());
        assert_eq!(
            taint.as_ref().map(|t| (t.key.as_str(), t.value.as_deref(), t.effect.as_str())),
            Ok(("dedicated", Some("gpu"), "NoSchedule"))
        );
        let bare = parse_taint("maintenance:NoExecute").map_err(|e| e.to_string());
        assert_eq!(bare.as_ref().map(|t| t.value.clone()), Ok(None));
        assert!(parse_taint("dedicated=gpu").is_err());
        assert!(parse_taint("dedicated=gpu:Sometimes").is_err());
        assert!(parse_taint(":NoSchedule").is_err());
    }

    #[test]
    fn nodes_get_distinct_addresses_and_pod_networks() {
        let config = HollowConfig { zones: 2, ..HollowConfig::default() };
        let first = HollowNode::new(0, &config, Duration::from_secs(10));
        let other = HollowNode::new(300, &config, Duration::from_secs(10));
        assert_eq!(first.address(), Ipv4Addr::new(10, 127, 0, 0));
        assert_eq!(other.address(), Ipv4Addr::new(10, 127, 1, 44));
        assert_eq!(other.pod_cidr(), "10.129.44.0/24");
        assert_eq!(first.allocate_pod_ip(), Ipv4Addr::new(10, 128, 0, 2));
        assert_eq!(first.allocate_pod_ip(), Ipv4Addr::new(10, 128, 0, 3));
        assert_eq!(first.object["metadata"]["labels"]["topology.kubernetes.io/zone"], "zone-0");
        assert_eq!(other.object["metadata"]["labels"]["topology.kubernetes.io/zone"], "zone-0");
        assert_eq!(
            HollowNode::new(1, &config, Duration::from_secs(10)).object["metadata"]["labels"]["topology.kubernetes.io/zone"],
            "zone-1"
        );
    }

    #[test]
    fn pod_ips_wrap_within_the_node_network() {
        let node = HollowNode::new(0, &HollowConfig::default(), Duration::from_secs(10));
        let ips: Vec<_> = (0..254).map(|_| node.allocate_pod_ip()).collect();
        assert_eq!(ips[252], Ipv4Addr::new(10, 128, 0, 254));
        assert_eq!(ips[253], Ipv4Addr::new(10, 128, 0, 2));
    }
}
