/**
 * Priorities 0–9 (higher first) within one queue, on nats-server 2.9: a durable consumer per
 * priority level, scanned from the highest level down with `no_wait` pull requests, with the same
 * exact credit accounting as {@link QueuePuller} (held + requested ≤ prefetch, always).
 *
 * nats-server 2.9 has neither priority groups (2.11) nor consumers with several filter subjects
 * (2.10), and on a work-queue stream two consumers' filters must not overlap; so a priority queue
 * is served by `<prefix>-p0` … `<prefix>-p9` (filter `<ns>.tasks.<queue>.<n>` each) instead of the
 * FIFO consumer `q-<queue>` (filter `<ns>.tasks.<queue>.>`). See docs/priorities.md.
 *
 * How it pulls. One request is open at a time: `{"batch": free, "no_wait": true}` to the highest
 * level that may hold messages. The server answers at once with what it has; when that is fewer
 * than `batch` it ends the request with a 408 ("Request Timeout", some delivered) or 404 ("No
 * Messages", none), and the scan goes on one level down with the credits still free. A level that
 * answered short is remembered as empty, so a busy worker asks one consumer per free credit, not
 * ten. A level becomes "maybe non-empty" again when:
 *  - a task is published on its subject: a core subscription per level (the doorbell) sees every
 *    publish; its payload is ignored, but it crosses the network once more per worker (the cost);
 *  - the fallback timer ticks (default every second): redeliveries (naks, ack-wait expiries) and
 *    tasks published while the doorbell was not subscribed make no doorbell, so every level is
 *    asked again at least this often;
 *  - the connection comes back (`reconnected()`).
 * When every level is empty the puller is idle: no request is open and none is sent until a
 * doorbell, a release or the fallback timer.
 */
import { createInbox, type Msg, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import type { ConsumerInfo, JetStreamManager } from "@nats-io/jetstream";
import { priorityConsumerName } from "../protocol/mod.ts";

/** The levels of a queue with priorities 0..9. */
export const PRIORITY_LEVELS = 10;

/** Defined with the other names of the protocol; re-exported for the puller's users. */
export { priorityConsumerName };

/** Tuning of {@link PriorityPuller}. */
export interface PriorityPullerOptions {
  stream: string;
  /** Consumers are `<consumerPrefix>-p<level>`, e.g. `q-reports-p9`. */
  consumerPrefix: string;
  /** The subject tasks of priority `level` are published to (`names.taskSubject(queue, level)`). */
  subjectOf: (level: number) => string;
  /** Number of levels, the highest priority plus one. Default 10 (priorities 0..9). */
  levels?: number;
  prefetch: number;
  /** Each delivered task message. Call `release()` once it is settled. */
  onMessage: (msg: Msg) => void;
  /** A consumer did not answer or was deleted: the owner may recreate the consumers. */
  onStalled?: (reason: string) => Promise<void>;
  /** Every level is asked again at least this often (finds redeliveries and missed doorbells). Default 1000 ms. */
  fallbackMs?: number;
  /** A `no_wait` request unanswered this long is given up (server gone, consumer missing). Default 5000 ms. */
  requestTimeoutMs?: number;
  /**
   * Subscribe to the level subjects to learn of new tasks at once (default true). Without it, each
   * scan starts from the top level again and an idle worker finds new tasks only by the fallback timer.
   */
  doorbell?: boolean;
}

/**
 * A doorbell rung shortly before an empty answer may have beaten its message into the stream (the
 * core copy is delivered before JetStream has stored the message: measured in ~1% of single
 * publishes to an idle puller): look once more after RECHECK_MS.
 */
const RING_RACE_MS = 50;
const RECHECK_MS = 10;
/** How long the inbox of an abandoned request keeps catching late deliveries. */
const STRAY_MS = 30_000;

interface Request {
  seq: number;
  level: number;
  batch: number;
  delivered: number;
  sentAt: number;
  /** The level's ring count when the request was sent. */
  rings: number;
}

interface Generation {
  inbox: string;
  sub: Subscription;
  timer?: ReturnType<typeof setTimeout>;
}

/** Pulls a queue's messages highest priority first; see the module comment. */
export class PriorityPuller {
  readonly #nc: NatsConnection;
  readonly #o: Required<Omit<PriorityPullerOptions, "onStalled">> & Pick<PriorityPullerOptions, "onStalled">;
  readonly #consumers: string[];
  /** Level may hold deliverable messages. */
  readonly #maybe: boolean[];
  /** How many times the doorbell of each level rang, and when it last did. */
  readonly #rings: number[];
  readonly #rungAt: number[];
  /** The ring count a recheck was last scheduled for (one recheck per ring). */
  readonly #recheckedAt: number[];
  readonly #doorbells: Subscription[] = [];
  readonly #strays = new Set<Generation>();
  readonly #recheck = new Map<number, ReturnType<typeof setTimeout>>();
  #gen: Generation | undefined;
  #current: Request | undefined;
  #seq = 0;
  #requested = 0;
  #held = 0;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #started = false;
  #stopped = false;
  #closed = false;
  #repairing = false;

  constructor(nc: NatsConnection, options: PriorityPullerOptions) {
    this.#nc = nc;
    this.#o = { levels: PRIORITY_LEVELS, fallbackMs: 1000, requestTimeoutMs: 5000, doorbell: true, ...options };
    const { levels, prefetch } = this.#o;
    if (!Number.isInteger(levels) || levels < 1) throw new RangeError(`levels must be a positive integer, got ${levels}`);
    if (!Number.isInteger(prefetch) || prefetch < 1) throw new RangeError(`prefetch must be a positive integer, got ${prefetch}`);
    this.#consumers = Array.from({ length: levels }, (_, l) => priorityConsumerName(this.#o.consumerPrefix, l));
    this.#maybe = new Array<boolean>(levels).fill(true);
    this.#rings = new Array<number>(levels).fill(0);
    this.#rungAt = new Array<number>(levels).fill(0);
    this.#recheckedAt = new Array<number>(levels).fill(0);
  }

  /** Messages delivered and not yet released. */
  get held(): number {
    return this.#held;
  }

  /** Starts pulling: subscribes the doorbells, then scans every level from the top. */
  start(): void {
    if (this.#started) return;
    this.#started = true;
    this.#gen = this.#newGeneration();
    if (this.#o.doorbell) {
      for (let level = 0; level < this.#o.levels; level++) {
        this.#doorbells.push(this.#nc.subscribe(this.#o.subjectOf(level), { callback: () => this.#ring(level) }));
      }
    }
    this.#ticker = setInterval(() => this.#tick(), this.#o.fallbackMs);
    this.#next();
  }

  /** A delivered message has been settled: its credit may be used for the next one. */
  release(): void {
    if (this.#held > 0) this.#held--;
    // Without doorbells nothing tells us a higher level filled up: every scan starts at the top.
    if (!this.#o.doorbell) this.#maybe.fill(true);
    this.#next();
  }

  /**
   * The connection came back: an open request may have died with the old connection (or the
   * server that held it). Give it up (its inbox still takes late deliveries within the credits),
   * check the consumers, and scan every level again.
   */
  reconnected(): void {
    if (this.#stopped || !this.#started) return;
    this.#abandon();
    void this.#repair("reconnected");
  }

  /** Stops asking for messages. Messages of the request still open keep arriving (it ends at once). */
  stop(): void {
    this.#stopped = true;
    if (this.#ticker) clearInterval(this.#ticker);
    this.#ticker = undefined;
    for (const t of this.#recheck.values()) clearTimeout(t);
    this.#recheck.clear();
  }

  /**
   * Stops asking for messages for a while (a paused queue). Requests are no_wait, so at most the
   * one open now still delivers; `resume()` asks again.
   */
  pause(): void {
    this.stop();
  }

  /** Asks again after `pause()`, scanning every level from the top. */
  resume(): void {
    if (!this.#stopped || this.#closed || !this.#started) return;
    this.#stopped = false;
    this.#maybe.fill(true);
    this.#ticker = setInterval(() => this.#tick(), this.#o.fallbackMs);
    this.#next();
  }

  /** Unsubscribes the doorbells and inboxes. Call after stop() once nothing more is expected. */
  close(): void {
    this.stop();
    this.#closed = true;
    const subs = [...this.#doorbells, ...[...this.#strays].map((g) => g.sub), ...(this.#gen ? [this.#gen.sub] : [])];
    for (const g of this.#strays) if (g.timer) clearTimeout(g.timer);
    this.#strays.clear();
    this.#doorbells.length = 0;
    this.#gen = undefined;
    if (!this.#nc.isClosed()) for (const s of subs) s.unsubscribe();
  }

  /** Sends the next request if credits are free, none is open, and some level may hold messages. */
  #next(): void {
    if (this.#stopped || this.#repairing || this.#current || !this.#gen || this.#nc.isClosed()) return;
    const free = this.#o.prefetch - this.#held - this.#requested;
    if (free <= 0) return;
    let level = this.#o.levels - 1;
    while (level >= 0 && !this.#maybe[level]) level--;
    if (level < 0) return; // idle until a doorbell, a release or the fallback timer
    const seq = ++this.#seq;
    this.#current = { seq, level, batch: free, delivered: 0, sentAt: Date.now(), rings: this.#rings[level]! };
    this.#requested = free;
    this.#nc.publish(
      `$JS.API.CONSUMER.MSG.NEXT.${this.#o.stream}.${this.#consumers[level]}`,
      JSON.stringify({ batch: free, no_wait: true }),
      { reply: `${this.#gen.inbox}.${seq}` },
    );
  }

  #newGeneration(): Generation {
    const inbox = createInbox();
    const gen: Generation = { inbox, sub: undefined as unknown as Subscription };
    gen.sub = this.#nc.subscribe(`${inbox}.*`, { callback: (_e, msg) => this.#onMsg(gen, msg) });
    return gen;
  }

  #onMsg(gen: Generation, msg: Msg): void {
    const code = msg.headers?.code ?? 0;
    const cur = this.#current;
    if (code === 0 && msg.reply) {
      // Deliveries carry the original subject, not the request's inbox; but a generation has at
      // most one request open, so a delivery here belongs to it, unless the generation was abandoned.
      if (gen !== this.#gen || !cur) return this.#stray(msg);
      cur.delivered++;
      this.#requested--;
      this.#held++;
      // A batch filled completely ends without a status message.
      const done = cur.delivered >= cur.batch;
      if (done) this.#current = undefined;
      this.#o.onMessage(msg);
      if (done) this.#next();
      return;
    }
    if (code === 100) return;
    // A status ends its request; statuses of other requests (abandoned ones) mean nothing now.
    if (gen !== this.#gen || !cur || msg.subject !== `${gen.inbox}.${cur.seq}`) {
      if (gen !== this.#gen) this.#dropStray(gen);
      return;
    }
    this.#current = undefined;
    this.#requested = 0;
    const level = cur.level;
    const description = msg.headers?.description ?? "";
    if (code === 404 || code === 408) {
      this.#maybe[level] = false;
      if (this.#rings[level]! > cur.rings) {
        // A task was published while we asked: it may have been stored after our request was served.
        this.#maybe[level] = true;
      } else if (cur.delivered === 0 && this.#rungAt[level]! >= cur.sentAt - RING_RACE_MS && this.#recheckedAt[level] !== cur.rings) {
        // Rung just before we asked, yet nothing came: the doorbell (a core delivery) may have
        // beaten the message into the stream, or another worker took it. Look once more shortly.
        this.#scheduleRecheck(level);
      }
    } else if ((code === 409 && /deleted/i.test(description)) || code === 503) {
      void this.#repair(`consumer ${this.#consumers[level]}: ${code} ${description || "no responders"}`);
      return;
    } else {
      // 409 Exceeded MaxAckPending, Leadership Change, …: leave the level until a doorbell or the fallback timer.
      this.#maybe[level] = false;
    }
    this.#next();
  }

  /** A delivery from an abandoned request: keep it if credits allow, else hand it back at once. */
  #stray(msg: Msg): void {
    if (!this.#closed && this.#o.prefetch - this.#held - this.#requested > 0) {
      this.#held++;
      this.#o.onMessage(msg);
      return;
    }
    if (msg.reply && !this.#nc.isClosed()) this.#nc.publish(msg.reply, "-NAK");
  }

  #ring(level: number): void {
    this.#rings[level]!++;
    this.#rungAt[level] = Date.now();
    if (this.#maybe[level]) return;
    this.#maybe[level] = true;
    this.#next();
  }

  #scheduleRecheck(level: number): void {
    if (this.#recheck.has(level) || this.#stopped) return;
    this.#recheckedAt[level] = this.#rings[level]!;
    const t = setTimeout(() => {
      this.#recheck.delete(level);
      this.#maybe[level] = true;
      this.#next();
    }, RECHECK_MS);
    this.#recheck.set(level, t);
  }

  #tick(): void {
    if (this.#stopped) return;
    const cur = this.#current;
    if (cur && Date.now() - cur.sentAt > this.#o.requestTimeoutMs) {
      // no_wait requests are answered at once: the server lost it or the consumer is gone.
      this.#abandon();
      void this.#repair(`no answer from consumer ${this.#consumers[cur.level]} in ${this.#o.requestTimeoutMs} ms`);
      return;
    }
    this.#maybe.fill(true);
    this.#next();
  }

  /** Gives up the open request: a new inbox for the next ones, the old one catches late deliveries. */
  #abandon(): void {
    this.#maybe.fill(true);
    if (!this.#current) return;
    this.#current = undefined;
    this.#requested = 0;
    const old = this.#gen;
    this.#gen = this.#newGeneration();
    if (old) {
      this.#strays.add(old);
      old.timer = setTimeout(() => this.#dropStray(old), STRAY_MS);
      (old.timer as { unref?: () => void }).unref?.();
    }
  }

  #dropStray(gen: Generation): void {
    if (!this.#strays.delete(gen)) return;
    if (gen.timer) clearTimeout(gen.timer);
    if (!this.#nc.isClosed()) gen.sub.unsubscribe();
  }

  async #repair(reason: string): Promise<void> {
    if (this.#repairing) return;
    this.#repairing = true;
    try {
      await this.#o.onStalled?.(reason);
    } catch {
      /* tried; the fallback timer scans again and the next failure repairs again */
    } finally {
      this.#repairing = false;
      this.#maybe.fill(true);
      this.#next();
    }
  }
}

/** A FIFO (or foreign) consumer already serves subjects of a priority queue on the work-queue stream. */
export class PriorityConsumerConflictError extends Error {
  override name = "PriorityConsumerConflictError";
  constructor(readonly stream: string, readonly consumer: string, readonly filter: string, message: string) {
    super(message);
  }
}

/** What {@link ensurePriorityConsumers} needs. */
export interface PriorityConsumersOptions {
  stream: string;
  consumerPrefix: string;
  subjectOf: (level: number) => string;
  /** Default 10. */
  levels?: number;
  /** Nanoseconds without ack or progress before the server redelivers. */
  ackWaitNs: number;
  /** Per level (the server counts each consumer separately); -1 for no limit. */
  maxAckPending: number;
}

/**
 * Creates (or updates) the durable consumer of each priority level, `<prefix>-p<n>` with filter
 * `subjectOf(n)`, explicit acks and no server-side delivery limit. Idempotent; safe when several
 * workers start at once. Throws {@link PriorityConsumerConflictError} with what to do when another
 * consumer, typically the queue's FIFO consumer `q-<queue>` (filter `<ns>.tasks.<queue>.>`),
 * already serves these subjects: a work-queue stream refuses overlapping consumers.
 */
export async function ensurePriorityConsumers(jsm: JetStreamManager, o: PriorityConsumersOptions): Promise<void> {
  const levels = o.levels ?? PRIORITY_LEVELS;
  const wanted = new Map<string, string>();
  for (let l = 0; l < levels; l++) wanted.set(priorityConsumerName(o.consumerPrefix, l), o.subjectOf(l));
  const existing = new Map<string, ConsumerInfo>();
  for await (const ci of jsm.consumers.list(o.stream)) existing.set(ci.name, ci);
  assertNoConflict(o, wanted, existing.values());
  for (const [name, filter] of wanted) {
    const ci = existing.get(name);
    if (!ci) {
      try {
        await jsm.consumers.add(o.stream, {
          durable_name: name,
          filter_subject: filter,
          ack_policy: "explicit" as never,
          ack_wait: o.ackWaitNs,
          // Celerity counts deliveries itself and dead-letters past maxDeliver.
          max_deliver: -1,
          max_ack_pending: o.maxAckPending,
          max_waiting: 512,
        });
      } catch (err) {
        const message = (err as Error).message ?? "";
        if (/already (in use|exists)/i.test(message)) continue; // another worker created it just now
        if (/not unique/i.test(message)) {
          // A FIFO consumer was created since we listed: name it.
          const now: ConsumerInfo[] = [];
          for await (const c of jsm.consumers.list(o.stream)) now.push(c);
          assertNoConflict(o, wanted, now);
        }
        throw err;
      }
      continue;
    }
    if ((ci.config.max_ack_pending ?? -1) !== o.maxAckPending || ci.config.ack_wait !== o.ackWaitNs) {
      await jsm.consumers.update(o.stream, name, { max_ack_pending: o.maxAckPending, ack_wait: o.ackWaitNs });
    }
  }
}

function assertNoConflict(o: PriorityConsumersOptions, wanted: Map<string, string>, consumers: Iterable<ConsumerInfo>): void {
  const last = wanted.size - 1;
  for (const ci of consumers) {
    const filter = ci.config.filter_subject || ">";
    const own = wanted.get(ci.name);
    if (own === filter) continue; // one of ours, as it should be
    const hit = [...wanted].find(([, subject]) => subjectsOverlap(filter, subject));
    let what: string;
    if (own !== undefined) {
      what = `consumer "${ci.name}" exists with filter "${filter}" instead of "${own}"`;
    } else if (!hit) {
      continue; // another queue's consumer
    } else if (filter.endsWith(".>") || filter === ">") {
      what = `the FIFO consumer "${ci.name}" (filter "${filter}") already serves this queue's subjects in arrival order`;
    } else {
      what = `consumer "${ci.name}" (filter "${filter}") already serves "${hit[1]}", the subject of "${hit[0]}"`;
    }
    throw new PriorityConsumerConflictError(
      o.stream,
      ci.name,
      filter,
      `cannot create the priority consumers ${priorityConsumerName(o.consumerPrefix, 0)}…${priorityConsumerName(o.consumerPrefix, last)} ` +
        `on stream "${o.stream}": ${what}, and a work-queue stream refuses consumers whose filters overlap. ` +
        `To turn priorities on for this queue: (1) stop every worker of the queue that runs without priorities ` +
        `(a warm shutdown lets them finish and ack the tasks they hold: that drains the old consumer); ` +
        `(2) delete the old consumer: \`nats consumer rm ${o.stream} ${ci.name}\` ` +
        `(or jsm.consumers.delete("${o.stream}", "${ci.name}")); the tasks waiting in the queue stay in the stream ` +
        `and the priority consumers deliver them, highest priority first; ` +
        `(3) start the workers with priorities on. Or keep priorities off for this queue.`,
    );
  }
}

/** True when some subject matches both filters (`*` one token, `>` one or more trailing tokens). */
export function subjectsOverlap(a: string, b: string): boolean {
  const x = a.split(".");
  const y = b.split(".");
  for (let i = 0; ; i++) {
    const s = x[i];
    const t = y[i];
    if (s === undefined || t === undefined) return s === undefined && t === undefined;
    if (s === ">" || t === ">") return true;
    if (s !== t && s !== "*" && t !== "*") return false;
  }
}
