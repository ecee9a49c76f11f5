/**
 * A chaos worker PROCESS: `node --import tsx scripts/chaos/worker.ts`, configured by the environment.
 *
 * - Celerity settings come from the usual variables (CELERITY_SERVERS, CELERITY_NAMESPACE,
 *   CELERITY_ACK_WAIT, CELERITY_CONCURRENCY, CELERITY_REPLICAS, ...).
 * - CHAOS_RECORD: file each execution is appended to as `<taskId> <deliveryCount> <pid>\n`, before
 *   the handler sleeps. appendFileSync is one write(2): it survives a SIGKILL of this process, so
 *   the parent can count how often each task's handler ran.
 * - CHAOS_SLEEP_MS: default sleep of a task (a task's own `sleepMs` wins).
 * - CHAOS_LOG_LEVEL: the worker's log level (default warn; logs go to stderr).
 *
 * Prints `READY <pid> <workerId>` on stdout once it consumes. SIGTERM/SIGINT close it gracefully.
 * An uncaught exception or unhandled rejection kills it, which the parent sees as a crash.
 */
import { appendFileSync } from "node:fs";
import process from "node:process";
import { Worker, type LogLevel } from "../../sdk/worker/mod.ts";
import { work } from "./signatures.ts";

const recordFile = process.env.CHAOS_RECORD;
const defaultSleep = Number(process.env.CHAOS_SLEEP_MS ?? "0");
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const worker = new Worker({ logLevel: (process.env.CHAOS_LOG_LEVEL ?? "warn") as LogLevel });
worker.implement(work, async ({ n, sleepMs }, ctx) => {
  if (recordFile) appendFileSync(recordFile, `${ctx.id} ${ctx.deliveryCount} ${process.pid}\n`);
  const ms = sleepMs ?? defaultSleep;
  if (ms > 0) await sleep(ms);
  return { n, pid: process.pid };
});

process.on("uncaughtException", (err) => {
  process.stderr.write(`CRASH uncaughtException: ${err?.stack ?? err}\n`.slice(0, 4000));
  process.exit(70);
});
process.on("unhandledRejection", (err) => {
  process.stderr.write(`CRASH unhandledRejection: ${(err as Error)?.stack ?? err}\n`.slice(0, 4000));
  process.exit(71);
});

await worker.start();
process.stdout.write(`READY ${process.pid} ${worker.identity.id}\n`);
let signals = 0;
const onSignal = () => {
  signals++;
  void worker.close({ graceMs: signals === 1 ? 5000 : 0 }).then(() => process.exit(0));
};
process.on("SIGTERM", onSignal);
process.on("SIGINT", onSignal);
