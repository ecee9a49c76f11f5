/**
 * Running handlers in the current thread: loading a tasks module through a registrar, building the
 * handler's context, the soft time limit, and turning whatever happens into an outcome. Shared by
 * the inline pool and by executors (threads and processes).
 */
import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { toErrorShape } from "../../protocol/mod.ts";
import type { Client } from "../../client/mod.ts";
import type { Logger } from "../../client/mod.ts";
import type { TaskContext } from "../worker.ts";
import { RetryRequested, SoftTimeLimitExceeded } from "./errors.ts";
import type { ExecutionOutcome, ExecutionRequest, PoolHandler } from "./types.ts";

/** A file URL for a path or URL of a module. */
export function moduleUrl(spec: string): string {
  if (/^(file|data):/.test(spec)) return spec;
  return pathToFileURL(isAbsolute(spec) ? spec : resolve(spec)).href;
}

/**
 * What a tasks module's `register(worker)` receives in an executor: `implement(sig, handler)`
 * collects handlers by `sig.name` and returns the registrar; `registered` and `queues` answer as a
 * worker would; any other Worker method is accepted and ignored (it returns the registrar).
 */
export function createRegistrar(): { registrar: { implement(sig: { name: string }, handler: PoolHandler): unknown }; handlers: Map<string, PoolHandler> } {
  const handlers = new Map<string, PoolHandler>();
  const queues = new Set<string>();
  const target = {
    implement(sig: { name: string; options?: { queue?: string } }, handler: PoolHandler): unknown {
      if (!sig || typeof sig.name !== "string") throw new TypeError("implement(sig, handler): `sig` must be a signature");
      if (typeof handler !== "function") throw new TypeError(`implement("${sig.name}", handler): \`handler\` must be a function`);
      if (handlers.has(sig.name)) throw new Error(`task "${sig.name}" is already implemented by this tasks module`);
      handlers.set(sig.name, handler);
      queues.add(sig.options?.queue ?? "default");
      return registrar;
    },
    get registered(): string[] {
      return [...handlers.keys()];
    },
    get queues(): string[] {
      return queues.size ? [...queues] : ["default"];
    },
  };
  const registrar: typeof target = new Proxy(target, {
    get(t, prop, receiver) {
      if (prop in t) return Reflect.get(t, prop, receiver);
      // Not thenable (register() may return it from an async function), no symbols.
      if (typeof prop === "symbol" || prop === "then") return undefined;
      return () => registrar;
    },
  });
  return { registrar, handlers };
}

/** Imports a tasks module and calls its default export (or `register`) with a registrar. */
export async function loadTasksModule(spec: string): Promise<Map<string, PoolHandler>> {
  const url = moduleUrl(spec);
  const mod = (await import(url)) as { default?: unknown; register?: unknown };
  const register = typeof mod.default === "function" ? mod.default : typeof mod.register === "function" ? mod.register : undefined;
  if (!register) {
    throw new TypeError(`tasks module ${spec} has no default export or \`register\` export that is a function (expected \`export default function register(worker) { worker.implement(sig, handler) }\`)`);
  }
  const { registrar, handlers } = createRegistrar();
  await (register as (w: unknown) => unknown)(registrar);
  return handlers;
}

/** Where a local execution's side output goes. */
export interface LocalIO {
  progress(value: unknown): void;
  log(level: string, message: string, data?: Record<string, unknown>): void;
  client(): Client;
}

/** A running local execution. */
export interface LocalRun {
  readonly promise: Promise<ExecutionOutcome>;
  /** Aborts the handler's `ctx.signal` with `reason` (no effect once aborted). */
  abort(reason: unknown): void;
}

/** Runs `handler` in this thread with a fresh context; the promise never rejects. */
export function runLocal(handler: PoolHandler, req: ExecutionRequest, io: LocalIO): LocalRun {
  const controller = new AbortController();
  const softTimer = req.softTimeLimitMs !== undefined
    ? setTimeout(() => controller.abort(new SoftTimeLimitExceeded(req.id, req.softTimeLimitMs! / 1000)), req.softTimeLimitMs)
    : undefined;
  const ctx: TaskContext = {
    id: req.id,
    name: req.task,
    queue: req.queue,
    attempt: req.attempt,
    retries: req.retries,
    deliveryCount: req.deliveryCount,
    signal: controller.signal,
    meta: req.meta,
    worker: req.worker,
    log: forwardingLogger(io.log, {}),
    progress: (value: unknown) => io.progress(value),
    retry: (options = {}) => {
      throw new RetryRequested(options.delay, options.reason ?? "requested by the task");
    },
    get client(): Client {
      return io.client();
    },
  };
  const promise = (async (): Promise<ExecutionOutcome> => {
    try {
      return { ok: true, value: await handler(req.args, ctx) };
    } catch (err) {
      return { ok: false, error: toErrorShape(err) };
    } finally {
      clearTimeout(softTimer);
    }
  })();
  return {
    promise,
    abort: (reason) => {
      if (!controller.signal.aborted) controller.abort(reason);
    },
  };
}

/** A Logger whose lines go to `emit` with the child fields merged into `data`. */
export function forwardingLogger(emit: LocalIO["log"], fields: Record<string, unknown>): Logger {
  const at = (level: string) => (message: string, data?: Record<string, unknown>) => {
    const merged = { ...fields, ...data };
    emit(level, String(message), Object.keys(merged).length ? merged : undefined);
  };
  return {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: (more) => forwardingLogger(emit, { ...fields, ...more }),
  };
}
