//! Embedding tools: `embed` (hand documents to the pipeline) and `flush` (wait for it).
//!
//! The pipeline decides when and whether to embed; these tools only validate and report.

use std::time::Duration;

use rmcp::{model::JsonObject, tool, tool_router, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::args::{input_schema, metadata_object, parse, tool_error, ToolError};
use super::StrideServer;
use crate::embed::pipeline::{DocStatus, Document};
use crate::store::validate_index_name;

/// Most documents one `embed` call may carry.
const MAX_DOCUMENTS: usize = 1000;
const DEFAULT_FLUSH_MS: u64 = 30_000;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DocumentInput {
    /// Id of the document in the index (non-empty); the same id replaces the earlier version.
    /// Ids ending in `#<number>` are kept for the chunks of long texts.
    pub id: String,
    /// The text to embed (non-empty). A text longer than the model's window (254 tokens,
    /// about 200 words, for the local model) is embedded in overlapping chunks that end at
    /// sentence ends; the document stays one id for `fetch`, `update`, `delete` and
    /// `search`.
    pub text: String,
    /// The document's whole metadata (replaces what is stored; omitted means `{}`). The
    /// key `chunk` is reserved (a chunk's place in its document).
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EmbedArgs {
    /// Target index; created on first use with the model's dimension and cosine metric.
    pub index: String,
    /// Up to 1000 documents.
    pub documents: Vec<DocumentInput>,
    /// Answer only after the documents are embedded and committed (`indexed`), skipping the
    /// debounce. Default false: answer as soon as they are safely queued.
    #[serde(default)]
    pub wait: Option<bool>,
}

#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EmbedStatus {
    /// Accepted and durable; it will be embedded after the debounce window.
    Queued,
    /// Replaced a pending version that had not been embedded yet.
    Coalesced,
    /// Same model and text as what is stored: only the metadata was written.
    Unchanged,
    /// Embedded and committed (only with `wait: true`).
    Indexed,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct DocumentStatus {
    pub id: String,
    pub status: EmbedStatus,
    /// With `wait: true`, why the document is not indexed yet (it stays pending and is
    /// retried).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct EmbedResult {
    pub index: String,
    /// Embedding model used for this index.
    pub model: String,
    /// One entry per input document, in input order.
    pub documents: Vec<DocumentStatus>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct FlushArgs {
    /// Only this index (default: all).
    #[serde(default)]
    pub index: Option<String>,
    /// Longest wait in milliseconds (default 30000, at most 600000).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct FlushResult {
    /// Documents committed while this call waited.
    pub committed: u64,
    /// Documents still pending when it returned (0 unless the timeout passed).
    pub pending: usize,
    /// Documents that failed for good again (see `stats`' `parked` for why).
    pub parked: usize,
}

#[tool_router(router = embed_tools, vis = "pub(crate)")]
impl StrideServer {
    /// Index text documents: the server embeds them with its model and stores the vectors.
    /// Calls are cheap and safe to repeat on every edit: versions of one id inside the
    /// debounce window (2 s by default) are coalesced, unchanged texts cost no embedding,
    /// and an accepted document survives crashes and restarts. Each document's status is
    /// `queued`, `coalesced`, `unchanged`, or with `wait: true` `indexed`. Long texts are
    /// stored in chunks (rows `<id>#0`, `<id>#1`, ...); editing one paragraph re-embeds only
    /// the chunks whose text changed.
    #[tool(
        name = "embed",
        input_schema = input_schema::<EmbedArgs>(),
        annotations(read_only_hint = false, destructive_hint = true, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn embed(&self, args: JsonObject) -> Result<Json<EmbedResult>, ToolError> {
        let args: EmbedArgs = parse(args)?;
        validate_index_name(&args.index).map_err(|e| tool_error("embed", e))?;
        if args.documents.len() > MAX_DOCUMENTS {
            return Err(format!(
                "documents: at most {MAX_DOCUMENTS} per call, got {}",
                args.documents.len()
            ));
        }
        let mut docs = Vec::with_capacity(args.documents.len());
        for (at, d) in args.documents.into_iter().enumerate() {
            if d.id.is_empty() {
                return Err(format!("documents[{at}].id: the id is empty"));
            }
            if d.text.trim().is_empty() {
                return Err(format!("documents[{at}] (id {:?}).text: the text is empty", d.id));
            }
            let metadata = metadata_object(&format!("documents[{at}] (id {:?}).metadata", d.id), d.metadata)?;
            docs.push(Document {
                id: d.id,
                text: d.text,
                metadata,
            });
        }
        let ids: Vec<String> = docs.iter().map(|d| d.id.clone()).collect();
        let statuses = self
            .pipeline()?
            .submit(&args.index, docs, args.wait.unwrap_or(false))
            .await
            .map_err(|e| tool_error("embed", e))?;
        let documents = ids
            .into_iter()
            .zip(statuses)
            .map(|(id, s)| DocumentStatus {
                id,
                error: s.error,
                status: match s.status {
                    DocStatus::Queued => EmbedStatus::Queued,
                    DocStatus::Coalesced => EmbedStatus::Coalesced,
                    DocStatus::Unchanged => EmbedStatus::Unchanged,
                    DocStatus::Indexed => EmbedStatus::Indexed,
                },
            })
            .collect();
        Ok(Json(EmbedResult {
            index: args.index,
            model: self.pipeline()?.model().to_string(),
            documents,
        }))
    }

    /// Embed and commit everything pending now (for one index or all), ignoring the
    /// debounce window, and wait until done or until `timeout_ms` passes.
    #[tool(
        name = "flush",
        input_schema = input_schema::<FlushArgs>(),
        annotations(read_only_hint = false, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn flush(&self, args: JsonObject) -> Result<Json<FlushResult>, ToolError> {
        let args: FlushArgs = parse(args)?;
        if let Some(index) = &args.index {
            validate_index_name(index).map_err(|e| tool_error("flush", e))?;
        }
        let timeout_ms = args.timeout_ms.unwrap_or(DEFAULT_FLUSH_MS);
        if timeout_ms > 600_000 {
            return Err(format!("timeout_ms: at most 600000, got {timeout_ms}"));
        }
        let report = self
            .pipeline()?
            .flush(args.index.as_deref(), Duration::from_millis(timeout_ms))
            .await;
        Ok(Json(FlushResult {
            committed: report.committed,
            pending: report.pending,
            parked: report.parked,
        }))
    }
}
