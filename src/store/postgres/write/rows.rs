//! Rows on PostgreSQL: upserts (with the deletes of a `delete_filter`), deletes by id or
//! filter, and what every row write does to the texts of those ids (hashes forgotten,
//! queued versions dropped and their waiters told).
//!
//! It must not create indexes (that is [`super::indexes`], in a transaction of its own) nor
//! queue texts (that is [`super::documents`]).

use std::collections::{BTreeSet, HashSet};

use serde_json::{Map, Value};
use tokio_postgres::GenericClient;

use super::indexes::create_index;
use super::{existing, names, table_failure, Result, Scope};
use crate::store::filter::{pg, CompiledFilter};
use crate::store::postgres::read::{self, boxed, refs};
use crate::store::postgres::schema::{self, Names, NAMESPACE};
use crate::store::postgres::{queue, PgStore};
use crate::store::{
    dedup_last_wins, target_dimension, validate_index_name, validate_vector, Metric, Target, TextRequest,
    VectorRow, WriteOutcome,
};

pub(super) async fn upsert(
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
            let outcome = create_index(
                store,
                index,
                dimension,
                metric,
                None,
                None,
                &TextRequest::default(),
            )
            .await?;
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
    let docs: Vec<String> = rows.iter().map(|r| r.id.clone()).collect();
    // A chunk of a long text is not overwritten alone (the transaction is dropped, so the
    // rows a delete_filter removed come back).
    super::chunks::check_not_a_chunk(&*tx, names, index, &docs).await?;
    write_rows(&*tx, names, index, &rows, &docs).await?;
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
pub(super) async fn write_rows(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    rows: &[VectorRow],
    docs: &[String],
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
    // A long text written again shorter, as one row, or in chunks, loses what it was.
    let outgrown = super::chunks::outgrown_rows(c, names, index, &sorted, docs).await?;
    if !outgrown.is_empty() {
        c.execute(
            &format!(
                "DELETE FROM {} WHERE namespace = '{NAMESPACE}' AND vector_id = ANY($1::text[])",
                names.table(index)
            ),
            &[&outgrown],
        )
        .await
        .map_err(|e| table_failure(index, e))?;
    }
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

pub(super) async fn forget_hashes(
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
pub(super) async fn drop_pending(
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
        queue::notify(c, names).await?;
    }
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}

/// The stored rows `filter` matches, with their metadata, sorted by id.
pub(super) async fn stored_matching_rows(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    filter: &CompiledFilter,
) -> Result<Vec<(String, Map<String, Value>)>> {
    let (sql, values) = pg::compile(&filter.filter, "t.metadata", 1);
    let params: Vec<_> = values.into_iter().map(boxed).collect();
    let rows = c
        .query(
            &format!(
                "SELECT t.vector_id, t.metadata FROM {} t WHERE t.namespace = '{NAMESPACE}' AND ({sql}) ORDER BY t.vector_id COLLATE \"C\"",
                names.table(index)
            ),
            &refs(&params),
        )
        .await
        .map_err(|e| table_failure(index, e))?;
    Ok(rows.iter().map(super::chunks::id_and_metadata).collect())
}

/// Ids whose queued version's metadata `filter` matches.
async fn pending_matching(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    filter: &CompiledFilter,
) -> Result<Vec<String>> {
    let (sql, values) = pg::compile(&filter.filter, "p.metadata", 2);
    let mut params: Vec<read::Param> = vec![Box::new(index.to_string())];
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

pub(super) async fn delete(store: &PgStore, index: &str, target: &Target) -> Result<WriteOutcome> {
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
/// or its queued version's matches. A long text stored in chunks goes whole, whether it was
/// named by its id or a filter matched one of its chunks. Returns how many ids lost either.
async fn delete_rows(
    c: &(impl GenericClient + Sync),
    names: &Names,
    index: &str,
    target: &Target,
) -> Result<usize> {
    // The rows named or matched themselves, and every row of their documents.
    let (ids, direct): (Vec<String>, super::chunks::DocumentRows) = match target {
        Target::Ids(ids) => {
            let (docs, named) = super::chunks::documents_named(c, names, index, ids).await?;
            (docs, named.into_iter().collect())
        }
        Target::Filter(filter) => {
            let matched = stored_matching_rows(c, names, index, filter).await?;
            let mut ids: BTreeSet<String> = matched
                .iter()
                .map(|(id, m)| crate::store::chunks::document_of(id, m))
                .collect();
            ids.extend(pending_matching(c, names, index, filter).await?);
            (ids.into_iter().collect(), matched)
        }
    };
    if ids.is_empty() {
        return Ok(0);
    }
    let mut sorted = ids.clone();
    sorted.sort();
    let stored = super::chunks::stored_documents(c, names, index, &sorted).await?;
    let mut rows: Vec<String> = stored
        .iter()
        .flat_map(|(_, r)| r.iter())
        .chain(direct.iter())
        .map(|(id, _)| id.clone())
        .collect();
    rows.sort();
    rows.dedup();
    c.execute(
        &format!(
            "DELETE FROM {} WHERE namespace = '{NAMESPACE}' AND vector_id = ANY($1::text[])",
            names.table(index)
        ),
        &[&rows],
    )
    .await
    .map_err(|e| table_failure(index, e))?;
    let mut gone: HashSet<String> = stored.into_iter().map(|(d, _)| d).collect();
    gone.extend(
        direct
            .iter()
            .map(|(id, m)| crate::store::chunks::document_of(id, m)),
    );
    gone.extend(drop_pending(c, names, index, &sorted).await?);
    let refs: Vec<&str> = sorted.iter().map(String::as_str).collect();
    forget_hashes(c, names, index, &refs).await?;
    Ok(gone.len())
}
