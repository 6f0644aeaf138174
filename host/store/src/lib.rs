//! Capstan's store: the etcd v3 storage contract Kubernetes is built on, behind one trait.
//!
//! It owns revisions, key ranges, transactions, watches and compaction — nothing about API
//! objects, which live a layer up in `capstan-apiserver`; keys and values are bytes here.
//!
//! Start with [`Store`]: four primitives (`range`, `txn`, `watch`, `compact`) and conveniences built on
//! them. Two backends implement it and pass one conformance suite (`tests/conformance.rs`):
//! - [`EmbeddedStore`], the default: one SQLite file under the server's data directory;
//! - [`EtcdStore`]: a real etcd v3 cluster, for several API servers on one source of truth.
//!
//! [`open`] picks the backend from a [`StoreConfig`]; [`Compactor`] compacts on a schedule as
//! kube-apiserver does.

mod compaction;
mod embedded;
mod error;
mod etcd;
mod model;
mod store;

use std::path::PathBuf;
use std::sync::Arc;

pub use compaction::Compactor;
pub use embedded::EmbeddedStore;
pub use error::{Result, StoreError};
pub use etcd::{EtcdConfig, EtcdStore};
pub use model::{
    Compare, CompareOp, CompareTarget, Event, EventKind, KeyRange, KeyValue, RangeEnd, RangeRequest, RangeResponse,
    Revision, Txn, TxnOp, TxnOpResult, TxnResponse, WatchRequest, prefix_end,
};
pub use store::{Store, WatchStream};

/// Which backend to open.
#[derive(Clone, Debug)]
pub enum StoreConfig {
    /// The embedded database file at this path.
    Embedded(PathBuf),
    /// An etcd cluster.
    Etcd(EtcdConfig),
}

/// Opens the configured backend.
pub async fn open(config: &StoreConfig) -> Result<Arc<dyn Store>> {
    Ok(match config {
        StoreConfig::Embedded(path) => {
            let path = path.clone();
            let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(path))
                .await
                .map_err(|e| StoreError::backend("open", e))??;
            Arc::new(store)
        }
        StoreConfig::Etcd(config) => Arc::new(EtcdStore::connect(config.clone()).await?),
    })
}
