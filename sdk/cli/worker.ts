/** `celerity worker -A <tasks module>`: load a module that implements tasks and run a worker for it. */
import { existsSync, statSync } from "node:fs";
import { createRequire } from "node:module";
import { resolve } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { LOG_LEVEL, Worker, type LogLevel } from "../worker/mod.ts";
import { CONNECTION_HELP, intOption, noPositionals, parseCommand, queueList } from "./args.ts";
import { openClient } from "./connection.ts";
import { CliError, EXIT, UsageError, type Command, type Io } from "./io.ts";

/** What a tasks module exports (as default, or as `register`). */
export type RegisterTasks = (worker: Worker) => void | Promise<void>;

const TS_FILE = /\.(ts|mts|cts|tsx)$/i;

/** True when .ts files already load: the CLI runs from source, or node was started with tsx. */
function typeScriptLoaderActive(): boolean {
  if (import.meta.url.endsWith(".ts")) return true;
  return [...process.execArgv, process.env.NODE_OPTIONS ?? ""].some((arg) => /\btsx\b/.test(arg));
}

type LoaderApi = { register?: () => unknown; default?: { register?: () => unknown } };

/** Imports one of tsx's loader APIs: from beside the CLI first, then from beside the tasks module. */
async function tsxApi(entry: "tsx/esm/api" | "tsx/cjs/api", path: string): Promise<(() => unknown) | undefined> {
  let api: LoaderApi | undefined;
  try {
    api = (await import(entry)) as LoaderApi;
  } catch {
    try {
      api = (await import(pathToFileURL(createRequire(path).resolve(entry)).href)) as LoaderApi;
    } catch {
      return undefined;
    }
  }
  const register = api.register ?? api.default?.register;
  return typeof register === "function" ? register : undefined;
}

/**
 * Registers tsx so the tasks module loads: its ESM hooks, and its CommonJS hooks for a .ts file in
 * a package that is not `"type": "module"` (Node treats those as CommonJS).
 */
async function registerTsx(path: string, shown: string): Promise<void> {
  const esm = await tsxApi("tsx/esm/api", path);
  if (!esm) {
    throw new CliError(`tasks module ${shown} is TypeScript and tsx is not installed: install it (npm install --save-dev tsx) or compile the module to JavaScript`);
  }
  esm();
  (await tsxApi("tsx/cjs/api", path))?.();
}

function describe(value: unknown): string {
  if (value === undefined) return "nothing";
  if (value === null) return "null";
  if (typeof value === "function") return "a function";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") {
    const keys = Object.keys(value);
    return keys.length ? `an object with keys ${keys.slice(0, 8).join(", ")}${keys.length > 8 ? ", …" : ""}` : "an empty object";
  }
  return `${typeof value} ${JSON.stringify(value)}`;
}

/**
 * Imports the tasks module at `spec` (resolved from `cwd`) and returns its register function:
 * the default export, or the export named `register`.
 */
export async function loadTasksModule(spec: string, cwd: string, debug = false): Promise<RegisterTasks> {
  const path = resolve(cwd, spec);
  if (!existsSync(path) || !statSync(path).isFile()) throw new CliError(`tasks module ${spec} not found (looked for ${path})`, EXIT.usage);
  if (TS_FILE.test(path) && !typeScriptLoaderActive()) await registerTsx(path, spec);
  let mod: Record<string, unknown>;
  try {
    mod = (await import(pathToFileURL(path).href)) as Record<string, unknown>;
  } catch (err) {
    const detail = debug && err instanceof Error && err.stack ? `\n${err.stack}` : "";
    throw new CliError(`cannot load tasks module ${spec}: ${err instanceof Error ? err.message : String(err)}${detail}`);
  }
  // A CommonJS module (compiled TypeScript, or .ts outside a "type": "module" package) arrives
  // as { default: module.exports }: look inside it too.
  const cjs = typeof mod.default === "object" && mod.default !== null ? (mod.default as Record<string, unknown>) : {};
  const fn = [mod.default, mod.register, cjs.default, cjs.register].find((f) => typeof f === "function");
  if (fn) return fn as RegisterTasks;
  const named = Object.keys(mod).filter((k) => k !== "default");
  throw new CliError(
    `tasks module ${spec} must export a function (worker) => void that calls worker.implement(...), as its default export or as "register"; ` +
      `its default export is ${describe(mod.default)}, "register" is ${describe(mod.register)}` +
      (named.length ? ` (it exports: ${named.slice(0, 8).join(", ")}${named.length > 8 ? ", …" : ""})` : ""),
  );
}

const LEVELS = Object.keys(LOG_LEVEL) as LogLevel[];

export const workerCommand: Command = {
  name: "worker",
  summary: "run a worker for the tasks a module implements (until SIGINT/SIGTERM)",
  usage: `Usage: celerity worker -A <tasks module> [-Q q1,q2] [-c <n>] [--prefetch <n>] [--loglevel <level>]

Imports the tasks module and runs a worker for it until SIGINT or SIGTERM. The module's default
export (or its export named "register") is a function that receives the worker and implements
the tasks:

  // tasks.ts
  import type { Worker } from "celerity/worker";
  import { add } from "./signatures.ts";
  export default (worker: Worker) => {
    worker.implement(add, ({ a, b }) => a + b);
  };

A .ts module is loaded with tsx (install it, or compile the module to JavaScript). The first
signal finishes running tasks and exits 0 (warm shutdown); a second one returns them to the
queue at once (cold shutdown).

Options:
  -A, --app <module>        the tasks module (a path, resolved from the current directory)
  -Q, --queues <q1,q2>      queues to consume (default: the queues of the implemented signatures)
  -c, --concurrency <n>     tasks running at once (default: CELERITY_CONCURRENCY, then 1)
  --prefetch <n>            messages held per queue (default: CELERITY_PREFETCH, then concurrency)
  -l, --loglevel <level>    ${LEVELS.join(", ")} (default: info); logs go to stderr

${CONNECTION_HELP}

Example:
  celerity worker -A ./tasks.ts -Q default,images -c 4

Exit codes:
  0  stopped by SIGINT/SIGTERM after a graceful shutdown
  1  the tasks module cannot be loaded or implements nothing, the server cannot be reached,
     or the worker failed to start
  2  bad usage: missing -A, a module path that does not exist, unknown option, bad settings`,
  async run(argv: string[], _io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      app: { type: "string", short: "A" },
      queues: { type: "string", short: "Q" },
      concurrency: { type: "string", short: "c" },
      prefetch: { type: "string" },
      loglevel: { type: "string", short: "l" },
    });
    noPositionals(positionals);
    if (values.app === undefined || values.app === "") throw new UsageError("missing -A <tasks module>");
    const queues = values.queues === undefined ? undefined : queueList("-Q", values.queues);
    const concurrency = values.concurrency === undefined ? undefined : intOption("--concurrency", values.concurrency, 1);
    const prefetch = values.prefetch === undefined ? undefined : intOption("--prefetch", values.prefetch, 1);
    const logLevel = (values.loglevel ?? "info").toLowerCase() as LogLevel;
    if (!LEVELS.includes(logLevel)) throw new UsageError(`--loglevel must be one of ${LEVELS.join(", ")}, not ${JSON.stringify(values.loglevel)}`);

    const register = await loadTasksModule(values.app, process.cwd(), logLevel === "debug");
    const client = await openClient(values);
    try {
      const worker = new Worker({ client, queues, concurrency, prefetch, logLevel });
      try {
        await register(worker);
      } catch (err) {
        throw new CliError(`tasks module ${values.app} failed while registering its tasks: ${err instanceof Error ? err.message : String(err)}`);
      }
      if (worker.registered.length === 0 && worker.eternals.length === 0) {
        throw new CliError(`tasks module ${values.app} implemented no task: call worker.implement(signature, handler) in its register function`);
      }
      try {
        await worker.run();
      } catch (err) {
        await worker.close({ graceMs: 0 }).catch(() => {});
        throw err;
      }
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};
