// What this proves: Mastra's own MCP client (`MCPClient` from @mastra/mcp 2.0.0, with
// @mastra/core 1.71.0), configured exactly as Stride would configure it —
// `{servers: {vectors: {command: <binary>, args: [], env: {VECTOR_DB_DIR: dir}}}}` — launches
// the release binary as a stdio subprocess, lists its 12 tools (namespaced `vectors_<tool>`),
// and uses them as Mastra tools (`tool.execute(input)`, which validates the input against the
// tool's input schema and the output against its output schema) to do Stride's jobs:
// embedding profiles, goals and advice with Stride's metadata, searching them by text with
// Stride's Mongo-style filters (`$eq`, `$ne`, `$and`, ranges, array membership), and marking an
// advice's outcome with a metadata merge that keeps the other fields and makes the filter
// match it. The database lands where VECTOR_DB_DIR says, a server error reaches the caller as
// a thrown MastraError with the server's message, and `disconnect()` ends the server process.

import assert from "node:assert/strict";
import path from "node:path";
import { after, before, describe, test } from "node:test";

import { MCPClient } from "@mastra/mcp";

import { MODEL_DIM, MODEL_NAME, STRIDE_PROFILES, TOOL_NAMES, makeTempDir, modelEnv, removeDir, serverCommand, waitFor, waitForBinary } from "./helpers.mjs";

const GOALS = [
  {
    id: "goal-1",
    text: "Goal: Laptop. Amount: 1200 EUR. Deadline: September. Save for a new laptop for computer science studies.",
    metadata: { goalId: "goal-1", userId: "u1", goalName: "Laptop", goalAmount: 1200, status: "active" },
  },
  {
    id: "goal-2",
    text: "Goal: Erasmus semester in Spain. Amount: 3000 EUR. Deadline: January. Save for rent and travel abroad.",
    metadata: { goalId: "goal-2", userId: "u2", goalName: "Erasmus semester", goalAmount: 3000, status: "active" },
  },
  {
    id: "goal-3",
    text: "Goal: Camera. Amount: 900 EUR. Deadline: June. Buy a camera for photography projects.",
    metadata: { goalId: "goal-3", userId: "u2", goalName: "Camera", goalAmount: 900, status: "completed" },
  },
  {
    id: "goal-4",
    text: "Goal: Driving licence. Amount: 1500 EUR. Deadline: next summer. Pay for driving lessons and the exam.",
    metadata: { goalId: "goal-4", userId: "u3", goalName: "Driving licence", goalAmount: 1500, status: "completed" },
  },
];

const ADVICE = [
  {
    id: "advice-1",
    text: "Sell your old textbooks and course notes online to raise money for the laptop.",
    metadata: { adviceId: "advice-1", profileId: "profile-lyon-cs", goalType: "purchase", outcome: "helpful", timestamp: 1767225600000 },
  },
  {
    id: "advice-2",
    text: "Tutor first-year students in python and sql a few hours a week.",
    metadata: { adviceId: "advice-2", profileId: "profile-toulouse-data", goalType: "income", outcome: "pending", timestamp: 1767312000000 },
  },
  {
    id: "advice-3",
    text: "Apply for the Erasmus mobility grant and the regional travel scholarship before the deadline.",
    metadata: { adviceId: "advice-3", profileId: "profile-paris-eco", goalType: "travel", outcome: "helpful", timestamp: 1767398400000 },
  },
  {
    id: "advice-4",
    text: "Cancel unused streaming subscriptions and cook at home to cut monthly expenses.",
    metadata: { adviceId: "advice-4", profileId: "profile-nantes-design", goalType: "savings", outcome: "not_helpful", timestamp: 1767484800000 },
  },
];

let dir;
let mcp;
let tools;

/** Runs a Mastra tool; a Mastra input/output validation failure (returned, not thrown) fails. */
async function run(name, input) {
  const tool = tools[`vectors_${name}`];
  assert.ok(tool, `tool vectors_${name} is listed`);
  const result = await tool.execute(input);
  assert.ok(result && typeof result === "object", `vectors_${name} returned ${result}`);
  assert.notEqual(result.error, true, `vectors_${name} failed Mastra validation: ${result.message}`);
  return result;
}

const ids = (res) => res.results.map((r) => r.id);
const sortedIds = (res) => ids(res).sort();
/** A document's metadata as stored: what was given, and its text kept in metadata.text. */
const kept = (doc) => ({ ...doc.metadata, text: doc.text });

describe("Mastra MCPClient (@mastra/mcp 2.0.0) with the binary as a stdio server", { timeout: 900_000 }, () => {
  before(async () => {
    await waitForBinary();
    dir = await makeTempDir("sv-e2e-mastra-");
    mcp = new MCPClient({
      id: "stride-vectors-e2e",
      servers: {
        vectors: {
          ...serverCommand([]),
          env: { VECTOR_DB_DIR: dir, ...modelEnv() }, // modelEnv() is {} unless the model was moved
        },
      },
      timeout: 180_000,
    });
  });

  after(async () => {
    await mcp?.disconnect();
    await removeDir(dir);
  });

  test("listTools(): the 12 tools, namespaced by server name, and listToolsets()", async () => {
    tools = await mcp.listTools();
    assert.deepEqual(Object.keys(tools).sort(), TOOL_NAMES.map((n) => `vectors_${n}`).sort());
    for (const [name, tool] of Object.entries(tools)) {
      assert.equal(typeof tool.execute, "function", `${name} is executable`);
      assert.ok(tool.description.length > 20, `${name} has a description`);
    }
    const toolsets = await mcp.listToolsets();
    assert.deepEqual(Object.keys(toolsets), ["vectors"]);
    assert.deepEqual(Object.keys(toolsets.vectors).sort(), [...TOOL_NAMES].sort());
  });

  test("the database is $VECTOR_DB_DIR/stride-vectors.duckdb and this process owns it", async () => {
    const stats = await run("stats", {});
    assert.equal(stats.role, "owner");
    assert.equal(stats.pid, stats.owner_pid);
    // A Windows build (under Wine) joins with a backslash; the folder is the same.
    assert.equal(path.resolve(stats.database.replaceAll("\\", "/")), path.join(dir, "stride-vectors.duckdb"));
    assert.equal(stats.model, MODEL_NAME);
  });

  test("embed Stride profiles, goals and advice (wait: true)", async () => {
    for (const [index, docs] of [
      ["student_profiles", STRIDE_PROFILES],
      ["goals", GOALS],
      ["advice_history", ADVICE],
    ]) {
      const res = await run("embed", { index, documents: docs, wait: true });
      assert.equal(res.index, index);
      assert.equal(res.model, MODEL_NAME);
      assert.deepEqual(
        res.documents.map((d) => [d.id, d.status]),
        docs.map((d) => [d.id, "indexed"]),
      );
      const described = await run("describe_index", { index });
      assert.equal(described.dimension, MODEL_DIM);
      assert.equal(described.metric, "cosine");
      assert.equal(described.count, docs.length);
      assert.equal(described.model, MODEL_NAME);
    }
    const listed = await run("list_indexes", {});
    assert.deepEqual(
      listed.indexes.map((i) => [i.index, i.count]).sort(),
      [
        ["advice_history", 4],
        ["goals", 4],
        ["student_profiles", 4],
      ],
    );
  });

  test("search profiles by text: the closest profile comes first, metadata intact", async () => {
    const res = await run("search", {
      index: "student_profiles",
      query: "graphic design student skilled in figma, illustration and photography",
      top_k: 4,
    });
    assert.equal(res.results.length, 4);
    assert.equal(res.results[0].id, "profile-nantes-design");
    assert.deepEqual(res.results[0].metadata, kept(STRIDE_PROFILES[2]));
    for (let i = 1; i < res.results.length; i++) {
      assert.ok(res.results[i - 1].score >= res.results[i].score, "results are ordered by score");
    }

    // Array membership and a numeric range on profile metadata.
    const pythonistas = await run("search", {
      index: "student_profiles",
      query: "student who can code",
      filter: { skills: { $in: ["python"] } },
    });
    assert.deepEqual(sortedIds(pythonistas), ["profile-lyon-cs", "profile-toulouse-data"]);
    const comfortable = await run("search", {
      index: "student_profiles",
      query: "student with savings",
      filter: { $and: [{ monthlyMargin: { $gte: 100 } }, { city: { $ne: "Lyon" } }] },
    });
    assert.deepEqual(sortedIds(comfortable), ["profile-nantes-design", "profile-toulouse-data"]);
  });

  test("Stride's filters: {outcome: {$eq: 'helpful'}}, {userId: {$ne: 'u1'}}, $and", async () => {
    const helpful = await run("search", {
      index: "advice_history",
      query: "how can I get money for my laptop",
      top_k: 10,
      filter: { outcome: { $eq: "helpful" } },
    });
    assert.deepEqual(sortedIds(helpful), ["advice-1", "advice-3"]);
    assert.equal(helpful.results[0].id, "advice-1", "the laptop advice is the closest helpful one");
    assert.ok(helpful.results.every((r) => r.metadata.outcome === "helpful"));

    const others = await run("search", {
      index: "goals",
      query: "saving for travel",
      top_k: 10,
      filter: { userId: { $ne: "u1" } },
    });
    assert.deepEqual(sortedIds(others), ["goal-2", "goal-3", "goal-4"]);
    assert.equal(others.results[0].id, "goal-2", "the Erasmus goal is the closest to travel");

    const completedBigByOthers = await run("search", {
      index: "goals",
      query: "goal",
      top_k: 10,
      filter: { $and: [{ userId: { $ne: "u1" } }, { status: { $eq: "completed" } }, { goalAmount: { $gte: 1000 } }] },
    });
    assert.deepEqual(ids(completedBigByOthers), ["goal-4"]);
    assert.deepEqual(completedBigByOthers.results[0].metadata, kept(GOALS[3]));

    const none = await run("search", {
      index: "goals",
      query: "goal",
      filter: { $and: [{ userId: { $eq: "u1" } }, { status: { $eq: "completed" } }] },
    });
    assert.deepEqual(none.results, []);
  });

  test("update an advice's outcome (metadata merge): other fields kept, the filter now matches it", async () => {
    const upd = await run("update", { index: "advice_history", id: "advice-2", metadata: { outcome: "helpful" } });
    assert.deepEqual(upd, { index: "advice_history", id: "advice-2", updated: true, count: 1 });

    const fetched = await run("fetch", { index: "advice_history", ids: ["advice-2"] });
    assert.deepEqual(fetched.missing, []);
    assert.deepEqual(fetched.vectors[0].metadata, { ...kept(ADVICE[1]), outcome: "helpful" });
    assert.equal(fetched.vectors[0].vector.length, MODEL_DIM, "the vector is untouched");

    const helpful = await run("search", {
      index: "advice_history",
      query: "tutoring python to earn money",
      top_k: 10,
      filter: { outcome: { $eq: "helpful" } },
    });
    assert.deepEqual(sortedIds(helpful), ["advice-1", "advice-2", "advice-3"]);
    assert.equal(helpful.results[0].id, "advice-2");
    assert.deepEqual(helpful.results[0].metadata, { ...kept(ADVICE[1]), outcome: "helpful" });
  });

  test("re-embedding unchanged texts costs nothing; a changed text is re-embedded", async () => {
    const same = await run("embed", { index: "goals", documents: GOALS });
    assert.deepEqual(same.documents.map((d) => d.status), ["unchanged", "unchanged", "unchanged", "unchanged"]);

    const changed = { ...GOALS[0], text: "Goal: Gaming laptop. Amount: 1500 EUR.", metadata: { ...GOALS[0].metadata, goalAmount: 1500 } };
    const res = await run("embed", { index: "goals", documents: [changed], wait: true });
    assert.deepEqual(res.documents.map((d) => d.status), ["indexed"]);
    const fetched = await run("fetch", { index: "goals", ids: ["goal-1"] });
    assert.equal(fetched.vectors[0].metadata.goalAmount, 1500);
  });

  test("a server-side error is thrown as a MastraError carrying the server's message", async () => {
    await assert.rejects(
      tools.vectors_search.execute({ index: "no_such_index", query: "anything" }),
      (error) => {
        assert.match(error.message, /no_such_index/);
        assert.match(error.message, /does not exist/);
        return true;
      },
    );
    await assert.rejects(
      tools.vectors_update.execute({ index: "advice_history", id: "advice-404", metadata: { outcome: "helpful" } }),
      /advice-404/,
    );
    // The server is still there.
    const stats = await run("stats", {});
    assert.equal(stats.role, "owner");
  });

  test("disconnect() ends the server process", async () => {
    const { pid } = await run("stats", {});
    await mcp.disconnect();
    await waitFor(
      () => {
        try {
          process.kill(pid, 0);
          return false;
        } catch (error) {
          return error.code === "ESRCH";
        }
      },
      { timeoutMs: 30_000, what: `stride-vectors pid ${pid} to exit after disconnect()` },
    );
  });
});
