//! Mastra's own stores measured by the Node scripts in `bench/mastra` (DuckDBVector, and
//! PgVector for the `postgres` scenario), whose JSON reports become report rows.
//!
//! It measures nothing in process.

use std::path::Path;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::bench::{row, BenchConfig, Row};

/// Mastra's DuckDBVector measured by `bench/mastra/bench.mjs` on the same generated data.
pub(crate) fn mastra(dir: &Path, cfg: &BenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    let join = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let args = [
        "--sizes".to_string(),
        join(&cfg.sizes),
        "--dims".into(),
        join(&cfg.dims),
        "--searches".into(),
        cfg.searches.to_string(),
        "--runs".into(),
        cfg.runs.to_string(),
        "--upsert-load-max".into(),
        cfg.mastra_upsert_load_max.to_string(),
        "--dir".into(),
        dir.join("mastra").display().to_string(),
    ];
    node_report("bench.mjs", &args, rows)
}

/// Run a `bench/mastra` script (installing its packages first if needed) and add the rows
/// of the one JSON report it prints.
fn node_report(script: &str, args: &[String], rows: &mut Vec<Row>) -> Result<()> {
    let project = Path::new("bench/mastra");
    anyhow::ensure!(
        project.join(script).exists(),
        "run from the repository root (bench/mastra/{script})"
    );
    if !project.join("node_modules/@mastra/pg").exists() {
        let status = std::process::Command::new("npm")
            .arg("ci")
            .current_dir(project)
            .status()?;
        anyhow::ensure!(status.success(), "npm ci in bench/mastra failed");
    }
    let out = std::process::Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(project)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "{script} exited with {}", out.status);
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("{script} output"))?;
    for r in report["rows"].as_array().into_iter().flatten() {
        rows.push(row(
            r["what"].as_str().unwrap_or("?"),
            r["value"].as_str().unwrap_or("?"),
        ));
    }
    Ok(())
}

/// Mastra's `PgVector` (`bench/mastra/pgvector.mjs`, @mastra/pg) on the same data, in a
/// schema of its own.
pub(crate) fn mastra_pgvector(cfg: &BenchConfig, url: &str, rows: &mut Vec<Row>) -> Result<()> {
    let join = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let args = [
        "--connection".to_string(),
        url.to_string(),
        "--schema".into(),
        "bench_mastra".into(),
        "--sizes".into(),
        join(&cfg.sizes),
        "--dims".into(),
        join(&cfg.dims),
        "--searches".into(),
        cfg.searches.to_string(),
    ];
    node_report("pgvector.mjs", &args, rows)
}
