//! The embedded backend: one SQLite database file in WAL mode.
//!
//! Why SQLite rather than redb: the store needs ordered range scans over both the latest state and
//! the history at an older revision, and SQLite answers both with one indexed query each; it is
//! the engine k3s (through kine) runs Kubernetes on in production, its WAL mode with
//! `synchronous=FULL` gives durable commits with concurrent readers, and its file format is
//! stable and inspectable with standard tools when an operator needs to look inside.
//!
//! Layout: `kv` holds the latest value of every live key, `kv_log` every change since the
//! compaction point (the history that ranges at old revisions and watches read), and
//! `capstan_meta` the revision counters (`schema` says why `kv` and `kv_log` are rowid tables).
//! All writes go through one writer thread that commits queued transactions in groups
//! ([`writer`]); reads use a small pool of connections, each read inside one SQLite transaction
//! so it sees one consistent revision.

mod reads;
mod schema;
mod watch;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::Connection;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::error::{Result, StoreError};
use crate::model::{RangeRequest, RangeResponse, Revision, Txn, TxnResponse, WatchRequest};
use crate::store::{Store, WatchStream};

/// How many commits a watcher may fall behind the writer before it re-reads from the database.
const EVENT_BUFFER: usize = 1024;

/// The embedded store. Cheap to share behind an `Arc`; dropping the last handle stops the writer.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    commands: mpsc::Sender<writer::Command>,
}

/// What readers and watchers share.
struct Shared {
    path: PathBuf,
    idle_readers: Mutex<Vec<Connection>>,
    events: broadcast::Sender<writer::Published>,
}

impl EmbeddedStore {
    /// Opens the store in `path`, creating it when the file does not exist.
    ///
    /// A file that is not a Capstan store — another SQLite database, a corrupt one, anything
    /// else — is refused with [`StoreError::Unusable`] and left as it is.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Unusable {
                path: path.clone(),
                reason: format!("cannot create directory {}: {e}", parent.display()),
            })?;
        }
        schema::check_header(&path)?;
        let mut conn = schema::connect(&path)?;
        let meta = schema::initialise_or_verify(&mut conn, &path)?;
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (commands, receiver) = mpsc::channel(4096);
        let writer = writer::Writer::new(conn, meta, events.clone());
        std::thread::Builder::new()
            .name("capstan-store-writer".into())
            .spawn(move || writer.run(receiver))
            .map_err(|e| StoreError::backend("start writer thread", e))?;
        let shared = Arc::new(Shared { path, idle_readers: Mutex::new(Vec::new()), events });
        Ok(EmbeddedStore { shared, commands })
    }

    /// The database file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    async fn send<T>(&self, command: impl FnOnce(oneshot::Sender<Result<T>>) -> writer::Command) -> Result<T> {
        let (reply, answer) = oneshot::channel();
        self.commands.send(command(reply)).await.map_err(|_| StoreError::Closed)?;
        answer.await.map_err(|_| {
            StoreError::backend("write", "the write was abandoned because an earlier write in its commit group failed")
        })?
    }
}

impl Shared {
    /// Runs `read` on a pooled connection on the blocking thread pool.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl FnOnce(&mut Connection) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shared = Arc::clone(self);
        tokio::task::spawn_blocking(move || {
            let mut conn = match shared.idle_readers.lock().map(|mut idle| idle.pop()) {
                Ok(Some(conn)) => conn,
                _ => schema::connect(&shared.path)?,
            };
            let result = read(&mut conn);
            if let Ok(mut idle) = shared.idle_readers.lock() {
                idle.push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::backend("read", e))?
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    async fn range(&self, request: RangeRequest) -> Result<RangeResponse> {
        self.shared.read(move |conn| reads::range(conn, &request)).await
    }

    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        self.send(|reply| writer::Command::Txn(txn, reply)).await
    }

    async fn watch(&self, request: WatchRequest) -> Result<WatchStream> {
        watch::start(Arc::clone(&self.shared), request).await
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.send(|reply| writer::Command::Compact(revision, reply)).await
    }

    fn describe(&self) -> String {
        format!("embedded:{}", self.shared.path.display())
    }
}
