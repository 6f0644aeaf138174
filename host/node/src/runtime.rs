//! The container runtime: a supervised containerd with a generated config (every path inside the
//! node's data directory), and the CRI v1 gRPC client to it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::NodeError;

/// How to install the runtime when it is missing (the reason a node is `NotReady`).
pub const INSTALL_HINT: &str = "containerd is not installed: install it with `scripts/install-deps node` (Debian packages containerd, runc, containernetworking-plugins) or pass --runtime-endpoint";

/// CRI clients over one channel.
#[derive(Clone)]
pub struct Cri {
    /// The runtime service.
    pub runtime: RuntimeServiceClient<Channel>,
    /// The image service.
    pub images: ImageServiceClient<Channel>,
    /// The containerd socket (for `ctr` image imports).
    pub address: PathBuf,
}

impl Cri {
    /// Connects to the CRI socket at `address`.
    pub async fn connect(address: &Path) -> Result<Self, NodeError> {
        let path = address.to_path_buf();
        let endpoint = Endpoint::try_from("http://[::1]:1").map_err(|e| NodeError::Runtime(e.to_string()))?;
        let channel = endpoint
            .connect_with_connector(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move { Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(path).await?)) }
            }))
            .await
            .map_err(|e| NodeError::Runtime(format!("cannot connect to {}: {e}", address.display())))?;
        Ok(Cri {
            runtime: RuntimeServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            images: ImageServiceClient::new(channel),
            address: address.to_path_buf(),
        })
    }

    /// `runtimeName://version`, as nodeInfo.containerRuntimeVersion shows it.
    pub async fn version(&self) -> Result<String, NodeError> {
        let reply = self.runtime.clone().version(k8s_cri::v1::VersionRequest { version: "v1".into() }).await?;
        let reply = reply.into_inner();
        Ok(format!("{}://{}", reply.runtime_name, reply.runtime_version))
    }
}

/// Paths of a supervised containerd.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The base directory.
    pub base: PathBuf,
    /// The gRPC socket.
    pub socket: PathBuf,
    /// The CNI config directory.
    pub cni_conf: PathBuf,
    /// Where pod log directories live.
    pub pod_logs: PathBuf,
}

impl Layout {
    /// The layout under `base`.
    #[must_use]
    pub fn new(base: &Path) -> Self {
        Layout {
            base: base.to_path_buf(),
            socket: base.join("containerd.sock"),
            cni_conf: base.join("cni/net.d"),
            pod_logs: base.join("pods"),
        }
    }
}

/// The containerd config: every state path under `base`, CRI with our sandbox image and CNI.
fn config(layout: &Layout) -> String {
    let base = layout.base.display();
    let socket = layout.socket.display();
    let cni = layout.cni_conf.display();
    let pause = crate::image::PAUSE_IMAGE;
    format!(
        r#"version = 2
root = "{base}/root"
state = "{base}/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{socket}"

[ttrpc]
  address = "{socket}.ttrpc"

[debug]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{base}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  enable_cdi = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{base}/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
    max_conf_num = 1
"#
    )
}

/// The bridge + host-local CNI config for `subnet`.
#[must_use]
pub fn cni_config(bridge: &str, subnet: &str, data_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "capstan",
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": subnet}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": data_dir.display().to_string(),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
        ],
    })
    .to_string()
}

/// A containerd process this node started; killed when dropped.
pub struct Containerd {
    child: tokio::process::Child,
    /// Its paths.
    pub layout: Layout,
}

impl Containerd {
    /// Whether a `containerd` binary is on PATH.
    #[must_use]
    pub fn installed() -> bool {
        std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join("containerd").is_file()))
    }

    /// Writes the config under `base` and starts containerd, waiting until its socket answers.
    pub async fn start(base: &Path) -> Result<Self, NodeError> {
        let layout = Layout::new(base);
        for dir in [&layout.base, &layout.cni_conf, &layout.pod_logs] {
            std::fs::create_dir_all(dir).map_err(|e| NodeError::io("create", dir, e))?;
        }
        let config_path = base.join("containerd.toml");
        std::fs::write(&config_path, config(&layout)).map_err(|e| NodeError::io("write", &config_path, e))?;
        let log_path = base.join("containerd.log");
        let log = std::fs::File::create(&log_path).map_err(|e| NodeError::io("create", &log_path, e))?;
        let err = log.try_clone().map_err(|e| NodeError::io("open", &log_path, e))?;
        let _ = std::fs::remove_file(&layout.socket);
        // containerd dies with the agent (setpriv sets its parent-death signal); its shims, and so
        // the pods, keep running and are adopted when the agent starts again.
        let mut command = if Path::new("/usr/bin/setpriv").exists() {
            let mut command = tokio::process::Command::new("/usr/bin/setpriv");
            command.args(["--pdeathsig", "KILL", "containerd"]);
            command
        } else {
            tokio::process::Command::new("containerd")
        };
        let child = command
            .arg("--config")
            .arg(&config_path)
            .stdin(std::process::Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| NodeError::Runtime(format!("cannot start containerd: {e}")))?;
        let mut containerd = Containerd { child, layout };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(cri) = Cri::connect(&containerd.layout.socket).await
                && cri.version().await.is_ok()
            {
                return Ok(containerd);
            }
            if let Ok(Some(status)) = containerd.child.try_wait() {
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                return Err(NodeError::Runtime(format!("containerd exited ({status}): {}", tail.join(" | "))));
            }
            if tokio::time::Instant::now() > deadline {
                return Err(NodeError::Runtime(format!(
                    "containerd did not answer on {} within 30s (log: {})",
                    containerd.layout.socket.display(),
                    log_path.display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}
