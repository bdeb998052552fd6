//! Storage: one typed API ([`Store`]) over two back-ends, the local DuckDB file ([`duckdb`],
//! the embedded default, one writer process per file) and PostgreSQL with pgvector
//! ([`postgres`], many processes on many machines).
//!
//! The layout, one folder per back-end and the shared language at the top:
//! - [`api`]: what every back-end and every caller speaks: [`WriteOp`] in, [`WriteOutcome`]
//!   out, [`SearchRequest`] and [`Hit`], [`IndexInfo`], the documents to embed, [`Engine`],
//!   [`StoreOptions`], and [`StoreError`] for every refusal, with the input checks.
//! - [`chunks`]: how a long text embedded in pieces is stored as rows (one per chunk), and
//!   put back together.
//! - [`filter`]: the metadata filter language, one parser compiled by each engine.
//! - [`metadata`]: metadata as stored and returned, shared by the engines.
//! - [`duckdb`]: the embedded file: its handle, the single writer, reads, schema and the
//!   embedding queue's tables.
//! - [`memory`]: the in-memory copy the DuckDB back-end serves searches from (snapshots,
//!   scan kernels, int8 codes, metadata columns).
//! - [`postgres`]: PostgreSQL + pgvector.
//! - [`text`]: what an index does with its rows' text: the analyzer, BM25's formula (the
//!   in-memory engine keeps the postings), the fusion of hybrid searches.
//!
//! No back-end imports another's files (the DuckDB back-end uses [`memory`], which is its
//! own search engine). No connection, SQL text or driver type is visible above this module,
//! so the MCP tools cannot tell the back-ends apart. This module must not know about MCP.

pub mod api;
pub mod chunks;
pub mod duckdb;
pub mod filter;
pub mod memory;
pub mod metadata;
pub mod postgres;
pub mod text;

use std::collections::HashMap;
use std::path::Path;

pub use api::*;

/// Handle to the open store. Clone it freely: every clone talks to the same back-end.
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

/// The embedding queue shared by every process on a PostgreSQL database (see
/// `store/postgres/queue.rs`): claims with leases, retries, parking, and wake-ups.
#[derive(Clone)]
pub struct SharedQueue(postgres::PgStore);

/// A queued version: (index, id) and its version number.
pub type QueuedVersion = ((String, String), u64);

impl SharedQueue {
    /// Take up to `max` due versions of `model`, leased to this process.
    pub async fn claim(&self, model: &str, max: usize) -> Result<Vec<PendingDocument>, StoreError> {
        self.0.claim(model, max).await
    }

    /// Give versions back, due again after `delay`.
    pub async fn retry_later(
        &self,
        versions: &[QueuedVersion],
        delay: std::time::Duration,
    ) -> Result<(), StoreError> {
        self.0.retry_later(versions, delay).await
    }

    /// Set versions aside for good, with the reason.
    pub async fn park(&self, versions: &[QueuedVersion], error: &str) -> Result<(), StoreError> {
        self.0.park(versions, error).await
    }

    /// Time until a version of `model` may next be claimed.
    pub async fn next_due(&self, model: &str) -> Result<Option<std::time::Duration>, StoreError> {
        self.0.next_due(model).await
    }

    /// Make everything (of `index`, or all) due now, parked versions included.
    pub async fn make_due(&self, index: Option<&str>) -> Result<(), StoreError> {
        self.0.make_due(index).await
    }

    pub async fn counts(&self, index: Option<&str>) -> Result<postgres::QueueCounts, StoreError> {
        self.0.queue_counts(index).await
    }

    /// Parked versions: (index, id, error), at most `limit`.
    pub async fn parked(&self, limit: usize) -> Result<Vec<(String, String, String)>, StoreError> {
        self.0.parked(limit).await
    }

    pub async fn states(
        &self,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), postgres::QueueState>, StoreError> {
        self.0.queue_states(keys).await
    }

    /// Hand back this process's claims.
    pub async fn release_claims(&self) -> Result<(), StoreError> {
        self.0.release_claims().await
    }

    /// Ticks whenever some process says the queue changed.
    pub fn events(&self) -> tokio::sync::watch::Receiver<u64> {
        self.0.queue_events()
    }
}

/// Most rows one search reads to find its documents among a long text's chunks: past it,
/// a search answers with the documents found (fewer than `top_k` only when a few documents
/// of hundreds of chunks each hold the best 100,000 rows).
const MAX_GROUPED_ROWS: usize = 100_000;

#[derive(Clone)]
enum Backend {
    File(duckdb::FileStore),
    Postgres(postgres::PgStore),
}

impl Store {
    /// Open (or create) the DuckDB file, adopt any Mastra tables, and start the writer.
    /// Blocking. Fails when the file is held by another process or is not a DuckDB database.
    pub fn open(path: &Path, options: &StoreOptions) -> anyhow::Result<Store> {
        Ok(Store {
            backend: Backend::File(duckdb::FileStore::open(path, options)?),
        })
    }

    /// Connect to PostgreSQL, check pgvector, and prepare (or adopt) the layout.
    pub async fn connect(options: &postgres::PgOptions) -> anyhow::Result<Store> {
        Ok(Store {
            backend: Backend::Postgres(postgres::PgStore::connect(options).await?),
        })
    }

    /// `duckdb` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::File(_) => "duckdb",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// Where the data lives, fit for logs and `stats`: the file's path, or the database's
    /// address without its password.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::File(s) => s.path().display().to_string(),
            Backend::Postgres(s) => s.location(),
        }
    }

    /// The versions each commit supersedes, handed over after the commit and before its
    /// requests are answered (the embedding pipeline drops them from its schedule).
    ///
    /// Only the DuckDB back-end tells it: on PostgreSQL other processes write too, so a
    /// superseded version is found out where it matters, when its embedding is stored
    /// (the version check refuses it) or its text is read back (it is gone).
    pub fn superseded(&self) -> std::sync::Arc<SupersededFeed> {
        match &self.backend {
            Backend::File(s) => s.superseded(),
            // The shared queue itself drops superseded versions; nothing is ever told here.
            Backend::Postgres(_) => Default::default(),
        }
    }

    /// Exact (or, on a PostgreSQL HNSW index, approximate) top-k. Returns the engine that
    /// answered. `engine` forces one; it must be one this back-end has.
    ///
    /// Unless `req.chunks`, a long text stored in chunks is one hit: its best chunk, under
    /// the document's id (the chunk's text and place are in its metadata). The rows are
    /// asked for in growing numbers until `top_k` documents are among them or there are no
    /// more, so the documents are exactly the best by their best chunk.
    pub async fn search(
        &self,
        index: IndexInfo,
        req: SearchRequest,
        engine: Option<Engine>,
    ) -> Result<(Vec<Hit>, Engine), StoreError> {
        if req.chunks {
            return self.search_rows(index, req, engine).await;
        }
        let want = req.top_k;
        let mut asked = want;
        let mut total: Option<usize> = None;
        loop {
            let mut rows_req = req.clone();
            rows_req.top_k = asked;
            let (rows, engine) = self.search_rows(index.clone(), rows_req, engine).await?;
            let exhausted = rows.len() < asked;
            let mut seen = std::collections::HashSet::new();
            let mut hits = Vec::with_capacity(want);
            for mut hit in rows {
                let doc = chunks::document_of(&hit.id, &hit.metadata);
                if hits.len() < want && seen.insert(doc.clone()) {
                    hit.id = doc;
                    hits.push(hit);
                }
            }
            if hits.len() >= want || exhausted {
                return Ok((hits, engine));
            }
            let total = match total {
                Some(n) => n,
                None => *total.insert(self.count(&index).await? as usize),
            };
            if asked >= total || asked >= MAX_GROUPED_ROWS {
                return Ok((hits, engine));
            }
            asked = asked.saturating_mul(4).min(total).min(MAX_GROUPED_ROWS.max(want));
        }
    }

    /// [`Self::search`] over rows, each chunk its own hit.
    async fn search_rows(
        &self,
        index: IndexInfo,
        req: SearchRequest,
        engine: Option<Engine>,
    ) -> Result<(Vec<Hit>, Engine), StoreError> {
        req.check_text(&index)?;
        match &self.backend {
            Backend::File(s) => {
                if engine == Some(Engine::Postgres) {
                    return Err(StoreError::invalid(
                        "engine: \"postgres\" needs a server started with --database postgres://…; this one stores in a DuckDB file (use memory or duckdb)",
                    ));
                }
                if req.ef_search.is_some() {
                    return Err(StoreError::invalid(format!(
                        "ef_search: index \"{}\" is searched exactly (HNSW indexes exist only with --database postgres://…); omit ef_search",
                        index.name
                    )));
                }
                s.search(index, req, engine).await
            }
            Backend::Postgres(s) => {
                if let Some(e) = engine.filter(|e| *e != Engine::Postgres) {
                    return Err(StoreError::invalid(format!(
                        "engine: this server stores in PostgreSQL, which serves every search; {:?} is not available (omit engine)",
                        e.as_str()
                    )));
                }
                Ok((s.search(&index, &req).await?, Engine::Postgres))
            }
        }
    }

    /// Number of rows in `index`.
    pub async fn count(&self, index: &IndexInfo) -> Result<u64, StoreError> {
        match &self.backend {
            Backend::File(s) => s.count(index.clone()).await,
            Backend::Postgres(s) => s.count(index).await,
        }
    }

    /// Rows by id, with their vectors; missing ids are absent.
    pub async fn fetch_rows(&self, index: &IndexInfo, ids: Vec<String>) -> Result<Vec<Hit>, StoreError> {
        match &self.backend {
            Backend::File(s) => s.fetch(index.clone(), ids).await,
            Backend::Postgres(s) => s.fetch(index, &ids).await,
        }
    }

    /// Documents by id, with their vectors; missing ids are absent. A long text stored in
    /// chunks comes back whole (see [`chunks::assemble`]) with its chunks' spans; a chunk's
    /// own id (`<id>#<n>`) gives that row alone.
    pub async fn fetch(
        &self,
        index: &IndexInfo,
        ids: Vec<String>,
    ) -> Result<Vec<(Hit, Option<Vec<chunks::ChunkSpan>>)>, StoreError> {
        let ids = distinct(&ids);
        let heads = self.fetch_rows(index, chunks::head_ids(&ids)).await?;
        let heads: HashMap<String, Hit> = heads.into_iter().map(|h| (h.id.clone(), h)).collect();
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(hit) = heads.get(&id) {
                out.push((hit.clone(), None));
                continue;
            }
            let head = chunks::chunk_id(&id, 0);
            if heads
                .get(&head)
                .and_then(|h| chunks::chunk_of(&h.id, &h.metadata))
                .is_none_or(|c| c.doc != id)
            {
                continue; // no such document (or a row of someone's own named like a chunk)
            }
            let rows = self.document_rows(index, &id).await?;
            match chunks::assemble(&rows, index.text.field.as_deref()) {
                Some((doc, spans)) => out.push((doc, Some(spans))),
                // Rewritten as one row meanwhile, or no longer whole: its rows as they are.
                None => out.extend(rows.into_iter().map(|h| (h, None))),
            }
        }
        Ok(out)
    }

    /// Every stored row of document `id`: its own, or its chunks in order; none when it has
    /// no row. A long text's chunks are read until one read of them makes a whole document
    /// (a write between the read of its first chunk and of the others changes them).
    pub async fn document_rows(&self, index: &IndexInfo, id: &str) -> Result<Vec<Hit>, StoreError> {
        const READS: usize = 5;
        let docs = [id.to_string()];
        let mut last = Vec::new();
        for _ in 0..READS {
            let heads = self.fetch_rows(index, chunks::head_ids(&docs)).await?;
            let head_rows: chunks::RowsById =
                heads.iter().map(|h| (h.id.clone(), h.metadata.clone())).collect();
            let more = chunks::more_ids(&docs, &head_rows);
            let mut rows: Vec<Hit> = heads;
            if !more.is_empty() {
                rows.extend(self.fetch_rows(index, more).await?);
            }
            let more_rows: chunks::RowsById =
                rows.iter().map(|h| (h.id.clone(), h.metadata.clone())).collect();
            let Some((_, order)) = chunks::group_rows(&docs, &head_rows, &more_rows).pop() else {
                return Ok(Vec::new());
            };
            let mut by_id: HashMap<String, Hit> = rows.into_iter().map(|h| (h.id.clone(), h)).collect();
            let rows: Vec<Hit> = order.iter().filter_map(|(id, _)| by_id.remove(id)).collect();
            if rows.len() == 1 && rows[0].id == id
                || chunks::assemble(&rows, index.text.field.as_deref()).is_some()
            {
                return Ok(rows);
            }
            last = rows;
        }
        // Still not whole after several reads: as it is (a chunk row rewritten by hand).
        Ok(last)
    }

    /// Every document waiting to be embedded, oldest version first.
    pub async fn load_pending(&self) -> Result<Vec<PendingDocument>, StoreError> {
        match &self.backend {
            Backend::File(s) => s.load_pending().await,
            Backend::Postgres(s) => s.load_pending().await,
        }
    }

    /// The queued version (seq, text) of each (index, id) that still has one.
    pub async fn pending_texts(
        &self,
        keys: Vec<(String, String)>,
    ) -> Result<HashMap<(String, String), (u64, String)>, StoreError> {
        match &self.backend {
            Backend::File(s) => s.pending_texts(keys).await,
            Backend::Postgres(s) => s.pending_texts(&keys).await,
        }
    }

    /// Bytes DuckDB holds in memory, by its own account; `None` on PostgreSQL.
    pub async fn duckdb_memory(&self) -> Option<u64> {
        match &self.backend {
            Backend::File(s) => s.duckdb_memory().await.ok(),
            Backend::Postgres(_) => None,
        }
    }

    /// How `index` is served: engine, in-memory bytes, state of its copy.
    pub fn memory_report(&self, index: &str) -> MemoryReport {
        match &self.backend {
            Backend::File(s) => s.memory_report(index),
            Backend::Postgres(_) => MemoryReport {
                engine: Engine::Postgres,
                bytes: 0,
                text_bytes: 0,
                state: "off",
            },
        }
    }

    /// The committed shape of one index.
    pub async fn index_info(&self, name: &str) -> Result<IndexInfo, StoreError> {
        match &self.backend {
            Backend::File(s) => s.index_info(name),
            Backend::Postgres(s) => s.index_info(name).await,
        }
    }

    /// All committed indexes, by name.
    pub async fn indexes(&self) -> Result<Vec<IndexInfo>, StoreError> {
        match &self.backend {
            Backend::File(s) => Ok(s.indexes()),
            Backend::Postgres(s) => s.indexes().await,
        }
    }

    /// Apply one write and wait until it is committed (or refused).
    pub async fn write(&self, op: WriteOp) -> Result<WriteOutcome, StoreError> {
        match &self.backend {
            Backend::File(s) => s.write(op).await,
            Backend::Postgres(s) => s.write(op).await,
        }
    }

    /// The embedding queue, when it is shared by several processes (PostgreSQL); `None`
    /// when it is this process's own (DuckDB: the pipeline schedules it in memory).
    pub fn shared_queue(&self) -> Option<SharedQueue> {
        match &self.backend {
            Backend::File(_) => None,
            Backend::Postgres(s) => Some(SharedQueue(s.clone())),
        }
    }

    /// Why the store broke, if it has (DuckDB: its writer or loader panicked).
    pub fn failed(&self) -> Option<String> {
        match &self.backend {
            Backend::File(s) => s.failed(),
            Backend::Postgres(_) => None,
        }
    }

    /// Wait until the store breaks; never returns for a store that cannot (PostgreSQL).
    pub async fn wait_failed(&self) -> String {
        match &self.backend {
            Backend::File(s) => s.wait_failed().await,
            Backend::Postgres(_) => std::future::pending().await,
        }
    }

    /// Let go of the database after a failure: no connection is kept once this returns.
    pub async fn release(&self) {
        if let Backend::File(s) = &self.backend {
            s.release().await;
        }
    }

    /// Let every accepted write commit, then close.
    pub async fn shutdown(&self) {
        match &self.backend {
            Backend::File(s) => s.shutdown().await,
            Backend::Postgres(s) => s.shutdown().await,
        }
    }
}
