//! `stride-vectors-demo`: the README's main job on the embedded defaults. It starts the
//! server binary (`stride-vectors`, found beside this one) as an MCP server on stdio,
//! indexes the sample Stride documents through the real `embed` tool and prints searches
//! ([`demo`]). Not part of the server binary.
//!
//! stdout gets the report; logs go to stderr (warnings only unless `--verbose`: the
//! client's and the server's INFO lines would bury the results).

mod demo;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use stride_vectors::config::ServeArgs;
use tracing_subscriber::EnvFilter;

/// Index the sample Stride documents through the real MCP tools and print searches.
#[derive(Debug, Parser)]
#[command(name = "stride-vectors-demo", version, about, long_about = None)]
struct Args {
    /// The sample documents and searches.
    #[arg(long, default_value = "fixtures/stride-sample.json")]
    fixtures: PathBuf,
    /// Show the server's and the client's informational logs (default: warnings only).
    #[arg(long)]
    verbose: bool,
    /// The server's own options (the database path is resolved as the server resolves it).
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let level = if args.verbose {
        args.serve.log.as_str()
    } else {
        "warn"
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let config = args.serve.resolve()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    for line in runtime.block_on(demo::run(&args.fixtures, &config.db_path, args.verbose))? {
        println!("{line}");
    }
    Ok(())
}
