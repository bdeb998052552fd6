// Writes the Claude Desktop bundle's manifest.json from manifest.template.json: the version,
// the tool list (names and descriptions exactly as the server's `tools/list` gives them,
// read from `stride-vectors tools` of this machine's build, the same code as every bundled
// binary, so they cannot drift) and the platforms whose binaries the bundle carries, each
// started through `platform_overrides`. Used by scripts/package.
//
//   node npm/mcpb/make-manifest.mjs --bundle DIR --version X --tools-from BIN
//
// DIR holds server/darwin/stride-vectors (universal: arm64 + x64), server/win32/stride-vectors.exe
// and server/linux/stride-vectors, or some of them; manifest.json is written into it.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({
  options: { bundle: { type: "string" }, version: { type: "string" }, "tools-from": { type: "string" } },
});
if (!values.bundle || !values.version || !values["tools-from"]) {
  console.error("usage: node make-manifest.mjs --bundle DIR --version X --tools-from BIN");
  process.exit(2);
}
const here = path.dirname(new URL(import.meta.url).pathname);
const manifest = JSON.parse(readFileSync(path.join(here, "manifest.template.json"), "utf8"));
const listed = JSON.parse(
  execFileSync(values["tools-from"], ["tools"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }),
);
manifest.version = values.version;
manifest.tools = listed.tools.map((t) => ({ name: t.name, description: t.description }));

// Claude Desktop's platforms (Node's process.platform) and the binary each runs.
const BINARIES = {
  darwin: "server/darwin/stride-vectors",
  win32: "server/win32/stride-vectors.exe",
  linux: "server/linux/stride-vectors",
};
const platforms = Object.keys(BINARIES).filter((p) => existsSync(path.join(values.bundle, BINARIES[p])));
if (platforms.length === 0) {
  console.error(`make-manifest: no binary in ${values.bundle}/server`);
  process.exit(1);
}
// The first platform present is the default; every platform also has its override, so that
// none depends on which one is the default.
manifest.server.entry_point = BINARIES[platforms[0]];
manifest.server.mcp_config.command = `\${__dirname}/${BINARIES[platforms[0]]}`;
manifest.server.mcp_config.platform_overrides = Object.fromEntries(
  platforms.map((p) => [p, { command: `\${__dirname}/${BINARIES[p]}` }]),
);
manifest.compatibility.platforms = platforms;
writeFileSync(path.join(values.bundle, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
console.error(`make-manifest: ${manifest.tools.length} tools, platforms ${platforms.join(", ")}`);
