//! Long texts in chunks, through the real tools on a real store (both back-ends: the run
//! with `STRIDE_VECTORS_TEST_BACKEND=postgres` repeats it on PostgreSQL). The server embeds
//! through a stand-in Ollama with `--chunk-window`, so a text of a few dozen words is
//! already long, and the stand-in counts every text it is asked to embed.
//!
//! The main test is seeded and randomized against a small model (the documents' texts and
//! metadata as the last acknowledged write left them): every write kind on the same few
//! ids, then after each step `fetch` gives each document back whole, its chunks cover its
//! text and fit the window, a keyword search finds each document once, and an edit cost
//! exactly one embedding per chunk text the document did not hold before.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::ollama::{vector_of, MockOllama, DIM};
use common::*;
use serde_json::{json, Map, Value};
use stride_vectors::embed::remote::approx_tokens;

const WINDOW: usize = 40;
const INDEX: &str = "notes";

/// splitmix64: a seeded stream, printed so that a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn seed() -> u64 {
    let seed = std::env::var("STRIDE_CHUNKS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        });
    eprintln!("STRIDE_CHUNKS_SEED={seed}");
    seed
}

/// A sentence that names its document and its own number, so a keyword search can tell
/// where it is, and that varies in length (some sentences do not fit in one chunk).
fn sentence(rng: &mut Rng, doc: &str, n: usize) -> String {
    let filler = [
        "the", "quick", "report", "mentions", "budget", "and", "deadline", "Été", "naïve",
    ];
    let spread = if rng.below(10) == 0 { 60 } else { 12 };
    let words = 3 + rng.below(spread);
    let mut s = format!("Word{doc}x{n}");
    for _ in 0..words {
        s.push(' ');
        s.push_str(filler[rng.below(filler.len())]);
    }
    s.push_str(if rng.below(4) == 0 { "! " } else { ". " });
    s
}

fn text_of(sentences: &[String]) -> String {
    sentences.concat().trim_end().to_string()
}

/// What the last acknowledged write left under an id.
#[derive(Clone, Debug)]
enum Doc {
    /// Embedded: its sentences and metadata, and whether the metadata holds the text (the
    /// store fills it in; a `replace` on a one-row document drops it with the rest, while a
    /// long text's chunks keep their pieces).
    Text(Vec<String>, Map<String, Value>, bool),
    /// Upserted with a raw vector.
    Raw(Map<String, Value>),
}

async fn embed(s: &Server, id: &str, text: &str, metadata: &Map<String, Value>) -> Value {
    s.ok(
        "embed",
        json!({"index": INDEX, "wait": true,
               "documents": [{"id": id, "text": text, "metadata": metadata}]}),
    )
    .await
}

/// A server that chunks at [`WINDOW`] and keeps texts queued (a minute of debounce) until
/// a wait or a flush.
fn queuing(db: &TempDb, mock: &MockOllama) -> tokio::process::Command {
    let window = WINDOW.to_string();
    let args = [
        "--chunk-window",
        &window,
        "--debounce-ms",
        "60000",
        "--max-wait-ms",
        "60000",
    ];
    command_with_ollama(&db.path, &mock.url, &args)
}

/// The chunk texts of a stored document, by fetching each chunk row by its id.
async fn chunk_texts(s: &Server, id: &str) -> Vec<String> {
    let r = s.ok("fetch", json!({"index": INDEX, "ids": [id]})).await;
    let Some(doc) = r["vectors"].as_array().and_then(|v| v.first()).cloned() else {
        return Vec::new();
    };
    let Some(spans) = doc["chunks"].as_array() else {
        return vec![doc["metadata"]["text"].as_str().unwrap_or_default().to_string()];
    };
    let ids: Vec<Value> = spans.iter().map(|c| c["id"].clone()).collect();
    let rows = s.ok("fetch", json!({"index": INDEX, "ids": ids})).await;
    rows["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["metadata"]["text"].as_str().unwrap().to_string())
        .collect()
}

/// No chunk row of `id` is stored (neither `#0` nor `#1`).
async fn assert_no_chunk(s: &Server, id: &str, why: &str) {
    let ids = [format!("{id}#0"), format!("{id}#1")];
    let r = s.ok("fetch", json!({"index": INDEX, "ids": ids})).await;
    assert_eq!(r["missing"], json!(ids), "{id}: {why}");
}

/// Check one document against the model: `fetch` gives it back whole; its chunk rows cover
/// its text in order, each fitting the window, holding its span's text, its document's
/// metadata and its own vector; and nothing stays stored beyond its last chunk.
async fn check_doc(s: &Server, id: &str, want: Option<&Doc>) {
    let r = s.ok("fetch", json!({"index": INDEX, "ids": [id]})).await;
    let got = r["vectors"].as_array().unwrap().first().cloned();
    let (got, text) = match (want, got) {
        (None, None) => {
            assert_no_chunk(s, id, "no chunk outlives it").await;
            return;
        }
        (None, Some(got)) => panic!("{id}: deleted, yet fetched {got}"),
        (Some(_), None) => panic!("{id}: missing; {r}"),
        (Some(Doc::Raw(meta)), Some(got)) => {
            assert_eq!(got["metadata"], Value::Object(meta.clone()), "{id}: raw row");
            assert!(
                got.get("chunks").is_none(),
                "{id}: a raw row has no chunks: {got}"
            );
            assert_no_chunk(s, id, "the upsert replaced every chunk").await;
            return;
        }
        (Some(Doc::Text(sentences, meta, kept)), Some(got)) => {
            let text = text_of(sentences);
            let mut expected = meta.clone();
            if *kept {
                expected.insert("text".into(), Value::String(text.clone()));
            }
            assert_eq!(got["metadata"], Value::Object(expected), "{id}: fetched whole");
            (got, text)
        }
    };
    let chars: Vec<char> = text.chars().collect();
    let Some(spans) = got["chunks"].as_array() else {
        assert!(
            approx_tokens(&text) <= WINDOW,
            "{id}: a long text ({} tokens) in one row",
            approx_tokens(&text)
        );
        assert_eq!(got["vector"], json!(vector_of(&text)), "{id}: its own vector");
        assert_no_chunk(s, id, "shorter again, no chunk left").await;
        return;
    };
    assert!(spans.len() >= 2, "{id}: {got}");
    let ids: Vec<Value> = spans.iter().map(|c| c["id"].clone()).collect();
    let rows = s.ok("fetch", json!({"index": INDEX, "ids": ids})).await;
    let rows = rows["vectors"].as_array().unwrap().clone();
    assert_eq!(rows.len(), spans.len(), "{id}: every chunk row is stored");
    let mut covered = 0u64;
    for (n, (span, row)) in spans.iter().zip(&rows).enumerate() {
        let (start, end) = (span["start"].as_u64().unwrap(), span["end"].as_u64().unwrap());
        assert!(
            start <= covered && end > covered,
            "{id}: chunk {n} {start}..{end} after {covered}"
        );
        covered = end;
        let piece: String = chars[start as usize..end as usize].iter().collect();
        assert_eq!(row["metadata"]["text"], json!(piece), "{id}#{n}: its span's text");
        assert!(
            approx_tokens(&piece) <= WINDOW,
            "{id}#{n}: {} tokens",
            approx_tokens(&piece)
        );
        assert_eq!(
            row["vector"],
            json!(vector_of(&piece)),
            "{id}#{n}: its own embedding"
        );
        let place = &row["metadata"]["chunk"];
        assert_eq!(
            (&place["doc"], &place["n"], &place["count"]),
            (&json!(id), &json!(n), &json!(spans.len())),
            "{id}#{n}"
        );
        if let (Some(Doc::Text(_, meta, _)), Some(m)) = (want, row["metadata"].as_object()) {
            for (k, v) in meta {
                assert_eq!(m.get(k), Some(v), "{id}#{n}: the document's metadata");
            }
        }
    }
    assert_eq!(covered, chars.len() as u64, "{id}: the chunks cover the text");
    assert_eq!(got["vector"], rows[0]["vector"], "{id}: the first chunk's vector");
    let after = s
        .ok(
            "fetch",
            json!({"index": INDEX, "ids": [format!("{id}#{}", spans.len())]}),
        )
        .await;
    assert_eq!(
        after["missing"].as_array().map(Vec::len),
        Some(1),
        "{id}: no chunk beyond the last"
    );
}

#[tokio::test]
async fn every_write_kind_acts_on_a_long_text_whole_against_a_model() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let window = WINDOW.to_string();
    let mut s = start_with(command_with_ollama(
        &db.path,
        &mock.url,
        &["--chunk-window", &window],
    ))
    .await;
    let mut rng = Rng(seed());
    s.ok("create_index", json!({"index": INDEX, "dimension": DIM}))
        .await;
    let ids = ["a", "b", "c"];
    let mut model: BTreeMap<&str, Doc> = BTreeMap::new();
    let mut edits_checked = 0;
    for step in 0..90 {
        let id = ids[rng.below(ids.len())];
        let user = json!(format!("u{}", rng.below(2)));
        match rng.below(11) {
            // A new text, long or short.
            0..=2 => {
                let spread = if rng.below(3) == 0 { 3 } else { 14 };
                let count = 1 + rng.below(spread);
                let sentences: Vec<String> = (0..count).map(|n| sentence(&mut rng, id, n)).collect();
                let meta: Map<String, Value> =
                    json!({"user": user, "step": step}).as_object().unwrap().clone();
                let r = embed(&s, id, &text_of(&sentences), &meta).await;
                assert_eq!(statuses(&r), ["indexed"], "step {step}: {r}");
                model.insert(id, Doc::Text(sentences, meta, true));
            }
            // One sentence edited: only the chunks whose text changed are embedded.
            3..=5 => {
                let Some(Doc::Text(sentences, meta, _)) = model.get(id).cloned() else {
                    continue;
                };
                let before: BTreeSet<String> = chunk_texts(&s, id).await.into_iter().collect();
                let mut edited = sentences.clone();
                let at = rng.below(edited.len());
                edited[at] = sentence(&mut rng, id, at + 100);
                let texts_before = mock.texts().len();
                let r = embed(&s, id, &text_of(&edited), &meta).await;
                assert_eq!(statuses(&r), ["indexed"], "step {step}: {r}");
                let after: BTreeSet<String> = chunk_texts(&s, id).await.into_iter().collect();
                let embedded: BTreeSet<String> = mock.texts()[texts_before..].iter().cloned().collect();
                let new: BTreeSet<String> = after.difference(&before).cloned().collect();
                assert_eq!(
                    embedded, new,
                    "step {step}: embedded exactly the chunk texts it did not hold"
                );
                edits_checked += 1;
                model.insert(id, Doc::Text(edited, meta, true));
            }
            // The same text again, new metadata: no embedding, every chunk gets it.
            6 => {
                let Some(Doc::Text(sentences, ..)) = model.get(id).cloned() else {
                    continue;
                };
                let meta: Map<String, Value> =
                    json!({"user": user, "again": step}).as_object().unwrap().clone();
                let calls = mock.call_count();
                let r = embed(&s, id, &text_of(&sentences), &meta).await;
                assert_eq!(statuses(&r), ["unchanged"], "step {step}: {r}");
                assert_eq!(
                    mock.call_count(),
                    calls,
                    "step {step}: an unchanged text costs nothing"
                );
                model.insert(id, Doc::Text(sentences, meta, true));
            }
            // Metadata, merged or replaced: on every chunk, each keeping its text.
            7 => {
                let merge = rng.below(2) == 0;
                let patch = json!({"tag": step});
                let r = s
                    .call(
                        "update",
                        json!({"index": INDEX, "id": id, "metadata": patch,
                               "metadata_mode": if merge { "merge" } else { "replace" }}),
                    )
                    .await;
                let Some(doc) = model.get_mut(id) else {
                    assert_eq!(r.is_error, Some(true), "step {step}: update of a missing id");
                    continue;
                };
                assert_ne!(r.is_error, Some(true), "step {step}: {r:?}");
                if let (Doc::Text(sentences, _, kept), false) = (&mut *doc, merge) {
                    *kept = approx_tokens(&text_of(sentences)) > WINDOW;
                }
                let meta = match doc {
                    Doc::Text(_, m, _) | Doc::Raw(m) => m,
                };
                if !merge {
                    meta.clear();
                }
                meta.insert("tag".into(), json!(step));
            }
            // A vector for a long text is refused by name; a raw upsert replaces it whole.
            8 => {
                let long =
                    matches!(model.get(id), Some(Doc::Text(s, ..)) if approx_tokens(&text_of(s)) > WINDOW);
                if long {
                    let e = s
                        .err(
                            "update",
                            json!({"index": INDEX, "id": id, "vector": vec![0.5; DIM]}),
                        )
                        .await;
                    assert!(
                        e.contains(&format!("{id:?}")) && e.contains("chunks"),
                        "step {step}: {e}"
                    );
                }
                let meta: Map<String, Value> =
                    json!({"user": user, "raw": step}).as_object().unwrap().clone();
                s.ok(
                    "upsert",
                    json!({"index": INDEX, "vectors": [{"id": id, "vector": vec![0.25; DIM], "metadata": meta}]}),
                )
                .await;
                model.insert(id, Doc::Raw(meta));
            }
            // Delete by id (sometimes a chunk's: the whole document goes) or by a filter that
            // matches its chunks.
            9 => {
                let long =
                    matches!(model.get(id), Some(Doc::Text(s, ..)) if approx_tokens(&text_of(s)) > WINDOW);
                let named = if long && rng.below(2) == 0 {
                    format!("{id}#1")
                } else {
                    id.to_string()
                };
                let r = s.ok("delete", json!({"index": INDEX, "ids": [named]})).await;
                assert_eq!(
                    r["deleted"],
                    json!(usize::from(model.remove(id).is_some())),
                    "step {step}: {r}"
                );
            }
            _ => {
                let r = s
                    .ok("delete", json!({"index": INDEX, "filter": {"user": user}}))
                    .await;
                let gone: Vec<&str> = model
                    .iter()
                    .filter(
                        |(_, d)| matches!(d, Doc::Text(_, m, _) | Doc::Raw(m) if m.get("user") == Some(&user)),
                    )
                    .map(|(id, _)| *id)
                    .collect();
                assert_eq!(r["deleted"], json!(gone.len()), "step {step}: {r}");
                for id in gone {
                    model.remove(id);
                }
            }
        }
        if step == 45 {
            // What was acknowledged survives a kill -9.
            s.kill9().await;
            s = start_with(command_with_ollama(
                &db.path,
                &mock.url,
                &["--chunk-window", &window],
            ))
            .await;
        }
        for id in ids {
            check_doc(&s, id, model.get(id)).await;
        }
        // A keyword search ranks documents, each once, found by their own words.
        for (id, doc) in &model {
            let Doc::Text(sentences, _, true) = doc else {
                continue;
            };
            let n = rng.below(sentences.len());
            let word = format!("Word{id}x{n}");
            let word = match sentences.iter().find(|s| s.starts_with(&format!("{word} "))) {
                Some(_) => word,
                None => continue, // edited away
            };
            let r = s
                .ok(
                    "search",
                    json!({"index": INDEX, "query": word, "mode": "keyword", "top_k": 3}),
                )
                .await;
            let hits = r["results"].as_array().unwrap();
            assert_eq!(hits[0]["id"], json!(id), "step {step}: {word}: {r}");
            let found: BTreeSet<&str> = hits.iter().map(|h| h["id"].as_str().unwrap()).collect();
            assert_eq!(found.len(), hits.len(), "step {step}: one hit per document: {r}");
            let chunk_text = hits[0]["metadata"]["text"].as_str().unwrap();
            assert!(
                chunk_text.contains(&word),
                "step {step}: the hit is the chunk holding {word}: {r}"
            );
        }
    }
    eprintln!("edits checked: {edits_checked}");
    assert!(edits_checked > 0, "no edit was made: raise the steps");
    s.stop().await;
}

#[tokio::test]
async fn search_returns_each_document_once_by_its_best_chunk_or_every_chunk_when_asked() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = start_with(command_with_ollama(
        &db.path,
        &mock.url,
        &["--chunk-window", "12"],
    ))
    .await;
    let long: String = (0..30)
        .map(|i| format!("Sentence {i} speaks of topic{i} alone. "))
        .collect::<String>()
        .trim_end()
        .to_string();
    let r = s
        .ok(
            "embed",
            json!({"index": INDEX, "wait": true, "documents": [
                {"id": "long", "text": long, "metadata": {"kind": "essay"}},
                {"id": "short", "text": "Sentence about topic7 in short.", "metadata": {"kind": "note"}}]}),
        )
        .await;
    assert_eq!(statuses(&r), ["indexed", "indexed"]);
    let fetched = s.ok("fetch", json!({"index": INDEX, "ids": ["long"]})).await;
    let spans = fetched["vectors"][0]["chunks"].as_array().unwrap().clone();
    assert!(spans.len() >= 10, "{fetched}");
    // The exact vector of chunk 5's text: the document, by that chunk, at score 1.
    let row = s
        .ok("fetch", json!({"index": INDEX, "ids": [spans[5]["id"]]}))
        .await;
    let chunk5 = row["vectors"][0]["metadata"]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s
        .ok(
            "search",
            json!({"index": INDEX, "vector": vector_of(&chunk5), "top_k": 2}),
        )
        .await;
    assert_eq!(ids(&r), ["long", "short"], "{r}");
    assert!((r["results"][0]["score"].as_f64().unwrap() - 1.0).abs() < 1e-5);
    assert_eq!(r["results"][0]["metadata"]["chunk"]["n"], json!(5), "{r}");
    assert_eq!(r["results"][0]["metadata"]["text"], json!(chunk5));
    // As rows: every chunk, by its own id.
    let r = s
        .ok(
            "search",
            json!({"index": INDEX, "vector": vector_of(&chunk5), "top_k": 1000, "chunks": true}),
        )
        .await;
    let rows: BTreeSet<String> = ids(&r).into_iter().collect();
    let mut expected: BTreeSet<String> = spans
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_string())
        .collect();
    expected.insert("short".into());
    assert_eq!(rows, expected);
    // Keyword and hybrid: the chunk holding the word, one hit per document; a filter and
    // min_score apply to chunks before they are grouped.
    for mode in ["keyword", "hybrid"] {
        let r = s
            .ok(
                "search",
                json!({"index": INDEX, "query": "topic23", "mode": mode, "top_k": 5}),
            )
            .await;
        assert_eq!(r["results"][0]["id"], json!("long"), "{mode}: {r}");
        assert!(
            r["results"][0]["metadata"]["text"]
                .as_str()
                .unwrap()
                .contains("topic23"),
            "{r}"
        );
        let all = ids(&r);
        let distinct: BTreeSet<&String> = all.iter().collect();
        assert_eq!(distinct.len(), all.len(), "{mode}: {r}");
    }
    let r = s
        .ok(
            "search",
            json!({"index": INDEX, "query": "topic7", "mode": "keyword", "filter": {"kind": "note"}}),
        )
        .await;
    assert_eq!(ids(&r), ["short"], "{r}");
    // Ask for more documents than there are: every document once, no endless growing.
    let r = s
        .ok(
            "search",
            json!({"index": INDEX, "vector": vec![1.0; DIM], "top_k": 50}),
        )
        .await;
    assert_eq!(ids(&r).len(), 2, "{r}");
    // `chunk` is the chunks' own key.
    let e = s
        .err(
            "embed",
            json!({"index": INDEX, "documents": [{"id": "x", "text": "hi", "metadata": {"chunk": 1}}]}),
        )
        .await;
    assert!(e.contains("documents[0] (id \"x\").metadata.chunk"), "{e}");
    s.stop().await;
}

fn ids(r: &Value) -> Vec<String> {
    r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["id"].as_str().unwrap().to_string())
        .collect()
}

/// The seams of ownership: long texts sent through a relay, the owner killed while they
/// wait in its queue, and the relay, owner now, embeds them in chunks from the file's queue,
/// reusing the stored chunks of the edited one. (One file, so DuckDB only: on PostgreSQL
/// every process writes the database itself.)
#[tokio::test]
async fn long_texts_queued_through_a_relay_survive_the_owners_death_and_land_in_chunks() {
    if on_postgres() {
        return;
    }
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let owner = start_with(queuing(&db, &mock)).await;
    wait_for_stats(&owner, 30, |st| st["role"] == "owner").await;
    let relay = start_with(queuing(&db, &mock)).await;
    let st = wait_for_stats(&relay, 30, |st| st["role"] == "relay").await;
    assert_eq!(st["role"], "relay", "{st}");
    let mut rng = Rng(seed());
    let edited_id = "edited";
    let mut sentences: Vec<String> = (0..12).map(|n| sentence(&mut rng, edited_id, n)).collect();
    let r = embed(&relay, edited_id, &text_of(&sentences), &Map::new()).await;
    assert_eq!(statuses(&r), ["indexed"], "{r}");
    let before: BTreeSet<String> = chunk_texts(&relay, edited_id).await.into_iter().collect();
    assert!(before.len() >= 2, "a long text: {before:?}");
    // Queued through the relay, not embedded (the debounce is a minute).
    sentences[6] = sentence(&mut rng, edited_id, 106);
    let fresh: Vec<String> = (0..9).map(|n| sentence(&mut rng, "fresh", n)).collect();
    let r = relay
        .ok(
            "embed",
            json!({"index": INDEX, "documents": [
                {"id": edited_id, "text": text_of(&sentences)},
                {"id": "fresh", "text": text_of(&fresh), "metadata": {"user": "u9"}}]}),
        )
        .await;
    assert_eq!(statuses(&r), ["queued", "queued"], "{r}");
    let texts_before = mock.texts().len();
    let child_pid = owner.child.id().expect("owner pid");
    let server_pid = owner.ok("stats", json!({})).await["pid"].as_u64().unwrap() as u32;
    kill_hard(child_pid, server_pid);
    let st = wait_for_stats(&relay, 30, |st| st["role"] == "owner").await;
    assert_eq!(st["role"], "owner", "the relay took over: {st}");
    let flushed = relay.ok("flush", json!({"index": INDEX})).await;
    assert_eq!(flushed["pending"], json!(0), "{flushed}");
    check_doc(
        &relay,
        "fresh",
        Some(&Doc::Text(
            fresh.clone(),
            json!({"user": "u9"}).as_object().unwrap().clone(),
            true,
        )),
    )
    .await;
    check_doc(
        &relay,
        edited_id,
        Some(&Doc::Text(sentences.clone(), Map::new(), true)),
    )
    .await;
    let after: BTreeSet<String> = chunk_texts(&relay, edited_id).await.into_iter().collect();
    let fresh_chunks: BTreeSet<String> = chunk_texts(&relay, "fresh").await.into_iter().collect();
    let embedded: BTreeSet<String> = mock.texts()[texts_before..].iter().cloned().collect();
    let expected: BTreeSet<String> = after.difference(&before).cloned().chain(fresh_chunks).collect();
    assert_eq!(
        embedded, expected,
        "the new owner embedded only the chunks that were new"
    );
    drop(owner);
    relay.stop().await;
}

/// Edges of the write kinds on a long text, each once, on both back-ends.
#[tokio::test]
async fn updates_deletes_and_ids_reach_a_long_text_whole() {
    let mock = MockOllama::start(false).await;
    let db = temp_db();
    let s = start_with(queuing(&db, &mock)).await;
    let mut rng = Rng(seed());
    let sentences: Vec<String> = (0..12).map(|n| sentence(&mut rng, "d", n)).collect();
    let meta = json!({"user": "u1"}).as_object().unwrap().clone();
    assert_eq!(
        statuses(&embed(&s, "d", &text_of(&sentences), &meta).await),
        ["indexed"]
    );
    let count = chunk_texts(&s, "d").await.len();
    assert!(count >= 3, "{count} chunks");

    // A filter matching one chunk updates the whole document.
    let r = s
        .ok(
            "update",
            json!({"index": INDEX, "filter": {"chunk.n": 1}, "metadata": {"tag": "x"}}),
        )
        .await;
    assert_eq!(r["count"], json!(1), "one document: {r}");
    let mut want = meta.clone();
    want.insert("tag".into(), json!("x"));
    check_doc(&s, "d", Some(&Doc::Text(sentences.clone(), want.clone(), true))).await;

    // An update reaches the new text still waiting (the debounce is a minute), under the
    // document's id: when it lands, the metadata is the update's.
    let mut edited = sentences.clone();
    edited[3] = sentence(&mut rng, "d", 103);
    let r = s
        .ok(
            "embed",
            json!({"index": INDEX, "documents": [{"id": "d", "text": text_of(&edited), "metadata": want}]}),
        )
        .await;
    assert_eq!(statuses(&r), ["queued"]);
    s.ok(
        "update",
        json!({"index": INDEX, "id": "d", "metadata": {"tag": "y"}}),
    )
    .await;
    let flushed = s.ok("flush", json!({"index": INDEX})).await;
    assert_eq!(flushed["pending"], json!(0), "{flushed}");
    want.insert("tag".into(), json!("y"));
    check_doc(&s, "d", Some(&Doc::Text(edited.clone(), want.clone(), true))).await;

    // Chunk ids: `embed` refuses them; an upsert may not overwrite one chunk alone; `fetch`
    // of a chunk and its document together gives both.
    let e = s
        .err(
            "embed",
            json!({"index": INDEX, "documents": [{"id": "e#2", "text": "hi"}]}),
        )
        .await;
    assert!(e.contains("documents[0].id") && e.contains("e#2"), "{e}");
    let e = s
        .err(
            "upsert",
            json!({"index": INDEX, "vectors": [{"id": "d#1", "vector": vec![0.5; DIM]}]}),
        )
        .await;
    assert!(
        e.contains("vectors[0] (id \"d#1\")") && e.contains("\"d\""),
        "{e}"
    );
    let r = s.ok("fetch", json!({"index": INDEX, "ids": ["d#0", "d"]})).await;
    let got: Vec<&str> = r["vectors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap())
        .collect();
    assert_eq!(got, ["d#0", "d"], "{r}");

    // Deleting one chunk's id deletes the document.
    let r = s.ok("delete", json!({"index": INDEX, "ids": ["d#1"]})).await;
    assert_eq!(r["deleted"], json!(1), "{r}");
    check_doc(&s, "d", None).await;
    let r = s.ok("describe_index", json!({"index": INDEX})).await;
    assert_eq!(r["count"], json!(0), "no chunk left: {r}");
    s.stop().await;
}
