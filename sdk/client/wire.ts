/**
 * The client's hot path on the wire: the task message and its `task-sent` event written by hand,
 * the event batch, NATS headers without nats.js's per-header checks, and the PubAck read without
 * JSON.parse.
 *
 * The MessagePack written here is byte for byte what msgpackr writes for the same objects
 * (docs/protocol.md §3: map 16 for every map, the shortest string header, fixint/int/uint for
 * 32-bit integers, float 64 otherwise); test/unit/wire.test.ts compares them. Values other than
 * strings and numbers (args, meta, callbacks, autoretryFor) are encoded by msgpackr and copied in,
 * so the `task-sent` event copies the task's args bytes instead of encoding the args again.
 */
import { MsgHdrsImpl, type Match, type MsgHdrs } from "@nats-io/nats-core";
import { encode, EVENT, type TaskMessage } from "../protocol/mod.ts";

const CHUNK = 16 * 1024;
const UTF8 = new TextEncoder();
const DECODER = new TextDecoder();

// Messages are written into chunks of CHUNK bytes and handed out as views, as msgpackr does: no
// allocation per message, and a view is never written again once handed out.
let chunk = new Uint8Array(CHUNK);
let chunkBuffer = chunk.buffer;
let view = new DataView(chunkBuffer);
/** Where the next byte goes. */
let pos = 0;
/** Where the message being written starts. */
let start = 0;

function begin(): void {
  start = pos;
  if (chunk.length - pos < 512) newChunk(CHUNK);
}

/** The bytes written since begin(); the next message starts 8-aligned after them. */
function finish(): Uint8Array {
  // A view made by the constructor: cheaper than subarray(), which looks up a species.
  const out = new Uint8Array(chunkBuffer, start, pos - start);
  pos = Math.min((pos + 7) & ~7, chunk.length);
  return out;
}

/** Moves the message being written (start…pos) to a new chunk of `size` bytes. */
function newChunk(size: number): void {
  const next = new Uint8Array(size);
  next.set(chunk.subarray(start, pos));
  pos -= start;
  start = 0;
  chunk = next;
  chunkBuffer = next.buffer;
  view = new DataView(chunkBuffer);
}

/** Makes room for `n` more bytes of the current message (moving it to a larger chunk if needed). */
function room(n: number): void {
  if (pos + n > chunk.length) newChunk(Math.max(CHUNK, (pos - start + n) * 2));
}

/** A string as msgpackr writes it: the shortest header for its UTF-8 length. */
function writeStr(s: string): void {
  const len = s.length;
  room(len * 3 + 5);
  const c = chunk;
  const at = pos;
  const header = len < 0x20 ? 1 : len < 0x100 ? 2 : len < 0x10000 ? 3 : 5;
  let p = at + header;
  let i = 0;
  // ASCII, the case of every id, name, queue and subject: one byte per character.
  for (; i < len; i++) {
    const code = s.charCodeAt(i);
    if (code >= 0x80) break;
    c[p++] = code;
  }
  if (i < len) p = writeNonAscii(s, i, p, at + header);
  const bytes = p - at - header;
  const real = bytes < 0x20 ? 1 : bytes < 0x100 ? 2 : bytes < 0x10000 ? 3 : 5;
  if (real !== header) c.copyWithin(at + real, at + header, p);
  if (real === 1) c[at] = 0xa0 | bytes;
  else if (real === 2) {
    c[at] = 0xd9;
    c[at + 1] = bytes;
  } else if (real === 3) {
    c[at] = 0xda;
    c[at + 1] = bytes >> 8;
    c[at + 2] = bytes & 0xff;
  } else {
    c[at] = 0xdb;
    view.setUint32(at + 1, bytes);
  }
  pos = at + real + bytes;
}

/**
 * The rest of a string from character `i` on, at `p` (its first byte at `first`), as msgpackr
 * does: its own loop below 64 characters (a lone surrogate becomes three bytes), UTF-8 otherwise.
 */
function writeNonAscii(s: string, i: number, p: number, first: number): number {
  const len = s.length;
  if (len >= 0x40) return first + UTF8.encodeInto(s, chunk.subarray(first)).written!;
  const c = chunk;
  for (; i < len; i++) {
    let code = s.charCodeAt(i);
    let low: number;
    if (code < 0x80) c[p++] = code;
    else if (code < 0x800) {
      c[p++] = (code >> 6) | 0xc0;
      c[p++] = (code & 0x3f) | 0x80;
    } else if ((code & 0xfc00) === 0xd800 && ((low = s.charCodeAt(i + 1)) & 0xfc00) === 0xdc00) {
      code = 0x10000 + ((code & 0x03ff) << 10) + (low & 0x03ff);
      i++;
      c[p++] = (code >> 18) | 0xf0;
      c[p++] = ((code >> 12) & 0x3f) | 0x80;
      c[p++] = ((code >> 6) & 0x3f) | 0x80;
      c[p++] = (code & 0x3f) | 0x80;
    } else {
      c[p++] = (code >> 12) | 0xe0;
      c[p++] = ((code >> 6) & 0x3f) | 0x80;
      c[p++] = (code & 0x3f) | 0x80;
    }
  }
  return p;
}

/** A number as msgpackr writes it (with `useRecords: false`, positive fixints go up to 127). */
function writeNum(n: number): void {
  room(9);
  const c = chunk;
  if (n >>> 0 === n) {
    if (n < 0x80) c[pos++] = n;
    else if (n < 0x100) {
      c[pos++] = 0xcc;
      c[pos++] = n;
    } else if (n < 0x10000) {
      c[pos++] = 0xcd;
      c[pos++] = n >> 8;
      c[pos++] = n & 0xff;
    } else {
      c[pos++] = 0xce;
      view.setUint32(pos, n);
      pos += 4;
    }
  } else if (n >> 0 === n) {
    if (n >= -0x20) c[pos++] = 0x100 + n;
    else if (n >= -0x80) {
      c[pos++] = 0xd0;
      c[pos++] = n + 0x100;
    } else if (n >= -0x8000) {
      c[pos++] = 0xd1;
      view.setInt16(pos, n);
      pos += 2;
    } else {
      c[pos++] = 0xd2;
      view.setInt32(pos, n);
      pos += 4;
    }
  } else {
    c[pos++] = 0xcb;
    view.setFloat64(pos, n);
    pos += 8;
  }
}

/** Copies `b`. */
function writeBytes(b: Uint8Array): void {
  room(b.length);
  chunk.set(b, pos);
  pos += b.length;
}

/** Copies bytes `from`…`to` of a message written earlier in `source`, a chunk. */
function copyFrom(source: Uint8Array, from: number, to: number): void {
  const n = to - from;
  room(n);
  if (source === chunk) chunk.copyWithin(pos, from, to);
  else chunk.set(source.subarray(from, to), pos);
  pos += n;
}

/** Map keys, encoded once each: the same dozen keys are written for every task. */
const KEYS = new Map<string, Uint8Array>();

function writeKey(k: string): void {
  let b = KEYS.get(k);
  if (b === undefined) {
    b = encode(k).slice();
    if (KEYS.size < 256) KEYS.set(k, b);
  }
  room(b.length);
  const c = chunk;
  for (let i = 0; i < b.length; i++) c[pos++] = b[i]!;
}

function writeValue(v: unknown): void {
  if (typeof v === "string") writeStr(v);
  else if (typeof v === "number") writeNum(v);
  else writeBytes(encode(v));
}

/** A map 16 header (msgpackr writes one for every object, whatever its size). */
function writeMap(size: number): void {
  room(3);
  chunk[pos++] = 0xde;
  chunk[pos++] = size >> 8;
  chunk[pos++] = size & 0xff;
}

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
  begin();
  const m = message as unknown as Record<string, unknown>;
  // Map 16, its size written at the end: one walk over the keys, as msgpackr does.
  writeMap(0);
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
    const keyStart = pos - start;
    writeKey(key);
    const valueStart = pos - start;
    writeValue(m[key]);
    const end = pos - start;
    if (key === "id") (idStart = keyStart), (idEnd = end);
    else if (key === "task") (taskStart = keyStart), (taskEnd = end);
    else if (key === "queue") (queueStart = keyStart), (queueEnd = end);
    else if (key === "args") (argsStart = valueStart), (argsEnd = end);
  }
  // Offsets in the chunk, for the event's copies.
  const bodyChunk = chunk;
  const at = start;
  const body = finish();
  body[1] = size >> 8;
  body[2] = size & 0xff;
  if (!sentEvent) return { body, sentEvent: undefined };
  // The event copies the id and task pairs as one run: taskMessage() writes them side by side.
  if (idStart < 0 || taskStart !== idEnd || queueStart < 0 || argsStart < 0) {
    throw new Error("encodeTask: a task message needs id, then task, then args and queue");
  }
  begin();
  const { eta, expires, priority } = message;
  writeMap(6 + (eta ? 1 : 0) + (expires ? 1 : 0) + (priority ? 1 : 0));
  writeKey("type");
  writeKey(EVENT.sent);
  copyFrom(bodyChunk, at + idStart, at + taskEnd);
  copyFrom(bodyChunk, at + queueStart, at + queueEnd);
  writeKey("at");
  writeNum(message.sentAt);
  if (argsEnd - argsStart > maxEventArgsBytes) {
    // Too large for an event (docs/protocol.md §9.2): `omitted: { args: <bytes> }` in its place.
    writeKey("omitted");
    writeMap(1);
    writeKey("args");
    writeNum(argsEnd - argsStart);
  } else {
    writeKey("args");
    copyFrom(bodyChunk, at + argsStart, at + argsEnd);
  }
  if (eta) (writeKey("eta"), writeNum(eta));
  if (expires) (writeKey("expires"), writeNum(expires));
  if (priority) (writeKey("priority"), writeNum(priority));
  return { body, sentEvent: finish() };
}

/**
 * An event batch `{ v, events }` whose events are already encoded (or are objects, encoded here),
 * exactly as `encode({ v, events })` would write it.
 */
export function encodeEventBatch(v: number, events: ReadonlyArray<Uint8Array | object>): Uint8Array {
  begin();
  writeMap(2);
  writeKey("v");
  writeNum(v);
  writeKey("events");
  const n = events.length;
  room(5);
  if (n < 0x10) chunk[pos++] = 0x90 | n;
  else if (n < 0x10000) {
    chunk[pos++] = 0xdc;
    chunk[pos++] = n >> 8;
    chunk[pos++] = n & 0xff;
  } else {
    chunk[pos++] = 0xdd;
    view.setUint32(pos, n);
    pos += 4;
  }
  for (const e of events) writeBytes(e instanceof Uint8Array ? e : encode(e));
  return finish();
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
    begin();
    writeAscii("NATS/1.0");
    for (let i = 0; i < e.length; i += 2) {
      // "\r\n<name>: " once per header name, then copied.
      let name = HEADER_LINES.get(e[i]!);
      if (name === undefined) {
        name = UTF8.encode(`\r\n${e[i]}: `);
        if (HEADER_LINES.size < 64) HEADER_LINES.set(e[i]!, name);
      }
      room(name.length);
      chunk.set(name, pos);
      pos += name.length;
      writeAscii(e[i + 1]!);
    }
    writeAscii("\r\n\r\n");
    return finish();
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

/** Writes `s` byte per character (header text is ASCII; anything else as UTF-8). */
function writeAscii(s: string): void {
  const len = s.length;
  room(len * 3);
  const c = chunk;
  let p = pos;
  for (let i = 0; i < len; i++) {
    const code = s.charCodeAt(i);
    if (code >= 0x80) {
      pos = p + UTF8.encodeInto(s.slice(i), c.subarray(p)).written!;
      return;
    }
    c[p++] = code;
  }
  pos = p;
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
