//! A long text through `embed` (`--only chunks`): a document of about 20,000 words (the
//! abstracts of a BEIR corpus joined, given `--beir`, else sentences of made-up words),
//! embedded by the local model in chunks; the time, the chunks and the embedder's texts it
//! took; then one sentence in its middle edited, and what that cost (texts embedded,
//! chunks that kept their vector); and whether searches for its last sentence find it.
//!
//! It needs the local model on disk (as `--only embedder`).

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use stride_vectors::client::ChildServer;

use crate::bench::{row, Row};

const INDEX: &str = "long";
const WORDS: usize = 20_000;

/// About `WORDS` words of sentences: from the corpus of the BEIR dataset in `beir` when
/// given, else made up.
fn long_text(beir: Option<&Path>) -> Result<(String, &'static str)> {
    let mut sentences: Vec<String> = Vec::new();
    if let Some(dir) = beir {
        let path = dir.join("corpus.jsonl");
        let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let doc: Value = serde_json::from_str(line)?;
            let abstract_text = doc["text"].as_str().unwrap_or_default().trim();
            if !abstract_text.is_empty() {
                sentences.push(abstract_text.to_string());
            }
            if sentences
                .iter()
                .map(|s| s.split_whitespace().count())
                .sum::<usize>()
                >= WORDS
            {
                break;
            }
        }
        return Ok((sentences.join("\n\n"), "abstracts of the BEIR corpus, joined"));
    }
    let mut n = 0usize;
    let mut words = 0;
    while words < WORDS {
        let len = 8 + n % 17;
        let sentence: Vec<String> = (0..len)
            .map(|i| crate::text::word((n * 31 + i * 7) % 5000))
            .collect();
        let mut sentence = sentence.join(" ");
        sentence[..1].make_ascii_uppercase();
        sentences.push(format!("{sentence}."));
        words += len;
        n += 1;
    }
    Ok((sentences.join(" "), "sentences of made-up words"))
}

fn stat(stats: &Value, key: &str) -> u64 {
    stats[key].as_u64().unwrap_or(0)
}

pub(crate) async fn long_text_embedding(dir: &Path, beir: Option<&Path>, rows: &mut Vec<Row>) -> Result<()> {
    let (text, source) = long_text(beir)?;
    let words = text.split_whitespace().count();
    let db = dir.join("chunks.duckdb");
    let _ = std::fs::remove_file(&db);
    let server = ChildServer::start(&db, &["--eager-model"]).await?;
    let before = server.tool("stats", json!({})).await?;
    let t = Instant::now();
    let r = server
        .tool(
            "embed",
            json!({"index": INDEX, "wait": true, "documents": [{"id": "doc", "text": text}]}),
        )
        .await?;
    let took = t.elapsed();
    anyhow::ensure!(r["documents"][0]["status"] == "indexed", "not indexed: {r}");
    let after = server.tool("stats", json!({})).await?;
    let fetched = server
        .tool("fetch", json!({"index": INDEX, "ids": ["doc"]}))
        .await?;
    let chunks = fetched["vectors"][0]["chunks"].as_array().map_or(1, Vec::len);
    let texts = stat(&after, "texts_embedded") - stat(&before, "texts_embedded");
    rows.push(row(
        format!("long text, {words} words ({source}): embed, wait: true"),
        format!(
            "{:.2} s: {chunks} chunks, {texts} texts embedded in {} embedder calls ({:.1} chunks/s)",
            took.as_secs_f64(),
            stat(&after, "embedding_calls") - stat(&before, "embedding_calls"),
            chunks as f64 / took.as_secs_f64()
        ),
    ));
    // One sentence in the middle changes.
    let middle = text.len() / 2;
    let at = text[middle..].find(". ").map_or(middle, |i| middle + i);
    let edited = format!(
        "{} The committee later revised this figure entirely{}",
        &text[..at],
        &text[at..]
    );
    let before = after;
    let t = Instant::now();
    server
        .tool(
            "embed",
            json!({"index": INDEX, "wait": true, "documents": [{"id": "doc", "text": edited}]}),
        )
        .await?;
    let took = t.elapsed();
    let after = server.tool("stats", json!({})).await?;
    let fetched = server
        .tool("fetch", json!({"index": INDEX, "ids": ["doc"]}))
        .await?;
    let chunks = fetched["vectors"][0]["chunks"].as_array().map_or(1, Vec::len);
    rows.push(row(
        "long text, one sentence in its middle edited: embed again, wait: true",
        format!(
            "{:.2} s: {} texts embedded, {} of {chunks} chunks kept their vector",
            took.as_secs_f64(),
            stat(&after, "texts_embedded") - stat(&before, "texts_embedded"),
            stat(&after, "chunks_reused") - stat(&before, "chunks_reused"),
        ),
    ));
    // Its last sentence, searched for: found, by the chunk that holds it.
    let last = edited
        .trim_end()
        .rsplit_terminator(['.', '\n'])
        .map(str::trim)
        .find(|s| s.split_whitespace().count() >= 5)
        .unwrap_or_default()
        .to_string();
    for mode in ["vector", "keyword", "hybrid"] {
        let r = server
            .tool(
                "search",
                json!({"index": INDEX, "query": last, "mode": mode, "top_k": 1}),
            )
            .await?;
        let hit = &r["results"][0];
        rows.push(row(
            format!("long text, its last sentence searched ({mode})"),
            format!(
                "hit {} by chunk {} of {}",
                hit["id"], hit["metadata"]["chunk"]["n"], hit["metadata"]["chunk"]["count"]
            ),
        ));
    }
    server.close().await?;
    Ok(())
}
