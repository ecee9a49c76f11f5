/**
 * Rate limits per task type: `"100/s"`, `"10/m"`, `"2/h"`.
 *
 * Per worker (Celery's `rate_limit`): a token bucket in this worker. Cluster-wide: a fixed-window
 * counter per task in the rates KV bucket, incremented with compare-and-set
 * (`Nats-Expected-Last-Subject-Sequence`), so all workers together start at most N per window.
 * A task waiting for its turn keeps its slot and its message (heartbeats keep it from being
 * redelivered); it never spins.
 */
import { headers as natsHeaders, type NatsConnection } from "@nats-io/nats-core";
import type { JetStreamManager } from "@nats-io/jetstream";
import { ProtocolError } from "../protocol/mod.ts";

/** A parsed rate: `count` per `periodMs`. */
export interface Rate {
  count: number;
  periodMs: number;
}

const UNITS: Record<string, number> = { s: 1000, m: 60_000, h: 3_600_000 };

/** Parses `"100/s"`, `"10/m"`, `"2/h"` (also `"1.5/s"`); throws a ProtocolError naming the value. */
export function parseRate(text: string): Rate {
  const m = /^\s*(\d+(?:\.\d+)?)\s*\/\s*([smh])\s*$/.exec(text);
  if (!m || Number(m[1]) <= 0) throw new ProtocolError(`rate limit ${JSON.stringify(text)} is invalid: use "<count>/<s|m|h>", e.g. "100/s" or "10/m"`);
  return { count: Number(m[1]), periodMs: UNITS[m[2]!]! };
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal?.addEventListener("abort", () => {
      clearTimeout(t);
      resolve();
    }, { once: true });
  });

/** A token bucket: `count` tokens refilled evenly over `periodMs`, at most `count` stored. */
export class TokenBucket {
  #tokens: number;
  #last = Date.now();
  constructor(public rate: Rate) {
    this.#tokens = rate.count;
  }

  /** Milliseconds until a token is free (0 when one is), taking it when free. */
  take(now = Date.now()): number {
    const perMs = this.rate.count / this.rate.periodMs;
    this.#tokens = Math.min(this.rate.count, this.#tokens + (now - this.#last) * perMs);
    this.#last = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return 0;
    }
    return Math.ceil((1 - this.#tokens) / perMs);
  }
}

/** Per-worker and cluster-wide limits, by task name. */
export class RateLimiter {
  readonly #local = new Map<string, TokenBucket>();
  readonly #global = new Map<string, Rate>();

  constructor(
    private readonly nc: NatsConnection,
    private readonly jsm: () => Promise<JetStreamManager>,
    private readonly bucket: string,
  ) {}

  /** Sets (or with undefined, removes) this worker's limit for `task`. */
  setLocal(task: string, rate: string | undefined): void {
    if (rate === undefined) this.#local.delete(task);
    else this.#local.set(task, new TokenBucket(parseRate(rate)));
  }

  /** Sets (or removes) the cluster-wide limit for `task`. */
  setGlobal(task: string, rate: string | undefined): void {
    if (rate === undefined) this.#global.delete(task);
    else this.#global.set(task, parseRate(rate));
  }

  /** Whether `task` has any limit (cheap: checked for every task). */
  has(task: string): boolean {
    return this.#local.has(task) || this.#global.has(task);
  }

  /** The current limits, for inspect. */
  limits(): Record<string, { perWorker?: string; global?: string }> {
    const out: Record<string, { perWorker?: string; global?: string }> = {};
    const fmt = (r: Rate) => `${r.count}/${Object.entries(UNITS).find(([, ms]) => ms === r.periodMs)?.[0] ?? `${r.periodMs}ms`}`;
    for (const [t, b] of this.#local) (out[t] ??= {}).perWorker = fmt(b.rate);
    for (const [t, r] of this.#global) (out[t] ??= {}).global = fmt(r);
    return out;
  }

  /** Resolves when `task` may start under both limits (or when `signal` aborts). */
  async acquire(task: string, signal?: AbortSignal): Promise<void> {
    const local = this.#local.get(task);
    if (local) {
      for (let wait = local.take(); wait > 0 && !signal?.aborted; wait = local.take()) await sleep(wait, signal);
    }
    const global = this.#global.get(task);
    if (global) await this.#acquireGlobal(task, global, signal);
  }

  async #acquireGlobal(task: string, rate: Rate, signal?: AbortSignal): Promise<void> {
    const jsm = await this.jsm();
    const stream = `KV_${this.bucket}`;
    const key = task.replace(/[^A-Za-z0-9_=.-]/g, "_");
    while (!signal?.aborted) {
      const now = Date.now();
      const window = Math.floor(now / rate.periodMs);
      const subject = `$KV.${this.bucket}.${key}.${window}`;
      let count = 0;
      let seq = 0;
      try {
        const m = await jsm.streams.getMessage(stream, { last_by_subj: subject });
        if (m) {
          count = Number(new TextDecoder().decode(m.data)) || 0;
          seq = m.seq;
        }
      } catch {
        // No entry yet: this is the window's first start.
      }
      if (count >= rate.count) {
        // Full: wait for the next window (with jitter, so workers do not stampede).
        await sleep((window + 1) * rate.periodMs - now + Math.random() * 20, signal);
        continue;
      }
      const h = natsHeaders();
      h.set("Nats-Expected-Last-Subject-Sequence", String(seq));
      try {
        const reply = await this.nc.request(subject, new TextEncoder().encode(String(count + 1)), { timeout: 5000, headers: h });
        const ack = JSON.parse(new TextDecoder().decode(reply.data)) as { error?: { description?: string } };
        if (!ack.error) return;
        // Someone else counted first (wrong last sequence): read again.
      } catch {
        await sleep(50, signal);
      }
    }
  }
}
