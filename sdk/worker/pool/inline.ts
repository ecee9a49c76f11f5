/**
 * The inline pool: handlers run in this thread, `size` at a time, behind the same interface as the
 * executor pools. A hard time limit cannot stop a handler here: at the limit the signal is aborted
 * and the outcome is `TimeLimitExceeded`, but the handler's promise is left to finish on its own.
 */
import { threadId } from "node:worker_threads";
import process from "node:process";
import {
  abortedOutcome,
  closedOutcome,
  POOL_ERROR,
  TaskTerminated,
  terminatedOutcome,
  TimeLimitExceeded,
  timeLimitOutcome,
} from "./errors.ts";
import { loadTasksModule, runLocal, type LocalRun } from "./execute.ts";
import { LazyClient } from "./lazy_client.ts";
import type {
  ExecutionHooks,
  ExecutionOutcome,
  ExecutionRequest,
  ExecutorInfo,
  Pool,
  PoolHandler,
  PoolOptions,
  PoolStats,
} from "./types.ts";

interface Job {
  req: ExecutionRequest;
  hooks: ExecutionHooks;
  signal: AbortSignal | undefined;
  resolve: (outcome: ExecutionOutcome) => void;
  done: Promise<ExecutionOutcome>;
  settled: boolean;
  local?: LocalRun;
  hardTimer?: ReturnType<typeof setTimeout>;
  onAbort?: () => void;
}

export class InlinePool implements Pool {
  readonly kind = "inline" as const;
  readonly #options: PoolOptions;
  readonly #handlers: ReadonlyMap<string, PoolHandler>;
  readonly #client: LazyClient;
  readonly #running = new Set<Job>();
  #queue: Job[] = [];
  #target: number;
  #closed = false;
  #closing: Promise<void> | undefined;
  #tasksRun = 0;

  private constructor(options: PoolOptions, handlers: ReadonlyMap<string, PoolHandler>) {
    this.#options = options;
    this.#handlers = handlers;
    this.#target = Math.max(1, Math.floor(options.size));
    this.#client = new LazyClient(options.connect ?? {}, options.client);
  }

  static async create(options: PoolOptions): Promise<InlinePool> {
    if (!options.handlers && !options.tasksModule) throw new TypeError(`an "inline" pool needs \`handlers\` or \`tasksModule\``);
    const handlers = options.handlers ?? (await loadTasksModule(options.tasksModule!));
    return new InlinePool(options, handlers);
  }

  get size(): number {
    return this.#target;
  }

  run(req: ExecutionRequest, hooks: ExecutionHooks, signal?: AbortSignal): Promise<ExecutionOutcome> {
    if (this.#closed) return Promise.resolve(closedOutcome(req.id, false));
    if (signal?.aborted) return Promise.resolve(abortedOutcome(signal.reason));
    let resolve!: (o: ExecutionOutcome) => void;
    const done = new Promise<ExecutionOutcome>((r) => (resolve = r));
    const job: Job = { req, hooks, signal, resolve, done, settled: false };
    if (signal) {
      job.onAbort = () => {
        if (job.settled) return;
        if (job.local) job.local.abort(signal.reason);
        else {
          this.#queue = this.#queue.filter((j) => j !== job);
          this.#finish(job, abortedOutcome(signal.reason));
        }
      };
      signal.addEventListener("abort", job.onAbort, { once: true });
    }
    this.#queue.push(job);
    this.#dispatch();
    return done;
  }

  terminate(taskId: string, reason: string): boolean {
    for (const job of this.#running) {
      if (job.req.id === taskId) {
        job.local?.abort(new TaskTerminated(taskId, reason));
        this.#finish(job, terminatedOutcome(taskId, reason, false));
        return true;
      }
    }
    const job = this.#queue.find((j) => j.req.id === taskId);
    if (!job) return false;
    this.#queue = this.#queue.filter((j) => j !== job);
    this.#finish(job, terminatedOutcome(taskId, reason, false));
    return true;
  }

  grow(n: number): void {
    if (this.#closed || !(n > 0)) return;
    this.#target += Math.floor(n);
    this.#dispatch();
  }

  shrink(n: number): void {
    if (this.#closed || !(n > 0)) return;
    this.#target = Math.max(1, this.#target - Math.floor(n));
  }

  stats(): PoolStats {
    return { size: this.#target, busy: this.#running.size, queued: this.#queue.length, tasksRun: this.#tasksRun, replaced: 0 };
  }

  executors(): ExecutorInfo[] {
    const running = [...this.#running];
    return Array.from({ length: Math.max(this.#target, running.length) }, (_, i) => {
      const job = running[i];
      return { seq: i + 1, pid: process.pid, threadId, state: job ? "busy" : "idle", ...(job ? { task: job.req.id } : {}), tasksRun: 0 };
    });
  }

  close(options: { graceMs?: number } = {}): Promise<void> {
    this.#closing ??= this.#close(options.graceMs ?? this.#options.closeGraceMs ?? 10_000);
    return this.#closing;
  }

  async #close(graceMs: number): Promise<void> {
    this.#closed = true;
    for (const job of this.#queue.splice(0)) this.#finish(job, closedOutcome(job.req.id, false));
    if (this.#running.size) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([Promise.all([...this.#running].map((j) => j.done)), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    for (const job of this.#running) {
      const reason = new Error(`the pool closed while task ${job.req.id} was running`);
      reason.name = POOL_ERROR.closed;
      job.local?.abort(reason);
      this.#finish(job, closedOutcome(job.req.id, false));
    }
    await this.#client.close();
  }

  #dispatch(): void {
    while (this.#queue.length && this.#running.size < this.#target) this.#start(this.#queue.shift()!);
  }

  #start(job: Job): void {
    const { req, hooks } = job;
    const handler = this.#handlers.get(req.task);
    if (!handler) {
      const message = `no handler for task "${req.task}" in this pool (it implements: ${[...this.#handlers.keys()].join(", ") || "nothing"})`;
      this.#finish(job, { ok: false, error: { type: POOL_ERROR.notRegistered, message, retryable: false } });
      return;
    }
    this.#running.add(job);
    job.local = runLocal(handler, req, {
      progress: (value) => {
        if (!job.settled) safely(() => hooks.progress(value));
      },
      log: (level, message, data) => {
        if (!job.settled) safely(() => hooks.log?.(level, message, data));
      },
      client: () => this.#client.get(),
    });
    const limit = req.timeLimitMs;
    if (limit !== undefined) {
      job.hardTimer = setTimeout(() => {
        job.local?.abort(new TimeLimitExceeded(req.id, limit / 1000));
        this.#finish(job, timeLimitOutcome(req.id, limit, false, "an inline handler cannot be killed, it may still be running"));
      }, limit);
    }
    void job.local.promise.then((outcome) => this.#finish(job, outcome));
  }

  #finish(job: Job, outcome: ExecutionOutcome): void {
    if (job.settled) return;
    job.settled = true;
    clearTimeout(job.hardTimer);
    if (job.onAbort) job.signal?.removeEventListener("abort", job.onAbort);
    if (this.#running.delete(job)) this.#tasksRun++;
    job.resolve(outcome);
    this.#dispatch();
  }
}

function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // Hooks must not break the pool.
  }
}
