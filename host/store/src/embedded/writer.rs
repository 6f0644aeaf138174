//! The single writer: applies transactions in order and commits them in groups.
//!
//! Writers queue their transactions to one thread that owns the write connection. The thread
//! takes everything queued, applies each transaction at its own revision inside one SQLite
//! transaction, commits once (one fsync for the whole group), then publishes the events and
//! answers every caller. A caller is answered only after the commit is durable.

use std::sync::Arc;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{broadcast, mpsc, oneshot};

use super::schema::{self, Meta};
use crate::error::{Result, StoreError};
use crate::model::{Event, EventKind, KeyValue, Revision, Txn, TxnOp, TxnOpResult, TxnResponse};
use crate::store::validate_txn;

/// How many queued requests one commit may carry.
const MAX_GROUP: usize = 512;

/// Work for the writer thread.
pub(super) enum Command {
    /// Apply a transaction.
    Txn(Txn, oneshot::Sender<Result<TxnResponse>>),
    /// Discard history before a revision.
    Compact(Revision, oneshot::Sender<Result<()>>),
}

/// The events of one commit, in revision order.
pub(super) type Published = Arc<[Event]>;

enum Reply {
    Txn(oneshot::Sender<Result<TxnResponse>>, Result<TxnResponse>),
    Compact(oneshot::Sender<Result<()>>, Result<()>),
}

impl Reply {
    fn send(self, commit_error: Option<&str>) {
        let failed = |e: &str| StoreError::backend("commit", e);
        // A caller that went away no longer needs its answer.
        match self {
            Reply::Txn(tx, result) => {
                let _ = tx.send(match (commit_error, result) {
                    (Some(e), Ok(_)) => Err(failed(e)),
                    (_, result) => result,
                });
            }
            Reply::Compact(tx, result) => {
                let _ = tx.send(match (commit_error, result) {
                    (Some(e), Ok(())) => Err(failed(e)),
                    (_, result) => result,
                });
            }
        }
    }
}

/// The writer thread's state.
pub(super) struct Writer {
    conn: Connection,
    meta: Meta,
    events: broadcast::Sender<Published>,
}

impl Writer {
    pub(super) fn new(conn: Connection, meta: Meta, events: broadcast::Sender<Published>) -> Self {
        Writer { conn, meta, events }
    }

    /// Serves commands until every sender is gone.
    pub(super) fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        while let Some(first) = commands.blocking_recv() {
            let mut group = vec![first];
            while group.len() < MAX_GROUP {
                match commands.try_recv() {
                    Ok(command) => group.push(command),
                    Err(_) => break,
                }
            }
            self.commit_group(group);
        }
    }

    fn commit_group(&mut self, group: Vec<Command>) {
        let before = self.meta;
        let mut meta = self.meta;
        let mut replies = Vec::with_capacity(group.len());
        let mut events = Vec::new();
        let outcome = (|| -> rusqlite::Result<()> {
            let tx = self.conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for command in group {
                match command {
                    Command::Txn(txn, reply) => {
                        let result = match validate_txn(&txn) {
                            Ok(()) => Ok(apply_txn(&tx, &mut meta, txn, &mut events)?),
                            Err(e) => Err(e),
                        };
                        replies.push(Reply::Txn(reply, result));
                    }
                    Command::Compact(revision, reply) => {
                        let result = compact(&tx, &mut meta, revision)?;
                        replies.push(Reply::Compact(reply, result));
                    }
                }
            }
            if meta.revision != before.revision {
                schema::write_meta(&tx, "revision", meta.revision)?;
            }
            if meta.compacted != before.compacted {
                schema::write_meta(&tx, "compact_revision", meta.compacted)?;
            }
            tx.commit()
        })();
        match outcome {
            Ok(()) => {
                self.meta = meta;
                if !events.is_empty() {
                    // No subscribers is fine: nobody is watching.
                    let _ = self.events.send(events.into());
                }
                for reply in replies {
                    reply.send(None);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "store write failed; the group's writes were rolled back");
                let message = e.to_string();
                for reply in replies {
                    reply.send(Some(&message));
                }
                // Callers whose command never ran (the group stopped at the failure) see their
                // reply channel dropped, which `EmbeddedStore` reports as a backend error.
            }
        }
    }
}

/// Applies one validated transaction. An SQL error aborts the whole group: part of this
/// transaction may have been applied, and it must not be committed.
fn apply_txn(conn: &Connection, meta: &mut Meta, txn: Txn, events: &mut Vec<Event>) -> rusqlite::Result<TxnResponse> {
    let mut succeeded = true;
    for compare in &txn.compares {
        let current = current(conn, &compare.key)?;
        if !compare.holds_for(current.as_ref()) {
            succeeded = false;
            break;
        }
    }
    let ops = if succeeded { txn.success } else { txn.failure };
    let revision = meta.revision.next();
    let mut changed = 0;
    let mut results = Vec::with_capacity(ops.len());
    for op in ops {
        let result = match op {
            TxnOp::Get(key) => TxnOpResult::Get(current(conn, &key)?),
            TxnOp::Put { key, value } => {
                let prev = current(conn, &key)?;
                let kv = KeyValue {
                    key,
                    value,
                    create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
                    mod_revision: revision,
                    version: prev.as_ref().map_or(1, |p| p.version + 1),
                };
                write_put(conn, &kv, prev.as_ref(), changed)?;
                changed += 1;
                events.push(Event { kind: EventKind::Put, kv, prev: prev.clone() });
                TxnOpResult::Put { prev }
            }
            TxnOp::Delete(key) => {
                let prev = current(conn, &key)?;
                if let Some(prev) = &prev {
                    write_delete(conn, prev, revision, changed)?;
                    changed += 1;
                    let kv = KeyValue {
                        key: key.clone(),
                        value: Vec::new(),
                        create_revision: Revision(0),
                        mod_revision: revision,
                        version: 0,
                    };
                    events.push(Event { kind: EventKind::Delete, kv, prev: Some(prev.clone()) });
                }
                TxnOpResult::Delete { prev }
            }
        };
        results.push(result);
    }
    if changed > 0 {
        meta.revision = revision;
    }
    Ok(TxnResponse { succeeded, revision: meta.revision, results })
}

fn current(conn: &Connection, key: &[u8]) -> rusqlite::Result<Option<KeyValue>> {
    conn.prepare_cached("SELECT value, create_revision, mod_revision, version FROM kv WHERE key = ?1").and_then(
        |mut stmt| {
            stmt.query_row([key], |row| {
                Ok(KeyValue {
                    key: key.to_vec(),
                    value: row.get(0)?,
                    create_revision: Revision(row.get(1)?),
                    mod_revision: Revision(row.get(2)?),
                    version: row.get(3)?,
                })
            })
            .optional()
        },
    )
}

fn write_put(conn: &Connection, kv: &KeyValue, prev: Option<&KeyValue>, sub: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO kv (key, value, create_revision, mod_revision, version) VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision,
                                         version = excluded.version",
    )?
    .execute((&kv.key, &kv.value, kv.create_revision.0, kv.mod_revision.0, kv.version))?;
    conn.prepare_cached(
        "INSERT INTO kv_log (revision, sub, key, deleted, value, create_revision, version, prev_revision)
         VALUES (?1, ?2, ?3, 0, ?4, ?5, ?6, ?7)",
    )?
    .execute((
        kv.mod_revision.0,
        sub,
        &kv.key,
        &kv.value,
        kv.create_revision.0,
        kv.version,
        prev.map_or(0, |p| p.mod_revision.0),
    ))?;
    Ok(())
}

fn write_delete(conn: &Connection, prev: &KeyValue, revision: Revision, sub: i64) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM kv WHERE key = ?1")?.execute([&prev.key])?;
    conn.prepare_cached(
        "INSERT INTO kv_log (revision, sub, key, deleted, value, create_revision, version, prev_revision)
         VALUES (?1, ?2, ?3, 1, x'', 0, 0, ?4)",
    )?
    .execute((revision.0, sub, &prev.key, prev.mod_revision.0))?;
    Ok(())
}

/// Drops history before `revision`, keeping for every key its last value before that point
/// (so reads at `revision` and previous values of later events stay available).
fn compact(conn: &Connection, meta: &mut Meta, revision: Revision) -> rusqlite::Result<Result<()>> {
    if revision <= meta.compacted {
        return Ok(Err(StoreError::Compacted { requested: revision, compacted: Some(meta.compacted) }));
    }
    if revision > meta.revision {
        return Ok(Err(StoreError::FutureRevision { requested: revision, current: Some(meta.revision) }));
    }
    conn.prepare_cached(
        "DELETE FROM kv_log WHERE revision < ?1 AND (deleted = 1 OR EXISTS (
             SELECT 1 FROM kv_log newer
             WHERE newer.key = kv_log.key AND newer.revision > kv_log.revision AND newer.revision < ?1))",
    )
    .and_then(|mut stmt| stmt.execute([revision.0]))?;
    meta.compacted = revision;
    Ok(Ok(()))
}
