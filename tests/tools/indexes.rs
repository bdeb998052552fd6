//! Index tools: the lifecycle (create, list, describe, delete), names and shapes refused by
//! name, and HNSW indexes (PostgreSQL) or their refusal (DuckDB).

use serde_json::{json, Value};

use crate::common::*;
use crate::ids_of;

#[tokio::test]
async fn index_lifecycle_create_list_describe_delete() {
    let db = temp_db();
    let s = start(&db.path).await;
    let created = s
        .ok(
            "create_index",
            json!({"index": "goals", "dimension": 3, "metric": "euclidean"}),
        )
        .await;
    assert_eq!(
        created,
        json!({"index": "goals", "dimension": 3, "metric": "euclidean", "created": true,
               "text_field": "text", "language": "english"})
    );
    let again = s
        .ok(
            "create_index",
            json!({"index": "goals", "dimension": 3, "metric": "euclidean"}),
        )
        .await;
    assert_eq!(again["created"], json!(false));
    let err = s
        .err("create_index", json!({"index": "goals", "dimension": 4}))
        .await;
    assert!(
        err.contains("already exists with dimension 3 and metric euclidean"),
        "{err}"
    );

    s.ok("create_index", json!({"index": "advice_history", "dimension": 2}))
        .await;
    s.ok(
        "upsert",
        json!({"index": "goals", "vectors": [{"id": "a", "vector": [1, 2, 3]}]}),
    )
    .await;
    let list = s.ok("list_indexes", json!({})).await;
    assert_eq!(list["indexes"][0]["engine"], json!(default_engine()));
    let state = if on_postgres() { "off" } else { "ready" };
    assert_eq!(list["indexes"][0]["memory_state"], json!(state));
    assert_eq!(list["indexes"][0]["search_mode"], json!("exact"));
    assert_eq!(
        index_shapes(&list),
        json!({"indexes": [
            {"index": "advice_history", "dimension": 2, "metric": "cosine", "count": 0},
            {"index": "goals", "dimension": 3, "metric": "euclidean", "count": 1}
        ]})
    );
    let desc = s.ok("describe_index", json!({"index": "goals"})).await;
    assert_eq!(desc["count"], json!(1));
    assert_eq!(desc["dimension"], json!(3));
    assert_eq!(desc["adopted"], json!(false));
    assert_eq!(desc["search_mode"], json!("exact"));
    let backend = if on_postgres() { "postgres" } else { "duckdb" };
    assert_eq!(desc["backend"], json!(backend));

    assert_eq!(
        s.ok("delete_index", json!({"index": "goals"})).await["deleted"],
        json!(true)
    );
    assert_eq!(
        s.ok("delete_index", json!({"index": "goals"})).await["deleted"],
        json!(false)
    );
    let err = s.err("describe_index", json!({"index": "goals"})).await;
    assert!(err.contains("index \"goals\" does not exist"), "{err}");
    s.stop().await;
}

#[tokio::test]
async fn bad_index_names_and_shapes_are_refused_by_name() {
    let db = temp_db();
    let s = start(&db.path).await;
    for bad in ["1x", "a-b", "x\"; DROP TABLE y; --", ""] {
        let err = s.err("create_index", json!({"index": bad, "dimension": 3})).await;
        assert!(err.contains("invalid index name"), "{bad}: {err}");
    }
    let err = s.err("create_index", json!({"index": "x", "dimension": 0})).await;
    assert!(err.contains("dimension: must be between 1"), "{err}");
    let err = s
        .err(
            "create_index",
            json!({"index": "x", "dimension": 3, "metric": "manhattan"}),
        )
        .await;
    assert!(err.starts_with("metric:"), "{err}");
    let err = s.err("create_index", json!({"index": "x"})).await;
    assert!(err.contains("missing field `dimension`"), "{err}");
    let err = s
        .err("search", json!({"index": "x", "vector": [1], "topK": 3}))
        .await;
    assert!(err.contains("unknown field `topK`"), "{err}");
    // The server is still there and sane.
    assert_eq!(s.ok("list_indexes", json!({})).await, json!({"indexes": []}));
    s.stop().await;
}

#[tokio::test]
async fn ann_indexes_are_hnsw_on_postgres_and_refused_on_duckdb() {
    let db = temp_db();
    let s = start(&db.path).await;
    let hnsw =
        json!({"index": "goals", "dimension": 8, "ann": {"type": "hnsw", "m": 8, "ef_construction": 32}});
    if !on_postgres() {
        let err = s.err("create_index", hnsw).await;
        assert!(
            err.contains("ann: HNSW indexes need the PostgreSQL back-end"),
            "{err}"
        );
        s.ok("create_index", json!({"index": "goals", "dimension": 8}))
            .await;
        let err = s
            .err(
                "search",
                json!({"index": "goals", "vector": vec![1.0; 8], "ef_search": 50}),
            )
            .await;
        assert!(
            err.contains("ef_search: index \"goals\" is searched exactly"),
            "{err}"
        );
        s.stop().await;
        return;
    }
    for (ann, field) in [
        (json!({"type": "hnsw", "m": 1}), "ann.m"),
        (
            json!({"type": "hnsw", "m": 16, "ef_construction": 20}),
            "ann.ef_construction",
        ),
        (json!({"type": "ivfflat"}), "ann"),
    ] {
        let err = s
            .err(
                "create_index",
                json!({"index": "goals", "dimension": 8, "ann": ann}),
            )
            .await;
        assert!(err.contains(field), "{ann}: {err}");
    }
    let created = s.ok("create_index", hnsw.clone()).await;
    assert_eq!(created["created"], json!(true));
    assert_eq!(created["ann"], json!({"m": 8, "ef_construction": 32}));
    let vectors = random_vectors(7, 400, 8);
    let rows: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"id": format!("g{i:03}"), "vector": v, "metadata": {"even": i % 2 == 0}}))
        .collect();
    s.ok("upsert", json!({"index": "goals", "vectors": rows})).await;
    let desc = s.ok("describe_index", json!({"index": "goals"})).await;
    assert_eq!(desc["search_mode"], json!("hnsw"));
    assert_eq!(desc["ann"], json!({"m": 8, "ef_construction": 32}));
    assert_eq!(desc["count"], json!(400));

    // With a wide search on a small graph, the approximate top 10 is the exact one.
    let query = &vectors[3];
    let mut exact: Vec<(f64, String)> = vectors
        .iter()
        .enumerate()
        .map(|(i, v)| (cosine(v, query), format!("g{i:03}")))
        .collect();
    exact.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let top: Vec<String> = exact.iter().take(10).map(|(_, id)| id.clone()).collect();
    let r = s
        .ok(
            "search",
            json!({"index": "goals", "vector": query, "top_k": 10, "ef_search": 400}),
        )
        .await;
    assert_eq!(r["engine"], json!("postgres"));
    assert_eq!(ids_of(&r), top);
    // A filter keeping half the rows still fills the top k (iterative index scans).
    let r = s
        .ok(
            "search",
            json!({"index": "goals", "vector": query, "top_k": 10, "filter": {"even": true}}),
        )
        .await;
    let ids = ids_of(&r);
    assert_eq!(ids.len(), 10, "{r}");
    assert!(
        ids.iter().all(|id| id[1..].parse::<usize>().unwrap() % 2 == 0),
        "{r}"
    );
    let err = s
        .err(
            "search",
            json!({"index": "goals", "vector": query, "ef_search": 0}),
        )
        .await;
    assert!(err.contains("ef_search: must be between 1 and 1000"), "{err}");
    let err = s
        .err(
            "search",
            json!({"index": "goals", "vector": query, "engine": "memory"}),
        )
        .await;
    assert!(err.contains("engine:"), "{err}");

    // Asking again without ann keeps the graph; with other settings rebuilds it.
    let again = s
        .ok("create_index", json!({"index": "goals", "dimension": 8}))
        .await;
    assert_eq!(again["created"], json!(false));
    let desc = s.ok("describe_index", json!({"index": "goals"})).await;
    assert_eq!(desc["search_mode"], json!("hnsw"));
    let rebuilt = s
        .ok(
            "create_index",
            json!({"index": "goals", "dimension": 8, "ann": {"type": "hnsw", "m": 12}}),
        )
        .await;
    assert_eq!(rebuilt["created"], json!(false));
    let desc = s.ok("describe_index", json!({"index": "goals"})).await;
    assert_eq!(desc["ann"], json!({"m": 12, "ef_construction": 64}));
    s.stop().await;
}
