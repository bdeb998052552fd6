//! stride-vectors: an MCP server that is the one and only writer of a DuckDB vector database
//! (or, with `--database postgres://…`, one of many writers of a PostgreSQL + pgvector one).
//!
//! Every client (Mastra's `MCPClient`, Claude Desktop, the MCP Inspector, Stride's frontend)
//! talks MCP over stdio to its own stride-vectors process; exactly one process owns the
//! database file and writes it through a single writer that group-commits. On PostgreSQL
//! every process writes directly, in transactions.
//!
//! Where things live:
//!
//! - [`config`]: every knob (flags, environment, defaults) and its validation.
//! - [`mcp`]: the protocol face. One file per tool family, argument and result types with
//!   JSON Schemas. No SQL here: tools call [`store`].
//! - [`store`]: storage behind one typed API ([`store::Store`]), two back-ends. The DuckDB
//!   file: [`store::file`] (the handle), [`store::schema`] (DDL, Mastra layout,
//!   bookkeeping), [`store::writer`] (the single writer actor), [`store::read`] (search,
//!   describe), [`store::memory`] (the in-memory copy searches are served from) and
//!   [`store::metadata`] (a row's metadata as that copy keeps it). PostgreSQL + pgvector:
//!   [`store::postgres`] (Mastra's PgVector layout, transactions on a pool). Shared by both:
//!   [`store::filter`] (the metadata filter language: one parser, a DuckDB and a PostgreSQL
//!   back-end, an in-memory evaluator) and [`store::types`] (values and input checks).
//! - [`embed`]: the [`embed::Embedder`] trait, the local model and remote providers,
//!   [`embed::download`] (fetching the local model's files: `model fetch`, or on first need)
//!   and [`embed::pipeline`] (debounce, dedup, batching, durable pending queue).
//! - [`ownership`]: one owner per database file (lock, local socket), relays for the other
//!   processes, and take-over when the owner dies.
//! - [`schemas`]: writes and checks the JSON Schema files under `schemas/`.
//! - [`bench`]: the `bench` subcommand (numbers for BENCHMARKS.md, never a test).
//! - [`client`]: a small MCP client of this binary (child process on stdio).
//! - [`demo`]: the `demo` subcommand, indexing the sample documents through [`client`].
//! - [`shutdown`]: how the process learns that it should stop (stdin EOF, SIGTERM, SIGINT).
//!
//! Outside the crate: `npm/` holds the npm launcher, the per-platform binary package and the
//! Claude Desktop bundle's manifest template, which `scripts/package` turns into `dist/`.

pub mod bench;
pub mod client;
pub mod config;
pub mod demo;
pub mod embed;
pub mod mcp;
pub mod ownership;
pub mod schemas;
pub mod shutdown;
pub mod store;
