//! The `bench` subcommand: speed numbers measured through the real binary, printed as a
//! table and written to `BENCHMARKS.md`. Nothing here is a pass/fail test.
//!
//! Every server-side number goes through [`stride_vectors::client::ChildServer`], i.e. MCP over stdio
//! to a child process on a fresh DuckDB file, as a user would see it. The local embedder and
//! the flat-scan reference run in process. Data is generated from a fixed seed.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use serde_json::{json, Value};

use stride_vectors::client::{ChildServer, LineClient};

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Index sizes for the search benchmark.
    pub sizes: Vec<usize>,
    pub dims: Vec<usize>,
    /// Searches per measurement.
    pub searches: usize,
    /// Runs per throughput figure (the median is reported).
    pub runs: usize,
    /// Also run Mastra's DuckDBVector (`bench/mastra`, Node) on the same data.
    pub mastra: bool,
    /// Vectors per search data set that Mastra loads through its own `upsert`; the rest are
    /// appended straight into its table (its upsert would take over an hour at 100k x 1024).
    pub mastra_upsert_load_max: usize,
    /// Scenarios to run (see [`SCENARIOS`]); empty: all of them.
    pub only: Vec<String>,
    /// A PostgreSQL + pgvector database for the `postgres` scenario (it creates and drops
    /// schemas named `bench_*` there).
    pub postgres: Option<String>,
}

/// Every scenario, by the name `--only` takes.
pub const SCENARIOS: &[&str] = &[
    "relay", "upsert", "same-id", "search", "mixed", "embedder", "mastra", "postgres",
];

impl BenchConfig {
    fn runs(&self, scenario: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|s| s == scenario)
    }
}

/// One row of the report.
struct Row {
    what: String,
    value: String,
}

fn row(what: impl Into<String>, value: impl Into<String>) -> Row {
    Row {
        what: what.into(),
        value: value.into(),
    }
}

/// Deterministic vectors in (-1, 1), never all zero (xorshift; no dependency needed).
fn vectors(seed: u64, n: usize, dim: usize) -> Vec<Vec<f32>> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0 + 1e-4
    };
    (0..n).map(|_| (0..dim).map(|_| next()).collect()).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.total_cmp(b));
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

async fn latencies<F, Fut>(n: usize, mut call: F) -> Result<(Duration, Duration)>
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

async fn load(server: &ChildServer, index: &str, data: &[Vec<f32>], batch: usize) -> Result<()> {
    for (b, chunk) in data.chunks(batch).enumerate() {
        server
            .call("upsert", upsert_args(index, b * batch, chunk))
            .await?;
    }
    Ok(())
}

/// The arguments of one upsert of `chunk`, whose first row is row `first` of the data.
fn upsert_args(index: &str, first: usize, chunk: &[Vec<f32>]) -> Value {
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

async fn upsert_throughput(dir: &Path, cfg: &BenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    for (batch, total) in [(1usize, 2_000usize), (500, 20_000)] {
        let mut rates = Vec::new();
        for run in 0..cfg.runs {
            let server = ChildServer::start(&dir.join(format!("upsert-{batch}-{run}.duckdb")), &[]).await?;
            let data = vectors(run as u64 + 1, total, 384);
            let t = Instant::now();
            load(&server, "bench", &data, batch).await?;
            rates.push(total as f64 / t.elapsed().as_secs_f64());
            server.stop().await?;
        }
        rows.push(row(
            format!("upsert, dim 384, batches of {batch} ({total} vectors)"),
            format!("{:.0} vectors/s", median(rates)),
        ));
    }
    // The same batches, one call at a time, from a client whose request lines are built
    // before the clock starts: the server's own rate, which a light client (Node's
    // `JSON.stringify`, Python's `json`) sees, and not the rmcp client's JSON in this process.
    let (batch, total) = (500usize, 20_000usize);
    let mut rates = Vec::new();
    for run in 0..cfg.runs {
        let mut server = LineClient::start(&dir.join(format!("upsert-lines-{run}.duckdb")), &[]).await?;
        let data = vectors(run as u64 + 1, total, 384);
        let lines: Vec<Vec<u8>> = data
            .chunks(batch)
            .enumerate()
            .map(|(b, chunk)| {
                LineClient::call_line(b as u64 + 1, "upsert", &upsert_args("bench", b * batch, chunk))
            })
            .collect();
        let t = Instant::now();
        for line in &lines {
            server.request(line).await?;
        }
        rates.push(total as f64 / t.elapsed().as_secs_f64());
        server.stop().await?;
    }
    rows.push(row(
        format!("upsert, dim 384, batches of {batch}, one call at a time, request lines built beforehand ({total} vectors)"),
        format!("{:.0} vectors/s", median(rates)),
    ));
    // A bulk loader keeps a few calls in flight: one is parsed while the writer commits
    // another, and the writer folds what waits into one transaction. The requests are built
    // before the clock starts (the client's JSON is not the server's time).
    const IN_FLIGHT: usize = 4;
    let (batch, total) = (500usize, 20_000usize);
    let mut rates = Vec::new();
    for run in 0..cfg.runs {
        let server = ChildServer::start(&dir.join(format!("upsert-flight-{run}.duckdb")), &[]).await?;
        let data = vectors(run as u64 + 1, total, 384);
        let calls: Vec<Value> = data
            .chunks(batch)
            .enumerate()
            .map(|(b, chunk)| upsert_args("bench", b * batch, chunk))
            .collect();
        let t = Instant::now();
        let client = &server;
        let answers: Vec<Result<Value>> = futures::stream::iter(calls)
            .map(|args| client.call("upsert", args))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        rates.push(total as f64 / t.elapsed().as_secs_f64());
        for answer in answers {
            answer?;
        }
        server.stop().await?;
    }
    rows.push(row(
        format!("upsert, dim 384, batches of {batch}, {IN_FLIGHT} calls in flight ({total} vectors)"),
        format!("{:.0} vectors/s", median(rates)),
    ));
    Ok(())
}

async fn search_latency(dir: &Path, cfg: &BenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    for &dim in &cfg.dims {
        for &size in &cfg.sizes {
            let db = dir.join(format!("search-{dim}-{size}.duckdb"));
            let server = ChildServer::start(&db, &[]).await?;
            let data = vectors(7, size, dim);
            let t = Instant::now();
            load(&server, "bench", &data, 1000.min(3_000_000 / (dim * 10))).await?;
            rows.push(row(
                format!("load {size} x {dim} through MCP upsert"),
                format!("{:.0} vectors/s", size as f64 / t.elapsed().as_secs_f64()),
            ));
            server.stop().await?;

            // A fresh start measures the background load of the in-memory copy.
            let started = Instant::now();
            let server = ChildServer::start(&db, &[]).await?;
            let described = loop {
                let d = server.call("describe_index", json!({"index": "bench"})).await?;
                if d["memory_state"] != "loading" {
                    break d;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            };
            rows.push(row(
                format!(
                    "restart to in-memory copy ready, {size} x {dim} ({})",
                    described["memory_state"]
                ),
                ms(started.elapsed()),
            ));
            rows.push(row(
                format!("memory of the in-memory copy, {size} x {dim}"),
                format!(
                    "{:.1} MiB",
                    described["memory_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
                ),
            ));
            let stats = server.call("stats", json!({})).await?;
            let mib = |v: &Value| {
                v.as_f64()
                    .map_or("n/a".to_string(), |b| format!("{:.1} MiB", b / 1048576.0))
            };
            rows.push(row(
                format!(
                    "owner memory after a restart, {size} x {dim} loaded ({:.1} MiB of raw vectors): resident / DuckDB's own",
                    (size * dim * 4) as f64 / 1048576.0
                ),
                format!("{} / {}", mib(&stats["resident_bytes"]), mib(&stats["duckdb_memory_bytes"])),
            ));
            let queries = vectors(99, 50, dim);
            // The DuckDB engine inside this server is the fallback (a search before the copy
            // is loaded, an index over the memory budget): DuckDB keeps only 256 MiB here.
            for (engine, label) in [("memory", "memory engine"), ("duckdb", FALLBACK)] {
                engine_latencies(&server, cfg, size, dim, &queries, engine, label, rows).await?;
            }
            for streams in [1usize, 8] {
                let (rate, p50, p99) = concurrent_searches(&server, &queries, streams, cfg.searches).await?;
                rows.push(row(
                    format!("search top-10, {size} x {dim}, memory engine, no filter, {streams} at once: throughput, p50 / p99"),
                    format!("{rate:.0} searches/s, {} / {}", ms(p50), ms(p99)),
                ));
            }
            server.stop().await?;
            // The DuckDB engine as the engine a user chose (`--search-engine duckdb`), with
            // DuckDB's own memory limit: what compares with Mastra's `DuckDBVector`.
            let server = ChildServer::start(&db, &["--search-engine", "duckdb"]).await?;
            engine_latencies(&server, cfg, size, dim, &queries, "duckdb", "duckdb engine", rows).await?;
            let (one, all) = flat_scan(&data, &queries[0]);
            rows.push(row(
                format!("flat f32 scan reference, {size} x {dim}, in process: 1 thread / all cores"),
                format!("{} / {}", ms(one), ms(all)),
            ));
            server.stop().await?;
        }
    }
    Ok(())
}

/// The PostgreSQL back-end on the same data as `search`: upsert rate with one process and
/// with three writing at once, exact search, and HNSW search with its recall@10 against
/// the exact answer (computed here, in f64).
async fn postgres(dir: &Path, cfg: &BenchConfig, url: &str, rows: &mut Vec<Row>) -> Result<()> {
    for &dim in &cfg.dims {
        for &size in &cfg.sizes {
            let schema = format!("bench_{dim}_{size}");
            let flags = ["--database", url, "--pg-schema", schema.as_str()];
            let db = dir.join(format!("pg-{dim}-{size}.duckdb"));
            let server = ChildServer::start(&db, &flags).await?;
            let _ = server.call("delete_index", json!({"index": "bench"})).await?;
            let data = vectors(7, size, dim);
            let t = Instant::now();
            load(&server, "bench", &data, 500).await?;
            rows.push(row(
                format!("PostgreSQL: load {size} x {dim} through MCP upsert, batches of 500, 1 process"),
                format!("{:.0} vectors/s", size as f64 / t.elapsed().as_secs_f64()),
            ));
            let queries = vectors(99, 50, dim);
            engine_latencies(
                &server,
                cfg,
                size,
                dim,
                &queries,
                "postgres",
                "PostgreSQL exact",
                rows,
            )
            .await?;
            let t = Instant::now();
            server
                .call("create_index", json!({"index": "bench", "dimension": dim, "ann": {"type": "hnsw", "m": 16, "ef_construction": 64}}))
                .await?;
            rows.push(row(
                format!("PostgreSQL: build an HNSW index (m 16, ef_construction 64), {size} x {dim}"),
                ms(t.elapsed()),
            ));
            engine_latencies(
                &server,
                cfg,
                size,
                dim,
                &queries,
                "postgres",
                "PostgreSQL HNSW (ef_search 40)",
                rows,
            )
            .await?;
            hnsw_recall(
                &server,
                "bench",
                &data,
                &queries,
                &format!("{size} x {dim}, uniform random vectors"),
                rows,
            )
            .await?;
            server.call("delete_index", json!({"index": "bench"})).await?;
            // Uniform random vectors are HNSW's worst case (every distance is about the
            // same); embeddings have clusters. The same measure on clustered vectors:
            let (data, queries) = clustered(13, size, 50, dim, 1000);
            server
                .call("create_index", json!({"index": "clustered", "dimension": dim, "ann": {"type": "hnsw", "m": 16, "ef_construction": 64}}))
                .await?;
            load(&server, "clustered", &data, 500).await?;
            hnsw_recall(
                &server,
                "clustered",
                &data,
                &queries,
                &format!("{size} x {dim}, 1000 clusters"),
                rows,
            )
            .await?;
            server.call("delete_index", json!({"index": "clustered"})).await?;
            server.stop().await?;
        }
    }
    if cfg.mastra {
        if let Err(e) = mastra_pgvector(cfg, url, rows) {
            rows.push(row("Mastra PgVector", format!("not measured: {e:#}")));
        }
    }
    // Three processes writing one index at once, each its own third of the rows.
    let dim = cfg.dims.first().copied().unwrap_or(384);
    let total = 30_000;
    let schema = format!("bench_writers_{dim}");
    let flags = ["--database", url, "--pg-schema", schema.as_str()];
    for writers in [1usize, 3] {
        let mut servers = Vec::new();
        for w in 0..writers {
            servers.push(ChildServer::start(&dir.join(format!("pgw-{w}.duckdb")), &flags).await?);
        }
        servers[0].call("delete_index", json!({"index": "bench"})).await?;
        servers[0]
            .call("create_index", json!({"index": "bench", "dimension": dim}))
            .await?;
        let data = vectors(11, total, dim);
        let share = total / writers;
        let t = Instant::now();
        let runs = servers.iter().enumerate().map(|(w, s)| {
            let part = &data[w * share..(w + 1) * share];
            async move {
                for (b, chunk) in part.chunks(500).enumerate() {
                    s.call("upsert", upsert_args("bench", w * share + b * 500, chunk))
                        .await?;
                }
                Ok::<_, anyhow::Error>(())
            }
        });
        futures::future::try_join_all(runs).await?;
        let rate = (share * writers) as f64 / t.elapsed().as_secs_f64();
        rows.push(row(
            format!(
                "PostgreSQL: upsert {total} x {dim} in batches of 500, {writers} process(es) writing at once"
            ),
            format!("{rate:.0} vectors/s"),
        ));
        servers[0].call("delete_index", json!({"index": "bench"})).await?;
        for s in servers {
            s.stop().await?;
        }
    }
    Ok(())
}

/// Mastra's `PgVector` (`bench/mastra/pgvector.mjs`, @mastra/pg) on the same data, in a
/// schema of its own.
fn mastra_pgvector(cfg: &BenchConfig, url: &str, rows: &mut Vec<Row>) -> Result<()> {
    let join = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let args = [
        "--connection".to_string(),
        url.to_string(),
        "--schema".into(),
        "bench_mastra".into(),
        "--sizes".into(),
        join(&cfg.sizes),
        "--dims".into(),
        join(&cfg.dims),
        "--searches".into(),
        cfg.searches.to_string(),
    ];
    node_report("pgvector.mjs", &args, rows)
}

/// Recall@10 of the HNSW search of `index` against the exact answer, at three `ef_search`.
async fn hnsw_recall(
    server: &ChildServer,
    index: &str,
    data: &[Vec<f32>],
    queries: &[Vec<f32>],
    label: &str,
    rows: &mut Vec<Row>,
) -> Result<()> {
    for ef in [40u32, 100, 400] {
        let mut found = 0usize;
        for q in queries {
            let r = server
                .call(
                    "search",
                    json!({"index": index, "vector": q, "top_k": 10, "ef_search": ef}),
                )
                .await?;
            let exact = exact_top10(data, q);
            found += r["results"].as_array().map_or(0, |hits| {
                hits.iter()
                    .filter(|h| exact.iter().any(|id| h["id"] == *id))
                    .count()
            });
        }
        rows.push(row(
            format!("PostgreSQL HNSW recall@10 against exact, {label}, ef_search {ef}"),
            format!("{:.3}", found as f64 / (queries.len() * 10) as f64),
        ));
    }
    Ok(())
}

/// `n` vectors and `q` queries around `clusters` random centres (spread 0.15 per
/// coordinate around centres in (-1, 1)), from the same generator as [`vectors`].
fn clustered(seed: u64, n: usize, q: usize, dim: usize, clusters: usize) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
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
fn exact_top10(data: &[Vec<f32>], query: &[f32]) -> Vec<String> {
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

/// The label of the DuckDB engine measured inside a memory-engine server.
const FALLBACK: &str = "duckdb engine as the fallback of a memory-engine server (DuckDB's cache 256 MiB)";

/// Top-10 latency on `engine`, without and with a filter keeping 1/10 of the rows.
#[allow(clippy::too_many_arguments)]
async fn engine_latencies(
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
            server.call("search", args)
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
async fn concurrent_searches(
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
            server.call("search", args).await?;
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

/// The seed scenario of Stride's bug: 4 parallel upserts of one id, 20 rounds, in one
/// process and across two processes (owner and relay). Counts errors.
async fn same_id_writers(dir: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let db = dir.join("same-id.duckdb");
    let owner = ChildServer::start(&db, &[]).await?;
    wait_role(&owner, "owner").await?;
    let relay = ChildServer::start(&db, &[]).await?;
    wait_role(&relay, "relay").await?;
    owner
        .call("create_index", json!({"index": "p", "dimension": 4}))
        .await?;
    let (mut one, mut two, mut attempts) = (0usize, 0usize, 0usize);
    for round in 0..20 {
        let args = |w: usize| json!({"index": "p", "vectors": [{"id": "same", "vector": [round as f32 + 1.0, w as f32, 1, 1]}]});
        let single = futures::future::join_all((0..4).map(|w| owner.call("upsert", args(w)))).await;
        one += single.iter().filter(|r| r.is_err()).count();
        let across = futures::future::join_all((0..4).map(|w| {
            let server = if w % 2 == 0 { &owner } else { &relay };
            server.call("upsert", args(w))
        }))
        .await;
        two += across.iter().filter(|r| r.is_err()).count();
        attempts += 4;
    }
    rows.push(row(
        "4 parallel upserts of one id x 20 rounds, one process: errors",
        format!("{one} / {attempts}"),
    ));
    rows.push(row(
        "same, two processes (owner + relay): errors",
        format!("{two} / {attempts}"),
    ));
    relay.stop().await?;
    owner.stop().await?;
    Ok(())
}

/// Single-vector upserts into 50,000 x 384 rows with metadata: alone, then while the same
/// server runs filtered searches in a loop, then unfiltered ones. A search must never make
/// a commit wait (the in-memory copy is published as snapshots).
async fn mixed_load(dir: &Path, cfg: &BenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    const SIZE: usize = 50_000;
    const DIM: usize = 384;
    let writes = cfg.searches.max(100);
    let db = dir.join("mixed.duckdb");
    let server = ChildServer::start(&db, &[]).await?;
    load(&server, "bench", &vectors(11, SIZE, DIM), 1000).await?;
    loop {
        let d = server.call("describe_index", json!({"index": "bench"})).await?;
        if d["memory_state"] != "loading" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fresh = vectors(12, writes, DIM);
    let queries = vectors(13, 50, DIM);
    for background in [
        "nothing else",
        "filtered searches in a loop",
        "unfiltered searches in a loop",
    ] {
        let stop = std::sync::atomic::AtomicBool::new(false);
        let searched = std::sync::atomic::AtomicUsize::new(0);
        let searches = async {
            if background == "nothing else" {
                return Ok::<(), anyhow::Error>(());
            }
            let mut i = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut args = json!({"index": "bench", "vector": queries[i % queries.len()], "top_k": 10});
                if background.starts_with("filtered") {
                    args["filter"] = json!({"group": {"$eq": 3}});
                }
                server.call("search", args).await?;
                searched.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                i += 1;
            }
            Ok(())
        };
        let upserts = async {
            // Let the search loop get going first.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let result = latencies(writes, |i| {
                let id = format!("w{}", i % 1000);
                server.call(
                    "upsert",
                    json!({"index": "bench", "vectors": [{"id": id, "vector": fresh[i], "metadata": {"group": i % 10}}]}),
                )
            })
            .await;
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            result
        };
        let (searched_ok, timed) = futures::join!(searches, upserts);
        searched_ok?;
        let (p50, p99) = timed?;
        rows.push(row(
            format!("single-vector upsert into {SIZE} x {DIM}, while {background}: p50 / p99 ({writes} writes, {} searches meanwhile)", searched.load(std::sync::atomic::Ordering::Relaxed)),
            format!("{} / {}", ms(p50), ms(p99)),
        ));
    }
    server.stop().await?;
    Ok(())
}

/// Mastra's DuckDBVector measured by `bench/mastra/bench.mjs` on the same generated data.
fn mastra(dir: &Path, cfg: &BenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    let join = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let args = [
        "--sizes".to_string(),
        join(&cfg.sizes),
        "--dims".into(),
        join(&cfg.dims),
        "--searches".into(),
        cfg.searches.to_string(),
        "--runs".into(),
        cfg.runs.to_string(),
        "--upsert-load-max".into(),
        cfg.mastra_upsert_load_max.to_string(),
        "--dir".into(),
        dir.join("mastra").display().to_string(),
    ];
    node_report("bench.mjs", &args, rows)
}

/// Run a `bench/mastra` script (installing its packages first if needed) and add the rows
/// of the one JSON report it prints.
fn node_report(script: &str, args: &[String], rows: &mut Vec<Row>) -> Result<()> {
    let project = Path::new("bench/mastra");
    anyhow::ensure!(
        project.join(script).exists(),
        "run from the repository root (bench/mastra/{script})"
    );
    if !project.join("node_modules/@mastra/pg").exists() {
        let status = std::process::Command::new("npm")
            .arg("ci")
            .current_dir(project)
            .status()?;
        anyhow::ensure!(status.success(), "npm ci in bench/mastra failed");
    }
    let out = std::process::Command::new("node")
        .arg(script)
        .args(args)
        .current_dir(project)
        .stderr(std::process::Stdio::inherit())
        .output()?;
    anyhow::ensure!(out.status.success(), "{script} exited with {}", out.status);
    let report: Value = serde_json::from_slice(&out.stdout).with_context(|| format!("{script} output"))?;
    for r in report["rows"].as_array().into_iter().flatten() {
        rows.push(row(
            r["what"].as_str().unwrap_or("?"),
            r["value"].as_str().unwrap_or("?"),
        ));
    }
    Ok(())
}

/// One pass of dot products over the vectors as one contiguous f32 array, with the same
/// 8-lane kernel the memory engine uses, on one thread and on every core: the floor that
/// the hardware sets for brute-force search (best of 5 passes).
fn flat_scan(data: &[Vec<f32>], query: &[f32]) -> (Duration, Duration) {
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

async fn relay_latency(dir: &Path, cfg: &BenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    let db = dir.join("relay.duckdb");
    let owner = ChildServer::start(&db, &[]).await?;
    wait_role(&owner, "owner").await?;
    let relay = ChildServer::start(&db, &[]).await?;
    wait_role(&relay, "relay").await?;
    owner.call("upsert", json!({"index": "small", "create_index": {"dimension": 4}, "vectors": [{"id": "a", "vector": [1, 2, 3, 4]}]})).await?;
    let search = json!({"index": "small", "vector": [1, 2, 3, 4], "top_k": 1});
    let n = cfg.searches.max(200);
    let (d50, d99) = latencies(n, |_| owner.call("search", search.clone())).await?;
    let (r50, r99) = latencies(n, |_| relay.call("search", search.clone())).await?;
    let (t50, t99) = latencies(n, |_| owner.call("list_indexes", json!({}))).await?;
    rows.push(row(
        "MCP round trip, list_indexes, direct: p50 / p99",
        format!("{} / {}", ms(t50), ms(t99)),
    ));
    rows.push(row(
        "small search, direct: p50 / p99",
        format!("{} / {}", ms(d50), ms(d99)),
    ));
    rows.push(row(
        "small search, through a relay: p50 / p99",
        format!("{} / {}", ms(r50), ms(r99)),
    ));
    rows.push(row(
        "added latency of a relayed call (p50)",
        ms(r50.saturating_sub(d50)),
    ));

    let killed = Instant::now();
    owner.kill().await?;
    loop {
        if relay.call("list_indexes", json!({})).await.is_ok() {
            break;
        }
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(60),
            "no take-over within 60 s"
        );
    }
    rows.push(row(
        "owner kill -9 to first successful call through the relay",
        ms(killed.elapsed()),
    ));
    relay.stop().await?;
    Ok(())
}

async fn wait_role(server: &ChildServer, role: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .call("stats", json!({}))
        .await
        .is_ok_and(|s| s["role"] == role)
    {
        anyhow::ensure!(Instant::now() < deadline, "process never became {role}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn embedder_speed(rows: &mut Vec<Row>) -> Result<()> {
    use stride_vectors::embed::local::LocalEmbedder;
    use stride_vectors::embed::Embedder;
    let dir = LocalEmbedder::find_model_dir(None).map_err(|e| anyhow::anyhow!("{e}"))?;
    let t = Instant::now();
    let model = LocalEmbedder::load(&dir).map_err(|e| anyhow::anyhow!("{e}"))?;
    rows.push(row("local model load (all-MiniLM-L6-v2)", ms(t.elapsed())));
    let texts: Vec<String> = (0..128)
        .map(|i| format!("Education: Master. Field: subject {i}. Skills: python, sql. Location Lyon. Goals: laptop ({i}00)"))
        .collect();
    for batch in [1usize, 32] {
        let t = Instant::now();
        for chunk in texts.chunks(batch) {
            model.embed(chunk).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        rows.push(row(
            format!("local embedder, batch {batch}"),
            format!("{:.0} texts/s", texts.len() as f64 / t.elapsed().as_secs_f64()),
        ));
    }
    Ok(())
}

/// Run everything; returns the Markdown report (also printed by the caller).
pub async fn run(cfg: &BenchConfig) -> Result<String> {
    if let Some(unknown) = cfg.only.iter().find(|s| !SCENARIOS.contains(&s.as_str())) {
        anyhow::bail!(
            "--only: unknown scenario {unknown:?}; the scenarios are {}",
            SCENARIOS.join(", ")
        );
    }
    let dir = tempfile_dir()?;
    let mut rows = Vec::new();
    if cfg.runs("relay") {
        relay_latency(dir.path(), cfg, &mut rows)
            .await
            .context("relay latency")?;
    }
    if cfg.runs("upsert") {
        upsert_throughput(dir.path(), cfg, &mut rows)
            .await
            .context("upsert throughput")?;
    }
    if cfg.runs("same-id") {
        same_id_writers(dir.path(), &mut rows)
            .await
            .context("same-id writers")?;
    }
    if cfg.runs("search") {
        search_latency(dir.path(), cfg, &mut rows)
            .await
            .context("search latency")?;
    }
    if cfg.runs("mixed") {
        mixed_load(dir.path(), cfg, &mut rows)
            .await
            .context("writes under searches")?;
    }
    if cfg.runs("embedder") {
        if let Err(e) = embedder_speed(&mut rows).await {
            rows.push(row("local embedder", format!("not measured: {e:#}")));
        }
    }
    if cfg.runs("postgres") {
        match &cfg.postgres {
            Some(url) => postgres(dir.path(), cfg, url, &mut rows)
                .await
                .context("PostgreSQL")?,
            None if !cfg.only.is_empty() => {
                rows.push(row("PostgreSQL back-end", "not measured: give --postgres <url>"))
            }
            None => {}
        }
    }
    if cfg.mastra && cfg.runs("mastra") {
        std::fs::create_dir_all(dir.path().join("mastra"))?;
        if let Err(e) = mastra(dir.path(), cfg, &mut rows) {
            rows.push(row("Mastra DuckDBVector", format!("not measured: {e:#}")));
        }
    }
    Ok(report(cfg, &rows))
}

fn report(cfg: &BenchConfig, rows: &[Row]) -> String {
    let list = |v: &[usize]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(",");
    let mut out = String::from("# stride-vectors benchmarks\n\n");
    out += &format!(
        "Machine: {} cores, {} MiB memory. Command: `stride-vectors-bench --sizes {} --dims {} --searches {} --runs {}{}{}` \
         from the repository root. Throughputs are the median of {} runs; latencies are percentiles over {} calls.\n\n",
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        memory_mib(),
        list(&cfg.sizes),
        list(&cfg.dims),
        cfg.searches,
        cfg.runs,
        if cfg.mastra {
            format!(" --mastra-upsert-load-max {}", cfg.mastra_upsert_load_max)
        } else {
            " --no-mastra".to_string()
        },
        if cfg.only.is_empty() {
            String::new()
        } else {
            format!(" --only {}", cfg.only.join(","))
        },
        cfg.runs,
        cfg.searches,
    );
    if rows.iter().any(|r| r.what.starts_with(MASTRA)) {
        out += &side_by_side(cfg, rows);
    }
    out += "## Every measurement\n\n| measurement | result |\n|---|---|\n";
    for r in rows {
        out += &format!("| {} | {} |\n", r.what, r.value);
    }
    out
}

/// The prefix `bench/mastra/bench.mjs` puts on its rows.
const MASTRA: &str = "Mastra DuckDBVector: ";

/// The same measurements of both sides next to each other. Our side goes through MCP over
/// stdio (JSON encoding of the query vector included); Mastra's runs in its own process.
fn side_by_side(cfg: &BenchConfig, rows: &[Row]) -> String {
    let value = |what: &str| {
        rows.iter()
            .find(|r| r.what == what)
            .map_or("not measured", |r| r.value.as_str())
    };
    let mastra = |what: &str| value(&format!("{MASTRA}{what}"));
    let mut out = String::from(
        "## Side by side with Mastra's DuckDBVector\n\n\
         Same generated vectors, ids, metadata and queries on both sides. stride-vectors is \
         measured through MCP over stdio, from a client process; Mastra's `DuckDBVector` is \
         called in its own Node process, with no transport at all.\n\n\
         | search top-10, p50 / p99 | stride-vectors, memory engine | stride-vectors, DuckDB engine (`--search-engine duckdb`) | stride-vectors, DuckDB engine as the memory engine's fallback (256 MiB cache) | Mastra DuckDBVector |\n\
         |---|---|---|---|---|\n",
    );
    for &dim in &cfg.dims {
        for &size in &cfg.sizes {
            for label in ["no filter", "filter (1/10 of rows)"] {
                let ours = |engine: &str| {
                    value(&format!(
                        "search top-10, {size} x {dim}, {engine}, {label}: p50 / p99"
                    ))
                };
                out += &format!(
                    "| {size} x {dim}, {label} | {} | {} | {} | {} |\n",
                    ours("memory engine"),
                    ours("duckdb engine"),
                    ours(FALLBACK),
                    mastra(&format!("search top-10, {size} x {dim}, {label}: p50 / p99")),
                );
            }
        }
    }
    out += "\n| writes and processes | stride-vectors | Mastra DuckDBVector |\n|---|---|---|\n";
    for what in [
        "upsert, dim 384, batches of 1 (2000 vectors)",
        "upsert, dim 384, batches of 500 (20000 vectors)",
        "upsert, dim 384, batches of 500, one call at a time, request lines built beforehand (20000 vectors)",
        "upsert, dim 384, batches of 500, 4 calls in flight (20000 vectors)",
        "4 parallel upserts of one id x 20 rounds, one process: errors",
    ] {
        out += &format!("| {what} | {} | {} |\n", value(what), mastra(what));
    }
    out += &format!(
        "| a second process on the same file | {} errors in the owner + relay same-id race | {} |\n",
        value("same, two processes (owner + relay): errors"),
        mastra("second process opens the same file while the first holds it"),
    );
    out += &format!(
        "| trivial call, p50 / p99 | {} (MCP round trip of `list_indexes`) | {} (`listIndexes`, in process) |\n\n",
        value("MCP round trip, list_indexes, direct: p50 / p99"),
        mastra("listIndexes, in process: p50 / p99"),
    );
    out
}

fn memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024)
}

/// A scratch directory removed when dropped.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir() -> Result<ScratchDir> {
    let dir = std::env::temp_dir().join(format!("stride-vectors-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(ScratchDir(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn side_by_side_puts_each_sides_number_in_its_column() {
        let cfg = BenchConfig {
            sizes: vec![10_000],
            dims: vec![384],
            searches: 10,
            runs: 1,
            mastra: true,
            mastra_upsert_load_max: 10_000,
            only: Vec::new(),
            postgres: None,
        };
        let rows = vec![
            row(
                "search top-10, 10000 x 384, memory engine, no filter: p50 / p99",
                "1 ms / 2 ms",
            ),
            row(
                "search top-10, 10000 x 384, duckdb engine, no filter: p50 / p99",
                "3 ms / 4 ms",
            ),
            row(
                format!("search top-10, 10000 x 384, {FALLBACK}, no filter: p50 / p99"),
                "7 ms / 8 ms",
            ),
            row(
                format!("{MASTRA}search top-10, 10000 x 384, no filter: p50 / p99"),
                "5 ms / 6 ms",
            ),
            row(
                "upsert, dim 384, batches of 500 (20000 vectors)",
                "3000 vectors/s",
            ),
            row(
                format!("{MASTRA}upsert, dim 384, batches of 500 (20000 vectors)"),
                "67 vectors/s",
            ),
        ];
        let md = report(&cfg, &rows);
        assert!(md.contains("--mastra-upsert-load-max 10000"), "{md}");
        assert!(
            md.contains("| 10000 x 384, no filter | 1 ms / 2 ms | 3 ms / 4 ms | 7 ms / 8 ms | 5 ms / 6 ms |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| 10000 x 384, filter (1/10 of rows) | not measured | not measured | not measured | not measured |"
            ),
            "{md}"
        );
        assert!(
            md.contains(
                "| upsert, dim 384, batches of 500 (20000 vectors) | 3000 vectors/s | 67 vectors/s |"
            ),
            "{md}"
        );
        assert!(md.contains("## Every measurement"), "{md}");
        // Without Mastra rows there is no comparison table.
        assert!(!report(&cfg, &rows[..2]).contains("Side by side"));
    }
}
