/**
 * `monitor(client)`: every task event of a namespace, one at a time, from the events stream, the way
 * Cadasta's task-monitor queue saw every task message. Live (an ephemeral ordered consumer) or
 * durable (a named pull consumer that resumes where it stopped).
 */
import type { JsMsg } from "@nats-io/jetstream";
import { assertToken, decodeEventBatch, type TaskEvent } from "../protocol/mod.ts";
import type { Client } from "../client/mod.ts";
import { DurableFeed, ensureDurable, orderedSource, type MessageSource, type Since } from "./consumers.ts";
import { eventMatcher, type EventFilter } from "./filter.ts";
import { isTaskEvent } from "./timeline.ts";

/** Options of {@link monitor}. */
export interface MonitorOptions extends EventFilter {
  /**
   * Where to start: events stored since a time, only new ones (default), or all the stream keeps.
   * For a durable monitor this applies only when its consumer is first created.
   */
  since?: Since;
  /**
   * Name of a durable consumer: a monitor that was stopped (or crashed) resumes with the first
   * event it had not processed. A batch is acknowledged once its last event was processed: when
   * the loop asks for the next event, or stops after it.
   */
  durable?: string;
  /** Keep waiting for new events (default). `false` ends once the events stored at start are read. */
  follow?: boolean;
  /** Stops the monitor at the end of the event batch it is yielding (so a durable one repeats nothing). */
  signal?: AbortSignal;
}

/** What {@link monitor} returns: an async iterator of events, plus readiness and stop. */
export interface Monitor extends AsyncIterableIterator<TaskEvent> {
  /**
   * Resolves once the consumer exists: with `since: "new"`, every event stored from then on is
   * seen. Rejects when it cannot be created (iteration then throws the same error).
   */
  readonly ready: Promise<void>;
  /** Stops, like breaking out of the loop; works before iteration started too. */
  close(): Promise<void>;
  /** Counters: stream messages read, events yielded, messages skipped as undecodable. */
  readonly stats: { messages: number; events: number; skipped: number };
}

/** Delivered-but-unacked batches a durable monitor may hold. */
const DURABLE_MAX_ACK_PENDING = 256;
/** Seconds before the server redelivers a batch a durable monitor neither acked nor nak'ed. */
const DURABLE_ACK_WAIT_MS = 30_000;

/**
 * Follows the task events of the client's namespace, one event at a time, filtered.
 *
 * @example
 * ```ts
 * for await (const e of monitor(client, { types: ["task-failed"], task: "images.*" })) {
 *   console.log(e.id, e.error?.message);
 * }
 * // An offline consumer that catches up on what it missed:
 * for await (const e of monitor(client, { durable: "audit", since: "all" })) await store(e);
 * ```
 */
export function monitor(client: Client, options: MonitorOptions = {}): Monitor {
  const { since = "new", durable, follow = true, signal } = options;
  if (durable !== undefined) assertToken("durable name", durable);
  const matches = eventMatcher(options);
  const n = client.names;
  const subject = n.eventsSubject("task");
  const stats = { messages: 0, events: 0, skipped: 0 };
  const opening: Promise<MessageSource> = (async () => {
    await client.ensureTopology();
    if (durable === undefined) return orderedSource(client, n.eventsStream, subject, since);
    await ensureDurable(client, n.eventsStream, { name: durable, subject, since, maxAckPending: DURABLE_MAX_ACK_PENDING, ackWaitMs: DURABLE_ACK_WAIT_MS });
    return DurableFeed.open(client, n.eventsStream, durable, 64);
  })();
  const ready = opening.then(() => undefined);
  ready.catch(() => {});
  let started = false;
  let closed = false;

  async function* run(): AsyncGenerator<TaskEvent, void, undefined> {
    started = true;
    const source = await opening;
    const stop = () => source.interrupt();
    signal?.addEventListener("abort", stop, { once: true });
    let current: JsMsg | undefined;
    let remaining = 0;
    try {
      if (closed || signal?.aborted || (!follow && source.initialPending === 0)) return;
      for (;;) {
        current = await source.next();
        if (!current) return;
        stats.messages++;
        let events: TaskEvent[];
        try {
          events = decodeEventBatch(current.data).events.filter((e) => isTaskEvent(e) && matches(e));
        } catch {
          stats.skipped++;
          events = [];
        }
        remaining = events.length;
        for (const e of events) {
          remaining--;
          stats.events++;
          yield e;
        }
        source.ack(current);
        const pending = current.info.pending;
        current = undefined;
        if (signal?.aborted || closed || (!follow && pending === 0)) return;
      }
    } finally {
      signal?.removeEventListener("abort", stop);
      // Stopped while holding a batch: its last event was processed when the loop stopped after
      // it (ack); otherwise the batch comes again (nak), at least once.
      if (current) {
        if (remaining === 0) source.ack(current);
        else source.nak(current);
      }
      source.close();
    }
  }

  const generator = run();
  return Object.assign(generator, {
    ready,
    stats,
    async close(): Promise<void> {
      closed = true;
      const source = await opening.catch(() => undefined);
      // A loop waiting for the next batch wakes up and ends; one between events ends at return().
      source?.interrupt();
      const wasStarted = started;
      await generator.return(undefined);
      if (!wasStarted) source?.close();
    },
  });
}
