//! Watchers: the cache's side (a bounded channel it never waits on) and the caller's side (a
//! stream of the history backlog followed by live events).

use std::pin::Pin;
use std::sync::Weak;
use std::task::{Context, Poll};

use futures::Stream;
use tokio::sync::mpsc::{self, error::TrySendError};

use super::CacheEvent;
use super::resource::ResourceCache;

/// Whether `key` lies in a watcher's scope: the namespace key prefix, or everything.
pub(super) fn in_scope(scope: Option<&[u8]>, key: &[u8]) -> bool {
    scope.is_none_or(|prefix| key.starts_with(prefix))
}

/// The cache's handle on one watcher.
pub(super) struct Watcher {
    scope: Option<Vec<u8>>,
    sender: mpsc::Sender<CacheEvent>,
}

impl Watcher {
    pub(super) fn new(scope: Option<Vec<u8>>, sender: mpsc::Sender<CacheEvent>) -> Self {
        Watcher { scope, sender }
    }

    /// Hands `event` to the watcher if it is in scope. Returns false when the watcher must be
    /// dropped: its stream is gone, or its buffer is full — the cache applies events for every
    /// watcher in turn and cannot wait for one that does not keep up.
    pub(super) fn offer(&self, event: &CacheEvent, resource: &str) -> bool {
        if !in_scope(self.scope.as_deref(), &event.key) {
            return true;
        }
        match self.sender.try_send(event.clone()) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                tracing::debug!(resource, revision = %event.revision, "closing a watcher that cannot keep up");
                false
            }
            Err(TrySendError::Closed(_)) => false,
        }
    }
}

/// A watch served from the cache: the events after the start revision, in order, each once.
///
/// It ends when the cache closes the watcher (too slow, or the cache restarted); the client then
/// re-watches from the last revision it received.
pub struct CacheWatch {
    backlog: std::vec::IntoIter<CacheEvent>,
    live: mpsc::Receiver<CacheEvent>,
    cache: Weak<ResourceCache>,
    id: u64,
}

impl CacheWatch {
    pub(super) fn new(
        backlog: Vec<CacheEvent>,
        live: mpsc::Receiver<CacheEvent>,
        cache: Weak<ResourceCache>,
        id: u64,
    ) -> Self {
        CacheWatch { backlog: backlog.into_iter(), live, cache, id }
    }
}

impl Stream for CacheWatch {
    type Item = CacheEvent;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<CacheEvent>> {
        if let Some(event) = self.backlog.next() {
            return Poll::Ready(Some(event));
        }
        self.live.poll_recv(cx)
    }
}

impl Drop for CacheWatch {
    fn drop(&mut self) {
        // Without this a gone watcher would stay registered until the next event in its scope.
        if let Some(cache) = self.cache.upgrade() {
            cache.unsubscribe(self.id);
        }
    }
}
