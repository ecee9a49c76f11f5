/**
 * The benchmark's worker process: one Celerity Worker implementing `bench.noop` (returns its input).
 * Bundled by esbuild to .bench/build/worker.mjs (dependencies external) so that no TypeScript
 * loader runs inside the measured process.
 *
 *   node .bench/build/worker.mjs --servers URL --concurrency C [--prefetch P] [--events 0|1]
 *
 * Writes the file named by BENCH_READY_FILE once it is consuming (its first pull request has
 * reached the server), as ../shared/peers/lib/proc.js idlemem expects. Stops on SIGTERM/SIGINT.
 */
import { writeFileSync } from "node:fs";
import process from "node:process";
import { signature } from "../../sdk/signatures/mod.ts";
import { Worker } from "../../sdk/worker/mod.ts";

const argv = process.argv.slice(2);
const arg = (key: string): string | undefined => {
  const i = argv.indexOf(`--${key}`);
  return i >= 0 ? argv[i + 1] : undefined;
};

const servers = arg("servers");
if (!servers) {
  console.error("usage: worker.mjs --servers URL --concurrency C [--prefetch P] [--events 0|1]");
  process.exit(2);
}
const concurrency = Number(arg("concurrency") ?? 1);
const prefetch = arg("prefetch") === undefined ? undefined : Number(arg("prefetch"));
const events = arg("events") === undefined ? undefined : arg("events") === "1";

const noop = signature("bench.noop");
const worker = new Worker({
  servers,
  namespace: "celerity",
  name: "bench-worker",
  concurrency,
  ...(prefetch === undefined ? {} : { prefetch }),
  ...(events === undefined ? {} : { events }),
  logLevel: "warn",
});
worker.implement(noop, (args) => args);

await worker.start();
await worker.client.nc.flush();
if (process.env.BENCH_READY_FILE) writeFileSync(process.env.BENCH_READY_FILE, String(process.pid));

let closing = false;
for (const sig of ["SIGTERM", "SIGINT"] as const) {
  process.on(sig, () => {
    if (closing) return;
    closing = true;
    worker.close({ graceMs: 2000 }).finally(() => process.exit(0));
  });
}
