// Shared helpers for the end-to-end tests: where the release binary is, fresh temporary
// directories, starting a stride-vectors process driven by the official MCP TypeScript SDK
// `Client`, calling a tool (structuredContent back, or a thrown ToolError carrying the
// server's error text), and stopping a server the way an MCP client does (close stdin, wait
// for the process to exit by itself).
//
// The binary is `$STRIDE_VECTORS_BIN` if set, else
// `${CARGO_TARGET_DIR:-$HOME/.cache/stride-vectors/target}/release/stride-vectors`
// (where scripts/test and .ci/run build it). These tests never build it.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { constants as fsConstants } from "node:fs";
import { access, mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";

import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { ReadBuffer, serializeMessage } from "@modelcontextprotocol/sdk/shared/stdio.js";

export const TARGET_DIR =
  process.env.CARGO_TARGET_DIR ?? path.join(os.homedir(), ".cache", "stride-vectors", "target");
export const BIN = process.env.STRIDE_VECTORS_BIN ?? path.join(TARGET_DIR, "release", "stride-vectors");

/**
 * What runs the binary: nothing (it runs natively), or `$STRIDE_VECTORS_RUNNER` split on
 * spaces (`wine` for the Windows build, `qemu-aarch64 -L /usr/aarch64-linux-gnu` for Linux
 * arm64: scripts/test-platforms sets both variables).
 */
export const RUNNER = (process.env.STRIDE_VECTORS_RUNNER ?? "").split(/\s+/).filter(Boolean);

/** The command and arguments that start the binary under test with `args`. */
export function serverCommand(args = []) {
  return RUNNER.length === 0
    ? { command: BIN, args }
    : { command: RUNNER[0], args: [...RUNNER.slice(1), BIN, ...args] };
}

/** The tools every stride-vectors server lists. */
export const TOOL_NAMES = [
  "create_index",
  "delete",
  "delete_index",
  "describe_index",
  "embed",
  "fetch",
  "flush",
  "list_indexes",
  "search",
  "stats",
  "update",
  "upsert",
];

/**
 * The variables that say where the model is (see scripts/fetch-model), those of them that are
 * set. MCP clients pass a stdio server only a few variables of their own environment (HOME,
 * PATH, ...) plus what their configuration names, so a test that moved the model elsewhere
 * has to name these too; by default this is empty.
 */
export function modelEnv() {
  const env = {};
  for (const key of ["STRIDE_VECTORS_MODEL_DIR", "XDG_CACHE_HOME"]) {
    if (process.env[key] !== undefined) env[key] = process.env[key];
  }
  return env;
}

const require = createRequire(import.meta.url);
const inspectorPkgPath = require.resolve("@modelcontextprotocol/inspector/package.json");
const inspectorPkg = JSON.parse(readFileSync(inspectorPkgPath, "utf8"));
/** The installed Inspector's version, and the bin that `npx @modelcontextprotocol/inspector` runs. */
export const INSPECTOR_VERSION = inspectorPkg.version;
export const INSPECTOR = path.join(path.dirname(inspectorPkgPath), inspectorPkg.bin.inspector);

/**
 * Runs `mcp-inspector --cli --format json -q -e <model env> ...serverArgv` (serverArgv: the
 * server's command and its arguments, then the Inspector's `--method ...`) in `cwd`, keeping
 * the Inspector's own files in `scratchDir`. Resolves {code, stdout, stderr, json (stdout
 * parsed), error (the stderr envelope, if any)}.
 */
export function inspectorCli(serverArgv, { scratchDir, cwd, timeoutMs = 180_000 } = {}) {
  return new Promise((resolve, reject) => {
    const envFlags = Object.entries(modelEnv()).flatMap(([k, v]) => ["-e", `${k}=${v}`]);
    const argv = [INSPECTOR, "--cli", "--format", "json", "-q", ...envFlags, ...RUNNER, ...serverArgv];
    const child = spawn(process.execPath, argv, {
      cwd,
      env: {
        ...process.env,
        // Keep the Inspector's own files (catalog, client config) out of $HOME.
        MCP_CATALOG_PATH: path.join(scratchDir, "inspector-catalog.json"),
        MCP_CLIENT_CONFIG_PATH: path.join(scratchDir, "inspector-client.json"),
      },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (t) => (stdout += t));
    child.stderr.setEncoding("utf8").on("data", (t) => (stderr += t));
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`inspector ${serverArgv.join(" ")} did not finish in ${timeoutMs} ms\nstdout:${stdout}\nstderr:${stderr}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      const parseLastJsonLine = (text) => {
        const lines = text.trim().split("\n").filter((l) => l.startsWith("{"));
        return lines.length ? JSON.parse(lines.at(-1)) : undefined;
      };
      let json;
      try {
        json = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch (e) {
        reject(new Error(`inspector printed something that is not JSON: ${stdout}\nstderr:${stderr}`));
        return;
      }
      resolve({ code, stdout, stderr, json, error: parseLastJsonLine(stderr)?.error });
    });
  });
}

/** Dimension of the default embedder (all-MiniLM-L6-v2). */
export const MODEL_DIM = 384;
export const MODEL_NAME = "all-MiniLM-L6-v2";

/** Generous per-call timeout: the first embedding call may wait for the model to load. */
export const CALL_TIMEOUT_MS = 180_000;

/**
 * Resolves when the release binary exists and is executable. A rebuild replaces it, so a
 * missing file is waited for (up to `timeoutMs`) before giving up with a clear message.
 */
export async function waitForBinary(timeoutMs = 180_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      await access(BIN, fsConstants.X_OK);
      return BIN;
    } catch {
      if (Date.now() > deadline) {
        throw new Error(
          `stride-vectors binary not found at ${BIN}: build it first (cargo build --release), ` +
            `or point STRIDE_VECTORS_BIN at it`,
        );
      }
      await sleep(1000);
    }
  }
}

/** A fresh, empty temporary directory. */
export function makeTempDir(prefix = "sv-e2e-") {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** Removes a directory tree made by makeTempDir (never fails a test). */
export async function removeDir(dir) {
  if (dir) await rm(dir, { recursive: true, force: true, maxRetries: 3 });
}

/** A tool result with `isError: true`, carrying the server's error text. */
export class ToolError extends Error {
  constructor(tool, text, result) {
    super(`${tool}: ${text}`);
    this.name = "ToolError";
    this.tool = tool;
    this.text = text;
    this.result = result;
  }
}

/** The concatenated text blocks of a tool result. */
export function resultText(result) {
  return (result.content ?? [])
    .filter((block) => block.type === "text")
    .map((block) => block.text)
    .join("\n");
}

/**
 * Calls a tool through an SDK `Client` and returns its structuredContent. A result with
 * `isError: true` throws a ToolError with the server's text. Every successful result is also
 * checked to be structured as promised: an object in `structuredContent` and a text block
 * holding the same JSON. (The SDK itself validates structuredContent against the tool's
 * outputSchema, because startServer lists the tools first.)
 */
export async function callTool(client, name, args = {}, { timeout = CALL_TIMEOUT_MS } = {}) {
  const result = await client.callTool({ name, arguments: args }, undefined, {
    timeout,
    maxTotalTimeout: timeout,
  });
  if (result.isError) throw new ToolError(name, resultText(result), result);
  const structured = result.structuredContent;
  assert.ok(
    structured && typeof structured === "object" && !Array.isArray(structured),
    `${name}: structuredContent is not an object: ${JSON.stringify(result)}`,
  );
  assertSameJson(JSON.parse(resultText(result)), structured, `${name}: text copy vs structuredContent`);
  return structured;
}

/**
 * Deep equality of two JSON values, numbers compared to within a few f64 ulps (relative
 * 1e-12). Known server issue: through a relay, floats in structuredContent can come back
 * 1-2 f64 ulps away from the stored f32 value (the relay re-parses the owner's JSON with
 * serde_json's best-effort float parser) while the text copy is exact; sdk.test.mjs has an
 * exact test for that, and everything else tolerates it.
 */
export function assertSameJson(actual, expected, where = "value") {
  if (typeof actual === "number" && typeof expected === "number") {
    const tolerance = 1e-12 * Math.max(1, Math.abs(actual), Math.abs(expected));
    assert.ok(Math.abs(actual - expected) <= tolerance, `${where}: ${actual} != ${expected}`);
    return;
  }
  if (Array.isArray(actual) || Array.isArray(expected)) {
    assert.ok(Array.isArray(actual) && Array.isArray(expected), `${where}: array vs non-array`);
    assert.equal(actual.length, expected.length, `${where}: lengths differ`);
    actual.forEach((item, i) => assertSameJson(item, expected[i], `${where}[${i}]`));
    return;
  }
  if (actual && expected && typeof actual === "object" && typeof expected === "object") {
    assert.deepEqual(Object.keys(actual).sort(), Object.keys(expected).sort(), `${where}: keys differ`);
    for (const key of Object.keys(actual)) assertSameJson(actual[key], expected[key], `${where}.${key}`);
    return;
  }
  assert.equal(actual, expected, where);
}

/**
 * An MCP client transport over a child process that this module spawned itself, so that a
 * test keeps the process (pid, exit code, stderr) and can stop it exactly as a client
 * should: by closing its stdin and waiting. Framing is the SDK's own (ReadBuffer and
 * serializeMessage from @modelcontextprotocol/sdk/shared/stdio.js).
 */
class ChildProcessTransport {
  constructor(child) {
    this.child = child;
    this.readBuffer = new ReadBuffer();
  }

  async start() {
    this.child.stdout.on("data", (chunk) => {
      this.readBuffer.append(chunk);
      for (;;) {
        let message;
        try {
          message = this.readBuffer.readMessage();
        } catch (error) {
          this.onerror?.(error);
          continue;
        }
        if (message === null) break;
        this.onmessage?.(message);
      }
    });
    this.child.on("close", () => this.onclose?.());
    this.child.stdin.on("error", (error) => this.onerror?.(error));
  }

  send(message) {
    return new Promise((resolve, reject) => {
      if (!this.child.stdin.writable) {
        reject(new Error("the server's stdin is closed"));
        return;
      }
      if (this.child.stdin.write(serializeMessage(message))) resolve();
      else this.child.stdin.once("drain", resolve);
    });
  }

  async close() {
    this.child.stdin.end();
  }
}

/**
 * Spawn the release binary (or `command`, e.g. the npm launcher) on `db` with `args` and
 * `env`, once it has started: its child process, `stderr()` (what it logged so far, the last
 * 500 kB to 1 MB of it) and `exited` (resolves to { code, signal }).
 */
async function spawnServer({ db, args = [], env = {}, command = BIN }) {
  if (command === BIN) await waitForBinary();
  const argv = [...(db ? ["--db", db] : []), ...args];
  const started = command === BIN ? serverCommand(argv) : { command, args: argv };
  const child = spawn(started.command, started.args, {
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
  let logged = "";
  child.stderr.setEncoding("utf8");
  child.stderr.on("data", (text) => {
    logged += text;
    if (logged.length > 1_000_000) logged = logged.slice(-500_000);
  });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));
  await new Promise((resolve, reject) => {
    child.once("spawn", resolve);
    child.once("error", reject);
  });
  return { child, stderr: () => logged, exited };
}

/**
 * Starts `stride-vectors` (the release binary) with `--db db` (unless `db` is null: then the
 * environment decides, e.g. VECTOR_DB_DIR) and connects an SDK Client to it. Returns a handle:
 *   call(name, args)  -> structuredContent, or throws ToolError
 *   client            -> the connected @modelcontextprotocol/sdk Client
 *   tools             -> the tools/list answer
 *   pid, stderr()     -> the process and what it logged so far
 *   stop()            -> closes stdin and waits for a clean exit; resolves {code, signal}
 *   kill()            -> SIGKILL (cleanup after a failure)
 */
export async function startServer({ db, env = {}, args = [], name = "stride-vectors-e2e", command } = {}) {
  const { child, stderr, exited } = await spawnServer({ db, args, env, command });

  const client = new Client({ name, version: "0.0.0" });
  try {
    await client.connect(new ChildProcessTransport(child), { timeout: 60_000 });
  } catch (error) {
    child.kill("SIGKILL");
    throw new Error(`could not initialize stride-vectors: ${error.message}\nstderr:\n${stderr()}`);
  }
  const { tools } = await client.listTools();

  let stopped = null;
  const handle = {
    client,
    tools,
    pid: child.pid,
    child,
    exited,
    stderr,
    call: (toolName, toolArgs, options) => callTool(client, toolName, toolArgs, options),
    /** Closes stdin (what an MCP client does to end a stdio session) and waits for exit. */
    stop(timeoutMs = 60_000) {
      stopped ??= (async () => {
        child.stdin.end();
        // Unref'd: a pending timer must not keep the test process alive after the exit.
        const timer = sleep(timeoutMs, "timeout", { ref: false });
        const outcome = await Promise.race([exited, timer]);
        if (outcome === "timeout") {
          child.kill("SIGKILL");
          await exited;
          throw new Error(`stride-vectors (pid ${child.pid}) did not exit ${timeoutMs} ms after its stdin closed`);
        }
        return outcome;
      })();
      return stopped;
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      return exited;
    },
  };
  return handle;
}

/** Waits until `predicate()` (sync or async) is truthy, polling; throws after `timeoutMs`. */
export async function waitFor(predicate, { timeoutMs = 60_000, intervalMs = 100, what = "condition" } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** A deterministic pseudo-random unit-ish vector (same seed, same vector). */
export function seededVector(seed, dim) {
  let state = (seed * 2654435761) >>> 0 || 1;
  const out = [];
  for (let i = 0; i < dim; i++) {
    state ^= state << 13;
    state >>>= 0;
    state ^= state >>> 17;
    state ^= state << 5;
    state >>>= 0;
    // Values representable exactly as f32 (multiples of 1/1024 in [-1, 1]) so that what we
    // send is what DuckDB stores.
    out.push(Math.round(((state / 0xffffffff) * 2 - 1) * 1024) / 1024);
  }
  return out;
}

/** Stride-shaped sample documents (the shape of fixtures/stride-sample.json). */
export const STRIDE_PROFILES = [
  {
    id: "profile-lyon-cs",
    text: "Education: Master. Field: Computer Science. Skills: python, sql, react. Location Lyon. Monthly income 900. Monthly expenses 750. Goals: Laptop (1200)",
    metadata: { profileId: "profile-lyon-cs", diploma: "Master", skills: ["python", "sql", "react"], monthlyMargin: 150, city: "Lyon" },
  },
  {
    id: "profile-paris-eco",
    text: "Education: Bachelor. Field: Economics. Skills: excel, accounting. Location Paris. Monthly income 1100. Monthly expenses 1050. Goals: Erasmus semester (3000)",
    metadata: { profileId: "profile-paris-eco", diploma: "Bachelor", skills: ["excel", "accounting"], monthlyMargin: 50, city: "Paris" },
  },
  {
    id: "profile-nantes-design",
    text: "Education: Bachelor. Field: Graphic Design. Skills: figma, illustration, photography. Location Nantes. Monthly income 700. Monthly expenses 600. Goals: Camera (900)",
    metadata: { profileId: "profile-nantes-design", diploma: "Bachelor", skills: ["figma", "illustration", "photography"], monthlyMargin: 100, city: "Nantes" },
  },
  {
    id: "profile-toulouse-data",
    text: "Education: Master. Field: Data Science. Skills: python, machine learning, statistics. Location Toulouse. Monthly income 1200. Monthly expenses 800. Goals: Driving licence (1500)",
    metadata: { profileId: "profile-toulouse-data", diploma: "Master", skills: ["python", "machine learning", "statistics"], monthlyMargin: 400, city: "Toulouse" },
  },
];

/** Whether a process with this PID exists (signal 0). */
export function isAlive(pid) {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return error.code !== "ESRCH";
  }
}

/**
 * Starts `stride-vectors` with no MCP client library in between: the test writes raw lines to
 * its stdin and reads newline-delimited JSON-RPC from its stdout. Every stdout line is kept
 * (`lines`); those that are not a JSON object with `jsonrpc: "2.0"` are also listed in
 * `badLines`, so a test can check that nothing but JSON-RPC reached stdout. Returns a handle:
 *   writeLine(text)            -> writes text + "\n" as is (garbage, truncated JSON, ...)
 *   send(message)              -> writes JSON.stringify(message) + "\n"
 *   answerTo(id, {timeoutMs})  -> the response (result or error) carrying this id (null too);
 *                                 each response is handed out once
 *   request(method, params, {id, timeoutMs}) -> sends a request and waits for its answer
 *   initialize(protocolVersion)-> initialize + notifications/initialized; the result
 *   answersTo(id)              -> every response received so far with this id
 *   pid, child, stderr(), lines, messages, badLines, exited
 *   stop(timeoutMs)            -> closes stdin, waits for the exit (SIGKILL after timeoutMs)
 *   kill()                     -> SIGKILL
 */
export async function startRawServer({ db, args = [], env = {}, command } = {}) {
  const { child, stderr, exited } = await spawnServer({ db, args, env, command });
  child.stdin.on("error", () => {}); // a write after the process died is reported by the test itself

  const lines = [];
  const messages = [];
  const badLines = [];
  const handedOut = new Set(); // indexes into `messages` already returned by answerTo
  let waiters = [];
  let pending = "";
  const wake = () => {
    const still = [];
    for (const waiter of waiters) if (!waiter.check()) still.push(waiter);
    waiters = still;
  };
  child.stdout.setEncoding("utf8");
  child.stdout.on("data", (chunk) => {
    pending += chunk;
    let at;
    while ((at = pending.indexOf("\n")) >= 0) {
      const line = pending.slice(0, at);
      pending = pending.slice(at + 1);
      lines.push(line);
      let message;
      try {
        message = JSON.parse(line);
      } catch {
        badLines.push(line);
        continue;
      }
      if (!message || typeof message !== "object" || Array.isArray(message) || message.jsonrpc !== "2.0") {
        badLines.push(line);
        continue;
      }
      messages.push(message);
    }
    wake();
  });
  child.once("exit", () => {
    if (pending.length > 0) {
      lines.push(pending);
      badLines.push(pending);
      pending = "";
    }
    wake();
  });

  const isResponse = (m) => "id" in m && ("result" in m || "error" in m) && !("method" in m);
  const write = (text) =>
    new Promise((resolve, reject) => {
      if (!child.stdin.writable) {
        reject(new Error(`stride-vectors (pid ${child.pid}) stdin is closed`));
        return;
      }
      child.stdin.write(text, (error) => (error ? reject(error) : resolve()));
    });
  let nextId = 1_000_000;

  const handle = {
    pid: child.pid,
    child,
    exited,
    lines,
    messages,
    badLines,
    stderr,
    writeLine: (text) => write(`${text}\n`),
    send: (message) => write(`${JSON.stringify(message)}\n`),
    answersTo: (id) => messages.filter((m) => isResponse(m) && m.id === id),
    /** The next response carrying `id` (compared with ===, so `null` matches `id: null`). */
    answerTo(id, { timeoutMs = 5_000 } = {}) {
      return new Promise((resolve, reject) => {
        let timer;
        const check = () => {
          const index = messages.findIndex((m, i) => !handedOut.has(i) && isResponse(m) && m.id === id);
          if (index >= 0) {
            handedOut.add(index);
            clearTimeout(timer);
            resolve(messages[index]);
            return true;
          }
          if (child.exitCode !== null || child.signalCode !== null) {
            clearTimeout(timer);
            reject(new Error(`stride-vectors exited (${child.exitCode ?? child.signalCode}) before answering id ${JSON.stringify(id)}`));
            return true;
          }
          return false;
        };
        timer = setTimeout(() => {
          waiters = waiters.filter((w) => w.check !== check);
          reject(new Error(`no answer to id ${JSON.stringify(id)} within ${timeoutMs} ms`));
        }, timeoutMs);
        if (!check()) waiters.push({ check });
      });
    },
    async request(method, params, { id = nextId++, timeoutMs = 10_000 } = {}) {
      await handle.send({ jsonrpc: "2.0", id, method, ...(params === undefined ? {} : { params }) });
      return handle.answerTo(id, { timeoutMs });
    },
    async initialize(protocolVersion = "2025-11-25", { timeoutMs = 30_000 } = {}) {
      const answer = await handle.request(
        "initialize",
        { protocolVersion, capabilities: {}, clientInfo: { name: "stride-vectors-raw-e2e", version: "0.0.0" } },
        { timeoutMs },
      );
      if (answer.error) throw new Error(`initialize failed: ${JSON.stringify(answer.error)}`);
      await handle.send({ jsonrpc: "2.0", method: "notifications/initialized" });
      return answer.result;
    },
    stop(timeoutMs = 30_000) {
      return (async () => {
        child.stdin.end();
        const outcome = await Promise.race([exited, sleep(timeoutMs, "timeout", { ref: false })]);
        if (outcome === "timeout") {
          child.kill("SIGKILL");
          await exited;
          throw new Error(`stride-vectors (pid ${child.pid}) did not exit ${timeoutMs} ms after its stdin closed`);
        }
        return outcome;
      })();
    },
    kill() {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      return exited;
    },
  };
  return handle;
}

/** Cosine similarity of two vectors, in f64 (what a score should be, up to f32 rounding). */
export function cosine(a, b) {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < a.length; i++) {
    dot += a[i] * b[i];
    na += a[i] * a[i];
    nb += b[i] * b[i];
  }
  return dot / Math.sqrt(na * nb);
}
