//! Node registration (capacity, addresses, node info, conditions), heartbeats through a Lease in
//! `kube-node-lease`, and the node's pod CIDR.

use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::{Value, json};

use crate::NodeError;
use crate::runtime::Cri;

/// The namespace node leases live in.
pub const LEASE_NAMESPACE: &str = "kube-node-lease";
/// How often the lease is renewed and the Ready condition refreshed.
pub const HEARTBEAT: Duration = Duration::from_secs(10);
/// Pods a node accepts.
const MAX_PODS: u32 = 110;

/// The kubelet version the node reports.
pub const KUBELET_VERSION: &str = "v1.32.0-capstan";

/// Registers one Node and keeps it alive.
#[derive(Clone)]
pub struct Registration {
    client: kube::Client,
    name: String,
    port: u16,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn now_micro() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map(|s| s.trim().to_string()).unwrap_or_default()
}

/// The machine's memory in KiB.
fn memory_kib() -> u64 {
    let info = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    info.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The address other machines reach this one at: the source address of the default route.
#[must_use]
pub fn internal_ip() -> Ipv4Addr {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.connect("10.255.255.255:9")?;
        s.local_addr()
    });
    match probe {
        Ok(std::net::SocketAddr::V4(address)) if !address.ip().is_unspecified() => *address.ip(),
        _ => Ipv4Addr::LOCALHOST,
    }
}

fn os_image() -> String {
    let release = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map_or_else(|| "Linux".to_string(), |v| v.trim_matches('"').to_string())
}

fn condition(kind: &str, ok: bool, reason: &str, message: &str) -> Value {
    json!({
        "type": kind,
        "status": if ok { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastHeartbeatTime": now(),
        "lastTransitionTime": now(),
    })
}

impl Registration {
    /// A registration of node `name`.
    #[must_use]
    pub fn new(client: kube::Client, name: &str) -> Self {
        Registration { client, name: name.to_string(), port: 0 }
    }

    /// Publishes `port` as the node's streaming endpoint (`daemonEndpoints.kubeletEndpoint`).
    #[must_use]
    pub fn with_port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    fn status(&self, runtime_version: &str, not_ready: Option<&str>) -> Value {
        let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        let memory = format!("{}Ki", memory_kib());
        let resources = json!({"cpu": cpus.to_string(), "memory": memory, "pods": MAX_PODS.to_string(),
            "ephemeral-storage": "10Gi"});
        let hostname = read_trimmed("/proc/sys/kernel/hostname");
        let (ready, reason, message) = match not_ready {
            None => (true, "KubeletReady", "capstan node agent is posting ready status".to_string()),
            Some(why) => (false, "ContainerRuntimeUnavailable", why.to_string()),
        };
        json!({
            "capacity": resources,
            "allocatable": resources,
            "addresses": [
                {"type": "InternalIP", "address": internal_ip().to_string()},
                {"type": "Hostname", "address": hostname},
            ],
            "nodeInfo": {
                "machineID": read_trimmed("/etc/machine-id"),
                "systemUUID": read_trimmed("/etc/machine-id"),
                "bootID": read_trimmed("/proc/sys/kernel/random/boot_id"),
                "kernelVersion": read_trimmed("/proc/sys/kernel/osrelease"),
                "osImage": os_image(),
                "containerRuntimeVersion": runtime_version,
                "kubeletVersion": KUBELET_VERSION,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
            },
            "conditions": [
                condition("MemoryPressure", false, "KubeletHasSufficientMemory", "kubelet has sufficient memory available"),
                condition("DiskPressure", false, "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                condition("PIDPressure", false, "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
                condition("Ready", ready, reason, &message),
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": self.port}},
        })
    }

    /// Creates the Node (or takes over an existing one) and posts its status. Returns the pod
    /// CIDR it already has.
    pub async fn register(&self, cri: Option<&Cri>, not_ready: Option<&str>) -> Result<Option<String>, NodeError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let labels = json!({
            "kubernetes.io/hostname": self.name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
        });
        let existing = nodes.get_opt(&self.name).await?;
        let node = if let Some(node) = existing {
            node
        } else {
            let object: Node = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {"name": self.name, "labels": labels},
                "spec": {},
            }))
            .map_err(|e| NodeError::Spec(e.to_string()))?;
            match nodes.create(&PostParams::default(), &object).await {
                Ok(node) => node,
                Err(kube::Error::Api(e)) if e.code == 409 => nodes.get(&self.name).await?,
                Err(e) => return Err(e.into()),
            }
        };
        let version = match cri {
            Some(cri) => cri.version().await.unwrap_or_default(),
            None => String::new(),
        };
        let status = self.status(&version, not_ready);
        nodes.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await?;
        Ok(node.spec.and_then(|s| s.pod_cidr))
    }

    /// Renews the lease and refreshes the node status forever.
    pub async fn heartbeat(&self, cri: Option<Cri>, not_ready: Option<String>) {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": LEASE_NAMESPACE}});
        if let Ok(namespace) = serde_json::from_value::<Namespace>(namespace) {
            let _ = namespaces.create(&PostParams::default(), &namespace).await;
        }
        loop {
            if let Err(e) = self.renew_lease().await {
                tracing::warn!(node = %self.name, error = %e, "cannot renew the node lease");
            }
            let mut reason = not_ready.clone();
            if let Some(cri) = &cri
                && let Err(e) = cri.version().await
            {
                reason = Some(format!("the container runtime does not answer: {e}"));
            }
            let nodes: Api<Node> = Api::all(self.client.clone());
            let version = match &cri {
                Some(cri) => cri.version().await.unwrap_or_default(),
                None => String::new(),
            };
            let status = self.status(&version, reason.as_deref());
            if let Err(e) =
                nodes.patch_status(&self.name, &PatchParams::default(), &Patch::Merge(json!({"status": status}))).await
            {
                tracing::warn!(node = %self.name, error = %e, "cannot update the node status");
            }
            tokio::time::sleep(HEARTBEAT).await;
        }
    }

    async fn renew_lease(&self) -> Result<(), NodeError> {
        let leases: Api<Lease> = Api::namespaced(self.client.clone(), LEASE_NAMESPACE);
        let spec = json!({"holderIdentity": self.name, "leaseDurationSeconds": 40, "renewTime": now_micro()});
        if leases.get_opt(&self.name).await?.is_some() {
            leases.patch(&self.name, &PatchParams::default(), &Patch::Merge(json!({"spec": spec}))).await?;
        } else {
            let lease: Lease = serde_json::from_value(json!({
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {"name": self.name, "namespace": LEASE_NAMESPACE},
                "spec": spec,
            }))
            .map_err(|e| NodeError::Spec(e.to_string()))?;
            leases.create(&PostParams::default(), &lease).await?;
        }
        Ok(())
    }
}

/// Parses `a.b.c.d/n`.
fn parse_cidr(cidr: &str) -> Result<(u32, u32), NodeError> {
    let bad = || NodeError::Spec(format!("'{cidr}' is not an IPv4 CIDR such as 10.88.0.0/16"));
    let (address, bits) = cidr.split_once('/').ok_or_else(bad)?;
    let address: Ipv4Addr = address.parse().map_err(|_| bad())?;
    let bits: u32 = bits.parse().map_err(|_| bad())?;
    if bits > 24 {
        return Err(bad());
    }
    Ok((u32::from(address), bits))
}

/// Gives node `name` the first /24 of `cluster_cidr` no other node has (optimistic concurrency:
/// the write carries the resourceVersion it read, and a conflict retries).
pub async fn allocate_pod_cidr(client: &kube::Client, name: &str, cluster_cidr: &str) -> Result<String, NodeError> {
    let (base, bits) = parse_cidr(cluster_cidr)?;
    let blocks = 1u32 << (24 - bits);
    let nodes: Api<Node> = Api::all(client.clone());
    for _ in 0..10 {
        let list = nodes.list(&kube::api::ListParams::default()).await?;
        let mut mine = None;
        let mut used = std::collections::HashSet::new();
        for node in &list.items {
            let cidr = node.spec.as_ref().and_then(|s| s.pod_cidr.clone());
            if node.metadata.name.as_deref() == Some(name) {
                mine = Some(node.clone());
                if let Some(cidr) = cidr {
                    return Ok(cidr);
                }
            } else if let Some(cidr) = cidr {
                used.insert(cidr);
            }
        }
        let mut node = mine.ok_or_else(|| NodeError::Spec(format!("node {name} is not registered")))?;
        let free = (0..blocks)
            .map(|i| format!("{}/24", Ipv4Addr::from(base + (i << 8))))
            .find(|c| !used.contains(c))
            .ok_or_else(|| NodeError::Spec(format!("cluster CIDR {cluster_cidr} has no free /24 left")))?;
        let spec = node.spec.get_or_insert_with(Default::default);
        spec.pod_cidr = Some(free.clone());
        spec.pod_cidrs = Some(vec![free.clone()]);
        match nodes.replace(name, &PostParams::default(), &node).await {
            Ok(_) => return Ok(free),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    Err(NodeError::Spec(format!("cannot allocate a pod CIDR for {name}: too many conflicting writes")))
}
