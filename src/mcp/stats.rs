//! The `stats` tool: what this process is, what it holds, and how the pipeline is doing.

use rmcp::{model::JsonObject, tool, tool_router, Json};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::args::{input_schema, parse, ToolError};
use super::indexes::IndexSummary;
use super::StrideServer;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatsArgs {}

#[derive(Debug, Serialize, JsonSchema)]
pub struct StatsResult {
    /// `owner`: this process holds the database file; `relay`: it forwards to the owner;
    /// `peer`: the store is PostgreSQL, which this process writes directly, as every
    /// other stride-vectors process on it does.
    pub role: String,
    /// This process.
    pub pid: u32,
    /// The process that owns the database.
    pub owner_pid: u32,
    /// Relays connected to the owner.
    pub relays_connected: usize,
    /// On a relay: how long ago the owner last answered this relay's heartbeat, in
    /// milliseconds (absent on the owner). Past `--owner-timeout-ms`, calls are answered
    /// with an error naming the owner's pid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_heartbeat_ms_ago: Option<u64>,
    /// The last failure of a store this process owned (its writer or loader panicked), after
    /// which it gave the database up; absent when there was none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_failure: Option<String>,
    /// Why the other processes on this file cannot relay to this owner (its socket could
    /// not be bound; it retries), while that lasts; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_socket_error: Option<String>,
    /// The DuckDB file, or the PostgreSQL address and schema (never its password).
    pub database: String,
    /// `duckdb` or `postgres`.
    pub backend: String,
    pub indexes: Vec<IndexSummary>,
    /// Documents accepted but not yet embedded and committed.
    pub pending: usize,
    /// Age of the oldest pending document, in milliseconds.
    pub oldest_pending_ms: Option<u64>,
    pub documents_accepted: u64,
    /// Versions replaced by a newer one before being embedded.
    pub documents_coalesced: u64,
    /// Documents whose text was already embedded: no embedding call.
    pub embeddings_skipped_unchanged: u64,
    pub embedding_calls: u64,
    pub texts_embedded: u64,
    /// Versions whose embedding (or failure) came back after a later write to their id had
    /// won: dropped, never stored, retried or parked.
    pub embeddings_discarded_superseded: u64,
    /// Chunks of long texts whose text had not changed: they kept their stored vector
    /// instead of being embedded again.
    pub chunks_reused: u64,
    pub documents_committed: u64,
    /// Bytes of all in-memory index copies.
    pub memory_bytes: usize,
    /// Resident memory of this whole process, in bytes (absent where the OS does not say).
    pub resident_bytes: Option<u64>,
    /// Memory DuckDB itself holds (its buffer pool and more), in bytes.
    pub duckdb_memory_bytes: Option<u64>,
    pub last_error: Option<String>,
    pub model: String,
    /// `missing` (not on disk; downloaded on first need), `downloading`, `loading`, `ready`
    /// or `failed`.
    pub model_state: String,
    pub model_error: Option<String>,
    /// While the model downloads: bytes received so far.
    pub model_download_bytes: Option<u64>,
    /// While the model downloads: its size, when the server announced it.
    pub model_download_total_bytes: Option<u64>,
    /// Documents whose embedding failed for a reason retrying will not fix (a 4xx, a zero
    /// vector, a width the index cannot take), by id with the error (the first 100). They
    /// stay queued and are retried when their text changes or on `flush`.
    pub parked: Vec<ParkedEntry>,
    pub parked_count: usize,
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct ParkedEntry {
    pub index: String,
    pub id: String,
    pub error: String,
}

#[tool_router(router = stats_tools, vis = "pub(crate)")]
impl StrideServer {
    /// Report this server's role, database, per-index counts, and the embedding pipeline:
    /// pending documents and the age of the oldest, coalesced and unchanged counts,
    /// embedding calls, the last error, and the model's state.
    #[tool(
        name = "stats",
        input_schema = input_schema::<StatsArgs>(),
        annotations(read_only_hint = true, destructive_hint = false, idempotent_hint = true, open_world_hint = false)
    )]
    pub async fn stats(&self, args: JsonObject) -> Result<Json<StatsResult>, ToolError> {
        let _: StatsArgs = parse(args)?;
        let indexes = self.index_summaries("stats").await?;
        let memory_bytes = indexes.iter().map(|i| i.memory_bytes).sum();
        let p = self.pipeline()?.stats().await;
        let model_error = match &p.model_state {
            crate::embed::ModelState::Failed(e) => Some(e.clone()),
            _ => None,
        };
        let (model_download_bytes, model_download_total_bytes) = match p.model_state {
            crate::embed::ModelState::Downloading { done, total } => (Some(done), total),
            _ => (None, None),
        };
        let store = self.store()?;
        Ok(Json(StatsResult {
            role: if store.backend_name() == "postgres" {
                "peer".into()
            } else {
                "owner".into()
            },
            backend: store.backend_name().into(),
            pid: std::process::id(),
            owner_pid: std::process::id(),
            relays_connected: self.ownership().relays(),
            owner_heartbeat_ms_ago: None,
            store_failure: self.ownership().last_failure(),
            relay_socket_error: self.ownership().relay_socket_error(),
            database: store.location(),
            indexes,
            pending: p.pending,
            oldest_pending_ms: p.oldest_pending_ms,
            documents_accepted: p.accepted,
            documents_coalesced: p.coalesced,
            embeddings_skipped_unchanged: p.unchanged,
            embedding_calls: p.embedding_calls,
            texts_embedded: p.texts_embedded,
            embeddings_discarded_superseded: p.discarded,
            chunks_reused: p.pieces_reused,
            documents_committed: p.committed,
            memory_bytes,
            resident_bytes: resident_bytes(),
            duckdb_memory_bytes: store.duckdb_memory().await,
            last_error: p.last_error,
            model: p.model,
            model_state: p.model_state.label().into(),
            model_error,
            model_download_bytes,
            model_download_total_bytes,
            parked: p
                .parked
                .into_iter()
                .map(|d| ParkedEntry {
                    index: d.index,
                    id: d.id,
                    error: d.error,
                })
                .collect(),
            parked_count: p.parked_count,
        }))
    }
}

/// This process's resident set, as the OS counts it (Linux `/proc/self/statm`, macOS
/// `task_info`, Windows `GetProcessMemoryInfo`, through `memory-stats`).
fn resident_bytes() -> Option<u64> {
    memory_stats::memory_stats().map(|m| m.physical_mem as u64)
}
