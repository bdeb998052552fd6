// Mastra's filter semantics through StrideVector.query, case by case, against the real
// binary: the behaviours Mastra's shared vector-store suite (createVectorTestSuite) holds
// every store to, on a product catalogue with one row ("I") that has a null price, an empty
// tag list and no rating, description or reviews. Expected rows are exact sets, computed by
// hand from the documented rules: SQL's three-valued logic for negations (a condition on a
// missing or null field is unknown, and so is its negation), `$exists` and null tests
// two-valued, empty `$and`/`$nor` true and `$or` false, `$elemMatch` on one element.

import assert from "node:assert/strict";
import { describe, test } from "node:test";

import { freshStore, rejection, unit, vectorOf } from "./helpers.mjs";

const DIM = 32;
const INDEX = "products";
const PRODUCTS = {
  A: { price: 10, rating: 4.5, category: "electronics", tags: ["new", "sale"], available: true },
  B: { price: 25, rating: 3.8, category: "electronics", tags: ["featured"], available: true },
  C: { price: 50, rating: 4.9, category: "home", tags: ["premium", "sale"], available: false },
  D: { price: 100, rating: 4.2, category: "home", tags: ["premium"], available: true },
  E: { price: 15, rating: 3.5, category: "books", tags: ["new"], available: true },
  F: { price: 75, rating: 4.7, category: "electronics", tags: ["featured", "premium"], available: true },
  G: {
    price: 30, rating: 4.1, category: "books", tags: ["sale"], available: false, description: "Classic novel",
    reviews: [{ score: 3, author: "user1" }, { score: 5, author: "user2" }],
  },
  H: {
    price: 200, rating: 4.95, category: "home", tags: ["premium", "luxury"], available: true,
    reviews: [{ score: 5, author: "user3" }, { score: 4, author: "user4" }, { score: 5, author: "user5" }],
  },
  I: { price: null, category: "test", tags: [], available: true },
};
const ALL = Object.keys(PRODUCTS).join("");

/** [filter, expected rows as letters]. */
const CASES = [
  // Comparisons
  [{ price: { $gt: 50 } }, "DFH"],
  [{ price: { $gte: 50 } }, "CDFH"],
  [{ price: { $lt: 30 } }, "ABE"],
  [{ price: { $lte: 30 } }, "ABEG"],
  [{ price: { $gte: 20, $lte: 80 } }, "BCFG"],
  [{ rating: { $gte: 4.5 } }, "ACFH"],
  // Negations: I's null price and missing rating are unknown, never matched
  [{ category: { $ne: "electronics" } }, "CDEGHI"],
  [{ available: { $ne: true } }, "CG"],
  [{ price: { $ne: 50 } }, "ABDEFGH"],
  [{ price: { $not: { $gt: 50 } } }, "ABCEG"],
  // Lists and arrays
  [{ category: { $in: ["electronics", "books"] } }, "ABEFG"],
  [{ category: { $nin: ["electronics", "books"] } }, "CDHI"],
  [{ price: { $in: [10, 25, 50] } }, "ABC"],
  [{ tags: { $all: ["premium", "sale"] } }, "C"],
  [{ tags: { $in: ["luxury"] } }, "H"],
  // Existence and null
  [{ description: { $exists: true } }, "G"],
  [{ description: { $exists: false } }, "ABCDEFHI"],
  [{ price: { $eq: null } }, "I"],
  [{ price: { $ne: null } }, "ABCDEFGH"],
  // Patterns: RE2 takes the inline (?i) flag
  [{ name: { $regex: "^Product [A-C]" } }, "ABC"],
  [{ category: { $regex: "(?i)ELECTRONICS" } }, "ABF"],
  [{ category: { $regex: "electronics", $options: "i" } }, "ABF"],
  [{ description: { $contains: "novel" } }, "G"],
  // Several fields: AND
  [{ price: { $gte: 20, $lte: 100 }, rating: { $gte: 4.0 } }, "CDFG"],
  [{ category: { $in: ["electronics", "home"] }, price: { $lt: 100 } }, "ABCF"],
  [{ category: { $ne: "books" }, description: { $exists: false } }, "ABCDFHI"],
  // $nor
  [{ $nor: [{ category: "electronics" }, { category: "books" }] }, "CDHI"],
  [{ $nor: [{ price: { $lt: 20 } }, { price: { $gt: 100 } }] }, "BCDFG"],
  [{ $nor: [{ $or: [{ category: "electronics" }, { price: { $gt: 150 } }] }] }, "CDEG"],
  [{ $nor: [{ $and: [{ category: "electronics" }, { available: true }] }] }, "CDEGHI"],
  [{ $nor: [] }, ALL],
  // $not, at field level and at the top
  [{ category: { $not: { $in: ["electronics", "books"] } } }, "CDHI"],
  [{ $not: { $and: [{ price: { $gt: 50 } }, { rating: { $gte: 4.5 } }] } }, "ABCDEG"],
  [{ $not: { $or: [{ category: "electronics" }, { available: false }] } }, "DEHI"],
  [{ available: { $not: { $eq: false } } }, "ABDEFHI"],
  [{ price: { $not: { $gte: 20, $lte: 80 } } }, "ADEH"],
  [{ category: { $not: { $ne: "electronics" } } }, "ABF"],
  [{ rating: { $not: { $lt: 4.0 } } }, "ACDFGH"],
  [{ $not: { $and: [{ category: "home" }, { price: { $gte: 100 } }] } }, "ABCEFGI"],
  [{ $or: [{ price: { $not: { $gt: 50 } } }, { rating: { $not: { $lt: 4.5 } } }] }, "ABCEFGH"],
  [{ description: { $not: { $exists: true } } }, "ABCDEFHI"],
  [{ tags: { $not: { $all: ["premium"] } } }, "ABEGI"],
  // $elemMatch: every condition on the same element
  [{ reviews: { $elemMatch: { score: { $gte: 5 } } } }, "GH"],
  [{ reviews: { $elemMatch: { author: "user3" } } }, "H"],
  [{ reviews: { $elemMatch: { score: { $gte: 4 }, author: { $in: ["user3", "user4", "user5"] } } } }, "H"],
  [{ reviews: { $elemMatch: { score: { $gt: 10 } } } }, ""],
  [{ reviews: { $elemMatch: { score: { $gte: 3, $lte: 4 } } } }, "GH"],
  [{ reviews: { $elemMatch: { score: 3, author: "user2" } } }, ""],
  [{ tags: { $elemMatch: { $in: ["luxury", "new"] } } }, "AEH"],
  // $size
  [{ tags: { $size: 2 } }, "ACFH"],
  [{ reviews: { $size: 3 } }, "H"],
  [{ tags: { $size: 0 } }, "I"],
  // Logical operators beside fields, empty lists
  [{ $and: [{ category: { $in: ["electronics", "home"] } }], price: { $gte: 50 } }, "CDFH"],
  [{ $and: [] }, ALL],
  [{ $or: [] }, ""],
  [{ $and: [], category: "home" }, "CDH"],
  [{ $and: [{ $or: [] }] }, ""],
  // Mastra memory's prefix: the metadata object itself
  [{ "metadata.category": "books" }, "EG"],
];

describe("Mastra's filter semantics, case by case", () => {
  const fixture = freshStore(async (vector) => {
    await vector.createIndex({ indexName: INDEX, dimension: DIM });
    const names = Object.keys(PRODUCTS);
    await vector.upsert({
      indexName: INDEX,
      ids: names,
      vectors: names.map((_, i) => vectorOf(i + 1, DIM)),
      metadata: names.map((n) => ({ name: `Product ${n}`, ...PRODUCTS[n] })),
    });
  });

  for (const [filter, expected] of CASES) {
    test(JSON.stringify(filter), async () => {
      const hits = await fixture.vector.query({ indexName: INDEX, queryVector: unit(0, DIM), topK: 100, filter });
      const got = hits.map((h) => h.id).sort().join("");
      assert.equal(got, expected, `filter ${JSON.stringify(filter)}`);
      // Metadata comes back as stored: null stays null, absent stays absent.
      for (const hit of hits) {
        assert.deepEqual(hit.metadata, { name: `Product ${hit.id}`, ...PRODUCTS[hit.id] });
        assert.equal(hit.vector, undefined);
      }
    });
  }

  test("wrong filters are refused, naming the operator or field", async () => {
    for (const [filter, pattern] of [
      [{ value: { $invalidOperator: 10 } }, /unknown operator "\$invalidOperator" on field "value"/],
      [{ $invalidOperator: "value" }, /unknown operator "\$invalidOperator"/],
      [{ price: { $gt: [10, 20] } }, /"\$gt" on field "price" needs a number or a string/],
      [{ $not: {} }, /"\$not" needs a non-empty filter object/],
      [{ $and: "not-an-array" }, /"\$and" needs an array of filter objects/],
      [{ reviews: { $elemMatch: {} } }, /"\$elemMatch" on field "reviews" needs a non-empty object/],
    ]) {
      const message = await rejection(fixture.vector.query({ indexName: INDEX, queryVector: unit(0, DIM), filter }));
      assert.match(message, pattern, JSON.stringify(filter));
      assert.match(message, /unsupported|invalid|unknown.*operator|needs/i);
    }
  });

  test("a filter nested 100 deep is refused at once, and the server keeps serving", async () => {
    let filter = { category: "electronics" };
    for (let i = 0; i < 100; i++) filter = { $and: [filter, { price: { $gte: 0 } }] };
    const started = Date.now();
    const message = await rejection(fixture.vector.query({ indexName: INDEX, queryVector: unit(0, DIM), filter }));
    // The transport refuses messages nested past 120 levels before any filter is read.
    assert.match(message, /nested deeper than 32 levels|nests arrays and objects 205 levels deep/);
    assert.ok(Date.now() - started < 10_000);
    const hits = await fixture.vector.query({ indexName: INDEX, queryVector: unit(0, DIM), filter: { category: "books" } });
    assert.equal(hits.length, 2);
  });
});
