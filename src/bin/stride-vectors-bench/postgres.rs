//! The `postgres` scenario: the PostgreSQL back-end on the same data as `search`, with
//! HNSW recall against the exact answer, several processes writing at once, and Mastra's
//! `PgVector` beside it.
//!
//! It must not format the report (that is [`crate::report`]).

use std::path::Path;
use std::time::Instant;

use anyhow::Result;
use serde_json::json;

use stride_vectors::client::ChildServer;

use crate::bench::{row, BenchConfig, Row};
use crate::data::{clustered, exact_top10, load, upsert_args, vectors};
use crate::mastra::mastra_pgvector;
use crate::measure::{engine_latencies, ms};

/// The PostgreSQL back-end on the same data as `search`: upsert rate with one process and
/// with three writing at once, exact search, and HNSW search with its recall@10 against
/// the exact answer (computed here, in f64).
pub(crate) async fn postgres(dir: &Path, cfg: &BenchConfig, url: &str, rows: &mut Vec<Row>) -> Result<()> {
    for &dim in &cfg.dims {
        for &size in &cfg.sizes {
            let schema = format!("bench_{dim}_{size}");
            let flags = ["--database", url, "--pg-schema", schema.as_str()];
            let db = dir.join(format!("pg-{dim}-{size}.duckdb"));
            let server = ChildServer::start(&db, &flags).await?;
            let _ = server.tool("delete_index", json!({"index": "bench"})).await?;
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
                .tool("create_index", json!({"index": "bench", "dimension": dim, "ann": {"type": "hnsw", "m": 16, "ef_construction": 64}}))
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
            server.tool("delete_index", json!({"index": "bench"})).await?;
            // Uniform random vectors are HNSW's worst case (every distance is about the
            // same); embeddings have clusters. The same measure on clustered vectors:
            let (data, queries) = clustered(13, size, 50, dim, 1000);
            server
                .tool("create_index", json!({"index": "clustered", "dimension": dim, "ann": {"type": "hnsw", "m": 16, "ef_construction": 64}}))
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
            server.tool("delete_index", json!({"index": "clustered"})).await?;
            server.close().await?;
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
        servers[0].tool("delete_index", json!({"index": "bench"})).await?;
        servers[0]
            .tool("create_index", json!({"index": "bench", "dimension": dim}))
            .await?;
        let data = vectors(11, total, dim);
        let share = total / writers;
        let t = Instant::now();
        let runs = servers.iter().enumerate().map(|(w, s)| {
            let part = &data[w * share..(w + 1) * share];
            async move {
                for (b, chunk) in part.chunks(500).enumerate() {
                    s.tool("upsert", upsert_args("bench", w * share + b * 500, chunk))
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
        servers[0].tool("delete_index", json!({"index": "bench"})).await?;
        for s in servers {
            s.close().await?;
        }
    }
    Ok(())
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
                .tool(
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
