//! Reads against one consistent snapshot: ranges (latest or historical) and watch history.

use rusqlite::types::Value;
use rusqlite::{Connection, Row, params_from_iter};

use super::schema::{self, Meta};
use crate::error::{Result, StoreError};
use crate::model::{Event, EventKind, KeyRange, KeyValue, RangeEnd, RangeRequest, RangeResponse, Revision};

fn sql_error(operation: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |e| StoreError::backend(operation, e)
}

/// A SQL condition selecting `range` on column `column`, with its parameters.
fn range_condition(range: &KeyRange, column: &str, params: &mut Vec<Value>) -> String {
    params.push(Value::Blob(range.start.clone()));
    let start = params.len();
    match &range.end {
        RangeEnd::Single => format!("{column} = ?{start}"),
        RangeEnd::Unbounded => format!("{column} >= ?{start}"),
        RangeEnd::Before(end) => {
            params.push(Value::Blob(end.clone()));
            format!("{column} >= ?{start} AND {column} < ?{}", params.len())
        }
    }
}

/// Checks that `revision` can be read given the store's counters.
pub(super) fn check_readable(meta: Meta, revision: Revision) -> Result<()> {
    if revision < meta.compacted {
        return Err(StoreError::Compacted { requested: revision, compacted: Some(meta.compacted) });
    }
    if revision > meta.revision {
        return Err(StoreError::FutureRevision { requested: revision, current: Some(meta.revision) });
    }
    Ok(())
}

fn key_value(row: &Row<'_>) -> rusqlite::Result<KeyValue> {
    Ok(KeyValue {
        key: row.get(0)?,
        value: row.get(1)?,
        create_revision: Revision(row.get(2)?),
        mod_revision: Revision(row.get(3)?),
        version: row.get(4)?,
    })
}

/// Serves a [`RangeRequest`] from one read transaction.
pub(super) fn range(conn: &mut Connection, request: &RangeRequest) -> Result<RangeResponse> {
    let tx = conn.transaction().map_err(sql_error("begin read"))?;
    let meta = schema::read_meta(&tx)?;
    let at = request.revision.filter(|r| r.0 > 0 && *r != meta.revision);
    let mut params = Vec::new();
    let from = match at {
        None => {
            let condition = range_condition(&request.range, "key", &mut params);
            format!("FROM kv WHERE {condition}")
        }
        Some(revision) => {
            check_readable(meta, revision)?;
            let condition = range_condition(&request.range, "l.key", &mut params);
            params.push(Value::Integer(revision.0));
            let rev = params.len();
            format!(
                "FROM kv_log l WHERE {condition} AND l.revision <= ?{rev} AND l.deleted = 0 AND l.revision = \
                 (SELECT MAX(m.revision) FROM kv_log m WHERE m.key = l.key AND m.revision <= ?{rev})"
            )
        }
    };
    // Without a limit, the rows read are all there are: counting them apart would find every
    // row twice.
    let count_apart = request.count_only || request.limit.is_some();
    let mut count = 0;
    if count_apart {
        let counted: i64 = tx
            .prepare_cached(&format!("SELECT COUNT(*) {from}"))
            .and_then(|mut stmt| stmt.query_row(params_from_iter(params.iter()), |row| row.get(0)))
            .map_err(sql_error("count range"))?;
        count = counted as u64;
    }
    let mut kvs = Vec::new();
    if !request.count_only {
        let columns = if at.is_some() {
            "l.key, l.value, l.create_revision, l.revision, l.version"
        } else {
            "key, value, create_revision, mod_revision, version"
        };
        let order = if at.is_some() { "l.key" } else { "key" };
        params.push(Value::Integer(request.limit.map_or(-1, |l| l as i64)));
        let sql = format!("SELECT {columns} {from} ORDER BY {order} LIMIT ?{}", params.len());
        let mut stmt = tx.prepare_cached(&sql).map_err(sql_error("read range"))?;
        let rows = stmt.query_map(params_from_iter(params.iter()), key_value).map_err(sql_error("read range"))?;
        for row in rows {
            kvs.push(row.map_err(sql_error("read range"))?);
        }
        if !count_apart {
            count = kvs.len() as u64;
        }
    }
    let more = request.limit.is_some_and(|limit| count > limit as u64);
    Ok(RangeResponse { kvs, count, more, revision: meta.revision })
}

/// The store's counters, read in their own transaction.
pub(super) fn meta(conn: &Connection) -> Result<Meta> {
    schema::read_meta(conn)
}

/// Every change to `range` with `from <= revision <= to`, in order, with previous values.
/// Fails with [`StoreError::Compacted`] when `from` is no longer in the history.
pub(super) fn history(conn: &mut Connection, range: &KeyRange, from: Revision, to: Revision) -> Result<Vec<Event>> {
    let tx = conn.transaction().map_err(sql_error("begin read"))?;
    let meta = schema::read_meta(&tx)?;
    if from < meta.compacted {
        return Err(StoreError::Compacted { requested: from, compacted: Some(meta.compacted) });
    }
    let mut params = vec![Value::Integer(from.0), Value::Integer(to.0)];
    let condition = range_condition(range, "l.key", &mut params);
    let sql = format!(
        "SELECT l.key, l.value, l.create_revision, l.revision, l.version, l.deleted,
                p.value, p.create_revision, p.revision, p.version
         FROM kv_log l LEFT JOIN kv_log p ON p.key = l.key AND p.revision = l.prev_revision AND p.deleted = 0
         WHERE l.revision >= ?1 AND l.revision <= ?2 AND {condition}
         ORDER BY l.revision, l.sub"
    );
    let mut stmt = tx.prepare_cached(&sql).map_err(sql_error("read history"))?;
    let rows = stmt.query_map(params_from_iter(params.iter()), history_event).map_err(sql_error("read history"))?;
    rows.collect::<rusqlite::Result<Vec<_>>>().map_err(sql_error("read history"))
}

fn history_event(row: &Row<'_>) -> rusqlite::Result<Event> {
    let key: Vec<u8> = row.get(0)?;
    let deleted: bool = row.get(5)?;
    let prev = match row.get::<_, Option<Vec<u8>>>(6)? {
        Some(value) => Some(KeyValue {
            key: key.clone(),
            value,
            create_revision: Revision(row.get(7)?),
            mod_revision: Revision(row.get(8)?),
            version: row.get(9)?,
        }),
        None => None,
    };
    let kv = if deleted {
        KeyValue {
            key,
            value: Vec::new(),
            create_revision: Revision(0),
            mod_revision: Revision(row.get(3)?),
            version: 0,
        }
    } else {
        KeyValue {
            key,
            value: row.get(1)?,
            create_revision: Revision(row.get(2)?),
            mod_revision: Revision(row.get(3)?),
            version: row.get(4)?,
        }
    };
    Ok(Event { kind: if deleted { EventKind::Delete } else { EventKind::Put }, kv, prev })
}
