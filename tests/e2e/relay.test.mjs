// What this proves: every MCP revision behaves identically through an owner and through a
// relay. Several stride-vectors processes are started on one DuckDB file, each by its own MCP
// client (each client spawns its own process, so "the owner driven by client X" means client X
// spawned the process that took the lock): the 1.x SDK (`@modelcontextprotocol/sdk` 1.32.2
// `Client`, MCP 2025-11-25), the 2.x SDK (`@modelcontextprotocol/client` 2.0.0 `Client` pinned
// to the stateless 2026-07-28 revision, which requires `resultType` on every result; it probes
// `server/discover` on its own process) and Mastra's `MCPClient` (`@mastra/mcp` 2.0.0, built on
// the 2.x SDK; it negotiates 2026-07-28 by itself, probing on a short-lived sibling process
// first, which on a shared file is one more relay that comes and goes).
//
// Round 1: a 1.x client's process owns the file; a 2026-07-28 client, Mastra and a second 1.x
// client talk to relays. Round 2: a 2026-07-28 client's process owns the file; a 1.x client
// and Mastra talk to relays. In each round every client runs the same calls, and every answer
// equals the owner's client's: upsert, create_index, search (plain, filtered, with vectors),
// fetch, describe_index, list_indexes, stats (all but role and pid), tool errors (isError
// results with the same text), and JSON-RPC errors (an unknown tool, `arguments` that is not
// an object) with the same code and message, answered at once (a relay must not wait for the
// owner to "come back"). Raw JSON-RPC lines sent to an owner and to a relay get identical
// answers, ids included, in a 2025-11-25 session and in a 2026-07-28 one (where every result,
// the relay's too, carries `resultType: "complete"`). Finally, `kill -9` of the owner while a
// 2026-07-28 client keeps writing and searching through a relay, calls in flight: the relay
// takes over (its `stats` says owner), no call fails, and every upsert acknowledged before and
// after the kill is there.
//
// No model is needed: vectors are explicit (dimension 8) and the embedder is a remote one
// that is never called.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { noopLogger } from "@mastra/core/logger";
import { MCPClient } from "@mastra/mcp";
import { Client as ClientV2 } from "@modelcontextprotocol/client";
import { StdioClientTransport as StdioClientTransportV2, getDefaultEnvironment } from "@modelcontextprotocol/client/stdio";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";

import {
  RUNNER,
  serverCommand,
  TOOL_NAMES,
  assertSameJson,
  isAlive,
  makeTempDir,
  modelEnv,
  removeDir,
  resultText,
  seededVector,
  startRawServer,
  startServer,
  waitFor,
  waitForBinary,
} from "./helpers.mjs";

/** No model is needed: an embedder that is never called (nothing listens on port 9). */
const SERVER_ARGS = ["--embedder", "ollama", "--ollama-url", "http://127.0.0.1:9", "--model", "never-called"];
const MODERN = "2026-07-28";
const DIM = 8;
const SHARED = "shared";
/** A JSON-RPC error must come back at once; a relay that waits for the owner takes 20-60 s. */
const FAST_MS = 5_000;
/** Timeout of a call expected to fail fast: past it, the client gives up (-32001). */
const RPC_ERROR_TIMEOUT_MS = 6_000;
/** Per-call timeout: long enough for a relay to follow a new owner (20 s), short enough to fail. */
const CALL_MS = 30_000;

const GROUPS = ["a", "b", "c"];
const VECTORS = Array.from({ length: 12 }, (_, i) => ({
  id: `v${String(i).padStart(2, "0")}`,
  vector: seededVector(i + 1, DIM),
  metadata: { group: GROUPS[i % 3], rank: i, tags: i % 2 === 0 ? ["x", "even"] : ["y"], nested: { level: i % 4 } },
}));

/** A search filter nesting `$and` `levels` deep (the search tool accepts 32). */
function deepAnd(levels) {
  let filter = { group: "a" };
  for (let i = 0; i < levels; i++) filter = { $and: [filter] };
  return filter;
}

// ---------------------------------------------------------------------------------------------
// Drivers: one per client library, all answering the same questions in the same shape.
//   outcome(tool, args) -> {ok: structuredContent} | {toolError: text} | {rpcError: {code, message}}
//                          | {thrown: "Name: message"} (anything else: a client-side failure)
//   rpc(method, params) -> same shapes, for a request the client library would not build itself
// ---------------------------------------------------------------------------------------------

/** A thrown error as an outcome: a JSON-RPC error (numeric code), or anything else. */
function errorOutcome(error) {
  if (typeof error?.code === "number") {
    return { rpcError: { code: error.code, message: String(error.message).replace(/^MCP error -?\d+: /, "") } };
  }
  return { thrown: `${error?.name ?? "Error"}: ${error?.message ?? String(error)}` };
}

/** A CallToolResult as an outcome; a successful one must carry its JSON as text too. */
function resultOutcome(result, where) {
  if (result.isError) return { toolError: resultText(result) };
  const structured = result.structuredContent;
  assert.ok(structured && typeof structured === "object", `${where}: no structuredContent: ${JSON.stringify(result)}`);
  assertSameJson(JSON.parse(resultText(result)), structured, `${where}: text copy vs structuredContent`);
  return { ok: structured };
}

/** Process A or B driven by the 1.x SDK (helpers.startServer: we hold the child process). */
async function legacyDriver(label, db) {
  const server = await startServer({ db, args: SERVER_ARGS, name: label });
  const driver = {
    label,
    sdk: "1.x",
    pid: server.pid,
    server,
    async outcome(tool, args, { timeout = CALL_MS } = {}) {
      try {
        const result = await server.client.callTool({ name: tool, arguments: args }, undefined, { timeout, maxTotalTimeout: timeout });
        return resultOutcome(result, `${label} ${tool}`);
      } catch (error) {
        return errorOutcome(error);
      }
    },
    async rpc(method, params, { timeout = CALL_MS } = {}) {
      try {
        return resultOutcome(await server.client.request({ method, params }, CallToolResultSchema, { timeout }), `${label} ${method}`);
      } catch (error) {
        return errorOutcome(error);
      }
    },
    stderr: () => server.stderr(),
    close: () => server.stop(),
    kill: () => server.kill(),
  };
  driver.serverPid = await reportedPid(driver);
  return driver;
}

/**
 * The pid a driver's server reports in `stats` (`pid` is the child process we signal; under
 * a runner such as Wine the server reports its own, which is another number).
 */
async function reportedPid(driver) {
  return (await driver.outcome("stats", {})).ok?.pid ?? null;
}

/**
 * A subclass of the 2.x SDK's stdio transport: the 2.x client then probes `server/discover`
 * on this very process (the base class would probe on a short-lived sibling process first,
 * which on a shared file is one more short-lived relay or owner).
 */
class InPlaceStdioTransport extends StdioClientTransportV2 {}

/** A process driven by the 2.x SDK `Client`, pinned to MCP 2026-07-28. */
async function modernDriver(label, db) {
  const transport = new InPlaceStdioTransport({
    ...serverCommand(["--db", db, ...SERVER_ARGS]),
    env: { ...getDefaultEnvironment(), ...modelEnv() },
    stderr: "pipe",
  });
  let stderr = "";
  transport.stderr.setEncoding("utf8").on("data", (text) => {
    stderr += text;
    if (stderr.length > 1_000_000) stderr = stderr.slice(-500_000);
  });
  const client = new ClientV2({ name: label, version: "0.0.0" }, { versionNegotiation: { mode: { pin: MODERN } } });
  await client.connect(transport, { timeout: 30_000 });
  assert.equal(client.getNegotiatedProtocolVersion(), MODERN, `${label}: negotiated revision`);
  const { tools } = await client.listTools();
  assert.deepEqual(tools.map((t) => t.name).sort(), [...TOOL_NAMES].sort());
  const pid = transport.pid;
  const driver = {
    label,
    sdk: "2.x",
    pid,
    client,
    protocolVersion: client.getNegotiatedProtocolVersion(),
    async outcome(tool, args, { timeout = CALL_MS } = {}) {
      try {
        return resultOutcome(await client.callTool({ name: tool, arguments: args }, { timeout }), `${label} ${tool}`);
      } catch (error) {
        return errorOutcome(error);
      }
    },
    async rpc(method, params, { timeout = CALL_MS } = {}) {
      try {
        return resultOutcome(await client.request({ method, params }, { timeout }), `${label} ${method}`);
      } catch (error) {
        return errorOutcome(error);
      }
    },
    stderr: () => stderr,
    async close() {
      await client.close();
      await waitFor(() => !isAlive(pid), { timeoutMs: 30_000, what: `${label} (pid ${pid}) to exit` });
    },
    kill() {
      if (isAlive(pid)) process.kill(pid, "SIGKILL");
    },
  };
  driver.serverPid = await reportedPid(driver);
  return driver;
}

/** A process driven by Mastra's MCPClient (its own negotiation: `server/discover` first). */
async function mastraDriver(label, db) {
  const mcp = new MCPClient({
    id: label,
    // stderr "ignore": Mastra would otherwise let the server's log through to ours.
    servers: { vectors: { ...serverCommand(["--db", db, ...SERVER_ARGS]), env: modelEnv(), stderr: "ignore" } },
    timeout: CALL_MS,
  });
  mcp.__setLogger(noopLogger); // the outcomes below carry every error; no console noise
  const tools = await mcp.listTools();
  assert.deepEqual(Object.keys(tools).sort(), TOOL_NAMES.map((n) => `vectors_${n}`).sort());
  assert.equal(mcp.getServerProtocolVersions().vectors, MODERN, `${label}: Mastra negotiated the 2026-07-28 revision`);
  const driver = {
    label,
    sdk: "mastra",
    mcp,
    rpc: null, // Mastra builds every request itself, from the tool's schema
    async outcome(tool, args) {
      try {
        const result = await tools[`vectors_${tool}`].execute(args);
        if (result && result.error === true) return { thrown: `Mastra validation: ${result.message}` };
        return { ok: JSON.parse(JSON.stringify(result)) };
      } catch (error) {
        if (error?.id === "MCP_CLIENT_TOOL_EXECUTION_FAILED") return { toolError: error.message };
        return errorOutcome(error);
      }
    },
    stderr: () => "",
    async close() {
      await mcp.disconnect();
      if (driver.pid) await waitFor(() => !isAlive(driver.pid), { timeoutMs: 30_000, what: `${label} (pid ${driver.pid}) to exit` });
    },
    kill() {
      if (driver.pid && isAlive(driver.pid)) process.kill(driver.pid, "SIGKILL");
    },
  };
  // Its PID, for the cleanup (a failing call is left to the tests to report); under a
  // runner the pid it reports is not a process of this machine's to wait for.
  driver.serverPid = await reportedPid(driver);
  driver.pid = RUNNER.length === 0 ? driver.serverPid : null;
  return driver;
}

/** structuredContent of a call that must succeed. */
async function ok(driver, tool, args, options) {
  const outcome = await driver.outcome(tool, args, options);
  assert.ok("ok" in outcome, `${driver.label} ${tool}: ${JSON.stringify(outcome)}\n${driver.stderr().slice(-2000)}`);
  return outcome.ok;
}

/** Deep equality (floats within a few ulps, see assertSameJson) with both values in the message. */
function assertSameOutcome(actual, expected, where) {
  try {
    assertSameJson(actual, expected, where);
  } catch (error) {
    const show = (v) => {
      const text = JSON.stringify(v);
      return text.length > 1500 ? `${text.slice(0, 1500)}...` : text;
    };
    throw new assert.AssertionError({
      message: `${where}: differs from the owner's client\n  got:      ${show(actual)}\n  expected: ${show(expected)}\n  (${error.message})`,
      actual,
      expected,
      operator: "deepStrictEqual",
    });
  }
}

/** Replaces an index name inside a value (so that per-client indexes compare equal). */
function renameIndex(value, from, to) {
  return JSON.parse(JSON.stringify(value).replaceAll(JSON.stringify(from), JSON.stringify(to)));
}

/** stats without what differs between processes or moves on with every call. */
function stableStats(stats) {
  // Memory is measured at the moment of the call: only its presence is the same everywhere.
  // A relay also says when the owner last answered its heartbeat; the owner does not.
  const { role, pid, resident_bytes, duckdb_memory_bytes, owner_heartbeat_ms_ago, ...rest } = stats;
  const heartbeat = role === "relay" ? Number.isInteger(owner_heartbeat_ms_ago) : owner_heartbeat_ms_ago === undefined;
  return { ...rest, memoryMeasured: resident_bytes > 0 && duckdb_memory_bytes >= 0, heartbeatAsRoleSays: heartbeat };
}

// ---------------------------------------------------------------------------------------------
// One round: an owner driven by one client library, relays driven by the others.
// ---------------------------------------------------------------------------------------------

function round(title, makeOwner, makeRelays) {
  describe(title, { timeout: 90_000 }, () => {
    let dir;
    let db;
    let owner;
    let relays = [];
    let all = [];

    before(async () => {
      await waitForBinary();
      dir = await makeTempDir("sv-e2e-relay-");
      db = path.join(dir, "stride-vectors.duckdb");
      owner = await makeOwner(db);
      await waitFor(async () => (await ok(owner, "stats", {})).role === "owner", { timeoutMs: 30_000, what: `${owner.label} to own the file` });
      await ok(owner, "create_index", { index: SHARED, dimension: DIM });
      await ok(owner, "upsert", { index: SHARED, vectors: VECTORS });
      relays = [];
      for (const make of makeRelays) relays.push(await make(db));
      all = [owner, ...relays];
    });

    after(async () => {
      // Relays first: an owner that leaves first would hand the file over to one of them.
      for (const driver of [...relays].reverse()) await driver.close().catch(() => driver.kill());
      if (owner) await owner.close().catch(() => owner.kill());
      await removeDir(dir);
    });

    /** Runs `steps(driver)` on every driver and compares each to the owner's client's. */
    async function sameEverywhere(steps) {
      const expected = await steps(owner);
      for (const relay of relays) {
        const got = await steps(relay);
        for (const key of Object.keys(expected)) {
          assertSameOutcome(got[key], expected[key], `${relay.label} (${relay.sdk}, relay) vs ${owner.label} (${owner.sdk}, owner): ${key}`);
        }
      }
      return expected;
    }

    test("the first process owns the file, every other process relays to it", async () => {
      const ownerStats = await ok(owner, "stats", {});
      assert.equal(ownerStats.role, "owner");
      assert.equal(ownerStats.pid, owner.serverPid);
      assert.equal(ownerStats.owner_pid, owner.serverPid);
      for (const relay of relays) {
        const stats = await ok(relay, "stats", {});
        assert.equal(stats.role, "relay", `${relay.label} role`);
        assert.equal(stats.pid, relay.serverPid, `${relay.label} pid`);
        assert.equal(stats.owner_pid, owner.serverPid, `${relay.label} owner_pid`);
      }
      await waitFor(async () => (await ok(owner, "stats", {})).relays_connected === relays.length, {
        timeoutMs: 10_000,
        what: `relays_connected == ${relays.length}`,
      });
    });

    test("writes: create_index and upsert answer the same through every client and process", async () => {
      await sameEverywhere(async (driver) => {
        const own = `own_${all.indexOf(driver)}`;
        return {
          create: renameIndex(await driver.outcome("create_index", { index: own, dimension: DIM, metric: "euclidean" }), own, "OWN"),
          upsert: renameIndex(await driver.outcome("upsert", { index: own, vectors: VECTORS }), own, "OWN"),
          upsertAgain: renameIndex(await driver.outcome("upsert", { index: own, vectors: VECTORS.slice(0, 3) }), own, "OWN"),
          createSameShape: await driver.outcome("create_index", { index: SHARED, dimension: DIM }),
          upsertShared: await driver.outcome("upsert", { index: SHARED, vectors: VECTORS.slice(4, 6) }),
          upsertCreating: renameIndex(
            await driver.outcome("upsert", {
              index: `${own}_created`,
              vectors: VECTORS.slice(0, 2),
              create_index: { dimension: DIM, metric: "dotproduct" },
            }),
            `${own}_created`,
            "OWN_created",
          ),
        };
      });
    });

    test("reads: search, fetch, describe_index and list_indexes answer the same", async () => {
      const expected = await sameEverywhere(async (driver) => ({
        listIndexes: await driver.outcome("list_indexes", {}),
        describeShared: await driver.outcome("describe_index", { index: SHARED }),
        describeOwn: renameIndex(await driver.outcome("describe_index", { index: `own_${all.indexOf(driver)}` }), `own_${all.indexOf(driver)}`, "OWN"),
        search: await driver.outcome("search", { index: SHARED, vector: VECTORS[5].vector, top_k: 5 }),
        searchFilter: await driver.outcome("search", {
          index: SHARED,
          vector: VECTORS[0].vector,
          top_k: 10,
          filter: { $and: [{ group: { $in: ["a", "b"] } }, { rank: { $gte: 3 } }, { tags: "x" }] },
        }),
        searchVectors: await driver.outcome("search", { index: SHARED, vector: VECTORS[2].vector, top_k: 3, include_vector: true }),
        searchDuckdb: await driver.outcome("search", { index: SHARED, vector: VECTORS[7].vector, top_k: 4, engine: "duckdb", filter: { "nested.level": { $lt: 2 } } }),
        searchEuclidean: renameIndex(
          await driver.outcome("search", { index: `own_${all.indexOf(driver)}`, vector: VECTORS[9].vector, top_k: 3 }),
          `own_${all.indexOf(driver)}`,
          "OWN",
        ),
        fetch: await driver.outcome("fetch", { index: SHARED, ids: ["v01", "v05", "nope", "v11"] }),
      }));
      // And the answers are right, not merely equal.
      assert.equal(expected.search.ok.results[0].id, "v05");
      assert.deepEqual(expected.fetch.ok.missing, ["nope"]);
      assert.deepEqual(expected.fetch.ok.vectors.map((v) => v.id), ["v01", "v05", "v11"]);
      assert.deepEqual(expected.fetch.ok.vectors[1].vector, VECTORS[5].vector);
      assert.deepEqual(expected.searchFilter.ok.results.map((r) => r.id).sort(), ["v04", "v06", "v10"]);
      assert.equal(expected.describeShared.ok.count, VECTORS.length);
    });

    test("stats: the same through every process but for role and pid", async () => {
      await sameEverywhere(async (driver) => {
        const outcome = await driver.outcome("stats", {});
        return { stats: outcome.ok ? { ok: stableStats(outcome.ok) } : outcome };
      });
    });

    test("tool errors: the same isError result, naming what is at fault", async () => {
      const expected = await sameEverywhere(async (driver) => ({
        unknownIndex: await driver.outcome("search", { index: "no_such_index", vector: VECTORS[0].vector }),
        wrongDimension: await driver.outcome("upsert", { index: SHARED, vectors: [VECTORS[0], { id: "bad", vector: [1, 2] }] }),
        otherShape: await driver.outcome("create_index", { index: SHARED, dimension: DIM + 1 }),
        missingRow: await driver.outcome("update", { index: SHARED, id: "no-such-row", metadata: { x: 1 } }),
        deepFilter: await driver.outcome("search", { index: SHARED, vector: VECTORS[0].vector, filter: deepAnd(40) }),
      }));
      assert.match(expected.unknownIndex.toolError, /no_such_index/);
      assert.match(expected.wrongDimension.toolError, /vectors\[1\]/);
      assert.match(expected.missingRow.toolError, /no-such-row/);
      assert.match(expected.deepFilter.toolError, /filter: nested deeper than 32 levels/);
    });

    test("JSON-RPC errors (unknown tool, arguments not an object) come back at once and unchanged", async () => {
      const speakers = all.filter((d) => d.rpc);
      assert.ok(speakers.includes(owner), "the owner's client can send raw requests");
      const timed = async (promise) => {
        const started = Date.now();
        const outcome = await promise;
        return { outcome, ms: Date.now() - started };
      };
      const run = async (driver) => ({
        unknownTool: await timed(driver.outcome("no_such_tool", {}, { timeout: RPC_ERROR_TIMEOUT_MS })),
        argumentsNotObject: await timed(driver.rpc("tools/call", { name: "search", arguments: 5 }, { timeout: RPC_ERROR_TIMEOUT_MS })),
        noName: await timed(driver.rpc("tools/call", { arguments: {} }, { timeout: RPC_ERROR_TIMEOUT_MS })),
      });
      const expected = await run(owner);
      for (const [what, { outcome }] of Object.entries(expected)) {
        assert.ok(outcome.rpcError, `${owner.label} (owner) ${what}: a JSON-RPC error: ${JSON.stringify(outcome)}`);
      }
      assert.match(expected.unknownTool.outcome.rpcError.message, /no_such_tool|not found/i);
      for (const relay of speakers.filter((d) => d !== owner)) {
        const got = await run(relay);
        for (const what of Object.keys(expected)) {
          assertSameOutcome(got[what].outcome, expected[what].outcome, `${relay.label} (${relay.sdk}, relay) vs ${owner.label} (owner): ${what}`);
          assert.ok(got[what].ms < FAST_MS, `${relay.label} (relay) ${what}: answered in ${got[what].ms} ms (owner: ${expected[what].ms} ms)`);
        }
      }
      // Every process still serves.
      for (const driver of all) await ok(driver, "describe_index", { index: SHARED });
    });
  });
}

round(
  "round 1: a 1.x client's process owns the file; 2026-07-28 (2.x SDK), Mastra and 1.x clients talk to relays",
  (db) => legacyDriver("owner-1.x", db),
  [(db) => modernDriver("relay-2026", db), (db) => mastraDriver("relay-mastra", db), (db) => legacyDriver("relay-1.x", db)],
);

round(
  "round 2: a 2026-07-28 client's process owns the file; 1.x and Mastra clients talk to relays",
  (db) => modernDriver("owner-2026", db),
  [(db) => legacyDriver("relay-1.x", db), (db) => mastraDriver("relay-mastra", db)],
);

// ---------------------------------------------------------------------------------------------
// Raw lines: an owner and a relay answer alike (ids included), in 2025-11-25 and in 2026-07-28.
// ---------------------------------------------------------------------------------------------

/** The `_meta` every 2026-07-28 request carries (what the 2.x SDK sends). */
const MODERN_META = {
  "io.modelcontextprotocol/protocolVersion": MODERN,
  "io.modelcontextprotocol/clientInfo": { name: "stride-vectors-raw-e2e", version: "0.0.0" },
  "io.modelcontextprotocol/clientCapabilities": {},
};

/**
 * A raw session: `initialize` for 2025-11-25; for the stateless 2026-07-28, `server/discover`
 * and `_meta` on every request. call(params, options) sends a tools/call, returns the answer.
 */
async function rawSession(db, revision) {
  const server = await startRawServer({ db, args: SERVER_ARGS });
  if (revision === MODERN) {
    const discovered = await server.request("server/discover", { _meta: MODERN_META }, { timeoutMs: 30_000 });
    assert.ok(discovered.result?.supportedVersions?.includes(MODERN), `server/discover: ${JSON.stringify(discovered)}`);
  } else {
    await server.initialize(revision);
  }
  const withMeta = (params) => (revision === MODERN ? { ...params, _meta: MODERN_META } : params);
  return { server, call: (params, options) => server.request("tools/call", withMeta(params), options) };
}

for (const revision of ["2025-11-25", MODERN]) {
  describe(`raw JSON-RPC lines (${revision}) get the same answers from an owner and from a relay`, { timeout: 60_000 }, () => {
    let dir;
    let owner;
    let relay;

    before(async () => {
      await waitForBinary();
      dir = await makeTempDir("sv-e2e-relay-raw-");
      const db = path.join(dir, "stride-vectors.duckdb");
      owner = await rawSession(db, revision);
      await waitFor(async () => (await owner.call({ name: "stats", arguments: {} })).result?.structuredContent?.role === "owner", {
        timeoutMs: 30_000,
        what: "the first raw process to own the file",
      });
      relay = await rawSession(db, revision);
      const created = await owner.call({ name: "upsert", arguments: { index: SHARED, vectors: VECTORS.slice(0, 3), create_index: { dimension: DIM } } });
      assert.ok(created.result && !created.result.isError, JSON.stringify(created));
    });

    after(async () => {
      if (relay) await relay.server.stop().catch(() => relay.server.kill());
      if (owner) await owner.server.stop().catch(() => owner.server.kill());
      await removeDir(dir);
    });

    test("the second process is a relay", async () => {
      const answer = await relay.call({ name: "stats", arguments: {} }, { timeoutMs: 10_000 });
      assert.equal(answer.result?.structuredContent?.role, "relay", JSON.stringify(answer));
      if (revision === MODERN) assert.equal(answer.result.resultType, "complete", `the relay's result carries resultType: ${JSON.stringify(answer)}`);
    });

    const cases = [
      ["unknown tool", { name: "no_such_tool", arguments: {} }],
      // Wrong params: -32602 naming the field (rmcp alone says -32601, method not found).
      ["arguments is a number", { name: "search", arguments: 5 }, /params\.arguments: must be a JSON object, got a number/],
      ["arguments is an array", { name: "fetch", arguments: [SHARED, ["v00"]] }, /params\.arguments: must be a JSON object, got an array/],
      ["an upsert whose arguments is a string", { name: "upsert", arguments: "v00" }, /params\.arguments: must be a JSON object, got a string/],
      ["no tool name", { arguments: {} }, /params: missing field `name`/],
      ["a tool error", { name: "search", arguments: { index: "no_such_index", vector: VECTORS[0].vector } }],
      ["a fetch", { name: "fetch", arguments: { index: SHARED, ids: ["v00", "v02", "none"] } }],
      ["a search", { name: "search", arguments: { index: SHARED, vector: VECTORS[1].vector, top_k: 2 } }],
      ["an upsert", { name: "upsert", arguments: { index: SHARED, vectors: VECTORS.slice(3, 5) } }],
    ];
    cases.forEach(([what, params, invalidParams], n) => {
      test(`${what}: the relay answers at once, exactly as the owner`, async () => {
        const id = `case-${n}`;
        const fromOwner = await owner.call(params, { id, timeoutMs: 10_000 });
        const started = Date.now();
        const fromRelay = await relay.call(params, { id, timeoutMs: RPC_ERROR_TIMEOUT_MS }).catch((error) => ({ noAnswer: error.message }));
        const ms = Date.now() - started;
        assertSameOutcome(fromRelay, fromOwner, `${what}: relay vs owner`);
        if (invalidParams) {
          assert.equal(fromOwner.error?.code, -32602, `${what}: ${JSON.stringify(fromOwner)}`);
          assert.match(fromOwner.error.message, invalidParams, what);
        }
        assert.ok(ms < FAST_MS, `${what}: the relay answered in ${ms} ms`);
        if (revision === MODERN && fromOwner.result) assert.equal(fromOwner.result.resultType, "complete");
      });
    });

    test("stdout of both processes carried only JSON-RPC", () => {
      assert.deepEqual(owner.server.badLines, []);
      assert.deepEqual(relay.server.badLines, []);
    });
  });
}

// ---------------------------------------------------------------------------------------------
// kill -9 of the owner while a 2026-07-28 client writes and searches through a relay.
// ---------------------------------------------------------------------------------------------

describe("kill -9 of the owner while a 2026-07-28 client keeps calling through a relay", { timeout: 90_000 }, () => {
  let dir;
  let owner;
  let relay;

  before(async () => {
    await waitForBinary();
    dir = await makeTempDir("sv-e2e-relay-kill-");
    const db = path.join(dir, "stride-vectors.duckdb");
    owner = await legacyDriver("owner-1.x", db);
    await waitFor(async () => (await ok(owner, "stats", {})).role === "owner", { timeoutMs: 30_000, what: "owner-1.x to own the file" });
    relay = await modernDriver("relay-2026", db);
  });

  after(async () => {
    if (relay) await relay.close().catch(() => relay.kill());
    if (owner) await owner.close().catch(() => owner.kill());
    await removeDir(dir);
  });

  test("the relay takes over, no call fails, every acknowledged upsert is there", async (t) => {
    const before = await ok(relay, "stats", {});
    assert.equal(before.role, "relay");
    assert.equal(before.owner_pid, owner.serverPid);
    await ok(relay, "create_index", { index: "loop", dimension: DIM });
    const acknowledged = new Map(); // id -> vector, in the order acknowledged
    const failures = [];
    let killedAt = null;
    let tookOverAt = null;
    let upsertsAfterKill = 0;
    let searchesAfterKill = 0;
    let done = false;
    const deadline = Date.now() + 45_000;
    const finished = () => done || failures.length > 5 || Date.now() > deadline;

    // Writer: one upsert after another. After the 15th acknowledgement the owner is killed a
    // few milliseconds later, while the next upsert (and a search) are in flight.
    const writer = (async () => {
      for (let i = 0; !finished(); i++) {
        const id = `k${String(i).padStart(4, "0")}`;
        const vector = seededVector(1000 + i, DIM);
        const upsert = await relay.outcome("upsert", { index: "loop", vectors: [{ id, vector, metadata: { i } }] });
        if (!upsert.ok) {
          failures.push(`upsert ${id}: ${JSON.stringify(upsert)}`);
          continue;
        }
        acknowledged.set(id, vector);
        if (killedAt !== null) upsertsAfterKill++;
        if (acknowledged.size === 15) {
          setTimeout(() => {
            killedAt = Date.now();
            process.kill(owner.pid, "SIGKILL");
          }, 3);
        }
      }
    })();
    // Reader: searches for the last acknowledged vector, which must be its own nearest.
    const reader = (async () => {
      while (!finished()) {
        const last = [...acknowledged.entries()].at(-1);
        if (!last) {
          await new Promise((resolve) => setTimeout(resolve, 5));
          continue;
        }
        const [id, vector] = last;
        const during = killedAt !== null;
        const search = await relay.outcome("search", { index: "loop", vector, top_k: 1 });
        if (!search.ok) failures.push(`search ${id}: ${JSON.stringify(search)}`);
        else if (search.ok.results[0]?.id !== id) failures.push(`search ${id}: nearest is ${JSON.stringify(search.ok.results[0])}`);
        else if (during) searchesAfterKill++;
      }
    })();
    // Watcher: the relay's own stats say when it became the owner.
    const watcher = (async () => {
      while (!finished()) {
        if (killedAt !== null && tookOverAt === null) {
          const stats = await relay.outcome("stats", {});
          if (!stats.ok) failures.push(`stats: ${JSON.stringify(stats)}`);
          else if (stats.ok.role === "owner") tookOverAt = Date.now();
        }
        if (tookOverAt !== null && upsertsAfterKill >= 20 && searchesAfterKill >= 10) done = true;
        await new Promise((resolve) => setTimeout(resolve, 20));
      }
    })();
    await Promise.all([writer, reader, watcher]);

    assert.deepEqual(failures, [], "calls through the relay that failed");
    assert.ok(killedAt !== null, "the owner was killed");
    assert.ok(tookOverAt !== null, "the relay took over");
    assert.ok(upsertsAfterKill >= 20, `${upsertsAfterKill} upserts acknowledged after the kill`);
    assert.ok(searchesAfterKill >= 10, `${searchesAfterKill} searches answered after the kill`);

    const stats = await ok(relay, "stats", {});
    assert.equal(stats.role, "owner");
    assert.equal(stats.pid, relay.serverPid);
    assert.equal(stats.owner_pid, relay.serverPid);
    assert.equal((await owner.server.exited).signal, "SIGKILL", "the old owner died of the kill");

    const ids = [...acknowledged.keys()];
    const fetched = await ok(relay, "fetch", { index: "loop", ids });
    assert.deepEqual(fetched.missing, [], "acknowledged upserts missing after the take-over");
    assert.deepEqual(
      fetched.vectors.map((v) => [v.id, v.vector]),
      ids.map((id) => [id, acknowledged.get(id)]),
    );
    const described = await ok(relay, "describe_index", { index: "loop" });
    assert.equal(described.count, ids.length);
    t.diagnostic(
      `${ids.length} upserts acknowledged (${upsertsAfterKill} after the kill), ${searchesAfterKill} searches after the kill, ` +
        `take-over seen ${tookOverAt - killedAt} ms after the kill, ` +
        `calls the relay followed to the new owner: ${relay.stderr().split("following the ownership").length - 1}`,
    );
    owner = undefined; // dead already
  });
});

