/**
 * Every stream, consumer, subject and bucket name Celerity uses is built here, and only here.
 * Another-language client reproduces these functions (see docs/protocol.md).
 */
import { ProtocolError } from "./errors.ts";

/** A NATS subject token Celerity accepts for namespaces and queue names. */
const TOKEN = /^[A-Za-z0-9_-]+$/;

/** Throws when `value` cannot be one subject token (no dots, spaces or wildcards). */
export function assertToken(kind: string, value: string): void {
  if (typeof value !== "string" || !TOKEN.test(value)) {
    throw new ProtocolError(
      `${kind} ${JSON.stringify(value)} is not a valid subject token: use letters, digits, _ and -`,
    );
  }
}

/** Task names are dotted like Celery's (`images.resize`); each segment is a token. */
const TASK_NAME = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/** Throws when `name` cannot be a task name. */
export function assertTaskName(name: string): void {
  if (typeof name !== "string" || !TASK_NAME.test(name)) {
    throw new ProtocolError(
      `task name ${JSON.stringify(name)} is invalid: use dot-separated segments of letters, digits, _ and -`,
    );
  }
}

/**
 * Task ids are KV keys, subject tokens and Nats-Msg-Id: KV-safe characters, dot-separated
 * non-empty parts (so `a..b` or `a.` never make an invalid subject), at most 255 characters
 * (callback ids derive from their parent's).
 */
const TASK_ID = /^[A-Za-z0-9_=-]+(\.[A-Za-z0-9_=-]+)*$/;

/** Throws when `id` is not usable as a task id. */
export function assertTaskId(id: string): void {
  if (typeof id !== "string" || id.length > 255 || !TASK_ID.test(id)) {
    throw new ProtocolError(
      `task id ${JSON.stringify(id)} is invalid: use up to 255 letters, digits, _, - and =, in parts separated by single dots`,
    );
  }
}

/** The queue a task goes to when neither its signature nor the call names one. */
export const DEFAULT_QUEUE = "default";

/** The priority of a task that does not name one (0 lowest … 9 highest, like Celery on RabbitMQ). */
export const DEFAULT_PRIORITY = 0;

/** The durable consumer serving priority `level` of a queue whose FIFO consumer would be `prefix`. */
export function priorityConsumerName(prefix: string, level: number): string {
  return `${prefix}-p${level}`;
}

/** The names of one namespace's topology. Derived, never stored. */
export interface Names {
  readonly namespace: string;
  /** WorkQueue stream holding every task until a worker acks it. Written by clients, read by workers. */
  readonly tasksStream: string;
  /** Limits stream of task events (sent, received, started, …). Written by clients and workers, read by monitors. */
  readonly eventsStream: string;
  /** Limits stream of dead letters. Written by workers, read by operators (`celerity dlq`). */
  readonly dlqStream: string;
  /** KV bucket of task results, keyed by task id, with expiry. Written by workers, read by clients. */
  readonly resultsBucket: string;
  /**
   * WorkQueue stream of tasks waiting for their ETA (countdowns and retry delays). Written by clients
   * and workers; read by every worker's scheduler, which moves a due task to its queue.
   */
  readonly scheduledStream: string;
  /** Durable consumer shared by the schedulers of all workers. */
  readonly schedulerConsumer: string;
  /** KV bucket of revocations, keyed by task id, with expiry. Written by clients, watched by workers. */
  readonly revokedBucket: string;
  /**
   * KV bucket of live workers, keyed by worker id. Each worker rewrites its entry every few seconds;
   * the bucket's max age is the lease, so a dead worker's entry expires. Read by any client.
   */
  readonly workersBucket: string;
  /** KV bucket of cluster-wide rate-limit windows (task name + window → count). Written by workers. */
  readonly ratesBucket: string;
  /** Core subject of a remote-control request (`ping`, `active`, `shutdown`, …); every worker listens. */
  controlSubject(verb: string): string;
  /** Subject filter matching every task subject of the namespace. */
  readonly tasksWildcard: string;
  readonly eventsWildcard: string;
  readonly dlqWildcard: string;
  readonly scheduledWildcard: string;
  /** Subject a task with a future ETA for `queue` waits on. */
  scheduledSubject(queue: string): string;
  /** Subject a revocation of task `id` is stored on. */
  revokedSubject(id: string): string;
  /** Subject a task for `queue` at `priority` is published to. */
  taskSubject(queue: string, priority?: number): string;
  /**
   * Where a task message goes: a future ETA waits in the scheduled stream (never in a worker's
   * memory), anything else goes straight to its queue's task subject.
   */
  subjectFor(message: { queue: string; priority?: number; eta?: number }, now?: number): string;
  /** Filter subject of the durable consumer that serves `queue`. */
  queueFilter(queue: string): string;
  /** Durable consumer name shared by every worker of `queue` (so the server balances them). */
  queueConsumer(queue: string): string;
  /** Durable consumer serving priority `level` of a queue with priorities (instead of queueConsumer). */
  priorityConsumer(queue: string, level: number): string;
  /** Subject an event batch is published to (`task` events or `worker` heartbeats). */
  eventsSubject(kind: "task" | "worker"): string;
  /** Subject a dead letter of `queue` is stored under. */
  dlqSubject(queue: string): string;
  /** Subject the worker publishes a result to (the KV bucket's subject for `id`). */
  resultSubject(id: string): string;
  /** Core subject progress reports of task `id` are published to (not stored). */
  progressSubject(id: string): string;
  /** Queue name of a task subject, or undefined when the subject is not one of ours. */
  queueOfSubject(subject: string): string | undefined;
}

/** Builds the names of namespace `ns` (default `celerity`). */
export function names(ns = "celerity"): Names {
  assertToken("namespace", ns);
  // The namespace is used verbatim (not upper-cased), so `a-b`, `a_b` and `A_B` never share streams.

  const resultsBucket = `${ns}_results`;
  const revokedBucket = `${ns}_revoked`;
  const tasksPrefix = `${ns}.tasks.`;
  return {
    namespace: ns,
    tasksStream: `${ns}_tasks`,
    eventsStream: `${ns}_events`,
    dlqStream: `${ns}_dlq`,
    resultsBucket,
    scheduledStream: `${ns}_scheduled`,
    schedulerConsumer: "scheduler",
    revokedBucket,
    scheduledWildcard: `${ns}.scheduled.>`,
    scheduledSubject: (queue) => `${ns}.scheduled.${queue}`,
    revokedSubject: (id) => `$KV.${revokedBucket}.${id}`,
    workersBucket: `${ns}_workers`,
    ratesBucket: `${ns}_rates`,
    controlSubject: (verb) => `${ns}.control.${verb}`,
    tasksWildcard: `${ns}.tasks.>`,
    eventsWildcard: `${ns}.events.>`,
    dlqWildcard: `${ns}.dlq.>`,
    taskSubject: (queue, priority = DEFAULT_PRIORITY) => `${tasksPrefix}${queue}.${priority}`,
    subjectFor: (m, now = Date.now()) =>
      m.eta !== undefined && m.eta > now ? `${ns}.scheduled.${m.queue}` : `${tasksPrefix}${m.queue}.${m.priority ?? DEFAULT_PRIORITY}`,
    queueFilter: (queue) => `${tasksPrefix}${queue}.>`,
    queueConsumer: (queue) => `q-${queue}`,
    priorityConsumer: (queue, level) => priorityConsumerName(`q-${queue}`, level),
    eventsSubject: (kind) => `${ns}.events.${kind}`,
    dlqSubject: (queue) => `${ns}.dlq.${queue}`,
    resultSubject: (id) => `$KV.${resultsBucket}.${id}`,
    progressSubject: (id) => `${ns}.progress.${id}`,
    queueOfSubject: (subject) => {
      if (!subject.startsWith(tasksPrefix)) return undefined;
      const rest = subject.slice(tasksPrefix.length);
      const dot = rest.indexOf(".");
      return dot < 0 ? rest : rest.slice(0, dot);
    },
  };
}

/** Message headers. Who writes each and who reads it is noted beside it. */
export const HEADER = {
  /** JetStream dedupe key: the task id (or the caller's idempotency key). Client writes, server reads. */
  msgId: "Nats-Msg-Id",
  /** Task name, so tools and workers can route or dead-letter without decoding the body. Client writes. */
  task: "Celerity-Task",
  /** Task id, duplicated from the body for the same reason. Client writes. */
  id: "Celerity-Id",
  /** Why a message was dead-lettered (a REASON value). Worker writes on dead letters. */
  dlqReason: "Celerity-Dlq-Reason",
  /** Human-readable detail of the dead-letter reason. Worker writes on dead letters. */
  dlqDetail: "Celerity-Dlq-Detail",
  /** Subject the dead-lettered message was originally published to. Worker writes on dead letters. */
  dlqSubject: "Celerity-Dlq-Subject",
  /** Stream sequence of the original message. Worker writes on dead letters. */
  dlqSequence: "Celerity-Dlq-Sequence",
  /** Epoch ms when it was dead-lettered. Worker writes on dead letters. */
  dlqAt: "Celerity-Dlq-At",
  /** Identity of the worker that dead-lettered it. Worker writes on dead letters. */
  dlqWorker: "Celerity-Dlq-Worker",
  /**
   * Present when the dead letter's body is only the start of the original (which, with the dead
   * letter headers, would not fit max_payload): the original size in bytes. Worker writes.
   */
  dlqTruncated: "Celerity-Dlq-Truncated",
} as const;
/** One of Celerity's header names. */
export type HeaderName = (typeof HEADER)[keyof typeof HEADER];

/** Why a message ended up in the dead-letter stream. */
export const DLQ_REASON = {
  undecodable: "undecodable",
  unknownTask: "unknown-task",
  invalidArgs: "invalid-args",
  invalidResult: "invalid-result",
  failed: "failed",
  tooManyDeliveries: "too-many-deliveries",
  unsupportedVersion: "unsupported-version",
} as const;
/** One of the dead-letter reasons. */
export type DlqReason = (typeof DLQ_REASON)[keyof typeof DLQ_REASON];
