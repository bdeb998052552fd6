//! The single writer: one thread that owns the only read-write DuckDB connection of the
//! process and applies every change.
//!
//! Requests arrive on a channel. The thread takes what is waiting (up to `max_batch`), runs
//! it all in one transaction, commits, and only then answers each request (group commit):
//! a write is acknowledged only once it is durable. Since nobody else writes, there are no
//! transaction conflicts to retry, which is the class of bugs this project exists to remove.
//!
//! A request that is refused by a check (unknown index, wrong width, missing id) has not run
//! any SQL, so it does not spoil the batch. A request whose SQL fails aborts the transaction;
//! the batch is then rolled back and replayed one request per transaction, so one bad write
//! never fails its neighbours and every call stays atomic.
//!
//! The [`Catalog`] is changed here and nowhere else, and only after the commit that made the
//! change durable.
//!
//! This module must not be called from async code except through [`WriterHandle::submit`].

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use duckdb::arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, StringArray};
use duckdb::arrow::datatypes::{DataType, Field, Schema};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::{params, params_from_iter, Connection};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};

use super::documents;
use super::schema;
use super::Catalog;
use crate::store::api::*;
use crate::store::filter::CompiledFilter;
use crate::store::memory::{Builder, Change, Keeper, Memory};
use crate::store::metadata::Metadata;

/// Requests waiting for the writer. Bounded so that a flood of writers waits instead of
/// growing memory without limit.
const QUEUE_DEPTH: usize = 4096;

/// Told, right after each commit and before any request of it is answered, what it
/// superseded (the writer only hands the list over; the pipeline reads it in its own task).
pub type SupersededListener = Arc<SupersededFeed>;

type Reply = oneshot::Sender<Result<WriteOutcome, StoreError>>;

enum Request {
    Write(WriteOp, Reply),
    /// The loader's copy of an index, read as of `as_of` commits (`None`: unreadable).
    Loaded {
        index: String,
        builder: Option<Builder>,
        as_of: u64,
    },
    /// Every index is loaded: let DuckDB drop what the loader read (see [`shed_cache`]);
    /// answered once it is done.
    ShedCache(oneshot::Sender<()>),
    /// Finish what was sent before, close the connection, then answer.
    Shutdown(oneshot::Sender<()>),
}

/// The async side of the writer. Cloning it is cheap.
#[derive(Clone)]
pub struct WriterHandle {
    tx: mpsc::Sender<Request>,
    failure: Arc<Failure>,
}

/// Why the store broke, once it has: set by the writer or the loader thread when it
/// panics, read by every later call and by the owner (which then gives the file up).
#[derive(Default)]
pub struct Failure {
    message: std::sync::OnceLock<String>,
    noticed: tokio::sync::Notify,
    /// Set by the writer as it shuts down, before it stops taking requests: a request it
    /// no longer takes is then known to be "closed", not a failure still unwinding.
    shut_down: std::sync::atomic::AtomicBool,
}

impl Failure {
    /// Record the first failure; later ones are the same breakage seen again.
    pub fn set(&self, message: String) {
        if self.message.set(message).is_ok() {
            tracing::error!(error = %self.message.get().map_or("", String::as_str), "the store failed");
        }
        self.noticed.notify_waiters();
    }

    pub fn get(&self) -> Option<String> {
        self.message.get().cloned()
    }

    /// Wait until the store has failed.
    pub async fn wait(&self) -> String {
        loop {
            let noticed = self.noticed.notified();
            if let Some(m) = self.get() {
                return m;
            }
            noticed.await;
        }
    }

    /// A panic's payload as text.
    pub fn describe(what: &str, payload: &(dyn std::any::Any + Send)) -> String {
        let text = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".into());
        format!("the {what} thread panicked: {text}")
    }
}

impl WriterHandle {
    /// Queue `op` and wait for its commit.
    pub async fn submit(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        let (reply, answer) = oneshot::channel();
        if self.tx.send(Request::Write(op, reply)).await.is_err() {
            return Err(self.gone().await);
        }
        match answer.await {
            Ok(result) => result,
            Err(_) => Err(self.gone().await),
        }
    }

    /// Why the writer no longer answers: it was shut down, or it failed (its thread records
    /// why just after unwinding dropped the replies it held, so that record is waited for).
    async fn gone(&self) -> StoreError {
        if self.failure.shut_down.load(std::sync::atomic::Ordering::SeqCst) {
            return StoreError::Closed;
        }
        let failed = tokio::time::timeout(std::time::Duration::from_secs(1), self.failure.wait());
        match failed.await {
            Ok(message) => StoreError::Failed(message),
            Err(_) => StoreError::Closed,
        }
    }

    /// The store's failure record (shared with the loader and the owner).
    pub fn failure(&self) -> Arc<Failure> {
        self.failure.clone()
    }

    /// Hand the writer a copy of `index` loaded off its thread (blocking: the loader is a
    /// plain thread).
    pub fn loaded(&self, index: String, builder: Option<Builder>, as_of: u64) {
        let _ = self.tx.blocking_send(Request::Loaded {
            index,
            builder,
            as_of,
        });
    }

    /// Every index is loaded: have DuckDB drop the blocks the loader read, between two
    /// transactions, and wait until it has (blocking: the loader is a plain thread). The
    /// caller must keep every reader out meanwhile: DuckDB's memory limit is lowered to a
    /// few MiB for that moment, and a query running then would run out of memory.
    pub fn shed_cache(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.blocking_send(Request::ShedCache(done)).is_ok() {
            let _ = wait.blocking_recv();
        }
    }

    /// Let queued writes commit, then close the database. Later writes get `Closed`.
    pub async fn shutdown(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Request::Shutdown(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

/// Start the writer thread on `conn`, the process's only read-write connection.
pub fn spawn(
    conn: Connection,
    catalog: Arc<RwLock<Catalog>>,
    memory: Arc<Memory>,
    (max_batch, panic_on): (usize, Option<String>),
    listener: SupersededListener,
) -> anyhow::Result<(WriterHandle, std::thread::JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
    let next_seq = documents::next_seq(&conn)?;
    let with_texts = documents::indexes_with_texts(&conn)?;
    let writer = Writer {
        conn,
        catalog,
        memory,
        keeper: Keeper::default(),
        changes: Vec::new(),
        superseded: Vec::new(),
        listener,
        max_batch: max_batch.max(1),
        next_seq,
        with_texts,
        panic_on,
        fate: Arc::new(Failure::default()),
    };
    let failed = writer.fate.clone();
    let failure = writer.fate.clone();
    let thread = std::thread::Builder::new()
        .name("stride-writer".into())
        .spawn(move || {
            // A panic must not look like a shutdown: it is recorded, and every caller and
            // the owner learn it. The connection went with the unwinding writer.
            if let Err(panic) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || writer.run(rx)))
            {
                failed.set(Failure::describe("writer", panic.as_ref()));
            }
        })?;
    Ok((WriterHandle { tx, failure }, thread))
}

struct Writer {
    conn: Connection,
    catalog: Arc<RwLock<Catalog>>,
    /// The in-memory copies: published after each COMMIT, under the gate.
    memory: Arc<Memory>,
    /// Our side of the in-memory copies (see `memory`).
    keeper: Keeper,
    /// What the open transaction changed, for the in-memory copy once it commits.
    changes: Vec<Change>,
    /// Document versions the open transaction superseded, for the pipeline once it commits.
    superseded: Vec<Superseded>,
    listener: SupersededListener,
    max_batch: usize,
    /// Version number of the next accepted document (see `documents`).
    next_seq: u64,
    /// Every index that may have rows in `documents` or `pending`: read at start, added to
    /// before any text of an index is written there, never taken from (a rolled-back
    /// transaction only leaves an index here for nothing). A vector write to any other
    /// index skips those two tables, two statements that cost a tenth of an upsert.
    with_texts: HashSet<String>,
    /// Test-only fault (`StoreOptions::writer_panic_on`).
    panic_on: Option<String>,
    /// Shared with every handle: the writer marks its shutdown here.
    fate: Arc<Failure>,
}

/// Why one operation did not apply.
enum OpError {
    /// A check refused it before any SQL ran: the transaction is still good.
    Rejected(StoreError),
    /// SQL failed: the transaction is aborted.
    Failed(String),
}

impl From<duckdb::Error> for OpError {
    fn from(e: duckdb::Error) -> Self {
        OpError::Failed(e.to_string())
    }
}

type OpResult = Result<WriteOutcome, OpError>;

impl Writer {
    fn run(mut self, mut rx: mpsc::Receiver<Request>) {
        while let Some(first) = rx.blocking_recv() {
            let mut batch = Vec::new();
            let mut shutdown = None;
            let mut next = Some(first);
            while let Some(request) = next.take() {
                match request {
                    Request::Write(op, reply) => batch.push((op, reply)),
                    Request::Shutdown(done) => shutdown = Some(done),
                    Request::Loaded {
                        index,
                        builder,
                        as_of,
                    } => {
                        // Between transactions: no change of this batch is published yet.
                        let _gate = self.memory.gate();
                        self.keeper.loaded(&self.memory, &index, builder, as_of);
                    }
                    // Between transactions too: no write of ours holds DuckDB memory now.
                    Request::ShedCache(done) => {
                        shed_cache(&self.conn);
                        let _ = done.send(());
                    }
                }
                if shutdown.is_none() && batch.len() < self.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            if !batch.is_empty() {
                self.commit_batch(batch);
            }
            if let Some(done) = shutdown {
                self.fate
                    .shut_down
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                rx.close();
                // Answer what raced in after the shutdown request instead of dropping it.
                while let Ok(request) = rx.try_recv() {
                    if let Request::Write(_, reply) = request {
                        let _ = reply.send(Err(StoreError::Closed));
                    }
                }
                self.close();
                let _ = done.send(());
                return;
            }
        }
        self.close();
    }

    fn close(self) {
        // CHECKPOINT folds the WAL into the file so that other programs (Mastra) open it
        // without a replay; failing it loses nothing, the WAL is replayed on next open.
        if let Err(e) = self.conn.execute_batch("CHECKPOINT") {
            let error = StoreError::engine(format!("checkpoint: {e}"));
            tracing::warn!(%error, "checkpoint at close failed; the WAL will be replayed on next open");
        }
        if let Err((_, e)) = self.conn.close() {
            tracing::warn!(error = %e, "closing the database failed");
        }
        tracing::info!("writer stopped; database closed");
    }

    /// Run the whole batch in one transaction; fall back to one transaction per request
    /// when any SQL fails.
    fn commit_batch(&mut self, batch: Vec<(WriteOp, Reply)>) {
        let (ops, replies): (Vec<WriteOp>, Vec<Reply>) = batch.into_iter().unzip();
        let size = ops.len();
        match self.run_transaction(&ops) {
            Ok(results) => {
                tracing::debug!(size, "group commit");
                for (reply, result) in replies.into_iter().zip(results) {
                    let _ = reply.send(result);
                }
            }
            Err(e) if size == 1 => {
                let _ = replies
                    .into_iter()
                    .next()
                    .map(|r| r.send(Err(StoreError::engine(e))));
            }
            Err(e) => {
                tracing::warn!(size, error = %e, "group commit failed; replaying one request per transaction");
                for (op, reply) in ops.into_iter().zip(replies) {
                    let result = match self.run_transaction(std::slice::from_ref(&op)) {
                        Ok(mut r) => r.pop().unwrap_or(Err(StoreError::Internal("no result".into()))),
                        Err(e) => Err(StoreError::engine(e)),
                    };
                    let _ = reply.send(result);
                }
            }
        }
    }

    /// Apply `ops` in one transaction. `Ok` holds each op's answer (refusals included) after
    /// a successful commit; `Err` means nothing was committed.
    fn run_transaction(&mut self, ops: &[WriteOp]) -> Result<Vec<Result<WriteOutcome, StoreError>>, String> {
        let mut working = self.catalog_snapshot();
        self.conn
            .execute_batch("BEGIN TRANSACTION")
            .map_err(|e| e.to_string())?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match self.apply(op, &mut working) {
                Ok(outcome) => results.push(Ok(outcome)),
                Err(OpError::Rejected(e)) => results.push(Err(e)),
                Err(OpError::Failed(e)) => {
                    self.rollback();
                    return Err(e);
                }
            }
        }
        // No search may start between COMMIT and publishing the copies it changed: it would
        // see the file and the in-memory copy at different commits. Searches hold the gate
        // only while they start, so this never waits on a search's length.
        let memory = self.memory.clone();
        let gate = memory.gate();
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            drop(gate);
            self.rollback();
            return Err(format!("commit failed: {e}"));
        }
        self.keeper.apply(&memory, std::mem::take(&mut self.changes));
        drop(gate);
        self.publish(working);
        let superseded = std::mem::take(&mut self.superseded);
        if !superseded.is_empty() {
            self.listener.push(superseded);
        }
        Ok(results)
    }

    fn rollback(&mut self) {
        if let Err(e) = self.conn.execute_batch("ROLLBACK") {
            tracing::debug!(error = %e, "rollback after a failed statement");
        }
        self.changes.clear();
        self.superseded.clear();
    }

    /// Note that the versions of `ids` accepted so far are superseded (`None`: the index's).
    fn supersede(&mut self, index: &str, ids: Option<Vec<String>>) {
        self.superseded.push(Superseded {
            index: index.to_string(),
            ids,
            before_seq: self.next_seq,
        });
    }

    fn catalog_snapshot(&self) -> Catalog {
        self.catalog.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn publish(&self, working: Catalog) {
        let mut shared = self.catalog.write().unwrap_or_else(|p| p.into_inner());
        if *shared != working {
            *shared = working;
        }
    }

    fn apply(&mut self, op: &WriteOp, working: &mut Catalog) -> OpResult {
        if let (Some(name), WriteOp::Upsert { index, .. }) = (&self.panic_on, op) {
            assert!(index != name, "test fault: a write to index {name:?}");
        }
        match op {
            WriteOp::CreateIndex {
                name,
                dimension,
                metric,
                ann: None,
            } => self.create_index(name, *dimension, *metric, working),
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
        working: &mut Catalog,
    ) -> OpResult {
        validate_index_name(name).map_err(OpError::Rejected)?;
        validate_dimension(dimension).map_err(OpError::Rejected)?;
        if let Some(existing) = working.get(name) {
            if existing.dimension == dimension && existing.metric == metric {
                return Ok(WriteOutcome::IndexCreated { created: false });
            }
            return Err(OpError::Rejected(StoreError::invalid(format!(
                "index \"{name}\" already exists with dimension {} and metric {}; asked for dimension {dimension} and metric {metric}",
                existing.dimension, existing.metric
            ))));
        }
        self.conn
            .execute_batch(&schema::create_index_table_sql(name, dimension))?;
        schema::register(&self.conn, name, dimension, metric, false)?;
        self.changes.push(Change::Create {
            index: name.to_string(),
            dimension,
            metric,
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
            self.conn
                .execute("DELETE FROM stride_vectors.indexes WHERE name = ?", params![name])?;
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
            self.create_index(index, dim, metric, working)?;
            created_index = true;
        }
        // Before the insert, so the new rows are never among the deleted ones.
        let deleted = match delete_filter {
            Some(filter) => Some(self.delete_rows(index, &Target::Filter(filter.clone()))?),
            None => None,
        };
        let rows = dedup_last_wins(rows.to_vec());
        self.write_rows(index, dimension, &rows)?;
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
    fn write_rows(&mut self, index: &str, dimension: usize, rows: &[VectorRow]) -> Result<(), OpError> {
        if rows.is_empty() {
            return Ok(());
        }
        let ids = documents::id_list(rows.iter().map(|r| r.id.as_str()))?;
        // The rows get new vectors: whatever text we had embedded for these ids no longer
        // describes them (an embedding commit records its hashes again right after).
        if self.with_texts.contains(index) {
            documents::forget_embedded(&self.conn, index, &ids)?;
        }
        self.conn
            .prepare_cached(&format!(
                "DELETE FROM {} WHERE id IN (SELECT unnest(from_json(?::JSON, '[\"VARCHAR\"]')))",
                quoted(index)
            ))?
            .execute(params![ids])?;
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
            self.create_index(index, dim, Metric::Cosine, working)?;
            self.record_model(index, model, working)?;
        }
        self.with_texts.insert(index.to_string());
        let accepted = documents::accept(
            &self.conn,
            index,
            working.get(index),
            model,
            docs,
            &mut self.next_seq,
        )?;
        // An unchanged text only rewrote the stored row's metadata.
        for (doc, answer) in docs.iter().zip(&accepted) {
            if answer.status == Acceptance::Unchanged {
                self.changes.push(Change::Metadata {
                    index: index.to_string(),
                    id: doc.id.clone(),
                    metadata: Metadata::object(&doc.metadata),
                });
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
        let dimension = first.vector.len();
        if let Some(info) = working.get(index) {
            check_embeddable(info, model, Some(dimension)).map_err(OpError::Rejected)?;
        }
        for doc in docs {
            validate_vector(
                &format!("embedding of id {:?}", doc.id),
                &doc.vector,
                Some(dimension),
            )
            .map_err(OpError::Rejected)?;
        }
        // Only a version that is still the latest accepted one is stored, with the metadata
        // its pending row holds now (an `update` may have patched it since).
        let mut fresh = Vec::with_capacity(docs.len());
        let mut rows = Vec::with_capacity(docs.len());
        let mut stale = Vec::new();
        for doc in docs {
            match documents::pending_of(&self.conn, index, &doc.id)? {
                Some(queued) if queued.seq == doc.seq => {
                    rows.push(VectorRow {
                        id: doc.id.clone(),
                        vector: doc.vector.clone(),
                        metadata: queued.metadata,
                    });
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
            self.create_index(index, dimension, Metric::Cosine, working)?;
        }
        if working.get(index).is_some_and(|i| i.model.is_none()) {
            self.record_model(index, model, working)?;
        }
        self.with_texts.insert(index.to_string());
        self.write_rows(index, dimension, &dedup_last_wins(rows))?;
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
        let ids = match target {
            Target::Ids(ids) => {
                if let Some(at) = ids.iter().position(|id| id.is_empty()) {
                    return Err(OpError::Rejected(StoreError::invalid(format!(
                        "id: the id is empty (ids[{at}])"
                    ))));
                }
                ids.clone()
            }
            Target::Filter(filter) => self.stored_matching(index, filter)?,
        };
        let mut count = 0;
        for id in &ids {
            if self.update_one(index, dimension, id, vector, metadata, mode)? {
                count += 1;
            } else if matches!(target, Target::Ids(_)) && !skip_missing {
                // Rows changed before this one make the transaction unclean: fail it whole.
                let message = format!("id: no vector with id {id:?} in index \"{index}\"");
                return Err(if count == 0 {
                    OpError::Rejected(StoreError::invalid(message))
                } else {
                    OpError::Failed(message)
                });
            }
        }
        Ok(WriteOutcome::Updated { count })
    }

    /// The ids of the stored rows of `index` that `filter` matches, sorted.
    fn stored_matching(&mut self, index: &str, filter: &CompiledFilter) -> Result<Vec<String>, OpError> {
        let sql = format!(
            "SELECT id FROM {} WHERE {} ORDER BY id",
            quoted(index),
            filter.sql
        );
        let mut stmt = self.conn.prepare(&sql)?;
        let rows = stmt.query_map(params_from_iter(filter.params.iter()), |r| r.get::<_, String>(0))?;
        Ok(rows.collect::<duckdb::Result<Vec<_>>>()?)
    }

    /// Update one stored row; false (and nothing changed) when there is none with this id.
    fn update_one(
        &mut self,
        index: &str,
        dimension: usize,
        id: &str,
        vector: Option<&[f32]>,
        metadata: Option<&Map<String, Value>>,
        mode: MetadataMode,
    ) -> Result<bool, OpError> {
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
            return Ok(false);
        }
        let ids = [id.to_string()];
        // The in-memory copy gets the metadata as DuckDB made it (a merge patch is DuckDB's).
        let stored: Option<String> = self.conn.query_row(
            &format!("SELECT metadata::VARCHAR FROM {} WHERE id = ?", quoted(index)),
            params![id],
            |r| r.get(0),
        )?;
        let stored = Metadata::parse(stored.as_deref())
            .map_err(|e| OpError::Failed(format!("the metadata stored for id {id:?} is not JSON: {e}")))?;
        if let Some(v) = vector {
            // A new vector supersedes any text still waiting to be embedded for this id.
            documents::forget(&self.conn, index, &ids)?;
            documents::drop_pending(&self.conn, index, &ids)?;
            self.supersede(index, Some(ids.to_vec()));
            self.changes.push(Change::Upsert {
                index: index.to_string(),
                rows: vec![(id.to_string(), v.to_vec(), stored)],
            });
        } else if let Some(m) = metadata {
            self.changes.push(Change::Metadata {
                index: index.to_string(),
                id: id.to_string(),
                metadata: stored,
            });
            // A version waiting to be embedded gets the same change, so that it does not
            // bring the old metadata back when it lands.
            documents::patch_pending_metadata(&self.conn, index, id, m, mode == MetadataMode::Merge)?;
        }
        Ok(true)
    }

    /// Delete rows and the versions of them waiting to be embedded. By filter, an id goes
    /// when its stored metadata or its waiting version's metadata matches.
    fn delete(&mut self, index: &str, target: &Target, working: &Catalog) -> OpResult {
        existing(index, working).map_err(OpError::Rejected)?;
        let count = self.delete_rows(index, target)?;
        Ok(WriteOutcome::Deleted { count })
    }

    /// [`Self::delete`] in an index known to exist: how many ids lost a row or a waiting
    /// version.
    fn delete_rows(&mut self, index: &str, target: &Target) -> Result<usize, OpError> {
        let table = quoted(index);
        let ids: Vec<String> = match target {
            Target::Ids(ids) => distinct(ids),
            Target::Filter(filter) => {
                let mut ids: std::collections::BTreeSet<String> =
                    self.stored_matching(index, filter)?.into_iter().collect();
                ids.extend(documents::pending_matching(&self.conn, index, filter)?);
                ids.into_iter().collect()
            }
        };
        let mut row_delete = self.conn.prepare(&format!("DELETE FROM {table} WHERE id = ?"))?;
        let mut rows_deleted = Vec::new();
        let mut count = 0;
        for id in &ids {
            let had_row = row_delete.execute(params![id])? > 0;
            let had_pending = documents::drop_pending(&self.conn, index, std::slice::from_ref(id))? > 0;
            if had_row {
                rows_deleted.push(id.clone());
            }
            if had_row || had_pending {
                count += 1;
            }
        }
        drop(row_delete);
        documents::forget(&self.conn, index, &ids)?;
        self.supersede(index, Some(ids));
        self.changes.push(Change::Delete {
            index: index.to_string(),
            ids: rows_deleted,
        });
        Ok(count)
    }
}

/// Let DuckDB drop the blocks the loader read: the copy holds those vectors now, and
/// searches do not read them from DuckDB. DuckDB evicts unpinned blocks when its limit is
/// lowered, so the limit is lowered for a moment and set back to exactly what it was (read
/// first: `RESET memory_limit` was measured to leave the lowered value in place). Run by the
/// writer between transactions, so that no write of ours meets the lowered limit; if DuckDB
/// cannot shed that much, it keeps what it has.
fn shed_cache(conn: &Connection) {
    let limit: String = match conn.query_row("SELECT current_setting('memory_limit')", [], |r| r.get(0)) {
        Ok(limit) => limit,
        Err(e) => {
            tracing::warn!(error = %e, "reading DuckDB's memory limit; its cache is kept");
            return;
        }
    };
    // SET takes no parameters. The value is DuckDB's own text (such as "18.8 GiB"), not a
    // user's, and it is checked to be only digits, letters, dots and spaces.
    if limit.is_empty()
        || !limit
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == ' ')
    {
        tracing::warn!(limit, "DuckDB's memory limit reads oddly; its cache is kept");
        return;
    }
    if let Err(e) = conn.execute_batch("SET memory_limit = '16MiB'") {
        tracing::debug!(error = %e, "DuckDB kept its cache after loading");
    }
    if let Err(e) = conn.execute_batch(&format!("SET memory_limit = '{limit}'")) {
        tracing::error!(error = %e, limit, "setting DuckDB's memory limit back after loading");
    }
}

fn existing<'a>(index: &str, working: &'a Catalog) -> Result<&'a IndexInfo, StoreError> {
    validate_index_name(index)?;
    working.get(index).ok_or_else(|| StoreError::unknown_index(index))
}

fn record_batch(dimension: usize, rows: &[VectorRow]) -> Result<RecordBatch, OpError> {
    let arrow_err =
        |e: duckdb::arrow::error::ArrowError| OpError::Failed(format!("building the Arrow batch: {e}"));
    let width = i32::try_from(dimension).map_err(|_| OpError::Failed("dimension too large".into()))?;
    let ids = StringArray::from_iter_values(rows.iter().map(|r| r.id.as_str()));
    let flat: Vec<f32> = rows.iter().flat_map(|r| r.vector.iter().copied()).collect();
    let item = Arc::new(Field::new("item", DataType::Float32, false));
    let vectors = FixedSizeListArray::try_new(item.clone(), width, Arc::new(Float32Array::from(flat)), None)
        .map_err(arrow_err)?;
    let metadata =
        StringArray::from_iter_values(rows.iter().map(|r| Value::Object(r.metadata.clone()).to_string()));
    let schema = Schema::new(vec![
        Field::new("id", DataType::Utf8, false),
        Field::new("vector", DataType::FixedSizeList(item, width), false),
        Field::new("metadata", DataType::Utf8, false),
    ]);
    let columns: Vec<ArrayRef> = vec![Arc::new(ids), Arc::new(vectors), Arc::new(metadata)];
    RecordBatch::try_new(Arc::new(schema), columns).map_err(arrow_err)
}
