// The randomized model test of stride-vectors (driven by model.test.mjs and scripts/torture).
//
// Claim under test: for every id, the last acknowledged operation wins, whatever its kind
// (embed, upsert, upsert with delete_filter, update by id or by filter, delete, delete_index),
// across processes, owner crashes and restarts.
//
// Each sequence starts three stride-vectors processes on one fresh DuckDB file (the first is
// the owner, the others relay to it), each driven by its own MCP client: 1.x SDK clients
// (@modelcontextprotocol/sdk) and 2.x clients (@modelcontextprotocol/client, pinned to
// revision 2026-07-28). A seeded PRNG draws the operations over 2 indexes x 6 ids, issued
// concurrently from the clients but never two at once on one (index, id); `delete` by filter,
// `update` by filter, `upsert` with `delete_filter`, `delete_index` and `flush` are barriers
// (alone). Along the way the current owner is killed with SIGKILL and replaced, a process is
// restarted cleanly (stdin closed), and at the end every process is crashed or stopped and a
// new one must show the same data.
//
// The reference model keeps, per (index, id), the SET of states the server may be in
// (row = {vector, metadata, text | null} or absent, pending = {text, metadata} or none). The
// set is closed under "the pending version got embedded" (that happens at a moment nobody
// can see). Every acknowledged answer must be produced by at least one state of the set, and
// the set is narrowed to the states that agree with it; an answer no state can produce is a
// violation. Searches run beside writes and are checked against every state an id may have
// had between the call's start and its end. After `flush` nothing may be pending.
//
// Embeddings come from fake-ollama.mjs: the vector of a text is known here exactly.
//
// PostgreSQL mode (`runModel({backend: "postgres", conninfo})`, model-postgres.test.mjs):
// the same operations and the same model, but the three processes all store in one fresh
// schema of a PostgreSQL database (`--database --pg-schema model_<hex>`). There is no owner
// and no relay there: every process writes directly (stats say role "peer"), and they share
// one embedding queue, claimed with leases (`--pg-lease-ms`, short here). So what is about
// owners becomes about any process: the kills (SIGKILL) and clean restarts hit a process
// drawn by the seed, nothing waits for a take-over or a relay to reconnect, a call is never
// retried on another process (no "maybe run twice"), and a clean stop must exit at once
// with code 0. A killed process's calls are not settled when it exits, though: PostgreSQL
// may still be running what it sent (a COMMIT already received lands after the process is
// gone). So their outcome counts as unknown, and what re-establishes their ids runs, only
// once PostgreSQL shows no connection of that process any more (each process connects with
// an application_name of its own). The model itself is unchanged: the queue being shared only changes who
// embeds a pending version, not what may be stored; `flush` waits for the database's whole
// queue (of its index). Searches never force `memory` or `duckdb` (refused there): the 20%
// of searches that force an engine force `postgres`, and every answer must say `postgres`.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { Client as ClientV1 } from "@modelcontextprotocol/sdk/client/index.js";
import { Client as ClientV2 } from "@modelcontextprotocol/client";
import pg from "pg";

import { fakeVector, startFakeOllama } from "./fake-ollama.mjs";
import {
  BIN,
  RUNNER,
  assertSameJson,
  cosine,
  makeTempDir,
  removeDir,
  resultText,
  serverCommand,
  waitForBinary,
} from "./helpers.mjs";

// ---------------------------------------------------------------------------------------
// Knobs

export const INDEXES = ["model_a", "model_b"];
export const IDS = ["k0", "k1", "k2", "k3", "k4", "k5"];
/** A small pool, so that texts repeat (unchanged documents, reverts to the stored text). */
export const TEXTS = [
  "T0 Bachelor in economics, saving for an Erasmus semester",
  "T1 Master in computer science, python and sql, Lyon",
  "T2 Graphic design student, figma and photography, Nantes",
  "T3 Data science, statistics, wants a driving licence",
  "T4 Part-time barista, monthly margin 150 euros",
];
const GROUPS = ["x", "y", "z"];
/** Words keyword and hybrid searches look for: each text's tag, two words of one text, and
 * a word of none. All are their own stem and no stop word, in both back-ends' English. */
const SEARCH_WORDS = ["T0", "T1", "T2", "T3", "T4", "python", "barista", "nowhere"];

/** Whether a row's kept text (metadata.text) holds `word`, as a whole word, any case. */
function hasWord(md, word) {
  return typeof md?.text === "string" && md.text.toLowerCase().split(/[^a-z0-9]+/).includes(word.toLowerCase());
}
const DIM = 8;
/** Per-call timeout of the clients (a flush may wait up to its own 30 s). */
const CALL_TIMEOUT_MS = 90_000;
/** An unknown tool must be refused at once; a relay that hangs is a failure. */
const UNKNOWN_TOOL_TIMEOUT_MS = 10_000;
/** A call in flight within this long after an owner was killed may have been run twice. */
const RETRY_WINDOW_MS = 2_000;
const REVISION_2026 = "2026-07-28";
/**
 * PostgreSQL: how long a process's claim on queued embeddings holds (`--pg-lease-ms`). Short,
 * so that the versions a killed process had claimed are taken over quickly (the default, a
 * minute, would stall every flush after a kill).
 */
const PG_LEASE_MS = 1500;

/** Relative weights of the random operations. */
const WEIGHTS = {
  embed: 20,
  embed_wait: 6,
  upsert: 14,
  update_merge: 8,
  update_replace: 5,
  update_vector: 6,
  delete_ids: 8,
  delete_filter: 2,
  update_filter: 2,
  upsert_delete_filter: 2,
  delete_index: 1.2,
  flush: 2,
  search: 11,
  fetch: 6,
};

// ---------------------------------------------------------------------------------------
// Seeded PRNG (splitmix32 seeding an sfc32)

export function makeRng(seed) {
  let s = seed >>> 0;
  const splitmix = () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
    return (z ^ (z >>> 16)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  const float = () => {
    const t = (((a + b) >>> 0) + d) >>> 0;
    d = (d + 1) >>> 0;
    a = b ^ (b >>> 9);
    b = (c + (c << 3)) >>> 0;
    c = ((c << 21) | (c >>> 11)) >>> 0;
    c = (c + t) >>> 0;
    return t / 4294967296;
  };
  const rng = {
    float,
    int: (n) => Math.floor(float() * n),
    chance: (p) => float() < p,
    pick: (list) => list[Math.floor(float() * list.length)],
    weighted(weights) {
      const entries = Object.entries(weights);
      let x = float() * entries.reduce((sum, [, w]) => sum + w, 0);
      for (const [name, w] of entries) {
        if ((x -= w) < 0) return name;
      }
      return entries.at(-1)[0];
    },
    sample(list, n) {
      const pool = [...list];
      const out = [];
      while (out.length < n && pool.length) out.push(pool.splice(Math.floor(float() * pool.length), 1)[0]);
      return out;
    },
  };
  return rng;
}

// ---------------------------------------------------------------------------------------
// JSON helpers and the reference semantics

/** JSON with sorted keys: equal values, equal strings. */
export function canon(value) {
  if (Array.isArray(value)) return `[${value.map(canon).join(",")}]`;
  if (value && typeof value === "object") {
    return `{${Object.keys(value)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canon(value[k])}`)
      .join(",")}}`;
  }
  return JSON.stringify(value);
}

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);

/** RFC 7396 JSON merge patch. */
export function mergePatch(target, patch) {
  if (!isObject(patch)) return structuredClone(patch);
  const out = isObject(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete out[key];
    else out[key] = mergePatch(out[key], value);
  }
  return out;
}

/** The filters this test uses: `{group: "x"}` (type-strict equality on a string field). */
function matches(metadata, filter) {
  return Object.entries(filter).every(([field, value]) => metadata?.[field] === value);
}

const ABSENT = Object.freeze({ row: null, pend: null });

/** The state after the pending version (if any) got embedded and stored. */
function materialized(state) {
  if (!state.pend) return state;
  const { text, md } = state.pend;
  return { row: { v: fakeVector(text), md, text }, pend: null };
}

function dedupe(states) {
  const out = new Map();
  for (const s of states) out.set(canon(s), s);
  return [...out.values()];
}

/** Every state may already have had its pending version embedded. */
function closeStates(states) {
  return dedupe(states.flatMap((s) => (s.pend ? [s, materialized(s)] : [s])));
}

/** `update` (by id, or by filter for a selected id) applied to a state that has a row. */
function updated(op, state) {
  const row = { ...state.row };
  if (op.vector) {
    row.v = op.vector;
    row.text = null;
  }
  const apply = (md) => (op.mode === "replace" ? op.metadata : mergePatch(md, op.metadata));
  if (op.metadata !== undefined) row.md = apply(row.md);
  let pend = state.pend;
  // A new vector supersedes the pending version; metadata alone patches it too.
  if (op.vector) pend = null;
  else if (pend && op.metadata !== undefined) pend = { ...pend, md: apply(pend.md) };
  return { row, pend };
}

/**
 * `delete` by filter on one key: the id goes (row and pending version) when its stored row or
 * its pending version matches. `deleted` counts it surely for a row, maybe for a pending
 * version alone.
 */
function filterDeleted(state, filter) {
  const rowHit = Boolean(state.row && matches(state.row.md, filter));
  const hit = rowHit || Boolean(state.pend && matches(state.pend.md, filter));
  return { state: hit ? ABSENT : state, lo: rowHit ? 1 : 0, hi: hit ? 1 : 0 };
}

/** What a fetch or a search hit shows of a row. */
const rowKey = (row) => canon({ v: row.v, md: row.md });


// ---------------------------------------------------------------------------------------
// Readable descriptions for the op log

/** The change an update carries, by id or by filter: vector, metadata and how to apply it. */
function patchArgs(op) {
  return {
    ...(op.vector ? { vector: op.vector } : {}),
    ...(op.metadata !== undefined ? { metadata: op.metadata } : {}),
    ...(op.mode === "replace" ? { metadata_mode: "replace" } : {}),
  };
}

function fmtVector(v) {
  const text = TEXTS.findIndex((t) => canon(fakeVector(t)) === canon(v));
  if (text >= 0) return `vec(T${text})`;
  if (v.every((x) => Number.isInteger(x * 32))) return `r(${v.map((x) => x * 32).join(",")})/32`;
  return JSON.stringify(v);
}
const fmtText = (t) => (t === null ? "null" : /^T\d /.test(t) ? t.slice(0, 2) : JSON.stringify(t));
const fmtMd = (md) => canon(md);
function fmtState(s) {
  if (!s.row && !s.pend) return "absent";
  const parts = [];
  parts.push(s.row ? `row{${fmtVector(s.row.v)} ${fmtMd(s.row.md)} text=${fmtText(s.row.text)}}` : "no row");
  if (s.pend) parts.push(`pending{${fmtText(s.pend.text)} ${fmtMd(s.pend.md)}}`);
  return parts.join(" + ");
}
const fmtStates = (states) => (states.length === 1 ? fmtState(states[0]) : `one of [${states.map(fmtState).join(" | ")}]`);

/** A model violation: the server answered something no allowed state explains. */
export class Violation extends Error {
  constructor(message) {
    super(message);
    this.name = "Violation";
  }
}

// ---------------------------------------------------------------------------------------
// An MCP stdio transport over a child process we spawned ourselves (both SDK generations
// accept it): newline-delimited JSON, as the stdio transport of the specification.

class LineTransport {
  constructor(child) {
    this.child = child;
    this.buffer = "";
  }

  async start() {
    this.child.stdout.setEncoding("utf8");
    this.child.stdout.on("data", (chunk) => {
      this.buffer += chunk;
      for (let at = this.buffer.indexOf("\n"); at >= 0; at = this.buffer.indexOf("\n")) {
        const line = this.buffer.slice(0, at).replace(/\r$/, "");
        this.buffer = this.buffer.slice(at + 1);
        if (!line.trim()) continue;
        let message;
        try {
          message = JSON.parse(line);
        } catch {
          this.onerror?.(new Error(`unparsable line on stdout: ${line.slice(0, 200)}`));
          continue;
        }
        this.onmessage?.(message);
      }
    });
    this.child.on("close", () => this.onclose?.());
    this.child.stdin.on("error", (error) => this.onerror?.(error));
  }

  send(message) {
    return new Promise((resolve, reject) => {
      if (!this.child.stdin.writable) {
        reject(new Error("the server's stdin is closed"));
        return;
      }
      if (this.child.stdin.write(`${JSON.stringify(message)}\n`)) resolve();
      else this.child.stdin.once("drain", resolve);
    });
  }

  async close() {
    this.child.stdin.end();
  }
}

// ---------------------------------------------------------------------------------------
// Operation generation (from the main PRNG only, so that a seed fixes the sequence)

function randomVector(rng) {
  for (;;) {
    const v = Array.from({ length: DIM }, () => (rng.int(65) - 32) / 32);
    if (v.some((x) => x !== 0)) return v;
  }
}

function randomMetadata(rng) {
  const md = { group: rng.pick(GROUPS), n: rng.int(10) };
  if (rng.chance(0.5)) md.tag = rng.pick(["red", "green", "blue"]);
  if (rng.chance(0.4)) md.nested = { x: rng.int(5), y: rng.pick(["p", "q"]) };
  if (rng.chance(0.2)) md.list = [rng.int(3), rng.int(3)];
  return md;
}

function randomPatch(rng) {
  const patch = {};
  const n = 1 + rng.int(3);
  for (let i = 0; i < n; i++) {
    switch (rng.int(6)) {
      case 0:
        patch.group = rng.chance(0.2) ? null : rng.pick(GROUPS);
        break;
      case 1:
        patch.n = rng.chance(0.3) ? null : rng.int(10);
        break;
      case 2:
        patch.tag = rng.chance(0.4) ? null : rng.pick(["red", "green", "blue"]);
        break;
      case 3:
        if (rng.chance(0.3)) patch.nested = null;
        else {
          const nested = {};
          if (rng.chance(0.6)) nested.x = rng.chance(0.3) ? null : rng.int(5);
          if (rng.chance(0.6)) nested.y = rng.chance(0.3) ? null : rng.pick(["p", "q"]);
          patch.nested = nested;
        }
        break;
      case 4:
        patch.list = [rng.int(3)];
        break;
      default:
        patch.extra = rng.pick(["e1", "e2"]);
    }
  }
  return patch;
}

/** 1 to 3 ids, sometimes with one repeated (the last version of an id wins in one call). */
function randomIdList(rng) {
  const ids = rng.sample(IDS, rng.chance(0.7) ? 1 : 2 + rng.int(2));
  if (rng.chance(0.1)) ids.push(rng.pick(ids));
  return ids;
}

/** WEIGHTS with the overrides of MODEL_WEIGHTS ("upsert=0,search=20"). */
function weights() {
  const out = { ...WEIGHTS };
  for (const item of (process.env.MODEL_WEIGHTS ?? "").split(",").filter(Boolean)) {
    const [name, value] = item.split("=");
    if (!(name in out) || !Number.isFinite(Number(value))) throw new Error(`MODEL_WEIGHTS: bad item ${item}`);
    out[name] = Number(value);
  }
  return out;
}

/**
 * One random operation: `{kind, index, slot, ...}` (what the scheduler runs). On PostgreSQL
 * (`backend`), a search that forces an engine forces `postgres`, the only one there.
 */
function generateOp(rng, backend = "duckdb") {
  const kind = rng.weighted(weights());
  const index = rng.pick(INDEXES);
  const slot = rng.int(3);
  switch (kind) {
    case "embed":
    case "embed_wait":
      return {
        kind: "embed",
        index,
        slot,
        wait: kind === "embed_wait",
        docs: randomIdList(rng).map((id) => ({ id, text: rng.pick(TEXTS), metadata: randomMetadata(rng) })),
      };
    case "upsert":
      return {
        kind: "upsert",
        index,
        slot,
        create: rng.chance(0.85),
        rows: randomIdList(rng).map((id) => ({ id, vector: randomVector(rng), metadata: randomMetadata(rng) })),
      };
    case "update_merge":
      return { kind: "update", index, slot, id: rng.pick(IDS), metadata: randomPatch(rng), mode: "merge" };
    case "update_replace":
      return { kind: "update", index, slot, id: rng.pick(IDS), metadata: randomMetadata(rng), mode: "replace" };
    case "update_vector": {
      const withMetadata = rng.chance(0.4);
      return {
        kind: "update",
        index,
        slot,
        id: rng.pick(IDS),
        vector: randomVector(rng),
        metadata: withMetadata ? randomPatch(rng) : undefined,
        mode: "merge",
      };
    }
    case "delete_ids":
      return { kind: "delete", index, slot, ids: rng.sample(IDS, 1 + rng.int(3)) };
    case "delete_filter":
      return { kind: "delete_filter", index, slot, filter: { group: rng.pick(GROUPS) } };
    case "update_filter": {
      // `update` by filter: merge, replace or a new vector (with a merge patch or not), like
      // the three kinds of update by id.
      const filter = { group: rng.pick(GROUPS) };
      switch (rng.int(3)) {
        case 0:
          return { kind: "update_filter", index, slot, filter, metadata: randomPatch(rng), mode: "merge" };
        case 1:
          return { kind: "update_filter", index, slot, filter, metadata: randomMetadata(rng), mode: "replace" };
        default: {
          const vector = randomVector(rng);
          const metadata = rng.chance(0.4) ? randomPatch(rng) : undefined;
          return { kind: "update_filter", index, slot, filter, vector, metadata, mode: "merge" };
        }
      }
    }
    case "upsert_delete_filter":
      return {
        kind: "upsert_delete_filter",
        index,
        slot,
        create: rng.chance(0.85),
        filter: { group: rng.pick(GROUPS) },
        rows: randomIdList(rng).map((id) => ({ id, vector: randomVector(rng), metadata: randomMetadata(rng) })),
      };
    case "delete_index":
      return { kind: "delete_index", index, slot };
    case "flush":
      return { kind: "flush", index: rng.chance(0.5) ? index : null, slot };
    case "search": {
      // Half by vector, a quarter by keyword, a quarter hybrid (a word and a vector).
      const mode = rng.pick(["vector", "vector", "keyword", "hybrid"]);
      return {
        kind: "search",
        index,
        slot,
        mode,
        vector: mode === "keyword" ? undefined : randomVector(rng),
        word: mode === "vector" ? undefined : rng.pick(SEARCH_WORDS),
        filter: rng.chance(0.3) ? { group: rng.pick(GROUPS) } : undefined,
        engine: mode === "vector" && rng.chance(0.2) ? (backend === "postgres" ? "postgres" : "duckdb") : undefined,
      };
    }
    case "fetch":
      return { kind: "fetch", index, slot, ids: rng.sample(IDS, 1 + rng.int(IDS.length)) };
    default:
      throw new Error(`unknown op kind ${kind}`);
  }
}

/**
 * The ops of one sequence: random operations plus owner kills, a clean restart, an unknown
 * tool. On PostgreSQL there is no owner: each kill hits the process of a slot drawn here.
 */
function generateSequence(rng, nOps, { kills, avoid, backend = "duckdb" }) {
  const specials = new Map();
  const spot = () => {
    for (;;) {
      const at = 10 + rng.int(Math.max(1, nOps - 20));
      if (!specials.has(at)) return at;
    }
  };
  for (let i = 0; i < kills; i++) {
    specials.set(spot(), backend === "postgres" ? { kind: "kill_peer", slot: rng.int(3) } : { kind: "kill_owner" });
  }
  if (rng.chance(0.6)) specials.set(spot(), { kind: "clean_restart", slot: rng.int(3) });
  // The owner's client leaves while the others keep calling: a hand-over next to every
  // write kind (on PostgreSQL there is no owner; clean_restart covers a peer leaving).
  if (backend !== "postgres") for (let i = 0; i < 2; i++) specials.set(spot(), { kind: "owner_exit" });
  const unknownAt = spot();
  if (!avoid.has("unknown-tool")) specials.set(unknownAt, { kind: "unknown_tool" });
  const ops = [];
  for (let i = 0; i < nOps; i++) {
    if (specials.has(i)) ops.push(specials.get(i));
    ops.push(generateOp(rng, backend));
  }
  return ops;
}

// ---------------------------------------------------------------------------------------
// One sequence: a cluster of three processes, the model, the scheduler, the checks.

const BARRIERS = new Set(["delete_filter", "update_filter", "upsert_delete_filter", "delete_index", "flush", "check"]);
/** Barriers that read and write the keys of one index (the model's key operations). */
const INDEX_KEY_OPS = ["delete_filter", "update_filter", "upsert_delete_filter", "check"];

/** One sequence (exported for tests of the harness itself; runModel is the entry point). */
export class Sequence {
  constructor({ seed, runSeed, index: seqIndex, ollamaUrl, nOps, concurrency, avoid, keep, log, backend = "duckdb", conninfo = null, leaseMs = PG_LEASE_MS }) {
    this.seed = seed;
    this.backend = backend;
    /** PostgreSQL mode: every process a peer on one database (see the top of this file). */
    this.pg = backend === "postgres";
    this.conninfo = conninfo;
    this.leaseMs = leaseMs;
    // A fresh schema per sequence (its bookkeeping goes to stride_vectors_<schema>); not
    // drawn from the seeded streams, so that a replay gets a new one.
    this.schema = this.pg ? `model_${randomBytes(6).toString("hex")}` : null;
    this.runSeed = runSeed;
    this.seqIndex = seqIndex;
    this.ollamaUrl = ollamaUrl;
    this.nOps = nOps;
    this.concurrency = concurrency;
    this.avoid = avoid;
    this.keep = keep;
    this.print = log;
    this.rng = makeRng(seed);
    // Decisions that depend on timing (re-establishing ids after a kill, checks) draw from
    // their own stream, so that the main stream, hence the op sequence, is fixed by the seed.
    this.sideRng = makeRng(seed ^ 0x5bd1e995);
    this.debounceMs = this.rng.pick([50, 100, 200, 300]);
    this.maxWaitMs = 1000;
    this.kills = [];
    this.procs = new Set(); // every process of this sequence that may still be alive
    this.slots = [];
    this.ownerPid = null;
    this.waiters = [];
    this.failure = null;
    this.inflight = new Set();
    this.oplog = [];
    this.counter = 0;
    this.t0 = Date.now();
    this.counts = { ops: 0, calls: 0, kills: 0, ownerExits: 0, cleanRestarts: 0, unknownOutcomes: 0, searches: 0, barriers: 0 };
    this.indexes = new Map(
      INDEXES.map((name) => [
        name,
        {
          name,
          exists: new Set([false]),
          keys: new Map(IDS.map((id) => [id, { id, index: name, states: [ABSENT], during: null, lock: null }])),
          creators: 0,
          creatorEpoch: 0,
          watchers: new Set(),
        },
      ]),
    );
  }

  now() {
    return Date.now() - this.t0;
  }

  // ----- bookkeeping of waits ------------------------------------------------------------

  notify() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const resolve of waiters) resolve();
  }

  async until(condition) {
    while (!condition()) {
      if (this.failure) throw this.failure;
      await new Promise((resolve) => this.waiters.push(resolve));
    }
    if (this.failure) throw this.failure;
  }

  fail(error) {
    if (!this.failure) this.failure = error;
    this.notify();
  }

  event(text) {
    this.oplog.push({ n: "--", t: this.now(), text: `${text}` });
  }

  // ----- processes and clients -------------------------------------------------------------

  async startProcess(gen, label) {
    await waitForBinary();
    const args = [
      "--db",
      // On PostgreSQL the file is unused (no owner election there); each process still names
      // a path of its own, inside the sequence's directory, so that nothing derived from it
      // (such as the rendezvous socket's name) is shared by accident.
      this.pg ? path.join(this.dir, `unused-${label}.duckdb`) : this.db,
      ...(this.pg
        ? ["--database", withApplicationName(this.conninfo, appNameOf(this.schema, label)), "--pg-schema", this.schema, "--pg-lease-ms", String(this.leaseMs)]
        : []),
      "--embedder",
      "ollama",
      "--model",
      "fake",
      "--ollama-url",
      this.ollamaUrl,
      "--dimension",
      String(DIM),
      "--debounce-ms",
      String(this.debounceMs),
      "--max-wait-ms",
      String(this.maxWaitMs),
    ];
    // Through $STRIDE_VECTORS_RUNNER (Wine, qemu) when one is set.
    const started = serverCommand(args);
    const child = spawn(started.command, started.args, { stdio: ["pipe", "pipe", "pipe"], env: { ...process.env } });
    await new Promise((resolve, reject) => {
      child.once("spawn", resolve);
      child.once("error", reject);
    });
    const logPath = path.join(this.dir, `stderr-${label}-${child.pid}.log`);
    const log = fs.createWriteStream(logPath);
    // A log that cannot be written (its directory removed after a passing sequence) must
    // not fail the run: it is only kept for failure reports.
    log.on("error", () => {});
    child.stderr.pipe(log);
    const proc = {
      child,
      pid: child.pid,
      gen,
      label,
      logPath,
      log,
      killedByUs: false,
      alive: true,
      exited: null,
    };
    proc.exited = new Promise((resolve) =>
      child.once("exit", (code, signal) => {
        proc.alive = false;
        resolve({ code, signal });
      }),
    );
    this.procs.add(proc);
    const client =
      gen === "v1"
        ? new ClientV1({ name: "model-test-v1", version: "0.0.0" })
        : new ClientV2(
            { name: "model-test-v2", version: "0.0.0" },
            { versionNegotiation: { mode: { pin: REVISION_2026 } } },
          );
    try {
      await client.connect(new LineTransport(child), { timeout: 60_000 });
      const { tools } = await client.listTools();
      assert.ok(tools.some((t) => t.name === "embed"), "tools/list lacks embed");
    } catch (error) {
      child.kill("SIGKILL");
      throw new Violation(`${gen} client could not connect to a new stride-vectors (pid ${proc.pid}): ${error.message}`);
    }
    proc.client = client;
    if (RUNNER.length > 0) {
      // Under a runner (Wine) the server's own pid, which stats report, is not the child's.
      const res = await this.callRaw(proc, "stats", {}, 45_000);
      if (res.type !== "ok") throw new Violation(`stats through new process ${label} failed: ${res.text}`);
      proc.pid = res.value.pid;
    }
    this.event(`started ${label} pid ${proc.pid} (${gen} client)`);
    if (this.pg) await this.checkPeer(proc);
    return proc;
  }

  /**
   * PostgreSQL: a new process must say it is a peer writing to PostgreSQL, itself (what
   * settleOwner checks on DuckDB; there is no owner to wait for here).
   */
  async checkPeer(proc) {
    let res;
    try {
      res = await this.callRaw(proc, "stats", {}, 45_000);
    } catch (error) {
      throw error instanceof Violation ? error : new Violation(`stats through new process ${proc.label} (pid ${proc.pid}) failed: ${error.message}`);
    }
    if (res.type !== "ok") throw new Violation(`stats through ${proc.label} (pid ${proc.pid}) failed: ${res.text}`);
    const { role, backend, pid } = res.value;
    if (role !== "peer" || backend !== "postgres" || pid !== proc.pid) {
      throw new Violation(
        `stats of new process ${proc.label} (pid ${proc.pid}) say role ${JSON.stringify(role)}, backend ${JSON.stringify(backend)}, pid ${pid} (expected a postgres peer)`,
      );
    }
  }

  /** One tools/call: {type: "ok", value} (the exact text copy) or {type: "toolError", text}. */
  async callRaw(proc, name, args, timeout) {
    this.counts.calls++;
    const params = { name, arguments: args };
    const result =
      proc.gen === "v1"
        ? await proc.client.callTool(params, undefined, { timeout, maxTotalTimeout: timeout })
        : await proc.client.callTool(params, { timeout });
    const text = resultText(result);
    if (result.isError) return { type: "toolError", text };
    let value;
    try {
      value = JSON.parse(text);
    } catch {
      throw new Violation(`${name}: the text copy of the result is not JSON: ${text.slice(0, 300)}`);
    }
    try {
      // Floats in structuredContent may be a few f64 ulps off through a relay (known,
      // tolerated here); the text copy is exact and is what the model compares.
      assertSameJson(result.structuredContent, value, `${name}: structuredContent vs text copy`);
    } catch (error) {
      throw new Violation(`${name}: structuredContent differs from its text copy: ${error.message}`);
    }
    return { type: "ok", value };
  }

  roleOf(proc) {
    if (this.pg) return "peer";
    return proc.pid === this.ownerPid ? "owner" : "relay";
  }

  /** The process of `slot` once it is up, registered as busy with `op` (synchronously). */
  async acquire(slot, op) {
    for (;;) {
      if (this.failure) throw this.failure;
      if (slot.state === "up") {
        slot.inflight.add(op);
        return slot.proc;
      }
      await Promise.race([slot.ready, new Promise((resolve) => this.waiters.push(resolve))]);
    }
  }

  /** The slot an op runs on (`MODEL_AVOID=v2-relay` keeps 2.x clients off relays). */
  slotFor(op) {
    const live = this.slots.filter((s) => s.state !== "down");
    let slot = this.slots[op.slot ?? 0];
    if (!slot || slot.state === "down") slot = live[(op.slot ?? 0) % live.length];
    // (PostgreSQL has no relays: nothing to avoid there.)
    if (this.avoid.has("v2-relay") && !this.pg) {
      const ok = (s) => s.state === "up" && !(s.gen === "v2" && s.proc.pid !== this.ownerPid);
      if (!ok(slot)) slot = live.find(ok) ?? live.find((s) => s.gen === "v1") ?? slot;
    }
    return slot;
  }

  /** `stats` through a v1 client (the infrastructure's view: who owns the file). */
  async infraStats() {
    for (let attempt = 0; attempt < 20; attempt++) {
      const candidates = this.slots
        .filter((s) => s.state === "up")
        .sort((a, b) => (a.gen === b.gen ? 0 : a.gen === "v1" ? -1 : 1));
      const slot = candidates[0];
      if (!slot) {
        await sleep(100);
        continue;
      }
      const marker = { infra: true };
      slot.inflight.add(marker);
      const proc = slot.proc;
      try {
        const res = await this.callRaw(proc, "stats", {}, 45_000);
        if (res.type !== "ok") throw new Violation(`stats failed: ${res.text}`);
        return res.value;
      } catch (error) {
        if (proc.killedByUs) continue;
        throw error instanceof Violation ? error : new Violation(`stats through ${proc.label} (${proc.gen}) failed: ${error.message}`);
      } finally {
        slot.inflight.delete(marker);
        this.notify();
      }
    }
    throw new Violation("no live client to ask stats");
  }

  livePids() {
    return new Set([...this.procs].filter((p) => p.alive && !p.killedByUs).map((p) => p.pid));
  }

  /** Waits until stats name a live owner of ours (other than `notPid`). */
  async settleOwner(notPid = null) {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const stats = await this.infraStats();
      if (stats.owner_pid !== notPid && this.livePids().has(stats.owner_pid)) {
        this.ownerPid = stats.owner_pid;
        return stats;
      }
      if (Date.now() > deadline) {
        throw new Violation(`no live owner 30 s later: stats name owner_pid ${stats.owner_pid} (live: ${[...this.livePids()].join(",")})`);
      }
      await sleep(50);
    }
  }

  /**
   * Generation of a process that will be a relay: keep a 1.x and a 2.x client on relays (on
   * PostgreSQL, where every process is a peer: among the other live processes).
   */
  generationForNewRelay(slot) {
    const relayGens = new Set(
      this.slots
        .filter((s) => s !== slot && s.state === "up" && (this.pg || s.proc.pid !== this.ownerPid))
        .map((s) => s.gen),
    );
    if (!relayGens.has("v2")) return "v2";
    if (!relayGens.has("v1")) return "v1";
    return slot.gen;
  }

  newReady(slot) {
    slot.ready = new Promise((resolve) => {
      slot.resolveReady = resolve;
    });
  }

  async startCluster() {
    const gens = ["v1", "v2", "v1"];
    for (let i = 0; i < 3; i++) {
      const slot = { i, gen: gens[i], state: "starting", proc: null, inflight: new Set(), restarts: 0 };
      this.newReady(slot);
      this.slots.push(slot);
    }
    if (this.pg) {
      // No owner to elect: the three start at once on the fresh schema (each checked to be
      // a postgres peer by startProcess).
      await Promise.all(
        this.slots.map(async (slot) => {
          slot.proc = await this.startProcess(slot.gen, `s${slot.i}`);
          slot.state = "up";
          slot.resolveReady();
        }),
      );
      this.event(`roles: ${this.rolesText()}`);
      return;
    }
    // The first process alone, so that it becomes the owner; then the two relays.
    const first = this.slots[0];
    first.proc = await this.startProcess(first.gen, "s0");
    first.state = "up";
    first.resolveReady();
    await Promise.all(
      this.slots.slice(1).map(async (slot) => {
        slot.proc = await this.startProcess(slot.gen, `s${slot.i}`);
        slot.state = "up";
        slot.resolveReady();
      }),
    );
    const stats = await this.infraStats();
    if (stats.owner_pid !== first.proc.pid) {
      throw new Violation(`the first process (pid ${first.proc.pid}) should own the file, stats say owner_pid ${stats.owner_pid}`);
    }
    this.ownerPid = stats.owner_pid;
    this.event(`roles: ${this.rolesText()}`);
  }

  rolesText() {
    const slots = this.slots
      .filter((s) => s.proc)
      .map((s) => `s${s.i}=${s.gen}/${s.state === "up" ? this.roleOf(s.proc) : s.state}/pid ${s.proc.pid}`);
    return slots.join(", ");
  }

  /** SIGKILL the current owner (found with stats) and put a new process in its slot. */
  async killOwner() {
    const stats = await this.settleOwner();
    const victim = [...this.procs].find((p) => p.pid === stats.owner_pid && p.alive);
    if (!victim) throw new Violation(`stats name owner_pid ${stats.owner_pid}, which is no live process of ours`);
    const slot = this.slots.find((s) => s.proc === victim && s.state === "up");
    if (slot) {
      slot.state = "restarting";
      this.newReady(slot);
    }
    victim.killedByUs = true;
    const at = Date.now();
    this.kills.push(at);
    this.counts.kills++;
    this.event(`kill -9 owner pid ${victim.pid} (${slot ? `slot s${slot.i}, ${victim.gen}` : "client already closed"}); ${this.inflight.size} ops in flight`);
    victim.child.kill("SIGKILL");
    await victim.exited;
    const after = await this.settleOwner(victim.pid);
    this.event(`take-over: new owner pid ${after.owner_pid} ${Date.now() - at} ms after the kill`);
    if (slot) {
      await this.until(() => slot.inflight.size === 0);
      await this.replaceProcess(slot);
    } else {
      await this.settleOwner();
      this.event(`roles: ${this.rolesText()}`);
    }
  }

  /**
   * PostgreSQL: SIGKILL the process of `slotIndex` (any process: there is no owner) and put a
   * new one in its slot. Nothing to wait for in between: the others write on their own, and
   * take over the embeddings it had claimed once its lease ends.
   */
  async killPeer(slotIndex) {
    const slot = this.slots[slotIndex].state === "up" ? this.slots[slotIndex] : this.slots.find((s) => s.state === "up");
    if (!slot) throw new Violation("no live process to kill");
    const victim = slot.proc;
    slot.state = "restarting";
    this.newReady(slot);
    this.kills.push(Date.now());
    this.counts.kills++;
    this.event(`kill -9 pid ${victim.pid} (slot s${slot.i}, ${victim.gen}); ${this.inflight.size} ops in flight (${slot.inflight.size} on it)`);
    const at = Date.now();
    await this.pgKill(victim);
    this.event(`pid ${victim.pid} gone, and its last connection to PostgreSQL ${Date.now() - at} ms after the kill`);
    await this.until(() => slot.inflight.size === 0);
    await this.replaceProcess(slot);
  }

  /** Start a new process (and client) in `slot`, of the generation that keeps the mix. */
  async replaceProcess(slot) {
    const gen = this.generationForNewRelay(slot);
    slot.gen = gen;
    slot.restarts++;
    slot.proc = await this.startProcess(gen, `s${slot.i}r${slot.restarts}`);
    slot.state = "up";
    slot.resolveReady();
    this.notify();
    if (!this.pg) await this.settleOwner();
    this.event(`roles: ${this.rolesText()}`);
  }

  /** The current owner's client leaves (stdin closed); the others go on calling meanwhile. */
  async ownerExit() {
    const stats = await this.settleOwner();
    const slot = this.slots.find((s) => s.state === "up" && s.proc.pid === stats.owner_pid);
    if (!slot) throw new Violation(`stats name owner_pid ${stats.owner_pid}, which is no slot of ours`);
    this.counts.ownerExits++;
    await this.cleanRestart(slot.i);
  }

  /** Close one client's stdin (what an MCP client does) and start a new process in its slot. */
  async cleanRestart(slotIndex) {
    const slot = this.slots[slotIndex];
    if (slot.state !== "up") return;
    slot.state = "restarting";
    this.newReady(slot);
    await this.until(() => slot.inflight.size === 0);
    const proc = slot.proc;
    const wasOwner = !this.pg && proc.pid === this.ownerPid;
    this.counts.cleanRestarts++;
    this.event(`clean restart of s${slot.i} (${proc.gen}, ${this.roleOf(proc)}, pid ${proc.pid}): stdin closed`);
    const at = Date.now();
    await proc.client.close().catch(() => {});
    if (this.pg) {
      // A peer serves no one else: it exits, cleanly, once its stdin is closed (having
      // handed back its claims on the queue).
      await this.expectCleanExit(proc, 20_000);
    } else if (wasOwner) {
      // An owner hands over at once: it turns relayed calls away, finishes those in flight,
      // closes the file and exits; the relays send what it did not answer to the next owner.
      // A call whose answer was lost on the way may have run twice, as after a kill.
      this.kills.push(at);
      await this.expectCleanExit(proc, 20_000);
      const next = await this.settleOwner(proc.pid);
      this.event(`hand-over: new owner pid ${next.owner_pid} ${Date.now() - at} ms after the owner's stdin closed`);
    } else {
      const outcome = await Promise.race([proc.exited, sleep(20_000, "timeout", { ref: false })]);
      if (outcome === "timeout") throw new Violation(`relay pid ${proc.pid} did not exit 20 s after its stdin closed`);
    }
    await this.replaceProcess(slot);
  }

  /**
   * PostgreSQL: SIGKILL `proc`; `proc.settled` resolves once the process is gone AND the
   * database holds no connection of it any more: until then a transaction it sent may still
   * commit. Set in the same tick as the kill, so that every call failing because of it finds it.
   */
  pgKill(proc) {
    proc.killedByUs = true;
    proc.child.kill("SIGKILL");
    proc.settled = (async () => {
      await proc.exited;
      const name = appNameOf(this.schema, proc.label);
      const deadline = Date.now() + 30_000;
      for (;;) {
        const { rows } = await this.admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1", [name]);
        if (rows[0].n === 0) return;
        if (Date.now() > deadline) {
          throw new Violation(`killed pid ${proc.pid}: PostgreSQL still shows ${rows[0].n} connection(s) of it (application_name ${name}) 30 s later`);
        }
        await sleep(10);
      }
    })();
    // Awaited by whoever needs it; a failure is reported there (or by the sequence's end).
    proc.settled.catch((error) => this.fail(error));
    return proc.settled;
  }

  /** PostgreSQL: `proc` (stdin closed) exits by itself within `ms`, with code 0. */
  async expectCleanExit(proc, ms) {
    const outcome = await Promise.race([proc.exited, sleep(ms, "timeout", { ref: false })]);
    if (outcome === "timeout") throw new Violation(`pid ${proc.pid} did not exit ${ms / 1000} s after its stdin closed`);
    if (outcome.code !== 0) {
      throw new Violation(`pid ${proc.pid} exited with code ${outcome.code} (signal ${outcome.signal}) after its stdin closed, not 0`);
    }
  }

  // ----- the model: start and acknowledgement of key operations ------------------------------

  idx(name) {
    return this.indexes.get(name);
  }

  keysOf(op) {
    if (op.kind === "flush") {
      return op.index ? [...this.idx(op.index).keys.values()] : [...this.indexes.values()].flatMap((i) => [...i.keys.values()]);
    }
    if (["delete_index", ...INDEX_KEY_OPS].includes(op.kind)) return [...this.idx(op.index).keys.values()];
    return op.keyIds.map((id) => this.idx(op.index).keys.get(id));
  }

  /**
   * The states one key may reach through `op`, from `state`, with the per-key answer each
   * gives: `present` says whether the index exists when the op runs (else the key is absent).
   */
  candidates(op, id, state, present, retried) {
    switch (op.kind) {
      case "embed": {
        const doc = op.lastDoc.get(id);
        if (!present) state = ABSENT; // the call creates the index
        // The index keeps the text in metadata.text (the default text_field).
        const md = { ...doc.metadata, text: doc.text };
        if (state.row && state.row.text === doc.text) {
          return [{ state: { row: { ...state.row, md }, pend: null }, ans: "unchanged" }];
        }
        const queued = { row: state.row, pend: { text: doc.text, md } };
        const out = [{ state: queued, ans: "queued" }];
        if (op.wait) out.push({ state: materialized(queued), ans: "indexed" });
        // Run twice (a relay retried it on the new owner): the first run may have been embedded.
        if (retried) out.push({ state: materialized(queued), ans: "unchanged" });
        return out;
      }
      case "upsert": {
        if (!present && !op.create) return [{ state: ABSENT, ans: "noindex" }];
        const row = op.lastRow.get(id);
        return [{ state: { row: { v: row.vector, md: row.metadata, text: null }, pend: null }, ans: "ok" }];
      }
      case "update": {
        if (!present) return [{ state: ABSENT, ans: "noindex" }];
        if (!state.row) return [{ state, ans: "missing" }];
        return [{ state: updated(op, state), ans: "ok" }];
      }
      // `update` by filter: the stored rows whose metadata matches at commit time, each
      // changed as `update` by id changes it; a pending version alone is not selected (nor is
      // its metadata consulted). `count` is summed over the keys (lo = hi per state).
      case "update_filter": {
        if (!present) return [{ state: ABSENT, ans: "noindex" }];
        if (!(state.row && matches(state.row.md, op.filter))) return [{ state, ans: { lo: 0, hi: 0 } }];
        return [{ state: updated(op, state), ans: { lo: 1, hi: 1 } }];
      }
      // `deleted` counts rows removed; an id that only had a pending version may count or
      // not (the schema says rows, an implementation may count pending versions too).
      case "delete":
        if (!present) return [{ state: ABSENT, ans: "noindex" }];
        return [{ state: ABSENT, ans: { lo: state.row ? 1 : 0, hi: state.row || state.pend ? 1 : 0 } }];
      case "delete_filter": {
        if (!present) return [{ state: ABSENT, ans: "noindex" }];
        const { state: after, lo, hi } = filterDeleted(state, op.filter);
        return [{ state: after, ans: { lo, hi } }];
      }
      // `upsert` with `delete_filter`: in one transaction, `delete` by the filter (on an index
      // this call creates: nothing), then the rows written as by `upsert`. `deleted` is summed
      // over the keys, as for delete_filter.
      case "upsert_delete_filter": {
        if (!present && !op.create) return [{ state: ABSENT, ans: "noindex" }];
        let { state: after, lo, hi } = present ? filterDeleted(state, op.filter) : { state: ABSENT, lo: 0, hi: 0 };
        const row = op.lastRow.get(id);
        if (row) {
          after = { row: { v: row.vector, md: row.metadata, text: null }, pend: null };
          // Run twice: the second delete also removes this row when the filter matches it.
          if (retried && matches(row.metadata, op.filter)) hi = 1;
        }
        return [{ state: after, ans: { lo, hi } }];
      }
      case "fetch":
      case "check":
        if (!present) return [{ state: ABSENT, ans: "noindex" }];
        return [{ state, ans: state.row ? rowKey(state.row) : "missing" }];
      default:
        throw new Error(`no candidates for ${op.kind}`);
    }
  }

  beginKeyOp(op) {
    const idx = this.idx(op.index);
    op.othersAtStart = idx.creators;
    if (op.creator) {
      idx.creators++;
      idx.creatorEpoch++;
      for (const w of idx.watchers) w.existsPossible.add(true);
    }
    op.epochAtStart = idx.creatorEpoch;
    op.existsAtStart = new Set(idx.exists);
    for (const key of this.keysOf(op)) {
      const all = [...key.states];
      for (const s of key.states) for (const c of this.candidates(op, key.id, s, true, true)) all.push(c.state);
      for (const c of this.candidates(op, key.id, ABSENT, false, true)) all.push(c.state);
      key.during = closeStates(all);
      for (const w of idx.watchers) w.add(key.id, key.during);
    }
  }

  maybeRetried(op) {
    // On PostgreSQL no process forwards a call to another: a call is run once, by the process
    // it was sent to (or its outcome is unknown when that process was killed).
    if (this.pg) return false;
    return this.kills.some((k) => op.t0abs <= k + RETRY_WINDOW_MS && op.t1abs >= k);
  }

  /** Apply an acknowledged (or unknown) key operation to the model; throws a Violation. */
  ackKeyOp(op, outcome) {
    const idx = this.idx(op.index);
    if (op.creator) idx.creators--;
    const othersDuring = op.othersAtStart > 0 || idx.creators > 0 || idx.creatorEpoch !== op.epochAtStart;
    const existsPossible = new Set(op.existsAtStart);
    if (othersDuring) existsPossible.add(true);
    const keys = this.keysOf(op);
    if (outcome.type === "unknown") {
      for (const key of keys) {
        key.states = key.during;
        key.during = null;
      }
      if (op.creator) idx.exists.add(true);
      return;
    }
    const retried = this.maybeRetried(op);
    op.retried = retried;
    const where = `${op.kind} #${op.n} on ${op.index}`;
    let observed; // per key, or "noindex"/"missing"/"ok"
    if (outcome.type === "toolError") {
      if (/does not exist/.test(outcome.text)) observed = "noindex";
      else if (op.kind === "update" && /no vector with id/.test(outcome.text)) observed = "missing";
      else throw new Violation(`${where}: unexpected tool error: ${outcome.text}`);
    }
    let branches;
    if (observed === "noindex") {
      if (!existsPossible.has(false)) {
        throw new Violation(`${where}: the server says index ${op.index} does not exist, but it was created and not deleted (model: exists)`);
      }
      if (op.creator) throw new Violation(`${where}: a call that creates the index answered that it does not exist`);
      branches = [false];
    } else {
      if (!existsPossible.has(true) && !op.creator) {
        throw new Violation(
          `${where}: the call succeeded on index ${op.index}, which the model says does not exist (deleted by delete_index and not created again)`,
        );
      }
      branches = [];
      if (existsPossible.has(true)) branches.push(true);
      if (op.creator && existsPossible.has(false)) branches.push(false);
    }
    const perKeyObserved = (id) => {
      if (observed) return observed;
      const v = outcome.value;
      switch (op.kind) {
        case "embed":
          return op.statusOf.get(id);
        case "upsert":
        case "update":
          return "ok";
        case "fetch":
        case "check":
          return op.fetched.get(id);
        default:
          return undefined; // delete counts are checked as a sum below
      }
    };
    const next = new Map();
    let countMin = 0;
    let countMax = 0;
    for (const key of keys) {
      const pre = key.states;
      const cands = branches.flatMap((present) =>
        present
          ? closeStates(pre).flatMap((s) => this.candidates(op, key.id, s, true, retried))
          : this.candidates(op, key.id, ABSENT, false, retried),
      );
      const want = perKeyObserved(key.id);
      const kept = want === undefined ? cands : cands.filter((c) => c.ans === want);
      if (!kept.length) {
        throw new Violation(
          `${where}: id ${key.id}: the answer ${JSON.stringify(want)} fits no state the model allows.\n` +
            `  model before: ${fmtStates(pre)}\n` +
            `  possible answers: ${[...new Set(cands.map((c) => JSON.stringify(c.ans)))].join(", ")}` +
            (op.kind === "fetch" || op.kind === "check" ? `\n  fetched: ${fmtFetched(want)}` : ""),
        );
      }
      if (typeof cands[0]?.ans === "object") {
        countMin += Math.min(...cands.map((c) => c.ans.lo));
        countMax += Math.max(...cands.map((c) => c.ans.hi));
      }
      next.set(key, closeStates(kept.map((c) => c.state)));
    }
    // Answer-level checks.
    if (outcome.type === "ok") {
      const v = outcome.value;
      if (op.kind === "delete" || op.kind === "delete_filter" || op.kind === "upsert_delete_filter") {
        const low = retried ? 0 : countMin;
        if (!(Number.isInteger(v.deleted) && v.deleted >= low && v.deleted <= countMax)) {
          throw new Violation(`${where}: deleted ${v.deleted}, the model allows ${low}..${countMax}`);
        }
      }
      if (op.kind === "update_filter") {
        // Run twice, the second run may find fewer rows (its patch moved them out of the filter).
        const low = retried ? 0 : countMin;
        if (!(Number.isInteger(v.count) && v.count >= low && v.count <= countMax)) {
          throw new Violation(`${where}: count ${v.count}, the model allows ${low}..${countMax}`);
        }
        if (v.updated !== v.count > 0 || v.index !== op.index || v.id !== undefined) {
          throw new Violation(`${where}: malformed answer ${JSON.stringify(v)}`);
        }
      }
      if (op.kind === "upsert" || op.kind === "upsert_delete_filter") {
        const ids = [...new Set(op.rows.map((r) => r.id))];
        if (canon(v.ids) !== canon(ids) || v.upserted !== ids.length) {
          throw new Violation(`${where}: answered ids ${canon(v.ids)} (upserted ${v.upserted}), expected ${canon(ids)}`);
        }
        if (!retried && !othersDuring && op.existsAtStart.size === 1 && op.create) {
          const expected = op.existsAtStart.has(false);
          if (v.created_index !== expected) {
            throw new Violation(`${where}: created_index ${v.created_index}, expected ${expected}`);
          }
        }
      }
    }
    for (const [key, states] of next) {
      key.states = states;
      key.during = null;
      if (states.length > 64) this.event(`note: ${key.index}/${key.id} has ${states.length} possible states`);
    }
    if (observed === "noindex") {
      if (!othersDuring) idx.exists = new Set([false]);
    } else {
      idx.exists = new Set([true]);
    }
  }

  // ----- searches --------------------------------------------------------------------------

  beginSearch(op) {
    const idx = this.idx(op.index);
    const w = {
      // Per id: the rows it may show, and whether it matches (the filter, and for a keyword
      // search the word) in every state it has during the call.
      ids: new Map(IDS.map((id) => [id, { rows: new Set(), absent: false, always: true }])),
      existsPossible: new Set(idx.exists),
      add: (id, states) => {
        const e = w.ids.get(id);
        for (const s of states) {
          if (s.row) {
            e.rows.add(rowKey(s.row));
            if (op.filter && !matches(s.row.md, op.filter)) e.always = false;
            if (op.mode === "keyword" && !hasWord(s.row.md, op.word)) e.always = false;
          } else {
            e.absent = true;
            e.always = false;
          }
        }
      },
    };
    if (idx.creators > 0) w.existsPossible.add(true);
    for (const key of idx.keys.values()) w.add(key.id, key.during ?? key.states);
    idx.watchers.add(w);
    op.watcher = w;
  }

  ackSearch(op, outcome) {
    const idx = this.idx(op.index);
    const w = op.watcher;
    idx.watchers.delete(w);
    if (outcome.type === "unknown") return;
    const where = `search #${op.n} on ${op.index}`;
    if (outcome.type === "toolError") {
      if (!/does not exist/.test(outcome.text)) throw new Violation(`${where}: unexpected tool error: ${outcome.text}`);
      if (!w.existsPossible.has(false)) throw new Violation(`${where}: says the index does not exist, but the model says it does`);
      return;
    }
    if (!w.existsPossible.has(true)) {
      throw new Violation(`${where}: answered ${outcome.value.results.length} results from an index the model says does not exist`);
    }
    if (this.pg && outcome.value.engine !== "postgres") {
      throw new Violation(`${where}: answered by engine ${JSON.stringify(outcome.value.engine)}, expected "postgres"`);
    }
    const results = outcome.value.results;
    const seen = new Set();
    let previous = Infinity;
    for (const hit of results) {
      const e = w.ids.get(hit.id);
      if (!e) throw new Violation(`${where}: unknown id ${hit.id}`);
      if (seen.has(hit.id)) throw new Violation(`${where}: id ${hit.id} twice`);
      seen.add(hit.id);
      if (!Array.isArray(hit.vector)) throw new Violation(`${where}: hit ${hit.id} has no vector (include_vector)`);
      const shown = rowKey({ v: hit.vector, md: hit.metadata });
      if (!e.rows.has(shown)) {
        throw new Violation(
          `${where}: hit ${hit.id} = {${fmtVector(hit.vector)} ${fmtMd(hit.metadata)}} is no state this id had during the call; ` +
            `possible rows: ${[...e.rows].map((r) => { const x = JSON.parse(r); return `{${fmtVector(x.v)} ${fmtMd(x.md)}}`; }).join(" | ") || "none"}` +
            `${e.absent ? " (or absent)" : ""}`,
        );
      }
      if (op.filter && !matches(hit.metadata, op.filter)) throw new Violation(`${where}: hit ${hit.id} does not match the filter ${canon(op.filter)}`);
      this.checkScores(op, hit, results.indexOf(hit), where);
      if (hit.score > previous + 1e-6) throw new Violation(`${where}: results are not ordered by score`);
      previous = hit.score;
    }
    if (w.existsPossible.size === 1 && w.existsPossible.has(true)) {
      for (const [id, e] of w.ids) {
        if (e.always && !seen.has(id)) {
          throw new Violation(`${where}: id ${id} had a matching row during the whole call but is not in the results`);
        }
      }
    }
  }

  /** A hit's score, and in keyword and hybrid modes what it says each list found. */
  checkScores(op, hit, at, where) {
    const cos = () => cosine(op.vector, hit.vector);
    const found = hit.found_by;
    if (op.mode === "vector") {
      if (!(Math.abs(hit.score - cos()) <= 1e-4)) throw new Violation(`${where}: hit ${hit.id} scores ${hit.score}, its vector gives ${cos()}`);
      if (found !== undefined) throw new Violation(`${where}: a vector search's hit ${hit.id} says found_by`);
      return;
    }
    const word = hasWord(hit.metadata, op.word);
    if (op.mode === "keyword") {
      if (!word) throw new Violation(`${where}: keyword hit ${hit.id} has no ${JSON.stringify(op.word)} in its text ${JSON.stringify(hit.metadata.text)}`);
      if (!(hit.score > 0) || found?.keyword?.rank !== at + 1 || found.keyword.score !== hit.score || found.vector) {
        throw new Violation(`${where}: keyword hit ${hit.id} at rank ${at + 1} scores ${hit.score} with found_by ${canon(found)}`);
      }
      return;
    }
    // Hybrid: every row is in the vector list (top_k exceeds the ids); the keyword list holds
    // exactly the rows whose text (as this hit shows it: the same commit) has the word.
    if (!found?.vector || !(Math.abs(found.vector.score - cos()) <= 1e-4)) {
      throw new Violation(`${where}: hybrid hit ${hit.id}: found_by ${canon(found)}, its vector gives ${cos()}`);
    }
    if (Boolean(found.keyword) !== word) {
      throw new Violation(`${where}: hybrid hit ${hit.id} (text ${JSON.stringify(hit.metadata.text)}) found_by ${canon(found)} for ${JSON.stringify(op.word)}`);
    }
    const rrf = 1 / (60 + found.vector.rank) + (found.keyword ? 1 / (60 + found.keyword.rank) : 0);
    if (!(Math.abs(hit.score - rrf) <= 1e-9)) throw new Violation(`${where}: hybrid hit ${hit.id} scores ${hit.score}, its ranks give ${rrf}`);
  }

  // ----- barriers ------------------------------------------------------------------------------

  ackDeleteIndex(op, outcome) {
    const idx = this.idx(op.index);
    if (outcome.type === "toolError") throw new Violation(`delete_index #${op.n}: unexpected tool error: ${outcome.text}`);
    const retried = this.maybeRetried(op);
    if (!retried && idx.exists.size === 1) {
      const expected = idx.exists.has(true);
      if (outcome.value.deleted !== expected) {
        throw new Violation(`delete_index #${op.n} on ${op.index}: deleted ${outcome.value.deleted}, the model says the index ${expected ? "exists" : "does not exist"}`);
      }
    }
    idx.exists = new Set([false]);
    for (const key of idx.keys.values()) key.states = [ABSENT];
  }

  ackFlush(op, outcome) {
    if (outcome.type === "toolError") throw new Violation(`flush #${op.n}: unexpected tool error: ${outcome.text}`);
    const { pending } = outcome.value;
    const parked = outcome.value.parked ?? 0; // older binaries do not report it
    if (pending !== 0 || parked !== 0) {
      throw new Violation(`flush #${op.n}: returned with ${pending} pending and ${parked} parked (every pending version should be embedded)`);
    }
    for (const key of this.keysOf(op)) key.states = key.states.filter((s) => !s.pend);
  }

  ackList(op, outcome) {
    if (outcome.type === "toolError") throw new Violation(`list_indexes: unexpected tool error: ${outcome.text}`);
    const listed = new Map(outcome.value.indexes.map((i) => [i.index, i]));
    for (const name of listed.keys()) {
      if (!this.indexes.has(name)) throw new Violation(`list_indexes names an index this test never made: ${name}`);
    }
    for (const idx of this.indexes.values()) {
      const info = listed.get(idx.name);
      const present = Boolean(info);
      if (!idx.exists.has(present)) {
        throw new Violation(
          `list_indexes: index ${idx.name} is ${present ? "present" : "missing"}, the model says it ${present ? "was deleted (delete_index) and not created again" : "exists"}`,
        );
      }
      idx.exists = new Set([present]);
      if (!present) continue;
      if (info.dimension !== DIM || info.metric !== "cosine") {
        throw new Violation(`list_indexes: ${idx.name} has dimension ${info.dimension} and metric ${info.metric}`);
      }
      const keys = [...idx.keys.values()];
      const min = keys.filter((k) => k.states.every((s) => s.row)).length;
      const max = keys.filter((k) => k.states.some((s) => s.row)).length;
      if (!(info.count >= min && info.count <= max)) {
        throw new Violation(`list_indexes: ${idx.name} counts ${info.count} rows, the model allows ${min}..${max}`);
      }
    }
  }

  // ----- running one operation -----------------------------------------------------------------

  /** Tool name and arguments of an op; also prepares what the model needs. */
  prepare(op) {
    switch (op.kind) {
      case "embed":
        op.lastDoc = new Map(op.docs.map((d) => [d.id, d]));
        op.keyIds = [...op.lastDoc.keys()];
        op.creator = true;
        return ["embed", { index: op.index, documents: op.docs, ...(op.wait ? { wait: true } : {}) }];
      case "upsert":
        op.lastRow = new Map(op.rows.map((r) => [r.id, r]));
        op.keyIds = [...op.lastRow.keys()];
        op.creator = op.create;
        return [
          "upsert",
          { index: op.index, vectors: op.rows, ...(op.create ? { create_index: { dimension: DIM, metric: "cosine" } } : {}) },
        ];
      case "update":
        op.keyIds = [op.id];
        return [
          "update",
          {
            index: op.index,
            id: op.id,
            ...patchArgs(op),
          },
        ];
      case "delete":
        op.keyIds = op.ids;
        return ["delete", { index: op.index, ids: op.ids }];
      case "delete_filter":
        return ["delete", { index: op.index, filter: op.filter }];
      case "update_filter":
        return [
          "update",
          {
            index: op.index,
            filter: op.filter,
            ...patchArgs(op),
          },
        ];
      case "upsert_delete_filter":
        op.lastRow = new Map(op.rows.map((r) => [r.id, r]));
        op.creator = op.create;
        return [
          "upsert",
          {
            index: op.index,
            vectors: op.rows,
            delete_filter: op.filter,
            ...(op.create ? { create_index: { dimension: DIM, metric: "cosine" } } : {}),
          },
        ];
      case "delete_index":
        return ["delete_index", { index: op.index }];
      case "flush":
        return ["flush", { ...(op.index ? { index: op.index } : {}), timeout_ms: 30_000 }];
      case "fetch":
        op.keyIds = op.ids;
        return ["fetch", { index: op.index, ids: op.ids }];
      case "check":
        op.keyIds = IDS;
        return ["fetch", { index: op.index, ids: IDS }];
      case "list":
        return ["list_indexes", {}];
      case "search":
        return [
          "search",
          {
            index: op.index,
            ...(op.vector ? { vector: op.vector } : {}),
            ...(op.mode === "vector" ? {} : { mode: op.mode, query: op.word }),
            top_k: 10,
            include_vector: true,
            ...(op.filter ? { filter: op.filter } : {}),
            ...(op.engine ? { engine: op.engine } : {}),
          },
        ];
      case "unknown_tool":
        return ["no_such_tool", {}];
      default:
        throw new Error(`cannot run ${op.kind}`);
    }
  }

  describeOp(op) {
    const md = (m) => (m === undefined ? "" : ` ${fmtMd(m)}`);
    switch (op.kind) {
      case "embed":
        return `embed ${op.index} [${op.docs.map((d) => `${d.id}:${fmtText(d.text)}${md(d.metadata)}`).join(", ")}]${op.wait ? " wait" : ""}`;
      case "upsert":
        return `upsert ${op.index}${op.create ? "" : " (no create_index)"} [${op.rows.map((r) => `${r.id}:${fmtVector(r.vector)}${md(r.metadata)}`).join(", ")}]`;
      case "update":
        return `update ${op.index} ${op.id}${op.vector ? ` vector ${fmtVector(op.vector)}` : ""}${op.metadata !== undefined ? ` ${op.mode}${md(op.metadata)}` : ""}`;
      case "delete":
        return `delete ${op.index} ids [${op.ids.join(",")}]`;
      case "delete_filter":
        return `delete ${op.index} filter ${canon(op.filter)}`;
      case "update_filter":
        return `update ${op.index} filter ${canon(op.filter)}${op.vector ? ` vector ${fmtVector(op.vector)}` : ""}${op.metadata !== undefined ? ` ${op.mode}${md(op.metadata)}` : ""}`;
      case "upsert_delete_filter":
        return `upsert ${op.index}${op.create ? "" : " (no create_index)"} delete_filter ${canon(op.filter)} [${op.rows.map((r) => `${r.id}:${fmtVector(r.vector)}${md(r.metadata)}`).join(", ")}]`;
      case "delete_index":
        return `delete_index ${op.index}`;
      case "flush":
        return `flush${op.index ? ` ${op.index}` : ""}`;
      case "fetch":
        return `fetch ${op.index} [${op.ids.join(",")}]`;
      case "check":
        return `fetch (check) ${op.index} [all]`;
      case "list":
        return "list_indexes";
      case "search":
        return `search ${op.index}${op.mode === "vector" ? "" : ` ${op.mode} ${JSON.stringify(op.word)}`}${op.filter ? ` filter ${canon(op.filter)}` : ""}${op.engine ? ` engine ${op.engine}` : ""}`;
      case "unknown_tool":
        return "call an unknown tool";
      default:
        return op.kind;
    }
  }

  describeAnswer(op, outcome) {
    if (outcome.type === "unknown") return `UNKNOWN (its process was killed): ${outcome.error}`;
    if (outcome.type === "toolError") return `tool error: ${outcome.text.slice(0, 160)}`;
    const v = outcome.value;
    switch (op.kind) {
      case "embed":
        return v.documents.map((d) => `${d.id} ${d.status}${d.error ? ` (${d.error})` : ""}`).join(", ");
      case "upsert":
        return `ids [${v.ids.join(",")}]${v.created_index ? " created_index" : ""}`;
      case "update":
        return "updated";
      case "update_filter":
        return `updated ${v.updated}, count ${v.count}`;
      case "upsert_delete_filter":
        return `deleted ${v.deleted}, ids [${(v.ids ?? []).join(",")}]${v.created_index ? " created_index" : ""}`;
      case "delete":
      case "delete_filter":
        return `deleted ${v.deleted}`;
      case "delete_index":
        return `deleted ${v.deleted}`;
      case "flush":
        return `committed ${v.committed}, pending ${v.pending}${v.parked !== undefined ? `, parked ${v.parked}` : ""}`;
      case "fetch":
      case "check":
        return (
          v.vectors.map((r) => `${r.id}={${fmtVector(r.vector)} ${fmtMd(r.metadata)}}`).join(" ") +
          (v.missing.length ? ` missing [${v.missing.join(",")}]` : "")
        );
      case "list":
        return v.indexes.map((i) => `${i.index}(${i.count})`).join(", ") || "none";
      case "search":
        return v.results.map((h) => `${h.id}:${h.score.toFixed(4)}={${fmtVector(h.vector ?? [])} ${fmtMd(h.metadata)}}`).join(" ") || "no results";
      default:
        return JSON.stringify(v).slice(0, 160);
    }
  }

  /** Reads the answer into the per-key observations the model filters on. */
  parseAnswer(op, outcome) {
    if (outcome.type !== "ok") return;
    const v = outcome.value;
    const where = `${op.kind} #${op.n} on ${op.index}`;
    if (op.kind === "embed") {
      if (v.index !== op.index || v.model !== "fake" || v.documents.length !== op.docs.length) {
        throw new Violation(`${where}: malformed answer ${JSON.stringify(v).slice(0, 300)}`);
      }
      op.statusOf = new Map();
      op.docs.forEach((doc, at) => {
        const answer = v.documents[at];
        if (answer.id !== doc.id) throw new Violation(`${where}: documents[${at}] is ${answer.id}, sent ${doc.id}`);
        const last = op.docs.findLastIndex((d) => d.id === doc.id) === at;
        if (!last) {
          if (answer.status !== "coalesced") throw new Violation(`${where}: an earlier version of ${doc.id} in the same call is ${answer.status}, not coalesced`);
          return;
        }
        const cls = { unchanged: "unchanged", queued: "queued", coalesced: "queued", indexed: "indexed" }[answer.status];
        if (!cls) throw new Violation(`${where}: status ${answer.status}`);
        if (answer.status === "indexed" && !op.wait) throw new Violation(`${where}: ${doc.id} indexed without wait`);
        op.statusOf.set(doc.id, cls);
      });
    }
    if (op.kind === "fetch" || op.kind === "check") {
      op.fetched = new Map();
      for (const row of v.vectors) {
        if (!op.ids.includes(row.id) && !(op.kind === "check")) throw new Violation(`${where}: fetched an id not asked for: ${row.id}`);
        if (op.fetched.has(row.id)) throw new Violation(`${where}: ${row.id} twice`);
        op.fetched.set(row.id, rowKey({ v: row.vector, md: row.metadata }));
      }
      for (const id of v.missing) {
        if (op.fetched.has(id)) throw new Violation(`${where}: ${id} both found and missing`);
        op.fetched.set(id, "missing");
      }
      for (const id of op.keyIds) if (!op.fetched.has(id)) throw new Violation(`${where}: ${id} neither found nor missing`);
    }
  }

  /**
   * Runs one op on its client and applies the answer to the model. Returns the outcome type
   * ("ok", "toolError" or "unknown" when the op's own process was killed meanwhile).
   */
  async execute(op) {
    op.n ??= ++this.counter;
    const [tool, args] = this.prepare(op);
    const slot = this.slotFor(op);
    const proc = await this.acquire(slot, op);
    op.proc = proc;
    const entry = {
      n: op.n,
      t: this.now(),
      who: `s${slot.i}(${proc.gen},${this.roleOf(proc)},pid ${proc.pid})`,
      text: `${op.reestablish ? "[re-establish] " : ""}${this.describeOp(op)}`,
      answer: "…in flight",
    };
    this.oplog.push(entry);
    op.t0abs = Date.now();
    if (op.kind === "search") this.beginSearch(op);
    else if (op.keyIds || INDEX_KEY_OPS.includes(op.kind)) this.beginKeyOp(op);
    this.inflight.add(op);
    let outcome;
    const timeout = op.kind === "unknown_tool" ? UNKNOWN_TOOL_TIMEOUT_MS : CALL_TIMEOUT_MS;
    try {
      outcome = await this.callRaw(proc, tool, args, timeout);
    } catch (error) {
      if (error instanceof Violation) throw error;
      if (proc.killedByUs) outcome = { type: "unknown", error: error.message };
      else outcome = { type: "failed", error };
      // PostgreSQL: what the killed process sent may still land; wait until it cannot.
      if (outcome.type === "unknown" && proc.settled) await proc.settled;
    } finally {
      slot.inflight.delete(op);
      this.inflight.delete(op);
      op.t1abs = Date.now();
      this.notify();
    }
    entry.ms = op.t1abs - op.t0abs;
    if (op.kind === "unknown_tool") {
      return this.ackUnknownTool(op, outcome, entry);
    }
    if (outcome.type === "failed") {
      entry.answer = `CALL FAILED: ${outcome.error.message}`;
      throw new Violation(`${tool} #${op.n} through ${entry.who} failed: ${outcome.error.message}`);
    }
    entry.answer = this.describeAnswer(op, outcome);
    if (outcome.type === "unknown") this.counts.unknownOutcomes++;
    this.parseAnswer(op, outcome);
    switch (op.kind) {
      case "search":
        this.counts.searches++;
        this.ackSearch(op, outcome);
        break;
      case "delete_index":
        if (outcome.type !== "unknown") this.ackDeleteIndex(op, outcome);
        break;
      case "flush":
        if (outcome.type !== "unknown") this.ackFlush(op, outcome);
        break;
      case "list":
        if (outcome.type !== "unknown") this.ackList(op, outcome);
        break;
      default:
        this.ackKeyOp(op, outcome);
    }
    if (op.retried) entry.answer += " (maybe run twice: an owner died meanwhile)";
    return outcome.type;
  }

  ackUnknownTool(op, outcome, entry) {
    if (outcome.type === "unknown") {
      entry.answer = "UNKNOWN (its process was killed)";
      return "unknown";
    }
    if (outcome.type === "toolError") {
      entry.answer = `tool error: ${outcome.text.slice(0, 120)}`;
      return "ok";
    }
    if (outcome.type === "failed") {
      const message = outcome.error.message;
      entry.answer = `error: ${message.slice(0, 160)} after ${entry.ms} ms`;
      if (entry.ms >= UNKNOWN_TOOL_TIMEOUT_MS - 500 || /timed? ?out/i.test(message)) {
        throw new Violation(
          `an unknown tool called through ${entry.who} got no answer within ${UNKNOWN_TOOL_TIMEOUT_MS / 1000} s (it must be refused at once): ${message}`,
        );
      }
      return "ok";
    }
    throw new Violation(`an unknown tool call succeeded: ${JSON.stringify(outcome.value).slice(0, 200)}`);
  }

  /** After an op whose outcome is unknown: an acknowledged upsert or delete on each of its ids. */
  async reestablish(op) {
    const ids = op.keyIds ?? [];
    for (const id of ids) {
      for (let attempt = 0; ; attempt++) {
        if (attempt > 10) throw new Violation(`could not re-establish ${op.index}/${id} after 10 attempts`);
        const rng = this.sideRng;
        const reop = rng.chance(0.4)
          ? { kind: "delete", index: op.index, ids: [id], slot: rng.int(3) }
          : {
              kind: "upsert",
              index: op.index,
              create: true,
              rows: [{ id, vector: randomVector(rng), metadata: randomMetadata(rng) }],
              slot: rng.int(3),
            };
        reop.reestablish = true;
        this.counts.ops++;
        if ((await this.execute(reop)) !== "unknown") break;
      }
    }
  }

  /** Runs a scheduled op to its end (locks held by the caller), re-establishing if needed. */
  async runLocked(op) {
    this.counts.ops++;
    const outcome = await this.execute(op);
    if (outcome !== "unknown") return;
    if (["delete_index", "flush", "list", ...INDEX_KEY_OPS].includes(op.kind)) {
      // A barrier whose process died (kills do not overlap barriers, but to be safe): again.
      const { n, proc, ...again } = op;
      await this.runLocked({ ...again, slot: this.sideRng.int(3) });
    } else if (op.keyIds && op.kind !== "fetch") {
      await this.reestablish(op);
    }
  }

  launch(op) {
    const keys = op.kind === "search" || op.kind === "unknown_tool" ? [] : this.keysOf({ ...op, keyIds: keyIdsOf(op) });
    for (const key of keys) key.lock = op;
    const tracker = { op };
    this.running.add(tracker);
    this.runLocked(op)
      .catch((error) => this.fail(error))
      .finally(() => {
        for (const key of keys) if (key.lock === op) key.lock = null;
        this.running.delete(tracker);
        this.notify();
      });
  }

  async drain() {
    await this.until(() => this.running.size === 0);
  }

  async barrier(op) {
    await this.drain();
    this.counts.barriers++;
    await this.runLocked(op);
    // After delete_index, a flush makes any version still queued for the index land now:
    // it must not bring the index (or a row) back.
    if (op.kind === "delete_index" && this.sideRng.chance(0.5)) {
      await this.runLocked({ kind: "flush", index: null, slot: this.sideRng.int(3) });
    }
    await this.check();
  }

  /** list_indexes and a fetch of every id of every index, alone, through a random client. */
  async check(slot = null) {
    await this.drain();
    const pick = () => slot ?? this.sideRng.int(3);
    await this.runLocked({ kind: "list", slot: pick() });
    for (const index of INDEXES) await this.runLocked({ kind: "check", index, ids: IDS, slot: pick() });
  }

  async runOps(ops) {
    for (const op of ops) {
      if (this.failure) throw this.failure;
      switch (op.kind) {
        case "kill_owner":
          await this.killOwner();
          continue;
        case "kill_peer":
          await this.killPeer(op.slot);
          continue;
        case "clean_restart":
          await this.cleanRestart(op.slot);
          continue;
        case "owner_exit":
          await this.ownerExit();
          continue;
        default:
          break;
      }
      if (BARRIERS.has(op.kind)) {
        await this.barrier(op);
        continue;
      }
      if (op.kind === "unknown_tool") {
        // Through a relay when there is one (preferably a 1.x client, which sends any name);
        // on PostgreSQL, where every process answers for itself, through a 1.x client.
        const up = this.slots.filter((s) => s.state === "up");
        const relay = (s) => this.pg || s.proc.pid !== this.ownerPid;
        const slot = up.find((s) => relay(s) && s.gen === "v1") ?? up.find(relay) ?? up[0];
        op.slot = slot ? slot.i : 0;
      }
      const ids = keyIdsOf(op);
      const keys = ids.map((id) => this.idx(op.index).keys.get(id));
      await this.until(() => this.running.size < this.concurrency && keys.every((k) => !k.lock));
      this.launch(op);
    }
    await this.drain();
  }

  // ----- the whole sequence ----------------------------------------------------------------------

  async run() {
    this.binary = binaryStamp();
    this.dir = await makeTempDir("sv-model-");
    this.db = path.join(this.dir, "model.duckdb");
    this.running = new Set();
    if (this.pg) {
      // The test's own connection: to watch killed processes' connections, and to drop the
      // schemas at the end.
      this.admin = new pg.Client(pgClientOptions(this.conninfo));
      await this.admin.connect();
    }
    const kills = 1 + this.rng.int(2);
    const ops = generateSequence(this.rng, this.nOps, { kills, avoid: this.avoid, backend: this.backend });
    let ok = false;
    try {
      await this.startCluster();
      await this.runOps(ops);
      // Everything acknowledged, nothing in flight: flush, then the file must equal the model.
      await this.barrier({ kind: "flush", index: null, slot: this.rng.int(3) });
      // A few more writes left pending, then every process goes (crash or clean stop), and a
      // new process alone must show the same data once it flushed what was pending.
      const tail = Array.from({ length: 12 }, () => generateOp(this.rng, this.backend)).filter((o) => !BARRIERS.has(o.kind));
      await this.runOps(tail);
      const crash = this.rng.chance(0.5);
      await this.stopAll(crash);
      const gen = this.rng.pick(["v1", "v2"]);
      const slot = this.slots[0];
      for (const s of this.slots) s.state = "down";
      slot.gen = gen;
      slot.restarts++;
      slot.proc = await this.startProcess(gen, `final`);
      slot.state = "up";
      this.newReady(slot);
      slot.resolveReady();
      if (!this.pg) {
        // (On PostgreSQL startProcess checked it is a peer: there is no owner.)
        await this.settleOwner();
        if (this.ownerPid !== slot.proc.pid) throw new Violation(`the only process (pid ${slot.proc.pid}) is not the owner`);
      }
      this.event(`roles: ${this.rolesText()}`);
      await this.barrier({ kind: "flush", index: null, slot: 0 });
      await slot.proc.client.close();
      if (this.pg) {
        await this.expectCleanExit(slot.proc, 20_000);
      } else {
        const outcome = await Promise.race([slot.proc.exited, sleep(20_000, "timeout", { ref: false })]);
        if (outcome === "timeout") throw new Violation(`the last process (pid ${slot.proc.pid}) did not exit 20 s after its stdin closed`);
      }
      ok = true;
      if (process.env.MODEL_OPLOG) {
        fs.mkdirSync(process.env.MODEL_OPLOG, { recursive: true });
        fs.writeFileSync(path.join(process.env.MODEL_OPLOG, `oplog-${this.seed}.txt`), `${this.oplog.map(formatEntry).join("\n")}\n`);
      }
      return { ...this.counts, ms: Date.now() - this.t0, debounceMs: this.debounceMs };
    } catch (error) {
      const failure = this.failure ?? error;
      this.failure = failure;
      throw this.report(failure);
    } finally {
      for (const proc of this.procs) {
        if (proc.alive) proc.child.kill("SIGKILL");
      }
      await Promise.all([...this.procs].map((p) => Promise.race([p.exited, sleep(5000, null, { ref: false })])));
      // Let every log finish writing before its directory goes.
      await Promise.all(
        [...this.procs].map((p) =>
          Promise.race([
            p.log.closed ? Promise.resolve() : new Promise((resolve) => p.log.once("close", resolve)),
            sleep(2000, null, { ref: false }),
          ]),
        ),
      );
      if (ok && !this.keep) await removeDir(this.dir);
      if (this.pg && this.admin) await this.dropSchema();
    }
  }

  /**
   * PostgreSQL: the sequence's schema and its bookkeeping schema go (kept with MODEL_KEEP=1).
   * A failure here is reported, never thrown: it must not hide the sequence's own outcome.
   */
  async dropSchema() {
    const client = this.admin;
    try {
      if (this.keep) {
        this.print(`model: kept schemas ${this.schema} and stride_vectors_${this.schema}`);
        return;
      }
      await client.query(`DROP SCHEMA IF EXISTS "${this.schema}" CASCADE`);
      await client.query(`DROP SCHEMA IF EXISTS "stride_vectors_${this.schema}" CASCADE`);
    } catch (error) {
      this.print(`model: could not drop schema ${this.schema} (and its bookkeeping): ${error.message}`);
    } finally {
      await client.end().catch(() => {});
    }
  }

  /** Every process goes: SIGKILL (crash) or stdin closed, relays first (clean). */
  async stopAll(crash) {
    await this.drain();
    const procs = [...this.procs].filter((p) => p.alive);
    if (crash) {
      this.event(`kill -9 of every process (${procs.map((p) => p.pid).join(", ")})`);
      this.kills.push(Date.now());
      if (this.pg) {
        await Promise.all(procs.map((p) => this.pgKill(p)));
        return;
      }
      for (const p of procs) {
        p.killedByUs = true;
        p.child.kill("SIGKILL");
      }
      await Promise.all(procs.map((p) => p.exited));
      return;
    }
    const slotsUp = this.slots.filter((s) => s.state === "up");
    if (this.pg) {
      // Peers: no order to keep. Each must exit by itself, with code 0.
      this.event(`clean stop of every process (stdin closed)`);
      for (const s of slotsUp) {
        s.state = "down";
        await s.proc.client.close().catch(() => {});
      }
      await Promise.all(procs.map((p) => this.expectCleanExit(p, 30_000)));
      return;
    }
    this.event(`clean stop of every process: relays first, then the owner`);
    const relays = slotsUp.filter((s) => s.proc.pid !== this.ownerPid);
    const owners = slotsUp.filter((s) => s.proc.pid === this.ownerPid);
    for (const s of relays) {
      s.state = "down";
      await s.proc.client.close().catch(() => {});
    }
    for (const s of owners) {
      s.state = "down";
      await s.proc.client.close().catch(() => {});
    }
    const deadline = sleep(30_000, "timeout", { ref: false });
    const outcome = await Promise.race([Promise.all(procs.map((p) => p.exited)), deadline]);
    if (outcome === "timeout") {
      const left = procs.filter((p) => p.alive).map((p) => p.pid);
      throw new Violation(`processes ${left.join(", ")} did not exit 30 s after every client closed its stdin`);
    }
  }

  /** The failure, with how to reproduce it and the tail of the op log. */
  report(error) {
    const lines = [];
    lines.push(`MODEL TEST FAILURE${this.pg ? " (PostgreSQL)" : ""} in sequence ${this.seqIndex} (run seed ${this.runSeed}, sequence seed ${this.seed})`);
    if (this.pg) {
      lines.push(
        `  reproduce this sequence: MODEL_SEED=${this.seed} MODEL_SEQUENCES=1 STRIDE_VECTORS_TEST_POSTGRES=... node --test model-postgres.test.mjs` +
          ` (it ran in schema ${this.schema}, lease ${this.leaseMs} ms)`,
      );
    } else {
      lines.push(`  reproduce this sequence: MODEL_SEED=${this.seed} MODEL_SEQUENCES=1 node --test model.test.mjs`);
    }
    lines.push(`  debounce ${this.debounceMs} ms, max wait ${this.maxWaitMs} ms; ${this.counts.ops} ops run; ${this.kills.length} kills`);
    if (binaryStamp() !== this.binary) {
      lines.push(`  NOTE: ${BIN} was replaced (or removed) during this sequence: its processes may have run different builds; rerun before trusting this failure`);
    }
    lines.push(`  ${error instanceof Violation ? "violation" : "error"}: ${error.message}`);
    if (!(error instanceof Violation)) lines.push(String(error.stack ?? ""));
    lines.push("  model now (ids with something):");
    for (const idx of this.indexes.values()) {
      lines.push(`    ${idx.name}: exists ${[...idx.exists].join("/")}`);
      for (const key of idx.keys.values()) {
        const states = key.during ?? key.states;
        if (states.length === 1 && states[0] === ABSENT) continue;
        lines.push(`      ${key.id}: ${fmtStates(states)}`);
      }
    }
    const tail = this.oplog.slice(-60);
    lines.push(`  op log (last ${tail.length} of ${this.oplog.length}; #n = issue order, +ms since start):`);
    for (const e of tail) lines.push(`    ${formatEntry(e)}`);
    const logPath = path.join(this.dir, "oplog.txt");
    try {
      fs.writeFileSync(logPath, `${lines.slice(0, 5).join("\n")}\n\nfull op log:\n${this.oplog.map(formatEntry).join("\n")}\n`);
      lines.push(`  full op log: ${logPath}; server logs (stderr-*.log)${this.pg ? "" : " and the database"} kept in ${this.dir}`);
    } catch {
      // the directory may be gone
    }
    const failure = new Error(lines.join("\n"));
    failure.violation = error instanceof Violation;
    failure.seed = this.seed;
    return failure;
  }
}

/** Size and modification time of the binary (a rebuild changes them). */
function binaryStamp() {
  try {
    const st = fs.statSync(BIN);
    return `${st.size}/${st.mtimeMs}`;
  } catch {
    return "missing";
  }
}

function formatEntry(e) {
  if (e.n === "--") return `   +${e.t}ms  ** ${e.text}`;
  return `#${e.n} +${e.t}ms ${e.who} ${e.text}  =>  ${e.answer}${e.ms !== undefined ? ` [${e.ms} ms]` : ""}`;
}

function fmtFetched(value) {
  if (value === undefined || value === "missing" || value === "noindex") return String(value);
  const x = JSON.parse(value);
  return `{${fmtVector(x.v)} ${fmtMd(x.md)}}`;
}

/** The ids an op locks (serialized per key). */
function keyIdsOf(op) {
  switch (op.kind) {
    case "embed":
      return [...new Set(op.docs.map((d) => d.id))];
    case "upsert":
      return [...new Set(op.rows.map((r) => r.id))];
    case "update":
      return [op.id];
    case "delete":
    case "fetch":
      return op.ids;
    default:
      return [];
  }
}

/**
 * node-postgres options for a libpq connection string: a URL as is, or the key=value form
 * scripts/postgres prints (`host=/dir/sock user=postgres dbname=postgres`; a host that is a
 * directory is a Unix socket to node-postgres as to libpq).
 */
export function pgClientOptions(conninfo) {
  if (/^postgres(ql)?:\/\//.test(conninfo)) return { connectionString: conninfo };
  const kv = {};
  for (const [, key, raw] of conninfo.matchAll(/(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)/g)) {
    kv[key] = raw.startsWith("'") ? raw.slice(1, -1).replace(/\\(.)/g, "$1") : raw;
  }
  return { host: kv.host, port: kv.port && Number(kv.port), user: kv.user, database: kv.dbname, password: kv.password };
}

/** The application_name of a process of a sequence (what its PostgreSQL connections show). */
function appNameOf(schema, label) {
  return `svm-${schema}-${label}`;
}

/** A libpq connection string (URL or key=value) with `application_name` set to `name`. */
export function withApplicationName(conninfo, name) {
  if (/^postgres(ql)?:\/\//.test(conninfo)) {
    return `${conninfo}${conninfo.includes("?") ? "&" : "?"}application_name=${encodeURIComponent(name)}`;
  }
  return `${conninfo} application_name='${name}'`;
}

// ---------------------------------------------------------------------------------------
// The run: sequences until a count or a time budget is reached.

/**
 * Runs the model test. Options (all from the environment by default):
 *   seed        MODEL_SEED (else random): run seed; sequence i uses seed + i
 *   seconds     MODEL_SECONDS: run sequences until this many seconds elapsed
 *   sequences   MODEL_SEQUENCES (default 10) when no time budget is given
 *   ops         MODEL_OPS (default 200) random operations per sequence
 *   concurrency MODEL_CONCURRENCY (default 4) operations in flight at most
 *   avoid       MODEL_AVOID, comma-separated: "v2-relay" (keep 2.x clients on the owner),
 *               "unknown-tool" (skip the unknown-tool call): to look past known bugs
 *   keep        MODEL_KEEP=1 keeps every temporary directory (and PostgreSQL schema)
 *   backend     "duckdb" (default: one file, owner + relays) or "postgres" (three peers on one
 *               PostgreSQL schema; see the top of this file)
 *   conninfo    postgres only: the libpq connection string (STRIDE_VECTORS_TEST_POSTGRES)
 *   leaseMs     postgres only: --pg-lease-ms of every process (default 1500)
 *   (MODEL_OPLOG=dir writes the op log of every passing sequence there; MODEL_WEIGHTS
 *   overrides operation weights, e.g. "embed=0,embed_wait=0")
 * Returns {seed, sequences, ops, calls, kills, ...}; throws the first failure with its report.
 */
export async function runModel(options = {}) {
  const env = process.env;
  const seed = options.seed ?? (env.MODEL_SEED !== undefined ? Number(env.MODEL_SEED) >>> 0 : (Math.random() * 2 ** 32) >>> 0);
  const seconds = options.seconds ?? (env.MODEL_SECONDS ? Number(env.MODEL_SECONDS) : null);
  const sequences = options.sequences ?? Number(env.MODEL_SEQUENCES ?? 10);
  const nOps = options.ops ?? Number(env.MODEL_OPS ?? 200);
  const concurrency = options.concurrency ?? Number(env.MODEL_CONCURRENCY ?? 4);
  const avoid = new Set((options.avoid ?? env.MODEL_AVOID ?? "").split(",").map((s) => s.trim()).filter(Boolean));
  const keep = options.keep ?? env.MODEL_KEEP === "1";
  const log = options.log ?? ((line) => console.log(line));
  const backend = options.backend ?? "duckdb";
  if (!["duckdb", "postgres"].includes(backend)) throw new Error(`runModel: unknown backend ${backend}`);
  const conninfo = backend === "postgres" ? (options.conninfo ?? env.STRIDE_VECTORS_TEST_POSTGRES) : null;
  if (backend === "postgres" && !conninfo) throw new Error("runModel: the postgres backend needs a connection string (STRIDE_VECTORS_TEST_POSTGRES)");
  const leaseMs = options.leaseMs ?? PG_LEASE_MS;
  log(
    `model${backend === "postgres" ? ` (PostgreSQL, lease ${leaseMs} ms)` : ""}: run seed ${seed} (MODEL_SEED=${seed} replays the same operation sequences); ` +
      (seconds ? `${seconds} s budget` : `${sequences} sequences`) +
      ` of ${nOps} ops, concurrency ${concurrency}${avoid.size ? `, avoiding ${[...avoid].join(",")}` : ""}`,
  );
  await waitForBinary();
  const fake = await startFakeOllama();
  const started = Date.now();
  const totals = { seed, sequences: 0, ops: 0, calls: 0, kills: 0, ownerExits: 0, cleanRestarts: 0, unknownOutcomes: 0, searches: 0, barriers: 0 };
  try {
    for (let i = 0; ; i++) {
      if (seconds ? Date.now() - started >= seconds * 1000 : i >= sequences) break;
      const seqSeed = (seed + i) >>> 0;
      const sequence = new Sequence({
        seed: seqSeed,
        runSeed: seed,
        index: i,
        ollamaUrl: fake.url,
        nOps,
        concurrency,
        avoid,
        keep,
        log,
        backend,
        conninfo,
        leaseMs,
      });
      const result = await sequence.run();
      totals.sequences++;
      for (const key of ["ops", "calls", "kills", "ownerExits", "cleanRestarts", "unknownOutcomes", "searches", "barriers"]) totals[key] += result[key];
      log(
        `model: sequence ${i} (seed ${seqSeed}) ok in ${result.ms} ms: ${result.ops} ops, ${result.calls} calls, ` +
          `${result.kills} ${backend === "postgres" ? "process" : "owner"} kills, ${result.ownerExits} owner exits, ${result.cleanRestarts} clean restarts, ${result.unknownOutcomes} unknown outcomes, debounce ${result.debounceMs} ms`,
      );
    }
  } finally {
    await fake.close();
  }
  totals.ms = Date.now() - started;
  totals.embedder = fake.stats();
  return totals;
}
