//! Search: scores as Mastra computes them for each metric, ties, filters, `min_score`,
//! `include_vector`, and the refusals of bad options.

use serde_json::{json, Value};

use crate::common::*;
use crate::ids_of;

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
