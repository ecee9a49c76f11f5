/**
 * MessagePack written by hand: `encode()` itself, and the hot paths (the client's task messages,
 * event batches and NATS headers; the worker's result records and events), byte for byte what
 * msgpackr writes for the same values with the options of sdk/protocol/codec.ts (docs/protocol.md
 * §3; test/unit/wire.test.ts and worker_wire.test.ts compare them). msgpackr's generic object walk
 * was the largest single cost of the drain benchmark (~11 µs of worker CPU per task for one record
 * and three events), and the client's send path was a third faster written this way.
 *
 * Every object (plain, null-prototype, arrays, Maps, Sets, class instances through their toJSON),
 * ASCII strings, numbers, booleans, null, undefined and typed arrays are written here; Dates,
 * Errors, RegExps, ArrayBuffers, Map/Set subclasses, BigInts and non-ASCII strings go through
 * msgpackr and are copied in. Two deliberate differences from msgpackr: typed arrays other than
 * Uint8Array are written as `bin` of their bytes (msgpackr writes one byte per element and then
 * uninitialised memory), and nesting deeper than MAX_NESTING (or a cycle) is refused.
 */
import { msgpackrPack } from "./codec.ts";
import { ProtocolError } from "./errors.ts";

const UTF8 = new TextEncoder();
/**
 * Deepest nesting of objects and arrays written. msgpackr's encode() overflowed the stack at about
 * 1,300 levels and its decode() at about 2,700 (both depend on the stack): a value deeper than
 * this is refused with a clear error rather than published for no reader to decode.
 */
export const MAX_NESTING = 1000;

/**
 * Appends MessagePack to a buffer and hands out views of what it wrote. A view is never written
 * again: when the buffer is full, the message being written moves to a new one.
 */
export class MessagePackWriter {
  #buf: Uint8Array;
  #view: DataView;
  /** Where the next byte goes. */
  pos = 0;
  /** Where the message being written starts. */
  #start = 0;
  /** Objects and arrays open around the value being written. */
  #depth = 0;

  constructor(readonly size: number) {
    this.#buf = new Uint8Array(size);
    this.#view = new DataView(this.#buf.buffer);
  }

  /** Starts a message, in a new buffer unless 1 KB is free (so a message rarely has to move while written). */
  begin(): void {
    if (this.#buf.length - this.pos < 1024) this.#renew(this.size, 0);
    this.#start = this.pos;
    this.#depth = 0; // a message abandoned by a throw leaves no depth behind
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

  /** A string: ASCII by hand, with the shortest header for its length; anything else by msgpackr. */
  str(s: string): void {
    const n = s.length;
    this.#room(n + 5);
    const b = this.#buf;
    const header = n < 0x20 ? 1 : n < 0x100 ? 2 : n < 0x10000 ? 3 : 5;
    let p = this.pos + header;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) return this.bytes(msgpackrPack(s));
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
   * Any value, as msgpackr writes it (see the module comment for what goes through msgpackr).
   */
  value(v: unknown): void {
    switch (typeof v) {
      case "undefined":
        this.#room(1);
        this.#buf[this.pos++] = 0xc0;
        return;
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
        if (Array.isArray(v)) return this.#array(v);
        // Every typed array (and a DataView) as `bin` of its own bytes, read back as a Uint8Array.
        // msgpackr copies element by element instead, so a Float64Array([1.5]) became 01 and then
        // seven bytes of uninitialised memory (docs/protocol.md §3).
        if (ArrayBuffer.isView(v)) return this.bin(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
        if (v.constructor === Map) return this.#map(v as Map<unknown, unknown>);
        if (v.constructor === Set) return this.#array(Array.from(v as Set<unknown>));
        // What msgpackr encodes with its own extensions (Date as a timestamp, Error and RegExp as
        // arrays, ArrayBuffer as bin; subclasses of Map and Set as it does) stays with it. Every
        // other object (null prototype, an own `constructor` key, a class instance) is written as
        // msgpackr would, its toJSON() first, so no typed array inside ever reaches msgpackr.
        if (!(v instanceof Date || v instanceof Error || v instanceof RegExp || v instanceof ArrayBuffer || v instanceof Map || v instanceof Set)) {
          const toJSON = (v as { toJSON?: unknown }).toJSON;
          if (typeof toJSON === "function" && v.constructor !== Object) {
            const json: unknown = toJSON.call(v);
            if (json !== v) return this.value(json);
          }
          return this.#object(v as Record<string, unknown>);
        }
    }
    this.bytes(msgpackrPack(v));
  }

  /** Bytes as a MessagePack `bin` (8, 16 or 32), as msgpackr writes a Uint8Array. */
  bin(b: Uint8Array): void {
    const n = b.length;
    this.#room(n + 5);
    const buf = this.#buf;
    if (n < 0x100) (buf[this.pos] = 0xc4), (buf[this.pos + 1] = n), (this.pos += 2);
    else if (n < 0x10000) (buf[this.pos] = 0xc5), this.#view.setUint16(this.pos + 1, n), (this.pos += 3);
    else (buf[this.pos] = 0xc6), this.#view.setUint32(this.pos + 1, n), (this.pos += 5);
    buf.set(b, this.pos);
    this.pos += n;
  }

  /** A plain object as msgpackr writes it: map 16, its own enumerable keys in for-in order. */
  #object(o: Record<string, unknown>): void {
    this.#enter();
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
    this.#depth--;
  }

  #array(a: unknown[]): void {
    this.#enter();
    const n = a.length;
    this.array(n);
    for (let i = 0; i < n; i++) this.value(a[i]);
    this.#depth--;
  }

  /** A Map as msgpackr writes it: the shortest map header, keys of their own type. */
  #map(m: Map<unknown, unknown>): void {
    this.#enter();
    const n = m.size;
    this.#room(5);
    const b = this.#buf;
    if (n < 0x10) b[this.pos++] = 0x80 | n;
    else if (n < 0x10000) (b[this.pos] = 0xde), this.#view.setUint16(this.pos + 1, n), (this.pos += 3);
    else (b[this.pos] = 0xdf), this.#view.setUint32(this.pos + 1, n), (this.pos += 5);
    for (const [key, value] of m) {
      this.value(key);
      this.value(value);
    }
    this.#depth--;
  }

  #enter(): void {
    if (++this.#depth > MAX_NESTING) throw new ProtocolError(`a value nested more than ${MAX_NESTING} levels deep (or cyclic) cannot be sent: MessagePack readers refuse or overflow on such depth`);
  }

  /** An array header for `n` items, as msgpackr writes it (the items follow). */
  array(n: number): void {
    this.#room(5);
    const b = this.#buf;
    if (n < 0x10) b[this.pos++] = 0x90 | n;
    else if (n < 0x10000) (b[this.pos] = 0xdc), this.#view.setUint16(this.pos + 1, n), (this.pos += 3);
    else (b[this.pos] = 0xdd), this.#view.setUint32(this.pos + 1, n), (this.pos += 5);
  }

  /** Copies `src`. */
  bytes(src: Uint8Array): void {
    this.#room(src.length);
    this.#buf.set(src, this.pos);
    this.pos += src.length;
  }

  /**
   * Copies bytes `from`…`to` of `src`, a message handed out earlier (often by this writer, from
   * this very buffer: then with copyWithin, no view made).
   */
  copy(src: Uint8Array, from: number, to: number): void {
    const n = to - from;
    this.#room(n);
    if (src.buffer === this.#buf.buffer) this.#buf.copyWithin(this.pos, src.byteOffset + from, src.byteOffset + to);
    else this.#buf.set(src.subarray(from, to), this.pos);
    this.pos += n;
  }

  /** A non-negative integer in decimal ASCII digits (the byte counts of a NATS protocol line). */
  decimal(n: number): void {
    if (n < 10) {
      this.#room(1);
      this.#buf[this.pos++] = 0x30 + n;
      return;
    }
    this.ascii(String(n));
  }

  /** Text as is, one byte per character (NATS header lines are ASCII); a non-ASCII rest as UTF-8. */
  ascii(s: string): void {
    const n = s.length;
    this.#room(n * 3);
    const b = this.#buf;
    let p = this.pos;
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) {
        this.pos = p + UTF8.encodeInto(s.slice(i), b.subarray(p)).written!;
        return;
      }
      b[p++] = c;
    }
    this.pos = p;
  }
}

/**
 * One writer shared by a module's encoders, and a fresh one for a call made while it is
 * mid-message: user code run during a write (a getter, a toJSON, a Proxy trap) may encode, or send
 * a task, itself. A nested begin() on the same writer would move the outer message's start and
 * silently drop part of it.
 */
export class SharedWriter {
  readonly #writer: MessagePackWriter;
  #busy = false;

  constructor(size: number) {
    this.#writer = new MessagePackWriter(size);
  }

  /** The shared writer, or a fresh one while it is in use; give it back with {@link release}. */
  acquire(): MessagePackWriter {
    if (this.#busy) return new MessagePackWriter(1024);
    this.#busy = true;
    return this.#writer;
  }

  release(w: MessagePackWriter): void {
    if (w === this.#writer) this.#busy = false;
  }
}
