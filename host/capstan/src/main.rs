//! The `capstan` command. It parses flags and wires the crates together; behaviour lives in
//! the crates under `host/`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use capstan_store::{Compactor, EtcdConfig, StoreConfig};
use clap::{Parser, Subcommand};

mod plugin_cmd;
mod token_cmd;

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
    Server(Box<ServerArgs>),
    /// Plugin tooling: new, build, inspect.
    #[command(subcommand)]
    Plugin(plugin_cmd::PluginCommand),
    /// Runs a node agent that joins the cluster at `--server`.
    Agent(Box<AgentArgs>),
    /// Manages images in the node's container runtime.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Bootstrap tokens for joining nodes: create, list.
    #[command(subcommand)]
    Token(token_cmd::TokenCommand),
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
    /// Run hollow nodes (`--hollow N`) instead of a node for this machine.
    #[command(flatten)]
    hollow: HollowArgs,
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
    /// Writes the busybox image tar (tags `capstan.local/busybox:latest` and `:2`, which differ
    /// only in `/etc/capstan-release`) built from this machine's static busybox.
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
    /// More hostnames or IP addresses for the serving certificate (repeat or comma-separate), for
    /// agents and kubectl on other machines; used when the credentials are first created.
    #[arg(long = "tls-san", value_delimiter = ',')]
    tls_sans: Vec<String>,
    /// How often store history is compacted (history of at least this long is kept).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    compaction_interval: Duration,
    /// Read the default plugin components (`<crate_name>.wasm`, built from `plugins/`) from this
    /// directory instead of the copies embedded in the binary.
    #[arg(long, env = "CAPSTAN_COMPONENTS_DIR")]
    components_dir: Option<PathBuf>,
    #[command(flatten)]
    hollow: HollowArgs,
    /// Whether to run a node agent for this machine (`--node=false` runs the control plane only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    node: bool,
    #[command(flatten)]
    node_args: NodeArgs,
    /// Run the controller manager (Deployment, ReplicaSet, garbage collector, …) in this server.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    controllers: bool,
    /// A KubeSchedulerConfiguration file for the built-in scheduler (profiles, plugins, args).
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// Run the built-in scheduler (`--scheduler=false` to leave pods for another scheduler).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    scheduler: bool,
}

/// Hollow nodes: nodes without a container runtime whose pods are reported running.
#[derive(clap::Args)]
struct HollowArgs {
    /// Register this many hollow nodes (for trying the scheduler and controllers at scale).
    #[arg(long = "hollow-nodes", visible_alias = "hollow", default_value_t = 0)]
    count: usize,
    /// Hollow node names are this prefix and a number.
    #[arg(long = "hollow-node-prefix", default_value = "hollow-node-")]
    prefix: String,
    /// CPU capacity of each hollow node.
    #[arg(long = "hollow-node-cpu", default_value = "8")]
    cpu: String,
    /// Memory capacity of each hollow node.
    #[arg(long = "hollow-node-memory", default_value = "32Gi")]
    memory: String,
    /// Pod capacity of each hollow node.
    #[arg(long = "hollow-node-max-pods", default_value_t = 110)]
    max_pods: u32,
    /// Spread hollow nodes over this many zones (`topology.kubernetes.io/zone`).
    #[arg(long = "hollow-zones", default_value_t = 3)]
    zones: usize,
    /// Labels on every hollow node (`key=value`, comma-separated).
    #[arg(long = "hollow-node-labels", value_delimiter = ',')]
    labels: Vec<String>,
    /// Taints on every hollow node (`key[=value]:Effect`, comma-separated).
    #[arg(long = "hollow-node-taints", value_delimiter = ',')]
    taints: Vec<String>,
}

impl HollowArgs {
    fn config(&self) -> anyhow::Result<capstan_hollow::HollowConfig> {
        let mut labels = std::collections::BTreeMap::new();
        for label in &self.labels {
            let (key, value) =
                label.split_once('=').with_context(|| format!("hollow node label '{label}' is not key=value"))?;
            labels.insert(key.to_owned(), value.to_owned());
        }
        let taints = self.taints.iter().map(|t| capstan_hollow::parse_taint(t)).collect::<Result<Vec<_>, _>>()?;
        Ok(capstan_hollow::HollowConfig {
            count: self.count,
            name_prefix: self.prefix.clone(),
            cpu: self.cpu.clone(),
            memory: self.memory.clone(),
            max_pods: self.max_pods,
            zones: self.zones,
            labels,
            taints,
            ..capstan_hollow::HollowConfig::default()
        })
    }
}

/// The default components Capstan ships, found by crate name (`node-name`): from
/// `--components-dir` when given (`<crate_name>.wasm` files), otherwise embedded in the binary.
#[derive(Clone)]
struct Components {
    dir: Option<PathBuf>,
}

impl Components {
    fn new(dir: Option<PathBuf>) -> Self {
        Self { dir }
    }

    /// A reader of components by name, for the scheduler and the controller manager.
    fn reader(&self) -> capstan_client::plugins::BuiltinComponents {
        let components = self.clone();
        std::sync::Arc::new(move |name: &str| components.bytes(name).map_err(|e| format!("{e:#}")))
    }

    /// The bytes of the component built from plugin crate `name`.
    fn bytes(&self, name: &str) -> anyhow::Result<Vec<u8>> {
        if let Some(dir) = &self.dir {
            let path = dir.join(format!("{}.wasm", name.replace('-', "_")));
            return std::fs::read(&path).with_context(|| format!("cannot read component {}", path.display()));
        }
        capstan_components::get(name).map(<[u8]>::to_vec).with_context(|| {
            format!(
                "no component named {name} is shipped (shipped: {})",
                capstan_components::names().collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// The built-in admission policies whose components are there; a missing one is logged and
/// left out, so a server without built plugins still starts.
fn builtin_plugins(
    components: &Components,
) -> std::collections::BTreeMap<String, capstan_apiserver::plugins::BuiltinPlugin> {
    let mut builtins = std::collections::BTreeMap::new();
    for (name, spec) in capstan_apiserver::plugins::builtin_admission_specs() {
        match components.bytes(name) {
            Ok(bytes) => {
                builtins
                    .insert(name.to_string(), capstan_apiserver::plugins::BuiltinPlugin { bytes: bytes.into(), spec });
            }
            Err(e) => tracing::warn!(plugin = name, error = %e, "built-in admission policy not available"),
        }
    }
    builtins
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

/// Starts the default controllers, elected through a Lease, as clients of the API server.
async fn start_controllers(
    runtime: capstan_wasm::Runtime,
    data_dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    components: &Components,
) -> anyhow::Result<capstan_controllers::Elected> {
    let client = capstan_client::from_kubeconfig(kubeconfig).await.context("cannot build the controllers' client")?;
    let identity = format!("{}-{}", std::process::id(), data_dir.display());
    let builtin = components.reader();
    let ca = data_dir.join("pki/ca.crt");
    let root_ca = std::fs::read_to_string(&ca).with_context(|| format!("cannot read {}", ca.display()))?;
    let plugins = capstan_controllers::default_plugins(Some(&root_ca));
    Ok(capstan_controllers::run_elected(runtime, client, builtin, plugins, identity))
}

/// mimalloc: allocation-heavy request handling (JSON values, per-request maps) spends far less
/// in it than in glibc malloc, whose samples were a quarter of a busy server's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    match Cli::parse().command {
        Command::Server(args) => server(*args).await,
        Command::Plugin(command) => plugin_cmd::run(command),
        Command::Agent(args) => agent(*args).await,
        Command::Token(command) => token_cmd::run(command).await,
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

/// The `--tls-san`s, and when the server listens on every address, this machine's hostname and
/// default-route address, which agents on other machines will use.
fn serving_names(args: &ServerArgs) -> Vec<String> {
    let mut names = args.tls_sans.clone();
    if args.bind_address.is_unspecified() {
        names.push(capstan_node::default_node_name());
        names.push(capstan_node::node::internal_ip().to_string());
    }
    names
}

/// The address to put in the join command: the first `--tls-san`, else the bind address, else
/// (listening on every address) the default-route address.
fn join_host(args: &ServerArgs) -> String {
    let host = match args.tls_sans.first() {
        Some(name) => name.clone(),
        None if args.bind_address.is_unspecified() => capstan_node::node::internal_ip().to_string(),
        None => args.bind_address.to_string(),
    };
    if host.parse::<std::net::Ipv6Addr>().is_ok() { format!("[{host}]") } else { host }
}

/// Prints the `capstan agent` command that joins another machine to the server at `address`.
async fn print_join_command(
    kubeconfig: &std::path::Path,
    address: &str,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let client = capstan_client::from_kubeconfig(kubeconfig).await?;
    let token = token_cmd::server_join_token(&client).await?;
    println!("To join another machine: {}", token_cmd::join_command(address, &token, &absolute(data_dir)));
    Ok(())
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    let tls_sans = serving_names(&args);
    let join_host = join_host(&args);
    let config = if args.etcd_endpoints.is_empty() {
        StoreConfig::Embedded(args.data_dir.join("store.db"))
    } else {
        StoreConfig::Etcd(EtcdConfig { endpoints: args.etcd_endpoints, prefix: args.etcd_prefix })
    };
    let store = capstan_store::open(&config).await.context("cannot open the store")?;
    let revision = store.current_revision().await.context("cannot read the store")?;
    tracing::info!(store = %store.describe(), %revision, "store ready");
    let compactor = Compactor::new(store.clone()).spawn(args.compaction_interval);
    let components = Components::new(args.components_dir.clone());
    let config = capstan_apiserver::Config {
        data_dir: args.data_dir.clone(),
        bind_address: args.bind_address,
        tls_sans,
        port: args.port,
        store,
        builtin_plugins: builtin_plugins(&components),
        extra_metrics: capstan_apiserver::ExtraMetrics::default(),
    };
    let extra_metrics = config.extra_metrics.clone();
    let running = capstan_apiserver::start(config).await.context("cannot start the API server")?;
    tracing::info!(address = %running.address, "API server listening");
    let _hollow = if args.hollow.count > 0 {
        let client = capstan_client::from_kubeconfig(&running.kubeconfig).await?;
        Some(capstan_hollow::start(client, args.hollow.config()?).await.context("cannot start the hollow nodes")?)
    } else {
        None
    };
    let node = if args.node {
        let client =
            capstan_client::from_kubeconfig(&running.kubeconfig).await.context("cannot build the node client")?;
        let ca = args.data_dir.join("pki/ca.crt");
        let ca = std::fs::read_to_string(&ca).with_context(|| format!("cannot read {}", ca.display()))?;
        Some(spawn_agent(client, &args.data_dir, ca, args.node_args))
    } else {
        None
    };
    // The scheduler and the controller manager share one WebAssembly runtime (one engine, one
    // compile cache).
    let runtime = capstan_wasm::Runtime::new(capstan_wasm::RuntimeConfig {
        cache_dir: Some(args.data_dir.join("plugin-cache")),
        // Controllers may grow to this: a ReplicaSet controller reconciling 10 000 pods lists
        // them all (about 34 KiB of component memory per pod; 256 MiB ran out near 7 500).
        max_memory_bytes: 1 << 30,
        ..capstan_wasm::RuntimeConfig::default()
    })
    .context("cannot start the plugin runtime")?;
    let controllers = if args.controllers {
        Some(start_controllers(runtime.clone(), &args.data_dir, &running.kubeconfig, &components).await?)
    } else {
        None
    };
    {
        // The controllers' queues and reconciles, and every scheduler and controller component's
        // calls, on the API server's `/metrics`.
        let mut sources = extra_metrics.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(elected) = &controllers {
            let manager = elected.manager().clone();
            sources.push(std::sync::Arc::new(move || manager.prometheus()));
        }
        let plugins = runtime.clone();
        sources.push(std::sync::Arc::new(move || capstan_wasm::render_prometheus(&plugins.metrics())));
    }
    let scheduler = if args.scheduler {
        // The API server is useful without a scheduler (e.g. when the plugins are not built):
        // say loudly why pods stay pending instead of refusing to start.
        match start_scheduler(runtime, args.scheduler_config.as_deref(), &running.kubeconfig, components).await {
            Ok(scheduler) => Some(scheduler),
            Err(e) => {
                tracing::error!("the scheduler is not running, pods will stay Pending: {e:#}");
                None
            }
        }
    } else {
        None
    };
    println!("Capstan is up. To use kubectl: export KUBECONFIG={}", absolute(&running.kubeconfig).display());
    let join_address = format!("{join_host}:{}", running.address.port());
    if let Err(e) = print_join_command(&running.kubeconfig, &join_address, &args.data_dir).await {
        tracing::warn!("no join token: {e:#}");
    }
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot wait for SIGTERM")?;
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("cannot wait for Ctrl-C")?,
        _ = terminate.recv() => {}
        ended = running.task => ended.context("the API server stopped")?,
    }
    compactor.abort();
    if let Some(node) = node {
        node.abort();
    }
    if let Some(scheduler) = scheduler {
        scheduler.stop();
    }
    if let Some(controllers) = controllers {
        // A restarted server leads again at once instead of waiting out the Lease.
        controllers.shutdown().await;
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
    if args.hollow.count > 0 {
        let hollow =
            capstan_hollow::start(client, args.hollow.config()?).await.context("cannot start the hollow nodes")?;
        println!("Capstan hollow nodes are up: {}", hollow.names().join(", "));
        tokio::signal::ctrl_c().await.context("cannot wait for Ctrl-C")?;
        return Ok(());
    }
    let task = spawn_agent(client, &args.data_dir, ca, args.node);
    println!("Capstan node agent is up");
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("cannot wait for SIGTERM")?;
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("cannot wait for Ctrl-C")?,
        _ = terminate.recv() => tracing::info!("SIGTERM: stopping the node agent"),
        ended = task => ended.context("the node agent stopped")?,
    }
    Ok(())
}

/// Starts the built-in scheduler as an API client of this server, its default plugins read from
/// the components directory.
async fn start_scheduler(
    runtime: capstan_wasm::Runtime,
    config_file: Option<&std::path::Path>,
    kubeconfig: &std::path::Path,
    components: Components,
) -> anyhow::Result<capstan_scheduler::Started> {
    let config = match config_file {
        Some(path) => capstan_scheduler::SchedulerConfig::from_file(path)?,
        None => capstan_scheduler::SchedulerConfig::default(),
    };
    let client = capstan_client::from_kubeconfig(kubeconfig).await?;
    let builtin = components.reader();
    Ok(capstan_scheduler::Scheduler::start(client, runtime, config, builtin).await?)
}
