/**
 * The lightweight client: connect, send typed signatures, call and wait, read results and progress.
 * It never imports worker code, so notebooks, scripts and the HPC callback stay small.
 */
import { createInbox, type Msg, type MsgHdrs, type NatsConnection, type Subscription } from "@nats-io/nats-core";
import type { JetStreamManager } from "@nats-io/jetstream";
import {
  ConnectionClosedError,
  decodeReply,
  decodeResultRecord,
  encode,
  FINAL_STATES,
  HEADER,
  InvalidArgumentsError,
  CelerityError,
  InvalidResultError,
  names,
  PayloadTooLargeError,
  PROTOCOL_VERSION,
  ResultTimeoutError,
  STATE,
  UnsupportedVersionError,
  assertTaskId,
  assertTaskName,
  type ControlReply,
  type Names,
  type ResultRecord,
  type TaskEvent,
  type WorkerEntry,
} from "../protocol/mod.ts";
import {
  checkTaskOptions,
  etaOf,
  isSignature,
  taskMessage,
  validate,
  type AnySignature,
  type ArgsInput,
  type ResultOutput,
  type TaskOptions,
  type Validation,
} from "../signatures/mod.ts";
import { loadSettingsAsync, type Settings, type SettingsInput } from "../settings/mod.ts";
import { environment, openConnection, readTextFile } from "../transport/mod.ts";
import type { Callbacks } from "../canvas/mod.ts";
import { DeadLetters } from "./dead_letters.ts";
import { gatherReplies, listScheduled, listWorkers, type ControlOptions, type ControlVerb, type InspectVerb } from "./control.ts";
import { EventBuffer } from "./events.ts";
import { recordOutcome, TaskHandle, type TaskStatus } from "./handle.ts";
import { AckedPublisher } from "./publisher.ts";
import { encodeTask, fixedHeaders, randomTaskId } from "./wire.ts";
import { ensureTopology, isNotFound } from "./topology.ts";
import { Router, UnknownQueueError, type RouteFunction } from "./routing.ts";

/** Options of one send; override the signature's defaults. */
export interface SendOptions extends TaskOptions {
  /** Use this task id instead of a generated UUID (it must be unique: it is the dedupe key). */
  id?: string;
  /** Do not run before this time (a valid Date or epoch ms; not together with `countdown`). */
  eta?: Date | number;
  /** Do not run before this many seconds from now (≥ 0; not together with `eta`). */
  countdown?: number;
  /** Plain data carried with the task (tracing, parent ids). */
  meta?: Record<string, unknown>;
  /**
   * A caller's key for "this request": sends with the same key within `dedupeWindow` are stored
   * once and share one task id (so they share one result).
   */
  idempotencyKey?: string;
  /** Tasks to send when this one finishes (see celerity/canvas: `link`, `linkError`). */
  callbacks?: Callbacks;
}

/** Options of {@link Client.revoke}. */
export interface RevokeOptions {
  /** Also end a running execution for real (its executor is killed in the threads/processes pools). */
  terminate?: boolean;
  /** Why, for the record and the events. */
  reason?: string;
}

/** Options of {@link Client.call}. */
export interface CallOptions extends SendOptions {
  /** Milliseconds to wait for the result. */
  timeout?: number;
}

/** Options of {@link connect}: any setting, a settings file, or an existing connection. */
export interface ConnectOptions extends SettingsInput {
  /** Settings file to read instead of the one named by CELERITY_SETTINGS. */
  file?: string;
  /** Reuse an open NATS connection (it is not closed by `client.close()`). */
  connection?: NatsConnection;
  /** A route in code, consulted after the settings' routes (see docs/routing.md). */
  route?: RouteFunction;
}

interface Waiter {
  resolve: (record: ResultRecord) => void;
  reject: (err: Error) => void;
  /** Epoch ms of the last look at the results bucket for this task. */
  checkedAt: number;
}

/**
 * A reply can be lost (the caller was reconnecting when the worker answered); the stored result
 * cannot. Waiters older than this re-read the results bucket, each at most this often.
 */
const STORED_RESULT_POLL_MS = 5_000;
/** At most this many stored-result reads per poll, so thousands of waiting handles stay cheap. */
const STORED_RESULT_POLL_BATCH = 200;

/** The options of a send() given none. */
const NO_OPTIONS: SendOptions = Object.freeze({});

/** Results replied to this client but not yet asked for are kept this long (bounded count). */
const MAX_UNCLAIMED_RESULTS = 100_000;
/**
 * A final record this client received by reply answers its own status() for this long: the worker
 * replies before it stores (docs/protocol.md §11), and a caller that just got a result expects
 * status() to agree, as Celery's AsyncResult.state does after get().
 */
const SETTLED_FRESH_MS = 10_000;
const MAX_SETTLED_RESULTS = 1_000;

/**
 * Connects to NATS with settings from the file named by CELERITY_SETTINGS, then the environment,
 * then `options` (see docs/settings.md).
 */
export async function connect(options: ConnectOptions = {}): Promise<Client> {
  const { connection, route, ...settingsInput } = options;
  const settings = await loadSettingsAsync(settingsInput, { env: environment(), readTextFile });
  const nc = connection ?? (await openConnection(settings));
  return new Client(nc, settings, connection === undefined, route);
}

/** A connection to Celerity. Create it with {@link connect}; close it with `close()`. */
export class Client implements AsyncDisposable {
  /** The underlying NATS connection. */
  readonly nc: NatsConnection;
  /** The resolved settings. */
  readonly settings: Settings;
  /** The namespace's names (streams, subjects, buckets). */
  readonly names: Names;
  /** The JetStream publisher used for tasks and events (shared with workers on this connection). */
  readonly publisher: AckedPublisher;
  readonly #ownsConnection: boolean;
  readonly #events: EventBuffer | undefined;
  readonly #replyPrefix: string;
  readonly #replySub: Subscription;
  readonly #waiters = new Map<string, Waiter[]>();
  readonly #unclaimed = new Map<string, ResultRecord>();
  /** The topology repair under way for publishes that found no stream, shared by all of them. */
  #repairing: Promise<boolean> | undefined;
  /** Final records recently handed to waiters, with when (see SETTLED_FRESH_MS). */
  readonly #settled = new Map<string, { record: ResultRecord; at: number }>();
  readonly #progressListeners = new Map<string, Set<(p: unknown) => void>>();
  readonly #progressSubs = new Map<string, Subscription>();
  readonly #kvSubs = new Map<string, Subscription>();
  #topology: Promise<void> | undefined;
  #jsm: Promise<JetStreamManager> | undefined;
  #closed = false;

  /** Decides the queue of each task (call, signature, routes, first segment, default). */
  readonly router: Router;
  readonly #servedQueues = new Set<string>();

  constructor(nc: NatsConnection, settings: Settings, ownsConnection = false, route?: RouteFunction) {
    this.nc = nc;
    this.settings = settings;
    this.names = names(settings.namespace);
    this.router = new Router(settings, route);
    this.#ownsConnection = ownsConnection;
    this.publisher = new AckedPublisher(nc, {
      ackTimeoutMs: settings.requestTimeout,
      // The first publish into a fresh server finds no stream: create the topology then, lazily,
      // so a one-shot script pays no stream lookups when it already exists. Publishes that fail
      // together (many in flight) share one repair.
      onNoStream: () => (this.#repairing ??= this.ensureTopology(true).then(() => true).finally(() => (this.#repairing = undefined))),
    });
    // Batched like the worker's (20 ms): a sequential sender then stores one event message per
    // batch, not per task. Monitors order events by `at` and state, not by arrival.
    this.#events = settings.events ? new EventBuffer(this.publisher, this.names.eventsSubject("task"), nc) : undefined;
    this.#replyPrefix = createInbox();
    // `>`: task ids may contain dots.
    this.#replySub = nc.subscribe(`${this.#replyPrefix}.>`, { callback: (_e, msg) => this.#onReply(msg) });
    void this.#watchConnection();
  }

  /**
   * Asks workers (all, or the destination's) a read-only question: ping, active, reserved,
   * scheduled, registered, stats, queues, revoked. Resolves with each worker's answer by id.
   */
  async inspect(verb: InspectVerb, options: ControlOptions = {}): Promise<Record<string, unknown>> {
    const replies = await gatherReplies(this.nc, this.names, verb, undefined, options);
    return Object.fromEntries(replies.map((r) => [r.worker, r.ok ? r.result : { error: r.error }]));
  }

  /**
   * Tells workers to change: shutdown, pool_grow / pool_shrink `{n}`, rate_limit `{task, rate,
   * global?}`, add_consumer / cancel_consumer `{queue}`, pause_queue / resume_queue `{queue}`.
   * Resolves with each worker's reply.
   */
  async control(verb: ControlVerb, args: Record<string, unknown> = {}, options: ControlOptions = {}): Promise<ControlReply[]> {
    return gatherReplies(this.nc, this.names, verb, args, options);
  }

  /** Live workers from the registry: host, pid, queues, concurrency, active, processed, heartbeat. */
  async workers(): Promise<WorkerEntry[]> {
    return listWorkers(await this.jsm(), this.names);
  }

  /** Tasks waiting for their ETA (countdowns and retry delays), soonest first. */
  async scheduled(limit = 1000): Promise<Awaited<ReturnType<typeof listScheduled>>> {
    return listScheduled(await this.jsm(), this.names, limit);
  }

  /** The dead-letter stream: list, show, replay, purge. */
  get deadLetters(): DeadLetters {
    this.#deadLetters ??= new DeadLetters(this);
    return this.#deadLetters;
  }
  #deadLetters: DeadLetters | undefined;

  /** Creates streams and the results bucket if missing (idempotent; also done lazily on first use). */
  ensureTopology(force = false): Promise<void> {
    if (!this.#topology || force) {
      const s = this.settings;
      this.#topology = this.jsm().then((jsm) => ensureTopology(jsm, this.names, {
        resultExpires: s.resultExpires,
        eventsMaxAge: s.eventsMaxAge,
        eventsMaxBytes: s.eventsMaxBytes,
        dlqMaxAge: s.dlqMaxAge,
        replicas: s.replicas,
        storage: s.storage,
        duplicateWindow: s.dedupeWindow,
        revokeExpires: s.revokeExpires,
      })).catch((err) => {
        this.#topology = undefined;
        throw err;
      });
    }
    return this.#topology;
  }

  /**
   * JetStream management API on this connection (cached). @nats-io/jetstream is imported on first
   * use: a script that only sends to known queues never needs it (14 ms to load unbundled).
   */
  jsm(): Promise<JetStreamManager> {
    // jetstreamManager() asks the server for the account's JetStream info; if that fails (no
    // answer during an election, JetStream not enabled yet), the next call must ask again rather
    // than get the cached rejection for the life of the client.
    this.#jsm ??= import("@nats-io/jetstream")
      .then(({ jetstreamManager }) => jetstreamManager(this.nc, { timeout: this.settings.requestTimeout }))
      .catch((err) => {
        this.#jsm = undefined;
        if ((err as Error)?.name === "JetStreamNotEnabled") {
          throw new CelerityError(
            `JetStream is not enabled on the NATS server this client is connected to (${this.nc.getServer()}): ` +
              `start nats-server with -js (or a jetstream block in its configuration), or enable JetStream for this account`,
            { cause: err },
          );
        }
        throw err;
      });
    return this.#jsm;
  }

  /**
   * Task events this client could not store (their batch was refused or timed out after every
   * retry). Tasks are not affected: events are a monitoring copy.
   */
  get eventsDropped(): number {
    return this.#events?.dropped ?? 0;
  }

  /** @internal queues a task event in this client's batches (canvas launches); nothing when events are off. */
  pushEvent(event: TaskEvent): void {
    this.#events?.push(event);
  }

  /**
   * Sends a task and resolves once JetStream has stored it. Arguments are validated against the
   * signature's schema first: invalid ones throw {@link InvalidArgumentsError} and nothing is sent.
   */
  send<S extends AnySignature>(sig: S, args: ArgsInput<S>, options?: SendOptions): Promise<TaskHandle<ResultOutput<S>>>;
  /** Sends a task by name, without a schema (Celery's `send_task`). */
  send(name: string, args?: unknown, options?: SendOptions): Promise<TaskHandle<unknown>>;
  send(target: AnySignature | string, args?: unknown, options?: SendOptions): Promise<TaskHandle<unknown>> {
    return this.#send(target, args, options, false);
  }

  /**
   * send(), and with `reply` the task carries this client's reply subject (call() waits there).
   * A sent task does not: its handle follows the stored result, so a process that sends many tasks
   * and never waits is not sent every result (workers publish one message less per task).
   */
  #send(target: AnySignature | string, args: unknown, options: SendOptions | undefined, reply: boolean): Promise<TaskHandle<unknown>> {
    try {
      const sig = isSignature(target) ? target : undefined;
      const name = sig ? sig.name : (target as string);
      if (!sig) assertTaskName(name);
      const checked = validate(sig?.args, args);
      if (checked instanceof Promise) return checked.then((c) => this.#publishTask(sig, name, args, c, options, reply));
      return this.#publishTask(sig, name, args, checked, options, reply);
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Builds, checks and publishes one task; throws (synchronously) what send() must reject with. */
  #publishTask(
    sig: AnySignature | undefined,
    name: string,
    args: unknown,
    checked: Validation<unknown>,
    options: SendOptions | undefined,
    reply: boolean,
  ): Promise<TaskHandle<unknown>> {
    if (!checked.ok) throw new InvalidArgumentsError(name, checked.issues);
    if (this.#closed) throw new ConnectionClosedError("cannot send: the client is closed");
    const { id: givenId, eta, countdown, meta, idempotencyKey, callbacks, ...taskOptions } = options ?? NO_OPTIONS;
    // Without per-call options (the common case) the signature's options are used as they are.
    let o: TaskOptions = sig ? sig.options : taskOptions;
    if (options !== undefined) {
      checkTaskOptions(taskOptions as Record<string, unknown>, `send("${name}")`);
      if (sig) o = { ...sig.options, ...stripUndefined(taskOptions) };
    }
    if (givenId !== undefined) assertTaskId(givenId);
    const id = givenId ?? (idempotencyKey !== undefined ? idempotentId(idempotencyKey) : randomTaskId());
    const now = Date.now();
    const etaMs = eta === undefined && countdown === undefined ? undefined : etaOf(eta, countdown, now, `send("${name}")`);
    const route = this.router.route(name, sig, taskOptions.queue, args);
    const queue = route.queue;
    const message = taskMessage({ id, task: name, args, queue, sentAt: now, replyTo: reply ? `${this.#replyPrefix}.${id}` : undefined, eta: etaMs, meta, callbacks }, o);
    // Encoded once: the task-sent event copies its id, task, queue and args bytes.
    const { body, sentEvent } = encodeTask(message, this.#events !== undefined, this.#events?.valueLimit);
    const max = (this.nc.info?.max_payload ?? 1024 * 1024) - 512; // room for headers and subject
    if (body.length > max) throw new PayloadTooLargeError(body.length, max, `task "${name}" (${id})`);
    // Ids and names are tokens (checked above or by signature()), so they are header-safe.
    const h = fixedHeaders(HEADER.msgId, id, HEADER.task, name);
    const subject = this.names.subjectFor(message, now);
    // Asked last, once nothing can throw before its promise is awaited. Arrows passed inline, not
    // named: tsx and esbuild's keepNames wrap a named one in __name() per call.
    if (this.router.needsCheck(route, sig !== undefined)) return this.#assertServed(name, queue).then(() => this.#store(subject, body, h, sentEvent, id, name, sig));
    return this.#store(subject, body, h, sentEvent, id, name, sig);
  }

  /** Publishes a task; once stored, queues its task-sent event and resolves with its handle. */
  #store(subject: string, body: Uint8Array, h: MsgHdrs, sentEvent: Uint8Array | undefined, id: string, name: string, sig: AnySignature | undefined): Promise<TaskHandle<unknown>> {
    return this.publisher.publishThen(subject, body, h, () => {
      if (sentEvent) this.#events?.push(sentEvent);
      return new TaskHandle(this, id, name, sig);
    });
  }

  /** Throws UnknownQueueError unless a durable consumer (a worker, now or before) serves `queue`. */
  async #assertServed(task: string, queue: string): Promise<void> {
    if (this.#servedQueues.has(queue)) return;
    const jsm = await this.jsm();
    // A FIFO queue has one consumer; a queue with priorities has one per level (level 0 always).
    let served = false;
    for (const name of [this.names.queueConsumer(queue), this.names.priorityConsumer(queue, 0)]) {
      try {
        await jsm.consumers.info(this.names.tasksStream, name);
        served = true;
        break;
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    if (!served) throw new UnknownQueueError(task, queue);
    this.#servedQueues.add(queue);
  }

  /**
   * Revokes task `id`: a worker that receives it later records REVOKED instead of running it, and a
   * running execution has its signal aborted (or, with `terminate`, its executor killed). The
   * revocation is stored (for `revokeExpires`), so workers started later honour it too.
   */
  async revoke(id: string, options: RevokeOptions = {}): Promise<void> {
    assertTaskId(id);
    const body = encode({ v: PROTOCOL_VERSION, id, at: Date.now(), terminate: options.terminate === true, reason: options.reason ?? "revoked by request" });
    await this.publisher.publish(this.names.revokedSubject(id), body);
  }

  /** Sends a task and waits for its result (request/reply fast path, results bucket as fallback). */
  call<S extends AnySignature>(sig: S, args: ArgsInput<S>, options?: CallOptions): Promise<ResultOutput<S>>;
  /** Calls a task by name, without a schema. */
  call(name: string, args?: unknown, options?: CallOptions): Promise<unknown>;
  async call(target: AnySignature | string, args?: unknown, options: CallOptions = {}): Promise<unknown> {
    const { timeout, ...sendOptions } = options;
    const id = sendOptions.id ?? (sendOptions.idempotencyKey !== undefined ? idempotentId(sendOptions.idempotencyKey) : randomTaskId());
    // Register the waiter before sending so a fast reply cannot race past it.
    const waiting = this.waitForRecord(id, timeout, true);
    // It may reject (timeout, close) while send() is still awaited: mark it handled now.
    waiting.catch(() => {});
    let handle: TaskHandle<unknown>;
    try {
      handle = await this.#send(target, args, { ...sendOptions, id }, true);
    } catch (err) {
      this.#dropWaiters(id, err as Error);
      throw err;
    }
    return this.settleRecord(await waiting, handle.signature);
  }

  /** A handle for a task id another process sent (results come from the results bucket). */
  task<S extends AnySignature>(id: string, sig: S): TaskHandle<ResultOutput<S>>;
  task(id: string): TaskHandle<unknown>;
  task(id: string, sig?: AnySignature): TaskHandle<unknown> {
    assertTaskId(id);
    return new TaskHandle(this, id, sig?.name ?? "", sig);
  }

  /** The current state of task `id`: its stored record, or PENDING when none is stored. */
  async status(id: string): Promise<TaskStatus> {
    const record = this.#unclaimed.get(id) ?? this.#freshlySettled(id) ?? (await this.getRecord(id));
    return record ? { id, state: record.state, record } : { id, state: STATE.pending };
  }

  /** Reads the stored record of task `id` from the results bucket, or undefined. */
  async getRecord(id: string): Promise<ResultRecord | undefined> {
    const jsm = await this.jsm();
    try {
      const msg = await jsm.streams.getMessage(`KV_${this.names.resultsBucket}`, { last_by_subj: this.names.resultSubject(id) });
      if (!msg || msg.data.length === 0) return undefined;
      return decodeResultRecord(msg.data);
    } catch (err) {
      if (/no message found|not found|404/i.test((err as Error).message)) return undefined;
      throw err;
    }
  }

  /**
   * Waits for task `id`'s final record: from this client's reply inbox, from the results bucket
   * (read once, then followed live on its subject), and read again after every reconnect.
   * @internal used by handles
   */
  waitForRecord(id: string, timeoutMs?: number, sentHere = false): Promise<ResultRecord> {
    const ready = this.#unclaimed.get(id);
    if (ready) return Promise.resolve(ready);
    if (this.#closed) return Promise.reject(new ConnectionClosedError(`cannot wait for task ${id}: the client is closed`));
    return new Promise<ResultRecord>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waiter: Waiter = {
        checkedAt: Date.now(),
        resolve: (r) => {
          if (timer) clearTimeout(timer);
          resolve(r);
        },
        reject: (e) => {
          if (timer) clearTimeout(timer);
          reject(e);
        },
      };
      const list = this.#waiters.get(id);
      if (list) list.push(waiter);
      else this.#waiters.set(id, [waiter]);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.#removeWaiter(id, waiter);
          reject(new ResultTimeoutError(id, timeoutMs));
        }, timeoutMs);
      }
      if (!sentHere) this.#followStoredResult(id);
      this.#startPolling();
    });
  }

  #pollTimer: ReturnType<typeof setInterval> | undefined;

  #startPolling(): void {
    if (this.#pollTimer !== undefined) return;
    this.#pollTimer = setInterval(() => {
      if (this.#waiters.size === 0) {
        clearInterval(this.#pollTimer);
        this.#pollTimer = undefined;
        return;
      }
      const now = Date.now();
      let budget = STORED_RESULT_POLL_BATCH;
      for (const [id, list] of this.#waiters) {
        if (budget === 0) break;
        const w = list[0]!;
        if (now - w.checkedAt < STORED_RESULT_POLL_MS) continue;
        w.checkedAt = now;
        budget--;
        this.#checkStored(id);
      }
    }, 1000);
    // Waiting for a result keeps a script alive through its own promise, not through this timer.
    (this.#pollTimer as { unref?: () => void }).unref?.();
  }

  #followStoredResult(id: string): void {
    if (!this.#kvSubs.has(id)) {
      // A core subscription on the bucket's subject sees the worker's result as it is stored.
      const sub = this.nc.subscribe(this.names.resultSubject(id), {
        callback: (_e, msg) => {
          try {
            this.#deliver(decodeResultRecord(msg.data));
          } catch (err) {
            this.#unreadable(id, err); // not a record: ignored; a newer version's: said to the waiters
          }
        },
      });
      this.#kvSubs.set(id, sub);
    }
    this.#checkStored(id);
  }

  #checkStored(id: string): void {
    this.getRecord(id).then(
      (record) => record && this.#deliver(record),
      (err) => this.#unreadable(id, err),
    );
  }

  /**
   * A record or reply for `id` that could not be read. Written by a newer protocol version: the
   * waiters get that error now (waiting longer would not help). Anything else: ignored, the stored
   * record is polled again.
   */
  #unreadable(id: string, err: unknown): void {
    if (err instanceof UnsupportedVersionError) this.#dropWaiters(id, err);
  }

  #onReply(msg: Msg): void {
    let reply;
    try {
      reply = decodeReply(msg.data);
    } catch (err) {
      // The reply subject is `<replyPrefix>.<task id>` (read only on this rare path).
      this.#unreadable(msg.subject.slice(this.#replyPrefix.length + 1), err);
      return;
    }
    if (reply.kind === "progress") {
      for (const l of this.#progressListeners.get(reply.id) ?? []) l(reply.progress);
      return;
    }
    this.#deliver(reply);
  }

  #deliver(record: ResultRecord): void {
    if (!FINAL_STATES.has(record.state)) return;
    const list = this.#waiters.get(record.id);
    if (list) {
      this.#waiters.delete(record.id);
      this.#unsubscribeResult(record.id);
      if (this.#settled.size >= MAX_SETTLED_RESULTS) this.#settled.delete(this.#settled.keys().next().value!);
      this.#settled.set(record.id, { record, at: Date.now() });
      for (const w of list) w.resolve(record);
      return;
    }
    // Nobody asked yet (send() now, result() later): keep it, bounded.
    if (this.#unclaimed.size >= MAX_UNCLAIMED_RESULTS) {
      const oldest = this.#unclaimed.keys().next().value;
      if (oldest !== undefined) this.#unclaimed.delete(oldest);
    }
    this.#unclaimed.set(record.id, record);
  }

  #freshlySettled(id: string): ResultRecord | undefined {
    const entry = this.#settled.get(id);
    if (!entry) return undefined;
    if (Date.now() - entry.at < SETTLED_FRESH_MS) return entry.record;
    this.#settled.delete(id);
    return undefined;
  }

  #unsubscribeResult(id: string): void {
    const sub = this.#kvSubs.get(id);
    if (sub) {
      this.#kvSubs.delete(id);
      if (!this.nc.isClosed()) sub.unsubscribe();
    }
  }

  #removeWaiter(id: string, waiter: Waiter): void {
    const list = this.#waiters.get(id);
    if (!list) return;
    const rest = list.filter((w) => w !== waiter);
    if (rest.length) this.#waiters.set(id, rest);
    else {
      this.#waiters.delete(id);
      this.#unsubscribeResult(id);
    }
  }

  /**
   * Forgets the waiters of a task, rejecting them with `reason` (its send failed, or its result
   * cannot be read): rejecting clears their timers, so no process is kept alive until a timeout.
   */
  #dropWaiters(id: string, reason: Error): void {
    const list = this.#waiters.get(id) ?? [];
    this.#waiters.delete(id);
    this.#unsubscribeResult(id);
    for (const w of list) w.reject(reason);
  }

  /** @internal validates a final record's result with the signature's result schema and settles it. */
  async settleRecord(record: ResultRecord, sig?: AnySignature): Promise<unknown> {
    const outcome = recordOutcome(record);
    if (!outcome.ok) throw outcome.error;
    if (sig?.result) {
      const checked = await validate(sig.result, outcome.value);
      if (!checked.ok) throw new InvalidResultError(record.task, checked.issues);
      return checked.value;
    }
    return outcome.value;
  }

  /** @internal progress reports of task `id`. */
  onProgress(id: string, listener: (p: unknown) => void): () => void {
    let set = this.#progressListeners.get(id);
    if (!set) {
      set = new Set();
      this.#progressListeners.set(id, set);
      // Reports also go to the task's progress subject, so a process that did not send it can watch.
      const sub = this.nc.subscribe(this.names.progressSubject(id), {
        callback: (_e, msg) => {
          try {
            const r = decodeReply(msg.data);
            if (r.kind === "progress") for (const l of this.#progressListeners.get(id) ?? []) l(r.progress);
          } catch {
            /* ignore */
          }
        },
      });
      this.#progressSubs.set(id, sub);
    }
    set.add(listener);
    return () => {
      set!.delete(listener);
      if (set!.size === 0) {
        this.#progressListeners.delete(id);
        const sub = this.#progressSubs.get(id);
        this.#progressSubs.delete(id);
        if (sub && !this.nc.isClosed()) sub.unsubscribe();
      }
    };
  }

  async #watchConnection(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === "reconnect") {
        // Replies sent while we were away are lost; the stored results are not. Look now, and
        // let the poll look again soon (a result may be stored moments after we reconnected).
        const soon = Date.now() - STORED_RESULT_POLL_MS + 1000;
        for (const [id, list] of this.#waiters) {
          for (const w of list) w.checkedAt = soon;
          this.#checkStored(id);
        }
      }
    }
    // The status iterator ends when the connection closes: nothing will answer pending waits.
    this.#failWaiters(new ConnectionClosedError("the NATS connection closed while waiting for a result"));
  }

  #failWaiters(err: Error): void {
    for (const [id, list] of this.#waiters) {
      this.#waiters.delete(id);
      for (const w of list) w.reject(err);
    }
  }

  /** Flushes events, waits for outstanding acknowledgements, and closes the connection if we opened it. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#events?.close();
    await this.publisher.settle();
    this.publisher.close();
    if (this.#pollTimer !== undefined) clearInterval(this.#pollTimer);
    this.#failWaiters(new ConnectionClosedError("the client was closed while waiting for a result"));
    if (this.#ownsConnection && !this.nc.isClosed()) await this.nc.drain();
    else if (!this.nc.isClosed()) this.#replySub.unsubscribe();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }
}

/**
 * The task id an idempotency key stands for: the key itself when it is a valid id, otherwise a
 * stable hash of it (FNV-1a, 64 bit), so the same key always names the same task.
 */
export function idempotentId(key: string): string {
  if (typeof key !== "string" || key === "") throw new TypeError("idempotencyKey must be a non-empty string");
  if (key.length <= 128 && /^[A-Za-z0-9_=-]+(\.[A-Za-z0-9_=-]+)*$/.test(key)) return key;
  let h = 0xcbf29ce484222325n;
  for (const byte of new TextEncoder().encode(key)) {
    h ^= BigInt(byte);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return `key-${h.toString(16).padStart(16, "0")}`;
}

function stripUndefined<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>;
}
