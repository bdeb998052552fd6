//! Index tools: `create_index`, `list_indexes`, `describe_index`, `delete_index`.
//!
//! An index is a table in the Mastra layout; its dimension and metric are fixed at creation.

use rmcp::{model::JsonObject, tool, tool_router, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::args::{input_schema, parse, tool_error, ToolError};
use super::StrideServer;
use crate::store::memory::MemoryReport;
use crate::store::writer::{WriteOp, WriteOutcome};
use crate::store::{read, Engine, IndexInfo, Metric, StoreError};

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
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct CreateIndexResult {
    pub index: String,
    pub dimension: usize,
    pub metric: Metric,
    /// False when an index of this name and shape already existed (nothing was changed).
    pub created: bool,
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
    /// Number of vectors stored.
    pub count: u64,
    /// Embedding model recorded for this index, if any.
    pub model: Option<String>,
    /// Engine serving its searches: `memory` or `duckdb` (over budget, loading, or chosen).
    pub engine: Engine,
    /// Bytes of its in-memory copy (0 when served by DuckDB).
    pub memory_bytes: usize,
    /// `ready`, `loading`, `over_budget`, or `off`.
    pub memory_state: String,
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
    /// Number of vectors stored.
    pub count: u64,
    /// Embedding model recorded for this index, if any.
    pub model: Option<String>,
    /// True when the table was created by another program (Mastra) and adopted.
    pub adopted: bool,
    /// Engine serving its searches: `memory` or `duckdb`.
    pub engine: Engine,
    /// Bytes its in-memory copy takes (0 when served by DuckDB).
    pub memory_bytes: usize,
    /// `ready`, `loading`, `over_budget` (served by DuckDB), or `off` (`--search-engine duckdb`).
    pub memory_state: String,
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
        let op = WriteOp::CreateIndex {
            name: args.index.clone(),
            dimension: args.dimension,
            metric,
        };
        match self.store()?.write(op).await {
            Ok(WriteOutcome::IndexCreated { created }) => Ok(Json(CreateIndexResult {
                index: args.index,
                dimension: args.dimension,
                metric,
                created,
            })),
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
        let info = self
            .store()?
            .index_info(&args.index)
            .map_err(|e| tool_error("describe_index", e))?;
        let for_count = info.clone();
        let count = self
            .store()?
            .read(move |conn| read::count(conn, &for_count))
            .await
            .map_err(|e| tool_error("describe_index", e))?;
        let memory = self.store()?.memory_report(&info.name);
        Ok(Json(describe(info, count, memory)))
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
        let infos = store.indexes();
        let reports: Vec<MemoryReport> = infos.iter().map(|i| store.memory_report(&i.name)).collect();
        store
            .read(move |conn| {
                infos
                    .into_iter()
                    .zip(reports)
                    .map(|(info, memory)| {
                        Ok(IndexSummary {
                            count: read::count(conn, &info)?,
                            index: info.name,
                            dimension: info.dimension,
                            metric: info.metric,
                            model: info.model,
                            engine: memory.engine,
                            memory_bytes: memory.bytes,
                            memory_state: memory.state.to_string(),
                        })
                    })
                    .collect::<Result<Vec<_>, StoreError>>()
            })
            .await
            .map_err(|e| tool_error(tool, e))
    }
}

fn describe(info: IndexInfo, count: u64, memory: MemoryReport) -> DescribeIndexResult {
    DescribeIndexResult {
        index: info.name,
        dimension: info.dimension,
        metric: info.metric,
        count,
        model: info.model,
        adopted: info.adopted,
        engine: memory.engine,
        memory_bytes: memory.bytes,
        memory_state: memory.state.to_string(),
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
