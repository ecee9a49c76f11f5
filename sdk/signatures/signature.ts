/**
 * Signatures: a task's name, its argument and result schemas, and its default options, as plain
 * data. Clients and workers share them; a module of signatures imports no worker code.
 */
import {
  assertTaskName,
  assertToken,
  PROTOCOL_VERSION,
  ProtocolError,
  type SchemaIssue,
  type TaskMessage,
} from "../protocol/mod.ts";
import type { StandardSchemaV1 } from "./standard_schema.ts";

/** Options a signature sets as defaults for every send; a call may override them. */
export interface TaskOptions {
  /** Queue the task goes to. Default: `default`. */
  queue?: string;
  /** 0 (lowest, the default) … 9 (highest). */
  priority?: number;
  /** Retries after a failure before the task is marked FAILURE and dead-lettered. Default 0. */
  retries?: number;
  /** Seconds before the first retry; doubled each time (with jitter) up to `retryDelayMax`. */
  retryDelay?: number;
  /** Ceiling of the retry delay, in seconds. */
  retryDelayMax?: number;
  /** Seconds after which the handler's signal is aborted so it can clean up. */
  softTimeLimit?: number;
  /** Seconds after which the execution is ended for real. */
  timeLimit?: number;
  /** Seconds from sending after which the task must not start (it is recorded as REVOKED: expired). */
  expires?: number;
  /**
   * Error names (`err.name`, e.g. "TimeoutError") that are retried; other errors fail at once.
   * Without it, every retryable error is retried up to `retries` times.
   */
  autoretryFor?: readonly string[];
  /** Most starts per worker, e.g. `"100/s"`, `"10/m"` (Celery's `rate_limit`). */
  rateLimit?: string;
  /** Most starts across all workers together, e.g. `"1000/m"`. */
  globalRateLimit?: string;
}

/** A typed task contract: plain data plus schemas. Create one with {@link signature}. */
export interface Signature<
  Name extends string = string,
  Args extends StandardSchemaV1 | undefined = StandardSchemaV1 | undefined,
  Result extends StandardSchemaV1 | undefined = StandardSchemaV1 | undefined,
> {
  readonly kind: "celerity.signature";
  readonly name: Name;
  readonly args: Args;
  readonly result: Result;
  readonly options: Readonly<TaskOptions>;
}

/** Any signature, whatever its schemas. */
// deno-lint-ignore no-explicit-any
export type AnySignature = Signature<string, any, any>;

/** What a caller passes as arguments: the args schema's input type (unknown without a schema). */
export type ArgsInput<S> = S extends Signature<string, infer A, StandardSchemaV1 | undefined>
  ? A extends StandardSchemaV1 ? StandardSchemaV1.InferInput<A> : unknown
  : unknown;
/** What a handler receives: the args schema's output type. */
export type ArgsOutput<S> = S extends Signature<string, infer A, StandardSchemaV1 | undefined>
  ? A extends StandardSchemaV1 ? StandardSchemaV1.InferOutput<A> : unknown
  : unknown;
/** What a handler returns: the result schema's input type. */
export type ResultInput<S> = S extends Signature<string, StandardSchemaV1 | undefined, infer R>
  ? R extends StandardSchemaV1 ? StandardSchemaV1.InferInput<R> : unknown
  : unknown;
/** What a caller gets back: the result schema's output type. */
export type ResultOutput<S> = S extends Signature<string, StandardSchemaV1 | undefined, infer R>
  ? R extends StandardSchemaV1 ? StandardSchemaV1.InferOutput<R> : unknown
  : unknown;

/** The definition passed to {@link signature}. */
export interface SignatureDefinition<
  Args extends StandardSchemaV1 | undefined,
  Result extends StandardSchemaV1 | undefined,
> extends TaskOptions {
  /** Schema of the arguments (any Standard Schema, e.g. valibot). */
  args?: Args;
  /** Schema of the result. */
  result?: Result;
}

/**
 * Declares a task contract. Plain data: safe to import from clients, notebooks and scripts.
 *
 * @example
 * ```ts
 * import * as v from "valibot";
 * export const resize = signature("images.resize", {
 *   args: v.object({ url: v.pipe(v.string(), v.url()), width: v.number() }),
 *   result: v.object({ key: v.string() }),
 *   queue: "images",
 * });
 * ```
 */
export function signature<
  const Name extends string,
  Args extends StandardSchemaV1 | undefined = undefined,
  Result extends StandardSchemaV1 | undefined = undefined,
>(name: Name, definition: SignatureDefinition<Args, Result> = {}): Signature<Name, Args, Result> {
  assertTaskName(name);
  const { args, result, ...options } = definition;
  for (const [key, schema] of [["args", args], ["result", result]] as const) {
    if (schema !== undefined && !isStandardSchema(schema)) {
      throw new ProtocolError(`signature "${name}": \`${key}\` is not a Standard Schema (pass a valibot schema such as v.object({...}))`);
    }
  }
  checkTaskOptions(options, `signature "${name}"`);
  return Object.freeze({
    kind: "celerity.signature",
    name,
    args: args as Args,
    result: result as Result,
    options: Object.freeze({ ...options }),
  });
}

/** True when `value` is a signature made by {@link signature}. */
export function isSignature(value: unknown): value is AnySignature {
  return typeof value === "object" && value !== null && (value as { kind?: unknown }).kind === "celerity.signature";
}

/** True when `value` implements Standard Schema v1. */
export function isStandardSchema(value: unknown): value is StandardSchemaV1 {
  return (typeof value === "object" || typeof value === "function") && value !== null &&
    typeof (value as { "~standard"?: { validate?: unknown } })["~standard"]?.validate === "function";
}

const OPTION_KEYS = new Set(["queue", "priority", "retries", "retryDelay", "retryDelayMax", "softTimeLimit", "timeLimit", "expires", "autoretryFor", "rateLimit", "globalRateLimit"]);

/** Throws a ProtocolError naming the option and value when task options are invalid. */
export function checkTaskOptions(options: Record<string, unknown>, where: string): void {
  for (const [key, value] of Object.entries(options)) {
    if (value === undefined) continue;
    if (!OPTION_KEYS.has(key)) {
      throw new ProtocolError(`${where}: unknown option "${key}" (known: ${[...OPTION_KEYS].join(", ")})`);
    }
    if (key === "queue") {
      assertToken("queue", value as string);
      continue;
    }
    if (key === "rateLimit" || key === "globalRateLimit") {
      if (typeof value !== "string" || !/^\s*\d+(\.\d+)?\s*\/\s*[smh]\s*$/.test(value)) {
        throw new ProtocolError(`${where}: option "${key}" = ${JSON.stringify(value)} must look like "100/s", "10/m" or "2/h"`);
      }
      continue;
    }
    if (key === "autoretryFor") {
      if (!Array.isArray(value) || !value.every((x) => typeof x === "string" && x !== "")) {
        throw new ProtocolError(`${where}: option "autoretryFor" = ${JSON.stringify(value)} must be a list of error names, e.g. ["TimeoutError"]`);
      }
      continue;
    }
    if (typeof value !== "number" || !Number.isFinite(value) || value < 0) {
      throw new ProtocolError(`${where}: option "${key}" = ${JSON.stringify(value)} must be a non-negative number`);
    }
    if (key === "priority" && (!Number.isInteger(value) || value > 9)) {
      throw new ProtocolError(`${where}: option "priority" = ${value} must be an integer from 0 to 9`);
    }
    if (key === "retries" && !Number.isInteger(value)) {
      throw new ProtocolError(`${where}: option "retries" = ${value} must be an integer`);
    }
  }
  const soft = options.softTimeLimit as number | undefined;
  const hard = options.timeLimit as number | undefined;
  if (soft !== undefined && hard !== undefined && hard < soft) {
    throw new ProtocolError(`${where}: timeLimit (${hard}) must not be shorter than softTimeLimit (${soft})`);
  }
}

/** What a sender knows of one task besides its options. */
/**
 * Checks a send's `eta` (a Date or epoch milliseconds) and `countdown` (seconds from now, ≥ 0) and
 * returns the ETA in epoch ms, or undefined for "now". An invalid date, NaN, a string or both at
 * once are refused with a message naming the option: sent as they were, the task ran at once or
 * was dead-lettered by the worker. (Celery lets `countdown` win over `eta` silently.)
 */
export function etaOf(eta: unknown, countdown: unknown, now: number, where: string): number | undefined {
  if (eta !== undefined && countdown !== undefined) {
    throw new ProtocolError(`${where}: give "eta" or "countdown", not both`);
  }
  if (countdown !== undefined) {
    if (typeof countdown !== "number" || !Number.isFinite(countdown) || countdown < 0) {
      throw new ProtocolError(`${where}: option "countdown" = ${JSON.stringify(countdown)} must be a non-negative number of seconds`);
    }
    return now + countdown * 1000;
  }
  if (eta === undefined) return undefined;
  const ms = eta instanceof Date ? eta.getTime() : eta;
  if (typeof ms !== "number" || !Number.isFinite(ms)) {
    const shown = eta instanceof Date ? "an invalid Date" : JSON.stringify(eta);
    throw new ProtocolError(`${where}: option "eta" = ${shown} must be a valid Date or epoch milliseconds`);
  }
  return ms;
}

export interface TaskMessageFields {
  id: string;
  task: string;
  args: unknown;
  queue: string;
  /** Epoch ms; `expires` counts from it. */
  sentAt: number;
  /** Epoch ms before which the task must not run. */
  eta?: number;
  replyTo?: string;
  meta?: Record<string, unknown>;
  callbacks?: unknown;
}

/**
 * The task message for `fields` sent with `options`: the one place task options become wire
 * fields, for the client, canvas and the HPC callback alike (docs/protocol.md §4).
 */
export function taskMessage(fields: TaskMessageFields, options: TaskOptions = {}): TaskMessage {
  const { id, task, args, queue, sentAt } = fields;
  const m: TaskMessage = { v: PROTOCOL_VERSION, id, task, args, queue, sentAt };
  if (fields.replyTo !== undefined) m.replyTo = fields.replyTo;
  if (options.priority) m.priority = options.priority;
  if (fields.eta !== undefined) m.eta = fields.eta;
  if (options.expires !== undefined) m.expires = sentAt + options.expires * 1000;
  if (options.retries !== undefined) m.maxRetries = options.retries;
  if (options.retryDelay !== undefined) m.retryDelay = options.retryDelay;
  if (options.retryDelayMax !== undefined) m.retryDelayMax = options.retryDelayMax;
  if (options.autoretryFor !== undefined) m.autoretryFor = [...options.autoretryFor];
  if (options.softTimeLimit !== undefined) m.softTimeLimit = options.softTimeLimit;
  if (options.timeLimit !== undefined) m.timeLimit = options.timeLimit;
  if (fields.meta !== undefined) m.meta = fields.meta;
  if (fields.callbacks !== undefined) m.callbacks = fields.callbacks;
  return m;
}

/** Outcome of a validation, issues flattened to plain data so they can travel. */
export type Validation<T> = { ok: true; value: T } | { ok: false; issues: SchemaIssue[] };

function toIssues(issues: ReadonlyArray<StandardSchemaV1.Issue>): SchemaIssue[] {
  return issues.map((issue) => ({
    message: issue.message,
    path: (issue.path ?? [])
      .map((p) => String(typeof p === "object" && p !== null ? (p as StandardSchemaV1.PathSegment).key : p))
      .join("."),
  }));
}

function toValidation<T>(result: StandardSchemaV1.Result<T>): Validation<T> {
  return result.issues ? { ok: false, issues: toIssues(result.issues) } : { ok: true, value: result.value };
}

/**
 * Validates `value` against `schema` (no schema: accepted as is). Synchronous schemas answer
 * synchronously, so the hot path pays no promise; asynchronous ones return a promise.
 */
export function validate<T = unknown>(
  schema: StandardSchemaV1 | undefined,
  value: unknown,
): Validation<T> | Promise<Validation<T>> {
  if (schema === undefined) return { ok: true, value: value as T };
  const result = schema["~standard"].validate(value) as
    | StandardSchemaV1.Result<T>
    | Promise<StandardSchemaV1.Result<T>>;
  return result instanceof Promise ? result.then(toValidation) : toValidation(result);
}
