//! Capstan's plugin runtime: where scheduler plugins, admission policies and controllers — all
//! WebAssembly components of the `capstan:plugin` WIT package (`wit/`) — are loaded and called.
//!
//! It owns one wasmtime engine per process ([`Runtime`]), compiling components off the request
//! path with a disk cache of precompiled artifacts keyed by SHA-256, a bounded pool of instances
//! per plugin, a deadline (epoch interruption) and memory cap on every call, per-plugin metrics
//! ([`MetricsSnapshot`], [`render_prometheus`]), and atomic hot reload
//! ([`PluginHandle::reload`]). It knows worlds, never plugins: nothing here names a plugin or
//! decides what a failure means — callers apply their own failure policy to a [`PluginError`].
//!
//! Calls are synchronous and take microseconds; a call may block up to its deadline (a looping
//! plugin) or while every instance is busy, so async callers with long deadlines should run them
//! on a blocking thread (`spawn_blocking`), never on a current-thread runtime.
//!
//! Start with [`Runtime::load`], which returns a [`PluginHandle`] for one [`World`];
//! [`admission`] is the typed world to copy when adding another.

pub mod admission;
mod cache;
pub mod controller;
mod error;
mod host;
mod metrics;
mod plugin;
mod runtime;
pub mod scheduler;
mod world;

pub use cache::{CacheUse, Digest};
pub use error::{Cause, PluginError, RuntimeError};
pub use host::HostState;
pub use metrics::{Histogram, LATENCY_BUCKETS_SECONDS, MetricsSnapshot, escape_label, render_prometheus};
pub use plugin::{Limits, PluginHandle, PluginSpec, PluginStatus, VersionInfo, leave_attempt};
pub use runtime::{Runtime, RuntimeConfig};
pub use world::World;
