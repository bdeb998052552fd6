//! Writes on PostgreSQL: every [`WriteOp`], each in one transaction, answered after COMMIT.
//!
//! The meaning of each operation is the DuckDB writer's ([`crate::store::duckdb::writer`]),
//! and so are the checks and their messages (they are shared, in [`crate::store::api`]):
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
//!
//! This file takes each operation to its file and holds what they share: the locks a write
//! takes before it reads ([`Scope`], [`existing`]) and how a failure on an index table is
//! told. [`indexes`] creates and drops indexes, [`rows`] upserts and deletes rows, [`update`]
//! changes them, [`documents`] queues texts to embed and stores their embeddings; [`chunks`]
//! finds every row of a long text stored in chunks, which each of them acts on whole.

mod chunks;
mod documents;
mod indexes;
mod rows;
mod update;

use tokio_postgres::GenericClient;

use self::documents::{accept, store_embedded};
use self::indexes::{create_index, delete_index};
use self::rows::{delete, upsert};
use self::update::update;
use super::schema::{self, Names};
use super::{Failure, PgStore};
use crate::store::{IndexInfo, StoreError, Target, WriteOp, WriteOutcome};

type Result<T> = std::result::Result<T, Failure>;

pub(super) async fn apply(store: &PgStore, op: &WriteOp) -> Result<WriteOutcome> {
    match op {
        WriteOp::CreateIndex {
            name,
            dimension,
            metric,
            ann,
            text,
        } => create_index(store, name, *dimension, *metric, *ann, None, text).await,
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

/// A failure on an index table: a table dropped by another process meanwhile is an
/// unknown index; a conflict is still worth a retry.
fn table_failure(index: &str, e: tokio_postgres::Error) -> Failure {
    if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) {
        return Failure::Store(StoreError::unknown_index(index));
    }
    Failure::from(e)
}
