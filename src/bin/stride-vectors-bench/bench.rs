//! The benchmarks' plan: what to measure ([`BenchConfig`], the scenarios `--only` names),
//! running each scenario in turn into the rows of the report ([`run`]), and the scratch
//! directory their databases live in. Nothing here is a pass/fail test.
//!
//! Every server-side number goes through [`stride_vectors::client::ChildServer`], i.e. MCP over stdio
//! to a child process on a fresh DuckDB file, as a user would see it. The local embedder and
//! the flat-scan reference run in process. Data is generated from a fixed seed.
//!
//! It measures nothing itself: the scenarios are in [`crate::scenarios`], [`crate::postgres`]
//! and [`crate::mastra`], the Markdown in [`crate::report`].

use std::path::Path;

use anyhow::{Context, Result};

use crate::mastra::mastra;
use crate::postgres::postgres;
use crate::report::report;
use crate::retrieval::retrieval;
use crate::scenarios::{
    embedder_speed, mixed_load, relay_latency, same_id_writers, search_latency, upsert_throughput,
};
use crate::text::text_search;

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Index sizes for the search benchmark.
    pub sizes: Vec<usize>,
    pub dims: Vec<usize>,
    /// Searches per measurement.
    pub searches: usize,
    /// Runs per throughput figure (the median is reported).
    pub runs: usize,
    /// Also run Mastra's DuckDBVector (`bench/mastra`, Node) on the same data.
    pub mastra: bool,
    /// Vectors per search data set that Mastra loads through its own `upsert`; the rest are
    /// appended straight into its table (its upsert would take over an hour at 100k x 1024).
    pub mastra_upsert_load_max: usize,
    /// Scenarios to run (see [`SCENARIOS`]); empty: all of them.
    pub only: Vec<String>,
    /// A PostgreSQL + pgvector database for the `postgres` scenario (it creates and drops
    /// schemas named `bench_*` there).
    pub postgres: Option<String>,
    /// A BEIR-format dataset for the `retrieval` scenario.
    pub beir: Option<std::path::PathBuf>,
    /// Where the `retrieval` scenario keeps its database (reused when it already holds the
    /// whole corpus); default: the scratch directory.
    pub beir_db: Option<std::path::PathBuf>,
}

/// Every scenario, by the name `--only` takes.
pub const SCENARIOS: &[&str] = &[
    "relay",
    "upsert",
    "same-id",
    "search",
    "mixed",
    "embedder",
    "chunks",
    "mastra",
    "postgres",
    "retrieval",
    "text",
];

impl BenchConfig {
    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

/// One row of the report.
pub(crate) struct Row {
    pub(crate) what: String,
    pub(crate) value: String,
}

pub(crate) fn row(what: impl Into<String>, value: impl Into<String>) -> Row {
    Row {
        what: what.into(),
        value: value.into(),
    }
}

/// Run everything; returns the Markdown report (also printed by the caller).
pub async fn run(cfg: &BenchConfig) -> Result<String> {
    if let Some(unknown) = cfg.only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        anyhow::bail!(
            "--only: unknown scenario {unknown:?}; the scenarios are {}",
            SCENARIOS.join(", ")
        );
    }
    let dir = tempfile_dir()?;
    let mut rows = Vec::new();
    if cfg.runs("relay") {
        relay_latency(dir.path(), cfg, &mut rows)
            .await
            .context("relay latency")?;
    }
    if cfg.runs("upsert") {
        upsert_throughput(dir.path(), cfg, &mut rows)
            .await
            .context("upsert throughput")?;
    }
    if cfg.runs("same-id") {
        same_id_writers(dir.path(), &mut rows)
            .await
            .context("same-id writers")?;
    }
    if cfg.runs("search") {
        search_latency(dir.path(), cfg, &mut rows)
            .await
            .context("search latency")?;
    }
    if cfg.runs("mixed") {
        mixed_load(dir.path(), cfg, &mut rows)
            .await
            .context("writes under searches")?;
    }
    if cfg.runs("embedder") {
        if let Err(e) = embedder_speed(&mut rows).await {
            rows.push(row("local embedder", format!("not measured: {e:#}")));
        }
    }
    if cfg.runs("chunks") {
        if let Err(e) = crate::chunks::long_text_embedding(dir.path(), cfg.beir.as_deref(), &mut rows).await {
            rows.push(row("long text in chunks", format!("not measured: {e:#}")));
        }
    }
    if cfg.runs("postgres") {
        match &cfg.postgres {
            Some(url) => postgres(dir.path(), cfg, url, &mut rows)
                .await
                .context("PostgreSQL")?,
            None if !cfg.only.is_empty() => {
                rows.push(row("PostgreSQL back-end", "not measured: give --postgres <url>"))
            }
            None => {}
        }
    }
    if cfg.runs("text") {
        text_search(dir.path(), cfg, &mut rows)
            .await
            .context("keyword and hybrid search")?;
    }
    if cfg.runs("retrieval") {
        match &cfg.beir {
            Some(beir) => {
                let db = cfg
                    .beir_db
                    .clone()
                    .unwrap_or_else(|| dir.path().join("beir.duckdb"));
                retrieval(beir, &db, &mut rows).await.context("retrieval")?
            }
            None if !cfg.only.is_empty() => rows.push(row(
                "retrieval quality",
                "not measured: give --beir <dir of a BEIR dataset>",
            )),
            None => {}
        }
    }
    if cfg.mastra && cfg.runs("mastra") {
        std::fs::create_dir_all(dir.path().join("mastra"))?;
        if let Err(e) = mastra(dir.path(), cfg, &mut rows) {
            rows.push(row("Mastra DuckDBVector", format!("not measured: {e:#}")));
        }
    }
    Ok(report(cfg, &rows))
}

/// A scratch directory removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<ScratchDir> {
    let dir = std::env::temp_dir().join(format!("stride-vectors-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(ScratchDir(dir))
}
