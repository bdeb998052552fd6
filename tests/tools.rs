//! Every tool's happy path and its refusals, against the real binary on a real file.

mod common;

use common::*;
use serde_json::{json, Value};

fn ids_of(result: &Value) -> Vec<String> {
    result["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|h| h["id"].as_str().expect("id").to_string())
        .collect()
}

#[tokio::test]
async fn tools_list_shows_every_tool_with_an_object_output_schema_and_annotations() {
    let db = temp_db();
    let server = start(&db.path).await;
    let info = server.client.peer_info().expect("server info");
    assert_eq!(
        info.server_info.as_ref().expect("server info").name,
        "stride-vectors"
    );
    assert!(info.instructions.as_deref().unwrap_or("").contains("upsert"));

    let tools = server.client.list_all_tools().await.expect("tools/list");
    let mut names: Vec<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    names.sort();
    assert_eq!(
        names,
        [
            "create_index",
            "delete",
            "delete_index",
            "describe_index",
            "embed",
            "fetch",
            "flush",
            "list_indexes",
            "search",
            "stats",
            "update",
            "upsert"
        ]
    );
    for tool in &tools {
        let out = tool
            .output_schema
            .as_ref()
            .unwrap_or_else(|| panic!("{} has no output schema", tool.name));
        assert_eq!(
            out.get("type"),
            Some(&json!("object")),
            "{} output schema root",
            tool.name
        );
        assert_eq!(
            tool.input_schema.get("type"),
            Some(&json!("object")),
            "{} input schema root",
            tool.name
        );
        assert!(
            tool.description.as_deref().is_some_and(|d| d.len() > 40),
            "{} description",
            tool.name
        );
        let ann = tool
            .annotations
            .as_ref()
            .unwrap_or_else(|| panic!("{} annotations", tool.name));
        let read_only =
            ["list_indexes", "describe_index", "search", "fetch", "stats"].contains(&tool.name.as_ref());
        assert_eq!(ann.read_only_hint, Some(read_only), "{} readOnlyHint", tool.name);
    }
    let upsert = tools.iter().find(|t| t.name == "upsert").expect("upsert");
    assert!(upsert.description.as_deref().unwrap_or("").contains("16 MiB"));
    server.stop().await;
}

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
        json!({"index": "goals", "dimension": 3, "metric": "euclidean", "created": true})
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
async fn upsert_refuses_bad_rows_naming_the_row_and_writes_nothing() {
    let db = temp_db();
    let s = start(&db.path).await;
    s.ok("create_index", json!({"index": "p", "dimension": 3})).await;
    let cases = [
        (
            json!({"index": "nope", "vectors": [{"id": "a", "vector": [1, 2, 3]}]}),
            "index \"nope\" does not exist",
        ),
        (
            json!({"index": "p", "vectors": [{"id": "a", "vector": [1, 2, 3]}, {"id": "b", "vector": [1, 2]}]}),
            "vectors[1] (id \"b\").vector: the vector has 2 dimensions, the index has 3",
        ),
        (
            json!({"index": "p", "vectors": [{"id": "a", "vector": [1, 1e39, 3]}]}),
            "vectors[0] (id \"a\").vector[1]: inf is not a finite number",
        ),
        (
            json!({"index": "p", "vectors": [{"id": "a", "vector": [1, null, 3]}]}),
            "vectors[0].vector[1]: invalid type: null",
        ),
        (
            json!({"index": "p", "vectors": [{"id": "", "vector": [1, 2, 3]}]}),
            "vectors[0].id: the id is empty",
        ),
        (
            json!({"index": "p", "vectors": [{"id": "m", "vector": [1, 2, 3], "metadata": [1]}]}),
            "vectors[0] (id \"m\").metadata: metadata must be a JSON object, got an array",
        ),
        (
            json!({"index": "p", "vectors": [{"id": "a", "vector": [1, 2, 3]}], "create_index": {"dimension": 4}}),
            "create_index: index \"p\" already exists with dimension 3",
        ),
    ];
    for (args, expected) in cases {
        let err = s.err("upsert", args.clone()).await;
        assert!(err.contains(expected), "{args}\n  got: {err}\n  want: {expected}");
    }
    assert_eq!(
        s.ok("describe_index", json!({"index": "p"})).await["count"],
        json!(0),
        "nothing was written"
    );
    s.stop().await;
}

#[tokio::test]
async fn upsert_creates_on_first_use_and_the_last_duplicate_wins() {
    let db = temp_db();
    let s = start(&db.path).await;
    let r = s
        .ok(
            "upsert",
            json!({"index": "goals", "create_index": {"dimension": 2, "metric": "dotproduct"}, "vectors": [
                {"id": "a", "vector": [1, 0], "metadata": {"v": 1}},
                {"id": "b", "vector": [0, 1]},
                {"id": "a", "vector": [0.5, 0.5], "metadata": {"v": 2}}
            ]}),
        )
        .await;
    assert_eq!(
        r,
        json!({"index": "goals", "upserted": 2, "ids": ["a", "b"], "created_index": true})
    );
    let f = s
        .ok("fetch", json!({"index": "goals", "ids": ["a", "b", "c"]}))
        .await;
    assert_eq!(
        f,
        json!({"vectors": [
            {"id": "a", "vector": [0.5, 0.5], "metadata": {"v": 2}},
            {"id": "b", "vector": [0.0, 1.0], "metadata": {}}
        ], "missing": ["c"]})
    );
    s.stop().await;
}

#[tokio::test]
async fn search_scores_match_mastra_for_each_metric() {
    let db = temp_db();
    let s = start(&db.path).await;
    let rows = [
        ("a", [1.0f32, 0.0]),
        ("b", [0.6, 0.8]),
        ("c", [-1.0, 0.5]),
        ("d", [2.0, 0.0]),
    ];
    let q = [1.0f32, 0.2];
    for metric in ["cosine", "euclidean", "dotproduct"] {
        let vectors: Vec<Value> = rows
            .iter()
            .map(|(id, v)| json!({"id": id, "vector": v}))
            .collect();
        s.ok(
            "upsert",
            json!({"index": metric, "create_index": {"dimension": 2, "metric": metric}, "vectors": vectors}),
        )
        .await;
        let r = s
            .ok("search", json!({"index": metric, "vector": q, "top_k": 4}))
            .await;
        let mut expected: Vec<(String, f64)> = rows
            .iter()
            .map(|(id, v)| {
                let score = match metric {
                    "cosine" => cosine(v, &q),
                    "euclidean" => {
                        let d: f64 = v
                            .iter()
                            .zip(q)
                            .map(|(a, b)| ((*a - b) as f64).powi(2))
                            .sum::<f64>()
                            .sqrt();
                        1.0 / (1.0 + d)
                    }
                    _ => v.iter().zip(q).map(|(a, b)| (*a * b) as f64).sum(),
                };
                (id.to_string(), score)
            })
            .collect();
        expected.sort_by(|x, y| y.1.total_cmp(&x.1).then(x.0.cmp(&y.0)));
        let got = r["results"].as_array().unwrap();
        assert_eq!(got.len(), 4);
        for (hit, (id, score)) in got.iter().zip(&expected) {
            assert_eq!(hit["id"], json!(id), "{metric}: {r}");
            assert!(
                (hit["score"].as_f64().unwrap() - score).abs() < 1e-5,
                "{metric} {id}: {hit} vs {score}"
            );
            assert!(hit.get("vector").is_none());
        }
    }
    // Cosine ties (a and d point the same way) go to the smaller id.
    let r = s
        .ok("search", json!({"index": "cosine", "vector": [1, 0], "top_k": 2}))
        .await;
    assert_eq!(ids_of(&r), ["a", "d"]);
    s.stop().await;
}

#[tokio::test]
async fn search_options_and_refusals() {
    let db = temp_db();
    let s = start(&db.path).await;
    s.ok(
        "upsert",
        json!({"index": "advice_history", "create_index": {"dimension": 2}, "vectors": [
            {"id": "t1", "vector": [1, 0], "metadata": {"outcome": "helpful", "profileId": "u1", "goalType": "save"}},
            {"id": "t2", "vector": [0.9, 0.1], "metadata": {"outcome": "unhelpful", "profileId": "u2"}},
            {"id": "t3", "vector": [0, 1], "metadata": {"outcome": "helpful", "profileId": "u2", "goalType": "save"}}
        ]}),
    )
    .await;
    let helpful = s
        .ok(
            "search",
            json!({"index": "advice_history", "vector": [1, 0], "filter": {"outcome": {"$eq": "helpful"}}}),
        )
        .await;
    assert_eq!(ids_of(&helpful), ["t1", "t3"]);
    let others = s
        .ok(
            "search",
            json!({"index": "advice_history", "vector": [1, 0], "filter": {"$and": [{"profileId": {"$ne": "u1"}}, {"goalType": "save"}]}}),
        )
        .await;
    assert_eq!(ids_of(&others), ["t3"]);
    let close = s
        .ok(
            "search",
            json!({"index": "advice_history", "vector": [1, 0], "min_score": 0.5}),
        )
        .await;
    assert_eq!(ids_of(&close), ["t1", "t2"]);
    let with_vec = s
        .ok(
            "search",
            json!({"index": "advice_history", "vector": [1, 0], "top_k": 1, "include_vector": true}),
        )
        .await;
    assert_eq!(with_vec["results"][0]["vector"], json!([1.0, 0.0]));
    assert_eq!(with_vec["results"][0]["metadata"]["goalType"], json!("save"));

    for (args, expected) in [
        (
            json!({"index": "advice_history", "vector": [1, 0], "top_k": 0}),
            "top_k: must be between 1 and 1000, got 0",
        ),
        (
            json!({"index": "advice_history", "vector": [1, 0], "top_k": 1001}),
            "top_k: must be between 1 and 1000, got 1001",
        ),
        (
            json!({"index": "advice_history", "vector": [1, 0, 0]}),
            "vector: the vector has 3 dimensions, the index has 2",
        ),
        (
            json!({"index": "advice_history", "vector": [0, 0]}),
            "vector: an all-zero vector has no direction",
        ),
        (
            json!({"index": "missing", "vector": [1, 0]}),
            "index \"missing\" does not exist",
        ),
        (
            json!({"index": "advice_history", "vector": [1, 0], "filter": {"outcome": {"$like": "h%"}}}),
            "$like",
        ),
        (
            json!({"index": "advice_history", "vector": [1, 0], "filter": "outcome = 'helpful'"}),
            "filter: must be a JSON object, got a string",
        ),
        (
            json!({"index": "advice_history", "vector": [1, 0], "filter": {"a;b": 1}}),
            "a;b",
        ),
    ] {
        let err = s.err("search", args.clone()).await;
        assert!(err.contains(expected), "{args}\n  got: {err}\n  want: {expected}");
    }
    s.stop().await;
}

#[tokio::test]
async fn update_merges_metadata_by_default_and_can_replace() {
    let db = temp_db();
    let s = start(&db.path).await;
    s.ok(
        "upsert",
        json!({"index": "advice_history", "create_index": {"dimension": 2}, "vectors": [
            {"id": "tip-1", "vector": [1, 0], "metadata": {"text": "Cook at home", "profileId": "u1"}}
        ]}),
    )
    .await;
    let r = s
        .ok(
            "update",
            json!({"index": "advice_history", "id": "tip-1", "metadata": {"outcome": "helpful"}}),
        )
        .await;
    assert_eq!(
        r,
        json!({"index": "advice_history", "id": "tip-1", "updated": true, "count": 1})
    );
    let f = s
        .ok("fetch", json!({"index": "advice_history", "ids": ["tip-1"]}))
        .await;
    assert_eq!(
        f["vectors"][0]["metadata"],
        json!({"text": "Cook at home", "profileId": "u1", "outcome": "helpful"})
    );

    s.ok("update", json!({"index": "advice_history", "id": "tip-1", "vector": [0, 2], "metadata": {"outcome": "neutral"}, "metadata_mode": "replace"}))
        .await;
    let f = s
        .ok("fetch", json!({"index": "advice_history", "ids": ["tip-1"]}))
        .await;
    assert_eq!(
        f["vectors"][0],
        json!({"id": "tip-1", "vector": [0.0, 2.0], "metadata": {"outcome": "neutral"}})
    );

    // `if_missing: "ignore"` (what StrideVector sends, as Mastra's stores do nothing):
    // nothing changes, nothing is created, and the answer says so.
    let r = s
        .ok(
            "update",
            json!({"index": "advice_history", "id": "nope", "metadata": {"a": 1}, "if_missing": "ignore"}),
        )
        .await;
    assert_eq!(
        r,
        json!({"index": "advice_history", "id": "nope", "updated": false, "count": 0})
    );
    let f = s
        .ok("fetch", json!({"index": "advice_history", "ids": ["nope"]}))
        .await;
    assert_eq!(f["vectors"], json!([]), "{f}");
    for (args, expected) in [
        (
            json!({"index": "advice_history", "id": "nope", "metadata": {"a": 1}}),
            "no vector with id \"nope\"",
        ),
        (
            json!({"index": "advice_history", "id": "nope", "metadata": {"a": 1}, "if_missing": "error"}),
            "no vector with id \"nope\"",
        ),
        (
            json!({"index": "no_such_index", "id": "nope", "metadata": {"a": 1}, "if_missing": "ignore"}),
            "index \"no_such_index\" does not exist",
        ),
        (
            json!({"index": "advice_history", "id": "tip-1", "metadata": {"a": 1}, "if_missing": "skip"}),
            "if_missing:",
        ),
        (
            json!({"index": "advice_history", "id": "tip-1"}),
            "update needs `vector`, `metadata`, or both",
        ),
        (
            json!({"index": "advice_history", "id": "tip-1", "vector": [1]}),
            "vector: the vector has 1 dimensions, the index has 2",
        ),
        (
            json!({"index": "advice_history", "id": "tip-1", "metadata": "helpful"}),
            "metadata: metadata must be a JSON object",
        ),
        (
            json!({"index": "advice_history", "id": "tip-1", "metadata": {}, "metadata_mode": "patch"}),
            "metadata_mode:",
        ),
        (
            json!({"index": "advice_history", "id": "", "metadata": {}}),
            "id: the id is empty",
        ),
        (
            json!({"index": "advice_history", "id": "tip-1", "filter": {"a": 1}, "metadata": {}}),
            "mutually exclusive",
        ),
        (
            json!({"index": "advice_history", "metadata": {}}),
            "give `id` or `filter`",
        ),
        (
            json!({"index": "advice_history", "filter": {}, "metadata": {"a": 1}}),
            "filter: an empty filter would match every row",
        ),
        (
            json!({"index": "advice_history", "filter": {"a": {"$bad": 1}}, "metadata": {"a": 1}}),
            "filter: unknown operator \"$bad\" on field \"a\"",
        ),
    ] {
        let err = s.err("update", args.clone()).await;
        assert!(err.contains(expected), "{args}\n  got: {err}\n  want: {expected}");
    }
    s.stop().await;
}

/// Mastra's bulk writes: `update` by filter changes every stored row it matches (and only
/// those), `upsert` with `delete_filter` replaces a source's rows in one transaction, and
/// `delete` refuses an empty filter. Also: an all-zero vector is stored (Mastra's stores
/// take it) but is never a cosine hit, and searching with one under cosine is refused.
#[tokio::test]
async fn bulk_updates_delete_filters_and_zero_vectors() {
    let db = temp_db();
    let s = start(&db.path).await;
    let rows: Vec<Value> = (0..6)
        .map(|i| {
            json!({"id": format!("c{i}"), "vector": [1, i], "metadata": {
                "source_id": if i < 3 { "a.pdf" } else { "b.pdf" }, "n": i}})
        })
        .collect();
    s.ok(
        "upsert",
        json!({"index": "docs", "create_index": {"dimension": 2}, "vectors": rows}),
    )
    .await;
    let r = s
        .ok(
            "update",
            json!({"index": "docs", "filter": {"source_id": "a.pdf", "n": {"$gte": 1}},
                   "metadata": {"source_id": "a.pdf", "status": "archived"}, "metadata_mode": "replace"}),
        )
        .await;
    assert_eq!(r, json!({"index": "docs", "updated": true, "count": 2}));
    let f = s
        .ok("fetch", json!({"index": "docs", "ids": ["c0", "c1", "c2", "c3"]}))
        .await;
    let metadata: Vec<&Value> = f["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| &v["metadata"])
        .collect();
    assert_eq!(
        metadata,
        [
            &json!({"source_id": "a.pdf", "n": 0}),
            &json!({"source_id": "a.pdf", "status": "archived"}),
            &json!({"source_id": "a.pdf", "status": "archived"}),
            &json!({"source_id": "b.pdf", "n": 3}),
        ]
    );
    // The in-memory copy saw the change too.
    for engine in engines() {
        let hits = s
            .ok(
                "search",
                json!({"index": "docs", "vector": [1, 1], "top_k": 10, "engine": engine,
                       "filter": {"status": "archived"}}),
            )
            .await;
        assert_eq!(hit_ids(&hits), ["c1", "c2"], "{engine}");
    }
    let r = s
        .ok(
            "update",
            json!({"index": "docs", "filter": {"source_id": "none.pdf"}, "metadata": {"x": 1}}),
        )
        .await;
    assert_eq!(r, json!({"index": "docs", "updated": false, "count": 0}));

    // Re-index a.pdf as two new chunks: its three old rows go, b.pdf stays.
    let r = s
        .ok(
            "upsert",
            json!({"index": "docs", "delete_filter": {"source_id": "a.pdf"}, "vectors": [
                {"id": "c1", "vector": [0, 1], "metadata": {"source_id": "a.pdf", "v": 2}},
                {"id": "new", "vector": [0, 1], "metadata": {"source_id": "a.pdf", "v": 2}}]}),
        )
        .await;
    assert_eq!(r["deleted"], 3);
    assert_eq!(r["ids"], json!(["c1", "new"]));
    let d = s.ok("describe_index", json!({"index": "docs"})).await;
    assert_eq!(d["count"], 5);
    for engine in engines() {
        let hits = s
            .ok(
                "search",
                json!({"index": "docs", "vector": [0, 1], "top_k": 10, "engine": engine,
                       "filter": {"source_id": "a.pdf"}}),
            )
            .await;
        let mut ids = hit_ids(&hits);
        ids.sort();
        assert_eq!(ids, ["c1", "new"], "{engine}");
    }
    // A delete_filter that is wrong refuses the whole call: nothing is written.
    let err = s
        .err(
            "upsert",
            json!({"index": "docs", "delete_filter": {"n": {"$gt": [1]}}, "vectors": [
                {"id": "never", "vector": [1, 0]}]}),
        )
        .await;
    assert!(err.contains("delete_filter: \"$gt\" on field \"n\""), "{err}");
    let err = s
        .err(
            "upsert",
            json!({"index": "docs", "delete_filter": {}, "vectors": [{"id": "never", "vector": [1, 0]}]}),
        )
        .await;
    assert!(err.contains("delete_filter: an empty filter"), "{err}");
    let err = s.err("delete", json!({"index": "docs", "filter": {}})).await;
    assert!(
        err.contains("filter: an empty filter would match every row"),
        "{err}"
    );
    let f = s.ok("fetch", json!({"index": "docs", "ids": ["never"]})).await;
    assert_eq!(f["missing"], json!(["never"]));

    // Zero vectors: stored, and scored -1 under cosine by both engines (DuckDB's
    // `1 - array_cosine_distance`, what Mastra reads too); a zero query is refused.
    s.ok(
        "upsert",
        json!({"index": "docs", "vectors": [{"id": "zero", "vector": [0, 0]}]}),
    )
    .await;
    let f = s.ok("fetch", json!({"index": "docs", "ids": ["zero"]})).await;
    assert_eq!(f["vectors"][0]["vector"], json!([0.0, 0.0]));
    for engine in engines() {
        let hits = s
            .ok(
                "search",
                json!({"index": "docs", "vector": [1, 1], "top_k": 100, "engine": engine}),
            )
            .await;
        let results = hits["results"].as_array().unwrap();
        assert_eq!(results.len(), 6, "{engine}: {hits}");
        assert_eq!(results[5]["id"], "zero", "{engine}");
        assert_eq!(results[5]["score"], -1.0, "{engine}");
    }
    let err = s.err("search", json!({"index": "docs", "vector": [0, 0]})).await;
    assert!(err.contains("all-zero vector has no direction"), "{err}");
    s.stop().await;
}

#[tokio::test]
async fn delete_by_ids_or_filter_but_not_both_or_neither() {
    let db = temp_db();
    let s = start(&db.path).await;
    let vectors: Vec<Value> = (0..10)
        .map(|i| json!({"id": format!("g{i}"), "vector": [1, i], "metadata": {"userId": format!("u{}", i % 3), "goalAmount": i * 100}}))
        .collect();
    s.ok(
        "upsert",
        json!({"index": "goals", "create_index": {"dimension": 2}, "vectors": vectors}),
    )
    .await;
    let r = s
        .ok(
            "delete",
            json!({"index": "goals", "ids": ["g0", "g1", "g1", "missing"]}),
        )
        .await;
    assert_eq!(r, json!({"index": "goals", "deleted": 2}));
    let r = s
        .ok(
            "delete",
            json!({"index": "goals", "filter": {"goalAmount": {"$gte": 700}}}),
        )
        .await;
    assert_eq!(r["deleted"], json!(3));
    let r = s
        .ok("delete", json!({"index": "goals", "filter": {"userId": "u2"}}))
        .await;
    assert_eq!(
        r["deleted"],
        json!(2),
        "g2 and g5 (g8 went with the amount filter)"
    );
    assert_eq!(
        s.ok("describe_index", json!({"index": "goals"})).await["count"],
        json!(3)
    );
    for (args, expected) in [
        (json!({"index": "goals"}), "give `ids` or `filter`"),
        (
            json!({"index": "goals", "ids": ["g2"], "filter": {"userId": "u1"}}),
            "not both",
        ),
        (
            json!({"index": "goals", "ids": ["g2", ""]}),
            "ids[1]: the id is empty",
        ),
        (
            json!({"index": "nope", "ids": ["g2"]}),
            "index \"nope\" does not exist",
        ),
    ] {
        let err = s.err("delete", args.clone()).await;
        assert!(err.contains(expected), "{args}\n  got: {err}\n  want: {expected}");
    }
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
