/**
 * Starting executors: a `node:worker_threads` thread or a forked child process running `child.ts`,
 * behind one small channel interface (send, kill, ref/unref, exited).
 */
import { fork } from "node:child_process";
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Worker as Thread } from "node:worker_threads";
import { moduleUrl } from "./execute.ts";
import type { FromExecutor, ToExecutor } from "./messages.ts";

/** How an executor ended. */
export interface ExitInfo {
  code: number | null;
  signal: string | null;
  /** The error that ended a thread, or that prevented a process from starting. */
  error?: string;
}

/** One running executor. */
export interface Channel {
  readonly pid: number;
  readonly threadId: number;
  /** Throws when `msg` cannot be serialized. */
  send(msg: ToExecutor): void;
  /** Ends it now: `terminate()` for threads, SIGKILL for processes. */
  kill(): void;
  /** Keep this process alive while the executor works (`ref`), or not while it idles (`unref`). */
  ref(): void;
  unref(): void;
  /** Resolves once it has exited and every message it sent has been delivered. */
  readonly exited: Promise<ExitInfo>;
  onMessage: ((msg: FromExecutor) => void) | undefined;
}

/**
 * Thread bootstrap (evaluated as a script). tsx's `--import tsx` does not hook worker threads on
 * Node 20, so when the pool finds tsx among the Node options it registers tsx in the thread itself
 * before importing the entry (registering twice on newer Node is harmless).
 */
const THREAD_BOOTSTRAP = `import("node:worker_threads").then(async ({ workerData }) => {
  if (workerData.tsx) (await import(workerData.tsx)).register();
  await import(workerData.entry);
});`;

/** Starts a thread executor. */
export function spawnThread(entry: string, options: { execArgv?: string[]; tsx?: string; resourceLimits?: Record<string, number | undefined> }): Channel {
  const thread = new Thread(THREAD_BOOTSTRAP, {
    eval: true,
    workerData: { entry: moduleUrl(entry), tsx: options.tsx },
    env: { ...process.env, [EXECUTOR_ENV]: "thread" },
    ...(options.execArgv ? { execArgv: options.execArgv } : {}),
    ...(options.resourceLimits ? { resourceLimits: options.resourceLimits } : {}),
  });
  let error: string | undefined;
  const channel: Channel = {
    pid: process.pid,
    threadId: thread.threadId,
    send: (msg) => thread.postMessage(msg),
    kill: () => void thread.terminate().catch(() => {}),
    ref: () => thread.ref(),
    unref: () => thread.unref(),
    exited: new Promise((resolve) => {
      thread.on("error", (err) => {
        error = `${(err as Error)?.name ?? "Error"}: ${(err as Error)?.message ?? String(err)}`;
      });
      thread.on("exit", (code) => resolve({ code, signal: null, ...(error ? { error } : {}) }));
    }),
    onMessage: undefined,
  };
  thread.on("message", (msg: FromExecutor) => channel.onMessage?.(msg));
  return channel;
}

/** Starts a child-process executor (advanced serialization: Date, Map, Set, BigInt… survive). */
export function spawnProcess(entry: string, options: { execArgv: string[] }): Channel {
  const child = fork(fileURLToPath(moduleUrl(entry)), [], {
    execArgv: options.execArgv,
    serialization: "advanced",
    env: { ...process.env, [EXECUTOR_ENV]: "process" },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const channel: Channel = {
    pid: child.pid ?? 0,
    threadId: 0,
    send: (msg) => {
      // The callback keeps a closed channel from becoming an 'error' event; the exit is handled.
      if (child.connected) child.send(msg, undefined, undefined, () => {});
    },
    kill: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
    },
    ref: () => {
      child.ref();
      child.channel?.ref();
    },
    unref: () => {
      child.unref();
      child.channel?.unref();
    },
    // 'close' comes after 'exit' and after the IPC channel delivered everything the child sent.
    exited: new Promise((resolve) => {
      child.on("close", (code, signal) => resolve({ code, signal }));
      child.on("error", (err) => {
        if (child.pid === undefined) resolve({ code: null, signal: null, error: `could not start: ${err.message}` });
      });
    }),
    onMessage: undefined,
  };
  child.on("message", (msg) => channel.onMessage?.(msg as FromExecutor));
  return channel;
}

/** The executor entry beside this file: `child.ts` in sources, `pool_child.js`/`child.js` when built. */
export function defaultChildEntry(): string {
  for (const name of ["./child.ts", "./pool_child.js", "./child.js"]) {
    const url = new URL(name, import.meta.url);
    if (url.protocol === "file:" && existsSync(fileURLToPath(url))) return url.href;
  }
  throw new Error(`cannot find the pool executor entry beside ${import.meta.url} (child.ts or pool_child.js): pass \`childEntry\` to createPool()`);
}

/**
 * Node options a child must not inherit: they would make it run something else than the executor
 * (`-e`/`-p` code, the test runner, watch mode, a REPL) or fight over a debugger port.
 */
const DROPPED = /^(-e|--eval|-p|--print|-pe|-i|--interactive|-c|--check|--run|--watch.*|--test.*|--experimental-test-.*|--inspect.*|--debug.*)$/;
/** Those of them whose value may follow as the next argument. */
const VALUE_FLAGS = new Set([
  "-e", "--eval", "-p", "--print", "-pe", "--run", "--watch-path", "--inspect-port", "--debug-port",
  "--test-reporter", "--test-reporter-destination", "--test-name-pattern", "--test-skip-pattern",
  "--test-concurrency", "--test-timeout", "--test-shard", "--test-coverage-include", "--test-coverage-exclude",
]);

/** This process's Node options minus those a child executor must not reuse (see {@link DROPPED}). */
export function inheritedExecArgv(execArgv: readonly string[] = process.execArgv): string[] {
  const out: string[] = [];
  for (let i = 0; i < execArgv.length; i++) {
    const arg = execArgv[i]!;
    const flag = arg.split("=")[0]!;
    if (DROPPED.test(flag)) {
      if (!arg.includes("=") && VALUE_FLAGS.has(flag)) i++;
      continue;
    }
    out.push(arg);
  }
  return out;
}

/** Set in every executor's environment, so a pool started inside one is refused instead of recursing. */
export const EXECUTOR_ENV = "CELERITY_POOL_EXECUTOR";

/** True when Node options load tsx (`--import tsx`, the tsx CLI's loader, `--require tsx/cjs`…). */
export function usesTsx(execArgv: readonly string[]): boolean {
  return execArgv.some((a) => /(^|[=\\/@])tsx([\\/]|$)/.test(a));
}

let tsxApi: string | null | undefined;
/** File URL of tsx's `tsx/esm/api` (beside this module, else from the working directory), if installed. */
export function resolveTsxApi(): string | undefined {
  if (tsxApi !== undefined) return tsxApi ?? undefined;
  tsxApi = null;
  try {
    tsxApi = import.meta.resolve("tsx/esm/api");
  } catch {
    try {
      const pkg = createRequire(join(process.cwd(), "noop.js")).resolve("tsx/package.json");
      const api = join(dirname(pkg), "dist", "esm", "api", "index.mjs");
      if (existsSync(api)) tsxApi = pathToFileURL(api).href;
    } catch {
      // not installed
    }
  }
  return tsxApi ?? undefined;
}
