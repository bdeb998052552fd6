//! What each write operation does, in SQL, inside the transaction the writer's loop opened:
//! checks first (a refusal runs no SQL, so the transaction stays good), then statements,
//! then what changed for the in-memory copy and which document versions were superseded.
//!
//! It must not begin, commit or roll back a transaction, publish the catalog or answer a
//! request: that is the loop's ([`super`]), which does it once for the whole batch.

use duckdb::{params, params_from_iter};
use serde_json::{Map, Value};

use super::arrow::record_batch;
use super::chunks::id_and_metadata;
use super::{OpError, OpResult, Writer};
use crate::store::api::*;
use crate::store::chunks::{chunk_shaped, DocumentRows};
use crate::store::duckdb::{documents, schema, Catalog};
use crate::store::filter::CompiledFilter;
use crate::store::memory::Change;
use crate::store::metadata::Metadata;

impl Writer {
    pub(super) fn apply(&mut self, op: &WriteOp, working: &mut Catalog) -> OpResult {
        if let (Some(name), WriteOp::Upsert { index, .. }) = (&self.panic_on, op) {
            assert!(index != name, "test fault: a write to index {name:?}");
        }
        match op {
            WriteOp::CreateIndex {
                name,
                dimension,
                metric,
                ann: None,
                text,
            } => self.create_index(name, *dimension, *metric, text, working),
            WriteOp::CreateIndex { ann: Some(_), .. } => Err(OpError::Rejected(StoreError::invalid(
                "ann: HNSW indexes need the PostgreSQL back-end (--database postgres://…); a DuckDB file is always searched exactly",
            ))),
            WriteOp::DeleteIndex { name } => self.delete_index(name, working),
            WriteOp::Upsert {
                index,
                rows,
                create,
                delete_filter,
            } => self.upsert(index, rows, *create, delete_filter.as_ref(), working),
            WriteOp::Update {
                index,
                target,
                vector,
                metadata,
                mode,
                skip_missing,
            } => self.update(
                index,
                target,
                vector.as_deref(),
                metadata.as_ref(),
                (*mode, *skip_missing),
                working,
            ),
            WriteOp::Delete { index, target } => self.delete(index, target, working),
            WriteOp::Accept {
                index,
                model,
                dimension,
                docs,
                ..
            } => self.accept(index, model, *dimension, docs, working),
            WriteOp::StoreEmbedded { index, model, docs } => self.store_embedded(index, model, docs, working),
        }
    }

    fn create_index(
        &mut self,
        name: &str,
        dimension: usize,
        metric: Metric,
        asked: &TextRequest,
        working: &mut Catalog,
    ) -> OpResult {
        validate_index_name(name).map_err(OpError::Rejected)?;
        validate_dimension(dimension).map_err(OpError::Rejected)?;
        let text = &asked.settings();
        text.validate().map_err(OpError::Rejected)?;
        if let Some(existing) = working.get(name) {
            if existing.dimension == dimension && existing.metric == metric {
                return match existing_text_matches(existing, asked) {
                    Ok(()) => Ok(WriteOutcome::IndexCreated { created: false }),
                    Err(e) => Err(OpError::Rejected(e)),
                };
            }
            return Err(OpError::Rejected(StoreError::invalid(format!(
                "index \"{name}\" already exists with dimension {} and metric {}; asked for dimension {dimension} and metric {metric}",
                existing.dimension, existing.metric
            ))));
        }
        self.conn
            .execute_batch(&schema::create_index_table_sql(name, dimension))?;
        schema::register(&self.conn, name, dimension, metric, false, text)?;
        self.changes.push(Change::Create {
            index: name.to_string(),
            dimension,
            metric,
            text: text.clone(),
        });
        working.insert(
            name.to_string(),
            IndexInfo {
                name: name.to_string(),
                dimension,
                metric,
                model: None,
                adopted: false,
                ann: None,
                text: text.clone(),
            },
        );
        Ok(WriteOutcome::IndexCreated { created: true })
    }

    fn delete_index(&mut self, name: &str, working: &mut Catalog) -> OpResult {
        validate_index_name(name).map_err(OpError::Rejected)?;
        let existed = working.remove(name).is_some();
        if existed {
            self.conn
                .execute_batch(&format!("DROP TABLE IF EXISTS {}", quoted(name)))?;
            schema::unregister(&self.conn, name)?;
        }
        // Pending documents of a dropped index would recreate it: they go too.
        documents::forget_index(&self.conn, name)?;
        self.supersede(name, None);
        self.changes.push(Change::Drop {
            index: name.to_string(),
        });
        Ok(WriteOutcome::IndexDeleted { existed })
    }

    fn upsert(
        &mut self,
        index: &str,
        rows: &[VectorRow],
        create: Option<(usize, Metric)>,
        delete_filter: Option<&CompiledFilter>,
        working: &mut Catalog,
    ) -> OpResult {
        validate_index_name(index).map_err(OpError::Rejected)?;
        let dimension = target_dimension(index, create, working.get(index)).map_err(OpError::Rejected)?;
        // Every row is checked before any SQL, so a refusal leaves the transaction clean.
        for (at, row) in rows.iter().enumerate() {
            row.validate(at).map_err(OpError::Rejected)?;
            validate_vector(
                &format!("vectors[{at}] (id {:?}).vector", row.id),
                &row.vector,
                Some(dimension),
            )
            .map_err(OpError::Rejected)?;
        }
        let mut created_index = false;
        if let (false, Some((dim, metric))) = (working.contains_key(index), create) {
            self.create_index(index, dim, metric, &TextRequest::default(), working)?;
            created_index = true;
        }
        // Before the insert, so the new rows are never among the deleted ones.
        let deleted = match delete_filter {
            Some(filter) => Some(self.delete_rows(index, &Target::Filter(filter.clone()))?),
            None => None,
        };
        let rows = dedup_last_wins(rows.to_vec());
        // A chunk of a long text is not overwritten alone: the document would lose its shape.
        let shaped: Vec<String> = rows
            .iter()
            .filter(|r| chunk_shaped(&r.id).is_some())
            .map(|r| r.id.clone())
            .collect();
        if !shaped.is_empty() && self.with_texts.contains(index) {
            let stored = self.metadata_of(index, &shaped)?;
            let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
            if let Err(e) = crate::store::chunks::check_not_a_chunk(&ids, &stored) {
                // Rows a delete_filter removed make the transaction unclean: fail it whole.
                return Err(match deleted {
                    None => OpError::Rejected(e),
                    Some(_) => OpError::Failed(e.to_string()),
                });
            }
        }
        let docs: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        self.write_rows(index, dimension, &rows, &docs)?;
        let ids: Vec<String> = rows.into_iter().map(|r| r.id).collect();
        // These vectors are the latest word on their ids: a text still waiting to be
        // embedded for one of them must never land on top.
        if self.with_texts.contains(index) {
            documents::drop_pending(&self.conn, index, &ids)?;
        }
        self.supersede(index, Some(ids.clone()));
        Ok(WriteOutcome::Upserted {
            ids,
            created_index,
            deleted,
        })
    }

    /// Replace the stored rows of `rows`' ids (deduplicated) in `index`: one statement deletes
    /// the old versions, then the Arrow appender adds the new ones straight into the table
    /// (the duckdb crate cannot bind array values, and text would be slow). No staging
    /// table and no `INSERT OR REPLACE`: both were measured to cost more than the write.
    fn write_rows(
        &mut self,
        index: &str,
        dimension: usize,
        rows: &[VectorRow],
        docs: &[String],
    ) -> Result<(), OpError> {
        if rows.is_empty() {
            return Ok(());
        }
        let new_ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
        let ids = documents::id_list(new_ids.iter().map(String::as_str))?;
        // A long text written again shorter, as one row, or in chunks, loses what it was.
        let outgrown = self.outgrown_rows(index, rows, docs)?;
        // The rows get new vectors: whatever text we had embedded for these ids no longer
        // describes them (an embedding commit records its hashes again right after).
        if self.with_texts.contains(index) {
            documents::forget_embedded(&self.conn, index, &ids)?;
        }
        let gone = documents::id_list(new_ids.iter().chain(&outgrown).map(String::as_str))?;
        self.conn
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE id IN (SELECT unnest(from_json(?::JSON, '[\"VARCHAR\"]')))",
                quoted(index)
            ))?
            .execute(params![gone])?;
        if !outgrown.is_empty() {
            self.changes.push(Change::Delete {
                index: index.to_string(),
                ids: outgrown,
            });
        }
        let batch = record_batch(dimension, rows)?;
        let mut appender = self.conn.appender(index)?;
        appender.append_record_batch(batch)?;
        // The appender reports constraint and conversion errors only when flushed.
        appender.flush()?;
        let rows = rows
            .iter()
            .map(|r| (r.id.clone(), r.vector.clone(), Metadata::object(&r.metadata)))
            .collect();
        self.changes.push(Change::Upsert {
            index: index.to_string(),
            rows,
        });
        Ok(())
    }

    fn accept(
        &mut self,
        index: &str,
        model: &str,
        dimension: Option<usize>,
        docs: &[NewDocument],
        working: &mut Catalog,
    ) -> OpResult {
        validate_index_name(index).map_err(OpError::Rejected)?;
        if let Some(info) = working.get(index) {
            check_embeddable(info, model, dimension).map_err(OpError::Rejected)?;
        } else if let Some(dim) = dimension {
            self.create_index(index, dim, Metric::Cosine, &TextRequest::default(), working)?;
            self.record_model(index, model, working)?;
        }
        let docs = &keep_texts(docs, working.get(index)).map_err(OpError::Rejected)?;
        self.with_texts.insert(index.to_string());
        let accepted = documents::accept(
            &self.conn,
            index,
            working.get(index),
            model,
            docs,
            &mut self.next_seq,
        )?;
        // An unchanged text only rewrites its stored rows' metadata (each chunk of a long
        // text keeps its own piece of the text and its place).
        let field = working.get(index).and_then(|i| i.text.field.clone());
        let table = quoted(index);
        for (doc, answer) in docs.iter().zip(&accepted) {
            if answer.status != Acceptance::Unchanged {
                continue;
            }
            for (_, rows) in self.stored_documents(index, std::slice::from_ref(&doc.id))? {
                for (id, old) in rows {
                    let mut metadata = doc.metadata.clone();
                    crate::store::chunks::keep_chunk_fields(&id, &mut metadata, &old, field.as_deref());
                    self.conn.execute(
                        &format!("UPDATE {table} SET metadata = ?::JSON WHERE id = ?"),
                        params![Value::Object(metadata.clone()).to_string(), id],
                    )?;
                    self.changes.push(Change::Metadata {
                        index: index.to_string(),
                        id,
                        metadata: Metadata::object(&metadata),
                    });
                }
            }
        }
        Ok(WriteOutcome::Accepted(accepted))
    }

    fn store_embedded(
        &mut self,
        index: &str,
        model: &str,
        docs: &[EmbeddedDocument],
        working: &mut Catalog,
    ) -> OpResult {
        validate_index_name(index).map_err(OpError::Rejected)?;
        let Some(first) = docs.first() else {
            return Ok(WriteOutcome::Embedded {
                stored: Vec::new(),
                stale: Vec::new(),
            });
        };
        let Some(dimension) = first.vectors().next().map(<[f32]>::len) else {
            return Err(OpError::Rejected(StoreError::Internal(format!(
                "embedding of id {:?}: no vector",
                first.id
            ))));
        };
        if let Some(info) = working.get(index) {
            check_embeddable(info, model, Some(dimension)).map_err(OpError::Rejected)?;
        }
        for doc in docs {
            for vector in doc.vectors() {
                validate_vector(&format!("embedding of id {:?}", doc.id), vector, Some(dimension))
                    .map_err(OpError::Rejected)?;
            }
        }
        let field = match working.get(index) {
            Some(info) => info.text.field.clone(),
            None => TextRequest::default().settings().field,
        };
        // Only a version that is still the latest accepted one is stored, with the metadata
        // its pending row holds now (an `update` may have patched it since).
        let mut fresh = Vec::with_capacity(docs.len());
        let mut rows = Vec::with_capacity(docs.len());
        let mut stale = Vec::new();
        for doc in docs {
            match documents::pending_of(&self.conn, index, &doc.id)? {
                Some(queued) if queued.seq == doc.seq => {
                    let pieces = crate::store::chunks::piece_rows(
                        &doc.id,
                        &queued.text,
                        &queued.metadata,
                        field.as_deref(),
                        &doc.pieces,
                    )
                    .map_err(OpError::Rejected)?;
                    rows.extend(pieces);
                    fresh.push(doc.clone());
                }
                _ => stale.push(doc.id.clone()),
            }
        }
        if fresh.is_empty() {
            return Ok(WriteOutcome::Embedded {
                stored: Vec::new(),
                stale,
            });
        }
        if !working.contains_key(index) {
            self.create_index(index, dimension, Metric::Cosine, &TextRequest::default(), working)?;
        }
        if working.get(index).is_some_and(|i| i.model.is_none()) {
            self.record_model(index, model, working)?;
        }
        self.with_texts.insert(index.to_string());
        let docs: Vec<String> = fresh.iter().map(|d| d.id.clone()).collect();
        self.write_rows(index, dimension, &dedup_last_wins(rows), &docs)?;
        documents::record_embedded(&self.conn, index, model, &fresh)?;
        let stored = fresh.into_iter().map(|d| d.id).collect();
        Ok(WriteOutcome::Embedded { stored, stale })
    }

    fn record_model(&mut self, index: &str, model: &str, working: &mut Catalog) -> Result<(), OpError> {
        schema::set_model(&self.conn, index, model)?;
        if let Some(info) = working.get_mut(index) {
            info.model = Some(model.to_string());
        }
        Ok(())
    }

    /// One id (an unknown id is an error), or every stored row `filter` matches (none is
    /// fine). A version of a row still waiting to be embedded gets the same metadata change.
    /// An id stored as a long text's chunks changes on all of them, each keeping its own
    /// piece of the text and its place; a vector cannot be set on one.
    fn update(
        &mut self,
        index: &str,
        target: &Target,
        vector: Option<&[f32]>,
        metadata: Option<&Map<String, Value>>,
        (mode, skip_missing): (MetadataMode, bool),
        working: &Catalog,
    ) -> OpResult {
        let info = existing(index, working).map_err(OpError::Rejected)?;
        if vector.is_none() && metadata.is_none() {
            return Err(OpError::Rejected(StoreError::invalid(
                "update needs a vector, metadata, or both",
            )));
        }
        if let Some(v) = vector {
            validate_vector("vector", v, Some(info.dimension)).map_err(OpError::Rejected)?;
        }
        let dimension = info.dimension;
        let field = info.text.field.clone();
        // Every check before any change, so that a refusal leaves the transaction clean.
        let documents: Vec<(String, DocumentRows)> = match target {
            Target::Ids(ids) => {
                if let Some(at) = ids.iter().position(|id| id.is_empty()) {
                    return Err(OpError::Rejected(StoreError::invalid(format!(
                        "id: the id is empty (ids[{at}])"
                    ))));
                }
                let named = self.documents_named(index, ids)?;
                let stored = self.stored_documents(index, &named)?;
                if !skip_missing {
                    if let Some(id) = named.into_iter().find(|id| !stored.iter().any(|(d, _)| d == id)) {
                        return Err(OpError::Rejected(StoreError::invalid(format!(
                            "id: no vector with id {id:?} in index \"{index}\""
                        ))));
                    }
                }
                stored
            }
            Target::Filter(filter) => {
                // A filter that matches one chunk changes its whole document.
                let matched = self.stored_matching_rows(index, filter)?;
                let docs: Vec<String> = crate::store::chunks::by_document(&matched)
                    .into_iter()
                    .map(|(d, _)| d)
                    .collect();
                self.stored_documents(index, &docs)?
            }
        };
        if vector.is_some() {
            crate::store::chunks::check_no_chunks(&documents).map_err(OpError::Rejected)?;
        }
        for (doc, rows) in &documents {
            for (id, old) in rows {
                self.update_one(
                    index,
                    dimension,
                    id,
                    vector,
                    metadata,
                    mode,
                    (old, field.as_deref()),
                )?;
            }
            if let (None, Some(m)) = (vector, metadata) {
                // A version waiting to be embedded gets the same change (under the
                // document's id), so that it does not bring the old metadata back.
                documents::patch_pending_metadata(&self.conn, index, doc, m, mode == MetadataMode::Merge)?;
            }
        }
        Ok(WriteOutcome::Updated {
            count: documents.len(),
        })
    }

    /// The stored rows of `index` that `filter` matches, with their metadata, by id.
    fn stored_matching_rows(
        &mut self,
        index: &str,
        filter: &CompiledFilter,
    ) -> Result<DocumentRows, OpError> {
        let sql = format!(
            "SELECT id, metadata::VARCHAR FROM {} WHERE {} ORDER BY id",
            quoted(index),
            filter.sql
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(filter.params.iter()), id_and_metadata)?;
        Ok(rows.collect::<duckdb::Result<_>>()?)
    }

    /// Update one stored row (`old`: its metadata before, and the index's text field).
    #[allow(clippy::too_many_arguments)]
    fn update_one(
        &mut self,
        index: &str,
        dimension: usize,
        id: &str,
        vector: Option<&[f32]>,
        metadata: Option<&Map<String, Value>>,
        mode: MetadataMode,
        (old, field): (&Map<String, Value>, Option<&str>),
    ) -> Result<(), OpError> {
        let mut sets = Vec::new();
        let mut values: Vec<String> = Vec::new();
        if let Some(v) = vector {
            sets.push(format!("vector = ?::FLOAT[{dimension}]"));
            values.push(vector_literal(v));
        }
        if let Some(m) = metadata {
            sets.push(match mode {
                MetadataMode::Merge => {
                    "metadata = json_merge_patch(coalesce(metadata, '{}'::JSON), ?::JSON)".to_string()
                }
                MetadataMode::Replace => "metadata = ?::JSON".to_string(),
            });
            values.push(Value::Object(m.clone()).to_string());
        }
        values.push(id.to_string());
        let sql = format!("UPDATE {} SET {} WHERE id = ?", quoted(index), sets.join(", "));
        if self.conn.execute(&sql, params_from_iter(values.iter()))? == 0 {
            return Err(OpError::Failed(format!(
                "id {id:?}: its row went away during the update"
            )));
        }
        let ids = [id.to_string()];
        // The in-memory copy gets the metadata as DuckDB made it (a merge patch is DuckDB's).
        let stored: Option<String> = self.conn.query_row(
            &format!("SELECT metadata::VARCHAR FROM {} WHERE id = ?", quoted(index)),
            params![id],
            |r| r.get(0),
        )?;
        let mut stored = Metadata::parse(stored.as_deref())
            .map_err(|e| OpError::Failed(format!("the metadata stored for id {id:?} is not JSON: {e}")))?;
        if metadata.is_some() {
            stored = Metadata::object(&self.keep_chunk_row(index, id, stored.to_map(), old, field)?);
        }
        if let Some(v) = vector {
            // A new vector supersedes any text still waiting to be embedded for this id.
            documents::forget(&self.conn, index, &ids)?;
            documents::drop_pending(&self.conn, index, &ids)?;
            self.supersede(index, Some(ids.to_vec()));
            self.changes.push(Change::Upsert {
                index: index.to_string(),
                rows: vec![(id.to_string(), v.to_vec(), stored)],
            });
        } else if metadata.is_some() {
            self.changes.push(Change::Metadata {
                index: index.to_string(),
                id: id.to_string(),
                metadata: stored,
            });
        }
        Ok(())
    }

    /// Delete rows and the versions of them waiting to be embedded. By filter, an id goes
    /// when its stored metadata or its waiting version's metadata matches.
    fn delete(&mut self, index: &str, target: &Target, working: &Catalog) -> OpResult {
        existing(index, working).map_err(OpError::Rejected)?;
        let count = self.delete_rows(index, target)?;
        Ok(WriteOutcome::Deleted { count })
    }

    /// [`Self::delete`] in an index known to exist: how many ids lost a row or a waiting
    /// version. A long text stored in chunks goes whole, every chunk row of it, whether it
    /// was named by its id or a filter matched one of its chunks.
    fn delete_rows(&mut self, index: &str, target: &Target) -> Result<usize, OpError> {
        // The rows named or matched themselves, and every row of their documents.
        let (docs, direct): (Vec<String>, DocumentRows) = match target {
            Target::Ids(ids) => {
                let named = self.metadata_of(index, ids)?;
                let docs = crate::store::chunks::documents_named(ids, &named);
                (docs, named.into_iter().collect())
            }
            Target::Filter(filter) => {
                let matched = self.stored_matching_rows(index, filter)?;
                let mut docs: std::collections::BTreeSet<String> =
                    crate::store::chunks::by_document(&matched)
                        .into_iter()
                        .map(|(d, _)| d)
                        .collect();
                docs.extend(documents::pending_matching(&self.conn, index, filter)?);
                (docs.into_iter().collect(), matched)
            }
        };
        let stored = self.stored_documents(index, &docs)?;
        let mut seen = std::collections::HashSet::new();
        let rows_deleted: Vec<String> = stored
            .iter()
            .flat_map(|(_, rows)| rows.iter())
            .chain(direct.iter())
            .map(|(id, _)| id.clone())
            .filter(|id| seen.insert(id.clone()))
            .collect();
        let list = documents::id_list(rows_deleted.iter().map(String::as_str))?;
        self.conn
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE id IN (SELECT unnest(from_json(?::JSON, '[\"VARCHAR\"]')))",
                quoted(index)
            ))?
            .execute(params![list])?;
        let with_row: std::collections::HashSet<String> = stored
            .iter()
            .map(|(d, _)| d.clone())
            .chain(
                direct
                    .iter()
                    .map(|(id, m)| crate::store::chunks::document_of(id, m)),
            )
            .collect();
        let mut count = 0;
        for id in &docs {
            let had_pending = documents::drop_pending(&self.conn, index, std::slice::from_ref(id))? > 0;
            if with_row.contains(id) || had_pending {
                count += 1;
            }
        }
        documents::forget(&self.conn, index, &docs)?;
        self.supersede(index, Some(docs));
        self.changes.push(Change::Delete {
            index: index.to_string(),
            ids: rows_deleted,
        });
        Ok(count)
    }
}

fn existing<'a>(index: &str, working: &'a Catalog) -> Result<&'a IndexInfo, StoreError> {
    validate_index_name(index)?;
    working.get(index).ok_or_else(|| StoreError::unknown_index(index))
}
