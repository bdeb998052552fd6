// What this proves: the DuckDB file stride-vectors writes is a file Mastra's own vector store
// reads as its own. We start the release binary, write two indexes through MCP tools (known
// vectors with Stride-shaped metadata via `upsert`, then updates and deletes; and real
// all-MiniLM-L6-v2 embeddings via `embed`), record what our `search` answers for several
// query vectors and filters, and stop the server the way an MCP client does (close stdin, wait
// for a clean exit). Then `DuckDBVector` from @mastra/duckdb 1.10.0 (on its own
// @duckdb/node-api, DuckDB 1.5.2, while the server is DuckDB 1.5.5) opens the file:
// `listIndexes()` is exactly our indexes (nothing from our `stride_vectors` bookkeeping
// schema), `describeIndex()` has the right dimension, count and metric, and `query()` returns
// the same ids in the same order, the same metadata, and scores within 1e-5 of ours (a long
// text's chunks too: Mastra sees them as rows, with their text and place). Finally
// Mastra writes a row itself and keeps the file open: our server, started meanwhile, still
// answers tools/list and says which program holds the file (with its PID); once Mastra lets
// go, the server opens the file on its own and serves the row Mastra wrote.
//
// DuckDBVector runs in a process of its own (mastra-duckdb-worker.mjs), as in a Mastra app:
// it never closes its DuckDB connections, so only a process exit frees the file at once.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { after, before, describe, test } from "node:test";

import { MODEL_DIM, STRIDE_PROFILES, makeTempDir, removeDir, seededVector, startServer, waitFor, waitForBinary } from "./helpers.mjs";

const DIM = 16;
const CITIES = ["Lyon", "Paris", "Nantes", "Toulouse", "Lille"];
const DIPLOMAS = ["Bachelor", "Master", "PhD"];
const SKILLS = ["python", "sql", "react", "excel", "figma", "statistics"];

/** 30 profiles with deterministic vectors (exact f32 values) and Stride-shaped metadata. */
const ROWS = Array.from({ length: 30 }, (_, i) => ({
  id: `profile-${String(i).padStart(2, "0")}`,
  vector: seededVector(i + 1, DIM),
  metadata: {
    profileId: `profile-${String(i).padStart(2, "0")}`,
    diploma: DIPLOMAS[i % DIPLOMAS.length],
    skills: [SKILLS[i % SKILLS.length], SKILLS[(i * 5 + 2) % SKILLS.length]],
    monthlyMargin: 20 * (i % 13),
    city: CITIES[i % CITIES.length],
  },
}));

/** Filters written the way Stride writes them, with the same meaning in both stores. */
const FILTERS = [
  undefined,
  { city: { $eq: "Lyon" } },
  { city: "Paris" },
  { monthlyMargin: { $gte: 100 } },
  { $and: [{ diploma: { $eq: "Master" } }, { monthlyMargin: { $lt: 200 } }] },
  { skills: { $in: ["python"] } },
  { $or: [{ city: { $eq: "Nantes" } }, { diploma: { $eq: "PhD" } }] },
  { diploma: { $ne: "Bachelor" } },
];
const QUERY_SEEDS = [1001, 1002, 1003];
/** About 700 words: several chunks of the local model's 256 tokens. */
const LONG_NOTE = Array.from(
  { length: 48 },
  (_, i) => `Week ${i + 1} of the budget: rent in Lyon took ${400 + i} euros, and the student kept ${20 + (i % 7) * 5} euros for savings.`,
).join(" ");
let longChunks = 0;
const MASTRA_ROW = {
  id: "profile-mastra",
  vector: seededVector(4242, DIM),
  metadata: { profileId: "profile-mastra", diploma: "Master", skills: ["rust"], monthlyMargin: 300, city: "Rennes" },
};

const WORKER = fileURLToPath(new URL("./mastra-duckdb-worker.mjs", import.meta.url));
const require = createRequire(import.meta.url);
const MASTRA_DUCKDB_VERSION = require("@mastra/duckdb/package.json").version;

/**
 * Starts Mastra's DuckDBVector on `file` in its own process. Returns
 * {pid, call(method, params) -> result (throws the error message), stop() -> exit code}.
 */
function startMastra(file) {
  const child = spawn(process.execPath, [WORKER, file], { stdio: ["pipe", "pipe", "pipe"] });
  let output = "";
  let stderr = "";
  const pending = new Map();
  let nextId = 1;
  child.stderr.setEncoding("utf8").on("data", (t) => (stderr += t));
  child.stdout.setEncoding("utf8").on("data", (text) => {
    output += text;
    let newline;
    while ((newline = output.indexOf("\n")) >= 0) {
      const line = output.slice(0, newline);
      output = output.slice(newline + 1);
      if (!line.startsWith("@@rpc ")) continue; // Mastra's own logging
      const { id, result, error } = JSON.parse(line.slice(6));
      const waiter = pending.get(id);
      pending.delete(id);
      if (error !== undefined) waiter?.reject(new Error(`DuckDBVector: ${error}`));
      else waiter?.resolve(result);
    }
  });
  const exited = new Promise((resolve) => child.once("exit", (code) => resolve(code)));
  exited.then((code) => {
    for (const waiter of pending.values()) waiter.reject(new Error(`the Mastra worker exited (${code}): ${stderr}`));
    pending.clear();
  });
  return {
    pid: child.pid,
    call(method, params) {
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        child.stdin.write(`${JSON.stringify({ id, method, params })}\n`);
      });
    },
    async stop() {
      child.stdin.end();
      return exited;
    },
    kill() {
      if (child.exitCode === null) child.kill("SIGKILL");
      return exited;
    },
  };
}

let dir;
let db;
let server;
let mastra; // the DuckDBVector worker
const ourResults = []; // {index, queryVector, filter, topK, results}

describe(`a stride-vectors file opened by Mastra's DuckDBVector (@mastra/duckdb ${MASTRA_DUCKDB_VERSION})`, { timeout: 900_000 }, () => {
  before(async () => {
    await waitForBinary();
    dir = await makeTempDir("sv-e2e-duckdb-");
    db = path.join(dir, "stride-vectors.duckdb");
  });

  after(async () => {
    await server?.kill();
    await mastra?.kill();
    await removeDir(dir);
  });

  test("write through our server, record its search answers, stop it cleanly", async () => {
    server = await startServer({ db });
    const created = await server.call("create_index", { index: "student_profiles", dimension: DIM, metric: "cosine" });
    assert.equal(created.created, true);
    // Two batches, then changes: the file has to reflect updates and deletes too.
    await server.call("upsert", { index: "student_profiles", vectors: ROWS.slice(0, 20) });
    await server.call("upsert", { index: "student_profiles", vectors: ROWS.slice(20) });
    const upd = await server.call("update", { index: "student_profiles", id: "profile-03", metadata: { city: "Lyon", monthlyMargin: 190 } });
    assert.equal(upd.updated, true);
    ROWS[3].metadata = { ...ROWS[3].metadata, city: "Lyon", monthlyMargin: 190 };
    const newVector = seededVector(777, DIM);
    await server.call("update", { index: "student_profiles", id: "profile-07", vector: newVector });
    ROWS[7].vector = newVector;
    const del = await server.call("delete", { index: "student_profiles", ids: ["profile-11", "profile-12"] });
    assert.equal(del.deleted, 2);

    // An index of real embeddings, and the embedding of a query text (read back with fetch).
    const embedded = await server.call("embed", { index: "advice_history", documents: STRIDE_PROFILES, wait: true });
    assert.deepEqual(new Set(embedded.documents.map((d) => d.status)), new Set(["indexed"]));
    await server.call("embed", {
      index: "scratch_queries",
      documents: [{ id: "q", text: "python developer looking for savings advice" }],
      wait: true,
    });
    const textQuery = (await server.call("fetch", { index: "scratch_queries", ids: ["q"] })).vectors[0].vector;
    assert.equal(textQuery.length, MODEL_DIM);
    await server.call("delete_index", { index: "scratch_queries" });

    // A long text: embedded in chunks, stored as rows Mastra reads (ids note#0, note#1, ...,
    // each with its piece of the text and its place in `chunk`).
    const long = await server.call("embed", { index: "long_notes", documents: [{ id: "note", text: LONG_NOTE, metadata: { userId: "u1" } }], wait: true });
    assert.equal(long.documents[0].status, "indexed");
    const whole = (await server.call("fetch", { index: "long_notes", ids: ["note"] })).vectors[0];
    assert.equal(whole.metadata.text, LONG_NOTE, "fetch puts the chunks back together");
    assert.ok(whole.chunks.length >= 2, `several chunks: ${JSON.stringify(whole.chunks)}`);
    longChunks = whole.chunks.length;
    const best = await server.call("search", { index: "long_notes", vector: textQuery, top_k: 5 });
    assert.deepEqual(best.results.map((r) => r.id), ["note"], "one hit per document");
    const rows = await server.call("search", { index: "long_notes", vector: textQuery, top_k: 10, chunks: true });
    assert.equal(rows.results.length, longChunks);
    assert.equal(rows.results[0].id, `note#${best.results[0].metadata.chunk.n}`, "the document's hit is its best chunk");
    const longRows = { index: "long_notes", queryVector: textQuery, filter: undefined, topK: 10, results: rows.results };

    for (const seed of QUERY_SEEDS) {
      const queryVector = seededVector(seed, DIM);
      for (const filter of FILTERS) {
        const { results } = await server.call("search", { index: "student_profiles", vector: queryVector, top_k: 10, ...(filter ? { filter } : {}) });
        assert.ok(results.length > 0, `search with ${JSON.stringify(filter)} found something`);
        ourResults.push({ index: "student_profiles", queryVector, filter, topK: 10, results });
      }
    }
    for (const filter of [undefined, { city: { $ne: "Paris" } }]) {
      const { results } = await server.call("search", { index: "advice_history", vector: textQuery, top_k: 4, ...(filter ? { filter } : {}) });
      ourResults.push({ index: "advice_history", queryVector: textQuery, filter, topK: 4, results });
    }
    ourResults.push(longRows);
    // A sanity anchor: the stored vector of a row is its own best match, score 1.
    const self = await server.call("search", { index: "student_profiles", vector: ROWS[5].vector, top_k: 1 });
    assert.equal(self.results[0].id, "profile-05");
    assert.ok(Math.abs(self.results[0].score - 1) < 1e-6);

    const exit = await server.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `clean exit after stdin closed\n${server.stderr().slice(-3000)}`);
    server = undefined;
  });

  test("DuckDBVector opens the file; listIndexes() is exactly our indexes", async () => {
    mastra = startMastra(db);
    const indexes = await mastra.call("listIndexes");
    assert.deepEqual([...indexes].sort(), ["advice_history", "long_notes", "student_profiles"]);
    assert.ok(!indexes.some((name) => name.includes("stride_vectors")));
  });

  test("describeIndex(): dimension, count and metric", async () => {
    assert.deepEqual(await mastra.call("describeIndex", { indexName: "student_profiles" }), {
      dimension: DIM,
      count: ROWS.length - 2,
      metric: "cosine",
    });
    assert.deepEqual(await mastra.call("describeIndex", { indexName: "advice_history" }), {
      dimension: MODEL_DIM,
      count: STRIDE_PROFILES.length,
      metric: "cosine",
    });
    assert.deepEqual(await mastra.call("describeIndex", { indexName: "long_notes" }), {
      dimension: MODEL_DIM,
      count: longChunks,
      metric: "cosine",
    });
  });

  test("query(): same ids, same order, same metadata, scores within 1e-5 of our search", async () => {
    assert.equal(ourResults.length, QUERY_SEEDS.length * FILTERS.length + 3);
    for (const { index, queryVector, filter, topK, results } of ourResults) {
      const theirs = await mastra.call("query", { indexName: index, queryVector, topK, ...(filter ? { filter } : {}) });
      const what = `${index} filter ${JSON.stringify(filter)}`;
      assert.deepEqual(
        theirs.map((r) => r.id),
        results.map((r) => r.id),
        `${what}: ids and order`,
      );
      for (let i = 0; i < results.length; i++) {
        assert.ok(
          Math.abs(theirs[i].score - results[i].score) < 1e-5,
          `${what} #${i} (${results[i].id}): Mastra ${theirs[i].score} vs ours ${results[i].score}`,
        );
        assert.deepEqual(theirs[i].metadata, results[i].metadata, `${what} #${i}: metadata`);
      }
    }
    // The updated and deleted rows are as we left them.
    const [hit] = await mastra.call("query", { indexName: "student_profiles", queryVector: ROWS[7].vector, topK: 1, includeVector: true });
    assert.equal(hit.id, "profile-07");
    assert.deepEqual(hit.vector, ROWS[7].vector);
    const lyon = await mastra.call("query", { indexName: "student_profiles", queryVector: ROWS[0].vector, topK: 30, filter: { city: "Lyon" } });
    assert.ok(lyon.some((r) => r.id === "profile-03" && r.metadata.monthlyMargin === 190));
    const all = await mastra.call("query", { indexName: "student_profiles", queryVector: ROWS[0].vector, topK: 30 });
    assert.equal(all.length, ROWS.length - 2);
    assert.ok(!all.some((r) => r.id === "profile-11" || r.id === "profile-12"));
  });

  test("while Mastra holds the file, our server answers tools/list and names the holder", async () => {
    // The reader of the previous tests goes away; a new Mastra process writes a row and keeps
    // the file open.
    assert.equal(await mastra.stop(), 0);
    mastra = startMastra(db);
    const ids = await mastra.call("upsert", {
      indexName: "student_profiles",
      vectors: [MASTRA_ROW.vector],
      metadata: [MASTRA_ROW.metadata],
      ids: [MASTRA_ROW.id],
    });
    assert.deepEqual(ids, [MASTRA_ROW.id]);

    server = await startServer({ db });
    assert.equal(server.tools.length, 12, "tools/list is answered without the database");
    await assert.rejects(server.call("fetch", { index: "student_profiles", ids: [MASTRA_ROW.id] }), (error) => {
      assert.equal(error.name, "ToolError");
      assert.match(error.text, /not stride-vectors/);
      assert.match(error.text, new RegExp(`PID ${mastra.pid}\\b`));
      return true;
    });
  });

  test("once Mastra lets go, the server opens the file and serves the row Mastra wrote", async () => {
    assert.equal(await mastra.stop(), 0);
    mastra = undefined;
    const fetched = await waitFor(
      async () => {
        try {
          return await server.call("fetch", { index: "student_profiles", ids: [MASTRA_ROW.id] });
        } catch (error) {
          if (error.name === "ToolError" && /not stride-vectors/.test(error.text)) return null;
          throw error;
        }
      },
      // The server retries the open with a backoff of at most 5 s.
      { timeoutMs: 30_000, intervalMs: 250, what: "the server to open the file after Mastra closed it" },
    );
    assert.deepEqual(fetched.missing, []);
    assert.equal(fetched.vectors[0].id, MASTRA_ROW.id);
    assert.deepEqual(fetched.vectors[0].metadata, MASTRA_ROW.metadata);
    // Within one f32 ulp, not exact: Mastra writes the vector as a SQL literal
    // `[0.5146484375, 0.982421875, ...]::FLOAT[16]`, which DuckDB types as DECIMAL(11,10)[], and
    // its DECIMAL -> FLOAT cast can land one ulp away (0.982421875 -> 0.98242193...).
    const stored = fetched.vectors[0].vector;
    assert.equal(stored.length, DIM);
    stored.forEach((x, i) => assert.ok(Math.abs(x - MASTRA_ROW.vector[i]) <= 2 ** -23, `[${i}] ${x} vs ${MASTRA_ROW.vector[i]}`));
    const found = await server.call("search", { index: "student_profiles", vector: MASTRA_ROW.vector, top_k: 1, filter: { city: "Rennes" } });
    assert.equal(found.results[0].id, MASTRA_ROW.id);
    assert.ok(Math.abs(found.results[0].score - 1) < 1e-6);
    const described = await server.call("describe_index", { index: "student_profiles" });
    assert.equal(described.count, ROWS.length - 2 + 1);
    // Our earlier answers still hold for the rows we wrote.
    const again = await server.call("search", { index: "student_profiles", vector: ourResults[0].queryVector, top_k: 10, filter: { city: { $ne: "Rennes" } } });
    assert.deepEqual(again.results.map((r) => r.id), ourResults[0].results.map((r) => r.id));
    const exit = await server.stop();
    assert.deepEqual(exit, { code: 0, signal: null });
    server = undefined;
  });
});
