//! stride-vectors: an MCP server that is the one and only writer of a DuckDB vector database
//! (or, with `--database postgres://…`, one of many writers of a PostgreSQL + pgvector one).
//!
//! Every client (Mastra's `MCPClient`, Claude Desktop, the MCP Inspector, Stride's frontend)
//! talks MCP over stdio to its own stride-vectors process; exactly one process owns the
//! database file and writes it through a single writer that group-commits. On PostgreSQL
//! every process writes directly, in transactions.
//!
//! Where things live, and which way the arrows go (`main → mcp → {ownership, embed} →
//! store`, `config` and `retry` at the side; `tests/layout.rs` checks them):
//!
//! - [`config`]: every knob (flags, environment, defaults) and its validation; it parses
//!   them into the config structs the modules own.
//! - [`mcp`]: the protocol face. One file per tool family, argument and result types with
//!   JSON Schemas, and [`mcp::transport`] (stdio lines to JSON-RPC messages, with a fast
//!   `tools/call` parse pinned to rmcp's). No SQL here: tools call [`store`]. It also
//!   gives [`ownership`] the function that serves a relay's connection
//!   ([`mcp::serve_relay`]).
//! - [`store`]: storage behind one typed API ([`store::Store`]): [`store::api`] (the values
//!   both back-ends speak, and input checks), [`store::filter`] (the metadata filter
//!   language: one parser, a DuckDB and a PostgreSQL back-end, an in-memory evaluator),
//!   [`store::metadata`], then one folder per back-end: [`store::duckdb`] (the handle, the
//!   single writer, reads, schema, the documents tables) with [`store::memory`] (the
//!   in-memory copy its searches are served from), and [`store::postgres`] (Mastra's
//!   PgVector layout, transactions on a pool).
//! - [`embed`]: the [`embed::Embedder`] trait, the local model and remote providers,
//!   [`embed::pins`] (the model's pinned hashes), [`embed::download`] (fetching the local
//!   model's files: `model fetch`, or on first need) and [`embed::pipeline`] (debounce,
//!   dedup, batching, durable pending queue: its schedule, its worker, the shared-queue
//!   variant, and unit tests under paused time against a model of the store).
//! - [`ownership`]: one owner per database file (lock, local socket or pipe), relays for the
//!   other processes, hand-over when the owner leaves and take-over when it dies. It knows
//!   nothing of [`mcp`].
//! - [`platform`]: what differs between operating systems, one file per OS family
//!   (`unix.rs`, `windows.rs`) behind the [`platform::Endpoint`] trait: the relays' socket or
//!   named pipe and its same-user checks, the lock file's privacy, search-thread priority;
//!   a leaf any module may use, and the only home of `libc` and Win32 calls.
//! - [`retry`]: the one backoff policy (exponential, capped, jittered by a real random
//!   number) of every loop that tries again; a leaf any module may use.
//! - [`schemas`]: writes and checks the JSON Schema files under `schemas/`.
//! - [`client`]: the one MCP client of the server binary (child process on stdio), used by
//!   the two tool binaries of `src/bin/`, which are not part of the server binary:
//!   `stride-vectors-demo` (the README's main job: the sample documents indexed and
//!   searched) and `stride-vectors-bench` (the benchmarks: numbers for BENCHMARKS.md, never
//!   a test), and by the integration tests (`tests/common` adds only their assertions).
//! - [`shutdown`]: how the process learns that it should stop (stdin EOF, SIGTERM, SIGINT).
//!
//! Outside the crate: `npm/` holds the npm launcher, the platform packages' template, the
//! Claude Desktop bundle's manifest template and the packaging tools, which `scripts/package`
//! turns into `dist/` for five platforms (`scripts/build-target` builds the four that are
//! not this machine's; `scripts/test-platforms` tests them under Wine and qemu).

pub mod client;
pub mod config;
pub mod embed;
pub mod mcp;
pub mod ownership;
pub mod platform;
pub mod retry;
pub mod schemas;
pub mod shutdown;
pub mod store;
