/**
 * The client on Node, Deno and Bun: test/runtimes/client_smoke.ts runs unmodified under each
 * runtime against a real nats-server, with a worker (examples/tasks) in this process. Deno and Bun
 * come from the devDependencies (`npm install` puts their binaries in node_modules/.bin).
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { runScript, withExampleWorker, type Runtime } from "./helpers.ts";

const SMOKE = "test/runtimes/client_smoke.ts";
const fixture = withExampleWorker("rt");

async function expectOk(runtime: Runtime): Promise<void> {
  const r = await runScript(runtime, SMOKE, [], fixture);
  assert.equal(r.code, 0, `${runtime} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.match(r.stdout, new RegExp(`^ok ${runtime} \\d+\\.\\d+`, "m"), r.stdout + r.stderr);
  console.log(`${r.stdout.trim()} (${r.ms} ms, whole process)`);
}

describe("runtimes", () => {
  test("runtimes - the client connects, sends, calls, follows progress and reads results under node", async () => {
    await expectOk("node");
  });

  test("runtimes - the same script runs unmodified under deno run -A (node_modules, deno.json)", async () => {
    await expectOk("deno");
  });

  test("runtimes - the same script runs unmodified under bun", async () => {
    await expectOk("bun");
  });
});
