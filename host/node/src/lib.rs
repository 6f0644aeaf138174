//! Capstan's node agent (its kubelet): it registers a Node, heartbeats through a Lease, and drives
//! the pods bound to the node to their spec with real containers through CRI (a containerd it
//! supervises) and pod networking through CNI (bridge + host-local).
//!
//! Start with [`Agent::run`]: it prepares the runtime ([`runtime`]), registers the node
//! ([`node`]), then runs one worker per pod ([`pods`]). Images without a registry are built and
//! imported by [`image`]. Manifests in `<data dir>/manifests` run as static pods
//! ([`static_pods`]); logs, exec, attach and port-forward are served on the node's own HTTPS port
//! ([`server`]), the streams bridged to the runtime's SPDY streaming server (`streaming`, with the
//! SPDY framing in [`spdy`]).

pub mod image;
pub mod node;
pub mod pods;
pub mod probes;
pub mod runtime;
pub mod server;
pub mod spdy;
pub mod spec;
pub mod static_pods;
pub mod stats;
mod streaming;

use std::path::{Path, PathBuf};

/// Why the node agent failed.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// A file operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The container runtime is missing or failing.
    #[error("container runtime: {0}")]
    Runtime(String),
    /// A CRI call failed.
    #[error("CRI call failed: {0}")]
    Cri(#[from] tonic::Status),
    /// An image could not be built or imported.
    #[error("image: {0}")]
    Image(String),
    /// The API server refused or failed a request.
    #[error("API request failed: {0}")]
    Api(#[from] kube::Error),
    /// The pod spec cannot be run as written.
    #[error("{0}")]
    Spec(String),
}

impl NodeError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> Self {
        NodeError::Io { action, path: path.to_path_buf(), source }
    }
}

/// How a node agent runs.
#[derive(Clone)]
pub struct AgentConfig {
    /// The Node's name.
    pub node_name: String,
    /// Where the agent keeps containerd's state, CNI config and pod directories.
    pub data_dir: PathBuf,
    /// An existing CRI socket; without it the agent starts its own containerd.
    pub runtime_endpoint: Option<PathBuf>,
    /// The cluster CIDR node pod CIDRs (/24 each) are allocated from.
    pub cluster_cidr: String,
    /// The client to the API server.
    pub client: kube::Client,
    /// The cluster CA (PEM): the node's HTTPS port serves only clients it signed.
    pub ca_pem: String,
    /// The node's HTTPS port for logs and exec (0 picks a free one).
    pub port: u16,
}

/// A node agent.
pub struct Agent {
    config: AgentConfig,
}

impl Agent {
    /// An agent for `config`.
    #[must_use]
    pub fn new(config: AgentConfig) -> Self {
        Agent { config }
    }

    /// Runs until the process ends: prepares the runtime, registers the node, heartbeats and
    /// runs the pods bound to it. A missing runtime leaves the node registered `NotReady`.
    pub async fn run(self) -> Result<(), NodeError> {
        let config = self.config;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| NodeError::io("create", &config.data_dir, e))?;
        let data_dir = std::path::absolute(&config.data_dir).unwrap_or_else(|_| config.data_dir.clone());
        let registration = node::Registration::new(config.client.clone(), &config.node_name);
        let started = prepare_runtime(&config, &data_dir, &registration).await;
        let (cri, containerd, layout) = match started {
            Ok(parts) => parts,
            Err(reason) => {
                tracing::warn!(node = %config.node_name, %reason, "node is NotReady");
                registration.register(None, Some(&reason)).await?;
                registration.heartbeat(None, Some(reason)).await;
                return Ok(());
            }
        };
        let sampler = stats::Sampler::new(cri.clone(), &config.node_name);
        tokio::spawn(std::sync::Arc::clone(&sampler).run(stats::INTERVAL));
        let streams = server::StreamServer::bind(config.port, &config.ca_pem).await?.with_stats(sampler);
        let registration = registration.with_port(streams.address.port());
        tokio::spawn(streams.serve(cri.clone()));
        let subnet = registration.register(Some(&cri), None).await?;
        let subnet = match subnet {
            Some(subnet) => subnet,
            None => node::allocate_pod_cidr(&config.client, &config.node_name, &config.cluster_cidr).await?,
        };
        let bridge = bridge_name(&data_dir);
        let cni = runtime::cni_config(&bridge, &subnet, &layout.base.join("cni/ipam"));
        let cni_path = layout.cni_conf.join("10-capstan.conflist");
        std::fs::write(&cni_path, cni).map_err(|e| NodeError::io("write", &cni_path, e))?;
        let manager = pods::Manager::new(config.client.clone(), cri.clone(), &config.node_name, &layout);
        tokio::spawn(static_pods::run(config.client.clone(), config.node_name.clone(), data_dir.join("manifests")));
        let heartbeat = registration.clone();
        let heartbeat_cri = cri.clone();
        tokio::spawn(async move { heartbeat.heartbeat(Some(heartbeat_cri), None).await });
        let result = manager.run().await;
        drop(containerd);
        result
    }
}

type Prepared = (runtime::Cri, Option<runtime::Containerd>, runtime::Layout);

async fn prepare_runtime(
    config: &AgentConfig,
    data_dir: &Path,
    _registration: &node::Registration,
) -> Result<Prepared, String> {
    let base = data_dir.join("containerd");
    let (containerd, layout) = match &config.runtime_endpoint {
        Some(endpoint) => {
            let mut layout = runtime::Layout::new(&base);
            layout.socket.clone_from(endpoint);
            std::fs::create_dir_all(&layout.pod_logs).map_err(|e| e.to_string())?;
            (None, layout)
        }
        None if !runtime::Containerd::installed() => return Err(runtime::INSTALL_HINT.to_string()),
        None => {
            let containerd = runtime::Containerd::start(&base).await.map_err(|e| e.to_string())?;
            let layout = containerd.layout.clone();
            (Some(containerd), layout)
        }
    };
    let cri = runtime::Cri::connect(&layout.socket).await.map_err(|e| e.to_string())?;
    let socket = layout.socket.clone();
    let images = data_dir.join("images");
    tokio::task::spawn_blocking(move || {
        std::fs::create_dir_all(&images).map_err(|e| e.to_string())?;
        image::ensure_pause(&socket, &images).map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())??;
    Ok((cri, containerd, layout))
}

/// A bridge name unique to the agent's data directory (interface names have 15 bytes at most).
fn bridge_name(data_dir: &Path) -> String {
    use sha2::Digest as _;
    let digest = sha2::Sha256::digest(data_dir.display().to_string().as_bytes());
    format!("cap{:02x}{:02x}{:02x}", digest[0], digest[1], digest[2])
}

/// The containerd socket an agent with data directory `data_dir` supervises.
#[must_use]
pub fn runtime_socket(data_dir: &Path) -> PathBuf {
    runtime::Layout::new(&data_dir.join("containerd")).socket
}

/// The node agent's directory inside a `capstan server` or `capstan agent` data directory.
#[must_use]
pub fn node_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("node")
}

/// This machine's hostname, lowercased, as a Node name.
#[must_use]
pub fn default_node_name() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default().trim().to_lowercase();
    if name.is_empty() { "localhost".into() } else { name }
}

/// Imports an image tar into the runtime of the node whose server/agent data directory is
/// `data_dir`.
pub fn import_image(data_dir: &Path, tar: &Path) -> Result<(), NodeError> {
    let socket = runtime_socket(&node_dir(data_dir));
    if !socket.exists() {
        return Err(NodeError::Runtime(format!(
            "no runtime socket at {}: is the capstan server or agent with this data directory running?",
            socket.display()
        )));
    }
    image::import(&socket, tar)
}
