/**
 * Batches task events into one message per flush (as Celery batches `task` events), so a monitor
 * sees every state change without costing the hot path one stored message per change.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { encode, HEADER, PROTOCOL_VERSION, type TaskEvent } from "../protocol/mod.ts";
import type { AckedPublisher } from "./publisher.ts";
import { encodeEventBatch, fixedHeaders, randomTaskId } from "./wire.ts";

/** The server's max_payload when it has not said (nats-server's default, 1 MiB). */
const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Room a batch leaves for its headers, subject and envelope. */
const BATCH_SLACK = 4096;
/** The fields of an event that carry user values, the ones left out of an event too large. */
const VALUE_FIELDS = ["args", "result", "progress", "error"] as const;

/** `event` as MessagePack, its user values left out (and named in `omitted`) if it is too large. */
function encodeWithinLimit(event: TaskEvent, limit: number): Uint8Array {
  const bytes = encode(event);
  if (bytes.length <= limit) return bytes;
  const trimmed: Record<string, unknown> = { ...event };
  const omitted: Record<string, number> = {};
  for (const key of VALUE_FIELDS) {
    if (trimmed[key] === undefined) continue;
    omitted[key] = encode(trimmed[key]).length;
    delete trimmed[key];
  }
  trimmed.omitted = omitted;
  return encode(trimmed);
}

/**
 * Collects events and publishes them in batches through an {@link AckedPublisher}. A batch is
 * published when it holds `maxBatch` events, after `maxDelayMs`, or before it would pass the
 * server's max_payload (a batch too large would be refused whole, and its events lost).
 */
export class EventBuffer {
  /** Queued events, each one TaskEvent map as MessagePack. */
  #events: Uint8Array[] = [];
  /** Bytes of the queued events. */
  #bytes = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #microtask = false;
  readonly #inFlight = new Set<Promise<unknown>>();
  /** Events whose batch could not be stored after every retry; counted so operators can see it. */
  dropped = 0;

  constructor(
    private readonly publisher: AckedPublisher,
    private readonly subject: string,
    private readonly nc: NatsConnection,
    private readonly maxBatch = 500,
    private readonly maxDelayMs = 20,
  ) {}

  /**
   * Queues an event, as an object or already encoded as MessagePack (one TaskEvent map); it is
   * published within `maxDelayMs` or when the batch is full. An object's user values are left out
   * when they make it larger than {@link valueLimit}; an encoded event must already be within it
   * (the hot paths, encodeTask() and the worker's TaskEvents, write `omitted` themselves).
   */
  push(event: TaskEvent | Uint8Array): void {
    const bytes = event instanceof Uint8Array ? event : encodeWithinLimit(event, this.valueLimit);
    if (this.#bytes + bytes.length > this.#maxBatchBytes()) this.flush();
    this.#events.push(bytes);
    this.#bytes += bytes.length;
    if (this.#events.length >= this.maxBatch) this.flush();
    else if (this.#timer === undefined && !this.#microtask) {
      if (this.maxDelayMs === 0) {
        // maxDelayMs 0: a batch holds only what is pushed in the same tick (the client now uses 20).
        this.#microtask = true;
        queueMicrotask(() => {
          this.#microtask = false;
          this.flush();
        });
      } else {
        this.#timer = setTimeout(() => this.flush(), this.maxDelayMs);
      }
    }
  }

  /**
   * The largest event (and so the largest user value: args, result, progress) an event carries:
   * half the server's max_payload, so one event always fits a batch with room to spare. Values that
   * make an event larger are left out and named in its `omitted` field with their sizes
   * (docs/protocol.md §9.1).
   */
  get valueLimit(): number {
    return Math.floor((this.nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD) / 2);
  }

  #maxBatchBytes(): number {
    return (this.nc.info?.max_payload ?? DEFAULT_MAX_PAYLOAD) - BATCH_SLACK;
  }

  /** Publishes what is queued now. */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#events.length === 0 || this.nc.isClosed()) return;
    const events = this.#events;
    const body = encodeEventBatch(PROTOCOL_VERSION, events);
    this.#events = [];
    this.#bytes = 0;
    // A batch id, so a batch re-sent after a lost acknowledgement is stored once.
    const h = fixedHeaders(HEADER.msgId, `ev.${randomTaskId()}`);
    const p = this.publisher
      .publish(this.subject, body, h)
      .catch(() => {
        this.dropped += events.length;
      })
      .finally(() => this.#inFlight.delete(p));
    this.#inFlight.add(p);
  }

  /** Flushes and waits until every batch is stored (or given up). */
  async close(): Promise<void> {
    this.flush();
    await Promise.all(this.#inFlight);
  }
}
