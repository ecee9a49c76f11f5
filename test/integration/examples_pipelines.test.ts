/** The workflow examples run as child processes against a test nats-server (CELERITY_SERVERS). */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { NatsServer } from "../../sdk/testing/mod.ts";

const tsx = import.meta.resolve("tsx");
let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

function run(example: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const file = fileURLToPath(new URL(`../../examples/${example}/main.ts`, import.meta.url));
  const env: NodeJS.ProcessEnv = { ...process.env, CELERITY_SERVERS: server.url };
  for (const k of ["NATS_URL", "CELERITY_SETTINGS", "CELERITY_NAMESPACE"]) delete env[k];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ["--import", tsx, file], { env, stdio: ["ignore", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (d) => (stdout += d));
    child.stderr.on("data", (d) => (stderr += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

test("examples - bluesky: ingest → process per tile → record per specimen → publish, on the given server", async () => {
  const r = await run("bluesky");
  assert.equal(r.code, 0, `bluesky failed:\n${r.stdout}\n${r.stderr}`);
  assert.doesNotMatch(r.stderr, /embedded nats-server/);
  assert.match(r.stdout, /^stage ingest: succeeded 3, failed 0, pending 0, running 0$/m);
  assert.match(r.stdout, /^stage process: succeeded 9, failed 0/m);
  assert.match(r.stdout, /^stage record: succeeded 3, failed 0/m);
  assert.match(r.stdout, /^stage publish: succeeded 1, failed 0/m);
  assert.match(r.stdout, /^recorded spec-a: 2 tiles, \d+ cells$/m);
  assert.match(r.stdout, /^recorded spec-c: 4 tiles, \d+ cells$/m);
  assert.match(r.stdout, /^enqueued in qc: spec-a, spec-b, spec-c$/m);
  assert.match(r.stdout, /^run succeeded in \d+ ms$/m);
});

test("examples - handover: submit to a local service, poll until done, fan out, notify by 'email'", async () => {
  const r = await run("handover");
  assert.equal(r.code, 0, `handover failed:\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stdout, /requests to http:\/\/127\.0\.0\.1:\d+$/m);
  assert.match(r.stdout, /^stage poll: succeeded 2, failed 0$/m);
  assert.match(r.stdout, /^stage annotate: succeeded 6, failed 0$/m);
  assert.match(r.stdout, /^stage notify: succeeded 2, failed 0$/m);
  // Each job was polled until done (3 looks each), the worker retrying the poll task in between.
  assert.match(r.stdout, /^service: 2 jobs submitted, polled 6 times$/m);
  assert.match(r.stdout, /To: ada@example\.org\nSubject: your analysis is ready\n\nannotated A-3\nannotated C-1\nannotated G-1\nannotated T-2/);
  assert.match(r.stdout, /To: grace@example\.org\nSubject: your analysis is ready\n\nannotated C-2\nannotated G-2/);
  assert.match(r.stdout, /^run succeeded in \d+ ms$/m);
});

test("examples - alerts: an eternal listener feeds packets; each reaches exactly the handlers of its type", async () => {
  const r = await run("alerts");
  assert.equal(r.code, 0, `alerts failed:\n${r.stdout}\n${r.stderr}`);
  const out = r.stdout + r.stderr;
  assert.match(out, /no handler for ICECUBE_ASTROTRACK_GOLD: \d+ packet\(s\) counted/);
  assert.match(out, /dispatched \d+ packets: \d+ handler tasks, \d+ unknown/);
  assert.match(out, /SWIFT_BAT_GRB_POS trigger \d+ at ra \d+, dec -?\d+/);
});
