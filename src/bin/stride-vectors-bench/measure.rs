//! Timing: percentiles and medians, latencies of a call repeated, top-10 search latencies
//! with and without a filter, searches from many clients at once, and the in-process
//! flat-scan floor.
//!
//! It starts no server and chooses no data: callers hand it both.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};

use stride_vectors::client::ChildServer;

use crate::bench::{row, BenchConfig, Row};

pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

/// Start a server on `db` and wait until `index` is no longer loading into memory: the
/// server, the time it took, and `describe_index`'s answer then.
pub(crate) async fn restart(db: &std::path::Path, index: &str) -> Result<(ChildServer, Duration, Value)> {
    let started = Instant::now();
    let server = ChildServer::start(db, &[]).await?;
    loop {
        let d = server.tool("describe_index", json!({"index": index})).await?;
        if d["memory_state"] != "loading" {
            return Ok((server, started.elapsed(), d));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) async fn latencies<F, Fut>(n: usize, mut call: F) -> Result<(Duration, Duration)>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<Value>>,
{
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        call(i).await?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok((percentile(&times, 0.5), percentile(&times, 0.99)))
}

/// Top-10 latency on `engine`, without and with a filter keeping 1/10 of the rows.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn engine_latencies(
    server: &ChildServer,
    cfg: &BenchConfig,
    size: usize,
    dim: usize,
    queries: &[Vec<f32>],
    engine: &str,
    label: &str,
    rows: &mut Vec<Row>,
) -> Result<()> {
    for filtered in [false, true] {
        let (p50, p99) = latencies(cfg.searches, |i| {
            let mut args = json!({"index": "bench", "vector": queries[i % queries.len()], "top_k": 10, "engine": engine});
            if filtered {
                args["filter"] = json!({"group": {"$eq": 3}});
            }
            server.tool("search", args)
        })
        .await?;
        let filter = if filtered {
            "filter (1/10 of rows)"
        } else {
            "no filter"
        };
        rows.push(row(
            format!("search top-10, {size} x {dim}, {label}, {filter}: p50 / p99"),
            format!("{} / {}", ms(p50), ms(p99)),
        ));
    }
    Ok(())
}

/// `streams` clients searching back to back on one server, `total` searches in all:
/// searches per second, and the latency percentiles over every search.
pub(crate) async fn concurrent_searches(
    server: &ChildServer,
    queries: &[Vec<f32>],
    streams: usize,
    total: usize,
) -> Result<(f64, Duration, Duration)> {
    let each = total.div_ceil(streams).max(10);
    let started = Instant::now();
    let runs = (0..streams).map(|s| async move {
        let mut times = Vec::with_capacity(each);
        for i in 0..each {
            let args = json!({"index": "bench", "vector": queries[(s * 7 + i) % queries.len()], "top_k": 10});
            let t = Instant::now();
            server.tool("search", args).await?;
            times.push(t.elapsed());
        }
        Ok::<_, anyhow::Error>(times)
    });
    let mut times: Vec<Duration> = futures::future::try_join_all(runs)
        .await?
        .into_iter()
        .flatten()
        .collect();
    let rate = times.len() as f64 / started.elapsed().as_secs_f64();
    times.sort();
    Ok((rate, percentile(&times, 0.5), percentile(&times, 0.99)))
}

/// One pass of dot products over the vectors as one contiguous f32 array, with the same
/// 8-lane kernel the memory engine uses, on one thread and on every core: the floor that
/// the hardware sets for brute-force search (best of 5 passes).
pub(crate) fn flat_scan(data: &[Vec<f32>], query: &[f32]) -> (Duration, Duration) {
    let dim = query.len();
    let flat: Vec<f32> = data.iter().flatten().copied().collect();
    let pass = |rows: &[f32]| {
        rows.chunks_exact(dim)
            .map(|r| stride_vectors::store::memory::dot(r, query))
            .fold(f32::MIN, f32::max)
    };
    let best_of = |f: &dyn Fn() -> f32| {
        (0..5)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .min()
            .unwrap_or_default()
    };
    let one = best_of(&|| pass(&flat));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let chunk = (data.len().div_ceil(threads)) * dim;
    let all = best_of(&|| {
        std::thread::scope(|s| {
            let parts: Vec<_> = flat
                .chunks(chunk.max(dim))
                .map(|c| s.spawn(move || pass(c)))
                .collect();
            parts
                .into_iter()
                .map(|p| p.join().unwrap_or(f32::MIN))
                .fold(f32::MIN, f32::max)
        })
    });
    (one, all)
}
