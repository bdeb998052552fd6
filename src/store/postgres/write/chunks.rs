//! A long text's rows on PostgreSQL: a write on a document's id acts on every chunk row of
//! it (see `store::chunks` for the shape), inside the caller's transaction and under the
//! document id's lock. This file finds a document's stored rows; the operations are in
//! [`super::rows`], [`super::update`] and [`super::documents`].
//!
//! It must not open or commit a transaction.

use std::collections::HashSet;

use serde_json::{Map, Value};
use tokio_postgres::GenericClient;

use super::{table_failure, Result};
pub(super) use crate::store::chunks::DocumentRows;
use crate::store::chunks::{self, group_rows, head_ids, more_ids, RowsById};
use crate::store::postgres::schema::{Names, NAMESPACE};
use crate::store::{distinct, VectorRow};

/// The metadata of the stored rows among `ids`.
async fn metadata_of(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    ids: &[String],
) -> Result<RowsById> {
    if ids.is_empty() {
        return Ok(RowsById::new());
    }
    let rows = c
        .query(
            &format!(
                "SELECT t.vector_id, t.metadata FROM {} t WHERE t.namespace = '{NAMESPACE}' AND t.vector_id = ANY($1::text[])",
                names.table(index)
            ),
            &[&ids],
        )
        .await
        .map_err(|e| table_failure(index, e))?;
    Ok(rows.iter().map(id_and_metadata).collect())
}

/// A row of a query that selects the id and the metadata: the id and its metadata object
/// (empty when it holds something else).
pub(super) fn id_and_metadata(r: &tokio_postgres::Row) -> (String, Map<String, Value>) {
    (r.get(0), chunks::object_or_empty(r.get(1)))
}

/// The stored rows of each of `docs` (distinct, in order) that has any: its own row, or
/// for a long text stored in chunks, every chunk's.
pub(super) async fn stored_documents(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    docs: &[String],
) -> Result<Vec<(String, DocumentRows)>> {
    let docs = distinct(docs);
    let heads = metadata_of(c, names, index, &head_ids(&docs)).await?;
    let more = metadata_of(c, names, index, &more_ids(&docs, &heads)).await?;
    Ok(group_rows(&docs, &heads, &more))
}

/// The documents a delete or an update names by `ids`: a chunk's id stands for its whole
/// document.
pub(super) async fn documents_named(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    ids: &[String],
) -> Result<(Vec<String>, RowsById)> {
    let rows = metadata_of(c, names, index, ids).await?;
    Ok((chunks::documents_named(ids, &rows), rows))
}

/// Refuse an upsert that would overwrite one chunk of a long text alone.
pub(super) async fn check_not_a_chunk(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    ids: &[String],
) -> Result<()> {
    let shaped: Vec<String> = ids
        .iter()
        .filter(|id| chunks::chunk_shaped(id).is_some())
        .cloned()
        .collect();
    if shaped.is_empty() {
        return Ok(());
    }
    let stored = metadata_of(c, names, index, &shaped).await?;
    Ok(chunks::check_not_a_chunk(ids, &stored)?)
}

/// The stored rows of `docs` (the documents `rows` write) that the new rows do not replace:
/// the chunks a document loses when it is written again shorter or as one row, or its one
/// row when it is written in chunks.
pub(super) async fn outgrown_rows(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    rows: &[&VectorRow],
    docs: &[String],
) -> Result<Vec<String>> {
    let new: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    Ok(stored_documents(c, names, index, docs)
        .await?
        .into_iter()
        .flat_map(|(_, rows)| rows)
        .map(|(id, _)| id)
        .filter(|id| !new.contains(id.as_str()))
        .collect())
}
