//! Bookkeeping of embedded documents: the durable pending queue and the content hashes of
//! what is stored, in the `stride_vectors` schema.
//!
//! `pending` holds every accepted document that is not embedded yet, one row per
//! (index, id): the latest version wins, and its `seq` tells versions apart, so a commit of
//! an older version never deletes a newer one. `documents` holds the hash of (model, text)
//! of each stored row, which is how an unchanged document costs no embedding.
//!
//! These functions run on the writer's connection inside its transaction and are called
//! only by [`super::writer`]; they never decide when to embed (that is `embed::pipeline`).

use duckdb::{params, params_from_iter, Connection, ToSql};
use serde_json::{Map, Value};

use crate::store::api::*;
use crate::store::filter::CompiledFilter;

/// Record `docs` (deduplicated by the caller, last version wins) for `index`, which may not
/// exist yet. Returns one answer per document.
pub fn accept(
    conn: &Connection,
    index: &str,
    table: Option<&IndexInfo>,
    model: &str,
    docs: &[NewDocument],
    next_seq: &mut u64,
) -> duckdb::Result<Vec<Accepted>> {
    let mut out = Vec::with_capacity(docs.len());
    for doc in docs {
        let seq = *next_seq;
        *next_seq += 1;
        let had_pending = delete_pending(conn, index, &doc.id)?;
        let unchanged = match table {
            Some(t) => stored_hash(conn, t, &doc.id)?.as_deref() == Some(doc.hash.as_str()),
            None => false,
        };
        let status = if unchanged {
            let table = quoted(index);
            conn.execute(
                &format!("UPDATE {table} SET metadata = ?::JSON WHERE id = ?"),
                params![Value::Object(doc.metadata.clone()).to_string(), doc.id],
            )?;
            Acceptance::Unchanged
        } else {
            conn.execute(
                "INSERT INTO stride_vectors.pending (index_name, id, seq, text, metadata, content_hash, model)
                 VALUES (?, ?, ?, ?, ?, ?, ?)",
                params![index, doc.id, seq as i64, doc.text, Value::Object(doc.metadata.clone()).to_string(), doc.hash, model],
            )?;
            if had_pending {
                Acceptance::Coalesced
            } else {
                Acceptance::Queued
            }
        };
        out.push(Accepted {
            id: doc.id.clone(),
            status,
            seq,
        });
    }
    Ok(out)
}

fn delete_pending(conn: &Connection, index: &str, id: &str) -> duckdb::Result<bool> {
    let n = conn.execute(
        "DELETE FROM stride_vectors.pending WHERE index_name = ? AND id = ?",
        params![index, id],
    )?;
    Ok(n > 0)
}

/// The hash of the document stored under `id`, if its row (or, for a long text, its first
/// chunk's, `<id>#0`) still exists.
fn stored_hash(conn: &Connection, table: &IndexInfo, id: &str) -> duckdb::Result<Option<String>> {
    let sql = format!(
        "SELECT d.content_hash FROM stride_vectors.documents d
         WHERE d.index_name = ? AND d.id = ? AND EXISTS (SELECT 1 FROM {} t WHERE t.id = d.id OR t.id = d.id || '#0')",
        quoted(&table.name)
    );
    let mut stmt = conn.prepare(&sql)?;
    let mut rows = stmt.query_map(params![table.name, id], |r| r.get::<_, String>(0))?;
    rows.next().transpose()
}

/// After the vectors of `docs` were written to `index`: remember their hashes and drop
/// their pending rows, but only up to the version that was embedded.
pub fn record_embedded(
    conn: &Connection,
    index: &str,
    model: &str,
    docs: &[EmbeddedDocument],
) -> duckdb::Result<()> {
    let mut hash = conn.prepare(
        "INSERT OR REPLACE INTO stride_vectors.documents (index_name, id, content_hash, model, embedded_at)
         VALUES (?, ?, ?, ?, current_timestamp)",
    )?;
    let mut pending =
        conn.prepare("DELETE FROM stride_vectors.pending WHERE index_name = ? AND id = ? AND seq <= ?")?;
    for doc in docs {
        hash.execute(params![index, doc.id, doc.hash, model])?;
        pending.execute(params![index, doc.id, doc.seq as i64])?;
    }
    Ok(())
}

/// The version of `id` waiting to be embedded, as the queue holds it now (its metadata
/// includes any `update` made since it was accepted).
pub fn pending_of(conn: &Connection, index: &str, id: &str) -> duckdb::Result<Option<PendingDocument>> {
    let mut stmt = conn.prepare_cached(&format!("{PENDING_COLUMNS} WHERE index_name = ? AND id = ?"))?;
    let mut rows = stmt.query_map(params![index, id], pending_document)?;
    rows.next().transpose()
}

/// Drop the versions of `ids` waiting to be embedded: a later write superseded them.
/// Returns how many there were.
pub fn drop_pending(conn: &Connection, index: &str, ids: &[String]) -> duckdb::Result<usize> {
    let ids = id_list(ids.iter().map(String::as_str))?;
    let mut stmt = conn.prepare_cached(
        "DELETE FROM stride_vectors.pending WHERE index_name = ?
         AND id IN (SELECT unnest(from_json(?::JSON, '[\"VARCHAR\"]')))",
    )?;
    stmt.execute(params![index, ids])
}

/// Forget the embedded texts of `ids` (an [`id_list`]): their rows get vectors of another
/// origin.
pub fn forget_embedded(conn: &Connection, index: &str, ids: &str) -> duckdb::Result<usize> {
    let mut stmt = conn.prepare_cached(
        "DELETE FROM stride_vectors.documents WHERE index_name = ?
         AND id IN (SELECT unnest(from_json(?::JSON, '[\"VARCHAR\"]')))",
    )?;
    stmt.execute(params![index, ids])
}

/// Ids as one JSON array, to bind where a statement works on a whole batch: the crate can
/// bind that where it cannot bind a list, and one statement per id cost more than the
/// upsert itself.
pub fn id_list<'a>(ids: impl Iterator<Item = &'a str>) -> duckdb::Result<String> {
    serde_json::to_string(&ids.collect::<Vec<_>>())
        .map_err(|e| duckdb::Error::ToSqlConversionFailure(Box::new(e)))
}

/// Apply an `update`'s metadata to the version of `id` waiting to be embedded, if any:
/// merged (RFC 7396, as the stored row gets it) or replacing it.
pub fn patch_pending_metadata(
    conn: &Connection,
    index: &str,
    id: &str,
    patch: &Map<String, Value>,
    merge: bool,
) -> duckdb::Result<()> {
    let sql = if merge {
        "UPDATE stride_vectors.pending SET metadata = json_merge_patch(metadata::JSON, ?::JSON)::VARCHAR
         WHERE index_name = ? AND id = ?"
    } else {
        "UPDATE stride_vectors.pending SET metadata = ? WHERE index_name = ? AND id = ?"
    };
    conn.execute(sql, params![Value::Object(patch.clone()).to_string(), index, id])?;
    Ok(())
}

/// Ids of `index` whose waiting version's metadata matches `filter`.
pub fn pending_matching(
    conn: &Connection,
    index: &str,
    filter: &CompiledFilter,
) -> duckdb::Result<Vec<String>> {
    // The filter speaks of a `metadata` JSON column, as in an index table.
    let sql = format!(
        "WITH p AS (SELECT id, metadata::JSON AS metadata FROM stride_vectors.pending WHERE index_name = ?)
         SELECT id FROM p WHERE {}",
        filter.sql
    );
    let mut values: Vec<&dyn ToSql> = vec![&index];
    values.extend(filter.params.iter().map(|p| p as &dyn ToSql));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params_from_iter(values), |r| r.get::<_, String>(0))?;
    rows.collect()
}

fn metadata_map(text: &str) -> Map<String, Value> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// Rows written with raw vectors no longer match any text: forget their hashes.
pub fn forget(conn: &Connection, index: &str, ids: &[String]) -> duckdb::Result<()> {
    let mut stmt = conn.prepare("DELETE FROM stride_vectors.documents WHERE index_name = ? AND id = ?")?;
    for id in ids {
        stmt.execute(params![index, id])?;
    }
    Ok(())
}

/// The indexes that have rows in `documents` or `pending`: the writer skips both tables for
/// every other index (see `Writer::with_texts`).
pub fn indexes_with_texts(conn: &Connection) -> duckdb::Result<std::collections::HashSet<String>> {
    let mut stmt = conn.prepare(
        "SELECT index_name FROM stride_vectors.documents UNION SELECT index_name FROM stride_vectors.pending",
    )?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    rows.collect()
}

/// Everything we know about an index that is being dropped.
pub fn forget_index(conn: &Connection, index: &str) -> duckdb::Result<()> {
    conn.execute(
        "DELETE FROM stride_vectors.documents WHERE index_name = ?",
        params![index],
    )?;
    conn.execute(
        "DELETE FROM stride_vectors.pending WHERE index_name = ?",
        params![index],
    )?;
    Ok(())
}

/// Every pending document, oldest version first.
pub fn load_pending(conn: &Connection) -> duckdb::Result<Vec<PendingDocument>> {
    let mut stmt = conn.prepare(&format!("{PENDING_COLUMNS} ORDER BY seq"))?;
    let rows = stmt.query_map([], pending_document)?;
    rows.collect()
}

/// The columns [`pending_document`] reads, in its order.
const PENDING_COLUMNS: &str =
    "SELECT index_name, id, seq, text, metadata, content_hash FROM stride_vectors.pending";

fn pending_document(r: &duckdb::Row<'_>) -> duckdb::Result<PendingDocument> {
    Ok(PendingDocument {
        index: r.get(0)?,
        id: r.get(1)?,
        seq: r.get::<_, i64>(2)?.max(0) as u64,
        text: r.get(3)?,
        metadata: metadata_map(&r.get::<_, String>(4)?),
        hash: r.get(5)?,
    })
}

/// The next free version number.
pub fn next_seq(conn: &Connection) -> duckdb::Result<u64> {
    conn.query_row(
        "SELECT coalesce(max(seq), 0) + 1 FROM stride_vectors.pending",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(1) as u64)
}
