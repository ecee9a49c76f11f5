/**
 * Sending canvases as tasks, by the client (apply) and by workers (after a task's final record):
 * one `launch` for both, so a chain step, a chord's body and a link are sent the same way.
 *
 * Chords are counted in JetStream, never polled: each member, once its own record is stored,
 * sets its bit in the chord's state key with compare-and-set (Nats-Expected-Last-Subject-Sequence);
 * the member whose update completes the set sends the body, under an id derived from the chord's,
 * so two racing completers (a redelivered member) send it once (Nats-Msg-Id).
 */
import type { MsgHdrs } from "@nats-io/nats-core";
import { headers as natsHeaders } from "@nats-io/nats-core";
import type { JetStreamManager, StreamConfig } from "@nats-io/jetstream";
import {
  CelerityError,
  decode,
  decodeResultRecord,
  DEFAULT_QUEUE,
  encode,
  EVENT,
  FINAL_STATES,
  HEADER,
  PayloadTooLargeError,
  PROTOCOL_VERSION,
  ProtocolError,
  STATE,
  type ErrorShape,
  type Names,
  type ResultRecord,
  type TaskEvent,
} from "../protocol/mod.ts";
import { taskMessage } from "../signatures/mod.ts";
import { tails, type CallNode, type ChordNode, type Node } from "./compile.ts";
import type { ChordErrorPolicy } from "./shapes.ts";

/** Settings canvas reads when the client has them (Client does). */
export interface CanvasSettings {
  /** Seconds the chord state is kept (the results' expiry). */
  readonly resultExpires?: number;
  readonly replicas?: number;
  readonly storage?: "file" | "memory";
}

/**
 * What canvas needs from a client. `Client` satisfies it; canvas does not import the client, so the
 * client can import canvas without a cycle.
 */
export interface CanvasClient {
  readonly names: Names;
  readonly publisher: { publish(subject: string, data: Uint8Array, headers?: MsgHdrs): Promise<unknown> };
  /** JetStream management: chords keep their state in a stream (required once a canvas has a chord). */
  jsm?(): Promise<JetStreamManager>;
  readonly settings?: CanvasSettings;
  /**
   * Queues a task event in the client's event batches (byte-limited, counted when dropped;
   * nothing when the client's events are off). `Client.pushEvent` does.
   */
  pushEvent(event: TaskEvent): void;
  /** The connection, for the server's max_payload (1 MiB assumed without it). */
  readonly nc?: { readonly info?: { readonly max_payload?: number } };
}

/** A chord membership: this task's outcome is member `i` of the `n` members of chord `chord`. */
export interface Membership {
  chord: string;
  i: number;
  n: number;
  /** The tasks that finish the chord's body: failed with ChordExpiredError when the definition is gone. */
  body?: { id: string; task: string }[];
}

/** The parent's outcome a launched canvas receives (absent when sent by a client). */
export interface Input {
  value: unknown;
}

/** Who launches: the ids a launched task's meta names. */
export interface Origin {
  parentId?: string;
  rootId: string;
}

/** A chord's definition, stored once under `spec.<id>` before its members are sent. */
export interface ChordSpec {
  v: number;
  id: string;
  n: number;
  /** The tasks whose records are the members' results, in order. */
  ids: string[];
  body: Node;
  onError: ChordErrorPolicy;
  linkError?: Node[];
  /** Set when the chord is itself the last part of a member of an enclosing chord. */
  member?: Membership;
  rootId: string;
}

/** A chord's progress, under `state.<id>`: one bit per finished member, and whether the body was sent. */
export interface ChordState {
  v: number;
  n: number;
  done: Uint8Array;
  sent: boolean;
}

/** The error a chord's body is recorded with when members failed under policy "fail". */
export class ChordError extends CelerityError {
  override name = "ChordError";
  constructor(
    readonly chordId: string,
    readonly errors: { index: number; id: string; error: ErrorShape }[],
    readonly size: number,
  ) {
    super(`chord ${chordId}: ${errors.length} of ${size} members failed: ${errors.slice(0, 5).map((e) => `#${e.index} (${e.id}) ${e.error.type}: ${e.error.message}`).join("; ")}${errors.length > 5 ? "; …" : ""}`);
  }

  /** The wire shape (details list every member error). */
  toShape(): ErrorShape {
    return { type: this.name, message: this.message, retryable: false, details: { chordId: this.chordId, errors: this.errors } };
  }
}

/** Name of the chords bucket of a namespace (a KV-style stream `KV_<bucket>`). */
export function chordBucket(n: Names): string {
  return `${n.namespace}_chords`;
}

/** Stream configuration of the chords bucket (history 1, expiring with the results). */
export function chordStreamConfig(n: Names, s: CanvasSettings = {}): Partial<StreamConfig> & { name: string } {
  const bucket = chordBucket(n);
  const NS = 1_000_000_000;
  const maxAge = s.resultExpires ?? 86_400;
  return {
    name: `KV_${bucket}`,
    subjects: [`$KV.${bucket}.>`],
    retention: "limits",
    max_msgs_per_subject: 1,
    max_age: maxAge * NS,
    discard: "new",
    allow_rollup_hdrs: true,
    deny_delete: true,
    allow_direct: true,
    duplicate_window: Math.min(120, maxAge) * NS,
    storage: s.storage ?? "file",
    num_replicas: s.replicas ?? 1,
  } as Partial<StreamConfig> & { name: string };
}

const ensured = new WeakMap<object, Promise<void>>();

/** Creates the chords bucket if it does not exist (once per client; idempotent across processes). */
export function ensureChordBucket(client: CanvasClient): Promise<void> {
  let p = ensured.get(client);
  if (!p) {
    p = (async () => {
      const jsm = await requireJsm(client);
      const config = chordStreamConfig(client.names, client.settings);
      try {
        await jsm.streams.info(config.name);
      } catch (err) {
        if (!isNotFound(err)) throw err;
        try {
          await jsm.streams.add(config);
        } catch (addErr) {
          if (!/already in use|already exists/i.test((addErr as Error).message)) throw addErr;
        }
      }
    })();
    p.catch(() => ensured.delete(client));
    ensured.set(client, p);
  }
  return p;
}

/** One message a launch publishes: a chord's definition (stored first) or a task. */
interface Outgoing {
  kind: "spec" | "task";
  subject: string;
  data: Uint8Array;
  headers?: MsgHdrs;
  event?: TaskEvent;
}

/**
 * Sends canvases as tasks; their `task-sent` events go into the client's event batches (pushEvent).
 * A launch builds and encodes every message first (refusing one larger than the server's
 * max_payload with PayloadTooLargeError), then publishes: nothing is sent when one cannot be.
 */
export class Launcher {
  constructor(
    readonly client: CanvasClient,
    readonly origin: Origin,
  ) {}

  /** Sends `node`; `input` is the parent's outcome, `then` what follows it and the membership it carries. */
  async launch(node: Node, input: Input | undefined, then: { next?: Node; member?: Membership } = {}): Promise<void> {
    const out: Outgoing[] = [];
    this.#build(node, input, then, out, Date.now());
    const specs = out.filter((o) => o.kind === "spec");
    if (specs.length) {
      await ensureChordBucket(this.client);
      // Stored once, before any member can finish: a rerun of the sender finds it and keeps it.
      await Promise.all(specs.map((o) => kvCreate(this.client, o.subject, o.data)));
    }
    await Promise.all(out.filter((o) => o.kind === "task").map(async (o) => {
      await this.client.publisher.publish(o.subject, o.data, o.headers);
      if (o.event) this.client.pushEvent(o.event);
    }));
  }

  #build(node: Node, input: Input | undefined, then: { next?: Node; member?: Membership }, out: Outgoing[], now: number): void {
    switch (node.kind) {
      case "call":
        return this.#buildCall(node, input, then, out, now);
      case "chain": {
        const [first, ...rest] = node.steps;
        if (!first) return;
        // Every step but the last is a call: the rest travels in its callbacks.
        const tail = then.next ? [...rest, then.next] : rest;
        const next: Node | undefined = tail.length === 0 ? undefined : tail.length === 1 ? tail[0] : { kind: "chain", steps: tail };
        return this.#build(first, input, { next, member: then.member }, out, now);
      }
      case "group":
        if (then.next || then.member) throw new ProtocolError(`group ${node.id} cannot be followed here: this canvas was not compiled by apply()`);
        for (const m of node.members) this.#build(m, input, {}, out, now);
        return;
      case "chord":
        return this.#buildChord(node, input, then, out, now);
    }
  }

  #buildCall(node: CallNode, input: Input | undefined, then: { next?: Node; member?: Membership }, out: Outgoing[], now: number): void {
    if (!node.id) throw new ProtocolError(`call "${node.task}" has no id: send canvases with apply()`);
    const o = node.options ?? {};
    const queue = o.queue ?? DEFAULT_QUEUE;
    const meta: Record<string, unknown> = { ...(o.meta ?? {}), rootId: this.origin.rootId };
    if (this.origin.parentId !== undefined) meta.parentId = this.origin.parentId;
    const eta = o.eta ?? (o.countdown !== undefined ? now + o.countdown * 1000 : undefined);
    const callbacks: Record<string, unknown> = {};
    if (node.link?.length) callbacks.link = node.link;
    if (node.linkError?.length) callbacks.linkError = node.linkError;
    if (then.next) callbacks.next = then.next;
    if (then.member) callbacks.member = then.member;
    const message = taskMessage(
      { id: node.id, task: node.task, args: argsFor(node, input) ?? null, queue, sentAt: now, eta, meta, ...(Object.keys(callbacks).length ? { callbacks } : {}) },
      o,
    );
    const data = encode(message);
    checkSize(this.client, data, `task "${node.task}" (${node.id})`);
    const h = natsHeaders();
    h.set(HEADER.msgId, node.id);
    h.set(HEADER.task, node.task);
    const event: TaskEvent = { type: EVENT.sent, id: node.id, task: node.task, queue, at: now, args: message.args };
    if (eta !== undefined) event.eta = eta;
    if (message.expires !== undefined) event.expires = message.expires;
    if (o.priority) event.priority = o.priority;
    out.push({ kind: "task", subject: this.client.names.subjectFor(message, now), data, headers: h, event });
  }

  #buildChord(node: ChordNode, input: Input | undefined, then: { next?: Node; member?: Membership }, out: Outgoing[], now: number): void {
    if (then.next) throw new ProtocolError(`chord ${node.id} cannot be followed here: this canvas was not compiled by apply()`);
    const body = node.body;
    if (node.header.length === 0) {
      // Nothing to wait for: the body runs at once with no results.
      return this.#build(body, { value: [] }, { member: then.member }, out, now);
    }
    const spec: ChordSpec = {
      v: PROTOCOL_VERSION, id: node.id, n: node.header.length, ids: node.header.map((m) => tails(m)[0]!.id),
      body, onError: node.onError, rootId: this.origin.rootId,
    };
    if (node.linkError?.length) spec.linkError = node.linkError;
    if (then.member) spec.member = then.member;
    const data = encode(spec);
    checkSize(this.client, data, `the definition of chord ${node.id}`);
    out.push({ kind: "spec", subject: specSubject(this.client.names, node.id), data });
    const n = node.header.length;
    // Each member carries the body's tasks, so the body can still be failed if the definition expired.
    const bodyTails = tails(body).map((t) => ({ id: t.id, task: t.task }));
    node.header.forEach((m, i) => this.#build(m, input, { member: { chord: node.id, i, n, body: bodyTails } }, out, now));
  }
}

/** The largest message the client's server accepts, less room for headers and subject. */
function maxMessage(client: CanvasClient): number {
  return (client.nc?.info?.max_payload ?? 1024 * 1024) - 512;
}

function checkSize(client: CanvasClient, data: Uint8Array, what: string): void {
  const max = maxMessage(client);
  if (data.length > max) throw new PayloadTooLargeError(data.length, max, what);
}

/**
 * The arguments a launched call is sent with: its own when immutable or when nothing came before;
 * otherwise the parent's outcome — as the whole arguments when the call has none, merged in as
 * `parent` when its own arguments are an object. (Other own arguments are sent as given.)
 */
export function argsFor(node: { args?: unknown; immutable?: boolean }, input: Input | undefined): unknown {
  if (node.immutable || input === undefined) return node.args;
  if (node.args === undefined) return input.value;
  if (typeof node.args === "object" && node.args !== null && !Array.isArray(node.args)) return { ...node.args, parent: input.value };
  return node.args;
}

/** What an error callback receives: who failed, and how. */
export function failureInput(record: ResultRecord): Input {
  return { value: { taskId: record.id, task: record.task, error: record.error } };
}

/**
 * Records that member `m` finished: sets its bit with compare-and-set, and sends the chord's body
 * when this update completed the set (or when it finds the set complete but the body not yet
 * marked sent: a rerun of the completer). Resolves once the bit is stored (and the body sent when
 * this update completed the set), so the caller acks only then.
 *
 * Members finishing at once in one process are combined into one update, so contention is
 * bounded by the number of processes, not by the number of running handlers.
 */
export function recordMember(client: CanvasClient, m: Membership): Promise<void> {
  let perClient = counters.get(client);
  if (!perClient) counters.set(client, (perClient = new Map()));
  let batch = perClient.get(m.chord);
  if (!batch) perClient.set(m.chord, (batch = { n: m.n, indexes: [], waiters: [], running: false }));
  if (m.body && !batch.body) batch.body = m.body;
  const b = batch;
  const done = new Promise<void>((resolve, reject) => b.waiters.push({ resolve, reject }));
  b.indexes.push(m.i);
  if (!b.running) void drain(client, m.chord, b, perClient);
  return done;
}

interface Batch {
  n: number;
  body?: Membership["body"];
  indexes: number[];
  waiters: { resolve: () => void; reject: (err: unknown) => void }[];
  running: boolean;
}
const counters = new WeakMap<object, Map<string, Batch>>();

async function drain(client: CanvasClient, chordId: string, b: Batch, perClient: Map<string, Batch>): Promise<void> {
  b.running = true;
  while (b.indexes.length) {
    const indexes = b.indexes.splice(0);
    const waiters = b.waiters.splice(0);
    try {
      await setMembers(client, chordId, b.n, indexes, b.body);
      for (const w of waiters) w.resolve();
    } catch (err) {
      for (const w of waiters) w.reject(err);
    }
  }
  b.running = false;
  perClient.delete(chordId);
}

async function setMembers(client: CanvasClient, chordId: string, n: number, indexes: number[], body: Membership["body"]): Promise<void> {
  const jsm = await requireJsm(client);
  const stream = `KV_${chordBucket(client.names)}`;
  const subject = stateSubject(client.names, chordId);
  for (let attempt = 0; ; attempt++) {
    const current = await jsm.streams.getMessage(stream, { last_by_subj: subject });
    const state = current ? decodeState(current.data) : { v: PROTOCOL_VERSION, n, done: new Uint8Array(Math.ceil(n / 8)), sent: false };
    const fresh = indexes.filter((i) => !hasBit(state.done, i));
    if (fresh.length) {
      for (const i of fresh) setBit(state.done, i);
      if (!(await casWrite(client, subject, state, current?.seq ?? 0))) {
        await backoff(attempt);
        continue;
      }
    }
    if (!state.sent && countBits(state.done) >= state.n) await finishChord(client, chordId, body);
    return;
  }
}

/**
 * Reads the chord's spec and members' records, sends the body (or fails it), then marks it sent.
 * What cannot succeed on a rerun is settled here rather than thrown (a throw hands the member's
 * message back, to run again): a definition that expired, a body too large to send.
 */
async function finishChord(client: CanvasClient, chordId: string, body: Membership["body"]): Promise<void> {
  const jsm = await requireJsm(client);
  const names = client.names;
  const stored = await jsm.streams.getMessage(`KV_${chordBucket(names)}`, { last_by_subj: specSubject(names, chordId) });
  if (!stored) {
    // Expired with the results (after resultExpires): the body cannot be sent, ever. Fail the
    // body's record when the member says which tasks those are, and settle the chord.
    const error: ErrorShape = {
      type: "ChordExpiredError",
      message: `chord ${chordId}: its definition expired (chord state is kept for resultExpires, ${client.settings?.resultExpires ?? 86_400} s) before its last member finished: its body was not sent`,
      retryable: false,
    };
    await writeRecords(client, body ?? [], STATE.failure, error, false);
    await markSent(client, chordId);
    return;
  }
  const spec = decode(stored.data) as ChordSpec;
  const records = await readRecords(jsm, names, spec.ids);
  const launcher = new Launcher(client, { parentId: chordId, rootId: spec.rootId });
  const errors = records.flatMap((r, index) => (r.state === STATE.success ? [] : [{ index, id: spec.ids[index]!, error: r.error ?? missingError(spec.ids[index]!) }]));
  let failure: ErrorShape | undefined;
  if (errors.length === 0 || spec.onError === "partial") {
    const results = records.map((r, index) => (r.state === STATE.success ? r.result : { error: r.error ?? missingError(spec.ids[index]!) }));
    try {
      await launcher.launch(spec.body, { value: results }, spec.member ? { member: spec.member } : {});
    } catch (err) {
      // Nothing of the body was sent (a launch checks every size first), and never will be.
      if (!(err instanceof PayloadTooLargeError)) throw err;
      failure = { type: err.name, message: `chord ${chordId}: its body cannot be sent: ${err.message}`, retryable: false };
    }
  } else {
    failure = new ChordError(chordId, errors, spec.n).toShape();
  }
  if (failure) await failBody(client, launcher, chordId, spec, failure);
  await markSent(client, chordId);
}

/**
 * The body never runs: its record (each tail task's) says why, so its handle rejects; the chord's
 * error callbacks and the body's own are sent with `{ taskId, task, chordId, error }`, and an
 * enclosing chord counts this one as a failed member.
 */
async function failBody(client: CanvasClient, launcher: Launcher, chordId: string, spec: ChordSpec, error: ErrorShape): Promise<void> {
  const bodyTails = tails(spec.body);
  await writeRecords(client, bodyTails, STATE.failure, error, false);
  const inputFor = (t: { id: string; task: string }): Input => ({ value: { taskId: t.id, task: t.task, chordId, error } });
  const chordCallbacks = spec.linkError ?? [];
  const jobs = chordCallbacks.map((l) => launcher.launch(l, inputFor(bodyTails[0]!)));
  // The body's own error callbacks (Celery's chord_error_from_stack calls them). The chord's own
  // are copied onto its body at compile time (for when the body fails): those are sent above, once.
  const known = chordCallbacks.map(shapeKey);
  for (const t of bodyTails) {
    (t.linkError ?? []).forEach((l, k) => {
      if (known.some((key) => sameBytes(key, shapeKey(l)))) return;
      jobs.push(launcher.launch(l.kind === "call" && !l.id ? { ...l, id: `${t.id}.e${k}` } : l, inputFor(t)));
    });
  }
  await Promise.all(jobs);
  if (spec.member) await recordMember(client, spec.member);
}

/**
 * Stores a final record (FAILURE or REVOKED with `error`) for tasks that will never run. With
 * `onlyIfAbsent`, a task that already has a record (it ran: an earlier run of its parent sent it)
 * keeps it.
 */
async function writeRecords(client: CanvasClient, targets: { id: string; task: string }[], state: ResultRecord["state"], error: ErrorShape, onlyIfAbsent: boolean): Promise<void> {
  const now = Date.now();
  const names = client.names;
  await Promise.all(targets.map(async (t) => {
    const record: ResultRecord = { v: PROTOCOL_VERSION, id: t.id, task: t.task, state, error, finishedAt: now };
    const data = encode({ kind: "result", ...record });
    if (onlyIfAbsent) {
      if (!(await kvCreate(client, names.resultSubject(t.id), data))) return;
    } else {
      await client.publisher.publish(names.resultSubject(t.id), data);
    }
    client.pushEvent(state === STATE.revoked ? { type: EVENT.revoked, id: t.id, task: t.task, at: now, reason: error.message } : { type: EVENT.failed, id: t.id, task: t.task, at: now, error });
  }));
}

/**
 * A task that carries the rest of its chain (`next`) failed or was revoked: the rest never runs.
 * Its last tasks are recorded with the same state and error, so a handle waiting on them (a chain's
 * result, a chord counting the chain as a member) gets the real error instead of waiting.
 */
export function stopChain(client: CanvasClient, next: Node, record: ResultRecord): Promise<void> {
  return writeRecords(client, tails(next), record.state, record.error ?? { type: "TaskError", message: `task ${record.id} ended ${record.state}`, retryable: false }, true);
}

/** A callback's shape without its ids (derived from where it sits), to recognise the same callback twice. */
function shapeKey(n: Node): Uint8Array {
  const strip = (x: Node): unknown => {
    switch (x.kind) {
      case "call":
        return [x.task, x.args, x.immutable, x.options, x.link?.map(strip), x.linkError?.map(strip)];
      case "chain":
        return ["chain", x.steps.map(strip)];
      case "group":
        return ["group", x.members.map(strip)];
      case "chord":
        return ["chord", x.header.map(strip), strip(x.body), x.onError, x.linkError?.map(strip)];
    }
  };
  return encode(strip(n));
}

function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

async function markSent(client: CanvasClient, chordId: string): Promise<void> {
  const jsm = await requireJsm(client);
  const subject = stateSubject(client.names, chordId);
  for (let attempt = 0; ; attempt++) {
    const current = await jsm.streams.getMessage(`KV_${chordBucket(client.names)}`, { last_by_subj: subject });
    if (!current) return;
    const state = decodeState(current.data);
    if (state.sent) return;
    state.sent = true;
    if (await casWrite(client, subject, state, current.seq)) return;
    await backoff(attempt);
  }
}

/** Each member's final record, in order. A missing or unfinished one (expired; overwritten by a rerun still running) is waited for briefly, then reported as an error. */
async function readRecords(jsm: JetStreamManager, names: Names, ids: string[]): Promise<ResultRecord[]> {
  const out: ResultRecord[] = new Array(ids.length);
  const BATCH = 64;
  for (let start = 0; start < ids.length; start += BATCH) {
    await Promise.all(ids.slice(start, start + BATCH).map(async (id, k) => {
      out[start + k] = await readFinalRecord(jsm, names, id);
    }));
  }
  return out;
}

async function readFinalRecord(jsm: JetStreamManager, names: Names, id: string): Promise<ResultRecord> {
  // A member's final record is stored before it counts itself, so it is there; only a rerun of
  // that member (redelivered while the chord completed) may have replaced it with STARTED for a while.
  const until = Date.now() + 30_000;
  let record: ResultRecord | undefined;
  for (let attempt = 0; ; attempt++) {
    const msg = await jsm.streams.getMessage(`KV_${names.resultsBucket}`, { last_by_subj: names.resultSubject(id) });
    record = msg && msg.data.length ? decodeResultRecord(msg.data) : undefined;
    if (record && FINAL_STATES.has(record.state)) return record;
    if (!record || Date.now() > until) break;
    await new Promise((r) => setTimeout(r, Math.min(1000, 50 * 2 ** attempt)));
  }
  return { v: PROTOCOL_VERSION, id, task: record?.task ?? "", state: STATE.failure, error: missingError(id, record?.state) };
}

function missingError(id: string, state?: string): ErrorShape {
  return {
    type: "ResultMissingError",
    message: state ? `member ${id} has no final record (its record says ${state})` : `member ${id} has no stored record (expired after resultExpires, or never stored)`,
    retryable: false,
  };
}

/** Publishes `state` only if `subject` is still at `expectedSeq`; false when someone wrote first. */
async function casWrite(client: CanvasClient, subject: string, state: ChordState, expectedSeq: number): Promise<boolean> {
  const h = natsHeaders();
  h.set("Nats-Expected-Last-Subject-Sequence", String(expectedSeq));
  try {
    await client.publisher.publish(subject, encode(state), h);
    return true;
  } catch (err) {
    // Also what a retried publish of ours that was in fact stored gets: the caller re-reads.
    if (isWrongLastSequence(err)) return false;
    throw err;
  }
}

/** Stores `data` under `subject` unless something is stored there already; false when something was. */
async function kvCreate(client: CanvasClient, subject: string, data: Uint8Array): Promise<boolean> {
  const h = natsHeaders();
  h.set("Nats-Expected-Last-Subject-Sequence", "0");
  try {
    await client.publisher.publish(subject, data, h);
    return true;
  } catch (err) {
    if (!isWrongLastSequence(err)) throw err;
    return false;
  }
}

function specSubject(n: Names, chordId: string): string {
  return `$KV.${chordBucket(n)}.spec.${chordId}`;
}

function stateSubject(n: Names, chordId: string): string {
  return `$KV.${chordBucket(n)}.state.${chordId}`;
}

function decodeState(data: Uint8Array): ChordState {
  const s = decode(data) as ChordState;
  return { v: s.v, n: s.n, done: new Uint8Array(s.done), sent: s.sent === true };
}

function hasBit(bits: Uint8Array, i: number): boolean {
  return ((bits[i >> 3] ?? 0) & (1 << (i & 7))) !== 0;
}

function setBit(bits: Uint8Array, i: number): void {
  bits[i >> 3] = (bits[i >> 3] ?? 0) | (1 << (i & 7));
}

function countBits(bits: Uint8Array): number {
  let c = 0;
  for (let b of bits) {
    while (b) {
      b &= b - 1;
      c++;
    }
  }
  return c;
}

function backoff(attempt: number): Promise<void> {
  // Lock-free: a failed compare-and-set means another process progressed, so retry soon; the
  // jitter keeps a few processes from colliding in step.
  const ms = Math.random() * Math.min(100, 2 ** Math.min(attempt, 7));
  return new Promise((r) => setTimeout(r, ms));
}

function isWrongLastSequence(err: unknown): boolean {
  return /wrong last sequence|10071/i.test((err as Error)?.message ?? "");
}

function isNotFound(err: unknown): boolean {
  const e = err as { code?: unknown; api_error?: { code?: number }; message?: string };
  return e?.api_error?.code === 404 || e?.code === 404 || e?.code === "404" || /not found/i.test(e?.message ?? "");
}

async function requireJsm(client: CanvasClient): Promise<JetStreamManager> {
  if (typeof client.jsm !== "function") throw new ProtocolError("chords keep their state in JetStream: pass a client with jsm() (Client has it)");
  return client.jsm();
}
