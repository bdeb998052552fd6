//! Exact BM25: the in-memory engine's keyword index (the one `search` uses, fed rows as the
//! writer feeds it: upserts, metadata changes and deletes by id, chunks filling and
//! freezing, compaction) against an independent implementation (PyPI's bm25s, method
//! "lucene", float64; tests/bm25/reference.py) fed the same tokens (language `none`, so the
//! analyzer keeps each test token as it is). Seeded random
//! corpora that change between searches (rows replaced and removed, as writes do), and a
//! few adversarial ones: repeated terms, empty texts, one-word documents, one word
//! everywhere, queries with repeated and unknown terms. Every search must give the same
//! hits, each score within 1e-5, in the same order of scores.
//!
//! bm25s (and numpy) are installed once with pip into the cache, pinned.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use stride_vectors::store::memory::{Builder, Rows};
use stride_vectors::store::metadata::Metadata;
use stride_vectors::store::text::TextSettings;
use stride_vectors::store::Metric;

const TOLERANCE: f64 = 1e-5;

/// bm25s 0.3.16 and numpy 2.4.6 in a folder of the cache, installed on first use.
fn reference_python_path() -> PathBuf {
    let home = std::env::var_os("HOME").expect("HOME");
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(home).join(".cache"));
    let dir = cache.join("stride-vectors").join("py-bm25s-0.3.16");
    if dir.join("bm25s").is_dir() {
        return dir;
    }
    let staging = dir.with_extension(format!("tmp{}", std::process::id()));
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--target",
        ])
        .arg(&staging)
        .args(["bm25s==0.3.16", "numpy==2.4.6"])
        .status()
        .expect("run pip");
    assert!(status.success(), "pip install bm25s failed: {status}");
    // Another test run may have won the race; either copy is the same.
    if std::fs::rename(&staging, &dir).is_err() {
        let _ = std::fs::remove_dir_all(&staging);
    }
    dir
}

/// The reference's hits for each query, over `corpus` (id -> tokens, empty ones left out as
/// the keyword index leaves them out).
fn reference(corpus: &BTreeMap<String, Vec<String>>, queries: &[Vec<String>]) -> Vec<Vec<(String, f64)>> {
    let (ids, docs): (Vec<&String>, Vec<&Vec<String>>) = corpus.iter().filter(|(_, t)| !t.is_empty()).unzip();
    if ids.is_empty() {
        return queries.iter().map(|_| Vec::new()).collect();
    }
    let job = json!({"k1": 1.2, "b": 0.75, "ids": ids, "corpus": docs, "queries": queries});
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/bm25/reference.py");
    let mut child = Command::new("python3")
        .arg(script)
        .env("PYTHONPATH", reference_python_path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the reference");
    serde_json::to_writer(child.stdin.take().unwrap(), &job).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the reference failed");
    let answer: Vec<Vec<(String, f64)>> = serde_json::from_slice(&out.stdout).expect("reference JSON");
    answer
}

/// The engine under test: an index of one-dimensional vectors whose rows keep their tokens,
/// space-separated, in `metadata.text`.
struct Ours(Builder);

impl Ours {
    fn new() -> Ours {
        let text = TextSettings {
            field: Some("text".into()),
            language: "none".into(),
        };
        Ours(Builder::with_text(1, Metric::Cosine, &text))
    }

    fn put(&mut self, id: &str, tokens: &[String]) {
        let metadata = Metadata::from(&json!({"text": tokens.join(" "), "n": tokens.len()}));
        self.0.upsert(id, &[1.0], metadata);
    }

    /// A metadata change that keeps the vector (what `update` does to a row).
    fn retext(&mut self, id: &str, tokens: &[String]) {
        self.0
            .set_metadata(id, Metadata::from(&json!({"text": tokens.join(" ")})));
    }

    fn remove(&mut self, id: &str) {
        self.0.remove(id);
    }

    fn search(&self, query: &[String], k: usize) -> Vec<(String, f64)> {
        let snapshot = self.0.snapshot();
        let terms = snapshot.text().expect("keeps text").query_terms(&query.join(" "));
        snapshot
            .keyword_search(&terms, k, Rows::All, None)
            .into_iter()
            .map(|h| (snapshot.id(h.position).to_string(), h.score))
            .collect()
    }
}

/// Our hits and the reference's must be the same documents with the same scores, in the same
/// order of scores (equal scores may list their ids in any order).
fn assert_same(ours: &Ours, corpus: &BTreeMap<String, Vec<String>>, queries: &[Vec<String>], what: &str) {
    let expected = reference(corpus, queries);
    for (query, want) in queries.iter().zip(expected) {
        let got = ours.search(query, usize::MAX);
        assert_eq!(got.len(), want.len(), "{what}: {query:?}: {got:?} vs {want:?}");
        let by_id: BTreeMap<&str, f64> = got.iter().map(|h| (h.0.as_str(), h.1)).collect();
        for (id, score) in &want {
            let ours = by_id
                .get(id.as_str())
                .unwrap_or_else(|| panic!("{what}: {query:?}: {id} missing from {got:?}"));
            assert!(
                (ours - score).abs() <= TOLERANCE,
                "{what}: {query:?}: {id} scores {ours}, the reference {score}"
            );
        }
        for (rank, (hit, (_, score))) in got.iter().zip(&want).enumerate() {
            assert!(
                (hit.1 - score).abs() <= TOLERANCE,
                "{what}: {query:?}: rank {rank} is {} ({}), the reference's rank {rank} scores {score}",
                hit.0,
                hit.1
            );
        }
        // Top-k is a prefix of the whole ranking.
        let top3 = ours.search(query, 3);
        assert_eq!(top3, got.iter().take(3).cloned().collect::<Vec<_>>());
    }
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

#[test]
fn seeded_random_corpora_that_change_between_searches_score_as_the_reference_does() {
    let vocabulary: Vec<String> = (0..40).map(|i| format!("w{i}")).collect();
    for seed in 0..12u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ours = Ours::new();
        let mut corpus: BTreeMap<String, Vec<String>> = BTreeMap::new();
        // Zipf-like: low word numbers are common, high ones rare.
        let word = |rng: &mut StdRng| {
            let x: f64 = rng.random();
            vocabulary[((x * x * x) * vocabulary.len() as f64) as usize].clone()
        };
        for round in 0..6 {
            for _ in 0..rng.random_range(5..40) {
                let id = format!("d{}", rng.random_range(0..60));
                if rng.random_bool(0.15) {
                    ours.remove(&id);
                    corpus.remove(&id);
                } else if rng.random_bool(0.2) && corpus.contains_key(&id) {
                    let len = rng.random_range(0..25);
                    let tokens: Vec<String> = (0..len).map(|_| word(&mut rng)).collect();
                    ours.retext(&id, &tokens);
                    corpus.insert(id, tokens);
                } else {
                    let len = rng.random_range(0..25);
                    let tokens: Vec<String> = (0..len).map(|_| word(&mut rng)).collect();
                    ours.put(&id, &tokens);
                    corpus.insert(id, tokens);
                }
            }
            let queries: Vec<Vec<String>> = (0..8)
                .map(|_| (0..rng.random_range(1..5)).map(|_| word(&mut rng)).collect())
                .chain([
                    vec!["unknown".to_string()],
                    vec!["w1".into(), "w1".into(), "w39".into()],
                ])
                .collect();
            assert_same(&ours, &corpus, &queries, &format!("seed {seed}, round {round}"));
        }
    }
}

#[test]
fn adversarial_corpora_score_as_the_reference_does() {
    let long = format!("{}needle", "filler ".repeat(200));
    let cases: Vec<(&str, Vec<(&str, &str)>)> = vec![
        (
            "repeated terms",
            vec![("a", "x x x x x x x x"), ("b", "x y"), ("c", "y y y z")],
        ),
        (
            "empty texts among others",
            vec![("a", ""), ("b", "alone"), ("c", ""), ("d", "alone again")],
        ),
        (
            "one-word documents",
            vec![("a", "sql"), ("b", "l3"), ("c", "deliveroo"), ("d", "sql")],
        ),
        (
            "one word everywhere",
            vec![("a", "job"), ("b", "job job"), ("c", "job job job")],
        ),
        (
            "long against short",
            vec![("a", long.as_str()), ("b", "filler needle"), ("c", "needle")],
        ),
    ];
    let queries: Vec<Vec<String>> = [
        "x",
        "x y",
        "y y",
        "alone",
        "again alone",
        "sql",
        "l3 sql",
        "job",
        "needle",
        "filler needle",
        "nothing",
        "x x",
    ]
    .iter()
    .map(|q| words(q))
    .collect();
    for (what, docs) in cases {
        let mut ours = Ours::new();
        let mut corpus = BTreeMap::new();
        for (id, text) in docs {
            ours.put(id, &words(text));
            corpus.insert(id.to_string(), words(text));
        }
        assert_same(&ours, &corpus, &queries, what);
        // A document that changes, then goes: the statistics follow.
        let first = corpus.keys().next().unwrap().clone();
        ours.put(&first, &words("x needle sql"));
        corpus.insert(first.clone(), words("x needle sql"));
        assert_same(&ours, &corpus, &queries, &format!("{what}, one edited"));
        ours.remove(&first);
        corpus.remove(&first);
        assert_same(&ours, &corpus, &queries, &format!("{what}, one deleted"));
    }
}

#[test]
fn scores_hold_across_full_chunks_compaction_and_parallel_parts() {
    // 30,000 writes over 30,000 ids: chunks fill and freeze, dead rows pass a quarter of the
    // rows and the copy is compacted (terms move with their rows), and past 16,384 rows a
    // search is split over the pool in parts.
    let vocabulary: Vec<String> = (0..300).map(|i| format!("t{i}")).collect();
    let mut rng = StdRng::seed_from_u64(27);
    let mut ours = Ours::new();
    let mut corpus: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for step in 0..30_000 {
        let id = format!("d{}", rng.random_range(0..30_000));
        if rng.random_bool(0.05) {
            ours.remove(&id);
            corpus.remove(&id);
        } else {
            let len = rng.random_range(0..40);
            let tokens: Vec<String> = (0..len)
                .map(|_| {
                    let x: f64 = rng.random();
                    vocabulary[((x * x) * vocabulary.len() as f64) as usize].clone()
                })
                .collect();
            ours.put(&id, &tokens);
            corpus.insert(id, tokens);
        }
        if step % 10_000 == 9_999 {
            let queries: Vec<Vec<String>> = (0..6)
                .map(|i| vec![vocabulary[i * 7].clone(), vocabulary[250 - i].clone()])
                .collect();
            assert_same(&ours, &corpus, &queries, &format!("after {} writes", step + 1));
        }
    }
    assert!(ours.0.len() > 16_384, "{} rows: too few to split", ours.0.len());
}
