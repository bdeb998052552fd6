//! The language every back-end speaks: the plain values the store takes and returns
//! (indexes, rows, writes and their outcomes, documents to embed, searches and hits, the
//! search engines), the options it opens with, and the input checks that need no database.
//!
//! Both back-ends (`duckdb/`, `postgres/`) and the callers above `store/` use these; this
//! file uses no back-end. Every check here produces a [`StoreError::Invalid`] whose message
//! names the field or id at fault, so the MCP layer can hand it to the user unchanged.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::filter::CompiledFilter;
pub use super::text::{TextRequest, TextSettings};

/// Longest index name we accept; DuckDB allows more, but a name is typed by people.
pub const MAX_INDEX_NAME: usize = 63;
/// Widest vector we accept. DuckDB arrays go further; nobody's embeddings do.
pub const MAX_DIMENSION: usize = 65_536;

/// How a score is computed. The formulas are Mastra's, so both read the same numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// `1 - cosine distance`, in [-1, 1]; higher is closer.
    Cosine,
    /// `1 / (1 + euclidean distance)`, in (0, 1]; higher is closer.
    Euclidean,
    /// The inner product; higher is closer.
    Dotproduct,
}

impl Metric {
    pub fn as_str(self) -> &'static str {
        match self {
            Metric::Cosine => "cosine",
            Metric::Euclidean => "euclidean",
            Metric::Dotproduct => "dotproduct",
        }
    }

    pub fn parse(s: &str) -> Option<Metric> {
        match s {
            "cosine" => Some(Metric::Cosine),
            "euclidean" => Some(Metric::Euclidean),
            "dotproduct" => Some(Metric::Dotproduct),
            _ => None,
        }
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The committed shape of an index.
#[derive(Debug, Clone, PartialEq)]
pub struct IndexInfo {
    pub name: String,
    pub dimension: usize,
    pub metric: Metric,
    /// Embedding model that produced its vectors, when we know it.
    pub model: Option<String>,
    /// True when the table was made by someone else (Mastra) and adopted on open.
    pub adopted: bool,
    /// The approximate index that serves its searches (PostgreSQL only); `None`: exact.
    pub ann: Option<Hnsw>,
    /// Where its rows keep their text, and the language of its keyword index.
    pub text: TextSettings,
}

/// An HNSW index over an index's vectors (pgvector). Searches through it are approximate;
/// `ef_search` trades speed for recall per search.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
pub struct Hnsw {
    /// Links per node (pgvector: 2 to 100; default 16).
    pub m: u32,
    /// Candidates kept while building (pgvector: 4 to 1000, at least 2·m; default 64).
    pub ef_construction: u32,
}

impl Hnsw {
    pub const DEFAULT_M: u32 = 16;
    pub const DEFAULT_EF_CONSTRUCTION: u32 = 64;

    /// pgvector's own limits, checked before any SQL so the message names the field.
    pub fn validate(&self, field: &str) -> Result<(), StoreError> {
        if !(2..=100).contains(&self.m) {
            return Err(StoreError::invalid(format!(
                "{field}.m: must be between 2 and 100, got {}",
                self.m
            )));
        }
        if !(4..=1000).contains(&self.ef_construction) || self.ef_construction < 2 * self.m {
            return Err(StoreError::invalid(format!(
                "{field}.ef_construction: must be between 4 and 1000 and at least 2·m ({}), got {}",
                2 * self.m,
                self.ef_construction
            )));
        }
        Ok(())
    }
}

/// Most candidates an HNSW search may keep (pgvector's `hnsw.ef_search` limit).
pub const MAX_EF_SEARCH: u32 = 1000;

/// One vector to write. Checked with [`VectorRow::validate`] before it reaches the writer.
#[derive(Debug, Clone)]
pub struct VectorRow {
    pub id: String,
    pub vector: Vec<f32>,
    pub metadata: Map<String, Value>,
}

/// Why a store call did not succeed.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreError {
    /// The caller's input is wrong; the message names the field or id.
    Invalid(String),
    /// Something on our side failed (I/O, DuckDB); the message says what.
    Internal(String),
    /// The store is stopping and takes no more work.
    Closed,
    /// The store broke (its writer or loader panicked); the text says how. The process
    /// gives the database up so that it can be opened again, by another process or by it.
    Failed(String),
}

impl StoreError {
    pub fn invalid(msg: impl Into<String>) -> Self {
        StoreError::Invalid(msg.into())
    }

    pub fn unknown_index(name: &str) -> Self {
        StoreError::Invalid(format!(
            "index \"{name}\" does not exist (create it with create_index, or pass create_index to upsert)"
        ))
    }

    /// Something on our side failed, in `context`.
    pub fn internal(context: &str, err: impl fmt::Display) -> Self {
        Self::engine(format!("{context}: {err}"))
    }

    /// An engine's failure, phrased with its context. A full disk (DuckDB's WAL or
    /// checkpoint, PostgreSQL's files) is named as such, with the file the engine names,
    /// and what to do.
    pub fn engine(message: impl Into<String>) -> Self {
        let message = message.into();
        match disk_full(&message) {
            Some(path) => StoreError::Internal(format!(
                "disk full: no space left on the disk holding {path}; nothing of this call was committed. Free some space there and call again. The engine says: {message}"
            )),
            None => StoreError::Internal(message),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::Invalid(m) => f.write_str(m),
            StoreError::Internal(m) => write!(f, "internal error: {m}"),
            StoreError::Closed => f.write_str("the server is shutting down; retry"),
            StoreError::Failed(m) => write!(
                f,
                "store failed: {m}. Nothing of this call was committed; the process gives the database up so that it is opened again (here or by another stride-vectors process): call again"
            ),
        }
    }
}

impl std::error::Error for StoreError {}

/// When `error` says the disk is full (the OS's ENOSPC text, which DuckDB and PostgreSQL
/// quote), the file it names (the first quoted path), or "the database" when none.
fn disk_full(error: &str) -> Option<String> {
    const FULL: [&str; 3] = ["No space left on device", "Disk full", "disk full"];
    if !FULL.iter().any(|f| error.contains(f)) {
        return None;
    }
    let quoted = error
        .split('"')
        .nth(1)
        .filter(|p| p.contains('/') || p.contains('\\'));
    Some(quoted.map_or_else(|| "the database".to_string(), str::to_string))
}

/// Index names become table names, always double-quoted; this pattern keeps them portable
/// and identical to what Mastra accepts.
pub fn validate_index_name(name: &str) -> Result<(), StoreError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !first_ok || !rest_ok || name.len() > MAX_INDEX_NAME {
        return Err(StoreError::invalid(format!(
            "index: invalid index name {name:?}: use 1 to {MAX_INDEX_NAME} letters, digits or \
             underscores, not starting with a digit"
        )));
    }
    Ok(())
}

pub fn validate_dimension(dimension: usize) -> Result<(), StoreError> {
    if dimension == 0 || dimension > MAX_DIMENSION {
        return Err(StoreError::invalid(format!(
            "dimension: must be between 1 and {MAX_DIMENSION}, got {dimension}"
        )));
    }
    Ok(())
}

/// A vector must be non-empty, of the index's width, and finite. An all-zero vector is
/// accepted (Mastra's stores take it): it has no direction, so under cosine it scores -1 (as
/// DuckDB scores it); searching *with* one under cosine is refused by `search`. `field`
/// names the vector in the message (for example `vectors[3].vector`).
pub fn validate_vector(field: &str, vector: &[f32], dimension: Option<usize>) -> Result<(), StoreError> {
    if vector.is_empty() {
        return Err(StoreError::invalid(format!("{field}: the vector is empty")));
    }
    if let Some(dim) = dimension.filter(|&d| d != vector.len()) {
        return Err(StoreError::invalid(format!(
            "{field}: the vector has {} dimensions, the index has {dim}",
            vector.len()
        )));
    }
    if let Some(pos) = vector.iter().position(|x| !x.is_finite()) {
        return Err(StoreError::invalid(format!(
            "{field}[{pos}]: {} is not a finite number",
            vector[pos]
        )));
    }
    Ok(())
}

impl VectorRow {
    /// Checks that need no index: a non-empty id and a usable vector. `at` is the row's
    /// position in the caller's list, used in messages.
    pub fn validate(&self, at: usize) -> Result<(), StoreError> {
        if self.id.is_empty() {
            return Err(StoreError::invalid(format!("vectors[{at}].id: the id is empty")));
        }
        validate_vector(
            &format!("vectors[{at}] (id {:?}).vector", self.id),
            &self.vector,
            None,
        )
    }
}

/// Deduplicate rows by id, keeping the last one but at the position of the first: a batch
/// appended with a repeated key would break the primary key (and, in a table without one,
/// store the id twice).
pub fn dedup_last_wins(rows: Vec<VectorRow>) -> Vec<VectorRow> {
    let mut position: std::collections::HashMap<String, usize> = Default::default();
    let mut out: Vec<VectorRow> = Vec::with_capacity(rows.len());
    for row in rows {
        match position.get(&row.id) {
            Some(&i) => out[i] = row,
            None => {
                position.insert(row.id.clone(), out.len());
                out.push(row);
            }
        }
    }
    out
}

/// The width rows must have: the index's, or the one `create_index` asks for (which must
/// then agree with an existing index).
pub fn target_dimension(
    index: &str,
    create: Option<(usize, Metric)>,
    existing: Option<&IndexInfo>,
) -> Result<usize, StoreError> {
    match (existing, create) {
        (Some(info), Some((dim, metric))) if (info.dimension, info.metric) != (dim, metric) => {
            Err(StoreError::invalid(format!(
                "create_index: index \"{index}\" already exists with dimension {} and metric {}, not dimension {dim} and metric {metric}",
                info.dimension, info.metric
            )))
        }
        (Some(info), _) => Ok(info.dimension),
        (None, Some((dim, _))) => {
            validate_dimension(dim).map_err(|e| StoreError::invalid(format!("create_index.{e}")))?;
            Ok(dim)
        }
        (None, None) => Err(StoreError::unknown_index(index)),
    }
}

/// `create_index` of an index that exists with the asked shape: the text settings it names
/// must be the index's (they are fixed when the index is made); those it leaves out are.
pub fn existing_text_matches(existing: &IndexInfo, asked: &TextRequest) -> Result<(), StoreError> {
    let show = |field: &Option<String>, language: &str| match field {
        Some(f) => format!("text_field {f:?}, language {language}"),
        None => "no text (text_field null)".to_string(),
    };
    let have = show(&existing.text.field, &existing.text.language);
    if let Some(field) = asked.field.as_ref().filter(|f| **f != existing.text.field) {
        let language = asked.language.as_deref().unwrap_or(&existing.text.language);
        return Err(StoreError::invalid(format!(
            "text_field: index \"{}\" already exists with {have}; asked for {}",
            existing.name,
            show(field, language)
        )));
    }
    if let Some(language) = asked
        .language
        .as_ref()
        .filter(|l| existing.text.field.is_some() && **l != existing.text.language)
    {
        return Err(StoreError::invalid(format!(
            "language: index \"{}\" already exists with {have}; asked for language {language}",
            existing.name
        )));
    }
    Ok(())
}

/// Embedding into an index is allowed when its recorded model (if any) and its dimension
/// (when the embedder knows its own) agree.
pub fn check_embeddable(info: &IndexInfo, model: &str, dimension: Option<usize>) -> Result<(), StoreError> {
    if let Some(recorded) = info.model.as_deref().filter(|m| *m != model) {
        return Err(StoreError::invalid(format!(
            "index: \"{}\" holds embeddings of model {recorded:?}, not {model:?}; use another index or the matching --model",
            info.name
        )));
    }
    if let Some(dim) = dimension.filter(|&d| d != info.dimension) {
        return Err(StoreError::invalid(format!(
            "index: \"{}\" has dimension {}, but model {model:?} makes {dim}-dimensional vectors",
            info.name, info.dimension
        )));
    }
    Ok(())
}

/// Render a vector as a DuckDB array literal to bind as text and cast with `?::FLOAT[n]`
/// (the duckdb crate cannot bind array values). Rust prints the shortest string that parses
/// back to the same `f32`, so nothing is lost.
pub fn vector_literal(vector: &[f32]) -> String {
    let mut s = String::with_capacity(vector.len() * 12 + 2);
    s.push('[');
    for (i, x) in vector.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&x.to_string());
    }
    s.push(']');
    s
}

/// Double-quote a validated identifier. Only ever called on names that passed
/// [`validate_index_name`], so there is nothing to escape; the quotes keep keywords usable.
pub fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

// ---- The store's shape and options

/// How to open the DuckDB file.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Most write requests folded into one transaction.
    pub max_batch: usize,
    /// DuckDB worker threads (0: DuckDB's default).
    pub threads: u32,
    /// DuckDB's memory limit in MiB (0: DuckDB's default).
    pub duckdb_memory_mb: u32,
    /// Default search engine.
    pub engine: Engine,
    /// Budget of the in-memory copies, in bytes.
    pub memory_limit: usize,
    /// Test-only fault: the DuckDB writer panics when it applies a write to this index (set by
    /// a hidden flag; how the tests show that a broken writer is reported and handed over).
    pub writer_panic_on: Option<String>,
}

/// Most reader connections (and reads running at once); more readers wait their turn.
pub const MAX_READERS: usize = 16;

/// Index name to shape, as committed. Written by the DuckDB writer thread only.
pub type Catalog = BTreeMap<String, IndexInfo>;

// ---- Writes

/// One change to the database.
#[derive(Debug)]
pub enum WriteOp {
    CreateIndex {
        name: String,
        dimension: usize,
        metric: Metric,
        /// An HNSW index to build (PostgreSQL only).
        ann: Option<Hnsw>,
        /// Where rows keep their text and the keyword index's language, as asked.
        text: TextRequest,
    },
    DeleteIndex {
        name: String,
    },
    /// Insert or replace rows; `create` makes the index first if it does not exist. With
    /// `delete_filter`, the rows matching it are deleted first, in the same transaction
    /// (Mastra's `upsert({deleteFilter})`: replace every chunk of a source at once).
    Upsert {
        index: String,
        rows: Vec<VectorRow>,
        create: Option<(usize, Metric)>,
        delete_filter: Option<CompiledFilter>,
    },
    /// Change the vector and/or metadata of one row (an id), or of every stored row a filter
    /// matches.
    Update {
        index: String,
        target: Target,
        vector: Option<Vec<f32>>,
        metadata: Option<Map<String, Value>>,
        mode: MetadataMode,
        /// By id: an id with no stored row is skipped instead of failing the call (what
        /// Mastra's SQL stores do: their UPDATE changes no row).
        skip_missing: bool,
    },
    Delete {
        index: String,
        target: Target,
    },
    /// Record documents to embed as pending (or, when unchanged, just their metadata).
    /// With a known `dimension` a missing index is created for `model`. Where the queue is
    /// shared (PostgreSQL), each version is due `due_in` from now, but no later than
    /// `max_wait` after the first version of its id still queued; the DuckDB back-end's
    /// schedule lives in the pipeline instead.
    Accept {
        index: String,
        model: String,
        dimension: Option<usize>,
        docs: Vec<NewDocument>,
        due_in: std::time::Duration,
        max_wait: std::time::Duration,
    },
    /// Store freshly embedded documents and retire their pending versions.
    StoreEmbedded {
        index: String,
        model: String,
        docs: Vec<EmbeddedDocument>,
    },
}

/// How `update` treats the stored metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataMode {
    /// JSON merge patch (RFC 7396): given keys replace, `null` removes, others stay.
    Merge,
    /// The given object becomes the whole metadata.
    Replace,
}

/// The rows a delete or an update is about.
#[derive(Debug)]
pub enum Target {
    Ids(Vec<String>),
    Filter(CompiledFilter),
}

/// `ids` without repeats, in the order of their first appearance.
pub fn distinct(ids: &[String]) -> Vec<String> {
    let mut seen = HashSet::new();
    ids.iter()
        .filter(|id| seen.insert(id.as_str()))
        .cloned()
        .collect()
}

/// What a committed write did.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    IndexCreated {
        created: bool,
    },
    IndexDeleted {
        existed: bool,
    },
    /// Distinct ids written, in the order of their first appearance; `deleted` counts the
    /// rows a `delete_filter` removed first.
    Upserted {
        ids: Vec<String>,
        created_index: bool,
        deleted: Option<usize>,
    },
    /// Rows changed.
    Updated {
        count: usize,
    },
    Deleted {
        count: usize,
    },
    Accepted(Vec<Accepted>),
    /// Ids stored, and ids whose version was no longer the latest accepted one (a later
    /// write superseded it while it was embedded): those were not written.
    Embedded {
        stored: Vec<String>,
        stale: Vec<String>,
    },
}

/// Versions of documents that a committed write superseded: every version of `ids` (or of
/// the whole index when `ids` is `None`) accepted before `before_seq`. The pipeline drops
/// them from its schedule; the database already has.
#[derive(Debug, Clone, PartialEq)]
pub struct Superseded {
    pub index: String,
    pub ids: Option<Vec<String>>,
    pub before_seq: u64,
}

/// Where a store hands over what its commits superseded: the writer pushes (a lock and a
/// wake-up, nothing of the reader's code runs on its thread) and the embedding pipeline
/// takes, in its own task and before it answers anything that depends on it.
#[derive(Debug, Default)]
pub struct SupersededFeed {
    events: std::sync::Mutex<Vec<Superseded>>,
    ready: tokio::sync::Notify,
}

impl SupersededFeed {
    /// Hand over one commit's superseded versions.
    pub fn push(&self, mut events: Vec<Superseded>) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .append(&mut events);
        self.ready.notify_one();
    }

    /// Everything handed over since the last take, in commit order.
    pub fn take(&self) -> Vec<Superseded> {
        std::mem::take(&mut *self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Wait until something was pushed (at once if something was since the last wait).
    pub async fn pushed(&self) {
        self.ready.notified().await
    }
}

// ---- Documents to embed

/// A document as a client sent it, with its content hash.
#[derive(Debug, Clone)]
pub struct NewDocument {
    pub id: String,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub hash: String,
}

/// The documents as they are kept: each one's text also in its metadata, under the index's
/// text field (`text` for an index not made yet), so that searches and `fetch` return it and
/// Mastra's stores read it where they look. Metadata that already holds that field with
/// another value is refused, naming it.
pub fn keep_texts(docs: &[NewDocument], index: Option<&IndexInfo>) -> Result<Vec<NewDocument>, StoreError> {
    let field = match index {
        Some(info) => info.text.field.clone(),
        None => TextSettings::default().field,
    };
    let Some(field) = field else {
        for (at, doc) in docs.iter().enumerate() {
            check_reserved(at, &doc.id, &doc.metadata)?;
        }
        return Ok(docs.to_vec());
    };
    docs.iter()
        .enumerate()
        .map(|(at, doc)| {
            let mut doc = doc.clone();
            check_reserved(at, &doc.id, &doc.metadata)?;
            match doc.metadata.get(&field) {
                Some(Value::String(given)) if *given == doc.text => {}
                Some(_) => {
                    return Err(StoreError::invalid(format!(
                        "documents[{at}] (id {:?}).metadata.{field}: the index keeps each document's text there, and this is not the document's text; leave it out (it is filled in), or use an index with another text_field",
                        doc.id
                    )))
                }
                None => {
                    doc.metadata.insert(field.clone(), Value::String(doc.text.clone()));
                }
            }
            Ok(doc)
        })
        .collect()
}

/// The metadata key of a chunk row's place in its document (see [`super::chunks`]).
pub const CHUNK_KEY: &str = "chunk";

/// A piece of a document's text, as the embedding pipeline made it: its byte span in the
/// text and its vector.
#[derive(Debug, Clone, PartialEq)]
pub struct EmbeddedPiece {
    pub start: usize,
    pub end: usize,
    pub vector: Vec<f32>,
}

/// The document an id shaped like a chunk's (`<doc>#<n>`) would belong to, if it is so
/// shaped. Such ids are refused to `embed` (they are the chunks'), and a write of one on
/// PostgreSQL also takes its document's lock.
pub fn chunk_shaped(id: &str) -> Option<&str> {
    let (doc, n) = id.rsplit_once('#')?;
    (!doc.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())).then_some(doc)
}

/// Refuse what `embed` keeps for the chunks of long texts: an id shaped like a chunk's, and
/// metadata that sets `chunk` itself.
fn check_reserved(at: usize, id: &str, metadata: &Map<String, Value>) -> Result<(), StoreError> {
    if let Some(doc) = chunk_shaped(id) {
        return Err(StoreError::invalid(format!(
            "documents[{at}].id: {id:?} has the shape of a chunk's id (chunk of {doc:?}): ids ending in #<number> are kept for the chunks of long texts; use another id"
        )));
    }
    if metadata.contains_key(CHUNK_KEY) {
        return Err(StoreError::invalid(format!(
            "documents[{at}] (id {id:?}).metadata.{CHUNK_KEY}: reserved: a long text is stored in chunks, each row saying its place there; use another key"
        )));
    }
    Ok(())
}

/// What happened to an accepted document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Acceptance {
    /// Recorded as pending; it will be embedded.
    Queued,
    /// Replaced a pending version that was not embedded yet.
    Coalesced,
    /// Same model and text as what is stored: only its metadata was written.
    Unchanged,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Accepted {
    pub id: String,
    pub status: Acceptance,
    pub seq: u64,
}

/// A pending document, as stored (used to resume after a restart).
#[derive(Debug, Clone)]
pub struct PendingDocument {
    pub index: String,
    pub id: String,
    pub seq: u64,
    pub text: String,
    pub metadata: Map<String, Value>,
    pub hash: String,
}

/// A document whose vector is ready to be stored.
#[derive(Debug, Clone)]
/// Its metadata is the one its queued version holds when it is stored (see the writer).
pub struct EmbeddedDocument {
    pub id: String,
    pub seq: u64,
    pub hash: String,
    /// The text's pieces and their vectors: one for a text that fits the model's window,
    /// else its chunks in order (see [`super::chunks`]).
    pub pieces: Vec<EmbeddedPiece>,
}

impl EmbeddedDocument {
    /// Every vector of the document, for the checks every piece must pass.
    pub fn vectors(&self) -> impl Iterator<Item = &[f32]> {
        self.pieces.iter().map(|p| p.vector.as_slice())
    }
}

// ---- Searches

/// Most results one search may return.
pub const MAX_TOP_K: usize = 1000;

/// One search.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    /// The query vector (vector and hybrid modes).
    pub vector: Option<Vec<f32>>,
    /// The query text (keyword and hybrid modes).
    pub text: Option<String>,
    pub mode: SearchMode,
    /// How a hybrid search fuses its two lists.
    pub fusion: Fusion,
    pub top_k: usize,
    pub filter: Option<CompiledFilter>,
    /// Each list drops what scores below it (its own score: similarity or BM25), before
    /// fusion.
    pub min_score: Option<f64>,
    pub include_vector: bool,
    /// Candidates an HNSW search keeps (PostgreSQL HNSW indexes only).
    pub ef_search: Option<u32>,
    /// Rows as they are: each chunk of a long text its own hit. Else one hit per document,
    /// its best chunk (see [`super::chunks`]).
    pub chunks: bool,
}

impl SearchRequest {
    /// The query vector of a vector or hybrid search (the tool layer always gives one).
    pub fn query_vector(&self) -> Result<&[f32], StoreError> {
        self.vector
            .as_deref()
            .ok_or_else(|| StoreError::Internal("a vector search was given no vector".into()))
    }

    /// A request that only carries a mode and a text, to check them before the work.
    pub fn probe(mode: SearchMode, text: &str) -> SearchRequest {
        SearchRequest {
            vector: None,
            text: Some(text.to_string()),
            mode,
            fusion: Fusion::default(),
            top_k: 1,
            filter: None,
            min_score: None,
            include_vector: false,
            ef_search: None,
            chunks: true,
        }
    }

    /// A keyword or hybrid search needs an index that keeps text and a query with words
    /// in it (in the index's analyzer); checked the same way for both back-ends.
    pub fn check_text(&self, index: &IndexInfo) -> Result<(), StoreError> {
        if self.mode == SearchMode::Vector {
            return Ok(());
        }
        let mode = self.mode.as_str();
        if index.text.field.is_none() {
            return Err(StoreError::invalid(format!(
                "mode: index \"{}\" keeps no text (it was created with text_field null), so it has no {mode} search; use mode \"vector\"",
                index.name
            )));
        }
        let Some(text) = self.text.as_deref().filter(|t| !t.trim().is_empty()) else {
            return Err(StoreError::invalid(format!(
                "query: a {mode} search needs the query text"
            )));
        };
        let terms = index.text.analyzer().terms(text).len();
        if terms > super::text::MAX_QUERY_TERMS {
            return Err(StoreError::invalid(format!(
                "query: {terms} words to search by; a {mode} search takes at most {}",
                super::text::MAX_QUERY_TERMS
            )));
        }
        if terms == 0 && self.mode == SearchMode::Keyword {
            return Err(StoreError::invalid(format!(
                "query: {text:?} has no words to search by once stop words are dropped (language {}); use other words, or mode \"vector\"",
                index.text.language
            )));
        }
        Ok(())
    }
}

/// Which lists a search ranks by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SearchMode {
    /// Nearest vectors to the query's embedding (or to the given vector).
    Vector,
    /// BM25 over the rows' kept text.
    Keyword,
    /// Both, under the same filter, fused.
    Hybrid,
}

impl SearchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Vector => "vector",
            SearchMode::Keyword => "keyword",
            SearchMode::Hybrid => "hybrid",
        }
    }
}

/// How a hybrid search merges its vector list and its keyword list.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Fusion {
    /// Reciprocal rank fusion: `Σ 1 / (k + rank)`.
    Rrf { k: f64 },
    /// Each list's scores scaled to [0, 1], then `w · vector + (1 - w) · keyword`.
    Weighted { vector_weight: f64 },
}

impl Fusion {
    pub const DEFAULT_RRF_K: f64 = 60.0;
    pub const DEFAULT_VECTOR_WEIGHT: f64 = 0.7;
}

impl Default for Fusion {
    fn default() -> Self {
        Fusion::Rrf {
            k: Fusion::DEFAULT_RRF_K,
        }
    }
}

/// Where one list of a search ranked a hit (from 1) and what it scored there.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, schemars::JsonSchema)]
pub struct Found {
    pub rank: usize,
    pub score: f64,
}

/// Which lists found a hit (keyword and hybrid searches).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, schemars::JsonSchema)]
pub struct FoundBy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vector: Option<Found>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keyword: Option<Found>,
}

/// One hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    pub id: String,
    pub score: f64,
    pub metadata: Map<String, Value>,
    pub vector: Option<Vec<f32>>,
    /// Set by keyword and hybrid searches.
    pub found_by: Option<FoundBy>,
}

// ---- Search engines

/// How searches are served.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The in-memory copy (DuckDB while it loads, or for indexes over the memory budget).
    Memory,
    /// DuckDB's brute-force scan: the reference implementation.
    Duckdb,
    /// PostgreSQL with pgvector (`--database postgres://…`): exact, or an HNSW index.
    #[value(skip)]
    Postgres,
}

impl Engine {
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Memory => "memory",
            Engine::Duckdb => "duckdb",
            Engine::Postgres => "postgres",
        }
    }
}

/// How one index is served.
#[derive(Debug, Clone, Copy)]
pub struct MemoryReport {
    pub engine: Engine,
    pub bytes: usize,
    /// Of `bytes`, the keyword index's.
    pub text_bytes: usize,
    /// `ready`, `loading`, `over_budget`, or `off` (the engine is `duckdb`).
    pub state: &'static str,
}

impl MemoryReport {
    pub const OFF: MemoryReport = MemoryReport {
        engine: Engine::Duckdb,
        bytes: 0,
        text_bytes: 0,
        state: "off",
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_named_with_the_file_and_what_to_do() {
        let duck = r#"TransactionContext Error: Failed to commit: IO Error: Could not write file "/data/v.duckdb.wal": No space left on device"#;
        let text = StoreError::internal("commit failed", duck).to_string();
        assert!(
            text.starts_with(
                "internal error: disk full: no space left on the disk holding /data/v.duckdb.wal; nothing"
            ),
            "{text}"
        );
        assert!(text.contains("Free some space there and call again"), "{text}");
        assert!(
            text.ends_with(&format!("commit failed: {duck}")),
            "the engine's words are kept: {text}"
        );
        let other = StoreError::internal("commit failed", "Constraint Error: x").to_string();
        assert_eq!(other, "internal error: commit failed: Constraint Error: x");
        let pg = StoreError::internal("upsert", "could not extend file: No space left on device").to_string();
        assert!(
            pg.contains("disk full: no space left on the disk holding the database"),
            "{pg}"
        );
    }

    #[test]
    fn index_names_follow_the_identifier_pattern() {
        for ok in ["student_profiles", "_x", "A1", "select"] {
            assert!(validate_index_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "1abc", "a-b", "a b", "a\"b", "x;drop", &"a".repeat(64)] {
            let err = validate_index_name(bad).unwrap_err().to_string();
            assert!(err.contains("invalid index name"), "{bad}: {err}");
        }
    }

    #[test]
    fn vectors_must_be_finite_nonzero_and_the_right_width() {
        assert!(validate_vector("v", &[0.0, 1.0], Some(2)).is_ok());
        assert!(validate_vector("v", &[0.0, 0.0], None).is_ok());
        let e = validate_vector("v", &[1.0, f32::NAN], None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("v[1]") && e.contains("not a finite"), "{e}");
        let e = validate_vector("v", &[1.0], Some(3)).unwrap_err().to_string();
        assert!(e.contains("1 dimensions, the index has 3"), "{e}");
    }

    #[test]
    fn dedup_keeps_the_last_version_of_each_id() {
        let row = |id: &str, x: f32| VectorRow {
            id: id.into(),
            vector: vec![x],
            metadata: Map::new(),
        };
        let out = dedup_last_wins(vec![row("a", 1.0), row("b", 2.0), row("a", 3.0)]);
        let got: Vec<(String, f32)> = out.into_iter().map(|r| (r.id, r.vector[0])).collect();
        assert_eq!(got, vec![("a".into(), 3.0), ("b".into(), 2.0)]);
    }

    #[test]
    fn vector_literal_round_trips() {
        let v = [0.1f32, -3.5e-8, 1.0];
        let s = vector_literal(&v);
        let back: Vec<f32> = serde_json::from_str(&s).unwrap();
        assert_eq!(back, v);
    }
}
