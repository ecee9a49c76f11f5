/** Abort reasons and failure outcomes of pool executions. */
import { toErrorShape, type ErrorShape } from "../../protocol/mod.ts";
import type { ExecutionOutcome } from "./types.ts";

/**
 * The abort reason of `ctx.signal` at the soft time limit. Same name and fields as the worker's
 * class of that name, so either can be used (the worker may re-export this one).
 */
export class SoftTimeLimitExceeded extends Error {
  override name = "SoftTimeLimitExceeded";
  constructor(readonly taskId: string, readonly seconds: number) {
    super(`task ${taskId} exceeded its soft time limit of ${seconds} s`);
  }
}

/** The abort reason of an inline execution's signal at its hard time limit. */
export class TimeLimitExceeded extends Error {
  override name = "TimeLimitExceeded";
  constructor(readonly taskId: string, readonly seconds: number) {
    super(`task ${taskId} exceeded its time limit of ${seconds} s`);
  }
}

/** The abort reason of an execution terminated by revoke. */
export class TaskTerminated extends Error {
  override name = "TaskTerminated";
  constructor(readonly taskId: string, readonly reason: string) {
    super(`task ${taskId} was terminated: ${reason}`);
  }
}

/**
 * Thrown by `ctx.retry()` in a pool execution. It reaches the worker as an ErrorShape of type
 * `RetryRequested` whose `details` hold the delay and reason: read them with {@link retryRequest}.
 */
export class RetryRequested extends Error {
  override name = "RetryRequested";
  readonly details: { delay?: number; reason: string };
  constructor(readonly delaySeconds: number | undefined, readonly reason: string) {
    super(`retry requested: ${reason}`);
    this.details = delaySeconds === undefined ? { reason } : { delay: delaySeconds, reason };
  }
}

/** The retry a failed outcome asks for (`ctx.retry()` in the handler), if it is one. */
export function retryRequest(error: ErrorShape): { delaySeconds: number | undefined; reason: string } | undefined {
  if (error.type !== "RetryRequested") return undefined;
  const d = (error.details ?? {}) as { delay?: unknown; reason?: unknown };
  return { delaySeconds: typeof d.delay === "number" ? d.delay : undefined, reason: typeof d.reason === "string" ? d.reason : error.message };
}

/** Failure type names of outcomes the pool produces itself. */
export const POOL_ERROR = {
  timeLimit: "TimeLimitExceeded",
  terminated: "TaskTerminated",
  died: "ExecutorDied",
  closed: "PoolClosed",
  notRegistered: "NotRegisteredError",
  dataClone: "DataCloneError",
} as const;

/** Hard time limit: not retryable (a run that ran out of time would most likely run out again). */
export function timeLimitOutcome(taskId: string, ms: number, killed: boolean, how: string): ExecutionOutcome {
  return failure({ type: POOL_ERROR.timeLimit, message: `task ${taskId} exceeded its time limit of ${ms / 1000} s${how ? `: ${how}` : ""}`, retryable: false }, killed);
}

/** Revoked with terminate: not retryable. */
export function terminatedOutcome(taskId: string, reason: string, killed: boolean): ExecutionOutcome {
  return failure({ type: POOL_ERROR.terminated, message: `task ${taskId} was terminated: ${reason}`, retryable: false }, killed);
}

/** The executor died under the task (exit, signal, OOM): retryable, since the pool cannot tell why. */
export function diedOutcome(message: string): ExecutionOutcome {
  return failure({ type: POOL_ERROR.died, message, retryable: true }, true);
}

/** The pool closed before or while the execution ran: retryable (another worker may run it). */
export function closedOutcome(taskId: string, killed: boolean): ExecutionOutcome {
  return failure({ type: POOL_ERROR.closed, message: `the pool closed ${killed ? "while task " + taskId + " was running" : "before task " + taskId + " started"}`, retryable: true }, killed);
}

/** An abort reason as a failure. */
export function abortedOutcome(reason: unknown): ExecutionOutcome {
  return failure(toErrorShape(reason ?? new Error("aborted")), false);
}

function failure(error: ErrorShape, killed: boolean): ExecutionOutcome {
  return killed ? { ok: false, error, killed: true } : { ok: false, error };
}

/** An abort reason reduced to what can cross to an executor. */
export function reasonData(reason: unknown): { name: string; message: string } {
  if (reason instanceof Error) return { name: reason.name, message: reason.message };
  return { name: "AbortError", message: typeof reason === "string" ? reason : "aborted" };
}

/** Rebuilds an abort reason on the executor's side. */
export function reasonFromData(data: { name: string; message: string }): Error {
  const err = new Error(data.message);
  err.name = data.name;
  return err;
}
