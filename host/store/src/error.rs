//! The store's errors.

use std::path::PathBuf;

use crate::model::Revision;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The requested revision has been compacted away; re-list at the current revision.
    #[error("revision {requested} has been compacted{}", known(" (oldest available is ", *compacted, ")"))]
    Compacted {
        /// The revision that was asked for.
        requested: Revision,
        /// The store's compaction point, when the backend reports it.
        compacted: Option<Revision>,
    },
    /// The requested revision is newer than anything the store has written.
    #[error("revision {requested} is in the future{}", known(" (current revision is ", *current, ")"))]
    FutureRevision {
        /// The revision that was asked for.
        requested: Revision,
        /// The store's current revision, when the backend reports it.
        current: Option<Revision>,
    },
    /// The transaction is malformed (for example it writes one key twice).
    #[error("invalid transaction: {0}")]
    InvalidTxn(String),
    /// The database file exists but is not a usable Capstan store; it was left untouched.
    #[error("refusing to open {path}: {reason}; move it aside or point --data-dir elsewhere")]
    Unusable {
        /// The database file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The etcd cluster could not be reached.
    #[error("etcd at {endpoints} is unreachable: {reason}")]
    Unavailable {
        /// The endpoints that were tried, comma-separated.
        endpoints: String,
        /// What the client reported.
        reason: String,
    },
    /// The backend failed while serving a request.
    #[error("store backend failed during {operation}: {reason}")]
    Backend {
        /// What the store was doing.
        operation: &'static str,
        /// What went wrong.
        reason: String,
    },
    /// The store is shutting down.
    #[error("the store is closed")]
    Closed,
}

fn known(before: &str, revision: Option<Revision>, after: &str) -> String {
    revision.map(|r| format!("{before}{r}{after}")).unwrap_or_default()
}

impl StoreError {
    /// A backend failure during `operation`.
    pub fn backend(operation: &'static str, reason: impl std::fmt::Display) -> Self {
        StoreError::Backend { operation, reason: reason.to_string() }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
