//! The embedding pipeline: debounce, dedup, batching, and the durable pending queue.
//!
//! Clients hand us documents; we decide when and whether to embed them:
//!
//! - **Durable first.** A document is recorded as pending in the database (group-committed
//!   by the writer) before `embed` answers, and resumed from there after a restart.
//! - **Debounce** per (index, id): a trailing window keeps only the latest version, capped
//!   by a maximum wait measured from the first unembedded version, so constant edits land.
//! - **Dedup.** The writer compares the content hash (model, text) with what is stored: an
//!   unchanged document only has its metadata written. A version equal to one being embedded
//!   right now joins it, and equal texts in one batch are embedded once.
//! - **Batching.** Due documents are embedded `batch_size` at a time and stored in one
//!   transaction per batch.
//! - **Failures.** A transient one (timeout, 5xx, 429) keeps documents pending, retried
//!   with jittered exponential backoff and never sooner than the provider's `Retry-After`.
//!   A permanent one (a 4xx, a zero vector, a width the index cannot take) splits its batch
//!   until the documents at fault are alone, and *parks* them: shown by id in `stats`,
//!   retried only when their text changes, on `flush`, or after a restart.
//! - **Supersession.** The store decides what is stored: it writes an embedding only if its
//!   version is still the latest accepted one, in the same transaction, with the metadata
//!   the queue holds then. Writes that supersede queued versions (upsert, update with a
//!   vector, delete, delete_index) tell us after their commit, and we drop those versions
//!   from the schedule so no embedding is spent on them.
//! - **Bounds.** Texts held in memory are capped at 64 MiB ([`TEXT_BUDGET`]); beyond it they
//!   stay only in the durable queue and are read back when due. Every map here is pruned
//!   once its version is stored, superseded or parked.
//!
//! - **Shared queue (PostgreSQL).** When several processes write one database, the queue is
//!   theirs together: the database holds each version's due time, a process claims due
//!   versions with a lease (`FOR UPDATE SKIP LOCKED`), failures and parking are written
//!   back, and `LISTEN`/`NOTIFY` wakes the others (see `store/postgres/queue.rs`). This
//!   process then keeps only what is in flight here and the callers waiting on `wait`; a
//!   caller whose version another process embedded learns it from the database.
//!
//! The schedule is a `BTreeSet<(due, seq, key)>` woken by a `Notify` (the mini-redis expiry
//! shape). This module owns the schedule and the counters; it never runs SQL itself (it asks
//! the [`Store`]), and it never speaks MCP.
//!
//! Files: [`state`] (the schedule: waiting, in flight, parked, waiters), [`worker`] (this
//! process's worker: take what is due, embed, check, commit, park or retry), [`shared`]
//! (the same on a queue shared through PostgreSQL). The pipeline reaches the store only
//! through [`Durable`] and the model only through [`Embedder`](super::Embedder), so its
//! unit tests (`tests.rs`) drive it under paused time with a small model of each.

mod shared;
mod state;
#[cfg(test)]
mod tests;
mod worker;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::{Map, Value};
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::{content_hash, ModelState, SharedEmbedder};
use crate::store::{
    validate_index_name, Acceptance, Hit, IndexInfo, NewDocument, PendingDocument, SharedQueue, Store,
    StoreError, SupersededFeed, WriteOp, WriteOutcome,
};
use state::{Entry, Key, State};
use worker::{Counters, Inner};

/// The queued version (seq, text) of each key that still has one.
pub type QueuedTexts = HashMap<Key, (u64, String)>;

/// What the pipeline needs of the store, and nothing more: the durable queue's writes and
/// reads, an index's shape, and the feed of versions that committed writes superseded.
/// [`Store`] is the real one; the unit tests use a small model.
pub trait Durable: Send + Sync + 'static {
    /// Apply one write; answers once it committed (or was refused).
    fn write(&self, op: WriteOp) -> BoxFuture<'_, Result<WriteOutcome, StoreError>>;
    /// Every version waiting to be embedded, oldest first.
    fn load_pending(&self) -> BoxFuture<'_, Result<Vec<PendingDocument>, StoreError>>;
    /// The queued version (seq, text) of each key that still has one.
    fn pending_texts(&self, keys: Vec<Key>) -> BoxFuture<'_, Result<QueuedTexts, StoreError>>;
    /// The committed shape of one index.
    fn index_info<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<IndexInfo, StoreError>>;
    /// The queue shared with other processes, if there is one (PostgreSQL).
    fn shared_queue(&self) -> Option<SharedQueue>;
    /// Versions that committed writes superseded, in commit order.
    fn superseded(&self) -> Arc<SupersededFeed>;
    /// Every stored row of a document (all of its chunks), with vectors; none when it has
    /// no row. What a long text's unchanged pieces are reused from.
    fn document_rows(&self, index: IndexInfo, id: String) -> BoxFuture<'_, Result<Vec<Hit>, StoreError>> {
        let _ = (index, id);
        Box::pin(async { Ok(Vec::new()) })
    }
}

impl Durable for Store {
    fn write(&self, op: WriteOp) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        Box::pin(Store::write(self, op))
    }
    fn load_pending(&self) -> BoxFuture<'_, Result<Vec<PendingDocument>, StoreError>> {
        Box::pin(Store::load_pending(self))
    }
    fn pending_texts(&self, keys: Vec<Key>) -> BoxFuture<'_, Result<QueuedTexts, StoreError>> {
        Box::pin(Store::pending_texts(self, keys))
    }
    fn index_info<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<IndexInfo, StoreError>> {
        Box::pin(Store::index_info(self, name))
    }
    fn shared_queue(&self) -> Option<SharedQueue> {
        Store::shared_queue(self)
    }
    fn superseded(&self) -> Arc<SupersededFeed> {
        Store::superseded(self)
    }
    fn document_rows(&self, index: IndexInfo, id: String) -> BoxFuture<'_, Result<Vec<Hit>, StoreError>> {
        Box::pin(async move { Store::document_rows(self, &index, &id).await })
    }
}

#[derive(Debug, Clone)]
pub struct PipelineConfig {
    pub debounce: Duration,
    pub max_wait: Duration,
    pub batch_size: usize,
    /// How long `embed` with `wait: true` waits before answering `queued`.
    pub wait_timeout: Duration,
}

/// A document as the `embed` tool receives it.
#[derive(Debug, Clone)]
pub struct Document {
    pub id: String,
    pub text: String,
    pub metadata: Map<String, Value>,
}

/// The answer for one document of an `embed` call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocStatus {
    Queued,
    Coalesced,
    Unchanged,
    Indexed,
}

/// A document's status, and with `wait`, why it is not indexed yet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocOutcome {
    pub status: DocStatus,
    pub error: Option<String>,
}

/// A snapshot of the pipeline for `stats`.
#[derive(Debug, Clone)]
pub struct PipelineStats {
    pub pending: usize,
    pub oldest_pending_ms: Option<u64>,
    pub accepted: u64,
    pub coalesced: u64,
    pub unchanged: u64,
    pub embedding_calls: u64,
    pub texts_embedded: u64,
    /// Versions whose embedding (or failure) came back after a later write had won:
    /// dropped, never stored, retried or parked.
    pub discarded: u64,
    /// Pieces of long texts that kept their stored vector: an edit re-embedded only the
    /// pieces whose text changed.
    pub pieces_reused: u64,
    pub committed: u64,
    pub last_error: Option<String>,
    pub model: String,
    pub model_state: ModelState,
    /// Parked versions, by index and id (at most [`PARKED_SHOWN`]).
    pub parked: Vec<ParkedDocument>,
    pub parked_count: usize,
}

/// Most parked documents `stats` lists (their count is always given).
pub const PARKED_SHOWN: usize = 100;

/// What `flush` did.
#[derive(Debug, Clone)]
pub struct FlushReport {
    pub committed: u64,
    pub pending: usize,
    /// Versions that failed for good again (see [`ParkedDocument`]).
    pub parked: usize,
}

/// A version set aside after a failure retrying would not fix.
#[derive(Debug, Clone)]
pub struct ParkedDocument {
    pub index: String,
    pub id: String,
    pub error: String,
}

/// Longest wait at shutdown for the pipeline's tasks to end after they were told to.
const TASKS_GRACE: Duration = Duration::from_secs(2);

/// Handle to the pipeline. Clone it freely.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

impl Pipeline {
    /// Start the pipeline's worker and resume what the database has pending. Its tasks end
    /// when `stop` is cancelled (a child of the process's token) or at [`Pipeline::shutdown`].
    pub async fn start(
        store: Arc<dyn Durable>,
        embedder: SharedEmbedder,
        config: PipelineConfig,
        stop: CancellationToken,
    ) -> Result<Pipeline, StoreError> {
        let shared = store.shared_queue();
        // A shared queue is claimed from the database as versions fall due; a queue of our
        // own is scheduled here, from what the database holds.
        let pending = match shared {
            Some(_) => Vec::new(),
            None => store.load_pending().await?,
        };
        let inner = Arc::new(Inner {
            superseded: store.superseded(),
            store,
            shared: shared.clone(),
            shared_failures: AtomicU32::new(0),
            embedder,
            config,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            progress: watch::channel(0).0,
            accepting: AtomicBool::new(true),
            stop,
            tasks: TaskTracker::new(),
            learned_dimension: AtomicU64::new(0),
            counters: Counters::default(),
        });
        if !pending.is_empty() {
            tracing::info!(documents = pending.len(), "resuming pending embeddings");
        }
        {
            let now = Instant::now();
            let mut state = inner.lock();
            for doc in pending {
                let (key, entry) = Entry::from_queue(doc, now);
                state.schedule(key, entry);
            }
        }
        // Writes that supersede versions (upsert, delete, ...) hand them over right after
        // they commit; this task drops them from the schedule (and `Inner::lock` catches up
        // first, so nothing answered after such a write sees them). Weak: the tasks must
        // not keep the pipeline alive.
        inner.tasks.spawn(follow_superseded(Arc::downgrade(&inner)));
        match shared {
            Some(queue) => {
                inner
                    .tasks
                    .spawn(shared::shared_worker(inner.clone(), queue.clone()));
                inner
                    .tasks
                    .spawn(shared::follow_shared_queue(Arc::downgrade(&inner), queue));
            }
            None => {
                inner.tasks.spawn(worker::worker(inner.clone()));
            }
        }
        inner.tasks.close();
        Ok(Pipeline { inner })
    }

    pub fn model(&self) -> &str {
        self.inner.embedder.model()
    }

    /// Accept documents for `index`. Answers once they are durable (or, with `wait`, once
    /// they are embedded and committed, up to the configured wait timeout).
    pub async fn submit(
        &self,
        index: &str,
        docs: Vec<Document>,
        wait: bool,
    ) -> Result<Vec<DocOutcome>, StoreError> {
        if !self.inner.accepting.load(Ordering::SeqCst) {
            return Err(StoreError::Closed);
        }
        validate_index_name(index)?;
        let model = self.inner.embedder.model().to_string();
        let (unique, position) = last_version_per_id(&docs);
        let new_docs: Vec<NewDocument> = unique
            .iter()
            .map(|&i| NewDocument {
                id: docs[i].id.clone(),
                text: docs[i].text.clone(),
                metadata: docs[i].metadata.clone(),
                hash: content_hash(&model, &docs[i].text),
            })
            .collect();
        let op = WriteOp::Accept {
            index: index.to_string(),
            model,
            dimension: self.inner.dimension(),
            docs: new_docs.clone(),
            due_in: if wait {
                Duration::ZERO
            } else {
                self.inner.config.debounce
            },
            max_wait: self.inner.config.max_wait,
        };
        let accepted = match self.inner.store.write(op).await? {
            WriteOutcome::Accepted(a) => a,
            other => {
                return Err(StoreError::Internal(format!(
                    "unexpected writer outcome {other:?}"
                )))
            }
        };
        let mut waits = Vec::new();
        let mut statuses = Vec::with_capacity(accepted.len());
        {
            let mut state = self.inner.lock();
            for (u, (doc, acc)) in new_docs.into_iter().zip(&accepted).enumerate() {
                let key = (index.to_string(), doc.id.clone());
                statuses.push(acc.status);
                let waiter = if self.inner.shared.is_some() {
                    shared::record_shared(&mut state, key, acc.seq, acc.status, wait)
                } else {
                    self.inner.record(&mut state, key, doc, acc.seq, acc.status, wait)
                };
                if let Some(rx) = waiter {
                    waits.push((u, rx));
                }
            }
        }
        if wait && self.inner.shared.is_some() {
            // A version parked for good answers at once, as on a queue of our own.
            self.inner.resolve_shared_waiters().await;
        }
        self.inner.count(&statuses, docs.len() - unique.len());
        self.inner.wake.notify_one();
        let waited = self.wait_all(waits).await;
        Ok(position
            .into_iter()
            .map(|slot| match slot {
                None => DocOutcome {
                    status: DocStatus::Coalesced,
                    error: None,
                },
                Some(u) => {
                    let status = match statuses[u] {
                        Acceptance::Unchanged => DocStatus::Unchanged,
                        Acceptance::Queued => DocStatus::Queued,
                        Acceptance::Coalesced => DocStatus::Coalesced,
                    };
                    match waited.get(&u) {
                        Some(Ok(())) => DocOutcome {
                            status: DocStatus::Indexed,
                            error: None,
                        },
                        Some(Err(e)) => DocOutcome {
                            status,
                            error: Some(e.clone()),
                        },
                        None => DocOutcome { status, error: None },
                    }
                }
            })
            .collect())
    }

    /// Wait for each waiter (up to the wait timeout); the answer per unique document.
    async fn wait_all(
        &self,
        waits: Vec<(usize, oneshot::Receiver<Result<(), String>>)>,
    ) -> HashMap<usize, Result<(), String>> {
        let deadline = Instant::now() + self.inner.config.wait_timeout;
        let mut out = HashMap::new();
        for (u, rx) in waits {
            let outcome = match tokio::time::timeout_at(deadline, rx).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err("the server stopped before it was indexed; it stays pending".to_string()),
                Err(_) => Err(format!(
                    "not indexed within {} s; it stays pending",
                    self.inner.config.wait_timeout.as_secs()
                )),
            };
            out.insert(u, outcome);
        }
        out
    }

    /// Embed a search query now (never debounced), with the model of `index`.
    pub async fn embed_query(&self, index: &IndexInfo, text: &str) -> Result<Vec<f32>, String> {
        let embedder = &self.inner.embedder;
        if let Some(model) = index.model.as_deref().filter(|m| *m != embedder.model()) {
            return Err(format!(
                "query: index \"{}\" holds embeddings of model {model:?}, but this server embeds with {:?}; search it with `vector`",
                index.name,
                embedder.model()
            ));
        }
        self.inner
            .counters
            .embedding_calls
            .fetch_add(1, Ordering::Relaxed);
        self.inner.counters.texts_embedded.fetch_add(1, Ordering::Relaxed);
        let mut vectors = embedder
            .embed(std::slice::from_ref(&text.to_string()))
            .await
            .map_err(|e| format!("query: {e}"))?;
        self.inner.learn_dimension(&vectors);
        let vector = vectors.pop().ok_or("query: the embedder returned nothing")?;
        if vector.len() != index.dimension {
            return Err(format!(
                "query: model {:?} makes {}-dimensional vectors, index \"{}\" has {}",
                embedder.model(),
                vector.len(),
                index.name,
                index.dimension
            ));
        }
        Ok(vector)
    }

    /// Make everything pending (for `index`, or all) due now and wait until it is committed
    /// or `timeout` passes.
    pub async fn flush(&self, index: Option<&str>, timeout: Duration) -> FlushReport {
        if let Some(queue) = &self.inner.shared {
            return self.flush_shared(queue, index, timeout).await;
        }
        let before = *self.inner.progress.borrow();
        self.inner.make_due(index);
        let mut progress = self.inner.progress.subscribe();
        let deadline = Instant::now() + timeout;
        while self.inner.lock().pending_for(index) > 0 {
            if tokio::time::timeout_at(deadline, progress.changed())
                .await
                .is_err()
            {
                break;
            }
        }
        self.local_report(index, *self.inner.progress.borrow() - before)
    }

    /// What this process's schedule holds for `index` (or all), with `committed`.
    fn local_report(&self, index: Option<&str>, committed: u64) -> FlushReport {
        let state = self.inner.lock();
        FlushReport {
            committed,
            pending: state.pending_for(index),
            parked: state.parked_for(index),
        }
    }

    /// Stop accepting, flush within `timeout`, stop the worker. What is left stays pending
    /// on disk and is resumed by the next start.
    pub async fn shutdown(&self, timeout: Duration) -> FlushReport {
        self.inner.accepting.store(false, Ordering::SeqCst);
        let report = if timeout.is_zero() {
            // Nothing is made due: what waits stays on disk for the next owner.
            self.local_report(None, 0)
        } else {
            self.flush(None, timeout).await
        };
        self.inner.stop.cancel();
        // Each task ends at its next await; an embedding in flight is dropped (its versions
        // are still pending on disk, and a commit already sent is the writer's to finish).
        if tokio::time::timeout(TASKS_GRACE, self.inner.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("pipeline tasks still running at shutdown; they stop with the process");
        }
        if let Some(queue) = &self.inner.shared {
            // What we still hold goes back to the others at once, not after the lease.
            if let Err(e) = queue.release_claims().await {
                tracing::warn!(error = %e, "could not hand back claimed embeddings; they return when their lease ends");
            }
        }
        if report.pending > 0 && timeout.is_zero() {
            tracing::info!(
                pending = report.pending,
                "documents stay pending on disk for the next owner"
            );
        } else if report.pending > 0 {
            tracing::warn!(
                pending = report.pending,
                "shutdown deadline reached; documents stay pending on disk"
            );
        }
        report
    }

    pub async fn stats(&self) -> PipelineStats {
        let mut stats = self.local_stats();
        if let Some(queue) = &self.inner.shared {
            // The queue is everyone's: its counts are the database's.
            match (queue.counts(None).await, queue.parked(PARKED_SHOWN).await) {
                (Ok(counts), Ok(parked)) => {
                    stats.pending = counts.pending;
                    stats.oldest_pending_ms = counts.oldest_ms;
                    stats.parked_count = counts.parked;
                    stats.parked = parked
                        .into_iter()
                        .map(|(index, id, error)| ParkedDocument { index, id, error })
                        .collect();
                }
                (Err(e), _) | (_, Err(e)) => stats.last_error = Some(e.to_string()),
            }
        }
        stats
    }

    fn local_stats(&self) -> PipelineStats {
        let state = self.inner.lock();
        let now = Instant::now();
        let oldest = state
            .waiting
            .values()
            .map(|e| e.first_seen)
            .chain(
                state
                    .in_flight
                    .values()
                    .filter(|f| !f.superseded)
                    .map(|f| f.first_seen),
            )
            .min();
        let c = &self.inner.counters;
        PipelineStats {
            pending: state.pending_for(None),
            oldest_pending_ms: oldest.map(|t| now.saturating_duration_since(t).as_millis() as u64),
            accepted: c.accepted.load(Ordering::Relaxed),
            coalesced: c.coalesced.load(Ordering::Relaxed),
            unchanged: c.unchanged.load(Ordering::Relaxed),
            embedding_calls: c.embedding_calls.load(Ordering::Relaxed),
            texts_embedded: c.texts_embedded.load(Ordering::Relaxed),
            discarded: c.discarded.load(Ordering::Relaxed),
            pieces_reused: c.pieces_reused.load(Ordering::Relaxed),
            committed: *self.inner.progress.borrow(),
            last_error: state.last_error.clone(),
            model: self.inner.embedder.model().to_string(),
            model_state: self.inner.embedder.state(),
            parked: {
                let mut parked: Vec<ParkedDocument> = state
                    .parked
                    .iter()
                    .map(|((index, id), p)| ParkedDocument {
                        index: index.clone(),
                        id: id.clone(),
                        error: p.error.clone(),
                    })
                    .collect();
                parked.sort_by(|a, b| (&a.index, &a.id).cmp(&(&b.index, &b.id)));
                parked.truncate(PARKED_SHOWN);
                parked
            },
            parked_count: state.parked.len(),
        }
    }
}

/// For each input position: `Some(u)` if it is the last version of its id (index into the
/// deduplicated list), `None` if a later input of the same call replaced it.
fn last_version_per_id(docs: &[Document]) -> (Vec<usize>, Vec<Option<usize>>) {
    let mut last: HashMap<&str, usize> = HashMap::new();
    for (i, d) in docs.iter().enumerate() {
        last.insert(d.id.as_str(), i);
    }
    let mut unique = Vec::new();
    let mut position = Vec::with_capacity(docs.len());
    for (i, d) in docs.iter().enumerate() {
        if last[d.id.as_str()] == i {
            position.push(Some(unique.len()));
            unique.push(i);
        } else {
            position.push(None);
        }
    }
    (unique, position)
}

/// Drop from the schedule what committed writes superseded, as the store hands it over.
async fn follow_superseded(inner: std::sync::Weak<Inner>) {
    let Some((feed, stop)) = inner.upgrade().map(|i| (i.superseded.clone(), i.stop.clone())) else {
        return;
    };
    loop {
        tokio::select! {
            _ = feed.pushed() => {}
            _ = stop.cancelled() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        drop(inner.lock()); // catches up with the feed
        inner.progress.send_modify(|_| {});
    }
}
