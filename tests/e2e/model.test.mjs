// What this proves: for every id, the last acknowledged operation wins, whatever its kind
// (embed queued or waited, upsert (also with delete_filter), update merge/replace/vector by id
// or by filter, delete by ids or by filter, delete_index), across processes, owner crashes
// (kill -9) and restarts.
//
// A seeded, randomized model test (model-lib.mjs): three stride-vectors processes on one
// DuckDB file (owner + two relays), driven by 1.x (@modelcontextprotocol/sdk) and 2.x
// (@modelcontextprotocol/client, revision 2026-07-28) clients, with an Ollama stand-in
// (fake-ollama.mjs) whose vectors are known exactly. Random operations over 2 indexes x 6 ids
// run concurrently (never two at once on one id; delete and update by filter, upsert with
// delete_filter, delete_index and flush alone); the owner is killed and replaced 1-2 times per
// sequence; one process is sometimes restarted cleanly; at the end every process is crashed or
// stopped and a new one must hold exactly what the model says. Every answer, every search hit
// and the final contents are checked against the reference model.
//
// Environment: MODEL_SEED (the run's seed; printed either way), MODEL_SECONDS (run sequences
// until that many seconds elapsed, instead of MODEL_SEQUENCES, default 10), MODEL_OPS (ops per
// sequence, default 200), MODEL_CONCURRENCY (default 4), MODEL_AVOID (comma list:
// "v2-relay" keeps the 2.x clients on the owner, "unknown-tool" skips that call: only to look
// past known bugs), MODEL_KEEP=1 (keep the temporary directories). A failure prints the seed
// that replays its sequence, the op log tail and where the full log and server logs are.
// scripts/torture runs this for a time budget.

import assert from "node:assert/strict";
import { test } from "node:test";

import { runModel } from "./model-lib.mjs";

const seconds = process.env.MODEL_SECONDS ? Number(process.env.MODEL_SECONDS) : null;

test(
  "model: the last acknowledged operation wins per id, across owner + relays, kill -9 and restarts",
  { timeout: seconds ? (seconds + 600) * 1000 : 900_000 },
  async (t) => {
    const totals = await runModel({
      log: (line) => {
        console.log(line);
      },
    });
    const summary =
      `model: ${totals.sequences} sequences, ${totals.ops} operations (${totals.calls} tool calls, ` +
      `${totals.searches} searches, ${totals.barriers} barriers), ${totals.kills} owner kills, ` +
      `${totals.ownerExits} owner exits (hand-overs), ${totals.cleanRestarts} clean restarts, ${totals.unknownOutcomes} unknown outcomes re-established, ` +
      `${totals.embedder.texts} texts embedded in ${totals.embedder.calls} embedding calls, ` +
      `${(totals.ms / 1000).toFixed(1)} s (seed ${totals.seed})`;
    console.log(summary);
    t.diagnostic(summary);
    assert.ok(totals.sequences >= 1);
  },
);
