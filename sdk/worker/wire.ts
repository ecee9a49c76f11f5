/**
 * The worker's hot path on the wire: result records and task events written straight to
 * MessagePack, byte for byte what `encode()` (msgpackr) writes for the same objects
 * (docs/protocol.md §3; test/unit/worker_wire.test.ts compares them). msgpackr's generic object
 * walk was the largest single cost of the drain benchmark: ~11 µs of worker CPU per task for one
 * record and three events.
 *
 * Plain data (objects, arrays, ASCII strings, numbers, booleans, null) is written here; any other
 * value (a Date, a Map, a non-ASCII string, …) goes through `encode()` and is copied in. Also here:
 * the delivery count read from an ack subject without splitting it.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { EventBuffer, type AckedPublisher } from "../client/mod.ts";
import { encode, EVENT, type ResultRecord, type TaskEvent } from "../protocol/mod.ts";

/**
 * Appends MessagePack to a buffer and hands out views of what it wrote. A view is never written
 * again: when the buffer is full, the message being written moves to a new one.
 */
class Writer {
  #buf: Uint8Array;
  #view: DataView;
  /** Where the next byte goes. */
  pos = 0;
  /** Where the message being written starts. */
  #start = 0;

  constructor(readonly size: number) {
    this.#buf = new Uint8Array(size);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Starts a message, in a new buffer unless 1 KB is free (so a message rarely has to move while written). */
  begin(): void {
    if (this.#buf.length - this.pos < 1024) this.#renew(this.size, 0);
    this.#start = this.pos;
  }

  /** The message written since begin(); the next one starts after it. */
  end(): Uint8Array {
    const out = this.#buf.subarray(this.#start, this.pos);
    this.#start = this.pos;
    return out;
  }

  /** The current message's bytes `from`…`to` (offsets from its start), with no copy. */
  slice(from: number, to: number): Uint8Array {
    return this.#buf.subarray(this.#start + from, this.#start + to);
  }

  /** Offset of the next byte from the current message's start. */
  get offset(): number {
    return this.pos - this.#start;
  }

  /** Writes `byte` at offset `at` of the current message (a map size known only at its end). */
  patch(at: number, byte: number): void {
    this.#buf[this.#start + at] = byte;
  }

  #room(n: number): void {
    if (this.pos + n > this.#buf.length) this.#renew(Math.max(this.size, (this.pos - this.#start + n) * 2), this.pos - this.#start);
  }

  /** Moves the current message (its first `keep` bytes) to a new buffer of `size` bytes. */
  #renew(size: number, keep: number): void {
    const next = new Uint8Array(size);
    next.set(this.#buf.subarray(this.#start, this.#start + keep));
    this.#buf = next;
    this.#view = new DataView(next.buffer);
    this.#start = 0;
    this.pos = keep;
  }

  /** A map 16 header: msgpackr writes one for every object, whatever its size. */
  map(size: number): void {
    this.#room(3);
    const b = this.#buf;
    b[this.pos] = 0xde;
    b[this.pos + 1] = size >> 8;
    b[this.pos + 2] = size & 0xff;
    this.pos += 3;
  }

  /** A string: ASCII by hand, with the shortest header for its length; anything else by encode(). */
  str(s: string): void {
    const n = s.length;
    this.#room(n + 5);
    const b = this.#buf;
    const header = n < 0x20 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
    let p = this.pos + header;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) return this.bytes(encode(s));
      b[p++] = c;
    }
    const at = this.pos;
    if (header === 1) b[at] = 0xa0 | n;
    else if (header === 2) (b[at] = 0xd9), (b[at + 1] = n);
    else if (header === 3) (b[at] = 0xda), this.#view.setUint16(at + 1, n);
    else (b[at] = 0xdb), this.#view.setUint32(at + 1, n);
    this.pos = p;
  }

  /**
   * A number as msgpackr writes it (no float 32): 32-bit integers in their shortest form (positive
   * fixints up to 127, as with `useRecords: false`), anything else as a float 64 (epoch ms too).
   */
  num(x: number): void {
    this.#room(9);
    const b = this.#buf;
    const v = this.#view;
    const at = this.pos;
    let n: number;
    if (x >>> 0 === x) {
      if (x < 0x80) (b[at] = x), (n = 1);
      else if (x < 0x100) (b[at] = 0xcc), (b[at + 1] = x), (n = 2);
      else if (x < 0x10000) (b[at] = 0xcd), v.setUint16(at + 1, x), (n = 3);
      else (b[at] = 0xce), v.setUint32(at + 1, x), (n = 5);
    } else if (x >> 0 === x) {
      if (x >= -0x20) (b[at] = 0x100 + x), (n = 1);
      else if (x >= -0x80) (b[at] = 0xd0), (b[at + 1] = x + 0x100), (n = 2);
      else if (x >= -0x8000) (b[at] = 0xd1), v.setInt16(at + 1, x), (n = 3);
      else (b[at] = 0xd2), v.setInt32(at + 1, x), (n = 5);
    } else {
      b[at] = 0xcb;
      v.setFloat64(at + 1, x);
      n = 9;
    }
    this.pos = at + n;
  }

  /**
   * Any value, as encode() writes it: plain data (objects, arrays, strings, numbers, booleans,
   * null) by hand, anything else (undefined, Date, Map, BigInt, bytes, …) by encode().
   */
  value(v: unknown): void {
    switch (typeof v) {
      case "string":
        return this.str(v);
      case "number":
        return this.num(v);
      case "boolean":
        this.#room(1);
        this.#buf[this.pos++] = v ? 0xc3 : 0xc2;
        return;
      case "object":
        if (v === null) {
          this.#room(1);
          this.#buf[this.pos++] = 0xc0;
          return;
        }
        if (v.constructor === Object) return this.#object(v as Record<string, unknown>);
        if (v.constructor === Array) return this.#array(v as unknown[]);
    }
    this.bytes(encode(v));
  }

  /** A plain object as msgpackr writes it: map 16, its own enumerable keys in for-in order. */
  #object(o: Record<string, unknown>): void {
    const at = this.offset;
    this.map(0);
    let size = 0;
    for (const key in o) {
      if (typeof o.hasOwnProperty !== "function" || (o as { hasOwnProperty(k: string): boolean }).hasOwnProperty(key)) {
        this.str(key);
        this.value(o[key]);
        size++;
      }
    }
    if (size > 0xffff) throw new Error(`an object of ${size} keys cannot be written with a map 16 header`);
    this.patch(at + 1, size >> 8);
    this.patch(at + 2, size & 0xff);
  }

  #array(a: unknown[]): void {
    const n = a.length;
    this.#room(5);
    const b = this.#buf;
    if (n < 0x10) b[this.pos++] = 0x90 | n;
    else if (n < 0x10000) (b[this.pos] = 0xdc), this.#view.setUint16(this.pos + 1, n), (this.pos += 3);
    else (b[this.pos] = 0xdd), this.#view.setUint32(this.pos + 1, n), (this.pos += 5);
    for (let i = 0; i < n; i++) this.value(a[i]);
  }

  /** Copies `src`. */
  bytes(src: Uint8Array): void {
    this.#room(src.length);
    this.#buf.set(src, this.pos);
    this.pos += src.length;
  }
}

/** Record bodies: one writer for the worker, in 64 KB buffers. */
const records = new Writer(64 * 1024);

/** A record as bytes, and where its `result` value lies in them (when it has one). */
export interface EncodedRecord {
  body: Uint8Array;
  /** The `result` value's bytes, a view into `body`. */
  result: Uint8Array | undefined;
}

/**
 * Encodes `record` exactly as `encode(final ? { kind: "result", ...record } : record)` would (its
 * keys in their own order). `worker`, when it is `identity`, is copied from `identityBytes`.
 */
export function encodeRecord(record: ResultRecord, final: boolean, identity: object, identityBytes: Uint8Array): EncodedRecord {
  const w = records;
  w.begin();
  const r = record as unknown as Record<string, unknown>;
  // A map 16 header has a fixed size: its count is written once the keys are counted.
  w.map(0);
  let size = 0;
  if (final) (w.str("kind"), w.str("result"), size++);
  let from = -1;
  let to = -1;
  for (const key in r) {
    const v = r[key];
    w.str(key);
    size++;
    if (key === "result") from = w.offset;
    if (v === identity) w.bytes(identityBytes);
    else w.value(v);
    if (key === "result") to = w.offset;
  }
  w.patch(1, size >> 8);
  w.patch(2, size & 0xff);
  const result = from >= 0 ? w.slice(from, to) : undefined;
  return { body: w.end(), result };
}

/**
 * The worker's task events, batched by the client's EventBuffer (one message per flush, within
 * `maxDelayMs`, at most `maxBatch` events), each written as bytes when it happens: the frequent
 * events (received, started, succeeded) without an object; any other from its object.
 */
export class TaskEvents {
  readonly #w = new Writer(64 * 1024);
  readonly #buffer: EventBuffer;
  /** The constant runs of the frequent events, each written in one copy. */
  readonly #runs: {
    received: Uint8Array;
    started: Uint8Array;
    succeeded: Uint8Array;
    /** `"worker": <id>, "retries": ` */
    retries: Uint8Array;
    /** `"worker": <id>, "result": ` */
    result: Uint8Array;
    /** `"worker": <id>, "omitted": ` (then `{"result": <bytes>}`, for a result too large for an event) */
    omitted: Uint8Array;
  };

  constructor(publisher: AckedPublisher, subject: string, nc: NatsConnection, workerId: string, maxBatch = 500, maxDelayMs = 20) {
    this.#buffer = new EventBuffer(publisher, subject, nc, maxBatch, maxDelayMs);
    const run = (size: number, ...parts: (string | number)[]) => {
      const w = new Writer(256);
      w.begin();
      if (size > 0) w.map(size);
      for (const part of parts) w.value(part);
      return w.end();
    };
    this.#runs = {
      received: run(7, "type", EVENT.received, "id"),
      started: run(7, "type", EVENT.started, "id"),
      succeeded: run(8, "type", EVENT.succeeded, "id"),
      retries: run(0, "worker", workerId, "retries"),
      result: run(0, "worker", workerId, "result"),
      omitted: run(0, "worker", workerId, "omitted"),
    };
  }

  /** Events whose batch could not be stored after every retry; counted so operators can see it. */
  get dropped(): number {
    return this.#buffer.dropped;
  }

  /** `task-received` or `task-started`: `{ type, id, task, queue, at, worker, retries }`. */
  state(type: typeof EVENT.received | typeof EVENT.started, id: string, task: string, queue: string, at: number, retries: number): void {
    const w = this.#head(type === EVENT.received ? this.#runs.received : this.#runs.started, id, task, queue, at);
    w.bytes(this.#runs.retries);
    w.num(retries);
    this.#buffer.push(w.end());
  }

  /**
   * `task-succeeded`: `{ type, id, task, queue, at, worker, result, runtimeMs }`, `result` as bytes;
   * a result larger than the events' value limit is left out: `omitted: { result: <bytes> }`.
   */
  succeeded(id: string, task: string, queue: string, at: number, result: Uint8Array, runtimeMs: number): void {
    const w = this.#head(this.#runs.succeeded, id, task, queue, at);
    if (result.length > this.#buffer.valueLimit) {
      w.bytes(this.#runs.omitted);
      w.map(1);
      w.str("result");
      w.num(result.length);
    } else {
      w.bytes(this.#runs.result);
      w.bytes(result);
    }
    w.str("runtimeMs");
    w.num(runtimeMs);
    this.#buffer.push(w.end());
  }

  /** Any other event, from its object. */
  push(event: TaskEvent): void {
    this.#buffer.push(event);
  }

  /** Begins an event: `{ type, id, task, queue, at, ` after `start` (the map header up to the key `id`). */
  #head(start: Uint8Array, id: string, task: string, queue: string, at: number): Writer {
    const w = this.#w;
    w.begin();
    w.bytes(start);
    w.str(id);
    w.str("task");
    w.str(task);
    w.str("queue");
    w.str(queue);
    w.str("at");
    w.num(at);
    return w;
  }

  /** Publishes what is queued now. */
  flush(): void {
    this.#buffer.flush();
  }

  /** Flushes and waits until every batch is stored (or given up). */
  close(): Promise<void> {
    return this.#buffer.close();
  }
}

/**
 * `parseAckSubject(reply)?.deliveryCount ?? 1`, read without splitting the subject into tokens
 * and an object (this runs for every message).
 */
export function deliveryCountOf(reply: string): number {
  if (!reply.startsWith("$JS.ACK.")) return 1;
  let tokens = 1;
  for (let i = 0; i < reply.length; i++) if (reply.charCodeAt(i) === 46) tokens++;
  // `<delivered>` is token 4 of the 9-token form, token 6 of the form with domain and account hash.
  const index = tokens === 9 ? 4 : tokens >= 12 ? 6 : -1;
  if (index < 0) return 1;
  let start = 0;
  for (let k = 0; k < index; k++) start = reply.indexOf(".", start) + 1;
  return Number(reply.slice(start, reply.indexOf(".", start)));
}
