// Mastra itself on top of StrideVector: @mastra/rag's createVectorQueryTool answering a
// query, and @mastra/memory's semantic recall storing and recalling messages, both with a
// deterministic offline embedder (a bag of hashed words), against the real binary.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { RequestContext } from "@mastra/core/request-context";
import { LibSQLStore } from "@mastra/libsql";
import { Memory } from "@mastra/memory";
import { createVectorQueryTool } from "@mastra/rag";

import { freshStore } from "./helpers.mjs";

const DIM = 64;

/** Words hashed into DIM buckets, normalised: texts sharing words are close. */
function embedText(text) {
  const v = new Array(DIM).fill(0);
  for (const word of text.toLowerCase().match(/[a-z]+/g) ?? []) {
    let h = 2166136261;
    for (const c of word) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
    v[h % DIM] += 1;
  }
  const norm = Math.hypot(...v) || 1;
  return v.map((x) => x / norm);
}

/** An AI SDK v2 embedding model, offline. */
const embedder = {
  specificationVersion: "v2",
  provider: "test",
  modelId: "hashed-words",
  maxEmbeddingsPerCall: 256,
  supportsParallelCalls: true,
  async doEmbed({ values }) {
    return { embeddings: values.map(embedText) };
  },
};

describe("Mastra on StrideVector", () => {
  const fixture = freshStore();

  test("createVectorQueryTool answers a query, with a filter", async () => {
    await fixture.vector.createIndex({ indexName: "advice", dimension: DIM });
    const docs = [
      ["cook", "cook dinner at home to spend less money on food", "u1"],
      ["bike", "ride a bike to campus instead of the bus", "u1"],
      ["tutor", "tutor other students for extra money on weekends", "u2"],
    ];
    await fixture.vector.upsert({
      indexName: "advice",
      ids: docs.map((d) => d[0]),
      vectors: docs.map((d) => embedText(d[1])),
      metadata: docs.map(([, text, userId]) => ({ text, userId })),
    });
    const tool = createVectorQueryTool({ vectorStore: fixture.vector, indexName: "advice", model: embedder, enableFilter: true });
    const context = { requestContext: new RequestContext() };
    // With enableFilter the tool's schema asks for a filter (a JSON string; "{}" is none).
    const answer = await tool.execute({ queryText: "spend less money on food", topK: 2, filter: "{}" }, context);
    assert.ok(!answer.error, JSON.stringify(answer));
    assert.equal(answer.sources[0].id, "cook");
    assert.match(answer.relevantContext[0].text, /cook dinner/);
    const filtered = await tool.execute({ queryText: "money", topK: 3, filter: JSON.stringify({ userId: "u2" }) }, context);
    assert.deepEqual(filtered.sources.map((s) => s.id), ["tutor"]);
  });

  test("Memory's semantic recall stores and recalls through StrideVector", async () => {
    const memory = new Memory({
      storage: new LibSQLStore({ id: "memory", url: `file:${fixture.tmp.dir}/memory.db` }),
      vector: fixture.vector,
      embedder,
      options: { lastMessages: 1, semanticRecall: { topK: 1, messageRange: 0, scope: "thread" } },
    });
    const thread = await memory.saveThread({
      thread: { id: "t1", resourceId: "student-1", title: "budget", createdAt: new Date(), updatedAt: new Date() },
    });
    const texts = [
      "My rent is 600 euros a month",
      "I love pizza but it is expensive",
      "My bike was stolen last week",
      "What should I do this weekend?",
    ];
    await memory.saveMessages({
      messages: texts.map((text, i) => ({
        id: `m${i}`,
        role: "user",
        threadId: thread.id,
        resourceId: "student-1",
        createdAt: new Date(Date.UTC(2026, 0, 1, 0, i)),
        content: { format: 2, parts: [{ type: "text", text }] },
      })),
    });
    const indexes = await fixture.vector.listIndexes();
    assert.ok(indexes.some((i) => i.startsWith("memory_messages")), String(indexes));
    const recalled = await memory.recall({ threadId: thread.id, resourceId: "student-1", vectorSearchString: "pizza is expensive" });
    const recalledTexts = recalled.messages.map((m) => m.content.parts.map((p) => p.text).join(""));
    assert.ok(recalledTexts.includes("I love pizza but it is expensive"), JSON.stringify(recalledTexts));
    // The last message comes from lastMessages; the pizza one only from the vector search.
    assert.ok(recalledTexts.includes("What should I do this weekend?"));
    assert.ok(!recalledTexts.includes("My bike was stolen last week"), JSON.stringify(recalledTexts));
  });
});
