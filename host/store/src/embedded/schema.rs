//! The database file: recognising it, refusing anything that is not ours, creating it.

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::{Result, StoreError};
use crate::model::Revision;

/// Marks the file as a Capstan store (`PRAGMA application_id`, the bytes "CPST").
const APPLICATION_ID: i64 = 0x4350_5354;
/// The layout version written into new files. Format 1 (the same tables, but `kv` and `kv_log`
/// stored `WITHOUT ROWID`) is migrated on open; any other is refused.
const FORMAT_VERSION: i64 = 2;
/// Every SQLite 3 database starts with these 16 bytes.
const SQLITE_HEADER: &[u8; 16] = b"SQLite format 3\0";

const CREATE_META: &str = "
CREATE TABLE capstan_meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// `kv`, named `name`: the latest state of every live key.
///
/// Values are stored in a rowid table, with the keys in its primary-key index. Stored `WITHOUT
/// ROWID` (format 1), each row lives whole in the key's b-tree, and SQLite recommends that only
/// for rows under about a twentieth of a page: an object of a few KB spills to overflow pages in
/// the b-tree's interior cells, so every comparison on the way to a key read those pages (most of
/// a scheduling benchmark's API-server time went there).
fn kv_table(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (
            key             BLOB PRIMARY KEY,
            value           BLOB NOT NULL,
            create_revision INTEGER NOT NULL,
            mod_revision    INTEGER NOT NULL,
            version         INTEGER NOT NULL
        );"
    )
}

/// `kv_log`, named `name`: every change since the compaction point; `sub` orders the changes of
/// one transaction. A rowid table for the same reason as [`kv_table`].
fn kv_log_table(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (
            revision        INTEGER NOT NULL,
            sub             INTEGER NOT NULL,
            key             BLOB NOT NULL,
            deleted         INTEGER NOT NULL,
            value           BLOB NOT NULL,
            create_revision INTEGER NOT NULL,
            version         INTEGER NOT NULL,
            prev_revision   INTEGER NOT NULL,
            PRIMARY KEY (revision, sub)
        );"
    )
}

const KV_LOG_INDEX: &str = "CREATE UNIQUE INDEX kv_log_by_key ON kv_log (key, revision);";

/// The counters kept in `capstan_meta`.
#[derive(Clone, Copy, Debug)]
pub(super) struct Meta {
    /// The latest revision.
    pub revision: Revision,
    /// History before this revision is gone.
    pub compacted: Revision,
}

fn unusable(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Unusable { path: path.to_path_buf(), reason: reason.into() }
}

/// Opens a connection with the settings every connection needs: WAL, full fsync on commit.
pub(super) fn connect(path: &Path) -> Result<Connection> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| unusable(path, format!("cannot open: {e}")))?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(|e| unusable(path, e.to_string()))?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
        .map_err(|e| unusable(path, format!("not a usable SQLite database: {e}")))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(unusable(path, format!("cannot switch to WAL journaling (got {mode})")));
    }
    // FULL makes every commit fsync the WAL, so an acknowledged write survives power loss.
    conn.pragma_update(None, "synchronous", "FULL").map_err(|e| unusable(path, e.to_string()))?;
    Ok(conn)
}

/// Refuses, without modifying it, a file that exists but is not an SQLite database.
pub(super) fn check_header(path: &Path) -> Result<()> {
    let mut file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(unusable(path, format!("cannot read: {e}"))),
    };
    let mut header = [0u8; 16];
    let mut read = 0;
    while read < header.len() {
        match file.read(&mut header[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) => return Err(unusable(path, format!("cannot read: {e}"))),
        }
    }
    match read {
        0 => Ok(()),
        16 if &header == SQLITE_HEADER => Ok(()),
        _ => Err(unusable(path, "the file is not an SQLite database (wrong header)")),
    }
}

/// Creates the schema in an empty database, or verifies that an existing one is a Capstan store
/// of the supported format and passes SQLite's integrity check.
pub(super) fn initialise_or_verify(conn: &mut Connection, path: &Path) -> Result<Meta> {
    let fail = |e: rusqlite::Error| unusable(path, e.to_string());
    let application_id: i64 = conn.query_row("PRAGMA application_id", [], |row| row.get(0)).map_err(fail)?;
    if application_id == 0 {
        let tables: i64 = conn.query_row("SELECT COUNT(*) FROM sqlite_master", [], |row| row.get(0)).map_err(fail)?;
        if tables != 0 {
            return Err(unusable(path, "an SQLite database that is not a Capstan store"));
        }
        let tx = conn.transaction().map_err(fail)?;
        tx.execute_batch(&format!("{CREATE_META}{}{}{KV_LOG_INDEX}", kv_table("kv"), kv_log_table("kv_log")))
            .map_err(fail)?;
        tx.execute_batch(&format!(
            "PRAGMA application_id = {APPLICATION_ID};
             INSERT INTO capstan_meta (name, value) VALUES
               ('format', {FORMAT_VERSION}), ('revision', 1), ('compact_revision', 0);"
        ))
        .map_err(fail)?;
        tx.commit().map_err(fail)?;
    } else if application_id != APPLICATION_ID {
        return Err(unusable(path, format!("an SQLite database of another application (id {application_id:#x})")));
    }
    let check: String = conn.query_row("PRAGMA quick_check", [], |row| row.get(0)).map_err(fail)?;
    if check != "ok" {
        return Err(unusable(path, format!("the database is corrupt: {check}")));
    }
    let mut format = meta_value(conn, "format").map_err(fail)?;
    if format == Some(1) {
        migrate_from_format_1(conn).map_err(|e| unusable(path, format!("cannot migrate from format 1: {e}")))?;
        format = meta_value(conn, "format").map_err(fail)?;
    }
    if format != Some(FORMAT_VERSION) {
        return Err(unusable(path, format!("unsupported store format {format:?} (this build reads {FORMAT_VERSION})")));
    }
    read_meta(conn).map_err(|e| unusable(path, e.to_string()))
}

/// Moves a format-1 store's `kv` and `kv_log` into rowid tables, in one transaction: a failure
/// leaves the file as it was.
fn migrate_from_format_1(conn: &mut Connection) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute_batch(&format!(
        "{kv}
         INSERT INTO kv_new (key, value, create_revision, mod_revision, version)
             SELECT key, value, create_revision, mod_revision, version FROM kv;
         DROP TABLE kv;
         ALTER TABLE kv_new RENAME TO kv;
         {kv_log}
         INSERT INTO kv_log_new (revision, sub, key, deleted, value, create_revision, version, prev_revision)
             SELECT revision, sub, key, deleted, value, create_revision, version, prev_revision FROM kv_log;
         DROP TABLE kv_log;
         ALTER TABLE kv_log_new RENAME TO kv_log;
         {KV_LOG_INDEX}
         UPDATE capstan_meta SET value = {FORMAT_VERSION} WHERE name = 'format';",
        kv = kv_table("kv_new"),
        kv_log = kv_log_table("kv_log_new"),
    ))?;
    tx.commit()
}

fn meta_value(conn: &Connection, name: &str) -> rusqlite::Result<Option<i64>> {
    // Every read reads the counters: a cached statement is parsed once per connection.
    conn.prepare_cached("SELECT value FROM capstan_meta WHERE name = ?1")?
        .query_row([name], |row| row.get(0))
        .optional()
}

/// Reads the revision counters.
pub(super) fn read_meta(conn: &Connection) -> Result<Meta> {
    let read = |name| {
        meta_value(conn, name)
            .map_err(|e| StoreError::backend("read metadata", e))?
            .ok_or_else(|| StoreError::backend("read metadata", format!("missing '{name}' entry")))
    };
    Ok(Meta { revision: Revision(read("revision")?), compacted: Revision(read("compact_revision")?) })
}

/// Writes one revision counter.
pub(super) fn write_meta(conn: &Connection, name: &str, value: Revision) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE capstan_meta SET value = ?2 WHERE name = ?1")?.execute((name, value.0))?;
    Ok(())
}
