//! Text: rows keep their text (`metadata.text`, or the index's `text_field`), keyword and
//! hybrid search over it (on both back-ends: exact BM25 in memory, PostgreSQL's full-text
//! search there), hits that say which list found them, every write kind reaching the
//! keyword index, and the refusals of bad text input.

use serde_json::{json, Value};

use crate::common::*;
use crate::ids_of;

/// Look-alike product codes, one note among them holding "XK-42b" (the example).
fn notes() -> Vec<Value> {
    let codes = [
        "XK-42a", "XK-24b", "XK-43b", "XL-42b", "XK-420", "KX-42b", "XK-4b2", "XK-42",
    ];
    let mut rows: Vec<Value> = codes
        .iter()
        .enumerate()
        .map(|(i, code)| {
            json!({"id": format!("n{i}"), "vector": [1.0, i as f32 * 0.1, 0.0],
                   "metadata": {"text": format!("order {code} shipped to the warehouse"), "kind": "order"}})
        })
        .collect();
    rows.push(json!({"id": "target", "vector": [0.0, 0.0, 1.0],
                     "metadata": {"text": "the XK-42b part is on back order", "kind": "part"}}));
    rows.push(json!({"id": "other", "vector": [0.0, 1.0, 0.0],
                     "metadata": {"text": "a note about SQL jobs in Lyon", "kind": "job"}}));
    rows.push(json!({"id": "no_text", "vector": [1.0, 1.0, 1.0], "metadata": {"kind": "order"}}));
    rows
}

async fn with_notes(s: &Server) {
    s.ok(
        "upsert",
        json!({"index": "notes", "create_index": {"dimension": 3}, "vectors": notes()}),
    )
    .await;
}

#[tokio::test]
async fn keyword_search_finds_the_exact_code_and_says_which_list_found_it() {
    let db = temp_db();
    let s = start(&db.path).await;
    with_notes(&s).await;
    let r = s
        .ok(
            "search",
            json!({"index": "notes", "query": "XK-42b", "mode": "keyword", "top_k": 3}),
        )
        .await;
    assert_eq!(r["mode"], json!("keyword"));
    assert_eq!(r["results"][0]["id"], json!("target"), "{r}");
    let first = &r["results"][0];
    assert_eq!(first["found_by"]["keyword"]["rank"], json!(1));
    assert_eq!(first["found_by"]["keyword"]["score"], first["score"]);
    assert!(first["found_by"].get("vector").is_none(), "{first}");
    assert_eq!(
        first["metadata"]["text"],
        json!("the XK-42b part is on back order"),
        "the hit carries its text"
    );

    // A row whose text has no query word is not a keyword hit; a row with no text never is.
    let r = s
        .ok(
            "search",
            json!({"index": "notes", "query": "SQL jobs", "mode": "keyword", "top_k": 20}),
        )
        .await;
    assert_eq!(ids_of(&r), ["other"], "{r}");

    // Hybrid: both lists under the same filter; each hit says where each list put it.
    let r = s
        .ok(
            "search",
            json!({"index": "notes", "query": "XK-42b", "vector": [0.0, 0.0, 1.0], "mode": "hybrid", "top_k": 3}),
        )
        .await;
    assert_eq!(r["results"][0]["id"], json!("target"), "{r}");
    let found = &r["results"][0]["found_by"];
    assert_eq!(found["vector"]["rank"], json!(1), "{r}");
    assert_eq!(found["keyword"]["rank"], json!(1), "{r}");
    let rrf = 2.0 / 61.0;
    assert!(
        (r["results"][0]["score"].as_f64().unwrap() - rrf).abs() < 1e-9,
        "{r}"
    );
    let weighted = s
        .ok(
            "search",
            json!({"index": "notes", "query": "XK-42b", "vector": [0.0, 0.0, 1.0], "mode": "hybrid",
                   "fusion": {"method": "weighted", "vector_weight": 0.5}, "top_k": 1}),
        )
        .await;
    assert!(
        (weighted["results"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-9,
        "first in both lists scores 1 under weighted fusion: {weighted}"
    );

    // Without a mode, a text query is hybrid (the index keeps text) and a vector is vector.
    let r = s
        .ok(
            "search",
            json!({"index": "notes", "query": "XK-42b", "vector": [0.0, 0.0, 1.0]}),
        )
        .await;
    assert_eq!(r["mode"], json!("hybrid"), "{r}");
    let r = s
        .ok(
            "search",
            json!({"index": "notes", "query": "the of", "vector": [0.0, 0.0, 1.0]}),
        )
        .await;
    assert_eq!(r["mode"], json!("hybrid"), "{r}");
    assert!(
        r["results"][0]["found_by"].get("keyword").is_none(),
        "stop words only: {r}"
    );

    // The vector mode answers as it always did: no `found_by`.
    let r = s
        .ok(
            "search",
            json!({"index": "notes", "vector": [0.0, 0.0, 1.0], "top_k": 1}),
        )
        .await;
    assert_eq!(r["mode"], json!("vector"));
    assert!(r["results"][0].get("found_by").is_none(), "{r}");
    s.stop().await;
}

#[tokio::test]
async fn filters_and_min_score_narrow_keyword_hits_the_same_way() {
    let db = temp_db();
    let s = start(&db.path).await;
    with_notes(&s).await;
    let r = s
        .ok(
            "search",
            json!({"index": "notes", "query": "order", "mode": "keyword", "top_k": 20,
                   "filter": {"kind": "part"}}),
        )
        .await;
    assert_eq!(ids_of(&r), ["target"], "{r}");
    let all = s
        .ok(
            "search",
            json!({"index": "notes", "query": "XK-42b order", "mode": "keyword", "top_k": 20}),
        )
        .await;
    let scores: Vec<f64> = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["score"].as_f64().unwrap())
        .collect();
    assert!(scores.len() > 2, "{all}");
    let cut = (scores[0] + scores[1]) / 2.0;
    let r = s
        .ok(
            "search",
            json!({"index": "notes", "query": "XK-42b order", "mode": "keyword", "top_k": 20, "min_score": cut}),
        )
        .await;
    assert_eq!(ids_of(&r), [all["results"][0]["id"].as_str().unwrap()], "{r}");
    s.stop().await;
}

#[tokio::test]
async fn every_write_kind_reaches_the_keyword_index() {
    let db = temp_db();
    let s = start(&db.path).await;
    with_notes(&s).await;
    let keyword = |q: &str| json!({"index": "notes", "query": q, "mode": "keyword", "top_k": 20});
    // Upsert replaces the text.
    s.ok(
        "upsert",
        json!({"index": "notes", "vectors": [{"id": "other", "vector": [0.0, 1.0, 0.0], "metadata": {"text": "barista shifts in Paris"}}]}),
    )
    .await;
    assert!(ids_of(&s.ok("search", keyword("SQL")).await).is_empty());
    assert_eq!(ids_of(&s.ok("search", keyword("barista")).await), ["other"]);
    // Update merging a new text; then replacing the metadata without one.
    s.ok(
        "update",
        json!({"index": "notes", "id": "other", "metadata": {"text": "deliveroo rider"}}),
    )
    .await;
    assert!(ids_of(&s.ok("search", keyword("barista")).await).is_empty());
    assert_eq!(ids_of(&s.ok("search", keyword("Deliveroo")).await), ["other"]);
    s.ok(
        "update",
        json!({"index": "notes", "id": "other", "metadata": {"kind": "job"}, "metadata_mode": "replace"}),
    )
    .await;
    assert!(ids_of(&s.ok("search", keyword("deliveroo")).await).is_empty());
    // Update by filter, then delete by id and by filter.
    s.ok(
        "update",
        json!({"index": "notes", "filter": {"kind": "job"}, "metadata": {"text": "L3 student job"}}),
    )
    .await;
    assert_eq!(ids_of(&s.ok("search", keyword("l3")).await), ["other"]);
    s.ok("delete", json!({"index": "notes", "ids": ["target"]})).await;
    assert!(!ids_of(&s.ok("search", keyword("XK-42b")).await).contains(&"target".to_string()));
    s.ok("delete", json!({"index": "notes", "filter": {"kind": "job"}}))
        .await;
    assert!(ids_of(&s.ok("search", keyword("l3")).await).is_empty());
    s.stop().await;

    // After a restart the keyword index is rebuilt from the file.
    let s = start(&db.path).await;
    let r = s.ok("search", keyword("warehouse")).await;
    assert_eq!(ids_of(&r).len(), 8, "{r}");
    s.stop().await;
}

#[tokio::test]
async fn embed_keeps_the_text_where_the_index_says() {
    let db = temp_db();
    let s = start(&db.path).await;
    s.ok(
        "create_index",
        json!({"index": "advice", "dimension": 384, "text_field": "body", "language": "french"}),
    )
    .await;
    let described = s.ok("describe_index", json!({"index": "advice"})).await;
    assert_eq!(described["text_field"], json!("body"));
    assert_eq!(described["language"], json!("french"));
    // Repeating create_index without the text settings (as Mastra's createIndex does on
    // every start) is a no-op that reports what the index has.
    let again = s
        .ok("create_index", json!({"index": "advice", "dimension": 384}))
        .await;
    assert_eq!(again["created"], json!(false));
    assert_eq!(again["text_field"], json!("body"), "{again}");
    assert_eq!(again["language"], json!("french"), "{again}");
    s.ok(
        "embed",
        json!({"index": "advice", "wait": true, "documents": [
            {"id": "a", "text": "Les étudiantes cherchent un emploi à Lyon", "metadata": {"lang": "fr"}}]}),
    )
    .await;
    let f = s.ok("fetch", json!({"index": "advice", "ids": ["a"]})).await;
    assert_eq!(
        f["vectors"][0]["metadata"],
        json!({"lang": "fr", "body": "Les étudiantes cherchent un emploi à Lyon"})
    );
    // French analysis: another form of the word finds it.
    let r = s
        .ok(
            "search",
            json!({"index": "advice", "query": "étudiante", "mode": "keyword"}),
        )
        .await;
    assert_eq!(ids_of(&r), ["a"], "{r}");
    if !on_postgres() {
        // And accents aside (PostgreSQL's configurations keep accents: see the README).
        let r = s
            .ok(
                "search",
                json!({"index": "advice", "query": "etudiantes emplois", "mode": "keyword"}),
            )
            .await;
        assert_eq!(ids_of(&r), ["a"], "{r}");
    }
    let r = s
        .ok(
            "search",
            json!({"index": "advice", "query": "emploi Lyon", "mode": "hybrid"}),
        )
        .await;
    assert_eq!(r["results"][0]["id"], json!("a"), "{r}");
    // Metadata that already holds another text in the text field is refused, by name.
    let err = s
        .err(
            "embed",
            json!({"index": "advice", "documents": [{"id": "b", "text": "x y", "metadata": {"body": "z"}}]}),
        )
        .await;
    assert!(err.contains("documents[0] (id \"b\").metadata.body"), "{err}");

    // An index that keeps no text: embed keeps none, keyword search is refused by name.
    s.ok(
        "create_index",
        json!({"index": "bare", "dimension": 384, "text_field": null}),
    )
    .await;
    let again = s
        .ok("create_index", json!({"index": "bare", "dimension": 384}))
        .await;
    assert_eq!(again["text_field"], Value::Null, "{again}");
    s.ok(
        "embed",
        json!({"index": "bare", "wait": true, "documents": [{"id": "a", "text": "hello there"}]}),
    )
    .await;
    let f = s.ok("fetch", json!({"index": "bare", "ids": ["a"]})).await;
    assert_eq!(f["vectors"][0]["metadata"], json!({}));
    let err = s
        .err(
            "search",
            json!({"index": "bare", "query": "hello", "mode": "keyword"}),
        )
        .await;
    assert!(err.contains("mode: index \"bare\" keeps no text"), "{err}");
    s.stop().await;
}

#[tokio::test]
async fn bad_text_input_gets_a_clear_error_naming_the_field() {
    let db = temp_db();
    let s = start(&db.path).await;
    with_notes(&s).await;
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"query": "", "mode": "keyword"}),
            "query: the text is empty",
        ),
        (
            json!({"query": "the of and", "mode": "keyword"}),
            "query: \"the of and\" has no words to search by once stop words are dropped",
        ),
        (
            json!({"query": "order ".repeat(10_000), "mode": "keyword"}),
            "query: 10000 words to search by; a keyword search takes at most 1024",
        ),
        (
            json!({"mode": "keyword"}),
            "query: a keyword search needs the query text",
        ),
        (
            json!({"vector": [1.0, 0.0, 0.0], "mode": "keyword"}),
            "vector: a keyword search ranks by words",
        ),
        (
            json!({"vector": [1.0, 0.0, 0.0], "mode": "hybrid"}),
            "query: a hybrid search needs the query text",
        ),
        (
            json!({"query": "order", "vector": [1.0, 0.0, 0.0], "mode": "hybrid",
                   "fusion": {"method": "weighted", "vector_weight": 1.5}}),
            "fusion.vector_weight: must be between 0 and 1, got 1.5",
        ),
        (
            json!({"query": "order", "vector": [1.0, 0.0, 0.0], "mode": "hybrid",
                   "fusion": {"method": "rrf", "k": 0}}),
            "fusion.k: must be a number greater than 0",
        ),
        (
            json!({"query": "order", "mode": "keyword", "fusion": {"method": "rrf"}}),
            "fusion: only a hybrid search fuses two lists",
        ),
        (json!({"query": "order", "mode": "fuzzy"}), "mode"),
    ];
    for (args, expected) in cases {
        let mut call = args.clone();
        call["index"] = json!("notes");
        let err = s.err("search", call).await;
        assert!(err.contains(expected), "{args}: {err}");
    }
    // A hybrid search whose words are all stop words is the vector list alone.
    let r = s
        .ok(
            "search",
            json!({"index": "notes", "query": "the of", "vector": [0.0, 0.0, 1.0], "mode": "hybrid", "top_k": 1}),
        )
        .await;
    assert_eq!(r["results"][0]["id"], json!("target"), "{r}");
    assert!(r["results"][0]["found_by"].get("keyword").is_none(), "{r}");

    for (args, expected) in [
        (
            json!({"index": "x", "dimension": 3, "language": "klingon"}),
            "language: \"klingon\" is not one of none, arabic",
        ),
        (
            json!({"index": "x", "dimension": 3, "text_field": "a.b"}),
            "text_field: \"a.b\" is not a plain metadata key",
        ),
        (
            json!({"index": "notes", "dimension": 3, "text_field": "body"}),
            "text_field: index \"notes\" already exists with text_field \"text\", language english; asked for text_field \"body\"",
        ),
        (
            json!({"index": "notes", "dimension": 3, "language": "french"}),
            "language: index \"notes\" already exists with text_field \"text\", language english; asked for language french",
        ),
    ] {
        let err = s.err("create_index", args.clone()).await;
        assert!(err.contains(expected), "{args}: {err}");
    }
    s.ok("create_index", json!({"index": "notes", "dimension": 3}))
        .await;
    s.stop().await;
}

#[tokio::test]
async fn postgres_keeps_a_text_index_and_create_index_restores_a_missing_one() {
    if !on_postgres() {
        return; // The DuckDB file's keyword index lives in memory: the other tests cover it.
    }
    let db = temp_db();
    let s = start(&db.path).await;
    with_notes(&s).await;
    let (client, connection) = tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL");
    tokio::spawn(connection);
    let schema = pg_schema(&db.path);
    let def = text_index(&client, &schema).await.expect("a text index");
    assert!(
        def.contains("USING gin") && def.contains("to_tsvector('english'::regconfig"),
        "{def}"
    );
    // An index made before keyword search had none: create_index adds it.
    client
        .batch_execute(&format!("DROP INDEX \"{schema}\".notes_text_idx"))
        .await
        .unwrap();
    assert!(text_index(&client, &schema).await.is_none());
    let r = s
        .ok("create_index", json!({"index": "notes", "dimension": 3}))
        .await;
    assert_eq!(r["created"], json!(false));
    assert!(text_index(&client, &schema).await.is_some(), "restored");
    let r = s
        .ok(
            "search",
            json!({"index": "notes", "query": "XK-42b", "mode": "keyword", "top_k": 1}),
        )
        .await;
    assert_eq!(r["results"][0]["id"], json!("target"));
    s.stop().await;
}

/// The definition of index "notes"'s text index in PostgreSQL schema `schema`, if any.
async fn text_index(client: &tokio_postgres::Client, schema: &str) -> Option<String> {
    client
        .query(
            "SELECT indexdef FROM pg_indexes WHERE schemaname = $1 AND indexname = 'notes_text_idx'",
            &[&schema],
        )
        .await
        .unwrap()
        .first()
        .map(|r| r.get::<_, String>(0))
}
