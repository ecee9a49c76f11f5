/** `celerity worker -A <tasks module>`: load a module that implements tasks and run a worker for it. */
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, resolve } from "node:path";
import process from "node:process";
import { pathToFileURL } from "node:url";
import { createLogger, LOG_LEVEL, Worker, type LogLevel, type WorkerOptions } from "../worker/mod.ts";
import { CONNECTION_HELP, intOption, noPositionals, parseCommand, queueName } from "./args.ts";
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


/** The options of one queue, as `WorkerOptions.queues` takes them. */
export type QueueOptions = Exclude<NonNullable<WorkerOptions["queues"]>, string[]>[string];
/** Where handlers run. */
export type PoolKind = NonNullable<WorkerOptions["pool"]>;
/** The pools `--pool` accepts. */
export const POOLS: readonly PoolKind[] = ["inline", "threads", "processes"];

const SIZE_UNITS: Record<string, number> = { "": 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

/** A size in bytes: `209715200`, `200MB`, `1.5G` (units are powers of 1024). */
export function parseSize(flag: string, value: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(value);
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || unit === undefined || Number(m[1]) <= 0) {
    throw new UsageError(`${flag} must be a size in bytes (209715200) or with a unit (200MB, 1.5GB), not ${JSON.stringify(value)}`);
  }
  return Math.round(Number(m[1]) * unit);
}

const QUEUE_OPTION_KEYS = ["concurrency", "prefetch", "ackWait"] as const;

/**
 * `-Q` values, each a comma-separated list of queue specs `name[:option[:option…]]`, where an
 * option is `serial`, `concurrency=<n>`, `prefetch=<n>` or `ackWait=<seconds>`:
 * `-Q default,openmp:concurrency=1 -Q superevent:serial`. Returns plain names when no queue has
 * options, and a record of options otherwise.
 */
export function parseQueueSpecs(values: readonly string[]): string[] | Record<string, QueueOptions> {
  const specs = values.flatMap((v) => v.split(",")).map((q) => q.trim()).filter((q) => q !== "");
  if (specs.length === 0) throw new UsageError("-Q needs at least one queue name");
  const record: Record<string, QueueOptions> = {};
  let anyOptions = false;
  for (const spec of specs) {
    const [name, ...opts] = spec.split(":");
    queueName(name!);
    const o: QueueOptions = { ...record[name!] };
    for (const opt of opts) {
      anyOptions = true;
      if (opt === "serial") {
        o.serial = true;
        continue;
      }
      const [key, value] = opt.split("=");
      const known = QUEUE_OPTION_KEYS.find((k) => k.toLowerCase() === key?.toLowerCase());
      if (!known || value === undefined) {
        throw new UsageError(`-Q ${spec}: unknown queue option ${JSON.stringify(opt)} (use serial, concurrency=<n>, prefetch=<n>, ackWait=<seconds>)`);
      }
      o[known] = intOption(`-Q ${name}:${known}`, value, 1);
    }
    record[name!] = o;
  }
  return anyOptions ? record : Object.keys(record);
}

/** The `-Q` value of `queues` (the inverse of parseQueueSpecs). */
export function formatQueueSpecs(queues: readonly string[] | Record<string, QueueOptions>): string {
  if (Array.isArray(queues)) return queues.join(",");
  return Object.entries(queues as Record<string, QueueOptions>).map(([name, o]) => {
    const parts = [name];
    if (o.serial) parts.push("serial");
    for (const k of QUEUE_OPTION_KEYS) if (o[k] !== undefined) parts.push(`${k}=${o[k]}`);
    return parts.join(":");
  }).join(",");
}

/** True when a process with this pid exists (also one of another user). */
export function processAlive(pid: number): boolean {
  if (!Number.isSafeInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The pid a PID file names, or undefined when it is missing or holds no number. */
export function readPidFile(path: string): number | undefined {
  try {
    const pid = Number.parseInt(readFileSync(path, "utf8").trim(), 10);
    return Number.isSafeInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Writes this process's pid to `path` (creating its folder). Refuses (exit 1) when the file names
 * another live process; a stale file is overwritten. Returns a function that removes the file if
 * it still names this process (also run at process exit).
 */
export function claimPidFile(path: string, what = "--pidfile"): () => void {
  const old = readPidFile(path);
  if (old !== undefined && old !== process.pid && processAlive(old)) {
    throw new CliError(`${what} ${path} names a live process (pid ${old}): is another worker running? Stop it, or remove the file if the pid was reused`);
  }
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, `${process.pid}\n`);
  let released = false;
  const release = () => {
    if (released) return;
    released = true;
    process.off("exit", release);
    if (readPidFile(path) === process.pid) rmSync(path, { force: true });
  };
  process.on("exit", release);
  return release;
}

/** A line writer appending to `path` (creating its folder); lines are written at once (no buffer to lose). */
export function appendingWriter(path: string): { write: (line: string) => void; close: () => void } {
  mkdirSync(dirname(path), { recursive: true });
  const fd = openSync(path, "a");
  let open = true;
  return {
    write: (line) => {
      if (open) writeSync(fd, line.endsWith("\n") ? line : `${line}\n`);
    },
    close: () => {
      if (open) closeSync(fd);
      open = false;
    },
  };
}

const LEVELS = Object.keys(LOG_LEVEL) as LogLevel[];

export const workerCommand: Command = {
  name: "worker",
  summary: "run a worker for the tasks a module implements (until SIGINT/SIGTERM)",
  usage: `Usage: celerity worker -A <tasks module> [-Q q1,q2] [-c <n>] [--prefetch <n>] [--loglevel <level>]
                       [--pool inline|threads|processes] [--pidfile <path>] [--logfile <path>]

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
  -Q, --queues <q1,q2>      queues to consume (default: the queues of the implemented signatures);
                            repeatable, and a queue may carry options after colons:
                            -Q default,openmp:concurrency=1 -Q superevent:serial
                            (serial, concurrency=<n>, prefetch=<n>, ackWait=<seconds>)
  -c, --concurrency <n>     tasks running at once (default: CELERITY_CONCURRENCY, then 1)
  --prefetch <n>            messages held per queue (default: CELERITY_PREFETCH, else adaptive:
                            the concurrency, up to 4x while tasks are short)
  -l, --loglevel <level>    ${LEVELS.join(", ")} (default: info); logs go to stderr
  --logfile <path>          append log lines to this file instead of stderr (creates its folder)
  --pidfile <path>          write the pid here while running; refuse to start (exit 1) if the file
                            names a live process; a stale file is overwritten
  --pool <kind>             where handlers run: inline (default), threads or processes (docs/pools.md)
  --max-tasks-per-child <n> replace a thread/process executor after n tasks
  --max-memory-per-child <size>
                            replace an executor above this memory after a task (bytes, or 200MB)

${CONNECTION_HELP}

Example:
  celerity worker -A ./tasks.ts -Q default,images -c 4
  celerity worker -A ./tasks.ts -Q openmp:concurrency=1,superevent:serial --pool processes \\
    --pidfile run/w1.pid --logfile log/w1.log

Exit codes:
  0  stopped by SIGINT/SIGTERM after a graceful shutdown
  1  the tasks module cannot be loaded or implements nothing, the server cannot be reached,
     or the worker failed to start
  2  bad usage: missing -A, a module path that does not exist, unknown option, bad settings`,
  async run(argv: string[], _io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      app: { type: "string", short: "A" },
      queues: { type: "string", short: "Q", multiple: true },
      concurrency: { type: "string", short: "c" },
      prefetch: { type: "string" },
      loglevel: { type: "string", short: "l" },
      pidfile: { type: "string" },
      logfile: { type: "string" },
      pool: { type: "string" },
      "max-tasks-per-child": { type: "string" },
      "max-memory-per-child": { type: "string" },
    });
    noPositionals(positionals);
    if (values.app === undefined || values.app === "") throw new UsageError("missing -A <tasks module>");
    const queues = values.queues === undefined ? undefined : parseQueueSpecs(values.queues);
    const concurrency = values.concurrency === undefined ? undefined : intOption("--concurrency", values.concurrency, 1);
    const prefetch = values.prefetch === undefined ? undefined : intOption("--prefetch", values.prefetch, 1);
    const logLevel = (values.loglevel ?? "info").toLowerCase() as LogLevel;
    if (!LEVELS.includes(logLevel)) throw new UsageError(`--loglevel must be one of ${LEVELS.join(", ")}, not ${JSON.stringify(values.loglevel)}`);
    const pool = values.pool as PoolKind | undefined;
    if (pool !== undefined && !POOLS.includes(pool)) throw new UsageError(`--pool must be one of ${POOLS.join(", ")}, not ${JSON.stringify(values.pool)}`);
    const maxTasksPerChild = values["max-tasks-per-child"] === undefined ? undefined : intOption("--max-tasks-per-child", values["max-tasks-per-child"], 1);
    const maxMemoryPerChild = values["max-memory-per-child"] === undefined ? undefined : parseSize("--max-memory-per-child", values["max-memory-per-child"]);
    if (values.pidfile === "") throw new UsageError("--pidfile needs a path");
    if (values.logfile === "") throw new UsageError("--logfile needs a path");

    const release = values.pidfile === undefined ? () => {} : claimPidFile(resolve(values.pidfile));
    const logfile = values.logfile === undefined ? undefined : appendingWriter(resolve(values.logfile));
    try {
      const register = await loadTasksModule(values.app, process.cwd(), logLevel === "debug");
      const client = await openClient(values);
      try {
        const options: WorkerOptions = { client, queues, concurrency, prefetch, logLevel };
        if (logfile) options.logger = createLogger(logLevel, {}, logfile.write);
        if (pool !== undefined) {
          options.pool = pool;
          options.tasksModule = resolve(process.cwd(), values.app);
        }
        if (maxTasksPerChild !== undefined) options.maxTasksPerChild = maxTasksPerChild;
        if (maxMemoryPerChild !== undefined) options.maxMemoryPerChild = maxMemoryPerChild;
        const worker = new Worker(options);
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
    } catch (err) {
      // The reason goes where the logs go, so a worker started with --logfile leaves it there.
      logfile?.write(`${new Date().toISOString()} ERROR ${err instanceof Error ? err.message : String(err)}`);
      throw err;
    } finally {
      logfile?.close();
      release();
    }
  },
};
