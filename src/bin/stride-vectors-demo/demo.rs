//! The demo itself: the main job on the embedded defaults, end to end.
//!
//! It starts the server binary as an MCP server (a child process on stdio, exactly as Mastra
//! or Claude Desktop would), indexes the sample Stride documents of `fixtures/` through the
//! real `embed` tool, and returns a report of a few text searches with their scores. It
//! shares no code path with the server beyond the MCP wire.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

use stride_vectors::client::ChildServer;

/// Run the demo against the database at `db`; returns the lines to print. The server's logs
/// are at `warn` unless `verbose`.
pub async fn run(fixtures: &Path, db: &Path, verbose: bool) -> Result<Vec<String>> {
    let sample: Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures).with_context(|| format!("reading {}", fixtures.display()))?,
    )
    .with_context(|| format!("parsing {}", fixtures.display()))?;
    let log: &[&str] = if verbose { &[] } else { &["--log", "warn"] };
    let server = ChildServer::start(db, log).await?;

    let mut out = vec![format!("database: {}", db.display())];
    for index in ["student_profiles", "goals", "advice_history"] {
        let docs = sample[index].clone();
        let started = std::time::Instant::now();
        let r = server
            .tool("embed", json!({"index": index, "documents": docs, "wait": true}))
            .await?;
        let mut counts = std::collections::BTreeMap::<String, usize>::new();
        for d in r["documents"].as_array().into_iter().flatten() {
            *counts
                .entry(d["status"].as_str().unwrap_or("?").to_string())
                .or_default() += 1;
        }
        out.push(format!(
            "embed {index}: {counts:?} in {} ms",
            started.elapsed().as_millis()
        ));
    }
    for search in sample["searches"].as_array().into_iter().flatten() {
        let started = std::time::Instant::now();
        let r = server.tool("search", search.clone()).await?;
        out.push(String::new());
        out.push(format!(
            "search {} for {:?}{} ({} ms):",
            search["index"].as_str().unwrap_or("?"),
            search["query"].as_str().unwrap_or("?"),
            search
                .get("filter")
                .map(|f| format!(" where {f}"))
                .unwrap_or_default(),
            started.elapsed().as_millis()
        ));
        for hit in r["results"].as_array().into_iter().flatten() {
            out.push(format!(
                "  {:.4}  {}  {}",
                hit["score"].as_f64().unwrap_or(f64::NAN),
                hit["id"].as_str().unwrap_or("?"),
                summary(&hit["metadata"])
            ));
        }
    }
    let stats = server.tool("stats", json!({})).await?;
    out.push(String::new());
    out.push(format!(
        "stats: model {} ({}), {} embedding calls for {} texts, {} unchanged skipped",
        stats["model"],
        stats["model_state"],
        stats["embedding_calls"],
        stats["texts_embedded"],
        stats["embeddings_skipped_unchanged"]
    ));
    server.close().await?;
    Ok(out)
}

/// A short, readable line of the metadata fields Stride shows.
fn summary(metadata: &Value) -> String {
    ["goalName", "goalType", "city", "outcome", "status", "diploma"]
        .iter()
        .filter_map(|k| {
            metadata
                .get(*k)
                .map(|v| format!("{k}={}", v.as_str().map(str::to_string).unwrap_or(v.to_string())))
        })
        .collect::<Vec<_>>()
        .join(" ")
}
