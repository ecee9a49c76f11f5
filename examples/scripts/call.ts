/**
 * call.ts: call one task, wait for its typed result, and handle both ways a call can fail.
 *
 *   node --import tsx examples/scripts/call.ts [imageId] [width]
 *   npx deno run -A examples/scripts/call.ts img-7 256
 *   npx bun run examples/scripts/call.ts img-7 256
 *
 * Needs a worker with the example tasks, started from the repository root with
 *   node bin/celerity.mjs worker -A examples/tasks/worker.ts -Q default,images
 * and the server in CELERITY_SERVERS (default nats://127.0.0.1:4222).
 *
 *   call.ts img-7 256      images.thumbnail img-7 at 256 px: 7864 bytes             exit 0
 *   call.ts img-7 8        refused before sending, with the schema's message        exit 2
 *   call.ts missing-7 256  failed on the worker: RemoteTaskError ImageNotFoundError  exit 1
 */
import process from "node:process";
import { connect, InvalidArgumentsError, RemoteTaskError } from "../../sdk/client/mod.ts"; // "celerity" in your project
import { thumbnail } from "../tasks/signatures.ts";

const [imageId = "img-1", width = "128"] = process.argv.slice(2);

try {
  await using client = await connect(); // closed (after what it sent was acknowledged) when this block ends
  // Arguments are checked against the signature's schema before anything is published; the
  // result is typed by its result schema: { imageId: string; width: number; bytes: number }.
  // `timeout` bounds the wait for a worker's answer (without it, call() waits until one answers).
  const result = await client.call(thumbnail, { imageId, width: Number(width) }, { timeout: 60_000 });
  console.log(`images.thumbnail ${result.imageId} at ${result.width} px: ${result.bytes} bytes`);
} catch (err) {
  if (err instanceof InvalidArgumentsError) {
    // Nothing was sent: the message is the schema's, e.g. `width: Invalid value: Expected >=16 …`.
    console.error(`refused before sending: ${err.message}`);
    process.exitCode = 2;
  } else if (err instanceof RemoteTaskError) {
    // The handler threw on the worker: its error's class name and message crossed the wire.
    console.error(`failed on the worker: ${err.remoteType}: ${err.remoteMessage} (task ${err.taskId})`);
    process.exitCode = 1;
  } else {
    console.error(`error: ${(err as Error).message}`); // no server, no worker for the queue, a timeout, …
    process.exitCode = 1;
  }
}
