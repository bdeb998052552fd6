//! A long text's rows, as the writer reaches them: a write on a document's id acts on every
//! chunk row of it (see `store::chunks` for the shape), inside the transaction the loop
//! opened. This file finds a document's stored rows and gives chunk rows back their own
//! fields after a metadata change; the operations themselves are in [`super::ops`].
//!
//! It must not begin, commit or roll back a transaction.

use std::collections::HashSet;

use duckdb::params;
use serde_json::{Map, Value};

use super::{OpError, Writer};
use crate::store::api::{distinct, quoted, VectorRow};
use crate::store::chunks::{
    documents_named, group_rows, head_ids, keep_chunk_fields, more_ids, object_or_empty, DocumentRows,
    RowsById,
};
use crate::store::duckdb::documents;

/// A row of a statement that selects `id, metadata::VARCHAR`: the id and its metadata
/// object (empty when it holds something else).
pub(super) fn id_and_metadata(r: &duckdb::Row<'_>) -> duckdb::Result<(String, Map<String, Value>)> {
    let text: Option<String> = r.get(1)?;
    let value = text.and_then(|t| serde_json::from_str::<Value>(&t).ok());
    Ok((r.get(0)?, object_or_empty(value)))
}

impl Writer {
    /// The metadata of the stored rows among `ids`.
    pub(super) fn metadata_of(&self, index: &str, ids: &[String]) -> Result<RowsById, OpError> {
        if ids.is_empty() {
            return Ok(RowsById::new());
        }
        let list = documents::id_list(ids.iter().map(String::as_str))?;
        let mut stmt = self.conn.prepare_cached(&format!(
            "SELECT id, metadata::VARCHAR FROM {} WHERE id IN (SELECT unnest(from_json(?::JSON, '[\"VARCHAR\"]')))",
            quoted(index)
        ))?;
        let rows = stmt.query_map(params![list], id_and_metadata)?;
        Ok(rows.collect::<duckdb::Result<_>>()?)
    }

    /// The stored rows of each of `docs` (distinct, in order) that has any: its own row,
    /// or for a long text stored in chunks, every chunk's.
    pub(super) fn stored_documents(
        &self,
        index: &str,
        docs: &[String],
    ) -> Result<Vec<(String, DocumentRows)>, OpError> {
        let docs = distinct(docs);
        let heads = self.metadata_of(index, &head_ids(&docs))?;
        let more = self.metadata_of(index, &more_ids(&docs, &heads))?;
        Ok(group_rows(&docs, &heads, &more))
    }

    /// The documents a delete or an update names by `ids`: a chunk's id stands for its
    /// whole document.
    pub(super) fn documents_named(&self, index: &str, ids: &[String]) -> Result<Vec<String>, OpError> {
        let rows = self.metadata_of(index, ids)?;
        Ok(documents_named(ids, &rows))
    }

    /// The stored rows of `docs` (the documents `rows` write) that the new rows do not
    /// replace: the chunks a document loses when it is written again shorter or as one
    /// row, or its one row when it is written in chunks.
    pub(super) fn outgrown_rows(
        &self,
        index: &str,
        rows: &[VectorRow],
        docs: &[String],
    ) -> Result<Vec<String>, OpError> {
        if !self.with_texts.contains(index) {
            return Ok(Vec::new()); // Only `embed` stores chunks.
        }
        let new: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
        Ok(self
            .stored_documents(index, docs)?
            .into_iter()
            .flat_map(|(_, rows)| rows)
            .map(|(id, _)| id)
            .filter(|id| !new.contains(id.as_str()))
            .collect())
    }

    /// Give row `id` of `index` its chunk fields back after a metadata change made it
    /// `stored`: rewritten only when they changed. Returns the metadata now stored.
    pub(super) fn keep_chunk_row(
        &self,
        index: &str,
        id: &str,
        mut stored: Map<String, Value>,
        old: &Map<String, Value>,
        text_field: Option<&str>,
    ) -> Result<Map<String, Value>, OpError> {
        if keep_chunk_fields(id, &mut stored, old, text_field) {
            self.conn.execute(
                &format!("UPDATE {} SET metadata = ?::JSON WHERE id = ?", quoted(index)),
                params![Value::Object(stored.clone()).to_string(), id],
            )?;
        }
        Ok(stored)
    }
}
