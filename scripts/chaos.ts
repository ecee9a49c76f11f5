/**
 * The chaos suite: real worker processes and real nats-servers, broken on purpose.
 *
 *   npm run chaos                 # every case, full size (~3-5 min)
 *   npm run chaos -- --short      # the sizes `npm test` uses
 *   npm run chaos -- b c          # only some cases (a: kill -9 a worker, b: restart the server,
 *                                 # c: kill the cluster's stream leader, d: bad messages)
 *
 * Prints one row per case (sent, completed, lost, duplicated, dead-lettered, seconds, notes) as a
 * Markdown table, then the failures. Exits 1 when any case lost a task or broke an expectation.
 * See docs/chaos.md.
 */
import process from "node:process";
import { CASES, formatTable } from "./chaos/cases.ts";
import type { Row } from "./chaos/harness.ts";

const args = process.argv.slice(2);
const full = !args.includes("--short");
const only = args.filter((a) => !a.startsWith("--"));
const unknown = only.filter((k) => !CASES.some((c) => c.key === k));
if (unknown.length) {
  console.error(`unknown case(s) ${unknown.join(", ")}: choose from ${CASES.map((c) => c.key).join(", ")}`);
  process.exit(2);
}

const rows: Row[] = [];
for (const c of CASES) {
  if (only.length && !only.includes(c.key)) continue;
  console.error(`chaos: running case ${c.key} (${full ? "full" : "short"})...`);
  const row = await c.run(full);
  rows.push(row);
  console.error(`chaos: ${row.case}: ${row.failures.length ? "FAILED" : "ok"} in ${row.seconds} s`);
}

console.log(`\nChaos suite (${full ? "full" : "short"}), ${new Date().toISOString()}\n`);
console.log(formatTable(rows));
const failed = rows.filter((r) => r.failures.length);
for (const r of failed) {
  console.log(`\n${r.case} FAILED:`);
  for (const f of r.failures) console.log(`  - ${f}`);
}
process.exit(failed.length ? 1 : 0);
