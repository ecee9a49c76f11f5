/**
 * The client on Node, Deno and Bun: test/runtimes/client_smoke.ts runs unmodified under each
 * runtime against a real nats-server, with a worker (examples/tasks) in this process. Deno and Bun
 * come from the devDependencies (`npm install` puts their binaries in node_modules/.bin).
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NatsServer } from "../../sdk/testing/mod.ts";
import type { Worker } from "../../sdk/worker/mod.ts";
import register from "../../examples/tasks/worker.ts";
import { freshNamespace, worker } from "./helpers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const SMOKE = "test/runtimes/client_smoke.ts";

let server: NatsServer;
let w: Worker;
let ns: string;
before(async () => {
  server = await NatsServer.start();
  ns = freshNamespace("rt");
  w = worker(server, ns, { queues: ["default", "images"], concurrency: 4 });
  register(w);
  await w.start();
});
after(async () => {
  await w?.close();
  await server?.stop();
});

/** The binary an npm devDependency installed, or a failure saying how to get it. */
function binary(name: string): string {
  const path = join(root, "node_modules/.bin", name);
  assert.ok(existsSync(path), `${name} is not installed: run \`npm install\` in ${root} (it is a devDependency)`);
  return path;
}

/** Runs the smoke script under one runtime; resolves with its output once it exits. */
function smoke(command: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("CELERITY_") && k !== "NATS_URL") env[k] = v;
  Object.assign(env, { CELERITY_SERVERS: server.url, CELERITY_NAMESPACE: ns, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" });
  const started = Date.now();
  const child = spawn(command, args, { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${command} ${args.join(" ")} did not finish within 60 s\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, 60_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

async function expectOk(runtime: string, command: string, args: string[]): Promise<void> {
  const r = await smoke(command, args);
  assert.equal(r.code, 0, `${runtime} exited ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  assert.match(r.stdout, new RegExp(`^ok ${runtime} \\d+\\.\\d+`, "m"), r.stdout + r.stderr);
  console.log(`${r.stdout.trim()} (${r.ms} ms, whole process)`);
}

describe("runtimes", () => {
  test("runtimes - the client connects, sends, calls, follows progress and reads results under node", async () => {
    await expectOk("node", process.execPath, ["--import", "tsx", SMOKE]);
  });

  test("runtimes - the same script runs unmodified under deno run -A (node_modules, deno.json)", async () => {
    await expectOk("deno", binary("deno"), ["run", "-A", SMOKE]);
  });

  test("runtimes - the same script runs unmodified under bun", async () => {
    await expectOk("bun", binary("bun"), ["run", SMOKE]);
  });
});
