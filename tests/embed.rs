//! The embedding pipeline through the real `embed` tool: debounce, dedup, max wait,
//! durability across kill -9, flush on shutdown, and remote failures. Embeddings come from
//! a stand-in Ollama that speaks Ollama's wire format and counts what it is asked.

mod common;

use std::time::{Duration, Instant};

use common::ollama::{vector_of, MockOllama, DIM};
use common::*;
use serde_json::{json, Value};

#[tokio::test]
async fn fifty_edits_in_the_window_cost_one_embedding_and_repeats_cost_none() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = start_with(command_with_ollama(
        &db.path,
        &mock.url,
        &["--debounce-ms", "400"],
    ))
    .await;
    for i in 0..50 {
        let r = s
            .ok("embed", json!({"index": "student_profiles", "documents": [{"id": "p1", "text": format!("profile v{i}"), "metadata": {"v": i}}]}))
            .await;
        let expected = if i == 0 { "queued" } else { "coalesced" };
        assert_eq!(statuses(&r), [expected], "call {i}");
    }
    let f = s.ok("flush", json!({})).await;
    assert_eq!(f, json!({"committed": 1, "pending": 0, "parked": 0}));
    assert_eq!(
        mock.texts(),
        ["profile v49"],
        "exactly one embedding, of the last text"
    );

    let row = s
        .ok("fetch", json!({"index": "student_profiles", "ids": ["p1"]}))
        .await;
    assert_eq!(row["vectors"][0]["vector"], json!(vector_of("profile v49")));
    assert_eq!(
        row["vectors"][0]["metadata"],
        json!({"v": 49, "text": "profile v49"}),
        "the metadata given, and the text kept in metadata.text"
    );

    for i in 0..100 {
        let r = s
            .ok("embed", json!({"index": "student_profiles", "documents": [{"id": "p1", "text": "profile v49", "metadata": {"v": 49, "seen": i}}]}))
            .await;
        assert_eq!(statuses(&r), ["unchanged"]);
    }
    s.ok("flush", json!({})).await;
    assert_eq!(mock.call_count(), 1, "unchanged texts cost no embedding");
    let row = s
        .ok("fetch", json!({"index": "student_profiles", "ids": ["p1"]}))
        .await;
    assert_eq!(
        row["vectors"][0]["metadata"],
        json!({"v": 49, "seen": 99, "text": "profile v49"}),
        "metadata of unchanged documents is written (the text kept with it)"
    );

    let stats = s.ok("stats", json!({})).await;
    assert_eq!(stats["documents_coalesced"], json!(49));
    assert_eq!(stats["embeddings_skipped_unchanged"], json!(100));
    assert_eq!(stats["embedding_calls"], json!(1));
    assert_eq!(stats["pending"], json!(0));
    assert_eq!(stats["model"], json!("mock-embed"));
    assert_eq!(stats["role"], json!(if on_postgres() { "peer" } else { "owner" }));
    let idx = &stats["indexes"][0];
    assert_eq!(
        (
            idx["index"].clone(),
            idx["dimension"].clone(),
            idx["model"].clone()
        ),
        (json!("student_profiles"), json!(DIM), json!("mock-embed"))
    );
    s.stop().await;
}

#[tokio::test]
async fn a_document_edited_faster_than_the_debounce_lands_at_the_max_wait() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    // Edits every 250 ms never let a 1 s debounce run out: only the 2 s maximum wait,
    // counted from the first edit, can land the document while it is being edited.
    let flags = ["--debounce-ms", "1000", "--max-wait-ms", "2000"];
    let s = start_with(command_with_ollama(&db.path, &mock.url, &flags)).await;
    let started = Instant::now();
    let mut edits = 0;
    // Edit until the provider is asked, then a few more times (so that the last edit is
    // not the one embedded then); the provider answers at once.
    let mut after_landing = 4;
    while after_landing > 0 {
        s.ok(
            "embed",
            json!({"index": "goals", "documents": [{"id": "g1", "text": format!("goal draft {edits}")}]}),
        )
        .await;
        edits += 1;
        assert!(edits < 80, "not embedded during {edits} edits 250 ms apart");
        if mock.first_call().is_some() {
            after_landing -= 1;
        }
        tokio::time::sleep_until((started + Duration::from_millis(250 * edits)).into()).await;
    }
    let landed = mock.first_call().unwrap() - started;
    assert!(
        landed >= Duration::from_millis(2000),
        "embedded after {landed:?}, before the maximum wait, while edits kept coming"
    );
    s.stop().await;
    let rows = rows_in_store(&db.path, "goals").await;
    assert_eq!(
        rows["g1"].0,
        vector_of(&format!("goal draft {}", edits - 1)),
        "the last edit is flushed at shutdown"
    );
}

#[tokio::test]
async fn wait_true_answers_indexed_and_query_search_finds_it() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = start_with(command_with_ollama(&db.path, &mock.url, &[])).await;
    let docs: Vec<Value> = (0..5)
        .map(|i| json!({"id": format!("tip-{i}"), "text": format!("advice number {i}"), "metadata": {"outcome": if i % 2 == 0 {"helpful"} else {"neutral"}}}))
        .collect();
    let r = s
        .ok(
            "embed",
            json!({"index": "advice_history", "documents": docs, "wait": true}),
        )
        .await;
    assert_eq!(statuses(&r), ["indexed"; 5]);
    assert_eq!(mock.call_count(), 1, "one batch");
    let hits = s
        .ok(
            "search",
            json!({"index": "advice_history", "query": "advice number 3", "top_k": 2, "mode": "vector"}),
        )
        .await;
    assert_eq!(hits["results"][0]["id"], json!("tip-3"));
    assert!((hits["results"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    // Without a mode, a text query is hybrid: its own words rank it first in both lists.
    let hits = s
        .ok(
            "search",
            json!({"index": "advice_history", "query": "advice number 3", "top_k": 2}),
        )
        .await;
    assert_eq!(hits["mode"], json!("hybrid"));
    assert_eq!(hits["results"][0]["id"], json!("tip-3"));
    assert_eq!(hits["results"][0]["found_by"]["vector"]["rank"], json!(1));
    // A text the keyword list cannot use (stop words only) is searched by vector, as before.
    let hits = s
        .ok(
            "search",
            json!({"index": "advice_history", "query": "the", "top_k": 1}),
        )
        .await;
    assert_eq!(hits["mode"], json!("vector"), "{hits}");
    // Where no keyword list can be served (here: DuckDB's scan asked for), a text query is
    // searched by vector rather than refused. (PostgreSQL serves both lists itself.)
    if !on_postgres() {
        let hits = s
        .ok(
            "search",
            json!({"index": "advice_history", "query": "advice number 3", "top_k": 1, "engine": "duckdb"}),
        )
        .await;
        assert_eq!(
            (&hits["mode"], &hits["engine"]),
            (&json!("vector"), &json!("duckdb")),
            "{hits}"
        );
    }
    let hits = s
        .ok(
            "search",
            json!({"index": "advice_history", "query": "advice number 3", "filter": {"outcome": "helpful"}}),
        )
        .await;
    assert!(hits["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|h| h["metadata"]["outcome"] == "helpful"));
    assert_eq!(
        mock.texts().last().map(String::as_str),
        Some("advice number 3"),
        "queries are embedded at once"
    );

    for (args, expected) in [
        (
            json!({"index": "advice_history", "vector": vec![1.0; DIM], "query": "x", "mode": "vector"}),
            "not both",
        ),
        (
            json!({"index": "advice_history"}),
            "give `vector` (numbers) or `query` (text)",
        ),
        (
            json!({"index": "advice_history", "query": " "}),
            "query: the text is empty",
        ),
    ] {
        let err = s.err("search", args.clone()).await;
        assert!(err.contains(expected), "{args}: {err}");
    }
    for (args, expected) in [
        (
            json!({"index": "advice_history", "documents": [{"id": "", "text": "x"}]}),
            "documents[0].id: the id is empty",
        ),
        (
            json!({"index": "advice_history", "documents": [{"id": "a", "text": ""}]}),
            "documents[0] (id \"a\").text: the text is empty",
        ),
        (
            json!({"index": "advice_history", "documents": [{"id": "a", "text": "x", "metadata": 3}]}),
            "documents[0] (id \"a\").metadata: metadata must be a JSON object",
        ),
        (
            json!({"index": "bad-name", "documents": []}),
            "invalid index name",
        ),
    ] {
        let err = s.err("embed", args.clone()).await;
        assert!(err.contains(expected), "{args}: {err}");
    }
    s.ok("create_index", json!({"index": "narrow", "dimension": 3}))
        .await;
    let err = s
        .err(
            "embed",
            json!({"index": "narrow", "documents": [{"id": "a", "text": "x"}], "wait": true}),
        )
        .await;
    assert!(err.contains("dimension"), "{err}");
    s.stop().await;
}

#[tokio::test]
async fn accepted_documents_survive_kill_9_and_are_resumed() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = start_with(command_with_ollama(
        &db.path,
        &mock.url,
        &["--debounce-ms", "60000", "--max-wait-ms", "60000"],
    ))
    .await;
    let docs: Vec<Value> = (0..20)
        .map(|i| json!({"id": format!("g{i}"), "text": format!("goal {i}")}))
        .collect();
    let r = s.ok("embed", json!({"index": "goals", "documents": docs})).await;
    assert_eq!(statuses(&r), ["queued"; 20]);
    assert_eq!(s.ok("stats", json!({})).await["pending"], json!(20));
    s.kill9().await;
    assert_eq!(mock.call_count(), 0, "nothing was embedded before the crash");

    let s = start_with(command_with_ollama(&db.path, &mock.url, &[])).await;
    if on_postgres() {
        // A shared queue keeps each version's due time (another process may still be
        // debouncing its id); a restart does not make them due, flush does.
        s.ok("flush", json!({"timeout_ms": 30_000})).await;
    }
    let stats = wait_for_stats(&s, 30, |st| st["pending"] == json!(0)).await;
    assert_eq!(stats["pending"], json!(0), "{stats}");
    let f = s
        .ok(
            "fetch",
            json!({"index": "goals", "ids": (0..20).map(|i| format!("g{i}")).collect::<Vec<_>>()}),
        )
        .await;
    assert_eq!(f["missing"], json!([]));
    assert_eq!(f["vectors"][7]["vector"], json!(vector_of("goal 7")));
    s.stop().await;
}

#[tokio::test]
async fn stdin_eof_sigterm_and_sigint_flush_what_is_pending() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let long = ["--debounce-ms", "60000", "--max-wait-ms", "60000"];
    let s = start_with(command_with_ollama(&db.path, &mock.url, &long)).await;
    s.ok(
        "embed",
        json!({"index": "goals", "documents": [{"id": "eof", "text": "flushed at eof"}]}),
    )
    .await;
    s.stop().await;
    assert_eq!(
        rows_in_store(&db.path, "goals").await["eof"].0,
        vector_of("flushed at eof")
    );

    for (name, signal) in [("sigterm", libc::SIGTERM), ("sigint", libc::SIGINT)] {
        let s = start_with(command_with_ollama(&db.path, &mock.url, &long)).await;
        let text = format!("flushed at {name}");
        s.ok(
            "embed",
            json!({"index": "goals", "documents": [{"id": name, "text": text}]}),
        )
        .await;
        let pid = s.child.id().expect("pid") as i32;
        // SAFETY: sending a signal to our own child process.
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
        let Server { client, mut child } = s;
        let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert!(status.success(), "exit 0 after {name}, got {status}");
        drop(client);
        assert_eq!(rows_in_store(&db.path, "goals").await[name].0, vector_of(&text));
    }
}

#[tokio::test]
async fn an_equal_text_sent_while_its_embedding_is_in_flight_joins_it() {
    let mock = MockOllama::start(false).await;
    mock.delay_ms.store(1500, std::sync::atomic::Ordering::SeqCst);
    let db = temp_db();
    let s = start_with(command_with_ollama(
        &db.path,
        &mock.url,
        &["--debounce-ms", "50", "--max-wait-ms", "60000"],
    ))
    .await;
    let doc = |v: u32| json!({"id": "g", "text": "save 300 euros for a laptop", "metadata": {"v": v}});
    s.ok("embed", json!({"index": "goals", "documents": [doc(1)]}))
        .await;
    mock.wait_until_asked("save 300 euros for a laptop", Duration::from_secs(30))
        .await;
    // The model holds its answer for 1.5 s: this version arrives while the first is in flight.
    let r = s
        .ok(
            "embed",
            json!({"index": "goals", "documents": [doc(2)], "wait": true}),
        )
        .await;
    assert_eq!(statuses(&r), ["indexed"], "{r}");
    assert_eq!(
        mock.texts(),
        ["save 300 euros for a laptop"],
        "one embedding for both versions"
    );
    let f = s.ok("fetch", json!({"index": "goals", "ids": ["g"]})).await;
    assert_eq!(
        f["vectors"][0]["metadata"],
        json!({"v": 2, "text": "save 300 euros for a laptop"}),
        "the newer version's metadata"
    );
    assert_eq!(s.ok("stats", json!({})).await["pending"], json!(0));
    s.stop().await;
    assert_eq!(mock.call_count(), 1);
}

#[tokio::test]
async fn a_failing_provider_keeps_documents_pending_with_the_error_visible() {
    let mock = MockOllama::start(false).await;
    mock.failing.store(true, std::sync::atomic::Ordering::SeqCst);
    let db = temp_db();
    let s = start_with(command_with_ollama(&db.path, &mock.url, &["--debounce-ms", "10"])).await;
    s.ok(
        "embed",
        json!({"index": "goals", "documents": [{"id": "g1", "text": "retry me"}]}),
    )
    .await;
    let stats = wait_for_stats(&s, 20, |st| st["last_error"].is_string()).await;
    assert!(stats["last_error"].as_str().unwrap().contains("503"), "{stats}");
    assert_eq!(stats["pending"], json!(1));
    mock.failing.store(false, std::sync::atomic::Ordering::SeqCst);
    let stats = wait_for_stats(&s, 30, |st| st["pending"] == json!(0)).await;
    assert_eq!(
        stats["pending"],
        json!(0),
        "retried after the provider recovered: {stats}"
    );
    s.stop().await;
    assert_eq!(
        rows_in_store(&db.path, "goals").await["g1"].0,
        vector_of("retry me")
    );
}

#[tokio::test]
async fn legacy_ollama_without_api_embed_still_works() {
    let mock = MockOllama::start(true).await;
    let db = temp_db();
    let s = start_with(command_with_ollama(&db.path, &mock.url, &[])).await;
    let r = s
        .ok("embed", json!({"index": "goals", "documents": [{"id": "a", "text": "one"}, {"id": "b", "text": "two"}], "wait": true}))
        .await;
    assert_eq!(statuses(&r), ["indexed", "indexed"]);
    assert_eq!(mock.texts(), ["one", "two"]);
    s.stop().await;
}

#[tokio::test]
async fn openai_compatible_servers_are_called_with_the_key_and_answers_reordered_by_index() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let mut cmd = command(&db.path);
    cmd.args([
        "--embedder",
        "openai",
        "--model",
        "text-embedding-3-small",
        "--openai-url",
        &mock.url,
    ])
    .args(["--api-key-env", "STRIDE_TEST_KEY"])
    .env("STRIDE_TEST_KEY", "sk-test-123");
    let s = start_with(cmd).await;
    let docs =
        json!([{"id": "a", "text": "first"}, {"id": "b", "text": "second"}, {"id": "c", "text": "third"}]);
    let r = s
        .ok(
            "embed",
            json!({"index": "goals", "documents": docs, "wait": true}),
        )
        .await;
    assert_eq!(statuses(&r), ["indexed"; 3]);
    assert_eq!(
        mock.last_auth.lock().unwrap().as_deref(),
        Some("Bearer sk-test-123")
    );
    let f = s
        .ok("fetch", json!({"index": "goals", "ids": ["a", "b", "c"]}))
        .await;
    for (i, text) in ["first", "second", "third"].iter().enumerate() {
        assert_eq!(f["vectors"][i]["vector"], json!(vector_of(text)), "{text}");
    }
    s.stop().await;
}
