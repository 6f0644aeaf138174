//! The WebAssembly components built from `plugins/` (by `capstan-components` with the host).

use std::path::PathBuf;

use crate::TestbedError;

/// The path of the component built from the plugin crate `name` (`require-label`,
/// `fixture-trap`).
pub fn component_path(name: &str) -> Result<PathBuf, TestbedError> {
    capstan_components::path(name).ok_or_else(|| TestbedError::Start {
        what: "the plugin components build".into(),
        reason: format!(
            "no component for crate {name} in {}; is it a crate under plugins/?",
            capstan_components::build_dir().display()
        ),
    })
}
