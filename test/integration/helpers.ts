/** Helpers for integration tests: a fresh namespace per test, so files and tests never collide. */
import { after, before } from "node:test";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { connect, type Client, type ConnectOptions } from "../../sdk/client/mod.ts";
import { Worker, type WorkerOptions } from "../../sdk/worker/mod.ts";
import registerExampleTasks from "../../examples/tasks/worker.ts";

let counter = 0;
/** A namespace no other test uses. */
export function freshNamespace(prefix = "t"): string {
  return `${prefix}${process.pid}x${++counter}${Math.random().toString(36).slice(2, 6)}`;
}

/** Options every test client/worker gets: the test server, a fresh namespace, no settings file. */
export function testOptions(server: NatsServer, namespace: string): ConnectOptions {
  return { servers: [server.url], namespace, file: undefined };
}

/** Connects a client to the test server in `namespace`. */
export function client(server: NatsServer, namespace: string, extra: ConnectOptions = {}): Promise<Client> {
  return connect({ ...testOptions(server, namespace), ...extra });
}

/** A worker on the test server in `namespace`, quiet unless a test asks for logs. */
export function worker(server: NatsServer, namespace: string, extra: WorkerOptions = {}): Worker {
  return new Worker({ ...testOptions(server, namespace), logLevel: "silent", ...extra });
}

/** What {@link withExampleWorker} started: filled in by its `before` hook. */
export interface ExampleWorker {
  server: NatsServer;
  worker: Worker;
  namespace: string;
}

/**
 * For the calling test file: one nats-server and one worker with the example tasks
 * (examples/tasks) on queues default and images, in a fresh namespace, started before the file's
 * tests and stopped after them. Read the returned object's fields inside tests.
 */
export function withExampleWorker(prefix: string, extra: WorkerOptions = {}): ExampleWorker {
  const fixture = {} as ExampleWorker;
  before(async () => {
    fixture.server = await NatsServer.start();
    fixture.namespace = freshNamespace(prefix);
    fixture.worker = worker(fixture.server, fixture.namespace, { queues: ["default", "images"], concurrency: 4, ...extra });
    registerExampleTasks(fixture.worker);
    await fixture.worker.start();
  });
  after(async () => {
    await fixture.worker?.close();
    await fixture.server?.stop();
  });
  return fixture;
}

/** Polls `check` until it returns a truthy value or `timeoutMs` passes. */
export async function eventually<T>(check: () => Promise<T> | T, timeoutMs = 10_000, what = "condition"): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < until) {
    try {
      const value = await check();
      if (value) return value as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${(last as Error).message}` : ""}`);
}

/** The repository root: scripts run from it, so deno.json (node_modules, import map) applies. */
export const root = fileURLToPath(new URL("../..", import.meta.url));

/** The runtimes a client script runs under. Deno and Bun come from the devDependencies. */
export const RUNTIMES = ["node", "deno", "bun"] as const;
export type Runtime = (typeof RUNTIMES)[number];

/** The command line that runs a TypeScript file under `runtime` (append the file and its arguments). */
export function runtimeCommand(runtime: Runtime): string[] {
  if (runtime === "node") return [process.execPath, "--import", "tsx"];
  const binary = join(root, "node_modules/.bin", runtime);
  if (!existsSync(binary)) throw new Error(`${runtime} is not installed: run \`npm install\` in ${root} (it is a devDependency)`);
  return runtime === "deno" ? [binary, "run", "-A"] : [binary, "run"];
}

/** What a script run printed, how it exited, and how long the whole process took. */
export interface ScriptRun {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/**
 * Runs `script` (a path from the repository root) under `runtime` against `server` in `namespace`,
 * which reach it through CELERITY_SERVERS and CELERITY_NAMESPACE (no other CELERITY_* variable
 * leaks in). Resolves once it exited; rejects when it is still running after `timeoutMs`.
 */
export function runScript(
  runtime: Runtime,
  script: string,
  args: string[],
  { server, namespace, timeoutMs = 60_000 }: { server: NatsServer; namespace: string; timeoutMs?: number },
): Promise<ScriptRun> {
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("CELERITY_") && k !== "NATS_URL") env[k] = v;
  Object.assign(env, { CELERITY_SERVERS: server.url, CELERITY_NAMESPACE: namespace, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" });
  const [command, ...pre] = runtimeCommand(runtime);
  const started = Date.now();
  const child = spawn(command!, [...pre, script, ...args], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${runtime} ${script} ${args.join(" ")} did not finish within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}
