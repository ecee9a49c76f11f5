/**
 * Worker pools: where task handlers run. `inline` runs them in this thread; `threads` and
 * `processes` run each execution on an executor (a `node:worker_threads` thread or a forked child
 * process) that a hard time limit, a revoke with terminate, or a crash can end for real, after which
 * the executor is replaced and the execution resolves as a failure. See docs/pools.md.
 *
 * @example
 * ```ts
 * const pool = await createPool({ kind: "processes", size: 4, tasksModule: "/srv/app/tasks.ts", execArgv: ["--import", "tsx"] });
 * const outcome = await pool.run(
 *   { id, task: "images.resize", args, queue: "images", attempt: 1, retries: 0, deliveryCount: 1, meta: {}, worker, timeLimitMs: 60_000 },
 *   { progress: (p) => console.log(p) },
 * );
 * if (!outcome.ok) console.error(outcome.error.type, outcome.error.message, outcome.killed);
 * await pool.close();
 * ```
 * @module
 */
import process from "node:process";
import { ExecutorPool } from "./executor_pool.ts";
import { EXECUTOR_ENV } from "./executors.ts";
import { InlinePool } from "./inline.ts";
import type { Pool, PoolOptions } from "./types.ts";

export type {
  ExecutionHooks,
  ExecutionOutcome,
  ExecutionRequest,
  ExecutorInfo,
  Pool,
  PoolHandler,
  PoolKind,
  PoolLog,
  PoolOptions,
  PoolStats,
} from "./types.ts";
export { POOL_ERROR, retryRequest, RetryRequested, SoftTimeLimitExceeded, TaskTerminated, TimeLimitExceeded } from "./errors.ts";
export { createRegistrar, loadTasksModule } from "./execute.ts";

/**
 * Creates a pool and resolves once its executors are ready (each loaded the tasks module). Rejects
 * when the options are wrong or the tasks module cannot be loaded (with the executor's error).
 */
export async function createPool(options: PoolOptions): Promise<Pool> {
  if (!Number.isFinite(options.size) || options.size < 1) throw new RangeError(`pool size must be at least 1 (got ${options.size})`);
  if (options.kind !== "inline" && process.env[EXECUTOR_ENV]) {
    throw new Error(
      `createPool({ kind: "${options.kind}" }) was called inside a pool executor (${process.env[EXECUTOR_ENV]}): a tasks module imported by a pool must not start a worker or pool at import time, or executors would start executors without end`,
    );
  }
  switch (options.kind) {
    case "inline":
      return InlinePool.create(options);
    case "threads":
    case "processes":
      return ExecutorPool.create({ ...options, kind: options.kind });
    default:
      throw new TypeError(`unknown pool kind ${JSON.stringify((options as { kind: unknown }).kind)} (expected "inline", "threads" or "processes")`);
  }
}
