#!/usr/bin/env node
// Benchmark of Mastra's DuckDBVector (@mastra/duckdb) for comparison with stride-vectors.
//
//   node bench.mjs --sizes 10000,100000 --dims 384,1024 --searches 200 --runs 3 --dir <scratch>
//   [--scenarios search,upsert,same-id,second-process] (default: all four)
//
// Prints ONE JSON object on stdout: { "rows": [{ "what", "value" }...], "raw": {...} }.
// Everything else (progress, Mastra's own logs) goes to stderr.
//
// Data is the same as `stride-vectors-bench` generates (`vectors` in
// src/bin/stride-vectors-bench/data.rs): the same xorshift64 generator, seeds, ids ("v<n>")
// and metadata ({group: n % 10, userId: "u" + n % 100}),
// so both sides search the same vectors with the same queries. Only Mastra's public
// DuckDBVector API is used to load and query (createIndex, upsert, query, listIndexes,
// describeIndex, deleteIndex, close). Each measurement uses a fresh file in --dir.
//
// Mastra's upsert runs one INSERT per vector with the vector as a SQL list literal, which
// DuckDB parses at ~11 ms per 384-dim vector here (CPU-bound), so loading 100000 vectors takes
// tens of minutes. --upsert-load-max N (default: no limit) loads only the first N vectors of
// each search data set through upsert (the reported load rate is theirs) and appends the rest
// straight into Mastra's table with DuckDB's appender (same rows); the row then says so.
//
// Internal mode, used by the two-process scenario:
//   node bench.mjs --child-open <file>   tries to open <file> with DuckDBVector and prints
//                                        { opened, error } as JSON on stdout.

import { spawn } from 'node:child_process';
import { ARRAY, FLOAT } from '@duckdb/node-api';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

// Keep stdout for the single JSON report: anything else written there (a library's logger,
// console.log) is sent to stderr instead.
const writeStdout = process.stdout.write.bind(process.stdout);
process.stdout.write = (chunk, encoding, cb) => process.stderr.write(chunk, encoding, cb);

const { DuckDBVector } = await import('@mastra/duckdb');

const SCRIPT = fileURLToPath(import.meta.url);
const INDEX = 'bench';
const log = (...args) => console.error('[mastra bench]', ...args);

// ---------------------------------------------------------------- arguments

function parseArgs(argv) {
  const out = {
    sizes: [10000, 100000],
    dims: [384, 1024],
    searches: 200,
    runs: 3,
    dir: null,
    upsertLoadMax: Infinity,
    childOpen: null,
    scenarios: ['search', 'upsert', 'same-id', 'second-process'],
  };
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
      case '--runs': out.runs = list(val())[0]; break;
      case '--dir': out.dir = val(); break;
      case '--upsert-load-max': out.upsertLoadMax = list(val())[0]; break;
      case '--child-open': out.childOpen = val(); break;
      case '--scenarios': out.scenarios = val().split(',').filter(Boolean); break;
      default: throw new Error(`unknown argument: ${a}`);
    }
  }
  if (!out.childOpen && !out.dir) throw new Error('--dir <scratch dir> is required');
  return out;
}

// ---------------------------------------------------------------- data

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

// ---------------------------------------------------------------- helpers

const now = () => process.hrtime.bigint();
const msSince = (t0) => Number(now() - t0) / 1e6;
const fmtMs = (x) => `${x.toFixed(2)} ms`;
const fmtRate = (x) => `${x.toFixed(0)} vectors/s`;

/** Same percentile as src/bin/stride-vectors-bench/measure.rs: the element at round((n - 1) * p) of the sorted list. */
function percentile(sorted, p) {
  if (sorted.length === 0) return 0;
  return sorted[Math.round((sorted.length - 1) * p)];
}

/** Same median as src/bin/stride-vectors-bench/measure.rs: the element at n / 2 of the sorted list. */
function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function shortError(e) {
  const msg = String(e?.message ?? e).split('\n')[0].replace(/\s*See also https?:\S*$/, '');
  return msg.length > 160 ? msg.slice(0, 157) + '...' : msg;
}

/** Like shortError, with the file path and the pid taken out, so messages can be grouped. */
function errorKind(e) {
  return shortError(e)
    .replace(/"[^"]*"/g, '"..."')
    .replace(/PID \d+/g, 'PID ...');
}

let fileCounter = 0;
function freshFile(dir, name) {
  const file = path.join(dir, `${name}-${process.pid}-${fileCounter++}.duckdb`);
  rmSync(file, { force: true });
  rmSync(file + '.wal', { force: true });
  return file;
}

function removeFile(file) {
  rmSync(file, { force: true });
  rmSync(file + '.wal', { force: true });
}

/**
 * Opens a DuckDBVector on `file` and creates the index. Returns the store and how long the
 * first call took (it opens the file and tries `INSTALL vss` / `LOAD vss`).
 */
async function openStore(file, dim) {
  const store = new DuckDBVector({ id: `bench-${fileCounter}`, path: file, dimensions: dim, metric: 'cosine' });
  const t0 = now();
  await store.createIndex({ indexName: INDEX, dimension: dim, metric: 'cosine' });
  return { store, firstCallMs: msSince(t0) };
}

/**
 * Mastra's close() only drops its reference to the DuckDB instance (it neither closes the
 * instance nor the connections it opened), so the file stays locked and its buffers stay in
 * memory until garbage collection. To keep later measurements independent, the instance is
 * also closed here, outside every timed section.
 */
async function closeStore(store) {
  const instance = store.instance;
  await store.close();
  try {
    instance?.closeSync();
  } catch (e) {
    log('closing the DuckDB instance:', shortError(e));
  }
  globalThis.gc?.();
}

/** Whether the vss extension is loaded in this store's DuckDB instance (reporting only). */
async function vssLoaded(store) {
  try {
    const conn = await store.instance.connect();
    const rows = await (await conn.run(
      "SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'vss'",
    )).getRows();
    conn.closeSync();
    return rows.length > 0 && rows[0][0] === true;
  } catch {
    return false;
  }
}

/** Loads `n` vectors from `gen` through Mastra's upsert in batches; ids start at `first`. */
async function load(store, gen, n, dim, batch, onProgress) {
  let done = 0;
  let timed = 0n;
  while (done < n) {
    const count = Math.min(batch, n - done);
    const vectors = gen.vectors(count, dim); // generated outside the timed section
    const ids = new Array(count);
    const metadata = new Array(count);
    for (let i = 0; i < count; i++) {
      ids[i] = 'v' + (done + i);
      metadata[i] = meta(done + i);
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
 * Only with --upsert-load-max: appends vectors `from`..`to` of `gen` straight into the table
 * Mastra created (same columns, same ids, same metadata JSON) with DuckDB's appender, so that
 * large sizes can be searched without waiting for Mastra's one-INSERT-per-vector upsert.
 * Not part of any reported rate.
 */
async function fillDirect(store, file, gen, from, to, dim, onProgress) {
  // Through a CSV file and read_csv: DuckDB's node appender, fed one FLOAT[] value per row,
  // held on to ~290 bytes per float here and got this process OOM-killed at 80k x 1024.
  const conn = await store.instance.connect();
  const csv = file + '.fill.csv';
  const quote = (text) => '"' + text.replaceAll('"', '""') + '"';
  let done = from;
  while (done < to) {
    const count = Math.min(5000, to - done);
    const vectors = gen.vectors(count, dim);
    const lines = new Array(count);
    for (let i = 0; i < count; i++) {
      // String(f) of an f32 widened to f64 parses back to the same f32.
      lines[i] = [quote('v' + (done + i)), quote('[' + vectors[i].join(',') + ']'), quote(JSON.stringify(meta(done + i)))].join(',');
    }
    writeFileSync(csv, lines.join('\n') + '\n');
    await conn.run(
      `INSERT INTO "${INDEX}" SELECT id, vector::FLOAT[${dim}], metadata FROM read_csv('${csv.replaceAll("'", "''")}', ` +
        `header = false, quote = '"', escape = '"', columns = {'id': 'VARCHAR', 'vector': 'VARCHAR', 'metadata': 'VARCHAR'})`,
    );
    done += count;
    onProgress?.(done);
  }
  rmSync(csv, { force: true });
  conn.closeSync();
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

// ---------------------------------------------------------------- scenarios

const rows = [];
const raw = {};
const row = (what, value) => {
  rows.push({ what: `Mastra DuckDBVector: ${what}`, value });
  log(`${what}: ${value}`);
};

/** 1. Load through upsert, then search top-10 latency with and without a filter. */
async function searchLatency(cfg) {
  raw.search = [];
  for (const dim of cfg.dims) {
    for (const size of cfg.sizes) {
      log(`search ${size} x ${dim}: loading`);
      const file = freshFile(cfg.dir, `search-${dim}-${size}`);
      const { store, firstCallMs } = await openStore(file, dim);
      const vss = await vssLoaded(store);
      // Same batch size as src/bin/stride-vectors-bench/scenarios.rs.
      const batch = Math.min(1000, Math.floor(3_000_000 / (dim * 10)));
      const gen = new Xorshift(7);
      const viaUpsert = Math.min(size, cfg.upsertLoadMax);
      const loadStart = now();
      const upsertSecs = await load(store, gen, viaUpsert, dim, batch, progress(`load ${size} x ${dim} through upsert`, viaUpsert));
      const loadWallSecs = msSince(loadStart) / 1000;
      let fillSecs = 0;
      if (viaUpsert < size) {
        const t0 = now();
        await fillDirect(store, file, gen, viaUpsert, size, dim, progress(`load ${size} x ${dim}, rest appended directly`, size));
        fillSecs = msSince(t0) / 1000;
      }
      const described = await store.describeIndex({ indexName: INDEX });
      if (described.count !== size || described.dimension !== dim) {
        throw new Error(`describeIndex after load: ${JSON.stringify(described)}, expected ${size} x ${dim}`);
      }
      const loadRate = viaUpsert / upsertSecs;
      row(
        viaUpsert < size
          ? `load ${size} x ${dim}: first ${viaUpsert} through upsert (batches of ${batch}), the rest appended directly`
          : `load ${size} x ${dim} through upsert (batches of ${batch})`,
        fmtRate(loadRate),
      );

      const queries = new Xorshift(99).vectors(50, dim);
      // Sanity checks (untimed): a stored vector finds itself, the filter keeps group 3 only.
      const probe = new Xorshift(7).vectors(1, dim)[0];
      const self = await store.query({ indexName: INDEX, queryVector: probe, topK: 1 });
      if (self[0]?.id !== 'v0') throw new Error(`self-query returned ${JSON.stringify(self[0])}`);
      if (viaUpsert < size) {
        // The last vector (appended directly) finds itself too, with its metadata.
        const g = new Xorshift(7);
        for (let i = 0; i < size - 1; i++) for (let j = 0; j < dim; j++) g.next();
        const last = await store.query({ indexName: INDEX, queryVector: g.vectors(1, dim)[0], topK: 1 });
        if (last[0]?.id !== `v${size - 1}` || last[0]?.metadata?.group !== (size - 1) % 10) {
          throw new Error(`self-query of the last vector returned ${JSON.stringify(last[0])}`);
        }
      }
      const filteredCheck = await store.query({ indexName: INDEX, queryVector: queries[0], topK: 10, filter: { group: 3 } });
      if (filteredCheck.length !== Math.min(10, Math.ceil(size / 10)) || filteredCheck.some((r) => r.metadata?.group !== 3)) {
        throw new Error(`filtered query returned ${JSON.stringify(filteredCheck.map((r) => r.metadata))}`);
      }

      const entry = {
        size, dim, batch, vss_loaded: vss, first_call_ms: firstCallMs,
        loaded_through_upsert: viaUpsert, load_vectors_per_s: loadRate, load_wall_s: loadWallSecs,
        appended_directly: size - viaUpsert, append_s: fillSecs,
      };
      for (const filtered of [false, true]) {
        const label = filtered ? 'filter (1/10 of rows)' : 'no filter';
        log(`search ${size} x ${dim}, ${label}: ${cfg.searches} queries`);
        const times = [];
        for (let i = 0; i < cfg.searches; i++) {
          const params = { indexName: INDEX, queryVector: queries[i % queries.length], topK: 10 };
          if (filtered) params.filter = { group: 3 };
          const t0 = now();
          const res = await store.query(params);
          times.push(msSince(t0));
          if (res.length !== Math.min(10, filtered ? Math.ceil(size / 10) : size)) {
            throw new Error(`query returned ${res.length} results`);
          }
        }
        times.sort((a, b) => a - b);
        const p50 = percentile(times, 0.5);
        const p99 = percentile(times, 0.99);
        row(`search top-10, ${size} x ${dim}, ${label}: p50 / p99`, `${fmtMs(p50)} / ${fmtMs(p99)}`);
        entry[filtered ? 'filter' : 'no_filter'] = { p50_ms: p50, p99_ms: p99, mean_ms: times.reduce((a, b) => a + b, 0) / times.length };
      }

      if (raw.list_indexes === undefined) {
        // The cheapest call of the API, as a counterpart to our MCP list_indexes round trip.
        const times = [];
        for (let i = 0; i < cfg.searches; i++) {
          const t0 = now();
          const names = await store.listIndexes();
          times.push(msSince(t0));
          if (!names.includes(INDEX)) throw new Error(`listIndexes returned ${JSON.stringify(names)}`);
        }
        times.sort((a, b) => a - b);
        raw.list_indexes = { p50_ms: percentile(times, 0.5), p99_ms: percentile(times, 0.99), calls: times.length };
        row('listIndexes, in process: p50 / p99', `${fmtMs(raw.list_indexes.p50_ms)} / ${fmtMs(raw.list_indexes.p99_ms)}`);
      }

      await store.deleteIndex({ indexName: INDEX });
      const left = await store.listIndexes();
      if (left.includes(INDEX)) throw new Error('deleteIndex left the index in place');
      await closeStore(store);
      removeFile(file);
      raw.search.push(entry);
    }
  }
}

/** 2. Upsert throughput at dim 384: one call per vector, and batches of 500. */
async function upsertThroughput(cfg) {
  raw.upsert = [];
  const dim = 384;
  for (const [batch, total] of [[1, 2000], [500, 20000]]) {
    const rates = [];
    for (let run = 0; run < cfg.runs; run++) {
      const file = freshFile(cfg.dir, `upsert-${batch}-${run}`);
      const { store } = await openStore(file, dim);
      // Same seeds as src/bin/stride-vectors-bench/scenarios.rs (run + 1).
      const secs = await load(store, new Xorshift(run + 1), total, dim, batch, progress(`upsert batches of ${batch}, run ${run + 1}`, total));
      const { count } = await store.describeIndex({ indexName: INDEX });
      if (count !== total) throw new Error(`describeIndex count ${count}, expected ${total}`);
      rates.push(total / secs);
      await closeStore(store);
      removeFile(file);
    }
    const m = median(rates);
    row(`upsert, dim 384, batches of ${batch} (${total} vectors)`, fmtRate(m));
    raw.upsert.push({ batch, vectors: total, dim, runs_vectors_per_s: rates, median_vectors_per_s: m });
  }
}

/** 3a. Four parallel upserts of the same id, 20 rounds, in one process. */
async function sameIdWriters(cfg) {
  const dim = 384;
  const rounds = 20;
  const writers = 4;
  const file = freshFile(cfg.dir, 'same-id');
  const { store } = await openStore(file, dim);
  const gen = new Xorshift(5);
  const kinds = new Map();
  let errors = 0;
  for (let r = 0; r < rounds; r++) {
    const results = await Promise.allSettled(
      Array.from({ length: writers }, (_, w) =>
        store.upsert({
          indexName: INDEX,
          vectors: gen.vectors(1, dim),
          metadata: [{ group: w, userId: 'u' + w, round: r }],
          ids: ['same-id'],
        }),
      ),
    );
    for (const res of results) {
      if (res.status === 'rejected') {
        errors++;
        const k = errorKind(res.reason);
        kinds.set(k, (kinds.get(k) ?? 0) + 1);
      }
    }
  }
  const { count } = await store.describeIndex({ indexName: INDEX });
  await closeStore(store);
  removeFile(file);
  const attempts = rounds * writers;
  row(`${writers} parallel upserts of one id x ${rounds} rounds, one process: errors`, `${errors} / ${attempts}`);
  const distinct = [...kinds.entries()].map(([msg, n]) => `${n}x ${msg}`);
  row(
    `${writers} parallel upserts of one id x ${rounds} rounds, one process: distinct errors`,
    distinct.length ? distinct.join('; ') : 'none',
  );
  raw.same_id_one_process = { writers, rounds, attempts, errors, rows_after: count, errors_by_message: Object.fromEntries(kinds) };
}

/** Runs `node bench.mjs --child-open file` and returns its { opened, error, ... } report. */
function childOpen(file) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SCRIPT, '--child-open', file], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(out));
      } catch {
        resolve({ opened: false, error: `child exited with ${code}, no report; stderr: ${err.trim().slice(-300)}` });
      }
    });
  });
}

/** 3b. A second process opens the same file while the first holds it open. */
async function secondProcess(cfg) {
  const dim = 384;
  const file = freshFile(cfg.dir, 'two-process');
  const { store } = await openStore(file, dim);
  await store.upsert({ indexName: INDEX, vectors: new Xorshift(3).vectors(1, dim), metadata: [meta(0)], ids: ['same-id'] });

  log('second process: opening the file while this one holds it');
  const whileOpen = await childOpen(file);
  row(
    'second process opens the same file while the first holds it',
    whileOpen.opened ? `opened${whileOpen.upsert_error ? `, upsert failed: ${whileOpen.upsert_error}` : ', upsert ok'}` : `refused: ${whileOpen.error}`,
  );

  // Mastra's close() does not close the DuckDB instance: does the lock outlive it?
  await store.close();
  log('second process: opening the file after the first called close() (no GC, instance not closed)');
  const afterClose = await childOpen(file);
  row(
    "second process opens the file after the first called Mastra's close() (which leaves the DuckDB instance open)",
    afterClose.opened ? 'opened' : `refused: ${afterClose.error}`,
  );
  // Release for real now (the store dropped its reference; ours is gone too, so rely on GC).
  globalThis.gc?.();
  removeFile(file);
  raw.two_processes = { while_open: whileOpen, after_close: afterClose };
}

/** Child mode: open `file` with DuckDBVector, list its indexes, try one upsert. */
async function childMain(file) {
  const store = new DuckDBVector({ id: 'child', path: file, dimensions: 384, metric: 'cosine' });
  const report = { opened: false, error: null, pid: process.pid };
  try {
    const t0 = now();
    report.indexes = await store.listIndexes();
    report.open_ms = msSince(t0);
    report.opened = true;
  } catch (e) {
    report.error = shortError(e);
    report.error_full = String(e?.message ?? e);
  }
  if (report.opened) {
    try {
      await store.upsert({ indexName: INDEX, vectors: new Xorshift(4).vectors(1, 384), metadata: [meta(1)], ids: ['same-id'] });
    } catch (e) {
      report.upsert_error = shortError(e);
    }
  }
  writeStdout(JSON.stringify(report) + '\n');
}

// ---------------------------------------------------------------- main

async function main() {
  const cfg = parseArgs(process.argv.slice(2));
  if (cfg.childOpen) {
    await childMain(cfg.childOpen);
    return;
  }
  checkGenerator();
  mkdirSync(cfg.dir, { recursive: true });
  const pkg = (name) => {
    try {
      return JSON.parse(readFileSync(path.join(path.dirname(SCRIPT), 'node_modules', name, 'package.json'), 'utf8')).version;
    } catch {
      return null;
    }
  };
  raw.versions = {
    node: process.version,
    '@mastra/duckdb': pkg('@mastra/duckdb'),
    '@mastra/core': pkg('@mastra/core'),
    '@duckdb/node-api': pkg('@duckdb/node-api'),
  };
  raw.config = {
    sizes: cfg.sizes, dims: cfg.dims, searches: cfg.searches, runs: cfg.runs,
    upsert_load_max: Number.isFinite(cfg.upsertLoadMax) ? cfg.upsertLoadMax : null,
  };
  log(`versions ${JSON.stringify(raw.versions)}`);

  // How long opening a store takes, with the INSTALL vss attempt (no network for extensions).
  {
    const file = freshFile(cfg.dir, 'open');
    const { store, firstCallMs } = await openStore(file, 384);
    const vss = await vssLoaded(store);
    await closeStore(store);
    removeFile(file);
    raw.open = { first_call_ms: firstCallMs, vss_loaded: vss };
    row(
      'open + first createIndex (tries INSTALL vss)',
      `${fmtMs(firstCallMs)}, vss ${vss ? 'loaded (HNSW index)' : 'not available: linear scan'}`,
    );
  }

  const t0 = now();
  const scenarios = { search: searchLatency, upsert: upsertThroughput, 'same-id': sameIdWriters, 'second-process': secondProcess };
  for (const name of cfg.scenarios) {
    if (!scenarios[name]) throw new Error(`unknown scenario ${name}; known: ${Object.keys(scenarios).join(', ')}`);
  }
  for (const [name, run] of Object.entries(scenarios)) {
    if (cfg.scenarios.includes(name)) await run(cfg);
  }
  raw.total_s = msSince(t0) / 1000;
  log(`done in ${raw.total_s.toFixed(1)} s`);
  writeStdout(JSON.stringify({ rows, raw }, null, 2) + '\n');
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error('[mastra bench] failed:', e?.stack ?? e);
    process.exit(1);
  },
);
