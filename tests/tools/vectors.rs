//! Row tools: upsert (refusals naming the row, creation on first use, duplicates), update
//! (merge, replace, by filter), delete (by ids or filter), `delete_filter`, zero vectors.

use serde_json::{json, Value};

use crate::common::*;

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
