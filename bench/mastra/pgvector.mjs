#!/usr/bin/env node
// Benchmark of Mastra's PgVector (@mastra/pg) for comparison with the PostgreSQL back-end of
// stride-vectors (the `postgres` scenario of `stride-vectors-bench`,
// src/bin/stride-vectors-bench/postgres.rs), on the same data.
//
//   node pgvector.mjs --connection "host=/tmp/x/sock user=postgres dbname=postgres" \
//     --sizes 100000 --dims 384 --searches 200 --schema <fresh schema>
//
// Prints ONE JSON object on stdout: { "rows": [{ "what", "value" }...], "raw": {...} }.
// Everything else (progress, Mastra's own logs) goes to stderr.
//
// Data is the same as `stride-vectors-bench` generates (`vectors` in
// src/bin/stride-vectors-bench/data.rs, and bench.mjs here): the same xorshift64 generator,
// seeds (7 for the data, 99 for the 50 queries), ids
// ("v<n>") and metadata ({group: n % 10, userId: "u" + n % 100}); "filter" is
// {group: {$eq: 3}} (1/10 of the rows), as in the postgres scenario of stride-vectors-bench. Only
// PgVector's public API loads and queries (createIndex, upsert, query, describeIndex,
// buildIndex, deleteIndex, disconnect). A plain `pg` client only sets things up and reads the
// catalog: it checks that --schema does not exist yet, runs `CREATE EXTENSION IF NOT EXISTS
// vector` (so the extension lives where our server puts it, not inside the schema dropped at
// the end), reads versions and settings, runs VACUUM ANALYZE on the loaded table (untimed:
// what autovacuum does shortly after a load anyway; without it the planner's choice between
// the HNSW index and a sequential scan flipped between runs at 10000 rows, as autovacuum came
// by), reads the HNSW index's scan counter (pg_stat_user_indexes) to tell which searches
// used it, and finally drops the schema.
//
// Per size x dim:
//  1. createIndex({indexName, dimension, metric: "cosine", buildIndex: false}): a table without
//     a vector index (describeIndex type "flat"), so query() is an exact scan. Load through
//     upsert in batches of 500 (time inside upsert only, as bench.mjs) -> vectors/s.
//  2. Exact search top-10 p50 / p99, without and with the filter.
//  3. buildIndex({indexName, metric: "cosine", indexConfig: {type: "hnsw", hnsw: {m: 16,
//     efConstruction: 64}}}) -> build time; search p50 / p99 with ef: 40, without and with the
//     filter; recall@10 against the exact top 10 (computed here in float64, ties to the smaller
//     id as stride-vectors-bench) at ef 40, 100 and 400, counted as stride-vectors-bench counts
//     it (returned ids
//     that are in the exact top 10, over 10 per query, 50 queries). Each phase also records
//     how many of its calls the HNSW index served (its scan counter in pg_stat_user_indexes):
//     Mastra's filtered query orders by score, not distance, so no index serves it, and the
//     planner may also prefer a sequential scan at a large ef on a small table.

import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// Keep stdout for the single JSON report: anything else written there (Mastra's logger,
// console.log) is sent to stderr instead.
const writeStdout = process.stdout.write.bind(process.stdout);
process.stdout.write = (chunk, encoding, cb) => process.stderr.write(chunk, encoding, cb);

const { PgVector } = await import('@mastra/pg');
const { default: pg } = await import('pg');

const SCRIPT = fileURLToPath(import.meta.url);
const INDEX = 'bench';
const VECTOR_INDEX = `${INDEX}_vector_idx`; // the name PgVector gives its vector index
const BATCH = 500;
const FILTER = { group: { $eq: 3 } };
const FILTER_GROUP = 3;
const HNSW = { m: 16, efConstruction: 64 };
const SEARCH_EF = 40;
const RECALL_EFS = [40, 100, 400];
const log = (...args) => console.error('[mastra pgvector bench]', ...args);

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  const out = { sizes: [10000, 100000], dims: [384], searches: 200, connection: null, schema: null };
  const list = (s) =>
    s.split(',').filter(Boolean).map((x) => {
      const n = Number(x);
      if (!Number.isInteger(n) || n <= 0) throw new Error(`not a positive integer: ${x}`);
      return n;
    });
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const val = () => {
      if (i + 1 >= argv.length) throw new Error(`${a} needs a value`);
      return argv[++i];
    };
    switch (a) {
      case '--sizes': out.sizes = list(val()); break;
      case '--dims': out.dims = list(val()); break;
      case '--searches': out.searches = list(val())[0]; break;
      case '--connection': out.connection = val(); break;
      case '--schema': out.schema = val(); break;
      default: throw new Error(`unknown argument: ${a}`);
    }
  }
  if (!out.connection) throw new Error('--connection "<libpq key=value string or postgresql:// URL>" is required');
  if (!out.schema) throw new Error('--schema <name of a schema that does not exist yet> is required');
  if (!/^[a-z_][a-z0-9_]*$/.test(out.schema)) throw new Error(`--schema: use a plain lower-case identifier, not ${out.schema}`);
  return out;
}

/**
 * The libpq key=value string (`host=/dir/sock user=postgres dbname=postgres`, what
 * scripts/postgres prints) as node-postgres options, and as the URL PgVector takes (its
 * host-based config insists on a password, which a trust-auth test cluster has none of).
 * Same conversion as tests/e2e/pgvector.test.mjs.
 */
function connection(conninfo) {
  if (/^postgres(ql)?:\/\//.test(conninfo)) return { pgOptions: { connectionString: conninfo }, url: conninfo };
  const kv = {};
  for (const [, key, raw] of conninfo.matchAll(/(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)/g)) {
    kv[key] = raw.startsWith("'") ? raw.slice(1, -1).replace(/\\(.)/g, '$1') : raw;
  }
  const pgOptions = { host: kv.host, port: kv.port && Number(kv.port), user: kv.user, database: kv.dbname, password: kv.password };
  const auth = encodeURIComponent(kv.user ?? '') + (kv.password ? `:${encodeURIComponent(kv.password)}` : '');
  // `?host=` takes a socket directory as well as a host name.
  const url = `postgresql://${auth}@localhost${kv.port ? `:${kv.port}` : ''}/${encodeURIComponent(kv.dbname ?? kv.user ?? 'postgres')}?host=${encodeURIComponent(kv.host ?? 'localhost')}`;
  return { pgOptions, url };
}

// ---------------------------------------------------------------- data (as bench.mjs)

const MASK64 = (1n << 64n) - 1n;

/**
 * Deterministic vectors in (-1, 1), bit-identical to `vectors(seed, n, dim)` in
 * src/bin/stride-vectors-bench/data.rs:
 * xorshift64 (13, 7, 17) on state = seed * 0x9E3779B97F4A7C15 | 1, value =
 * f32((state >> 40) / 2^24) * 2 - 1 + 1e-4 in f32 arithmetic. The 64-bit state is kept
 * as two u32 halves (BigInt would be far too slow for 10^8 values).
 */
class Xorshift {
  constructor(seed) {
    const s = ((BigInt(seed) * 0x9e3779b97f4a7c15n) & MASK64) | 1n;
    this.hi = Number(s >> 32n) >>> 0;
    this.lo = Number(s & 0xffffffffn) >>> 0;
  }
  next() {
    let hi = this.hi;
    let lo = this.lo;
    // state ^= state << 13
    hi = (hi ^ ((hi << 13) | (lo >>> 19))) >>> 0;
    lo = (lo ^ (lo << 13)) >>> 0;
    // state ^= state >> 7
    lo = (lo ^ ((lo >>> 7) | (hi << 25))) >>> 0;
    hi = (hi ^ (hi >>> 7)) >>> 0;
    // state ^= state << 17
    hi = (hi ^ ((hi << 17) | (lo >>> 15))) >>> 0;
    lo = (lo ^ (lo << 17)) >>> 0;
    this.hi = hi;
    this.lo = lo;
    return Math.fround(Math.fround((hi >>> 8) / 16777216 * 2 - 1) + F32_1E4);
  }
  /** The next `n` vectors of `dim` values, as plain arrays (what Mastra's upsert takes). */
  vectors(n, dim) {
    const out = new Array(n);
    for (let r = 0; r < n; r++) {
      const v = new Array(dim);
      for (let j = 0; j < dim; j++) v[j] = this.next();
      out[r] = v;
    }
    return out;
  }
}
const F32_1E4 = Math.fround(1e-4);

/** Self-check of the 32-bit-halves generator against a straightforward BigInt version. */
function checkGenerator() {
  for (const seed of [1, 7, 99]) {
    const fast = new Xorshift(seed);
    let s = ((BigInt(seed) * 0x9e3779b97f4a7c15n) & MASK64) | 1n;
    for (let i = 0; i < 1000; i++) {
      s ^= (s << 13n) & MASK64;
      s ^= s >> 7n;
      s ^= (s << 17n) & MASK64;
      const want = Math.fround(Math.fround(Number(s >> 40n) / 16777216 * 2 - 1) + F32_1E4);
      const got = fast.next();
      if (got !== want) throw new Error(`generator mismatch at seed ${seed}, value ${i}: ${got} != ${want}`);
    }
  }
}

const meta = (n) => ({ group: n % 10, userId: 'u' + (n % 100) });

// ---------------------------------------------------------------- helpers (as bench.mjs)

const now = () => process.hrtime.bigint();
const msSince = (t0) => Number(now() - t0) / 1e6;
const fmtMs = (x) => `${x.toFixed(2)} ms`;
const fmtRate = (x) => `${x.toFixed(0)} vectors/s`;
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Same percentile as src/bin/stride-vectors-bench/measure.rs: the element at round((n - 1) * p) of the sorted list. */
function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.round((sorted.length - 1) * p)];
}

function progress(label, total) {
  let last = now();
  return (done) => {
    if (done === total || now() - last > 10_000_000_000n) {
      last = now();
      log(`${label}: ${done} / ${total}`);
    }
  };
}

// ---------------------------------------------------------------- exact answers

/**
 * Exact cosine top 10 of each query, in float64 like `exact_top10` in src/bin/stride-vectors-bench/data.rs (score
 * descending, ties to the smaller id, ids compared as strings "v<n>"), over all rows and over
 * the rows the filter keeps (n % 10 == 3). `data` is the rows, flat, as f32.
 */
function exactTop10(data, size, dim, queries) {
  const norms = new Float64Array(size);
  for (let r = 0; r < size; r++) {
    let s = 0;
    const base = r * dim;
    for (let j = 0; j < dim; j++) {
      const x = data[base + j];
      s += x * x;
    }
    norms[r] = Math.sqrt(s);
  }
  const better = (sa, ra, sb, rb) => sa > sb || (sa === sb && 'v' + ra < 'v' + rb);
  const insert = (top, score, r) => {
    // top: [{score, r}] best first, at most 10.
    if (top.length === 10 && !better(score, r, top[9].score, top[9].r)) return;
    let i = Math.min(top.length, 9);
    if (top.length < 10) top.push(null);
    while (i > 0 && better(score, r, top[i - 1].score, top[i - 1].r)) {
      top[i] = top[i - 1];
      i--;
    }
    top[i] = { score, r };
  };
  const all = [];
  const filtered = [];
  for (const q of queries) {
    let qn = 0;
    for (let j = 0; j < dim; j++) qn += q[j] * q[j];
    qn = Math.sqrt(qn);
    const qf = Float64Array.from(q);
    const topAll = [];
    const topFiltered = [];
    for (let r = 0; r < size; r++) {
      const base = r * dim;
      let dot = 0;
      for (let j = 0; j < dim; j++) dot += data[base + j] * qf[j];
      const score = dot / (norms[r] * qn);
      insert(topAll, score, r);
      if (r % 10 === FILTER_GROUP) insert(topFiltered, score, r);
    }
    all.push(topAll.map((t) => 'v' + t.r));
    filtered.push(topFiltered.map((t) => 'v' + t.r));
  }
  return { all, filtered };
}

/** As src/bin/stride-vectors-bench/postgres.rs: returned ids that are in the exact top 10, over 10 per query. */
function recall(answers, exact) {
  let found = 0;
  answers.forEach((ids, i) => {
    const want = new Set(exact[i]);
    found += ids.filter((id) => want.has(id)).length;
  });
  return found / (answers.length * 10);
}

// ---------------------------------------------------------------- PgVector steps

/** Loads `size` vectors of seed 7 through upsert in batches of 500; keeps them flat in `data`. */
async function load(store, size, dim, data, onProgress) {
  const gen = new Xorshift(7);
  let done = 0;
  let timed = 0n;
  while (done < size) {
    const count = Math.min(BATCH, size - done);
    const vectors = gen.vectors(count, dim); // generated outside the timed section
    const ids = new Array(count);
    const metadata = new Array(count);
    for (let i = 0; i < count; i++) {
      ids[i] = 'v' + (done + i);
      metadata[i] = meta(done + i);
      data.set(vectors[i], (done + i) * dim);
    }
    const t0 = now();
    await store.upsert({ indexName: INDEX, vectors, metadata, ids });
    timed += now() - t0;
    done += count;
    onProgress?.(done);
  }
  return Number(timed) / 1e9; // seconds spent inside upsert
}

/**
 * `searches` timed query() calls, cycling through the queries. Returns p50 / p99 / mean and
 * the answers to the first pass over the queries (ids), for the recall checks.
 */
async function latency(store, queries, searches, size, { filtered, ef }) {
  const times = [];
  const answers = [];
  for (let i = 0; i < searches; i++) {
    const params = { indexName: INDEX, queryVector: queries[i % queries.length], topK: 10 };
    if (filtered) params.filter = FILTER;
    if (ef !== undefined) params.ef = ef;
    const t0 = now();
    const res = await store.query(params);
    times.push(msSince(t0));
    if (res.length !== Math.min(10, filtered ? Math.ceil(size / 10) : size)) throw new Error(`query returned ${res.length} results`);
    if (filtered && res.some((r) => r.metadata?.group !== FILTER_GROUP)) {
      throw new Error(`filtered query returned ${JSON.stringify(res.map((r) => r.metadata))}`);
    }
    if (i < queries.length) answers.push(res.map((r) => r.id));
  }
  times.sort((a, b) => a - b);
  return {
    stats: { p50_ms: percentile(times, 0.5), p99_ms: percentile(times, 0.99), mean_ms: times.reduce((a, b) => a + b, 0) / times.length, searches },
    answers,
  };
}

/** One query() per query vector: the ids each returns, and p50 / p99 of the calls. */
async function answersAt(store, queries, { filtered, ef }) {
  const answers = [];
  const times = [];
  for (const q of queries) {
    const params = { indexName: INDEX, queryVector: q, topK: 10, ef };
    if (filtered) params.filter = FILTER;
    const t0 = now();
    const res = await store.query(params);
    times.push(msSince(t0));
    answers.push(res.map((r) => r.id));
  }
  times.sort((a, b) => a - b);
  return { answers, stats: { p50_ms: percentile(times, 0.5), p99_ms: percentile(times, 0.99) } };
}

// ---------------------------------------------------------------- catalog reads (plain pg client)

/** PgVector's HNSW index's scan counter (pg_stat_user_indexes.idx_scan) as published now. */
async function readIndexScans(admin, schema) {
  await admin.query('SELECT pg_stat_clear_snapshot()');
  const { rows } = await admin.query(
    'SELECT idx_scan FROM pg_stat_user_indexes WHERE schemaname = $1 AND indexrelname = $2',
    [schema, VECTOR_INDEX],
  );
  return rows.length ? Number(rows[0].idx_scan) : 0;
}

/**
 * How many of `calls` query() calls just made were served by the HNSW index. A backend
 * publishes its counters when it goes idle, but at most once a second; what is left over
 * is published by a timer at most 10 s later (PGSTAT_IDLE_INTERVAL). So this waits until all
 * `calls` are counted, or 11 s after the calls ended.
 */
async function indexScansSince(admin, schema, before, calls) {
  const ended = Date.now();
  let value = await readIndexScans(admin, schema);
  while (value - before < calls && Date.now() - ended < 11_000) {
    await sleep(500);
    value = await readIndexScans(admin, schema);
  }
  return { after: value, counted: Math.min(calls, value - before) };
}

// ---------------------------------------------------------------- the benchmark

const rows = [];
const raw = {};
const row = (what, value) => {
  rows.push({ what: `Mastra PgVector: ${what}`, value });
  log(`${what}: ${value}`);
};

async function sizeDim(cfg, store, admin, size, dim) {
  const entry = { size, dim, batch: BATCH };
  const label = `${size} x ${dim}`;

  // 1. Load into a table without a vector index.
  log(`${label}: createIndex (buildIndex: false) and load`);
  let t0 = now();
  await store.createIndex({ indexName: INDEX, dimension: dim, metric: 'cosine', buildIndex: false });
  entry.create_index_ms = msSince(t0);
  const data = new Float32Array(size * dim);
  t0 = now();
  const upsertSecs = await load(store, size, dim, data, progress(`load ${label} through upsert`, size));
  entry.load_wall_s = msSince(t0) / 1000;
  entry.load_s_inside_upsert = upsertSecs;
  entry.load_vectors_per_s = size / upsertSecs;
  const described = await store.describeIndex({ indexName: INDEX });
  entry.described_after_load = described;
  if (described.count !== size || described.dimension !== dim || described.type !== 'flat' || described.metric !== 'cosine') {
    throw new Error(`describeIndex after load: ${JSON.stringify(described)}, expected ${size} x ${dim}, cosine, type flat`);
  }
  row(`load ${label} through upsert (batches of ${BATCH}), no vector index`, fmtRate(entry.load_vectors_per_s));
  {
    const { rows: r } = await admin.query(
      `SELECT pg_total_relation_size(format('%I.%I', $1::text, $2::text)::regclass) AS bytes`,
      [cfg.schema, INDEX],
    );
    entry.table_bytes_after_load = Number(r[0].bytes);
    // What autovacuum does shortly after a load anyway, done now so the planner's choice
    // (HNSW index or sequential scan) does not flip in the middle of the measurements.
    t0 = now();
    await admin.query(`VACUUM ANALYZE "${cfg.schema}"."${INDEX}"`);
    entry.vacuum_analyze_after_load_ms = msSince(t0);
  }

  const queries = new Xorshift(99).vectors(50, dim);
  log(`${label}: exact top 10 of the 50 queries in float64 (JS)`);
  t0 = now();
  const exact = exactTop10(data, size, dim, queries);
  entry.exact_in_js_s = msSince(t0) / 1000;

  // Sanity checks (untimed): a stored vector finds itself.
  const probe = Array.from(data.subarray(0, dim));
  const self = await store.query({ indexName: INDEX, queryVector: probe, topK: 1 });
  if (self[0]?.id !== 'v0' || self[0]?.metadata?.group !== 0) throw new Error(`self-query returned ${JSON.stringify(self[0])}`);

  // 2. Exact search.
  for (const filtered of [false, true]) {
    const what = filtered ? 'filter (1/10 of rows)' : 'no filter';
    log(`${label}, exact, ${what}: ${cfg.searches} queries`);
    const { stats, answers } = await latency(store, queries, cfg.searches, size, { filtered });
    // Against float64: pgvector computes cosine distance in f32, so near-ties may swap.
    stats.recall_at_10_vs_float64 = recall(answers, filtered ? exact.filtered : exact.all);
    entry[filtered ? 'exact_filter' : 'exact_no_filter'] = stats;
    row(`search top-10, ${label}, exact (no vector index), ${what}: p50 / p99`, `${fmtMs(stats.p50_ms)} / ${fmtMs(stats.p99_ms)}`);
  }

  // 3. HNSW.
  log(`${label}: buildIndex HNSW (m ${HNSW.m}, efConstruction ${HNSW.efConstruction})`);
  t0 = now();
  await store.buildIndex({ indexName: INDEX, metric: 'cosine', indexConfig: { type: 'hnsw', hnsw: { ...HNSW } } });
  entry.hnsw_build_ms = msSince(t0);
  const afterBuild = await store.describeIndex({ indexName: INDEX });
  entry.described_after_build = afterBuild;
  if (afterBuild.type !== 'hnsw' || afterBuild.config?.m !== HNSW.m || afterBuild.config?.efConstruction !== HNSW.efConstruction || afterBuild.count !== size) {
    throw new Error(`describeIndex after buildIndex: ${JSON.stringify(afterBuild)}`);
  }
  {
    const { rows: r } = await admin.query(
      `SELECT pg_relation_size(format('%I.%I', $1::text, $2::text)::regclass) AS bytes`,
      [cfg.schema, VECTOR_INDEX],
    );
    entry.hnsw_index_bytes = Number(r[0].bytes);
  }
  row(`build an HNSW index (m ${HNSW.m}, ef_construction ${HNSW.efConstruction}), ${label} (buildIndex)`, fmtMs(entry.hnsw_build_ms));

  // Which query() calls used the HNSW index, per phase: the index's scan counter before and
  // after (untimed waits for PostgreSQL to publish it).
  let scans = await readIndexScans(admin, cfg.schema);
  entry.hnsw_index_scans = {};
  const phase = async (name, calls, run) => {
    const before = scans;
    const result = await run();
    const { after, counted } = await indexScansSince(admin, cfg.schema, before, calls);
    scans = after;
    entry.hnsw_index_scans[name] = { query_calls: calls, served_by_the_index: counted };
    return { result, counted };
  };
  const indexNote = (counted, calls) =>
    counted === 0 ? ' (the planner did not use the HNSW index: exact scans)'
      : counted < calls ? ` (the HNSW index was used by ${counted} of ${calls} calls)` : '';

  const hnsw = {};
  const recalls = { no_filter: {}, filter: {} };
  const recallTimes = { no_filter: {}, filter: {} };
  for (const filtered of [false, true]) {
    const key = filtered ? 'filter' : 'no_filter';
    const what = filtered ? 'filter' : 'no filter';
    log(`${label}, HNSW ef ${SEARCH_EF}, ${what}: ${cfg.searches} queries`);
    hnsw[key] = await phase(`latency_ef_${SEARCH_EF}_${key}`, cfg.searches, () =>
      latency(store, queries, cfg.searches, size, { filtered, ef: SEARCH_EF }));
    entry[`hnsw_${key}`] = hnsw[key].result.stats;
    for (const ef of RECALL_EFS) {
      log(`${label}, HNSW recall at ef ${ef}, ${what}`);
      const { result, counted } = await phase(`recall_ef_${ef}_${key}`, queries.length, () =>
        answersAt(store, queries, { filtered, ef }));
      recalls[key][ef] = { recall: recall(result.answers, filtered ? exact.filtered : exact.all), counted };
      recallTimes[key][ef] = result.stats;
    }
  }
  entry.hnsw_recall_at_10 = {
    no_filter: Object.fromEntries(RECALL_EFS.map((ef) => [ef, recalls.no_filter[ef].recall])),
    filter: Object.fromEntries(RECALL_EFS.map((ef) => [ef, recalls.filter[ef].recall])),
  };
  entry.hnsw_recall_query_times = recallTimes;
  for (const filtered of [false, true]) {
    const key = filtered ? 'filter' : 'no_filter';
    const { stats } = hnsw[key].result;
    row(
      `search top-10, ${label}, HNSW (ef ${SEARCH_EF}), ${filtered ? 'filter (1/10 of rows)' : 'no filter'}: p50 / p99`,
      `${fmtMs(stats.p50_ms)} / ${fmtMs(stats.p99_ms)}` +
        (filtered && hnsw[key].counted === 0
          ? " (the HNSW index is not used: with a filter, Mastra's query orders by score, which no index serves, so this is an exact scan)"
          : indexNote(hnsw[key].counted, cfg.searches)),
    );
  }
  for (const ef of RECALL_EFS) {
    const { recall: r, counted } = recalls.no_filter[ef];
    row(`HNSW recall@10 against exact, ${label}, ef ${ef}, no filter`, r.toFixed(3) + indexNote(counted, queries.length));
  }
  row(
    `HNSW recall@10 against exact, ${label}, filter (1/10 of rows), ef ${RECALL_EFS.join(' / ')}`,
    RECALL_EFS.map((ef) => recalls.filter[ef].recall.toFixed(3)).join(' / ') +
      (RECALL_EFS.every((ef) => recalls.filter[ef].counted === 0) ? ' (the HNSW index was not used: exact scans)' : ''),
  );

  await store.deleteIndex({ indexName: INDEX });
  return entry;
}

async function main() {
  const cfg = parseArgs(process.argv.slice(2));
  checkGenerator();
  const started = now();
  const { pgOptions, url } = connection(cfg.connection);
  const pkg = (name) => {
    try {
      return JSON.parse(readFileSync(path.join(path.dirname(SCRIPT), 'node_modules', name, 'package.json'), 'utf8')).version;
    } catch {
      return null;
    }
  };
  raw.versions = { node: process.version, '@mastra/pg': pkg('@mastra/pg'), '@mastra/core': pkg('@mastra/core'), pg: pkg('pg') };
  raw.config = {
    sizes: cfg.sizes, dims: cfg.dims, searches: cfg.searches, queries: 50, batch: BATCH, filter: FILTER,
    hnsw: HNSW, search_ef: SEARCH_EF, recall_efs: RECALL_EFS, schema: cfg.schema,
  };

  // The machine is shared: its load is part of the context of every number here.
  raw.loadavg_at_start = os.loadavg();
  raw.cpus = os.cpus().length;
  const admin = new pg.Client(pgOptions);
  await admin.connect();
  let store = null;
  let createdSchema = false;
  try {
    const exists = await admin.query('SELECT 1 FROM pg_namespace WHERE nspname = $1', [cfg.schema]);
    if (exists.rowCount) throw new Error(`schema ${cfg.schema} already exists: give a fresh --schema (it is dropped at the end)`);
    await admin.query('CREATE EXTENSION IF NOT EXISTS vector');
    const one = async (sql) => Object.values((await admin.query(sql)).rows[0])[0];
    raw.versions.postgres = await one('SHOW server_version');
    raw.versions.pgvector = await one("SELECT extversion FROM pg_extension WHERE extname = 'vector'");
    raw.settings = {};
    for (const name of ['maintenance_work_mem', 'shared_buffers', 'work_mem', 'max_parallel_maintenance_workers', 'max_parallel_workers_per_gather', 'max_parallel_workers', 'effective_cache_size', 'synchronous_commit', 'fsync']) {
      raw.settings[name] = await one(`SHOW ${name}`);
    }
    log(`versions ${JSON.stringify(raw.versions)}, settings ${JSON.stringify(raw.settings)}`);

    store = new PgVector({ id: 'stride-vectors-bench', connectionString: url, schemaName: cfg.schema });
    createdSchema = true; // createIndex creates it; drop it at the end whatever happens
    raw.runs = [];
    for (const dim of cfg.dims) {
      for (const size of cfg.sizes) {
        raw.runs.push(await sizeDim(cfg, store, admin, size, dim));
      }
    }
  } finally {
    await store?.disconnect().catch((e) => log('disconnect:', e?.message ?? e));
    if (createdSchema) {
      await admin.query(`DROP SCHEMA IF EXISTS "${cfg.schema}" CASCADE`).catch((e) => log('dropping the schema:', e?.message ?? e));
    }
    await admin.end();
  }
  raw.loadavg_at_end = os.loadavg();
  raw.total_s = msSince(started) / 1000;
  log(`done in ${raw.total_s.toFixed(1)} s`);
  writeStdout(JSON.stringify({ rows, raw }, null, 2) + '\n');
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error('[mastra pgvector bench] failed:', e?.stack ?? e);
    process.exit(1);
  },
);
