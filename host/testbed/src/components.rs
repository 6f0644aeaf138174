//! The WebAssembly components built from `plugins/`, built first when missing.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{TestbedError, repo_root};

/// The path of the component built from the plugin crate `name` (`require-label`), building the
/// plugins workspace (in its own target directory) when it is not there yet.
pub fn component_path(name: &str) -> Result<PathBuf, TestbedError> {
    let file = format!("{}.wasm", name.replace('-', "_"));
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        let path = PathBuf::from(target).join("wasm32-wasip2/release").join(&file);
        if path.is_file() {
            return Ok(path);
        }
    }
    let plugins = repo_root().join("plugins");
    let target = plugins.join("target");
    let path = target.join("wasm32-wasip2/release").join(&file);
    if path.is_file() {
        return Ok(path);
    }
    build(&plugins, &target)?;
    if path.is_file() {
        Ok(path)
    } else {
        Err(build_error(format!("the plugins build did not produce {}", path.display())))
    }
}

fn build(plugins: &Path, target: &Path) -> Result<(), TestbedError> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target)
        .status()
        .map_err(|e| build_error(format!("cannot run cargo: {e}")))?;
    if status.success() {
        Ok(())
    } else {
        Err(build_error(
            "run `cargo build --manifest-path plugins/Cargo.toml --target wasm32-wasip2 --release` \
             (after `rustup target add wasm32-wasip2`) to see why"
                .into(),
        ))
    }
}

fn build_error(reason: String) -> TestbedError {
    TestbedError::Start { what: "the plugin components build".into(), reason }
}
