/**
 * Acknowledged JetStream publishing without a promise timer per message.
 *
 * `js.publish()` creates a request (an inbox subscription entry and a timer) per message and
 * tops out near 17k msgs/s here; publishing with a reply subject on ONE wildcard inbox and matching
 * PubAcks there reached 110k/s (shared/environment.md). Timeouts are found by one sweep timer.
 * A publish that times out or meets "no responders" is retried with the same Nats-Msg-Id, so
 * the server drops the copy if the first one was in fact stored.
 */
import { createInbox, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import { ConnectionClosedError, PublishError } from "../protocol/mod.ts";
import { publishFrame } from "../transport/mod.ts";
import { isPermanentTopologyError } from "./topology.ts";
import { parsePubAck } from "./wire.ts";

/** The server's acknowledgement of a stored message. */
export interface PubAck {
  stream: string;
  seq: number;
  /** True when the server recognised the Nats-Msg-Id and did not store the message again. */
  duplicate: boolean;
}

/** Tuning of {@link AckedPublisher}. */
export interface PublisherOptions {
  /** How long to wait for one acknowledgement before retrying. */
  ackTimeoutMs?: number;
  /** Give up after this long in total (then the promise rejects with PublishError). */
  deadlineMs?: number;
  /**
   * Called when the server says no stream listens on the subject (503). Returning true means the
   * caller created the topology and the publish should be retried at once.
   */
  onNoStream?: (subject: string) => Promise<boolean>;
}

interface Pending {
  subject: string;
  data: Uint8Array;
  headers: MsgHdrs | undefined;
  /** What the promise resolves with, made from the PubAck; undefined: the PubAck itself. */
  stored: ((ack: PubAck) => unknown) | undefined;
  // deno-lint-ignore no-explicit-any
  resolve: (value: any) => void;
  reject: (err: Error) => void;
  sentAt: number;
  firstSentAt: number;
  attempts: number;
  /** The topology repair after a 503 was tried for this message. */
  repairedNoStream: boolean;
  /** The topology repair after an unanswered publish was tried for this message. */
  repairedSilence: boolean;
}

/** Publishes to JetStream subjects and resolves with the PubAck; see the module comment. */
export class AckedPublisher {
  readonly #nc: NatsConnection;
  readonly #prefix: string;
  readonly #sub: Subscription;
  readonly #pending = new Map<string, Pending>();
  /** Messages waiting to be sent again (a topology repair or a back-off): in flight all the same. */
  readonly #parked = new Set<Pending>();
  /** True once any PubAck came back: the topology existed then, so a silence is only a silence. */
  #everAcked = false;
  readonly #ackTimeoutMs: number;
  readonly #deadlineMs: number;
  readonly #onNoStream: PublisherOptions["onNoStream"];
  #seq = 0;
  #timer: ReturnType<typeof setInterval> | undefined;
  #closed = false;

  constructor(nc: NatsConnection, options: PublisherOptions = {}) {
    this.#nc = nc;
    this.#ackTimeoutMs = options.ackTimeoutMs ?? 5000;
    this.#deadlineMs = options.deadlineMs ?? 60_000;
    this.#onNoStream = options.onNoStream;
    this.#prefix = createInbox();
    this.#sub = nc.subscribe(`${this.#prefix}.*`, {
      callback: (_err, msg) => this.#onAck(msg.subject.slice(this.#prefix.length + 1), msg.data, msg.headers?.code ?? 0),
    });
  }

  /** Messages published and not yet acknowledged. */
  get inFlight(): number {
    return this.#pending.size + this.#parked.size;
  }

  /** Publishes `data` to `subject` and resolves when JetStream has stored it. */
  publish(subject: string, data: Uint8Array, headers?: MsgHdrs): Promise<PubAck> {
    return this.publishThen(subject, data, headers, undefined);
  }

  /**
   * As {@link publish}, but resolves with what `stored` returns for the PubAck (rejects if it
   * throws): one promise per message where `publish().then(stored)` makes two.
   */
  publishThen<T>(subject: string, data: Uint8Array, headers: MsgHdrs | undefined, stored: ((ack: PubAck) => T) | undefined): Promise<T> {
    if (this.#closed || this.#nc.isClosed()) return Promise.reject(new ConnectionClosedError("cannot publish: the connection is closed"));
    return new Promise<T>((resolve, reject) => {
      const now = Date.now();
      const entry: Pending = { subject, data, headers, stored, resolve, reject, sentAt: now, firstSentAt: now, attempts: 0, repairedNoStream: false, repairedSilence: false };
      this.#send(entry);
    });
  }

  #send(entry: Pending): void {
    const key = (++this.#seq).toString(36);
    entry.attempts++;
    entry.sentAt = Date.now();
    this.#pending.set(key, entry);
    // Also for a message sent again after a repair: the sweep may have stopped meanwhile.
    if (this.#timer === undefined && !this.#closed) this.#startSweep();
    try {
      publishFrame(this.#nc, entry.subject, entry.data, `${this.#prefix}.${key}`, entry.headers);
    } catch (err) {
      // Publishing while reconnecting is buffered by nats.js; a throw here means closed or invalid.
      this.#pending.delete(key);
      entry.reject(new PublishError(`publish to ${entry.subject} failed: ${(err as Error).message}`, { cause: err }));
    }
  }

  #onAck(key: string, data: Uint8Array, code: number): void {
    const entry = this.#pending.get(key);
    if (!entry) return; // a late ack of an attempt we already retried
    this.#pending.delete(key);
    if (code === 503) {
      void this.#repairAndRetry(entry, "no-stream");
      return;
    }
    this.#everAcked = true;
    const ack = parsePubAck(data);
    if (ack === undefined) {
      entry.reject(new PublishError(`unreadable acknowledgement for ${entry.subject} (status ${code})`));
      return;
    }
    if (ack.error) {
      entry.reject(new PublishError(`server refused the message on ${entry.subject}: ${ack.error.description ?? "error"} (code ${ack.error.code ?? "?"})`));
      return;
    }
    if (entry.stored === undefined) {
      entry.resolve(ack);
      return;
    }
    let value: unknown;
    try {
      value = entry.stored(ack);
    } catch (err) {
      entry.reject(err as Error);
      return;
    }
    entry.resolve(value);
  }

  /**
   * Makes sure of the topology (once per message and cause, shared by the messages that fail
   * together), then sends the message again.
   *
   * - `no-stream`: the server answered 503, no stream listens. When nothing was created (a cluster
   *   electing a leader refuses publishes for a few seconds), the resend backs off.
   * - `silence`: no answer at all, while no PubAck ever came back on this connection. nats-server
   *   hands its 503 to ONE subscription of the connection that matches our inbox, which can be the
   *   application's (a `>` or `_INBOX.>` tap), so the silence may mean a missing stream too.
   *   Resent at once: the sweep already waited a whole ack timeout.
   */
  async #repairAndRetry(entry: Pending, cause: "no-stream" | "silence"): Promise<void> {
    if (Date.now() - entry.firstSentAt > this.#deadlineMs) {
      entry.reject(new PublishError(`no stream accepted ${entry.subject} within ${this.#deadlineMs} ms (no responders): is the topology created and the server's JetStream up?`));
      return;
    }
    this.#parked.add(entry);
    let created = false;
    const tried = cause === "silence" ? entry.repairedSilence : entry.repairedNoStream;
    if (this.#onNoStream && !tried) {
      if (cause === "silence") entry.repairedSilence = true;
      else entry.repairedNoStream = true;
      try {
        created = await this.#onNoStream(entry.subject);
      } catch (err) {
        // JetStream off, subjects taken by another stream, account limits: no resend will change
        // that, so say it now rather than after the deadline.
        if (isPermanentTopologyError(err)) {
          this.#parked.delete(entry);
          entry.reject(new PublishError(`cannot store ${entry.subject}: ${(err as Error).message}`, { cause: err }));
          return;
        }
        created = false;
      }
    }
    const delay = created || cause === "silence" ? 0 : Math.min(1000, 50 * 2 ** Math.min(entry.attempts, 5));
    setTimeout(() => this.#resend(entry), delay);
  }

  /** Sends a parked message again, unless close() has rejected it meanwhile. */
  #resend(entry: Pending): void {
    if (!this.#parked.delete(entry)) return;
    if (this.#closed) entry.reject(new ConnectionClosedError("publisher closed before the message was stored"));
    else this.#send(entry);
  }

  #startSweep(): void {
    this.#timer = setInterval(() => this.#sweep(), Math.max(50, Math.min(500, this.#ackTimeoutMs / 4)));
    // A publisher alone must not keep a script alive.
    (this.#timer as { unref?: () => void }).unref?.();
  }

  #sweep(): void {
    const now = Date.now();
    for (const [key, entry] of this.#pending) {
      if (now - entry.sentAt < this.#ackTimeoutMs) continue;
      this.#pending.delete(key);
      if (now - entry.firstSentAt >= this.#deadlineMs || this.#closed) {
        entry.reject(new PublishError(`no acknowledgement for ${entry.subject} after ${entry.attempts} attempts in ${now - entry.firstSentAt} ms: the message may or may not be stored; sending it again with the same id is safe`));
      } else if (this.#onNoStream && !this.#everAcked && !entry.repairedSilence) {
        void this.#repairAndRetry(entry, "silence");
      } else {
        this.#send(entry);
      }
    }
    if (this.#pending.size === 0 && this.#timer !== undefined) {
      clearInterval(this.#timer);
      this.#timer = undefined;
    }
  }

  /** Waits until every publish has been acknowledged or has failed. */
  async settle(): Promise<void> {
    while (this.inFlight > 0 && !this.#nc.isClosed()) {
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** Stops accepting publishes, rejects what is still pending, and unsubscribes. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#timer !== undefined) clearInterval(this.#timer);
    for (const entry of this.#pending.values()) entry.reject(new ConnectionClosedError("publisher closed before the message was acknowledged"));
    this.#pending.clear();
    for (const entry of this.#parked) entry.reject(new ConnectionClosedError("publisher closed before the message was stored"));
    this.#parked.clear();
    if (!this.#nc.isClosed()) this.#sub.unsubscribe();
  }
}
