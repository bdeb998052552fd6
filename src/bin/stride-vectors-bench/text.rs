//! Keyword and hybrid search speed (`--only text`): documents of about 100 words (Zipf
//! over a 20,000-word made-up vocabulary) with random 384-dimensional vectors, loaded through
//! `upsert` with `metadata.text`; top-10 latencies of vector, keyword and hybrid searches
//! through MCP (memory engine); the keyword index's memory; and the time from a restart to
//! the in-memory copy ready, with and without the keyword index (the same rows in an index
//! that keeps no text).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use stride_vectors::client::ChildServer;

use crate::bench::{row, BenchConfig, Row};
use crate::data::vectors;
use crate::measure::{ms, percentile, restart};

const DIM: usize = 384;
const VOCABULARY: usize = 20_000;
const SYLLABLES: [&str; 20] = [
    "ka", "lo", "mi", "ne", "ru", "sa", "te", "vo", "zi", "po", "da", "fe", "gu", "ho", "ji", "ku", "le",
    "ma", "no", "pi",
];

/// The `n`th word of the made-up vocabulary (its syllables are the digits of `n` in base 20).
pub(crate) fn word(mut n: usize) -> String {
    let mut w = String::new();
    loop {
        w.push_str(SYLLABLES[n % 20]);
        n /= 20;
        if n == 0 {
            return w;
        }
    }
}

/// A word drawn with Zipf-like frequencies: word k about as often as 1/k.
fn zipf_word(rng: &mut StdRng) -> String {
    let x: f64 = rng.random();
    word(((VOCABULARY as f64).powf(x) as usize).saturating_sub(1))
}

fn document(rng: &mut StdRng) -> String {
    let len = rng.random_range(80..120);
    (0..len).map(|_| zipf_word(rng)).collect::<Vec<_>>().join(" ")
}

async fn load(server: &ChildServer, index: &str, size: usize, text_field: Value) -> Result<()> {
    server
        .tool(
            "create_index",
            json!({"index": index, "dimension": DIM, "text_field": text_field}),
        )
        .await?;
    let data = vectors(11, size, DIM);
    let mut rng = StdRng::seed_from_u64(27);
    for (b, chunk) in data.chunks(500).enumerate() {
        let rows: Vec<Value> = chunk
            .iter()
            .enumerate()
            .map(|(i, v)| json!({"id": format!("d{}", b * 500 + i), "vector": v, "metadata": {"text": document(&mut rng)}}))
            .collect();
        server
            .tool("upsert", json!({"index": index, "vectors": rows}))
            .await?;
    }
    Ok(())
}

async fn latencies(server: &ChildServer, calls: Vec<Value>) -> Result<(Duration, Duration)> {
    let mut times = Vec::with_capacity(calls.len());
    for call in calls {
        let t = Instant::now();
        server.tool("search", call).await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

pub(crate) async fn text_search(dir: &Path, cfg: &BenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    for &size in &cfg.sizes {
        let with = dir.join(format!("text-{size}.duckdb"));
        let without = dir.join(format!("text-{size}-none.duckdb"));
        for (db, field) in [(&with, json!("text")), (&without, Value::Null)] {
            let server = ChildServer::start(db, &[]).await?;
            let t = Instant::now();
            load(&server, "docs", size, field.clone()).await?;
            rows.push(row(
                format!("load {size} documents of ~100 words x {DIM} through upsert, text_field {field}"),
                format!("{:.0} rows/s", size as f64 / t.elapsed().as_secs_f64()),
            ));
            server.close().await?;
        }
        let (server, bare, _) = restart(&without, "docs").await?;
        server.close().await?;
        let (server, full, described) = restart(&with, "docs").await?;
        rows.push(row(
            format!("restart to in-memory copy ready, {size} documents: with keyword index / vectors only"),
            format!("{} / {}", ms(full), ms(bare)),
        ));
        rows.push(row(
            format!("keyword index memory, {size} documents of ~100 words"),
            format!(
                "{:.1} MiB (whole in-memory copy {:.1} MiB)",
                described["keyword_bytes"].as_f64().unwrap_or(0.0) / 1048576.0,
                described["memory_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
            ),
        ));
        let queries = vectors(99, cfg.searches, DIM);
        let mut rng = StdRng::seed_from_u64(5);
        let texts: Vec<String> = (0..cfg.searches)
            .map(|_| {
                (0..rng.random_range(2..6))
                    .map(|_| zipf_word(&mut rng))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        let call = |mode: &str, i: usize| {
            let mut c = json!({"index": "docs", "top_k": 10, "mode": mode});
            if mode != "keyword" {
                c["vector"] = json!(queries[i]);
            }
            if mode != "vector" {
                c["query"] = json!(texts[i]);
            }
            c
        };
        let mut p50 = Vec::new();
        for mode in ["vector", "keyword", "hybrid"] {
            let (a, b) = latencies(&server, (0..cfg.searches).map(|i| call(mode, i)).collect()).await?;
            p50.push(a);
            rows.push(row(
                format!("search top-10, {size} documents x {DIM}, {mode}, memory engine: p50 / p99"),
                format!("{} / {}", ms(a), ms(b)),
            ));
        }
        rows.push(row(
            format!("keyword / hybrid p50 over vector p50, {size} documents"),
            format!(
                "{:.2}x / {:.2}x",
                p50[1].as_secs_f64() / p50[0].as_secs_f64(),
                p50[2].as_secs_f64() / p50[0].as_secs_f64()
            ),
        ));
        server.close().await?;
    }
    Ok(())
}
