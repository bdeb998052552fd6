//! The data every scenario measures with: deterministic vectors (the same generator as
//! `bench/mastra`'s scripts), clustered ones with their exact top 10, and loading them
//! into a server through MCP `upsert`.
//!
//! It times nothing and writes no report rows.

use anyhow::Result;
use serde_json::{json, Value};

use stride_vectors::client::ChildServer;

/// Deterministic vectors in (-1, 1), never all zero (xorshift; no dependency needed).
pub(crate) fn vectors(seed: u64, n: usize, dim: usize) -> Vec<Vec<f32>> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 + 1e-4
    };
    (0..n).map(|_| (0..dim).map(|_| next()).collect()).collect()
}

pub(crate) async fn load(server: &ChildServer, index: &str, data: &[Vec<f32>], batch: usize) -> Result<()> {
    for (b, chunk) in data.chunks(batch).enumerate() {
        server
            .tool("upsert", upsert_args(index, b * batch, chunk))
            .await?;
    }
    Ok(())
}

/// The arguments of one upsert of `chunk`, whose first row is row `first` of the data.
pub(crate) fn upsert_args(index: &str, first: usize, chunk: &[Vec<f32>]) -> Value {
    let rows: Vec<Value> = chunk
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let n = first + i;
            json!({"id": format!("v{n}"), "vector": v, "metadata": {"group": n % 10, "userId": format!("u{}", n % 100)}})
        })
        .collect();
    let dim = chunk.first().map_or(0, Vec::len);
    json!({"index": index, "create_index": {"dimension": dim}, "vectors": rows})
}

/// `n` vectors and `q` queries around `clusters` random centres (spread 0.15 per
/// coordinate around centres in (-1, 1)), from the same generator as [`vectors`].
pub(crate) fn clustered(
    seed: u64,
    n: usize,
    q: usize,
    dim: usize,
    clusters: usize,
) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let centres = vectors(seed, clusters, dim);
    let noise = vectors(seed + 1, n + q, dim);
    let mut all: Vec<Vec<f32>> = noise
        .into_iter()
        .enumerate()
        .map(|(i, e)| {
            let c = &centres[(i * 7919) % clusters];
            c.iter().zip(e).map(|(c, e)| c + 0.15 * e).collect()
        })
        .collect();
    let queries = all.split_off(n);
    (all, queries)
}

/// Ids of the exact cosine top 10 of `query` (f64, ties to the smaller id as the server).
pub(crate) fn exact_top10(data: &[Vec<f32>], query: &[f32]) -> Vec<String> {
    let norm = |v: &[f32]| v.iter().map(|x| (*x as f64).powi(2)).sum::<f64>().sqrt();
    let qn = norm(query);
    let mut scored: Vec<(f64, String)> = data
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let dot: f64 = v.iter().zip(query).map(|(a, b)| *a as f64 * *b as f64).sum();
            (dot / (norm(v) * qn), format!("v{i}"))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    scored.into_iter().take(10).map(|(_, id)| id).collect()
}
