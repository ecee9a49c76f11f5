/**
 * The worker's hot path on the wire: result records and task events written straight to
 * MessagePack by the protocol's MessagePackWriter (byte for byte what `encode()` writes;
 * test/unit/worker_wire.test.ts compares them), and the delivery count read from an ack subject
 * without splitting it.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { EventBuffer, type AckedPublisher } from "../client/mod.ts";
import { EVENT, MessagePackWriter, type ResultRecord, type TaskEvent } from "../protocol/mod.ts";

/** Record bodies: one writer for the worker, in 64 KB buffers. */
const records = new MessagePackWriter(64 * 1024);

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
  readonly #w = new MessagePackWriter(64 * 1024);
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
      const w = new MessagePackWriter(256);
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
  #head(start: Uint8Array, id: string, task: string, queue: string, at: number): MessagePackWriter {
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
