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

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{content_hash, EmbedError, ModelState, SharedEmbedder};
use crate::store::{
    validate_index_name, Acceptance, EmbeddedDocument, IndexInfo, NewDocument, PendingDocument,
    QueuedVersion, SharedQueue, Store, StoreError, Superseded, WriteOp, WriteOutcome,
};

/// Longest pause between retries of a failing document.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

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

/// Handle to the pipeline. Clone it freely.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

type Key = (String, String);
/// Told whether its version was indexed, or why not.
type Waiter = oneshot::Sender<Result<(), String>>;

struct Inner {
    store: Store,
    /// The queue, when several processes share it (PostgreSQL): then due versions come
    /// from its claims, and failures and parking are written to it, instead of this
    /// process's schedule.
    shared: Option<SharedQueue>,
    /// Transient failures in a row on the shared queue (its backoff; reset on success).
    shared_failures: AtomicU64,
    embedder: SharedEmbedder,
    config: PipelineConfig,
    /// `std` mutex: held for map updates only, never across an await.
    state: Mutex<State>,
    /// Wakes the worker when something became due sooner than it planned.
    wake: Notify,
    /// Counts committed documents; `flush` and shutdown watch it move.
    progress: watch::Sender<u64>,
    accepting: AtomicBool,
    stop: CancellationToken,
    /// Width of the embedder's vectors once seen (0: not yet), for remote models that do
    /// not say it up front: it lets `embed` refuse a mismatched index before queueing.
    learned_dimension: AtomicU64,
    counters: Counters,
}

#[derive(Default)]
struct Counters {
    accepted: AtomicU64,
    coalesced: AtomicU64,
    unchanged: AtomicU64,
    embedding_calls: AtomicU64,
    texts_embedded: AtomicU64,
}

/// A version waiting for its due time. Its text is dropped (and read back from the durable
/// queue when it is due) once the texts held in memory pass [`TEXT_BUDGET`].
struct Entry {
    seq: u64,
    text: Option<String>,
    hash: String,
    first_seen: Instant,
    due: Instant,
    attempts: u32,
}

impl Entry {
    /// A queued version read back from the database, due now.
    fn from_queue(doc: PendingDocument, now: Instant) -> (Key, Entry) {
        let entry = Entry {
            seq: doc.seq,
            text: Some(doc.text),
            hash: doc.hash,
            first_seen: now,
            due: now,
            attempts: 0,
        };
        ((doc.index, doc.id), entry)
    }
}

/// A version being embedded.
struct Flight {
    seq: u64,
    first_seen: Instant,
    /// A committed write superseded this version while it was embedded: the writer will
    /// refuse it, it is not pending any more, and a failure does not bring it back.
    superseded: bool,
}

/// A version that failed for a reason retrying will not fix (a 4xx, a zero vector, a
/// mismatched width). It stays in the durable queue, is shown by `stats`, and is retried
/// only when its text changes, when `flush` asks, or after a restart.
struct Parked {
    seq: u64,
    hash: String,
    error: String,
    first_seen: Instant,
}

/// Most bytes of waiting texts kept in memory; beyond it texts stay only in the database.
const TEXT_BUDGET: usize = 64 << 20;

/// What a waiter is told when a later write to its id won.
const SUPERSEDED: &str = "superseded by a later write to this id (upsert, update with a vector, delete or delete_index) before it was stored";

#[derive(Default)]
struct State {
    waiting: HashMap<Key, Entry>,
    schedule: BTreeSet<(Instant, u64, Key)>,
    in_flight: HashMap<Key, Flight>,
    parked: HashMap<Key, Parked>,
    waiters: HashMap<Key, Vec<(u64, Waiter)>>,
    /// Bytes of the texts held by `waiting`.
    text_bytes: usize,
    last_error: Option<String>,
}

impl State {
    fn unschedule(&mut self, key: &Key) -> Option<Entry> {
        let entry = self.waiting.remove(key)?;
        self.schedule.remove(&(entry.due, entry.seq, key.clone()));
        self.text_bytes -= entry.text.as_ref().map_or(0, String::len);
        Some(entry)
    }

    fn schedule(&mut self, key: Key, mut entry: Entry) {
        self.unschedule(&key);
        let len = entry.text.as_ref().map_or(0, String::len);
        if self.text_bytes + len > TEXT_BUDGET {
            entry.text = None;
        }
        self.text_bytes += entry.text.as_ref().map_or(0, String::len);
        self.schedule.insert((entry.due, entry.seq, key.clone()));
        self.waiting.insert(key, entry);
    }

    /// The newest version of `key` this pipeline knows, anywhere.
    fn newest_seq(&self, key: &Key) -> Option<u64> {
        let w = self.waiting.get(key).map(|e| e.seq);
        let f = self.live_flight(key).map(|f| f.seq);
        let p = self.parked.get(key).map(|p| p.seq);
        w.max(f).max(p)
    }

    /// Answer the waiters of `key` up to version `upto`: indexed, or why not.
    fn resolve(&mut self, key: &Key, upto: u64, outcome: Result<(), String>) {
        let Some(list) = self.waiters.get_mut(key) else {
            return;
        };
        for (_, tx) in list.extract_if(.., |(seq, _)| *seq <= upto) {
            let _ = tx.send(outcome.clone());
        }
        if list.is_empty() {
            self.waiters.remove(key);
        }
    }

    /// The in-flight version of `key` is done with (up to `seq`): take it out, and say
    /// whether a committed write had superseded it meanwhile.
    fn land(&mut self, key: &Key, seq: u64) -> bool {
        match self.in_flight.get(key) {
            Some(f) if f.seq <= seq => self.in_flight.remove(key).is_some_and(|f| f.superseded),
            _ => false,
        }
    }

    /// The version of `key` being embedded, unless a committed write superseded it.
    fn live_flight(&self, key: &Key) -> Option<&Flight> {
        self.in_flight.get(key).filter(|f| !f.superseded)
    }

    /// Parked versions are not counted: nothing will happen to them until asked. Nor are
    /// superseded versions still in flight: the writer will refuse them.
    fn pending_for(&self, index: Option<&str>) -> usize {
        let matches = |k: &&Key| index.is_none_or(|i| k.0 == i);
        let flying = self.in_flight.iter().filter(|(k, f)| matches(k) && !f.superseded);
        self.waiting.keys().filter(matches).count() + flying.count()
    }

    /// Parked versions of `index` (or of all).
    fn parked_for(&self, index: Option<&str>) -> usize {
        self.parked
            .keys()
            .filter(|k| index.is_none_or(|i| k.0 == i))
            .count()
    }

    /// Forget versions (waiting or parked) a committed write superseded; their waiters
    /// learn why. In flight ones are marked: the writer refuses them when they come to be
    /// stored, and a failure neither retries nor parks them.
    fn forget(&mut self, superseded: &[Superseded]) {
        for event in superseded {
            let hit = |k: &Key, seq: u64| {
                k.0 == event.index
                    && seq < event.before_seq
                    && event.ids.as_ref().is_none_or(|ids| ids.contains(&k.1))
            };
            let keys: Vec<Key> = (self.waiting.iter().map(|(k, e)| (k, e.seq)))
                .chain(self.parked.iter().map(|(k, p)| (k, p.seq)))
                .filter(|(k, seq)| hit(k, *seq))
                .map(|(k, _)| k.clone())
                .collect();
            for key in keys {
                let seq = match self.unschedule(&key) {
                    Some(entry) => Some(entry.seq),
                    None => self.parked.remove(&key).map(|p| p.seq),
                };
                if let Some(seq) = seq {
                    self.resolve(&key, seq, Err(SUPERSEDED.into()));
                }
            }
            let flying: Vec<(Key, u64)> = (self.in_flight.iter_mut())
                .filter(|(k, f)| !f.superseded && hit(k, f.seq))
                .map(|(k, f)| {
                    f.superseded = true;
                    (k.clone(), f.seq)
                })
                .collect();
            for (key, seq) in flying {
                self.resolve(&key, seq, Err(SUPERSEDED.into()));
            }
        }
    }
}

impl Pipeline {
    /// Start the pipeline's worker and resume what the database has pending.
    pub async fn start(
        store: Store,
        embedder: SharedEmbedder,
        config: PipelineConfig,
    ) -> Result<Pipeline, StoreError> {
        let shared = store.shared_queue();
        // A shared queue is claimed from the database as versions fall due; a queue of our
        // own is scheduled here, from what the database holds.
        let pending = match shared {
            Some(_) => Vec::new(),
            None => store.load_pending().await?,
        };
        let inner = Arc::new(Inner {
            store,
            shared: shared.clone(),
            shared_failures: AtomicU64::new(0),
            embedder,
            config,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            progress: watch::channel(0).0,
            accepting: AtomicBool::new(true),
            stop: CancellationToken::new(),
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
        // Writes that supersede versions (upsert, delete, ...) tell us right after they
        // commit. Weak: the store outlives nothing of ours, and must not keep us alive.
        let weak = Arc::downgrade(&inner);
        inner.store.on_superseded(move |superseded| {
            if let Some(inner) = weak.upgrade() {
                inner.lock().forget(superseded);
                inner.progress.send_modify(|_| {});
            }
        });
        match shared {
            Some(queue) => {
                tokio::spawn(shared_worker(inner.clone(), queue.clone()));
                tokio::spawn(follow_shared_queue(Arc::downgrade(&inner), queue));
            }
            None => {
                tokio::spawn(worker(inner.clone()));
            }
        }
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
                    record_shared(&mut state, key, acc.seq, acc.status, wait)
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
        let state = self.inner.lock();
        FlushReport {
            committed: *self.inner.progress.borrow() - before,
            pending: state.pending_for(index),
            parked: state.parked_for(index),
        }
    }

    /// Stop accepting, flush within `timeout`, stop the worker. What is left stays pending
    /// on disk and is resumed by the next start.
    pub async fn shutdown(&self, timeout: Duration) -> FlushReport {
        self.inner.accepting.store(false, Ordering::SeqCst);
        let report = self.flush(None, timeout).await;
        self.inner.stop.cancel();
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

impl Pipeline {
    /// [`Pipeline::flush`] on a shared queue: everything (of `index`) due now, then wait
    /// until the database holds nothing waiting for it (parked versions aside).
    async fn flush_shared(&self, queue: &SharedQueue, index: Option<&str>, timeout: Duration) -> FlushReport {
        let before = *self.inner.progress.borrow();
        let deadline = Instant::now() + timeout;
        if let Err(e) = queue.make_due(index).await {
            self.inner.lock().last_error = Some(e.to_string());
        }
        self.inner.wake.notify_one();
        let mut events = queue.events();
        let mut counts = queue.counts(index).await.unwrap_or_default();
        while counts.pending > 0 && Instant::now() < deadline {
            // A notification, or a look every half second for what no one announces (a
            // lease running out).
            let until = deadline.min(Instant::now() + Duration::from_millis(500));
            let _ = tokio::time::timeout_at(until, events.changed()).await;
            match queue.counts(index).await {
                Ok(c) => counts = c,
                Err(e) => self.inner.lock().last_error = Some(e.to_string()),
            }
        }
        FlushReport {
            committed: *self.inner.progress.borrow() - before,
            pending: counts.pending,
            parked: counts.parked,
        }
    }
}

/// [`Inner::record`] on a shared queue: only the waiter is kept here (the database holds
/// the schedule); an unchanged document is indexed already.
fn record_shared(
    state: &mut State,
    key: Key,
    seq: u64,
    status: Acceptance,
    wait: bool,
) -> Option<oneshot::Receiver<Result<(), String>>> {
    if status == Acceptance::Unchanged {
        state.resolve(&key, seq, Ok(()));
        return None;
    }
    wait.then(|| {
        let (tx, rx) = oneshot::channel();
        state.waiters.entry(key).or_default().push((seq, tx));
        rx
    })
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

impl Inner {
    fn dimension(&self) -> Option<usize> {
        self.embedder
            .dimension()
            .or(match self.learned_dimension.load(Ordering::Relaxed) {
                0 => None,
                n => Some(n as usize),
            })
    }

    fn learn_dimension(&self, vectors: &[Vec<f32>]) {
        if let Some(v) = vectors.first() {
            self.learned_dimension.store(v.len() as u64, Ordering::Relaxed);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a set of maps updated in small steps that keep it consistent; a
        // panicking holder cannot leave half an update worth refusing to read.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Fold one accepted version into the schedule; returns a waiter when asked to wait.
    fn record(
        &self,
        state: &mut State,
        key: Key,
        doc: NewDocument,
        seq: u64,
        status: Acceptance,
        wait: bool,
    ) -> Option<oneshot::Receiver<Result<(), String>>> {
        if state.newest_seq(&key).is_some_and(|s| s > seq) {
            return None; // A newer version was already recorded; the database agrees.
        }
        if status == Acceptance::Unchanged {
            state.unschedule(&key);
            state.parked.remove(&key);
            state.resolve(&key, seq, Ok(()));
            return None;
        }
        let now = Instant::now();
        // The max-wait counts from the first version not stored yet, even one in flight, so
        // that constant edits still land.
        let first_seen = state
            .waiting
            .get(&key)
            .map(|e| e.first_seen)
            .or(state.live_flight(&key).map(|f| f.first_seen))
            .unwrap_or(now);
        let waiter = wait.then(|| {
            let (tx, rx) = oneshot::channel();
            state.waiters.entry(key.clone()).or_default().push((seq, tx));
            rx
        });
        if let Some(parked) = state.parked.get_mut(&key) {
            if parked.hash == doc.hash {
                // Same text as the version that failed for good: it would fail the same way.
                parked.seq = seq;
                let error = parked.error.clone();
                state.resolve(&key, seq, Err(error));
                return waiter;
            }
            state.parked.remove(&key);
        }
        let due = if wait {
            now
        } else {
            (now + self.config.debounce).min(first_seen + self.config.max_wait)
        };
        let entry = Entry {
            seq,
            text: Some(doc.text),
            hash: doc.hash,
            first_seen,
            due,
            attempts: 0,
        };
        state.schedule(key, entry);
        waiter
    }

    fn count(&self, statuses: &[Acceptance], superseded_in_call: usize) {
        let c = &self.counters;
        c.accepted
            .fetch_add((statuses.len() + superseded_in_call) as u64, Ordering::Relaxed);
        let coalesced = statuses.iter().filter(|s| **s == Acceptance::Coalesced).count() + superseded_in_call;
        c.coalesced.fetch_add(coalesced as u64, Ordering::Relaxed);
        let unchanged = statuses.iter().filter(|s| **s == Acceptance::Unchanged).count();
        c.unchanged.fetch_add(unchanged as u64, Ordering::Relaxed);
    }

    /// Make everything waiting (for `index`, or all) due now, parked versions included.
    fn make_due(&self, index: Option<&str>) {
        let now = Instant::now();
        let mut state = self.lock();
        let matches = |k: &Key| index.is_none_or(|i| k.0 == i);
        let parked: Vec<Key> = state.parked.keys().filter(|k| matches(k)).cloned().collect();
        for key in parked {
            if let Some(p) = state.parked.remove(&key) {
                let entry = Entry {
                    seq: p.seq,
                    text: None,
                    hash: p.hash,
                    first_seen: p.first_seen,
                    due: now,
                    attempts: 0,
                };
                state.schedule(key, entry);
            }
        }
        let keys: Vec<Key> = state.waiting.keys().filter(|k| matches(k)).cloned().collect();
        for key in keys {
            if let Some(mut entry) = state.unschedule(&key) {
                entry.due = entry.due.min(now);
                state.schedule(key, entry);
            }
        }
        drop(state);
        self.wake.notify_one();
    }

    /// Take up to `batch_size` due versions and mark them in flight.
    fn take_due(&self) -> (Vec<(Key, Entry)>, Option<Instant>) {
        let now = Instant::now();
        let mut state = self.lock();
        let mut batch = Vec::new();
        while batch.len() < self.config.batch_size {
            let Some((due, _, key)) = state.schedule.first().cloned() else {
                break;
            };
            if due > now {
                break;
            }
            if let Some(entry) = state.unschedule(&key) {
                let flight = Flight {
                    seq: entry.seq,
                    first_seen: entry.first_seen,
                    superseded: false,
                };
                state.in_flight.insert(key.clone(), flight);
                batch.push((key, entry));
            }
        }
        let next = state.schedule.first().map(|(due, _, _)| *due);
        (batch, next)
    }

    /// Claimed versions, as a batch in flight.
    fn take_claimed(&self, docs: Vec<PendingDocument>) -> Vec<(Key, Entry)> {
        let now = Instant::now();
        let mut state = self.lock();
        docs.into_iter()
            .map(|doc| {
                let (key, entry) = Entry::from_queue(doc, now);
                state.in_flight.insert(
                    key.clone(),
                    Flight {
                        seq: entry.seq,
                        first_seen: now,
                        superseded: false,
                    },
                );
                (key, entry)
            })
            .collect()
    }

    /// Answer the waiters of this process whose versions another process finished (or a
    /// write superseded), from the database's view of their keys.
    async fn resolve_shared_waiters(&self) {
        let Some(queue) = &self.shared else { return };
        let keys: Vec<Key> = self.lock().waiters.keys().cloned().collect();
        if keys.is_empty() {
            return;
        }
        let states = match queue.states(&keys).await {
            Ok(states) => states,
            Err(e) => {
                tracing::debug!(error = %e, "reading the queue for waiting callers");
                return;
            }
        };
        let mut state = self.lock();
        for (key, now) in states {
            let Some(newest) = state
                .waiters
                .get(&key)
                .and_then(|w| w.iter().map(|(s, _)| *s).max())
            else {
                continue;
            };
            match now.pending {
                // Still queued: a version failed for good answers its waiters now.
                Some((seq, Some(error))) if seq >= newest => state.resolve(&key, seq, Err(error)),
                Some(_) => {}
                None if now.embedded => state.resolve(&key, newest, Ok(())),
                None => state.resolve(&key, newest, Err(SUPERSEDED.into())),
            }
        }
    }

    /// Read back the texts that were not kept in memory. A version no longer in the queue
    /// (superseded meanwhile) leaves the batch.
    async fn with_texts(&self, batch: Vec<(Key, Entry)>) -> Vec<(Key, Entry)> {
        let missing: Vec<Key> = batch
            .iter()
            .filter(|(_, e)| e.text.is_none())
            .map(|(k, _)| k.clone())
            .collect();
        if missing.is_empty() {
            return batch;
        }
        let mut texts = match self.store.pending_texts(missing).await {
            Ok(texts) => texts,
            Err(e) => {
                let (keep, retry): (Vec<_>, Vec<_>) = batch.into_iter().partition(|(_, e)| e.text.is_some());
                self.fail(retry, &EmbedError::Transient(e.to_string()));
                return keep;
            }
        };
        let mut out = Vec::with_capacity(batch.len());
        let mut state = self.lock();
        for (key, mut entry) in batch {
            if entry.text.is_none() {
                match texts.remove(&key) {
                    Some((seq, text)) if seq == entry.seq => entry.text = Some(text),
                    _ => {
                        if state.in_flight.get(&key).is_some_and(|f| f.seq == entry.seq) {
                            state.in_flight.remove(&key);
                        }
                        if state.newest_seq(&key).is_none_or(|s| s <= entry.seq) {
                            state.resolve(&key, entry.seq, Err(SUPERSEDED.into()));
                        }
                        continue;
                    }
                }
            }
            out.push((key, entry));
        }
        out
    }

    /// Embed a batch; a batch that fails for good is split until the documents at fault
    /// are alone, and those are parked, so one poison document never holds back the rest.
    async fn process(&self, batch: Vec<(Key, Entry)>) {
        let mut work = vec![self.with_texts(batch).await];
        while let Some(batch) = work.pop() {
            if batch.is_empty() {
                continue;
            }
            let mut texts: Vec<String> = Vec::new();
            let mut text_slot: HashMap<&str, usize> = HashMap::new();
            let slots: Vec<usize> = batch
                .iter()
                .map(|(_, e)| {
                    let text = e.text.as_deref().unwrap_or_default();
                    *text_slot.entry(text).or_insert_with(|| {
                        texts.push(text.to_string());
                        texts.len() - 1
                    })
                })
                .collect();
            self.counters.embedding_calls.fetch_add(1, Ordering::Relaxed);
            self.counters
                .texts_embedded
                .fetch_add(texts.len() as u64, Ordering::Relaxed);
            let error = match self.embedder.embed(&texts).await {
                Ok(vectors) if vectors.len() == texts.len() => {
                    let docs = batch
                        .into_iter()
                        .zip(slots)
                        .map(|((k, e), s)| (k, e, vectors[s].clone()))
                        .collect();
                    self.check_and_commit(docs).await;
                    continue;
                }
                Ok(vectors) => EmbedError::Permanent(format!(
                    "the embedder returned {} vectors for {} texts",
                    vectors.len(),
                    texts.len()
                )),
                Err(e) => e,
            };
            match error {
                EmbedError::Permanent(_) if batch.len() > 1 => {
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    work.push(second);
                    work.push(first);
                }
                EmbedError::Permanent(msg) => self.park(batch, &msg),
                transient => self.fail(batch, &transient),
            }
        }
    }

    /// Park the vectors no index could take (not finite, all zero, or of another width
    /// than the index or the rest of the batch); commit the others.
    async fn check_and_commit(&self, docs: Vec<(Key, Entry, Vec<f32>)>) {
        let mut widths: HashMap<usize, usize> = HashMap::new();
        for (_, _, v) in &docs {
            *widths.entry(v.len()).or_default() += 1;
        }
        let usual = widths.into_iter().max_by_key(|(w, n)| (*n, *w)).map(|(w, _)| w);
        let mut good = Vec::with_capacity(docs.len());
        for (key, entry, vector) in docs {
            let expected = self
                .store
                .index_info(&key.0)
                .await
                .ok()
                .map(|i| i.dimension)
                .or(self.embedder.dimension())
                .or(usual);
            let problem = if vector.is_empty() || vector.iter().all(|x| *x == 0.0) {
                Some("the embedder returned a zero vector".to_string())
            } else if vector.iter().any(|x| !x.is_finite()) {
                Some("the embedder returned a vector with NaN or infinite values".to_string())
            } else if expected.is_some_and(|d| d != vector.len()) {
                Some(format!(
                    "the embedder returned {} dimensions where index \"{}\" needs {}",
                    vector.len(),
                    key.0,
                    expected.unwrap_or_default()
                ))
            } else {
                None
            };
            match problem {
                Some(msg) => self.park(vec![(key, entry)], &msg),
                None => good.push((key, entry, vector)),
            }
        }
        if let Some((_, _, v)) = good.first() {
            self.learn_dimension(std::slice::from_ref(v));
        }
        self.commit(good).await;
    }

    /// Store embedded versions, one writer request per index, all in the same group commit.
    async fn commit(&self, docs: Vec<(Key, Entry, Vec<f32>)>) {
        let mut groups: HashMap<String, Vec<(Key, Entry, EmbeddedDocument)>> = HashMap::new();
        {
            let mut state = self.lock();
            for (key, entry, vector) in docs {
                let seq = self.newest_equal_version(&mut state, &key, &entry);
                let doc = EmbeddedDocument {
                    id: key.1.clone(),
                    seq,
                    hash: entry.hash.clone(),
                    vector,
                };
                groups.entry(key.0.clone()).or_default().push((key, entry, doc));
            }
        }
        let model = self.embedder.model().to_string();
        let writes = groups.into_iter().map(|(index, items)| {
            let docs = items.iter().map(|(_, _, d)| d.clone()).collect();
            let op = WriteOp::StoreEmbedded {
                index,
                model: model.clone(),
                docs,
            };
            async move { (self.store.write(op).await, items) }
        });
        for (result, items) in futures::future::join_all(writes).await {
            match result {
                Ok(WriteOutcome::Embedded { stale, .. }) => self.committed(items, &stale),
                Ok(other) => {
                    let batch = items.into_iter().map(|(k, e, _)| (k, e)).collect();
                    self.fail(
                        batch,
                        &EmbedError::Transient(format!("unexpected writer outcome {other:?}")),
                    );
                }
                // The index refuses these vectors (another model, another width): for good.
                Err(StoreError::Invalid(msg)) => {
                    self.park(items.into_iter().map(|(k, e, _)| (k, e)).collect(), &msg)
                }
                Err(e) => {
                    let batch = items.into_iter().map(|(k, e, _)| (k, e)).collect();
                    self.fail(batch, &EmbedError::Transient(e.to_string()));
                }
            }
        }
    }

    /// A newer version with the same text joins this embedding: its seq is the one stored.
    fn newest_equal_version(&self, state: &mut State, key: &Key, entry: &Entry) -> u64 {
        let joins = state
            .waiting
            .get(key)
            .is_some_and(|w| w.hash == entry.hash && w.seq > entry.seq);
        if joins {
            if let Some(newer) = state.unschedule(key) {
                if let Some(f) = state.in_flight.get_mut(key) {
                    // The newer version came after whatever superseded the older one.
                    f.seq = newer.seq;
                    f.superseded = false;
                }
                return newer.seq;
            }
        }
        entry.seq
    }

    /// The writer stored these, except the `stale` ones a later write had superseded.
    fn committed(&self, items: Vec<(Key, Entry, EmbeddedDocument)>, stale: &[String]) {
        let mut stored = 0;
        {
            let mut state = self.lock();
            for (key, _, doc) in items {
                state.land(&key, doc.seq);
                if !stale.contains(&doc.id) {
                    stored += 1;
                    state.resolve(&key, doc.seq, Ok(()));
                } else if state.newest_seq(&key).is_none_or(|s| s <= doc.seq) {
                    // Nothing newer will answer these waiters: say what happened.
                    state.resolve(&key, doc.seq, Err(SUPERSEDED.into()));
                }
            }
        }
        self.shared_failures.store(0, Ordering::Relaxed);
        self.progress.send_modify(|c| *c += stored);
    }

    /// Set aside versions that failed for good; their waiters learn why.
    fn park(&self, batch: Vec<(Key, Entry)>, error: &str) {
        tracing::warn!(
            documents = batch.len(),
            error,
            "embedding failed for good; parked until the text changes or flush"
        );
        let mut state = self.lock();
        state.last_error = Some(error.to_string());
        if let Some(queue) = &self.shared {
            let versions: Vec<QueuedVersion> = batch.iter().map(|(k, e)| (k.clone(), e.seq)).collect();
            for (key, entry) in &batch {
                state.land(key, entry.seq);
                state.resolve(key, entry.seq, Err(error.to_string()));
            }
            drop(state);
            let (queue, error) = (queue.clone(), error.to_string());
            tokio::spawn(async move {
                if let Err(e) = queue.park(&versions, &error).await {
                    tracing::warn!(error = %e, "could not park versions; they will be claimed again");
                }
            });
            self.progress.send_modify(|_| {});
            return;
        }
        for (key, entry) in batch {
            if state.land(&key, entry.seq) {
                continue; // Superseded while it was embedded: nothing left to park.
            }
            state.resolve(&key, entry.seq, Err(error.to_string()));
            if state.newest_seq(&key).is_some_and(|s| s > entry.seq) {
                continue; // A newer version waits: it gets its own chance.
            }
            let parked = Parked {
                seq: entry.seq,
                hash: entry.hash,
                error: error.to_string(),
                first_seen: entry.first_seen,
            };
            state.parked.insert(key, parked);
        }
        drop(state);
        self.progress.send_modify(|_| {});
    }

    /// Put versions that failed for now back with backoff (jittered, and never sooner than
    /// the provider's `Retry-After`), unless a newer version already waits.
    fn fail(&self, batch: Vec<(Key, Entry)>, error: &EmbedError) {
        tracing::warn!(documents = batch.len(), %error, "embedding failed; documents stay pending");
        if let Some(queue) = &self.shared {
            self.fail_shared(queue, batch, error);
            return;
        }
        let now = Instant::now();
        let mut state = self.lock();
        state.last_error = Some(error.to_string());
        for (key, mut entry) in batch {
            if state.land(&key, entry.seq) {
                continue; // Superseded while it was embedded: nothing left to retry.
            }
            state.resolve(&key, entry.seq, Err(error.to_string()));
            if state.newest_seq(&key).is_some_and(|s| s >= entry.seq) {
                continue;
            }
            entry.attempts += 1;
            let exponential =
                Duration::from_millis(500u64.saturating_mul(1 << entry.attempts.min(10))).min(MAX_BACKOFF);
            // Between half and the whole delay, so that many failing documents spread out.
            let backoff = exponential.mul_f64(0.5 + 0.5 * jitter());
            let backoff = match error {
                EmbedError::Throttled(_, after) => backoff.max(*after),
                _ => backoff,
            };
            entry.due = now + backoff;
            state.schedule(key, entry);
        }
        drop(state);
        self.progress.send_modify(|_| {});
    }
}

impl Inner {
    /// [`Inner::fail`] on a shared queue: the versions go back to the database, due after
    /// a backoff that grows with the failures in a row here.
    fn fail_shared(&self, queue: &SharedQueue, batch: Vec<(Key, Entry)>, error: &EmbedError) {
        let failures = self.shared_failures.fetch_add(1, Ordering::Relaxed) + 1;
        let exponential =
            Duration::from_millis(500u64.saturating_mul(1 << failures.min(10))).min(MAX_BACKOFF);
        let backoff = exponential.mul_f64(0.5 + 0.5 * jitter());
        let backoff = match error {
            EmbedError::Throttled(_, after) => backoff.max(*after),
            _ => backoff,
        };
        let versions: Vec<QueuedVersion> = batch.iter().map(|(k, e)| (k.clone(), e.seq)).collect();
        {
            let mut state = self.lock();
            state.last_error = Some(error.to_string());
            for (key, entry) in &batch {
                state.land(key, entry.seq);
                state.resolve(key, entry.seq, Err(error.to_string()));
            }
        }
        let queue = queue.clone();
        tokio::spawn(async move {
            if let Err(e) = queue.retry_later(&versions, backoff).await {
                tracing::warn!(error = %e, "could not give versions back; they return when their lease ends");
            }
        });
        self.progress.send_modify(|_| {});
    }
}

/// The worker on a shared queue: claim what is due, embed it, store it; between claims,
/// sleep until the next due time or lease end, a notification, or a local wake-up.
async fn shared_worker(inner: Arc<Inner>, queue: SharedQueue) {
    let model = inner.embedder.model().to_string();
    let mut events = queue.events();
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        match queue.claim(&model, inner.config.batch_size).await {
            Ok(docs) if !docs.is_empty() => {
                let batch = inner.take_claimed(docs);
                inner.process(batch).await;
                continue;
            }
            Ok(_) => {}
            Err(e) => {
                inner.lock().last_error = Some(e.to_string());
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = inner.stop.cancelled() => return,
                }
                continue;
            }
        }
        let next = queue.next_due(&model).await.ok().flatten();
        let sleep = next.unwrap_or(MAX_BACKOFF).min(MAX_BACKOFF);
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = events.changed() => {}
            _ = tokio::time::sleep(sleep) => {}
            _ = inner.stop.cancelled() => return,
        }
    }
}

/// On each change of a shared queue, answer this process's waiters whose versions were
/// finished elsewhere, and let `flush` look again.
async fn follow_shared_queue(inner: std::sync::Weak<Inner>, queue: SharedQueue) {
    let mut events = queue.events();
    while events.changed().await.is_ok() {
        let Some(inner) = inner.upgrade() else { return };
        inner.resolve_shared_waiters().await;
        inner.progress.send_modify(|_| {});
    }
}

/// A number in [0, 1) that differs from call to call (std's per-hasher random keys).
fn jitter() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

/// The background task: embed what is due, sleep until the next due time or a wake-up.
async fn worker(inner: Arc<Inner>) {
    loop {
        let (batch, next) = inner.take_due();
        if !batch.is_empty() {
            inner.process(batch).await;
            continue;
        }
        let sleep = match next {
            Some(at) => tokio::time::sleep_until(at),
            None => tokio::time::sleep(Duration::from_secs(3600)),
        };
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = sleep => {}
            _ = inner.stop.cancelled() => return,
        }
    }
}
