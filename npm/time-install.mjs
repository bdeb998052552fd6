// Measures what a user waits for: from an empty directory to the first answered tools/list
// through `npx stride-vectors`, installing the tarballs that scripts/package put in dist/npm
// (offline; with a registry, add the download of the linux-x64 tarball). The model download
// is not included: tools/list never waits for the model.
//
//   node npm/time-install.mjs [runs]
import { execFileSync, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
const version = readFileSync(path.join(root, "Cargo.toml"), "utf8").match(/^version = "([^"]+)"/m)[1];
const tarballs = ["stride-vectors-server", "stride-vectors-server-linux-x64"].map((n) =>
  path.join(root, "dist", "npm", `${n}-${version}.tgz`),
);
const line = (message) => `${JSON.stringify({ jsonrpc: "2.0", ...message })}\n`;

async function once() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "sv-install-"));
  try {
    writeFileSync(path.join(dir, "package.json"), '{"name":"empty","private":true}');
    const t0 = performance.now();
    execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", ...tarballs], {
      cwd: dir,
      stdio: "ignore",
    });
    const t1 = performance.now();
    const child = spawn("npx", ["stride-vectors", "--db", path.join(dir, "v.duckdb")], {
      cwd: dir,
      stdio: ["pipe", "pipe", "ignore"],
    });
    const answered = new Promise((resolve) => {
      let seen = "";
      child.stdout.on("data", (chunk) => {
        seen += chunk;
        if (seen.includes('"id":2')) resolve(performance.now());
      });
    });
    child.stdin.write(
      line({ id: 1, method: "initialize", params: { protocolVersion: "2025-06-18", capabilities: {}, clientInfo: { name: "time-install", version: "0" } } }) +
        line({ method: "notifications/initialized" }) +
        line({ id: 2, method: "tools/list" }),
    );
    const t2 = await answered;
    child.stdin.end();
    await new Promise((resolve) => child.on("exit", resolve));
    return [t1 - t0, t2 - t1, t2 - t0];
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const runs = Number(process.argv[2] ?? 3);
for (let i = 0; i < runs; i++) {
  const [install, list, total] = (await once()).map((ms) => ms.toFixed(0));
  console.log(`npm install ${install} ms, first tools/list ${list} ms, total ${total} ms`);
}
