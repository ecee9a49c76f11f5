/**
 * Batches task events into one message per flush (as Celery batches `task` events), so a monitor
 * sees every state change without costing the hot path one stored message per change.
 */
import { headers as natsHeaders, type NatsConnection } from "@nats-io/nats-core";
import { encode, HEADER, PROTOCOL_VERSION, type TaskEvent } from "../protocol/mod.ts";
import type { AckedPublisher } from "./publisher.ts";

/** Collects events and publishes them in batches through an {@link AckedPublisher}. */
export class EventBuffer {
  #events: TaskEvent[] = [];
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

  /** Queues an event; it is published within `maxDelayMs` or when the batch is full. */
  push(event: TaskEvent): void {
    this.#events.push(event);
    if (this.#events.length >= this.maxBatch) this.flush();
    else if (this.#timer === undefined && !this.#microtask) {
      if (this.maxDelayMs === 0) {
        // Same-tick batching only: a client's task-sent event should not trail the worker's events.
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
    this.#events = [];
    // A batch id, so a batch re-sent after a lost acknowledgement is stored once.
    const h = natsHeaders();
    h.set(HEADER.msgId, `ev.${crypto.randomUUID()}`);
    const p = this.publisher
      .publish(this.subject, encode({ v: PROTOCOL_VERSION, events }), h)
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
