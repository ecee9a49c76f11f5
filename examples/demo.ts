/**
 * The demo behind `npm start`: end to end on a fresh machine.
 *
 * With no NATS server configured (no CELERITY_SERVERS / NATS_URL / settings file), it starts a
 * local nats-server with its data under ./.celerity/ (installing Debian's package first when it is
 * missing and we are root), starts a worker with the example tasks, sends a batch, shows a progress
 * bar, prints the results and exits 0. `--keep` keeps the server and worker running until Ctrl-C.
 */
import { spawnSync } from "node:child_process";
import { mkdirSync } from "node:fs";
import { resolve } from "node:path";
import { parseArgs } from "node:util";
import { connect, RemoteTaskError, type TaskHandle } from "../sdk/client/mod.ts";
import { loadSettingsAsync } from "../sdk/settings/mod.ts";
import { findNatsServer, NatsServer } from "../sdk/testing/mod.ts";
import { readTextFile } from "../sdk/transport/mod.ts";
import { Worker } from "../sdk/worker/mod.ts";
import register from "./tasks/worker.ts";
import { add, thumbnail } from "./tasks/signatures.ts";

const { values: flags } = parseArgs({
  options: {
    keep: { type: "boolean", default: false },
    count: { type: "string", default: "200" },
    help: { type: "boolean", short: "h", default: false },
  },
});
if (flags.help) {
  console.log("usage: npm start [-- --count N] [-- --keep]\n  --count N  tasks to send (default 200)\n  --keep     keep the server and worker running until Ctrl-C");
  process.exit(0);
}
const count = Number(flags.count);
if (!Number.isInteger(count) || count < 1) {
  console.error(`error: --count must be a positive integer, got ${JSON.stringify(flags.count)}`);
  process.exit(2);
}

/** Starts the embedded nats-server unless the settings name one. */
async function serverUrl(): Promise<{ url: string; embedded?: NatsServer }> {
  const settings = await loadSettingsAsync({}, { env: process.env, readTextFile });
  if (settings.servers?.length) return { url: settings.servers.join(",") };
  try {
    findNatsServer();
  } catch {
    // Installs Debian's nats-server when root, or prints exactly how to install it.
    const r = spawnSync(process.execPath, [resolve(import.meta.dirname ?? "examples", "../scripts/ensure-nats-server.mjs")], { stdio: "inherit" });
    if (r.status !== 0) process.exit(1);
  }
  const storeDir = resolve(".celerity/nats");
  mkdirSync(storeDir, { recursive: true });
  const embedded = await NatsServer.start({ storeDir, keepStore: true });
  console.error(`started a local nats-server ${embedded.version} at ${embedded.url} (data in .celerity/nats)`);
  return { url: embedded.url, embedded };
}

function bar(done: number, total: number, width = 30): string {
  const filled = Math.round((done / total) * width);
  return `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${done}/${total}`;
}

const { url, embedded } = await serverUrl();
const options = { servers: [url] };
const worker = new Worker({ ...options, queues: ["images", "default"], concurrency: 16, logLevel: "warn" });
register(worker);
await worker.start();
const client = await connect(options);

try {
  console.error(`sending ${count} thumbnail tasks and one call…`);
  const sum = await client.call(add, { a: 2, b: 40 }, { timeout: 10_000 });
  console.error(`call(math.add, {a: 2, b: 40}) = ${sum}`);

  const started = performance.now();
  const handles: TaskHandle<{ imageId: string; width: number; bytes: number }>[] = await Promise.all(
    Array.from({ length: count }, (_, i) => client.send(thumbnail, { imageId: `img-${i}`, width: 64 * (1 + (i % 8)) })),
  );
  let done = 0;
  const interactive = process.stderr.isTTY;
  const results = await Promise.all(
    handles.map(async (h) => {
      const r = await h.result({ timeout: 60_000 });
      done++;
      if (interactive) process.stderr.write(`\r${bar(done, count)}`);
      else if (done % Math.max(1, Math.floor(count / 4)) === 0 || done === count) process.stderr.write(`${bar(done, count)}\n`);
      return r;
    }),
  );
  if (interactive) process.stderr.write("\n");
  const seconds = (performance.now() - started) / 1000;

  console.log("\n  id        width   bytes");
  for (const r of results.slice(0, 5)) console.log(`  ${r.imageId.padEnd(9)} ${String(r.width).padStart(5)} ${String(r.bytes).padStart(7)}`);
  if (results.length > 5) console.log(`  … ${results.length - 5} more`);
  console.log(`\n${results.length} thumbnails in ${seconds.toFixed(2)} s; total bytes ${results.reduce((s, r) => s + r.bytes, 0)}`);

  // Bad input is refused at the client with the schema's message; nothing is sent.
  try {
    await client.send(thumbnail, { imageId: "img-x", width: 8 });
  } catch (err) {
    console.log(`refused as expected: ${(err as Error).message}`);
  }
} catch (err) {
  console.error(`demo failed: ${err instanceof RemoteTaskError ? `${err.remoteType}: ${err.message}` : (err as Error).message}`);
  process.exitCode = 1;
}

if (flags.keep && process.exitCode !== 1) {
  console.error(`\nkeeping the stack running at ${url}: try \`node bin/celerity.mjs call math.add --args '{"a":1,"b":2}' --servers ${url}\`; Ctrl-C to stop`);
  await new Promise<void>((r) => {
    process.once("SIGINT", () => r());
    process.once("SIGTERM", () => r());
  });
}
await client.close();
await worker.close();
await embedded?.stop();
