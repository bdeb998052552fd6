// What this proves: what `scripts/package` builds installs and runs the way MCP users install
// servers, offline.
//
// - npm: the launcher tarball and the linux-x64 binary tarball install into an empty project
//   with no registry (`npm install --offline`), and `npx stride-vectors` is a working MCP
//   server for the MCP Inspector CLI: tools/list, a search, and exit code 5 on a tool error.
// - The launcher passes everything through untouched: stdout (byte for byte), the exit code,
//   signals both ways (SIGTERM to the launcher reaches the server, which stops cleanly and
//   leaves no orphan; a server killed by SIGKILL makes the launcher die of SIGKILL too), and
//   it fails with a clear message when no platform package is installed.
// - The Claude Desktop bundle: `mcpb unpack`, `mcpb validate` on its manifest, then the
//   server started exactly as the manifest's mcp_config says, with `${__dirname}` and the
//   user_config substituted by @anthropic-ai/mcpb's own getMcpConfigForManifest (what
//   Claude Desktop uses), with the default embedder and with user settings pointing at an
//   Ollama stand-in; the tools it lists are the manifest's, word for word.
//
// `scripts/test` runs `scripts/package` before these tests; run it by hand when running them
// alone.

import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync, readFileSync, statSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";

import { getMcpConfigForManifest } from "@anthropic-ai/mcpb";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

import { startFakeOllama, fakeVector, FAKE_DIM } from "./fake-ollama.mjs";
import {
  TOOL_NAMES,
  callTool,
  inspectorCli,
  isAlive,
  makeTempDir,
  modelEnv,
  removeDir,
  startRawServer,
  waitFor,
} from "./helpers.mjs";

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const VERSION = readFileSync(path.join(ROOT, "Cargo.toml"), "utf8").match(/^version = "([^"]+)"/m)[1];
const LAUNCHER_TGZ = path.join(ROOT, "dist", "npm", `stride-vectors-server-${VERSION}.tgz`);
const BINARY_TGZ = path.join(ROOT, "dist", "npm", `stride-vectors-server-linux-x64-${VERSION}.tgz`);
const BUNDLE = path.join(ROOT, "dist", "stride-vectors.mcpb");
const MCPB_CLI = path.join(ROOT, "tests", "e2e", "node_modules", ".bin", "mcpb");

/** Runs a command to its end: {code, signal, stdout, stderr}. */
function run(command, args, { cwd, env = process.env, timeoutMs = 300_000 } = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { cwd, env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (t) => (stdout += t));
    child.stderr.setEncoding("utf8").on("data", (t) => (stderr += t));
    const timer = setTimeout(() => child.kill("SIGKILL"), timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** An empty npm project in `dir` with `tarballs` installed from disk, no registry. */
async function installOffline(dir, tarballs, extra = []) {
  await writeFile(path.join(dir, "package.json"), JSON.stringify({ name: "empty-project", private: true }));
  const out = await run(
    "npm",
    ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", ...extra, ...tarballs],
    { cwd: dir },
  );
  assert.equal(out.code, 0, `npm install failed:\n${out.stdout}\n${out.stderr}`);
}

describe("what scripts/package builds, installed as users install it", { timeout: 900_000 }, () => {
  let dir;
  let project;

  before(async () => {
    for (const f of [LAUNCHER_TGZ, BINARY_TGZ, BUNDLE]) {
      assert.ok(existsSync(f), `${f} is missing: run scripts/package first (scripts/test does)`);
    }
    dir = await makeTempDir("sv-pkg-");
    project = path.join(dir, "project");
    await mkdir(project, { recursive: true });
    await installOffline(project, [LAUNCHER_TGZ, BINARY_TGZ]);
  });

  after(async () => {
    if (dir) await removeDir(dir);
  });

  test("npx stride-vectors serves the Inspector CLI: tools/list, a search, exit code 5 on a tool error", async () => {
    const db = path.join(dir, "npx.duckdb");
    const inspect = (args) => inspectorCli(["npx", "stride-vectors", "--db", db, ...args], { cwd: project, scratchDir: dir });

    const listed = await inspect(["--method", "tools/list"]);
    assert.equal(listed.code, 0, `tools/list exited ${listed.code}\n${listed.stderr}`);
    assert.deepEqual(listed.json.result.tools.map((t) => t.name).sort(), [...TOOL_NAMES].sort());

    const call = (tool, args) =>
      inspect(["--method", "tools/call", "--tool-name", tool, "--tool-args-json", JSON.stringify(args)]);
    let out = await call("create_index", { index: "notes", dimension: 3 });
    assert.equal(out.code, 0, out.stderr);
    out = await call("upsert", {
      index: "notes",
      vectors: [
        { id: "x", vector: [1, 0, 0], metadata: { kind: "a" } },
        { id: "y", vector: [0, 1, 0], metadata: { kind: "b" } },
      ],
    });
    assert.equal(out.code, 0, out.stderr);
    out = await call("search", { index: "notes", vector: [0.9, 0.1, 0], top_k: 2 });
    assert.equal(out.code, 0, out.stderr);
    assert.deepEqual(
      out.json.result.structuredContent.results.map((r) => r.id),
      ["x", "y"],
    );

    out = await call("search", { index: "no_such_index", vector: [1, 0, 0] });
    assert.equal(out.code, 5, `a tool error is exit code 5, got ${out.code}\n${out.stdout}\n${out.stderr}`);
    assert.match(out.json.result.content[0].text, /no_such_index/);
  });

  test("the launcher passes stdout, exit codes and signals through untouched", async () => {
    const launcher = path.join(project, "node_modules", ".bin", "stride-vectors");

    const version = await run(launcher, ["--version"]);
    assert.equal(version.code, 0);
    assert.equal(version.stdout, `stride-vectors ${VERSION}\n`, "stdout is the binary's, byte for byte");

    const bad = await run(launcher, ["--no-such-flag"]);
    assert.equal(bad.code, 2, "clap's usage error code comes through");
    assert.equal(bad.stdout, "");
    assert.match(bad.stderr, /--no-such-flag/);

    // SIGTERM to the launcher reaches the server, which stops cleanly (exit 0) and is gone.
    const db = path.join(dir, "signals.duckdb");
    const server = await startRawServer({ command: launcher, db, env: modelEnv() });
    await server.initialize("2025-06-18");
    const stats = await server.request("tools/call", { name: "stats", arguments: {} });
    const serverPid = stats.result.structuredContent.pid;
    assert.notEqual(serverPid, server.pid, "the launcher is a separate process");
    server.child.kill("SIGTERM");
    assert.deepEqual(await server.exited, { code: 0, signal: null });
    await waitFor(() => !isAlive(serverPid), { timeoutMs: 10_000, what: "the server to exit with its launcher" });
    assert.deepEqual(server.badLines, [], "nothing but JSON-RPC reached stdout");

    // A server that dies of a signal takes its launcher with it, by the same signal.
    const doomed = await startRawServer({ command: launcher, db, env: modelEnv() });
    await doomed.initialize("2025-06-18");
    const doomedStats = await doomed.request("tools/call", { name: "stats", arguments: {} });
    process.kill(doomedStats.result.structuredContent.pid, "SIGKILL");
    assert.deepEqual(await doomed.exited, { code: null, signal: "SIGKILL" });
  });

  test("without a platform package the launcher says what is missing and how to fix it", async () => {
    const bare = path.join(dir, "bare");
    await mkdir(bare, { recursive: true });
    await installOffline(bare, [LAUNCHER_TGZ], ["--omit=optional"]);
    const out = await run(path.join(bare, "node_modules", ".bin", "stride-vectors"), ["--version"]);
    assert.equal(out.code, 1);
    assert.equal(out.stdout, "");
    assert.match(out.stderr, /@stride-vectors\/server-linux-x64/);
    assert.match(out.stderr, /STRIDE_VECTORS_BINARY/);

    const custom = await run(path.join(bare, "node_modules", ".bin", "stride-vectors"), ["--version"], {
      env: { ...process.env, STRIDE_VECTORS_BINARY: path.join(project, "node_modules", "@stride-vectors", "server-linux-x64", "bin", "stride-vectors") },
    });
    assert.equal(custom.code, 0, custom.stderr);
    assert.equal(custom.stdout, `stride-vectors ${VERSION}\n`);
  });

  test("the Claude Desktop bundle validates, unpacks and runs as its manifest says", async () => {
    const unpacked = path.join(dir, "bundle");
    const unpack = await run(MCPB_CLI, ["unpack", BUNDLE, unpacked]);
    assert.equal(unpack.code, 0, `mcpb unpack failed:\n${unpack.stdout}\n${unpack.stderr}`);
    const manifestPath = path.join(unpacked, "manifest.json");
    const validate = await run(MCPB_CLI, ["validate", manifestPath]);
    assert.equal(validate.code, 0, `mcpb validate failed:\n${validate.stdout}\n${validate.stderr}`);

    const manifest = JSON.parse(readFileSync(manifestPath, "utf8"));
    assert.equal(manifest.version, VERSION);
    assert.equal(manifest.server.type, "binary");
    // Every platform listed has its binary in the bundle and its own override; this one's
    // (linux) is what Claude Desktop would start here.
    assert.ok(manifest.compatibility.platforms.includes("linux"), manifest.compatibility.platforms);
    for (const platform of manifest.compatibility.platforms) {
      const command = manifest.server.mcp_config.platform_overrides[platform].command;
      const file = path.join(unpacked, command.replace("${__dirname}/", ""));
      assert.ok(existsSync(file), `${platform}: ${file} is in the bundle`);
      assert.ok((statSync(file).mode & 0o111) !== 0, `${platform}: the unpacked binary is executable`);
    }
    const entry = path.join(unpacked, "server", "linux", "stride-vectors");

    const launch = async (userConfig) => {
      const config = await getMcpConfigForManifest({
        manifest,
        extensionPath: unpacked,
        systemDirs: { HOME: os.homedir(), DESKTOP: path.join(os.homedir(), "Desktop"), DOCUMENTS: path.join(os.homedir(), "Documents") },
        userConfig,
        pathSeparator: path.sep,
      });
      assert.ok(config, "the manifest yields an mcp_config for this user_config");
      assert.equal(config.command, entry);
      assert.doesNotMatch(JSON.stringify(config), /\$\{/, "every variable is substituted");
      // A stdio client passes the server only a few variables plus the config's own.
      const env = { PATH: process.env.PATH, HOME: os.homedir(), ...modelEnv(), ...config.env };
      const client = new Client({ name: "claude-desktop-like", version: "0.0.0" });
      await client.connect(new StdioClientTransport({ command: config.command, args: config.args ?? [], env, stderr: "ignore" }));
      return { client, config };
    };

    // Defaults: the local model, the chosen folder.
    const folder = path.join(dir, "claude-data");
    const { client, config } = await launch({ database_dir: folder });
    assert.equal(config.env.VECTOR_DB_DIR, folder);
    try {
      const { tools } = await client.listTools();
      assert.deepEqual(
        tools.map((t) => ({ name: t.name, description: t.description })),
        manifest.tools,
        "the manifest's tools are the server's, word for word",
      );
      await callTool(client, "embed", {
        index: "notes",
        wait: true,
        documents: [
          { id: "rent", text: "I pay 450 euros of rent in Lyon" },
          { id: "job", text: "A weekend job as a barista near the campus" },
        ],
      });
      const hits = await callTool(client, "search", { index: "notes", query: "housing costs", top_k: 1 });
      assert.equal(hits.results[0].id, "rent");
      const stats = await callTool(client, "stats", {});
      assert.equal(stats.database, path.join(folder, "stride-vectors.duckdb"));
      assert.equal(stats.model, "all-MiniLM-L6-v2");
    } finally {
      await client.close();
    }

    // User settings: an Ollama embedder with its URL and model.
    const ollama = await startFakeOllama();
    try {
      const other = await launch({
        database_dir: path.join(dir, "claude-ollama"),
        embedder: "ollama",
        embedder_url: ollama.url,
        embedder_model: "m2v-bge-m3-1024d",
      });
      try {
        await callTool(other.client, "embed", { index: "notes", wait: true, documents: [{ id: "a", text: "budget" }] });
        const got = await callTool(other.client, "fetch", { index: "notes", ids: ["a"] });
        assert.equal(got.vectors[0].vector.length, FAKE_DIM);
        assert.deepEqual(got.vectors[0].vector, fakeVector("budget"));
        const stats = await callTool(other.client, "stats", {});
        assert.equal(stats.model, "m2v-bge-m3-1024d");
        assert.ok(ollama.stats().calls >= 1);
      } finally {
        await other.client.close();
      }
    } finally {
      await ollama.close();
    }
  });
});
