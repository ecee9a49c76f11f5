/**
 * A pull loop over one durable consumer with exact credit accounting: the worker never holds more
 * than `prefetch` messages (delivered and not yet finished, plus requested and not yet delivered).
 *
 * nats.js's `consume()` re-pulls as soon as its buffer is read, not when work is finished, so a
 * worker with prefetch 1 would still hold two messages (the complaint of celery#6500). This loop
 * returns a credit only when its owner calls `release()`: the worker does so when the task's
 * message is settled (acked, nak'd or dead-lettered), or earlier, once its handler has finished and
 * the outcome is being stored (bounded; see Worker#handOver and docs/protocol.md §6.1).
 */
import { createInbox, type Msg, type NatsConnection, type Subscription } from "@nats-io/nats-core";

/** How long a pull request lives while it asks for credits beyond the base prefetch. */
export const SHORT_EXPIRES_MS = 2000;

/** Tuning of {@link QueuePuller}. */
export interface PullerOptions {
  stream: string;
  consumer: string;
  prefetch: number;
  /** Ask the server for a heartbeat this often while a pull waits; missing two means the pull is gone. */
  heartbeatMs?: number;
  /** How long one pull request waits on the server. */
  expiresMs?: number;
  /** Each delivered task message. Call `release()` once it is settled. */
  onMessage: (msg: Msg) => void;
  /** A pull request expired unfilled: the queue ran dry (an adaptive prefetch falls back then). */
  onIdle?: () => void;
  /** The pulls went silent (server restart, consumer deleted): the owner may recreate the consumer. */
  onStalled?: (reason: string) => Promise<void>;
}

/** Pulls messages from one consumer; see the module comment. */
export class QueuePuller {
  readonly #nc: NatsConnection;
  readonly #o: Required<Omit<PullerOptions, "onStalled" | "onIdle">> & Pick<PullerOptions, "onStalled" | "onIdle">;
  /** The base prefetch (an adaptive window's floor); credits beyond it are asked for in short requests. */
  #base: number;
  readonly #inbox = createInbox();
  #sub: Subscription | undefined;
  #requested = 0;
  #held = 0;
  #lastSeen = Date.now();
  #timer: ReturnType<typeof setInterval> | undefined;
  #stopped = false;
  #repairing = false;

  constructor(nc: NatsConnection, options: PullerOptions) {
    this.#nc = nc;
    this.#o = { heartbeatMs: 5000, expiresMs: 30_000, ...options };
    this.#base = options.prefetch;
  }

  /** Messages delivered and not yet released. */
  get held(): number {
    return this.#held;
  }

  /** Starts pulling. */
  start(): void {
    this.#sub = this.#nc.subscribe(this.#inbox, { callback: (_e, msg) => this.#onMsg(msg) });
    this.#timer = setInterval(() => this.#checkHeartbeat(), this.#o.heartbeatMs);
    this.#pull();
  }

  /**
   * Changes how many messages may be held (an adaptive prefetch); a larger window pulls at once.
   * A smaller one cannot take back credits already asked for: while the window is above `base`,
   * requests expire after {@link SHORT_EXPIRES_MS}, so stale credits lapse within that.
   */
  setPrefetch(prefetch: number, base = this.#base): void {
    const grew = prefetch > this.#o.prefetch;
    this.#o.prefetch = prefetch;
    this.#base = base;
    if (grew) this.#pull();
  }

  /** A delivered message has been settled: its credit may be used for the next one. */
  release(): void {
    this.#held--;
    this.#pull();
  }

  /**
   * The connection came back: pull requests die with the old connection (or the server that held
   * them), so forget them and ask again now instead of waiting for missed heartbeats.
   */
  reconnected(): void {
    if (this.#stopped) return;
    this.#requested = 0;
    void this.#repair("reconnected");
  }

  /**
   * Stops asking for messages for a while (a paused queue); `resume()` asks again. The inbox is
   * unsubscribed too: the server drops pull requests whose reply subject has no interest, so
   * messages handed back are not delivered straight back here (each such bounce would count as a
   * delivery toward maxDeliver).
   */
  pause(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    if (this.#sub && !this.#nc.isClosed()) this.#sub.unsubscribe();
    this.#sub = undefined;
    this.#requested = 0;
  }

  /** Asks for messages again after `pause()`. Pull requests of before the pause may have expired. */
  resume(): void {
    if (!this.#stopped) return;
    this.#stopped = false;
    this.#requested = 0;
    this.#lastSeen = Date.now();
    this.#sub ??= this.#nc.subscribe(this.#inbox, { callback: (_e, msg) => this.#onMsg(msg) });
    this.#timer = setInterval(() => this.#checkHeartbeat(), this.#o.heartbeatMs);
    this.#pull();
  }

  /** Stops asking for messages. Messages of pulls still open keep arriving until they expire. */
  stop(): void {
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
  }

  /** Stops and unsubscribes the inbox, so the server drops our open pull requests. */
  close(): void {
    this.stop();
    if (this.#sub && !this.#nc.isClosed()) this.#sub.unsubscribe();
    this.#sub = undefined;
  }

  #pull(): void {
    if (this.#stopped || this.#nc.isClosed()) return;
    const free = this.#o.prefetch - this.#held - this.#requested;
    if (free <= 0) return;
    // Batch small credits while a pull is already open, so a busy worker sends few requests.
    if (this.#requested > 0 && free < Math.max(1, Math.floor(this.#o.prefetch / 4))) return;
    this.#requested += free;
    const short = this.#o.prefetch > this.#base;
    const expiresMs = short ? Math.min(SHORT_EXPIRES_MS, this.#o.expiresMs) : this.#o.expiresMs;
    const heartbeatMs = Math.min(this.#o.heartbeatMs, expiresMs / 2);
    this.#nc.publish(
      `$JS.API.CONSUMER.MSG.NEXT.${this.#o.stream}.${this.#o.consumer}`,
      JSON.stringify({ batch: free, expires: expiresMs * 1e6, idle_heartbeat: heartbeatMs * 1e6 }),
      { reply: this.#inbox },
    );
  }

  #onMsg(msg: Msg): void {
    this.#lastSeen = Date.now();
    // A delivered message carries its ack subject, a status message (100, 404, 408, 409) none:
    // looking at the reply first spares decoding the headers of every task message.
    const reply = msg.reply ?? "";
    if (reply.startsWith("$JS.ACK.") || (reply && (msg.headers?.code ?? 0) === 0)) {
      this.#requested = Math.max(0, this.#requested - 1);
      this.#held++;
      this.#o.onMessage(msg);
      return;
    }
    const code = msg.headers?.code ?? 0;
    if (code === 100) return; // idle heartbeat
    // 404/408: the pull ended with N messages unfilled. 409: ended for another reason (consumer
    // deleted, leadership change, limits): the count header says what was not delivered.
    const pending = Number(msg.headers?.get("Nats-Pending-Messages") ?? NaN);
    this.#requested = Number.isFinite(pending) ? Math.max(0, this.#requested - pending) : 0;
    if (code === 409 && /deleted/i.test(msg.headers?.description ?? "")) {
      this.#requested = 0;
      void this.#repair("consumer deleted");
      return;
    }
    if (code === 408) this.#o.onIdle?.();
    this.#pull();
  }

  #checkHeartbeat(): void {
    if (this.#stopped || this.#requested === 0) return;
    if (Date.now() - this.#lastSeen > 2 * this.#o.heartbeatMs + 1000) {
      // The server forgot our pulls (restart, lost connection): ask again.
      this.#requested = 0;
      void this.#repair("missed heartbeats");
    }
  }

  async #repair(reason: string): Promise<void> {
    if (this.#repairing) return;
    this.#repairing = true;
    try {
      await this.#o.onStalled?.(reason);
    } catch {
      /* tried; the next heartbeat check tries again */
    } finally {
      this.#repairing = false;
      this.#lastSeen = Date.now();
      this.#pull();
    }
  }
}
