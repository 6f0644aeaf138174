//! The `capstan` command. It parses flags and wires the crates together; behaviour lives in
//! the crates under `host/`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use capstan_store::{Compactor, EtcdConfig, StoreConfig};
use clap::{Parser, Subcommand};

/// Capstan: a Kubernetes-compatible orchestrator whose scheduler, admission and controllers are
/// WebAssembly components.
#[derive(Parser)]
#[command(version, about, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the control plane on this machine.
    Server(ServerArgs),
    /// Runs a node agent that joins the cluster at `--server`.
    Agent(AgentArgs),
    /// Manages images in the node's container runtime.
    #[command(subcommand)]
    Image(ImageCommand),
}

/// Flags of the node agent, shared by `capstan server` (its local node) and `capstan agent`.
#[derive(clap::Args)]
struct NodeArgs {
    /// The Node's name (default: this machine's hostname).
    #[arg(long)]
    node_name: Option<String>,
    /// An existing CRI socket; without it the agent starts and supervises its own containerd.
    #[arg(long)]
    runtime_endpoint: Option<PathBuf>,
    /// The cluster CIDR node pod CIDRs (/24 each) are allocated from.
    #[arg(long, default_value = "10.88.0.0/16")]
    cluster_cidr: String,
    /// The node's HTTPS port for logs, exec and attach (0 picks a free one).
    #[arg(long, default_value_t = 10250)]
    kubelet_port: u16,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The API server URL (`https://host:port`).
    #[arg(long)]
    server: String,
    /// A bearer token the API server accepts.
    #[arg(long, env = "CAPSTAN_TOKEN")]
    token: String,
    /// The cluster CA certificate (PEM), `<server data dir>/pki/ca.crt`.
    #[arg(long)]
    ca_file: PathBuf,
    /// Where the agent keeps its runtime state.
    #[arg(long, default_value = "./.capstan-agent")]
    data_dir: PathBuf,
    #[command(flatten)]
    node: NodeArgs,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Loads a docker-save or OCI image tar into the node's runtime.
    Import {
        /// The image tar.
        file: PathBuf,
        /// The data directory of the `capstan server` or `capstan agent` whose runtime gets it.
        #[arg(long, default_value = "./.capstan", env = "CAPSTAN_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Writes the busybox image tar (`capstan.local/busybox:latest`) built from this machine's
    /// static busybox.
    BuildBusybox {
        /// Where to write the tar.
        out: PathBuf,
    },
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where the server keeps its database, certificates and kubeconfig.
    #[arg(long, default_value = "./.capstan", env = "CAPSTAN_DATA_DIR")]
    data_dir: PathBuf,
    /// Use these etcd members instead of the embedded store (comma-separated client URLs).
    #[arg(long, value_delimiter = ',')]
    etcd_endpoints: Vec<String>,
    /// Key prefix in etcd.
    #[arg(long, default_value = "/registry")]
    etcd_prefix: String,
    /// The address the API server listens on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: std::net::IpAddr,
    /// The API server's port.
    #[arg(long, default_value_t = 6443)]
    port: u16,
    /// How often store history is compacted (history of at least this long is kept).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    compaction_interval: Duration,
    /// Where the default plugin components (`<crate_name>.wasm`, built from `plugins/`) are read.
    /// By default the `plugins/` build output of the source tree this binary was built from.
    #[arg(long, env = "CAPSTAN_COMPONENTS_DIR")]
    components_dir: Option<PathBuf>,
    /// Whether to run a node agent for this machine (`--node=false` runs the control plane only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    node: bool,
    #[command(flatten)]
    node_args: NodeArgs,
}

/// The default components Capstan ships, found by crate name (`node-name` → `node_name.wasm`).
#[derive(Clone)]
struct Components {
    dirs: Vec<PathBuf>,
}

impl Components {
    fn new(explicit: Option<PathBuf>) -> Self {
        let dirs = explicit.map_or_else(
            || {
                let mut dirs = Vec::new();
                if let Some(target) = option_env!("CARGO_TARGET_DIR") {
                    dirs.push(PathBuf::from(target).join("wasm32-wasip2/release"));
                }
                dirs.push(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/target/wasm32-wasip2/release"));
                dirs
            },
            |dir| vec![dir],
        );
        Self { dirs }
    }

    /// The bytes of the component built from plugin crate `name`.
    #[allow(dead_code, reason = "the scheduler and controller manager read their defaults through it")]
    fn bytes(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        let file = format!("{}.wasm", name.replace('-', "_"));
        for dir in &self.dirs {
            let path = dir.join(&file);
            if path.is_file() {
                return std::fs::read(&path).with_context(|| format!("cannot read component {}", path.display()));
            }
        }
        let searched: Vec<_> = self.dirs.iter().map(|d| d.display().to_string()).collect();
        anyhow::bail!(
            "component {file} not found in {}; build plugins/ with `cargo build --manifest-path plugins/Cargo.toml \
             --target wasm32-wasip2 --release` or pass --components-dir",
            searched.join(", ")
        )
    }
}

fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: u64 = number.parse().map_err(|_| format!("'{text}' is not a duration such as 30s, 5m or 1h"))?;
    let seconds = match unit {
        "" | "s" => value,
        "m" => value * 60,
        "h" => value * 3600,
        _ => return Err(format!("'{text}' has unknown unit '{unit}' (use s, m or h)")),
    };
    Ok(Duration::from_secs(seconds))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Command::Server(args) => server(args).await,
        Command::Agent(args) => agent(args).await,
        Command::Image(ImageCommand::Import { file, data_dir }) => {
            capstan_node::import_image(&data_dir, &file).context("cannot import the image")?;
            println!("imported {}", file.display());
            Ok(())
        }
        Command::Image(ImageCommand::BuildBusybox { out }) => {
            capstan_node::image::build_busybox(&out).context("cannot build the busybox image")
        }
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let config = if args.etcd_endpoints.is_empty() {
        StoreConfig::Embedded(args.data_dir.join("store.db"))
    } else {
        StoreConfig::Etcd(EtcdConfig { endpoints: args.etcd_endpoints, prefix: args.etcd_prefix })
    };
    let store = capstan_store::open(&config).await.context("cannot open the store")?;
    let revision = store.current_revision().await.context("cannot read the store")?;
    tracing::info!(store = %store.describe(), %revision, "store ready");
    let compactor = Compactor::new(store.clone()).spawn(args.compaction_interval);
    let _components = Components::new(args.components_dir.clone());
    let config = capstan_apiserver::Config {
        data_dir: args.data_dir.clone(),
        bind_address: args.bind_address,
        port: args.port,
        store,
    };
    let running = capstan_apiserver::start(config).await.context("cannot start the API server")?;
    tracing::info!(address = %running.address, "API server listening");
    let node = if args.node {
        let client =
            capstan_client::from_kubeconfig(&running.kubeconfig).await.context("cannot build the node client")?;
        let ca = args.data_dir.join("pki/ca.crt");
        let ca = std::fs::read_to_string(&ca).with_context(|| format!("cannot read {}", ca.display()))?;
        Some(spawn_agent(client, &args.data_dir, ca, args.node_args))
    } else {
        None
    };
    println!("Capstan is up. To use kubectl: export KUBECONFIG={}", absolute(&running.kubeconfig).display());
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("cannot wait for Ctrl-C")?,
        ended = running.task => ended.context("the API server stopped")?,
    }
    compactor.abort();
    if let Some(node) = node {
        node.abort();
    }
    tracing::info!("stopping");
    Ok(())
}

fn spawn_agent(
    client: capstan_client::Client,
    data_dir: &std::path::Path,
    ca_pem: String,
    args: NodeArgs,
) -> tokio::task::JoinHandle<()> {
    let config = capstan_node::AgentConfig {
        node_name: args.node_name.unwrap_or_else(capstan_node::default_node_name),
        data_dir: capstan_node::node_dir(data_dir),
        runtime_endpoint: args.runtime_endpoint,
        cluster_cidr: args.cluster_cidr,
        client,
        ca_pem,
        port: args.kubelet_port,
    };
    tokio::spawn(async move {
        if let Err(e) = capstan_node::Agent::new(config).run().await {
            tracing::error!(error = %e, "the node agent stopped");
        }
    })
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let ca =
        std::fs::read_to_string(&args.ca_file).with_context(|| format!("cannot read {}", args.ca_file.display()))?;
    let client = capstan_client::from_token(&args.server, &ca, &args.token).context("cannot build the client")?;
    let task = spawn_agent(client, &args.data_dir, ca, args.node);
    println!("Capstan node agent is up");
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("cannot wait for Ctrl-C")?,
        ended = task => ended.context("the node agent stopped")?,
    }
    Ok(())
}
