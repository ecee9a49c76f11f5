/**
 * How many messages of one queue a worker may hold (running plus waiting for a slot): its prefetch.
 *
 * A prefetch set in settings or code is a fixed cap. Left unset, it starts at the queue's
 * concurrency and grows, up to {@link ADAPTIVE_PREFETCH_FACTOR}× concurrency, while slots turn
 * over quickly: a message held beyond the concurrency waits for a slot for about
 * `(extra / concurrency) × average slot time`, and the window keeps that wait near
 * {@link WAIT_BUDGET_MS}. Why: the pull loop refills the window about once per round trip to a
 * busy server, so a window of `concurrency` messages starves a worker whose tasks take
 * microseconds (drain, c=50, 60,000 no-op tasks, interleaved runs: prefetch 50 → 17.8–18.0k tasks/s,
 * 100 → 20.5–21.7k, 200 → 21.9–22.5k); while for tasks of seconds, every extra held message is one
 * another worker could have started (Celery's prefetch multiplier, celery#6500). Celery makes
 * users choose with `worker_prefetch_multiplier`; here the measured times choose.
 *
 * "Slot time" is from taking the slot to the handler's end: it includes a rate limiter's wait and
 * the last ms before an ETA, which hold the slot as surely as the handler does. A message that
 * waited long for a slot (the worker's slots busy with other queues, a pool shrunk) shrinks the
 * window as well. When tasks turn long after short ones anyway, the worker hands back messages
 * that waited {@link HAND_BACK_AFTER_MS} (on their first delivery only, so each costs at most one
 * more delivery; see Worker#handBackStale) and the window stays at the concurrency for
 * {@link PIN_AFTER_HAND_BACK_MS}. An idle queue (its pull expired unfilled) falls back too: credits
 * beyond the concurrency are only ever asked for in short pull requests (QueuePuller).
 */

/** An adaptive window grows to at most this many times the queue's concurrency (Celery's default multiplier). */
export const ADAPTIVE_PREFETCH_FACTOR = 4;
/** The expected wait, for a slot, of a message held beyond the concurrency. */
export const WAIT_BUDGET_MS = 5;
/** A message that waited this long for a slot counts as a slot time of that length. */
export const LONG_WAIT_MS = 10 * WAIT_BUDGET_MS;
/** A message held beyond the concurrency that waited this long goes back to the server. */
export const HAND_BACK_AFTER_MS = 1000;
/** After a hand-back the window stays at the concurrency this long. */
export const PIN_AFTER_HAND_BACK_MS = 10_000;
/** Weight of the newest slot time in the moving average. */
const SMOOTHING = 0.2;

/** The prefetch of one queue: fixed, or adaptive (see the module comment). */
export class PrefetchWindow {
  /** The queue's concurrency (or the prefetch the user set): an adaptive window never goes below it. */
  readonly base: number;
  /** Whether measured times move the window. */
  readonly adaptive: boolean;
  #limit: number;
  #averageMs: number | undefined = undefined;
  #pinnedUntil = 0;

  /** `fixed`: the prefetch the user set; undefined for an adaptive window over `concurrency`. */
  constructor(concurrency: number, fixed: number | undefined) {
    this.adaptive = fixed === undefined;
    this.base = Math.max(1, fixed ?? concurrency);
    this.#limit = this.base;
  }

  /** Messages the queue may hold now. */
  get limit(): number {
    return this.#limit;
  }

  /** The highest limit this window can reach. */
  get max(): number {
    return this.adaptive ? this.base * ADAPTIVE_PREFETCH_FACTOR : this.base;
  }

  /**
   * A task of this queue held its slot `slotMs` after waiting `waitedMs` for it (integers from
   * Date.now(): under a millisecond counts as 0, which only means "short"). Returns true when the
   * limit changed.
   */
  observe(slotMs: number, waitedMs: number, now: number): boolean {
    if (!this.adaptive) return false;
    const ms = waitedMs > LONG_WAIT_MS ? Math.max(slotMs, waitedMs) : slotMs;
    this.#averageMs = this.#averageMs === undefined ? ms : this.#averageMs + SMOOTHING * (ms - this.#averageMs);
    return this.#set(now < this.#pinnedUntil ? this.base : this.#fromAverage(this.#averageMs));
  }

  /**
   * A message waited `ms` for a slot and is handed back: the slots are held far longer than the
   * average said. The window falls back to the concurrency and stays there a while.
   */
  tooLong(ms: number, now: number): boolean {
    if (!this.adaptive) return false;
    this.#averageMs = Math.max(this.#averageMs ?? 0, ms);
    this.#pinnedUntil = now + PIN_AFTER_HAND_BACK_MS;
    return this.#set(this.base);
  }

  /** The queue ran dry (a pull expired unfilled): back to the concurrency until tasks come. */
  idle(): boolean {
    return this.adaptive && this.#set(this.base);
  }

  #fromAverage(averageMs: number): number {
    const extraPerSlot = Math.min(ADAPTIVE_PREFETCH_FACTOR - 1, WAIT_BUDGET_MS / Math.max(averageMs, 1e-3));
    return this.base + Math.floor(this.base * extraPerSlot);
  }

  #set(limit: number): boolean {
    if (limit === this.#limit) return false;
    this.#limit = limit;
    return true;
  }
}
