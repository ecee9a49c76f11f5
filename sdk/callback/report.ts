/**
 * Reporting from outside a worker: a batch job stores its task's SUCCESS or FAILURE, publishes
 * progress, or sends the next task. One connection, acknowledged publishes retried until the
 * server confirms them or the deadline passes, then the connection is closed.
 *
 * Reports go over the callback's own protocol link (direct.ts: start-up time is this module's
 * budget); a caller that passes its own nats.js connection is served through nats.js
 * (over_nats.ts, loaded only then).
 */
import type { NatsConnection } from "@nats-io/nats-core";
import {
  assertTaskId,
  assertTaskName,
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
import { loadSettingsAsync, serverList, type Settings, type SettingsInput } from "../settings/mod.ts";
import { environment, hostIdentity, readTextFile } from "../transport/mod.ts";
import {
  ackTimeoutMs,
  couldNotConnect,
  DeliveryError,
  isLoginRefusal,
  notAcknowledged,
  oneLine,
  ReportError,
  settle,
  sleep,
  type Delivery,
  type Prepared,
  type ReportOutcome,
} from "./delivery.ts";
import { DirectLink, type DirectLogin, type DirectTls } from "./direct.ts";

export { DeliveryError, oneLine, ReportError, type ReportOutcome } from "./delivery.ts";

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
  const settings = await loadSettingsAsync(settingsInput, { env: environment(), readTextFile });
  const n = names(settings.namespace);
  const prepared = await prepare(what, n, signatures);
  const d: Delivery = { prepared, settings, started, deadline: started + deadlineMs, deadlineMs };
  if (settings.events) d.event = { subject: n.eventsSubject("task"), body: encode({ v: PROTOCOL_VERSION, events: [prepared.event] }) };
  if (connection) return (await import("./over_nats.ts")).deliverOverNats(d, connection);
  return deliverDirect(d);
}

/**
 * Connects (each server in turn), publishes, waits for the acknowledgement; on a lost connection,
 * a timeout or "no stream" (503) it reconnects and publishes again with backoff until the
 * deadline. A task is sent with its id as Nats-Msg-Id, so a copy the server already stored is
 * dropped; a result stored twice is the same value.
 */
async function deliverDirect(d: Delivery): Promise<ReportOutcome> {
  const servers = serverList(d.settings);
  const login = directLogin(d.settings);
  const tls: DirectTls | undefined = d.settings.tls === true ? {} : d.settings.tls;
  let attempts = 0;
  let connected = false;
  let last: Error | undefined;
  let backoff = 250;
  for (;;) {
    const left = d.deadline - Date.now();
    if (left <= 0) throw new DeliveryError(connected ? notAcknowledged(d) : couldNotConnect(servers, d.deadlineMs, attempts, last));
    attempts++;
    const url = servers[(attempts - 1) % servers.length]!;
    let link: DirectLink | undefined;
    try {
      link = await DirectLink.open(url, login, Math.max(50, Math.min(d.settings.connectTimeout, left)), tls);
      connected = true;
      await deliverOn(link, d);
      return { id: d.prepared.id, attempts, ms: Date.now() - d.started };
    } catch (err) {
      if (err instanceof DeliveryError) throw err;
      last = err as Error;
      // Wrong credentials or missing permissions will not fix themselves: say so now.
      if (isLoginRefusal(last.message)) {
        const refused = link ? d.prepared.what : "the connection";
        throw new DeliveryError(`${servers.join(",")} refused ${refused}: ${oneLine(last.message)}`, { cause: err });
      }
    } finally {
      link?.close();
    }
    await sleep(Math.min(backoff, Math.max(0, d.deadline - Date.now())));
    backoff = Math.min(backoff * 2, 5_000);
  }
}

/** One attempt on an open link; throws a plain Error for what another attempt may fix. */
async function deliverOn(link: DirectLink, d: Delivery): Promise<void> {
  const { prepared } = d;
  const timeout = ackTimeoutMs(d.settings);
  let required: Promise<unknown>;
  if (prepared.stored) {
    required = link.request(prepared.subject, prepared.body, prepared.headers, timeout).then((reply) => {
      if (reply.status === 503) throw new Error(`no stream stores ${prepared.subject} (503)`);
      let ack: { error?: { code?: number; description?: string } };
      try {
        ack = JSON.parse(new TextDecoder().decode(reply.data)) as typeof ack;
      } catch {
        throw new Error(`unreadable acknowledgement for ${prepared.subject} (status ${reply.status})`);
      }
      if (ack.error) {
        throw new DeliveryError(`could not deliver ${prepared.what}: server refused the message on ${prepared.subject}: ${ack.error.description ?? "error"} (code ${ack.error.code ?? "?"})`);
      }
    });
  } else {
    link.publish(prepared.subject, prepared.body);
    required = link.flush(timeout);
  }
  await settle(d, required, d.event ? link.request(d.event.subject, d.event.body, undefined, timeout) : undefined);
}

/** The login of the settings, for the direct link. nkeys is loaded only when a key signs. */
function directLogin(settings: Settings): DirectLogin {
  const login: DirectLogin = {};
  if (settings.name) login.name = settings.name;
  if (settings.user !== undefined) login.user = settings.user;
  if (settings.pass !== undefined) login.pass = settings.pass;
  if (settings.token !== undefined) login.token = settings.token;
  let seed = settings.nkeySeed ?? (settings.nkeyFile ? readTextFile(settings.nkeyFile).trim() : undefined);
  let jwt: string | undefined;
  if (settings.credsFile) ({ jwt, seed } = parseCreds(readTextFile(settings.credsFile), settings.credsFile));
  if (seed) {
    const secret = seed;
    login.sign = async (nonce) => {
      const { encode: base64url, fromSeed } = await import("@nats-io/nkeys");
      const pair = fromSeed(new TextEncoder().encode(secret));
      const signed = { nkey: pair.getPublicKey(), sig: nonce ? base64url(pair.sign(new TextEncoder().encode(nonce))) : "" };
      return jwt ? { ...signed, jwt } : signed;
    };
  }
  return login;
}

/** The user JWT and nkey seed of a .creds file (the two fenced blocks, as nats.js reads them). */
function parseCreds(text: string, file: string): { jwt: string; seed: string } {
  const blocks = [...text.matchAll(/\s*(?:(?:-{3,}[^\n]*-{3,}\n)(.+)(?:\n\s*-{3,}[^\n]*-{3,}\n))/gi)].map((m) => m[1]!.trim());
  if (blocks.length < 2) throw new ReportError(`unable to parse credentials in ${file}: expected a JWT block and an NKEY SEED block`);
  return { jwt: blocks[0]!, seed: blocks[1]! };
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
      subject: n.progressSubject(id),
      body,
      stored: false,
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
    subject: n.resultSubject(id),
    body,
    stored: true,
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
    subject: n.subjectFor(message, at),
    body,
    // The task id is the dedupe key: a retried publish is stored once.
    headers: { [HEADER.msgId]: id, [HEADER.task]: name },
    stored: true,
  };
}
