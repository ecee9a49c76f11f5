/**
 * Error classes, one per condition, and the wire shape task failures travel in.
 * A failure crosses the wire as data ({@link ErrorShape}) and is rebuilt as {@link RemoteTaskError}.
 */
// writer.ts imports this module too; MessagePackWriter is only used inside a function here.
import { MessagePackWriter } from "./writer.ts";

/** What a task failure looks like on the wire (in results, replies, events and dead letters). */
export interface ErrorShape {
  /** The error's class name on the side that raised it, e.g. `TypeError`, `InvalidArgumentsError`. */
  type: string;
  message: string;
  stack?: string;
  /** Whether running the task again could succeed. */
  retryable: boolean;
  /** Structured detail, e.g. schema issues. Plain data only. */
  details?: unknown;
}

/** Base class of every error Celerity raises, so `instanceof CelerityError` catches them all. */
export class CelerityError extends Error {
  override name = "CelerityError";
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
  }
}

/** A name, id, header or message does not follow the wire protocol. */
export class ProtocolError extends CelerityError {
  override name = "ProtocolError";
}

/** A message was written by a newer protocol version than this reader understands. */
export class UnsupportedVersionError extends ProtocolError {
  override name = "UnsupportedVersionError";
}

/** One issue of a schema validation, kept as plain data so it can travel. */
export interface SchemaIssue {
  message: string;
  /** Dotted path of the offending value, e.g. `items.0.url`; empty for the root. */
  path: string;
}

/** Arguments did not match the signature's `args` schema (thrown by the client before publishing). */
export class InvalidArgumentsError extends CelerityError {
  override name = "InvalidArgumentsError";
  constructor(
    readonly task: string,
    readonly issues: SchemaIssue[],
  ) {
    super(`invalid arguments for task "${task}": ${formatIssues(issues)}`);
  }
}

/** A handler's return value did not match the signature's `result` schema. */
export class InvalidResultError extends CelerityError {
  override name = "InvalidResultError";
  constructor(
    readonly task: string,
    readonly issues: SchemaIssue[],
  ) {
    super(`invalid result from task "${task}": ${formatIssues(issues)}`);
  }
}

/** Formats issues as `path: message; path: message` for error messages. */
export function formatIssues(issues: SchemaIssue[]): string {
  return issues.map((i) => (i.path ? `${i.path}: ${i.message}` : i.message)).join("; ");
}

/**
 * Throw from a handler to fail the task without retries (like BullMQ's UnrecoverableError):
 * the task is marked FAILURE and dead-lettered at once.
 */
export class NonRetryableError extends CelerityError {
  override name = "NonRetryableError";
}

/** A task failed on a worker. Carries the remote error's type, message, stack and retryability. */
export class RemoteTaskError extends CelerityError {
  override name = "RemoteTaskError";
  /** The class name of the error raised on the worker. */
  readonly remoteType: string;
  /** The error's own message on the worker, without the task prefix this error adds. */
  readonly remoteMessage: string;
  readonly remoteStack: string | undefined;
  readonly retryable: boolean;
  readonly details: unknown;
  constructor(
    readonly taskId: string,
    readonly task: string,
    shape: ErrorShape,
  ) {
    super(`task "${task}" (${taskId}) failed: ${shape.type}: ${shape.message}`);
    this.remoteType = shape.type;
    this.remoteMessage = shape.message;
    this.remoteStack = shape.stack;
    this.retryable = shape.retryable;
    this.details = shape.details;
  }
}

/** Waiting for a result took longer than the caller's timeout. The task itself may still run. */
export class ResultTimeoutError extends CelerityError {
  override name = "ResultTimeoutError";
  constructor(
    readonly taskId: string,
    readonly timeoutMs: number,
  ) {
    super(`no result for task ${taskId} within ${timeoutMs} ms: the task may still be queued or running; call result() again or check status()`);
  }
}

/** The task was revoked before it finished. */
export class TaskRevokedError extends CelerityError {
  override name = "TaskRevokedError";
  constructor(
    readonly taskId: string,
    reason: string,
  ) {
    super(`task ${taskId} was revoked: ${reason}`);
  }
}

/** The server did not acknowledge a publish after every retry. The message may not be stored. */
export class PublishError extends CelerityError {
  override name = "PublishError";
}

/** The encoded message is larger than the server accepts. */
export class PayloadTooLargeError extends CelerityError {
  override name = "PayloadTooLargeError";
  constructor(
    readonly size: number,
    readonly maxPayload: number,
    what: string,
  ) {
    super(`${what} is ${size} bytes, more than the server's max_payload of ${maxPayload} bytes: pass large inputs by reference (e.g. an object-store key)`);
  }
}

/** The connection closed while an operation was waiting on it. */
export class ConnectionClosedError extends CelerityError {
  override name = "ConnectionClosedError";
}

/** Turns anything thrown into the wire shape. `retryable` defaults to true except for our own non-retryable kinds. */
export function toErrorShape(err: unknown, retryable?: boolean): ErrorShape {
  if (err instanceof Error) {
    const nonRetryable =
      err instanceof NonRetryableError ||
      err instanceof InvalidArgumentsError ||
      err instanceof InvalidResultError;
    const shape: ErrorShape = {
      type: err.name && err.name !== "Error" ? err.name : err.constructor?.name || "Error",
      message: clip(err.message, MAX_MESSAGE),
      retryable: retryable ?? !nonRetryable,
    };
    if (err.stack) shape.stack = clip(err.stack, MAX_STACK);
    if (err instanceof InvalidArgumentsError || err instanceof InvalidResultError) {
      // Schema messages quote the offending value: a huge bad argument must not make a huge record.
      shape.details = { issues: err.issues.slice(0, MAX_ISSUES).map((i) => ({ path: clip(i.path, 200), message: clip(i.message, 500) })) };
    } else if ("details" in err && (err as { details?: unknown }).details !== undefined) {
      shape.details = storableDetails((err as { details?: unknown }).details);
    }
    return shape;
  }
  return { type: typeof err, message: clip(safeString(err), MAX_MESSAGE), retryable: retryable ?? true };
}

/**
 * An error's `details` as given when they can be encoded and are small; otherwise a note saying
 * why they were left out. A FAILURE or RETRY record that cannot be stored would send the task back
 * to run again and again (a cycle, a symbol, a BigInt beyond 64 bits, nesting past 1,000 levels).
 */
function storableDetails(details: unknown): unknown {
  let size: number;
  try {
    const w = (detailsWriter ??= new MessagePackWriter(4096));
    w.begin();
    w.value(details);
    size = w.end().length;
  } catch (err) {
    return { omitted: `details cannot be encoded: ${clip(String((err as Error)?.message ?? err), 300)}` };
  }
  return size <= MAX_DETAILS ? details : { omitted: `details of ${size} bytes (more than ${MAX_DETAILS})` };
}
let detailsWriter: MessagePackWriter | undefined;

/** Caps keeping error records far below any server's max_payload. */
const MAX_DETAILS = 64 * 1024;
const MAX_MESSAGE = 4096;
const MAX_STACK = 8192;
const MAX_ISSUES = 20;

function clip(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max)}… (${text.length - max} more characters)`;
}

function safeString(value: unknown): string {
  try {
    return typeof value === "string" ? value : JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
