/**
 * Hand-over (Ensembl's pattern): a task invokes a service, polls its job URL until it is done
 * (retrying itself with a delay, holding no worker slot), then fans out follow-up tasks and sends
 * a notification "email" once they all finished.
 *
 *   node --import tsx examples/handover/main.ts
 *
 * The "service" is a node:http server on 127.0.0.1 started here; the "emails" are written to
 * outbox.txt in a temporary directory (printed). Uses the servers of the settings
 * (CELERITY_SERVERS, …) or, when none is set, an embedded nats-server. Exits 0.
 */
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect } from "../../sdk/client/mod.ts";
import { loadSettingsAsync } from "../../sdk/settings/mod.ts";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { readTextFile } from "../../sdk/transport/mod.ts";
import { Worker } from "../../sdk/worker/mod.ts";
import { startWorkflow, waitForRun } from "../../sdk/workflow/mod.ts";
import { startService } from "./service.ts";
import { handover, register } from "./tasks.ts";

const settings = await loadSettingsAsync({}, { env: process.env, readTextFile });
const embedded = settings.servers?.length ? undefined : await NatsServer.start();
if (embedded) console.error(`started an embedded nats-server ${embedded.version} at ${embedded.url}`);
const options = { ...(embedded ? { servers: [embedded.url] } : {}), namespace: `handover${Date.now().toString(36)}` };

const service = await startService({ polls: 3 });
const mailDir = mkdtempSync(join(tmpdir(), "celerity-handover-"));
const worker = register(new Worker({ ...options, concurrency: 8, logLevel: "warn" }), mailDir);
await worker.start();
const client = await connect(options);
try {
  const requests = [
    { service: service.url, sequence: "GATTACA", email: "ada@example.org" },
    { service: service.url, sequence: "CCGG", email: "grace@example.org" },
  ];
  const { runId } = await startWorkflow(client, handover, requests);
  console.log(`run ${runId}: ${requests.length} requests to ${service.url}`);
  const s = await waitForRun(client, runId, { timeout: 60_000 });
  for (const [stage, c] of Object.entries(s.stages)) console.log(`stage ${stage}: succeeded ${c.succeeded}, failed ${c.failed}`);
  console.log(`service: ${service.stats.submitted} jobs submitted, polled ${service.stats.polled} times`);
  const outbox = join(mailDir, "outbox.txt");
  console.log(`outbox ${outbox}:`);
  console.log(readFileSync(outbox, "utf8").trimEnd());
  console.log(`run ${s.state} in ${s.elapsedMs} ms`);
  process.exitCode = s.state === "succeeded" ? 0 : 1;
} finally {
  await client.close();
  await worker.close();
  await service.close();
  rmSync(mailDir, { recursive: true, force: true });
  await embedded?.stop();
}
