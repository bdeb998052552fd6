//! Test harness: the real release binary, driven over stdio by the crate's one MCP client
//! (`stride_vectors::client`, rmcp's client underneath), on a real DuckDB file in a
//! temporary directory. What is here is the tests' own: the commands they start, and
//! [`Expect`], the assertions around each call.

#![allow(dead_code)]

pub mod ollama;

use std::path::{Path, PathBuf};
use std::process::Stdio;

use rmcp::model::CallToolResult;
use serde_json::Value;
use tokio::process::Command;

pub const BIN: &str = env!("CARGO_BIN_EXE_stride-vectors");

/// The server binary under test: this build's, or `STRIDE_VECTORS_TEST_BIN` (another
/// target's build, which scripts/test-platforms runs under Wine or qemu).
pub fn server_bin() -> PathBuf {
    std::env::var_os("STRIDE_VECTORS_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(BIN))
}

/// The OS the server under test runs on: `STRIDE_VECTORS_TEST_TARGET_OS` (`windows` under
/// Wine), else this one. Tests of what only exists on Unix (socket files, uids, signals)
/// run where it does.
pub fn target_os() -> String {
    std::env::var("STRIDE_VECTORS_TEST_TARGET_OS").unwrap_or_else(|_| std::env::consts::OS.to_string())
}

/// Whether the server under test is a Unix build.
pub fn target_is_unix() -> bool {
    target_os() != "windows"
}

/// A command that runs the server binary under test with `STRIDE_VECTORS_TEST_RUNNER` in
/// front (`wine`, or `qemu-aarch64 -L /usr/aarch64-linux-gnu`: words split on spaces), as
/// cargo's target runners do.
pub fn server_command() -> Command {
    server_command_for(&server_bin())
}

/// [`server_command`] for the server binary at `bin`.
pub fn server_command_for(bin: &Path) -> Command {
    let runner = std::env::var("STRIDE_VECTORS_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    let mut cmd = match words.next() {
        Some(program) => {
            let mut cmd = Command::new(program);
            cmd.args(words).arg(bin);
            cmd
        }
        None => Command::new(bin),
    };
    cmd.kill_on_drop(true);
    cmd
}

/// Kill the server with process id `pid` (as `stats` reports it) the hardest way its OS
/// has: SIGKILL on Unix; on Windows `taskkill /F` (TerminateProcess), run by the runner.
pub fn kill_hard(child_pid: u32, server_pid: u32) {
    if target_is_unix() {
        // SAFETY: kill(2) on a pid we started; no memory is shared.
        assert_eq!(unsafe { libc::kill(child_pid as i32, libc::SIGKILL) }, 0);
        return;
    }
    let runner = std::env::var("STRIDE_VECTORS_TEST_RUNNER").unwrap_or_else(|_| "wine".into());
    let mut words = runner.split_whitespace();
    let status = std::process::Command::new(words.next().unwrap())
        .args(words)
        .args(["taskkill", "/F", "/PID", &server_pid.to_string()])
        .stdout(Stdio::null())
        .status()
        .expect("run taskkill");
    assert!(status.success(), "taskkill /F /PID {server_pid}: {status}");
}

/// A running server and the client connected to it.
pub type Server = stride_vectors::client::ChildServer;

/// Whether this run tests the PostgreSQL back-end: `STRIDE_VECTORS_TEST_BACKEND=postgres`,
/// with the database in `STRIDE_VECTORS_TEST_POSTGRES` (scripts/test starts a throwaway
/// one). Each test's temporary directory then stands for a schema of its own.
pub fn on_postgres() -> bool {
    std::env::var("STRIDE_VECTORS_TEST_BACKEND").is_ok_and(|b| b == "postgres")
}

/// The database the PostgreSQL run uses.
pub fn postgres_url() -> String {
    std::env::var("STRIDE_VECTORS_TEST_POSTGRES").expect(
        "STRIDE_VECTORS_TEST_BACKEND=postgres needs STRIDE_VECTORS_TEST_POSTGRES (scripts/test sets both)",
    )
}

/// The schema standing for the test database `db` (the same path: the same schema, so a
/// restart finds its data).
pub fn pg_schema(db: &Path) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(db.to_string_lossy().as_bytes());
    format!("t_{}", &hex::encode(digest)[..20])
}

/// The engine a search answers with by default: `memory`, or `postgres`.
pub fn default_engine() -> &'static str {
    if on_postgres() {
        "postgres"
    } else {
        "memory"
    }
}

/// Engines a test can force with `engine`: both DuckDB ones, or PostgreSQL's.
pub fn engines() -> &'static [&'static str] {
    if on_postgres() {
        &["postgres"]
    } else {
        &["memory", "duckdb"]
    }
}

/// The command that starts the server on `db` (in the PostgreSQL run: on the schema that
/// stands for `db`); logs go to the test's stderr at `warn`.
pub fn command(db: &Path) -> Command {
    let mut cmd = bare_command(db);
    if on_postgres() {
        cmd.arg("--database")
            .arg(postgres_url())
            .arg("--pg-schema")
            .arg(pg_schema(db));
    }
    cmd
}

/// The server on the DuckDB file `db`, whatever run this is.
pub fn bare_command(db: &Path) -> Command {
    let mut cmd = server_command();
    cmd.arg("--db").arg(db);
    cmd.env(
        "STRIDE_VECTORS_LOG",
        std::env::var("STRIDE_TEST_LOG").unwrap_or_else(|_| "warn".into()),
    )
    .env_remove("RUST_LOG")
    .stdin(Stdio::piped())
    .stdout(Stdio::piped())
    .stderr(Stdio::inherit())
    .kill_on_drop(true);
    cmd
}

pub async fn start(db: &Path) -> Server {
    start_with(command(db)).await
}

pub async fn start_with(cmd: Command) -> Server {
    Server::spawn(cmd)
        .await
        .expect("start stride-vectors and do the MCP handshake")
}

/// The calls a test makes, each asserting what it expects.
#[allow(async_fn_in_trait)]
pub trait Expect {
    /// Call a tool; a protocol error fails the test (a tool error is a result).
    async fn call(&self, tool: &str, args: Value) -> CallToolResult;
    /// Call a tool that must succeed; returns its structured content.
    async fn ok(&self, tool: &str, args: Value) -> Value;
    /// Call a tool that must fail with a tool error; returns its message.
    async fn err(&self, tool: &str, args: Value) -> String;
    /// Close stdin (the client goes away) and wait for a clean exit.
    async fn stop(self);
    /// SIGKILL: no chance to flush or checkpoint.
    async fn kill9(self);
}

impl Expect for Server {
    async fn call(&self, tool: &str, args: Value) -> CallToolResult {
        self.call_tool(tool, args)
            .await
            .unwrap_or_else(|e| panic!("{tool}: protocol error {e:#}"))
    }

    async fn ok(&self, tool: &str, args: Value) -> Value {
        let result = Expect::call(self, tool, args.clone()).await;
        assert_ne!(
            result.is_error,
            Some(true),
            "{tool} {args} failed: {}",
            text(&result)
        );
        let structured = result.structured_content.clone().expect("structured content");
        assert_eq!(
            serde_json::from_str::<Value>(&text(&result)).expect("text copy is JSON"),
            structured,
            "the text content mirrors the structured content"
        );
        structured
    }

    async fn err(&self, tool: &str, args: Value) -> String {
        let result = Expect::call(self, tool, args.clone()).await;
        assert_eq!(
            result.is_error,
            Some(true),
            "{tool} {args} should fail, got {:?}",
            result.structured_content
        );
        text(&result)
    }

    async fn stop(self) {
        let status = self
            .exit(std::time::Duration::from_secs(60))
            .await
            .expect("server exits after stdin closes");
        assert!(status.success(), "server exit status {status}");
    }

    async fn kill9(self) {
        self.kill().await.expect("kill -9");
    }
}

pub fn text(result: &CallToolResult) -> String {
    stride_vectors::client::text_of(result)
}

pub struct TempDb {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
}

pub fn temp_db() -> TempDb {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("stride-vectors.duckdb");
    TempDb { dir, path }
}

/// Deterministic pseudo-random unit-free vectors (no zero vector: values in (-1, 1) \ {0}).
pub fn random_vectors(seed: u64, n: usize, dim: usize) -> Vec<Vec<f32>> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| (0..dim).map(|_| rng.random_range(-1.0f32..1.0) + 1e-3).collect())
        .collect()
}

pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| *x as f64 * *y as f64).sum();
    let na: f64 = a.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

/// Rows of an index read straight from the store (the file after the server has exited,
/// or the PostgreSQL tables).
pub async fn rows_in_store(db: &Path, index: &str) -> std::collections::BTreeMap<String, (Vec<f32>, Value)> {
    if !on_postgres() {
        return rows_in_file(db, index);
    }
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    let sql = format!(
        "SELECT vector_id, embedding::text, metadata::text FROM \"{}\".\"{index}\" WHERE namespace = 'default'",
        pg_schema(db)
    );
    let rows = match client.query(&sql, &[]).await {
        Ok(rows) => rows,
        // No table: the index does not exist, so it holds no rows.
        Err(e) if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE) => Vec::new(),
        Err(e) => panic!("reading {index}: {e}"),
    };
    rows.iter()
        .map(|r| {
            let (id, v, m): (String, String, Option<String>) = (r.get(0), r.get(1), r.get(2));
            (
                id,
                (
                    serde_json::from_str(&v).expect("vector"),
                    serde_json::from_str(m.as_deref().unwrap_or("null")).expect("metadata"),
                ),
            )
        })
        .collect()
}

/// Rows of an index read straight from the DuckDB file, after the server has exited.
pub fn rows_in_file(db: &Path, index: &str) -> std::collections::BTreeMap<String, (Vec<f32>, Value)> {
    let conn = duckdb::Connection::open(db).expect("open the file the server wrote");
    let mut stmt = conn
        .prepare(&format!(
            "SELECT id, vector::VARCHAR, metadata::VARCHAR FROM \"{index}\""
        ))
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
            ))
        })
        .expect("query");
    rows.map(|r| {
        let (id, v, m) = r.expect("row");
        (
            id,
            (
                serde_json::from_str(&v).expect("vector"),
                serde_json::from_str(&m).expect("metadata"),
            ),
        )
    })
    .collect()
}

/// The server on `db` embedding through the mock Ollama at `url`.
pub fn command_with_ollama(db: &Path, url: &str, extra: &[&str]) -> Command {
    let mut cmd = command(db);
    cmd.args([
        "--embedder",
        "ollama",
        "--model",
        "mock-embed",
        "--ollama-url",
        url,
    ])
    .args(extra);
    cmd
}

/// Poll `stats` until `done` holds or `secs` pass; returns the last stats.
pub async fn wait_for_stats(s: &Server, secs: u64, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        let stats = s.ok("stats", serde_json::json!({})).await;
        if done(&stats) || std::time::Instant::now() > deadline {
            return stats;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// `list_indexes` reduced to the fields a test can predict (not memory sizes).
pub fn index_shapes(list: &Value) -> Value {
    let shapes: Vec<Value> = list["indexes"]
        .as_array()
        .expect("indexes")
        .iter()
        .map(|i| {
            serde_json::json!({"index": i["index"], "dimension": i["dimension"], "metric": i["metric"], "count": i["count"]})
        })
        .collect();
    serde_json::json!({ "indexes": shapes })
}

/// The per-document statuses of an `embed` answer, in order.
pub fn statuses(r: &Value) -> Vec<String> {
    r["documents"]
        .as_array()
        .expect("documents")
        .iter()
        .map(|d| d["status"].as_str().expect("status").to_string())
        .collect()
}

/// The ids of a `search` answer, best first.
pub fn hit_ids(search: &Value) -> Vec<&str> {
    search["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["id"].as_str().expect("id"))
        .collect()
}
