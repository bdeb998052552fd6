//! Retrieval quality on a public BEIR-format dataset (`--only retrieval --beir DIR`): the
//! corpus indexed through `embed` (the local model, title and text joined by a space as
//! BEIR and MTEB do), every test query searched through `search` in each mode, and nDCG@10
//! and recall@100 computed against the dataset's relevance judgements (trec_eval's
//! definitions: gains are the judged grades, discounts `log2(rank + 1)`, the ideal ranking
//! from the judgements). Nothing from the dataset is kept in the repository.
//!
//! DIR holds `corpus.jsonl` (`_id`, `title`, `text`), `queries.jsonl` (`_id`, `text`) and
//! `qrels/test.tsv` (query id, document id, grade; a header line).

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};
use stride_vectors::client::ChildServer;

use crate::bench::{row, Row};
use crate::measure::{ms, percentile};

const INDEX: &str = "beir";
/// Documents per `embed` call (each waits until they are committed).
const EMBED_BATCH: usize = 64;

struct Dataset {
    /// (id, title + " " + text)
    corpus: Vec<(String, String)>,
    /// Test queries: (id, text), in id order.
    queries: Vec<(String, String)>,
    /// query id -> document id -> grade.
    qrels: HashMap<String, HashMap<String, f64>>,
}

fn load(dir: &Path) -> Result<Dataset> {
    let lines = |name: &str| -> Result<Vec<Value>> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .enumerate()
            .map(|(n, l)| serde_json::from_str(l).with_context(|| format!("{}:{}", path.display(), n + 1)))
            .collect()
    };
    let field = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    let corpus = lines("corpus.jsonl")?
        .iter()
        .map(|d| {
            let text = format!("{} {}", field(d, "title"), field(d, "text"));
            (field(d, "_id"), text.trim().to_string())
        })
        .collect();
    let qrels_path = dir.join("qrels").join("test.tsv");
    let qrels_text =
        std::fs::read_to_string(&qrels_path).with_context(|| format!("reading {}", qrels_path.display()))?;
    let mut qrels: HashMap<String, HashMap<String, f64>> = HashMap::new();
    for line in qrels_text.lines().skip(1) {
        let cols: Vec<&str> = line.trim_end_matches('\r').split('\t').collect();
        if let [query, doc, grade] = cols[..] {
            qrels
                .entry(query.to_string())
                .or_default()
                .insert(doc.to_string(), grade.trim().parse().unwrap_or(0.0));
        }
    }
    let mut queries: Vec<(String, String)> = lines("queries.jsonl")?
        .iter()
        .map(|q| (field(q, "_id"), field(q, "text")))
        .filter(|(id, _)| qrels.contains_key(id))
        .collect();
    queries.sort();
    anyhow::ensure!(
        !queries.is_empty(),
        "no query of queries.jsonl is judged in qrels/test.tsv"
    );
    Ok(Dataset {
        corpus,
        queries,
        qrels,
    })
}

/// nDCG@k of one ranking.
fn ndcg(ranked: &[String], judged: &HashMap<String, f64>, k: usize) -> f64 {
    let dcg: f64 = ranked
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, id)| judged.get(id).copied().unwrap_or(0.0) / ((i + 2) as f64).log2())
        .sum();
    let mut ideal: Vec<f64> = judged.values().copied().filter(|g| *g > 0.0).collect();
    ideal.sort_by(|a, b| b.total_cmp(a));
    let idcg: f64 = ideal
        .iter()
        .take(k)
        .enumerate()
        .map(|(i, g)| g / ((i + 2) as f64).log2())
        .sum();
    if idcg == 0.0 {
        0.0
    } else {
        dcg / idcg
    }
}

/// Recall@k of one ranking: relevant documents found in the top k over those judged relevant.
fn recall(ranked: &[String], judged: &HashMap<String, f64>, k: usize) -> f64 {
    let relevant = judged.values().filter(|g| **g > 0.0).count();
    if relevant == 0 {
        return 0.0;
    }
    let found = ranked
        .iter()
        .take(k)
        .filter(|id| judged.get(*id).is_some_and(|g| *g > 0.0))
        .count();
    found as f64 / relevant as f64
}

/// One way of searching: its label and the `search` arguments besides index, query, top_k.
fn modes() -> Vec<(&'static str, Value)> {
    vec![
        ("vector (all-MiniLM-L6-v2, cosine)", json!({"mode": "vector"})),
        ("keyword (BM25, English)", json!({"mode": "keyword"})),
        ("hybrid, RRF k 60", json!({"mode": "hybrid"})),
        (
            "hybrid, weighted 0.7 vector",
            json!({"mode": "hybrid", "fusion": {"method": "weighted", "vector_weight": 0.7}}),
        ),
        (
            "hybrid, weighted 0.5",
            json!({"mode": "hybrid", "fusion": {"method": "weighted", "vector_weight": 0.5}}),
        ),
        (
            "hybrid, weighted 0.3 vector",
            json!({"mode": "hybrid", "fusion": {"method": "weighted", "vector_weight": 0.3}}),
        ),
    ]
}

/// Index the corpus (unless `db` already holds it all) and run every mode over the test
/// queries.
pub(crate) async fn retrieval(dir: &Path, db: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let data = load(dir)?;
    rows.push(row(
        "BEIR dataset",
        format!(
            "{}: {} documents, {} test queries, {} judgements",
            dir.display(),
            data.corpus.len(),
            data.queries.len(),
            data.qrels.values().map(HashMap::len).sum::<usize>()
        ),
    ));
    let server = ChildServer::start(db, &[]).await?;
    // Rows, not documents: a long abstract is several chunks. Stored when there are at least
    // as many rows as documents and the first and last documents are there.
    let stored = server
        .tool("describe_index", json!({"index": INDEX}))
        .await
        .ok()
        .and_then(|d| d["count"].as_u64())
        .unwrap_or(0);
    let ends: Vec<&String> = [data.corpus.first(), data.corpus.last()]
        .into_iter()
        .flatten()
        .map(|(id, _)| id)
        .collect();
    let found = match server.tool("fetch", json!({"index": INDEX, "ids": ends})).await {
        Ok(r) => r["missing"].as_array().is_some_and(Vec::is_empty),
        Err(_) => false,
    };
    if (stored as usize) < data.corpus.len() || !found {
        index_corpus(&server, &data, rows).await?;
    } else {
        rows.push(row("corpus indexing", format!("already in {}", db.display())));
    }
    let described = server.tool("describe_index", json!({"index": INDEX})).await?;
    rows.push(row(
        "keyword index in memory",
        format!(
            "{:.1} MiB (of {:.1} MiB for the whole copy)",
            described["keyword_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
            described["memory_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
        ),
    ));
    for (label, args) in modes() {
        let mut ndcg10 = 0.0;
        let mut recall100 = 0.0;
        let mut latencies = Vec::with_capacity(data.queries.len());
        for (id, text) in &data.queries {
            let mut call = args.clone();
            call["index"] = json!(INDEX);
            call["query"] = json!(text);
            call["top_k"] = json!(100);
            let t = Instant::now();
            let answer = server
                .tool("search", call)
                .await
                .with_context(|| format!("{label}: query {id}"))?;
            latencies.push(t.elapsed());
            let ranked: Vec<String> = answer["results"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|h| h["id"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            let judged = &data.qrels[id];
            ndcg10 += ndcg(&ranked, judged, 10);
            recall100 += recall(&ranked, judged, 100);
        }
        let n = data.queries.len() as f64;
        latencies.sort();
        rows.push(row(
            format!("retrieval, {label}"),
            format!(
                "nDCG@10 {:.4}, recall@100 {:.4}; search p50 {} (query embedding included)",
                ndcg10 / n,
                recall100 / n,
                ms(percentile(&latencies, 0.5))
            ),
        ));
    }
    server.close().await?;
    Ok(())
}

async fn index_corpus(server: &ChildServer, data: &Dataset, rows: &mut Vec<Row>) -> Result<()> {
    let _ = server.tool("delete_index", json!({"index": INDEX})).await;
    let started = Instant::now();
    let mut report = Instant::now();
    for (n, batch) in data.corpus.chunks(EMBED_BATCH).enumerate() {
        let documents: Vec<Value> = batch
            .iter()
            .map(|(id, text)| json!({"id": id, "text": text}))
            .collect();
        let answer = server
            .tool(
                "embed",
                json!({"index": INDEX, "documents": documents, "wait": true}),
            )
            .await?;
        let not_indexed: Vec<&Value> = answer["documents"]
            .as_array()
            .map(|d| d.iter().filter(|s| s["status"] != "indexed").collect())
            .unwrap_or_default();
        anyhow::ensure!(not_indexed.is_empty(), "not indexed: {not_indexed:?}");
        if report.elapsed() > Duration::from_secs(30) {
            tracing::info!(
                documents = (n + 1) * EMBED_BATCH,
                secs = started.elapsed().as_secs(),
                "indexing the corpus"
            );
            report = Instant::now();
        }
    }
    let secs = started.elapsed().as_secs_f64();
    rows.push(row(
        "corpus indexing through embed (wait: true, 64 a call)",
        format!(
            "{} documents in {:.0} s: {:.1} documents/s",
            data.corpus.len(),
            secs,
            data.corpus.len() as f64 / secs
        ),
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn judged(pairs: &[(&str, f64)]) -> HashMap<String, f64> {
        pairs.iter().map(|(id, g)| (id.to_string(), *g)).collect()
    }

    fn ids(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ndcg_and_recall_follow_trec_evals_definitions() {
        let q = judged(&[("a", 1.0), ("b", 1.0)]);
        assert!((ndcg(&ids(&["a", "b", "c"]), &q, 10) - 1.0).abs() < 1e-12);
        // One relevant document at rank 2 of 2 relevant: (1/log2 3) / (1 + 1/log2 3).
        let expected = (1.0 / 3f64.log2()) / (1.0 + 1.0 / 3f64.log2());
        assert!((ndcg(&ids(&["c", "a"]), &q, 10) - expected).abs() < 1e-12);
        assert_eq!(ndcg(&ids(&["c"]), &q, 10), 0.0);
        assert_eq!(recall(&ids(&["c", "a"]), &q, 100), 0.5);
        assert_eq!(recall(&ids(&["c", "a"]), &q, 1), 0.0);
    }
}
