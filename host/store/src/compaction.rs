//! Compaction on a schedule, as kube-apiserver does it.
//!
//! Every interval the compactor compacts to the revision it saw one interval earlier, so history
//! is kept for at least one interval and watchers that fall behind by less than that can resume.
//! Several API servers sharing one etcd coordinate through one key, as kube-apiserver's
//! `compact_rev_key`: each round is a compare-and-swap on its version, so exactly one of them
//! compacts per interval.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::error::{Result, StoreError};
use crate::model::{Compare, Revision, Txn, TxnOp, TxnOpResult};
use crate::store::Store;

/// The key the compactors of one cluster coordinate on.
const COMPACT_KEY: &[u8] = b"/compact_rev_key";

/// Runs scheduled compaction for one store.
pub struct Compactor {
    store: Arc<dyn Store>,
    /// The version of [`COMPACT_KEY`] this compactor last saw.
    seen_version: i64,
    /// The revision recorded at the previous round, compacted to at the next.
    pending: Option<Revision>,
}

impl Compactor {
    /// A compactor for `store`; call [`Compactor::round`] or [`Compactor::spawn`].
    #[must_use]
    pub fn new(store: Arc<dyn Store>) -> Self {
        Compactor { store, seen_version: 0, pending: None }
    }

    /// Starts compacting every `interval` in the background.
    #[must_use]
    pub fn spawn(mut self, interval: Duration) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                match self.round().await {
                    Ok(Some(revision)) => tracing::info!(%revision, "compacted store history"),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "scheduled compaction failed; will retry next interval"),
                }
            }
        })
    }

    /// One round: claims this interval through the coordination key, compacts to the revision
    /// recorded at the previous round, and records the current one. Returns the revision
    /// compacted to, if any.
    pub async fn round(&mut self) -> Result<Option<Revision>> {
        let txn = Txn {
            compares: vec![Compare::version_is(COMPACT_KEY, self.seen_version)],
            success: vec![TxnOp::Put { key: COMPACT_KEY.to_vec(), value: COMPACT_KEY.to_vec() }],
            failure: vec![TxnOp::Get(COMPACT_KEY.to_vec())],
        };
        let response = self.store.txn(txn).await?;
        if !response.succeeded {
            // Another server compacted this interval; follow its version and wait for the next.
            if let Some(TxnOpResult::Get(Some(kv))) = response.results.first() {
                self.seen_version = kv.version;
            }
            self.pending = None;
            return Ok(None);
        }
        self.seen_version += 1;
        let target = self.pending.replace(response.revision);
        let Some(target) = target else { return Ok(None) };
        match self.store.compact(target).await {
            Ok(()) => Ok(Some(target)),
            // Someone compacted further already; that is the outcome we wanted.
            Err(StoreError::Compacted { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
