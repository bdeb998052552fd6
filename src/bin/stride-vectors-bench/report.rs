//! The Markdown report: the command and machine, the side-by-side table with Mastra's
//! DuckDBVector, and every measurement.
//!
//! It formats rows only: it must not measure.

use crate::bench::{BenchConfig, Row};

/// The label of the DuckDB engine measured inside a memory-engine server.
pub(crate) const FALLBACK: &str =
    "duckdb engine as the fallback of a memory-engine server (DuckDB's cache 256 MiB)";

pub(crate) fn report(cfg: &BenchConfig, rows: &[Row]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::row;

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
            beir: None,
            beir_db: None,
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
