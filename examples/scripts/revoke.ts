/**
 * revoke.ts: cancel a task before it runs. It schedules a thumbnail for later (a countdown keeps
 * it in the scheduled stream), lists what is scheduled, revokes it, and shows that its result is
 * a TaskRevokedError and its state REVOKED. Exits 1 if the task ran anyway.
 *
 *   node --import tsx examples/scripts/revoke.ts [--countdown seconds]
 *   npx deno run -A examples/scripts/revoke.ts
 *   npx bun run examples/scripts/revoke.ts --countdown 5
 *
 * Needs a worker with the example tasks, started from the repository root with
 *   node bin/celerity.mjs worker -A examples/tasks/worker.ts -Q default,images
 * and the server in CELERITY_SERVERS (default nats://127.0.0.1:4222). A revocation is stored,
 * so workers started later honour it too; `{ terminate: true }` also ends a running execution.
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { connect, STATE, TaskRevokedError } from "../../sdk/client/mod.ts"; // "celerity" in your project
import { thumbnail } from "../tasks/signatures.ts";

const { values } = parseArgs({ options: { countdown: { type: "string", default: "1" } } });
const countdown = Number(values.countdown);
if (!(countdown > 0 && countdown <= 3600)) {
  console.error(`--countdown must be a number of seconds above 0, at most 3600, got ${values.countdown}`);
  process.exit(2);
}

try {
  await using client = await connect();
  const handle = await client.send(thumbnail, { imageId: "img-revoked", width: 64 }, { countdown });
  // Until its countdown ends, the task waits in the scheduled stream, where anyone can list it.
  const listed = (await client.scheduled()).find((t) => t.id === handle.id);
  console.log(`scheduled ${handle.id}, ${listed?.eta ? `due ${new Date(listed.eta).toISOString()}` : "already due"}`);

  await client.revoke(handle.id, { reason: "sent by mistake" });
  try {
    const result = await handle.result({ timeout: countdown * 1000 + 15_000 });
    throw new Error(`the task ran anyway: ${JSON.stringify(result)}`);
  } catch (err) {
    if (!(err instanceof TaskRevokedError)) throw err;
    console.log(`result    ${err.name}: ${err.message}`);
  }
  const { state } = await handle.status();
  console.log(`state     ${state}`);
  if (state !== STATE.revoked) throw new Error(`expected REVOKED, got ${state}`);
} catch (err) {
  console.error(`error: ${(err as Error).message}`);
  process.exitCode = 1;
}
