/**
 * Shared machinery of the chaos cases: worker processes, a retrying windowed sender, waiting for the
 * work queue to drain, and reading back stored results, execution records and dead letters.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { createInterface } from "node:readline";
import { fileURLToPath } from "node:url";
import type { JetStreamManager } from "@nats-io/jetstream";
import type { MsgHdrs } from "@nats-io/nats-core";
import { connect, type Client, type ConnectOptions } from "../../sdk/client/mod.ts";
import { STATE, type ResultRecord } from "../../sdk/protocol/mod.ts";
import { work } from "./signatures.ts";

export const ROOT = fileURLToPath(new URL("../..", import.meta.url));
const WORKER_SCRIPT = fileURLToPath(new URL("./worker.ts", import.meta.url));

/** One row of the chaos table. */
export interface Row {
  case: string;
  sent: number;
  completed: number;
  lost: number;
  /** Tasks whose handler ran more than once. */
  duplicated: number;
  deadLettered: number;
  seconds: number;
  notes: string[];
  /** Broken expectations; empty when the case passed. */
  failures: string[];
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Runs `fn` with a temporary directory, removed afterwards unless `keep()` was called. */
export async function withTempDir<T>(prefix: string, fn: (dir: string, keep: () => void) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  let kept = false;
  try {
    return await fn(dir, () => (kept = true));
  } finally {
    if (!kept) await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  }
}

let nsCounter = 0;
/** A namespace nobody else uses. */
export function freshNamespace(prefix = "chaos"): string {
  return `${prefix}${process.pid}x${++nsCounter}${Math.random().toString(36).slice(2, 6)}`;
}

// Every worker process still running, so an aborted run (test timeout, ^C) takes them down too.
const liveWorkers = new Set<ChildProcess>();
let exitHook = false;
function installExitHook(): void {
  if (exitHook) return;
  exitHook = true;
  process.on("exit", () => {
    for (const child of liveWorkers) {
      try {
        child.kill("SIGKILL");
      } catch {
        /* already gone */
      }
    }
  });
}

/** Options of {@link WorkerProcess.spawn}. */
export interface WorkerSpawnOptions {
  label: string;
  dir: string;
  servers: string[];
  namespace: string;
  /** Extra environment (CELERITY_ACK_WAIT, CELERITY_CONCURRENCY, CHAOS_SLEEP_MS, ...). */
  env?: Record<string, string>;
  readyTimeoutMs?: number;
}

/** A worker running scripts/chaos/worker.ts in its own node process. */
export class WorkerProcess {
  readonly label: string;
  readonly recordFile: string;
  readonly logFile: string;
  readonly child: ChildProcess;
  readonly #exited: Promise<void>;
  #exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  /** Set when the parent killed it on purpose. */
  killedOnPurpose = false;

  private constructor(label: string, recordFile: string, logFile: string, child: ChildProcess) {
    this.label = label;
    this.recordFile = recordFile;
    this.logFile = logFile;
    this.child = child;
    this.#exited = new Promise<void>((resolve) => {
      child.once("exit", (code, signal) => {
        this.#exit = { code, signal };
        liveWorkers.delete(child);
        resolve();
      });
    });
  }

  /** Starts the process and resolves once it prints READY (it consumes its queue by then). */
  static async spawn(o: WorkerSpawnOptions): Promise<WorkerProcess> {
    installExitHook();
    const recordFile = join(o.dir, `exec-${o.label}.log`);
    const logFile = join(o.dir, `worker-${o.label}.log`);
    const fd = openSync(logFile, "a");
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, ["--import", "tsx", WORKER_SCRIPT], {
        cwd: ROOT,
        stdio: ["ignore", "pipe", fd],
        env: {
          ...process.env,
          CELERITY_SETTINGS: "",
          CELERITY_SERVERS: o.servers.join(","),
          CELERITY_NAMESPACE: o.namespace,
          CHAOS_RECORD: recordFile,
          ...o.env,
        },
      });
    } finally {
      closeSync(fd);
    }
    liveWorkers.add(child);
    const wp = new WorkerProcess(o.label, recordFile, logFile, child);
    const timeoutMs = o.readyTimeoutMs ?? 60_000;
    const ready = new Promise<void>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout! });
      lines.on("line", (line) => {
        if (line.startsWith("READY ")) resolve();
      });
      child.once("exit", (code, signal) => reject(new Error(`worker ${o.label} exited (${code ?? signal}) before READY; log ${logFile}:\n${tail(logFile)}`)));
    });
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`worker ${o.label} not READY within ${timeoutMs} ms; log ${logFile}:\n${tail(logFile)}`)), timeoutMs);
    });
    try {
      await Promise.race([ready, timeout]);
    } catch (err) {
      await wp.kill("SIGKILL");
      throw err;
    } finally {
      clearTimeout(timer);
    }
    return wp;
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** True while the process runs. */
  get alive(): boolean {
    return this.#exit === undefined;
  }

  /** How it ended ("" while running). */
  get exitDescription(): string {
    if (!this.#exit) return "";
    return this.#exit.signal ? `killed by ${this.#exit.signal}` : `exited with code ${this.#exit.code}`;
  }

  /** Sends `signal` and waits for the exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<void> {
    if (!this.alive) return;
    this.child.kill(signal);
    await this.#exited;
  }

  /** Graceful stop (SIGTERM), SIGKILL after `graceMs`. Idempotent; used in finally blocks. */
  async stop(graceMs = 8000): Promise<void> {
    if (!this.alive) return;
    this.child.kill("SIGTERM");
    const timer = setTimeout(() => this.child.kill("SIGKILL"), graceMs);
    try {
      await this.#exited;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Executions recorded by this process: task id → delivery counts seen. */
  executions(): Map<string, number[]> {
    return readExecutions([this.recordFile]);
  }

  /** Number of executions recorded so far (cheap: counts lines). */
  executionCount(): number {
    if (!existsSync(this.recordFile)) return 0;
    const text = readFileSync(this.recordFile, "utf8");
    let n = 0;
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 10) n++;
    return n;
  }
}

/** The last lines of a log file (lines clipped), for failure messages. */
export function tail(path: string, lines = 15): string {
  try {
    const size = statSync(path).size;
    const fd = openSync(path, "r");
    try {
      const length = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(length);
      readSync(fd, buf, 0, length, size - length);
      return buf.toString("utf8").split("\n").filter((l) => l.trim()).slice(-lines).map((l) => (l.length > 300 ? `${l.slice(0, 300)}…(${l.length} chars)` : l)).join("\n");
    } finally {
      closeSync(fd);
    }
  } catch {
    return "(no log)";
  }
}

/** Lines matching `pattern` in a log file (clipped), e.g. errors a worker logged. */
export function grepLog(path: string, pattern: RegExp, max = 5): { count: number; samples: string[] } {
  let count = 0;
  const samples: string[] = [];
  try {
    for (const line of readFileSync(path, "utf8").split("\n")) {
      if (!pattern.test(line)) continue;
      count++;
      if (samples.length < max) samples.push(line.length > 300 ? `${line.slice(0, 300)}…` : line);
    }
  } catch {
    /* no log */
  }
  return { count, samples };
}

/** Reads execution records (`<id> <deliveryCount> <pid>` lines) of several files: id → delivery counts. */
export function readExecutions(files: string[]): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const f of files) {
    if (!existsSync(f)) continue;
    for (const line of readFileSync(f, "utf8").split("\n")) {
      if (!line) continue;
      const [id, dc] = line.split(" ");
      const list = out.get(id!);
      if (list) list.push(Number(dc));
      else out.set(id!, [Number(dc)]);
    }
  }
  return out;
}

/** Every execution record file in `dir`. */
export function recordFiles(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.startsWith("exec-")).map((f) => join(dir, f));
}

/** Connects a client in `namespace` without reading any settings file. */
export function chaosClient(servers: string[], namespace: string, extra: ConnectOptions = {}): Promise<Client> {
  return connect({ servers, namespace, file: undefined, ...extra });
}

/** Closes a client, but never waits longer than `ms` (a client of a dead cluster may hang in settle()). */
export async function closeQuietly(client: Client | undefined, ms = 10_000): Promise<void> {
  if (!client) return;
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    await Promise.race([client.close().catch(() => {}), new Promise((r) => (timer = setTimeout(r, ms)))]);
  } finally {
    clearTimeout(timer);
    if (!client.nc.isClosed()) await client.nc.close().catch(() => {});
  }
}

/** Retries an API call that may fail while a cluster elects leaders. */
export async function retrying<T>(what: string, fn: () => Promise<T>, deadlineMs = 30_000): Promise<T> {
  const until = Date.now() + deadlineMs;
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (Date.now() > until) throw new Error(`${what}: still failing after ${attempt} attempts: ${(err as Error).message}`, { cause: err });
      await sleep(Math.min(1000, 100 * attempt));
    }
  }
}

/** What a windowed send of many tasks went through. */
export interface SendReport {
  sent: number;
  /** Sends that rejected and were made again with the same id. */
  retries: number;
  /** Rejections by error name and a short message. */
  errors: Map<string, number>;
  seconds: number;
  /** The slowest send, retries included (seconds): how long the fault held senders up. */
  slowestSeconds: number;
}

/** One task to send. */
export interface Outgoing {
  id: string;
  args: { n: number; sleepMs?: number };
}

/**
 * Sends every task through `client.send()` with at most `window` sends awaiting their PubAck.
 * A send that rejects (PublishError, ConnectionClosedError, a timeout during an outage) is made
 * again with the SAME id, so JetStream's Nats-Msg-Id dedupe stores it once. `onSent(k)` is called
 * after each resolved send, with the number resolved so far (to trigger faults mid-run).
 */
export async function sendAll(
  client: Client,
  tasks: Outgoing[],
  opts: { window?: number; ratePerSec?: number; deadlineMs?: number; onSent?: (sent: number) => void } = {},
): Promise<SendReport> {
  const window = opts.window ?? 100;
  const deadline = Date.now() + (opts.deadlineMs ?? 180_000);
  const started = Date.now();
  const report: SendReport = { sent: 0, retries: 0, errors: new Map(), seconds: 0, slowestSeconds: 0 };
  let next = 0;
  const lane = async () => {
    for (;;) {
      const i = next++;
      if (i >= tasks.length) return;
      if (opts.ratePerSec) {
        const due = started + (i / opts.ratePerSec) * 1000;
        const wait = due - Date.now();
        if (wait > 0) await sleep(wait);
      }
      const t = tasks[i]!;
      const sendStart = Date.now();
      for (;;) {
        try {
          await client.send(work, t.args, { id: t.id });
          break;
        } catch (err) {
          const e = err as Error;
          const key = `${e.name}: ${shortMessage(e.message)}`;
          report.errors.set(key, (report.errors.get(key) ?? 0) + 1);
          if (Date.now() > deadline) throw new Error(`send of ${t.id} still failing at the deadline: ${key}`, { cause: err });
          report.retries++;
          await sleep(200);
        }
      }
      report.slowestSeconds = Math.max(report.slowestSeconds, (Date.now() - sendStart) / 1000);
      report.sent++;
      opts.onSent?.(report.sent);
    }
  };
  await Promise.all(Array.from({ length: Math.min(window, tasks.length) }, lane));
  report.seconds = (Date.now() - started) / 1000;
  return report;
}

function shortMessage(m: string): string {
  return m.replace(/[0-9a-f-]{36}|\b\d+\b/g, "#").slice(0, 90);
}

/** Formats a SendReport's errors for the notes column. */
export function describeSendErrors(r: SendReport): string {
  const slowest = `slowest send ${r.slowestSeconds.toFixed(1)} s`;
  if (r.retries === 0) return `0 send retries, ${slowest}`;
  const kinds = [...r.errors].sort((a, b) => b[1] - a[1]).slice(0, 3).map(([k, n]) => `${n}× ${k}`);
  return `${r.retries} send retries with the same id (${kinds.join("; ")}), ${slowest}`;
}

/** Messages left in a stream (undefined when the API did not answer). */
export async function streamMessages(jsm: JetStreamManager, stream: string): Promise<number | undefined> {
  try {
    return (await jsm.streams.info(stream)).state.messages;
  } catch {
    return undefined;
  }
}

/**
 * Waits until the tasks stream is empty (a WorkQueue stream drops a message when a worker acks it,
 * and workers ack only after storing the result or the dead letter). Resolves with false on timeout.
 */
export async function waitDrained(client: Client, timeoutMs: number, alsoWhile?: () => boolean): Promise<boolean> {
  const jsm = await client.jsm();
  const until = Date.now() + timeoutMs;
  let zeroes = 0;
  while (Date.now() < until) {
    const n = await streamMessages(jsm, client.names.tasksStream);
    // Twice in a row, so a message between a nak and its redelivery is not missed.
    zeroes = n === 0 ? zeroes + 1 : 0;
    if (zeroes >= 2 && !(alsoWhile?.() ?? false)) return true;
    await sleep(250);
  }
  return false;
}

/** Reads the stored result record of every id (the results bucket, not replies), `parallel` at a time. */
export async function storedRecords(client: Client, ids: string[], parallel = 32): Promise<Map<string, ResultRecord | undefined>> {
  const out = new Map<string, ResultRecord | undefined>();
  let next = 0;
  const lane = async () => {
    for (;;) {
      const i = next++;
      if (i >= ids.length) return;
      const id = ids[i]!;
      out.set(id, await retrying(`read the record of ${id}`, () => client.getRecord(id), 20_000));
    }
  };
  await Promise.all(Array.from({ length: parallel }, lane));
  return out;
}

/** Counts of the outcome of `ids` from stored records and execution records. */
export interface Outcome {
  completed: number;
  lostIds: string[];
  /** Ids whose handler ran more than once, with their run count. */
  duplicates: Map<string, number>;
  /** Stored states other than SUCCESS, by state. */
  otherStates: Map<string, number>;
}

export function outcome(ids: string[], records: Map<string, ResultRecord | undefined>, executions: Map<string, number[]>): Outcome {
  const o: Outcome = { completed: 0, lostIds: [], duplicates: new Map(), otherStates: new Map() };
  for (const id of ids) {
    const r = records.get(id);
    if (r?.state === STATE.success) o.completed++;
    else {
      o.lostIds.push(id);
      const s = r?.state ?? "none";
      o.otherStates.set(s, (o.otherStates.get(s) ?? 0) + 1);
    }
    const runs = executions.get(id)?.length ?? 0;
    if (runs > 1) o.duplicates.set(id, runs);
  }
  return o;
}

/** A header value or undefined. */
export function header(h: MsgHdrs | undefined, name: string): string | undefined {
  const v = h?.get(name);
  return v ? v : undefined;
}

/**
 * Keeps one worker process running like a process manager would: when it dies without being asked
 * to, the crash is recorded (exit and the CRASH line of its log) and a replacement is started, so a
 * case can still tell what happened to every other message after a crash.
 */
export class Supervisor {
  readonly crashes: string[] = [];
  readonly all: WorkerProcess[] = [];
  #stopping = false;
  #respawns = 0;

  constructor(private readonly spawnOptions: WorkerSpawnOptions, private readonly maxRespawns = 20) {}

  async start(): Promise<void> {
    await this.#spawn(this.spawnOptions.label);
  }

  async #spawn(label: string): Promise<void> {
    const w = await WorkerProcess.spawn({ ...this.spawnOptions, label });
    this.all.push(w);
    w.child.once("exit", () => {
      if (this.#stopping || w.killedOnPurpose) return;
      const crash = grepLog(w.logFile, /^CRASH /, 1).samples[0] ?? "(no CRASH line)";
      this.crashes.push(`${w.label} pid ${w.pid} ${w.exitDescription}: ${crash}`);
      if (this.#respawns++ < this.maxRespawns) void this.#spawn(`${this.spawnOptions.label}-r${this.#respawns}`).catch(() => {});
    });
  }

  /** The worker started last. */
  get current(): WorkerProcess {
    return this.all.at(-1)!;
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    await Promise.all(this.all.map((w) => w.stop().catch(() => {})));
  }
}
