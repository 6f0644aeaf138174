//! One loaded plugin: its current version, the instance pool behind each version, calls under
//! limits, and atomic reload.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use wasmtime::component::Linker;
use wasmtime::{Store, Trap};

use crate::cache::{CacheUse, Digest};
use crate::error::{Cause, PluginError};
use crate::host::HostState;
use crate::metrics::{Metrics, MetricsSnapshot, Outcome, Residency};
use crate::runtime::Runtime;
use crate::world::World;

/// What one plugin may use per call and at once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// How long one call may run (including waiting for a free instance) before it fails with
    /// [`Cause::DeadlineExceeded`] (or [`Cause::Busy`]).
    pub deadline: Duration,
    /// The largest linear memory an instance may grow to.
    pub memory_bytes: usize,
    /// How many instances may serve calls concurrently.
    pub max_instances: usize,
    /// An instance whose linear memory has grown past this many bytes is dropped after its call
    /// instead of going back to the pool. WebAssembly memory never shrinks, so without this one
    /// large call (a controller listing thousands of objects) would hold its peak for good;
    /// `None` keeps every instance. Plugins that must remember something between calls keep it
    /// in the host, not in an instance.
    pub recycle_above_bytes: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Self { deadline: Duration::from_secs(1), memory_bytes: 64 << 20, max_instances: 8, recycle_above_bytes: None }
    }
}

/// How to load a plugin: its name, configuration and limits.
#[derive(Clone, Debug)]
pub struct PluginSpec {
    /// The plugin's name, used in errors, logs and metrics.
    pub name: String,
    /// The JSON document given to `lifecycle.configure` on every new instance.
    pub config: String,
    /// Its limits.
    pub limits: Limits,
}

impl PluginSpec {
    /// A plugin named `name` with configuration `{}` and default limits.
    #[must_use]
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into(), config: "{}".to_owned(), limits: Limits::default() }
    }

    /// Sets the configuration document.
    #[must_use]
    pub fn with_config(mut self, config: impl Into<String>) -> Self {
        self.config = config.into();
        self
    }

    /// Sets the limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }
}

/// One version of a plugin: what serves calls until the next successful reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VersionInfo {
    /// The component's digest.
    pub digest: Digest,
    /// Whether it was compiled or loaded precompiled.
    pub cache: CacheUse,
    /// When it started serving.
    pub loaded_at: SystemTime,
    /// How long compiling (or loading), linking and configuring its first instance took.
    pub load_time: Duration,
}

/// A plugin's state, as a Plugin object's status shows it.
#[derive(Clone, Debug)]
pub struct PluginStatus {
    /// The plugin's name.
    pub name: String,
    /// The world it implements.
    pub world: &'static str,
    /// The version serving calls.
    pub version: VersionInfo,
    /// Why the last reload was refused; cleared by a successful one.
    pub last_error: Option<String>,
}

/// A loaded plugin of world `W`. Cheap to clone; clones share the plugin.
///
/// [`call`](Self::call) runs a function of the world's bindings on a pooled instance under the
/// plugin's limits; typed wrappers such as
/// [`PluginHandle::<AdmissionWorld>::validate`](crate::admission) build on it.
pub struct PluginHandle<W: World> {
    inner: Arc<PluginInner<W>>,
}

impl<W: World> Clone for PluginHandle<W> {
    fn clone(&self) -> Self {
        Self { inner: Arc::clone(&self.inner) }
    }
}

struct PluginInner<W: World> {
    name: Arc<str>,
    config: String,
    limits: Limits,
    runtime: Runtime,
    linker: Linker<HostState>,
    current: ArcSwap<Version<W>>,
    metrics: Metrics,
    last_error: Mutex<Option<String>>,
    reloading: Mutex<()>,
}

/// What the runtime keeps of every plugin, whatever its world.
pub(crate) trait Shared: Send + Sync {
    fn metrics(&self) -> MetricsSnapshot;
}

impl<W: World> Shared for PluginInner<W> {
    fn metrics(&self) -> MetricsSnapshot {
        self.metrics.snapshot(&self.name, W::NAME)
    }
}

impl Runtime {
    /// Compiles (or loads from the cache), links and configures a plugin of world `W`.
    ///
    /// Compilation takes milliseconds to seconds: call this off the request path.
    pub fn load<W: World>(&self, spec: PluginSpec, bytes: &[u8]) -> Result<PluginHandle<W>, PluginError> {
        let PluginSpec { name, config, limits } = spec;
        let fail = |cause| PluginError::new(&name, cause);
        self.check_limits(&limits).map_err(fail)?;
        let mut linker = Linker::new(self.engine());
        W::add_to_linker(&mut linker).map_err(|e| fail(Cause::Link { world: W::NAME, message: format!("{e:#}") }))?;
        let metrics = Metrics::default();
        let partial = Partial {
            name: Arc::from(name.as_str()),
            config: &config,
            limits: &limits,
            runtime: self,
            linker: &linker,
            residency: metrics.residency(),
        };
        let version = partial.build_version::<W>(bytes).map_err(fail)?;
        let inner = Arc::new(PluginInner {
            name: partial.name,
            config,
            limits,
            runtime: self.clone(),
            linker,
            current: ArcSwap::from_pointee(version),
            metrics,
            last_error: Mutex::new(None),
            reloading: Mutex::new(()),
        });
        let weak = Arc::downgrade(&inner);
        self.register(weak);
        Ok(PluginHandle { inner })
    }

    fn check_limits(&self, limits: &Limits) -> Result<(), Cause> {
        let max_memory = self.config().max_memory_bytes;
        if limits.memory_bytes > max_memory {
            return Err(Cause::Limits(format!(
                "memory cap of {} bytes exceeds the runtime's maximum of {max_memory} bytes",
                limits.memory_bytes
            )));
        }
        if limits.max_instances == 0 {
            return Err(Cause::Limits("max_instances must be at least 1".to_owned()));
        }
        Ok(())
    }
}

/// What building a version needs, borrowed either from a load in progress or a loaded plugin.
struct Partial<'a> {
    name: Arc<str>,
    config: &'a str,
    limits: &'a Limits,
    runtime: &'a Runtime,
    linker: &'a Linker<HostState>,
    residency: &'a Arc<Residency>,
}

impl Partial<'_> {
    /// Compiles, links and configures a first instance, so a version that cannot serve is
    /// refused before it replaces anything.
    fn build_version<W: World>(&self, bytes: &[u8]) -> Result<Version<W>, Cause> {
        let started = Instant::now();
        let engine = self.runtime.engine();
        let digest = Digest::of(bytes);
        let (component, cache) = self.runtime.inner.cache.component(engine, bytes, &digest)?;
        let link_error = |e: wasmtime::Error| Cause::Link { world: W::NAME, message: format!("{e:#}") };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(link_error)?;
        let pre = W::pre(instance_pre).map_err(link_error)?;
        let first = self.new_slot::<W>(&pre)?;
        let info = VersionInfo { digest, cache, loaded_at: SystemTime::now(), load_time: started.elapsed() };
        Ok(Version { info, pre, pool: Pool::new(self.limits.max_instances, first) })
    }

    fn new_slot<W: World>(&self, pre: &W::Pre) -> Result<Slot<W>, Cause> {
        let mut store = Store::new(
            self.runtime.engine(),
            HostState::new(Arc::clone(&self.name), self.limits.memory_bytes, Arc::clone(self.residency)),
        );
        store.limiter(HostState::limiter);
        store.set_epoch_deadline(self.runtime.deadline_ticks(self.limits.deadline));
        let instance = W::instantiate(pre, &mut store).map_err(|e| match self.classify(&mut store, &e) {
            Cause::Trap(message) => Cause::Instantiate(message),
            other => other,
        })?;
        match W::configure(&instance, &mut store, self.config) {
            Ok(Ok(())) => Ok(Slot { store, instance }),
            Ok(Err(message)) => Err(Cause::Configure(message)),
            Err(e) => Err(self.classify(&mut store, &e)),
        }
    }

    /// Names the cause of a failed call. The memory flag wins: a refused growth usually
    /// surfaces as the guest's own abort.
    fn classify(&self, store: &mut Store<HostState>, error: &wasmtime::Error) -> Cause {
        if store.data_mut().take_memory_cap_hit() {
            return Cause::OutOfMemory { limit_bytes: self.limits.memory_bytes };
        }
        // The full error carries a wasm backtrace: useful when debugging, noise in a status.
        tracing::debug!(plugin = %self.name, error = format!("{error:?}"), "plugin call failed");
        let cause = match error.downcast_ref::<Trap>() {
            Some(Trap::Interrupt) => return Cause::DeadlineExceeded(self.limits.deadline),
            Some(trap) => trap.to_string(),
            None => format!("call failed: {}", error.root_cause()),
        };
        match store.data().last_words() {
            Some(words) => Cause::Trap(format!("trapped: {words} ({cause})")),
            None => Cause::Trap(cause),
        }
    }
}

impl<W: World> PluginHandle<W> {
    /// The plugin's name.
    #[must_use]
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Runs `call` on an instance of the current version, under the plugin's deadline and memory
    /// cap. A failed call discards its instance (a trapped instance cannot be re-entered); the
    /// plugin keeps serving with fresh ones.
    pub fn call<R>(
        &self,
        call: impl FnOnce(&W::Instance, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, PluginError> {
        let started = Instant::now();
        let version = self.inner.current.load_full();
        let result = self.call_on(&version, started, self.inner.limits.deadline, call);
        self.record(started, &result);
        result.map_err(|cause| PluginError::new(&self.inner.name, cause))
    }

    /// Tries `call` where blocking is costly (on an async runtime's worker thread): like
    /// [`call`](Self::call), but within `budget` instead of the plugin's deadline, and with a
    /// panic caught. `Ok(None)` means the attempt did not count and `call` should run again
    /// where it may block and take its whole deadline: the call outlasted `budget`, it reached an
    /// import that ends attempts (the admission world's `cluster`, which blocks and may write),
    /// or it panicked, as WASI's blocking imports (stdio, poll) do on a worker thread. The
    /// instance of such an attempt is discarded, and nothing is recorded in the metrics.
    pub fn try_call_within<R>(
        &self,
        budget: Duration,
        call: impl FnOnce(&W::Instance, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<Option<R>, PluginError> {
        let started = Instant::now();
        let version = self.inner.current.load_full();
        let deadline = budget.min(self.inner.limits.deadline);
        quiet_panics_of_attempts();
        let outer = ATTEMPTING.with(|attempting| attempting.replace(true));
        let attempt =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.call_on(&version, started, deadline, call)));
        ATTEMPTING.with(|attempting| attempting.set(outer));
        let result = match attempt {
            Err(_) => return Ok(None),
            Ok(Err(Cause::DeadlineExceeded(_) | Cause::Busy(_))) if deadline < self.inner.limits.deadline => {
                return Ok(None);
            }
            Ok(result) => result,
        };
        self.record(started, &result);
        result.map(Some).map_err(|cause| PluginError::new(&self.inner.name, cause))
    }

    fn record<R>(&self, started: Instant, result: &Result<R, Cause>) {
        let outcome = match result {
            Ok(_) => Outcome::Ok,
            Err(Cause::DeadlineExceeded(_)) => Outcome::Timeout,
            Err(Cause::OutOfMemory { .. }) => Outcome::OutOfMemory,
            Err(Cause::Trap(_)) => Outcome::Trap,
            Err(_) => Outcome::OtherError,
        };
        self.inner.metrics.record_call(started.elapsed(), outcome);
    }

    fn call_on<R>(
        &self,
        version: &Version<W>,
        started: Instant,
        deadline: Duration,
        call: impl FnOnce(&W::Instance, &mut Store<HostState>) -> wasmtime::Result<R>,
    ) -> Result<R, Cause> {
        let inner = &*self.inner;
        let partial = self.partial();
        let mut lease = version.pool.acquire(deadline, started, || partial.new_slot::<W>(&version.pre))?;
        let slot = lease.slot();
        let remaining = deadline.saturating_sub(started.elapsed());
        slot.store.set_epoch_deadline(inner.runtime.deadline_ticks(remaining));
        slot.store.data_mut().take_memory_cap_hit();
        slot.store.data().clear_stderr();
        match call(&slot.instance, &mut slot.store) {
            Ok(value) => {
                let grown_too_large =
                    inner.limits.recycle_above_bytes.is_some_and(|most| slot.store.data().memory_size() > most);
                if grown_too_large {
                    // Dropping the lease drops the instance and gives its memory back.
                    drop(lease);
                } else {
                    lease.release();
                }
                Ok(value)
            }
            // Dropping the lease discards the instance.
            Err(e) => Err(partial.classify(&mut slot.store, &e)),
        }
    }

    fn partial(&self) -> Partial<'_> {
        let inner = &*self.inner;
        Partial {
            name: Arc::clone(&inner.name),
            config: &inner.config,
            limits: &inner.limits,
            runtime: &inner.runtime,
            linker: &inner.linker,
            residency: inner.metrics.residency(),
        }
    }

    /// Replaces the plugin's component with `bytes`: compiles, links and configures the new
    /// version off the call path, then swaps it in atomically. Calls in flight finish on the old
    /// version; later calls use the new one. If the new version fails, the old one keeps serving,
    /// and the error is returned and kept in [`status`](Self::status).
    pub fn reload(&self, bytes: &[u8]) -> Result<VersionInfo, PluginError> {
        let _one_at_a_time = self.inner.reloading.lock().unwrap_or_else(PoisonError::into_inner);
        match self.partial().build_version::<W>(bytes) {
            Ok(version) => {
                let info = version.info.clone();
                self.inner.current.store(Arc::new(version));
                self.inner.metrics.record_reload(true);
                *self.last_error() = None;
                tracing::info!(plugin = %self.inner.name, digest = %info.digest, "plugin reloaded");
                Ok(info)
            }
            Err(cause) => {
                let error = PluginError::new(&self.inner.name, cause);
                self.inner.metrics.record_reload(false);
                *self.last_error() = Some(error.to_string());
                tracing::warn!(%error, "plugin reload refused; the previous version keeps serving");
                Err(error)
            }
        }
    }

    /// The plugin's state: the version serving and the last reload error.
    #[must_use]
    pub fn status(&self) -> PluginStatus {
        PluginStatus {
            name: self.inner.name.to_string(),
            world: W::NAME,
            version: self.inner.current.load().info.clone(),
            last_error: self.last_error().clone(),
        }
    }

    /// The plugin's call metrics.
    #[must_use]
    pub fn metrics(&self) -> MetricsSnapshot {
        self.inner.metrics()
    }

    fn last_error(&self) -> MutexGuard<'_, Option<String>> {
        self.inner.last_error.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

thread_local! {
    /// Whether this thread is inside [`PluginHandle::try_call_within`].
    static ATTEMPTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Ends a [`PluginHandle::try_call_within`] attempt in progress on this thread, from a host
/// function about to do what the attempt must not (block, or cause a side effect that the call
/// made again would repeat): the call is made again where it may. Outside an attempt it returns.
/// Host functions that answer at once (from memory) need not call it, and stay in the attempt.
pub fn leave_attempt() {
    if ATTEMPTING.with(std::cell::Cell::get) {
        // Unwinds through the guest to the attempt's `catch_unwind`, without a panic report.
        std::panic::resume_unwind(Box::new("a plugin call attempt needs a blocking thread"));
    }
}

/// Keeps the panics of [`PluginHandle::try_call_within`]'s attempts, which it catches and whose
/// calls are made again, out of the process's panic output; every other panic is reported as
/// before.
fn quiet_panics_of_attempts() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if ATTEMPTING.with(std::cell::Cell::get) {
                tracing::debug!(panic = %info, "a plugin call attempt panicked; it is made again");
            } else {
                report(info);
            }
        }));
    });
}

struct Version<W: World> {
    info: VersionInfo,
    pre: W::Pre,
    pool: Pool<W>,
}

struct Slot<W: World> {
    store: Store<HostState>,
    instance: W::Instance,
}

/// A bounded set of instances of one version: idle ones are reused, new ones are created up to
/// the limit, and callers beyond it wait for one to come back.
struct Pool<W: World> {
    state: Mutex<PoolState<W>>,
    returned: Condvar,
    max: usize,
}

struct PoolState<W: World> {
    idle: Vec<Slot<W>>,
    live: usize,
    /// Callers waiting for an instance. A `Condvar` notification is a system call even when
    /// nobody waits, which on every call's release cost more than the rest of the pool.
    waiting: usize,
}

impl<W: World> PoolState<W> {
    /// Wakes a caller waiting for an instance, if there is one; `returned` is the pool's condvar.
    fn wake_one(&self, returned: &Condvar) {
        if self.waiting > 0 {
            returned.notify_one();
        }
    }
}

impl<W: World> Pool<W> {
    fn new(max: usize, first: Slot<W>) -> Self {
        Self { state: Mutex::new(PoolState { idle: vec![first], live: 1, waiting: 0 }), returned: Condvar::new(), max }
    }

    fn lock(&self) -> MutexGuard<'_, PoolState<W>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn acquire(
        &self,
        deadline: Duration,
        started: Instant,
        create: impl FnOnce() -> Result<Slot<W>, Cause>,
    ) -> Result<Lease<'_, W>, Cause> {
        let give_up = started + deadline;
        let mut state = self.lock();
        loop {
            if let Some(slot) = state.idle.pop() {
                return Ok(Lease { pool: self, slot: Some(slot) });
            }
            if state.live < self.max {
                state.live += 1;
                drop(state);
                return match create() {
                    Ok(slot) => Ok(Lease { pool: self, slot: Some(slot) }),
                    Err(cause) => {
                        self.forget_one();
                        Err(cause)
                    }
                };
            }
            let now = Instant::now();
            if now >= give_up {
                return Err(Cause::Busy(deadline));
            }
            state.waiting += 1;
            state = self.returned.wait_timeout(state, give_up - now).unwrap_or_else(PoisonError::into_inner).0;
            state.waiting -= 1;
        }
    }

    fn forget_one(&self) {
        let mut state = self.lock();
        state.live -= 1;
        state.wake_one(&self.returned);
    }
}

/// An instance taken from a pool: [`Lease::release`] returns it; dropping the lease otherwise
/// discards the instance (after a failed call, or if the caller panicked).
struct Lease<'a, W: World> {
    pool: &'a Pool<W>,
    slot: Option<Slot<W>>,
}

impl<W: World> Lease<'_, W> {
    fn slot(&mut self) -> &mut Slot<W> {
        self.slot.as_mut().unwrap_or_else(|| unreachable!("a lease holds its slot until released or dropped"))
    }

    fn release(mut self) {
        if let Some(slot) = self.slot.take() {
            let mut state = self.pool.lock();
            state.idle.push(slot);
            state.wake_one(&self.pool.returned);
        }
    }
}

impl<W: World> Drop for Lease<'_, W> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            drop(slot);
            self.pool.forget_one();
        }
    }
}
