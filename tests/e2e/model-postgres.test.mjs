// What this proves: on PostgreSQL too, for every id, the last acknowledged operation wins,
// whatever its kind (embed queued or waited, upsert (also with delete_filter), update
// merge/replace/vector by id or by filter, delete by ids or by filter, delete_index), with
// three stride-vectors processes writing one database at once, sharing one embedding queue,
// and any of them killed (kill -9) or restarted.
//
// The randomized model test of model.test.mjs (model-lib.mjs, `backend: "postgres"`): the
// same random operations and the same reference model, but the three processes store in one
// fresh schema of a PostgreSQL database (`--database ... --pg-schema model_<hex>`). There is
// no owner and no relay: every process is a peer that writes directly, and they share one
// embedding queue whose claims are leased (`--pg-lease-ms 1500` here, so that what a killed
// process had claimed is taken over quickly by another). 1-2 times per sequence a process
// drawn by the seed is killed with SIGKILL and replaced; one is sometimes restarted cleanly
// (it must exit 0); at the end every process is crashed or stopped and a new one must hold
// exactly what the model says once it flushed. The schema and its bookkeeping schema
// (stride_vectors_<schema>) are dropped after each sequence.
//
// Needs a PostgreSQL with pgvector: STRIDE_VECTORS_TEST_POSTGRES, a libpq connection string
// (scripts/test starts one with scripts/postgres and exports it). Without it the test is
// skipped, unless STRIDE_VECTORS_REQUIRE_POSTGRES=1 (CI), where that is a failure.
//
// Environment: as model.test.mjs (MODEL_SEED, MODEL_SECONDS, MODEL_SEQUENCES (default here
// 20: a sequence of 200 ops takes 1.5-3.5 s on PostgreSQL, so about 40 s on an idle machine),
// MODEL_OPS, MODEL_CONCURRENCY, MODEL_WEIGHTS, MODEL_KEEP=1 (also keeps the schemas)).
// `scripts/torture --postgres --seconds N` runs this one for a time budget.

import assert from "node:assert/strict";
import { test } from "node:test";

import { runModel } from "./model-lib.mjs";

const CONNINFO = process.env.STRIDE_VECTORS_TEST_POSTGRES;
const REQUIRED = process.env.STRIDE_VECTORS_REQUIRE_POSTGRES === "1";
const SKIP = !CONNINFO && !REQUIRED && "STRIDE_VECTORS_TEST_POSTGRES is not set (no PostgreSQL with pgvector to test against; scripts/test starts one)";

const seconds = process.env.MODEL_SECONDS ? Number(process.env.MODEL_SECONDS) : null;
/** Sequences by default (1.5-3.5 s each): well under 90 s, even on a busy machine. */
const DEFAULT_SEQUENCES = 20;

test(
  "model on PostgreSQL: the last acknowledged operation wins per id, across three peers, kill -9 and restarts",
  { skip: SKIP, timeout: seconds ? (seconds + 600) * 1000 : 900_000 },
  async (t) => {
    if (!CONNINFO) throw new Error("STRIDE_VECTORS_REQUIRE_POSTGRES=1 but STRIDE_VECTORS_TEST_POSTGRES is not set");
    const totals = await runModel({
      backend: "postgres",
      conninfo: CONNINFO,
      sequences: process.env.MODEL_SEQUENCES ? Number(process.env.MODEL_SEQUENCES) : DEFAULT_SEQUENCES,
      log: (line) => {
        console.log(line);
      },
    });
    const summary =
      `model (PostgreSQL): ${totals.sequences} sequences, ${totals.ops} operations (${totals.calls} tool calls, ` +
      `${totals.searches} searches, ${totals.barriers} barriers), ${totals.kills} process kills, ` +
      `${totals.cleanRestarts} clean restarts, ${totals.unknownOutcomes} unknown outcomes re-established, ` +
      `${totals.embedder.texts} texts embedded in ${totals.embedder.calls} embedding calls, ` +
      `${(totals.ms / 1000).toFixed(1)} s (seed ${totals.seed})`;
    console.log(summary);
    t.diagnostic(summary);
    assert.ok(totals.sequences >= 1);
  },
);
