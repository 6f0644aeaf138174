//! Watches on the embedded store: history from the database, then live events from the writer.
//!
//! A watcher subscribes to the writer's broadcast *before* it reads history, so every commit is
//! either in the snapshot it read or arrives on the broadcast afterwards. It remembers the next
//! revision it owes the consumer and skips anything older, so each change arrives exactly once.
//! A watcher that falls too far behind the broadcast re-reads the gap from the database.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use super::{Shared, reads};
use crate::error::{Result, StoreError};
use crate::model::{Event, KeyRange, Revision, WatchRequest};
use crate::store::WatchStream;

/// How many events may wait for a slow consumer before the watcher pauses.
const CONSUMER_BUFFER: usize = 512;
/// How many revisions one history read covers, to bound memory while catching up.
const HISTORY_WINDOW: i64 = 2000;

pub(super) async fn start(shared: Arc<Shared>, request: WatchRequest) -> Result<WatchStream> {
    let live = shared.events.subscribe();
    let meta = shared.read(|conn| reads::meta(conn)).await?;
    let next = request.start_revision.filter(|r| r.0 > 0).unwrap_or(meta.revision.next());
    let (sender, receiver) = mpsc::channel(CONSUMER_BUFFER);
    let watcher = Watcher { shared, range: request.range, next, sender };
    tokio::spawn(watcher.run(live, meta.revision));
    Ok(Box::pin(ReceiverStream::new(receiver)))
}

struct Watcher {
    shared: Arc<Shared>,
    range: KeyRange,
    /// The oldest revision not yet delivered.
    next: Revision,
    sender: mpsc::Sender<Result<Event>>,
}

impl Watcher {
    async fn run(mut self, mut live: broadcast::Receiver<super::writer::Published>, snapshot: Revision) {
        if let Err(e) = self.catch_up(snapshot).await {
            let _ = self.sender.send(Err(e)).await;
            return;
        }
        loop {
            match live.recv().await {
                Ok(events) => {
                    if self.deliver_live(&events).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let caught_up = match self.shared.read(|conn| reads::meta(conn)).await {
                        Ok(meta) => self.catch_up(meta.revision).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = caught_up {
                        let _ = self.sender.send(Err(e)).await;
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    let _ = self.sender.send(Err(StoreError::Closed)).await;
                    return;
                }
            }
            if self.sender.is_closed() {
                return;
            }
        }
    }

    /// Delivers every change from `self.next` through `until` from the database.
    async fn catch_up(&mut self, until: Revision) -> Result<()> {
        while self.next <= until {
            let from = self.next;
            let to = Revision((from.0 + HISTORY_WINDOW - 1).min(until.0));
            let range = self.range.clone();
            let events = self.shared.read(move |conn| reads::history(conn, &range, from, to)).await?;
            for event in events {
                self.sender.send(Ok(event)).await.map_err(|_| StoreError::Closed)?;
            }
            self.next = to.next();
        }
        Ok(())
    }

    async fn deliver_live(&mut self, events: &[Event]) -> Result<(), ()> {
        let Some(last) = events.last() else { return Ok(()) };
        let last = last.revision();
        for event in events.iter().filter(|e| e.revision() >= self.next && self.range.contains(&e.kv.key)) {
            self.sender.send(Ok(event.clone())).await.map_err(|_| ())?;
        }
        if last >= self.next {
            self.next = last.next();
        }
        Ok(())
    }
}
