/**
 * The JetStream side of monitors and sinks: an ordered consumer for a live tail, a durable pull
 * consumer for a reader that resumes where it stopped, and a bounded buffer of its messages.
 */
import {
  AckPolicy,
  DeliverPolicy,
  jetstream,
  type ConsumerConfig,
  type ConsumerInfo,
  type ConsumerMessages,
  type JetStreamClient,
  type JsMsg,
} from "@nats-io/jetstream";
import { isNotFound, type Client } from "../client/mod.ts";

/** Where a new consumer starts: a time, only events stored from now on, or everything kept. */
export type Since = Date | "new" | "all";

const NS_PER_MS = 1_000_000;

/** The deliver policy fields of `since`. */
export function deliverFrom(since: Since): Pick<ConsumerConfig, "deliver_policy" | "opt_start_time"> {
  if (since instanceof Date) {
    if (Number.isNaN(since.getTime())) throw new TypeError("since is an invalid Date");
    return { deliver_policy: DeliverPolicy.StartTime, opt_start_time: since.toISOString() };
  }
  if (since === "all") return { deliver_policy: DeliverPolicy.All };
  if (since === "new") return { deliver_policy: DeliverPolicy.New };
  throw new TypeError(`since must be a Date, "new" or "all", not ${JSON.stringify(since)}`);
}

/** A JetStream client on the client's connection with its request timeout. */
export function jsOf(client: Client): JetStreamClient {
  return jetstream(client.nc, { timeout: client.settings.requestTimeout });
}

/** One message source: the next message, acknowledgements, and a way to stop. */
export interface MessageSource {
  /** Messages pending for this consumer when it was opened (what a non-following reader reads). */
  readonly initialPending: number;
  /** The next message, or undefined once the source was interrupted or ended. */
  next(): Promise<JsMsg | undefined>;
  ack(m: JsMsg): void;
  nak(m: JsMsg): void;
  /** Makes a waiting `next()` return undefined. */
  interrupt(): void;
  /** Stops consuming; buffered messages not handed out yet are returned to the server (durable). */
  close(): void;
}

/** An ephemeral ordered consumer of `subject` (no acks; recreated by the library after a gap). */
export async function orderedSource(client: Client, stream: string, subject: string, since: Since): Promise<MessageSource> {
  const from = deliverFrom(since);
  const consumer = await jsOf(client).consumers.get(stream, {
    filter_subjects: subject,
    deliver_policy: from.deliver_policy,
    ...(from.opt_start_time ? { opt_start_time: from.opt_start_time } : {}),
  });
  const info = await consumer.info(true);
  const messages = await consumer.consume({ max_messages: 64 });
  const iterator = messages[Symbol.asyncIterator]();
  let interrupted = false;
  return {
    initialPending: info.num_pending,
    async next() {
      if (interrupted) return undefined;
      const r = await iterator.next();
      return r.done || interrupted ? undefined : r.value;
    },
    ack() {},
    nak() {},
    interrupt() {
      interrupted = true;
      messages.stop();
    },
    close() {
      interrupted = true;
      messages.stop();
    },
  };
}

/** Settings of a durable consumer Celerity creates. */
export interface DurableSettings {
  name: string;
  subject: string;
  /** Where it starts when it does not exist yet. */
  since: Since;
  /** Delivered-but-unacked messages the server allows (the reader's buffer bound). */
  maxAckPending: number;
  ackWaitMs: number;
}

/** The durable consumer config Celerity creates for a reader. */
export function durableConfig(d: DurableSettings, start?: { seq: number }): Partial<ConsumerConfig> {
  const from = start ? (start.seq <= 1 ? { deliver_policy: DeliverPolicy.All } : { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: start.seq }) : deliverFrom(d.since);
  return {
    durable_name: d.name,
    ack_policy: AckPolicy.Explicit,
    filter_subject: d.subject,
    ack_wait: d.ackWaitMs * NS_PER_MS,
    max_ack_pending: d.maxAckPending,
    ...from,
  };
}

/** Creates durable `d.name` on `stream` unless it exists (an existing one is used as configured). */
export async function ensureDurable(client: Client, stream: string, d: DurableSettings): Promise<ConsumerInfo> {
  const jsm = await client.jsm();
  try {
    return await jsm.consumers.info(stream, d.name);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  try {
    return await jsm.consumers.add(stream, durableConfig(d));
  } catch (err) {
    // Another reader created it between our info and add: use theirs.
    if (/already (in use|exists)/i.test((err as Error).message)) return await jsm.consumers.info(stream, d.name);
    throw err;
  }
}

/**
 * Points durable `d.name` at stream sequence `nextSeq`: kept when it would deliver nothing at or
 * below `offset` out of order (it delivered nothing past `offset`), otherwise deleted and created
 * again starting at `offset + 1`. A reader whose own store is the authority on what it applied
 * (the sink) calls this at start, so messages a crashed run held unacked are read again now, in
 * order, instead of after the ack wait and after newer ones.
 */
export async function alignDurable(client: Client, stream: string, d: DurableSettings, offset: number): Promise<{ info: ConsumerInfo; recreated: boolean }> {
  const jsm = await client.jsm();
  let existing: ConsumerInfo | undefined;
  try {
    existing = await jsm.consumers.info(stream, d.name);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
  if (existing && existing.config.filter_subject === d.subject && existing.config.ack_policy === AckPolicy.Explicit && existing.delivered.stream_seq <= offset) {
    return { info: existing, recreated: false };
  }
  if (existing) await jsm.consumers.delete(stream, d.name);
  const info = await jsm.consumers.add(stream, durableConfig(d, { seq: offset + 1 }));
  return { info, recreated: existing !== undefined };
}

/**
 * A durable consumer's messages in a buffer the reader takes from. The buffer is bounded by the
 * consumer's max_ack_pending (the server delivers no more until some are acked), and every message
 * it still holds at close is nak'ed, so the next reader gets it at once rather than after ack_wait.
 */
export class DurableFeed implements MessageSource {
  readonly initialPending: number;
  readonly #queue: JsMsg[] = [];
  #wake: (() => void) | undefined;
  #messages: ConsumerMessages | undefined;
  #ended = false;
  #interrupted = false;
  #error: Error | undefined;

  private constructor(initialPending: number) {
    this.initialPending = initialPending;
  }

  /** Starts consuming durable `name` of `stream`. */
  static async open(client: Client, stream: string, name: string, maxMessages: number): Promise<DurableFeed> {
    const consumer = await jsOf(client).consumers.get(stream, name);
    const info = await consumer.info(true);
    const feed = new DurableFeed(info.num_pending);
    const messages = await consumer.consume({
      max_messages: maxMessages,
      expires: 10_000,
      callback: (m) => {
        feed.#queue.push(m);
        feed.#notify();
      },
    });
    feed.#messages = messages;
    void messages.closed().then((err) => {
      feed.#ended = true;
      if (err instanceof Error) feed.#error = err;
      feed.#notify();
    });
    return feed;
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Messages buffered now. */
  get buffered(): number {
    return this.#queue.length;
  }

  /**
   * Waits until at least one message is buffered, then returns up to `max` of them in delivery
   * order; returns [] once interrupted or ended. Throws when the consumer failed.
   */
  async take(max: number): Promise<JsMsg[]> {
    while (this.#queue.length === 0) {
      if (this.#error) throw this.#error;
      if (this.#ended || this.#interrupted) return [];
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
      });
    }
    return this.#queue.splice(0, Math.max(1, max));
  }

  async next(): Promise<JsMsg | undefined> {
    return (await this.take(1))[0];
  }

  ack(m: JsMsg): void {
    m.ack();
  }

  nak(m: JsMsg): void {
    m.nak();
  }

  interrupt(): void {
    this.#interrupted = true;
    this.#notify();
  }

  close(): void {
    this.#interrupted = true;
    this.#messages?.stop();
    for (const m of this.#queue.splice(0)) m.nak();
    this.#notify();
  }
}
