//! Several stride-vectors processes on one PostgreSQL database: they write directly, share
//! one embedding queue, and take over each other's claims when one dies.
//!
//! These need a PostgreSQL with pgvector in `STRIDE_VECTORS_TEST_POSTGRES` (scripts/test
//! starts a throwaway one). Without it they say so and pass, unless
//! `STRIDE_VECTORS_REQUIRE_POSTGRES=1` (as in CI), where a missing database is a failure.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use common::ollama::{vector_of, MockOllama};
use common::*;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::process::Command;

/// The database, or `None` (and a note) when this run has none.
fn database() -> Option<String> {
    match std::env::var("STRIDE_VECTORS_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("STRIDE_VECTORS_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") => {
            panic!("STRIDE_VECTORS_REQUIRE_POSTGRES=1 but STRIDE_VECTORS_TEST_POSTGRES is not set")
        }
        _ => {
            eprintln!("skipped: no PostgreSQL (set STRIDE_VECTORS_TEST_POSTGRES; scripts/test does)");
            None
        }
    }
}

/// A server on `url` in `schema`, embedding through `mock`; `dir` gives it a path of its
/// own for `--db` (unused with PostgreSQL, but a process must not share a socket path).
fn peer(url: &str, schema: &str, dir: &std::path::Path, mock: &MockOllama, extra: &[&str]) -> Command {
    let mut cmd = bare_command(&dir.join("unused.duckdb"));
    cmd.args(["--database", url, "--pg-schema", schema])
        .args([
            "--embedder",
            "ollama",
            "--model",
            "mock-embed",
            "--ollama-url",
            &mock.url,
        ])
        .args(extra);
    cmd
}

fn unique_schema(name: &str) -> String {
    let nonce: u32 = rand::rng().random();
    format!("{name}_{nonce:08x}")
}

/// What the model says an id holds at the end.
#[derive(Debug, Clone, PartialEq)]
enum Final {
    Absent,
    Vector(Vec<f32>),
    Text(String),
}

/// Three processes, each with its own client, run random writes (upserts, deletes, embeds
/// with and without `wait`) and searches on shared ids; one operation at a time per id, so
/// the model knows which acknowledgement was last. At the end: every id holds what its last
/// acknowledged operation says, and each distinct final text was embedded exactly once.
#[tokio::test]
async fn three_processes_share_writes_and_one_embedding_queue() {
    let Some(url) = database() else { return };
    let seed: u64 = std::env::var("PG_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::rng().random());
    eprintln!("seed {seed} (PG_MODEL_SEED replays it)");
    let schema = unique_schema("three");
    let mock = MockOllama::start(false).await;
    let dirs: Vec<TempDb> = (0..3).map(|_| temp_db()).collect();
    let mut servers = Vec::new();
    for dir in &dirs {
        let cmd = peer(
            &url,
            &schema,
            dir.dir.path(),
            &mock,
            &["--debounce-ms", "150", "--max-wait-ms", "600"],
        );
        servers.push(Arc::new(start_with(cmd).await));
    }
    servers[0]
        .ok(
            "create_index",
            json!({"index": "goals", "dimension": common::ollama::DIM}),
        )
        .await;
    let ids: Vec<String> = (0..8).map(|i| format!("g{i}")).collect();
    let locks: Arc<HashMap<String, tokio::sync::Mutex<()>>> = Arc::new(
        ids.iter()
            .map(|id| (id.clone(), tokio::sync::Mutex::new(())))
            .collect(),
    );
    let model: Arc<std::sync::Mutex<BTreeMap<String, Final>>> = Arc::default();
    let mut tasks = Vec::new();
    for (p, server) in servers.iter().enumerate() {
        let (server, ids, locks, model) = (server.clone(), ids.clone(), locks.clone(), model.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed.wrapping_add(p as u64));
            for op in 0..60 {
                let id = ids[rng.random_range(0..ids.len())].clone();
                let _held = locks[&id].lock().await;
                let kind = rng.random_range(0..10);
                let outcome = match kind {
                    0..=2 => {
                        let v: Vec<f32> = (0..common::ollama::DIM).map(|_| rng.random_range(-1.0f32..1.0) + 1e-3).collect();
                        server.ok("upsert", json!({"index": "goals", "vectors": [{"id": id, "vector": v}]})).await;
                        Final::Vector(v)
                    }
                    3 => {
                        server.ok("delete", json!({"index": "goals", "ids": [id]})).await;
                        Final::Absent
                    }
                    _ => {
                        // Few distinct texts, so that processes embed equal texts.
                        let text = format!("text {} of {id}", rng.random_range(0..3));
                        let wait = kind == 9;
                        let r = server
                            .ok("embed", json!({"index": "goals", "documents": [{"id": id, "text": text}], "wait": wait}))
                            .await;
                        if wait {
                            let status = &r["documents"][0]["status"];
                            assert!(status == "indexed" || status == "unchanged", "p{p} op {op}: {r}");
                        }
                        Final::Text(text)
                    }
                };
                model.lock().unwrap().insert(id, outcome);
                if rng.random_range(0..4) == 0 {
                    server
                        .ok("search", json!({"index": "goals", "vector": vector_of("probe"), "top_k": 5}))
                        .await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("a client task failed");
    }
    for server in &servers {
        let flushed = server.ok("flush", json!({"timeout_ms": 20_000})).await;
        assert_eq!(flushed["pending"], json!(0), "{flushed}");
    }
    let model = model.lock().unwrap().clone();
    for (id, expected) in &model {
        let fetched = servers[1]
            .ok("fetch", json!({"index": "goals", "ids": [id]}))
            .await;
        let got = fetched["vectors"].as_array().unwrap().first().map(|v| {
            v["vector"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect::<Vec<f32>>()
        });
        let want = match expected {
            Final::Absent => None,
            Final::Vector(v) => Some(v.clone()),
            Final::Text(t) => Some(vector_of(t)),
        };
        assert_eq!(got, want, "seed {seed}: id {id} should hold {expected:?}");
    }
    // Then every process sends the same new text for every id at once: each distinct text
    // is embedded exactly once, whoever accepted it and whoever claims it.
    let finals: Vec<(String, String)> = ids
        .iter()
        .map(|id| (id.clone(), format!("final text of {id}")))
        .collect();
    let sends = servers.iter().map(|server| {
        let docs: Vec<Value> = finals
            .iter()
            .map(|(id, t)| json!({"id": id, "text": t}))
            .collect();
        let server = server.clone();
        async move {
            server
                .ok("embed", json!({"index": "goals", "documents": docs}))
                .await
        }
    });
    futures::future::join_all(sends).await;
    for server in &servers {
        let flushed = server.ok("flush", json!({"timeout_ms": 20_000})).await;
        assert_eq!(flushed["pending"], json!(0), "{flushed}");
    }
    let texts = mock.texts();
    for (id, text) in &finals {
        let times = texts.iter().filter(|t| *t == text).count();
        assert_eq!(times, 1, "seed {seed}: {text:?} was embedded {times} times");
        let fetched = servers[2]
            .ok("fetch", json!({"index": "goals", "ids": [id]}))
            .await;
        assert_eq!(fetched["vectors"][0]["vector"], json!(vector_of(text)), "{id}");
    }
    for server in servers {
        Arc::try_unwrap(server).ok().expect("one owner").stop().await;
    }
}

/// A process killed with claimed embeddings: nothing it acknowledged is lost, and another
/// process embeds its claims once their lease ends.
#[tokio::test]
async fn a_killed_process_loses_nothing_and_its_claims_are_taken_over() {
    let Some(url) = database() else { return };
    let schema = unique_schema("kill");
    let slow = MockOllama::start(false).await;
    // Its embeddings take 30 s: the process is killed while it holds the claim.
    slow.delay_ms.store(30_000, std::sync::atomic::Ordering::SeqCst);
    let (a_dir, b_dir) = (temp_db(), temp_db());
    let lease = ["--debounce-ms", "10", "--pg-lease-ms", "1500"];
    let a = start_with(peer(&url, &schema, a_dir.dir.path(), &slow, &lease)).await;
    a.ok(
        "create_index",
        json!({"index": "goals", "dimension": common::ollama::DIM}),
    )
    .await;
    let mut acknowledged = Vec::new();
    for i in 0..50 {
        let v: Vec<f32> = vec![i as f32 + 1.0; common::ollama::DIM];
        a.ok(
            "upsert",
            json!({"index": "goals", "vectors": [{"id": format!("u{i}"), "vector": v}]}),
        )
        .await;
        acknowledged.push((format!("u{i}"), v));
    }
    let docs: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("e{i}"), "text": format!("claimed text {i}")}))
        .collect();
    a.ok("embed", json!({"index": "goals", "documents": docs})).await;
    // Wait until the slow embedder has the batch: the claim is taken.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while slow.call_count() == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(slow.call_count() > 0, "the first process never claimed the batch");
    a.kill9().await;

    let fast = MockOllama::start(false).await;
    let b = start_with(peer(&url, &schema, b_dir.dir.path(), &fast, &lease)).await;
    for (id, v) in &acknowledged {
        let got = b.ok("fetch", json!({"index": "goals", "ids": [id]})).await;
        assert_eq!(got["vectors"][0]["vector"], json!(v), "{id}");
    }
    let flushed = b.ok("flush", json!({"timeout_ms": 20_000})).await;
    assert_eq!(flushed["pending"], json!(0), "{flushed}");
    for i in 0..5 {
        let text = format!("claimed text {i}");
        let got = b
            .ok("fetch", json!({"index": "goals", "ids": [format!("e{i}")]}))
            .await;
        assert_eq!(got["vectors"][0]["vector"], json!(vector_of(&text)), "e{i}");
        assert!(
            fast.texts().contains(&text),
            "{text} was not embedded by the second process"
        );
    }
    b.stop().await;
}

/// Start a server on `database` (its stderr captured), make one data call, stop it, and
/// return the call's error and everything the server logged.
async fn failing_call(database: &str) -> (String, String) {
    let dir = temp_db();
    let mut cmd = bare_command(&dir.path);
    cmd.args(["--database", database])
        .env("STRIDE_VECTORS_LOG", "info")
        .stderr(std::process::Stdio::piped());
    let mut server = start_with(cmd).await;
    let stderr = server.child.stderr.take().expect("piped stderr");
    // The first attempt to connect runs in the background: wait until it has failed.
    let mut error = String::new();
    for _ in 0..100 {
        error = server.err("list_indexes", json!({})).await;
        if !error.contains("still starting") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.stop().await;
    let mut logged = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut tokio::io::BufReader::new(stderr), &mut logged)
        .await
        .expect("read stderr");
    (error, logged)
}

/// What a user gets wrong (an unreachable server, a missing database, no pgvector) is
/// named in every data call, the server keeps running and retrying, and the password
/// appears nowhere.
#[tokio::test]
async fn connection_failures_are_named_and_the_password_never_shown() {
    let Some(url) = database() else { return };
    let (error, logged) = failing_call("postgres://stride:pw-s3cret-41@127.0.0.1:1/stride").await;
    assert!(error.contains("cannot reach PostgreSQL"), "{error}");
    assert!(error.contains("retrying"), "{error}");
    for text in [&error, &logged] {
        assert!(!text.contains("pw-s3cret-41"), "the password leaked: {text}");
    }
    assert!(
        logged.contains("postgres://stride@127.0.0.1:1/stride"),
        "{logged}"
    );

    let missing = format!("{url} dbname=no_such_database_here");
    let (error, _) = failing_call(&missing).await;
    assert!(
        error.contains("database does not exist") || error.contains("no_such_database_here"),
        "{error}"
    );

    // A database without pgvector, and a user not allowed to create it.
    let Ok(psql) = std::env::var("STRIDE_VECTORS_TEST_PSQL") else {
        eprintln!("pgvector-missing case skipped: STRIDE_VECTORS_TEST_PSQL is not set");
        return;
    };
    let run = |sql: &str| {
        let out = std::process::Command::new(&psql)
            .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
            .output()
            .expect("run psql");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    if run("SELECT 1 FROM pg_roles WHERE rolname = 'sv_plain'").is_empty() {
        run("CREATE ROLE sv_plain LOGIN");
    }
    if run("SELECT 1 FROM pg_database WHERE datname = 'sv_no_vector'").is_empty() {
        run("CREATE DATABASE sv_no_vector OWNER sv_plain");
    }
    let plain = format!("{url} user=sv_plain dbname=sv_no_vector");
    let (error, _) = failing_call(&plain).await;
    assert!(error.contains("pgvector is not installed"), "{error}");

    // A wrong password (scripts/postgres makes sv_password the one role that needs one).
    if run("SELECT 1 FROM pg_roles WHERE rolname = 'sv_password'").is_empty() {
        run("CREATE ROLE sv_password LOGIN PASSWORD 'the-right-one'");
    }
    let wrong = format!("{url} user=sv_password password=wrong-pw-77");
    let (error, logged) = failing_call(&wrong).await;
    assert!(error.contains("refused the credentials"), "{error}");
    for text in [&error, &logged] {
        assert!(!text.contains("wrong-pw-77"), "the password leaked: {text}");
    }
}

/// Connections killed under a running server (a failover, an idle timeout, an admin): a
/// call that meets a dead connection says so, and the server reconnects by itself.
#[tokio::test]
async fn lost_connections_are_named_and_replaced() {
    let Some(url) = database() else { return };
    let Ok(psql) = std::env::var("STRIDE_VECTORS_TEST_PSQL") else {
        eprintln!("skipped: STRIDE_VECTORS_TEST_PSQL is not set");
        return;
    };
    // Its own application name, so that only this server's connections are killed.
    let url = format!("{url} application_name=sv_lost_connections");
    let schema = unique_schema("lost");
    let dir = temp_db();
    let mut cmd = bare_command(&dir.path);
    cmd.args(["--database", &url, "--pg-schema", &schema]);
    let s = start_with(cmd).await;
    s.ok("upsert", json!({"index": "goals", "create_index": {"dimension": 2}, "vectors": [{"id": "a", "vector": [1, 0]}]}))
        .await;
    for round in 0..3 {
        let killed = std::process::Command::new(&psql)
            .args([
                url.as_str(),
                "-qAtc",
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'sv_lost_connections' AND pid <> pg_backend_pid()",
            ])
            .output()
            .expect("run psql");
        let killed = String::from_utf8_lossy(&killed.stdout).trim().to_string();
        assert_ne!(killed, "0", "round {round}: no connection of the server to kill");
        let mut answered = None;
        for attempt in 0..5 {
            let r = s
                .call("search", json!({"index": "goals", "vector": [1, 0]}))
                .await;
            if r.is_error != Some(true) {
                answered = Some(attempt);
                break;
            }
            let message = text(&r);
            assert!(
                message.contains("connection to PostgreSQL was lost")
                    || message.contains("PostgreSQL closed the connection")
                    || message.contains("cannot reach PostgreSQL"),
                "round {round}: {message}"
            );
        }
        assert!(answered.is_some(), "round {round}: the server did not reconnect");
    }
    s.stop().await;
}

/// A table of Mastra's older layout (no namespace, `vector_id` unique) with a euclidean
/// HNSW index is adopted: its metric and settings from that index, its layout migrated as
/// @mastra/pg 1.27 migrates it, and it is then searched and written like any index.
#[tokio::test]
async fn an_old_mastra_table_is_adopted_and_migrated() {
    let Some(url) = database() else { return };
    let Ok(psql) = std::env::var("STRIDE_VECTORS_TEST_PSQL") else {
        eprintln!("skipped: STRIDE_VECTORS_TEST_PSQL is not set");
        return;
    };
    let schema = unique_schema("legacy");
    // The server first (it makes sure pgvector is there); the table appears after its
    // start, so it is adopted when first named.
    let dir = temp_db();
    let mut cmd = bare_command(&dir.path);
    cmd.args(["--database", &url, "--pg-schema", &schema]);
    let s = start_with(cmd).await;
    s.ok("list_indexes", json!({})).await;
    let setup = format!(
        "CREATE SCHEMA IF NOT EXISTS {schema};
         CREATE TABLE {schema}.old_goals (id SERIAL PRIMARY KEY, vector_id TEXT UNIQUE NOT NULL,
             embedding vector(3), metadata JSONB DEFAULT '{{}}'::jsonb);
         INSERT INTO {schema}.old_goals (vector_id, embedding, metadata) VALUES
             ('a', '[1,0,0]', '{{\"kind\": \"x\"}}'), ('b', '[0,3,0]', '{{\"kind\": \"y\"}}');
         CREATE INDEX old_goals_vector_idx ON {schema}.old_goals USING hnsw (embedding vector_l2_ops) WITH (m = 8);"
    );
    let out = std::process::Command::new(&psql)
        .args([url.as_str(), "-v", "ON_ERROR_STOP=1", "-qc", &setup])
        .output()
        .expect("run psql");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let desc = s.ok("describe_index", json!({"index": "old_goals"})).await;
    assert_eq!(desc["adopted"], json!(true), "{desc}");
    assert_eq!(desc["metric"], json!("euclidean"), "{desc}");
    assert_eq!(desc["dimension"], json!(3), "{desc}");
    assert_eq!(desc["search_mode"], json!("hnsw"), "{desc}");
    assert_eq!(desc["ann"], json!({"m": 8, "ef_construction": 64}), "{desc}");
    assert_eq!(desc["count"], json!(2), "{desc}");
    s.ok("upsert", json!({"index": "old_goals", "vectors": [{"id": "a", "vector": [0, 0, 1], "metadata": {"kind": "z"}}]}))
        .await;
    let r = s
        .ok(
            "search",
            json!({"index": "old_goals", "vector": [0, 0, 1], "top_k": 2, "ef_search": 100}),
        )
        .await;
    assert_eq!(r["results"][0]["id"], json!("a"), "{r}");
    assert_eq!(r["results"][0]["score"], json!(1.0), "{r}");
    assert_eq!(r["results"][0]["metadata"], json!({"kind": "z"}), "{r}");
    let columns = std::process::Command::new(&psql)
        .args([
            url.as_str(),
            "-qAtc",
            &format!("SELECT count(*) FROM {schema}.old_goals WHERE namespace = 'default'"),
        ])
        .output()
        .expect("run psql");
    assert_eq!(String::from_utf8_lossy(&columns.stdout).trim(), "2");
    s.stop().await;
}
