// Every MastraVector method of StrideVector against the real release binary and a real
// DuckDB file, with Mastra's argument shapes, result shapes, validation order and error
// messages (the ones Mastra's shared suite matches); then an owner and a relay at once, and
// the text extensions (embed, queryText, flush, stats).

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { MastraError } from "@mastra/core/error";

import { StrideVector } from "../dist/index.js";
import { BIN, freshStore, rejection, store, tempDir, unit, vectorOf } from "./helpers.mjs";

const DIM = 1536;

describe("StrideVector: every method", () => {
  const fixture = freshStore();

  test("indexes: create (idempotent, per-index metric), list, describe, delete", async () => {
    await fixture.vector.createIndex({ indexName: "lifecycle", dimension: DIM });
    await fixture.vector.createIndex({ indexName: "lifecycle", dimension: DIM });
    for (const metric of ["cosine", "euclidean", "dotproduct"]) {
      await fixture.vector.createIndex({ indexName: `m_${metric}`, dimension: 3, metric });
      assert.deepEqual(await fixture.vector.describeIndex({ indexName: `m_${metric}` }), { dimension: 3, count: 0, metric });
    }
    assert.deepEqual((await fixture.vector.listIndexes()).sort(), ["lifecycle", "m_cosine", "m_dotproduct", "m_euclidean"]);
    assert.match(
      await rejection(fixture.vector.createIndex({ indexName: "lifecycle", dimension: 512 })),
      /already exists with dimension 1536/,
    );
    for (const dimension of [-100, 0, 1.5]) {
      const error = await fixture.vector.createIndex({ indexName: "lifecycle", dimension }).catch((e) => e);
      assert.ok(error instanceof MastraError, String(error));
      assert.match(error.message, /dimension must be a positive integer/);
      assert.equal(error.id, "MASTRA_VECTOR_STRIDE_CREATE_INDEX_INVALID_DIMENSION");
    }
    await fixture.vector.deleteIndex({ indexName: "lifecycle" });
    assert.ok(!(await fixture.vector.listIndexes()).includes("lifecycle"));
    for (const call of [
      () => fixture.vector.query({ indexName: "lifecycle", queryVector: unit(0, DIM) }),
      () => fixture.vector.upsert({ indexName: "lifecycle", vectors: [unit(0, DIM)] }),
      () => fixture.vector.describeIndex({ indexName: "lifecycle" }),
      () => fixture.vector.deleteVectors({ indexName: "lifecycle", filter: { test: true } }),
    ]) {
      assert.match(await rejection(call()), /index "lifecycle" does not exist/);
    }
  });

  test("upsert: generated ids, caller ids kept exactly, a repeated id replaces, deleteFilter", async () => {
    await fixture.vector.createIndex({ indexName: "rows", dimension: DIM });
    const generated = await fixture.vector.upsert({ indexName: "rows", vectors: [vectorOf(1, DIM), vectorOf(2, DIM)] });
    assert.equal(generated.length, 2);
    assert.ok(generated.every((id) => /^[0-9a-f-]{36}$/.test(id)));
    const ids = ["1000", "5c56c793-69f3-4fbf-87e6-c4bf54c28c26", "urn:uuid:F9168C5E-CEB2-4faa-B6BF-329BF39FA1E4"];
    const given = await fixture.vector.upsert({
      indexName: "rows",
      ids,
      vectors: ids.map((_, i) => vectorOf(3 + i, DIM)),
      metadata: ids.map((_, i) => ({ n: i, source_id: "doc.pdf" })),
    });
    assert.deepEqual(given, ids);
    assert.equal((await fixture.vector.describeIndex({ indexName: "rows" })).count, 5);
    await fixture.vector.upsert({ indexName: "rows", ids: ["1000"], vectors: [vectorOf(9, DIM)], metadata: [{ n: 9 }] });
    assert.equal((await fixture.vector.describeIndex({ indexName: "rows" })).count, 5);
    // Re-index doc.pdf: its two remaining rows go, in the same transaction as the new one.
    await fixture.vector.upsert({
      indexName: "rows",
      ids: ["fresh"],
      vectors: [vectorOf(4, DIM)],
      metadata: [{ source_id: "doc.pdf", content: "new" }],
      deleteFilter: { source_id: "doc.pdf" },
    });
    const docs = await fixture.vector.query({ indexName: "rows", queryVector: vectorOf(4, DIM), topK: 10, filter: { source_id: "doc.pdf" } });
    assert.deepEqual(docs.map((d) => d.id), ["fresh"]);
    assert.equal((await fixture.vector.describeIndex({ indexName: "rows" })).count, 4);
  });

  test("upsert refuses what JSON would hide, by position", async () => {
    for (const [params, pattern] of [
      [{ vectors: [] }, /vectors must be a non-empty array/],
      [{ vectors: [[]] }, /vectors\[0\] must be a non-empty array/],
      [{ vectors: ["not-an-array"] }, /vectors\[0\] must be a non-empty array/],
      [{ vectors: [[1, Number.NaN]] }, /vectors\[0\]\[1\]: NaN is not a finite number/],
      [{ vectors: [[Infinity]] }, /vectors\[0\]\[0\]: Infinity is not a finite number/],
      [{ vectors: [[1], [2]], metadata: [{}] }, /metadata has 1 entries for 2 vectors/],
      [{ vectors: [[1], [2]], ids: ["a", "b", "c"] }, /ids has 3 entries for 2 vectors/],
      [{ vectors: [new Array(512).fill(0.1)] }, /has 512 dimensions, the index has 1536/],
    ]) {
      assert.match(await rejection(fixture.vector.upsert({ indexName: "rows", ...params })), pattern, JSON.stringify(params).slice(0, 80));
    }
  });

  test("query: topK, includeVector, scores best first, zero vectors, wrong widths", async () => {
    await fixture.vector.createIndex({ indexName: "q", dimension: DIM });
    const ids = await fixture.vector.upsert({
      indexName: "q",
      vectors: [1, 2, 3, 4, 5].map((s) => vectorOf(s, DIM)),
      metadata: ["A", "A", "B", "B", "C"].map((category, i) => ({ category, value: i + 1 })),
    });
    const hits = await fixture.vector.query({ indexName: "q", queryVector: vectorOf(1, DIM), topK: 3 });
    assert.equal(hits.length, 3);
    assert.equal(hits[0].id, ids[0]);
    assert.ok(hits[0].score > 0.999);
    assert.ok(hits.every((h, i) => i === 0 || hits[i - 1].score >= h.score));
    assert.ok(hits.every((h) => h.vector === undefined && !("vector" in h)));
    const withVectors = await fixture.vector.query({ indexName: "q", queryVector: vectorOf(1, DIM), topK: 1000, includeVector: true });
    assert.equal(withVectors.length, 5);
    assert.ok(withVectors.every((h) => h.vector.length === DIM));
    assert.equal((await fixture.vector.query({ indexName: "q", queryVector: vectorOf(1, DIM), topK: 5.5 })).length, 5);
    for (const topK of [0, -5]) {
      assert.match(await rejection(fixture.vector.query({ indexName: "q", queryVector: vectorOf(1, DIM), topK })), /topK must be a positive number/);
    }
    assert.match(await rejection(fixture.vector.query({ indexName: "q", queryVector: new Array(768).fill(0.1) })), /768 dimensions/);
    assert.match(await rejection(fixture.vector.query({ indexName: "q" })), /queryVector \(or queryText\) is required/);
    // A zero vector is stored (Mastra's stores take it) and ranks last under cosine.
    const [zero] = await fixture.vector.upsert({ indexName: "q", vectors: [new Array(DIM).fill(0)] });
    const all = await fixture.vector.query({ indexName: "q", queryVector: vectorOf(1, DIM), topK: 10 });
    assert.equal(all.at(-1).id, zero);
    assert.equal(all.at(-1).score, -1);
    assert.deepEqual(await fixture.vector.query({ indexName: "q", queryVector: vectorOf(1, DIM), filter: { category: "none" } }), []);
  });

  test("updateVector by id and by filter: metadata replaced, the rest kept; Mastra's messages", async () => {
    await fixture.vector.createIndex({ indexName: "u", dimension: DIM });
    const [one] = await fixture.vector.upsert({ indexName: "u", vectors: [vectorOf(42, DIM)], metadata: [{ name: "original", count: 1 }] });
    await fixture.vector.updateVector({ indexName: "u", id: one, update: { metadata: { name: "updated", count: 2 } } });
    let [hit] = await fixture.vector.query({ indexName: "u", queryVector: vectorOf(42, DIM), topK: 1 });
    assert.deepEqual(hit.metadata, { name: "updated", count: 2 });
    assert.ok(hit.score > 0.99);
    await fixture.vector.updateVector({ indexName: "u", id: one, update: { vector: vectorOf(100, DIM) } });
    [hit] = await fixture.vector.query({ indexName: "u", queryVector: vectorOf(100, DIM), topK: 1 });
    assert.deepEqual(hit.metadata, { name: "updated", count: 2 });
    assert.ok(hit.score > 0.9999);

    await fixture.vector.upsert({
      indexName: "u",
      vectors: [1, 2, 3, 4].map((s) => vectorOf(s, DIM)),
      metadata: ["user_1", "user_1", "user_2", "user_2"].map((userId) => ({ userId, status: "active" })),
    });
    await fixture.vector.updateVector({ indexName: "u", filter: { userId: "user_1" }, update: { metadata: { userId: "user_1", status: "archived" } } });
    const rows = await fixture.vector.query({ indexName: "u", queryVector: vectorOf(2, DIM), topK: 10, filter: { userId: { $exists: true } } });
    const statuses = rows.map((r) => `${r.metadata.userId}:${r.metadata.status}`).sort();
    assert.deepEqual(statuses, ["user_1:archived", "user_1:archived", "user_2:active", "user_2:active"]);
    await fixture.vector.updateVector({ indexName: "u", filter: { userId: "nobody" }, update: { metadata: { x: 1 } } });
    // Opt-in merge: Stride's "mark this advice helpful" keeps the advice's text.
    // (`client`: reuse the connection the first store opened; its field is private to TS only.)
    const merging = new StrideVector({ id: "merging", client: fixture.vector.client, metadataUpdate: "merge" });
    await merging.updateVector({ indexName: "u", id: one, update: { metadata: { outcome: "helpful" } } });
    [hit] = await fixture.vector.query({ indexName: "u", queryVector: vectorOf(100, DIM), topK: 1 });
    assert.deepEqual(hit.metadata, { name: "updated", count: 2, outcome: "helpful" });

    for (const [params, pattern] of [
      [{ id: one, filter: { a: 1 }, update: { metadata: {} } }, /mutually exclusive/],
      [{ update: { metadata: {} } }, /Either id or filter must be provided/],
      [{ id: one, update: {} }, /No updates provided/],
      [{ filter: {}, update: { metadata: { a: 1 } } }, /empty filter/i],
      [{ id: one, update: { vector: [1, 2] } }, /2 dimensions, the index has 1536/],
    ]) {
      assert.match(await rejection(fixture.vector.updateVector({ indexName: "u", ...params })), pattern, JSON.stringify(params));
    }
  });

  test("updateVector of an id that is not stored changes nothing, as DuckDBVector; `strict` makes it throw", async () => {
    await fixture.vector.createIndex({ indexName: "um", dimension: DIM });
    await fixture.vector.upsert({ indexName: "um", vectors: [vectorOf(1, DIM)], ids: ["kept"], metadata: [{ a: 1 }] });
    const before = await fixture.vector.query({ indexName: "um", queryVector: vectorOf(1, DIM), topK: 10 });
    assert.equal(await fixture.vector.updateVector({ indexName: "um", id: "missing", update: { metadata: { a: 2 } } }), undefined);
    assert.deepEqual(await fixture.vector.query({ indexName: "um", queryVector: vectorOf(1, DIM), topK: 10 }), before, "nothing changed, nothing added");
    assert.deepEqual(await fixture.vector.describeIndex({ indexName: "um" }), { dimension: DIM, count: 1, metric: "cosine" });
    const strict = new StrideVector({ id: "strict", client: fixture.vector.client, strict: true });
    assert.match(await rejection(strict.updateVector({ indexName: "um", id: "missing", update: { metadata: { a: 2 } } })), /no vector with id "missing" in index "um"/);
    // A missing index is still an error, as DuckDBVector's UPDATE of a missing table is.
    assert.match(await rejection(fixture.vector.updateVector({ indexName: "nope", id: "x", update: { metadata: { a: 2 } } })), /index "nope" does not exist/);
  });

  test("deleteVector and deleteVectors by ids or filter; Mastra's messages", async () => {
    await fixture.vector.createIndex({ indexName: "d", dimension: DIM });
    const ids = await fixture.vector.upsert({
      indexName: "d",
      vectors: [1, 2, 3, 4, 5].map((s) => vectorOf(s, DIM)),
      metadata: ["A", "B", "C", "D", "E"].map((category) => ({ category })),
    });
    await fixture.vector.deleteVector({ indexName: "d", id: ids[0] });
    await fixture.vector.deleteVectors({ indexName: "d", ids: [ids[1], "nonexistent"] });
    await fixture.vector.deleteVectors({ indexName: "d", filter: { category: { $in: ["D"] } } });
    const left = await fixture.vector.query({ indexName: "d", queryVector: vectorOf(1, DIM), topK: 10 });
    assert.deepEqual(left.map((r) => r.metadata.category).sort(), ["C", "E"]);
    for (const [params, pattern] of [
      [{ ids: ["a"], filter: { a: 1 } }, /mutually exclusive/],
      [{}, /Either filter or ids must be provided/],
      [{ ids: [] }, /empty ids array/],
      [{ filter: {} }, /empty filter/],
    ]) {
      assert.match(await rejection(fixture.vector.deleteVectors({ indexName: "d", ...params })), pattern, JSON.stringify(params));
    }
  });

  test("a load bigger than one 16 MiB message is sent in parts", async () => {
    await fixture.vector.createIndex({ indexName: "huge", dimension: DIM });
    // 700 x 1536 full-precision numbers: about 20 MiB of JSON.
    let x = 1;
    const vectors = Array.from({ length: 700 }, () =>
      Array.from({ length: DIM }, () => ((x = (x * 48271) % 2147483647) / 2147483647) - 0.5),
    );
    const ids = await fixture.vector.upsert({ indexName: "huge", vectors });
    assert.equal(ids.length, 700);
    assert.equal((await fixture.vector.describeIndex({ indexName: "huge" })).count, 700);
    const [hit] = await fixture.vector.query({ indexName: "huge", queryVector: vectors[699], topK: 1 });
    assert.equal(hit.id, ids[699]);
    await fixture.vector.deleteIndex({ indexName: "huge" });
  });

  test("1000 vectors in one call, then 10 concurrent upserts and queries: nothing lost", async () => {
    await fixture.vector.createIndex({ indexName: "big", dimension: DIM });
    const ids = await fixture.vector.upsert({
      indexName: "big",
      vectors: Array.from({ length: 1000 }, (_, i) => vectorOf(i, DIM)),
      metadata: Array.from({ length: 1000 }, (_, i) => ({ batch: "large", index: i })),
    });
    assert.equal(new Set(ids).size, 1000);
    assert.equal((await fixture.vector.describeIndex({ indexName: "big" })).count, 1000);
    await fixture.vector.deleteVectors({ indexName: "big", filter: { batch: "large", index: { $lt: 500 } } });
    assert.equal((await fixture.vector.describeIndex({ indexName: "big" })).count, 500);
    const results = await Promise.all([
      ...Array.from({ length: 10 }, (_, i) => fixture.vector.upsert({ indexName: "big", vectors: [vectorOf(i * 100, DIM)], metadata: [{ concurrent: true }] })),
      ...Array.from({ length: 10 }, () => fixture.vector.query({ indexName: "big", queryVector: vectorOf(7, DIM), topK: 5 })),
    ]);
    assert.ok(results.slice(0, 10).every((r) => r.length === 1));
    assert.ok(results.slice(10).every((r) => r.length === 5));
    assert.equal((await fixture.vector.describeIndex({ indexName: "big" })).count, 510);
  });
});

describe("StrideVector: an owner and a relay on one file", () => {
  test("two stores on one file: one owns it, the other relays; each sees the other's writes", async () => {
    const tmp = await tempDir();
    const first = store(tmp.db, "first");
    const second = store(tmp.db, "second");
    try {
      await first.createIndex({ indexName: "shared", dimension: 4 });
      const roles = [(await first.stats()).role, (await second.stats()).role].sort();
      assert.deepEqual(roles, ["owner", "relay"]);
      await Promise.all([
        first.upsert({ indexName: "shared", ids: ["a", "b"], vectors: [[1, 0, 0, 0], [0, 1, 0, 0]], metadata: [{ by: "first" }, { by: "first" }] }),
        second.upsert({ indexName: "shared", ids: ["c"], vectors: [[0, 0, 1, 0]], metadata: [{ by: "second" }] }),
      ]);
      await second.updateVector({ indexName: "shared", filter: { by: "first" }, update: { metadata: { by: "second" } } });
      await first.deleteVectors({ indexName: "shared", ids: ["c"] });
      await second.upsert({
        indexName: "shared",
        ids: ["d"],
        vectors: [[0, 0, 0, 1]],
        metadata: [{ by: "relay" }],
        deleteFilter: { by: "second" },
      });
      for (const s of [first, second]) {
        const hits = await s.query({ indexName: "shared", queryVector: [0, 0, 0, 1], topK: 10, filter: { by: { $ne: "nobody" } } });
        assert.deepEqual(hits.map((h) => [h.id, h.metadata.by]), [["d", "relay"]]);
        assert.match(await rejection(s.query({ indexName: "shared", queryVector: [1, 0, 0, 0], filter: { by: { $bad: 1 } } })), /unknown operator "\$bad"/);
      }
    } finally {
      await second.disconnect();
      await first.disconnect();
      await tmp.remove();
    }
  });

  test("an existing MCP client can be passed in, and a bad command fails with a clear error", async () => {
    const broken = new StrideVector({ id: "broken", command: `${BIN}-does-not-exist` });
    assert.match(await rejection(broken.listIndexes()), /could not start or reach the stride-vectors server/);
  });
});

describe("StrideVector: texts in (embed, queryText, flush, stats)", () => {
  test("keyword and hybrid queries over metadata.text, with Mastra's textQuery and vectorWeight", async () => {
    const tmp = await tempDir();
    const vector = store(tmp.db);
    try {
      await vector.createIndex({ indexName: "advice", dimension: 3 });
      // Rows written with raw vectors and metadata.text, as Stride writes them today.
      await vector.upsert({
        indexName: "advice",
        ids: ["rider", "cook", "tutor"],
        vectors: [
          [1, 0, 0],
          [0, 1, 0],
          [0, 0, 1],
        ],
        metadata: [
          { text: "Deliveroo rider evenings in Lyon", userId: "u1" },
          { text: "Cook at home to spend less", userId: "u1" },
          { text: "Tutor SQL and python to L3 students", userId: "u2" },
        ],
      });
      const keyword = await vector.query({ indexName: "advice", mode: "keyword", queryText: "deliveroo" });
      assert.deepEqual(keyword.map((h) => h.id), ["rider"]);
      assert.deepEqual(keyword[0].foundBy.keyword.rank, 1);
      assert.equal(keyword[0].metadata.text, "Deliveroo rider evenings in Lyon");

      // Mastra's names: a vector with textQuery is a hybrid search (RRF unless vectorWeight).
      const hybrid = await vector.query({ indexName: "advice", queryVector: [0, 0, 1], textQuery: "SQL", topK: 2 });
      assert.equal(hybrid[0].id, "tutor");
      assert.equal(hybrid[0].foundBy.vector.rank, 1);
      assert.equal(hybrid[0].foundBy.keyword.rank, 1);
      assert.ok(Math.abs(hybrid[0].score - 2 / 61) < 1e-9, `${hybrid[0].score}`);
      const weighted = await vector.query({ indexName: "advice", queryVector: [1, 0, 0], textQuery: "SQL", vectorWeight: 0.5, topK: 3 });
      assert.deepEqual(weighted.slice(0, 2).map((h) => h.score), [0.5, 0.5], "each list's best scores 1, halved");
      const filtered = await vector.query({ indexName: "advice", mode: "hybrid", textQuery: "rider SQL", queryVector: [1, 0, 0], filter: { userId: "u2" } });
      assert.deepEqual(filtered.map((h) => h.id), ["tutor"]);

      assert.match(await rejection(vector.query({ indexName: "advice", mode: "keyword" })), /a keyword search needs its text/);
      assert.match(
        await rejection(vector.query({ indexName: "advice", textQuery: "x", vectorWeight: 0.5, fusion: { method: "rrf" } })),
        /vectorWeight is fusion's shorthand/,
      );
      assert.match(
        await rejection(vector.query({ indexName: "advice", textQuery: "rider", queryVector: [1, 0, 0], vectorWeight: 2 })),
        /fusion.vector_weight: must be between 0 and 1, got 2/,
      );
      assert.match(await rejection(vector.query({ indexName: "advice", mode: "keyword", queryText: "the" })), /no words to search by/);
    } finally {
      await vector.disconnect();
      await tmp.remove();
    }
  });

  test("a long text is one result, by its best chunk; chunks: true gives every chunk", async () => {
    const tmp = await tempDir();
    const vector = store(tmp.db);
    try {
      const weeks = Array.from({ length: 40 }, (_, i) => `Week ${i + 1}: the rent in Lyon took ${400 + i} euros and groceries ${60 + i}.`);
      const text = `${weeks.join(" ")} Finally, the student sold an old bicycle to pay for a guitar.`;
      const r = await vector.embed({
        indexName: "notes",
        wait: true,
        documents: [
          { id: "diary", text, metadata: { userId: "u1" } },
          { id: "short", text: "Cook at home on weekdays", metadata: { userId: "u2" } },
        ],
      });
      assert.deepEqual(r.documents.map((d) => d.status), ["indexed", "indexed"]);
      const question = "selling a bicycle to buy a guitar";
      const hits = await vector.query({ indexName: "notes", queryText: question, topK: 2 });
      assert.deepEqual(hits.map((h) => h.id), ["diary", "short"], "one result per document");
      const { n, count } = hits[0].metadata.chunk;
      assert.ok(count >= 2, `several chunks: ${JSON.stringify(hits[0].metadata.chunk)}`);
      assert.equal(n, count - 1, "found by the chunk that holds the last sentence");
      assert.match(hits[0].metadata.text, /guitar/);
      const rows = await vector.query({ indexName: "notes", queryText: question, topK: 100, chunks: true, mode: "vector" });
      assert.equal(rows.filter((h) => h.id.startsWith("diary#")).length, count);
      assert.equal(rows[0].id, `diary#${n}`);
    } finally {
      await vector.disconnect();
      await tmp.remove();
    }
  });

  test("embed with wait, then query by text", async () => {
    const tmp = await tempDir();
    const vector = store(tmp.db);
    try {
      const r = await vector.embed({
        indexName: "advice_history",
        wait: true,
        documents: [
          { id: "cook", text: "Cook at home on weekdays to spend less on food", metadata: { userId: "u1" } },
          { id: "bike", text: "Ride a bike to campus instead of taking the bus", metadata: { userId: "u2" } },
        ],
      });
      assert.deepEqual(r.documents.map((d) => d.status), ["indexed", "indexed"]);
      const hits = await vector.query({ indexName: "advice_history", queryText: "saving money on meals", topK: 1 });
      assert.equal(hits[0].id, "cook");
      assert.ok(hits[0].foundBy?.vector, "a text query is hybrid by default");
      const byVector = await vector.query({ indexName: "advice_history", queryText: "saving money on meals", topK: 1, mode: "vector" });
      assert.equal(byVector[0].id, "cook");
      assert.equal(byVector[0].foundBy, undefined, "mode vector is sent as asked");
      const filtered = await vector.query({ indexName: "advice_history", queryText: "saving money on meals", topK: 5, filter: { userId: "u2" } });
      assert.deepEqual(filtered.map((h) => h.id), ["bike"]);
      assert.equal((await vector.describeIndex({ indexName: "advice_history" })).dimension, 384);
      const flushed = await vector.flush({ indexName: "advice_history" });
      assert.equal(flushed.pending, 0);
      assert.equal((await vector.stats()).role, "owner");
    } finally {
      await vector.disconnect();
      await tmp.remove();
    }
  });
});
