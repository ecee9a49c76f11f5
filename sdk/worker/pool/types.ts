/**
 * The contract between the worker and its executors: what one execution needs, what comes back,
 * and the pool that runs executions inline, on worker threads or in child processes.
 */
import type { ErrorShape, WorkerIdentity } from "../../protocol/mod.ts";
import type { Client } from "../../client/mod.ts";
import type { TaskContext } from "../worker.ts";

/** Where handlers run: this thread, `node:worker_threads` threads, or forked child processes. */
export type PoolKind = "inline" | "threads" | "processes";

/** One execution of one task. Everything in it is structured-cloneable (it crosses to the executor). */
export interface ExecutionRequest {
  /** The task id. */
  id: string;
  /** The task name (the signature name the handler was implemented for). */
  task: string;
  /** Validated arguments (the args schema's output). Must be structured-cloneable. */
  args: unknown;
  queue: string;
  attempt: number;
  retries: number;
  deliveryCount: number;
  meta: Record<string, unknown>;
  worker: WorkerIdentity;
  /** Milliseconds after which `ctx.signal` is aborted with a `SoftTimeLimitExceeded` reason. */
  softTimeLimitMs?: number;
  /**
   * Milliseconds after which the execution is ended for real: the thread is terminated or the
   * process SIGKILLed, and the outcome is `TimeLimitExceeded` (not retryable). Inline pools cannot
   * kill: they stop waiting (see docs/pools.md).
   */
  timeLimitMs?: number;
}

/** What an execution ended with. `killed` is true when its executor was killed under it. */
export type ExecutionOutcome =
  | { ok: true; value: unknown }
  | { ok: false; error: ErrorShape; killed?: boolean };

/** Where an execution's side output goes while it runs. Exceptions thrown by hooks are ignored. */
export interface ExecutionHooks {
  /** `ctx.progress(value)` in the handler. */
  progress(value: unknown): void;
  /** `ctx.log.<level>(message, data)` in the handler; `data` carries the logger's child fields. */
  log?(level: string, message: string, data?: Record<string, unknown>): void;
}

/** One executor as seen by {@link Pool.executors}. */
export interface ExecutorInfo {
  /** Sequence number of the executor within this pool (1, 2, …; replacements get new numbers). */
  seq: number;
  /** Process id: the child's for processes, this process's for threads and inline. */
  pid: number;
  /** Thread id (threads only; 0 for processes and inline). */
  threadId: number;
  state: "starting" | "idle" | "busy" | "retiring";
  /** Task id being run, if busy. */
  task?: string;
  /** Tasks this executor finished. */
  tasksRun: number;
}

/** Counters of a pool. */
export interface PoolStats {
  /** Target number of executors (after grow/shrink). */
  size: number;
  /** Executions running now. */
  busy: number;
  /** Executions waiting for a free executor. */
  queued: number;
  /** Executions finished (any outcome). */
  tasksRun: number;
  /** Executors replaced: killed (hard limit, terminate), died, or recycled (max tasks / memory). */
  replaced: number;
}

/** Runs executions on a fixed (growable) set of executors. */
export interface Pool {
  readonly kind: PoolKind;
  /** Target number of executors (threads, processes, or concurrent inline executions). */
  readonly size: number;
  /**
   * Runs one execution; waits (FIFO) while every executor is busy. Never rejects: every failure,
   * including a killed or crashed executor, is an outcome. `signal` aborting while queued resolves at
   * once with `{ ok: false, error: <the reason as ErrorShape> }`; while running it aborts the
   * handler's `ctx.signal` with the same reason (the handler decides what to return).
   */
  run(req: ExecutionRequest, hooks: ExecutionHooks, signal?: AbortSignal): Promise<ExecutionOutcome>;
  /**
   * Revoke with terminate: kills the executor running `taskId` (its outcome becomes `TaskTerminated`,
   * `killed: true`) and replaces it; a queued execution is dropped with the same outcome (not killed).
   * Inline pools abort the signal and stop waiting. False when the task is neither running nor queued.
   */
  terminate(taskId: string, reason: string): boolean;
  /** Adds `n` executors. */
  grow(n: number): void;
  /** Removes `n` executors (idle ones at once, busy ones after their task); never below 1. */
  shrink(n: number): void;
  stats(): PoolStats;
  /** The executors now (for status and tests). */
  executors(): ExecutorInfo[];
  /**
   * Refuses new work, resolves queued executions as `PoolClosed`, waits up to `graceMs` (default
   * `PoolOptions.closeGraceMs`, 10 s) for running ones, then kills what still runs (outcome
   * `PoolClosed`, `killed: true`), and resolves once every executor has exited.
   */
  close(options?: { graceMs?: number }): Promise<void>;
}

/** A handler as the pool calls it. */
export type PoolHandler = (args: unknown, ctx: TaskContext) => unknown;

/** Pool-level diagnostics (executor died, replaced, could not start). */
export type PoolLog = (level: "debug" | "info" | "warn" | "error", message: string, data?: Record<string, unknown>) => void;

/** Options of {@link createPool}. */
export interface PoolOptions {
  kind: PoolKind;
  /** Executors (threads/processes), or executions at once for inline. At least 1. */
  size: number;
  /**
   * Absolute path or file URL of a tasks module: its default export (or `register` export) is called
   * with a registrar offering `implement(sig, handler)`. Required for threads and processes (each
   * executor imports it); inline pools may pass `handlers` instead.
   */
  tasksModule?: string;
  /** Inline only: the handlers by task name (e.g. the worker's registry) instead of a tasks module. */
  handlers?: ReadonlyMap<string, PoolHandler>;
  /** Replace an executor after it finished this many tasks (threads and processes). */
  maxTasksPerChild?: number;
  /**
   * Bytes; checked after each task: RSS of the child (processes) or V8 heap used by the thread
   * (threads). An executor over it is replaced.
   */
  maxMemoryPerChild?: number;
  /**
   * `connect()` options for `ctx.client` in executors; the connection is opened on first use of
   * `ctx.client` and closed when the executor exits. Inline pools also take `client`.
   */
  connect?: Record<string, unknown>;
  /** Inline only: the client handlers get as `ctx.client` (e.g. the worker's). */
  client?: Client | (() => Client);
  /**
   * Node options of executors, e.g. `["--import", "tsx"]` for a .ts tasks module. Default: this
   * process's `execArgv` (processes drop `-e`/`-p`, `--test*`, `--watch*` and debugger flags; threads inherit natively).
   */
  execArgv?: string[];
  /** Threads only: V8 heap limits of each thread (a thread over them is ended and replaced). */
  resourceLimits?: { maxOldGenerationSizeMb?: number; maxYoungGenerationSizeMb?: number; codeRangeSizeMb?: number; stackSizeMb?: number };
  /** Milliseconds an executor may take to load the tasks module. Default 30 s. */
  startTimeoutMs?: number;
  /** Default grace of `close()`. Default 10 s. */
  closeGraceMs?: number;
  /** Pool-level diagnostics. Default: warnings and errors to stderr. */
  log?: PoolLog;
  /** Overrides the executor entry file (for bundlers): path or file URL of the built `child.ts`. */
  childEntry?: string;
}
