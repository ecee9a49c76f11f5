/**
 * send_batch.ts: send a batch of tasks, follow their progress, collect every result (failures
 * included) and print a table. Exits 1 when any task failed.
 *
 *   node --import tsx examples/scripts/send_batch.ts [--count N] [imageId ...]
 *   npx deno run -A examples/scripts/send_batch.ts --count 20
 *   npx bun run examples/scripts/send_batch.ts img-1 img-2 missing-3
 *
 * Needs a worker with the example tasks, started from the repository root with
 *   node bin/celerity.mjs worker -A examples/tasks/worker.ts -Q default,images
 * and the server in CELERITY_SERVERS (default nats://127.0.0.1:4222).
 * Without image ids it renders img-1 … img-N (N = --count, default 12). An id starting with
 * `missing` fails on the worker, to show a batch with a failure.
 */
import process from "node:process";
import { parseArgs } from "node:util";
import { connect, RemoteTaskError } from "../../sdk/client/mod.ts"; // "celerity" in your project
import { thumbnail } from "../tasks/signatures.ts";

const { values, positionals } = parseArgs({ options: { count: { type: "string", default: "12" } }, allowPositionals: true });
const count = Number(values.count);
if (!Number.isInteger(count) || count < 1) {
  console.error(`--count must be a positive integer, got ${values.count}`);
  process.exit(2);
}
const images = positionals.length > 0 ? positionals : Array.from({ length: count }, (_, i) => `img-${i + 1}`);
const widths = [64, 128, 256, 512];

/** One line of the table. */
const row = (image: string, width: string, bytes: string, state: string, note: string) =>
  `${image.padEnd(12)} ${width.padStart(5)} ${bytes.padStart(7)}  ${state.padEnd(7)}  ${note}`;

try {
  await using client = await connect();
  const started = Date.now();

  // Ids chosen up front (derived from one batch id), so each task's progress is followed before
  // it is sent and no report can be missed.
  const batch = `batch-${crypto.randomUUID().slice(0, 8)}`;
  const reports = new Map<string, number>();
  const tasks = images.map((imageId, i) => {
    const id = `${batch}.${i}`;
    const stopFollowing = client.task(id).onProgress(() => reports.set(id, (reports.get(id) ?? 0) + 1));
    return { id, imageId, width: widths[i % widths.length]!, stopFollowing };
  });

  // send() resolves once JetStream stored the task; Promise.all sends them concurrently.
  const handles = await Promise.all(tasks.map((t) => client.send(thumbnail, { imageId: t.imageId, width: t.width }, { id: t.id })));
  console.log(`sent ${handles.length} tasks (${batch}.0 … ${batch}.${handles.length - 1})`);

  // Every outcome, failures included: a failed task is a row of the table, not the end of the
  // script. On a terminal, a counter shows the batch finishing.
  let done = 0;
  const outcomes = await Promise.allSettled(
    handles.map((h) =>
      h.result({ timeout: 60_000 }).finally(() => {
        if (process.stderr.isTTY) process.stderr.write(`\r${++done}/${handles.length} done${done === handles.length ? "\n" : ""}`);
      }),
    ),
  );
  for (const t of tasks) t.stopFollowing();

  console.log(row("image", "width", "bytes", "state", "progress"));
  let failed = 0;
  outcomes.forEach((outcome, i) => {
    const { id, imageId, width } = tasks[i]!;
    if (outcome.status === "fulfilled") {
      console.log(row(imageId, String(width), String(outcome.value.bytes), "SUCCESS", `${reports.get(id) ?? 0} reports`));
    } else {
      failed++;
      const err = outcome.reason as Error;
      console.log(row(imageId, String(width), "-", "FAILURE", err instanceof RemoteTaskError ? `${err.remoteType}: ${err.remoteMessage}` : err.message));
    }
  });
  const total = [...reports.values()].reduce((sum, n) => sum + n, 0);
  console.log(`${handles.length} tasks: ${handles.length - failed} succeeded, ${failed} failed, ${total} progress reports, ${Date.now() - started} ms`);
  if (failed > 0) {
    console.error(`${failed} of ${handles.length} tasks failed`);
    process.exitCode = 1;
  }
} catch (err) {
  console.error(`error: ${(err as Error).message}`);
  process.exitCode = 1;
}
