//! Compiling components, with a disk cache of precompiled artifacts keyed by content digest.
//!
//! Compiling a Rust component takes tens of milliseconds and a Python or JavaScript one seconds;
//! loading its precompiled artifact (memory-mapped) takes about a millisecond. So every load
//! first looks for `<sha256>-<engine>.cwasm` in the cache directory, where `<engine>` fingerprints
//! the wasmtime version and settings that shaped the machine code.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use crate::error::Cause;

/// The SHA-256 of a component's bytes, in lower-case hex: a plugin version's identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Digest(String);

impl Digest {
    /// The digest of `bytes`.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Self {
        let hash = Sha256::digest(bytes);
        Self(hash.iter().fold(String::with_capacity(64), |mut hex, byte| {
            use std::fmt::Write as _;
            let _ = write!(hex, "{byte:02x}");
            hex
        }))
    }

    /// The hex text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", self.0)
    }
}

/// Where a compiled component came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheUse {
    /// Loaded from this precompiled artifact; nothing was compiled.
    Hit(PathBuf),
    /// Compiled now and written to this artifact for next time.
    Stored(PathBuf),
    /// Compiled now; no cache directory is configured, or writing the artifact failed (logged).
    Compiled,
}

/// Compiles components through the on-disk cache.
pub(crate) struct CompileCache {
    dir: Option<PathBuf>,
    engine_fingerprint: u64,
}

impl CompileCache {
    pub(crate) fn new(engine: &Engine, dir: Option<PathBuf>) -> Self {
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Self { dir, engine_fingerprint: hasher.finish() }
    }

    /// The artifact path for `digest`, when caching is on.
    pub(crate) fn artifact_path(&self, digest: &Digest) -> Option<PathBuf> {
        let name = format!("{}-{:016x}.cwasm", digest.as_str(), self.engine_fingerprint);
        self.dir.as_ref().map(|dir| dir.join(name))
    }

    /// Returns the compiled component for `bytes` (whose digest is `digest`), from the cache
    /// when it holds it.
    pub(crate) fn component(
        &self,
        engine: &Engine,
        bytes: &[u8],
        digest: &Digest,
    ) -> Result<(Component, CacheUse), Cause> {
        let Some(path) = self.artifact_path(digest) else {
            return Ok((compile(engine, bytes)?, CacheUse::Compiled));
        };
        if path.is_file() {
            match deserialize(engine, &path) {
                Ok(component) => return Ok((component, CacheUse::Hit(path))),
                // A stale or damaged artifact is replaced below, never fatal.
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "ignoring unusable compiled artifact"),
            }
        }
        let component = compile(engine, bytes)?;
        match store_artifact(&component, &path) {
            Ok(()) => Ok((component, CacheUse::Stored(path))),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot cache compiled component");
                Ok((component, CacheUse::Compiled))
            }
        }
    }
}

fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, Cause> {
    Component::new(engine, bytes).map_err(|e| Cause::Compile(format!("{e:#}")))
}

/// Loads a precompiled artifact.
#[allow(unsafe_code, reason = "see the SAFETY comment: the only unsafe operation in the crate")]
fn deserialize(engine: &Engine, path: &Path) -> wasmtime::Result<Component> {
    // SAFETY: wasmtime runs the machine code in an artifact without verifying it, so the file
    // must have been produced by `Component::serialize` of a compatible engine and not altered.
    // The cache directory is private to this runtime, artifacts are written only by
    // `store_artifact` (complete files renamed into place, never partial), their names carry
    // the engine fingerprint, and wasmtime still checks the header's version and settings.
    unsafe { Component::deserialize_file(engine, path) }
}

/// Writes the artifact beside its final name and renames it into place, so a concurrent loader
/// never maps a half-written file.
fn store_artifact(component: &Component, path: &Path) -> std::io::Result<()> {
    let bytes = component.serialize().map_err(|e| std::io::Error::other(format!("{e:#}")))?;
    let dir = path.parent().ok_or_else(|| std::io::Error::other("artifact path has no parent directory"))?;
    let mut temp = tempfile_in(dir)?;
    temp.1.write_all(&bytes)?;
    temp.1.sync_all()?;
    drop(temp.1);
    std::fs::rename(&temp.0, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp.0);
    })
}

fn tempfile_in(dir: &Path) -> std::io::Result<(PathBuf, std::fs::File)> {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(".tmp-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
    let path = dir.join(name);
    let file = std::fs::OpenOptions::new().write(true).create_new(true).open(&path)?;
    Ok((path, file))
}
