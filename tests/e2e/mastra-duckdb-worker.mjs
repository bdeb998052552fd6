// Runs Mastra's DuckDBVector (@mastra/duckdb) on one DuckDB file in a process of its own, the
// way a Mastra app holds the file, for duckdb-vector.test.mjs. Requests come on stdin as JSON
// lines {id, method, params} and are answered on stdout as `@@rpc {id, result | error}` lines
// (the marker keeps Mastra's own console logging apart). Closing stdin ends the process,
// which is the only way to make DuckDB let go of the file at once: DuckDBVector opens a
// connection per call and never closes them, and its close() only drops its reference.
//
// Usage: node mastra-duckdb-worker.mjs <file.duckdb>

import { createInterface } from "node:readline";

import { DuckDBVector } from "@mastra/duckdb";

const store = new DuckDBVector({ id: "stride-vectors-e2e", path: process.argv[2] });
const reply = (message) => process.stdout.write(`@@rpc ${JSON.stringify(message)}\n`);

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const { id, method, params } = JSON.parse(line);
  try {
    reply({ id, result: (await store[method](params)) ?? null });
  } catch (error) {
    reply({ id, error: error?.message ?? String(error) });
  }
}
process.exit(0);
