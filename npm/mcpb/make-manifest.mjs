// Writes the Claude Desktop bundle's manifest.json from manifest.template.json: the version,
// the tool list (names and descriptions exactly as the bundled binary's `tools/list` gives
// them, read from `stride-vectors tools`, so they cannot drift) and the platforms whose
// binaries the bundle carries. Used by scripts/package.
//
//   node npm/mcpb/make-manifest.mjs --bundle DIR --version X
//
// DIR holds server/stride-vectors (and, in a release build, server/stride-vectors.exe for
// Windows); manifest.json is written into it.
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";

const { values } = parseArgs({ options: { bundle: { type: "string" }, version: { type: "string" } } });
if (!values.bundle || !values.version) {
  console.error("usage: node make-manifest.mjs --bundle DIR --version X");
  process.exit(2);
}
const here = path.dirname(new URL(import.meta.url).pathname);
const manifest = JSON.parse(readFileSync(path.join(here, "manifest.template.json"), "utf8"));
const unix = path.join(values.bundle, "server", "stride-vectors");
const windows = `${unix}.exe`;

const listed = JSON.parse(execFileSync(unix, ["tools"], { encoding: "utf8", stdio: ["ignore", "pipe", "inherit"] }));
manifest.version = values.version;
manifest.tools = listed.tools.map((t) => ({ name: t.name, description: t.description }));
// The one unix binary serves whichever of linux or darwin it was built for; a release bundle
// that carries several would map them with platform_overrides.
const platforms = [process.platform === "darwin" ? "darwin" : "linux"];
if (existsSync(windows)) {
  platforms.push("win32");
  manifest.server.mcp_config.platform_overrides = {
    win32: { command: "${__dirname}/server/stride-vectors.exe" },
  };
}
manifest.compatibility.platforms = platforms;
writeFileSync(path.join(values.bundle, "manifest.json"), `${JSON.stringify(manifest, null, 2)}\n`);
console.error(`make-manifest: ${manifest.tools.length} tools, platforms ${platforms.join(", ")}`);
