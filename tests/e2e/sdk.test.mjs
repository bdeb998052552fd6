// What this proves: with the official MCP TypeScript SDK (@modelcontextprotocol/sdk 1.32.2,
// `Client` + `StdioClientTransport`), two clients can each start their own stride-vectors on
// the same DuckDB file at once — the first process becomes the owner, the second a relay
// (checked with `stats`: role, pid/owner_pid, relays_connected) — and do Stride's two jobs
// concurrently with zero errors: the "frontend" calls `embed` on every profile edit (50 rapid
// edits over 5 profiles, through the relay, no `wait`) while the "agent" keeps calling `search`
// with a text `query` (through the owner). Every search answers with well-formed, committed
// data. After a `flush`, the stored state is exactly the last edit of each profile: its
// metadata (via `fetch`) and its vector (equal to the embedding of the last text), and `stats`
// shows the debounce coalesced superseded versions so fewer texts were embedded than sent.
// The SDK also validates every structuredContent against the tool's outputSchema.

import assert from "node:assert/strict";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { after, before, describe, test } from "node:test";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

import { BIN, MODEL_DIM, callTool, makeTempDir, modelEnv, removeDir, waitFor, waitForBinary } from "./helpers.mjs";

const PROFILE_COUNT = 5;
const EDITS_PER_PROFILE = 10; // 50 edits in all
const CITIES = ["Lyon", "Paris", "Nantes", "Toulouse", "Lille", "Bordeaux", "Rennes"];
const SKILLS = ["python", "sql", "react", "excel", "figma", "statistics", "accounting", "rust"];

/** Version `k` of profile `p`: text and Stride-shaped metadata that differ on every edit. */
function profileVersion(p, k) {
  const profileId = `profile-${p}`;
  const city = CITIES[(p + k) % CITIES.length];
  const skills = [SKILLS[(p + k) % SKILLS.length], SKILLS[(p * 3 + k + 1) % SKILLS.length]];
  const monthlyMargin = 50 + 25 * p + 10 * k;
  const diploma = k % 2 === 0 ? "Bachelor" : "Master";
  return {
    id: profileId,
    text: `Education: ${diploma}. Skills: ${skills.join(", ")}. Location ${city}. Monthly margin ${monthlyMargin}. Revision ${k}.`,
    metadata: { profileId, diploma, skills, monthlyMargin, city, revision: k },
  };
}

/** Starts a server through the SDK's own StdioClientTransport and connects a Client. */
async function connect(name, db) {
  const transport = new StdioClientTransport({ command: BIN, args: ["--db", db], env: modelEnv(), stderr: "pipe" });
  let stderr = "";
  transport.stderr.setEncoding("utf8").on("data", (t) => {
    stderr += t;
    if (stderr.length > 1_000_000) stderr = stderr.slice(-500_000);
  });
  const client = new Client({ name, version: "0.0.0" });
  await client.connect(transport, { timeout: 60_000 });
  const { tools } = await client.listTools(); // lets the SDK validate outputs against outputSchema
  assert.equal(tools.length, 12);
  return { client, transport, stderr: () => stderr, call: (tool, args) => callTool(client, tool, args) };
}

function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code !== "ESRCH";
  }
}

let dir;
let db;
let agent; // first process: the owner
let frontend; // second process: a relay

describe("two SDK clients, owner + relay on one file, frontend edits while the agent searches", { timeout: 900_000 }, () => {
  before(async () => {
    await waitForBinary();
    dir = await makeTempDir("sv-e2e-sdk-");
    db = path.join(dir, "stride-vectors.duckdb");
  });

  after(async () => {
    // Relay first: an owner that leaves first would hand the file over to the relay.
    await frontend?.client.close().catch(() => {});
    await agent?.client.close().catch(() => {});
    await removeDir(dir);
  });

  test("the first process owns the file, the second relays to it", async () => {
    agent = await connect("stride-agent", db);
    const ownerStats = await agent.call("stats", {});
    assert.equal(ownerStats.role, "owner");
    assert.equal(ownerStats.pid, agent.transport.pid);
    assert.equal(ownerStats.owner_pid, agent.transport.pid);
    assert.equal(path.resolve(ownerStats.database), path.resolve(db));

    frontend = await connect("stride-frontend", db);
    const relayStats = await frontend.call("stats", {});
    assert.equal(relayStats.role, "relay");
    assert.equal(relayStats.pid, frontend.transport.pid);
    assert.equal(relayStats.owner_pid, agent.transport.pid);
    assert.notEqual(relayStats.pid, relayStats.owner_pid);

    await waitFor(async () => (await agent.call("stats", {})).relays_connected === 1, { what: "relays_connected == 1" });
  });

  test("seed: the first version of every profile, embedded through the relay", async () => {
    const docs = Array.from({ length: PROFILE_COUNT }, (_, p) => profileVersion(p, 0));
    const res = await frontend.call("embed", { index: "student_profiles", documents: docs, wait: true });
    assert.deepEqual(new Set(res.documents.map((d) => d.status)), new Set(["indexed"]));
    const seen = await agent.call("describe_index", { index: "student_profiles" });
    assert.equal(seen.count, PROFILE_COUNT, "the owner sees what the relay wrote");
    assert.equal(seen.dimension, MODEL_DIM);
  });

  test("50 rapid embed edits (frontend, relay) while the agent searches (owner): zero errors", async (t) => {
    const before = await agent.call("stats", {});
    const errors = [];
    const statuses = new Map();
    let frontendDone = false;

    // Frontend: one sequential chain of edits per profile (a profile's edits come in order),
    // the chains running side by side; revision 0 is the seed, so edits are revisions 1..10.
    const frontendJob = (async () => {
      try {
        await Promise.all(
          Array.from({ length: PROFILE_COUNT }, async (_, p) => {
            for (let k = 1; k <= EDITS_PER_PROFILE; k++) {
              try {
                const res = await frontend.call("embed", { index: "student_profiles", documents: [profileVersion(p, k)] });
                const status = res.documents[0].status;
                statuses.set(status, (statuses.get(status) ?? 0) + 1);
              } catch (error) {
                errors.push(`embed profile-${p} rev ${k}: ${error.message}`);
              }
              await sleep((p * 7 + k * 3) % 11); // a few ms between keystrokes
            }
          }),
        );
        // No flush yet: let the debounce fire by itself while the agent keeps searching, so
        // the embeddings are committed under concurrent reads.
        await waitFor(async () => (await frontend.call("stats", {})).pending === 0, {
          timeoutMs: 120_000,
          intervalMs: 200,
          what: "the debounced edits to be embedded and committed",
        });
      } finally {
        frontendDone = true;
      }
    })();

    // Agent: text searches, with and without filters, until the frontend's edits are all
    // committed (bounded).
    const queries = [
      ["python developer looking for a laptop", undefined],
      ["design student in Nantes", { city: { $ne: "Paris" } }],
      ["student with a good monthly margin", { monthlyMargin: { $gte: 100 } }],
      ["accounting and excel", { $and: [{ diploma: { $in: ["Bachelor", "Master"] } }, { revision: { $gte: 0 } }] }],
    ];
    let searches = 0;
    const revisionsSeen = new Set();
    const agentJob = (async () => {
      const deadline = Date.now() + 300_000;
      while ((!frontendDone || searches < 20) && Date.now() < deadline) {
        const [query, filter] = queries[searches % queries.length];
        try {
          const res = await agent.call("search", { index: "student_profiles", query, top_k: PROFILE_COUNT, ...(filter ? { filter } : {}) });
          assert.ok(res.results.length >= 1, `search "${query}" found nothing`);
          for (const hit of res.results) {
            assert.match(hit.id, /^profile-[0-4]$/);
            assert.equal(hit.metadata.profileId, hit.id);
            // Only versions that were really sent can be seen, never a mix of two.
            const expected = profileVersion(Number(hit.id.at(-1)), hit.metadata.revision);
            assert.deepEqual(hit.metadata, { ...expected.metadata, text: expected.text });
            revisionsSeen.add(hit.metadata.revision);
            assert.ok(hit.score > -1 - 1e-6 && hit.score < 1 + 1e-6);
          }
        } catch (error) {
          errors.push(`search "${query}": ${error.message}`);
        }
        searches++;
      }
    })();

    await Promise.all([frontendJob, agentJob]);
    assert.deepEqual(errors, []);
    assert.ok(searches >= 20, `the agent searched ${searches} times`);
    const total = [...statuses.values()].reduce((a, b) => a + b, 0);
    assert.equal(total, PROFILE_COUNT * EDITS_PER_PROFILE);
    for (const status of statuses.keys()) assert.ok(["queued", "coalesced"].includes(status), `status ${status}`);

    // Flush through the relay (nothing should be left), then every committed edit is visible
    // to the next search, through the other process: all profiles at the last revision.
    const flushed = await frontend.call("flush", { index: "student_profiles", timeout_ms: 120_000 });
    assert.equal(flushed.pending, 0);
    const latest = await agent.call("search", { index: "student_profiles", query: "student", top_k: 10 });
    assert.deepEqual(latest.results.map((r) => r.metadata.revision), Array(PROFILE_COUNT).fill(EDITS_PER_PROFILE));

    // The stored state equals the last edit per profile, as seen from both processes.
    const ids = Array.from({ length: PROFILE_COUNT }, (_, p) => `profile-${p}`);
    const lastEdits = ids.map((_, p) => profileVersion(p, EDITS_PER_PROFILE));
    for (const who of [agent, frontend]) {
      const fetched = await who.call("fetch", { index: "student_profiles", ids });
      assert.deepEqual(fetched.missing, []);
      assert.deepEqual(
        fetched.vectors.map((v) => [v.id, v.metadata]),
        lastEdits.map((d) => [d.id, { ...d.metadata, text: d.text }]),
      );
    }

    // The stored vectors are the embeddings of the last texts: embed those texts afresh into
    // another index and compare.
    await agent.call("embed", { index: "reference_profiles", documents: lastEdits, wait: true });
    const stored = await agent.call("fetch", { index: "student_profiles", ids });
    const reference = await agent.call("fetch", { index: "reference_profiles", ids });
    for (let i = 0; i < ids.length; i++) {
      const a = stored.vectors[i].vector;
      const b = reference.vectors[i].vector;
      assert.equal(a.length, MODEL_DIM);
      const maxDiff = Math.max(...a.map((x, j) => Math.abs(x - b[j])));
      assert.ok(maxDiff < 1e-5, `${ids[i]}: stored vector differs from the last text's embedding by ${maxDiff}`);
    }
    // And a search by vector for the last text finds its own profile first with a score of
    // ~1; without a mode (hybrid) it is first in both lists.
    const self = await agent.call("search", { index: "student_profiles", query: lastEdits[3].text, top_k: 1, mode: "vector" });
    assert.equal(self.results[0].id, "profile-3");
    assert.ok(self.results[0].score > 0.9999, `score ${self.results[0].score}`);
    const hybrid = await agent.call("search", { index: "student_profiles", query: lastEdits[3].text, top_k: 1 });
    assert.equal(hybrid.mode, "hybrid");
    assert.equal(hybrid.results[0].id, "profile-3");
    assert.equal(hybrid.results[0].found_by.vector.rank, 1);
    assert.equal(hybrid.results[0].found_by.keyword.rank, 1);

    // Coalescing: superseded versions inside the debounce window were not embedded.
    const afterStats = await agent.call("stats", {});
    assert.equal(afterStats.pending, 0);
    assert.equal(afterStats.last_error, null);
    const accepted = afterStats.documents_accepted - before.documents_accepted;
    const coalesced = afterStats.documents_coalesced - before.documents_coalesced;
    const embedded = afterStats.texts_embedded - before.texts_embedded;
    assert.ok(accepted >= PROFILE_COUNT * EDITS_PER_PROFILE, `accepted ${accepted}`);
    assert.ok(coalesced > 0, `coalesced ${coalesced}: rapid edits of one id should coalesce`);
    // Texts embedded since `before`: the edits that survived coalescing, the 5 reference texts,
    // and one per text query (the agent's searches, the "latest" search and the self search).
    const embeddedEdits = embedded - PROFILE_COUNT - searches - 2;
    assert.ok(
      embeddedEdits < PROFILE_COUNT * EDITS_PER_PROFILE,
      `texts embedded for the edits (${embeddedEdits}) should be fewer than the edits sent (${PROFILE_COUNT * EDITS_PER_PROFILE})`,
    );
    t.diagnostic(
      `searches ${searches}, embed statuses ${JSON.stringify(Object.fromEntries(statuses))}, ` +
        `accepted ${accepted}, coalesced ${coalesced}, texts embedded ${embedded}, ` +
        `embedding calls ${afterStats.embedding_calls - before.embedding_calls}, ` +
        `revisions seen by the agent ${[...revisionsSeen].sort((a, b) => a - b).join(",")}`,
    );
    const relayView = await frontend.call("stats", {});
    assert.equal(relayView.role, "relay");
    assert.equal(relayView.owner_pid, agent.transport.pid);
  });

  test(
    "a relay answers with exactly the owner's numbers (vectors are exact f32 values)",
    async () => {
      const ids = Array.from({ length: PROFILE_COUNT }, (_, p) => `profile-${p}`);
      const raw = async (who) =>
        who.client.callTool({ name: "fetch", arguments: { index: "student_profiles", ids } });
      const fromOwner = await raw(agent);
      const fromRelay = await raw(frontend);
      const notF32 = (res) => res.structuredContent.vectors.flatMap((v) => v.vector).filter((x) => Math.fround(x) !== x).length;
      assert.equal(notF32(fromOwner), 0, "the owner's vectors are exact f32 values");
      assert.deepEqual(JSON.parse(fromRelay.content[0].text), fromOwner.structuredContent, "the relay's text copy");
      assert.equal(notF32(fromRelay), 0, "values in the relay's structuredContent that are not the stored f32");
      assert.deepEqual(fromRelay.structuredContent, fromOwner.structuredContent);
    },
  );

  test("closing both clients ends both processes (relay first, then the owner)", async () => {
    const relayPid = frontend.transport.pid;
    const ownerPid = agent.transport.pid;
    await frontend.client.close();
    await waitFor(() => !isAlive(relayPid), { timeoutMs: 30_000, what: "the relay to exit" });
    await waitFor(async () => (await agent.call("stats", {})).relays_connected === 0, { what: "relays_connected == 0" });
    await agent.client.close();
    await waitFor(() => !isAlive(ownerPid), { timeoutMs: 30_000, what: "the owner to exit" });
    frontend = undefined;
    agent = undefined;
  });
});
