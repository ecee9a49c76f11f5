/**
 * The periodic-task scheduler (Celery beat). Any number of replicas may run: a lease in the
 * namespace's beat bucket elects one, every evaluation renews it by compare-and-set before sending
 * anything, and each tick's task carries the deterministic id `beat.<schedule>.<tickMs>` as its
 * Nats-Msg-Id, so even two replicas that both believe they lead for a moment store it once.
 * Each schedule's last processed tick is stored beside the lease, so a restarted or newly elected
 * replica neither repeats nor silently loses ticks: missed ones follow the schedule's `catchUp`.
 */
import type { KV } from "@nats-io/kv";
import type { Client } from "../client/mod.ts";
import { decode, encode, PROTOCOL_VERSION } from "../protocol/mod.ts";
import { isSignature, validate } from "../signatures/mod.ts";
import { isCasConflict, KvLease, openBucket } from "./lease.ts";
import { createBeatLogger, type BeatLogger, type BeatLogLevel } from "./log.ts";
import {
  BeatScheduleError,
  checkSchedule,
  lastTickBefore,
  nextTick,
  ticksBetween,
  tickId,
  type Schedule,
  type ScheduleEntry,
} from "./schedule.ts";

/** The KV bucket of a namespace's beat: key `lease` and one key `last.<schedule>` per schedule. */
export function beatBucket(namespace: string): string {
  return `${namespace}_beat`;
}

/** Key of the lease in the beat bucket. */
export const LEASE_KEY = "lease";
/** Key of a schedule's last processed tick in the beat bucket. */
export const lastRunKey = (schedule: string): string => `last.${schedule}`;

/** A schedule's stored progress. */
export interface LastRun {
  v: number;
  schedule: string;
  /** Epoch ms up to which ticks are processed (fired or, by catchUp, dropped). */
  tick: number;
  /** Id of the last task sent, if any. */
  id?: string;
  /** Who wrote it, in which term. */
  holder: string;
  term: number;
}

/** Options of {@link Beat}. */
export interface BeatOptions {
  /** The periodic tasks. */
  schedules: ScheduleEntry[];
  /** Seconds a leader's lease lasts without renewal (renewed at every evaluation and every third of it). Default 10. */
  leaseSeconds?: number;
  /**
   * A tick later than this many seconds counts as missed, and its schedule's `catchUp` decides.
   * Default: twice the lease, so a failover never counts as a miss.
   */
  graceSeconds?: number;
  /** At most this many missed ticks per schedule are sent per evaluation with catchUp "all" (the rest follow at once). Default 1000. */
  maxCatchUp?: number;
  /** The clock (epoch ms). Tests pass a virtual one and drive it with {@link Beat.tick}. */
  now?: () => number;
  /** This replica's name in the lease (default: a random id). */
  identity?: string;
  /** Default time zone of cron schedules (default: the `timezone` setting). */
  timezone?: string;
  logger?: BeatLogger;
  /** Level of the default logger (default info; logs go to stderr). */
  logLevel?: BeatLogLevel;
}

/** One task a tick sent. */
export interface FiredTick {
  schedule: string;
  task: string;
  /** Epoch ms of the tick. */
  tick: number;
  /** The task id (`beat.<schedule>.<tick>`). */
  id: string;
  /** The tick was later than `graceSeconds` (sent by catch-up). */
  late: boolean;
}

/** What one evaluation did. */
export interface TickReport {
  /** The time evaluated (epoch ms). */
  at: number;
  /** This replica led (and so fired) at `at`. */
  leader: boolean;
  /** The lease holder, as far as this replica knows. */
  holder: string | undefined;
  term: number;
  fired: FiredTick[];
  /** Missed ticks dropped by catchUp "skip" or "once", per schedule (counted up to 10,000). */
  dropped: Record<string, number>;
  /** Schedules whose sending failed (they are retried at the next evaluation with the same ids). */
  errors: Record<string, string>;
}

/** A snapshot of a beat replica. */
export interface BeatState {
  identity: string;
  leader: boolean;
  holder: string | undefined;
  term: number;
  /** How the lease works on this server (always "lease" today; see docs/beat.md). */
  mode: "lease";
  /** The server's version and whether it could schedule messages itself (nats-server ≥ 2.12). */
  server: { version: string | undefined; schedules: boolean };
  schedules: { name: string; task: string; describe: string; catchUp: string; lastTick: number | undefined; nextTick: number | undefined }[];
}

/** True when nats-server `version` supports message schedules (2.12 and later). */
export function serverSupportsSchedules(version: string | undefined): boolean {
  const m = /^v?(\d+)\.(\d+)/.exec(version ?? "");
  if (!m) return false;
  const [major, minor] = [Number(m[1]), Number(m[2])];
  return major > 2 || (major === 2 && minor >= 12);
}

const MS = 1000;
const DROP_COUNT_LIMIT = 10_000;
/** A tick sent within this of its time is on time, whatever `graceSeconds` says. */
const MIN_GRACE_MS = 1000;
/** Send failures that no retry can fix: the tick is reported and skipped instead of retried. */
const PERMANENT_SEND_ERRORS = new Set(["InvalidArgumentsError", "ProtocolError", "PayloadTooLargeError"]);

/**
 * Sends periodic tasks. Run one or many (each replica with its own client); exactly one fires.
 *
 * @example
 * ```ts
 * import { connect } from "celerity";
 * import { Beat } from "celerity/beat";
 * const client = await connect();
 * const beat = new Beat(client, { schedules: [
 *   { name: "cleanup", task: "maintenance.cleanup", every: 300 },
 *   { name: "report", task: "reports.daily", cron: "0 7 * * MON-FRI", timezone: "Europe/Paris" },
 * ] });
 * await beat.start();
 * // … later
 * await beat.close();
 * ```
 */
export class Beat implements AsyncDisposable {
  readonly #client: Client;
  readonly #schedules: Schedule[];
  readonly #leaseMs: number;
  readonly #graceMs: number;
  readonly #maxCatchUp: number;
  readonly #now: () => number;
  readonly #log: BeatLogger;
  /** This replica's identity in the lease. */
  readonly identity: string;
  #kv: Promise<KV> | undefined;
  #lease: KvLease | undefined;
  /** Last processed tick and its KV revision, per schedule, valid for `#lastTerm`. */
  readonly #last = new Map<string, { tick: number; revision: number }>();
  #lastTerm = -1;
  #leader = false;
  #holder: string | undefined;
  #term = 0;
  /** Evaluations run one at a time (the loop and manual ticks). */
  #queue: Promise<unknown> = Promise.resolve();
  #loop: Promise<void> | undefined;
  #wake: (() => void) | undefined;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #state: "new" | "running" | "closing" | "closed" = "new";
  #closed: Promise<void> | undefined;
  readonly #done: Promise<void>;
  #resolveDone!: () => void;
  #backlog = false;

  constructor(client: Client, options: BeatOptions) {
    this.#client = client;
    const timezone = options.timezone ?? client.settings.timezone;
    if (!Array.isArray(options?.schedules)) throw new BeatScheduleError("new Beat(client, { schedules }) needs a list of schedules");
    this.#schedules = options.schedules.map((entry) => checkSchedule(entry, timezone));
    const names = new Set<string>();
    for (const s of this.#schedules) {
      if (names.has(s.name)) throw new BeatScheduleError(`beat schedule ${JSON.stringify(s.name)} is declared twice`);
      names.add(s.name);
      if (s.options.queue !== undefined) client.router.declare(s.options.queue);
      if (isSignature(s.task)) {
        const checked = validate(s.task.args, s.args);
        if (!(checked instanceof Promise) && !checked.ok) {
          throw new BeatScheduleError(`beat schedule "${s.name}": its args do not match task "${s.taskName}": ${checked.issues.map((i) => `${i.path ? `${i.path}: ` : ""}${i.message}`).join("; ")}`);
        }
      }
    }
    const leaseSeconds = options.leaseSeconds ?? 10;
    if (!(leaseSeconds > 0)) throw new RangeError(`leaseSeconds must be > 0, not ${leaseSeconds}`);
    this.#leaseMs = leaseSeconds * MS;
    const graceSeconds = options.graceSeconds ?? 2 * leaseSeconds;
    if (!(Number.isFinite(graceSeconds) && graceSeconds >= 0)) throw new RangeError(`graceSeconds must be a number ≥ 0, not ${graceSeconds}`);
    // The loop wakes a millisecond after a tick and a send takes a few: with no slack at all every
    // tick would count as late.
    this.#graceMs = Math.max(graceSeconds * MS, MIN_GRACE_MS);
    const maxCatchUp = options.maxCatchUp ?? 1000;
    if (!(Number.isInteger(maxCatchUp) && maxCatchUp >= 1)) throw new RangeError(`maxCatchUp must be an integer ≥ 1, not ${maxCatchUp}`);
    this.#maxCatchUp = maxCatchUp;
    this.#now = options.now ?? Date.now;
    this.identity = options.identity ?? `beat-${crypto.randomUUID().slice(0, 8)}`;
    this.#log = options.logger ?? createBeatLogger(options.logLevel ?? "info", { beat: this.identity });
    this.#done = new Promise((resolve) => (this.#resolveDone = resolve));
  }

  /** The checked schedules. */
  get schedules(): readonly Schedule[] {
    return this.#schedules;
  }

  /** This replica led at its last evaluation. */
  get leader(): boolean {
    return this.#leader;
  }

  /** Opens the bucket and starts evaluating on the clock (at each due tick and every third of the lease). */
  async start(): Promise<void> {
    if (this.#state !== "new") throw new Error(`beat already ${this.#state}`);
    this.#state = "running";
    await this.#open();
    const version = this.#client.nc.info?.version;
    this.#log.info(
      serverSupportsSchedules(version)
        ? `beat ready on nats-server ${version}; electing a leader with a KV lease`
        : `beat ready on nats-server ${version ?? "?"}: no server-side schedules before 2.12, electing a leader with a KV lease`,
      { schedules: this.#schedules.map((s) => `${s.name}: ${s.describe}`) },
    );
    this.#loop = this.#runLoop();
  }

  /** Starts and resolves once {@link Beat.close} has finished (the CLI closes it on SIGINT/SIGTERM). */
  async run(): Promise<void> {
    await this.start();
    await this.#done;
  }

  /**
   * Evaluates once at `at` (default: the clock): renews or takes the lease, and if this replica
   * leads, sends every due tick and stores each schedule's progress. Safe to call concurrently
   * with the running loop (evaluations queue); tests drive a virtual clock with it.
   */
  tick(at: number = this.#now()): Promise<TickReport> {
    if (this.#state === "closing" || this.#state === "closed") return Promise.reject(new Error("the beat is closed"));
    return this.#enqueue(at);
  }

  #enqueue(at: number): Promise<TickReport> {
    const run = this.#queue.then(() => this.#evaluate(at));
    this.#queue = run.catch(() => {});
    return run;
  }

  /** A snapshot: leadership, server support, each schedule's last and next tick. */
  state(): BeatState {
    const version = this.#client.nc.info?.version;
    const at = this.#now();
    return {
      identity: this.identity,
      leader: this.#leader,
      holder: this.#holder,
      term: this.#term,
      mode: "lease",
      server: { version, schedules: serverSupportsSchedules(version) },
      schedules: this.#schedules.map((s) => ({
        name: s.name,
        task: s.taskName,
        describe: s.describe,
        catchUp: s.catchUp,
        lastTick: this.#last.get(s.name)?.tick,
        nextTick: nextTick(s, Math.max(at, this.#last.get(s.name)?.tick ?? at)),
      })),
    };
  }

  /**
   * Stops evaluating and, unless `release` is false, gives the lease up so another replica takes
   * over at its next look (without it, others wait for the lease to expire). The client stays open.
   */
  close(options: { release?: boolean } = {}): Promise<void> {
    this.#closed ??= this.#close(options.release !== false);
    return this.#closed;
  }

  async #close(release: boolean): Promise<void> {
    this.#state = "closing";
    if (this.#timer) clearTimeout(this.#timer);
    this.#wake?.();
    await this.#loop;
    await this.#queue;
    if (this.#lease) {
      if (release && this.#leader) {
        await this.#lease.release(this.#now()).catch((err) => this.#log.warn(`could not release the beat lease: ${(err as Error).message}`));
        this.#log.info("beat lease released");
      } else {
        this.#lease.abandon();
      }
    }
    this.#leader = false;
    this.#state = "closed";
    this.#resolveDone();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close();
  }

  #open(): Promise<KV> {
    this.#kv ??= openBucket(this.#client, beatBucket(this.#client.names.namespace)).then((kv) => {
      this.#lease = new KvLease(kv, LEASE_KEY, this.identity, this.#leaseMs);
      return kv;
    }).catch((err) => {
      this.#kv = undefined;
      throw err;
    });
    return this.#kv;
  }

  async #runLoop(): Promise<void> {
    while (this.#state === "running") {
      let wait = this.#leaseMs / 3;
      try {
        const report = await this.#enqueue(this.#now());
        if (report.leader) {
          const at = this.#now();
          for (const s of this.#schedules) {
            const next = nextTick(s, Math.max(at, this.#last.get(s.name)?.tick ?? at));
            if (next !== undefined) wait = Math.min(wait, next - at + 1);
          }
          if (this.#backlog) wait = 0;
        }
      } catch (err) {
        // A transport error: nothing was decided. Try again soon; a leader that cannot renew
        // before its lease expires has stopped firing (every send follows a renewal).
        this.#log.warn(`beat evaluation failed: ${(err as Error).message}`);
        this.#leader = false;
      }
      if (this.#state !== "running") break;
      await new Promise<void>((resolve) => {
        this.#wake = resolve;
        this.#timer = setTimeout(resolve, Math.min(Math.max(wait, 0), 2 ** 31 - 1));
      });
    }
  }

  async #evaluate(at: number): Promise<TickReport> {
    const kv = await this.#open();
    const lease = await this.#lease!.ensure(at);
    const wasLeader = this.#leader;
    this.#leader = lease.leader;
    this.#holder = lease.holder;
    this.#term = lease.term;
    const report: TickReport = { at, leader: lease.leader, holder: lease.holder, term: lease.term, fired: [], dropped: {}, errors: {} };
    if (!lease.leader) {
      if (wasLeader) this.#log.warn(`beat lost the lease${lease.holder ? ` to ${lease.holder}` : ""}; standing by`);
      return report;
    }
    if (lease.acquired) this.#log.info(`beat leads (term ${lease.term})`);
    if (this.#lastTerm !== lease.term) {
      // Another replica may have advanced any schedule while we did not lead: read them all again.
      this.#last.clear();
      this.#lastTerm = lease.term;
      try {
        await this.#forgetRemoved(kv);
      } catch (err) {
        this.#log.warn(`beat could not forget removed schedules: ${(err as Error).message}`);
      }
    }
    this.#backlog = false;
    for (const s of this.#schedules) {
      try {
        await this.#evaluateSchedule(kv, s, at, lease.term, report);
      } catch (err) {
        report.errors[s.name] = (err as Error).message;
        this.#log.error(`beat schedule ${s.name}: ${(err as Error).message}`);
      }
    }
    return report;
  }

  async #evaluateSchedule(kv: KV, s: Schedule, at: number, term: number, report: TickReport): Promise<void> {
    let last = this.#last.get(s.name);
    if (!last) {
      const stored = await this.#readLast(kv, s.name);
      if (stored.tick === undefined) {
        // Never run (or forgotten, see #forgetRemoved): start from now; ticks before the first
        // start are not "missed". An unreadable record is replaced on its revision.
        if (stored.unreadable) this.#log.warn(`beat schedule ${s.name}: its stored progress is unreadable; starting it from now`);
        last = await this.#storeLast(kv, s, { tick: at, revision: stored.revision }, at, undefined, term);
        this.#last.set(s.name, last);
        return;
      }
      last = { tick: stored.tick, revision: stored.revision };
      this.#last.set(s.name, last);
    }
    if (at <= last.tick) return;
    const cutoff = at - this.#graceMs;
    let fire: { tick: number; late: boolean }[];
    let through = at;
    if (s.catchUp === "all") {
      const due = ticksBetween(s, last.tick, at, this.#maxCatchUp + 1);
      if (due.length > this.#maxCatchUp) {
        due.length = this.#maxCatchUp;
        through = due.at(-1)!;
        this.#backlog = true;
      }
      fire = due.map((tick) => ({ tick, late: tick < cutoff }));
    } else {
      const onTime = ticksBetween(s, Math.max(last.tick, cutoff - 1), at, this.#maxCatchUp + 1);
      if (onTime.length > this.#maxCatchUp) {
        // More on-time ticks than one evaluation sends: the rest go next, at once (not dropped).
        onTime.length = this.#maxCatchUp;
        through = onTime.at(-1)!;
        this.#backlog = true;
      }
      fire = onTime.map((tick) => ({ tick, late: false }));
      const firstDue = nextTick(s, last.tick);
      if (firstDue !== undefined && firstDue < cutoff) {
        let latestMissed: number | undefined;
        if (s.catchUp === "once" && onTime.length === 0) {
          latestMissed = lastTickBefore(s, cutoff, last.tick);
          if (latestMissed !== undefined) fire.unshift({ tick: latestMissed, late: true });
        }
        const missed = ticksBetween(s, last.tick, cutoff - 1, DROP_COUNT_LIMIT).length - (latestMissed !== undefined ? 1 : 0);
        if (missed > 0) {
          report.dropped[s.name] = missed;
          this.#log.warn(`beat schedule ${s.name}: ${missed >= DROP_COUNT_LIMIT - 1 ? "many" : missed} missed tick(s) since ${new Date(last.tick).toISOString()} dropped (catchUp "${s.catchUp}")`);
        }
      }
    }
    let lastId: string | undefined;
    for (const f of fire) {
      const id = tickId(s.name, f.tick);
      try {
        const options = { ...s.options, id };
        if (isSignature(s.task)) await this.#client.send(s.task, s.args as never, options);
        else await this.#client.send(s.task, s.args, options);
      } catch (err) {
        const message = `could not send tick ${new Date(f.tick).toISOString()} (${id}): ${(err as Error).message}`;
        if (PERMANENT_SEND_ERRORS.has((err as Error).name)) {
          // It can never be sent (invalid arguments, payload too large): report it and move on.
          report.errors[s.name] = message;
          this.#log.error(`beat schedule ${s.name}: ${message}; skipping this tick`);
          continue;
        }
        // Keep what was sent; the rest is retried at the next evaluation with the same ids
        // (by then late ticks follow the schedule's catchUp).
        if (lastId !== undefined) this.#last.set(s.name, await this.#storeLast(kv, s, last, f.tick - 1, lastId, term));
        throw new Error(message);
      }
      lastId = id;
      report.fired.push({ schedule: s.name, task: s.taskName, tick: f.tick, id, late: f.late });
      this.#log.debug(`beat sent ${s.taskName}`, { schedule: s.name, id, late: f.late });
      // In a batch (a catch-up), progress is stored after every send: a crash mid-batch must not
      // leave it before ticks already sent, which a restart after the dedupe window (120 s) would
      // send again. One KV write per tick, only when ticks were missed.
      if (fire.length > 1 && f !== fire.at(-1)) {
        last = await this.#storeLast(kv, s, last, f.tick, id, term);
        this.#last.set(s.name, last);
      }
    }
    this.#last.set(s.name, await this.#storeLast(kv, s, last, through, lastId, term));
  }

  /**
   * A schedule's stored progress: its last tick, or none (absent, deleted or unreadable), with the
   * entry's revision either way (0: no entry), so the next write replaces what is there.
   */
  async #readLast(kv: KV, name: string): Promise<{ tick: number | undefined; revision: number; unreadable: boolean }> {
    const entry = await kv.get(lastRunKey(name));
    if (!entry) return { tick: undefined, revision: 0, unreadable: false };
    if (entry.operation !== "PUT") return { tick: undefined, revision: entry.revision, unreadable: false };
    try {
      const r = decode(entry.value) as LastRun;
      if (typeof r?.tick === "number" && Number.isFinite(r.tick)) return { tick: r.tick, revision: entry.revision, unreadable: false };
    } catch {
      /* unreadable: treated as never run */
    }
    return { tick: undefined, revision: entry.revision, unreadable: true };
  }

  /**
   * Deletes the progress of schedules this beat does not declare. Celery's beat drops entries that
   * left its configuration too: a schedule removed and later added back then starts afresh,
   * rather than counting the whole time it was away as missed ticks (a month of a 1-minute
   * schedule replayed at once with catchUp "all").
   */
  async #forgetRemoved(kv: KV): Promise<void> {
    const known = new Set(this.#schedules.map((s) => lastRunKey(s.name)));
    const removed: string[] = [];
    for await (const key of await kv.keys(lastRunKey(">"))) if (!known.has(key)) removed.push(key);
    for (const key of removed) await kv.delete(key);
    if (removed.length) this.#log.info(`beat forgot the progress of ${removed.length} schedule(s) no longer declared`, { keys: removed });
  }

  /**
   * Stores progress by compare-and-set. A conflict means another replica (a leader that lost the
   * lease a moment ago) wrote in between: keep the later of the two ticks, since both sent theirs.
   */
  async #storeLast(kv: KV, s: Schedule, prev: { tick: number; revision: number }, tick: number, id: string | undefined, term: number): Promise<{ tick: number; revision: number }> {
    let base = prev;
    for (let attempt = 0; attempt < 5; attempt++) {
      const record: LastRun = { v: PROTOCOL_VERSION, schedule: s.name, tick: Math.max(tick, base.tick), holder: this.identity, term };
      if (id !== undefined) record.id = id;
      try {
        const revision = base.revision === 0
          ? await kv.create(lastRunKey(s.name), encode(record))
          : await kv.update(lastRunKey(s.name), encode(record), base.revision);
        return { tick: record.tick, revision };
      } catch (err) {
        if (!isCasConflict(err)) throw err;
        const stored = await this.#readLast(kv, s.name);
        base = { tick: stored.tick ?? base.tick, revision: stored.revision };
      }
    }
    throw new Error(`could not store the last run of ${s.name}: too many concurrent writers`);
  }
}
