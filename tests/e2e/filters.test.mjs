// What this proves: the metadata filter language means what src/store/filter/mod.rs documents,
// on both search engines. A seeded generator writes ~300 rows of deliberately awkward metadata
// (missing fields, one field holding numbers, floats, negatives, strings, ISO dates,
// numeric-looking strings, booleans and null across rows; arrays of strings, of numbers, of
// mixed values, empty, nested, holding objects (reviews with a score and an author); nested
// objects reached with dotted paths; a key named `metadata`; rows with empty metadata) into a
// dim-8 cosine index through `upsert`, then runs a few hundred random filters (every operator:
// $eq $ne $gt $gte $lt $lte $in $nin $exists $contains $all $size $regex/$options $not
// $elemMatch (on elements themselves and on objects) $and $or $nor, empty $and/$or/$nor,
// implicit equality, dotted paths, `metadata.`-prefixed paths, nesting a few levels) plus
// Stride's own filters as fixed cases. Each filter is searched with top_k = every row, once
// with `engine: "memory"` and once with `engine: "duckdb"`, and evaluated by a small reference
// evaluator below, written from the documented semantics: type-strict comparisons, an array
// matches when any element does, and three-valued logic (a condition on a missing or null
// field is unknown, and so is its negation: $ne, $nin, $not and $nor never match a row without
// the field, except for the conditions that are never unknown: $exists, `{f: null}`, $ne: null,
// $in/$nin lists holding null, and the constants $in: [], $nin: [], $all: [], $contains: []);
// a row matches when the whole filter is true. The three id sets must agree; the engines must
// agree on order and scores (within 1e-5, also against scores computed here); equal scores are
// ordered by id. Some generated filters are invalid on purpose: the server must reject
// (isError) exactly the ones the validity rules below (the parser's rules) reject. For half of
// the filters a smaller top_k must give exactly the first hits of the full answer, on each
// engine. Last, a filter string with a lone UTF-16 surrogate must be answered, not dropped (raw
// stdio).
//
// Reproducible: FILTER_SEED=<n or text> picks the data and the filters (default below, printed
// on failure), FILTER_CASES=<n> the number of random filters, FILTER_ROWS=<n> the rows.
// When the server and the evaluator disagree, the failure names the seed, the filter, the
// smallest clause that still disagrees and the rows' metadata (expected vs got).

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import path from "node:path";
import { createInterface } from "node:readline";
import { after, before, describe, test } from "node:test";

import { BIN, ToolError, cosine, makeTempDir, removeDir, startServer, waitFor, waitForBinary } from "./helpers.mjs";

// ---------------------------------------------------------------------------------------------
// Settings

const DEFAULT_SEED = 20260123;
const SEED = parseSeed(process.env.FILTER_SEED);
const CASES = intEnv("FILTER_CASES", 300);
const ROW_COUNT = Math.min(intEnv("FILTER_ROWS", 300), 1000);
const DIM = 8;
const INDEX = "filter_fuzz";
const SCORE_TOLERANCE = 1e-5;
/** Share of random filters given an invalid clause on purpose. */
const INVALID_RATE = 0.12;
/** Deepest nesting of $and/$or/$nor/$not the generator writes. */
const MAX_LOGIC_DEPTH = 4;
/** Disagreeing filters to drill down to their smallest disagreeing clause. */
const DRILL_LIMIT = 6;

function intEnv(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name} must be a positive integer, got ${raw}`);
  return n;
}

/** A 32-bit seed from FILTER_SEED: a number as is, any other text hashed (FNV-1a). */
function parseSeed(raw) {
  if (raw === undefined || raw === "") return DEFAULT_SEED;
  if (/^\d+$/.test(raw)) return Number(BigInt(raw) % 4294967296n);
  let h = 0x811c9dc5;
  for (const ch of raw) {
    h ^= ch.codePointAt(0);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

// ---------------------------------------------------------------------------------------------
// Seeded PRNG (mulberry32): same seed, same data, same filters, on every machine.

class Rng {
  constructor(seed) {
    this.state = seed >>> 0;
  }
  /** A float in [0, 1). */
  float() {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo, hi) {
    return lo + Math.floor(this.float() * (hi - lo + 1));
  }
  chance(p) {
    return this.float() < p;
  }
  pick(items) {
    return items[Math.floor(this.float() * items.length)];
  }
  /** `choices` is [[weight, value or () => value], ...]. */
  weighted(choices) {
    const total = choices.reduce((sum, [w]) => sum + w, 0);
    let x = this.float() * total;
    for (const [w, value] of choices) {
      x -= w;
      if (x < 0) return typeof value === "function" ? value() : value;
    }
    const last = choices[choices.length - 1][1];
    return typeof last === "function" ? last() : last;
  }
  /** `n` distinct items, in a random order. */
  sample(items, n) {
    const pool = [...items];
    const out = [];
    while (out.length < n && pool.length > 0) out.push(pool.splice(Math.floor(this.float() * pool.length), 1)[0]);
    return out;
  }
  /** `n` values from `make()`. */
  times(n, make) {
    return Array.from({ length: n }, () => make());
  }
}

// ---------------------------------------------------------------------------------------------
// Value pools, shared by the data and the filters so that filters hit often.

const NUMBERS = [
  -1000, -10, -2.5, -1, -0.75, 0, 0.1, 0.5, 1, 2, 2.5, 3, 5, 10, 42, 99.99, 100, 499.99, 500, 800, 1000, 1200.5,
  3000, 0.001, 1e19, -9007199254740991, 1e300, 1e20, -1e19, 5e-324, 1.7976931348623157e308,
];
const STRINGS = [
  "", "a", "b", "x", "y", "z", "A", "abc", "800", "5", "10", "-1", "0", "1e3", "true", "false", "null",
  "2025-12-31", "2026-01-01", "2026-01-10", "2026-01-10T08:00:00Z", "2026-02-01", "helpful", "Helpful", "u1",
  "café", "CAFÉ", "日本", "🙂", "ｆ", "Hello World", "hello_world", "100% sure", 'q"d', "back\\slash", "t\tb",
  "a\u0000b",
];
const ISO_DATES = [
  "2025-12-30", "2025-12-31", "2025-12-31T23:59:59Z", "2026-01-01", "2026-01-01T00:00:00Z", "2026-01-10",
  "2026-01-10T08:00:00Z", "2026-02-01", "2026-10-02T09:00:00Z", "2027-01-01",
];
const OUTCOMES = ["helpful", "neutral", "unhelpful", "Helpful"];
const USERS = ["u1", "u2", "u3", "u4", "U1"];
const STATUSES = ["completed", "active", "paused"];
const TAGS = ["x", "y", "z", "python", "sql", "react", "1", "", "X"];
const NUMERIC_STRINGS = ["800", "500", "1000", "1200.5", "-1", "0", "1e3"];
const TITLES = [
  "Hello World", "hello_world", "Hello 100% World", "café au lait", "CAFÉ NOIR", "line1\nline2", "Line1\nline2\n",
  "日本語のテキスト", "smile 🙂", "ｆｕｌｌ", "800", "a.b*c", "u1", "",
];
const REGEXES = [
  "^u[12]$", "^hel", "help", "^H", "ful$", "^2026-01", "^\\d+$", "^-?\\d+(\\.\\d+)?$", "o W", "^$", "a|b",
  "^[A-Z]", ".", "é", "^caf", "CAF", "line2$", "^line2", "1.*2", "x+", "^(u1|u3)$", "[0-9]{4}-0[12]", "T\\d\\d:",
  "🙂", "^.$", "^.{3}$", "%", "_w", "\\.", "^\\s*$", "(?:py|sq)",
];
const REGEX_OPTIONS = ["", "i", "m", "s", "im", "is", "ms", "ims", "si"];
const THREADS = ["t1", "t2", "t3"];
/** Review scores: mostly integers 1..5, a few halves and numeric-looking strings. */
const REVIEW_SCORES = [1, 2, 3, 4, 5, 3.5, 4.5, "4", "5"];

function scalarAny(r) {
  return r.weighted([
    [40, () => r.pick(NUMBERS)],
    [40, () => r.pick(STRINGS)],
    [12, () => r.chance(0.5)],
    [8, null],
  ]);
}

// ---------------------------------------------------------------------------------------------
// Data

/** Metadata fields: how often each is absent and what it holds when present. */
const FIELDS = [
  ["outcome", 0.25, (r) => r.weighted([
    [70, () => r.pick(OUTCOMES)], [5, null], [5, 1], [8, () => r.sample(OUTCOMES, r.int(0, 2))], [4, true],
    [8, () => scalarAny(r)],
  ])],
  ["userId", 0.15, (r) => r.weighted([
    [80, () => r.pick(USERS)], [8, () => r.int(1, 2)], [5, null], [7, () => r.sample(USERS, r.int(1, 2))],
  ])],
  ["status", 0.2, (r) => r.weighted([[85, () => r.pick(STATUSES)], [5, null], [10, () => r.sample(STATUSES, 2)]])],
  ["goalAmount", 0.25, (r) => r.weighted([
    [60, () => r.pick(NUMBERS)], [15, () => r.pick(NUMERIC_STRINGS)], [5, null], [5, () => r.chance(0.5)],
    [15, () => r.times(r.int(0, 3), () => r.pick(NUMBERS))],
  ])],
  ["createdAt", 0.2, (r) => r.weighted([
    [75, () => r.pick(ISO_DATES)], [8, () => r.pick([1767225600000, 0, 20260101])], [5, null],
    [12, () => r.sample(ISO_DATES, r.int(0, 3))],
  ])],
  ["tags", 0.2, (r) => r.weighted([
    [45, () => r.sample(TAGS, r.int(0, 4))],
    [15, () => r.times(r.int(1, 4), () => scalarAny(r))],
    [10, () => r.pick(TAGS)],
    [5, () => [[r.pick(TAGS), r.pick(TAGS)], r.pick(TAGS)]],
    [8, () => [{ name: r.pick(["a", "b"]) }, r.pick(TAGS)]],
    [5, null],
    [5, () => r.pick(NUMBERS)],
    [7, () => []],
  ])],
  ["nums", 0.3, (r) => r.weighted([
    [60, () => r.times(r.int(1, 4), () => r.pick(NUMBERS))], [20, () => r.pick(NUMBERS)], [10, () => []],
    [10, () => r.pick(NUMERIC_STRINGS)],
  ])],
  ["flag", 0.3, (r) => r.weighted([[70, () => r.chance(0.5)], [10, () => r.pick(["true", "false"])], [10, () => r.int(0, 1)], [10, null]])],
  ["title", 0.25, (r) => r.weighted([[80, () => r.pick(TITLES)], [20, () => scalarAny(r)]])],
  ["n", 0.2, (r) => r.weighted([
    [60, () => scalarAny(r)], [20, () => r.times(r.int(0, 3), () => scalarAny(r))], [10, () => ({ x: scalarAny(r) })],
    [10, null],
  ])],
  ["meta", 0.25, (r) => r.weighted([[70, () => metaObject(r)], [10, () => scalarAny(r)], [10, () => [{ a: r.pick(NUMBERS) }, { a: r.pick(STRINGS) }]], [5, null], [5, () => ({})]])],
  ["user-id", 0.6, (r) => r.pick(USERS)],
  ["_score", 0.5, (r) => r.weighted([[60, () => r.pick(NUMBERS)], [40, () => r.pick(NUMERIC_STRINGS)]])],
  // A key with a dot in it is not the path "dotted.key" (that is `dotted` then `key`).
  ["dotted.key", 0.8, (r) => r.pick(TAGS)],
  ["dotted", 0.7, (r) => r.weighted([[80, () => ({ key: r.pick(TAGS) })], [20, () => r.pick(TAGS)]])],
  // Arrays of objects, for $elemMatch on objects; some arrays hold a null, a scalar or an array.
  ["reviews", 0.3, (r) => r.weighted([
    [60, () => r.times(r.int(1, 4), () => review(r))],
    [8, () => [review(r), r.pick([null, "u1", 4, [review(r)], {}])]],
    [8, () => []],
    [7, () => review(r)], // an object, not an array
    [7, null],
    [5, () => r.pick(NUMBERS)],
    [5, () => r.times(r.int(1, 3), () => r.pick(REVIEW_SCORES))],
  ])],
  // Arrays of small numbers, for $elemMatch on the elements themselves ({$gte: 3, $lt: 5}).
  ["scores", 0.3, (r) => r.weighted([
    [60, () => r.times(r.int(1, 5), () => r.int(0, 6))],
    [10, () => r.times(r.int(1, 3), () => r.pick([r.int(0, 6), null, String(r.int(0, 6)), r.int(0, 12) / 2]))],
    [8, () => [[r.int(0, 6), r.int(0, 6)], r.int(0, 6)]],
    [7, () => []],
    [8, () => r.int(0, 6)],
    [7, null],
  ])],
  // `metadata.thread_id` names `thread_id`; a key named `metadata` is an ordinary key (its
  // `thread_id` is `metadata.metadata.thread_id`).
  ["thread_id", 0.3, (r) => r.weighted([[85, () => r.pick(THREADS)], [10, null], [5, () => r.sample(THREADS, 2)]])],
  ["metadata", 0.7, (r) => r.weighted([
    [70, () => ({ thread_id: r.pick(THREADS) })], [15, () => r.pick(THREADS)], [10, () => ({})], [5, null],
  ])],
];

/** A review: a score and an author, either sometimes missing or null. */
function review(r) {
  const out = {};
  if (r.chance(0.85)) out.score = r.weighted([[85, () => r.pick(REVIEW_SCORES)], [15, null]]);
  if (r.chance(0.85)) out.author = r.weighted([[90, () => r.pick(USERS)], [10, null]]);
  if (r.chance(0.3)) out.tags = r.sample(TAGS, r.int(0, 3));
  if (r.chance(0.2)) out.meta = { lvl: r.int(0, 3) };
  return out;
}

function metaObject(r) {
  const out = {};
  if (r.chance(0.7)) out.a = r.weighted([[45, () => r.pick(NUMBERS)], [45, () => r.pick(STRINGS)], [10, null]]);
  if (r.chance(0.6)) {
    out.b = r.weighted([
      [80, () => {
        const b = {};
        if (r.chance(0.8)) b.c = scalarAny(r);
        if (r.chance(0.3)) b.d = r.sample(TAGS, r.int(0, 3));
        return b;
      }],
      [20, () => scalarAny(r)],
    ]);
  }
  if (r.chance(0.4)) out.tags = r.sample(TAGS, r.int(0, 3));
  return out;
}

/** A nonzero vector of exact f32 values (multiples of 1/1024 in [-1, 1]). */
function randomVector(r) {
  for (;;) {
    const v = r.times(DIM, () => r.int(-1024, 1024) / 1024);
    if (v.some((x) => x !== 0)) return v;
  }
}

/**
 * The rows: `metadata` is what is sent (absent, null, {} or an object), `stored` what a
 * filter sees (always an object). About 5% reuse an earlier row's vector: exact score ties.
 */
function generateRows(seed, count) {
  const r = new Rng(seed);
  const rows = [];
  for (let i = 0; i < count; i++) {
    const id = `r${String(i).padStart(4, "0")}`;
    const vector = i > 0 && r.chance(0.05) ? [...r.pick(rows).vector] : randomVector(r);
    let metadata = {};
    for (const [name, absent, make] of FIELDS) {
      if (!r.chance(absent)) metadata[name] = make(r);
    }
    const row = { id, vector };
    // A few rows with empty metadata, sent in each of the three ways.
    const empty = i % 97 === 3 ? i % 3 : -1;
    if (empty === 0) metadata = undefined;
    else if (empty === 1) metadata = null;
    else if (empty === 2) metadata = {};
    if (metadata !== undefined) row.metadata = metadata;
    row.stored = metadata ?? {};
    rows.push(row);
  }
  return rows;
}

// ---------------------------------------------------------------------------------------------
// Filters

/** Filter paths and the operands that tend to hit them ([] = the general pools only). */
const PATHS = [
  ["outcome", [...OUTCOMES, null, 1, true]],
  ["userId", [...USERS, 1, 2]],
  ["status", STATUSES],
  ["goalAmount", [...NUMBERS, ...NUMERIC_STRINGS]],
  ["createdAt", [...ISO_DATES, 0, 1767225600000]],
  ["tags", TAGS],
  ["nums", NUMBERS],
  ["flag", [true, false, "true", 1, 0, null]],
  ["title", TITLES],
  ["n", []],
  ["n.x", []],
  ["meta", []],
  ["meta.a", [...NUMBERS, ...STRINGS]],
  ["meta.b", []],
  ["meta.b.c", []],
  ["meta.b.d", TAGS],
  ["meta.tags", TAGS],
  ["user-id", USERS],
  ["_score", [...NUMBERS, ...NUMERIC_STRINGS]],
  ["reviews", REVIEW_SCORES],
  ["scores", [0, 1, 2, 3, 4, 5, 6, 2.5, "3", null]],
  ["thread_id", THREADS],
  ["metadata", THREADS], // an ordinary key
  ["metadata.metadata.thread_id", THREADS], // the key `metadata`, then `thread_id`
  ["nope", []], // never present
  ["meta.b.c.d", []], // through a scalar
  ["tags.name", ["a", "b"]], // through an array of objects: a path does not walk into arrays
  ["reviews.score", REVIEW_SCORES], // likewise
  ["meta.missing", []],
  ["dotted.key", TAGS],
];
/** Paths no row (or hardly any) holds a value at: picked less often. */
const GHOST_PATHS = new Set(["nope", "meta.b.c.d", "tags.name", "reviews.score", "meta.missing", "n.x"]);
/** Arrays of objects and of numbers, where $elemMatch has the most to do: picked more often. */
const ELEMENT_MATCH_PATHS = new Map([["reviews", 12], ["scores", 10]]);
const PATH_WEIGHTS = PATHS.map(([path]) => [GHOST_PATHS.has(path) ? 1 : ELEMENT_MATCH_PATHS.get(path) ?? 5, path]);
/**
 * Paths inside the elements of an array, for $elemMatch's filters, and how often $elemMatch
 * there is a filter on the elements (else operators on each element itself).
 */
const ELEMENT_PATHS = new Map([
  ["reviews", [[6, "score"], [6, "author"], [2, "tags"], [2, "meta.lvl"], [1, "meta"], [1, "nope"]]],
  ["meta", [[5, "a"], [1, "b"], [1, "x"]]],
  ["tags", [[5, "name"], [1, "nope"]]],
  ["n", [[5, "x"], [1, "a"]]],
]);
const ELEMENT_FILTER_RATE = new Map([["reviews", 0.85], ["meta", 0.6], ["n", 0.4], ["tags", 0.2]]);
const OTHER_ELEMENT_PATHS = [[3, "score"], [3, "name"], [2, "a"], [1, "x"]];
/** Operands by path ("reviews > score": the score of an element of reviews). */
const PATH_OPERANDS = new Map([
  ...PATHS,
  ["reviews > score", REVIEW_SCORES],
  ["reviews > author", [...USERS, null]],
  ["reviews > tags", TAGS],
  ["reviews > meta.lvl", [0, 1, 2, 3]],
  ["tags > name", ["a", "b"]],
]);
/** How likely $elemMatch is, by path: most on the paths that often hold arrays. */
const ELEMENT_MATCH_WEIGHT = new Map([
  ["reviews", 60], ["scores", 20],
  ...["tags", "nums", "goalAmount", "createdAt", "meta", "n", "meta.tags", "meta.b.d", "userId"].map((p) => [p, 6]),
]);

/** What a path names: a leading `metadata.` is the metadata object itself. */
const stripPrefix = (path) => (path.startsWith("metadata.") ? path.slice("metadata.".length) : path);

/**
 * Where a filter's paths are read from: [] is the rows' metadata; inside $elemMatch on the
 * array at path `p`, the scope grows by `p` and paths are read from one of its elements ("":
 * the element itself is the array).
 */
function sampleRoot(r, scope) {
  let root = r.pick(rows).stored;
  for (const p of scope) {
    const value = p === "" ? root : lookup(root, p);
    if (!Array.isArray(value) || value.length === 0) return MISSING;
    root = r.pick(value);
  }
  return root;
}

const operandKey = (path, scope) => [...scope, path].map(stripPrefix).filter((p) => p !== "").join(" > ");

/** A scalar some row holds at `path` (itself or an element of its array), if the pick finds one. */
function dataOperand(r, path, scope = []) {
  for (let i = 0; i < (scope.length ? 16 : 8); i++) {
    const root = sampleRoot(r, scope);
    if (root === MISSING) continue;
    let value = path === "" ? root : lookup(root, path);
    if (Array.isArray(value) && value.length > 0) value = r.pick(value);
    if (value !== MISSING && isScalar(value)) return { value };
  }
  return null;
}

function operand(r, path, scope = []) {
  const pool = PATH_OPERANDS.get(operandKey(path, scope)) ?? [];
  return r.weighted([
    [45, () => (dataOperand(r, path, scope) ?? { value: scalarAny(r) }).value],
    [35, () => (pool.length > 0 ? r.pick(pool) : scalarAny(r))],
    [20, () => scalarAny(r)],
  ]);
}

function orderedOperand(r, path, scope) {
  for (let i = 0; i < 20; i++) {
    const v = operand(r, path, scope);
    if (typeof v === "number" || typeof v === "string") return v;
  }
  return r.chance(0.5) ? r.pick(NUMBERS) : r.pick(STRINGS);
}

/** Part of a string the data holds, for $contains. */
function substringOperand(r, path, scope) {
  const held = dataOperand(r, path, scope)?.value;
  const pool = [...(PATH_OPERANDS.get(operandKey(path, scope)) ?? []), ...TITLES, ...STRINGS].filter((v) => typeof v === "string");
  const s = [...(typeof held === "string" && r.chance(0.6) ? held : r.pick(pool))];
  const from = r.int(0, s.length);
  return s.slice(from, r.int(from, s.length)).join("");
}

const OPERATORS = [
  [10, "$eq"], [8, "$ne"], [6, "$gt"], [6, "$gte"], [6, "$lt"], [6, "$lte"], [8, "$in"], [6, "$nin"],
  [6, "$exists"], [7, "$contains"], [4, "$all"], [4, "$size"], [7, "$regex"], [6, "$not"], [3, "$elemMatch"],
];
/**
 * OPERATORS, with $elemMatch's weight for `path` (see ELEMENT_MATCH_WEIGHT); on an element
 * itself (path ""), $exists (always true there) and $size are rare.
 */
function operatorsFor(path, scope) {
  const weight = ELEMENT_MATCH_WEIGHT.get(operandKey(path, scope));
  const element = path === "" && scope.length > 0;
  if (weight === undefined && !element) return OPERATORS;
  return OPERATORS.map(([w, op]) => {
    if (op === "$elemMatch" && weight !== undefined) return [weight, op];
    if (element && (op === "$exists" || op === "$size")) return [1, op];
    return [w, op];
  });
}

function operatorValue(r, op, path, depth, scope) {
  switch (op) {
    case "$eq":
    case "$ne":
      return operand(r, path, scope);
    case "$gt":
    case "$gte":
    case "$lt":
    case "$lte":
      return orderedOperand(r, path, scope);
    case "$in":
    case "$nin":
      return r.times(r.weighted([[1, 0], [4, 1], [4, 2], [2, 3], [1, 4]]), () => operand(r, path, scope));
    case "$exists":
      return r.chance(0.5);
    case "$contains":
      return r.weighted([
        [45, () => substringOperand(r, path, scope)],
        [25, () => operand(r, path, scope)],
        [30, () => r.times(r.int(0, 3), () => operand(r, path, scope))],
      ]);
    case "$all":
      return r.times(r.weighted([[1, 0], [4, 1], [4, 2], [1, 3]]), () => operand(r, path, scope));
    case "$size":
      return r.int(0, 4);
    case "$regex":
      return r.pick(REGEXES);
    case "$not":
      return operatorObject(r, path, depth + 1, scope);
    case "$elemMatch": {
      const inner = [...scope, path];
      // A filter on each element ({score: ..., author: ...}), or operators on each element itself ({$gte: 3, $lt: 5}).
      if (!r.chance(ELEMENT_FILTER_RATE.get(operandKey(path, scope)) ?? 0.15)) return operatorObject(r, "", depth + 1, inner);
      for (;;) {
        const filter = generateFilter(r, depth + 1, inner);
        if (Object.keys(filter).length > 0) return filter;
      }
    }
    default:
      throw new Error(op);
  }
}

function operatorObject(r, path, depth, scope = []) {
  const count = r.weighted([[80, 1], [17, 2], [3, 3]]);
  const out = {};
  const operators = operatorsFor(path, scope);
  for (let i = 0; i < count * 3 && Object.keys(out).length < count; i++) {
    const op = r.weighted(operators);
    if (op in out || (op === "$not" && depth >= 2) || (op === "$elemMatch" && (scope.length >= 2 || depth >= 4))) continue;
    out[op] = operatorValue(r, op, path, depth, scope);
    if (op === "$regex" && r.chance(0.55)) out.$options = r.pick(REGEX_OPTIONS);
  }
  if (Object.keys(out).length === 0) out.$eq = operand(r, path, scope);
  return out;
}

function fieldValue(r, path, depth, scope) {
  return r.chance(0.3) ? operand(r, path, scope) : operatorObject(r, path, depth, scope);
}

/** A field path: at the top, sometimes written with the `metadata.` prefix. */
function pickPath(r, scope) {
  let path;
  if (scope.length === 0) path = r.weighted(PATH_WEIGHTS);
  else path = r.weighted(ELEMENT_PATHS.get(operandKey("", scope)) ?? OTHER_ELEMENT_PATHS);
  return r.chance(0.08) ? `metadata.${path}` : path;
}

/** A filter over the metadata (scope []) or, inside $elemMatch, over an array's elements. */
function generateFilter(r, depth = 0, scope = []) {
  if (depth < MAX_LOGIC_DEPTH && r.chance(depth === 0 ? 0.4 : 0.25)) return logicalClause(r, depth, scope);
  if (r.chance(0.02)) return {};
  const keys = r.weighted([[80, 1], [17, 2], [3, 3]]);
  const out = {};
  for (let i = 0; i < keys; i++) {
    if (i > 0 && depth < MAX_LOGIC_DEPTH && r.chance(0.15)) {
      Object.assign(out, logicalClause(r, depth, scope));
      continue;
    }
    const path = pickPath(r, scope);
    if (!(path in out)) out[path] = fieldValue(r, path, depth, scope);
  }
  return out;
}

function logicalClause(r, depth, scope) {
  const op = r.weighted([[3, "$and"], [3, "$or"], [2, "$nor"], [2, "$not"]]);
  if (op === "$not") {
    // `$not: {}` is refused (see INVALID_CLAUSES): the negated filter is never empty.
    for (;;) {
      const inner = generateFilter(r, depth + 1, scope);
      if (Object.keys(inner).length > 0) return { $not: inner };
    }
  }
  // Empty arrays sometimes: $and: [] and $nor: [] are true, $or: [] false.
  return { [op]: r.times(r.weighted([[1, 0], [5, 1], [5, 2], [3, 3]]), () => generateFilter(r, depth + 1, scope)) };
}

/** Clauses the language refuses (one of each kind of mistake), to be planted in a filter. */
const INVALID_CLAUSES = [
  (r, p) => ({ [p]: [operand(r, p), operand(r, p)] }),
  (r, p) => ({ [p]: { a: 1 } }),
  (r, p) => ({ [p]: {} }),
  (r, p) => ({ [p]: { $gt: 1, a: 1 } }),
  (r, p) => ({ [p]: { [r.pick(["$foo", "$elemmatch", "$type", "$mod", "$eq "])]: 1 } }),
  (r, p) => ({ [p]: { [r.pick(["$and", "$or"])]: [{ x: 1 }] } }),
  (r) => ({ [r.pick(["$foo", "$where", "$text", "$"])]: [{ x: 1 }] }),
  (r) => ({ [r.pick(["1a", "a..b", ".a", "a.", "a b", "a'b", 'a"b', "a[0]", "a*", "é", "", "a.$b", "-a", "a.1", "metadata.", "metadata..a"])]: 1 }),
  (r, p) => ({ [p]: { [r.pick(["$in", "$nin", "$all"])]: r.pick(["x", 1, null, true, { a: 1 }]) } }),
  (r, p) => ({ [p]: { [r.pick(["$in", "$nin", "$all"])]: [operand(r, p), r.pick([[1], { a: 1 }, []])] } }),
  (r, p) => ({ [p]: { [r.pick(["$gt", "$gte", "$lt", "$lte"])]: r.pick([true, false, null, [1], { a: 1 }]) } }),
  (r, p) => ({ [p]: { [r.pick(["$eq", "$ne"])]: r.pick([[1], { a: 1 }, []]) } }),
  (r, p) => ({ [p]: { $exists: r.pick([1, 0, "true", null, []]) } }),
  (r, p) => ({ [p]: { $size: r.pick([-1, 1.5, "2", null, true, [1]]) } }),
  (r, p) => ({ [p]: { $regex: r.pick([5, null, true, ["a"], { a: 1 }]) } }),
  (r, p) => ({ [p]: { $regex: "a", $options: r.pick(["x", "g", "iu", "I", 1, null, ["i"]]) } }),
  (r, p) => ({ [p]: { $options: r.pick(["i", ""]) } }),
  (r, p) => ({ [p]: { $not: r.pick([1, "a", null, [], {}, { a: 1 }, { $foo: 1 }, { $gt: 1, a: 1 }, { $options: "i" }]) } }),
  (r, p) => ({ [p]: { $contains: r.pick([null, { a: 1 }, [[1]], [{}]]) } }),
  (r) => ({ [r.pick(["$and", "$or", "$nor"])]: r.pick([{}, [1], ["a"], [[]], [null], [{}, 1], "x", null, { a: 1 }]) }),
  (r) => ({ $not: r.pick([1, "a", null, [], [{}], true, {}, {}]) }),
  (r, p) => ({
    [p]: {
      $elemMatch: r.pick([
        1, "a", null, true, [], [{ a: 1 }], {}, // not a non-empty object
        { $gt: 1, a: 1 }, { $or: [], $gt: 1 }, { $nor: [{ a: 1 }], $exists: true }, // operators and conditions mixed
        { $foo: 1 }, { $options: "i" }, { $gt: true }, { $eq: [1] }, { $in: "x" }, // bad operators
        { a: { $foo: 1 } }, { a: {} }, { a: [1] }, { a: { b: 1 } }, { "a b": 1 }, // bad conditions
        { $not: {} }, { $not: 1 }, { $and: {} }, { $or: [1] }, { $not: { $gt: 1 } }, // bad logic ($not there negates a filter)
      ]),
    },
  }),
];

function withInvalidClause(r, filter) {
  const p = r.weighted(PATH_WEIGHTS);
  const bad = r.pick(INVALID_CLAUSES)(r, p);
  return r.weighted([
    [2, () => bad],
    [2, () => ({ $and: [filter, bad] })],
    [1, () => ({ $or: [bad, filter] })],
    [1, () => ({ $nor: [filter, { $not: bad }] })],
    [1, () => ({ [r.pick(["reviews", "tags", "meta"])]: { $elemMatch: { $or: [bad] } } })],
    [2, () => ({ ...filter, ...bad })],
  ]);
}

// ---------------------------------------------------------------------------------------------
// Validity rules: the parser's rules (src/store/filter/mod.rs), written independently. `null`
// = valid, else the name of the rule that refuses the filter.

const MAX_DEPTH = 32;

const isObject = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const isScalar = (v) => v === null || ["string", "number", "boolean"].includes(typeof v);
const validPath = (path) => path.split(".").every((s) => /^[A-Za-z_][A-Za-z0-9_-]*$/.test(s));
const LOGICAL = new Set(["$and", "$or", "$nor", "$not"]);
/** `$elemMatch`'s conditions are operators on the element itself (else a filter on it). */
const onElement = (conditions) => Object.keys(conditions).every((k) => k.startsWith("$") && !LOGICAL.has(k));

function filterRule(filter, depth = 0) {
  if (depth > MAX_DEPTH) return "nesting deeper than 32 levels";
  if (!isObject(filter)) return "a filter must be an object";
  for (const [key, value] of Object.entries(filter)) {
    const rule = clauseRule(key, value, depth);
    if (rule) return rule;
  }
  return null;
}

function clauseRule(key, value, depth) {
  if (key === "$and" || key === "$or" || key === "$nor") {
    // Empty arrays are fine: $and: [] and $nor: [] are true, $or: [] is false.
    if (!Array.isArray(value) || !value.every(isObject)) return "$and/$or/$nor need an array of filter objects";
    for (const item of value) {
      const rule = filterRule(item, depth + 1);
      if (rule) return rule;
    }
    return null;
  }
  if (key === "$not") {
    if (!isObject(value) || Object.keys(value).length === 0) return "top-level $not needs a non-empty filter object";
    return filterRule(value, depth + 1);
  }
  if (key.startsWith("$")) return "unknown top-level operator";
  if (!validPath(key)) return "invalid field path";
  if (Array.isArray(value)) return "field compared to an array";
  if (!isObject(value)) return null; // implicit $eq with a scalar
  const keys = Object.keys(value);
  const operators = keys.filter((k) => k.startsWith("$")).length;
  if (keys.length === 0) return "empty operator object";
  if (operators === 0) return "field compared to an object (object equality)";
  if (operators !== keys.length) return "operators mixed with plain keys";
  return operatorsRule(value, depth + 1);
}

function operatorsRule(ops, depth) {
  if (depth > MAX_DEPTH) return "nesting deeper than 32 levels";
  for (const [op, value] of Object.entries(ops)) {
    if (op === "$options" && "$regex" in ops) continue;
    const rule = operatorRule(op, value, ops, depth);
    if (rule) return rule;
  }
  return null;
}

function operatorRule(op, value, ops, depth) {
  switch (op) {
    case "$eq":
    case "$ne":
      return isScalar(value) ? null : "$eq/$ne need a scalar";
    case "$gt":
    case "$gte":
    case "$lt":
    case "$lte":
      return typeof value === "number" || typeof value === "string" ? null : "$gt/$gte/$lt/$lte need a number or a string";
    case "$in":
    case "$nin":
    case "$all":
      return Array.isArray(value) && value.every(isScalar) ? null : "$in/$nin/$all need an array of scalars";
    case "$exists":
      return typeof value === "boolean" ? null : "$exists needs true or false";
    case "$contains":
      if (Array.isArray(value)) return value.every(isScalar) ? null : "$contains needs scalars";
      return ["string", "number", "boolean"].includes(typeof value) ? null : "$contains needs scalars";
    case "$size":
      return Number.isInteger(value) && value >= 0 ? null : "$size needs a non-negative integer";
    case "$regex":
      if (typeof value !== "string") return "$regex needs a string";
      if ("$options" in ops && !(typeof ops.$options === "string" && /^[ims]*$/.test(ops.$options))) {
        return "$options needs a string of i, m, s";
      }
      return null;
    case "$options":
      return "$options needs $regex beside it";
    case "$not":
      if (!isObject(value) || Object.keys(value).length === 0 || !Object.keys(value).every((k) => k.startsWith("$"))) {
        return "field-level $not needs a non-empty operator object";
      }
      return operatorsRule(value, depth + 1);
    case "$elemMatch":
      if (!isObject(value) || Object.keys(value).length === 0) return "$elemMatch needs a non-empty object";
      // Operators on the element itself, like a field's operator object...
      if (onElement(value)) return operatorsRule(value, depth + 1);
      // ...or a filter on the element: field conditions and $and/$or/$nor/$not, nothing else.
      if (Object.keys(value).some((k) => k.startsWith("$") && !LOGICAL.has(k))) {
        return "$elemMatch mixes operators with field conditions";
      }
      return filterRule(value, depth + 1);
    default:
      return "unknown field operator";
  }
}

// ---------------------------------------------------------------------------------------------
// Reference evaluator: the documented semantics (the first doc comment of
// src/store/filter/mod.rs), three-valued. Each clause is true, false or null (unknown): a
// condition on a field that is missing or null is unknown unless it is one of those that are
// never unknown; AND, OR and NOT follow Kleene's logic; a row matches when the whole filter is
// true.

const MISSING = Symbol("missing");

/** The value at a dotted path; objects only (a path does not walk into arrays). A leading
 * `metadata.` names the metadata object itself. */
function lookup(metadata, path) {
  let current = metadata;
  for (const segment of stripPrefix(path).split(".")) {
    if (!isObject(current) || !Object.hasOwn(current, segment)) return MISSING;
    current = current[segment];
  }
  return current;
}

/** What a condition is tried on: the value itself and, for an array, each element. */
function candidates(value) {
  if (value === MISSING) return [MISSING];
  return Array.isArray(value) ? [value, ...value] : [value];
}

/** Type-strict equality with a scalar; `null` stands for null or missing. */
function equalsScalar(candidate, scalar) {
  if (scalar === null) return candidate === null || candidate === MISSING;
  return typeof candidate === typeof scalar && candidate === scalar;
}

/** Strings order by code point (what DuckDB's byte-wise UTF-8 comparison gives). */
function compareText(a, b) {
  const x = [...a];
  const y = [...b];
  for (let i = 0; i < Math.min(x.length, y.length); i++) {
    const d = x[i].codePointAt(0) - y[i].codePointAt(0);
    if (d !== 0) return d;
  }
  return x.length - y.length;
}

function ordered(candidate, bound, op) {
  let d;
  if (typeof bound === "number" && typeof candidate === "number") d = candidate < bound ? -1 : candidate > bound ? 1 : 0;
  else if (typeof bound === "string" && typeof candidate === "string") d = compareText(candidate, bound);
  else return false;
  return { $gt: d > 0, $gte: d >= 0, $lt: d < 0, $lte: d <= 0 }[op];
}

const regexCache = new Map();
function regex(pattern, options = "") {
  const key = `${options}/${pattern}`;
  if (!regexCache.has(key)) regexCache.set(key, new RegExp(pattern, `u${options}`));
  return regexCache.get(key);
}

function any(value, test) {
  return candidates(value).some(test);
}

// Kleene's three-valued logic: true, false, null (unknown).
function and3(values) {
  let unknown = false;
  for (const v of values) {
    if (v === false) return false;
    if (v === null) unknown = true;
  }
  return unknown ? null : true;
}
function or3(values) {
  let unknown = false;
  for (const v of values) {
    if (v === true) return true;
    if (v === null) unknown = true;
  }
  return unknown ? null : false;
}
const not3 = (v) => (v === null ? null : !v);

/** `test()` (true or false) when the field holds a value other than null; unknown otherwise. */
function known(value, test) {
  return value === MISSING || value === null ? null : test();
}

/** `$eq`: with null, never unknown (missing, null or an array holding null); else unknown on a
 * missing or null field. */
function eq3(value, scalar) {
  if (scalar === null) return any(value, (c) => equalsScalar(c, null));
  return known(value, () => any(value, (c) => equalsScalar(c, scalar)));
}

/** `$in`: [] is false; a list holding null is never unknown. */
function in3(value, list) {
  if (list.length === 0) return false;
  const hit = () => any(value, (c) => list.some((x) => equalsScalar(c, x)));
  return list.includes(null) ? hit() : known(value, hit);
}

/** `$all` and `$contains` with a list: an AND of `$eq`s; [] is false. */
function all3(value, list) {
  return list.length === 0 ? false : and3(list.map((x) => eq3(value, x)));
}

/** `$elemMatch`: unknown on a missing or null field, false on anything but an array, else
 * whether some element makes the conditions true. */
function elemMatch3(value, conditions) {
  return known(value, () => {
    if (!Array.isArray(value)) return false;
    return value.some((element) =>
      (onElement(conditions) ? operators3(element, conditions) : evaluate(conditions, element)) === true,
    );
  });
}

/** A field's operator object (the AND of its operators) on the field's value. */
function operators3(value, ops) {
  return and3(
    Object.entries(ops)
      .filter(([op]) => !(op === "$options" && "$regex" in ops)) // read by $regex
      .map(([op, arg]) => operator3(value, op, arg, ops)),
  );
}

function operator3(value, op, arg, ops) {
  switch (op) {
    case "$eq":
      return eq3(value, arg);
    case "$ne":
      return not3(eq3(value, arg));
    case "$gt":
    case "$gte":
    case "$lt":
    case "$lte":
      return known(value, () => any(value, (c) => ordered(c, arg, op)));
    case "$in":
      return in3(value, arg);
    case "$nin":
      return not3(in3(value, arg));
    case "$exists":
      return (value !== MISSING) === arg;
    case "$contains":
      if (Array.isArray(arg)) return all3(value, arg);
      if (typeof arg === "string") {
        return or3([known(value, () => typeof value === "string" && value.includes(arg)), eq3(value, arg)]);
      }
      return eq3(value, arg);
    case "$all":
      return all3(value, arg);
    case "$size":
      return known(value, () => Array.isArray(value) && value.length === arg);
    case "$regex": {
      const re = regex(arg, ops.$options ?? "");
      return known(value, () => any(value, (c) => typeof c === "string" && re.test(c)));
    }
    case "$not":
      return not3(operators3(value, arg));
    case "$elemMatch":
      return elemMatch3(value, arg);
    default:
      throw new Error(`evaluator: unknown operator ${op}`);
  }
}

/** A filter's truth on one metadata object (or, inside $elemMatch, on one element). */
function evaluate(filter, root) {
  return and3(
    Object.entries(filter).map(([key, value]) => {
      switch (key) {
        case "$and":
          return and3(value.map((f) => evaluate(f, root)));
        case "$or":
          return or3(value.map((f) => evaluate(f, root)));
        case "$nor":
          return not3(or3(value.map((f) => evaluate(f, root))));
        case "$not":
          return not3(evaluate(value, root));
        default: {
          const found = lookup(root, key);
          return isObject(value) ? operators3(found, value) : eq3(found, value);
        }
      }
    }),
  );
}

/** Whether a row matches: the filter is true (not false, not unknown). */
function matches(filter, metadata) {
  return evaluate(filter, metadata) === true;
}

/** Operators used by a filter (for the coverage line). */
function operatorsIn(filter, into = new Map()) {
  const count = (op) => into.set(op, (into.get(op) ?? 0) + 1);
  const walkOps = (ops) => {
    for (const [op, arg] of Object.entries(ops)) {
      count(op);
      if (op === "$not") walkOps(arg);
      if (op === "$elemMatch") {
        if (onElement(arg)) {
          count("$elemMatch (on elements)");
          walkOps(arg);
        } else {
          count("$elemMatch (filter)");
          operatorsIn(arg, into);
        }
      }
    }
  };
  for (const [key, value] of Object.entries(filter)) {
    if (key === "$and" || key === "$or" || key === "$nor") {
      count(key);
      if (value.length === 0) count(`${key}: []`);
      value.forEach((f) => operatorsIn(f, into));
    } else if (key === "$not") {
      count("$not (top)");
      operatorsIn(value, into);
    } else {
      if (key.startsWith("metadata.")) count("metadata. path");
      else if (key.includes(".")) count("dotted path");
      if (isObject(value)) walkOps(value);
      else count(value === null ? "{f: null}" : "implicit $eq");
    }
  }
  return into;
}

/** Single-field clauses of a filter: one operator each ($regex keeps its $options, $elemMatch
 * its conditions). */
function leafClauses(filter, into = new Map()) {
  const add = (clause) => into.set(JSON.stringify(clause), clause);
  if (!isObject(filter)) return [...into.values()];
  for (const [key, value] of Object.entries(filter)) {
    if (key === "$and" || key === "$or" || key === "$nor") {
      if (Array.isArray(value)) value.forEach((f) => leafClauses(f, into));
    } else if (key === "$not") {
      leafClauses(value, into);
    } else if (!isObject(value)) {
      add({ [key]: value });
    } else {
      const walk = (ops) => {
        for (const [op, arg] of Object.entries(ops)) {
          if (op === "$options" && "$regex" in ops) continue;
          if (op === "$not" && isObject(arg)) walk(arg);
          add({ [key]: op === "$regex" && "$options" in ops ? { $regex: arg, $options: ops.$options } : { [op]: arg } });
        }
      };
      walk(value);
    }
  }
  return [...into.values()];
}

// ---------------------------------------------------------------------------------------------
// Scores


// ---------------------------------------------------------------------------------------------
// The test

const rows = generateRows(SEED, ROW_COUNT);
const rowById = new Map(rows.map((row) => [row.id, row]));
const TOP_K = Math.min(rows.length, 1000);

/** Stride's own filters (web app and agents), plus a few edge cases of the documentation. */
const FIXED_FILTERS = [
  { outcome: { $eq: "helpful" } },
  { outcome: "helpful" },
  { userId: { $ne: "u1" } },
  { $and: [{ status: { $eq: "completed" } }, { goalAmount: { $gte: 500 } }] },
  { $and: [{ userId: { $ne: "u1" } }, { status: { $eq: "completed" } }, { goalAmount: { $gte: 1000 } }] },
  { $and: [{ userId: { $eq: "u1" } }, { status: { $eq: "completed" } }] },
  { $and: [{ outcome: { $eq: "helpful" } }, { userId: { $ne: "u1" } }] },
  { tags: { $in: ["python"] } },
  { $or: [{ status: { $eq: "completed" } }, { outcome: { $in: ["helpful", "neutral"] } }] },
  { createdAt: { $gte: "2026-01-01" } },
  { createdAt: { $lt: "2026-01-01" } },
  { goalAmount: 800 },
  { goalAmount: "800" },
  { goalAmount: { $gt: "5" } },
  { outcome: null },
  { outcome: { $exists: false } },
  { outcome: { $ne: null } },
  { tags: null },
  { tags: { $size: 0 } },
  { tags: { $contains: "y" } },
  { title: { $contains: "World" } },
  { title: { $regex: "^hello", $options: "i" } },
  { "meta.b.c": { $exists: true } },
  { "tags.name": "a" },
  { userId: { $not: { $in: ["u1", "u2"] } } },
  {},
  { $and: [{}] },
  // Three-valued logic: a negation never matches a row without the field, unless the
  // condition is never unknown ($exists, null in the list, the constants).
  { goalAmount: { $not: { $lt: 500 } } },
  { $not: { status: "active" } },
  { $nor: [{ status: "active" }, { outcome: "helpful" }] },
  { userId: { $nin: ["u1", "u2"] } },
  { userId: { $nin: ["u1", null] } },
  { userId: { $in: ["u1", null] } },
  { outcome: { $not: { $exists: true } } },
  { outcome: { $not: { $eq: null } } },
  { tags: { $in: [] } },
  { tags: { $nin: [] } },
  { tags: { $all: [] } },
  { tags: { $contains: [] } },
  { tags: { $not: { $all: [] } } },
  { tags: { $all: [null, "x"] } },
  { $not: { $or: [{ status: "active" }, { status: { $ne: "active" } }] } },
  // Empty logical arrays: $and and $nor are true, $or is false.
  { $and: [] },
  { $nor: [] },
  { $or: [] },
  { $or: [{ status: "active" }, { $and: [] }] },
  // $elemMatch on objects and on the elements themselves.
  { reviews: { $elemMatch: { score: { $gte: 4 }, author: "u3" } } },
  { reviews: { $elemMatch: { score: { $not: { $gte: 4 } } } } },
  { reviews: { $elemMatch: { $or: [{ author: "u1" }, { score: 5 }] } } },
  { reviews: { $elemMatch: { $not: { author: "u1" } } } },
  { reviews: { $not: { $elemMatch: { score: { $lt: 3 } } } } },
  { scores: { $elemMatch: { $gte: 3, $lt: 5 } } },
  { scores: { $elemMatch: { $ne: 2 } } },
  { scores: { $elemMatch: { $elemMatch: { $gte: 3 } } } },
  { tags: { $elemMatch: { name: "a" } } },
  // `metadata.` names the metadata itself; `metadata` alone is an ordinary key.
  { "metadata.thread_id": "t1" },
  { "metadata.thread_id": { $in: ["t1", "t2"] }, "metadata.outcome": "helpful" },
  { metadata: "t1" },
  { "metadata.metadata.thread_id": "t1" },
  { metadata: { $exists: false } },
  // Refused: a top-level $not needs a non-empty filter; $elemMatch's $not negates a filter.
  { $not: {} },
  { $and: [{ $not: {} }] },
  { reviews: { $elemMatch: {} } },
  { reviews: { $elemMatch: { $not: { $gte: 4 } } } },
  { reviews: { $elemMatch: { score: 4, $gte: 4 } } },
  // The depth limit (32 levels of $and/$or/$nor/$not and operator objects): the first is
  // accepted, the other two rejected.
  nested(32, { status: "active" }),
  nested(32, { status: { $eq: "active" } }),
  nested(33, { status: "active" }),
];

function nested(levels, inner) {
  let filter = inner;
  for (let i = 0; i < levels; i++) filter = i % 2 ? { $and: [filter] } : { $or: [filter] };
  return filter;
}

/** Filters that compile but whose $regex RE2 cannot parse: documented to fail when run. */
const BAD_PATTERN_FILTERS = [{ title: { $regex: "(?<=a)b" } }, { title: { $regex: "(a" } }];

/**
 * The evaluator's own checks, by hand from the documented semantics: [filter, metadata, truth]
 * with truth true, false or null (unknown). A row matches only when the truth is true.
 */
const EVALUATOR_CASES = [
  [{ a: { $ne: 1 } }, {}, null],
  [{ a: { $ne: 1 } }, { a: null }, null],
  [{ a: { $ne: 1 } }, { a: 2 }, true],
  [{ a: { $ne: 1 } }, { a: [1, 2] }, false],
  [{ a: { $ne: null } }, {}, false],
  [{ a: { $ne: null } }, { a: [1, null] }, false],
  [{ a: { $ne: null } }, { a: 0 }, true],
  [{ a: null }, { a: [null] }, true],
  [{ a: { $gt: 5 } }, { a: "9" }, false],
  [{ a: { $not: { $gt: 5 } } }, { a: "9" }, true],
  [{ a: { $not: { $gt: 5 } } }, {}, null],
  [{ a: { $nin: [1] } }, {}, null],
  [{ a: { $nin: [1, null] } }, {}, false],
  [{ a: { $nin: [1, null] } }, { a: 2 }, true],
  [{ a: { $in: [null] } }, { a: null }, true],
  [{ a: { $nin: [] } }, {}, true],
  [{ a: { $in: [] } }, {}, false],
  [{ a: { $not: { $all: [] } } }, {}, true],
  [{ a: { $all: [null, 1] } }, {}, null],
  [{ a: { $all: [null, 1] } }, { a: [null, 1] }, true],
  [{ a: { $contains: "b" } }, { a: "abc" }, true],
  [{ a: { $contains: "b" } }, { a: ["abc"] }, false],
  [{ a: { $contains: "b" } }, { a: ["b"] }, true],
  [{ a: { $contains: "b" } }, {}, null],
  [{ a: { $regex: "^x" } }, { a: null }, null],
  [{ a: { $size: 0 } }, { a: null }, null],
  [{ a: { $size: 0 } }, { a: "x" }, false],
  [{ a: { $exists: false } }, {}, true],
  [{ a: { $exists: true, $gt: 1 } }, {}, false],
  [{ a: { $not: { $exists: true, $gt: 1 } } }, {}, true],
  [{ $nor: [{ a: 1 }] }, {}, null],
  [{ $nor: [{ a: 1 }, { b: 1 }] }, { b: 1 }, false],
  [{ $or: [{ a: 1 }, { b: 1 }] }, { b: 1 }, true],
  [{ $and: [{ a: 1 }, { b: 1 }] }, { b: 2 }, false],
  [{ $and: [] }, {}, true],
  [{ $or: [] }, {}, false],
  [{ $nor: [] }, {}, true],
  [{ $not: { a: 1 } }, {}, null],
  [{ $not: { a: 1 } }, { a: 2 }, true],
  [{ r: { $elemMatch: { s: { $gte: 4 }, u: "u3" } } }, { r: [{ s: 5, u: "u1" }, { s: 4, u: "u3" }] }, true],
  [{ r: { $elemMatch: { s: { $gte: 4 }, u: "u3" } } }, { r: [{ s: 5, u: "u1" }, { s: 3, u: "u3" }] }, false],
  [{ r: { $elemMatch: { s: { $ne: 1 } } } }, { r: [{}, { s: null }] }, false],
  [{ r: { $elemMatch: { s: { $exists: false } } } }, { r: ["x"] }, true],
  [{ r: { $elemMatch: { s: 1 } } }, {}, null],
  [{ r: { $elemMatch: { s: 1 } } }, { r: null }, null],
  [{ r: { $elemMatch: { s: 1 } } }, { r: { s: 1 } }, false],
  [{ r: { $not: { $elemMatch: { s: 1 } } } }, { r: { s: 1 } }, true],
  [{ r: { $not: { $elemMatch: { s: 1 } } } }, { r: [] }, true],
  [{ r: { $not: { $elemMatch: { s: 1 } } } }, {}, null],
  [{ r: { $elemMatch: { $gte: 3, $lt: 5 } } }, { r: [1, 5, 4] }, true],
  [{ r: { $elemMatch: { $gte: 3, $lt: 5 } } }, { r: [1, 5] }, false],
  [{ r: { $elemMatch: { $ne: 2 } } }, { r: [null, 2] }, false],
  [{ r: { $elemMatch: { $gte: 2 } } }, { r: [[1, 2]] }, true],
  [{ "metadata.a": 1 }, { a: 1 }, true],
  [{ "metadata.a": 1 }, { metadata: { a: 1 } }, null],
  [{ "metadata.metadata.a": 1 }, { metadata: { a: 1 } }, true],
  [{ metadata: 1 }, { metadata: 1 }, true],
];

test("the reference evaluator gives the documented truth values (by hand)", () => {
  const wrong = EVALUATOR_CASES.filter(([filter, metadata, truth]) => filterRule(filter) !== null || evaluate(filter, metadata) !== truth);
  assert.deepEqual(
    wrong.map(([filter, metadata, truth]) => `${JSON.stringify(filter)} on ${JSON.stringify(metadata)}: want ${truth}, got ${filterRule(filter) ?? evaluate(filter, metadata)}`),
    [],
  );
});

let dir;
let server;

describe(`metadata filters: reference evaluator vs memory engine vs DuckDB engine (seed ${SEED})`, { timeout: 600_000 }, () => {
  before(async () => {
    await waitForBinary();
    dir = await makeTempDir("sv-e2e-filters-");
    server = await startServer({ db: path.join(dir, "filters.duckdb") });
    // `metadata` is left out entirely for the rows generated without it.
    const vectors = rows.map((row) => ("metadata" in row ? { id: row.id, vector: row.vector, metadata: row.metadata } : { id: row.id, vector: row.vector }));
    await server.call("upsert", { index: INDEX, vectors, create_index: { dimension: DIM, metric: "cosine" } });
    const described = await waitFor(
      async () => {
        const d = await server.call("describe_index", { index: INDEX });
        return d.engine === "memory" && d.memory_state === "ready" ? d : null;
      },
      { timeoutMs: 60_000, intervalMs: 200, what: "the in-memory copy of the index to be ready" },
    );
    assert.equal(described.count, rows.length);
  });

  after(async () => {
    if (server) {
      await server.stop().catch(() => server.kill());
    }
    await removeDir(dir);
  });

  /** Searches with one engine: {ids, scores, hits} or {error}. */
  async function search(filter, vector, engine) {
    try {
      const res = await server.call("search", { index: INDEX, vector, top_k: TOP_K, filter, engine });
      assert.equal(res.engine, engine, `search with engine "${engine}" was answered by "${res.engine}" (FILTER_SEED=${SEED})`);
      return { hits: res.results };
    } catch (error) {
      if (error instanceof ToolError) return { error: error.text };
      throw error;
    }
  }

  /**
   * Runs one filter through both engines and the evaluator. Returns a problem description
   * (string) or null, and updates `stats`.
   */
  async function check(filter, vector, stats, topK) {
    const rule = filterRule(filter);
    const [memory, duckdb] = [await search(filter, vector, "memory"), await search(filter, vector, "duckdb")];
    const shown = JSON.stringify(filter);
    if (memory.error !== undefined || duckdb.error !== undefined) {
      if (memory.error === undefined || duckdb.error === undefined) {
        return `only one engine rejected ${shown}: memory ${memory.error ?? "accepted"}; duckdb ${duckdb.error ?? "accepted"}`;
      }
      if (memory.error !== duckdb.error) return `engines reject ${shown} differently: "${memory.error}" vs "${duckdb.error}"`;
      if (!rule) return `server rejects a filter the documented rules accept: ${shown}\n  server: ${duckdb.error}`;
      if (!duckdb.error.startsWith("filter:")) return `rejection of ${shown} does not name the filter: ${duckdb.error}`;
      stats.rejected.set(rule, (stats.rejected.get(rule) ?? 0) + 1);
      return null;
    }
    if (rule) return `server accepts a filter the documented rules refuse (${rule}): ${shown}`;
    stats.accepted++;
    operatorsIn(filter, stats.operators);

    const expected = rows.filter((row) => matches(filter, row.stored));
    const expectedIds = new Set(expected.map((row) => row.id));
    if (expected.length === 0) stats.none++;
    else if (expected.length === rows.length) stats.all++;
    else stats.some++;

    const problems = [];
    for (const [engine, result] of [["memory", memory], ["duckdb", duckdb]]) {
      const got = new Set(result.hits.map((h) => h.id));
      const extra = [...got].filter((id) => !expectedIds.has(id));
      const missing = [...expectedIds].filter((id) => !got.has(id));
      if (extra.length || missing.length || got.size !== result.hits.length) {
        problems.push(
          `${engine}: ${result.hits.length} hits, expected ${expected.length}; ` +
            `unexpected ${extra.length} ${describeRows(extra)}; missing ${missing.length} ${describeRows(missing)}`,
        );
      }
      // Scores against our own, order by (score desc, id asc), metadata as stored.
      for (let i = 0; i < result.hits.length; i++) {
        const hit = result.hits[i];
        const row = rowById.get(hit.id);
        if (!row) continue;
        const want = cosine(row.vector, vector);
        if (!(Math.abs(hit.score - want) <= SCORE_TOLERANCE)) {
          problems.push(`${engine}: score of ${hit.id} is ${hit.score}, expected ${want}`);
          break;
        }
        if (!sameJson(hit.metadata, row.stored)) {
          problems.push(`${engine}: metadata of ${hit.id} came back as ${JSON.stringify(hit.metadata)}, stored ${JSON.stringify(row.stored)}`);
          break;
        }
        const prev = result.hits[i - 1];
        if (prev && (prev.score < hit.score || (prev.score === hit.score && !(prev.id < hit.id)))) {
          problems.push(`${engine}: out of order at ${i}: ${prev.id} (${prev.score}) before ${hit.id} (${hit.score})`);
          break;
        }
      }
    }
    if (problems.length === 0) {
      // Same order on both engines; where they differ, only near-ties may swap.
      const duckScore = new Map(duckdb.hits.map((h) => [h.id, h.score]));
      for (let i = 0; i < memory.hits.length; i++) {
        const a = memory.hits[i];
        const b = duckdb.hits[i];
        if (Math.abs(a.score - b.score) > SCORE_TOLERANCE) {
          problems.push(`engines differ at ${i}: memory ${a.id} ${a.score}, duckdb ${b.id} ${b.score}`);
          break;
        }
        if (a.id !== b.id) {
          if (Math.abs(duckScore.get(a.id) - duckScore.get(b.id)) > SCORE_TOLERANCE) {
            problems.push(`engines order differently at ${i}: memory ${a.id}, duckdb ${b.id}`);
            break;
          }
          stats.nearTieSwaps++;
          const memScore = new Map(memory.hits.map((h) => [h.id, h.score]));
          stats.swapExamples.push(
            `${a.id}/${b.id}: memory ${memScore.get(a.id)}/${memScore.get(b.id)}, duckdb ${duckScore.get(a.id)}/${duckScore.get(b.id)}`,
          );
        }
      }
    }
    // A smaller top_k gives the first hits of the same engine's full answer, exactly.
    if (problems.length === 0 && topK && topK < expected.length) {
      stats.topKChecks++;
      for (const [engine, full] of [["memory", memory], ["duckdb", duckdb]]) {
        const res = await server.call("search", { index: INDEX, vector, top_k: topK, filter, engine });
        const want = full.hits.slice(0, topK).map((h) => [h.id, h.score]);
        if (!sameJson(res.results.map((h) => [h.id, h.score]), want)) {
          problems.push(`${engine}: top_k ${topK} gave ${JSON.stringify(res.results.map((h) => h.id))}, not the first ${topK} of top_k ${TOP_K}`);
        }
      }
    }
    return problems.length ? `${shown}\n  ${problems.join("\n  ")}` : null;
  }

  function describeRows(ids, limit = 3) {
    if (ids.length === 0) return "";
    return `[${ids.slice(0, limit).map((id) => `${id} ${JSON.stringify(rowById.get(id).stored)}`).join(", ")}${ids.length > limit ? ", ..." : ""}]`;
  }

  /**
   * For a filter the server and the evaluator disagree on: the single-field clauses that
   * still disagree, each with a few rows (the value at its path, expected vs got).
   */
  async function drillDown(filter, vector) {
    const lines = [];
    for (const leaf of leafClauses(filter).slice(0, 30)) {
      if (filterRule(leaf)) continue;
      const [pathName] = Object.keys(leaf);
      for (const engine of ["duckdb", "memory"]) {
        const res = await search(leaf, vector, engine);
        if (res.error !== undefined) {
          lines.push(`  ${JSON.stringify(leaf)} (${engine}): rejected: ${res.error}`);
          continue;
        }
        const got = new Set(res.hits.map((h) => h.id));
        const wrong = rows.filter((row) => matches(leaf, row.stored) !== got.has(row.id));
        if (wrong.length === 0) continue;
        const examples = wrong.slice(0, 3).map((row) => {
          const value = lookup(row.stored, pathName);
          const shown = value === MISSING ? "<missing>" : JSON.stringify(value);
          return `${row.id} {${JSON.stringify(pathName)}: ${shown}}: expected ${got.has(row.id) ? "no match" : "match"}, got ${got.has(row.id) ? "match" : "no match"}`;
        });
        lines.push(`  minimal: ${JSON.stringify(leaf)} (${engine}, ${wrong.length} rows): ${examples.join("; ")}`);
        break;
      }
    }
    return lines.length ? lines.join("\n") : "  no single clause disagrees on its own: the combination does";
  }

  async function runCases(t, cases) {
    const started = Date.now();
    const stats = { accepted: 0, rejected: new Map(), none: 0, all: 0, some: 0, nearTieSwaps: 0, swapExamples: [], topKChecks: 0, operators: new Map() };
    const failures = [];
    for (const { filter, vector, topK } of cases) {
      const problem = await check(filter, vector, stats, topK);
      if (problem) failures.push({ filter, vector, problem });
    }
    const drilled = [];
    for (const failure of failures.slice(0, DRILL_LIMIT)) {
      drilled.push(`${failure.problem}\n${await drillDown(failure.filter, failure.vector)}`);
    }
    const rejected = [...stats.rejected.values()].reduce((a, b) => a + b, 0);
    t.diagnostic(
      `seed ${SEED}: ${rows.length} rows, ${cases.length} filters, ${stats.accepted} accepted ` +
        `(${stats.none} match no row, ${stats.all} every row, ${stats.some} some), ${rejected} rejected as invalid, ` +
        `${stats.nearTieSwaps} positions swapped between engines by near-ties, ${stats.topKChecks} smaller top_k checked, ` +
        `${Date.now() - started} ms`,
    );
    if (stats.swapExamples.length) t.diagnostic(`near-tie swaps (ids, scores): ${stats.swapExamples.slice(0, 4).join("; ")}`);
    if (rejected) t.diagnostic(`rejected by rule: ${[...stats.rejected].map(([k, v]) => `${k} ${v}`).join("; ")}`);
    t.diagnostic(`operators: ${[...stats.operators].sort().map(([k, v]) => `${k} ${v}`).join(", ")}`);
    if (failures.length) {
      assert.fail(
        `${failures.length} of ${cases.length} filters disagree (FILTER_SEED=${SEED}` +
          `${CASES !== 300 ? ` FILTER_CASES=${CASES}` : ""}${ROW_COUNT !== 300 ? ` FILTER_ROWS=${ROW_COUNT}` : ""}); ` +
          `first ${drilled.length}:\n${drilled.join("\n")}`,
      );
    }
    return stats;
  }

  test("Stride's filters and documented edge cases", async (t) => {
    const r = new Rng(SEED ^ 0x5bd1e995);
    const cases = FIXED_FILTERS.map((filter) => ({ filter, vector: randomVector(r) }));
    await runCases(t, cases);
    // The data is shaped so that Stride's filters are selective, not trivial.
    for (const filter of rows.length >= 50 ? FIXED_FILTERS.slice(0, 3) : []) {
      const n = rows.filter((row) => matches(filter, row.stored)).length;
      assert.ok(n > 0 && n < rows.length, `${JSON.stringify(filter)} matches ${n} of ${rows.length} rows`);
    }
  });

  test("a $regex RE2 cannot parse is a tool error on both engines", async () => {
    for (const filter of BAD_PATTERN_FILTERS) {
      assert.equal(filterRule(filter), null);
      for (const engine of ["memory", "duckdb"]) {
        const res = await search(filter, rows[0].vector, engine);
        assert.ok(res.error !== undefined, `${JSON.stringify(filter)} (${engine}) should fail, returned ${res.hits?.length} hits`);
      }
    }
  });

  test(`${CASES} random filters (seeded)`, async (t) => {
    const r = new Rng(SEED ^ 0x9e3779b9);
    const cases = [];
    for (let i = 0; i < CASES; i++) {
      let filter = generateFilter(r);
      if (r.chance(INVALID_RATE)) filter = withInvalidClause(r, filter);
      const vector = r.chance(0.2) ? [...r.pick(rows).vector] : randomVector(r);
      cases.push({ filter, vector, topK: r.chance(0.5) ? r.int(1, 12) : undefined });
    }
    const stats = await runCases(t, cases);
    if (CASES < 100) return;
    // The generator must keep the comparison meaningful: many filters select some rows only.
    assert.ok(stats.some >= stats.accepted * 0.3, `only ${stats.some} of ${stats.accepted} filters select some rows but not all`);
    assert.ok(stats.rejected.size > 0, "no invalid filter was generated");
  });
});

// A filter string holding a lone UTF-16 surrogate (what `text.slice(0, n)` leaves of an emoji
// cut in half). JSON.stringify writes it as the escape "\ud800", which is valid JSON grammar
// (RFC 8259 section 8.2 leaves its meaning open) but not Unicode. Whatever the server makes of
// it, the call must be answered: a tool error ("bad input is a tool result with isError",
// README), a result, or at least JSON-RPC's Parse error (-32700, id null) — never silence, or
// the client waits for its timeout. Spoken raw over stdio to see exactly what comes back.
describe("a filter string with a lone surrogate", { timeout: 120_000 }, () => {
  test("is answered (tool error, result or JSON-RPC parse error), and the server keeps serving", async () => {
    await waitForBinary();
    const tmp = await makeTempDir("sv-e2e-filters-raw-");
    const child = spawn(BIN, ["--db", path.join(tmp, "raw.duckdb")], { stdio: ["pipe", "pipe", "pipe"] });
    child.stderr.resume();
    const exited = new Promise((resolve) => child.once("exit", resolve));
    const messages = [];
    const waiters = [];
    createInterface({ input: child.stdout }).on("line", (line) => {
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        message = { unparsable: line };
      }
      messages.push(message);
      for (const w of [...waiters]) w();
    });
    const send = (message) => child.stdin.write(`${typeof message === "string" ? message : JSON.stringify(message)}\n`);
    /** The first message with this id (`null` included), or undefined after `ms`. */
    const reply = (id, ms) =>
      new Promise((resolve) => {
        const look = () => messages.find((m) => m.id === id);
        const done = (value) => {
          clearTimeout(timer);
          waiters.splice(waiters.indexOf(check), 1);
          resolve(value);
        };
        const check = () => look() && done(look());
        const timer = setTimeout(() => done(look()), ms);
        waiters.push(check);
        check();
      });
    try {
      send({ jsonrpc: "2.0", id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "raw", version: "0" } } });
      assert.ok(await reply(1, 30_000), "initialize was answered");
      send({ jsonrpc: "2.0", method: "notifications/initialized" });
      const search = (id, filter) => ({
        jsonrpc: "2.0",
        id,
        method: "tools/call",
        params: { name: "search", arguments: { index: "docs", vector: [1, 0, 0, 0, 0, 0, 0, 0], filter } },
      });
      send({
        jsonrpc: "2.0",
        id: 2,
        method: "tools/call",
        params: { name: "upsert", arguments: { index: "docs", vectors: [{ id: "a", vector: [1, 0, 0, 0, 0, 0, 0, 0], metadata: { title: "x🙂" } }], create_index: { dimension: 8 } } },
      });
      const upserted = await reply(2, 30_000);
      assert.ok(upserted?.result && !upserted.result.isError, `upsert: ${JSON.stringify(upserted)}`);
      const line = JSON.stringify(search(3, { title: "x\ud83d" }));
      assert.ok(line.includes("\\ud83d"), line);
      send(line);
      send(search(4, { title: "x🙂" }));
      const after = await reply(4, 30_000);
      assert.deepEqual(after?.result?.structuredContent?.results?.map((h) => h.id), ["a"], "the server keeps serving");
      const answer = (await reply(3, 5_000)) ?? (await reply(null, 1_000));
      assert.ok(
        answer,
        `no answer at all to ${line}: the request was dropped (the client waits for its timeout); ` +
          `a tool error with isError, or JSON-RPC error -32700 with id null, was expected`,
      );
    } finally {
      child.stdin.end();
      const timer = setTimeout(() => child.kill("SIGKILL"), 30_000);
      await exited;
      clearTimeout(timer);
      await removeDir(tmp);
    }
  });
});

/** Deep equality of JSON values, key order ignored. */
function sameJson(a, b) {
  try {
    assert.deepStrictEqual(a, b);
    return true;
  } catch {
    return false;
  }
}
