/**
 * The msgpackr envelopes on the wire: task messages, result records, replies and event batches.
 * Plain MessagePack (no msgpackr records), so any language's MessagePack library reads them.
 */
import { msgpackrUnpack } from "./codec.ts";
import type { ErrorShape } from "./errors.ts";
import { ProtocolError, UnsupportedVersionError } from "./errors.ts";
import { SharedWriter } from "./writer.ts";

/** Version of the envelopes below. A reader refuses a message whose `v` is newer than it knows. */
export const PROTOCOL_VERSION = 1;

/** encode()'s writer: plain data by hand, anything else through msgpackr (sdk/protocol/codec.ts). */
const writers = new SharedWriter(64 * 1024);

/**
 * Encodes a value as MessagePack: the bytes msgpackr writes with the options of
 * sdk/protocol/codec.ts (docs/protocol.md §3), except that typed arrays are written as `bin` of
 * their own bytes (msgpackr corrupts all but Uint8Array) and nesting deeper than MAX_NESTING is
 * refused. The result is a view never written again.
 */
export function encode(value: unknown): Uint8Array {
  const w = writers.acquire();
  try {
    w.begin();
    w.value(value);
    return w.end();
  } finally {
    writers.release(w);
  }
}

/** Decodes MessagePack bytes; throws ProtocolError on malformed input. */
export function decode(bytes: Uint8Array): unknown {
  try {
    return msgpackrUnpack(bytes);
  } catch (err) {
    throw new ProtocolError(`message body is not valid MessagePack (${bytes.length} bytes)`, { cause: err });
  }
}

/** Task states, in the order a task moves through them (Celery's names). */
export const STATE = {
  pending: "PENDING",
  received: "RECEIVED",
  started: "STARTED",
  retry: "RETRY",
  success: "SUCCESS",
  failure: "FAILURE",
  revoked: "REVOKED",
} as const;
/** One task state. */
export type TaskState = (typeof STATE)[keyof typeof STATE];

/** States after which nothing more happens to a task. */
export const FINAL_STATES: ReadonlySet<TaskState> = new Set([STATE.success, STATE.failure, STATE.revoked]);

/** Who processed a task. */
export interface WorkerIdentity {
  id: string;
  host: string;
  pid: number;
}

/** A task message: the body of every message on a task subject. */
export interface TaskMessage {
  v: number;
  /** Unique task id; also the Nats-Msg-Id and the results key. */
  id: string;
  /** Registered task name, e.g. `images.resize`. */
  task: string;
  /** Arguments as the caller gave them (validated by the client against the signature's input schema). */
  args: unknown;
  queue: string;
  priority?: number;
  /** Epoch ms when the client sent it. */
  sentAt: number;
  /** Core subject the worker replies to with the result (request/reply fast path). */
  replyTo?: string;
  /** Retries already made by Celerity (not server redeliveries); 0 on the first run. */
  retries?: number;
  /** Epoch ms before which the task must not run. */
  eta?: number;
  /** Epoch ms after which the task must not start. */
  expires?: number;
  /** Seconds; override the signature's and worker's defaults. */
  softTimeLimit?: number;
  timeLimit?: number;
  /** Maximum retries allowed for this task. */
  maxRetries?: number;
  /** Seconds before the first retry (doubled each retry), and its ceiling; override the signature's. */
  retryDelay?: number;
  retryDelayMax?: number;
  /** Error names that are retried (others fail at once); overrides the signature's. */
  autoretryFor?: string[];
  /** Free-form tracing data (parent, root, user metadata). Plain values only. */
  meta?: Record<string, unknown>;
  /** Work to send when this task finishes (links, chain steps, chord membership): see docs/canvas.md. */
  callbacks?: unknown;
}

/** Stored under the task id in the results bucket, and sent to `replyTo`. */
export interface ResultRecord {
  v: number;
  id: string;
  task: string;
  state: TaskState;
  result?: unknown;
  error?: ErrorShape;
  queue?: string;
  retries?: number;
  worker?: WorkerIdentity;
  sentAt?: number;
  receivedAt?: number;
  startedAt?: number;
  finishedAt?: number;
}

/** Which workers a control request addresses; empty or absent means all. */
export interface ControlDestination {
  workers?: string[];
  hosts?: string[];
  /** Workers that consume any of these queues. */
  queues?: string[];
}

/** A remote-control request on `<ns>.control.<verb>` (MessagePack). */
export interface ControlRequest {
  v: number;
  verb: string;
  args?: Record<string, unknown>;
  destination?: ControlDestination;
}

/** One worker's reply to a control request. */
export interface ControlReply {
  v: number;
  worker: string;
  ok: boolean;
  result?: unknown;
  error?: string;
}

/** A worker's entry in the workers bucket (rewritten every lease/3). */
export interface WorkerEntry {
  v: number;
  id: string;
  host: string;
  pid: number;
  /** `prefetch` is the current window; `prefetchMax` is present when it adapts (docs/protocol.md §6.1). */
  queues: Record<string, { concurrency: number; prefetch: number; prefetchMax?: number; serial: boolean; paused: boolean }>;
  concurrency: number;
  active: number;
  reserved: number;
  processed: number;
  failed: number;
  tasks: string[];
  pool: string;
  startedAt: number;
  heartbeatAt: number;
}

/** Stored under the task id in the revocations bucket. */
export interface Revocation {
  v: number;
  id: string;
  /** Epoch ms. */
  at: number;
  /** End a running execution for real, not only abort its signal. */
  terminate: boolean;
  reason: string;
}

/** A message on a `replyTo` subject: a final result, or a progress report. */
export type ReplyMessage = ({ kind: "result" } & ResultRecord) | ProgressMessage;

/** A progress report for a running task. */
export interface ProgressMessage {
  v: number;
  kind: "progress";
  id: string;
  progress: unknown;
  at: number;
}

/** Event types, Celery's names. */
export const EVENT = {
  sent: "task-sent",
  received: "task-received",
  started: "task-started",
  progress: "task-progress",
  retried: "task-retried",
  succeeded: "task-succeeded",
  failed: "task-failed",
  revoked: "task-revoked",
  deadLettered: "task-dead-lettered",
} as const;
/** One event type. */
export type EventType = (typeof EVENT)[keyof typeof EVENT];

/** One task event. Fields beyond `type`, `id`, `task` and `at` depend on the type. */
export interface TaskEvent {
  type: EventType;
  id: string;
  task: string;
  /** Epoch ms. */
  at: number;
  queue?: string;
  worker?: string;
  args?: unknown;
  result?: unknown;
  error?: ErrorShape;
  progress?: unknown;
  retries?: number;
  reason?: string;
  /** For task-sent: eta/expires/priority as sent. */
  eta?: number;
  expires?: number;
  priority?: number;
  runtimeMs?: number;
  /**
   * User values left out because they made the event larger than half the server's max_payload
   * (so one event always fits a batch): field name → its MessagePack size in bytes. The results
   * bucket (or the task message) holds the value itself.
   */
  omitted?: { args?: number; result?: number; progress?: number; error?: number };
}

/** One message on the events stream carries a batch of events, oldest first (like Celery's task.multi). */
export interface EventBatch {
  v: number;
  events: TaskEvent[];
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/**
 * Decodes and checks a task message. Throws ProtocolError saying what is wrong, so the worker can
 * dead-letter the message with that reason.
 */
export function decodeTaskMessage(bytes: Uint8Array): TaskMessage {
  const value = decode(bytes);
  if (!isRecord(value)) throw new ProtocolError(`task message is not a map (got ${Array.isArray(value) ? "array" : typeof value})`);
  const { v, id, task, queue, sentAt } = value;
  if (typeof v !== "number") throw new ProtocolError("task message has no protocol version field `v`");
  if (v > PROTOCOL_VERSION) throw new UnsupportedVersionError(`task message has protocol version ${v}; this worker understands up to ${PROTOCOL_VERSION}`);
  if (typeof id !== "string" || id === "") throw new ProtocolError("task message has no string `id`");
  if (typeof task !== "string" || task === "") throw new ProtocolError("task message has no string `task`");
  if (typeof queue !== "string") throw new ProtocolError("task message has no string `queue`");
  if (typeof sentAt !== "number") throw new ProtocolError("task message has no numeric `sentAt`");
  if (!("args" in value)) throw new ProtocolError("task message has no `args`");
  for (const key of ["retries", "eta", "expires", "priority", "softTimeLimit", "timeLimit", "maxRetries", "retryDelay", "retryDelayMax"] as const) {
    if (value[key] !== undefined && typeof value[key] !== "number") throw new ProtocolError(`task message field \`${key}\` must be a number`);
  }
  if (value.replyTo !== undefined && typeof value.replyTo !== "string") throw new ProtocolError("task message field `replyTo` must be a string");
  if (value.autoretryFor !== undefined && (!Array.isArray(value.autoretryFor) || !value.autoretryFor.every((x) => typeof x === "string"))) {
    throw new ProtocolError("task message field `autoretryFor` must be a list of strings");
  }
  return value as unknown as TaskMessage;
}

/**
 * Refuses an envelope written by a newer protocol version (docs/protocol.md §1): its fields may
 * mean something this code does not know. An envelope without `v` is read as version 1.
 */
function checkVersion(value: Record<string, unknown>, what: string): void {
  const { v } = value;
  if (typeof v === "number" && v > PROTOCOL_VERSION) {
    throw new UnsupportedVersionError(`${what} has protocol version ${v}; this code understands up to ${PROTOCOL_VERSION}: upgrade celerity`);
  }
}

/**
 * Decodes a stored result record or a reply; throws ProtocolError when it is not one, and
 * UnsupportedVersionError when a newer protocol version wrote it.
 */
export function decodeResultRecord(bytes: Uint8Array): ResultRecord {
  const value = decode(bytes);
  if (!isRecord(value) || typeof value.id !== "string" || typeof value.state !== "string") {
    throw new ProtocolError("result record is not a map with `id` and `state`");
  }
  checkVersion(value, `the result record of ${value.id}`);
  // Stored records are the reply bytes as sent (one encoding for both): drop the reply's `kind`.
  const { kind: _kind, ...record } = value;
  return record as unknown as ResultRecord;
}

/** Decodes a reply (result or progress). */
export function decodeReply(bytes: Uint8Array): ReplyMessage {
  const value = decode(bytes);
  if (!isRecord(value) || typeof value.id !== "string") throw new ProtocolError("reply is not a map with `id`");
  checkVersion(value, `the reply for ${value.id}`);
  if (value.kind === "progress") return value as unknown as ProgressMessage;
  if (typeof value.state !== "string") throw new ProtocolError("result reply has no `state`");
  return value as unknown as ReplyMessage;
}

/** Decodes one event batch message. */
export function decodeEventBatch(bytes: Uint8Array): EventBatch {
  const value = decode(bytes);
  if (!isRecord(value) || !Array.isArray(value.events)) throw new ProtocolError("event batch is not a map with `events`");
  checkVersion(value, "an event batch");
  return value as unknown as EventBatch;
}

/** Decodes a revocation entry (the revocations bucket); throws like the other readers. */
export function decodeRevocation(bytes: Uint8Array): Revocation {
  const value = decode(bytes);
  if (!isRecord(value) || typeof value.id !== "string") throw new ProtocolError("revocation is not a map with `id`");
  checkVersion(value, `the revocation of ${value.id}`);
  return value as unknown as Revocation;
}
