//! Correctness of writes at scale: exact search over 1,000 vectors, 16 concurrent clients on
//! shared ids, and durability across `kill -9`.

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn thousand_vectors_round_trip_with_exact_nearest_neighbours() {
    let db = temp_db();
    let s = start(&db.path).await;
    let dim = 384;
    let data = random_vectors(7, 1000, dim);
    for (chunk_no, chunk) in data.chunks(250).enumerate() {
        let vectors: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": format!("doc-{:04}", chunk_no * 250 + i), "vector": v, "metadata": {"n": chunk_no * 250 + i}}))
            .collect();
        let r = s
            .ok(
                "upsert",
                json!({"index": "student_profiles", "create_index": {"dimension": dim}, "vectors": vectors}),
            )
            .await;
        assert_eq!(r["upserted"], json!(250));
    }
    assert_eq!(
        s.ok("describe_index", json!({"index": "student_profiles"})).await["count"],
        json!(1000)
    );

    for (qi, query) in random_vectors(99, 5, dim).iter().enumerate() {
        let mut expected: Vec<(f64, String)> = data
            .iter()
            .enumerate()
            .map(|(i, v)| (cosine(query, v), format!("doc-{i:04}")))
            .collect();
        expected.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let r = s
            .ok(
                "search",
                json!({"index": "student_profiles", "vector": query, "top_k": 20}),
            )
            .await;
        let hits = r["results"].as_array().unwrap();
        let got: Vec<&str> = hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
        let want: Vec<&str> = expected.iter().take(20).map(|e| e.1.as_str()).collect();
        assert_eq!(got, want, "query {qi}");
        for (hit, (score, _)) in hits.iter().zip(&expected) {
            assert!((hit["score"].as_f64().unwrap() - score).abs() < 1e-5);
        }
    }
    s.stop().await;
}

/// One acknowledged write: which id got which value, and when the call started and ended.
struct Ack {
    id: String,
    value: f32,
    invoked: Instant,
    acked: Instant,
}

#[tokio::test]
async fn sixteen_concurrent_clients_on_shared_ids_lose_nothing() {
    let db = temp_db();
    let s = Arc::new(start(&db.path).await);
    s.ok("create_index", json!({"index": "goals", "dimension": 4}))
        .await;

    let mut tasks = Vec::new();
    for task in 0..16u32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..200u32 {
                // Half the writes hit 8 ids every task shares; the rest are the task's own.
                let id = if i % 2 == 0 { format!("shared-{}", i % 16 / 2) } else { format!("t{task}-{i}") };
                let value = (task * 1000 + i + 1) as f32;
                let invoked = Instant::now();
                s.ok("upsert", json!({"index": "goals", "vectors": [{"id": id, "vector": [value, 1, 2, 3], "metadata": {"task": task, "i": i}}]}))
                    .await;
                acks.push(Ack { id, value, invoked, acked: Instant::now() });
                if i % 10 == 0 {
                    let r = s.ok("search", json!({"index": "goals", "vector": [1, 1, 2, 3], "top_k": 5})).await;
                    assert!(!r["results"].as_array().unwrap().is_empty());
                }
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.expect("client task"));
    }
    let s = Arc::into_inner(s).expect("all tasks done");
    s.stop().await;

    let rows = rows_in_store(&db.path, "goals").await;
    let distinct: std::collections::BTreeSet<&str> = acks.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(rows.len(), distinct.len(), "one row per acknowledged id");
    for id in distinct {
        let (vector, _) = &rows[id];
        let writes: Vec<&Ack> = acks.iter().filter(|a| a.id == id).collect();
        let winner = writes
            .iter()
            .find(|a| a.value == vector[0])
            .unwrap_or_else(|| panic!("{id}: stored value {} was never acknowledged", vector[0]));
        // Linearizability of a register: no write to this id may have started after the
        // stored one was acknowledged (it would have to be the stored one instead).
        for w in &writes {
            assert!(
                w.invoked <= winner.acked || std::ptr::eq(*w, *winner),
                "{id}: write {} began after the stored write {} was acknowledged",
                w.value,
                winner.value
            );
        }
    }
}

#[tokio::test]
async fn acknowledged_rows_survive_kill_9() {
    let db = temp_db();
    let s = start(&db.path).await;
    let data = random_vectors(3, 300, 16);
    let mut acked = Vec::new();
    for (i, v) in data.iter().enumerate() {
        let id = format!("p{i}");
        s.ok("upsert", json!({"index": "student_profiles", "create_index": {"dimension": 16}, "vectors": [{"id": id, "vector": v, "metadata": {"i": i}}]}))
            .await;
        acked.push((id, v.clone()));
    }
    s.ok(
        "update",
        json!({"index": "student_profiles", "id": "p0", "metadata": {"outcome": "helpful"}}),
    )
    .await;
    s.kill9().await;

    let s = start(&db.path).await;
    assert_eq!(
        s.ok("describe_index", json!({"index": "student_profiles"})).await["count"],
        json!(300)
    );
    let ids: Vec<&str> = acked.iter().map(|(id, _)| id.as_str()).collect();
    for chunk in ids.chunks(100) {
        let f = s
            .ok("fetch", json!({"index": "student_profiles", "ids": chunk}))
            .await;
        assert_eq!(f["missing"], json!([]));
        for row in f["vectors"].as_array().unwrap() {
            let i: usize = row["id"].as_str().unwrap()[1..].parse().unwrap();
            let v: Vec<f32> = serde_json::from_value(row["vector"].clone()).unwrap();
            assert_eq!(v, acked[i].1, "vector of p{i}");
        }
    }
    let f = s
        .ok("fetch", json!({"index": "student_profiles", "ids": ["p0"]}))
        .await;
    assert_eq!(f["vectors"][0]["metadata"], json!({"i": 0, "outcome": "helpful"}));
    s.stop().await;
}
