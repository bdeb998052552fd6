//! The in-memory search engine against DuckDB's scan, the reference: same ids in the same
//! order and the same scores, at every size, width and metric, with and without filters;
//! and consistency with the file under concurrent writes and across a restart.

mod common;

use std::sync::Arc;

use common::*;
use serde_json::{json, Value};

const METRICS: [&str; 3] = ["cosine", "euclidean", "dotproduct"];

fn command_with_memory(db: &std::path::Path) -> tokio::process::Command {
    let mut cmd = command(db);
    cmd.args(["--memory-limit-mb", "4096"]);
    cmd
}

/// Fill the (already created) tables straight in DuckDB, as fast as it takes rows: seeded
/// random vectors in (-1, 1) made here and handed to DuckDB's appender as Arrow batches
/// (generating them in SQL, one lambda call per number, took 30 s for these 1.2 GB), and
/// Stride-like metadata.
fn fill(db: &std::path::Path, tables: &[(String, usize, usize)]) {
    use duckdb::arrow::array::{ArrayRef, FixedSizeListArray, Float32Array, StringArray};
    use duckdb::arrow::datatypes::{DataType, Field, Schema};
    use duckdb::arrow::record_batch::RecordBatch;
    use rand::{Rng, SeedableRng};

    let conn = duckdb::Connection::open(db).unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for (name, size, dim) in tables {
        let width = *dim as i32;
        let item = Arc::new(Field::new("item", DataType::Float32, false));
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Utf8, false),
            Field::new("vector", DataType::FixedSizeList(item.clone(), width), false),
            Field::new("metadata", DataType::Utf8, false),
        ]));
        let mut appender = conn.appender(name).unwrap();
        for start in (0..*size).step_by(10_000) {
            let rows = start..(start + 10_000).min(*size);
            let ids = StringArray::from_iter_values(rows.clone().map(|i| format!("v{i:06}")));
            let flat: Vec<f32> = (0..rows.len() * dim)
                .map(|_| rng.random_range(-1.0f32..1.0))
                .collect();
            let vectors =
                FixedSizeListArray::try_new(item.clone(), width, Arc::new(Float32Array::from(flat)), None)
                    .unwrap();
            let metadata = StringArray::from_iter_values(rows.map(|i| {
                json!({"group": i % 10, "userId": format!("u{}", i % 100), "tags": [format!("t{}", i % 3)]})
                    .to_string()
            }));
            let columns: Vec<ArrayRef> = vec![Arc::new(ids), Arc::new(vectors), Arc::new(metadata)];
            appender
                .append_record_batch(RecordBatch::try_new(schema.clone(), columns).unwrap())
                .unwrap();
        }
        appender.flush().unwrap();
    }
}

fn hits(r: &Value) -> Vec<(String, f64)> {
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["id"].as_str().unwrap().to_string(),
                h["score"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn assert_same(memory: &Value, duckdb: &Value, what: &str) {
    assert_eq!(
        memory["engine"],
        json!("memory"),
        "{what}: memory engine answered"
    );
    assert_eq!(duckdb["engine"], json!("duckdb"), "{what}");
    let (m, d) = (hits(memory), hits(duckdb));
    let ids = |v: &[(String, f64)]| v.iter().map(|h| h.0.clone()).collect::<Vec<_>>();
    assert_eq!(ids(&m), ids(&d), "{what}: same ids in the same order");
    let details = |r: &Value| {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| (h["metadata"].clone(), h.get("vector").cloned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        details(memory),
        details(duckdb),
        "{what}: same metadata (and vectors)"
    );
    for ((id, a), (_, b)) in m.iter().zip(&d) {
        // Both engines sum in f32, in different orders: a dot product near 20 carries about
        // 1e-5 of rounding in either, so large scores compare relatively.
        let tolerance = 1e-5 * b.abs().max(1.0);
        assert!(
            (a - b).abs() < tolerance,
            "{what}: score of {id}: memory {a} vs duckdb {b}"
        );
    }
}

#[tokio::test]
async fn memory_engine_returns_exactly_what_duckdb_returns() {
    let db = temp_db();
    let mut tables = Vec::new();
    let s = start(&db.path).await;
    for size in [1_000usize, 10_000, 100_000] {
        for dim in [384usize, 1024] {
            for metric in METRICS {
                let name = format!("{metric}_{size}_{dim}");
                s.ok(
                    "create_index",
                    json!({"index": name, "dimension": dim, "metric": metric}),
                )
                .await;
                tables.push((name, size, dim));
            }
        }
    }
    s.stop().await;
    fill(&db.path, &tables);

    let s = start_with(command_with_memory(&db.path)).await;
    // Once every copy is loaded, DuckDB drops the blocks its loader read (about 760 MB of
    // vectors here, against its 256 MiB limit): it keeps far less than the copies.
    let shed = |st: &Value| st["duckdb_memory_bytes"].as_u64().is_some_and(|b| b < 64 << 20);
    let stats = wait_for_stats(&s, 300, |st| {
        st["indexes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["engine"] == json!("memory"))
            && shed(st)
    })
    .await;
    assert!(
        stats["memory_bytes"].as_u64().unwrap() > 100_000 * 1024 * 4,
        "{stats}"
    );
    assert!(shed(&stats), "DuckDB kept its cache: {stats}");
    let resident = stats["resident_bytes"].as_u64().unwrap();
    assert!(resident > stats["memory_bytes"].as_u64().unwrap(), "{stats}");
    let filters = [
        None,
        Some(json!({"group": 3})),
        Some(json!({"$and": [{"userId": {"$ne": "u7"}}, {"tags": {"$in": ["t1", "t2"]}}]})),
    ];
    for (name, _, dim) in &tables {
        for (qi, query) in random_vectors(5, 2, *dim).iter().enumerate() {
            for filter in &filters {
                let mut args = json!({"index": name, "vector": query, "top_k": 10});
                if let Some(f) = filter {
                    args["filter"] = f.clone();
                }
                let memory = s.ok("search", args.clone()).await;
                args["engine"] = json!("duckdb");
                let duckdb = s.ok("search", args).await;
                assert_same(&memory, &duckdb, &format!("{name} query {qi} filter {filter:?}"));
            }
        }
    }
    s.stop().await;
}

#[tokio::test]
async fn searches_agree_with_committed_state_under_concurrent_writes_and_after_restart() {
    let db = temp_db();
    let s = Arc::new(start(&db.path).await);
    s.ok("create_index", json!({"index": "goals", "dimension": 4}))
        .await;
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..150u32 {
                let id = format!("g{}", (i * 7 + w) % 40);
                let v = (w * 1000 + i + 1) as f32;
                match i % 8 {
                    0..=2 => {
                        let metadata = json!({"w": w, "tag": format!("t{}", i % 3), "n": i, "x": {"f": 0.1 * i as f64}});
                        s.ok("upsert", json!({"index": "goals", "vectors": [{"id": id, "vector": [v, 1, 2, 3], "metadata": metadata}]}))
                            .await;
                    }
                    6 | 7 => {
                        // Metadata only, merged (a patch with a null removes a key) or replaced.
                        let (metadata, mode) = if i % 8 == 6 {
                            (json!({"n": i + 1000, "tag": null, "x": {"g": [1, 2.5, "z"]}}), "merge")
                        } else {
                            (json!({"w": w, "tag": "replaced"}), "replace")
                        };
                        let r = s
                            .call("update", json!({"index": "goals", "id": id, "metadata": metadata, "metadata_mode": mode}))
                            .await;
                        assert!(r.is_error != Some(true) || text(&r).contains("no vector with id"), "{}", text(&r));
                    }
                    3 => {
                        let r = s.call("update", json!({"index": "goals", "id": id, "vector": [v, 3, 2, 1]})).await;
                        assert!(r.is_error != Some(true) || text(&r).contains("no vector with id"), "{}", text(&r));
                    }
                    4 => {
                        s.ok("delete", json!({"index": "goals", "ids": [id]})).await;
                    }
                    _ => {
                        s.ok("delete", json!({"index": "goals", "filter": {"w": w, "$not": {"w": {"$ne": w}}}}))
                            .await;
                    }
                }
            }
        }));
    }
    for r in 0..4u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..150u32 {
                let q = [1.0 + r as f32, (i % 5) as f32, 1.0, 0.5];
                // Filtered searches on the copy alone, while the writes land.
                let filtered = s
                    .ok(
                        "search",
                        json!({"index": "goals", "vector": q, "top_k": 40, "filter": {"tag": "replaced", "n": {"$exists": false}}}),
                    )
                    .await;
                for h in filtered["results"].as_array().unwrap() {
                    assert_eq!(h["metadata"]["tag"], json!("replaced"), "{h}");
                    assert!(h["metadata"].get("n").is_none(), "{h}");
                }
                let res = s
                    .ok(
                        "search",
                        json!({"index": "goals", "vector": q, "top_k": 40, "include_vector": true}),
                    )
                    .await;
                for h in res["results"].as_array().unwrap() {
                    let v: Vec<f32> = serde_json::from_value(h["vector"].clone()).unwrap();
                    let expected = cosine(&q, &v);
                    let got = h["score"].as_f64().unwrap();
                    assert!(
                        (got - expected).abs() < 1e-5,
                        "score {got} does not belong to the stored vector {v:?} ({expected})"
                    );
                    let base = v[0] as u32 - 1;
                    assert!(
                        v[0] >= 1.0 && base % 1000 < 150 && base / 1000 < 4,
                        "a vector nobody wrote: {v:?}"
                    );
                }
            }
        }));
    }
    for t in tasks {
        t.await.expect("client task");
    }
    // Writers end on deletes by filter: leave rows that every filter below can find.
    for i in 0..12u32 {
        let metadata = json!({"w": i % 4, "tag": format!("t{}", i % 3), "n": 1095 + i, "x": {"f": 0.25 * i as f64, "g": [i, 2.5]}});
        s.ok("upsert", json!({"index": "goals", "vectors": [{"id": format!("f{i}"), "vector": [i + 1, 1, 2, 3], "metadata": metadata}]}))
            .await;
    }
    s.ok(
        "update",
        json!({"index": "goals", "id": "f5", "metadata": {"tag": "replaced"}, "metadata_mode": "replace"}),
    )
    .await;
    let query = json!({"index": "goals", "vector": [2, 1, 1, 1], "top_k": 1000});
    let mut by_duckdb = query.clone();
    by_duckdb["engine"] = json!("duckdb");
    assert_same(
        &s.ok("search", query.clone()).await,
        &s.ok("search", by_duckdb.clone()).await,
        "after the load",
    );
    // Filters evaluated on the copy, by DuckDB next to the copy ($regex), and stored vectors.
    for (filter, include_vector) in [
        (json!({"w": 1}), false),
        (
            json!({"tag": {"$in": ["t1", "replaced"]}, "x.f": {"$gt": 1}}),
            false,
        ),
        (json!({"$or": [{"x.g": 2.5}, {"n": {"$gte": 1100}}]}), false),
        (json!({"tag": {"$regex": "^T[02]$", "$options": "i"}}), false),
        (json!({"tag": {"$ne": "replaced"}}), true),
    ] {
        let mut q = query.clone();
        q["filter"] = filter.clone();
        q["include_vector"] = json!(include_vector);
        let mut d = q.clone();
        d["engine"] = json!("duckdb");
        let (memory, duckdb) = (s.ok("search", q).await, s.ok("search", d).await);
        assert!(!hits(&duckdb).is_empty(), "{filter} matches something");
        assert_same(&memory, &duckdb, &format!("after the load, filter {filter}"));
    }
    Arc::into_inner(s).unwrap().stop().await;

    let s = start(&db.path).await;
    wait_for_stats(&s, 60, |st| st["indexes"][0]["engine"] == json!("memory")).await;
    assert_same(
        &s.ok("search", query).await,
        &s.ok("search", by_duckdb).await,
        "after a restart",
    );
    let count = s.ok("describe_index", json!({"index": "goals"})).await["count"]
        .as_u64()
        .unwrap();
    let r = s
        .ok(
            "search",
            json!({"index": "goals", "vector": [2, 1, 1, 1], "top_k": 1000}),
        )
        .await;
    assert_eq!(
        r["results"].as_array().unwrap().len() as u64,
        count,
        "the loaded copy holds every row of the file"
    );
    s.stop().await;
}

#[tokio::test]
async fn an_index_over_the_memory_budget_is_served_by_duckdb() {
    let db = temp_db();
    let s = start(&db.path).await;
    s.ok("create_index", json!({"index": "big", "dimension": 1024}))
        .await;
    s.stop().await;
    fill(&db.path, &[("big".to_string(), 3000, 1024)]);
    let mut cmd = command(&db.path);
    cmd.args(["--memory-limit-mb", "1"]);
    let s = start_with(cmd).await;
    let stats = wait_for_stats(&s, 60, |st| {
        st["indexes"][0]["memory_state"] == json!("over_budget")
    })
    .await;
    assert_eq!(
        stats["indexes"][0]["memory_state"],
        json!("over_budget"),
        "{stats}"
    );
    assert_eq!(stats["indexes"][0]["engine"], json!("duckdb"));
    assert_eq!(stats["indexes"][0]["memory_bytes"], json!(0));
    let r = s
        .ok(
            "search",
            json!({"index": "big", "vector": vec![0.5; 1024], "top_k": 3}),
        )
        .await;
    assert_eq!(r["engine"], json!("duckdb"));
    assert_eq!(r["results"].as_array().unwrap().len(), 3);
    let d = s.ok("describe_index", json!({"index": "big"})).await;
    assert_eq!(
        (
            d["engine"].clone(),
            d["memory_bytes"].clone(),
            d["memory_state"].clone()
        ),
        (json!("duckdb"), json!(0), json!("over_budget"))
    );
    // Keyword and hybrid searches need the in-memory copy: refused, saying why and what to do.
    let err = s
        .err(
            "search",
            json!({"index": "big", "query": "anything", "mode": "keyword"}),
        )
        .await;
    assert!(
        err.contains(
            "mode: index \"big\" is not in memory (it does not fit the memory budget, --memory-limit 1 MiB"
        ) && err.contains("raise --memory-limit, or search with mode \"vector\""),
        "{err}"
    );
    s.stop().await;
}

#[tokio::test]
async fn metadata_served_from_memory_is_what_the_file_holds() {
    let db = temp_db();
    let s = start(&db.path).await;
    let tricky = [
        json!({"n": 1.0, "big": 18446744073709551615u64, "neg": -9223372036854775808i64, "tiny": 5e-324}),
        json!({"s": "é \u{1F600} \" \\ \n \u{0000}", "nested": {"a": [null, true, {"b": []}]}, "empty": {}}),
        json!({"x": 0.1, "y": 1e300, "z": -0.0, "w": 123456789012345680000.0}),
        json!({}),
    ];
    let vectors: Vec<Value> = tricky
        .iter()
        .enumerate()
        .map(|(i, m)| json!({"id": format!("r{i}"), "vector": [1.0, i as f64 + 1.0], "metadata": m}))
        .collect();
    s.ok(
        "upsert",
        json!({"index": "t", "create_index": {"dimension": 2}, "vectors": vectors}),
    )
    .await;
    s.ok(
        "update",
        json!({"index": "t", "id": "r3", "metadata": {"added": 2.50, "nested": {"k": null}}}),
    )
    .await;
    wait_for_stats(&s, 30, |st| st["indexes"][0]["engine"] == json!("memory")).await;
    let query = json!({"index": "t", "vector": [1, 1], "top_k": 10});
    let mut by_duckdb = query.clone();
    by_duckdb["engine"] = json!("duckdb");
    let memory = s.ok("search", query.clone()).await;
    assert_same(&memory, &s.ok("search", by_duckdb.clone()).await, "as written");
    let r3 = memory["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["id"] == json!("r3"))
        .unwrap();
    assert_eq!(
        r3["metadata"],
        json!({"added": 2.5, "nested": {}}),
        "the merge patch"
    );
    s.stop().await;
    // The same rows, loaded from the file after a restart.
    let s = start(&db.path).await;
    wait_for_stats(&s, 30, |st| st["indexes"][0]["engine"] == json!("memory")).await;
    let loaded = s.ok("search", query).await;
    assert_same(&loaded, &s.ok("search", by_duckdb).await, "after a restart");
    assert_eq!(hits(&loaded), hits(&memory));
    s.stop().await;
}

#[tokio::test]
async fn duckdb_gets_its_memory_limit_back_after_the_copies_load() {
    // The cache drop lowers DuckDB's limit for a moment. Once it is over, a batch that
    // needs more than that moment's 16 MiB must still commit, whatever the limit was:
    // DuckDB's default (`0`) or ours.
    for limit in ["0", "256"] {
        let db = temp_db();
        let s = start(&db.path).await;
        s.ok("create_index", json!({"index": "goals", "dimension": 384}))
            .await;
        s.stop().await;
        fill(&db.path, &[("goals".to_string(), 2_000, 384)]);
        let mut cmd = command(&db.path);
        cmd.args(["--duckdb-memory-mb", limit]);
        let s = start_with(cmd).await;
        wait_for_stats(&s, 30, |st| st["indexes"][0]["engine"] == json!("memory")).await;
        // The drop is queued right after the last copy is published.
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        for round in 0..3 {
            let vectors: Vec<Value> = random_vectors(round, 1_000, 384)
                .into_iter()
                .enumerate()
                .map(|(i, v)| json!({"id": format!("n{round}-{i}"), "vector": v, "metadata": {"round": round}}))
                .collect();
            s.ok("upsert", json!({"index": "goals", "vectors": vectors}))
                .await;
        }
        let d = s.ok("describe_index", json!({"index": "goals"})).await;
        assert_eq!(d["count"], json!(5_000), "limit {limit}: {d}");
        s.stop().await;
    }
}
