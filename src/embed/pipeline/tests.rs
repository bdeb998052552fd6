//! The pipeline in-process, under paused time: a small model of the store's durable queue
//! ([`ModelStore`]: what `store/duckdb/documents.rs` and the writer decide, in maps) and a
//! scripted embedder, so that debounce, max wait, dedup, backoff with `Retry-After`,
//! parking and superseding are checked to the millisecond in milliseconds of real time.
//! The spawned-binary suites (`tests/seams.rs`, `tests/embed.rs`) check the same paths
//! end to end with the real writer and real providers.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::embed::{EmbedError, EmbedFuture, Embedder};
use crate::store::{Accepted, Superseded};

const INDEX: &str = "docs";
const MODEL: &str = "model-under-test";
const DIM: usize = 4;

/// The store's queue in maps: versions numbered in acceptance order, one pending version
/// per id (the latest), and the hash of what is stored per id.
#[derive(Default)]
struct Model {
    next_seq: u64,
    pending: HashMap<Key, (u64, String, String)>,
    stored: HashMap<Key, String>,
}

struct ModelStore {
    model: Mutex<Model>,
    feed: Arc<SupersededFeed>,
}

impl ModelStore {
    fn new() -> Arc<ModelStore> {
        Arc::new(ModelStore {
            model: Mutex::new(Model::default()),
            feed: Arc::default(),
        })
    }

    fn model(&self) -> std::sync::MutexGuard<'_, Model> {
        self.model.lock().unwrap()
    }

    /// An `upsert` of `id` with a vector of its own: it wins over every version accepted
    /// before it, and the writer tells the pipeline after the commit.
    fn upsert_vector(&self, id: &str, tag: &str) {
        let mut m = self.model();
        let key = (INDEX.to_string(), id.to_string());
        m.pending.remove(&key);
        m.stored.insert(key, format!("vector:{tag}"));
        let before_seq = m.next_seq;
        m.next_seq += 1;
        drop(m);
        self.feed.push(vec![Superseded {
            index: INDEX.into(),
            ids: Some(vec![id.into()]),
            before_seq,
        }]);
    }

    fn stored(&self, id: &str) -> Option<String> {
        self.model()
            .stored
            .get(&(INDEX.to_string(), id.to_string()))
            .cloned()
    }
}

impl Durable for ModelStore {
    fn write(&self, op: WriteOp) -> BoxFuture<'_, Result<WriteOutcome, StoreError>> {
        let outcome = match op {
            WriteOp::Accept { index, docs, .. } => {
                let mut m = self.model();
                let accepted = docs
                    .into_iter()
                    .map(|doc| {
                        let key = (index.clone(), doc.id.clone());
                        let seq = m.next_seq;
                        m.next_seq += 1;
                        let had_pending = m.pending.remove(&key).is_some();
                        let status = if m.stored.get(&key) == Some(&doc.hash) {
                            Acceptance::Unchanged
                        } else {
                            m.pending.insert(key, (seq, doc.text, doc.hash));
                            if had_pending {
                                Acceptance::Coalesced
                            } else {
                                Acceptance::Queued
                            }
                        };
                        Accepted {
                            id: doc.id,
                            status,
                            seq,
                        }
                    })
                    .collect();
                Ok(WriteOutcome::Accepted(accepted))
            }
            WriteOp::StoreEmbedded { index, docs, .. } => {
                let mut m = self.model();
                let (mut stored, mut stale) = (Vec::new(), Vec::new());
                for doc in docs {
                    assert!(
                        doc.vectors().all(|v| v.len() == DIM),
                        "only good vectors reach the store"
                    );
                    let key = (index.clone(), doc.id.clone());
                    match m.pending.get(&key) {
                        Some((seq, _, _)) if *seq == doc.seq => {
                            m.pending.remove(&key);
                            m.stored.insert(key, doc.hash);
                            stored.push(doc.id);
                        }
                        _ => stale.push(doc.id),
                    }
                }
                Ok(WriteOutcome::Embedded { stored, stale })
            }
            other => Err(StoreError::Internal(format!("not modelled: {other:?}"))),
        };
        Box::pin(async move { outcome })
    }

    fn load_pending(&self) -> BoxFuture<'_, Result<Vec<PendingDocument>, StoreError>> {
        let mut docs: Vec<PendingDocument> = (self.model().pending.iter())
            .map(|((index, id), (seq, text, hash))| PendingDocument {
                index: index.clone(),
                id: id.clone(),
                seq: *seq,
                text: text.clone(),
                metadata: Map::new(),
                hash: hash.clone(),
            })
            .collect();
        docs.sort_by_key(|d| d.seq);
        Box::pin(async move { Ok(docs) })
    }

    fn pending_texts(&self, keys: Vec<Key>) -> BoxFuture<'_, Result<QueuedTexts, StoreError>> {
        let m = self.model();
        let texts = keys
            .into_iter()
            .filter_map(|k| {
                m.pending
                    .get(&k)
                    .map(|(seq, text, _)| (k.clone(), (*seq, text.clone())))
            })
            .collect();
        Box::pin(async move { Ok(texts) })
    }

    fn index_info<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<IndexInfo, StoreError>> {
        Box::pin(async move { Err(StoreError::invalid(format!("no index {name:?} in the model"))) })
    }

    fn shared_queue(&self) -> Option<SharedQueue> {
        None
    }

    fn superseded(&self) -> Arc<SupersededFeed> {
        self.feed.clone()
    }
}

/// An embedder that takes `latency` per call, fails as scripted (then, with probability
/// `flaky`, transiently), refuses every batch holding a text with "poison" (as a 4xx would),
/// and records each call's start time and texts.
struct Scripted {
    latency: Duration,
    script: Mutex<VecDeque<EmbedError>>,
    flaky: Mutex<(f64, StdRng)>,
    calls: Mutex<Vec<(Duration, Vec<String>)>>,
    epoch: Instant,
}

impl Scripted {
    fn new(latency: Duration) -> Arc<Scripted> {
        Arc::new(Scripted {
            latency,
            script: Mutex::default(),
            flaky: Mutex::new((0.0, StdRng::seed_from_u64(0))),
            calls: Mutex::default(),
            epoch: Instant::now(),
        })
    }

    fn then_fail(&self, error: EmbedError) {
        self.script.lock().unwrap().push_back(error);
    }

    fn calls(&self) -> Vec<(Duration, Vec<String>)> {
        self.calls.lock().unwrap().clone()
    }
}

/// A vector only `text` maps to, never zero.
fn vector_of(text: &str) -> Vec<f32> {
    let sum: u32 = text.bytes().map(u32::from).sum();
    vec![1.0, text.len() as f32, sum as f32, (sum % 7) as f32]
}

impl Embedder for Scripted {
    fn model(&self) -> &str {
        MODEL
    }
    fn dimension(&self) -> Option<usize> {
        Some(DIM)
    }
    fn embed<'a>(&'a self, texts: &'a [String]) -> EmbedFuture<'a> {
        Box::pin(async move {
            let at = Instant::now() - self.epoch;
            self.calls.lock().unwrap().push((at, texts.to_vec()));
            tokio::time::sleep(self.latency).await;
            if let Some(error) = self.script.lock().unwrap().pop_front() {
                return Err(error);
            }
            if texts.iter().any(|t| t.contains("poison")) {
                return Err(EmbedError::Permanent("HTTP 400: poison".into()));
            }
            let mut flaky = self.flaky.lock().unwrap();
            let p = flaky.0;
            if p > 0.0 && flaky.1.random_bool(p) {
                return Err(EmbedError::Transient("HTTP 503".into()));
            }
            Ok(texts.iter().map(|t| vector_of(t)).collect())
        })
    }
}

fn config(debounce_ms: u64, max_wait_ms: u64) -> PipelineConfig {
    PipelineConfig {
        debounce: Duration::from_millis(debounce_ms),
        max_wait: Duration::from_millis(max_wait_ms),
        batch_size: 8,
        wait_timeout: Duration::from_secs(30),
    }
}

async fn start(store: &Arc<ModelStore>, embedder: &Arc<Scripted>, config: PipelineConfig) -> Pipeline {
    Pipeline::start(store.clone(), embedder.clone(), config, CancellationToken::new())
        .await
        .unwrap()
}

fn doc(id: &str, text: &str) -> Document {
    Document {
        id: id.into(),
        text: text.into(),
        metadata: Map::new(),
    }
}

async fn submit(p: &Pipeline, id: &str, text: &str) -> DocOutcome {
    p.submit(INDEX, vec![doc(id, text)], false)
        .await
        .unwrap()
        .remove(0)
}

fn hash(text: &str) -> String {
    content_hash(MODEL, text)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

async fn sleep_ms(n: u64) {
    tokio::time::sleep(ms(n)).await
}

#[tokio::test(start_paused = true)]
async fn debounce_embeds_only_the_latest_version_once_the_edits_pause() {
    let (store, embedder) = (ModelStore::new(), Scripted::new(ms(10)));
    let p = start(&store, &embedder, config(1000, 10_000)).await;
    assert_eq!(submit(&p, "a", "v1").await.status, DocStatus::Queued);
    sleep_ms(500).await;
    assert_eq!(submit(&p, "a", "v2").await.status, DocStatus::Coalesced);
    sleep_ms(999).await;
    assert!(embedder.calls().is_empty(), "embedded before the pause ended");
    sleep_ms(20).await;
    assert_eq!(embedder.calls(), vec![(ms(1500), vec!["v2".to_string()])]);
    assert_eq!(store.stored("a"), Some(hash("v2")));
    let stats = p.stats().await;
    assert_eq!(
        (stats.accepted, stats.coalesced, stats.pending, stats.committed),
        (2, 1, 0, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn max_wait_lands_a_document_edited_without_pause() {
    let (store, embedder) = (ModelStore::new(), Scripted::new(ms(10)));
    let p = start(&store, &embedder, config(1000, 3000)).await;
    for n in 0..20 {
        submit(&p, "a", &format!("edit {n}")).await;
        sleep_ms(400).await;
    }
    let calls = embedder.calls();
    // Edits every 400 ms never let the 1 s debounce run out: each landing comes from the
    // 3 s max wait, counted from the first version not stored yet.
    assert_eq!(calls[0], (ms(3000), vec!["edit 7".to_string()]));
    assert!(calls.len() >= 2, "{calls:?}");
    let gap = calls[1].0 - calls[0].0;
    assert!(gap >= ms(3000) && gap <= ms(3500), "second landing after {gap:?}");
}

#[tokio::test(start_paused = true)]
async fn equal_texts_are_embedded_once_and_unchanged_ones_not_at_all() {
    let (store, embedder) = (ModelStore::new(), Scripted::new(ms(10)));
    let p = start(&store, &embedder, config(100, 1000)).await;
    let docs = vec![
        doc("a", "same"),
        doc("b", "same"),
        doc("c", "other"),
        doc("a", "same"),
    ];
    let out = p.submit(INDEX, docs, false).await.unwrap();
    let statuses: Vec<DocStatus> = out.iter().map(|o| o.status).collect();
    assert_eq!(
        statuses,
        [
            DocStatus::Coalesced,
            DocStatus::Queued,
            DocStatus::Queued,
            DocStatus::Queued
        ]
    );
    let report = p.flush(None, Duration::from_secs(5)).await;
    assert_eq!((report.committed, report.pending), (3, 0));
    assert_eq!(embedder.calls().len(), 1);
    assert_eq!(embedder.calls()[0].1, ["same", "other"]);
    // The same text again: only its metadata would be written; no embedding.
    assert_eq!(submit(&p, "b", "same").await.status, DocStatus::Unchanged);
    p.flush(None, Duration::from_secs(5)).await;
    assert_eq!(embedder.calls().len(), 1);
    assert_eq!(p.stats().await.unchanged, 1);
}

#[tokio::test(start_paused = true)]
async fn failures_back_off_and_a_retry_after_is_never_cut_short() {
    let (store, embedder) = (ModelStore::new(), Scripted::new(ms(10)));
    embedder.then_fail(EmbedError::Throttled("HTTP 429".into(), Duration::from_secs(7)));
    embedder.then_fail(EmbedError::Transient("HTTP 503".into()));
    let p = start(&store, &embedder, config(100, 1000)).await;
    submit(&p, "a", "text").await;
    sleep_ms(20_000).await;
    let at: Vec<Duration> = embedder.calls().iter().map(|c| c.0).collect();
    assert_eq!(at.len(), 3, "{at:?}");
    assert_eq!(at[0], ms(100));
    // The provider said 7 s: the backoff (1 s at most for a first retry) does not cut it.
    let after_throttle = at[1] - at[0];
    assert!(
        after_throttle >= ms(7010) && after_throttle <= ms(7050),
        "{after_throttle:?}"
    );
    // The second retry: between half and the whole of 2 s after that call failed.
    let after_transient = at[2] - at[1] - ms(10);
    assert!(
        after_transient >= ms(1000) && after_transient <= ms(2000),
        "{after_transient:?}"
    );
    assert_eq!(store.stored("a"), Some(hash("text")));
    let stats = p.stats().await;
    assert_eq!((stats.pending, stats.committed), (0, 1));
    assert!(stats.last_error.unwrap().contains("HTTP 503"));
}

#[tokio::test(start_paused = true)]
async fn a_poison_document_is_parked_alone_until_its_text_changes_or_a_flush() {
    let (store, embedder) = (ModelStore::new(), Scripted::new(ms(10)));
    let p = start(&store, &embedder, config(100, 1000)).await;
    let docs: Vec<Document> = ["one", "two", "poison", "four", "five"]
        .iter()
        .enumerate()
        .map(|(i, t)| doc(&format!("d{i}"), t))
        .collect();
    p.submit(INDEX, docs, false).await.unwrap();
    let report = p.flush(None, Duration::from_secs(5)).await;
    assert_eq!((report.committed, report.pending, report.parked), (4, 0, 1));
    for (i, t) in ["one", "two", "", "four", "five"].iter().enumerate() {
        let want = (!t.is_empty()).then(|| hash(t));
        assert_eq!(store.stored(&format!("d{i}")), want, "d{i}");
    }
    let stats = p.stats().await;
    assert_eq!(stats.parked_count, 1);
    assert_eq!(
        (stats.parked[0].id.as_str(), stats.parked[0].error.as_str()),
        ("d2", "HTTP 400: poison")
    );
    // Parked means parked: time alone brings no retry.
    let calls = embedder.calls().len();
    sleep_ms(120_000).await;
    assert_eq!(embedder.calls().len(), calls);
    // The same text answers at once with the reason; a new text is embedded.
    let again = p.submit(INDEX, vec![doc("d2", "poison")], true).await.unwrap();
    assert_eq!(again[0].error.as_deref(), Some("HTTP 400: poison"));
    assert_eq!(embedder.calls().len(), calls);
    // A flush retries it (and it fails the same way).
    let report = p.flush(None, Duration::from_secs(5)).await;
    assert_eq!((report.pending, report.parked), (0, 1));
    assert_eq!(embedder.calls().len(), calls + 1);
    let fixed = p.submit(INDEX, vec![doc("d2", "cured")], true).await.unwrap();
    assert_eq!(fixed[0].status, DocStatus::Indexed);
    assert_eq!(store.stored("d2"), Some(hash("cured")));
    assert_eq!(p.stats().await.parked_count, 0);
}

#[tokio::test(start_paused = true)]
async fn a_write_committed_while_its_version_is_embedded_wins() {
    let (store, embedder) = (ModelStore::new(), Scripted::new(ms(2000)));
    let p = start(&store, &embedder, config(100, 1000)).await;
    let waiting = {
        let p = p.clone();
        tokio::spawn(async move { p.submit(INDEX, vec![doc("a", "text")], true).await })
    };
    sleep_ms(500).await;
    assert_eq!(embedder.calls().len(), 1, "the version is being embedded");
    store.upsert_vector("a", "1");
    // Whoever looks after the upsert was answered sees nothing pending for it.
    let stats = p.stats().await;
    assert_eq!((stats.pending, stats.parked_count), (0, 0));
    let answer = waiting.await.unwrap().unwrap();
    assert_eq!(answer[0].error.as_deref(), Some(state::SUPERSEDED));
    sleep_ms(10_000).await;
    assert_eq!(store.stored("a").as_deref(), Some("vector:1"));
    assert_eq!(embedder.calls().len(), 1, "a superseded version is not retried");
    let stats = p.stats().await;
    assert_eq!((stats.committed, stats.discarded), (0, 1));
}

#[tokio::test(start_paused = true)]
async fn a_restart_resumes_what_the_queue_holds() {
    let (store, embedder) = (ModelStore::new(), Scripted::new(ms(10)));
    let p = start(&store, &embedder, config(60_000, 600_000)).await;
    submit(&p, "a", "kept").await;
    submit(&p, "b", "too").await;
    let report = p.shutdown(Duration::ZERO).await;
    assert_eq!(report.pending, 2);
    assert!(embedder.calls().is_empty());
    let p = start(&store, &embedder, config(60_000, 600_000)).await;
    sleep_ms(50).await;
    assert_eq!(embedder.calls().len(), 1, "resumed versions are due at once");
    assert_eq!(p.stats().await.pending, 0);
    assert_eq!(store.stored("a"), Some(hash("kept")));
    assert_eq!(store.stored("b"), Some(hash("too")));
}

/// Seeded random runs against the model: edits, vector upserts, flushes, flaky and slow
/// embedding. Whatever the interleaving, once the pipeline is drained every id holds what
/// its last write asked for, and nothing is pending or parked.
#[tokio::test(start_paused = true)]
async fn the_last_write_wins_for_every_id_under_random_interleavings() {
    for seed in 0..40u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let store = ModelStore::new();
        let embedder = Scripted::new(ms(rng.random_range(1..400)));
        *embedder.flaky.lock().unwrap() = (rng.random_range(0.0..0.3), StdRng::seed_from_u64(seed));
        let debounce = rng.random_range(0..1500);
        let p = start(
            &store,
            &embedder,
            config(debounce, debounce + rng.random_range(0..3000)),
        )
        .await;
        let ids = ["a", "b", "c", "d"];
        let mut last: HashMap<&str, String> = HashMap::new();
        for step in 0..120 {
            let id = ids[rng.random_range(0..ids.len())];
            match rng.random_range(0..10) {
                0..=5 => {
                    let text = format!("text {}", rng.random_range(0..6));
                    submit(&p, id, &text).await;
                    last.insert(id, hash(&text));
                }
                6 => {
                    let tag = format!("{seed}.{step}");
                    store.upsert_vector(id, &tag);
                    last.insert(id, format!("vector:{tag}"));
                }
                7 => {
                    p.flush(None, ms(rng.random_range(0..2000))).await;
                }
                _ => sleep_ms(rng.random_range(0..2000)).await,
            }
        }
        embedder.flaky.lock().unwrap().0 = 0.0;
        let report = p.flush(None, Duration::from_secs(600)).await;
        assert_eq!((report.pending, report.parked), (0, 0), "seed {seed}");
        for (id, want) in &last {
            assert_eq!(store.stored(id).as_ref(), Some(want), "seed {seed}, id {id}");
        }
        assert!(store.model().pending.is_empty(), "seed {seed}");
        p.shutdown(Duration::ZERO).await;
    }
}
