//! `stride-vectors-bench`: the benchmarks behind BENCHMARKS.md, measured through the release
//! server binary (`stride-vectors`, found beside this one) over MCP on stdio, and Mastra's
//! `DuckDBVector` on the same data. Never a test, and not part of the server binary.
//!
//! stdout gets the report; logs go to stderr.
//!
//! [`bench`] holds the plan and runs it; [`scenarios`] (DuckDB), [`postgres`] and [`mastra`]
//! measure, with the data of [`data`] and the timing of [`measure`]; [`report`] writes the
//! Markdown.

mod bench;
mod chunks;
mod data;
mod mastra;
mod measure;
mod postgres;
mod report;
mod retrieval;
mod scenarios;
mod text;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use tracing_subscriber::EnvFilter;

/// Measure speed through the real server binary; print a table and write BENCHMARKS.md.
#[derive(Debug, Parser)]
#[command(name = "stride-vectors-bench", version, about, long_about = None)]
struct Args {
    /// Index sizes for search latency, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
    sizes: Vec<usize>,
    /// Vector widths, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "384,1024")]
    dims: Vec<usize>,
    /// Searches per latency figure.
    #[arg(long, default_value_t = 200)]
    searches: usize,
    /// Runs per throughput figure (median reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where to write the Markdown report.
    #[arg(long, default_value = "BENCHMARKS.md")]
    out: PathBuf,
    /// Skip Mastra's DuckDBVector (bench/mastra, needs Node).
    #[arg(long)]
    no_mastra: bool,
    /// Vectors per search data set that Mastra loads through its own upsert (about 60
    /// vectors/s here); the rest are appended straight into its table.
    #[arg(long, default_value_t = 10_000)]
    mastra_upsert_load_max: usize,
    /// Run only these scenarios, comma-separated: relay, upsert, same-id, search, mixed,
    /// embedder, chunks, mastra, postgres, retrieval, text (default: all).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// A PostgreSQL + pgvector database for the `postgres` scenario (URL or key=value
    /// string; it creates and drops schemas named bench_* there). Without it the
    /// scenario is skipped.
    #[arg(long)]
    postgres: Option<String>,
    /// A BEIR-format dataset (corpus.jsonl, queries.jsonl, qrels/test.tsv) for the
    /// `retrieval` scenario: nDCG@10 and recall@100 of every search mode.
    #[arg(long)]
    beir: Option<PathBuf>,
    /// Where the `retrieval` scenario keeps its database, reused when it already holds the
    /// whole corpus (default: a scratch file, removed).
    #[arg(long)]
    beir_db: Option<PathBuf>,
}

fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = Args::parse();
    let config = bench::BenchConfig {
        sizes: args.sizes,
        dims: args.dims,
        searches: args.searches,
        runs: args.runs,
        mastra: !args.no_mastra,
        mastra_upsert_load_max: args.mastra_upsert_load_max,
        only: args.only,
        postgres: args.postgres,
        beir: args.beir,
        beir_db: args.beir_db,
    };
    match run(&config, &args.out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: &bench::BenchConfig, out: &std::path::Path) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(bench::run(config))?;
    println!("{report}");
    std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))
}
