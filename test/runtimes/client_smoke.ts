/**
 * A script that uses only the client, run unmodified by node (through tsx), `deno run -A` and bun
 * (test/integration/runtimes.test.ts). Servers and namespace come from CELERITY_SERVERS and
 * CELERITY_NAMESPACE (and, at the end, from a YAML settings file: its parser loads on demand); a
 * worker with examples/tasks must be running. Prints `ok <runtime> …`.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { connect, RemoteTaskError, STATE } from "../../sdk/client/mod.ts";
import { add, thumbnail } from "../../examples/tasks/signatures.ts";

const g = globalThis as { Deno?: { version: { deno: string } }; Bun?: { version: string }; process?: { versions?: { node?: string } } };
const runtime = g.Deno ? `deno ${g.Deno.version.deno}` : g.Bun ? `bun ${g.Bun.version}` : `node ${g.process?.versions?.node}`;

function check(condition: unknown, what: string): void {
  if (!condition) throw new Error(`${runtime}: ${what}`);
}

const client = await connect();
try {
  // call: request/reply with a typed result.
  const sum = await client.call(add, { a: 2, b: 40 }, { timeout: 15_000 });
  check(sum === 42, `call(math.add) returned ${sum}`);

  // send with a chosen id, following progress from before it is sent so no report can be missed.
  const id = `smoke-${crypto.randomUUID()}`;
  const progress: unknown[] = [];
  const off = client.task(id).onProgress((p) => progress.push(p));
  const handle = await client.send(thumbnail, { imageId: "smoke", width: 32 }, { id });
  check(handle.id === id, `send() kept the id: ${handle.id}`);

  // task(id).result(): a handle made from the id alone, as another process would.
  const result = await client.task(id, thumbnail).result({ timeout: 15_000 });
  check(result.imageId === "smoke" && result.width === 32 && result.bytes === 123, `thumbnail result ${JSON.stringify(result)}`);
  off();
  check(progress.length === 2, `two progress reports, got ${JSON.stringify(progress)}`);

  // status: the stored record.
  const status = await client.status(id);
  check(status.state === STATE.success, `status ${status.state}`);

  // A failure crosses the wire as a typed error (no worker implements this name).
  const failed = await client.send("smoke.missing", {});
  try {
    await failed.result({ timeout: 15_000 });
    check(false, "a task nobody implements succeeded");
  } catch (err) {
    check(err instanceof RemoteTaskError && err.remoteType === "NotRegisteredError", `unexpected error ${err}`);
  }

  // A YAML settings file: its parser is imported on demand (sdk/settings), under every runtime.
  const dir = mkdtempSync(join(tmpdir(), "celerity-smoke-"));
  const file = join(dir, "celerity.yaml");
  writeFileSync(file, `# read by ${runtime}\nrequestTimeout: 7000\nevents: false\n`);
  const fromYaml = await connect({ file });
  try {
    check(fromYaml.settings.requestTimeout === 7000 && fromYaml.settings.events === false, `YAML settings ${JSON.stringify(fromYaml.settings.requestTimeout)}`);
    check((await fromYaml.call(add, { a: 1, b: 1 }, { timeout: 15_000 })) === 2, "call() through the YAML-configured client");
  } finally {
    await fromYaml.close();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`ok ${runtime}`);
} finally {
  await client.close();
}
