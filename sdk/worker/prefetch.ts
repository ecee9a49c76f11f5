/**
 * How many messages of one queue a worker may hold (running plus waiting for a slot): its prefetch.
 *
 * A prefetch set in settings or code is a fixed cap. Left unset, it starts at the queue's
 * concurrency and grows, up to {@link ADAPTIVE_PREFETCH_FACTOR}× concurrency, while the handlers
 * are short: a message held beyond the concurrency waits for a slot for about
 * `(extra / concurrency) × average run time`, and the window keeps that wait under
 * {@link WAIT_BUDGET_MS}. Why: the pull loop refills the window about once per round trip to a busy
 * server, so a window of `concurrency` messages starves a worker whose tasks take microseconds
 * (drain, c=50, 60,000 no-op tasks, interleaved runs: prefetch 50 → 17.8–18.0k tasks/s, 100 → 20.5–21.7k,
 * 200 → 21.9–22.5k); while for tasks of seconds, every extra held message is one another worker
 * could have started (Celery's prefetch multiplier, celery#6500). Celery makes users choose
 * between the two with `worker_prefetch_multiplier`; here the run times choose.
 *
 * Tasks may turn long after a run of short ones: the worker hands back messages that waited for a
 * slot longer than {@link HAND_BACK_AFTER_MS} beyond the concurrency (see Worker#sweep) and the
 * window falls back to the concurrency.
 */

/** An adaptive window grows to at most this many times the queue's concurrency (Celery's default multiplier). */
export const ADAPTIVE_PREFETCH_FACTOR = 4;
/** The expected wait, for a slot, of a message held beyond the concurrency. */
export const WAIT_BUDGET_MS = 5;
/** A message held beyond the concurrency that waited this long goes back to the server. */
export const HAND_BACK_AFTER_MS = 1000;
/** Weight of the newest run time in the moving average. */
const SMOOTHING = 0.2;

/** The prefetch of one queue: fixed, or adaptive (see the module comment). */
export class PrefetchWindow {
  /** The queue's concurrency: an adaptive window never goes below it. */
  readonly base: number;
  /** Whether run times move the window. */
  readonly adaptive: boolean;
  #limit: number;
  #averageMs: number | undefined = undefined;

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
   * A handler of this queue ran for `ms` (an integer from Date.now(): tasks under a millisecond
   * count as 0, which only means "short"). Returns true when the limit changed.
   */
  observe(ms: number): boolean {
    if (!this.adaptive) return false;
    this.#averageMs = this.#averageMs === undefined ? ms : this.#averageMs + SMOOTHING * (ms - this.#averageMs);
    return this.#set(this.#fromAverage(this.#averageMs));
  }

  /**
   * A message waited `ms` for a slot: the handlers run far longer than the average said. The
   * window falls back to the concurrency until short runs raise it again.
   */
  tooLong(ms: number): boolean {
    if (!this.adaptive) return false;
    this.#averageMs = Math.max(this.#averageMs ?? 0, ms);
    return this.#set(this.base);
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
