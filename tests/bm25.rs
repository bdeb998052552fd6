//! Exact BM25: the keyword index against an independent implementation (PyPI's bm25s,
//! method "lucene", float64; tests/bm25/reference.py) fed the same tokens. Seeded random
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
use stride_vectors::store::keyword::{KeywordIndex, B, K1};

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
    let job = json!({"k1": K1, "b": B, "ids": ids, "corpus": docs, "queries": queries});
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

/// Our hits and the reference's must be the same documents with the same scores, in the same
/// order of scores (equal scores may list their ids in any order).
fn assert_same(
    ours: &KeywordIndex,
    corpus: &BTreeMap<String, Vec<String>>,
    queries: &[Vec<String>],
    what: &str,
) {
    let expected = reference(corpus, queries);
    for (query, want) in queries.iter().zip(expected) {
        let got = ours.search(query, usize::MAX, |_| true);
        assert_eq!(got.len(), want.len(), "{what}: {query:?}: {got:?} vs {want:?}");
        let by_id: BTreeMap<&str, f64> = got.iter().map(|h| (h.id.as_str(), h.score)).collect();
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
                (hit.score - score).abs() <= TOLERANCE,
                "{what}: {query:?}: rank {rank} is {} ({}), the reference's rank {rank} scores {score}",
                hit.id,
                hit.score
            );
        }
        // Top-k is a prefix of the whole ranking.
        let top3 = ours.search(query, 3, |_| true);
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
        let mut ours = KeywordIndex::default();
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
        let mut ours = KeywordIndex::default();
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
