//! Texts on PostgreSQL: accepting documents into the pending queue (one version per id,
//! numbered from one sequence), and storing their embeddings while the version embedded is
//! still the queued one.
//!
//! It must not claim or lease queued versions (that is [`crate::store::postgres::queue`]).

use std::collections::HashSet;

use serde_json::Value;

use super::chunks::stored_documents;
use super::indexes::{create_in, create_index, set_model};
use super::rows::{drop_pending, write_rows};
use super::{names, Failure, Result};
use crate::store::chunks::{keep_chunk_fields, piece_rows};
use crate::store::postgres::schema::{self, NAMESPACE};
use crate::store::postgres::{queue, PgStore};
use crate::store::{
    check_embeddable, dedup_last_wins, keep_texts, validate_index_name, validate_vector, Acceptance,
    Accepted, EmbeddedDocument, Metric, NewDocument, StoreError, TextRequest, TextSettings, WriteOutcome,
};

/// Record documents to embed. Per document, in one transaction: a new version number; if
/// the stored row was embedded from the same model and text, only its metadata is
/// written; else the version replaces whatever version of that id was queued.
pub(super) async fn accept(
    store: &PgStore,
    index: &str,
    model: &str,
    dimension: Option<usize>,
    docs: &[NewDocument],
    (due_in, max_wait): (std::time::Duration, std::time::Duration),
) -> Result<WriteOutcome> {
    validate_index_name(index)?;
    let names = names(store);
    let mut client = store.client().await?;
    match schema::lookup(&mut client, names, index).await? {
        Some(info) => check_embeddable(&info, model, dimension)?,
        None => {
            if let Some(dim) = dimension {
                create_index(
                    store,
                    index,
                    dim,
                    Metric::Cosine,
                    None,
                    Some(model),
                    &TextRequest::default(),
                )
                .await?;
            }
        }
    }
    let tx = client.transaction().await?;
    schema::lock_index(&*tx, names, index, false).await?;
    let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    schema::lock_ids(&*tx, names, index, &ids).await?;
    let info = schema::registered(&*tx, names, index).await?;
    if let Some(info) = &info {
        check_embeddable(info, model, dimension)?;
    }
    let docs = &keep_texts(docs, info.as_ref())?;
    let mut sorted: Vec<&NewDocument> = docs.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut answers = std::collections::HashMap::with_capacity(docs.len());
    for doc in sorted {
        let seq: i64 = tx
            .query_one(&format!("SELECT nextval('{}.seq')", names.book), &[])
            .await?
            .get(0);
        let metadata = Value::Object(doc.metadata.clone());
        let unchanged = match &info {
            Some(_) => tx
                .query_opt(
                    &format!(
                        "SELECT 1 FROM {book}.documents d WHERE d.index_name = $1 AND d.id = $2 AND d.content_hash = $3
                         AND EXISTS (SELECT 1 FROM {table} t WHERE t.namespace = '{NAMESPACE}' AND t.vector_id IN (d.id, d.id || '#0'))",
                        book = names.book,
                        table = names.table(index)
                    ),
                    &[&index, &doc.id, &doc.hash],
                )
                .await?
                .is_some(),
            None => false,
        };
        let status = if unchanged {
            // Only the stored rows' metadata changes (each chunk of a long text keeps its
            // own piece of the text and its place).
            let field = info.as_ref().and_then(|i| i.text.field.as_deref());
            for (_, rows) in stored_documents(&*tx, names, index, std::slice::from_ref(&doc.id)).await? {
                for (id, old) in rows {
                    let mut new = doc.metadata.clone();
                    keep_chunk_fields(&id, &mut new, &old, field);
                    tx.execute(
                        &format!(
                            "UPDATE {} SET metadata = $2 WHERE namespace = '{NAMESPACE}' AND vector_id = $1",
                            names.table(index)
                        ),
                        &[&id, &Value::Object(new)],
                    )
                    .await?;
                }
            }
            drop_pending(&*tx, names, index, std::slice::from_ref(&doc.id)).await?;
            Acceptance::Unchanged
        } else {
            let replaced: bool = tx
                .query_one(
                    &format!(
                        "INSERT INTO {}.pending AS p (index_name, id, seq, text, metadata, content_hash, model, due_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(secs => $8))
                         ON CONFLICT (index_name, id) DO UPDATE SET seq = EXCLUDED.seq, text = EXCLUDED.text,
                             metadata = EXCLUDED.metadata, content_hash = EXCLUDED.content_hash,
                             model = EXCLUDED.model, accepted_at = now(),
                             -- An equal text joins the version queued (or in flight): its
                             -- embedding serves both (see store_embedded).
                             due_at = CASE WHEN p.content_hash = EXCLUDED.content_hash THEN p.due_at
                                 ELSE least(EXCLUDED.due_at, p.first_accepted_at + make_interval(secs => $9)) END,
                             lease_until = CASE WHEN p.content_hash = EXCLUDED.content_hash THEN p.lease_until END,
                             claimed_by = CASE WHEN p.content_hash = EXCLUDED.content_hash THEN p.claimed_by END,
                             parked_error = CASE WHEN p.content_hash = EXCLUDED.content_hash THEN p.parked_error END
                         RETURNING (xmax <> 0)",
                        names.book
                    ),
                    &[
                        &index,
                        &doc.id,
                        &seq,
                        &doc.text,
                        &metadata,
                        &doc.hash,
                        &model,
                        &due_in.as_secs_f64(),
                        &max_wait.as_secs_f64(),
                    ],
                )
                .await?
                .get(0);
            if replaced {
                Acceptance::Coalesced
            } else {
                Acceptance::Queued
            }
        };
        answers.insert(
            doc.id.clone(),
            Accepted {
                id: doc.id.clone(),
                status,
                seq: seq.max(0) as u64,
            },
        );
    }
    queue::notify(&*tx, names).await?;
    tx.commit().await?;
    Ok(WriteOutcome::Accepted(
        docs.iter().filter_map(|d| answers.remove(&d.id)).collect(),
    ))
}

/// Store freshly embedded documents whose version is still the queued one (locked while
/// we decide), with the metadata queued now; the rest are stale.
pub(super) async fn store_embedded(
    store: &PgStore,
    index: &str,
    model: &str,
    docs: &[EmbeddedDocument],
) -> Result<WriteOutcome> {
    validate_index_name(index)?;
    let Some(first) = docs.first() else {
        return Ok(WriteOutcome::Embedded {
            stored: Vec::new(),
            stale: Vec::new(),
        });
    };
    let Some(dimension) = first.vectors().next().map(<[f32]>::len) else {
        return Err(Failure::Store(StoreError::Internal(format!(
            "embedding of id {:?}: no vector",
            first.id
        ))));
    };
    for doc in docs {
        for vector in doc.vectors() {
            validate_vector(&format!("embedding of id {:?}", doc.id), vector, Some(dimension))?;
        }
    }
    let names = names(store);
    let mut client = store.client().await?;
    let missing = match schema::lookup(&mut client, names, index).await? {
        Some(info) => {
            check_embeddable(&info, model, Some(dimension))?;
            false
        }
        None => true,
    };
    let tx = client.transaction().await?;
    // A missing index is created here, under its exclusive lock, and only once a version
    // is known to be still queued: a delete_index meanwhile dropped the queue with it.
    schema::lock_index(&*tx, names, index, missing).await?;
    let ids: Vec<&str> = docs.iter().map(|d| d.id.as_str()).collect();
    schema::lock_ids(&*tx, names, index, &ids).await?;
    let mut sorted: Vec<&EmbeddedDocument> = docs.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let mut queued_texts = Vec::new();
    let mut fresh = Vec::new();
    let mut stale = HashSet::new();
    for doc in sorted {
        let queued = tx
            .query_opt(
                &format!(
                    "SELECT seq, metadata, content_hash, model, text FROM {}.pending WHERE index_name = $1 AND id = $2 FOR UPDATE",
                    names.book
                ),
                &[&index, &doc.id],
            )
            .await?;
        match queued {
            // The version embedded, or a later one of the same text and model (accepted
            // while this one was in flight, perhaps by another process): it serves both.
            Some(row)
                if row.get::<_, i64>(0) == doc.seq as i64
                    || (row.get::<_, String>(2) == doc.hash && row.get::<_, String>(3) == model) =>
            {
                let metadata = crate::store::metadata::hit_object(row.get::<_, Value>(1));
                queued_texts.push((doc, row.get::<_, String>(4), metadata));
                fresh.push((doc, row.get::<_, i64>(0)));
            }
            _ => {
                stale.insert(doc.id.clone());
            }
        }
    }
    if fresh.is_empty() {
        tx.commit().await?;
        return Ok(WriteOutcome::Embedded {
            stored: Vec::new(),
            stale: docs.iter().map(|d| d.id.clone()).collect(),
        });
    }
    let info = match schema::registered(&*tx, names, index).await? {
        Some(info) => info,
        None if missing => {
            create_in(
                &*tx,
                names,
                index,
                dimension,
                Metric::Cosine,
                None,
                &TextSettings::default(),
            )
            .await?;
            schema::registered(&*tx, names, index)
                .await?
                .ok_or_else(|| StoreError::unknown_index(index))?
        }
        None => return Err(Failure::Store(StoreError::unknown_index(index))),
    };
    check_embeddable(&info, model, Some(dimension))?;
    if info.model.is_none() {
        set_model(&*tx, names, index, model).await?;
    }
    let mut rows = Vec::new();
    for (doc, text, metadata) in queued_texts {
        let pieces = piece_rows(&doc.id, &text, &metadata, info.text.field.as_deref(), &doc.pieces)?;
        rows.extend(pieces);
    }
    let rows = dedup_last_wins(rows);
    let fresh_docs: Vec<String> = fresh.iter().map(|(d, _)| d.id.clone()).collect();
    write_rows(&*tx, names, index, &rows, &fresh_docs).await?;
    for (doc, queued_seq) in &fresh {
        tx.execute(
            &format!(
                "INSERT INTO {}.documents (index_name, id, content_hash, model, embedded_at) VALUES ($1, $2, $3, $4, now())
                 ON CONFLICT (index_name, id) DO UPDATE SET content_hash = EXCLUDED.content_hash, model = EXCLUDED.model, embedded_at = now()",
                names.book
            ),
            &[&index, &doc.id, &doc.hash, &model],
        )
        .await?;
        tx.execute(
            &format!(
                "DELETE FROM {}.pending WHERE index_name = $1 AND id = $2 AND seq <= $3",
                names.book
            ),
            &[&index, &doc.id, queued_seq],
        )
        .await?;
    }
    if !fresh.is_empty() || !stale.is_empty() {
        queue::notify(&*tx, names).await?;
    }
    tx.commit().await?;
    let fresh_ids: HashSet<&str> = fresh.iter().map(|(d, _)| d.id.as_str()).collect();
    Ok(WriteOutcome::Embedded {
        stored: docs
            .iter()
            .filter(|d| fresh_ids.contains(d.id.as_str()))
            .map(|d| d.id.clone())
            .collect(),
        stale: docs
            .iter()
            .filter(|d| stale.contains(&d.id))
            .map(|d| d.id.clone())
            .collect(),
    })
}
