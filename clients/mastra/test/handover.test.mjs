// Hand-over under load, the way Stride runs: several processes on one DuckDB file, each
// started by its own client, and the owner's client leaving while the others keep working.
//
// Three slots, one per kind of client, each spawning its own stride-vectors process:
// `StrideVector` (this package, 1.x SDK inside), Mastra's `MCPClient` (@mastra/mcp 2.0.0,
// revision 2026-07-28) and a bare 1.x SDK `Client`. Each slot runs two workers that never
// stop calling: upserts, updates (of stored and of unknown ids), deletes, embeds and
// searches, on ids of their own (so one id never sees two calls at once, and the last
// acknowledged operation of each id is known exactly). In every round the owner is found,
// its workers finish their current call (as an app does before `close()`), and its client
// closes it cleanly; a fresh client of the same kind takes the slot. The last rounds
// SIGKILL the owner instead. The other slots' calls cross every hand-over.
//
// What must hold: no call of any client fails, every close returns before the SDK's 2 s
// kill timer (the owner hands over at once instead of waiting for its relays), and after a
// flush every id is exactly what its last acknowledged operation made it: vector,
// metadata, absence, or the fake embedder's vector of the last text.
//
// The embedder is a fake Ollama speaking the real wire format (tests/e2e/fake-ollama.mjs).

import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";

import { noopLogger } from "@mastra/core/logger";
import { MCPClient } from "@mastra/mcp";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

import { fakeVector, startFakeOllama } from "../../../tests/e2e/fake-ollama.mjs";
import { StrideVector } from "../dist/index.js";
import { BIN, tempDir } from "./helpers.mjs";

const CLEAN_ROUNDS = Number(process.env.STRIDE_HANDOVER_ROUNDS ?? 50);
const KILL_ROUNDS = 5;
const SEED = Number(process.env.STRIDE_HANDOVER_SEED ?? Date.now() % 1_000_000);
const DIM = 8;
const IDS_PER_WORKER = 6;
/** The SDK's StdioClientTransport sends SIGTERM this long after closing stdin. */
const SDK_KILL_TIMER_MS = 2_000;

function rng(seed) {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 4294967296;
  };
}

/** A vector exact in f32 (multiples of 1/64), never all zero. */
function exactVector(n) {
  return Array.from({ length: DIM }, (_, i) => (((n * 7 + i * 13) % 97) + 1) / 64);
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** Whether process `pid` is gone within `ms` (a client's close() may return just before). */
async function exitedWithin(pid, ms) {
  const deadline = Date.now() + ms;
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false;
    await sleep(5);
  }
  return true;
}

const serverArgs = (db, url) => ["--db", db, "--embedder", "ollama", "--ollama-url", url, "--model", "fake", "--dimension", String(DIM), "--debounce-ms", "50"];
const serverEnv = () => ({ PATH: process.env.PATH, HOME: process.env.HOME, STRIDE_VECTORS_LOG: "warn" });

// ---------------------------------------------------------------------------------------------
// One driver per kind of client: the same five operations, each returning the tool's result.

async function strideVectorDriver(db, url) {
  const vector = new StrideVector({ id: "handover", command: BIN, args: serverArgs(db, url).slice(2), db, env: serverEnv() });
  const driver = {
    kind: "StrideVector",
    upsert: (id, v, metadata) => vector.upsert({ indexName: "h", vectors: [v], ids: [id], metadata: [metadata] }),
    update: (id, metadata) => vector.updateVector({ indexName: "h", id, update: { metadata } }),
    remove: (id) => vector.deleteVector({ indexName: "h", id }),
    embed: (id, text, metadata) => vector.embed({ indexName: "docs", documents: [{ id, text, metadata }] }),
    search: (v) => vector.query({ indexName: "h", queryVector: v, topK: 3 }),
    stats: () => vector.stats(),
    close: () => vector.close(),
  };
  await vector.createIndex({ indexName: "h", dimension: DIM });
  return driver;
}

/** The five operations as tool calls, for a client whose `call(name, args)` returns the
 * structured result (or throws on a tool error). */
function toolOps(kind, call) {
  return {
    kind,
    upsert: (id, v, metadata) => call("upsert", { index: "h", vectors: [{ id, vector: v, metadata }] }),
    update: (id, metadata) => call("update", { index: "h", id, metadata, metadata_mode: "replace", if_missing: "ignore" }),
    remove: (id) => call("delete", { index: "h", ids: [id] }),
    embed: (id, text, metadata) => call("embed", { index: "docs", documents: [{ id, text, metadata }] }),
    search: (v) => call("search", { index: "h", vector: v, top_k: 3 }),
    stats: () => call("stats", {}),
  };
}

async function sdkDriver(db, url) {
  const client = new Client({ name: "handover-1.x", version: "0.0.0" });
  await client.connect(new StdioClientTransport({ command: BIN, args: serverArgs(db, url), env: serverEnv(), stderr: "inherit" }));
  const call = async (name, args) => {
    const r = await client.callTool({ name, arguments: args }, undefined, { timeout: 60_000 });
    if (r.isError) throw new Error(`${name}: ${r.content?.[0]?.text}`);
    return r.structuredContent;
  };
  return { ...toolOps("sdk-1.x", call), call, close: () => client.close() };
}

async function mastraDriver(db, url) {
  const mcp = new MCPClient({
    id: `handover-mastra-${Math.random().toString(36).slice(2)}`,
    servers: { vectors: { command: BIN, args: serverArgs(db, url), env: serverEnv(), stderr: "ignore" } },
    timeout: 60_000,
  });
  mcp.__setLogger(noopLogger);
  const tools = await mcp.listTools();
  assert.equal(mcp.getServerProtocolVersions().vectors, "2026-07-28");
  const call = async (name, args) => {
    const r = await tools[`vectors_${name}`].execute(args);
    if (r && r.error === true) throw new Error(`Mastra validation: ${r.message}`);
    return r;
  };
  return { ...toolOps("mastra-MCPClient", call), close: () => mcp.disconnect() };
}

const KINDS = [strideVectorDriver, mastraDriver, sdkDriver];

// ---------------------------------------------------------------------------------------------

describe(`hand-over under load: ${CLEAN_ROUNDS} clean exits and ${KILL_ROUNDS} kills of the owner (seed ${SEED})`, { timeout: 900_000 }, () => {
  let tmp;
  let ollama;
  const slots = [];
  /** id -> expected row ({vector, metadata} or null); embeds: id -> {text, metadata}. */
  const expected = new Map();
  const expectedDocs = new Map();
  const failures = [];
  const calls = []; // {start, end}
  const handOvers = []; // {start, end}
  const closeTimes = { owner: [], relay: [] };

  before(async () => {
    tmp = await tempDir();
    ollama = await startFakeOllama();
  });

  after(async () => {
    for (const slot of slots) await slot.stopWorkers?.();
    for (const slot of slots) {
      await slot.driver?.close().catch(() => {});
      if (slot.pid && isAlive(slot.pid)) process.kill(slot.pid, "SIGKILL");
    }
    await ollama?.close();
    await tmp?.remove();
  });

  async function track(what, fn) {
    const start = Date.now();
    try {
      return await fn();
    } catch (error) {
      failures.push(`${what}: ${error.message}`);
      return undefined;
    } finally {
      calls.push({ start, end: Date.now() });
    }
  }

  /** One worker: calls in a loop on its own ids until told to stop. */
  function worker(slot, w, random) {
    const prefix = `s${slot.index}w${w}`;
    let n = 0;
    let stopping = false;
    const done = (async () => {
      while (!stopping) {
        n++;
        const d = slot.driver;
        const id = `${prefix}-${Math.floor(random() * IDS_PER_WORKER)}`;
        const pick = random();
        const where = `${d.kind} ${prefix} #${n}`;
        if (pick < 0.35) {
          const row = { vector: exactVector(slot.index * 100_000 + w * 10_000 + n), metadata: { by: d.kind, n } };
          if ((await track(`${where} upsert ${id}`, () => d.upsert(id, row.vector, row.metadata))) !== undefined) expected.set(id, row);
        } else if (pick < 0.5) {
          const metadata = { updated: n };
          const ok = await track(`${where} update ${id}`, async () => (await d.update(id, metadata)) ?? true);
          if (ok !== undefined && expected.get(id)) expected.set(id, { ...expected.get(id), metadata });
        } else if (pick < 0.6) {
          if ((await track(`${where} delete ${id}`, async () => (await d.remove(id)) ?? true)) !== undefined) expected.set(id, null);
        } else if (pick < 0.8) {
          const doc = `${prefix}-e${Math.floor(random() * 3)}`;
          const text = `${doc} text ${n}`;
          if ((await track(`${where} embed ${doc}`, () => d.embed(doc, text, { n }))) !== undefined) expectedDocs.set(doc, { text, metadata: { n } });
        } else {
          await track(`${where} search`, () => d.search(exactVector(n)));
        }
      }
    })();
    return async () => {
      stopping = true;
      await done;
    };
  }

  async function fill(slot, random) {
    slot.driver = await KINDS[slot.index](tmp.db, ollama.url);
    slot.pid = (await slot.driver.stats()).pid;
    const stops = [worker(slot, 0, random), worker(slot, 1, random)];
    slot.stopWorkers = async () => {
      await Promise.all(stops.map((stop) => stop()));
      slot.stopWorkers = null;
    };
  }

  /** Waits until `n` more calls have been answered (the load runs, whatever happened last). */
  async function callsAnswered(n) {
    const target = calls.length + n;
    while (calls.length < target) await sleep(2);
  }

  /** The slot whose process owns the file (a Mastra probe process may own it for a moment). */
  async function ownerSlot() {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const stats = await slots[0].driver.stats().catch(() => null);
      const slot = slots.find((s) => s.pid === stats?.owner_pid);
      if (slot) return slot;
      assert.ok(Date.now() < deadline, `no slot owns the file: ${JSON.stringify(stats)}`);
      await sleep(50);
    }
  }

  test("no client sees an error, closes are fast, and every id ends as its last acknowledged call made it", async (t) => {
    const random = rng(SEED);
    for (let i = 0; i < KINDS.length; i++) {
      slots.push({ index: i });
      await fill(slots[i], random);
    }
    for (let round = 0; round < CLEAN_ROUNDS + KILL_ROUNDS; round++) {
      await callsAnswered(20 + Math.floor(random() * 60));
      const slot = await ownerSlot();
      await slot.stopWorkers();
      const start = Date.now();
      if (round < CLEAN_ROUNDS) {
        await slot.driver.close();
        closeTimes.owner.push([slot.driver.kind, Date.now() - start]);
        assert.ok(await exitedWithin(slot.pid, 200), `${slot.driver.kind}'s process ${slot.pid} exited`);
      } else {
        process.kill(slot.pid, "SIGKILL");
        await slot.driver.close().catch(() => {});
      }
      handOvers.push({ start, end: Date.now() });
      await fill(slot, random);
    }
    await callsAnswered(100);
    for (const slot of slots) await slot.stopWorkers();

    assert.deepEqual(failures, [], "calls that failed");

    // Every id as its last acknowledged call left it, read through a 1.x client.
    const reader = slots.find((s) => s.driver.kind === "sdk-1.x").driver;
    const flushed = await reader.call("flush", {});
    assert.equal(flushed.pending, 0, JSON.stringify(flushed));
    const ids = [...expected.keys()].sort();
    const fetched = await reader.call("fetch", { index: "h", ids });
    const got = new Map(fetched.vectors.map((v) => [v.id, { vector: v.vector, metadata: v.metadata }]));
    for (const id of ids) assert.deepEqual(got.get(id) ?? null, expected.get(id), `row ${id}`);
    const docIds = [...expectedDocs.keys()].sort();
    const docs = await reader.call("fetch", { index: "docs", ids: docIds });
    const gotDocs = new Map(docs.vectors.map((v) => [v.id, v]));
    for (const id of docIds) {
      const want = expectedDocs.get(id);
      assert.deepEqual(gotDocs.get(id)?.vector, fakeVector(want.text), `embedded ${id}: the last text's vector`);
      // The index keeps each document's text in metadata.text.
      const stored = { ...want.metadata, text: want.text };
      assert.deepEqual(gotDocs.get(id)?.metadata, stored, `embedded ${id}: the last metadata, with its text`);
    }

    // Close the rest: relays, then the last owner.
    const owner = await ownerSlot();
    for (const slot of [...slots.filter((s) => s !== owner), owner]) {
      const role = slot === owner ? "owner" : "relay";
      const start = Date.now();
      await slot.driver.close();
      closeTimes[role].push([slot.driver.kind, Date.now() - start]);
      slot.driver = null;
    }

    const crossing = calls.filter((c) => handOvers.some((h) => c.start <= h.end && c.end >= h.start)).map((c) => c.end - c.start);
    crossing.sort((a, b) => a - b);
    const pct = (list, p) => list[Math.min(list.length - 1, Math.floor((list.length * p) / 100))];
    const ownerMs = closeTimes.owner.map(([, ms]) => ms).sort((a, b) => a - b);
    const relayMs = closeTimes.relay.map(([, ms]) => ms).sort((a, b) => a - b);
    t.diagnostic(
      `${calls.length} calls, ${ids.length} rows and ${docIds.length} documents checked; ${crossing.length} calls crossed a hand-over: ` +
        `p50 ${pct(crossing, 50)} ms, p99 ${pct(crossing, 99)} ms, max ${crossing.at(-1)} ms`,
    );
    t.diagnostic(`owner close(): p50 ${pct(ownerMs, 50)} ms, max ${ownerMs.at(-1)} ms (${ownerMs.length}); relay close(): max ${relayMs.at(-1)} ms (${relayMs.length})`);
    for (const [kind, ms] of [...closeTimes.owner, ...closeTimes.relay]) {
      assert.ok(ms < SDK_KILL_TIMER_MS, `${kind} close() took ${ms} ms: the SDK's kill timer, not our shutdown, ended it`);
    }
  });
});

describe("StrideVector.close() in both roles", { timeout: 120_000 }, () => {
  test("a relay's and an owner's close() return before the SDK's kill timer, and the process is gone", async (t) => {
    const tmp = await tempDir();
    const ollama = await startFakeOllama();
    const open = async (id) => {
      const v = new StrideVector({ id, command: BIN, args: serverArgs(tmp.db, ollama.url).slice(2), db: tmp.db, env: serverEnv() });
      return { v, pid: (await v.stats()).pid };
    };
    try {
      const owner = await open("owner");
      const relay = await open("relay");
      const third = await open("third");
      assert.equal((await relay.v.stats()).owner_pid, owner.pid);
      await relay.v.createIndex({ indexName: "c", dimension: DIM });
      await relay.v.upsert({ indexName: "c", vectors: [exactVector(1)], ids: ["a"] });
      let start = Date.now();
      await relay.v.close();
      const relayMs = Date.now() - start;
      assert.ok(!isAlive(relay.pid), "the relay's process is gone");
      start = Date.now();
      await owner.v.close();
      const ownerMs = Date.now() - start;
      assert.ok(!isAlive(owner.pid), "the owner's process is gone");
      const stats = await third.v.stats();
      assert.equal(stats.role, "owner", "the remaining process took over");
      assert.equal((await third.v.describeIndex({ indexName: "c" })).count, 1);
      await third.v.close();
      t.diagnostic(`close(): relay ${relayMs} ms, owner with a relay attached ${ownerMs} ms`);
      assert.ok(relayMs < SDK_KILL_TIMER_MS && ownerMs < SDK_KILL_TIMER_MS, `relay ${relayMs} ms, owner ${ownerMs} ms`);
    } finally {
      await ollama.close();
      await tmp.remove();
    }
  });
});
