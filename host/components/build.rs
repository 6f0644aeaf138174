//! Builds the `plugins/` workspace for `wasm32-wasip2` and generates the table of shipped
//! components that `src/lib.rs` embeds.
//!
//! The plugins are built by a nested cargo into a target directory of their own
//! (`<target>/wasm-plugins`), never the one the host build holds locked.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The `plugins/` directories whose crates Capstan ships (fixtures are built but not embedded).
const SHIPPED_DIRS: &[&str] = &["admission", "scheduler", "controllers"];

fn main() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let repo = manifest_dir.join("../..");
    let plugins = repo.join("plugins");
    for watched in ["plugins/Cargo.toml", "plugins/Cargo.lock", "sdk/rust", "wit"]
        .into_iter()
        .map(|p| repo.join(p))
        .chain(SHIPPED_DIRS.iter().chain(&["fixtures"]).map(|d| plugins.join(d)))
        .filter(|p| p.exists())
    {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    println!("cargo:rerun-if-env-changed=CARGO_TARGET_DIR");
    let target = plugins_target_dir(&repo);
    build(&plugins, &target)?;
    let release = target.join("wasm32-wasip2/release");
    let mut table =
        String::from("/// Shipped components: crate name and bytes.\npub static SHIPPED: &[(&str, &[u8])] = &[\n");
    for name in shipped_crates(&plugins)? {
        let file = release.join(format!("{}.wasm", name.replace('-', "_")));
        if !file.is_file() {
            return Err(format!("the plugins build did not produce {}", file.display()));
        }
        writeln!(table, "    ({name:?}, include_bytes!({:?})),", file.display().to_string())
            .map_err(|e| e.to_string())?;
    }
    table.push_str("];\n");
    writeln!(
        table,
        "/// Where the plugins build puts its components.\npub const BUILD_DIR: &str = {:?};",
        release.display().to_string()
    )
    .map_err(|e| e.to_string())?;
    let out = PathBuf::from(env("OUT_DIR")?).join("components.rs");
    std::fs::write(&out, table).map_err(|e| format!("cannot write {}: {e}", out.display()))
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("cargo did not set {name}"))
}

/// `<target>/wasm-plugins`, where `<target>` is the host build's target directory.
fn plugins_target_dir(repo: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| repo.join("target"), PathBuf::from).join("wasm-plugins")
}

fn build(plugins: &Path, target: &Path) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(plugins.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(target);
    // Flags meant for the host build must not leak into the WebAssembly one.
    for leaked in
        ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_BUILD_TARGET", "CARGO_TARGET_DIR", "RUSTC_WORKSPACE_WRAPPER"]
    {
        command.env_remove(leaked);
    }
    let output = command.output().map_err(|e| format!("cannot run cargo for plugins/: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "building plugins/ for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`):\n{}",
        String::from_utf8_lossy(&output.stderr)
    ))
}

/// The package names of the crates under the shipped directories.
fn shipped_crates(plugins: &Path) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    for dir in SHIPPED_DIRS.iter().map(|d| plugins.join(d)).filter(|d| d.is_dir()) {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            let manifest = entry.path().join("Cargo.toml");
            let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
            let name = text
                .lines()
                .find_map(|line| line.trim().strip_prefix("name").map(str::trim).and_then(|r| r.strip_prefix('=')))
                .map(|value| value.trim().trim_matches('"').to_owned())
                .ok_or_else(|| format!("{} has no package name", manifest.display()))?;
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}
