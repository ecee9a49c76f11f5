/**
 * The chaos cases. Each starts its own nats-server(s) and worker processes, does its damage, waits
 * for the work queue to drain and returns a {@link Row}: what was sent, what completed, what was
 * lost, what ran twice and what was dead-lettered, with `failures` listing every broken expectation.
 * Nothing here asserts: the CLI (scripts/chaos.ts) prints the rows, the test asserts on them.
 */
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core";
import { NatsCluster, NatsServer } from "../../sdk/testing/mod.ts";
import type { Client } from "../../sdk/client/mod.ts";
import { encode, HEADER, PROTOCOL_VERSION, STATE } from "../../sdk/protocol/mod.ts";
import {
  chaosClient,
  closeQuietly,
  describeSendErrors,
  freshNamespace,
  grepLog,
  outcome,
  readExecutions,
  recordFiles,
  retrying,
  sendAll,
  sleep,
  storedRecords,
  streamMessages,
  Supervisor,
  tail,
  waitDrained,
  withTempDir,
  WorkerProcess,
  type Outgoing,
  type Row,
} from "./harness.ts";
import { work } from "./signatures.ts";

const secondsSince = (t: number) => Math.round((Date.now() - t) / 100) / 10;

function newRow(name: string): Row {
  return { case: name, sent: 0, completed: 0, lost: 0, duplicated: 0, deadLettered: 0, seconds: 0, notes: [], failures: [] };
}

function tasksOf(prefix: string, count: number, sleepMs?: number): Outgoing[] {
  return Array.from({ length: count }, (_, i) => ({ id: `${prefix}-${i}`, args: sleepMs === undefined ? { n: i } : { n: i, sleepMs } }));
}

/** Stops every worker and closes every client; never throws (used in finally blocks). */
async function cleanup(workers: (WorkerProcess | undefined)[], clients: (Client | undefined)[]): Promise<void> {
  await Promise.all(workers.map((w) => w?.stop().catch(() => {})));
  await Promise.all(clients.map((c) => closeQuietly(c)));
}

/** Adds a failure for every worker that is not alive although nobody killed it. */
function checkAlive(row: Row, workers: WorkerProcess[]): void {
  for (const w of workers) {
    if (!w.killedOnPurpose && !w.alive) {
      row.failures.push(`worker ${w.label} (pid ${w.pid}) died: ${w.exitDescription}; log ${w.logFile}:\n${tail(w.logFile)}`);
    }
  }
}

/** Notes what workers logged about recovering (pulls re-issued, results or acks retried). */
function recoveryNotes(workers: WorkerProcess[]): string[] {
  const repulls = new Map<string, number>();
  let storeRetries = 0;
  for (const w of workers) {
    for (const line of grepLog(w.logFile, /pulls went silent/, 1000).samples) {
      const reason = /pulls went silent \(([^)]*)\)/.exec(line)?.[1] ?? "?";
      repulls.set(reason, (repulls.get(reason) ?? 0) + 1);
    }
    storeRetries += grepLog(w.logFile, /could not store the result/).count;
  }
  const notes: string[] = [];
  if (repulls.size) notes.push(`workers renewed their pulls: ${[...repulls].map(([r, n]) => `${n}× ${r}`).join(", ")}`);
  if (storeRetries) notes.push(`${storeRetries} results could not be stored and were returned to the queue (run again)`);
  return notes;
}

function lostFailure(row: Row, lostIds: string[], states: Map<string, number>): void {
  if (lostIds.length === 0) return;
  const byState = [...states].map(([s, n]) => `${n} ${s}`).join(", ");
  row.failures.push(`${lostIds.length} task(s) without a SUCCESS record (${byState}), e.g. ${lostIds.slice(0, 5).join(", ")}`);
}

// ---------------------------------------------------------------------------------------------
// (a) kill -9 a worker mid-task
// ---------------------------------------------------------------------------------------------

export interface KillWorkerSize {
  tasks: number;
  /** How long each task sleeps. */
  sleepMs: number;
  /** Handlers per worker (also its prefetch). */
  concurrency: number;
  /** Consumer ack wait in seconds: how soon the killed worker's messages are redelivered. */
  ackWait: number;
}

export const KILL_WORKER = {
  // Sleeps stay clear of the worker's 200 ms state-write delay (see docs/chaos.md, known bugs).
  full: { tasks: 400, sleepMs: 300, concurrency: 4, ackWait: 2 },
  short: { tasks: 60, sleepMs: 300, concurrency: 4, ackWait: 2 },
} satisfies Record<string, KillWorkerSize>;

/**
 * Two worker processes share the queue; once the victim has run a fifth of the tasks it gets
 * SIGKILL while handlers run. The survivor must complete everything, including the victim's
 * unacked messages once the ack wait expires. A task whose handler had started on the victim runs
 * again on the survivor: that is the duplicate at-least-once delivery allows, and the only one.
 */
export async function killWorkerCase(size: KillWorkerSize = KILL_WORKER.short): Promise<Row> {
  const row = newRow("a. kill -9 a worker mid-task");
  const t0 = Date.now();
  return withTempDir("celerity-chaos-a-", async (dir, keep) => {
    let server: NatsServer | undefined;
    let client: Client | undefined;
    const workers: WorkerProcess[] = [];
    try {
      server = await NatsServer.start();
      const ns = freshNamespace("chaosa");
      client = await chaosClient([server.url], ns);
      await client.ensureTopology();
      const env = { CELERITY_ACK_WAIT: String(size.ackWait), CELERITY_CONCURRENCY: String(size.concurrency), CHAOS_SLEEP_MS: String(size.sleepMs) };
      const [victim, survivor] = await Promise.all([
        WorkerProcess.spawn({ label: "victim", dir, servers: [server.url], namespace: ns, env }),
        WorkerProcess.spawn({ label: "survivor", dir, servers: [server.url], namespace: ns, env }),
      ]);
      workers.push(victim!, survivor!);
      const tasks = tasksOf("a", size.tasks);
      const sending = sendAll(client, tasks, { window: 100 });
      // Kill it while it runs handlers: once it has started a fifth of the tasks.
      const threshold = Math.max(8, Math.floor(size.tasks / 5));
      const until = Date.now() + 60_000;
      while (victim!.executionCount() < threshold && Date.now() < until) await sleep(20);
      const startedOnVictim = victim!.executions();
      victim!.killedOnPurpose = true;
      await victim!.kill("SIGKILL");
      const killedAt = Date.now();
      const sendReport = await sending;
      row.sent = sendReport.sent;
      const drained = await waitDrained(client, 60_000);
      const recoverySeconds = secondsSince(killedAt);
      if (!drained) row.failures.push(`the work queue did not drain within 60 s of the kill (${await streamMessages(await client.jsm(), client.names.tasksStream)} messages left)`);

      const ids = tasks.map((t) => t.id);
      const records = await storedRecords(client, ids);
      const executions = readExecutions(recordFiles(dir));
      const o = outcome(ids, records, executions);
      row.completed = o.completed;
      row.lost = o.lostIds.length;
      row.duplicated = o.duplicates.size;
      lostFailure(row, o.lostIds, o.otherStates);
      checkAlive(row, workers);

      // Every duplicate must be a handler that had started on the victim and was never acked.
      const unexplained = [...o.duplicates.keys()].filter((id) => !startedOnVictim.has(id));
      if (unexplained.length) row.failures.push(`${unexplained.length} duplicate(s) not started on the killed worker: ${unexplained.slice(0, 5).join(", ")}`);
      if (o.duplicates.size > size.concurrency) row.failures.push(`${o.duplicates.size} duplicates, more than the killed worker's ${size.concurrency} handler slots`);
      const victimResults = [...records.values()].filter((r) => r?.worker?.pid === victim!.pid).length;
      const redelivered = [...executions.values()].filter((runs) => runs.some((dc) => dc > 1)).length;
      if (o.duplicates.size > 0 && redelivered === 0) row.failures.push("duplicates without any redelivery recorded");
      row.notes.push(
        `killed victim pid ${victim!.pid} after it started ${startedOnVictim.size} handlers (${victimResults} of its results stored)`,
        `${redelivered} tasks redelivered after ackWait ${size.ackWait} s; queue drained ${recoverySeconds} s after the kill`,
        o.duplicates.size
          ? `${o.duplicates.size} duplicates = handlers running on the victim when it died (at-least-once)`
          : "no duplicates (no handler was mid-run at the kill)",
      );
      if (sendReport.retries) row.notes.push(describeSendErrors(sendReport));
    } catch (err) {
      row.failures.push(`case aborted: ${(err as Error).stack ?? err}`);
    } finally {
      await cleanup(workers, [client]);
      await server?.stop();
      row.seconds = secondsSince(t0);
      if (row.failures.length) {
        keep();
        row.notes.push(`logs kept in ${dir}`);
      }
    }
    return row;
  });
}

// ---------------------------------------------------------------------------------------------
// (b) restart nats-server with tasks in flight
// ---------------------------------------------------------------------------------------------

export interface LoadSize {
  tasks: number;
  workers: number;
  concurrency: number;
  ackWait: number;
  sleepMs: number;
  /** Fraction of the sends after which the fault is injected. */
  faultAt: number;
  /** Sends per second (spreads the sending over the fault). */
  ratePerSec: number;
  /** How long to wait for the queue to drain after the last send. */
  drainTimeoutMs: number;
}

export const RESTART_SERVER = {
  full: { tasks: 5000, workers: 2, concurrency: 16, ackWait: 5, sleepMs: 2, faultAt: 0.4, ratePerSec: 1000, drainTimeoutMs: 120_000 },
  short: { tasks: 500, workers: 2, concurrency: 16, ackWait: 5, sleepMs: 2, faultAt: 0.4, ratePerSec: 250, drainTimeoutMs: 30_000 },
} satisfies Record<string, LoadSize>;

/**
 * Worker processes run and the client sends; at `faultAt` of the sends the server is restarted
 * (SIGTERM, then started again on the same port with the same store). Clients and workers must
 * resume by themselves; a send that rejects meanwhile is retried with the same id.
 */
export async function restartServerCase(size: LoadSize = RESTART_SERVER.short): Promise<Row> {
  const row = newRow("b. restart nats-server mid-run");
  const t0 = Date.now();
  return withTempDir("celerity-chaos-b-", async (dir, keep) => {
    let server: NatsServer | undefined;
    let client: Client | undefined;
    const workers: WorkerProcess[] = [];
    try {
      server = await NatsServer.start();
      const ns = freshNamespace("chaosb");
      client = await chaosClient([server.url], ns);
      await client.ensureTopology();
      const env = { CELERITY_ACK_WAIT: String(size.ackWait), CELERITY_CONCURRENCY: String(size.concurrency), CHAOS_SLEEP_MS: String(size.sleepMs) };
      workers.push(...(await Promise.all(Array.from({ length: size.workers }, (_, i) =>
        WorkerProcess.spawn({ label: `w${i + 1}`, dir, servers: [server!.url], namespace: ns, env })))));
      const tasks = tasksOf("b", size.tasks);
      let restarting: Promise<void> | undefined;
      let restartInfo = "";
      const srv = server;
      const sendReport = await sendAll(client, tasks, {
        window: 100,
        ratePerSec: size.ratePerSec,
        onSent: (k) => {
          if (restarting || k < size.tasks * size.faultAt) return;
          const at = Date.now();
          restarting = srv.restart().then(() => {
            restartInfo = `server restarted after ${k} sends (down ${((Date.now() - at) / 1000).toFixed(1)} s)`;
          });
        },
      });
      await restarting;
      row.sent = sendReport.sent;
      const drainStart = Date.now();
      const drained = await waitDrained(client, size.drainTimeoutMs);
      if (!drained) row.failures.push(`the work queue did not drain within ${size.drainTimeoutMs / 1000} s (${await streamMessages(await client.jsm(), client.names.tasksStream)} messages left)`);

      const ids = tasks.map((t) => t.id);
      const records = await storedRecords(client, ids);
      const executions = readExecutions(recordFiles(dir));
      const o = outcome(ids, records, executions);
      row.completed = o.completed;
      row.lost = o.lostIds.length;
      row.duplicated = o.duplicates.size;
      lostFailure(row, o.lostIds, o.otherStates);
      checkAlive(row, workers);
      const neverRan = ids.filter((id) => !executions.has(id)).length;
      if (neverRan) row.failures.push(`${neverRan} task(s) never ran`);
      row.notes.push(
        restartInfo,
        describeSendErrors(sendReport),
        `drained ${secondsSince(drainStart)} s after the last send`,
        ...recoveryNotes(workers),
      );
      if (o.duplicates.size) row.notes.push(`${o.duplicates.size} duplicates: handled while the server was down, their result or ack did not get through, so they ran again (at-least-once)`);
    } catch (err) {
      row.failures.push(`case aborted: ${(err as Error).stack ?? err}`);
    } finally {
      await cleanup(workers, [client]);
      await server?.stop();
      row.seconds = secondsSince(t0);
      if (row.failures.length) {
        keep();
        row.notes.push(`logs kept in ${dir}`);
      }
    }
    return row;
  });
}

// ---------------------------------------------------------------------------------------------
// (c) 3-node cluster, kill the TASKS stream leader
// ---------------------------------------------------------------------------------------------

export const KILL_LEADER = {
  full: { tasks: 2000, workers: 2, concurrency: 16, ackWait: 5, sleepMs: 2, faultAt: 0.4, ratePerSec: 300, drainTimeoutMs: 120_000 },
  short: { tasks: 300, workers: 2, concurrency: 16, ackWait: 5, sleepMs: 2, faultAt: 0.4, ratePerSec: 100, drainTimeoutMs: 30_000 },
} satisfies Record<string, LoadSize>;

/**
 * A 3-node JetStream cluster with every stream replicated 3 times. At `faultAt` of the sends the
 * node leading the TASKS stream gets SIGKILL; sending goes on (sends that fail during the election
 * are retried with the same id) and everything must complete. The node is restarted at the end.
 */
export async function killLeaderCase(size: LoadSize = KILL_LEADER.short): Promise<Row> {
  const row = newRow("c. kill the R3 stream leader");
  const t0 = Date.now();
  return withTempDir("celerity-chaos-c-", async (dir, keep) => {
    let cluster: NatsCluster | undefined;
    let client: Client | undefined;
    const workers: WorkerProcess[] = [];
    try {
      cluster = await NatsCluster.start();
      const urls = cluster.urls;
      const ns = freshNamespace("chaosc");
      client = await chaosClient(urls, ns, { replicas: 3 });
      const c = client;
      await retrying("create the R3 topology", () => c.ensureTopology(true));
      const env = {
        CELERITY_ACK_WAIT: String(size.ackWait), CELERITY_CONCURRENCY: String(size.concurrency),
        CHAOS_SLEEP_MS: String(size.sleepMs), CELERITY_REPLICAS: "3",
      };
      workers.push(...(await Promise.all(Array.from({ length: size.workers }, (_, i) =>
        WorkerProcess.spawn({ label: `w${i + 1}`, dir, servers: urls, namespace: ns, env })))));
      const jsm = await c.jsm();
      const tasks = tasksOf("c", size.tasks);
      let killing: Promise<void> | undefined;
      let killed: NatsServer | undefined;
      let killInfo = "";
      const cl = cluster;
      const sendReport = await sendAll(c, tasks, {
        window: 50,
        ratePerSec: size.ratePerSec,
        onSent: (k) => {
          if (killing || k < size.tasks * size.faultAt) return;
          killing = (async () => {
            const info = await retrying("find the stream leader", () => jsm.streams.info(c.names.tasksStream));
            const leader = info.cluster?.leader;
            const node = cl.servers.find((s) => s.serverName === leader);
            if (!node) throw new Error(`no node named ${leader} (replicas: ${JSON.stringify(info.cluster)})`);
            killed = node;
            await node.kill("SIGKILL");
            killInfo = `SIGKILL stream leader ${leader} after ${k} sends`;
          })();
        },
      });
      await killing;
      row.sent = sendReport.sent;
      const drainStart = Date.now();
      const drained = await waitDrained(c, size.drainTimeoutMs);
      if (!drained) row.failures.push(`the work queue did not drain within ${size.drainTimeoutMs / 1000} s (${await streamMessages(jsm, c.names.tasksStream)} messages left)`);
      const drainSeconds = secondsSince(drainStart);
      const after = await retrying("read the new leader", () => jsm.streams.info(c.names.tasksStream)).catch(() => undefined);
      if (killed) {
        await killed.restart();
        await cl.waitForMetaLeader(30_000).catch((err) => row.notes.push(`after restart: ${(err as Error).message}`));
      }

      const ids = tasks.map((t) => t.id);
      const records = await storedRecords(c, ids);
      const executions = readExecutions(recordFiles(dir));
      const o = outcome(ids, records, executions);
      row.completed = o.completed;
      row.lost = o.lostIds.length;
      row.duplicated = o.duplicates.size;
      lostFailure(row, o.lostIds, o.otherStates);
      checkAlive(row, workers);
      row.notes.push(
        `${killInfo}; new leader ${after?.cluster?.leader ?? "?"}; killed node restarted at the end`,
        describeSendErrors(sendReport),
        `drained ${drainSeconds} s after the last send`,
        ...recoveryNotes(workers),
      );
      if (o.duplicates.size) row.notes.push(`${o.duplicates.size} duplicates: results or acks that failed during the election, so the task ran again (at-least-once)`);
    } catch (err) {
      row.failures.push(`case aborted: ${(err as Error).stack ?? err}`);
    } finally {
      await cleanup(workers, [client]);
      await cluster?.stop();
      row.seconds = secondsSince(t0);
      if (row.failures.length) {
        keep();
        row.notes.push(`logs kept in ${dir}`);
      }
    }
    return row;
  });
}

// ---------------------------------------------------------------------------------------------
// (d) bad messages on the task subjects
// ---------------------------------------------------------------------------------------------

export interface BadMessagesSize {
  messages: number;
  /** Per this many messages: one near-max_payload valid task, one near-max_payload bad one, one large bad one. */
  oversizeEvery: number;
  drainTimeoutMs: number;
}

export const BAD_MESSAGES = {
  full: { messages: 10_000, oversizeEvery: 1000, drainTimeoutMs: 120_000 },
  short: { messages: 1000, oversizeEvery: 500, drainTimeoutMs: 20_000 },
} satisfies Record<string, BadMessagesSize>;

/** The kinds of raw message case (d) publishes, and what must become of each. */
export const KINDS = {
  /** A well-formed task with the client's headers: must succeed. */
  valid: { expect: "success" },
  /** 0xc1 (never valid MessagePack) followed by the id. */
  garbage: { expect: ["undecodable"] },
  /** Valid MessagePack, but an array. */
  "not-map": { expect: ["undecodable"] },
  /** A map whose `id` is a number. */
  "bad-envelope": { expect: ["undecodable"] },
  /** Arguments that break the signature's schema. */
  "wrong-args": { expect: ["invalid-args"] },
  /** A task nobody implements. */
  "unknown-task": { expect: ["unknown-task"] },
  /** Protocol version 99. The sdk defines `unsupported-version`; `undecodable` is accepted too. */
  "future-version": { expect: ["unsupported-version", "undecodable"] },
  /** A well-formed task with no headers at all (no Nats-Msg-Id, no Celerity-Task): the body is enough. */
  "no-headers": { expect: "success" },
  /** Garbage with no headers: nothing names it but its bytes. */
  "no-headers-garbage": { expect: ["undecodable"] },
  /** A valid task padded to just under the server's max_payload. */
  "oversize-valid": { expect: "success" },
  /** Wrong arguments (a huge string where a number goes), just under max_payload. */
  "oversize-bad": { expect: ["invalid-args"] },
  /** Wrong arguments with a string of a third of max_payload: the message is fine, its error is not small. */
  "large-bad": { expect: ["invalid-args"] },
} as const satisfies Record<string, { expect: "success" | readonly string[] }>;
export type Kind = keyof typeof KINDS;

const CYCLE: Kind[] = [
  "valid", "garbage", "valid", "not-map", "valid", "bad-envelope", "valid", "wrong-args",
  "valid", "unknown-task", "valid", "future-version", "valid", "no-headers", "valid", "no-headers-garbage",
];

/** The kind of message `i` of `size.messages`. */
export function kindOf(i: number, size: BadMessagesSize): Kind {
  const half = Math.floor(size.oversizeEvery / 2);
  if (i % size.oversizeEvery === half) return "oversize-valid";
  if (i % size.oversizeEvery === half + 1) return "oversize-bad";
  if (i % size.oversizeEvery === half + 2) return "large-bad";
  return CYCLE[i % CYCLE.length]!;
}

const utf8 = new TextEncoder();

/** The body and headers of raw message `id` of `kind` (undefined body: send it with client.send). */
function rawMessage(kind: Kind, id: string, n: number, subjectQueue: string, maxPayload: number): { data: Uint8Array; headers: MsgHdrs | undefined } {
  const task = (over: Record<string, unknown> = {}) =>
    ({ v: PROTOCOL_VERSION, id, task: work.name, args: { n }, queue: subjectQueue, sentAt: Date.now(), replyTo: `_INBOX.chaos.${id}`, ...over });
  const clientHeaders = () => {
    const h = natsHeaders();
    h.set(HEADER.msgId, id);
    h.set(HEADER.task, work.name);
    h.set(HEADER.id, id);
    return h;
  };
  const garbage = () => new Uint8Array([0xc1, ...utf8.encode(id)]);
  switch (kind) {
    case "valid":
      return { data: encode(task()), headers: clientHeaders() };
    case "garbage":
      return { data: garbage(), headers: clientHeaders() };
    case "not-map":
      return { data: encode([id, 1, 2]), headers: clientHeaders() };
    case "bad-envelope":
      return { data: encode(task({ id: 42, tag: id })), headers: clientHeaders() };
    case "wrong-args":
      return { data: encode(task({ args: { n: "not a number" } })), headers: clientHeaders() };
    case "unknown-task":
      return { data: encode(task({ task: "chaos.nope" })), headers: clientHeaders() };
    case "future-version":
      return { data: encode(task({ v: 99 })), headers: clientHeaders() };
    case "no-headers":
      return { data: encode(task()), headers: undefined };
    case "no-headers-garbage":
      return { data: garbage(), headers: undefined };
    case "large-bad":
      return { data: encode(task({ args: { n: "y".repeat(Math.floor(maxPayload / 3)) } })), headers: clientHeaders() };
    case "oversize-valid":
    case "oversize-bad": {
      const h = clientHeaders();
      // NATS/1.0\r\n, one "key: value\r\n" per header, then \r\n.
      let hlen = "NATS/1.0\r\n\r\n".length;
      for (const [k, values] of h) for (const v of values) hlen += utf8.encode(`${k}: ${v}\r\n`).length;
      const build = (pad: string) => encode(kind === "oversize-valid" ? task({ args: { n, pad } }) : task({ args: { n: pad } }));
      // Just under max_payload, headers included (a str32 header is 5 bytes).
      const room = maxPayload - hlen - build("").length - 5 - 256;
      const data = build("x".repeat(room));
      if (data.length + hlen > maxPayload) throw new Error(`oversize message of ${data.length + hlen} bytes exceeds max_payload ${maxPayload}`);
      return { data, headers: h };
    }
  }
}

/** The id a dead letter carries: its Celerity-Id header, else the id after the 0xc1 of garbage. */
function idOfDeadLetter(h: MsgHdrs | undefined, data: Uint8Array): string | undefined {
  const fromHeader = h?.get(HEADER.id);
  if (fromHeader) return fromHeader;
  if (data[0] === 0xc1) return new TextDecoder().decode(data.subarray(1));
  return undefined;
}

/**
 * Publishes `messages` raw messages on the default queue's task subject, bad kinds interleaved
 * with valid tasks, then a last batch of valid tasks. Each bad message must be dead-lettered with
 * its reason, every valid task must complete, and the worker process must stay alive.
 */
export async function badMessagesCase(size: BadMessagesSize = BAD_MESSAGES.short): Promise<Row> {
  const row = newRow("d. bad messages interleaved");
  const t0 = Date.now();
  return withTempDir("celerity-chaos-d-", async (dir, keep) => {
    let server: NatsServer | undefined;
    let client: Client | undefined;
    let supervisor: Supervisor | undefined;
    try {
      server = await NatsServer.start();
      const ns = freshNamespace("chaosd");
      client = await chaosClient([server.url], ns);
      const c = client;
      await c.ensureTopology();
      // Error level only: a looping bad message must not write megabytes of warnings per second.
      const env = { CELERITY_CONCURRENCY: "8", CHAOS_SLEEP_MS: "0", CHAOS_LOG_LEVEL: "error", CELERITY_ACK_WAIT: "5" };
      supervisor = new Supervisor({ label: "w1", dir, servers: [server.url], namespace: ns, env });
      await supervisor.start();
      const maxPayload = c.nc.info?.max_payload ?? 1024 * 1024;
      const subject = c.names.taskSubject("default");
      const plan: { id: string; kind: Kind }[] = [];
      for (let i = 0; i < size.messages; i++) {
        const kind = kindOf(i, size);
        plan.push({ id: `d${i}-${kind}`, kind });
      }
      // A final batch of valid tasks after every bad one: the worker still serves.
      for (let i = 0; i < 20; i++) plan.push({ id: `dz${i}-valid`, kind: "valid" });

      let next = 0;
      let publishRetries = 0;
      const problems: string[] = [];
      const lane = async () => {
        for (;;) {
          const i = next++;
          if (i >= plan.length) return;
          const { id, kind } = plan[i]!;
          for (let attempt = 1; ; attempt++) {
            try {
              if (kind === "valid" && i % 2 === 0) {
                // Half the valid ones go through the real client path.
                await c.send(work, { n: i }, { id });
              } else {
                const { data, headers } = rawMessage(kind, id, i, "default", maxPayload);
                const ack = await c.publisher.publish(subject, data, headers);
                if (ack.stream !== c.names.tasksStream) problems.push(`${id}: PubAck from stream ${ack.stream}`);
              }
              break;
            } catch (err) {
              if (attempt >= 5) throw new Error(`publishing ${id} (${kind}) failed ${attempt} times: ${(err as Error).message}`, { cause: err });
              publishRetries++;
              await sleep(200);
            }
          }
        }
      };
      const publishStart = Date.now();
      await Promise.all(Array.from({ length: 64 }, lane));
      row.sent = plan.length;
      const publishSeconds = secondsSince(publishStart);
      const drained = await waitDrained(c, size.drainTimeoutMs);
      const jsm = await c.jsm();
      const left = await streamMessages(jsm, c.names.tasksStream);
      if (!drained) row.failures.push(`the work queue did not drain within ${size.drainTimeoutMs / 1000} s: ${left} message(s) still in it`);

      // Dead letters, by id and reason.
      const dlqInfo = await jsm.streams.info(c.names.dlqStream);
      const reasonsById = new Map<string, string[]>();
      const byReason = new Map<string, number>();
      const unnamed: string[] = [];
      const seqs: number[] = [];
      for (let s = dlqInfo.state.first_seq; s <= dlqInfo.state.last_seq && dlqInfo.state.messages > 0; s++) seqs.push(s);
      let nextSeq = 0;
      await Promise.all(Array.from({ length: 16 }, async () => {
        for (;;) {
          const k = nextSeq++;
          if (k >= seqs.length) return;
          const m = await jsm.streams.getMessage(c.names.dlqStream, { seq: seqs[k]! });
          if (!m) continue;
          const reason = m.header?.get(HEADER.dlqReason) || "(no reason)";
          byReason.set(reason, (byReason.get(reason) ?? 0) + 1);
          const id = idOfDeadLetter(m.header, m.data);
          if (!id) {
            unnamed.push(reason);
            continue;
          }
          const list = reasonsById.get(id);
          if (list) list.push(reason);
          else reasonsById.set(id, [reason]);
        }
      }));
      row.deadLettered = dlqInfo.state.messages;

      const validIds = plan.filter((p) => KINDS[p.kind].expect === "success").map((p) => p.id);
      const records = await storedRecords(c, validIds);
      const executions = readExecutions(recordFiles(dir));
      const o = outcome(validIds, records, executions);
      row.completed = o.completed;
      row.duplicated = o.duplicates.size;
      lostFailure(row, o.lostIds, o.otherStates);

      // Every bad message dead-lettered, once, with an expected reason.
      const notDeadLettered = new Map<Kind, string[]>();
      const wrongReason: string[] = [];
      let twice = 0;
      for (const p of plan) {
        const expect = KINDS[p.kind].expect;
        if (expect === "success") {
          if (reasonsById.has(p.id)) wrongReason.push(`${p.id} (valid) dead-lettered: ${reasonsById.get(p.id)!.join(", ")}`);
          continue;
        }
        const got = reasonsById.get(p.id);
        if (!got) {
          const list = notDeadLettered.get(p.kind) ?? [];
          list.push(p.id);
          notDeadLettered.set(p.kind, list);
          continue;
        }
        if (got.length > 1) twice++;
        if (!got.every((r) => (expect as readonly string[]).includes(r))) wrongReason.push(`${p.id}: ${got.join(", ")} (expected ${(expect as readonly string[]).join(" or ")})`);
      }
      const missing = [...notDeadLettered.values()].reduce((n, l) => n + l.length, 0);
      row.lost = o.lostIds.length + missing;
      if (missing) {
        const byKind = [...notDeadLettered].map(([kind, ids]) => `${ids.length} ${kind}`).join(", ");
        const eg = [...notDeadLettered.values()].flatMap((ids) => ids.slice(0, 1)).slice(0, 4).join(", ");
        row.failures.push(`${missing} bad message(s) never dead-lettered (${byKind}), e.g. ${eg}`);
      }
      if (wrongReason.length) row.failures.push(`${wrongReason.length} dead letter(s) with an unexpected reason, e.g. ${wrongReason.slice(0, 3).join("; ")}`);
      if (unnamed.length) row.failures.push(`${unnamed.length} dead letter(s) that name no message (${unnamed.slice(0, 3).join(", ")})`);
      if (problems.length) row.failures.push(problems.slice(0, 3).join("; "));
      if (supervisor.crashes.length) row.failures.push(`the worker process crashed ${supervisor.crashes.length}× (the harness restarted it each time); first: ${supervisor.crashes[0]}`);

      // A bad message that carries an id should also leave a FAILURE record under it.
      const badWithId = plan.filter((p) => KINDS[p.kind].expect !== "success" && !p.kind.includes("garbage") && p.kind !== "not-map" && p.kind !== "bad-envelope");
      const badRecords = await storedRecords(c, badWithId.map((p) => p.id));
      const noFailureRecord = badWithId.filter((p) => badRecords.get(p.id)?.state !== STATE.failure);

      const futureReasons = [...new Set(plan.filter((p) => p.kind === "future-version").flatMap((p) => reasonsById.get(p.id) ?? []))];
      const logs = supervisor.all.map((w) => w.logFile);
      const count = (re: RegExp) => logs.map((f) => grepLog(f, re)).reduce((a, g) => ({ count: a.count + g.count, samples: [...a.samples, ...g.samples] }), { count: 0, samples: [] as string[] });
      const dlqErrors = count(/could not dead-letter/);
      const recordErrors = count(/could not store the FAILURE record/);
      row.notes.push(
        `${plan.length - validIds.length} bad + ${validIds.length} valid published in ${publishSeconds} s${publishRetries ? ` (${publishRetries} publish retries)` : ""}`,
        `dead letters by reason: ${[...byReason].sort().map(([r, n]) => `${r} ${n}`).join(", ")}`,
        `future-version dead-lettered as: ${futureReasons.join(", ") || "-"}`,
        supervisor.crashes.length ? `worker crashed ${supervisor.crashes.length}× (restarted each time)` : "worker never crashed",
      );
      if (twice) row.notes.push(`${twice} bad message(s) dead-lettered twice`);
      if (noFailureRecord.length) row.notes.push(`${noFailureRecord.length} bad message(s) with an id have no FAILURE record (${[...new Set(noFailureRecord.map((p) => p.kind))].join(", ")})`);
      if (dlqErrors.count) row.notes.push(`worker logged "could not dead-letter" ${dlqErrors.count}×: ${dlqErrors.samples[0]}`);
      if (recordErrors.count) row.notes.push(`worker logged "could not store the FAILURE record" ${recordErrors.count}×`);
      if (left) row.notes.push(`${left} message(s) stuck in the work queue`);
    } catch (err) {
      row.failures.push(`case aborted: ${(err as Error).stack ?? err}`);
    } finally {
      await supervisor?.stop();
      await cleanup([], [client]);
      await server?.stop();
      row.seconds = secondsSince(t0);
      if (row.failures.length) {
        keep();
        row.notes.push(`logs kept in ${dir}`);
      }
    }
    return row;
  });
}

/** Every case with its full and short sizes, in table order. */
export const CASES = [
  { key: "a", run: (full: boolean) => killWorkerCase(full ? KILL_WORKER.full : KILL_WORKER.short) },
  { key: "b", run: (full: boolean) => restartServerCase(full ? RESTART_SERVER.full : RESTART_SERVER.short) },
  { key: "c", run: (full: boolean) => killLeaderCase(full ? KILL_LEADER.full : KILL_LEADER.short) },
  { key: "d", run: (full: boolean) => badMessagesCase(full ? BAD_MESSAGES.full : BAD_MESSAGES.short) },
] as const;

/** Formats rows as a Markdown table (notes joined with "; "). */
export function formatTable(rows: Row[]): string {
  const head = "| case | sent | completed | lost | duplicated | dead-lettered | seconds | notes |";
  const sep = "|---|---:|---:|---:|---:|---:|---:|---|";
  const lines = rows.map((r) =>
    `| ${r.case}${r.failures.length ? " **FAILED**" : ""} | ${r.sent} | ${r.completed} | ${r.lost} | ${r.duplicated} | ${r.deadLettered} | ${r.seconds} | ${r.notes.filter(Boolean).join("; ").replace(/\|/g, "\\|")} |`);
  return [head, sep, ...lines].join("\n");
}

