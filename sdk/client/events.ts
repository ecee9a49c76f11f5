/**
 * Batches task events into one message per flush (as Celery batches `task` events), so a monitor
 * sees every state change without costing the hot path one stored message per change.
 */
import type { NatsConnection } from "@nats-io/nats-core";
import { HEADER, PROTOCOL_VERSION, type TaskEvent } from "../protocol/mod.ts";
import type { AckedPublisher } from "./publisher.ts";
import { encodeEventBatch, fixedHeaders, randomTaskId } from "./wire.ts";

/** Collects events and publishes them in batches through an {@link AckedPublisher}. */
export class EventBuffer {
  #events: Array<TaskEvent | Uint8Array> = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  #microtask = false;
  readonly #inFlight = new Set<Promise<unknown>>();
  /** Batches that could not be stored after every retry; counted so operators can see it. */
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
   * published within `maxDelayMs` or when the batch is full.
   */
  push(event: TaskEvent | Uint8Array): void {
    this.#events.push(event);
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

  /** Publishes what is queued now. */
  flush(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
    if (this.#events.length === 0 || this.nc.isClosed()) return;
    const events = this.#events;
    // Writes encoded events as they are and encodes the others: the same bytes as encode().
    const body = encodeEventBatch(PROTOCOL_VERSION, events);
    this.#events = [];
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
