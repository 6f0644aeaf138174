//! What the host gives each instance: its store data, an empty WASI sandbox whose stderr is kept
//! (the tail only) so a trap can say what the guest printed, the memory cap, and the `log`
//! import.

use std::sync::{Arc, Mutex, PoisonError};

use wasmtime::{ResourceLimiter, StoreLimits, StoreLimitsBuilder};

use crate::metrics::Residency;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{ResourceTable, WasiCtx, WasiCtxView, WasiView};

/// Longest log message kept from a plugin; the rest is cut so a plugin cannot flood the log.
const MAX_LOG_MESSAGE: usize = 4096;

/// The data of one instance's store.
pub struct HostState {
    plugin: std::sync::Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    memory: MemoryCap,
    stderr: StderrTail,
    /// What the current call's imports act for (e.g. the admission world's cluster access); set
    /// by the world's typed wrapper for one call and cleared after it.
    call_context: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
    /// What the scheduler world last sent this instance of the nodes, so a call needs no round
    /// trip to ask it.
    pub(crate) scheduler_nodes: crate::scheduler::InstanceNodes,
    /// The token of the pod the scheduler world last sent this instance (`set-pod`); 0: none.
    pub(crate) scheduler_pod: u64,
}

impl HostState {
    pub(crate) fn new(plugin: std::sync::Arc<str>, memory_bytes: usize, residency: Arc<Residency>) -> Self {
        // No preopened directories, environment, arguments, network or inherited stdio: the
        // guest's standard library links against WASI, but a plugin reaches the world only
        // through the world's imports. Stderr is kept (its tail) for the error of a call that
        // traps: a Rust panic, a Python traceback or a JavaScript exception is printed there.
        let stderr = StderrTail::default();
        let wasi = WasiCtx::builder().allow_ip_name_lookup(false).stderr(stderr.clone()).build();
        Self {
            plugin,
            wasi,
            table: ResourceTable::new(),
            memory: MemoryCap::new(memory_bytes, residency),
            stderr,
            call_context: None,
            scheduler_nodes: crate::scheduler::InstanceNodes::default(),
            scheduler_pod: 0,
        }
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

    /// The linear memory this instance holds, in bytes.
    pub(crate) fn memory_size(&self) -> usize {
        self.memory.size
    }

    /// Clears the memory-cap flag before a call; true afterwards means the call hit the cap.
    pub(crate) fn take_memory_cap_hit(&mut self) -> bool {
        std::mem::take(&mut self.memory.hit)
    }

    /// Forgets what the guest printed to stderr so far; called before each call so a trap
    /// reports only what its own call printed.
    pub(crate) fn clear_stderr(&self) {
        self.stderr.clear();
    }

    /// What the guest said before it trapped, from its stderr since the last
    /// [`clear_stderr`](Self::clear_stderr): a Rust panic as `panicked at FILE:LINE:COL: MESSAGE`,
    /// anything else (a Python traceback, a JavaScript error) as its last lines on one line.
    pub(crate) fn last_words(&self) -> Option<String> {
        last_words(&self.stderr.text())
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
/// reported as "out of memory" rather than as whatever the guest did on allocation failure, and
/// accounts what the instance holds in its plugin's [`Residency`].
struct MemoryCap {
    limits: StoreLimits,
    bytes: usize,
    hit: bool,
    /// The linear memory granted so far (memories are created through `memory_growing` too).
    size: usize,
    residency: Arc<Residency>,
}

impl MemoryCap {
    fn new(bytes: usize, residency: Arc<Residency>) -> Self {
        residency.instance_created();
        Self { limits: StoreLimitsBuilder::new().memory_size(bytes).build(), bytes, hit: false, size: 0, residency }
    }
}

impl Drop for MemoryCap {
    fn drop(&mut self) {
        self.residency.instance_dropped(self.size);
    }
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            let grown = desired.saturating_sub(current);
            self.size += grown;
            self.residency.grew(grown);
        } else if desired > self.bytes {
            self.hit = true;
        }
        Ok(allowed)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }
}

/// Longest text [`last_words`] returns from output that is not a Rust panic.
const MAX_LAST_WORDS: usize = 1024;

fn last_words(stderr: &str) -> Option<String> {
    // Rust's panic hook prints `thread '…' panicked at FILE:LINE:COL:\nMESSAGE\nnote: run with …`.
    if let Some(start) = stderr.rfind("panicked at ") {
        let lines: Vec<&str> = stderr[start..]
            .lines()
            .take_while(|line| !line.starts_with("note: ") && !line.starts_with("stack backtrace:"))
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect();
        return Some(lines.join(" "));
    }
    let text = stderr.lines().map(str::trim).filter(|line| !line.is_empty()).collect::<Vec<_>>().join(" | ");
    if text.is_empty() {
        return None;
    }
    let mut start = text.len().saturating_sub(MAX_LAST_WORDS);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    Some(text[start..].to_owned())
}

/// How much of a guest's stderr is kept: enough for a panic message or the end of a traceback.
pub(crate) const STDERR_TAIL: usize = 4096;

/// A guest's stderr: the last [`STDERR_TAIL`] bytes written, shared between the WASI context's
/// streams and the host. Writes never fail or block, so a chatty guest is never slowed or
/// broken by it.
#[derive(Clone, Default)]
struct StderrTail(Arc<Mutex<Vec<u8>>>);

impl StderrTail {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn append(&self, bytes: &[u8]) {
        let mut tail = self.lock();
        let bytes = &bytes[bytes.len().saturating_sub(STDERR_TAIL)..];
        let overflow = (tail.len() + bytes.len()).saturating_sub(STDERR_TAIL);
        tail.drain(..overflow);
        tail.extend_from_slice(bytes);
    }

    fn clear(&self) {
        let mut tail = self.lock();
        if !tail.is_empty() {
            tail.clear();
        }
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.lock()).into_owned()
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASI p3 guests write through this; Capstan links p2 only.
        Box::new(tokio::io::sink())
    }
}

impl OutputStream for StderrTail {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(STDERR_TAIL)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for StderrTail {
    async fn ready(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::{STDERR_TAIL, StderrTail, last_words, truncate};

    #[test]
    fn last_words_find_a_rust_panic_or_keep_the_last_lines() {
        let panic = "\nthread '<unnamed>' panicked at src/lib.rs:12:5:\nboom\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace\n";
        assert_eq!(last_words(panic).as_deref(), Some("panicked at src/lib.rs:12:5: boom"));
        let traceback = "Traceback (most recent call last):\n  File \"app.py\", line 3, in filter\nValueError: boom\n";
        assert_eq!(
            last_words(traceback).as_deref(),
            Some(r#"Traceback (most recent call last): | File "app.py", line 3, in filter | ValueError: boom"#)
        );
        assert_eq!(last_words(" \n\n"), None);
        let long = "é".repeat(2000);
        assert!(last_words(&long).is_some_and(|words| words.len() <= 1024 && words.ends_with('é')));
    }

    #[test]
    fn stderr_keeps_only_its_tail() {
        let tail = StderrTail::default();
        tail.append(b"first ");
        tail.append(b"second");
        assert_eq!(tail.text(), "first second");
        tail.append(&vec![b'x'; STDERR_TAIL - 3]);
        assert_eq!(tail.text(), format!("ond{}", "x".repeat(STDERR_TAIL - 3)));
        tail.append(&vec![b'y'; STDERR_TAIL * 2]);
        assert_eq!(tail.text(), "y".repeat(STDERR_TAIL));
        tail.clear();
        assert_eq!(tail.text(), "");
    }

    #[test]
    fn truncate_keeps_whole_characters() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("short", 100), "short");
    }
}
