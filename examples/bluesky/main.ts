/**
 * Blue Sky: a staged imaging pipeline (ingest → process per tile → record per specimen → publish
 * to the next queue), run as a Celerity workflow.
 *
 *   node --import tsx examples/bluesky/main.ts
 *
 * Uses the servers of the settings (CELERITY_SERVERS, …) or, when none is set, starts an embedded
 * nats-server with throw-away storage. Runs a worker in this process, starts a run over three
 * specimens, prints its status and exits 0.
 */
import { connect } from "../../sdk/client/mod.ts";
import { loadSettingsAsync } from "../../sdk/settings/mod.ts";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { readTextFile } from "../../sdk/transport/mod.ts";
import { Worker } from "../../sdk/worker/mod.ts";
import { jobs, startWorkflow, waitForRun } from "../../sdk/workflow/mod.ts";
import { bluesky, register } from "./workflow.ts";

const settings = await loadSettingsAsync({}, { env: process.env, readTextFile });
const embedded = settings.servers?.length ? undefined : await NatsServer.start();
if (embedded) console.error(`started an embedded nats-server ${embedded.version} at ${embedded.url}`);
// A namespace of its own per run, so a shared server starts from nothing.
const options = { ...(embedded ? { servers: [embedded.url] } : {}), namespace: `bluesky${Date.now().toString(36)}` };

const worker = register(new Worker({ ...options, concurrency: 8, logLevel: "warn" }));
await worker.start();
const client = await connect(options);
try {
  const specimens = [{ id: "spec-a", tiles: 2 }, { id: "spec-b", tiles: 3 }, { id: "spec-c", tiles: 4 }];
  const { runId } = await startWorkflow(client, bluesky, specimens);
  console.log(`run ${runId}: ${specimens.length} specimens`);
  const s = await waitForRun(client, runId, { timeout: 60_000 });
  for (const [stage, c] of Object.entries(s.stages)) {
    console.log(`stage ${stage}: succeeded ${c.succeeded}, failed ${c.failed}, pending ${c.pending}, running ${c.running}`);
  }
  for (const j of (await jobs(client, runId)).filter((j) => j.stage === "record")) {
    const f = j.result as { specimen: string; tiles: number; cells: number };
    console.log(`recorded ${f.specimen}: ${f.tiles} tiles, ${f.cells} cells`);
  }
  const published = (await jobs(client, runId)).find((j) => j.stage === "publish")?.result as { queue: string; specimens: string[] };
  console.log(`enqueued in ${published.queue}: ${published.specimens.join(", ")}`);
  console.log(`run ${s.state} in ${s.elapsedMs} ms`);
  process.exitCode = s.state === "succeeded" ? 0 : 1;
} finally {
  await client.close();
  await worker.close();
  await embedded?.stop();
}
