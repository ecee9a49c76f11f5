/**
 * inspect.ts: which workers are alive, what they serve and run, and whether they answer now
 * (Celery's `inspect ping` / `inspect stats`). Exits 1 when no worker is alive.
 *
 *   node --import tsx examples/scripts/inspect.ts
 *   npx deno run -A examples/scripts/inspect.ts
 *   npx bun run examples/scripts/inspect.ts
 *
 * The server and namespace come from CELERITY_SERVERS and CELERITY_NAMESPACE.
 */
import process from "node:process";
import { connect } from "../../sdk/client/mod.ts"; // "celerity" in your project

try {
  await using client = await connect();

  // The registry: every worker keeps an entry alive with its heartbeat (it expires with the worker).
  const workers = await client.workers();
  if (workers.length === 0) throw new Error(`no live worker in namespace "${client.settings.namespace}"`);
  console.log(`${workers.length} live worker${workers.length === 1 ? "" : "s"} in namespace "${client.settings.namespace}"`);

  for (const w of workers) {
    // A question to this worker alone: it returns as soon as it answered, or after the timeout.
    const asked = Date.now();
    const pong = await client.inspect("ping", { destination: { workers: [w.id] }, timeout: 2000 });
    const answer = pong[w.id] === "pong" ? `pong in ${Date.now() - asked} ms` : "no answer within 2 s";
    console.log(`worker     ${w.id} (host ${w.host}, pid ${w.pid}, up ${Math.round((Date.now() - w.startedAt) / 1000)} s)`);
    console.log(`  queues     ${Object.keys(w.queues).sort().join(", ")}`);
    console.log(`  tasks      ${[...w.tasks].sort().join(", ")}`);
    console.log(`  processed  ${w.processed} (${w.failed} failed), ${w.active} running of ${w.concurrency}`);
    console.log(`  ping       ${answer}`);
  }
} catch (err) {
  console.error(`error: ${(err as Error).message}`);
  process.exitCode = 1;
}
