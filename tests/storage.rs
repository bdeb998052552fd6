//! The file format and the process contract: Mastra's files are adopted as they are, ours
//! keep Mastra's layout, stdout carries JSON-RPC only, and `schemas/` is never stale.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

/// Make a file exactly as Mastra's DuckDBVector does: its DDL, its INSERT OR REPLACE with
/// the vector pasted as text, and no bookkeeping of ours.
fn write_mastra_file(path: &std::path::Path) {
    let conn = duckdb::Connection::open(path).unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS \"goals\" (id VARCHAR PRIMARY KEY, vector FLOAT[3], metadata JSON);
         INSERT OR REPLACE INTO \"goals\" (id, vector, metadata) VALUES ('g1', [1, 0, 0]::FLOAT[3], '{\"userId\":\"u1\",\"goalName\":\"Laptop\",\"goalAmount\":800,\"status\":\"completed\"}');
         INSERT OR REPLACE INTO \"goals\" (id, vector, metadata) VALUES ('g2', [0, 1, 0]::FLOAT[3], '{\"userId\":\"u2\",\"goalName\":\"Trip\",\"goalAmount\":300}');
         CREATE TABLE notes (x INTEGER);",
    )
    .unwrap();
}

#[tokio::test]
async fn a_mastra_file_is_adopted_and_served_unchanged() {
    let db = temp_db();
    write_mastra_file(&db.path);
    let s = start(&db.path).await;
    let list = s.ok("list_indexes", json!({})).await;
    assert_eq!(
        index_shapes(&list),
        json!({"indexes": [{"index": "goals", "dimension": 3, "metric": "cosine", "count": 2}]})
    );
    assert_eq!(
        s.ok("describe_index", json!({"index": "goals"})).await["adopted"],
        json!(true)
    );
    let r = s
        .ok(
            "search",
            json!({"index": "goals", "vector": [1, 0.1, 0], "filter": {"status": {"$eq": "completed"}}}),
        )
        .await;
    assert_eq!(r["results"][0]["id"], json!("g1"));
    assert_eq!(r["results"][0]["metadata"]["goalAmount"], json!(800));
    s.ok("upsert", json!({"index": "goals", "vectors": [{"id": "g3", "vector": [0, 0, 1], "metadata": {"userId": "u3"}}]}))
        .await;
    s.stop().await;

    // What we wrote keeps Mastra's layout: listing base tables of main shows the indexes
    // (and the foreign table) and nothing of ours.
    let conn = duckdb::Connection::open(&db.path).unwrap();
    let mut stmt = conn
        .prepare("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE' ORDER BY 1")
        .unwrap();
    let tables: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert_eq!(tables, ["goals", "notes"]);
    let ty: String = conn
        .query_row(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'goals' AND column_name = 'vector'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ty, "FLOAT[3]");
    let rows = rows_in_file(&db.path, "goals");
    assert_eq!(rows["g3"], (vec![0.0, 0.0, 1.0], json!({"userId": "u3"})));
    assert_eq!(rows["g1"].1["goalName"], json!("Laptop"));
}

#[tokio::test]
async fn a_file_we_made_opens_in_plain_duckdb_with_mastras_queries() {
    let db = temp_db();
    let s = start(&db.path).await;
    s.ok(
        "upsert",
        json!({"index": "advice_history", "create_index": {"dimension": 2}, "vectors": [
            {"id": "tip-1", "vector": [1, 0], "metadata": {"outcome": "helpful"}},
            {"id": "tip-2", "vector": [0, 1], "metadata": {"outcome": "neutral"}}
        ]}),
    )
    .await;
    s.stop().await;
    let conn = duckdb::Connection::open(&db.path).unwrap();
    // Mastra's query shape, with its filter translation and score formula.
    let (id, distance): (String, f64) = conn
        .query_row(
            "SELECT id, distance FROM (SELECT id, metadata, array_cosine_distance(vector, [0.9, 0.1]::FLOAT[2]) as distance FROM \"advice_history\" WHERE json_extract_string(metadata, '$.outcome') = 'helpful') subq ORDER BY distance ASC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!(id, "tip-1");
    assert!(1.0 - distance > 0.99);
}

#[test]
fn stdout_carries_json_rpc_only() {
    let db = temp_db();
    let mut child = Command::new(BIN)
        .arg("--db")
        .arg(&db.path)
        .env("STRIDE_VECTORS_LOG", "debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let requests = [
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw", "version": "0"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "create_index", "arguments": {"index": "x", "dimension": 2}}}),
        json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "search", "arguments": {"index": "nope", "vector": [1, 0]}}}),
    ];
    for r in &requests {
        writeln!(stdin, "{r}").unwrap();
    }
    drop(stdin);
    let stdout = BufReader::new(child.stdout.take().unwrap());
    let lines: Vec<Value> = stdout
        .lines()
        .map(|l| {
            let l = l.unwrap();
            serde_json::from_str::<Value>(&l).unwrap_or_else(|_| panic!("not JSON on stdout: {l}"))
        })
        .collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l["jsonrpc"] == "2.0"));
    let by_id = |id: u64| {
        lines
            .iter()
            .find(|l| l["id"] == json!(id))
            .unwrap_or_else(|| panic!("no answer to {id}"))
    };
    assert_eq!(by_id(2)["result"]["isError"], json!(false));
    assert_eq!(
        by_id(3)["result"]["isError"],
        json!(true),
        "a tool error, not a JSON-RPC error"
    );
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("serving MCP on stdio"),
        "logs go to stderr: {stderr}"
    );
}

#[test]
fn schema_files_are_up_to_date() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("schemas");
    let out = Command::new(BIN)
        .args(["schemas", "--check", "--out"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "schemas/ is stale; run `stride-vectors schemas --out schemas`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let upsert: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("upsert.input.json")).unwrap()).unwrap();
    assert!(upsert["properties"]["vectors"].is_object());
}

/// A DuckDB file on a 3 MiB tmpfs (mounted in a user and mount namespace of the server's
/// own, so no cleanup and no root are needed): upserts fill it until a commit fails. That
/// failure is named "disk full" with the file, the server keeps serving, and every upsert
/// it acknowledged is there.
#[tokio::test]
async fn a_full_disk_is_named_and_nothing_acknowledged_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let mount = tmp.path().join("small");
    std::fs::create_dir(&mount).unwrap();
    let db = mount.join("v.duckdb");
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=3m tmpfs "$1" && shift && exec "$@""#)
        .arg("sh")
        .arg(&mount)
        .arg(BIN)
        .arg("--db")
        .arg(&db)
        .args(["--search-engine", "duckdb", "--duckdb-memory-mb", "64"])
        .env("STRIDE_VECTORS_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    let s = start_with(cmd).await;
    let dim = 256;
    let mut acknowledged = 0u64;
    let mut error = None;
    for batch in 0..200u64 {
        let vectors: Vec<Value> = random_vectors(batch + 1, 200, dim)
            .into_iter()
            .enumerate()
            .map(|(i, v)| json!({"id": format!("b{batch}-{i}"), "vector": v}))
            .collect();
        let args = json!({"index": "full", "create_index": {"dimension": dim}, "vectors": vectors});
        let result = s.call("upsert", args).await;
        if result.is_error == Some(true) {
            error = Some(text(&result));
            break;
        }
        acknowledged += 200;
    }
    let error = error.expect("a 3 MiB disk fills up");
    assert!(acknowledged > 0, "some upserts fit: {error}");
    assert!(
        error.contains("disk full: no space left on the disk holding"),
        "{error}"
    );
    assert!(
        error.contains(&mount.display().to_string()),
        "names the file: {error}"
    );
    let count = s.ok("describe_index", json!({"index": "full"})).await["count"].clone();
    assert_eq!(
        count,
        json!(acknowledged),
        "every acknowledged row, none of the failed call"
    );
}

#[tokio::test]
async fn a_file_made_before_keyword_search_gains_its_text_catalog_and_survives_a_kill() {
    let db = temp_db();
    let s = start(&db.path).await;
    s.ok(
        "upsert",
        json!({"index": "notes", "create_index": {"dimension": 2}, "vectors": [
            {"id": "a", "vector": [1, 0], "metadata": {"text": "SQL job in Lyon"}},
            {"id": "b", "vector": [0, 1], "metadata": {"text": "barista in Paris"}}
        ]}),
    )
    .await;
    s.stop().await;
    // The catalog as it was before keyword search.
    {
        let conn = duckdb::Connection::open(&db.path).unwrap();
        conn.execute_batch("DROP TABLE stride_vectors.index_text; CHECKPOINT;")
            .unwrap();
    }
    let keyword = json!({"index": "notes", "query": "sql", "mode": "keyword"});
    let s = start(&db.path).await;
    let described = s.ok("describe_index", json!({"index": "notes"})).await;
    assert_eq!(described["text_field"], json!("text"), "{described}");
    assert_eq!(described["language"], json!("english"));
    assert_eq!(hit_ids(&s.ok("search", keyword.clone()).await), ["a"]);
    // Killed before any checkpoint of its own: what it added to the catalog is replayed from
    // the WAL (DuckDB 1.5.5 cannot replay an ALTER TABLE, so the catalog is never altered).
    s.kill9().await;
    let s = start(&db.path).await;
    assert_eq!(hit_ids(&s.ok("search", keyword).await), ["a"]);
    s.stop().await;
}
