//! Capstan's scheduler: Kubernetes' scheduling framework, with every plugin — the default
//! profile included — a WebAssembly component of the `scheduler-plugin` world.
//!
//! It owns the scheduling queue ([`queue`]: active by QueueSort, backoff, unschedulable), the
//! cache of nodes and pods with assumed pods ([`cache`], which feeds the plugins' node state as
//! changes), the framework runtime ([`framework`]: profiles, filtering, scoring, the
//! "0/N nodes are available" diagnosis, preemption's dry run), the informer caches plugins read
//! through the `scheduler-host` import ([`cluster`]) and the loop that ties them to the API server
//! ([`Scheduler`]: informers, binding through `pods/binding`, events, Plugin objects). It never
//! names a plugin: profiles come from [`config`].
//!
//! A profile plugin is a [`Backend`]: a component, or — only in the `native-plugins` build the
//! benchmark (`benches/scheduler.rs`) uses to print the WASM-versus-native ratio — the same
//! plugin crate linked natively (module `native`).
//!
//! Start with [`Scheduler::start`].

pub mod backend;
pub mod cache;
pub mod cluster;
pub mod config;
pub mod framework;
#[cfg(feature = "native-plugins")]
pub mod native;
pub mod pod;
pub mod queue;
mod run;

pub use backend::Backend;
pub use config::{PluginRef, ProfileConfig, SchedulerConfig};
pub use framework::{CycleError, Decision, FilterCost, Preemption, Profile};
pub use run::{BuiltinComponents, Scheduler, SchedulerError, Started, load_profiles};
