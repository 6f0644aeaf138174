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
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the control plane on this machine.
    Server(ServerArgs),
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
    /// A KubeSchedulerConfiguration file for the built-in scheduler (profiles, plugins, args).
    #[arg(long)]
    scheduler_config: Option<PathBuf>,
    /// Do not run the built-in scheduler.
    #[arg(long)]
    no_scheduler: bool,
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
    let components = Components::new(args.components_dir.clone());
    let config = capstan_apiserver::Config {
        data_dir: args.data_dir.clone(),
        bind_address: args.bind_address,
        port: args.port,
        store,
    };
    let running = capstan_apiserver::start(config).await.context("cannot start the API server")?;
    tracing::info!(address = %running.address, "API server listening");
    let scheduler = if args.no_scheduler {
        None
    } else {
        // The API server is useful without a scheduler (e.g. when the plugins are not built):
        // say loudly why pods stay pending instead of refusing to start.
        match start_scheduler(args.scheduler_config.as_deref(), &args.data_dir, &running.kubeconfig, components).await {
            Ok(scheduler) => Some(scheduler),
            Err(e) => {
                tracing::error!("the scheduler is not running, pods will stay Pending: {e:#}");
                None
            }
        }
    };
    println!("Capstan is up. To use kubectl: export KUBECONFIG={}", absolute(&running.kubeconfig).display());
    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("cannot wait for Ctrl-C")?,
        ended = running.task => ended.context("the API server stopped")?,
    }
    compactor.abort();
    if let Some(scheduler) = scheduler {
        scheduler.stop();
    }
    tracing::info!("stopping");
    Ok(())
}

/// Starts the built-in scheduler as an API client of this server, its default plugins read from
/// the components directory.
async fn start_scheduler(
    config_file: Option<&std::path::Path>,
    data_dir: &std::path::Path,
    kubeconfig: &std::path::Path,
    components: Components,
) -> anyhow::Result<capstan_scheduler::Started> {
    let config = match config_file {
        Some(path) => capstan_scheduler::SchedulerConfig::from_file(path)?,
        None => capstan_scheduler::SchedulerConfig::default(),
    };
    let client = capstan_client::from_kubeconfig(kubeconfig).await?;
    let runtime_config = capstan_wasm::RuntimeConfig {
        cache_dir: Some(data_dir.join("plugin-cache")),
        ..capstan_wasm::RuntimeConfig::default()
    };
    let runtime = capstan_wasm::Runtime::new(runtime_config)?;
    let builtin = std::sync::Arc::new(move |name: &str| components.bytes(name).map_err(|e| format!("{e:#}")));
    Ok(capstan_scheduler::Scheduler::start(client, runtime, config, builtin).await?)
}
