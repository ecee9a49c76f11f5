/** Helpers for integration tests: a fresh namespace per test, so files and tests never collide. */
import { after, before } from "node:test";
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { Worker, type WorkerOptions } from "../../sdk/worker/mod.ts";
import registerExampleTasks from "../../examples/tasks/worker.ts";
import { freshNamespace, testOptions } from "./basics.ts";

export { client, eventually, freshNamespace, testOptions } from "./basics.ts";

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

/** What a child process printed and how it exited. */
export interface ProcessRun {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/**
 * Collects a child's output and resolves once it exited and its pipes closed; kills it and rejects
 * when it is still running after `timeoutMs` (`what` names it in that error).
 */
export function finished(child: ChildProcess, timeoutMs: number, what = "the CLI"): Promise<ProcessRun> {
  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr?.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${what} did not exit within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      // "exit" may come before the pipes are drained: wait for them to close.
      let open = [child.stdout, child.stderr].filter((s) => s && !s.closed).length;
      const done = () => resolve({ code, signal, stdout, stderr });
      if (open === 0) return done();
      for (const s of [child.stdout, child.stderr]) s?.on("close", () => --open === 0 && done());
    });
  });
}

/** What a script run printed, how it exited, and how long the whole process took. */
export interface ScriptRun extends ProcessRun {
  ms: number;
}

/**
 * Runs `script` (a path from the repository root) under `runtime` against `server` in `namespace`,
 * which reach it through CELERITY_SERVERS and CELERITY_NAMESPACE (no other CELERITY_* variable
 * leaks in). Resolves once it exited; rejects when it is still running after `timeoutMs`.
 */
export async function runScript(
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
  const run = await finished(child, timeoutMs, `${runtime} ${script} ${args.join(" ")}`);
  return { ...run, ms: Date.now() - started };
}
