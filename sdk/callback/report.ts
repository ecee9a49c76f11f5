/**
 * Reporting from outside a worker: a batch job stores its task's SUCCESS or FAILURE, publishes
 * progress, or sends the next task. One connection, acknowledged publishes retried until the
 * server confirms them or the deadline passes, then the connection is closed.
 */
import { headers as natsHeaders, type NatsConnection } from "@nats-io/nats-core";
import { AckedPublisher } from "../client/mod.ts";
import {
  assertTaskId,
  assertTaskName,
  CelerityError,
  DEFAULT_QUEUE,
  encode,
  EVENT,
  HEADER,
  InvalidArgumentsError,
  names,
  PROTOCOL_VERSION,
  STATE,
  type ErrorShape,
  type Names,
  type ResultRecord,
  type TaskEvent,
  type WorkerIdentity,
} from "../protocol/mod.ts";
import { isSignature, taskMessage, validate, type AnySignature } from "../signatures/mod.ts";
import { loadSettings, type Settings, type SettingsInput } from "../settings/mod.ts";
import { environment, hostIdentity, openConnection, readTextFile } from "../transport/mod.ts";

/** What to report. */
export type Report =
  /** The task succeeded with `result` (any MessagePack-able value). */
  | { kind: "success"; id: string; result: unknown; task?: string }
  /** The task failed; `error.type` defaults to "ExternalJobError". */
  | { kind: "failure"; id: string; error: { message: string; type?: string; retryable?: boolean; details?: unknown }; task?: string }
  /** A progress report to whoever waits on the task (not stored). */
  | { kind: "progress"; id: string; progress: unknown; task?: string }
  /** Send a task by name (checked against `signatures` when given). */
  | { kind: "send"; task: string; args: unknown; id?: string; queue?: string; priority?: number };

/** Options of {@link report}: settings (code layer) plus delivery limits. */
export interface ReportOptions extends SettingsInput {
  /** Settings file to read instead of the one named by CELERITY_SETTINGS. */
  file?: string;
  /** Give up after this many milliseconds in total (connecting included). Default 120 000. */
  deadlineMs?: number;
  /** Signatures to check `send` arguments against; a name not among them is refused. */
  signatures?: Iterable<unknown>;
  /** Use this connection instead of opening one (it is left open). */
  connection?: NatsConnection;
}

/** What {@link report} did. */
export interface ReportOutcome {
  /** The task id reported on, or the id of the task sent. */
  id: string;
  /** Connection attempts it took. */
  attempts: number;
  /** Milliseconds from start to the server's last acknowledgement. */
  ms: number;
}

/** The report could not be delivered before the deadline (unreachable server, no acknowledgement, refused). */
export class DeliveryError extends CelerityError {
  override name = "DeliveryError";
}

/** The report itself is wrong (bad id, unknown task, invalid arguments): retrying cannot help. */
export class ReportError extends CelerityError {
  override name = "ReportError";
}

/** Default of {@link ReportOptions.deadlineMs}: long enough to ride out a server restart. */
export const DEFAULT_DEADLINE_MS = 120_000;

/** The default name recorded for a task reported from outside a worker when none is given. */
export const EXTERNAL_TASK = "external";

/**
 * Delivers one report and resolves once the server has acknowledged it. Rejects with
 * {@link ReportError} when the report is invalid, {@link DeliveryError} when the deadline passed.
 */
export async function report(what: Report, options: ReportOptions = {}): Promise<ReportOutcome> {
  const started = Date.now();
  const { deadlineMs = DEFAULT_DEADLINE_MS, signatures, connection, ...settingsInput } = options;
  const deadline = started + deadlineMs;
  const settings = loadSettings(settingsInput, { env: environment(), readTextFile });
  const n = names(settings.namespace);
  const prepared = await prepare(what, n, signatures);

  let attempts = 0;
  let nc = connection;
  if (!nc) {
    const opened = await connectWithin(settings, deadline, deadlineMs);
    nc = opened.nc;
    attempts = opened.attempts;
  }
  const publisher = new AckedPublisher(nc, {
    ackTimeoutMs: Math.min(settings.requestTimeout, 5_000),
    deadlineMs: Math.max(1, deadline - Date.now()),
  });
  try {
    const required = prepared.publish(nc, publisher);
    const event = settings.events ? publisher.publish(n.eventsSubject("task"), encode({ v: PROTOCOL_VERSION, events: [prepared.event] })) : undefined;
    // The event is for monitors: best effort, and never worth more than a moment past the report.
    event?.catch(() => {});
    await withDeadline(required, deadline, () => `the server did not acknowledge ${prepared.what} within ${deadlineMs} ms`);
    if (event) await withDeadline(event, Math.min(Date.now() + 2_000, deadline), () => "event not acknowledged").catch(() => {});
    return { id: prepared.id, attempts, ms: Date.now() - started };
  } catch (err) {
    if (err instanceof DeliveryError) throw err;
    throw new DeliveryError(`could not deliver ${prepared.what}: ${oneLine((err as Error).message)}`, { cause: err });
  } finally {
    publisher.close();
    if (!connection && !nc.isClosed()) await nc.close().catch(() => {});
  }
}

interface Prepared {
  id: string;
  /** For messages: "SUCCESS of task <id>". */
  what: string;
  event: TaskEvent;
  publish(nc: NatsConnection, publisher: AckedPublisher): Promise<unknown>;
}

function identity(): WorkerIdentity {
  const { host, pid } = hostIdentity();
  return { id: `callback@${host}`, host, pid };
}

function taskName(name: string | undefined): string {
  const task = name ?? EXTERNAL_TASK;
  try {
    assertTaskName(task);
  } catch (err) {
    throw new ReportError((err as Error).message);
  }
  return task;
}

function checkId(id: string): void {
  try {
    assertTaskId(id);
  } catch (err) {
    throw new ReportError((err as Error).message);
  }
}

async function prepare(what: Report, n: Names, signatures: Iterable<unknown> | undefined): Promise<Prepared> {
  const at = Date.now();
  const worker = identity();
  if (what.kind === "send") return prepareSend(what, n, signatures, at, worker);
  checkId(what.id);
  const task = taskName(what.task);
  const { id } = what;
  if (what.kind === "progress") {
    const body = encode({ v: PROTOCOL_VERSION, kind: "progress", id, progress: what.progress, at });
    return {
      id,
      what: `progress of task ${id}`,
      event: { type: EVENT.progress, id, task, at, worker: worker.id, progress: what.progress },
      // Progress is not stored: the server has it once a PING sent after it is answered.
      publish: async (nc) => {
        nc.publish(n.progressSubject(id), body);
        await nc.flush();
      },
    };
  }
  const record: ResultRecord = { v: PROTOCOL_VERSION, id, task, state: STATE.success, worker, finishedAt: at };
  let event: TaskEvent;
  if (what.kind === "success") {
    record.result = what.result;
    event = { type: EVENT.succeeded, id, task, at, worker: worker.id, result: what.result };
  } else {
    if (typeof what.error?.message !== "string") throw new ReportError("a failure needs an error message");
    const error: ErrorShape = { type: what.error.type ?? "ExternalJobError", message: what.error.message, retryable: what.error.retryable ?? false };
    if (what.error.details !== undefined) error.details = what.error.details;
    record.state = STATE.failure;
    record.error = error;
    event = { type: EVENT.failed, id, task, at, worker: worker.id, error };
  }
  // The same body a worker stores: a waiting client reads it from the bucket or sees it live.
  const body = encode({ kind: "result", ...record });
  return {
    id,
    what: `${record.state} of task ${id}`,
    event,
    publish: (_nc, publisher) => publisher.publish(n.resultSubject(id), body),
  };
}

async function prepareSend(
  what: Extract<Report, { kind: "send" }>,
  n: Names,
  signatures: Iterable<unknown> | undefined,
  at: number,
  worker: WorkerIdentity,
): Promise<Prepared> {
  const name = taskName(what.task);
  let sig: AnySignature | undefined;
  if (signatures !== undefined) {
    const known = [...signatures].filter(isSignature);
    sig = known.find((s) => s.name === name);
    if (!sig) {
      const list = known.map((s) => s.name).sort().join(", ") || "none";
      throw new ReportError(`unknown task "${name}": this callback was built with the signatures ${list}`);
    }
    const checked = await validate(sig.args, what.args);
    if (!checked.ok) throw new InvalidArgumentsError(name, checked.issues);
  }
  const id = what.id ?? crypto.randomUUID();
  checkId(id);
  const o = sig?.options ?? {};
  const queue = what.queue ?? o.queue ?? DEFAULT_QUEUE;
  const priority = what.priority ?? o.priority ?? 0;
  const message = taskMessage({ id, task: name, args: what.args, queue, sentAt: at, meta: { sentBy: worker.id } }, { ...o, priority });
  const body = encode(message);
  const event: TaskEvent = { type: EVENT.sent, id, task: name, queue, at, args: what.args, ...(priority ? { priority } : {}) };
  return {
    id,
    what: `task ${name} (${id})`,
    event,
    publish: (_nc, publisher) => {
      const h = natsHeaders();
      // The task id is the dedupe key: a retried publish is stored once.
      h.set(HEADER.msgId, id);
      h.set(HEADER.task, name);
      return publisher.publish(n.subjectFor(message, at), body, h);
    },
  };
}

/** Connects, retrying refused or timed-out attempts with backoff until the deadline. */
async function connectWithin(settings: Settings, deadline: number, deadlineMs: number): Promise<{ nc: NatsConnection; attempts: number }> {
  const servers = (settings.servers?.length ? settings.servers : ["nats://127.0.0.1:4222"]).join(",");
  let attempts = 0;
  let last: Error | undefined;
  let backoff = 250;
  const gaveUp = () => `could not connect to ${servers} within ${deadlineMs} ms (${attempts} attempts): ${oneLine(last?.message ?? "no answer")}`;
  while (true) {
    const left = deadline - Date.now();
    if (left <= 0) throw new DeliveryError(gaveUp());
    attempts++;
    const opening = openConnection({ ...settings, connectTimeout: Math.max(50, Math.min(settings.connectTimeout, left)) });
    try {
      return { nc: await withDeadline(opening, deadline, gaveUp), attempts };
    } catch (err) {
      if (err instanceof DeliveryError) {
        // Too late: a connection that opens after all must not keep the process alive.
        opening.then((nc) => nc.close(), () => {});
        throw err;
      }
      last = err as Error;
      // Wrong credentials or permissions will not fix themselves: say so now.
      if (/authori[sz]ation|authentication|permission|credentials|nkey|jwt/i.test(last.message)) {
        throw new DeliveryError(`${servers} refused the connection: ${oneLine(last.message)}`, { cause: err });
      }
    }
    await sleep(Math.min(backoff, Math.max(0, deadline - Date.now())));
    backoff = Math.min(backoff * 2, 5_000);
  }
}

/** Races `p` against the deadline; the loser is ignored. */
function withDeadline<T>(p: Promise<T>, deadline: number, message: () => string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new DeliveryError(message())), Math.max(0, deadline - Date.now()));
  });
  return Promise.race([p, expired]).finally(() => clearTimeout(timer));
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Collapses whitespace so a reason fits on one line. */
export function oneLine(text: string): string {
  return text.replace(/\s+/g, " ").trim();
}
