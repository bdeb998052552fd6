//! Index tools: `create_index`, `list_indexes`, `describe_index`, `delete_index`.
//!
//! An index is a table in the Mastra layout; its dimension, metric, text field and language
//! are fixed at creation.

use rmcp::{model::JsonObject, tool, tool_router, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::args::{input_schema, parse, tool_error, ToolError};
use super::StrideServer;
use crate::store::MemoryReport;
use crate::store::{Engine, Hnsw, IndexInfo, Metric, StoreError, TextRequest};
use crate::store::{WriteOp, WriteOutcome};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateIndexArgs {
    /// Index name: letters, digits and underscores, not starting with a digit (max 63).
    /// Stride uses `student_profiles`, `advice_history` and `goals`.
    pub index: String,
    /// Number of dimensions of every vector (384 for all-MiniLM-L6-v2, 1024 for bge-m3).
    pub dimension: usize,
    /// Similarity metric; `cosine` when omitted.
    #[serde(default)]
    pub metric: Option<Metric>,
    /// An approximate index to search through (PostgreSQL back-end only):
    /// `{"type": "hnsw", "m": 16, "ef_construction": 64}`. Omitted: searches are exact.
    /// Given for an existing index of the same shape, its HNSW index is (re)built to match.
    #[serde(default)]
    pub ann: Option<AnnArgs>,
    /// The metadata key where each row keeps its text (default `text`, Mastra's
    /// convention): `embed` puts the document's text there, and keyword search reads it
    /// from every row that has it, however it was written. `null`: the index keeps no text
    /// and has no keyword search. Fixed at creation: left out on an existing index, it is
    /// whatever that index has.
    #[serde(default, deserialize_with = "present")]
    #[schemars(with = "Option<String>")]
    pub text_field: Option<Option<String>>,
    /// Language of the keyword index: stop words and stemming for documents and queries
    /// alike. `english` (default), `french`, `german`, `spanish`, `italian`, `portuguese`,
    /// `dutch`, `danish`, `finnish`, `norwegian`, `swedish`, `hungarian`, `romanian`,
    /// `russian`, `greek`, `arabic`, `tamil`, `turkish`, or `none` (words only lowercased
    /// and stripped of accents). Fixed at creation: left out on an existing index, it is
    /// whatever that index has.
    #[serde(default)]
    pub language: Option<String>,
}

/// A field given as `null` is `Some(None)`; a field left out is `None`.
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl CreateIndexArgs {
    fn text(&self) -> TextRequest {
        TextRequest {
            field: self.text_field.clone(),
            language: self.language.clone(),
        }
    }
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AnnArgs {
    /// `hnsw` (pgvector's HNSW graph), the one kind there is.
    #[serde(rename = "type")]
    pub kind: AnnKind,
    /// Links per node, 2 to 100 (default 16): more is better recall, more memory.
    #[serde(default)]
    pub m: Option<u32>,
    /// Candidates kept while building, 4 to 1000 and at least 2·m (default 64).
    #[serde(default)]
    pub ef_construction: Option<u32>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AnnKind {
    Hnsw,
}

impl AnnArgs {
    fn hnsw(&self) -> Hnsw {
        match self.kind {
            AnnKind::Hnsw => Hnsw {
                m: self.m.unwrap_or(Hnsw::DEFAULT_M),
                ef_construction: self.ef_construction.unwrap_or(Hnsw::DEFAULT_EF_CONSTRUCTION),
            },
        }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CreateIndexResult {
    pub index: String,
    pub dimension: usize,
    pub metric: Metric,
    /// False when an index of this name and shape already existed (nothing was changed,
    /// unless `ann` asked for another HNSW index).
    pub created: bool,
    /// The HNSW index asked for, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ann: Option<Hnsw>,
    /// Where rows keep their text (`null`: no text, no keyword search).
    pub text_field: Option<String>,
    /// Language of the keyword index.
    pub language: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexArgs {
    /// Name of an existing index.
    pub index: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ListIndexesArgs {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct IndexSummary {
    pub index: String,
    pub dimension: usize,
    pub metric: Metric,
    /// Number of vectors (rows) stored: a long text stored in chunks counts one per chunk.
    pub count: u64,
    /// Embedding model recorded for this index, if any.
    pub model: Option<String>,
    /// Engine serving its searches: `memory`, `duckdb` (over budget, loading, or chosen),
    /// or `postgres`.
    pub engine: Engine,
    /// Bytes of its in-memory copy (0 when served by DuckDB).
    pub memory_bytes: usize,
    /// `ready`, `loading`, `over_budget`, or `off`.
    pub memory_state: String,
    /// `exact` (every row scored) or `hnsw` (approximate, through an HNSW index).
    pub search_mode: String,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ListIndexesResult {
    pub indexes: Vec<IndexSummary>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DescribeIndexResult {
    pub index: String,
    pub dimension: usize,
    pub metric: Metric,
    /// Number of vectors (rows) stored: a long text stored in chunks counts one per chunk.
    pub count: u64,
    /// Embedding model recorded for this index, if any.
    pub model: Option<String>,
    /// True when the table was created by another program (Mastra) and adopted.
    pub adopted: bool,
    /// Engine serving its searches: `memory`, `duckdb` or `postgres`.
    pub engine: Engine,
    /// Bytes its in-memory copy takes (0 when served by DuckDB).
    pub memory_bytes: usize,
    /// `ready`, `loading`, `over_budget` (served by DuckDB), or `off` (`--search-engine duckdb`,
    /// or PostgreSQL).
    pub memory_state: String,
    /// `exact` (every row scored) or `hnsw` (approximate, through an HNSW index).
    pub search_mode: String,
    /// The HNSW index's settings, when `search_mode` is `hnsw`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ann: Option<Hnsw>,
    /// Where the index lives: `duckdb` or `postgres`.
    pub backend: String,
    /// Where rows keep their text (`null`: no text, no keyword search).
    pub text_field: Option<String>,
    /// Language of the keyword index.
    pub language: String,
    /// Bytes of its keyword index in memory (postings, lengths, vocabulary); 0 when it
    /// keeps no text or is not in memory (PostgreSQL keeps its own GIN index).
    pub keyword_bytes: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteIndexResult {
    pub index: String,
    /// False when there was no such index (nothing was changed).
    pub deleted: bool,
}

#[tool_router(router = index_tools, vis = "pub(crate)")]
impl StrideServer {
    /// Create a vector index (a table) with a fixed dimension and metric. Calling it again
    /// with the same shape is a no-op (`created: false`); with a different shape it is an
    /// error: delete the index first.
    #[tool(
        name = "create_index",
        input_schema = input_schema::<CreateIndexArgs>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn create_index(&self, args: JsonObject) -> Result<Json<CreateIndexResult>, ToolError> {
        let args: CreateIndexArgs = parse(args)?;
        let metric = args.metric.unwrap_or(Metric::Cosine);
        let ann = args.ann.as_ref().map(AnnArgs::hnsw);
        let text = args.text();
        let op = WriteOp::CreateIndex {
            name: args.index.clone(),
            dimension: args.dimension,
            metric,
            ann,
            text: text.clone(),
        };
        let store = self.store()?;
        match store.write(op).await {
            Ok(WriteOutcome::IndexCreated { created }) => {
                // What the index has (an existing one keeps its own when the call left
                // them out); as asked if it was dropped meanwhile.
                let text = match store.index_info(&args.index).await {
                    Ok(info) => info.text,
                    Err(_) => text.settings(),
                };
                Ok(Json(CreateIndexResult {
                    index: args.index,
                    dimension: args.dimension,
                    metric,
                    created,
                    ann,
                    text_field: text.field,
                    language: text.language,
                }))
            }
            Ok(other) => Err(unexpected("create_index", other)),
            Err(e) => Err(tool_error("create_index", e)),
        }
    }

    /// List every index with its dimension, metric and number of vectors.
    #[tool(
        name = "list_indexes",
        input_schema = input_schema::<ListIndexesArgs>(),
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn list_indexes(&self, args: JsonObject) -> Result<Json<ListIndexesResult>, ToolError> {
        let _: ListIndexesArgs = parse(args)?;
        let indexes = self.index_summaries("list_indexes").await?;
        Ok(Json(ListIndexesResult { indexes }))
    }

    /// Describe one index: dimension, metric, number of vectors, recorded embedding model.
    #[tool(
        name = "describe_index",
        input_schema = input_schema::<IndexArgs>(),
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn describe_index(&self, args: JsonObject) -> Result<Json<DescribeIndexResult>, ToolError> {
        let args: IndexArgs = parse(args)?;
        let store = self.store()?;
        let info = store
            .index_info(&args.index)
            .await
            .map_err(|e| tool_error("describe_index", e))?;
        let count = store
            .count(&info)
            .await
            .map_err(|e| tool_error("describe_index", e))?;
        let memory = store.memory_report(&info.name);
        Ok(Json(describe(info, count, memory, store.backend_name())))
    }

    /// Delete an index and every vector in it. Irreversible. Deleting an index that does
    /// not exist is not an error (`deleted: false`).
    #[tool(
        name = "delete_index",
        input_schema = input_schema::<IndexArgs>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn delete_index(&self, args: JsonObject) -> Result<Json<DeleteIndexResult>, ToolError> {
        let args: IndexArgs = parse(args)?;
        match self
            .store()?
            .write(WriteOp::DeleteIndex {
                name: args.index.clone(),
            })
            .await
        {
            Ok(WriteOutcome::IndexDeleted { existed }) => Ok(Json(DeleteIndexResult {
                index: args.index,
                deleted: existed,
            })),
            Ok(other) => Err(unexpected("delete_index", other)),
            Err(e) => Err(tool_error("delete_index", e)),
        }
    }
}

impl StrideServer {
    /// Every index with its count and how it is served (for `list_indexes` and `stats`).
    pub(crate) async fn index_summaries(&self, tool: &'static str) -> Result<Vec<IndexSummary>, ToolError> {
        let store = self.store()?;
        let infos = store.indexes().await.map_err(|e| tool_error(tool, e))?;
        let mut summaries = Vec::with_capacity(infos.len());
        for info in infos {
            let memory: MemoryReport = store.memory_report(&info.name);
            let count = match store.count(&info).await {
                Ok(count) => count,
                // Dropped by another process since the list was read: no longer listed.
                Err(StoreError::Invalid(_)) => continue,
                Err(e) => return Err(tool_error(tool, e)),
            };
            summaries.push(IndexSummary {
                count,
                search_mode: search_mode(&info).into(),
                index: info.name,
                dimension: info.dimension,
                metric: info.metric,
                model: info.model,
                engine: memory.engine,
                memory_bytes: memory.bytes,
                memory_state: memory.state.to_string(),
            });
        }
        Ok(summaries)
    }
}

fn search_mode(info: &IndexInfo) -> &'static str {
    if info.ann.is_some() {
        "hnsw"
    } else {
        "exact"
    }
}

fn describe(info: IndexInfo, count: u64, memory: MemoryReport, backend: &str) -> DescribeIndexResult {
    DescribeIndexResult {
        search_mode: search_mode(&info).into(),
        ann: info.ann,
        backend: backend.into(),
        index: info.name,
        dimension: info.dimension,
        metric: info.metric,
        count,
        model: info.model,
        adopted: info.adopted,
        engine: memory.engine,
        memory_bytes: memory.bytes,
        memory_state: memory.state.to_string(),
        text_field: info.text.field,
        language: info.text.language,
        keyword_bytes: memory.text_bytes,
    }
}

/// The writer answers each operation with its own outcome kind; anything else is a bug,
/// reported to the caller instead of panicking.
pub(crate) fn unexpected(tool: &str, outcome: WriteOutcome) -> ToolError {
    tool_error(
        tool,
        StoreError::Internal(format!("unexpected writer outcome {outcome:?}")),
    )
}
