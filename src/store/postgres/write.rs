//! Writes on PostgreSQL: every [`WriteOp`], each in one transaction, answered after COMMIT.
//!
//! The meaning of each operation is the DuckDB writer's ([`crate::store::writer`]), and so
//! are the checks and their messages (they are shared, in [`crate::store::types`]):
//! upserts replace rows and supersede any text still queued for their ids; an update with
//! a vector does too; deletes take the queued versions with the rows; the pending queue
//! holds one version per (index, id), numbered from one sequence, and an embedding is
//! stored only while its version is still the queued one, with the metadata the queue
//! holds then. What differs is how: several processes write at once, so each transaction
//! first locks what it is about (see the module above: the index, then its ids) and
//! nothing is cached between transactions.
//!
//! Creating an index takes the exclusive lock; a write that may create its index (upsert
//! with `create_index`, embeddings for a new index) creates it first in a transaction of
//! its own, then writes under the shared lock, so no transaction ever upgrades a lock.

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value};
use tokio_postgres::GenericClient;

use super::read::{boxed, refs};
use super::schema::{self, Names, NAMESPACE};
use super::{Failure, PgStore};
use crate::store::filter::{pg, CompiledFilter};
use crate::store::{
    check_embeddable, dedup_last_wins, target_dimension, validate_dimension, validate_index_name,
    validate_vector, Hnsw, IndexInfo, Metric, StoreError, VectorRow,
};
use crate::store::{distinct, MetadataMode, Target, WriteOp, WriteOutcome};
use crate::store::{Acceptance, Accepted, EmbeddedDocument, NewDocument};

/// Widest `vector` column pgvector stores.
const MAX_PG_DIMENSION: usize = 16_000;
/// Widest vectors pgvector's HNSW indexes take.
const MAX_HNSW_DIMENSION: usize = 2_000;

type Result<T> = std::result::Result<T, Failure>;

pub(super) async fn apply(store: &PgStore, op: &WriteOp) -> Result<WriteOutcome> {
    match op {
        WriteOp::CreateIndex {
            name,
            dimension,
            metric,
            ann,
        } => create_index(store, name, *dimension, *metric, *ann, None).await,
        WriteOp::DeleteIndex { name } => delete_index(store, name).await,
        WriteOp::Upsert {
            index,
            rows,
            create,
            delete_filter,
        } => upsert(store, index, rows, *create, delete_filter.as_ref()).await,
        WriteOp::Update {
            index,
            target,
            vector,
            metadata,
            mode,
            skip_missing,
        } => {
            let (vector, metadata) = (vector.as_deref(), metadata.as_ref());
            update(store, index, target, vector, metadata, (*mode, *skip_missing)).await
        }
        WriteOp::Delete { index, target } => delete(store, index, target).await,
        WriteOp::Accept {
            index,
            model,
            dimension,
            docs,
            due_in,
            max_wait,
        } => accept(store, index, model, *dimension, docs, (*due_in, *max_wait)).await,
        WriteOp::StoreEmbedded { index, model, docs } => store_embedded(store, index, model, docs).await,
    }
}

fn names(store: &PgStore) -> &Names {
    &store.shared.names
}

fn invalid(message: String) -> Failure {
    Failure::Store(StoreError::Invalid(message))
}

/// Create `name` unless it exists with this shape; with `ann`, make sure its HNSW index
/// is that one. `model`, when given, is recorded on a new index.
async fn create_index(
    store: &PgStore,
    name: &str,
    dimension: usize,
    metric: Metric,
    ann: Option<Hnsw>,
    model: Option<&str>,
) -> Result<WriteOutcome> {
    validate_index_name(name)?;
    validate_dimension(dimension)?;
    if dimension > MAX_PG_DIMENSION {
        return Err(invalid(format!(
            "dimension: pgvector stores at most {MAX_PG_DIMENSION} dimensions, got {dimension}"
        )));
    }
    if let Some(ann) = ann {
        ann.validate("ann")?;
        if dimension > MAX_HNSW_DIMENSION {
            return Err(invalid(format!(
                "ann: pgvector's HNSW indexes take at most {MAX_HNSW_DIMENSION} dimensions; index \"{name}\" has {dimension} (leave ann out to search it exactly)"
            )));
        }
    }
    let names = names(store);
    let mut client = store.client().await?;
    // A table Mastra made since we started counts as existing.
    schema::adopt_if_present(&mut client, names, name).await?;
    let tx = client.transaction().await?;
    schema::lock_index(&*tx, names, name, true).await?;
    let created = match schema::registered(&*tx, names, name).await? {
        Some(existing) if (existing.dimension, existing.metric) != (dimension, metric) => {
            return Err(invalid(format!(
                "index \"{name}\" already exists with dimension {} and metric {}; asked for dimension {dimension} and metric {metric}",
                existing.dimension, existing.metric
            )));
        }
        Some(existing) => {
            if let Some(ann) = ann.filter(|a| existing.ann != Some(*a)) {
                tracing::info!(index = %name, m = ann.m, ef_construction = ann.ef_construction, "rebuilding the HNSW index");
                tx.batch_execute(&schema::drop_hnsw_sql(names, name)).await?;
                tx.batch_execute(&schema::create_hnsw_sql(names, name, metric, ann))
                    .await?;
                set_ann(&*tx, names, name, Some(ann)).await?;
            }
            false
        }
        None => {
            create_in(&*tx, names, name, dimension, metric, ann).await?;
            if let Some(model) = model {
                set_model(&*tx, names, name, model).await?;
            }
            true
        }
    };
    tx.commit().await?;
    Ok(WriteOutcome::IndexCreated { created })
}

/// Create and register an index table, in a transaction holding its exclusive lock.
async fn create_in(
    c: &(impl GenericClient + Sync),
    names: &Names,
    name: &str,
    dimension: usize,
    metric: Metric,
    ann: Option<Hnsw>,
) -> Result<()> {
    c.batch_execute(&schema::create_table_sql(names, name, dimension))
        .await?;
    if let Some(ann) = ann {
        c.batch_execute(&schema::create_hnsw_sql(names, name, metric, ann))
            .await?;
    }
    schema::register(c, names, name, dimension, metric, false, ann).await?;
    Ok(())
}

async fn set_ann(
    c: &(impl GenericClient + Sync),
    names: &Names,
    name: &str,
    ann: Option<Hnsw>,
) -> Result<()> {
    c.execute(
        &format!(
            "UPDATE {}.indexes SET hnsw_m = $2, hnsw_ef_construction = $3 WHERE name = $1",
            names.book
        ),
        &[
            &name,
            &ann.map(|a| a.m as i32),
            &ann.map(|a| a.ef_construction as i32),
        ],
    )
    .await?;
    Ok(())
}

async fn set_model(c: &(impl GenericClient + Sync), names: &Names, name: &str, model: &str) -> Result<()> {
    c.execute(
        &format!("UPDATE {}.indexes SET model = $2 WHERE name = $1", names.book),
        &[&name, &model],
    )
    .await?;
    Ok(())
}

async fn delete_index(store: &PgStore, name: &str) -> Result<WriteOutcome> {
    validate_index_name(name)?;
    let names = names(store);
    let mut client = store.client().await?;
    schema::adopt_if_present(&mut client, names, name).await?;
    let tx = client.transaction().await?;
    schema::lock_index(&*tx, names, name, true).await?;
    let existed = schema::registered(&*tx, names, name).await?.is_some();
    if existed {
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {}", names.table(name)))
            .await?;
        tx.execute(
            &format!("DELETE FROM {}.indexes WHERE name = $1", names.book),
            &[&name],
        )
        .await?;
    }
    // Pending documents of a dropped index would recreate it: they go too.
    schema::forget_index(&*tx, names, name).await?;
    tx.commit().await?;
    Ok(WriteOutcome::IndexDeleted { existed })
}

/// What a write locks: the rows of these ids (under the index's shared lock), or, for a
/// write that chooses its rows by filter, the whole index (its exclusive lock): no other
/// write of the index runs between the filter's reading and the write.
enum Scope<'a> {
    Ids(&'a [String]),
    Index,
}

impl<'a> Scope<'a> {
    fn of(target: &'a Target) -> Scope<'a> {
        match target {
            Target::Ids(ids) => Scope::Ids(ids),
            Target::Filter(_) => Scope::Index,
        }
    }
}

/// Take the locks of `scope`, then read the registration of an index that must exist.
async fn existing(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    scope: Scope<'_>,
) -> Result<IndexInfo> {
    match scope {
        Scope::Index => schema::lock_index(c, names, index, true).await?,
        Scope::Ids(ids) => {
            schema::lock_index(c, names, index, false).await?;
            schema::lock_ids(c, names, index, ids).await?;
        }
    }
    Ok(schema::registered(c, names, index)
        .await?
        .ok_or_else(|| StoreError::unknown_index(index))?)
}

async fn upsert(
    store: &PgStore,
    index: &str,
    rows: &[VectorRow],
    create: Option<(usize, Metric)>,
    delete_filter: Option<&CompiledFilter>,
) -> Result<WriteOutcome> {
    validate_index_name(index)?;
    for (at, row) in rows.iter().enumerate() {
        row.validate(at)?;
    }
    let names = names(store);
    let mut created_index = false;
    if let Some((dimension, metric)) = create {
        let mut client = store.client().await?;
        let current = schema::lookup(&mut client, names, index).await?;
        drop(client);
        target_dimension(index, create, current.as_ref())?;
        if current.is_none() {
            let outcome = create_index(store, index, dimension, metric, None, None).await?;
            created_index = outcome == WriteOutcome::IndexCreated { created: true };
        }
    }
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let ids: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    let scope = match delete_filter {
        Some(_) => Scope::Index,
        None => Scope::Ids(&ids),
    };
    let info = existing(&*tx, names, index, scope).await?;
    let dimension = target_dimension(index, create, Some(&info))?;
    for (at, row) in rows.iter().enumerate() {
        validate_vector(
            &format!("vectors[{at}] (id {:?}).vector", row.id),
            &row.vector,
            Some(dimension),
        )?;
    }
    // Before the insert, so the new rows are never among the deleted ones.
    let deleted = match delete_filter {
        Some(filter) => Some(delete_rows(&*tx, names, index, &Target::Filter(filter.clone())).await?),
        None => None,
    };
    let rows = dedup_last_wins(rows.to_vec());
    write_rows(&*tx, names, index, &rows).await?;
    let ids: Vec<String> = rows.into_iter().map(|r| r.id).collect();
    // These vectors are the latest word on their ids: a text still waiting to be embedded
    // for one of them must never land on top.
    drop_pending(&*tx, names, index, &ids).await?;
    tx.commit().await?;
    Ok(WriteOutcome::Upserted {
        ids,
        created_index,
        deleted,
    })
}

/// Insert or replace rows (deduplicated by the caller), in id order so that two writers
/// of overlapping ids lock them in the same order; forget the texts they were embedded
/// from (an embedding commit records its own right after).
async fn write_rows(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    rows: &[VectorRow],
) -> Result<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut sorted: Vec<&VectorRow> = rows.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let ids: Vec<&str> = sorted.iter().map(|r| r.id.as_str()).collect();
    let vectors: Vec<pgvector::Vector> = sorted
        .iter()
        .map(|r| pgvector::Vector::from(r.vector.clone()))
        .collect();
    let metadata: Vec<Value> = sorted.iter().map(|r| Value::Object(r.metadata.clone())).collect();
    forget_hashes(c, names, index, &ids).await?;
    c.execute(
        &format!(
            "INSERT INTO {table} (vector_id, embedding, metadata)
             SELECT u.id, u.embedding, u.metadata FROM unnest($1::text[], $2::{vector}[], $3::jsonb[]) AS u(id, embedding, metadata)
             ON CONFLICT (namespace, vector_id) DO UPDATE SET embedding = EXCLUDED.embedding, metadata = EXCLUDED.metadata",
            table = names.table(index),
            vector = names.vector(),
        ),
        &[&ids, &vectors, &metadata],
    )
    .await
    .map_err(|e| table_failure(index, e))?;
    Ok(())
}

/// A failure on an index table: a table dropped by another process meanwhile is an
/// unknown index; a conflict is still worth a retry.
fn table_failure(index: &str, e: tokio_postgres::Error) -> Failure {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        return Failure::Store(StoreError::unknown_index(index));
    }
    Failure::from(e)
}

async fn forget_hashes(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    ids: &[&str],
) -> Result<()> {
    c.execute(
        &format!(
            "DELETE FROM {}.documents WHERE index_name = $1 AND id = ANY($2::text[])",
            names.book
        ),
        &[&index, &ids],
    )
    .await?;
    Ok(())
}

/// Drop the queued versions of `ids`: a later write superseded them. Returns the ids that
/// had one.
async fn drop_pending(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    ids: &[String],
) -> Result<HashSet<String>> {
    let rows = c
        .query(
            &format!(
                "DELETE FROM {}.pending WHERE index_name = $1 AND id = ANY($2::text[]) RETURNING id",
                names.book
            ),
            &[&index, &ids],
        )
        .await?;
    if !rows.is_empty() {
        // Processes waiting on those versions learn that they were superseded.
        super::queue::notify(c, names).await?;
    }
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Ids of the stored rows `filter` matches, sorted.
async fn stored_matching(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    filter: &CompiledFilter,
) -> Result<Vec<String>> {
    let (sql, values) = pg::compile(&filter.filter, "t.metadata", 1);
    let params: Vec<_> = values.into_iter().map(boxed).collect();
    let rows = c
        .query(
            &format!(
                "SELECT t.vector_id FROM {} t WHERE t.namespace = '{NAMESPACE}' AND ({sql}) ORDER BY t.vector_id COLLATE \"C\"",
                names.table(index)
            ),
            &refs(&params),
        )
        .await
        .map_err(|e| table_failure(index, e))?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// Ids whose queued version's metadata `filter` matches.
async fn pending_matching(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    filter: &CompiledFilter,
) -> Result<Vec<String>> {
    let (sql, values) = pg::compile(&filter.filter, "p.metadata", 2);
    let mut params: Vec<super::read::Param> = vec![Box::new(index.to_string())];
    params.extend(values.into_iter().map(boxed));
    let rows = c
        .query(
            &format!(
                "SELECT p.id FROM {}.pending p WHERE p.index_name = $1::text AND ({sql})",
                names.book
            ),
            &refs(&params),
        )
        .await?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

async fn delete(store: &PgStore, index: &str, target: &Target) -> Result<WriteOutcome> {
    validate_index_name(index)?;
    let names = names(store);
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    existing(&*tx, names, index, Scope::of(target)).await?;
    let count = delete_rows(&*tx, names, index, target).await?;
    tx.commit().await?;
    Ok(WriteOutcome::Deleted { count })
}

/// Delete rows and their queued versions; by filter, an id goes when its stored metadata
/// or its queued version's matches. Returns how many ids lost either.
async fn delete_rows(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    target: &Target,
) -> Result<usize> {
    let ids: Vec<String> = match target {
        Target::Ids(ids) => distinct(ids),
        Target::Filter(filter) => {
            let mut ids: BTreeSet<String> = stored_matching(c, names, index, filter)
                .await?
                .into_iter()
                .collect();
            ids.extend(pending_matching(c, names, index, filter).await?);
            ids.into_iter().collect()
        }
    };
    if ids.is_empty() {
        return Ok(0);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    let rows = c
        .query(
            &format!(
                "DELETE FROM {} WHERE namespace = '{NAMESPACE}' AND vector_id = ANY($1::text[]) RETURNING vector_id",
                names.table(index)
            ),
            &[&sorted],
        )
        .await
        .map_err(|e| table_failure(index, e))?;
    let mut gone: HashSet<String> = rows.iter().map(|r| r.get::<_, String>(0)).collect();
    gone.extend(drop_pending(c, names, index, &sorted).await?);
    let refs: Vec<&str> = sorted.iter().map(String::as_str).collect();
    forget_hashes(c, names, index, &refs).await?;
    Ok(gone.len())
}

async fn update(
    store: &PgStore,
    index: &str,
    target: &Target,
    vector: Option<&[f32]>,
    metadata: Option<&Map<String, Value>>,
    (mode, skip_missing): (MetadataMode, bool),
) -> Result<WriteOutcome> {
    validate_index_name(index)?;
    if vector.is_none() && metadata.is_none() {
        return Err(invalid("update needs a vector, metadata, or both".into()));
    }
    if let Target::Ids(ids) = target {
        if let Some(at) = ids.iter().position(|id| id.is_empty()) {
            return Err(invalid(format!("id: the id is empty (ids[{at}])")));
        }
    }
    let names = names(store);
    let mut client = store.client().await?;
    let tx = client.transaction().await?;
    let info = existing(&*tx, names, index, Scope::of(target)).await?;
    if let Some(v) = vector {
        validate_vector("vector", v, Some(info.dimension))?;
    }
    let ids = match target {
        Target::Ids(ids) => ids.clone(),
        Target::Filter(filter) => stored_matching(&*tx, names, index, filter).await?,
    };
    let mut count = 0;
    for id in &ids {
        if update_one(&*tx, names, index, id, vector, metadata, mode).await? {
            count += 1;
        } else if matches!(target, Target::Ids(_)) && !skip_missing {
            // Dropping the transaction rolls back the rows changed before this one.
            return Err(invalid(format!(
                "id: no vector with id {id:?} in index \"{index}\""
            )));
        }
    }
    tx.commit().await?;
    Ok(WriteOutcome::Updated { count })
}

/// Update one stored row; false (and nothing changed) when there is none with this id.
async fn update_one(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    id: &str,
    vector: Option<&[f32]>,
    metadata: Option<&Map<String, Value>>,
    mode: MetadataMode,
) -> Result<bool> {
    let table = names.table(index);
    let Some(row) = c
        .query_opt(
            &format!(
                "SELECT metadata FROM {table} WHERE namespace = '{NAMESPACE}' AND vector_id = $1 FOR UPDATE"
            ),
            &[&id],
        )
        .await
        .map_err(|e| table_failure(index, e))?
    else {
        return Ok(false);
    };
    let stored: Option<Value> = row.get(0);
    let new_metadata = metadata.map(|patch| apply_patch(stored.clone(), patch, mode));
    let new_vector = vector.map(|v| pgvector::Vector::from(v.to_vec()));
    c.execute(
        &format!(
            "UPDATE {table} SET embedding = coalesce($2::{vector}, embedding), metadata = coalesce($3::jsonb, metadata)
             WHERE namespace = '{NAMESPACE}' AND vector_id = $1",
            vector = names.vector()
        ),
        &[&id, &new_vector, &new_metadata],
    )
    .await?;
    let ids = [id.to_string()];
    if vector.is_some() {
        // A new vector supersedes any text still waiting to be embedded for this id.
        forget_hashes(c, names, index, &[id]).await?;
        drop_pending(c, names, index, &ids).await?;
    } else if let Some(patch) = metadata {
        // A version waiting to be embedded gets the same change, so that it does not bring
        // the old metadata back when it lands.
        let queued = c
            .query_opt(
                &format!(
                    "SELECT metadata FROM {}.pending WHERE index_name = $1 AND id = $2 FOR UPDATE",
                    names.book
                ),
                &[&index, &id],
            )
            .await?;
        if let Some(row) = queued {
            let patched = apply_patch(Some(row.get::<_, Value>(0)), patch, mode);
            c.execute(
                &format!(
                    "UPDATE {}.pending SET metadata = $3 WHERE index_name = $1 AND id = $2",
                    names.book
                ),
                &[&index, &id, &patched],
            )
            .await?;
        }
    }
    Ok(true)
}

/// The metadata an update leaves: `patch` merged into `stored` (JSON merge patch, RFC
/// 7396, as DuckDB's `json_merge_patch` does it), or `patch` alone.
fn apply_patch(stored: Option<Value>, patch: &Map<String, Value>, mode: MetadataMode) -> Value {
    match mode {
        MetadataMode::Replace => Value::Object(patch.clone()),
        MetadataMode::Merge => {
            let mut target = stored.unwrap_or(Value::Null);
            merge_patch(&mut target, &Value::Object(patch.clone()));
            target
        }
    }
}

/// RFC 7396: an object patch merges key by key (`null` removes), anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(map) = target {
        for (key, value) in patch {
            if value.is_null() {
                map.remove(key);
            } else {
                merge_patch(map.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Record documents to embed. Per document, in one transaction: a new version number; if
/// the stored row was embedded from the same model and text, only its metadata is
/// written; else the version replaces whatever version of that id was queued.
async fn accept(
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
                create_index(store, index, dim, Metric::Cosine, None, Some(model)).await?;
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
                         AND EXISTS (SELECT 1 FROM {table} t WHERE t.namespace = '{NAMESPACE}' AND t.vector_id = d.id)",
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
            tx.execute(
                &format!(
                    "UPDATE {} SET metadata = $2 WHERE namespace = '{NAMESPACE}' AND vector_id = $1",
                    names.table(index)
                ),
                &[&doc.id, &metadata],
            )
            .await?;
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
    super::queue::notify(&*tx, names).await?;
    tx.commit().await?;
    Ok(WriteOutcome::Accepted(
        docs.iter().filter_map(|d| answers.remove(&d.id)).collect(),
    ))
}

/// Store freshly embedded documents whose version is still the queued one (locked while
/// we decide), with the metadata queued now; the rest are stale.
async fn store_embedded(
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
    let dimension = first.vector.len();
    for doc in docs {
        validate_vector(
            &format!("embedding of id {:?}", doc.id),
            &doc.vector,
            Some(dimension),
        )?;
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
    let mut rows = Vec::new();
    let mut fresh = Vec::new();
    let mut stale = HashSet::new();
    for doc in sorted {
        let queued = tx
            .query_opt(
                &format!(
                    "SELECT seq, metadata, content_hash, model FROM {}.pending WHERE index_name = $1 AND id = $2 FOR UPDATE",
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
                rows.push(VectorRow {
                    id: doc.id.clone(),
                    vector: doc.vector.clone(),
                    metadata: crate::store::metadata::hit_object(row.get::<_, Value>(1)),
                });
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
            create_in(&*tx, names, index, dimension, Metric::Cosine, None).await?;
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
    let rows = dedup_last_wins(rows);
    write_rows(&*tx, names, index, &rows).await?;
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
        super::queue::notify(&*tx, names).await?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}, "keep": 1});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}, "n": [1]}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}, "keep": 1, "n": [1]}));
        let mut scalar = json!("text");
        merge_patch(&mut scalar, &json!({"x": 1}));
        assert_eq!(scalar, json!({"x": 1}));
        let mut null = Value::Null;
        merge_patch(&mut null, &json!({"x": {"y": null}}));
        assert_eq!(null, json!({"x": {}}));
    }
}
