/**
 * status.ts: the state and result of a task from its id alone, as any process that did not send
 * it sees them (Celery's `AsyncResult(id)`). With --wait, waits for the result first.
 *
 *   node --import tsx examples/scripts/status.ts <id> [--wait]
 *   npx deno run -A examples/scripts/status.ts "$id" --wait
 *   npx bun run examples/scripts/status.ts "$id"
 *
 * The server comes from CELERITY_SERVERS. Prints PENDING while no record is stored: the task is
 * still queued, the id is unknown, or the result expired (as in Celery, PENDING proves nothing).
 * Exits 0 once it printed the state; with --wait, exits 1 unless the task succeeded.
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { connect, RemoteTaskError, STATE, TaskRevokedError } from "../../sdk/client/mod.ts"; // "celerity" in your project

const { values, positionals } = parseArgs({ options: { wait: { type: "boolean", default: false } }, allowPositionals: true });
const id = positionals[0];
if (!id || positionals.length > 1) {
  console.error("usage: status.ts <id> [--wait]");
  process.exit(2);
}

try {
  await using client = await connect();
  // A handle from the id alone: no signature, so the result is `unknown` (pass one to type it:
  // client.task(id, thumbnail)).
  const handle = client.task(id);
  if (values.wait) {
    await handle.result({ timeout: 30_000 }).catch((err) => {
      if (!(err instanceof RemoteTaskError || err instanceof TaskRevokedError)) throw err; // a timeout, …
      // The task failed or was revoked: its record, printed below, says how.
    });
  }
  const { state, record } = await handle.status();
  console.log(`id       ${id}`);
  console.log(`state    ${state}`);
  if (record) {
    console.log(`task     ${record.task}`);
    if (record.worker) console.log(`worker   ${record.worker.id}`);
    if (record.startedAt && record.finishedAt) console.log(`ran      ${record.finishedAt - record.startedAt} ms`);
    if (state === STATE.success) console.log(`result   ${JSON.stringify(record.result)}`);
    if (record.error) console.log(`error    ${record.error.type}: ${record.error.message}`);
  }
  if (values.wait && state !== STATE.success) {
    console.error(`task ${id} ended ${state}`);
    process.exitCode = 1;
  }
} catch (err) {
  console.error(`error: ${(err as Error).message}`);
  process.exitCode = 1;
}
