//! Logging into the host's log. Each message is tagged with the plugin's name by the host.
//!
//! ```no_run
//! capstan_plugin_sdk::log::info("configured");
//! if capstan_plugin_sdk::log::enabled(capstan_plugin_sdk::log::Level::Debug) {
//!     capstan_plugin_sdk::log::debug(&format!("expensive {}", 42));
//! }
//! ```

use crate::__private::admission_bindings::capstan::plugin::log as host;

/// How important a message is.
pub use host::Level;

/// Whether a message at `level` would be recorded; check it before formatting expensive ones.
#[must_use]
pub fn enabled(level: Level) -> bool {
    host::enabled(level)
}

/// Records `message` at `level`.
pub fn log(level: Level, message: &str) {
    host::log(level, message);
}

/// Records a trace message.
pub fn trace(message: &str) {
    log(Level::Trace, message);
}

/// Records a debug message.
pub fn debug(message: &str) {
    log(Level::Debug, message);
}

/// Records an informational message.
pub fn info(message: &str) {
    log(Level::Info, message);
}

/// Records a warning.
pub fn warn(message: &str) {
    log(Level::Warn, message);
}

/// Records an error.
pub fn error(message: &str) {
    log(Level::Error, message);
}
