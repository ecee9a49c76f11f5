/**
 * The threads and processes pools: a set of executors, each running one execution at a time, a FIFO
 * queue in front of them, hard time limits that kill, and automatic replacement of executors that
 * were killed, died, or are recycled (max tasks / max memory).
 */
import process from "node:process";
import {
  abortedOutcome,
  closedOutcome,
  diedOutcome,
  POOL_ERROR,
  reasonData,
  terminatedOutcome,
  timeLimitOutcome,
} from "./errors.ts";
import {
  defaultChildEntry,
  inheritedExecArgv,
  resolveTsxApi,
  spawnProcess,
  spawnThread,
  usesTsx,
  type Channel,
  type ExitInfo,
} from "./executors.ts";
import { moduleUrl } from "./execute.ts";
import type { FromExecutor } from "./messages.ts";
import type {
  ExecutionHooks,
  ExecutionOutcome,
  ExecutionRequest,
  ExecutorInfo,
  Pool,
  PoolLog,
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
  executor?: Executor;
  hardTimer?: ReturnType<typeof setTimeout>;
  onAbort?: () => void;
}

interface Executor {
  seq: number;
  channel: Channel;
  state: "starting" | "idle" | "busy" | "retiring" | "dead";
  pid: number;
  threadId: number;
  job?: Job;
  tasksRun: number;
  /** Shrunk while busy: retire after the current job. */
  retireAfterJob?: boolean;
  /** The uncaught error the executor reported before dying. */
  fatal?: string;
  starting?: { resolve: () => void; reject: (err: Error) => void; timer: ReturnType<typeof setTimeout> };
  exitTimer?: ReturnType<typeof setTimeout>;
}

const RETIRE_KILL_AFTER_MS = 3000;

export class ExecutorPool implements Pool {
  readonly kind: "threads" | "processes";
  readonly #options: PoolOptions;
  readonly #tasksModule: string;
  readonly #entry: string;
  readonly #execArgv: string[] | undefined;
  readonly #tsx: string | undefined;
  readonly #log: PoolLog;
  readonly #connect: Record<string, unknown> | undefined;
  readonly #executors = new Set<Executor>();
  #queue: Job[] = [];
  #target: number;
  #closed = false;
  #closing: Promise<void> | undefined;
  #seq = 0;
  #tasksRun = 0;
  #replaced = 0;
  #spawnFailures = 0;
  #respawnTimer: ReturnType<typeof setTimeout> | undefined;
  readonly #onProcessExit = () => {
    // The worker is exiting without close(): do not leave children behind.
    for (const ex of this.#executors) ex.channel.kill();
  };

  private constructor(options: PoolOptions & { kind: "threads" | "processes" }) {
    if (!options.tasksModule) throw new TypeError(`a "${options.kind}" pool needs \`tasksModule\`: the path of a module whose default export registers the handlers`);
    this.kind = options.kind;
    this.#options = options;
    this.#tasksModule = moduleUrl(options.tasksModule);
    this.#entry = options.childEntry ? moduleUrl(options.childEntry) : defaultChildEntry();
    this.#target = Math.max(1, Math.floor(options.size));
    this.#log = options.log ?? defaultLog;
    if (options.connect) {
      // An open connection cannot cross to an executor: each executor opens its own.
      const { connection: _connection, client: _client, ...connect } = options.connect;
      this.#connect = connect;
    }
    if (this.kind === "processes") {
      this.#execArgv = options.execArgv ?? inheritedExecArgv();
      this.#tsx = undefined;
    } else {
      this.#execArgv = options.execArgv;
      this.#tsx = usesTsx(options.execArgv ?? process.execArgv) ? resolveTsxApi() : undefined;
    }
  }

  /** Starts `size` executors and resolves once all loaded the tasks module (rejects if one could not). */
  static async create(options: PoolOptions & { kind: "threads" | "processes" }): Promise<ExecutorPool> {
    const pool = new ExecutorPool(options);
    const results = await Promise.allSettled(Array.from({ length: pool.#target }, () => pool.#spawn()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) {
      await pool.close({ graceMs: 0 });
      throw failed.reason;
    }
    process.on("exit", pool.#onProcessExit);
    return pool;
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
        if (!job.executor) {
          this.#queue = this.#queue.filter((j) => j !== job);
          this.#finish(job, abortedOutcome(signal.reason));
        } else {
          try {
            job.executor.channel.send({ type: "abort", id: req.id, reason: reasonData(signal.reason) });
          } catch {
            // The executor is gone: its exit settles the job.
          }
        }
      };
      signal.addEventListener("abort", job.onAbort, { once: true });
    }
    this.#queue.push(job);
    this.#dispatch();
    this.#failQueuedIfHopeless();
    return done;
  }

  terminate(taskId: string, reason: string): boolean {
    for (const ex of this.#executors) {
      if (ex.state === "busy" && ex.job?.req.id === taskId) {
        this.#kill(ex, terminatedOutcome(taskId, reason, true), `terminated task ${taskId}: ${reason}`);
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
    this.#replenish();
  }

  shrink(n: number): void {
    if (this.#closed || !(n > 0)) return;
    this.#target = Math.max(1, this.#target - Math.floor(n));
    let excess = this.#live().length - this.#target;
    const order = ["starting", "idle", "busy"] as const;
    for (const state of order) {
      for (const ex of this.#live()) {
        if (excess <= 0) return;
        if (ex.state !== state) continue;
        if (state === "busy") ex.retireAfterJob = true;
        else if (state === "starting") this.#kill(ex, undefined, "pool shrunk");
        else this.#retire(ex);
        excess--;
      }
    }
  }

  stats(): PoolStats {
    let busy = 0;
    for (const ex of this.#executors) if (ex.state === "busy") busy++;
    return { size: this.#target, busy, queued: this.#queue.length, tasksRun: this.#tasksRun, replaced: this.#replaced };
  }

  executors(): ExecutorInfo[] {
    return [...this.#executors]
      .filter((ex) => ex.state !== "dead")
      .map((ex) => ({
        seq: ex.seq,
        pid: ex.pid,
        threadId: ex.threadId,
        state: ex.retireAfterJob ? "retiring" : (ex.state as ExecutorInfo["state"]),
        ...(ex.job ? { task: ex.job.req.id } : {}),
        tasksRun: ex.tasksRun,
      }));
  }

  close(options: { graceMs?: number } = {}): Promise<void> {
    this.#closing ??= this.#close(options.graceMs ?? this.#options.closeGraceMs ?? 10_000);
    return this.#closing;
  }

  async #close(graceMs: number): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#respawnTimer);
    for (const job of this.#queue.splice(0)) this.#finish(job, closedOutcome(job.req.id, false));
    for (const ex of this.#executors) {
      ex.channel.ref();
      if (ex.state === "idle") this.#retire(ex);
      else if (ex.state === "starting") this.#kill(ex, undefined, "closing");
    }
    const running = [...this.#executors].filter((ex) => ex.state === "busy" && ex.job).map((ex) => ex.job!.done);
    if (running.length) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([Promise.all(running), new Promise((r) => (timer = setTimeout(r, graceMs)))]);
      clearTimeout(timer);
    }
    for (const ex of this.#executors) {
      if (ex.state === "busy" && ex.job) this.#kill(ex, closedOutcome(ex.job.req.id, true), "closing after the grace period");
    }
    await Promise.all([...this.#executors].map((ex) => ex.channel.exited));
    process.off("exit", this.#onProcessExit);
  }

  /** Executors that count toward the target size. */
  #live(): Executor[] {
    return [...this.#executors].filter((ex) => (ex.state === "starting" || ex.state === "idle" || ex.state === "busy") && !ex.retireAfterJob);
  }

  #describe(ex: Executor): string {
    return this.kind === "threads" ? `thread ${ex.threadId}` : `process ${ex.pid}`;
  }

  /** Starts one executor; resolves when it is ready, rejects when it could not load the tasks module. */
  #spawn(): Promise<void> {
    let channel: Channel;
    try {
      channel = this.kind === "threads"
        ? spawnThread(this.#entry, { ...(this.#execArgv ? { execArgv: this.#execArgv } : {}), ...(this.#tsx ? { tsx: this.#tsx } : {}), ...(this.#options.resourceLimits ? { resourceLimits: this.#options.resourceLimits } : {}) })
        : spawnProcess(this.#entry, { execArgv: this.#execArgv ?? [] });
    } catch (err) {
      // E.g. ERR_WORKER_INVALID_EXEC_ARGV: Node options a thread does not accept.
      return Promise.reject(new Error(`could not start a ${this.kind === "threads" ? "thread" : "process"} executor: ${(err as Error).message}`));
    }
    const ex: Executor = { seq: ++this.#seq, channel, state: "starting", pid: channel.pid, threadId: channel.threadId, tasksRun: 0 };
    this.#executors.add(ex);
    const ready = new Promise<void>((resolve, reject) => {
      const ms = this.#options.startTimeoutMs ?? 30_000;
      const timer = setTimeout(() => {
        this.#startFailed(ex, `did not load the tasks module within ${ms} ms`);
        this.#kill(ex, undefined, "start timeout");
      }, ms);
      ex.starting = { resolve, reject, timer };
    });
    channel.onMessage = (msg) => this.#onMessage(ex, msg);
    void channel.exited.then((info) => this.#onExit(ex, info));
    try {
      channel.send({ type: "init", tasksModule: this.#tasksModule, ...(this.#connect ? { connect: this.#connect } : {}) });
    } catch (err) {
      this.#startFailed(ex, `could not be initialised: ${(err as Error).message}`);
      this.#kill(ex, undefined, "init failed");
    }
    return ready;
  }

  #startFailed(ex: Executor, why: string, cancelled = false): void {
    const starting = ex.starting;
    if (!starting) return;
    ex.starting = undefined;
    clearTimeout(starting.timer);
    const tsInvolved = [this.#entry, this.#tasksModule].some((u) => /\.[cm]?tsx?$/.test(u));
    const hint = /Unknown file extension ".[cm]?tsx?"/.test(why) || (tsInvolved && !usesTsx(this.#execArgv ?? process.execArgv))
      ? ` (TypeScript modules need a TypeScript loader in the executor: pass execArgv: ["--import", "tsx"])`
      : "";
    const err = new Error(`a ${this.kind === "threads" ? "thread" : "process"} executor for tasks module ${this.#tasksModule} ${why}${cancelled ? "" : hint}`);
    starting.reject(Object.assign(err, { cancelled }));
  }

  #replenish(): void {
    const missing = this.#closed ? 0 : this.#target - this.#live().length;
    for (let i = 0; i < missing; i++) {
      this.#spawn().then(
        () => {
          this.#spawnFailures = 0;
        },
        (err: Error & { cancelled?: boolean }) => {
          if (this.#closed || err.cancelled) return;
          this.#spawnFailures++;
          this.#log("error", `could not start a pool executor (attempt ${this.#spawnFailures}): ${err.message}`);
          this.#failQueuedIfHopeless(err.message);
          if (!this.#closed && this.#respawnTimer === undefined) {
            const delay = Math.min(100 * 2 ** this.#spawnFailures, 10_000);
            this.#respawnTimer = setTimeout(() => {
              this.#respawnTimer = undefined;
              this.#replenish();
            }, delay);
            this.#respawnTimer.unref();
          }
        },
      );
    }
  }

  /** Replacements keep failing and nothing can run: fail what waits instead of letting it hang. */
  #failQueuedIfHopeless(why?: string): void {
    if (this.#spawnFailures < 3) return;
    if ([...this.#executors].some((ex) => ex.state === "idle" || ex.state === "busy")) return;
    for (const job of this.#queue.splice(0)) {
      this.#finish(job, { ok: false, error: { type: POOL_ERROR.died, message: `no executor could be started for task ${job.req.id}${why ? `: ${why}` : ""}`, retryable: true } });
    }
  }

  #dispatch(): void {
    while (this.#queue.length) {
      const ex = [...this.#executors].find((e) => e.state === "idle" && !e.retireAfterJob);
      if (!ex) return;
      this.#start(ex, this.#queue.shift()!);
    }
  }

  #start(ex: Executor, job: Job): void {
    ex.state = "busy";
    ex.job = job;
    job.executor = ex;
    ex.channel.ref();
    try {
      ex.channel.send({ type: "run", req: job.req });
    } catch (err) {
      ex.state = "idle";
      ex.job = undefined;
      ex.channel.unref();
      job.executor = undefined;
      this.#finish(job, {
        ok: false,
        error: { type: POOL_ERROR.dataClone, message: `the arguments of task "${job.req.task}" (${job.req.id}) cannot be sent to a ${this.kind} executor: ${(err as Error).message}`, retryable: false },
      });
      return;
    }
    const limit = job.req.timeLimitMs;
    if (limit !== undefined) {
      job.hardTimer = setTimeout(() => {
        if (ex.job === job && ex.state === "busy") {
          this.#kill(ex, timeLimitOutcome(job.req.id, limit, true, `its ${this.#describe(ex)} was killed`), `task ${job.req.id} exceeded its time limit`);
        }
      }, limit);
    }
  }

  #finish(job: Job, outcome: ExecutionOutcome): void {
    if (job.settled) return;
    job.settled = true;
    clearTimeout(job.hardTimer);
    if (job.onAbort) job.signal?.removeEventListener("abort", job.onAbort);
    if (job.executor) this.#tasksRun++;
    job.resolve(outcome);
  }

  #onMessage(ex: Executor, msg: FromExecutor): void {
    if (ex.state === "dead") return;
    switch (msg.type) {
      case "ready": {
        if (ex.state !== "starting" || !ex.starting) return;
        const { resolve, timer } = ex.starting;
        ex.starting = undefined;
        clearTimeout(timer);
        ex.pid = msg.pid;
        ex.threadId = msg.threadId;
        ex.state = "idle";
        ex.channel.unref();
        if (this.#closed) this.#retire(ex);
        resolve();
        this.#dispatch();
        return;
      }
      case "init-error":
        this.#startFailed(ex, `could not load it: ${msg.error.type}: ${msg.error.message}`);
        this.#kill(ex, undefined, "init failed");
        return;
      case "progress": {
        const job = ex.job;
        if (job && !job.settled && job.req.id === msg.id) safely(() => job.hooks.progress(msg.value));
        return;
      }
      case "log": {
        const job = ex.job;
        if (job && !job.settled && job.req.id === msg.id) safely(() => job.hooks.log?.(msg.level, msg.message, msg.data));
        return;
      }
      case "fatal":
        ex.fatal = `${msg.error.type}: ${msg.error.message}`;
        return;
      case "done":
        this.#onDone(ex, msg);
        return;
    }
  }

  #onDone(ex: Executor, msg: Extract<FromExecutor, { type: "done" }>): void {
    const job = ex.job;
    if (ex.state !== "busy" || !job || job.req.id !== msg.id) return;
    ex.job = undefined;
    ex.tasksRun++;
    this.#finish(job, msg.outcome);
    const maxTasks = this.#options.maxTasksPerChild;
    const maxMemory = this.#options.maxMemoryPerChild;
    if (this.#closed || ex.retireAfterJob) {
      this.#retire(ex);
    } else if (maxTasks !== undefined && maxTasks > 0 && ex.tasksRun >= maxTasks) {
      this.#recycle(ex, `it ran ${ex.tasksRun} tasks (maxTasksPerChild ${maxTasks})`);
    } else if (maxMemory !== undefined && maxMemory > 0 && msg.memory > maxMemory) {
      this.#recycle(ex, `it uses ${mb(msg.memory)} (maxMemoryPerChild ${mb(maxMemory)})`);
    } else {
      ex.state = "idle";
      ex.channel.unref();
    }
    this.#dispatch();
  }

  /** Asks an executor to exit (after closing its client); kills it if it does not. */
  #retire(ex: Executor): void {
    if (ex.state === "retiring" || ex.state === "dead") return;
    ex.state = "retiring";
    ex.retireAfterJob = false;
    ex.channel.ref();
    try {
      ex.channel.send({ type: "close" });
    } catch {
      ex.channel.kill();
    }
    ex.exitTimer = setTimeout(() => ex.channel.kill(), RETIRE_KILL_AFTER_MS);
  }

  /** Retires a healthy executor and starts its replacement. */
  #recycle(ex: Executor, why: string): void {
    this.#replaced++;
    this.#log("debug", `replacing pool executor ${this.#describe(ex)}: ${why}`);
    this.#retire(ex);
    this.#replenish();
  }

  /** Kills an executor now; settles its job with `outcome`; starts a replacement. */
  #kill(ex: Executor, outcome: ExecutionOutcome | undefined, why: string): void {
    if (ex.state === "dead") return;
    const wasReady = ex.state !== "starting";
    // A starting executor's replacement is the business of whoever awaits its start (with backoff).
    if (ex.starting) this.#startFailed(ex, `was stopped before it was ready (${why})`, true);
    ex.state = "dead";
    const job = ex.job;
    ex.job = undefined;
    ex.channel.ref();
    ex.channel.kill();
    if (job && outcome) this.#finish(job, outcome);
    if (wasReady) {
      this.#replaced++;
      this.#log("info", `killed pool executor ${this.#describe(ex)}: ${why}`);
      this.#replenish();
    }
  }

  #onExit(ex: Executor, info: ExitInfo): void {
    this.#executors.delete(ex);
    clearTimeout(ex.exitTimer);
    const was = ex.state;
    ex.state = "dead";
    const how = describeExit(info, ex.fatal);
    if (was === "starting") {
      this.#startFailed(ex, `exited before it was ready: ${how}`);
      return;
    }
    if (was === "dead" || was === "retiring") return;
    // Unexpected: crashed (process.exit, uncaught error, OOM, killed from outside).
    const job = ex.job;
    ex.job = undefined;
    this.#replaced++;
    const where = `the ${this.kind === "threads" ? "thread" : "process"} executor (${this.#describe(ex)})`;
    if (job) {
      this.#finish(job, diedOutcome(`${where} died while running task ${job.req.id} (${job.req.task}): ${how}`));
    }
    this.#log("warn", `${where} died${job ? ` while running task ${job.req.id}` : " while idle"}: ${how}; replacing it`);
    this.#replenish();
  }
}

function describeExit(info: ExitInfo, fatal: string | undefined): string {
  const base = info.signal ? `killed by ${info.signal}` : `exited with code ${info.code}`;
  const cause = fatal ?? info.error;
  return cause ? `${base} after an uncaught ${cause}` : base;
}

function mb(bytes: number): string {
  return `${Math.round(bytes / 1024 / 1024)} MB`;
}

function safely(fn: () => void): void {
  try {
    fn();
  } catch {
    // Hooks must not break the pool.
  }
}

const defaultLog: PoolLog = (level, message, data) => {
  if (level === "warn" || level === "error") console.error(`celerity pool ${level}: ${message}${data ? ` ${JSON.stringify(data)}` : ""}`);
};
