//! The [`Store`] trait: the one interface both backends implement.

use std::pin::Pin;

use async_trait::async_trait;
use futures::Stream;

use crate::error::{Result, StoreError};
use crate::model::{
    Compare, Event, KeyRange, KeyValue, RangeRequest, RangeResponse, Revision, Txn, TxnOp, TxnOpResult, TxnResponse,
    WatchRequest,
};

/// A stream of watch events in revision order. It ends with an error when the watch cannot go on
/// (for example [`StoreError::Compacted`] when its start revision is gone).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

/// An etcd-v3-shaped key-value store with history.
///
/// Backends implement four primitives (`range`, `txn`, `watch`, `compact`); the conveniences below
/// are built on them so every backend behaves the same.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Reads a key range, at the latest revision or an older one.
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse>;

    /// Runs a compare-then-act transaction atomically.
    async fn txn(&self, txn: Txn) -> Result<TxnResponse>;

    /// Streams every change to a key range, starting at a revision.
    async fn watch(&self, request: WatchRequest) -> Result<WatchStream>;

    /// Discards history older than `revision`; reads and watches before it then fail with
    /// [`StoreError::Compacted`].
    async fn compact(&self, revision: Revision) -> Result<()>;

    /// A short description of the backend for logs (`embedded:/path`, `etcd:http://…`).
    fn describe(&self) -> String;

    /// The latest revision.
    async fn current_revision(&self) -> Result<Revision> {
        let response = self.range(RangeRequest::new(KeyRange::key(Vec::new())).count_only()).await?;
        Ok(response.revision)
    }

    /// Reads one key at the latest revision.
    async fn get(&self, key: &[u8]) -> Result<Option<KeyValue>> {
        let response = self.range(RangeRequest::new(KeyRange::key(key))).await?;
        Ok(response.kvs.into_iter().next())
    }

    /// Writes one key unconditionally; returns the write's revision and the previous value.
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<(Revision, Option<KeyValue>)> {
        let response = self
            .txn(Txn { success: vec![TxnOp::Put { key: key.to_vec(), value: value.to_vec() }], ..Txn::default() })
            .await?;
        match response.results.into_iter().next() {
            Some(TxnOpResult::Put { prev }) => Ok((response.revision, prev)),
            other => Err(StoreError::backend("put", format!("unexpected transaction result {other:?}"))),
        }
    }

    /// Deletes one key; returns the store revision and the deleted value (`None` if it was absent).
    async fn delete(&self, key: &[u8]) -> Result<(Revision, Option<KeyValue>)> {
        let response = self.txn(Txn { success: vec![TxnOp::Delete(key.to_vec())], ..Txn::default() }).await?;
        match response.results.into_iter().next() {
            Some(TxnOpResult::Delete { prev }) => Ok((response.revision, prev)),
            other => Err(StoreError::backend("delete", format!("unexpected transaction result {other:?}"))),
        }
    }

    /// Creates `key` only if it does not exist. Returns the new revision, or the existing
    /// value when the key was already there.
    async fn create(&self, key: &[u8], value: &[u8]) -> Result<Result<Revision, KeyValue>> {
        let txn = Txn {
            compares: vec![Compare::missing(key)],
            success: vec![TxnOp::Put { key: key.to_vec(), value: value.to_vec() }],
            failure: vec![TxnOp::Get(key.to_vec())],
        };
        let response = self.txn(txn).await?;
        if response.succeeded {
            return Ok(Ok(response.revision));
        }
        match response.results.into_iter().next() {
            Some(TxnOpResult::Get(Some(existing))) => Ok(Err(existing)),
            // The key vanished between the compare and the read: report a conflict at the
            // revision we saw, which the caller retries like any other conflict.
            _ => Err(StoreError::backend("create", "key changed during create; retry")),
        }
    }

    /// Writes `key` only if it was last written at `expected`; on conflict returns the key's
    /// current value (`None` if it was deleted).
    async fn compare_and_put(
        &self,
        key: &[u8],
        expected: Revision,
        value: &[u8],
    ) -> Result<Result<Revision, Option<KeyValue>>> {
        guarded_write(self, key, expected, TxnOp::Put { key: key.to_vec(), value: value.to_vec() }).await
    }

    /// Deletes `key` only if it was last written at `expected`; on conflict returns the key's
    /// current value.
    async fn compare_and_delete(&self, key: &[u8], expected: Revision) -> Result<Result<Revision, Option<KeyValue>>> {
        guarded_write(self, key, expected, TxnOp::Delete(key.to_vec())).await
    }
}

/// Runs `write` only if `key` was last written at `expected`; otherwise reads the key back.
async fn guarded_write<S: Store + ?Sized>(
    store: &S,
    key: &[u8],
    expected: Revision,
    write: TxnOp,
) -> Result<Result<Revision, Option<KeyValue>>> {
    let txn = Txn {
        compares: vec![Compare::mod_revision_is(key, expected)],
        success: vec![write],
        failure: vec![TxnOp::Get(key.to_vec())],
    };
    let response = store.txn(txn).await?;
    if response.succeeded {
        return Ok(Ok(response.revision));
    }
    match response.results.into_iter().next() {
        Some(TxnOpResult::Get(current)) => Ok(Err(current)),
        other => Err(StoreError::backend("guarded write", format!("unexpected transaction result {other:?}"))),
    }
}

/// Rejects transactions that write one key twice in a branch, as etcd does.
pub(crate) fn validate_txn(txn: &Txn) -> Result<()> {
    for branch in [&txn.success, &txn.failure] {
        let mut written: Vec<&[u8]> = branch.iter().filter(|op| op.is_write()).map(TxnOp::key).collect();
        written.sort_unstable();
        if let Some(pair) = written.windows(2).find(|pair| pair[0] == pair[1]) {
            return Err(StoreError::InvalidTxn(format!(
                "key {} is written more than once",
                String::from_utf8_lossy(pair[0])
            )));
        }
    }
    Ok(())
}
