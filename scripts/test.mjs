#!/usr/bin/env node
// Runs the whole test suite with node's built-in runner (its summary prints `# pass` / `# fail`).
// Node 20 does not discover .ts test files by itself, so the list is built here.
// Usage: node scripts/test.mjs [path-filter ...]
import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { join } from "node:path";

function find(dir) {
  return readdirSync(dir).flatMap((name) => {
    const p = join(dir, name);
    return statSync(p).isDirectory() ? find(p) : /\.test\.(ts|mjs|js)$/.test(name) ? [p] : [];
  });
}

const filters = process.argv.slice(2);
const files = find("test").filter((f) => filters.length === 0 || filters.some((x) => f.includes(x))).sort();
if (files.length === 0) {
  console.error(`no test files match ${filters.join(" ")}`);
  process.exit(1);
}
// Two files at a time: the machine has 2 cores and each integration file runs its own nats-server.
// Readable progress on stdout (spec), and TAP to a file whose summary (`# pass`, `# fail`, …)
// is printed at the end, where CI and people look for it.
mkdirSync(".run", { recursive: true });
// One file per run: two `npm test` runs in one checkout must not mix their summaries.
const tap = join(".run", `test-${process.pid}.tap`);
const r = spawnSync(process.execPath, [
  "--import", "tsx", "--test", "--test-concurrency=2",
  "--test-reporter=spec", "--test-reporter-destination=stdout",
  "--test-reporter=tap", `--test-reporter-destination=${tap}`,
  ...files,
], {
  stdio: "inherit",
  env: { ...process.env, CELERITY_SETTINGS: "" },
});
const summary = readFileSync(tap, "utf8").split("\n").filter((l) => /^# (tests|suites|pass|fail|cancelled|skipped|todo|duration_ms) /.test(l));
rmSync(tap, { force: true });
console.log(summary.join("\n"));
process.exit(r.status ?? 1);
