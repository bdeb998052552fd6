// What this proves: the official MCP Inspector CLI (@modelcontextprotocol/inspector 2.12.0,
// `mcp-inspector --cli`, the same entry point `npx @modelcontextprotocol/inspector --cli`
// runs) can drive the release binary over stdio with no special configuration: tools/list
// shows all 12 tools, each with an input schema and an object-rooted output schema, and no
// schema the Inspector rates as an error (`--strict` exits 0); tools/call of every tool with
// realistic arguments prints the structured results we expect (exit code 0); and a tool
// error (a missing index, a wrong vector dimension) is an `isError: true` result that the
// Inspector turns into exit code 5 (EXIT_CODES.TOOL_ERROR in its source) with the server's
// message, not a protocol failure.
//
// Each Inspector invocation starts its own stride-vectors process on the same file, one after
// the other, exactly as a person running the Inspector by hand would; state carries over
// through the DuckDB file.
//
// How arguments are passed (read from the Inspector's CLI source): `--tool-arg k=v ...`
// JSON-parses each value when it can (so `dimension=3`, `vector=[1,0,0]` and
// `filter={"kind":"x"}` arrive typed) and otherwise sends the string, coercing leftover
// strings by the input schema; `--tool-args-json '{...}'` passes one JSON object verbatim.
// `--format json` prints one `{"result": ...}` object on stdout; `-q` keeps the server's own
// stderr out, leaving only the Inspector's `{"error": ...}` envelope on stderr on failure.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import {
  BIN,
  MODEL_DIM,
  MODEL_NAME,
  INSPECTOR_VERSION,
  STRIDE_PROFILES,
  TOOL_NAMES,
  inspectorCli,
  makeTempDir,
  removeDir,
  startServer,
  waitForBinary,
} from "./helpers.mjs";


let dir;
let db;

/**
 * Runs `mcp-inspector --cli --format json -q <BIN> --db <db> ...args` (see inspectorCli).
 */
function inspector(args, { timeoutMs = 180_000 } = {}) {
  return inspectorCli([BIN, "--db", db, ...args], { scratchDir: dir, timeoutMs });
}

/** tools/call through the Inspector, expecting success: returns structuredContent. */
async function call(tool, toolArgs) {
  const out = await inspector(["--method", "tools/call", "--tool-name", tool, ...toolArgs]);
  assert.equal(out.code, 0, `inspector tools/call ${tool} exited ${out.code}\nstdout:${out.stdout}\nstderr:${out.stderr}`);
  const result = out.json.result;
  assert.notEqual(result.isError, true, `${tool} returned an error: ${JSON.stringify(result)}`);
  assert.equal(typeof result.structuredContent, "object");
  // The text copy carries the same JSON as structuredContent.
  assert.deepEqual(JSON.parse(result.content[0].text), result.structuredContent);
  return result.structuredContent;
}

/** tools/call through the Inspector, expecting a tool error: returns {out, text}. */
async function callExpectingToolError(tool, toolArgs) {
  const out = await inspector(["--method", "tools/call", "--tool-name", tool, ...toolArgs]);
  assert.equal(out.code, 5, `expected exit code 5 (tool error), got ${out.code}\nstdout:${out.stdout}\nstderr:${out.stderr}`);
  assert.equal(out.json.result.isError, true);
  assert.equal(out.error?.code, "tool_is_error");
  const text = out.json.result.content.map((c) => c.text).join("\n");
  return { out, text };
}

const argsJson = (obj) => ["--tool-args-json", JSON.stringify(obj)];

describe("MCP Inspector CLI 2.12.0 against the release binary", { timeout: 900_000 }, () => {
  before(async () => {
    await waitForBinary();
    dir = await makeTempDir("sv-e2e-inspector-");
    db = path.join(dir, "vectors.duckdb");
  });
  after(() => removeDir(dir));

  test("the pinned Inspector is the one under test", () => {
    assert.equal(INSPECTOR_VERSION, "2.12.0");
  });

  test("tools/list: all 12 tools, each with input and object-rooted output schemas", async () => {
    const out = await inspector(["--method", "tools/list"]);
    assert.equal(out.code, 0, out.stderr);
    const tools = out.json.result.tools;
    assert.deepEqual(tools.map((t) => t.name).sort(), [...TOOL_NAMES].sort());
    for (const tool of tools) {
      assert.ok(tool.description?.length > 20, `${tool.name} has a description`);
      assert.equal(tool.inputSchema?.type, "object", `${tool.name}.inputSchema is an object schema`);
      assert.equal(tool.outputSchema?.type, "object", `${tool.name}.outputSchema root type is object`);
      assert.equal(typeof tool.outputSchema.properties, "object", `${tool.name}.outputSchema has properties`);
    }
    const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
    assert.deepEqual(byName.search.inputSchema.required, ["index"]);
    assert.deepEqual(byName.upsert.inputSchema.required, ["index", "vectors"]);
    assert.equal(byName.search.annotations?.readOnlyHint, true);
    assert.equal(byName.delete_index.annotations?.destructiveHint, true);
  });

  test("tools/list --strict: no schema the Inspector rates as a portability error", async () => {
    const out = await inspector(["--method", "tools/list", "--strict"]);
    // Exit 6 would mean an error-severity finding; warnings (nullable type arrays,
    // free-form metadata objects) are allowed.
    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.json.result.tools.length, 12);
  });

  test("create_index with --tool-arg key=value pairs, then the same shape again", async () => {
    const created = await call("create_index", ["--tool-arg", "index=notes", "dimension=3", "metric=euclidean"]);
    const text = { text_field: "text", language: "english" };
    assert.deepEqual(created, { index: "notes", dimension: 3, metric: "euclidean", created: true, ...text });
    const again = await call("create_index", ["--tool-arg", "index=notes", "dimension=3", "metric=euclidean"]);
    assert.deepEqual(again, { index: "notes", dimension: 3, metric: "euclidean", created: false, ...text });
  });

  test("create_index with another shape is a tool error naming the conflict (exit 5)", async () => {
    const { text } = await callExpectingToolError("create_index", ["--tool-arg", "index=notes", "dimension=4"]);
    assert.match(text, /"notes" already exists with dimension 3 and metric euclidean/);
    assert.match(text, /asked for dimension 4 and metric cosine/);
  });

  test("upsert with a JSON array value for --tool-arg, creating the index on first use", async () => {
    const vectors = [
      { id: "a", vector: [1, 0, 0], metadata: { kind: "x", n: 1, tags: ["red"] } },
      { id: "b", vector: [0, 1, 0], metadata: { kind: "y", n: 2, tags: ["blue"] } },
      { id: "c", vector: [0.6, 0.8, 0], metadata: { kind: "x", n: 3, tags: ["red", "blue"] } },
      { id: "d", vector: [0, 0, 1], metadata: { kind: "z", n: 4 } },
    ];
    const res = await call("upsert", [
      "--tool-arg",
      "index=docs",
      `vectors=${JSON.stringify(vectors)}`,
      'create_index={"dimension":3}',
    ]);
    assert.deepEqual(res, { index: "docs", upserted: 4, ids: ["a", "b", "c", "d"], created_index: true });
  });

  test("list_indexes shows both indexes with their shape and count", async () => {
    const res = await call("list_indexes", []);
    const docs = res.indexes.find((i) => i.index === "docs");
    const notes = res.indexes.find((i) => i.index === "notes");
    assert.deepEqual(
      { index: docs.index, dimension: docs.dimension, metric: docs.metric, count: docs.count },
      { index: "docs", dimension: 3, metric: "cosine", count: 4 },
    );
    assert.deepEqual(
      { index: notes.index, dimension: notes.dimension, metric: notes.metric, count: notes.count },
      { index: "notes", dimension: 3, metric: "euclidean", count: 0 },
    );
    assert.equal(res.indexes.length, 2);
  });

  test("describe_index", async () => {
    const res = await call("describe_index", ["--tool-arg", "index=docs"]);
    assert.equal(res.index, "docs");
    assert.equal(res.dimension, 3);
    assert.equal(res.metric, "cosine");
    assert.equal(res.count, 4);
    assert.equal(res.model, null, "vectors upserted directly have no model");
    assert.equal(res.adopted, false);
  });

  test("search by vector: exact cosine scores, ordered, with a filter, min_score and include_vector", async () => {
    const all = await call("search", argsJson({ index: "docs", vector: [1, 0, 0], top_k: 4 }));
    assert.deepEqual(all.results.map((r) => r.id), ["a", "c", "b", "d"]);
    assert.ok(Math.abs(all.results[0].score - 1) < 1e-6);
    assert.ok(Math.abs(all.results[1].score - 0.6) < 1e-6);
    assert.ok(Math.abs(all.results[2].score) < 1e-6);
    assert.deepEqual(all.results[0].metadata, { kind: "x", n: 1, tags: ["red"] });
    assert.equal(all.results[0].vector, undefined);

    const filtered = await call("search", [
      "--tool-arg",
      "index=docs",
      "vector=[0,1,0]",
      'filter={"kind":{"$eq":"x"}}',
      "top_k=5",
    ]);
    assert.deepEqual(filtered.results.map((r) => r.id), ["c", "a"]);
    assert.ok(Math.abs(filtered.results[0].score - 0.8) < 1e-6);

    const withMin = await call("search", argsJson({ index: "docs", vector: [1, 0, 0], min_score: 0.5, include_vector: true }));
    assert.deepEqual(withMin.results.map((r) => r.id), ["a", "c"]);
    assert.deepEqual(withMin.results[0].vector, [1, 0, 0]);

    const ops = await call(
      "search",
      argsJson({ index: "docs", vector: [1, 0, 0], filter: { $and: [{ n: { $gte: 2 } }, { tags: { $in: ["blue"] } }] } }),
    );
    assert.deepEqual(ops.results.map((r) => r.id), ["c", "b"]);
  });

  test("update merges metadata by default; fetch returns the stored row and the missing ids", async () => {
    const upd = await call("update", ["--tool-arg", "index=docs", "id=b", 'metadata={"kind":"x","note":"moved"}']);
    assert.deepEqual(upd, { index: "docs", id: "b", updated: true, count: 1 });
    const fetched = await call("fetch", ["--tool-arg", "index=docs", 'ids=["b","nope"]']);
    assert.deepEqual(fetched.missing, ["nope"]);
    assert.equal(fetched.vectors.length, 1);
    assert.deepEqual(fetched.vectors[0], { id: "b", vector: [0, 1, 0], metadata: { kind: "x", n: 2, tags: ["blue"], note: "moved" } });

    const repl = await call("update", argsJson({ index: "docs", id: "b", vector: [0, 0.6, 0.8], metadata: { only: true }, metadata_mode: "replace" }));
    assert.equal(repl.updated, true);
    const after = await call("fetch", argsJson({ index: "docs", ids: ["b"] }));
    assert.deepEqual(after.vectors[0].metadata, { only: true });
    assert.ok(after.vectors[0].vector.every((v, i) => Math.abs(v - [0, 0.6, 0.8][i]) < 1e-6));
  });

  test("embed (wait: true) Stride profiles with the local model, then search them by text", async () => {
    const res = await call("embed", argsJson({ index: "student_profiles", documents: STRIDE_PROFILES, wait: true }));
    assert.equal(res.index, "student_profiles");
    assert.equal(res.model, MODEL_NAME);
    assert.deepEqual(
      res.documents.map((d) => [d.id, d.status]),
      STRIDE_PROFILES.map((p) => [p.id, "indexed"]),
    );

    const described = await call("describe_index", ["--tool-arg", "index=student_profiles"]);
    assert.equal(described.dimension, MODEL_DIM);
    assert.equal(described.count, STRIDE_PROFILES.length);
    assert.equal(described.model, MODEL_NAME);

    const hits = await call("search", [
      "--tool-arg",
      "index=student_profiles",
      "query=graphic designer who does illustration and photography",
      "top_k=2",
    ]);
    assert.equal(hits.results[0].id, "profile-nantes-design");
    assert.equal(hits.results[0].metadata.city, "Nantes");
    assert.ok(hits.results[0].score > hits.results[1].score);

    const masters = await call(
      "search",
      argsJson({ index: "student_profiles", query: "python", filter: { diploma: "Master", monthlyMargin: { $gt: 200 } } }),
    );
    assert.deepEqual(masters.results.map((r) => r.id), ["profile-toulouse-data"]);

    // The same texts again cost nothing: every document is unchanged.
    const again = await call("embed", argsJson({ index: "student_profiles", documents: STRIDE_PROFILES }));
    assert.deepEqual(new Set(again.documents.map((d) => d.status)), new Set(["unchanged"]));
  });

  test("embed without wait queues; flush commits; stats reports the owner and the file", async () => {
    const doc = { id: "profile-late", text: "Education: PhD. Field: Biology. Location Lille.", metadata: { profileId: "profile-late", city: "Lille" } };
    const queued = await call("embed", argsJson({ index: "student_profiles", documents: [doc] }));
    assert.deepEqual(queued.documents.map((d) => d.status), ["queued"]);
    // The server that accepted it has exited since: an accepted document is never lost, so
    // either that server embedded it on its way out or this one resumes it from the file.
    const flushed = await call("flush", ["--tool-arg", "index=student_profiles", "timeout_ms=120000"]);
    assert.equal(flushed.pending, 0);
    const fetched = await call("fetch", argsJson({ index: "student_profiles", ids: ["profile-late"] }));
    assert.deepEqual(fetched.missing, []);
    assert.equal(fetched.vectors[0].vector.length, MODEL_DIM);

    const stats = await call("stats", []);
    assert.equal(stats.role, "owner");
    assert.equal(stats.pid, stats.owner_pid);
    assert.equal(stats.relays_connected, 0);
    assert.equal(stats.pending, 0);
    assert.equal(stats.model, MODEL_NAME);
    assert.equal(path.resolve(stats.database), path.resolve(db));
    const counts = Object.fromEntries(stats.indexes.map((i) => [i.index, i.count]));
    assert.deepEqual(counts, { docs: 4, notes: 0, student_profiles: STRIDE_PROFILES.length + 1 });
  });

  test("delete by ids and by filter", async () => {
    const byIds = await call("delete", ["--tool-arg", "index=docs", 'ids=["d","nope"]']);
    assert.deepEqual(byIds, { index: "docs", deleted: 1 });
    const byFilter = await call("delete", argsJson({ index: "docs", filter: { kind: "x" } }));
    assert.deepEqual(byFilter, { index: "docs", deleted: 2 });
    const left = await call("fetch", argsJson({ index: "docs", ids: ["a", "b", "c", "d"] }));
    assert.deepEqual(left.vectors.map((v) => v.id), ["b"]);
    assert.deepEqual(left.missing, ["a", "c", "d"]);
  });

  test("delete_index, then again (not an error: deleted false)", async () => {
    assert.deepEqual(await call("delete_index", ["--tool-arg", "index=notes"]), { index: "notes", deleted: true });
    assert.deepEqual(await call("delete_index", ["--tool-arg", "index=notes"]), { index: "notes", deleted: false });
    const res = await call("list_indexes", []);
    assert.deepEqual(res.indexes.map((i) => i.index).sort(), ["docs", "student_profiles"]);
  });

  test("tool error: search on a missing index gives exit code 5 and the server's message", async () => {
    const { out, text } = await callExpectingToolError("search", ["--tool-arg", "index=missing_index", "vector=[1,0,0]"]);
    assert.match(text, /missing_index/);
    assert.match(text, /does not exist/);
    assert.equal(out.json.result.structuredContent, undefined);
  });

  test("tool error: a vector of the wrong dimension names the field at fault (exit 5)", async () => {
    const { text } = await callExpectingToolError(
      "upsert",
      argsJson({ index: "docs", vectors: [{ id: "ok", vector: [1, 0, 0] }, { id: "short", vector: [1, 0] }] }),
    );
    assert.match(text, /vectors\[1\]/);
    assert.match(text, /short/);
    assert.match(text, /2 dimensions/);
    // Atomic: the valid row of the failed call was not written either.
    const fetched = await call("fetch", argsJson({ index: "docs", ids: ["ok", "short"] }));
    assert.deepEqual(fetched.missing, ["ok", "short"]);
  });

  test("tool error: a vector search given both vector and query names both fields (exit 5)", async () => {
    const { text } = await callExpectingToolError("search", argsJson({ index: "docs", vector: [1, 0, 0], query: "x", mode: "vector" }));
    assert.match(text, /vector/);
    assert.match(text, /query/);
  });

  test("an unknown tool is the Inspector's tool_not_found, exit code 5", async () => {
    const out = await inspector(["--method", "tools/call", "--tool-name", "no_such_tool"]);
    assert.equal(out.code, 5);
    assert.equal(out.error?.code, "tool_not_found");
  });
});

// The Inspector's process is a relay when another client's process owns the file: its calls,
// tool errors included, go through the owner and answer exactly as they would there.
describe("MCP Inspector CLI through a relay (another client's process owns the file)", { timeout: 900_000 }, () => {
  let relayDir;
  let relayDb;
  let owner;
  const viaInspector = (args) => inspectorCli([BIN, "--db", relayDb, ...args], { scratchDir: relayDir });
  const callJson = (tool, args) => viaInspector(["--method", "tools/call", "--tool-name", tool, ...argsJson(args)]);

  before(async () => {
    relayDir = await makeTempDir("sv-e2e-inspector-relay-");
    relayDb = path.join(relayDir, "vectors.duckdb");
    owner = await startServer({ db: relayDb, name: "owner" });
  });
  after(async () => {
    await owner?.stop();
    await removeDir(relayDir);
  });

  test("stats says relay, writes land in the owner's file, a tool error is exit 5 with the owner's text", async () => {
    const ownerStats = await owner.call("stats", {});
    assert.equal(ownerStats.role, "owner");

    let out = await callJson("stats", {});
    assert.equal(out.code, 0, out.stderr);
    const stats = out.json.result.structuredContent;
    assert.equal(stats.role, "relay");
    assert.equal(stats.owner_pid, ownerStats.pid);

    out = await callJson("upsert", {
      index: "relayed",
      create_index: { dimension: 3 },
      vectors: [{ id: "via-inspector", vector: [1, 0, 0], metadata: { from: "inspector" } }],
    });
    assert.equal(out.code, 0, out.stderr);
    const hits = await owner.call("search", { index: "relayed", vector: [1, 0, 0], top_k: 1 });
    assert.equal(hits.results[0].id, "via-inspector");
    assert.deepEqual(hits.results[0].metadata, { from: "inspector" });

    out = await callJson("search", { index: "relayed", vector: [1, 0] });
    assert.equal(out.code, 5, `a tool error through the relay is exit code 5\n${out.stdout}\n${out.stderr}`);
    const relayedText = out.json.result.content.map((c) => c.text).join("\n");
    const direct = await owner.client.callTool({ name: "search", arguments: { index: "relayed", vector: [1, 0] } });
    assert.equal(direct.isError, true);
    assert.equal(relayedText, direct.content.map((c) => c.text).join("\n"));
  });
});
