//! The process's one wasmtime engine: its configuration, the epoch ticker that enforces call
//! deadlines, and the compile cache.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ProfilingStrategy};

use crate::cache::CompileCache;
use crate::error::RuntimeError;
use crate::metrics::MetricsSnapshot;
use crate::plugin::Shared;

/// How the runtime is set up; [`RuntimeConfig::default`] suits a server.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Where precompiled components are cached; `None` compiles on every load.
    pub cache_dir: Option<PathBuf>,
    /// How often the epoch advances: deadlines are enforced to within one tick.
    pub epoch_tick: Duration,
    /// Instance slots preallocated by the pooling allocator, across all plugins; `None` uses
    /// on-demand allocation instead.
    pub pooled_instances: Option<u32>,
    /// The largest memory cap any plugin may ask for.
    pub max_memory_bytes: usize,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cache_dir: None,
            epoch_tick: Duration::from_millis(5),
            pooled_instances: Some(512),
            max_memory_bytes: 256 << 20,
        }
    }
}

/// The plugin runtime: one per process. Cheap to clone; clones share the engine.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) engine: Engine,
    pub(crate) cache: CompileCache,
    pub(crate) config: RuntimeConfig,
    plugins: Mutex<Vec<Weak<dyn Shared>>>,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Creates the engine and starts its epoch ticker.
    pub fn new(config: RuntimeConfig) -> Result<Self, RuntimeError> {
        let engine = Engine::new(&engine_config(&config)).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        if let Some(dir) = &config.cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| RuntimeError::CacheDir { path: dir.clone(), source })?;
        }
        let stop_ticker = Arc::new(AtomicBool::new(false));
        start_ticker(engine.clone(), config.epoch_tick, Arc::clone(&stop_ticker))?;
        let cache = CompileCache::new(&engine, config.cache_dir.clone());
        Ok(Self { inner: Arc::new(Inner { engine, cache, config, plugins: Mutex::new(Vec::new()), stop_ticker }) })
    }

    /// The wasmtime engine, for embedders that need it directly.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// The configuration the runtime was created with.
    #[must_use]
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// Metrics of every plugin loaded and not yet dropped, for a `/metrics` endpoint (see
    /// [`render_prometheus`](crate::render_prometheus)).
    #[must_use]
    pub fn metrics(&self) -> Vec<MetricsSnapshot> {
        let mut plugins = self.inner.plugins.lock().unwrap_or_else(PoisonError::into_inner);
        plugins.retain(|p| p.strong_count() > 0);
        plugins.iter().filter_map(Weak::upgrade).map(|p| p.metrics()).collect()
    }

    pub(crate) fn register(&self, plugin: Weak<dyn Shared>) {
        self.inner.plugins.lock().unwrap_or_else(PoisonError::into_inner).push(plugin);
    }

    /// Epoch ticks that cover `deadline`: one more than the quotient, because the current tick
    /// may be about to end.
    pub(crate) fn deadline_ticks(&self, deadline: Duration) -> u64 {
        let tick = self.inner.config.epoch_tick.as_nanos().max(1);
        u64::try_from(deadline.as_nanos().div_ceil(tick)).unwrap_or(u64::MAX).saturating_add(1)
    }
}

fn engine_config(config: &RuntimeConfig) -> Config {
    let mut wasm = Config::new();
    // Deadlines by epoch interruption: a counter check per loop head and call, far cheaper than
    // fuel metering (shared/MACHINE-NOTES.md).
    wasm.epoch_interruption(true);
    wasm.parallel_compilation(true);
    // `CAPSTAN_WASM_PERFMAP=1` names the compiled guest functions in `/tmp/perf-<pid>.map`, so
    // `perf report` attributes JIT samples to plugin functions instead of raw addresses.
    if std::env::var_os("CAPSTAN_WASM_PERFMAP").is_some_and(|v| v == "1") {
        wasm.profiler(ProfilingStrategy::PerfMap);
    }
    if let Some(slots) = config.pooled_instances {
        let mut pool = PoolingAllocationConfig::default();
        // A component built from Rust holds a few core instances (the module and its shims),
        // one memory and one or two tables.
        pool.total_component_instances(slots)
            .total_core_instances(slots.saturating_mul(4))
            .total_memories(slots)
            .total_tables(slots.saturating_mul(2))
            .max_memory_size(config.max_memory_bytes);
        wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    wasm
}

fn start_ticker(engine: Engine, tick: Duration, stop: Arc<AtomicBool>) -> Result<(), RuntimeError> {
    std::thread::Builder::new()
        .name("wasm-epoch".to_owned())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(tick);
                engine.increment_epoch();
            }
        })
        .map(drop)
        .map_err(RuntimeError::Ticker)
}
