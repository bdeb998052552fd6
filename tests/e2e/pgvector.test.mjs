// What this proves: on PostgreSQL, the tables stride-vectors writes are tables Mastra's own
// `PgVector` (@mastra/pg 1.27.1) reads as its own, and the other way round. Our server (the
// release binary, `--database ... --pg-schema <fresh schema>`) writes two indexes through MCP
// tools: `student_profiles` (cosine, no vector index, so exact) and `goal_matches` (dot
// product, with an HNSW index we ask for). Then PgVector, on the same schema, lists them,
// describes them with our dimension, metric and count, and its `query()` returns the same ids
// in the same order, the same metadata, and scores within 1e-5 of our `search`, with and
// without filters. Finally PgVector creates an index and writes rows itself; the same
// running server adopts that table and its `search` answers as Mastra's `query()` does.
//
// Needs a PostgreSQL with pgvector: STRIDE_VECTORS_TEST_POSTGRES, a libpq connection string
// (scripts/test starts one with scripts/postgres and exports it). Without it the suite is
// skipped, unless STRIDE_VECTORS_REQUIRE_POSTGRES=1 (CI), where that is a failure.

import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { PgVector } from "@mastra/pg";
import pg from "pg";

import { makeTempDir, removeDir, seededVector, startServer, waitForBinary } from "./helpers.mjs";

const CONNINFO = process.env.STRIDE_VECTORS_TEST_POSTGRES;
const REQUIRED = process.env.STRIDE_VECTORS_REQUIRE_POSTGRES === "1";
const MASTRA_PG_VERSION = createRequire(import.meta.url)("@mastra/pg/package.json").version;

const DIM = 16;
const GOALS = ["laptop", "erasmus", "camera", "driving_licence", "savings"];
const TAGS = ["python", "sql", "react", "excel", "figma", "statistics"];
// Generous enough that HNSW visits the whole 300-row graph on both sides: the comparison is
// then between two exact answers, not two approximations that may differ.
const EF = 400;

/** `count` rows with distinct seeded vectors (exact f32 values, so no ties) and Stride-shaped metadata. */
function makeRows(prefix, seed, count) {
  return Array.from({ length: count }, (_, i) => {
    const id = `${prefix}-${String(i).padStart(3, "0")}`;
    return {
      id,
      vector: seededVector(seed + i, DIM),
      metadata: {
        profileId: id,
        goalType: GOALS[i % GOALS.length],
        monthlyMargin: 10 * (i % 37),
        // Two different tags: the second is 1 to 5 places further on.
        tags: [TAGS[i % TAGS.length], TAGS[(i + 1 + (i % 5)) % TAGS.length]],
      },
    };
  });
}
const PROFILES = makeRows("profile", 1, 300);
const GOAL_ROWS = makeRows("goal", 5001, 300);
const MASTRA_ROWS = makeRows("mastra", 9001, 40);

/** Filters with the same meaning in both stores (Mastra's PG translator and ours). */
const FILTERS = [
  undefined,
  { goalType: { $eq: "savings" } },
  { tags: { $in: ["python", "sql"] } },
  { goalType: { $in: ["laptop", "camera"] } },
  { monthlyMargin: { $gte: 100, $lt: 300 } },
  { $or: [{ goalType: { $eq: "erasmus" } }, { monthlyMargin: { $lt: 50 } }] },
  { $and: [{ tags: { $in: ["react"] } }, { goalType: { $ne: "laptop" } }] },
];
const QUERY_SEEDS = [7001, 7002, 7003];

/**
 * The libpq key=value string (`host=/dir/sock user=postgres dbname=postgres`, what
 * scripts/postgres prints) as node-postgres options, and as the URL PgVector takes (its
 * host-based config insists on a password, which a trust-auth test cluster has none of).
 */
function connection(conninfo) {
  if (/^postgres(ql)?:\/\//.test(conninfo)) return { pgOptions: { connectionString: conninfo }, url: conninfo };
  const kv = {};
  for (const [, key, raw] of conninfo.matchAll(/(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)/g)) {
    kv[key] = raw.startsWith("'") ? raw.slice(1, -1).replace(/\\(.)/g, "$1") : raw;
  }
  const pgOptions = { host: kv.host, port: kv.port && Number(kv.port), user: kv.user, database: kv.dbname, password: kv.password };
  const auth = encodeURIComponent(kv.user ?? "") + (kv.password ? `:${encodeURIComponent(kv.password)}` : "");
  // `?host=` takes a socket directory as well as a host name.
  const url = `postgresql://${auth}@localhost${kv.port ? `:${kv.port}` : ""}/${encodeURIComponent(kv.dbname ?? kv.user ?? "postgres")}?host=${encodeURIComponent(kv.host ?? "localhost")}`;
  return { pgOptions, url };
}

const SCHEMA = `e2e_pg_${randomBytes(6).toString("hex")}`;
const BOOKKEEPING = `stride_vectors_${SCHEMA}`;

let dir;
let server;
let mastra; // the PgVector
const ourAnswers = []; // {index, queryVector, filter, results}

/** A tool call; a failure carries the server's recent stderr, so a server bug shows its log. */
async function ours(tool, args) {
  try {
    return await server.call(tool, args);
  } catch (error) {
    error.message += `\n(arguments ${JSON.stringify(args).slice(0, 500)})\nserver stderr:\n${server.stderr().slice(-4000)}`;
    throw error;
  }
}

/** Mastra's query() for `ourAnswer`'s question gives the same ids, order, metadata, scores. */
async function assertSameAnswer({ index, queryVector, filter, results }) {
  const theirs = await mastra.query({ indexName: index, queryVector, topK: 10, ef: EF, ...(filter ? { filter } : {}) });
  const what = `${index} filter ${JSON.stringify(filter)}`;
  // Every filter here matches well over 10 rows: a short answer would be a missed row.
  assert.equal(results.length, 10, `${what}: our search found a full top 10`);
  assert.deepEqual(theirs.map((r) => r.id), results.map((r) => r.id), `${what}: ids and order`);
  results.forEach((hit, i) => {
    assert.ok(Math.abs(theirs[i].score - hit.score) < 1e-5, `${what} #${i} (${hit.id}): Mastra ${theirs[i].score} vs ours ${hit.score}`);
    assert.deepEqual(theirs[i].metadata, hit.metadata, `${what} #${i}: metadata`);
  });
}

const SKIP = !CONNINFO && !REQUIRED && "STRIDE_VECTORS_TEST_POSTGRES is not set (no PostgreSQL with pgvector to test against; scripts/test starts one)";

describe(`stride-vectors tables on PostgreSQL read by Mastra's PgVector (@mastra/pg ${MASTRA_PG_VERSION})`, { skip: SKIP, timeout: 600_000 }, () => {
  before(async () => {
    if (!CONNINFO) throw new Error("STRIDE_VECTORS_REQUIRE_POSTGRES=1 but STRIDE_VECTORS_TEST_POSTGRES is not set");
    await waitForBinary();
    dir = await makeTempDir("sv-e2e-pg-");
  });

  after(async () => {
    await server?.kill();
    await mastra?.disconnect();
    // Our tables' schema and our bookkeeping schema go; the cluster may be shared by other tests.
    if (CONNINFO) {
      const client = new pg.Client(connection(CONNINFO).pgOptions);
      await client.connect();
      try {
        await client.query(`DROP SCHEMA IF EXISTS "${SCHEMA}" CASCADE`);
        await client.query(`DROP SCHEMA IF EXISTS "${BOOKKEEPING}" CASCADE`);
      } finally {
        await client.end();
      }
    }
    await removeDir(dir);
  });

  test("our server writes a cosine index and a dot-product HNSW index, and records its answers", async () => {
    // `db` is unused with --database, but keeps anything file-based inside the temp dir.
    server = await startServer({ db: path.join(dir, "unused.duckdb"), args: ["--database", CONNINFO, "--pg-schema", SCHEMA] });
    const created = await ours("create_index", { index: "student_profiles", dimension: DIM, metric: "cosine" });
    assert.equal(created.created, true);
    const hnsw = { type: "hnsw", m: 16, ef_construction: 64 };
    await ours("create_index", { index: "goal_matches", dimension: DIM, metric: "dotproduct", ann: hnsw });
    for (let at = 0; at < 300; at += 100) {
      await ours("upsert", { index: "student_profiles", vectors: PROFILES.slice(at, at + 100) });
      await ours("upsert", { index: "goal_matches", vectors: GOAL_ROWS.slice(at, at + 100) });
    }
    const profiles = await ours("describe_index", { index: "student_profiles" });
    assert.deepEqual([profiles.count, profiles.search_mode, profiles.backend], [300, "exact", "postgres"]);
    const goals = await ours("describe_index", { index: "goal_matches" });
    assert.deepEqual([goals.count, goals.search_mode, goals.ann], [300, "hnsw", { m: 16, ef_construction: 64 }]);

    for (const index of ["student_profiles", "goal_matches"]) {
      for (const seed of QUERY_SEEDS) {
        const queryVector = seededVector(seed, DIM);
        for (const filter of FILTERS) {
          const args = { index, vector: queryVector, top_k: 10, ...(filter ? { filter } : {}) };
          if (index === "goal_matches") args.ef_search = EF;
          const { results } = await ours("search", args);
          ourAnswers.push({ index, queryVector, filter, results });
        }
      }
    }
    // A sanity anchor: a stored vector is its own best cosine match.
    const self = await ours("search", { index: "student_profiles", vector: PROFILES[42].vector, top_k: 1 });
    assert.equal(self.results[0].id, "profile-042");
    assert.ok(Math.abs(self.results[0].score - 1) < 1e-6);
  });

  test("PgVector lists our indexes and describes them as we do", async () => {
    mastra = new PgVector({ id: "stride-vectors-e2e", connectionString: connection(CONNINFO).url, schemaName: SCHEMA });
    // Exactly our tables: the bookkeeping lives in a schema of its own.
    assert.deepEqual((await mastra.listIndexes()).sort(), ["goal_matches", "student_profiles"]);
    for (const index of ["student_profiles", "goal_matches"]) {
      const theirs = await mastra.describeIndex({ indexName: index });
      const our = await ours("describe_index", { index });
      assert.deepEqual([theirs.dimension, theirs.metric, theirs.count], [our.dimension, our.metric, our.count], index);
    }
    // Mastra reads the metric from the vector index's operator class, and the HNSW settings
    // from its definition; with no vector index it assumes cosine and scans.
    const profiles = await mastra.describeIndex({ indexName: "student_profiles" });
    assert.deepEqual([profiles.metric, profiles.type], ["cosine", "flat"]);
    const goals = await mastra.describeIndex({ indexName: "goal_matches" });
    assert.deepEqual([goals.metric, goals.type, goals.config], ["dotproduct", "hnsw", { m: 16, efConstruction: 64 }]);
  });

  test("PgVector query() answers as our search did: ids, order, metadata, scores", async () => {
    assert.equal(ourAnswers.length, 2 * QUERY_SEEDS.length * FILTERS.length);
    for (const answer of ourAnswers) await assertSameAnswer(answer);
  });

  test("an index PgVector creates and fills is adopted by our running server", async (t) => {
    // Mastra's default: an IVFFlat index `mastra_goals_vector_idx` (vector_cosine_ops, built
    // on the empty table). Both sides still search exactly: Mastra orders by its score
    // expression, which no index serves, and our server uses only HNSW indexes.
    await mastra.createIndex({ indexName: "mastra_goals", dimension: DIM, metric: "cosine" });
    const ids = await mastra.upsert({
      indexName: "mastra_goals",
      vectors: MASTRA_ROWS.map((r) => r.vector),
      metadata: MASTRA_ROWS.map((r) => r.metadata),
      ids: MASTRA_ROWS.map((r) => r.id),
    });
    assert.deepEqual(ids, MASTRA_ROWS.map((r) => r.id));

    // list_indexes shows the indexes the server has registered; a table made since it started
    // is adopted when it is asked for by name. When this test was written, list_indexes alone
    // did not show `mastra_goals` (the diagnostic below says `false`): describe_index adopted
    // it, and from then on list_indexes shows it. Either way is accepted before describe_index.
    const listed = (await ours("list_indexes", {})).indexes.some((i) => i.index === "mastra_goals");
    const described = await ours("describe_index", { index: "mastra_goals" });
    assert.deepEqual(
      [described.dimension, described.metric, described.count, described.adopted, described.search_mode],
      [DIM, "cosine", MASTRA_ROWS.length, true, "exact"],
    );
    const summary = (await ours("list_indexes", {})).indexes.find((i) => i.index === "mastra_goals");
    assert.ok(summary, "list_indexes shows the adopted index");
    assert.deepEqual([summary.dimension, summary.metric, summary.count], [DIM, "cosine", MASTRA_ROWS.length]);
    t.diagnostic(`mastra_goals in list_indexes before describe_index: ${listed}`);

    // The rows as Mastra wrote them (text literals of exact f32 values: no rounding).
    const fetched = await ours("fetch", { index: "mastra_goals", ids: [MASTRA_ROWS[7].id] });
    assert.deepEqual(fetched.vectors[0].vector, MASTRA_ROWS[7].vector);
    assert.deepEqual(fetched.vectors[0].metadata, MASTRA_ROWS[7].metadata);

    for (const seed of QUERY_SEEDS.slice(0, 2)) {
      const queryVector = seededVector(seed, DIM);
      for (const filter of [undefined, FILTERS[2], FILTERS[4]]) {
        const { results } = await ours("search", { index: "mastra_goals", vector: queryVector, top_k: 10, ...(filter ? { filter } : {}) });
        await assertSameAnswer({ index: "mastra_goals", queryVector, filter, results });
      }
    }
  });

  test("our server stops cleanly; PgVector disconnects", async () => {
    const exit = await server.stop();
    assert.deepEqual(exit, { code: 0, signal: null }, `clean exit after stdin closed\n${server.stderr().slice(-3000)}`);
    server = undefined;
    await mastra.disconnect();
    mastra = undefined;
  });
});
