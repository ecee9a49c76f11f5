/**
 * Eternal tasks (GWCelery's `celery_eternal`): long-running functions that keep a connection open
 * to some outside service and must run exactly once across the fleet. Every runner of a name
 * contends for a lease in the namespace's eternal bucket; the holder runs the function, renews
 * the lease every third of its length on a timer independent of the function, and restarts the
 * function with exponential backoff when it throws or returns. A runner whose worker dies stops
 * renewing, and another runner takes over within the lease time. Losing the lease, or stopping,
 * aborts the function's signal.
 *
 * The lease key holds the task's state too (holder, status, restarts, last error), so any client
 * sees it with {@link eternalStatus} and a stale holder can never overwrite it (every write is a
 * compare-and-set on the revision).
 */
import type { KV, KvEntry } from "@nats-io/kv";
import { clockSlackMs, createLogger, isCasConflict, openBucket, type Client, type Logger } from "../client/mod.ts";
import { assertTaskName, decode, encode, PROTOCOL_VERSION } from "../protocol/mod.ts";

/** What the function of an eternal task receives. */
export interface EternalContext {
  /** The eternal task's name. */
  readonly name: string;
  /** Aborted when this runner stops or loses the lease: the function must then return promptly. */
  readonly signal: AbortSignal;
  readonly log: Logger;
  /** A client on the worker's connection (send tasks, dispatch packets). */
  readonly client: Client;
  /** Records that the function is alive and making progress (stored with the next renewal). */
  heartbeat(): void;
  /** The lease term this run holds (increases with every change of holder). */
  readonly term: number;
}

/** Options of {@link EternalRunner}. */
export interface EternalOptions {
  /** Unique name (dot-separated segments, like a task name). */
  name: string;
  /** The long-running function. It should run until `ctx.signal` aborts. */
  run: (ctx: EternalContext) => Promise<void> | void;
  /** Seconds a lease lasts without renewal; it is renewed every third of it. Default 10. */
  leaseSeconds?: number;
  /** Restart delays in seconds: `initial`, doubled after each consecutive failure, up to `max`. Default 1 and 60. */
  backoff?: { initial?: number; max?: number };
  logger?: Logger;
}

/** Status of an eternal task. */
export const ETERNAL_STATUS = {
  /** The function is running on the holder. */
  running: "running",
  /** Another runner holds the lease (a runner's own view). */
  standby: "standby",
  /** The function threw or returned; the holder waits before restarting it. */
  backoff: "backoff",
  /** Not running anywhere: stopped, never started, or the holder stopped renewing. */
  stopped: "stopped",
} as const;
/** One eternal status. */
export type EternalStatus = (typeof ETERNAL_STATUS)[keyof typeof ETERNAL_STATUS];

/** The state of an eternal task. */
export interface EternalState {
  name: string;
  status: EternalStatus;
  /** The runner (worker identity) holding the lease, when known. */
  holder?: string;
  /** Restarts after the function threw or returned, across holders. */
  restarts: number;
  lastError?: string;
  /** Epoch ms since which the status holds. */
  since: number;
  /** Lease term (a new holder increments it). */
  term?: number;
  /** Epoch ms of the function's last `ctx.heartbeat()`. */
  heartbeatAt?: number;
  /** Epoch ms the lease expires at (the holder's clock). */
  expiresAt?: number;
}

/** The stored record: lease and state in one key. */
interface EternalRecord {
  v: number;
  name: string;
  holder: string;
  term: number;
  expiresAt: number;
  renewedAt: number;
  status: EternalStatus;
  restarts: number;
  since: number;
  lastError?: string;
  heartbeatAt?: number;
}

/** The KV bucket of a namespace's eternal tasks: one key per task name. */
export function eternalBucket(namespace: string): string {
  return `${namespace}_eternal`;
}

const MS = 1000;

function openEternalBucket(client: Client): Promise<KV> {
  return openBucket(client, eternalBucket(client.names.namespace));
}

function readRecord(entry: KvEntry | null): EternalRecord | undefined {
  if (!entry || entry.operation !== "PUT" || entry.value.length === 0) return undefined;
  try {
    const r = decode(entry.value) as EternalRecord;
    return typeof r?.holder === "string" && typeof r.term === "number" ? r : undefined;
  } catch {
    return undefined;
  }
}

/** The fleet's view of a stored record: a lease nobody renews means nothing runs. */
function toState(r: EternalRecord, now: number): EternalState {
  const expired = r.expiresAt <= now;
  const state: EternalState = {
    name: r.name,
    status: expired ? ETERNAL_STATUS.stopped : r.status,
    restarts: r.restarts,
    since: expired && r.status !== ETERNAL_STATUS.stopped ? r.expiresAt : r.since,
    term: r.term,
    expiresAt: r.expiresAt,
  };
  if (r.holder) state.holder = r.holder;
  if (r.lastError !== undefined) state.lastError = r.lastError;
  if (r.heartbeatAt !== undefined) state.heartbeatAt = r.heartbeatAt;
  return state;
}

/**
 * The state of every eternal task of the namespace, as any client sees it. A task whose holder
 * stopped renewing (its worker died) shows `stopped` until another runner takes it over.
 */
export async function eternalStatus(client: Client): Promise<EternalState[]> {
  const kv = await openEternalBucket(client);
  const keys: string[] = [];
  for await (const key of await kv.keys()) keys.push(key);
  const out: EternalState[] = [];
  const now = Date.now();
  for (const key of keys.sort()) {
    const r = readRecord(await kv.get(key));
    if (r) out.push(toState(r, now));
  }
  return out;
}

/**
 * Runs one eternal task on this worker when this worker holds its lease. Create one per eternal
 * task per worker (a Worker does it for `worker.eternal(...)`); start it after connecting and stop
 * it on shutdown.
 */
export class EternalRunner {
  readonly #client: Client;
  readonly #identity: string;
  readonly #name: string;
  readonly #run: EternalOptions["run"];
  readonly #leaseMs: number;
  readonly #backoffInitialMs: number;
  readonly #backoffMaxMs: number;
  readonly #log: Logger;
  #kv: KV | undefined;
  /** The record as last written by us, with its revision; undefined when not holding. */
  #mine: { record: EternalRecord; revision: number } | undefined;
  /** The last record seen while standing by, and since when (our clock) its revision is unchanged. */
  #seen: { record: EternalRecord | undefined; revision: number; since: number } | undefined;
  #status: EternalStatus = ETERNAL_STATUS.stopped;
  #since = Date.now();
  #restarts = 0;
  #lastError: string | undefined;
  #heartbeatAt: number | undefined;
  #timer: ReturnType<typeof setInterval> | undefined;
  /** Lease work (renew, acquire, state writes) runs one step at a time. */
  #queue: Promise<unknown> = Promise.resolve();
  #abort: AbortController | undefined;
  /** Settles when the current run loop has finished (the function returned after an abort). */
  #loop: Promise<void> = Promise.resolve();
  #started = false;
  #stopped = false;

  constructor(client: Client, identity: string | { id: string }, options: EternalOptions) {
    assertTaskName(options.name);
    if (typeof options.run !== "function") throw new TypeError(`eternal task "${options.name}": run must be a function`);
    this.#client = client;
    this.#identity = typeof identity === "string" ? identity : identity.id;
    this.#name = options.name;
    this.#run = options.run;
    const leaseSeconds = options.leaseSeconds ?? 10;
    if (!(leaseSeconds > 0)) throw new RangeError(`eternal task "${options.name}": leaseSeconds must be > 0, not ${leaseSeconds}`);
    this.#leaseMs = leaseSeconds * MS;
    this.#backoffInitialMs = (options.backoff?.initial ?? 1) * MS;
    this.#backoffMaxMs = Math.max(this.#backoffInitialMs, (options.backoff?.max ?? 60) * MS);
    this.#log = (options.logger ?? createLogger("info")).child({ eternal: this.#name, runner: this.#identity });
  }

  /** The eternal task's name. */
  get name(): string {
    return this.#name;
  }

  /** Opens the bucket, contends for the lease once (running the function if taken), then keeps contending on a timer. */
  async start(): Promise<void> {
    if (this.#started) throw new Error(`eternal task "${this.#name}" already started`);
    this.#started = true;
    this.#kv = await openEternalBucket(this.#client);
    this.#setStatus(ETERNAL_STATUS.standby);
    await this.#step();
    this.#timer = setInterval(() => void this.#step(), this.#leaseMs / 3);
  }

  /**
   * Stops: aborts the function's signal, waits for it to return (up to `graceMs`, default 5 s),
   * and releases the lease so another runner takes over at once. With `release: false` the lease
   * is left to expire, as when a worker dies.
   */
  async stop(options: { release?: boolean; graceMs?: number } = {}): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#abort?.abort(new Error(`eternal task "${this.#name}" stopped`));
    const graceMs = options.graceMs ?? 5000;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const finished = await Promise.race([
      this.#loop.then(() => true),
      new Promise<boolean>((r) => (timer = setTimeout(() => r(false), graceMs))),
    ]);
    clearTimeout(timer);
    if (!finished) this.#log.warn(`the function did not return within ${graceMs} ms of its signal aborting`);
    await this.#queue;
    if (options.release !== false && this.#mine) {
      const { record, revision } = this.#mine;
      const now = Date.now();
      await this.#kv!.update(this.#name, encode({ ...record, status: ETERNAL_STATUS.stopped, since: now, expiresAt: 0, renewedAt: now } satisfies EternalRecord), revision)
        .catch((err) => this.#log.warn(`could not release the lease: ${(err as Error).message}`));
    }
    this.#mine = undefined;
    this.#setStatus(ETERNAL_STATUS.stopped);
  }

  /** This runner's view: running, backoff (holding), standby (another holds), or stopped. */
  state(): EternalState {
    const holder = this.#mine ? this.#identity : this.#seen?.record?.holder || undefined;
    const state: EternalState = { name: this.#name, status: this.#status, restarts: this.#restarts, since: this.#since };
    if (holder) state.holder = holder;
    if (this.#lastError !== undefined) state.lastError = this.#lastError;
    const term = this.#mine?.record.term ?? this.#seen?.record?.term;
    if (term !== undefined) state.term = term;
    if (this.#heartbeatAt !== undefined) state.heartbeatAt = this.#heartbeatAt;
    const expiresAt = this.#mine?.record.expiresAt ?? this.#seen?.record?.expiresAt;
    if (expiresAt !== undefined) state.expiresAt = expiresAt;
    return state;
  }

  #setStatus(status: EternalStatus): void {
    if (this.#status !== status) this.#since = Date.now();
    this.#status = status;
  }

  /** One renewal or acquisition attempt, queued behind any other lease write. */
  #step(): Promise<void> {
    const next = this.#queue.then(() => (this.#stopped ? undefined : this.#mine ? this.#renew() : this.#contend()));
    this.#queue = next.catch(() => {});
    return next.catch((err) => this.#log.warn(`lease check failed: ${(err as Error).message}`));
  }

  #record(now: number, base: Partial<EternalRecord> = {}): EternalRecord {
    const record: EternalRecord = {
      v: PROTOCOL_VERSION,
      name: this.#name,
      holder: this.#identity,
      term: base.term ?? this.#mine?.record.term ?? 1,
      expiresAt: now + this.#leaseMs,
      renewedAt: now,
      status: this.#status,
      restarts: this.#restarts,
      since: this.#since,
    };
    if (this.#lastError !== undefined) record.lastError = this.#lastError;
    if (this.#heartbeatAt !== undefined) record.heartbeatAt = this.#heartbeatAt;
    return record;
  }

  /** Renews with a compare-and-set on our last revision; a conflict means the lease is lost. */
  async #renew(): Promise<void> {
    const mine = this.#mine!;
    const now = Date.now();
    const record = this.#record(now);
    try {
      const revision = await this.#kv!.update(this.#name, encode(record), mine.revision);
      this.#mine = { record, revision };
    } catch (err) {
      if (isCasConflict(err)) {
        this.#lost("another runner took the lease");
        return;
      }
      // The server did not answer: past the point where others may take over, stop acting.
      if (now >= mine.record.expiresAt - this.#leaseMs / 3) this.#lost(`could not renew the lease (${(err as Error).message})`);
      throw err;
    }
  }

  /** Takes the lease when it is absent, released or expired. */
  async #contend(): Promise<void> {
    const now = Date.now();
    const entry = await this.#kv!.get(this.#name);
    const current = readRecord(entry);
    const revision = entry?.revision ?? 0;
    if (this.#seen?.revision !== revision || !this.#seen) this.#seen = { record: current, revision, since: now };
    if (current) {
      // expiresAt is the holder's clock: see clockSlackMs (a reader's clock ahead must not steal).
      const expired = current.expiresAt + clockSlackMs(this.#leaseMs) <= now || now - this.#seen.since >= this.#leaseMs;
      if (!expired) {
        this.#setStatus(ETERNAL_STATUS.standby);
        return;
      }
      // The counters continue across holders.
      this.#restarts = Math.max(this.#restarts, current.restarts);
      if (current.lastError !== undefined) this.#lastError = current.lastError;
    }
    const status = this.#status;
    this.#setStatus(ETERNAL_STATUS.running);
    const record = this.#record(now, { term: (current?.term ?? 0) + 1 });
    try {
      // On the stored revision whatever it holds: a record this version cannot read, or a delete
      // marker, is replaced too (create() would fail on the existing key for ever).
      const rev = revision !== 0
        ? await this.#kv!.update(this.#name, encode(record), revision)
        : await this.#kv!.create(this.#name, encode(record));
      this.#mine = { record, revision: rev };
    } catch (err) {
      this.#setStatus(status);
      if (isCasConflict(err)) return;
      throw err;
    }
    this.#log.info(`holding the lease (term ${record.term}); starting`);
    const previous = this.#loop;
    this.#loop = previous.then(() => this.#runLoop(record.term));
  }

  #lost(reason: string): void {
    if (!this.#mine) return;
    this.#log.warn(`lost the lease: ${reason}; aborting the function`);
    this.#mine = undefined;
    this.#abort?.abort(new Error(`eternal task "${this.#name}" lost its lease: ${reason}`));
    if (!this.#stopped) this.#setStatus(ETERNAL_STATUS.standby);
  }

  /** Writes the state now (status changes) instead of at the next renewal. */
  #writeState(): Promise<void> {
    return this.#step();
  }

  async #runLoop(term: number): Promise<void> {
    let failures = 0;
    const holding = () => !this.#stopped && this.#mine?.record.term === term;
    while (holding()) {
      const abort = new AbortController();
      this.#abort = abort;
      this.#setStatus(ETERNAL_STATUS.running);
      await this.#writeState();
      const startedAt = Date.now();
      let error: string | undefined;
      try {
        await this.#run({
          name: this.#name,
          signal: abort.signal,
          log: this.#log,
          client: this.#client,
          term,
          heartbeat: () => {
            this.#heartbeatAt = Date.now();
          },
        });
        error = "the function returned (an eternal task should run until its signal aborts)";
      } catch (err) {
        error = err instanceof Error ? `${err.name}: ${err.message}` : String(err);
      }
      if (abort.signal.aborted || !holding()) break;
      // A run that lasted longer than the longest delay counts as healthy: start the backoff over.
      failures = Date.now() - startedAt >= this.#backoffMaxMs ? 1 : failures + 1;
      this.#restarts++;
      this.#lastError = error;
      const delay = Math.min(this.#backoffMaxMs, this.#backoffInitialMs * 2 ** (failures - 1));
      this.#log.warn(`${error}; restarting in ${delay} ms (restart ${this.#restarts})`);
      this.#setStatus(ETERNAL_STATUS.backoff);
      await this.#writeState();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        abort.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        }, { once: true });
      });
    }
    this.#abort = undefined;
  }
}
