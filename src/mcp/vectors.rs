//! Row tools: `upsert`, `update`, `delete`, `fetch`.
//!
//! Every write is answered only after the writer committed it. Checks that need no index
//! (ids, finite vectors, metadata shape) run here so a bad call never reaches the writer;
//! the writer checks the rest against the committed catalog.

use rmcp::{model::JsonObject, tool, tool_router, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::args::{filter_arg, input_schema, metadata_object, parse, tool_error, Args, ToolError};
use super::indexes::unexpected;
use super::StrideServer;
use crate::store::chunks::ChunkSpan;
use crate::store::{validate_index_name, validate_vector, Metric, VectorRow};
use crate::store::{MetadataMode, Target, WriteOp, WriteOutcome};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VectorInput {
    /// Unique id within the index (non-empty). Writing an existing id replaces that row.
    pub id: String,
    /// The embedding: finite numbers, as many as the index's dimension. An all-zero vector is
    /// stored; it has no direction, so under cosine it scores -1.
    pub vector: Vec<f32>,
    /// Any JSON object; searchable with filters. Omitted means `{}`.
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IndexShape {
    pub dimension: usize,
    /// `cosine` when omitted.
    #[serde(default)]
    pub metric: Option<Metric>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpsertArgs {
    /// Target index.
    pub index: String,
    /// Rows to insert or replace. If an id appears twice, the last one wins.
    pub vectors: Vec<VectorInput>,
    /// Create the index with this shape if it does not exist yet.
    #[serde(default)]
    pub create_index: Option<IndexShape>,
    /// Delete every row this metadata filter matches (queued texts included) before
    /// writing, in the same transaction: re-index a source's chunks in one call, as
    /// `{"source_id": "guide.pdf"}`. Must not be empty.
    #[serde(default)]
    pub delete_filter: Option<Value>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct UpsertResult {
    pub index: String,
    /// Number of distinct ids written.
    pub upserted: usize,
    /// The distinct ids written, in order of first appearance.
    pub ids: Vec<String>,
    /// True when this call created the index.
    pub created_index: bool,
    /// Rows `delete_filter` removed before the write (only with `delete_filter`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum MetadataModeArg {
    /// Merge into the stored object (JSON merge patch: `null` removes a key).
    #[default]
    Merge,
    /// Replace the stored object entirely.
    Replace,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateArgs {
    pub index: String,
    /// Id of an existing row. Give exactly one of `id` and `filter`.
    #[serde(default)]
    pub id: Option<String>,
    /// Metadata filter (same language as `search`): every stored row it matches is updated
    /// (none is fine). Must not be empty.
    #[serde(default)]
    pub filter: Option<Value>,
    /// New vector (same dimension as the index).
    #[serde(default)]
    pub vector: Option<Vec<f32>>,
    /// Metadata to merge (default) or replace with.
    #[serde(default)]
    pub metadata: Option<Value>,
    /// `merge` (default) keeps the fields you do not mention; `replace` drops them.
    #[serde(default)]
    pub metadata_mode: MetadataModeArg,
    /// With `id`: `error` (default) when no row has that id; `ignore` to change nothing
    /// and answer `updated: false`, as Mastra's SQL stores do.
    #[serde(default)]
    pub if_missing: IfMissingArg,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IfMissingArg {
    #[default]
    Error,
    Ignore,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct UpdateResult {
    pub index: String,
    /// The id given, when updating by id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// True when at least one row changed.
    pub updated: bool,
    /// Rows changed.
    pub count: usize,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DeleteArgs {
    pub index: String,
    /// Ids to delete. Give exactly one of `ids` and `filter`.
    #[serde(default)]
    pub ids: Option<Vec<String>>,
    /// Metadata filter (same language as `search`); every matching row is deleted.
    #[serde(default)]
    pub filter: Option<Value>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DeleteResult {
    pub index: String,
    /// Number of rows removed.
    pub deleted: usize,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchArgs {
    pub index: String,
    /// Ids to read (at most 1000).
    pub ids: Vec<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StoredVector {
    pub id: String,
    /// A long text stored in chunks: its first chunk's vector (each chunk's own is fetched
    /// by the chunk's id).
    pub vector: Vec<f32>,
    /// A long text stored in chunks: the whole text in the text field, and no `chunk`.
    pub metadata: Map<String, Value>,
    /// A long text stored in chunks: each chunk's id and span (in characters) in the text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chunks: Option<Vec<ChunkSpan>>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FetchResult {
    pub vectors: Vec<StoredVector>,
    /// Requested ids that are not in the index.
    pub missing: Vec<String>,
}

const MAX_FETCH: usize = 1000;

#[tool_router(router = vector_tools, vis = "pub(crate)")]
impl StrideServer {
    /// Insert or replace vectors by id, atomically: either every row of the call is
    /// committed or none is. Pass `create_index` to create the index on first use. The
    /// answer comes after the commit, so an acknowledged row is durable. A stdio message
    /// is limited to 16 MiB: send at most about 3,000 vectors of 384 dimensions (1,000 of
    /// 1024) per call and split bigger loads.
    #[tool(
        name = "upsert",
        input_schema = input_schema::<UpsertArgs>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn upsert(&self, Args(args): Args<UpsertArgs>) -> Result<Json<UpsertResult>, ToolError> {
        let args = args?;
        validate_index_name(&args.index).map_err(|e| tool_error("upsert", e))?;
        let mut rows = Vec::with_capacity(args.vectors.len());
        for (at, v) in args.vectors.into_iter().enumerate() {
            let metadata = metadata_object(&format!("vectors[{at}] (id {:?}).metadata", v.id), v.metadata)?;
            let row = VectorRow {
                id: v.id,
                vector: v.vector,
                metadata,
            };
            row.validate(at).map_err(|e| tool_error("upsert", e))?;
            rows.push(row);
        }
        let create = args
            .create_index
            .map(|s| (s.dimension, s.metric.unwrap_or(Metric::Cosine)));
        let delete_filter = filter_arg("delete_filter", args.delete_filter, false)?;
        let index = args.index;
        match self
            .store()?
            .write(WriteOp::Upsert {
                index: index.clone(),
                rows,
                create,
                delete_filter,
            })
            .await
        {
            Ok(WriteOutcome::Upserted {
                ids,
                created_index,
                deleted,
            }) => Ok(Json(UpsertResult {
                index,
                upserted: ids.len(),
                ids,
                created_index,
                deleted,
            })),
            Ok(other) => Err(unexpected("upsert", other)),
            Err(e) => Err(tool_error("upsert", e)),
        }
    }

    /// Change the vector and/or metadata of one row (`id`; unknown id: error) or of every
    /// stored row a metadata `filter` matches. Metadata is merged by default (fields you do
    /// not mention are kept; a `null` value removes a field); pass `metadata_mode: "replace"`
    /// to overwrite the whole object.
    #[tool(
        name = "update",
        input_schema = input_schema::<UpdateArgs>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn update(&self, args: JsonObject) -> Result<Json<UpdateResult>, ToolError> {
        let args: UpdateArgs = parse(args)?;
        validate_index_name(&args.index).map_err(|e| tool_error("update", e))?;
        let target = match (args.id.clone(), filter_arg("filter", args.filter, false)?) {
            (Some(id), None) if id.is_empty() => return Err("id: the id is empty".into()),
            (Some(id), None) => Target::Ids(vec![id]),
            (None, Some(f)) => Target::Filter(f),
            (Some(_), Some(_)) => {
                return Err("give either `id` or `filter`, not both: they are mutually exclusive".into())
            }
            (None, None) => return Err("give `id` or `filter` to say which rows to update".into()),
        };
        if args.vector.is_none() && args.metadata.is_none() {
            return Err("update needs `vector`, `metadata`, or both".into());
        }
        if let Some(v) = &args.vector {
            validate_vector("vector", v, None).map_err(|e| tool_error("update", e))?;
        }
        let metadata = match args.metadata {
            None => None,
            some => Some(metadata_object("metadata", some)?),
        };
        let mode = match args.metadata_mode {
            MetadataModeArg::Merge => MetadataMode::Merge,
            MetadataModeArg::Replace => MetadataMode::Replace,
        };
        let op = WriteOp::Update {
            index: args.index.clone(),
            target,
            vector: args.vector,
            metadata,
            mode,
            skip_missing: args.if_missing == IfMissingArg::Ignore,
        };
        match self.store()?.write(op).await {
            Ok(WriteOutcome::Updated { count }) => Ok(Json(UpdateResult {
                index: args.index,
                id: args.id,
                updated: count > 0,
                count,
            })),
            Ok(other) => Err(unexpected("update", other)),
            Err(e) => Err(tool_error("update", e)),
        }
    }

    /// Delete rows by `ids` or by metadata `filter` (exactly one of the two). Ids that do
    /// not exist are ignored; `deleted` counts the rows actually removed.
    #[tool(
        name = "delete",
        input_schema = input_schema::<DeleteArgs>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn delete(&self, args: JsonObject) -> Result<Json<DeleteResult>, ToolError> {
        let args: DeleteArgs = parse(args)?;
        validate_index_name(&args.index).map_err(|e| tool_error("delete", e))?;
        let target = match (args.ids, filter_arg("filter", args.filter, false)?) {
            (Some(ids), None) => {
                if let Some(at) = ids.iter().position(|id| id.is_empty()) {
                    return Err(format!("ids[{at}]: the id is empty"));
                }
                Target::Ids(ids)
            }
            (None, Some(f)) => Target::Filter(f),
            (Some(_), Some(_)) => {
                return Err("give either `ids` or `filter`, not both: they are mutually exclusive".into())
            }
            (None, None) => return Err("give `ids` or `filter` to say what to delete".into()),
        };
        match self
            .store()?
            .write(WriteOp::Delete {
                index: args.index.clone(),
                target,
            })
            .await
        {
            Ok(WriteOutcome::Deleted { count }) => Ok(Json(DeleteResult {
                index: args.index,
                deleted: count,
            })),
            Ok(other) => Err(unexpected("delete", other)),
            Err(e) => Err(tool_error("delete", e)),
        }
    }

    /// Read rows by id: vector and metadata as stored. Ids not found are listed in
    /// `missing`. A long text that `embed` stored in chunks comes back whole under its id,
    /// with its chunks listed; a chunk's own id (`<id>#<n>`) reads that chunk alone.
    #[tool(
        name = "fetch",
        input_schema = input_schema::<FetchArgs>(),
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn fetch(&self, args: JsonObject) -> Result<Json<FetchResult>, ToolError> {
        let args: FetchArgs = parse(args)?;
        if args.ids.len() > MAX_FETCH {
            return Err(format!(
                "ids: at most {MAX_FETCH} ids per call, got {}",
                args.ids.len()
            ));
        }
        let store = self.store()?;
        let info = store
            .index_info(&args.index)
            .await
            .map_err(|e| tool_error("fetch", e))?;
        let hits = store
            .fetch(&info, args.ids.clone())
            .await
            .map_err(|e| tool_error("fetch", e))?;
        let missing = args
            .ids
            .into_iter()
            .filter(|id| !hits.iter().any(|(h, _)| &h.id == id))
            .collect();
        let vectors = hits
            .into_iter()
            .map(|(h, chunks)| StoredVector {
                id: h.id,
                vector: h.vector.unwrap_or_default(),
                metadata: h.metadata,
                chunks,
            })
            .collect();
        Ok(Json(FetchResult { vectors, missing }))
    }
}
