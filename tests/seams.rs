//! Where the embedding pipeline meets every other write: for each id the last acknowledged
//! operation wins, whatever its kind (embed, upsert, update, delete by ids or by filter,
//! delete_index), even when an older text is still queued or being embedded. And where it
//! meets a provider that refuses: one poison document never holds back its batch, and a
//! provider's `Retry-After` is honoured. Embeddings come from the stand-in Ollama.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::ollama::{vector_of, MockOllama, DIM, POISON, WIDE, ZERO};
use common::*;
use serde_json::{json, Value};

async fn fetch_one(s: &Server, index: &str, id: &str) -> Option<Value> {
    let r = s.ok("fetch", json!({"index": index, "ids": [id]})).await;
    r["vectors"].as_array().unwrap().first().cloned()
}

/// A server whose debounce is short, so that "queued" versions land within a test.
async fn server(mock: &MockOllama, db: &TempDb) -> Server {
    start_with(command_with_ollama(
        &db.path,
        &mock.url,
        &["--debounce-ms", "300", "--max-wait-ms", "1000"],
    ))
    .await
}

#[tokio::test]
async fn a_delete_wins_over_a_newer_text_still_queued() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = server(&mock, &db).await;
    s.ok(
        "embed",
        json!({"index": "goals", "documents": [{"id": "a", "text": "first"}], "wait": true}),
    )
    .await;
    let r = s
        .ok(
            "embed",
            json!({"index": "goals", "documents": [{"id": "a", "text": "second", "metadata": {"v": 2}}]}),
        )
        .await;
    assert_eq!(statuses(&r), ["queued"]);
    let d = s.ok("delete", json!({"index": "goals", "ids": ["a"]})).await;
    assert_eq!(d["deleted"], json!(1));
    s.ok("flush", json!({})).await;
    assert_eq!(
        fetch_one(&s, "goals", "a").await,
        None,
        "the deleted row came back"
    );
    assert_eq!(s.ok("stats", json!({})).await["pending"], json!(0));
    s.stop().await;
    assert!(
        rows_in_store(&db.path, "goals").await.is_empty(),
        "and stays deleted after a restart"
    );
}

#[tokio::test]
async fn delete_index_drops_its_queue() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    // A model of known width creates the index when the first document is accepted.
    let s = start_with(command_with_ollama(
        &db.path,
        &mock.url,
        &["--debounce-ms", "300", "--dimension", "8"],
    ))
    .await;
    s.ok(
        "embed",
        json!({"index": "tmpidx", "documents": [{"id": "x", "text": "queued text"}]}),
    )
    .await;
    let d = s.ok("delete_index", json!({"index": "tmpidx"})).await;
    assert_eq!(d["deleted"], json!(true));
    s.ok("flush", json!({})).await;
    let list = s.ok("list_indexes", json!({})).await;
    assert_eq!(list["indexes"], json!([]), "a dropped index came back: {list}");
    assert!(mock.texts().is_empty(), "nothing of a dropped index is embedded");
    s.stop().await;
}

#[tokio::test]
async fn an_upsert_wins_over_an_older_text_still_queued() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = server(&mock, &db).await;
    let docs = |version: &str| {
        let docs: Vec<Value> = ["a", "b", "c"]
            .iter()
            .map(|id| json!({"id": id, "text": format!("{version} text of {id}")}))
            .collect();
        json!(docs)
    };
    s.ok(
        "embed",
        json!({"index": "goals", "documents": docs("old"), "wait": true}),
    )
    .await;
    s.ok("embed", json!({"index": "goals", "documents": docs("newer")}))
        .await;
    // One upsert of two of the three ids: both of their queued versions are superseded
    // (one statement for the batch), and the third id's is not.
    let raw = vec![0.25f32; DIM];
    let raw_b = vec![-0.5f32; DIM];
    s.ok(
        "upsert",
        json!({"index": "goals", "vectors": [
            {"id": "a", "vector": raw, "metadata": {"raw": true}},
            {"id": "b", "vector": raw_b, "metadata": {"raw": "b"}},
        ]}),
    )
    .await;
    s.ok("flush", json!({})).await;
    let row = fetch_one(&s, "goals", "a").await.expect("row");
    assert_eq!(row["vector"], json!(raw));
    assert_eq!(row["metadata"], json!({"raw": true}));
    let row = fetch_one(&s, "goals", "b").await.expect("row");
    assert_eq!(row["vector"], json!(raw_b));
    assert_eq!(row["metadata"], json!({"raw": "b"}));
    let row = fetch_one(&s, "goals", "c").await.expect("row");
    assert_eq!(row["vector"], json!(vector_of("newer text of c")));
    assert_eq!(s.ok("stats", json!({})).await["pending"], json!(0));
    s.stop().await;
}

/// The writer skips the tables of texts for an index it knows has none. What it knows after
/// a crash is read from the file: a text queued before the crash is still superseded by an
/// upsert after it, and never lands on top.
#[tokio::test]
async fn an_upsert_after_a_crash_wins_over_a_text_queued_before_it() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let slow = ["--debounce-ms", "60000", "--max-wait-ms", "60000"];
    let s = start_with(command_with_ollama(&db.path, &mock.url, &slow)).await;
    let r = s
        .ok(
            "embed",
            json!({"index": "goals", "documents": [{"id": "a", "text": "queued before the crash"}]}),
        )
        .await;
    assert_eq!(statuses(&r), ["queued"]);
    s.kill9().await;

    // A resumed version is due at once. The mock holds its answer, and the upsert comes
    // once the provider has the text: the version is in flight (and pending) then. (On
    // PostgreSQL the shared queue keeps the version's due time, 60 s away: it is waiting.)
    mock.delay_ms.store(3000, Ordering::SeqCst);
    let s = start_with(command_with_ollama(&db.path, &mock.url, &slow)).await;
    if !on_postgres() {
        mock.wait_until_asked("queued before the crash", Duration::from_secs(10))
            .await;
    }
    assert_eq!(s.ok("stats", json!({})).await["pending"], json!(1));
    let raw = vec![0.25f32; DIM];
    s.ok(
        "upsert",
        json!({"index": "goals", "create_index": {"dimension": DIM}, "vectors": [
            {"id": "a", "vector": raw, "metadata": {"raw": true}},
        ]}),
    )
    .await;
    assert_eq!(s.ok("stats", json!({})).await["pending"], json!(0));
    s.ok("flush", json!({})).await;
    let row = fetch_one(&s, "goals", "a").await.expect("row");
    assert_eq!(row["vector"], json!(raw));
    assert_eq!(row["metadata"], json!({"raw": true}));
    // The provider answers meanwhile, but its embedding is not stored: the upsert is the
    // last word, now and after a restart. (On PostgreSQL nothing was in flight.)
    if !on_postgres() {
        let stats = wait_for_stats(&s, 20, |st| st["embeddings_discarded_superseded"] == json!(1)).await;
        assert_eq!(stats["embeddings_discarded_superseded"], json!(1), "{stats}");
    }
    let row = fetch_one(&s, "goals", "a").await.expect("row");
    assert_eq!(row["vector"], json!(raw));
    s.stop().await;
    mock.delay_ms.store(0, Ordering::SeqCst);
    let s = start_with(command_with_ollama(&db.path, &mock.url, &slow)).await;
    let row = fetch_one(&s, "goals", "a").await.expect("row");
    assert_eq!(row["vector"], json!(raw));
    assert_eq!(s.ok("stats", json!({})).await["pending"], json!(0));
    s.stop().await;
}

/// A version superseded while the provider embeds it is dead at once: the upsert's answer
/// comes with nothing pending, and when the provider then refuses it (for good, or for now)
/// it is neither parked nor retried.
#[tokio::test]
async fn a_version_superseded_in_flight_is_neither_pending_nor_parked_nor_retried() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = server(&mock, &db).await;
    s.ok(
        "embed",
        json!({"index": "goals", "documents": [{"id": "a", "text": "stored"}], "wait": true}),
    )
    .await;
    mock.delay_ms.store(1500, Ordering::SeqCst);
    // Longer than the embedder waits inside one call: the pipeline gets the 429 back.
    mock.retry_after_secs.store(6, Ordering::SeqCst);
    // A zero vector is refused for good (parked); a 429 is refused for now (retried).
    for (round, throttled) in [(0, false), (1, true)] {
        let text = format!("draft {round} {ZERO}");
        if throttled {
            mock.throttle.store(1, Ordering::SeqCst);
        }
        s.ok(
            "embed",
            json!({"index": "goals", "documents": [{"id": "a", "text": text}]}),
        )
        .await;
        mock.wait_until_asked(&text, Duration::from_secs(5)).await;
        let raw = vec![0.25f32 + round as f32; DIM];
        s.ok(
            "upsert",
            json!({"index": "goals", "vectors": [{"id": "a", "vector": raw}]}),
        )
        .await;
        let stats = s.ok("stats", json!({})).await;
        assert_eq!(stats["pending"], json!(0), "round {round}: {stats}");
        // The provider answers and the server takes the answer in (its error is the last
        // one): a retry would be pending now, due 6 s later; a parked version counted.
        let refusal = if throttled { "HTTP 429" } else { "zero vector" };
        let answered = |st: &Value| st["last_error"].as_str().is_some_and(|e| e.contains(refusal));
        let stats = wait_for_stats(&s, 20, answered).await;
        assert!(answered(&stats), "round {round}: {stats}");
        assert_eq!(stats["pending"], json!(0), "round {round}: {stats}");
        assert_eq!(stats["parked_count"], json!(0), "round {round}: {stats}");
        assert_eq!(
            mock.times_asked(&text),
            1,
            "round {round}: a superseded version was sent again"
        );
        assert_eq!(
            fetch_one(&s, "goals", "a").await.expect("row")["vector"],
            json!(raw)
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn a_revert_to_the_stored_text_wins_over_the_embedding_in_flight() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = server(&mock, &db).await;
    s.ok("embed", json!({"index": "goals", "documents": [{"id": "a", "text": "stored", "metadata": {"v": 1}}], "wait": true}))
        .await;
    mock.delay_ms.store(1500, Ordering::SeqCst);
    s.ok(
        "embed",
        json!({"index": "goals", "documents": [{"id": "a", "text": "draft", "metadata": {"v": 2}}]}),
    )
    .await;
    // Wait until the draft is being embedded (the mock holds its answer), then revert.
    mock.wait_until_asked("draft", Duration::from_secs(5)).await;
    let r = s
        .ok(
            "embed",
            json!({"index": "goals", "documents": [{"id": "a", "text": "stored", "metadata": {"v": 3}}]}),
        )
        .await;
    assert_eq!(statuses(&r), ["unchanged"]);
    // The draft's embedding comes back after the revert, and is refused.
    let stats = wait_for_stats(&s, 20, |st| st["embeddings_discarded_superseded"] == json!(1)).await;
    assert_eq!(stats["embeddings_discarded_superseded"], json!(1), "{stats}");
    s.ok("flush", json!({})).await;
    let row = fetch_one(&s, "goals", "a").await.expect("row");
    assert_eq!(
        row["vector"],
        json!(vector_of("stored")),
        "the draft's late embedding overwrote the revert"
    );
    assert_eq!(row["metadata"], json!({"v": 3, "text": "stored"}));
    s.stop().await;
}

#[tokio::test]
async fn an_update_reaches_the_version_still_queued() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = server(&mock, &db).await;
    s.ok("embed", json!({"index": "advice_history", "documents": [{"id": "a", "text": "one", "metadata": {"x": 1, "outcome": "pending"}}], "wait": true}))
        .await;
    s.ok("embed", json!({"index": "advice_history", "documents": [{"id": "a", "text": "two", "metadata": {"x": 2, "outcome": "pending"}}]}))
        .await;
    s.ok(
        "update",
        json!({"index": "advice_history", "id": "a", "metadata": {"outcome": "helpful"}}),
    )
    .await;
    s.ok("flush", json!({})).await;
    let row = fetch_one(&s, "advice_history", "a").await.expect("row");
    assert_eq!(row["vector"], json!(vector_of("two")));
    assert_eq!(
        row["metadata"],
        json!({"x": 2, "outcome": "helpful", "text": "two"}),
        "the queued version brought old metadata back"
    );

    // Replace mode, and an update with a vector, which supersedes the queued text.
    s.ok(
        "embed",
        json!({"index": "advice_history", "documents": [{"id": "a", "text": "three", "metadata": {"x": 3}}]}),
    )
    .await;
    s.ok(
        "update",
        json!({"index": "advice_history", "id": "a", "metadata": {"only": true}, "metadata_mode": "replace"}),
    )
    .await;
    s.ok("flush", json!({})).await;
    let row = fetch_one(&s, "advice_history", "a").await.expect("row");
    assert_eq!(
        (row["vector"].clone(), row["metadata"].clone()),
        (json!(vector_of("three")), json!({"only": true}))
    );
    s.ok(
        "embed",
        json!({"index": "advice_history", "documents": [{"id": "a", "text": "four"}]}),
    )
    .await;
    let v = vec![0.5f32; DIM];
    s.ok(
        "update",
        json!({"index": "advice_history", "id": "a", "vector": v}),
    )
    .await;
    s.ok("flush", json!({})).await;
    let row = fetch_one(&s, "advice_history", "a").await.expect("row");
    assert_eq!(row["vector"], json!(v));
    assert!(
        !mock.texts().iter().any(|t| t == "four"),
        "a superseded text is not embedded"
    );
    s.stop().await;
}

#[tokio::test]
async fn a_delete_by_filter_also_matches_the_version_still_queued() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = server(&mock, &db).await;
    s.ok(
        "embed",
        json!({"index": "goals", "documents": [
        {"id": "a", "text": "a1", "metadata": {"group": "keep"}},
        {"id": "b", "text": "b1", "metadata": {"group": "drop"}},
        {"id": "c", "text": "c1", "metadata": {"group": "keep"}},
    ], "wait": true}),
    )
    .await;
    // a's newer version is in the dropped group; b's newer version leaves it.
    s.ok(
        "embed",
        json!({"index": "goals", "documents": [
            {"id": "a", "text": "a2", "metadata": {"group": "drop"}},
            {"id": "b", "text": "b2", "metadata": {"group": "keep"}},
        ]}),
    )
    .await;
    let d = s
        .ok("delete", json!({"index": "goals", "filter": {"group": "drop"}}))
        .await;
    assert_eq!(
        d["deleted"],
        json!(2),
        "a (queued version matches) and b (stored row matches)"
    );
    s.ok("flush", json!({})).await;
    let rows = s
        .ok("fetch", json!({"index": "goals", "ids": ["a", "b", "c"]}))
        .await;
    assert_eq!(rows["missing"], json!(["a", "b"]));
    s.stop().await;
}

#[tokio::test]
async fn one_poison_document_is_parked_and_its_batch_is_stored() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = server(&mock, &db).await;
    let docs: Vec<Value> = (0..6)
        .map(|i| {
            let text = match i {
                2 => format!("profile {POISON}"),
                4 => format!("profile {ZERO}"),
                5 => format!("profile {WIDE}"),
                _ => format!("profile {i}"),
            };
            json!({"id": format!("p{i}"), "text": text})
        })
        .collect();
    let r = s
        .ok(
            "embed",
            json!({"index": "student_profiles", "documents": docs, "wait": true}),
        )
        .await;
    assert_eq!(
        statuses(&r),
        ["indexed", "indexed", "queued", "indexed", "queued", "queued"]
    );
    let errors: Vec<String> = r["documents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["error"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(errors[2].contains("HTTP 400"), "{errors:?}");
    assert!(errors[4].contains("zero vector"), "{errors:?}");
    assert!(errors[5].contains("9 dimensions"), "{errors:?}");
    let stored = s
        .ok(
            "fetch",
            json!({"index": "student_profiles", "ids": ["p0", "p1", "p2", "p3", "p4", "p5"]}),
        )
        .await;
    assert_eq!(stored["missing"], json!(["p2", "p4", "p5"]));

    let stats = s.ok("stats", json!({})).await;
    let parked: Vec<&str> = stats["parked"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["id"].as_str().unwrap())
        .collect();
    assert_eq!(parked, ["p2", "p4", "p5"]);
    assert_eq!(stats["parked_count"], json!(3));
    assert_eq!(
        stats["pending"],
        json!(0),
        "parked documents are not counted as pending work"
    );

    // Not retried on its own, nor when the same text is sent again.
    let calls = mock.call_count() + mock.refused.lock().unwrap().len();
    s.ok("embed", json!({"index": "student_profiles", "documents": [{"id": "p2", "text": format!("profile {POISON}")}]}))
        .await;
    // Nothing was scheduled for it: nothing pending, still parked.
    let stats = s.ok("stats", json!({})).await;
    assert_eq!(
        (stats["pending"].clone(), stats["parked_count"].clone()),
        (json!(0), json!(3)),
        "{stats}"
    );
    assert_eq!(
        mock.call_count() + mock.refused.lock().unwrap().len(),
        calls,
        "a parked text is not retried"
    );

    // flush asks again (and it fails again); a changed text is embedded.
    let f = s.ok("flush", json!({})).await;
    assert_eq!(f["parked"], json!(3));
    assert!(
        mock.call_count() + mock.refused.lock().unwrap().len() > calls,
        "flush retries parked documents"
    );
    let r = s
        .ok("embed", json!({"index": "student_profiles", "documents": [{"id": "p2", "text": "profile fixed"}], "wait": true}))
        .await;
    assert_eq!(statuses(&r), ["indexed"]);
    let stats = s.ok("stats", json!({})).await;
    assert_eq!(stats["parked_count"], json!(2));
    s.stop().await;
}

#[tokio::test]
async fn a_provider_retry_after_is_honoured() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = server(&mock, &db).await;
    // More refusals than one call retries inline, with a delay longer than it waits inline.
    mock.retry_after_secs.store(6, Ordering::SeqCst);
    mock.throttle.store(1, Ordering::SeqCst);
    let started = Instant::now();
    let r = s
        .ok(
            "embed",
            json!({"index": "goals", "documents": [{"id": "g", "text": "slow provider"}], "wait": true}),
        )
        .await;
    assert_eq!(statuses(&r), ["queued"]);
    assert!(
        r["documents"][0]["error"]
            .as_str()
            .unwrap()
            .contains("will retry in 6 s"),
        "{r}"
    );
    let stats = wait_for_stats(&s, 20, |st| st["pending"] == json!(0)).await;
    assert_eq!(stats["pending"], json!(0), "{stats}");
    let landed = started.elapsed();
    assert!(
        landed >= Duration::from_secs(6),
        "retried after {landed:?}, before the provider's Retry-After"
    );
    assert_eq!(
        fetch_one(&s, "goals", "g").await.unwrap()["vector"],
        json!(vector_of("slow provider"))
    );
    s.stop().await;
}

#[tokio::test]
async fn every_write_kind_on_one_id_in_a_random_order_ends_as_the_last_one_says() {
    // A small seeded model check inside one process; the multi-process one lives in
    // tests/e2e/model.test.mjs.
    use rand::{Rng, SeedableRng};
    let seed: u64 = std::env::var("SEAMS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20261123);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = start_with(command_with_ollama(
        &db.path,
        &mock.url,
        &["--debounce-ms", "40", "--max-wait-ms", "200"],
    ))
    .await;
    s.ok("create_index", json!({"index": "goals", "dimension": DIM}))
        .await;
    // Expected final row per id: (vector, metadata) or absent.
    let mut model: std::collections::BTreeMap<String, Option<(Vec<f32>, Value)>> = Default::default();
    let mut log = Vec::new();
    for step in 0..150 {
        let id = format!("k{}", rng.random_range(0..3));
        let op = rng.random_range(0..5);
        let tag = rng.random_range(0..4);
        match op {
            0 | 1 => {
                let text = format!("text {tag}");
                s.ok("embed", json!({"index": "goals", "documents": [{"id": id, "text": text, "metadata": {"t": tag}}]}))
                    .await;
                // The index keeps the text in metadata.text.
                model.insert(
                    id.clone(),
                    Some((vector_of(&text), json!({"t": tag, "text": text}))),
                );
            }
            2 => {
                let v = vec![tag as f32 + 1.0; DIM];
                s.ok(
                    "upsert",
                    json!({"index": "goals", "vectors": [{"id": id, "vector": v, "metadata": {"u": tag}}]}),
                )
                .await;
                model.insert(id.clone(), Some((v, json!({"u": tag}))));
            }
            3 => {
                s.ok("delete", json!({"index": "goals", "ids": [id]})).await;
                model.insert(id.clone(), None);
            }
            _ => {
                // Merged into what the id will hold, its queued version included. An id
                // with no stored row refuses an update (whatever is queued for it).
                let r = s
                    .call(
                        "update",
                        json!({"index": "goals", "id": id, "metadata": {"m": tag}}),
                    )
                    .await;
                if r.is_error != Some(true) {
                    match model.get_mut(&id) {
                        Some(Some((_, meta))) => meta["m"] = json!(tag),
                        _ => panic!("seed {seed} step {step}: update of deleted id {id} accepted"),
                    }
                }
            }
        }
        log.push(format!("{step}: op {op} {id} tag {tag}"));
        if rng.random_bool(0.2) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..120))).await;
        }
    }
    s.ok("flush", json!({})).await;
    for (id, expected) in &model {
        let got = fetch_one(&s, "goals", id).await.map(|r| {
            let v: Vec<f32> = serde_json::from_value(r["vector"].clone()).unwrap();
            (v, r["metadata"].clone())
        });
        assert_eq!(
            &got,
            expected,
            "seed {seed}: id {id}; last steps:\n{}",
            log[log.len().saturating_sub(20)..].join("\n")
        );
    }
    s.stop().await;
}
