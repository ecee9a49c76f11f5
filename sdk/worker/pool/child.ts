/**
 * The executor entry: runs in a `node:worker_threads` thread or a forked child process. It loads
 * the tasks module named by the pool's `init` message, then runs one execution at a time and
 * reports progress, logs and the outcome. It exits on `close`, when its parent goes away (processes),
 * or after an uncaught error (reported first as `fatal`).
 */
import process from "node:process";
import { getHeapStatistics } from "node:v8";
import { parentPort, threadId } from "node:worker_threads";
import { toErrorShape } from "../../protocol/mod.ts";
import { POOL_ERROR, reasonFromData } from "./errors.ts";
import { loadTasksModule, runLocal, type LocalRun } from "./execute.ts";
import { LazyClient } from "./lazy_client.ts";
import type { FromExecutor, ToExecutor } from "./messages.ts";
import type { ExecutionOutcome, ExecutionRequest, PoolHandler } from "./types.ts";

const port = parentPort;
const isThread = port !== null;

if (!isThread && typeof process.send !== "function") {
  console.error("celerity pool executor: started without a parent (run it through createPool())");
  process.exit(1);
}

/** Sends to the pool; throws when `msg` cannot be serialized. */
function post(msg: FromExecutor, done?: () => void): void {
  if (port) {
    port.postMessage(msg);
    done?.();
  } else {
    process.send!(msg, undefined, undefined, () => done?.());
  }
}

/** Sends, dropping messages that cannot be serialized (reporting that instead). */
function postSafely(msg: FromExecutor, id: string, what: string): void {
  try {
    post(msg);
  } catch (err) {
    try {
      post({ type: "log", id, level: "warn", message: `${what} could not be sent from the executor: ${(err as Error).message}` });
    } catch {
      // The channel is gone; the pool notices the exit.
    }
  }
}

function memory(): number {
  return isThread ? getHeapStatistics().used_heap_size : process.memoryUsage.rss();
}

let handlers: Map<string, PoolHandler> | undefined;
let client = new LazyClient();
let current: { id: string; run: LocalRun } | undefined;
let exiting = false;

async function exit(code: number): Promise<void> {
  if (exiting) return;
  exiting = true;
  await Promise.race([client.close(), new Promise((r) => setTimeout(r, 2000).unref())]);
  process.exit(code);
}

async function init(msg: Extract<ToExecutor, { type: "init" }>): Promise<void> {
  try {
    client = new LazyClient(msg.connect ?? {});
    handlers = await loadTasksModule(msg.tasksModule);
    post({ type: "ready", tasks: [...handlers.keys()], pid: process.pid, threadId });
  } catch (err) {
    post({ type: "init-error", error: toErrorShape(err, false) }, () => void exit(1));
  }
}

async function run(req: ExecutionRequest): Promise<void> {
  const handler = handlers?.get(req.task);
  if (!handler) {
    const message = `no handler for task "${req.task}" in this executor (its tasks module implements: ${[...(handlers?.keys() ?? [])].join(", ") || "nothing"})`;
    sendDone(req, { ok: false, error: { type: POOL_ERROR.notRegistered, message, retryable: false } });
    return;
  }
  const local = runLocal(handler, req, {
    progress: (value) => postSafely({ type: "progress", id: req.id, value }, req.id, "a progress value"),
    log: (level, message, data) => postSafely({ type: "log", id: req.id, level, message, ...(data ? { data } : {}) }, req.id, "a log line"),
    client: () => client.get(),
  });
  current = { id: req.id, run: local };
  const outcome = await local.promise;
  current = undefined;
  sendDone(req, outcome);
}

function sendDone(req: ExecutionRequest, outcome: ExecutionOutcome): void {
  try {
    post({ type: "done", id: req.id, outcome, memory: memory() });
    return;
  } catch (err) {
    const message = (err as Error).message;
    let fallback: ExecutionOutcome;
    if (outcome.ok) {
      fallback = {
        ok: false,
        error: { type: POOL_ERROR.dataClone, message: `the result of task "${req.task}" (${req.id}) cannot be sent from the executor to the worker: ${message}`, retryable: false },
      };
    } else {
      const { details: _d, ...error } = outcome.error;
      fallback = { ok: false, error: { ...error, details: { unserializable: message } } };
    }
    post({ type: "done", id: req.id, outcome: fallback, memory: memory() });
  }
}

function onMessage(msg: ToExecutor): void {
  switch (msg.type) {
    case "init":
      void init(msg);
      break;
    case "run":
      void run(msg.req);
      break;
    case "abort":
      if (current?.id === msg.id) current.run.abort(reasonFromData(msg.reason));
      break;
    case "close":
      void exit(0);
      break;
  }
}

process.on("uncaughtException", (err) => {
  if (exiting) return;
  try {
    post({ type: "fatal", error: toErrorShape(err) }, () => void exit(1));
  } catch {
    void exit(1);
  }
  setTimeout(() => process.exit(1), 1000).unref();
});

if (port) {
  port.on("message", onMessage);
} else {
  process.on("message", (msg) => onMessage(msg as ToExecutor));
  // The pool went away (closed the channel or died): nothing will ask for results any more.
  process.on("disconnect", () => void exit(0));
}
