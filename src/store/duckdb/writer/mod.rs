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
//!
//! This file holds the handle, the thread and its loop (batches, transactions, commits,
//! answers). What each operation does in SQL is [`ops`]; how a write on a long text's id
//! reaches all of its chunk rows is [`chunks`]; the Arrow batch that carries rows to
//! DuckDB's appender is [`arrow`].

mod arrow;
mod chunks;
mod ops;

use std::collections::HashSet;
use std::sync::{Arc, RwLock};

use duckdb::Connection;
use tokio::sync::{mpsc, oneshot};

use super::documents;
use super::Catalog;
use crate::store::api::*;
use crate::store::memory::{Builder, Change, Keeper, Memory};

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
