#!/usr/bin/env node
// The `stride-vectors` command of @stride-vectors/server: finds the prebuilt binary of this
// platform (an optional dependency such as @stride-vectors/server-linux-x64, or the file named
// by $STRIDE_VECTORS_BINARY) and runs it with this process's arguments and stdio. It writes
// nothing to stdout (that is the server's JSON-RPC channel), forwards the signals it receives,
// and exits as the binary did: with its exit code, or by the same signal.
"use strict";

const { spawn } = require("node:child_process");
const fs = require("node:fs");
const path = require("node:path");

/** Platform (`process.platform-process.arch`) to the package that carries its binary. */
const PACKAGES = {
  "linux-x64": "@stride-vectors/server-linux-x64",
  "linux-arm64": "@stride-vectors/server-linux-arm64",
  "darwin-arm64": "@stride-vectors/server-darwin-arm64",
  "darwin-x64": "@stride-vectors/server-darwin-x64",
  "win32-x64": "@stride-vectors/server-win32-x64",
};

/** Signals passed on to the binary; it stops cleanly (flushing) on SIGINT and SIGTERM. */
const FORWARDED = ["SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT"];

function fail(message) {
  process.stderr.write(`stride-vectors: ${message}\n`);
  process.exit(1);
}

function binaryPath() {
  const explicit = process.env.STRIDE_VECTORS_BINARY;
  if (explicit) {
    if (!fs.existsSync(explicit)) fail(`STRIDE_VECTORS_BINARY names ${explicit}, which does not exist`);
    return explicit;
  }
  const platform = `${process.platform}-${process.arch}`;
  const pkg = PACKAGES[platform];
  if (!pkg) {
    fail(
      `no prebuilt binary for ${platform} (there are: ${Object.keys(PACKAGES).join(", ")}). ` +
        `Build it from source (cargo build --release) and set STRIDE_VECTORS_BINARY to its path.`,
    );
  }
  let dir;
  try {
    dir = path.dirname(require.resolve(`${pkg}/package.json`));
  } catch {
    fail(
      `the package ${pkg}, which carries the binary for ${platform}, is not installed. npm installs it ` +
        `as an optional dependency of @stride-vectors/server; it is left out when optional dependencies ` +
        `are omitted (--omit=optional, --no-optional) or when the lockfile was made on another platform. ` +
        `Reinstall @stride-vectors/server with optional dependencies, or set STRIDE_VECTORS_BINARY.`,
    );
  }
  const exe = path.join(dir, "bin", process.platform === "win32" ? "stride-vectors.exe" : "stride-vectors");
  if (!fs.existsSync(exe)) fail(`${pkg} is installed but has no binary at ${exe}; reinstall it`);
  return exe;
}

const exe = binaryPath();
const child = spawn(exe, process.argv.slice(2), { stdio: "inherit", windowsHide: true });

const forward = (signal) => () => {
  if (child.exitCode === null && child.signalCode === null) child.kill(signal);
};
for (const signal of FORWARDED) process.on(signal, forward(signal));

child.on("error", (e) => fail(`cannot run ${exe}: ${e.message}`));
child.on("exit", (code, signal) => {
  if (signal) {
    // Die the same way, so that whoever started us sees what the binary saw.
    for (const s of FORWARDED) process.removeAllListeners(s);
    process.kill(process.pid, signal);
    return;
  }
  process.exit(code ?? 1);
});
