/**
 * The worker runtime: durable pull consumers per queue, bounded concurrency, validation on receipt,
 * results stored before the message is acked (late ack), events, progress, dead letters and a
 * graceful shutdown. A bad message never crashes the worker: it is recorded and dead-lettered.
 */
import { headers as natsHeaders, type Msg } from "@nats-io/nats-core";
import type { JetStreamManager } from "@nats-io/jetstream";
import {
  AckedPublisher,
  Client,
  connect,
  createLogger,
  isNotFound,
  WORKER_LEASE_S,
  type ConnectOptions,
  type Logger,
  type LogLevel,
} from "../client/mod.ts";
import {
  ACK,
  assertToken,
  decodeResultRecord,
  decodeTaskMessage,
  DLQ_REASON,
  FINAL_STATES,
  encode,
  EVENT,
  HEADER,
  InvalidArgumentsError,
  InvalidResultError,
  NonRetryableError,
  parseAckSubject,
  TaskRevokedError,
  UnsupportedVersionError,
  type Revocation,
  PROTOCOL_VERSION,
  STATE,
  toErrorShape,
  type DlqReason,
  type ErrorShape,
  type ResultRecord,
  type TaskMessage,
  type TaskState,
  type WorkerEntry,
  type WorkerIdentity,
} from "../protocol/mod.ts";
import { validate, type AnySignature, type ArgsOutput, type ResultInput } from "../signatures/mod.ts";
import { afterTask } from "../canvas/mod.ts";
import { hostIdentity, onTerminationSignals, processMemory, publishFrame } from "../transport/mod.ts";
import { ControlServer } from "./control.ts";
import { RateLimiter } from "./rate_limit.ts";
import { createPool, retryRequest, SoftTimeLimitExceeded, TimeLimitExceeded, type Pool, type PoolKind } from "./pool/mod.ts";
import { EternalRunner, type EternalContext, type EternalOptions, type EternalState } from "./eternal.ts";
import type { HandlerRegistry } from "./handlers.ts";
import { copyHeaders } from "./headers.ts";
import { deliveryCountOf, encodeRecord, TaskEvents, type EncodedRecord } from "./wire.ts";
import { QueuePuller } from "./puller.ts";
import { HAND_BACK_AFTER_MS, PrefetchWindow } from "./prefetch.ts";
import { ensurePriorityConsumers, PriorityPuller, PRIORITY_LEVELS } from "./priority_puller.ts";
import { Revocations, settledWithin } from "./revocations.ts";
import { handleScheduled } from "./scheduler.ts";

/**
 * What a handler receives beside its arguments. `signal` and `log` are made on first use, by
 * getters: a spread copy (`{ ...ctx }`) does not carry them.
 */
export interface TaskContext {
  /** The task id. */
  readonly id: string;
  /** The task name. */
  readonly name: string;
  readonly queue: string;
  /** 1 on the first run; counts Celerity retries and server redeliveries alike. */
  readonly attempt: number;
  /** Celerity retries made before this run (0 on the first). */
  readonly retries: number;
  /** How many times the server delivered this message (more than 1 after a worker died). */
  readonly deliveryCount: number;
  /** Aborted at the soft time limit, on revoke and on a cold shutdown: long handlers should watch it. */
  readonly signal: AbortSignal;
  /** Reports progress to the caller, to watchers of the task and to the events stream. */
  progress(value: unknown): void;
  /**
   * Ends this run and schedules a retry (Celery's `self.retry()`): throws, so call it as
   * `throw ctx.retry(...)` or `return ctx.retry(...)`. Past the task's retries it fails with
   * MaxRetriesExceededError instead.
   */
  retry(options?: { delay?: number; reason?: string }): never;
  /** Logs with the task's id and name attached. */
  readonly log: Logger;
  /** Data the sender attached. */
  readonly meta: Readonly<Record<string, unknown>>;
  /** The worker running the task. */
  readonly worker: WorkerIdentity;
  /** A client on the worker's connection, for sending follow-up tasks. */
  readonly client: Client;
}

/** A task implementation. */
export type Handler<S extends AnySignature> = (
  args: ArgsOutput<S>,
  ctx: TaskContext,
) => ResultInput<S> | Promise<ResultInput<S>>;

/** How a worker serves one queue (also settable in settings: `queues.<name>`). */
export interface QueueOptions {
  /** One task at a time across ALL workers of the queue (the server holds one unacked message). */
  serial?: boolean;
  /** Tasks of this queue this worker runs at once (within the worker's concurrency). */
  concurrency?: number;
  /**
   * Messages of this queue this worker holds at once (running plus waiting for a slot). Unset:
   * adaptive, from the queue's concurrency up to 4× while tasks are short (docs/protocol.md §6.1).
   */
  prefetch?: number;
  /** Seconds without ack or progress before the server redelivers. */
  ackWait?: number;
  /** Highest priority first (0–9); needs its own consumers, see docs/priorities.md. */
  priorities?: boolean;
}

interface QueueConfig {
  priorities: boolean;
  concurrency: number;
  prefetch: PrefetchWindow;
  serial: boolean;
  ackWaitMs: number;
}

/** How a worker serves one queue, as resolved at start (Worker#queueOptions). */
export interface ResolvedQueueOptions extends Omit<QueueConfig, "prefetch"> {
  /** Messages it may hold now. */
  prefetch: number;
  /** Whether `prefetch` follows measured times (no prefetch was set; docs/protocol.md §6.1). */
  adaptivePrefetch: boolean;
}

/** Options of {@link Worker}. */
export interface WorkerOptions extends Omit<ConnectOptions, "queues"> {
  /**
   * Queues to consume: names, or names with options (`{ openmp: { concurrency: 1 } }`). Default:
   * the queues the implemented signatures route to (or `default`).
   */
  queues?: string[] | Record<string, QueueOptions>;
  /** Handlers running at once. Default: settings.concurrency (1). */
  concurrency?: number;
  /**
   * Messages held at once per queue (running plus waiting). Default: settings.prefetch, else
   * adaptive: the queue's concurrency, up to 4× while tasks are short (sdk/worker/prefetch.ts).
   */
  prefetch?: number;
  /** A client to use instead of connecting (its connection is shared). */
  client?: Client;
  logLevel?: LogLevel;
  logger?: Logger;
  /** Milliseconds a warm shutdown waits for running tasks before aborting them. Default 30 s. */
  shutdownGraceMs?: number;
  /**
   * Write a RECEIVED/STARTED record to the results bucket only for tasks still unfinished after this
   * long, so short tasks cost one stored record and long ones still show their state. Default 200 ms.
   */
  stateWriteDelayMs?: number;
  /** Run a scheduler that moves due delayed tasks to their queues (default true; one per worker is enough). */
  scheduler?: boolean;
  /**
   * Where handlers run: `inline` (this thread, the default and the fastest), or `threads` /
   * `processes`, where a hard `timeLimit`, a revoke with terminate or a crash ends the execution for
   * real and the executor is replaced (docs/pools.md). These need `tasksModule`.
   */
  pool?: PoolKind;
  /** Path of the tasks module executors import (its default export registers the handlers). */
  tasksModule?: string;
  /** Replace an executor after this many tasks (threads/processes). */
  maxTasksPerChild?: number;
  /** Replace an executor whose memory exceeds this many bytes after a task (threads/processes). */
  maxMemoryPerChild?: number;
  /** Node options of executors (default: this process's, e.g. `--import tsx`). */
  poolExecArgv?: string[];
}

/** A failure reported by a pool executor, already in wire shape. */
class PooledFailure extends Error {
  constructor(readonly shape: ErrorShape) {
    super(shape.message);
    this.name = shape.type;
  }
}

interface Registration {
  sig: AnySignature;
  handler: (args: unknown, ctx: TaskContext) => unknown;
}

/**
 * A message this worker holds, from receipt to settlement. A class, with every field set in the
 * constructor: one object (and one shape) per task on the hot path.
 */
class InFlight {
  startedAt: number | undefined = undefined;
  writtenState: TaskState | undefined = undefined;
  stateWrite: Promise<unknown> | undefined = undefined;
  lastWorkingAt: number;
  settled = false;
  /** Set when the task was revoked while it ran. */
  revoked: Revocation | undefined = undefined;
  /** A scheduled-stream message (settled without releasing a queue credit). */
  fromScheduler = false;
  /** The final record is being stored: no more RECEIVED/STARTED writes. */
  finalizing = false;
  /**
   * Its handler finished and its slot and prefetch credit were handed to the next message while
   * its outcome is stored and acked (see Worker#handOver).
   */
  handedOver = false;
  /**
   * Made only when something reads the signal or aborts it: most tasks never do, and creating an
   * AbortController per task was ~7 µs of worker CPU (npm run bench, drain).
   */
  #controller: AbortController | undefined = undefined;

  constructor(
    readonly msg: Msg,
    readonly queue: string,
    readonly task: TaskMessage,
    readonly deliveryCount: number,
    readonly receivedAt: number,
    public state: TaskState,
  ) {
    this.lastWorkingAt = receivedAt;
  }

  /** The task's signal (created on first read; already aborted if abort() came first). */
  get signal(): AbortSignal {
    this.#controller ??= new AbortController();
    return this.#controller.signal;
  }

  /** Aborts the task's signal with `reason`. */
  abort(reason: unknown): void {
    this.#controller ??= new AbortController();
    this.#controller.abort(reason);
  }
}

/** Thrown by `ctx.retry()`: the worker schedules the retry. */
export class RetryRequested extends Error {
  override name = "RetryRequested";
  constructor(readonly delaySeconds: number | undefined, readonly reason: string) {
    super(`retry requested: ${reason}`);
  }
}

/** A task asked for (or failed into) a retry beyond its `retries`. */
export class MaxRetriesExceededError extends Error {
  override name = "MaxRetriesExceededError";
}

const MS = 1000;

/** What every task context of one worker shares. */
interface ContextHost {
  readonly worker: WorkerIdentity;
  readonly client: Client;
  readonly log: Logger;
  progress(flight: InFlight, value: unknown): void;
}

/** `ctx.retry()` of every context: it needs nothing of the task. */
function retry(options: { delay?: number; reason?: string } = {}): never {
  throw new RetryRequested(options.delay, options.reason ?? "requested by the task");
}

/**
 * A handler's `ctx`. A class, not an object literal with getters: V8 makes one in nanoseconds,
 * where the literal took ~1.2 µs (its getters are defined per object). `signal` and `log` are
 * made on first use by getters of the prototype, so a spread copy (`{ ...ctx }`) lacks those two;
 * every other member is an own property. Its members are declared once, in TaskContext.
 */
// deno-lint-ignore no-empty-interface
interface RunContext extends Omit<TaskContext, "signal" | "log"> {}
class RunContext {
  readonly #flight: InFlight;
  readonly #log: Logger;
  #child: Logger | undefined = undefined;

  constructor(flight: InFlight, host: ContextHost) {
    const { task } = flight;
    const retries = task.retries ?? 0;
    const own: { -readonly [K in keyof RunContext]: RunContext[K] } = this;
    own.id = task.id;
    own.name = task.task;
    own.queue = flight.queue;
    own.retries = retries;
    own.attempt = retries + flight.deliveryCount;
    own.deliveryCount = flight.deliveryCount;
    own.meta = task.meta ?? {};
    own.worker = host.worker;
    own.client = host.client;
    own.retry = retry;
    own.progress = (value) => host.progress(flight, value);
    this.#flight = flight;
    this.#log = host.log;
  }

  get signal(): AbortSignal {
    return this.#flight.signal;
  }

  get log(): Logger {
    // A child logger per task would be garbage for the many tasks that never log.
    this.#child ??= this.#log.child({ task: this.name, id: this.id });
    return this.#child;
  }
}

/** How long start() keeps retrying a JetStream API step the server does not answer (see #startupStep). */
const STARTUP_RETRY_MS = 30_000;

/** A request nats.js gave up waiting for (its TimeoutError), as opposed to an answer that refused. */
function isRequestTimeout(err: unknown): boolean {
  return err instanceof Error && (err.name === "TimeoutError" || /^timeout$/i.test(err.message));
}

const UTF8 = new TextEncoder();

/** `+ACK` as bytes, once: the ack of every task would otherwise be encoded again each time. */
const ACK_BODY = UTF8.encode(ACK.ack);

/** Returns a message after 5 s: for failures that an immediate redelivery would only repeat. */
const DELAYED_NAK = `${ACK.nak} ${JSON.stringify({ delay: 5e9 })}`;

/** Runs task handlers for one or more queues. */
export class Worker implements AsyncDisposable {
  readonly #options: WorkerOptions;
  readonly #registry = new Map<string, Registration>();
  /** Eternal tasks declared with eternal(); their runners exist from start() on. */
  readonly #eternalSpecs: EternalOptions[] = [];
  readonly #eternals: EternalRunner[] = [];
  readonly #pullers = new Map<string, QueuePuller | PriorityPuller>();
  readonly #inFlight = new Set<InFlight>();
  /** Messages received and waiting for a slot, in order; `go` starts one (its queue is `flight.queue`). */
  readonly #waiting: { flight: InFlight; go: () => void }[] = [];
  readonly #queueRunning = new Map<string, number>();
  /** Per queue: finished tasks whose slot was handed over and whose outcome is still being stored. */
  readonly #committing = new Map<string, number>();
  readonly #queueConfig = new Map<string, QueueConfig>();
  #client: Client | undefined;
  /** What every task context shares (set by start()). */
  #host: ContextHost | undefined;
  #ownsClient = false;
  #publisher!: AckedPublisher;
  #events: TaskEvents | undefined;
  #log: Logger;
  #running = 0;
  #concurrency = 1;
  #ackWaitMs = 30_000;
  #maxDeliver = 10;
  #sweepTimer: ReturnType<typeof setInterval> | undefined;
  #revocations: Revocations | undefined;
  #rates: RateLimiter | undefined;
  #control: ControlServer | undefined;
  #pool: Pool | undefined;
  readonly #paused = new Set<string>();
  readonly #startedAt = Date.now();
  #scheduler: QueuePuller | undefined;
  #state: "new" | "starting" | "running" | "stopping" | "closed" = "new";
  #closed: Promise<void> | undefined;
  #closedResolve!: () => void;
  readonly #done = new Promise<void>((r) => (this.#closedResolve = r));
  /** This worker's identity (host, pid, id), in results and events. */
  readonly identity: WorkerIdentity;
  /** `identity` as MessagePack, copied into every result record. */
  readonly #identityBytes: Uint8Array;
  /** Counters for status and tests. */
  readonly stats = { received: 0, succeeded: 0, failed: 0, retried: 0, deadLettered: 0 };

  constructor(options: WorkerOptions = {}) {
    this.#options = options;
    const { host, pid } = hostIdentity();
    const suffix = Math.random().toString(36).slice(2, 6);
    this.identity = { id: `${host.replace(/[^A-Za-z0-9_-]/g, "_")}-${pid}-${suffix}`, host, pid };
    // A copy: a view would keep encode()'s whole 64 KB buffer alive for the worker's lifetime.
    this.#identityBytes = encode(this.identity).slice();
    this.#log = options.logger ?? createLogger(options.logLevel ?? "info", { worker: this.identity.id });
  }

  /** Registers the handler of a signature. Returns the worker for chaining. */
  implement<S extends AnySignature>(sig: S, handler: Handler<S>): this {
    if (this.#state !== "new") throw new Error(`implement("${sig.name}") must be called before start()`);
    if (this.#registry.has(sig.name)) throw new Error(`task "${sig.name}" is already implemented by this worker`);
    this.#registry.set(sig.name, { sig, handler: handler as Registration["handler"] });
    return this;
  }

  /**
   * Declares an eternal task (GWCelery's `celery_eternal`): `run` keeps running on exactly one of
   * the workers that declare it, is restarted with backoff when it throws or returns, and moves to
   * another worker within `leaseSeconds` when this one dies. `ctx.signal` aborts on shutdown and
   * when the lease is lost. Returns the worker for chaining.
   */
  eternal(
    name: string | AnySignature,
    run: (ctx: EternalContext) => Promise<void> | void,
    options: Omit<EternalOptions, "name" | "run" | "logger"> = {},
  ): this {
    const n = typeof name === "string" ? name : name.name;
    if (this.#state !== "new") throw new Error(`eternal("${n}") must be called before start()`);
    if (this.#eternalSpecs.some((s) => s.name === n)) throw new Error(`eternal task "${n}" is already declared by this worker`);
    this.#eternalSpecs.push({ ...options, name: n, run, logger: this.#log });
    return this;
  }

  /** Implements the task of every handler in `registry` (the same as `registry.register(worker)`). */
  handlers(registry: HandlerRegistry): this {
    registry.register(this);
    return this;
  }

  /** This worker's view of its eternal tasks (running here, standing by, in backoff, stopped). */
  get eternals(): EternalState[] {
    if (this.#eternals.length > 0) return this.#eternals.map((r) => r.state());
    return this.#eternalSpecs.map((s) => ({ name: s.name, status: "stopped", restarts: 0, since: Date.now() }));
  }

  /** Names of the tasks this worker implements. */
  get registered(): string[] {
    return [...this.#registry.keys()];
  }

  /** The queues this worker consumes. */
  get queues(): string[] {
    const given = this.#options.queues;
    if (Array.isArray(given) ? given.length : given && Object.keys(given).length) {
      return Array.isArray(given) ? [...given] : Object.keys(given!);
    }
    // The same router the clients use, so a worker listens where its tasks are sent.
    const route = (r: Registration) => this.#client ? this.#client.router.route(r.sig.name, r.sig).queue : r.sig.options.queue ?? "default";
    const qs = new Set([...this.#registry.values()].map(route));
    return qs.size ? [...qs] : ["default"];
  }

  /** The resolved options of each consumed queue (after start()); `prefetch` is the current window. */
  get queueOptions(): ReadonlyMap<string, Readonly<ResolvedQueueOptions>> {
    return new Map([...this.#queueConfig].map(([q, c]) => [q, { ...c, prefetch: c.prefetch.limit, adaptivePrefetch: c.prefetch.adaptive }]));
  }

  /** Tasks currently running. */
  get active(): number {
    return this.#running;
  }

  /** The client this worker uses (available after start()). */
  get client(): Client {
    if (!this.#client) throw new Error("the worker is not started");
    return this.#client;
  }

  /** Connects, creates topology and consumers, and starts pulling. Resolves once consuming. */
  async start(): Promise<void> {
    if (this.#state !== "new") throw new Error(`worker already ${this.#state}`);
    this.#state = "starting";
    const {
      queues: queueOption, concurrency, prefetch: _p, client, logLevel: _l, logger: _lg, shutdownGraceMs: _g, stateWriteDelayMs: _s,
      scheduler: _sc, pool: poolKind, tasksModule, maxTasksPerChild, maxMemoryPerChild, poolExecArgv, ...connectOptions
    } = this.#options;
    if (poolKind && poolKind !== "inline" && !tasksModule) {
      throw new Error(`pool "${poolKind}" needs tasksModule: the path of the module whose default export registers the handlers (executors import it)`);
    }
    for (const q of Array.isArray(queueOption) ? queueOption : Object.keys(queueOption ?? {})) assertToken("queue", q);
    this.#client = client ?? (await connect(connectOptions));
    this.#ownsClient = client === undefined;
    this.#host = { worker: this.identity, client: this.#client, log: this.#log, progress: (flight, value) => this.#progress(flight, value) };
    const s = this.#client.settings;
    this.#concurrency = concurrency ?? s.concurrency;
    this.#ackWaitMs = s.ackWait * MS;
    this.#maxDeliver = s.maxDeliver;
    const fromCode = Array.isArray(queueOption) ? {} : queueOption ?? {};
    for (const queue of this.queues) {
      assertToken("queue", queue);
      this.#queueConfig.set(queue, this.#resolveQueue(queue, { ...s.queues?.[queue], ...fromCode[queue] }));
    }
    this.#publisher = this.#client.publisher;
    this.#events = s.events ? new TaskEvents(this.#publisher, this.#client.names.eventsSubject("task"), this.#client.nc, this.identity.id) : undefined;
    await this.#startupStep("create the topology", () => this.#client!.ensureTopology());
    const jsm = await this.#client.jsm();
    // Revocations first: a task received from now on is checked against every stored revocation.
    this.#revocations = new Revocations(
      jsm.jetstream(), this.#client.names.revokedBucket, s.revokeExpires * MS, (r) => this.#onRevoke(r),
      (key, reason) => this.#log.warn(`ignoring revocation ${key}: ${reason}`),
    );
    const revocations = this.#revocations;
    await this.#startupStep("watch the revocations bucket", () => revocations.start());
    if (this.#options.scheduler !== false) await this.#startScheduler(jsm);
    const live = this.#client;
    if (poolKind && poolKind !== "inline") {
      const { route: _r, connection: _c, ...plainConnect } = connectOptions as Record<string, unknown>;
      this.#pool = await createPool({
        kind: poolKind,
        size: this.#concurrency,
        tasksModule: tasksModule!,
        ...(maxTasksPerChild !== undefined ? { maxTasksPerChild } : {}),
        ...(maxMemoryPerChild !== undefined ? { maxMemoryPerChild } : {}),
        ...(poolExecArgv ? { execArgv: poolExecArgv } : {}),
        closeGraceMs: this.#options.shutdownGraceMs ?? 30_000,
        connect: { ...plainConnect, servers: live.settings.servers, namespace: live.settings.namespace },
        log: (level, message, data) => this.#log[level](message, data),
      });
      const pool = this.#pool;
      this.#terminate = (f) => pool.terminate(f.task.id, f.revoked?.reason ?? "terminated");
    }
    this.#rates = new RateLimiter(live.nc, () => live.jsm(), live.names.ratesBucket);
    for (const { sig } of this.#registry.values()) {
      if (sig.options.rateLimit) this.#rates.setLocal(sig.name, sig.options.rateLimit);
      if (sig.options.globalRateLimit) this.#rates.setGlobal(sig.name, sig.options.globalRateLimit);
    }
    for (const queue of this.queues) await this.#consume(jsm, queue);
    this.#control = new ControlServer(live.nc, live.names, {
      identity: this.identity,
      queueNames: () => [...this.#pullers.keys()],
      snapshot: () => ({ ...this.#snapshot() }),
      handle: (verb, args) => this.#handleControl(verb, args),
    }, (subject, data) => this.#publisher.publish(subject, data), WORKER_LEASE_S);
    await this.#control.start();
    void this.#watchConnection();
    this.#sweepTimer = setInterval(() => this.#sweep(), Math.max(20, Math.min(250, this.#stateWriteDelay() / 2, this.#ackWaitMs / 3)));
    this.#state = "running";
    // Eternal tasks last: the queues they may send to are consumed by now.
    for (const spec of this.#eternalSpecs) {
      const runner = new EternalRunner(this.#client, this.identity, spec);
      this.#eternals.push(runner);
      await runner.start();
    }
    this.#log.info(`worker ready`, { queues: Object.fromEntries(this.queueOptions), concurrency: this.#concurrency, tasks: this.registered });
  }

  /**
   * Starts, closes gracefully on SIGINT/SIGTERM (a second signal aborts running tasks and returns
   * them to the queue), and resolves once closed.
   */
  async run(): Promise<void> {
    await this.start();
    let signals = 0;
    const off = onTerminationSignals((signal) => {
      signals++;
      this.#log.info(`${signal}: ${signals === 1 ? "warm shutdown (finishing running tasks)" : "cold shutdown"}`);
      void this.close({ graceMs: signals === 1 ? undefined : 0 });
    });
    await this.#done;
    off();
  }

  /**
   * How this worker serves `queue` with options `o` (settings and code merged at start, a control
   * request's own for add_consumer): within the worker's concurrency, its prefetch window, ack wait.
   */
  #resolveQueue(queue: string, o: QueueOptions): QueueConfig {
    const serial = o.serial === true;
    const priorities = o.priorities === true;
    if (serial && priorities) throw new Error(`queue "${queue}": serial and priorities cannot be combined (max_ack_pending counts per level consumer)`);
    const concurrency = serial ? 1 : Math.min(o.concurrency ?? this.#concurrency, this.#concurrency);
    const settings = this.#client!.settings;
    return {
      priorities,
      serial,
      concurrency,
      prefetch: prefetchWindow(serial, priorities, concurrency, o.prefetch ?? this.#options.prefetch ?? settings.prefetch),
      ackWaitMs: (o.ackWait ?? settings.ackWait) * MS,
    };
  }

  /**
   * A JetStream API step of start(), retried while the server does not answer in time: a cluster
   * that is forming or electing a leader lets API requests time out for a few seconds (measured on
   * 2.9.10: 4–6 s), and a worker should ride that out rather than exit (Celery retries its broker
   * connection on start-up too). Other errors, and silence for longer than STARTUP_RETRY_MS, fail
   * start() as before. (The control server's first registry write goes through the publisher,
   * which retries on its own.)
   */
  async #startupStep<T>(what: string, step: () => Promise<T>): Promise<T> {
    const since = Date.now();
    for (let attempt = 1; ; attempt++) {
      try {
        return await step();
      } catch (err) {
        if (!isRequestTimeout(err) || Date.now() - since > STARTUP_RETRY_MS || this.#state === "closed") throw err;
        const delay = Math.min(2000, 250 * 2 ** (attempt - 1));
        this.#log.warn(`could not ${what}: the server did not answer in time; trying again in ${delay} ms`, { attempt, error: (err as Error).message });
        await new Promise((r) => setTimeout(r, delay));
      }
    }
  }

  /** Creates (or updates) the queue's consumer and starts pulling from it. */
  async #consume(jsm: JetStreamManager, queue: string): Promise<void> {
    await this.#startupStep(`create the consumer of queue ${queue}`, () => this.#ensureConsumer(jsm, queue));
    const n = this.#client!.names;
    const cfg = this.#queueConfig.get(queue)!;
    const common = {
      stream: n.tasksStream,
      prefetch: cfg.prefetch.base,
      onMessage: (msg: Msg) => this.#onMessage(queue, msg),
      onStalled: async (reason: string) => {
        this.#log.warn(`queue ${queue}: pulls went silent (${reason}); checking the consumer`);
        await this.#ensureConsumer(await this.#client!.jsm(), queue);
      },
    };
    const puller = cfg.priorities
      ? new PriorityPuller(this.#client!.nc, { ...common, consumerPrefix: n.queueConsumer(queue), subjectOf: (p) => n.taskSubject(queue, p), levels: PRIORITY_LEVELS })
      : new QueuePuller(this.#client!.nc, {
        ...common,
        consumer: n.queueConsumer(queue),
        onIdle: () => {
          if (this.#queueConfig.get(queue)?.prefetch.idle()) this.#applyPrefetch(queue);
        },
      });
    this.#pullers.set(queue, puller);
    puller.start();
    if (cfg.prefetch.limit !== cfg.prefetch.base) this.#applyPrefetch(queue);
  }

  /** This worker as the registry and `stats` show it. */
  #snapshot(): WorkerEntry {
    const reserved = [...this.#inFlight].filter((f) => f.startedAt === undefined && !f.settled).length;
    return {
      v: PROTOCOL_VERSION,
      ...this.identity,
      queues: Object.fromEntries([...this.#queueConfig].filter(([q]) => this.#pullers.has(q)).map(([q, c]) => [q, { concurrency: c.concurrency, prefetch: c.prefetch.limit, ...(c.prefetch.adaptive ? { prefetchMax: c.prefetch.max } : {}), serial: c.serial, paused: this.#paused.has(q) }])),
      concurrency: this.#concurrency,
      active: this.#running,
      reserved,
      processed: this.stats.succeeded + this.stats.failed,
      failed: this.stats.failed,
      tasks: this.registered,
      pool: this.#pool?.kind ?? "inline",
      startedAt: this.#startedAt,
      heartbeatAt: Date.now(),
    };
  }

  /** One remote-control verb (see docs/control.md). */
  async #handleControl(verb: string, args: Record<string, unknown>): Promise<unknown> {
    const queueArg = () => {
      const q = args.queue;
      if (typeof q !== "string") throw new Error(`${verb} needs {queue: "<name>"}`);
      assertToken("queue", q);
      return q;
    };
    const flights = (started: boolean) =>
      [...this.#inFlight].filter((f) => !f.settled && !f.handedOver && (f.startedAt !== undefined) === started).map((f) => ({
        id: f.task.id, task: f.task.task, queue: f.queue, args: f.task.args, receivedAt: f.receivedAt,
        ...(f.startedAt !== undefined ? { startedAt: f.startedAt } : {}), deliveryCount: f.deliveryCount, retries: f.task.retries ?? 0,
      }));
    switch (verb) {
      case "ping":
        return "pong";
      case "active":
        return flights(true);
      case "reserved":
        return flights(false);
      case "scheduled":
        // Nothing waits in a worker: delayed tasks live in the scheduled stream (client.scheduled()).
        return [];
      case "registered":
        return this.registered;
      case "stats":
        return { ...this.#snapshot(), stats: { ...this.stats, eventsDropped: this.#events?.dropped ?? 0 }, memory: processMemory(), revocations: this.#revocations?.size ?? 0, rateLimits: this.#rates?.limits() ?? {}, uptimeMs: Date.now() - this.#startedAt };
      case "queues":
        return this.#snapshot().queues;
      case "revoked":
        return this.#revocations?.size ?? 0;
      case "shutdown":
        setTimeout(() => void this.close(), 0);
        return "shutting down";
      case "pool_grow":
      case "pool_shrink": {
        const n = Number(args.n ?? 1);
        if (!Number.isInteger(n) || n < 1) throw new Error(`${verb} needs {n: <positive integer>}`);
        this.#concurrency = Math.max(1, this.#concurrency + (verb === "pool_grow" ? n : -n));
        if (verb === "pool_grow") this.#pool?.grow(n);
        else this.#pool?.shrink(n);
        for (const [q, c] of this.#queueConfig) {
          if (c.serial) continue;
          const concurrency = Math.min(c.concurrency + (verb === "pool_grow" ? n : -n), this.#concurrency) || 1;
          // An adaptive window starts over from the new concurrency; a prefetch that was set stays.
          const prefetch = c.prefetch.adaptive ? new PrefetchWindow(concurrency, undefined) : c.prefetch;
          this.#queueConfig.set(q, { ...c, concurrency, prefetch });
          if (prefetch !== c.prefetch) this.#applyPrefetch(q);
        }
        this.#drainWaiting();
        return { concurrency: this.#concurrency };
      }
      case "rate_limit": {
        const task = args.task;
        if (typeof task !== "string") throw new Error(`rate_limit needs {task: "<name>", rate: "100/s" | null}`);
        const rate = args.rate === null || args.rate === undefined ? undefined : String(args.rate);
        if (args.global === true) this.#rates!.setGlobal(task, rate);
        else this.#rates!.setLocal(task, rate);
        return this.#rates!.limits();
      }
      case "add_consumer": {
        const queue = queueArg();
        if (this.#pullers.has(queue)) return `already consuming ${queue}`;
        this.#queueConfig.set(queue, this.#resolveQueue(queue, (args.options ?? {}) as QueueOptions));
        await this.#consume(await this.#client!.jsm(), queue);
        await this.#control?.beat();
        return `consuming ${queue}`;
      }
      case "cancel_consumer": {
        const queue = queueArg();
        const puller = this.#pullers.get(queue);
        if (!puller) return `not consuming ${queue}`;
        // Closing the inbox first makes the server drop our open pulls (see #close).
        puller.close();
        this.#returnWaiting(queue);
        this.#pullers.delete(queue);
        await this.#control?.beat();
        return `stopped consuming ${queue}`;
      }
      case "pause_queue": {
        const queue = queueArg();
        const puller = this.#pullers.get(queue);
        if (!puller) return `not consuming ${queue}`;
        this.#paused.add(queue);
        puller.pause();
        this.#returnWaiting(queue);
        return `paused ${queue}`;
      }
      case "resume_queue": {
        const queue = queueArg();
        if (!this.#paused.delete(queue)) return `${queue} was not paused`;
        this.#pullers.get(queue)?.resume();
        return `resumed ${queue}`;
      }
      default:
        throw new Error(`unknown control verb ${JSON.stringify(verb)}`);
    }
  }

  /** Hands back messages of `queue` that wait for a slot (so other workers take them now). */
  #returnWaiting(queue: string): void {
    for (let i = this.#waiting.length - 1; i >= 0; i--) if (this.#waiting[i]!.flight.queue === queue) this.#waiting.splice(i, 1);
    for (const f of [...this.#inFlight]) {
      if (f.queue === queue && f.startedAt === undefined && !f.settled && !f.fromScheduler) this.#finishFlight(f, ACK.nak);
    }
  }

  #drainWaiting(): void {
    for (let i = this.#waiting.findIndex((w) => this.#canRun(w.flight.queue)); i >= 0; i = this.#waiting.findIndex((w) => this.#canRun(w.flight.queue))) {
      const [next] = this.#waiting.splice(i, 1);
      this.#take(next!.flight.queue, next!.go);
    }
  }

  async #startScheduler(jsm: JetStreamManager): Promise<void> {
    const client = this.#client!;
    const n = client.names;
    const ensure = async (j: JetStreamManager) => {
      try {
        await j.consumers.info(n.scheduledStream, n.schedulerConsumer);
      } catch (err) {
        if (!isNotFound(err)) throw err;
        await j.consumers.add(n.scheduledStream, {
          durable_name: n.schedulerConsumer,
          ack_policy: "explicit" as never,
          ack_wait: 30 * 1e9,
          max_deliver: -1,
          // Every waiting delayed task is "pending" on this consumer: no cap.
          max_ack_pending: -1,
          max_waiting: 512,
        });
      }
    };
    await this.#startupStep("create the scheduler's consumer", () => ensure(jsm));
    const puller: QueuePuller = new QueuePuller(client.nc, {
      stream: n.scheduledStream,
      consumer: n.schedulerConsumer,
      prefetch: 256,
      onMessage: (msg) => {
        void handleScheduled(n, this.#publisher, (reply, body) => client.nc.publish(reply, body), msg, (m, err) =>
          this.#deadLetterUnreadable(m.subject.slice(n.scheduledWildcard.length - 1) || "unknown", m, err, true),
        ).finally(() => puller.release());
      },
      onStalled: async () => ensure(await client.jsm()),
    });
    this.#scheduler = puller;
    puller.start();
  }

  async #watchConnection(): Promise<void> {
    for await (const s of this.#client!.nc.status()) {
      if (s.type === "reconnect") {
        this.#log.warn("reconnected to NATS; renewing pull requests");
        for (const p of this.#pullers.values()) p.reconnected();
        this.#scheduler?.reconnected();
      }
    }
  }

  #onRevoke(r: Revocation): void {
    for (const f of this.#inFlight) {
      // A handed-over flight's handler has finished: its outcome is being stored, nothing to stop.
      if (f.task.id !== r.id || f.settled || f.handedOver) continue;
      f.revoked = r;
      f.abort(new TaskRevokedError(r.id, r.reason));
      this.#log.info(`revoked ${r.id} while it ran${r.terminate ? " (terminate)" : ""}: ${r.reason}`);
      if (r.terminate) this.#terminate?.(f);
    }
  }

  /** Set by a pool that can kill executions; inline handlers can only be aborted by their signal. */
  #terminate: ((f: InFlight) => void) | undefined;

  #maxPayload(): number {
    return this.#client?.nc.info?.max_payload ?? 1024 * 1024;
  }

  #stateWriteDelay(): number {
    return this.#options.stateWriteDelayMs ?? 200;
  }

  async #ensureConsumer(jsm: JetStreamManager, queue: string): Promise<void> {
    const n = this.#client!.names;
    const durable = n.queueConsumer(queue);
    const config = this.#queueConfig.get(queue)!;
    // A serial queue is enforced by the server: one unacknowledged message for all its workers.
    const maxAckPending = config.serial ? 1 : -1;
    const ackWait = config.ackWaitMs * 1e6;
    if (config.priorities) {
      // Throws PriorityConsumerConflictError (saying what to do) while the FIFO consumer q-<queue> exists.
      await ensurePriorityConsumers(jsm, {
        stream: n.tasksStream, consumerPrefix: durable, subjectOf: (p) => n.taskSubject(queue, p),
        levels: PRIORITY_LEVELS, ackWaitNs: ackWait, maxAckPending: -1,
      });
      return;
    }
    let existing;
    try {
      existing = await jsm.consumers.info(n.tasksStream, durable);
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (!existing) {
      try {
        await jsm.consumers.add(n.tasksStream, {
          durable_name: durable,
          filter_subject: n.queueFilter(queue),
          ack_policy: "explicit" as never,
          ack_wait: ackWait,
          // Celerity counts deliveries itself and dead-letters past maxDeliver; a server-side
          // limit would strand the message in the work queue instead.
          max_deliver: -1,
          max_ack_pending: maxAckPending,
          max_waiting: 512,
        });
      } catch (err) {
        // Another worker created it at the same moment.
        if (/not unique/i.test((err as Error).message)) {
          throw new Error(`queue "${queue}" is served with priorities (consumers ${durable}-p0…p9): start its workers with priorities: true, or stop them and delete those consumers`, { cause: err });
        }
        if (!/already (in use|exists)/i.test((err as Error).message)) throw err;
      }
      return;
    }
    const current = existing.config;
    if ((current.max_ack_pending ?? -1) !== maxAckPending || current.ack_wait !== ackWait) {
      // The queue's settings changed (e.g. it became serial): the latest worker's word wins.
      this.#log.info(`updating consumer ${durable}: max_ack_pending ${current.max_ack_pending} → ${maxAckPending}, ack_wait ${current.ack_wait} → ${ackWait}`);
      await jsm.consumers.update(n.tasksStream, durable, { max_ack_pending: maxAckPending, ack_wait: ackWait });
    }
  }

  #onMessage(queue: string, msg: Msg): void {
    this.stats.received++;
    // "starting" counts as running: pulls begin before start() returns, and a message handed back
    // then would only bounce (each bounce is a delivery counted toward maxDeliver).
    const accepting = this.#state === "running" || this.#state === "starting";
    if (!accepting || this.#paused.has(queue) || !this.#pullers.has(queue)) {
      // Arrived after we stopped pulling: hand it straight back for another worker.
      this.#settle(queue, msg, ACK.nak);
      return;
    }
    const deliveryCount = deliveryCountOf(msg.reply ?? "");
    let task: TaskMessage;
    try {
      task = decodeTaskMessage(msg.data);
    } catch (err) {
      void this.#deadLetterUnreadable(queue, msg, err as Error, false);
      return;
    }
    if (deliveryCount > this.#maxDeliver) {
      const detail = `delivered ${deliveryCount} times without being settled (more than maxDeliver ${this.#maxDeliver}): its worker died or timed out every time`;
      void this.#deadLetter(queue, msg, task, DLQ_REASON.tooManyDeliveries, detail, { type: "TooManyDeliveriesError", message: detail, retryable: false });
      return;
    }
    const reg = this.#registry.get(task.task);
    if (!reg) {
      const detail = `no handler for task "${task.task}" on this worker of queue "${queue}" (it implements: ${this.registered.join(", ") || "nothing"})`;
      void this.#deadLetter(queue, msg, task, DLQ_REASON.unknownTask, detail, { type: "NotRegisteredError", message: detail, retryable: false });
      return;
    }
    const now = Date.now();
    const revocation = this.#revocations?.get(task.id);
    if (revocation) {
      void this.#finishRevoked(queue, msg, task, revocation.reason);
      return;
    }
    if (task.expires !== undefined && task.expires < now) {
      void this.#finishRevoked(queue, msg, task, expiredReason(task.expires));
      return;
    }
    if (task.eta !== undefined && task.eta > now + EARLY_ETA_MS) {
      // Not due yet (sent by a client that did not use the scheduled stream): move it there, so
      // waiting never counts as a delivery.
      void this.#moveToScheduled(queue, msg);
      return;
    }
    const flight = new InFlight(msg, queue, task, deliveryCount, now, STATE.received);
    this.#inFlight.add(flight);
    this.#events?.state(EVENT.received, task.id, task.task, queue, now, task.retries ?? 0);
    const checked = validate(reg.sig.args, task.args);
    if (checked instanceof Promise) checked.then((c) => this.#schedule(flight, reg, c), (e) => this.#schedule(flight, reg, { ok: false, issues: [{ message: String(e), path: "" }] }));
    else this.#schedule(flight, reg, checked);
  }

  async #moveToScheduled(queue: string, msg: Msg): Promise<void> {
    // A fresh dedupe id: when the scheduler moves it back, the tasks stream still remembers the
    // original id (dedupe window) and would drop it as a duplicate.
    const h = copyHeaders(msg.headers);
    const seq = parseAckSubject(msg.reply)?.streamSequence ?? Date.now();
    h.set(HEADER.msgId, `eta.${h.get(HEADER.msgId) || "x"}.${seq}`);
    try {
      await this.#publisher.publish(this.#client!.names.scheduledSubject(queue), msg.data, h);
      this.#settle(queue, msg, ACK.ack);
    } catch {
      this.#settle(queue, msg, `${ACK.nak} ${JSON.stringify({ delay: 1e9 })}`);
    }
  }

  #schedule(flight: InFlight, reg: Registration, checked: { ok: true; value: unknown } | { ok: false; issues: { message: string; path: string }[] }): void {
    if (!checked.ok) {
      const err = new InvalidArgumentsError(flight.task.task, checked.issues);
      this.#inFlight.delete(flight);
      void this.#deadLetter(flight.queue, flight.msg, flight.task, DLQ_REASON.invalidArgs, err.message, toErrorShape(err, false), flight);
      return;
    }
    const go = () =>
      void this.#execute(flight, reg, checked.value).catch((err) => {
        // A bug of ours must not take the worker down: log it and hand the message back.
        this.#log.error(`internal error while running ${flight.task.id}: ${(err as Error)?.stack ?? err}`);
        this.#finishFlight(flight, ACK.nak);
      });
    if (this.#canRun(flight.queue)) this.#take(flight.queue, go);
    else this.#waiting.push({ flight, go });
  }

  #canRun(queue: string): boolean {
    return this.#running < this.#concurrency && (this.#queueRunning.get(queue) ?? 0) < (this.#queueConfig.get(queue)?.concurrency ?? this.#concurrency);
  }

  /** Takes a worker slot and a queue slot, then runs. `#finishSlot(queue)` gives both back. */
  #take(queue: string, go: () => void): void {
    this.#running++;
    this.#queueRunning.set(queue, (this.#queueRunning.get(queue) ?? 0) + 1);
    go();
  }

  async #execute(flight: InFlight, reg: Registration, args: unknown): Promise<void> {
    if (this.#state === "new" || this.#state === "closed") {
      this.#finishSlot(flight.queue);
      return;
    }
    const { task } = flight;
    const slotAt = Date.now();
    if (this.#rates?.has(task.task)) await this.#rates.acquire(task.task, flight.signal);
    // Never before its ETA: the scheduler moves a task a few ms early (DUE_SLACK_MS) and a task
    // sent straight to its queue runs here when due within EARLY_ETA_MS; the rest of the wait is
    // spent here, holding the slot for those few ms (capped, should the clock step back). A timer
    // may fire up to a millisecond early by Date.now() (libuv's cached loop time): wait again then.
    for (let i = 0, now = Date.now(); i < 3 && task.eta !== undefined && task.eta > now; i++, now = Date.now()) {
      await new Promise((r) => setTimeout(r, Math.min(task.eta! - now + 1, EARLY_ETA_MS)));
    }
    if (flight.settled) {
      // Handed back while it waited here (close, pause, cancel_consumer): another worker runs it.
      this.#finishSlot(flight.queue);
      return;
    }
    const revokedMeanwhile = this.#revocations?.get(task.id);
    const expiredMeanwhile = task.expires !== undefined && task.expires < Date.now();
    if (revokedMeanwhile || expiredMeanwhile) {
      if (revokedMeanwhile) flight.revoked = revokedMeanwhile;
      const reason = revokedMeanwhile?.reason ?? expiredReason(task.expires!);
      await this.#storeAndAck(flight, this.#record(flight, STATE.revoked, { error: { type: "TaskRevokedError", message: reason, retryable: false } }));
      this.#finishSlot(flight.queue);
      return;
    }
    const startedAt = Date.now();
    flight.startedAt = startedAt;
    flight.state = STATE.started;
    this.#events?.state(EVENT.started, task.id, task.task, flight.queue, startedAt, task.retries ?? 0);
    const softLimit = task.softTimeLimit ?? reg.sig.options.softTimeLimit ?? this.#client!.settings.softTimeLimit;
    // Pools apply the soft limit inside the executor; inline handlers get it here.
    const softTimer = softLimit !== undefined && !this.#pool ? softLimitTimer(flight, softLimit) : undefined;
    const ctx = new RunContext(flight, this.#host!);
    const hardLimit = task.timeLimit ?? reg.sig.options.timeLimit ?? this.#client!.settings.timeLimit;
    let record: ResultRecord;
    let dead: { reason: DlqReason; detail: string } | undefined;
    // No closure in this function: V8 would allocate a context for its variables on every call.
    try {
      let value: unknown;
      if (this.#pool) {
        value = await this.#runPooled(this.#pool, flight, args, ctx, softLimit, hardLimit);
      } else if (hardLimit !== undefined) {
        // Inline handlers cannot be killed: at the hard limit the worker stops waiting, fails the
        // task and frees the slot (the handler's promise is abandoned). Use a pool to end it for real.
        value = await hardLimitRace(flight, reg.handler(args, ctx), hardLimit);
      } else {
        value = reg.handler(args, ctx);
        // Awaited only when it is a promise: a synchronous handler costs no turn of the microtask queue.
        if (isThenable(value)) value = await value;
      }
      let checked = validate(reg.sig.result, value);
      if (checked instanceof Promise) checked = await checked;
      if (!checked.ok) throw new InvalidResultError(task.task, checked.issues);
      record = this.#record(flight, STATE.success, { result: value });
    } catch (caught) {
      let err = caught;
      const retries = task.retries ?? 0;
      const maxRetries = task.maxRetries ?? reg.sig.options.retries ?? 0;
      if (flight.revoked) {
        clearTimeout(softTimer);
        if (!flight.settled) {
          await this.#storeAndAck(flight, this.#record(flight, STATE.revoked, { error: { type: "TaskRevokedError", message: flight.revoked.reason, retryable: false } }));
        }
        this.#finishSlot(flight.queue);
        return;
      }
      const requested = err instanceof RetryRequested;
      if (requested && retries >= maxRetries) {
        err = new MaxRetriesExceededError(`task "${task.task}" asked to retry (${(caught as RetryRequested).reason}) but has used its ${maxRetries} retries`);
      }
      const shape = err instanceof PooledFailure ? err.shape : toErrorShape(err);
      const autoretryFor = task.autoretryFor ?? reg.sig.options.autoretryFor;
      const wanted = requested || (shape.retryable && (!autoretryFor || autoretryFor.includes(shape.type)));
      if (wanted && retries < maxRetries && !flight.settled) {
        clearTimeout(softTimer);
        await this.#retry(flight, reg, shape, requested ? (caught as RetryRequested).delaySeconds : undefined);
        this.#finishSlot(flight.queue);
        return;
      }
      record = this.#record(flight, STATE.failure, { error: shape });
      dead = err instanceof InvalidResultError
        ? { reason: DLQ_REASON.invalidResult, detail: shape.message }
        : { reason: DLQ_REASON.failed, detail: `${shape.type}: ${shape.message}${maxRetries ? ` (after ${retries} retries)` : ""}` };
      this.stats.failed++;
    } finally {
      clearTimeout(softTimer);
    }
    this.#observeSlot(flight, slotAt);
    if (flight.settled) {
      // Its message was already returned to the queue (cold shutdown): the redelivered copy
      // produces the result, so this run's outcome is dropped rather than stored twice.
      this.#log.warn(`discarding the outcome of ${task.id}: its message was returned to the queue`);
      this.#finishSlot(flight.queue);
      return;
    }
    this.#handOver(flight);
    try {
      if (dead) await this.#deadLetterAfterRun(flight, record, dead.reason, dead.detail);
      else await this.#storeAndAck(flight, record);
    } finally {
      if (!flight.handedOver) this.#finishSlot(flight.queue);
    }
  }

  /** A task's handler ended: an adaptive prefetch follows how long slots are held and waited for. */
  #observeSlot(flight: InFlight, slotAt: number): void {
    const window = this.#queueConfig.get(flight.queue)?.prefetch;
    if (!window?.adaptive) return;
    const now = Date.now();
    // A rate-limited task is throttled whatever the window: holding more of them only makes them
    // wait here (the bucket's first tokens are free, so its first slots look short).
    const slotMs = this.#rates?.has(flight.task.task) ? HAND_BACK_AFTER_MS : now - slotAt;
    if (window.observe(slotMs, slotAt - flight.receivedAt, now)) this.#applyPrefetch(flight.queue);
  }

  /** Tells the queue's puller its window now. Only plain queues adapt: priority queues keep theirs. */
  #applyPrefetch(queue: string): void {
    const puller = this.#pullers.get(queue);
    const window = this.#queueConfig.get(queue)?.prefetch;
    if (window && puller instanceof QueuePuller) puller.setPrefetch(window.limit, window.base);
  }

  /**
   * Adaptive prefetch, when tasks turned long after short ones: messages held beyond the queue's
   * concurrency that waited for a slot longer than HAND_BACK_AFTER_MS go back to the server (the
   * newest first), so another worker can start them; the window falls back to the concurrency
   * and stays there a while. Only messages on their first delivery go back: each costs at most
   * one more delivery (as on close()), so hand-backs can never push a task to maxDeliver.
   */
  #handBackStale(now: number): void {
    for (const [queue, cfg] of this.#queueConfig) {
      if (!cfg.prefetch.adaptive) continue;
      const waiting = this.#waiting.filter((w) => w.flight.queue === queue && !w.flight.settled);
      const oldest = waiting[0]?.flight;
      if (!oldest || now - oldest.receivedAt < HAND_BACK_AFTER_MS) continue;
      if (cfg.prefetch.tooLong(now - oldest.receivedAt, now)) this.#applyPrefetch(queue);
      const keep = Math.max(0, cfg.prefetch.limit - (this.#queueRunning.get(queue) ?? 0));
      const back = waiting.slice(keep).filter((w) => w.flight.deliveryCount === 1);
      if (back.length === 0) continue;
      this.#log.info(`queue ${queue}: handing back ${back.length} waiting message(s); its tasks now run longer than prefetching assumed`);
      for (const w of back) {
        this.#waiting.splice(this.#waiting.indexOf(w), 1);
        this.#finishFlight(w.flight, ACK.nak);
      }
    }
  }

  /**
   * The handler is done: give its concurrency slot and its prefetch credit to the next message
   * now, while the outcome is stored and acked (one or two round trips to the server).
   *
   * Holding both until the ack left the slot idle for the whole store: at concurrency 50 the
   * worker drained 12–13k no-op tasks/s where prefetch 100 (the same worker holding the credit
   * longer) gave +12% in interleaved runs. A finished task is not work another worker could take,
   * so prefetch still bounds the messages waiting or running; the messages being committed are
   * bounded by another `prefetch`, so a slow server cannot make the worker pile up outcomes.
   * Messages of the scheduler are settled by its own puller and keep their slot to the end.
   */
  #handOver(flight: InFlight): void {
    if (flight.fromScheduler || flight.settled) return;
    const committing = this.#committing.get(flight.queue) ?? 0;
    if (committing >= (this.#queueConfig.get(flight.queue)?.prefetch.limit ?? 1)) return;
    this.#committing.set(flight.queue, committing + 1);
    flight.handedOver = true;
    // In a microtask, not a call: the next waiting task may run a synchronous handler and hand
    // over in turn, and direct calls would nest one stack frame per waiting task (a backlog of
    // prefetch synchronous tasks overflowed the stack in review).
    queueMicrotask(() => {
      this.#finishSlot(flight.queue);
      try {
        this.#pullers.get(flight.queue)?.release();
      } catch (err) {
        // A draining or closed connection refuses the pull request; the puller asks again later.
        this.#log.warn(`could not ask for the next message of ${flight.queue}: ${(err as Error).message}`);
      }
    });
  }

  /** Runs the task in the pool; resolves with its value, throws what the handler threw. */
  async #runPooled(pool: Pool, flight: InFlight, args: unknown, ctx: RunContext, softLimit: number | undefined, hardLimit: number | undefined): Promise<unknown> {
    const { task } = flight;
    const outcome = await pool.run({
      id: task.id, task: task.task, args, queue: flight.queue, attempt: ctx.attempt, retries: ctx.retries,
      deliveryCount: flight.deliveryCount, meta: task.meta ?? {}, worker: this.identity,
      ...(softLimit !== undefined ? { softTimeLimitMs: softLimit * MS } : {}),
      ...(hardLimit !== undefined ? { timeLimitMs: hardLimit * MS } : {}),
    }, { progress: ctx.progress, log: (level, message, data) => ctx.log[level as "info"]?.(message, data) }, flight.signal);
    if (!outcome.ok) {
      const asked = retryRequest(outcome.error);
      throw asked ? new RetryRequested(asked.delaySeconds, asked.reason) : new PooledFailure(outcome.error);
    }
    return outcome.value;
  }

  #finishSlot(queue: string): void {
    this.#running--;
    this.#queueRunning.set(queue, (this.#queueRunning.get(queue) ?? 1) - 1);
    // The first waiting task whose queue has room (FIFO within each queue).
    const i = this.#waiting.findIndex((w) => this.#canRun(w.flight.queue));
    if (i >= 0) {
      const [next] = this.#waiting.splice(i, 1);
      this.#take(next!.flight.queue, next!.go);
    } else this.#checkIdle();
  }

  /** Nothing runs and every outcome is stored and acked. */
  #idle(): boolean {
    if (this.#running > 0) return false;
    for (const n of this.#committing.values()) if (n > 0) return false;
    return true;
  }

  /** While stopping: resolves close()'s wait once the worker is idle. */
  #checkIdle(): void {
    if (this.#state === "stopping" && this.#idle()) this.#onIdle?.();
  }

  #queueAckWaitMs(queue: string): number {
    return this.#queueConfig.get(queue)?.ackWaitMs ?? this.#ackWaitMs;
  }

  #onIdle: (() => void) | undefined;

  /** Reports a handler's progress: to every watcher of the task, and as an event. */
  #progress(flight: InFlight, value: unknown): void {
    const { task } = flight;
    const client = this.#client!;
    const at = Date.now();
    const body = encode({ v: PROTOCOL_VERSION, kind: "progress", id: task.id, progress: value, at });
    // One subject for every watcher, the sender included (it subscribes when it listens).
    client.nc.publish(client.names.progressSubject(task.id), body);
    this.#events?.push({ type: EVENT.progress, id: task.id, task: task.task, queue: flight.queue, at, worker: this.identity.id, progress: value, retries: task.retries ?? 0 });
  }

  #record(flight: InFlight, state: TaskState, extra: { result?: unknown; error?: ErrorShape }): ResultRecord {
    const { task } = flight;
    const record: ResultRecord = {
      v: PROTOCOL_VERSION, id: task.id, task: task.task, state, queue: flight.queue,
      retries: task.retries ?? 0, worker: this.identity, sentAt: task.sentAt, receivedAt: flight.receivedAt,
      finishedAt: Date.now(),
    };
    // Set one by one, not spread: the spread copied `extra` key by key through a slow path.
    if ("result" in extra) record.result = extra.result;
    if ("error" in extra) record.error = extra.error;
    if (flight.startedAt !== undefined) record.startedAt = flight.startedAt;
    return record;
  }

  /** `record` as MessagePack (with `kind: "result"` when `final`: the form replies and results take). */
  #encodeRecord(record: ResultRecord, final: boolean): EncodedRecord {
    return encodeRecord(record, final, this.identity, this.#identityBytes);
  }

  /**
   * A result that cannot be stored: running the task again would give the same result, so it
   * fails for good (FAILURE with `type` and `detail`, dead-lettered as `invalid-result`).
   */
  async #failResult(flight: InFlight, type: string, detail: string): Promise<void> {
    const failure = this.#record(flight, STATE.failure, { error: { type, message: detail, retryable: false } });
    this.stats.failed++;
    await this.#deadLetterAfterRun(flight, failure, DLQ_REASON.invalidResult, detail);
  }

  /** Stores the record, replies to the caller, then acks. The ack never precedes the stored result. */
  async #storeAndAck(flight: InFlight, record: ResultRecord): Promise<void> {
    const client = this.#client!;
    let encoded: EncodedRecord;
    try {
      encoded = this.#encodeRecord(record, true);
    } catch (err) {
      // A value MessagePack cannot carry (a symbol, a BigInt beyond 64 bits, a cycle, too deep).
      if (record.state !== STATE.success) throw err;
      return this.#failResult(flight, "ResultNotEncodableError", `the result of task "${record.task}" cannot be encoded: ${(err as Error).message}`);
    }
    const { body, result } = encoded;
    if (body.length > this.#maxPayload() - 1024 && record.state === STATE.success) {
      return this.#failResult(flight, "ResultTooLargeError", `the result of task "${record.task}" is ${body.length} bytes, more than the server's max_payload (${this.#maxPayload()}): return a reference (an object-store key) instead`);
    }
    // Counted here, after the size check: a result too large to store is a failure, not a success.
    if (record.state === STATE.success) this.stats.succeeded++;
    // The caller's fast path first (latency), the stored copy next (what survives a lost reply),
    // the ack last. The reply may thus beat the store; a caller that reads the bucket right after
    // a reply may still see the older state for a moment.
    this.#reply(flight.task.replyTo, body);
    const pending = this.#finalize(flight);
    if (pending) await pending;
    try {
      await this.#publisher.publish(client.names.resultSubject(record.id), body);
      // Follow-up work is sent before the ack, so it is never lost with a crash in between.
      if (flight.task.callbacks !== undefined) await afterTask(client, flight.task, record);
    } catch (err) {
      // Not stored (or its callbacks not sent): do not ack. Hand the message back so the task
      // runs again (at-least-once; callbacks are deduplicated by their derived ids).
      this.#log.error(`could not store the result of ${record.id} or send its callbacks; returning the message to the queue in 5 s`, { error: (err as Error).message });
      this.#finishFlight(flight, DELAYED_NAK);
      return;
    }
    const now = Date.now();
    if (record.state === STATE.success) this.#events?.succeeded(record.id, record.task, flight.queue, now, result ?? encode(record.result), now - (flight.startedAt ?? now));
    else this.#events?.push(record.state === STATE.revoked
        ? { type: EVENT.revoked, id: record.id, task: record.task, queue: flight.queue, at: now, worker: this.identity.id, reason: record.error?.message ?? "revoked" }
        : { type: EVENT.failed, id: record.id, task: record.task, queue: flight.queue, at: now, worker: this.identity.id, error: record.error! });
    this.#finishFlight(flight, ACK.ack);
  }

  /**
   * Writes a record that is not final (RECEIVED, STARTED, RETRY) unless the task's record already
   * is final, with compare-and-set on the last sequence read: a write that lands late can then never
   * replace a final record written meanwhile. Without it, a RECEIVED write whose publish was retried
   * through a stream leader election landed after the SUCCESS of the same task's redelivery (its
   * first delivery handed back), and the stored record went back to RECEIVED (chaos case c, 10 of
   * 300 tasks). One read more per such write; these are written only for tasks that waited or ran
   * longer than stateWriteDelayMs. A conflict or failure is dropped: the state is informational.
   */
  async #writeInterim(taskId: string, body: Uint8Array): Promise<void> {
    const client = this.#client!;
    const subject = client.names.resultSubject(taskId);
    let last: { seq: number; state: string } | undefined;
    try {
      // A direct get (any replica): a stale read can only make the compare-and-set refuse the write.
      const stored = await (await client.jsm()).direct.getMessage(`KV_${client.names.resultsBucket}`, { last_by_subj: subject });
      if (stored) last = { seq: stored.seq, state: decodeResultRecord(stored.data).state };
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (last && FINAL_STATES.has(last.state as ResultRecord["state"])) return;
    const h = natsHeaders();
    h.set("Nats-Expected-Last-Subject-Sequence", String(last?.seq ?? 0));
    await this.#publisher.publish(subject, body, h);
  }

  /**
   * Before any final (or RETRY) record: no more RECEIVED/STARTED writes for this task, and the
   * pending one has landed, so it can never arrive on top of the final record.
   */
  #finalize(flight: InFlight): Promise<unknown> | undefined {
    flight.finalizing = true;
    return flight.stateWrite?.catch(() => {});
  }

  /** Best-effort core publish to a caller's reply subject: a bad subject must not hurt the worker. */
  #reply(subject: string | undefined, body: Uint8Array): void {
    if (!subject) return;
    try {
      publishFrame(this.#client!.nc, subject, body);
    } catch (err) {
      this.#log.warn(`could not reply to ${JSON.stringify(subject)}: ${(err as Error).message} (the result is stored)`);
    }
  }

  #finishFlight(flight: InFlight, ack: string): void {
    if (flight.settled) return;
    flight.settled = true;
    this.#inFlight.delete(flight);
    this.#ack(flight.msg, ack);
    if (flight.handedOver) {
      // Its credit went back when its handler finished.
      this.#committing.set(flight.queue, (this.#committing.get(flight.queue) ?? 1) - 1);
      this.#checkIdle();
    } else if (!flight.fromScheduler) {
      // The scheduler's puller is released by its own handler.
      this.#pullers.get(flight.queue)?.release();
    }
  }

  /** Acks (or naks) `msg` and gives its credit back. */
  #settle(queue: string, msg: Msg, ack: string): void {
    this.#ack(msg, ack);
    this.#pullers.get(queue)?.release();
  }

  #ack(msg: Msg, ack: string): void {
    if (msg.reply && !this.#client!.nc.isClosed()) publishFrame(this.#client!.nc, msg.reply, ack === ACK.ack ? ACK_BODY : UTF8.encode(ack));
  }

  async #retry(flight: InFlight, reg: Registration, error: ErrorShape, explicitDelay?: number): Promise<void> {
    const { task } = flight;
    const retries = (task.retries ?? 0) + 1;
    const base = task.retryDelay ?? reg.sig.options.retryDelay ?? 1;
    const cap = task.retryDelayMax ?? reg.sig.options.retryDelayMax ?? 600;
    // Exponential backoff with jitter (half to full delay) keeps retry storms from synchronising.
    const delayMs = explicitDelay !== undefined
      ? explicitDelay * MS
      : Math.min(cap, base * 2 ** (retries - 1)) * MS * (0.5 + Math.random() / 2);
    const next: TaskMessage = { ...task, retries, eta: Date.now() + delayMs };
    const client = this.#client!;
    const h = natsHeaders();
    // A new dedupe id per retry: the original id is still inside the duplicate window.
    h.set(HEADER.msgId, `${task.id}.r${retries}`);
    h.set(HEADER.task, task.task);
    try {
      // The retry waits in the scheduled stream like any delayed task.
      await this.#publisher.publish(client.names.scheduledSubject(flight.queue), encode(next), h);
    } catch (err) {
      this.#log.error(`could not schedule retry ${retries} of ${task.id}; returning the message`, { error: (err as Error).message });
      this.#finishFlight(flight, ACK.nak);
      return;
    }
    this.stats.retried++;
    // Celery's RETRY state: visible to status() until the retry runs and overwrites it.
    const retryRecord = this.#record(flight, STATE.retry, { error });
    delete retryRecord.finishedAt;
    await this.#finalize(flight);
    await this.#writeInterim(task.id, this.#encodeRecord(retryRecord, false).body).catch(() => {});
    this.#events?.push({ type: EVENT.retried, id: task.id, task: task.task, queue: flight.queue, at: Date.now(), worker: this.identity.id, retries, error, eta: next.eta! });
    this.#finishFlight(flight, ACK.ack);
  }

  async #finishRevoked(queue: string, msg: Msg, task: TaskMessage, reason: string): Promise<void> {
    const flight = new InFlight(msg, queue, task, 1, Date.now(), STATE.revoked);
    this.#inFlight.add(flight);
    await this.#storeAndAck(flight, this.#record(flight, STATE.revoked, { error: { type: "TaskRevokedError", message: reason, retryable: false } }));
  }

  /** A message that is no task message (malformed, or of a newer protocol version), from a queue or the scheduler. */
  #deadLetterUnreadable(queue: string, msg: Msg, err: Error, fromScheduler: boolean): Promise<void> {
    const reason = err instanceof UnsupportedVersionError ? DLQ_REASON.unsupportedVersion : DLQ_REASON.undecodable;
    return this.#deadLetter(queue, msg, undefined, reason, err.message, toErrorShape(err, false), undefined, fromScheduler);
  }

  /**
   * Copies the message to the dead-letter stream with the reason, records FAILURE under the task
   * id when there is one, and only then acks the original.
   */
  async #deadLetter(queue: string, msg: Msg, task: TaskMessage | undefined, reason: DlqReason, detail: string, error: ErrorShape, flight?: InFlight, fromScheduler = false): Promise<void> {
    this.#log.warn(`dead-lettering a message of queue ${queue}: ${reason}: ${detail}`);
    // MsgHdrs.get() answers "" for a missing header: `||`, not `??`.
    const id = task?.id || msg.headers?.get(HEADER.id) || msg.headers?.get(HEADER.msgId) || undefined;
    const f = flight ?? new InFlight(
      msg, queue, task ?? { v: PROTOCOL_VERSION, id: id ?? "", task: msg.headers?.get(HEADER.task) || "unknown", args: undefined, queue, sentAt: 0 },
      1, Date.now(), STATE.failure,
    );
    if (fromScheduler) f.fromScheduler = true;
    const record = id ? this.#record(f, STATE.failure, { error }) : undefined;
    await this.#deadLetterAfterRun(f, record, reason, detail);
  }

  async #deadLetterAfterRun(flight: InFlight, record: ResultRecord | undefined, reason: DlqReason, detail: string): Promise<void> {
    const client = this.#client!;
    const { msg } = flight;
    const h = copyHeaders(msg.headers);
    h.set(HEADER.dlqReason, reason);
    h.set(HEADER.dlqDetail, oneLine(detail));
    h.set(HEADER.dlqSubject, msg.subject);
    h.set(HEADER.dlqAt, String(Date.now()));
    h.set(HEADER.dlqWorker, this.identity.id);
    const delivery = parseAckSubject(msg.reply);
    if (delivery) h.set(HEADER.dlqSequence, String(delivery.streamSequence));
    // Dedupe the dead letter on the original sequence so a retried copy is not stored twice.
    h.set(HEADER.msgId, `dlq.${delivery?.streamSequence ?? Date.now()}.${flight.task.id || "x"}`);
    this.#inFlight.add(flight);
    await this.#finalize(flight);
    const subject = client.names.dlqSubject(flight.queue);
    let body = msg.data;
    const room = this.#maxPayload() - subject.length - (h as unknown as { encode(): Uint8Array }).encode().length - 512;
    if (body.length > room) {
      // A message near max_payload plus our headers would not fit: keep its start and its size,
      // so it is still dead-lettered (never bounced back to the queue forever).
      h.set(HEADER.dlqTruncated, String(body.length));
      body = body.subarray(0, Math.max(0, room - 64));
    }
    try {
      await this.#publisher.publish(subject, body, h);
    } catch (err) {
      this.#log.error(`could not dead-letter a message; returning it to the queue in 5 s`, { error: (err as Error).message });
      this.#finishFlight(flight, DELAYED_NAK);
      return;
    }
    this.stats.deadLettered++;
    this.#events?.push({ type: EVENT.deadLettered, id: flight.task.id, task: flight.task.task, queue: flight.queue, at: Date.now(), worker: this.identity.id, reason, ...(record?.error ? { error: record.error } : {}) });
    if (record) {
      this.#events?.push({ type: EVENT.failed, id: record.id, task: record.task, queue: flight.queue, at: Date.now(), worker: this.identity.id, error: record.error! });
      const { body } = this.#encodeRecord(record, true);
      this.#reply(flight.task.replyTo, body);
      await this.#publisher.publish(client.names.resultSubject(record.id), body).catch((err) => {
        this.#log.error(`could not store the FAILURE record of ${record.id} (the dead letter is stored)`, { error: (err as Error).message });
      });
      if (flight.task.callbacks !== undefined) {
        try {
          await afterTask(client, flight.task, record);
        } catch (err) {
          // Error callbacks (and chord membership) must not be lost: hand the message back; the
          // dead letter and the callbacks are deduplicated when it comes round again.
          this.#log.error(`could not send the error callbacks of ${record.id}; returning the message in 5 s`, { error: (err as Error).message });
          this.#finishFlight(flight, DELAYED_NAK);
          return;
        }
      }
    }
    this.#finishFlight(flight, ACK.ack);
  }

  /** Periodic duties: keep long tasks from being redelivered, and record the state of slow ones. */
  #sweep(): void {
    const client = this.#client;
    if (!client || client.nc.isClosed()) return;
    const now = Date.now();
    const delay = this.#stateWriteDelay();
    for (const f of this.#inFlight) {
      if (f.settled) continue;
      const ackWaitMs = this.#queueAckWaitMs(f.queue);
      if (now - f.lastWorkingAt >= ackWaitMs / 3 && f.msg.reply) {
        // Heartbeat independent of the handler: a running task on a live worker is never redelivered.
        client.nc.publish(f.msg.reply, ACK.working);
        f.lastWorkingAt = now;
      }
      if (!f.finalizing && now - f.receivedAt >= delay && f.writtenState !== f.state && (f.state === STATE.received || f.state === STATE.started)) {
        f.writtenState = f.state;
        const record = this.#record(f, f.state, {});
        delete record.finishedAt;
        const prev = f.stateWrite ?? Promise.resolve();
        f.stateWrite = prev.then(() => this.#writeInterim(f.task.id, this.#encodeRecord(record, false).body)).catch(() => {});
      }
    }
    if (this.#waiting.length > 0) this.#handBackStale(now);
  }

  /**
   * Stops pulling, returns waiting messages to the queue, lets running tasks finish (up to
   * `graceMs`, then aborts them and returns their messages too), flushes events and disconnects.
   */
  close(options: { graceMs?: number } = {}): Promise<void> {
    if (this.#closed) {
      if (options.graceMs === 0) this.#coldStop();
      return this.#closed;
    }
    this.#closed = this.#close(options.graceMs ?? this.#options.shutdownGraceMs ?? 30_000);
    return this.#closed;
  }

  async #close(graceMs: number): Promise<void> {
    if (this.#state === "new") {
      this.#state = "closed";
      this.#closedResolve();
      return;
    }
    this.#state = "stopping";
    this.#control?.stop();
    // Close (stop and unsubscribe) the pull inboxes before handing messages back: the server then
    // drops our open pull requests instead of delivering the returned messages straight back to us.
    for (const p of this.#pullers.values()) p.close();
    this.#scheduler?.close();
    // Eternal tasks first: abort their signals and release their leases so another worker takes
    // over at once (a cold stop does not wait for them to return).
    await Promise.all(this.#eternals.map((r) => r.stop({ graceMs: Math.min(graceMs, 10_000) })));
    // Messages held but not started go back at once, so another worker takes them now.
    const waiting = [...this.#inFlight].filter((f) => f.startedAt === undefined && !f.settled && f.state === STATE.received);
    this.#waiting.length = 0;
    for (const f of waiting) this.#finishFlight(f, ACK.nak);
    if (!this.#idle()) {
      const idle = new Promise<void>((r) => (this.#onIdle = r));
      if (!(await settledWithin(idle, graceMs))) this.#coldStop();
      await settledWithin(idle, 2000);
    }
    clearInterval(this.#sweepTimer);
    await this.#pool?.close({ graceMs: 0 });
    await this.#events?.close();
    await this.#publisher.settle();
    this.#revocations?.stop();
    if (this.#ownsClient) await this.#client!.close();
    this.#state = "closed";
    this.#log.info("worker closed", { ...this.stats });
    this.#closedResolve();
  }

  #coldStop(): void {
    for (const f of this.#inFlight) {
      if (f.settled) continue;
      f.abort(new WorkerShutdownError());
      this.#finishFlight(f, ACK.nak);
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/** The abort reason of `ctx.signal` on a cold shutdown: the task's message goes back to the queue. */
export class WorkerShutdownError extends Error {
  override name = "WorkerShutdownError";
  constructor() {
    super("the worker is shutting down; the task will be redelivered");
  }
}

/** Aborts the task's signal at its soft time limit. */
function softLimitTimer(flight: InFlight, seconds: number): ReturnType<typeof setTimeout> {
  return setTimeout(() => flight.abort(new SoftTimeLimitExceeded(flight.task.id, seconds)), seconds * MS);
}

/** `running`, or TimeLimitExceeded (and the task's signal aborted) at the hard time limit. */
function hardLimitRace(flight: InFlight, running: unknown, seconds: number): Promise<unknown> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const limit = new Promise((_, reject) => {
    timer = setTimeout(() => {
      flight.abort(new TimeLimitExceeded(flight.task.id, seconds));
      reject(new TimeLimitExceeded(flight.task.id, seconds));
    }, seconds * MS);
  });
  return Promise.race([running, limit]).finally(() => clearTimeout(timer));
}

function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (typeof value === "object" || typeof value === "function") && value !== null && typeof (value as { then?: unknown }).then === "function";
}

function oneLine(s: string): string {
  return s.replace(/[\r\n]+/g, " ").slice(0, 1000);
}

export { NonRetryableError };

/** The reason recorded for a task whose `expires` passed before it started. */
function expiredReason(expires: number): string {
  return `expired at ${new Date(expires).toISOString()} before it started`;
}

/** A task due within this many ms runs on the worker that received it (waiting out the rest) instead of being moved to the scheduled stream. */
const EARLY_ETA_MS = 50;

/**
 * A queue's prefetch: a serial queue holds exactly the one message the server hands out; a queue
 * served with priorities keeps a fixed window (a message held here waits behind it even when a
 * higher priority arrives); otherwise the prefetch set by the user, or an adaptive window.
 */
function prefetchWindow(serial: boolean, priorities: boolean, concurrency: number, set: number | undefined): PrefetchWindow {
  if (serial) return new PrefetchWindow(1, 1);
  return new PrefetchWindow(concurrency, set ?? (priorities ? concurrency : undefined));
}
