//! The scenarios on the DuckDB back-end, each a list of report rows: relay latency and
//! take-over, upsert throughput, same-id writers, search latency, writes under searches,
//! and the local embedder's speed.
//!
//! It must not format the report (that is [`crate::report`]); PostgreSQL and Mastra have
//! files of their own.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Result;
use futures::StreamExt;
use serde_json::{json, Value};

use stride_vectors::client::{ChildServer, LineClient};

use crate::bench::{row, BenchConfig, Row};
use crate::data::{load, upsert_args, vectors};
use crate::measure::{concurrent_searches, engine_latencies, flat_scan, latencies, median, ms, restart};
use crate::report::FALLBACK;

pub(crate) async fn upsert_throughput(dir: &Path, cfg: &BenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    for (batch, total) in [(1usize, 2_000usize), (500, 20_000)] {
        let mut rates = Vec::new();
        for run in 0..cfg.runs {
            let server = ChildServer::start(&dir.join(format!("upsert-{batch}-{run}.duckdb")), &[]).await?;
            let data = vectors(run as u64 + 1, total, 384);
            let t = Instant::now();
            load(&server, "bench", &data, batch).await?;
            rates.push(total as f64 / t.elapsed().as_secs_f64());
            server.close().await?;
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
        server.close().await?;
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
            .map(|args| client.tool("upsert", args))
            .buffer_unordered(IN_FLIGHT)
            .collect()
            .await;
        rates.push(total as f64 / t.elapsed().as_secs_f64());
        for answer in answers {
            answer?;
        }
        server.close().await?;
    }
    rows.push(row(
        format!("upsert, dim 384, batches of {batch}, {IN_FLIGHT} calls in flight ({total} vectors)"),
        format!("{:.0} vectors/s", median(rates)),
    ));
    Ok(())
}

pub(crate) async fn search_latency(dir: &Path, cfg: &BenchConfig, rows: &mut Vec<Row>) -> Result<()> {
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
            server.close().await?;

            // A fresh start measures the background load of the in-memory copy.
            let (server, loaded, described) = restart(&db, "bench").await?;
            rows.push(row(
                format!(
                    "restart to in-memory copy ready, {size} x {dim} ({})",
                    described["memory_state"]
                ),
                ms(loaded),
            ));
            rows.push(row(
                format!("memory of the in-memory copy, {size} x {dim}"),
                format!(
                    "{:.1} MiB",
                    described["memory_bytes"].as_f64().unwrap_or(0.0) / 1048576.0
                ),
            ));
            let stats = server.tool("stats", json!({})).await?;
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
            server.close().await?;
            // The DuckDB engine as the engine a user chose (`--search-engine duckdb`), with
            // DuckDB's own memory limit: what compares with Mastra's `DuckDBVector`.
            let server = ChildServer::start(&db, &["--search-engine", "duckdb"]).await?;
            engine_latencies(&server, cfg, size, dim, &queries, "duckdb", "duckdb engine", rows).await?;
            let (one, all) = flat_scan(&data, &queries[0]);
            rows.push(row(
                format!("flat f32 scan reference, {size} x {dim}, in process: 1 thread / all cores"),
                format!("{} / {}", ms(one), ms(all)),
            ));
            server.close().await?;
        }
    }
    Ok(())
}

/// The seed scenario of Stride's bug: 4 parallel upserts of one id, 20 rounds, in one
/// process and across two processes (owner and relay). Counts errors.
pub(crate) async fn same_id_writers(dir: &Path, rows: &mut Vec<Row>) -> Result<()> {
    let db = dir.join("same-id.duckdb");
    let owner = ChildServer::start(&db, &[]).await?;
    wait_role(&owner, "owner").await?;
    let relay = ChildServer::start(&db, &[]).await?;
    wait_role(&relay, "relay").await?;
    owner
        .tool("create_index", json!({"index": "p", "dimension": 4}))
        .await?;
    let (mut one, mut two, mut attempts) = (0usize, 0usize, 0usize);
    for round in 0..20 {
        let args = |w: usize| json!({"index": "p", "vectors": [{"id": "same", "vector": [round as f32 + 1.0, w as f32, 1, 1]}]});
        let single = futures::future::join_all((0..4).map(|w| owner.tool("upsert", args(w)))).await;
        one += single.iter().filter(|r| r.is_err()).count();
        let across = futures::future::join_all((0..4).map(|w| {
            let server = if w % 2 == 0 { &owner } else { &relay };
            server.tool("upsert", args(w))
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
    relay.close().await?;
    owner.close().await?;
    Ok(())
}

/// Single-vector upserts into 50,000 x 384 rows with metadata: alone, then while the same
/// server runs filtered searches in a loop, then unfiltered ones. A search must never make
/// a commit wait (the in-memory copy is published as snapshots).
pub(crate) async fn mixed_load(dir: &Path, cfg: &BenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    const SIZE: usize = 50_000;
    const DIM: usize = 384;
    let writes = cfg.searches.max(100);
    let db = dir.join("mixed.duckdb");
    let server = ChildServer::start(&db, &[]).await?;
    load(&server, "bench", &vectors(11, SIZE, DIM), 1000).await?;
    loop {
        let d = server.tool("describe_index", json!({"index": "bench"})).await?;
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
                server.tool("search", args).await?;
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
                server.tool(
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
    server.close().await?;
    Ok(())
}

pub(crate) async fn relay_latency(dir: &Path, cfg: &BenchConfig, rows: &mut Vec<Row>) -> Result<()> {
    let db = dir.join("relay.duckdb");
    let owner = ChildServer::start(&db, &[]).await?;
    wait_role(&owner, "owner").await?;
    let relay = ChildServer::start(&db, &[]).await?;
    wait_role(&relay, "relay").await?;
    owner.tool("upsert", json!({"index": "small", "create_index": {"dimension": 4}, "vectors": [{"id": "a", "vector": [1, 2, 3, 4]}]})).await?;
    let search = json!({"index": "small", "vector": [1, 2, 3, 4], "top_k": 1});
    let n = cfg.searches.max(200);
    let (d50, d99) = latencies(n, |_| owner.tool("search", search.clone())).await?;
    let (r50, r99) = latencies(n, |_| relay.tool("search", search.clone())).await?;
    let (t50, t99) = latencies(n, |_| owner.tool("list_indexes", json!({}))).await?;
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
        if relay.tool("list_indexes", json!({})).await.is_ok() {
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
    relay.close().await?;
    Ok(())
}

async fn wait_role(server: &ChildServer, role: &str) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !server
        .tool("stats", json!({}))
        .await
        .is_ok_and(|s| s["role"] == role)
    {
        anyhow::ensure!(Instant::now() < deadline, "process never became {role}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

pub(crate) async fn embedder_speed(rows: &mut Vec<Row>) -> Result<()> {
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
            format!("local embedder, short sentences, batch {batch}"),
            format!("{:.0} texts/s", texts.len() as f64 / t.elapsed().as_secs_f64()),
        ));
    }
    // Texts of a given length in tokens ([CLS] and [SEP] included): words the tokenizer
    // keeps whole, one token each.
    const WORDS: [&str; 8] = ["student", "money", "rent", "city", "job", "plan", "food", "bank"];
    let peak = matmul_gflops();
    rows.push(row(
        "f32 matrix product, all cores (1024^3, candle): the machine's practical peak",
        format!("{peak:.1} GFLOP/s"),
    ));
    for tokens in [32usize, 128, 256] {
        let texts: Vec<String> = (0..64)
            .map(|i| {
                (0..tokens - 2)
                    .map(|w| WORDS[(i * 7 + w * 3) % WORDS.len()])
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        model
            .embed(&texts[..2])
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let cpu = cpu_seconds();
        let t = Instant::now();
        for chunk in texts.chunks(32) {
            model.embed(chunk).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let wall = t.elapsed().as_secs_f64();
        let busy = cpu.map(|c| (cpu_seconds().unwrap_or(c) - c) / wall);
        let rate = texts.len() as f64 / wall;
        let flops = minilm_flops(tokens);
        rows.push(row(
            format!("local embedder, {tokens}-token texts, batches of 32"),
            format!(
                "{rate:.1} texts/s, {:.0} tokens/s, {:.1} GFLOP/s ({:.2} GFLOP a text; limit at the peak above: {:.0} texts/s){}",
                rate * tokens as f64,
                rate * flops / 1e9,
                flops / 1e9,
                peak * 1e9 / flops,
                busy.map_or(String::new(), |b| format!("; {b:.2} cores busy")),
            ),
        ));
    }
    Ok(())
}

/// Floating-point operations of one all-MiniLM-L6-v2 forward pass over `tokens` tokens: six
/// layers of Q, K, V and output projections (4 x 384 x 384), the feed-forward (2 x 384 x
/// 1536) and attention (scores and weighted sum, 2 x tokens x 384), two operations per
/// multiply-add; layer norms, softmax and GELU are left out (a few percent).
fn minilm_flops(tokens: usize) -> f64 {
    let (h, ff, layers) = (384.0, 1536.0, 6.0);
    let t = tokens as f64;
    let per_token = 4.0 * h * h + 2.0 * h * ff + 2.0 * t * h;
    2.0 * layers * t * per_token
}

/// GFLOP/s of a 1024 x 1024 x 1024 f32 matrix product in candle (its CPU backend uses every
/// core): what this machine's CPU can do for the model's biggest operations.
fn matmul_gflops() -> f64 {
    use candle_core::{Device, Tensor};
    let n = 1024;
    let run = || -> candle_core::Result<f64> {
        let a = Tensor::ones((n, n), candle_core::DType::F32, &Device::Cpu)?;
        let b = Tensor::ones((n, n), candle_core::DType::F32, &Device::Cpu)?;
        a.matmul(&b)?;
        let t = Instant::now();
        let rounds = 10;
        for _ in 0..rounds {
            a.matmul(&b)?;
        }
        Ok(rounds as f64 * 2.0 * (n * n * n) as f64 / t.elapsed().as_secs_f64() / 1e9)
    };
    run().unwrap_or(f64::NAN)
}

/// CPU time this process has used (user + system), in seconds.
fn cpu_seconds() -> Option<f64> {
    stride_vectors::platform::process_cpu_time().map(|d| d.as_secs_f64())
}
