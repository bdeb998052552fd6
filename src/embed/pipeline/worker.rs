//! This process's worker and what it does with a batch: take the due versions, read back
//! texts not kept in memory, embed, check the vectors, commit them through the store, and
//! on failure park (for good) or schedule a retry (with the crate's backoff). `Inner` is
//! the state every part of the pipeline shares. It never speaks MCP and never runs SQL.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch, Notify};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::state::{Entry, Flight, Key, Parked, State, SUPERSEDED};
use super::{Durable, PipelineConfig};
use crate::embed::chunk::Piece;
use crate::embed::{EmbedError, SharedEmbedder};
use crate::retry::Backoff;
use crate::store::{
    Acceptance, EmbeddedDocument, EmbeddedPiece, NewDocument, PendingDocument, QueuedVersion, SharedQueue,
    StoreError, SupersededFeed, WriteOp, WriteOutcome,
};

/// Between retries of a failing document: 1 s doubling up to a minute, jittered.
pub(super) const BACKOFF: Backoff = Backoff::new(Duration::from_secs(1), 2, Duration::from_secs(60));

pub(super) struct Inner {
    pub(super) store: Arc<dyn Durable>,
    /// What committed writes superseded, handed over by the store; [`Inner::lock`] applies it.
    pub(super) superseded: Arc<SupersededFeed>,
    /// The queue, when several processes share it (PostgreSQL): then due versions come
    /// from its claims, and failures and parking are written to it, instead of this
    /// process's schedule.
    pub(super) shared: Option<SharedQueue>,
    /// Transient failures in a row on the shared queue (its backoff; reset on success).
    pub(super) shared_failures: AtomicU32,
    pub(super) embedder: SharedEmbedder,
    pub(super) config: PipelineConfig,
    /// `std` mutex: held for map updates only, never across an await.
    pub(super) state: Mutex<State>,
    /// Wakes the worker when something became due sooner than it planned.
    pub(super) wake: Notify,
    /// Counts committed documents; `flush` and shutdown watch it move.
    pub(super) progress: watch::Sender<u64>,
    pub(super) accepting: AtomicBool,
    pub(super) stop: CancellationToken,
    /// The pipeline's tasks (workers, followers, the shared queue's write-backs); shutdown
    /// waits for them.
    pub(super) tasks: TaskTracker,
    /// Width of the embedder's vectors once seen (0: not yet), for remote models that do
    /// not say it up front: it lets `embed` refuse a mismatched index before queueing.
    pub(super) learned_dimension: AtomicU64,
    pub(super) counters: Counters,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) accepted: AtomicU64,
    pub(super) coalesced: AtomicU64,
    pub(super) unchanged: AtomicU64,
    pub(super) embedding_calls: AtomicU64,
    pub(super) texts_embedded: AtomicU64,
    /// Versions whose embedding (or failure) came back after a later write had won.
    pub(super) discarded: AtomicU64,
    /// Pieces of long texts that kept their stored vector (their text did not change).
    pub(super) pieces_reused: AtomicU64,
}

/// A document of a batch, split: its pieces, and the vector each piece keeps, if any.
pub(super) struct Planned {
    pub(super) key: Key,
    pub(super) entry: Entry,
    pub(super) pieces: Vec<Piece>,
    pub(super) known: Vec<Option<Vec<f32>>>,
}

impl Inner {
    pub(super) fn dimension(&self) -> Option<usize> {
        self.embedder
            .dimension()
            .or(match self.learned_dimension.load(Ordering::Relaxed) {
                0 => None,
                n => Some(n as usize),
            })
    }

    pub(super) fn learn_dimension(&self, vectors: &[Vec<f32>]) {
        if let Some(v) = vectors.first() {
            self.learned_dimension.store(v.len() as u64, Ordering::Relaxed);
        }
    }

    /// The schedule, caught up with every write committed so far: what the store handed
    /// over as superseded is applied first, so that whoever looks after such a write was
    /// answered (a `stats`, a `flush`, an `embed` of the same id) never sees it pending.
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a set of maps updated in small steps that keep it consistent; a
        // panicking holder cannot leave half an update worth refusing to read.
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let superseded = self.superseded.take();
        if !superseded.is_empty() {
            state.forget(&superseded);
        }
        state
    }

    /// Fold one accepted version into the schedule; returns a waiter when asked to wait.
    pub(super) fn record(
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

    pub(super) fn count(&self, statuses: &[Acceptance], superseded_in_call: usize) {
        let c = &self.counters;
        c.accepted
            .fetch_add((statuses.len() + superseded_in_call) as u64, Ordering::Relaxed);
        let coalesced = statuses.iter().filter(|s| **s == Acceptance::Coalesced).count() + superseded_in_call;
        c.coalesced.fetch_add(coalesced as u64, Ordering::Relaxed);
        let unchanged = statuses.iter().filter(|s| **s == Acceptance::Unchanged).count();
        c.unchanged.fetch_add(unchanged as u64, Ordering::Relaxed);
    }

    /// Make everything waiting (for `index`, or all) due now, parked versions included.
    pub(super) fn make_due(&self, index: Option<&str>) {
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
    pub(super) fn take_due(&self) -> (Vec<(Key, Entry)>, Option<Instant>) {
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
    pub(super) fn take_claimed(&self, docs: Vec<PendingDocument>) -> Vec<(Key, Entry)> {
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
    pub(super) async fn resolve_shared_waiters(&self) {
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
    pub(super) async fn with_texts(&self, batch: Vec<(Key, Entry)>) -> Vec<(Key, Entry)> {
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
    /// A long text is embedded in pieces; a piece whose text the document's stored rows
    /// already hold keeps its vector, so an edit re-embeds only the pieces it changed.
    pub(super) async fn process(&self, batch: Vec<(Key, Entry)>) {
        let batch = self.with_texts(batch).await;
        let mut work = vec![self.plan(batch).await];
        while let Some(batch) = work.pop() {
            if batch.is_empty() {
                continue;
            }
            let mut texts: Vec<String> = Vec::new();
            let mut text_slot: HashMap<&str, usize> = HashMap::new();
            // Per document, per piece: the text to embed (its slot), or the vector it keeps.
            let slots: Vec<Vec<Option<usize>>> = batch
                .iter()
                .map(|p| {
                    let text = p.entry.text.as_deref().unwrap_or_default();
                    p.pieces
                        .iter()
                        .zip(&p.known)
                        .map(|(piece, known)| {
                            known.is_none().then(|| {
                                let piece_text = &text[piece.start..piece.end];
                                *text_slot.entry(piece_text).or_insert_with(|| {
                                    texts.push(piece_text.to_string());
                                    texts.len() - 1
                                })
                            })
                        })
                        .collect()
                })
                .collect();
            let result = if texts.is_empty() {
                Ok(Vec::new())
            } else {
                self.counters.embedding_calls.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .texts_embedded
                    .fetch_add(texts.len() as u64, Ordering::Relaxed);
                self.embedder.embed(&texts).await
            };
            let error = match result {
                Ok(vectors) if vectors.len() == texts.len() => {
                    let reused = batch
                        .iter()
                        .flat_map(|p| &p.known)
                        .filter(|k| k.is_some())
                        .count();
                    self.counters
                        .pieces_reused
                        .fetch_add(reused as u64, Ordering::Relaxed);
                    let docs = batch
                        .into_iter()
                        .zip(slots)
                        .map(|(p, slots)| {
                            let pieces = p
                                .pieces
                                .iter()
                                .zip(p.known)
                                .zip(slots)
                                .map(|((piece, known), slot)| EmbeddedPiece {
                                    start: piece.start,
                                    end: piece.end,
                                    vector: known
                                        .unwrap_or_else(|| vectors[slot.unwrap_or_default()].clone()),
                                })
                                .collect();
                            (p.key, p.entry, pieces)
                        })
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
                EmbedError::Permanent(msg) => {
                    self.park(batch.into_iter().map(|p| (p.key, p.entry)).collect(), &msg)
                }
                transient => self.fail(batch.into_iter().map(|p| (p.key, p.entry)).collect(), &transient),
            }
        }
    }

    /// The pieces of each document of a batch, and for a text in several pieces, the
    /// vectors its stored rows already have for the same piece texts. A document whose text
    /// cannot be split is parked (or retried, when that may pass).
    async fn plan(&self, batch: Vec<(Key, Entry)>) -> Vec<Planned> {
        let mut out = Vec::with_capacity(batch.len());
        for (key, entry) in batch {
            let text = entry.text.as_deref().unwrap_or_default();
            let pieces = match self.embedder.pieces(text).await {
                Ok(pieces) if !pieces.is_empty() => pieces,
                Ok(_) => vec![Piece {
                    start: 0,
                    end: text.len(),
                }],
                Err(EmbedError::Permanent(msg)) => {
                    self.park(vec![(key, entry)], &msg);
                    continue;
                }
                Err(e) => {
                    self.fail(vec![(key, entry)], &e);
                    continue;
                }
            };
            let known = match pieces.len() {
                1 => vec![None],
                _ => {
                    let stored = self.stored_pieces(&key).await;
                    pieces
                        .iter()
                        .map(|p| stored.get(&text[p.start..p.end]).cloned())
                        .collect()
                }
            };
            out.push(Planned {
                key,
                entry,
                pieces,
                known,
            });
        }
        out
    }

    /// The vectors of a document's stored chunks, by the text each keeps (only chunk rows:
    /// the pipeline wrote them, and an update keeps their text, so the text is what their
    /// vector embeds). Empty when the index keeps no text or the rows cannot be read (then
    /// every piece is embedded).
    async fn stored_pieces(&self, key: &Key) -> HashMap<String, Vec<f32>> {
        let Ok(info) = self.store.index_info(&key.0).await else {
            return HashMap::new();
        };
        let Some(field) = info.text.field.clone() else {
            return HashMap::new();
        };
        match self.store.document_rows(info, key.1.clone()).await {
            Ok(rows) => rows
                .into_iter()
                .filter_map(|hit| {
                    crate::store::chunks::chunk_of(&hit.id, &hit.metadata)?;
                    let text = hit.metadata.get(&field)?.as_str()?.to_string();
                    Some((text, hit.vector?))
                })
                .collect(),
            Err(e) => {
                tracing::debug!(error = %e, index = %key.0, id = %key.1, "reading a document's rows to reuse its pieces");
                HashMap::new()
            }
        }
    }

    /// Park the vectors no index could take (not finite, all zero, or of another width
    /// than the index or the rest of the batch); commit the others.
    pub(super) async fn check_and_commit(&self, docs: Vec<(Key, Entry, Vec<EmbeddedPiece>)>) {
        let mut widths: HashMap<usize, usize> = HashMap::new();
        for (_, _, pieces) in &docs {
            for p in pieces {
                *widths.entry(p.vector.len()).or_default() += 1;
            }
        }
        let usual = widths.into_iter().max_by_key(|(w, n)| (*n, *w)).map(|(w, _)| w);
        let mut good = Vec::with_capacity(docs.len());
        for (key, entry, pieces) in docs {
            let expected = self
                .store
                .index_info(&key.0)
                .await
                .ok()
                .map(|i| i.dimension)
                .or(self.embedder.dimension())
                .or(usual);
            let problem = pieces.iter().find_map(|p| {
                let vector = &p.vector;
                if vector.is_empty() || vector.iter().all(|x| *x == 0.0) {
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
                }
            });
            match problem {
                Some(msg) => self.park(vec![(key, entry)], &msg),
                None => good.push((key, entry, pieces)),
            }
        }
        if let Some(p) = good.first().and_then(|(_, _, p)| p.first()) {
            self.learn_dimension(std::slice::from_ref(&p.vector));
        }
        self.commit(good).await;
    }

    /// Store embedded versions, one writer request per index, all in the same group commit.
    pub(super) async fn commit(&self, docs: Vec<(Key, Entry, Vec<EmbeddedPiece>)>) {
        let mut groups: HashMap<String, Vec<(Key, Entry, EmbeddedDocument)>> = HashMap::new();
        {
            let mut state = self.lock();
            for (key, entry, pieces) in docs {
                let seq = self.newest_equal_version(&mut state, &key, &entry);
                let doc = EmbeddedDocument {
                    id: key.1.clone(),
                    seq,
                    hash: entry.hash.clone(),
                    pieces,
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
    pub(super) fn newest_equal_version(&self, state: &mut State, key: &Key, entry: &Entry) -> u64 {
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
    pub(super) fn committed(&self, items: Vec<(Key, Entry, EmbeddedDocument)>, stale: &[String]) {
        let mut stored = 0;
        {
            let mut state = self.lock();
            for (key, _, doc) in items {
                state.land(&key, doc.seq);
                if !stale.contains(&doc.id) {
                    stored += 1;
                    state.resolve(&key, doc.seq, Ok(()));
                    continue;
                }
                self.counters.discarded.fetch_add(1, Ordering::Relaxed);
                if state.newest_seq(&key).is_none_or(|s| s <= doc.seq) {
                    // Nothing newer will answer these waiters: say what happened.
                    state.resolve(&key, doc.seq, Err(SUPERSEDED.into()));
                }
            }
        }
        self.shared_failures.store(0, Ordering::Relaxed);
        self.progress.send_modify(|c| *c += stored);
    }

    /// Set aside versions that failed for good; their waiters learn why.
    pub(super) fn park(&self, batch: Vec<(Key, Entry)>, error: &str) {
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
            self.tasks.spawn(async move {
                if let Err(e) = queue.park(&versions, &error).await {
                    tracing::warn!(error = %e, "could not park versions; they will be claimed again");
                }
            });
            self.progress.send_modify(|_| {});
            return;
        }
        for (key, entry) in batch {
            if state.land(&key, entry.seq) {
                self.counters.discarded.fetch_add(1, Ordering::Relaxed);
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
    pub(super) fn fail(&self, batch: Vec<(Key, Entry)>, error: &EmbedError) {
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
                self.counters.discarded.fetch_add(1, Ordering::Relaxed);
                continue; // Superseded while it was embedded: nothing left to retry.
            }
            state.resolve(&key, entry.seq, Err(error.to_string()));
            if state.newest_seq(&key).is_some_and(|s| s >= entry.seq) {
                continue;
            }
            entry.attempts += 1;
            entry.due = now + BACKOFF.delay_at_least(entry.attempts, error.retry_after());
            state.schedule(key, entry);
        }
        drop(state);
        self.progress.send_modify(|_| {});
    }
}

/// The background task: embed what is due, sleep until the next due time or a wake-up.
pub(super) async fn worker(inner: Arc<Inner>) {
    loop {
        if inner.stop.is_cancelled() {
            return;
        }
        let (batch, next) = inner.take_due();
        if !batch.is_empty() {
            tokio::select! {
                _ = inner.process(batch) => {}
                _ = inner.stop.cancelled() => return,
            }
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
