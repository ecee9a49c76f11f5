/**
 * Remote ingest, end to end: generate a ~20 MB text file, upload it to the JetStream object store,
 * send `ingest.count_lines` with a reference to it, and wait for the line count a worker computes
 * from the stored object.
 *
 *   node --import tsx examples/ingest/main.ts [--mb 20]
 *
 * With no CELERITY_SERVERS / NATS_URL it starts an embedded nats-server (sdk/testing) and a worker
 * in this process; with CELERITY_SERVERS set it only uploads and waits (run a worker with
 * `celerity worker -A examples/ingest/worker.ts -Q ingest`).
 */
import { mkdtempSync, openAsBlob, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { connect } from "../../sdk/client/mod.ts";
import { ingest, type IngestProgress } from "../../sdk/ingest/mod.ts";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { Worker } from "../../sdk/worker/mod.ts";
import { countLines } from "./signatures.ts";
import register from "./worker.ts";

const { values } = parseArgs({ options: { mb: { type: "string", default: "20" } } });
const mb = Number(values.mb);

/** A text file of about `mb` MiB: numbered lines of varying length. Returns its path and line count. */
function generate(dir: string): { path: string; lines: number } {
  const parts: string[] = [];
  let size = 0;
  let lines = 0;
  while (size < mb * 1024 * 1024) {
    const line = `${lines} ${"x".repeat(lines % 120)}\n`;
    parts.push(line);
    size += line.length;
    lines++;
  }
  const path = join(dir, "survey.txt");
  writeFileSync(path, parts.join(""));
  return { path, lines };
}

const external = process.env.CELERITY_SERVERS ?? process.env.NATS_URL;
const server = external ? undefined : await NatsServer.start();
const servers = external ? undefined : [server!.url];
const dir = mkdtempSync(join(tmpdir(), "celerity-ingest-example-"));
const client = await connect(servers ? { servers, namespace: "ingest_example" } : {});
const worker = servers ? new Worker({ servers, namespace: "ingest_example", queues: ["ingest"], logLevel: "warn" }) : undefined;
try {
  if (worker) {
    await register(worker);
    await worker.start();
  }
  const { path, lines } = generate(dir);
  const blob = await openAsBlob(path);
  console.error(`generated ${path}: ${(blob.size / 1024 / 1024).toFixed(1)} MiB, ${lines} lines (max_payload ${client.nc.info?.max_payload} bytes)`);
  let shown = "";
  const started = Date.now();
  const { ref, handle, uploaded } = await ingest(client, {
    file: blob,
    name: `survey-${blob.size}.txt`,
    signature: countLines,
    onProgress: (p: IngestProgress) => {
      const line = `${p.phase} ${p.total ? Math.floor((p.bytes / p.total) * 10) * 10 : 0}%`;
      if (line !== shown) console.error((shown = line));
    },
  });
  console.error(`${uploaded ? "uploaded" : "already stored"} ${ref.bucket}/${ref.name} (${ref.digest}) in ${Date.now() - started} ms; task ${handle.id}`);
  const result = await client.task(handle.id, countLines).result({ timeout: 120_000 }); // typed by the signature
  console.log(JSON.stringify({ ...result, expectedLines: lines, ms: Date.now() - started }));
  if (result.lines !== lines || result.bytes !== blob.size) process.exitCode = 1;
} finally {
  await worker?.close();
  await client.close();
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
}
