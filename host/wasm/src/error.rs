//! What can go wrong with a plugin, always naming the plugin.

use std::path::PathBuf;
use std::time::Duration;

/// A plugin failed to load, to link, or to serve one call.
///
/// Display reads `plugin NAME: CAUSE`, ready for a log line or a Plugin object's status.
#[derive(Debug, thiserror::Error)]
#[error("plugin {plugin}: {cause}")]
pub struct PluginError {
    /// The plugin's name.
    pub plugin: String,
    /// What went wrong.
    pub cause: Cause,
}

impl PluginError {
    pub(crate) fn new(plugin: &str, cause: Cause) -> Self {
        Self { plugin: plugin.to_owned(), cause }
    }
}

/// Why a plugin failed.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The bytes are not a WebAssembly component this engine can compile.
    #[error("does not compile as a WebAssembly component: {0}")]
    Compile(String),
    /// The component does not fit the world it was loaded as: a missing export or an import the
    /// host does not provide.
    #[error("does not implement world `{world}`: {message}")]
    Link {
        /// The WIT world the plugin was loaded as.
        world: &'static str,
        /// What did not match.
        message: String,
    },
    /// The plugin's `configure` rejected its configuration.
    #[error("rejected its configuration: {0}")]
    Configure(String),
    /// A call ran past its deadline and was interrupted.
    #[error("call exceeded its deadline of {0:?}")]
    DeadlineExceeded(Duration),
    /// A call tried to grow the plugin's memory past its cap.
    #[error("out of memory: a call tried to grow memory past the cap of {limit_bytes} bytes")]
    OutOfMemory {
        /// The plugin's memory cap.
        limit_bytes: usize,
    },
    /// The plugin trapped (a panic, an unreachable instruction, an out-of-bounds access, …);
    /// the message says which, led by what the guest printed to stderr before it trapped, e.g.
    /// "trapped: panicked at src/lib.rs:12:5: boom (wasm trap: wasm `unreachable` instruction
    /// executed)".
    #[error("{0}")]
    Trap(String),
    /// A new instance could not be created.
    #[error("could not create an instance: {0}")]
    Instantiate(String),
    /// Every instance stayed busy until the call's deadline.
    #[error("no instance became free within the deadline of {0:?}; raise max_instances")]
    Busy(Duration),
    /// The plugin's limits are not ones this runtime can honour.
    #[error("invalid limits: {0}")]
    Limits(String),
}

/// The runtime itself could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the engine configuration.
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    /// The compile cache directory cannot be created.
    #[error("cannot create the compile cache directory {path}: {source}")]
    CacheDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The epoch ticker thread cannot be started.
    #[error("cannot start the epoch ticker thread: {0}")]
    Ticker(std::io::Error),
}
