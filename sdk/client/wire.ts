/**
 * The client's hot path on the wire: the task message and its `task-sent` event written by hand,
 * the event batch, NATS headers without nats.js's per-header checks, and the PubAck read without
 * JSON.parse.
 *
 * The MessagePack is written by the protocol's MessagePackWriter, byte for byte what msgpackr
 * writes for the same objects (docs/protocol.md §3); test/unit/wire.test.ts compares them. The
 * `task-sent` event copies the task's id, name, queue and args bytes instead of encoding them again.
 */
import { MsgHdrsImpl, type Match, type MsgHdrs } from "@nats-io/nats-core";
import { EVENT, SharedWriter, type MessagePackWriter, type TaskMessage } from "../protocol/mod.ts";

const UTF8 = new TextEncoder();
const DECODER = new TextDecoder();

/** Task messages, their events, event batches and headers: one writer, in 16 KB buffers. */
const writers = new SharedWriter(16 * 1024);

/** A task message's bytes, and its `task-sent` event's when asked for. */
export interface EncodedTask {
  body: Uint8Array;
  sentEvent: Uint8Array | undefined;
}

/**
 * Encodes a task message exactly as `encode(message)` would (its keys in their own order), and,
 * with `sentEvent`, the `task-sent` event `{ type, id, task, queue, at, args, eta?, expires?,
 * priority? }` exactly as `encode()` would, its id, task, queue and args copied from the body.
 * Args of more than `maxEventArgsBytes` are left out of the event: `omitted: { args: <bytes> }`.
 */
export function encodeTask(message: TaskMessage, sentEvent: boolean, maxEventArgsBytes = Infinity): EncodedTask {
  const w = writers.acquire();
  try {
    return writeTask(w, message, sentEvent, maxEventArgsBytes);
  } finally {
    writers.release(w);
  }
}

function writeTask(w: MessagePackWriter, message: TaskMessage, sentEvent: boolean, maxEventArgsBytes: number): EncodedTask {
  w.begin();
  const m = message as unknown as Record<string, unknown>;
  // Map 16, its size written at the end: one walk over the keys, as msgpackr does.
  w.map(0);
  let size = 0;
  let idStart = -1;
  let idEnd = -1;
  let taskStart = -1;
  let taskEnd = -1;
  let queueStart = -1;
  let queueEnd = -1;
  let argsStart = -1;
  let argsEnd = -1;
  for (const key in m) {
    if (!Object.hasOwn(m, key)) continue;
    size++;
    const keyStart = w.offset;
    w.str(key);
    const valueStart = w.offset;
    w.value(m[key]);
    const end = w.offset;
    if (key === "id") (idStart = keyStart), (idEnd = end);
    else if (key === "task") (taskStart = keyStart), (taskEnd = end);
    else if (key === "queue") (queueStart = keyStart), (queueEnd = end);
    else if (key === "args") (argsStart = valueStart), (argsEnd = end);
  }
  w.patch(1, size >> 8);
  w.patch(2, size & 0xff);
  const body = w.end();
  if (!sentEvent) return { body, sentEvent: undefined };
  // The event copies the id and task pairs as one run: taskMessage() writes them side by side.
  if (idStart < 0 || taskStart !== idEnd || queueStart < 0 || argsStart < 0) {
    throw new Error("encodeTask: a task message needs id, then task, then args and queue");
  }
  w.begin();
  const { eta, expires, priority } = message;
  w.map(6 + (eta ? 1 : 0) + (expires ? 1 : 0) + (priority ? 1 : 0));
  w.str("type");
  w.str(EVENT.sent);
  w.copy(body, idStart, taskEnd);
  w.copy(body, queueStart, queueEnd);
  w.str("at");
  w.num(message.sentAt);
  if (argsEnd - argsStart > maxEventArgsBytes) {
    // Too large for an event (docs/protocol.md §9.2): `omitted: { args: <bytes> }` in its place.
    w.str("omitted");
    w.map(1);
    w.str("args");
    w.num(argsEnd - argsStart);
  } else {
    w.str("args");
    w.copy(body, argsStart, argsEnd);
  }
  if (eta) (w.str("eta"), w.num(eta));
  if (expires) (w.str("expires"), w.num(expires));
  if (priority) (w.str("priority"), w.num(priority));
  return { body, sentEvent: w.end() };
}

/**
 * An event batch `{ v, events }` of events already encoded (EventBuffer encodes each on push),
 * exactly as `encode({ v, events })` would write it.
 */
export function encodeEventBatch(v: number, events: ReadonlyArray<Uint8Array>): Uint8Array {
  const w = writers.acquire();
  try {
    w.begin();
    w.map(2);
    w.str("v");
    w.num(v);
    w.str("events");
    w.array(events.length);
    for (const e of events) w.bytes(e);
    return w.end();
  } finally {
    writers.release(w);
  }
}

/**
 * NATS headers built for one publish: their wire form is written straight into bytes, with no
 * per-header checks, strings or Map. Any other use (get, set, iterate…) turns them into ordinary
 * nats.js headers first, so they behave as MsgHdrs in every respect.
 */
class FixedHeaders implements MsgHdrs {
  /** Names and values, alternating, until something else than encode() is asked for. */
  #entries: string[] | undefined;
  #impl: MsgHdrsImpl | undefined;

  constructor(entries: string[]) {
    this.#entries = entries;
  }

  /** The headers as nats.js's own MsgHdrsImpl, made on first use. */
  #headers(): MsgHdrsImpl {
    if (this.#impl === undefined) {
      this.#impl = new MsgHdrsImpl();
      const e = this.#entries!;
      for (let i = 0; i < e.length; i += 2) this.#impl.headers.set(e[i]!, [e[i + 1]!]);
      this.#entries = undefined;
    }
    return this.#impl;
  }

  /** The wire form, as nats.js's `MsgHdrsImpl.encode()` writes it (nats.js calls this on publish). */
  encode(): Uint8Array {
    const e = this.#entries;
    if (e === undefined) return this.#impl!.encode();
    // A task sent from user code while another is being written publishes (and so encodes its
    // headers) in the middle of that message: acquire() hands out a fresh writer then.
    const w = writers.acquire();
    try {
      return writeHeaders(w, e);
    } finally {
      writers.release(w);
    }
  }

  get hasError(): boolean {
    return this.#headers().hasError;
  }
  get status(): string {
    return this.#headers().status;
  }
  get code(): number {
    return this.#headers().code;
  }
  get description(): string {
    return this.#headers().description;
  }
  get(k: string, match?: Match): string {
    return this.#headers().get(k, match as "exact");
  }
  set(k: string, v: string, match?: Match): void {
    this.#headers().set(k, v, match);
  }
  append(k: string, v: string, match?: Match): void {
    this.#headers().append(k, v, match);
  }
  has(k: string, match?: Match): boolean {
    return this.#headers().has(k, match);
  }
  keys(): string[] {
    return this.#headers().keys();
  }
  values(k: string, match?: Match): string[] {
    return this.#headers().values(k, match);
  }
  delete(k: string, match?: Match): void {
    this.#headers().delete(k, match);
  }
  last(k: string, match?: Match): string {
    return this.#headers().last(k, match as "exact");
  }
  [Symbol.iterator](): IterableIterator<[string, string[]]> {
    return this.#headers()[Symbol.iterator]();
  }
}

const HEADER_LINES = new Map<string, Uint8Array>();

/** Writes NATS headers (`NATS/1.0`, then `name: value` lines) with `w`. */
function writeHeaders(w: MessagePackWriter, e: string[]): Uint8Array {
  w.begin();
  w.ascii("NATS/1.0");
  for (let i = 0; i < e.length; i += 2) {
    // "\r\n<name>: " once per header name, then copied.
    let name = HEADER_LINES.get(e[i]!);
    if (name === undefined) {
      name = UTF8.encode(`\r\n${e[i]}: `);
      if (HEADER_LINES.size < 64) HEADER_LINES.set(e[i]!, name);
    }
    w.bytes(name);
    w.ascii(e[i + 1]!);
  }
  w.ascii("\r\n\r\n");
  return w.end();
}

/**
 * Headers holding `entries`, name then value, each name once (canonical names). The values are
 * not validated, so pass only header-safe values (no CR or LF): task ids and names are, by their
 * token rules.
 */
export function fixedHeaders(...entries: string[]): MsgHdrs {
  return new FixedHeaders(entries);
}

/** 4 KiB of random bytes: 256 task ids per call to the system's generator. */
const RANDOM = new Uint8Array(4096);
let randomAt = RANDOM.length;
const HEX = new TextEncoder().encode("0123456789abcdef");
const ID = new Uint8Array(36);

/**
 * A random UUID v4 (122 random bits from the platform's cryptographic generator), as
 * `crypto.randomUUID()` makes, with less garbage: one string per id.
 */
export function randomTaskId(): string {
  if (randomAt + 16 > RANDOM.length) {
    crypto.getRandomValues(RANDOM);
    randomAt = 0;
  }
  const r = RANDOM;
  const at = randomAt;
  randomAt += 16;
  r[at + 6] = (r[at + 6]! & 0x0f) | 0x40; // version 4
  r[at + 8] = (r[at + 8]! & 0x3f) | 0x80; // variant 10
  let o = 0;
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) ID[o++] = 0x2d;
    const b = r[at + i]!;
    ID[o++] = HEX[b >> 4]!;
    ID[o++] = HEX[b & 15]!;
  }
  return DECODER.decode(ID);
}

/** What a PubAck says: stored (possibly as a duplicate), or refused with the server's error. */
export type AckReply =
  | { stream: string; seq: number; duplicate: boolean; error?: undefined }
  | { error: { code?: number; description?: string } };

/**
 * The two forms nats-server writes for a stored message: `{"stream":"<name>", "seq":<n>}` and
 * `…,"duplicate": true}` (2.9 puts those spaces; others may not). At most 15 digits: exact as a
 * double; longer numbers are left to JSON.parse.
 */
const STORED = /^\{"stream":"([^"\\]*)",\s*"seq":(\d{1,15})(,\s*"duplicate":\s*true)?\s*\}$/;

/**
 * Reads a PubAck: the stored forms with one regular expression (measured 0.3 us against 0.5 for
 * JSON.parse, and it compiles to far less than a hand-written parser, which counts in short runs);
 * anything else (errors, a domain, another order of fields) with JSON.parse. Undefined when the
 * body is not a JSON object.
 */
export function parsePubAck(d: Uint8Array): AckReply | undefined {
  const text = DECODER.decode(d);
  const m = STORED.exec(text);
  if (m !== null) return { stream: m[1]!, seq: Number(m[2]), duplicate: m[3] !== undefined };
  let ack: unknown;
  try {
    ack = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof ack !== "object" || ack === null || Array.isArray(ack)) return undefined;
  const a = ack as { stream?: string; seq?: number; duplicate?: boolean; error?: { code?: number; description?: string } };
  if (a.error) return { error: a.error };
  return { stream: a.stream ?? "", seq: a.seq ?? 0, duplicate: a.duplicate === true };
}
