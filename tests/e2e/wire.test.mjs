// What this proves: every request that carries an id gets an answer, whatever the line looks
// like. The release binary is spawned directly (no MCP client library) and spoken to in raw
// newline-delimited JSON-RPC: after `initialize` (2025-11-25) it is sent a line of garbage, a
// truncated request, a `tools/call` whose search filter nests `$and` 100 levels deep (past
// serde_json's recursion limit of 128 for the whole message), requests holding a 200-level
// array and a 200-level object, a JSON object that is not JSON-RPC, and lines longer than
// 16 MiB (with the id first, and last as the TypeScript SDK writes it), a `tools/call` with
// text after it on its line, one whose arguments hold half a surrogate pair. Each gets a JSON-RPC error within a few seconds: -32700 (parse error) or -32600
// (invalid request), carrying the request's id whenever it can be read from the line (these
// ids come before the deep or broken part) and `id: null` when it cannot (garbage). A
// 40-level `$and` is under the JSON limit, so it reaches the tool, which refuses it with an
// error result naming the filter. After each bad line a valid request is answered, a final
// `tools/list` answers, the process is still running, and nothing but JSON-RPC ever appeared
// on stdout.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { TOOL_NAMES, isAlive, makeTempDir, removeDir, startRawServer, waitForBinary } from "./helpers.mjs";

/** No model is needed here: an embedder that is never called (nothing listens on port 9). */
const SERVER_ARGS = ["--embedder", "ollama", "--ollama-url", "http://127.0.0.1:9", "--model", "never-called"];
/** How long a bad line may wait for its answer. */
const ANSWER_MS = 4_000;
const BAD_CODES = [-32700, -32600];

/** A `tools/call` search on index "w" whose filter nests `$and` `levels` deep. */
function deepAndSearch(id, levels) {
  let filter = '{"kind":"a"}';
  for (let i = 0; i < levels; i++) filter = `{"$and":[${filter}]}`;
  return `{"jsonrpc":"2.0","id":${JSON.stringify(id)},"method":"tools/call","params":{"name":"search","arguments":{"index":"w","vector":[1,0],"filter":${filter}}}}`;
}

let dir;
let server;

/** Asserts that a bad line got a JSON-RPC error (no result) with the expected id. */
function assertRejected(answer, id, what) {
  assert.equal(answer.jsonrpc, "2.0", `${what}: ${JSON.stringify(answer)}`);
  assert.equal(answer.id, id, `${what}: answer id`);
  assert.ok(!("result" in answer), `${what}: an error, not a result: ${JSON.stringify(answer)}`);
  assert.ok(answer.error && typeof answer.error === "object", `${what}: error object: ${JSON.stringify(answer)}`);
  assert.ok(BAD_CODES.includes(answer.error.code), `${what}: code ${answer.error.code} is -32700 or -32600: ${JSON.stringify(answer)}`);
  assert.equal(typeof answer.error.message, "string", `${what}: error message`);
  assert.ok(answer.error.message.length > 0, `${what}: error message is not empty`);
}

/**
 * Writes a bad line and, right after it, a valid `ping` with id `pingId`; waits for the answer
 * to `id` (the bad line's, when it has one) and to the ping, together. Asserts that the ping
 * was answered normally and returns the bad line's answer (or throws: no answer in time).
 */
async function sendBadLine(line, id, pingId, { timeoutMs = ANSWER_MS } = {}) {
  await server.writeLine(line);
  await server.send({ jsonrpc: "2.0", id: pingId, method: "ping" });
  const [answer, ping] = await Promise.allSettled([
    server.answerTo(id, { timeoutMs }),
    server.answerTo(pingId, { timeoutMs }),
  ]);
  if (answer.status === "rejected") {
    const pong = ping.status === "fulfilled" ? "the ping after it was answered" : "the ping after it got no answer either";
    throw new Error(`${answer.reason.message} (${pong})`);
  }
  assert.equal(ping.status, "fulfilled", `the ping after the bad line: ${ping.reason?.message}`);
  assert.deepEqual(ping.value, { jsonrpc: "2.0", id: pingId, result: {} }, "ping after a bad line");
  return answer.value;
}

describe("raw JSON-RPC on stdio: every request that carries an id gets an answer", { timeout: 90_000 }, () => {
  before(async () => {
    await waitForBinary();
    dir = await makeTempDir("sv-e2e-wire-");
    server = await startRawServer({ db: path.join(dir, "stride-vectors.duckdb"), args: SERVER_ARGS });
    const init = await server.initialize("2025-11-25");
    assert.equal(init.protocolVersion, "2025-11-25");
    assert.equal(init.serverInfo.name, "stride-vectors");
    const created = await server.request("tools/call", { name: "create_index", arguments: { index: "w", dimension: 2 } });
    assert.ok(created.result && !created.result.isError, `create_index: ${JSON.stringify(created)}`);
    const upserted = await server.request("tools/call", {
      name: "upsert",
      arguments: { index: "w", vectors: [{ id: "a", vector: [1, 0], metadata: { kind: "a" } }] },
    });
    assert.ok(upserted.result && !upserted.result.isError, `upsert: ${JSON.stringify(upserted)}`);
  });

  after(async () => {
    if (server) await server.stop().catch(() => server.kill());
    await removeDir(dir);
  });

  test("a line of garbage gets a parse error (-32700) with id null; the next request is answered", async () => {
    const answer = await sendBadLine("hello", null, 101);
    assertRejected(answer, null, "garbage");
    assert.equal(answer.error.code, -32700, "garbage is a parse error");
  });

  test("a truncated request gets an error carrying its id (7)", async () => {
    const answer = await sendBadLine('{"jsonrpc":"2.0","id":7,"method":"tools/li', 7, 102);
    assertRejected(answer, 7, "truncated request");
  });

  test("a tools/call followed by more text on its line gets -32700 carrying its id, and does not run", async () => {
    const line = '{"jsonrpc":"2.0","id":"trailing","method":"tools/call","params":{"name":"delete","arguments":{"index":"w","ids":["a"]}}} x';
    const answer = await sendBadLine(line, "trailing", 110);
    assertRejected(answer, "trailing", "text after the message");
    assert.equal(answer.error.code, -32700);
    const fetched = await server.request("tools/call", { name: "fetch", arguments: { index: "w", ids: ["a"] } });
    assert.equal(fetched.result.structuredContent.vectors.length, 1, `the delete ran: ${JSON.stringify(fetched)}`);
  });

  test("a tools/call whose arguments hold half a surrogate pair gets -32700 carrying its id", async () => {
    const line = '{"jsonrpc":"2.0","id":"surrogate","method":"tools/call","params":{"name":"search","arguments":{"index":"w","vector":[1,0],"filter":{"kind":"\\ud800"}}}}';
    const answer = await sendBadLine(line, "surrogate", 111);
    assertRejected(answer, "surrogate", "lone surrogate");
    assert.equal(answer.error.code, -32700);
  });

  test("a tools/call whose filter nests $and 100 levels deep gets an error carrying its id", async () => {
    assertRejected(await sendBadLine(deepAndSearch(41, 100), 41, 103), 41, "100-level $and filter");
  });

  test("a request whose params hold a 200-level array gets an error carrying its id", async () => {
    const line = `{"jsonrpc":"2.0","id":"deep-array","method":"ping","params":{"x":${"[".repeat(200)}1${"]".repeat(200)}}}`;
    assertRejected(await sendBadLine(line, "deep-array", 104), "deep-array", "200-level array");
  });

  test("a request whose params hold a 200-level object gets an error carrying its id", async () => {
    const line = `{"jsonrpc":"2.0","id":43,"method":"ping","params":${'{"a":'.repeat(200)}1${"}".repeat(200)}}`;
    assertRejected(await sendBadLine(line, 43, 105), 43, "200-level object");
  });

  test("a JSON object with an id that is not JSON-RPC gets -32600 carrying its id", async () => {
    const answer = await sendBadLine('{"id":44,"hello":"world"}', 44, 106);
    assertRejected(answer, 44, "not JSON-RPC");
    assert.equal(answer.error.code, -32600);
  });

  test("a line longer than 16 MiB gets -32600 carrying its id", async () => {
    const filler = "y".repeat(17 * 1024 * 1024);
    const line = `{"jsonrpc":"2.0","id":45,"method":"tools/call","params":{"name":"stats","arguments":{"x":"${filler}"}}}`;
    const answer = await sendBadLine(line, 45, 107, { timeoutMs: 15_000 });
    assertRejected(answer, 45, "over-long line");
    assert.equal(answer.error.code, -32600);
  });

  test("a line longer than 16 MiB with its id last (the TypeScript SDK's order) gets -32600 carrying its id", async () => {
    // Decoy ids, escaped quotes and brackets inside the params must not be taken for it.
    const chunk = '{"id":1,"s":"a\\"}{[","v":[0.5,{"id":2}]},';
    const filler = chunk.repeat(Math.ceil((17 * 1024 * 1024) / chunk.length));
    const line = `{"method":"tools/call","params":{"name":"upsert","arguments":{"index":"w","vectors":[${filler}{}]}},"jsonrpc":"2.0","id":"sdk-last"}`;
    const answer = await sendBadLine(line, "sdk-last", 108, { timeoutMs: 15_000 });
    assertRejected(answer, "sdk-last", "over-long line, id last");
    assert.equal(answer.error.code, -32600);
    assert.match(answer.error.message, /longer than 16 MiB/);
  });

  test("a 40-level $and filter reaches the tool: an error result naming the filter", async () => {
    await server.writeLine(deepAndSearch(46, 40));
    const answer = await server.answerTo(46, { timeoutMs: ANSWER_MS });
    assert.ok(answer.result, `a tool result, not a JSON-RPC error: ${JSON.stringify(answer)}`);
    assert.equal(answer.result.isError, true, JSON.stringify(answer));
    const text = answer.result.content.map((block) => block.text).join("\n");
    assert.match(text, /filter: nested deeper than 32 levels/);
    // The same search with a shallow filter works.
    const ok = await server.request("tools/call", {
      name: "search",
      arguments: { index: "w", vector: [1, 0], filter: { $and: [{ kind: "a" }] } },
    });
    assert.ok(ok.result && !ok.result.isError, JSON.stringify(ok));
    assert.deepEqual(ok.result.structuredContent.results.map((r) => r.id), ["a"]);
  });

  test("the server keeps running: a final tools/list answers, and stdout carried only JSON-RPC", async () => {
    const listed = await server.request("tools/list", {}, { id: "final", timeoutMs: ANSWER_MS });
    assert.ok(listed.result, JSON.stringify(listed));
    assert.deepEqual(listed.result.tools.map((t) => t.name).sort(), [...TOOL_NAMES].sort());
    assert.ok(isAlive(server.pid), "the process is still running");
    assert.equal(server.child.exitCode, null);
    assert.deepEqual(server.badLines, [], "stdout lines that are not JSON-RPC 2.0");
    // No request was answered twice (a missing answer fails the test that sent it), and every
    // valid request after a bad line got its answer.
    for (const id of [7, 41, "deep-array", 43, 44, 45, 46, null]) {
      assert.ok(server.answersTo(id).length <= 1, `answers to id ${JSON.stringify(id)}: ${JSON.stringify(server.answersTo(id))}`);
    }
    for (const id of [101, 102, 103, 104, 105, 106, 107, "final"]) {
      assert.equal(server.answersTo(id).length, 1, `answers to id ${JSON.stringify(id)}`);
    }
  });
});
