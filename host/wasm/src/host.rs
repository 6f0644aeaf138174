//! What the host gives each instance: its store data, an empty WASI sandbox, the memory cap,
//! and the `log` import.

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

/// Longest log message kept from a plugin; the rest is cut so a plugin cannot flood the log.
const MAX_LOG_MESSAGE: usize = 4096;

/// The data of one instance's store.
pub struct HostState {
    plugin: std::sync::Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    /// What the current call's imports act for (e.g. the admission world's cluster access); set
    /// by the world's typed wrapper for one call and cleared after it.
    call_context: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

impl HostState {
    pub(crate) fn new(plugin: std::sync::Arc<str>, memory_bytes: usize) -> Self {
        // No preopened directories, environment, arguments, network or inherited stdio: the
        // guest's standard library links against WASI, but a plugin reaches the world only
        // through the world's imports.
        let wasi = WasiCtx::builder().allow_ip_name_lookup(false).build();
        Self { plugin, wasi, table: ResourceTable::new(), memory: MemoryCap::new(memory_bytes), call_context: None }
    }

    /// The plugin this instance belongs to.
    #[must_use]
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// Sets (or with `None` clears) what the current call's imports act for.
    pub fn set_call_context(&mut self, context: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>) {
        self.call_context = context;
    }

    /// The current call's context, if it is a `T`.
    #[must_use]
    pub fn call_context<T: Send + Sync + 'static>(&self) -> Option<std::sync::Arc<T>> {
        self.call_context.clone().and_then(|context| context.downcast::<T>().ok())
    }

    pub(crate) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.memory
    }

    /// Clears the memory-cap flag before a call; true afterwards means the call hit the cap.
    pub(crate) fn take_memory_cap_hit(&mut self) -> bool {
        std::mem::take(&mut self.memory.hit)
    }

    pub(crate) fn log(&self, level: tracing::Level, message: &str) {
        let message = truncate(message, MAX_LOG_MESSAGE);
        let plugin = &*self.plugin;
        match level {
            tracing::Level::TRACE => tracing::trace!(plugin, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, "{message}"),
            tracing::Level::ERROR => tracing::error!(plugin, "{message}"),
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

fn truncate(message: &str, max: usize) -> &str {
    if message.len() <= max {
        return message;
    }
    let mut end = max;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    &message[..end]
}

/// Caps linear memory, remembering whether a growth was refused so a resulting trap can be
/// reported as "out of memory" rather than as whatever the guest did on allocation failure.
struct MemoryCap {
    limits: StoreLimits,
    bytes: usize,
    hit: bool,
}

impl MemoryCap {
    fn new(bytes: usize) -> Self {
        Self { limits: StoreLimitsBuilder::new().memory_size(bytes).build(), bytes, hit: false }
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if !allowed && desired > self.bytes {
            self.hit = true;
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

#[cfg(test)]
mod tests {
    use super::truncate;

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("short", 100), "short");
    }
}
