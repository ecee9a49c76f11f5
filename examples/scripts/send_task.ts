/**
 * send_task.ts: send a task by name, without its signature, and print its id (Celery's
 * `send_task`). For a process that knows a task's name but does not import its contract; nothing
 * checks the arguments here, so the worker does (bad ones end as FAILURE: see status.ts).
 *
 *   node --import tsx examples/scripts/send_task.ts <task> [args as JSON] [--queue q]
 *   npx deno run -A examples/scripts/send_task.ts math.add '{"a": 20, "b": 22}'
 *   npx bun run examples/scripts/send_task.ts images.thumbnail '{"imageId": "img-1", "width": 64}' --queue images
 *
 * Needs a worker that serves the queue; for the example tasks, started from the repository root:
 *   node bin/celerity.mjs worker -A examples/tasks/worker.ts -Q default,images
 * The server comes from CELERITY_SERVERS (default nats://127.0.0.1:4222).
 * Follow the task with: examples/scripts/status.ts <id> --wait
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { connect } from "../../sdk/client/mod.ts"; // "celerity" in your project

const { values, positionals } = parseArgs({ options: { queue: { type: "string" } }, allowPositionals: true });
const [task, json] = positionals;
if (!task || positionals.length > 2) {
  console.error("usage: send_task.ts <task> [args as JSON] [--queue q]");
  process.exit(2);
}
let args: unknown;
try {
  args = json === undefined ? undefined : JSON.parse(json);
} catch (err) {
  console.error(`the arguments are not JSON: ${(err as Error).message}`);
  process.exit(2);
}

try {
  await using client = await connect();
  // By name there is no signature, so no schema and no default queue: the task goes to --queue,
  // else to what the settings' routes say, else to `default`. A queue no worker serves is refused.
  const handle = await client.send(task, args, { queue: values.queue });
  console.log(handle.id);
} catch (err) {
  console.error(`error: ${(err as Error).message}`); // invalid name, no worker for the queue, no server, …
  process.exitCode = 1;
}
