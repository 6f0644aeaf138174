//! Capstan's controller manager: it runs shared informers, work queues and leader election, and
//! hosts the controllers, which are WebAssembly components of the `controller` world
//! (`wit/controller.wit`, built from `plugins/controllers/`).
//!
//! It owns the machinery every controller shares — list+watch caches ([`informer`]), client-go
//! style work queues ([`queue`]), the host `client` components read and write through
//! ([`client`]), Event recording ([`events`]), per-controller metrics ([`metrics`]), Lease-based
//! leader election ([`leader`]) — and never any controller's logic: nothing here names a
//! controller. It talks to the API server only through `kube::Client`, as any client would.
//!
//! Start with [`ControllerManager::start`], which loads a [`ControllerSpec`]'s component, asks
//! it what it watches, and runs its workers; [`ControllerManager::reload`] swaps the component
//! while its queue and caches carry on. In a server, Plugin objects of kind `controller` drive
//! both ([`run_elected`]).

pub mod client;
mod defaults;
mod error;
pub mod events;
pub mod informer;
pub mod leader;
mod manager;
pub mod metrics;
mod plugins;
pub mod queue;

use std::fmt;

pub use defaults::{DefaultController, Elected, default_plugins, defaults, run_elected};
pub use error::ControllerError;
pub use manager::{ControllerManager, ControllerSpec};

/// The key of a work queue: one object of a controller's primary kind.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    /// Its namespace; `None` for cluster-scoped kinds.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
}

impl Key {
    /// The key of `object`.
    #[must_use]
    pub fn of(object: &serde_json::Value) -> Self {
        let text = |pointer: &str| object.pointer(pointer).and_then(serde_json::Value::as_str).map(str::to_owned);
        Self { namespace: text("/metadata/namespace"), name: text("/metadata/name").unwrap_or_default() }
    }

    /// The key as the WIT record.
    #[must_use]
    pub fn to_wit(&self) -> capstan_wasm::controller::ObjectKey {
        capstan_wasm::controller::ObjectKey { namespace: self.namespace.clone(), name: self.name.clone() }
    }
}

impl From<&capstan_wasm::controller::ObjectKey> for Key {
    fn from(key: &capstan_wasm::controller::ObjectKey) -> Self {
        Self { namespace: key.namespace.clone(), name: key.name.clone() }
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(ns) => write!(f, "{ns}/{}", self.name),
            None => f.write_str(&self.name),
        }
    }
}
