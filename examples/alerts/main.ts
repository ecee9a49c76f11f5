/**
 * Alerts: an eternal listener reads a (simulated) alert feed and dispatches each packet to the
 * handlers of its type, each handler running as its own task; a type without handlers is counted.
 *
 *   node --import tsx examples/alerts/main.ts
 *
 * Uses the servers of the settings (CELERITY_SERVERS, …) or, when none is set, starts an embedded
 * nats-server with throw-away storage. Runs about 3 seconds, prints what each handler received,
 * and exits 0.
 */
import { connect } from "../../sdk/client/mod.ts";
import { loadSettingsAsync } from "../../sdk/settings/mod.ts";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { readTextFile } from "../../sdk/transport/mod.ts";
import { Worker } from "../../sdk/worker/mod.ts";
import { EternalRunner, eternalStatus } from "../../sdk/worker/eternal.ts";
import { unknownPackets } from "../../sdk/worker/handlers.ts";
import { alertFeed } from "./feed.ts";
import { handlers, received } from "./handlers.ts";

const RUN_MS = 3000;

const settings = await loadSettingsAsync({}, { env: process.env, readTextFile });
const embedded = settings.servers?.length ? undefined : await NatsServer.start();
if (embedded) console.error(`started an embedded nats-server ${embedded.version} at ${embedded.url}`);
// A namespace of its own per run, so counts on a shared server start from zero.
const options = { ...(embedded ? { servers: [embedded.url] } : {}), namespace: `alerts${Date.now().toString(36)}` };

const worker = new Worker({ ...options, concurrency: 8, logLevel: "warn" });
handlers.register(worker);
await worker.start();
console.log(`dispatch table: ${JSON.stringify(handlers.table())}`);

// The eternal listener: exactly one across all workers of the namespace, restarted if it fails.
// (With the worker integration this is `worker.eternal("gcn.listen", fn)`.)
const listener = new EternalRunner(worker.client, worker.identity, {
  name: "gcn.listen",
  leaseSeconds: 3,
  async run(ctx) {
    ctx.log.info("listening to the alert feed");
    for await (const packet of alertFeed(ctx.signal)) {
      await handlers.dispatch(ctx.client, "gcn", packet);
      ctx.heartbeat();
    }
  },
});
await listener.start();

const client = await connect(options);
await new Promise((r) => setTimeout(r, RUN_MS));
for (const s of await eternalStatus(client)) console.log(`eternal ${s.name}: ${s.status} on ${s.holder} (term ${s.term}, restarts ${s.restarts})`);
await listener.stop();

// Wait for the handlers' tasks still queued or running, then report.
const expected = handlers.stats.tasks;
const until = Date.now() + 10_000;
while (received.handleFermi!.length + received.handleSwift!.length < expected && Date.now() < until) {
  await new Promise((r) => setTimeout(r, 50));
}
for (const [name, packets] of Object.entries(received)) {
  console.log(`${name} received ${packets.length} packet(s):`);
  for (const p of packets) console.log(`  ${p}`);
}
for (const u of await unknownPackets(client, "gcn")) console.log(`no handler for ${u.type}: ${u.count} packet(s) counted`);
console.log(`dispatched ${handlers.stats.dispatched} packets: ${handlers.stats.tasks} handler tasks, ${handlers.stats.unknown} unknown`);

await client.close();
await worker.close();
await embedded?.stop();
