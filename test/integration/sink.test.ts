/**
 * `celerity sink postgres` against a real nats-server and a real PostgreSQL (database `test` on
 * 127.0.0.1:5432, or CELERITY_TEST_PG_URL): rows, out-of-order convergence, SIGKILL and restart.
 * Every run uses its own schema, dropped afterwards.
 */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import pg from "pg";
import * as v from "valibot";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { signature, type Client, type TaskEvent } from "../../sdk/client/mod.ts";
import { main } from "../../sdk/cli/mod.ts";
import { EVENT, encode, PROTOCOL_VERSION } from "../../sdk/protocol/mod.ts";
import { monitor, taskTimeline } from "../../sdk/monitor/mod.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

const PG_URL = process.env.CELERITY_TEST_PG_URL ?? "postgres://root@127.0.0.1:5432/test";
const root = fileURLToPath(new URL("../..", import.meta.url));
const schema = `celerity_t${process.pid}_${Math.random().toString(36).slice(2, 8)}`;

let server: NatsServer;
let db: pg.Client;
before(async () => {
  server = await NatsServer.start();
  db = new pg.Client({ connectionString: PG_URL });
  await db.connect();
});
after(async () => {
  await db?.query(`DROP SCHEMA IF EXISTS "${schema}" CASCADE`).catch(() => {});
  await db?.end();
  await server?.stop();
});

const double = signature("sink.double", { args: v.object({ n: v.number() }), result: v.object({ doubled: v.number() }) });
const broken = signature("sink.broken", { args: v.object({ n: v.number() }) });
const flaky = signature("sink.flaky", { args: v.object({ n: v.number() }), result: v.number() });

async function celerity(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = "";
  let err = "";
  const code = await main(args, { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) });
  return { code, out, err };
}

function sinkArgs(ns: string, table: string, ...extra: string[]): string[] {
  return ["sink", "postgres", "--url", PG_URL, "--table", `${schema}.${table}`, "--servers", server.url, "--namespace", ns, ...extra];
}

async function readAll(c: Client): Promise<TaskEvent[]> {
  const out: TaskEvent[] = [];
  for await (const e of monitor(c, { since: "all", follow: false })) out.push(e);
  return out;
}

type Row = Record<string, unknown>;
async function rows(table: string): Promise<Map<string, Row>> {
  const r = await db.query(`SELECT * FROM "${schema}"."${table}" ORDER BY id`);
  return new Map(r.rows.map((row: Row) => [row.id as string, row]));
}

async function offset(table: string, stream: string): Promise<number> {
  const r = await db.query(`SELECT seq FROM "${schema}".celerity_sink_offsets WHERE target = $1 AND stream = $2`, [table, stream]).catch(() => ({ rows: [] as Row[] }));
  return r.rows[0] ? Number(r.rows[0].seq) : 0;
}

async function publishEvents(c: Client, batches: TaskEvent[][]): Promise<void> {
  const subject = c.names.eventsSubject("task");
  // In order (each waits for its PubAck), so stream order is the order given.
  for (const events of batches) await c.publisher.publish(subject, encode({ v: PROTOCOL_VERSION, events }));
}

/** A deterministic shuffle. */
function shuffle<T>(items: T[], seed: number): T[] {
  const out = [...items];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

/** The four events of a successful run of synthetic task `i`. */
function lifecycle(i: number, at: number): TaskEvent[] {
  const base = { id: `task-${String(i).padStart(4, "0")}`, task: `load.t${i % 3}`, queue: "default" };
  return [
    { ...base, type: EVENT.sent, at, args: { i } },
    { ...base, type: EVENT.received, at: at + 1, worker: "w1", retries: 0 },
    { ...base, type: EVENT.started, at: at + 2, worker: "w1" },
    { ...base, type: EVENT.succeeded, at: at + 3, worker: "w1", result: i * 2, runtimeMs: 1 },
  ];
}

test("sink - rows of succeeded, failed and retried tasks; a second run and a redelivery apply nothing twice", async () => {
  const ns = freshNamespace("sink");
  await using c = await client(server, ns);
  const tries = new Map<number, number>();
  await using w = worker(server, ns)
    .implement(double, ({ n }) => ({ doubled: n * 2 }))
    .implement(broken, ({ n }) => {
      throw new TypeError(`broken ${n}`);
    })
    .implement(flaky, ({ n }, ctx) => {
      const t = (tries.get(n) ?? 0) + 1;
      tries.set(n, t);
      if (t === 1) throw ctx.retry({ delay: 0.05 });
      return n + 1;
    });
  await w.start();
  const ok = await c.send(double, { n: 21 });
  const bad = await c.send(broken, { n: 2 });
  const retried = await c.send(flaky, { n: 3 }, { retries: 2 });
  const ids = [ok.id, bad.id, retried.id];
  const events = await eventually(async () => {
    const all = await readAll(c);
    const finals = new Set(all.filter((e) => e.type === EVENT.succeeded || e.type === EVENT.failed).map((e) => e.id));
    return ids.every((id) => finals.has(id)) ? all : undefined;
  }, 15_000, "every task's final event");

  const first = await celerity(sinkArgs(ns, "tasks", "--once"));
  assert.equal(first.code, 0, first.err);
  assert.match(first.err, /migrated .*\.tasks to schema version 1/);
  assert.match(first.out, new RegExp(`^applied ${events.length} events `));
  const table = await rows("tasks");
  assert.equal(table.size, 3);

  const r = table.get(ok.id)!;
  assert.equal(r.state, "SUCCESS");
  assert.equal(r.name, "sink.double");
  assert.equal(r.queue, "default");
  assert.deepEqual(r.args, { n: 21 });
  assert.deepEqual(r.result, { doubled: 42 });
  assert.equal(r.error, null);
  assert.equal(r.worker, w.identity.id);
  assert.equal(r.retries, 0);
  assert.equal(r.attempts, 1);
  assert.equal(r.last_event, EVENT.succeeded);
  for (const col of ["sent_at", "received_at", "started_at", "finished_at", "updated_at"]) assert.ok(r[col] instanceof Date, col);
  assert.ok((r.sent_at as Date) <= (r.finished_at as Date));
  assert.ok((r.started_at as Date) <= (r.finished_at as Date));

  const b = table.get(bad.id)!;
  assert.equal(b.state, "FAILURE");
  assert.deepEqual(b.args, { n: 2 });
  assert.equal(b.result, null);
  assert.equal((b.error as { type: string; message: string }).type, "TypeError");
  assert.equal((b.error as { type: string; message: string }).message, "broken 2");
  assert.equal(b.dead_letter_reason, "failed");

  const t = table.get(retried.id)!;
  assert.equal(t.state, "SUCCESS");
  assert.equal(t.result, 4);
  assert.equal(t.retries, 1);
  assert.equal(t.attempts, 2);

  // Each row applied each of its events once, and agrees with the SDK's fold.
  const views = taskTimeline(events);
  for (const id of ids) {
    assert.equal(table.get(id)!.events_applied, events.filter((e) => e.id === id).length, id);
    assert.equal(table.get(id)!.state, views.get(id)!.state);
  }
  const stream = c.names.eventsStream;
  const jsm = await c.jsm();
  assert.equal(await offset("tasks", stream), (await jsm.streams.info(stream)).state.last_seq);
  const migrations = await db.query(`SELECT target, version FROM "${schema}".celerity_migrations WHERE target = 'tasks'`);
  assert.deepEqual(migrations.rows, [{ target: "tasks", version: 1 }]);

  // A second run: nothing new, nothing re-applied, no migration.
  const second = await celerity(sinkArgs(ns, "tasks", "--once"));
  assert.equal(second.code, 0, second.err);
  assert.doesNotMatch(second.err, /migrated/);
  assert.match(second.out, /^applied 0 events/);

  // Every batch delivered again (a consumer that lost its acks): skipped at the offset, not re-applied.
  await jsm.consumers.delete(stream, "sink-postgres");
  await jsm.consumers.add(stream, { durable_name: "sink-postgres", ack_policy: "explicit" as never, deliver_policy: "all" as never, filter_subject: c.names.eventsSubject("task") });
  const third = await celerity(sinkArgs(ns, "tasks", "--once"));
  assert.equal(third.code, 0, third.err);
  assert.match(third.out, /^applied 0 events .*; \d+ redelivered batches skipped/);
  const after = await rows("tasks");
  for (const id of ids) assert.equal(after.get(id)!.events_applied, table.get(id)!.events_applied);

  // Bad usage exits 2 before connecting.
  assert.equal((await celerity(["sink", "mysql", "--url", PG_URL])).code, 2);
  assert.equal((await celerity(["sink", "postgres", "--url", PG_URL, "--table", "a.b.c"])).code, 2);
  const noDb = await celerity(["sink", "postgres", "--url", "postgres://root:secret@127.0.0.1:1/test", "--servers", server.url, "--namespace", ns]);
  assert.equal(noDb.code, 1);
  assert.match(noDb.err, /cannot connect to PostgreSQL at postgres:\/\/root:\*\*\*@127\.0\.0\.1:1\/test/);
});

test("sink - events arriving out of order converge: every order and transaction split gives the same rows", async () => {
  const at = Date.now();
  const base = (id: string, task = "ooo.task") => ({ id, task, queue: "q" });
  const retryError = { type: "E", message: "first run failed", retryable: true };
  // One task per situation, each from several "processes".
  const events: TaskEvent[] = [
    ...lifecycle(1, at),
    // Retried, then succeeded on another worker.
    { ...base("retried"), type: EVENT.sent, at, args: { x: 1 } },
    { ...base("retried"), type: EVENT.received, at: at + 1, worker: "w1", retries: 0 },
    { ...base("retried"), type: EVENT.started, at: at + 2, worker: "w1" },
    { ...base("retried"), type: EVENT.retried, at: at + 3, worker: "w1", retries: 1, error: retryError },
    { ...base("retried"), type: EVENT.received, at: at + 50, worker: "w2", retries: 1 },
    { ...base("retried"), type: EVENT.started, at: at + 51, worker: "w2" },
    { ...base("retried"), type: EVENT.progress, at: at + 52, worker: "w2", progress: { pct: 50 } },
    { ...base("retried"), type: EVENT.succeeded, at: at + 53, worker: "w2", result: [1, 2], runtimeMs: 2 },
    // Dead-lettered (the worker sends both events in the same millisecond).
    { ...base("dead"), type: EVENT.sent, at, args: null },
    { ...base("dead"), type: EVENT.received, at: at + 1, worker: "w1", retries: 0 },
    { ...base("dead"), type: EVENT.deadLettered, at: at + 2, worker: "w1", reason: "invalid-args", error: { type: "InvalidArgumentsError", message: "bad", retryable: false } },
    { ...base("dead"), type: EVENT.failed, at: at + 2, worker: "w1", error: { type: "InvalidArgumentsError", message: "bad", retryable: false } },
    // Revoked before it ran; the client's clock is ahead of the worker's.
    { ...base("revoked"), type: EVENT.sent, at: at + 500, args: { y: "\u0000nul" } },
    { ...base("revoked"), type: EVENT.revoked, at: at + 10, worker: "w3", reason: "revoked by request" },
    // Only a result, never a task-sent (the Cadasta case: the result row comes first).
    { ...base("orphan"), type: EVENT.succeeded, at: at + 7, worker: "w1", result: 123456789012345678n as unknown },
  ];
  const expected = taskTimeline(events);
  const namespaces: string[] = [];
  const tables: string[] = [];
  for (const [k, order] of [[0, events], [1, shuffle(events, 7)], [2, shuffle(events, 99)], [3, [...events].reverse()]] as const) {
    const ns = freshNamespace("ooo");
    await using c = await client(server, ns);
    // Batches of 1 to 3 events, as several processes would publish them.
    const batches: TaskEvent[][] = [];
    for (let i = 0; i < order.length; ) {
      const size = 1 + ((i * 7 + k) % 3);
      batches.push(order.slice(i, i + size));
      i += size;
    }
    await publishEvents(c, batches);
    // One transaction per batch in two of the runs (the merge happens in SQL), one for all otherwise.
    const table = `ooo${k}`;
    const res = await celerity(sinkArgs(ns, table, "--once", "--batch", k % 2 === 0 ? "1" : "1000"));
    assert.equal(res.code, 0, res.err);
    const m = new RegExp(`^applied ${events.length} events \\(${batches.length} batches in (\\d+) transactions\\)`).exec(res.out);
    assert.ok(m, res.out);
    if (k % 2 === 0) assert.equal(Number(m[1]), batches.length, "one transaction per batch");
    namespaces.push(ns);
    tables.push(table);
  }
  const strip = (r: Row) => {
    const { updated_at: _u, last_event_seq: _s, ...rest } = r;
    return rest;
  };
  const reference = await rows(tables[0]!);
  for (const table of tables.slice(1)) {
    const other = await rows(table);
    assert.deepEqual([...other.keys()], [...reference.keys()]);
    for (const [id, row] of reference) assert.deepEqual(strip(other.get(id)!), strip(row), `${table} ${id}`);
  }
  // And the rows say what the SDK's fold says.
  for (const [id, view] of expected) {
    const row = reference.get(id)!;
    assert.equal(row.state, view.state, id);
    assert.equal(row.last_event, view.lastType, id);
    assert.equal(row.events_applied, view.events, id);
    assert.equal(row.retries, view.retries, id);
    assert.equal(row.attempts, view.attempts, id);
    assert.equal(row.worker ?? undefined, view.worker, id);
  }
  const retried = reference.get("retried")!;
  assert.equal(retried.state, "SUCCESS");
  assert.deepEqual(retried.result, [1, 2]);
  assert.deepEqual(retried.progress, { pct: 50 });
  assert.equal(retried.worker, "w2");
  assert.equal(retried.error, null);
  assert.equal((retried.received_at as Date).getTime(), at + 50);
  const dead = reference.get("dead")!;
  assert.equal(dead.state, "FAILURE");
  assert.equal(dead.dead_letter_reason, "invalid-args");
  assert.equal(dead.args, null, "args were sent as null: the jsonb value null");
  const args = await db.query(`SELECT args IS NULL AS sql_null, jsonb_typeof(args) AS t FROM "${schema}".ooo0 WHERE id = 'dead'`);
  assert.deepEqual(args.rows[0], { sql_null: false, t: "null" });
  const revoked = reference.get("revoked")!;
  assert.equal(revoked.state, "REVOKED");
  assert.equal(revoked.reason, "revoked by request");
  assert.deepEqual(revoked.args, { y: "\uFFFDnul" }, "NUL, which jsonb refuses, is replaced");
  const orphan = reference.get("orphan")!;
  assert.equal(orphan.state, "SUCCESS");
  assert.equal(orphan.args, null);
  assert.equal(orphan.sent_at, null);
  assert.equal(orphan.result, "123456789012345678", "a bigint beyond 2^53 is stored as a string");
  const simple = reference.get("task-0001")!;
  assert.equal(simple.state, "SUCCESS");
  assert.equal(simple.result, 2);
});

function runSinkChild(ns: string, table: string, ...extra: string[]): { child: ChildProcess; exited: Promise<number | null>; out: () => string; err: () => string } {
  const child = spawn(process.execPath, ["--import", "tsx", "sdk/cli/run.ts", ...sinkArgs(ns, table, ...extra)], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  let err = "";
  child.stdout!.on("data", (d: Buffer) => (out += d.toString()));
  child.stderr!.on("data", (d: Buffer) => (err += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  return { child, exited, out: () => out, err: () => err };
}

test("sink - SIGKILL mid-stream and restart: no event lost or applied twice; SIGTERM exits 0", async (t) => {
  const ns = freshNamespace("kill");
  await using c = await client(server, ns);
  const stream = c.names.eventsStream;
  const tasks = 400;
  const at = Date.now();
  // 1600 events, one per message, in a shuffled order (results before sends, and so on).
  const all = shuffle(Array.from({ length: tasks }, (_, i) => lifecycle(i, at + i)).flat(), 1234).map((e) => [e]);
  const half = all.length / 2;
  await publishEvents(c, all.slice(0, half));

  // Run 1: one transaction per message, killed while it is applying.
  const run1 = runSinkChild(ns, "load", "--batch", "1");
  await eventually(async () => (await offset("load", stream)) >= 100, 20_000, `run 1 applying (stderr: ${run1.err()})`);
  run1.child.kill("SIGKILL");
  assert.equal(await run1.exited, null);
  const killedAt = await offset("load", stream);
  assert.ok(killedAt < half, `killed mid-stream at offset ${killedAt}`);

  // While it is down, the rest arrives.
  await publishEvents(c, all.slice(half));

  // Run 2: resumes after the stored offset; a second sink on the same table is refused meanwhile.
  const run2 = runSinkChild(ns, "load", "--batch", "1");
  await eventually(() => /sink postgres: .* after sequence \d+/.test(run2.err()), 20_000, `run 2 started (stderr: ${run2.err()})`);
  const rival = await celerity(sinkArgs(ns, "load", "--once"));
  assert.equal(rival.code, 1);
  assert.match(rival.err, /another sink is writing .*load/);
  await eventually(async () => (await offset("load", stream)) >= killedAt + 300, 20_000, `run 2 applying (stderr: ${run2.err()})`);
  run2.child.kill("SIGKILL");
  await run2.exited;
  const killed2At = await offset("load", stream);

  // Run 3: catches up, then SIGTERM: it finishes its batch, commits, acks and exits 0.
  const run3 = runSinkChild(ns, "load", "--batch", "50");
  const jsm = await c.jsm();
  const last = (await jsm.streams.info(stream)).state.last_seq;
  await eventually(async () => (await offset("load", stream)) === last, 30_000, `run 3 caught up (stderr: ${run3.err()})`);
  run3.child.kill("SIGTERM");
  assert.equal(await run3.exited, 0, run3.err());
  assert.match(run3.err(), /SIGTERM: finishing the batch in hand/);
  assert.match(run3.out(), /^applied \d+ events/);

  const starts = (text: string) => text.split("\n").filter((l) => l.startsWith("sink postgres:")).join(" | ");
  t.diagnostic(`run 1 killed at offset ${killedAt}/${all.length}; run 2 killed at ${killed2At}; ${starts(run2.err())}; ${starts(run3.err())}; ${run3.out().trim()}`);
  const table = await rows("load");
  assert.equal(table.size, tasks);
  let applied = 0;
  for (const [id, row] of table) {
    assert.equal(row.events_applied, 4, `${id} applied each of its 4 events once`);
    assert.equal(row.state, "SUCCESS", id);
    assert.equal(row.attempts, 1, id);
    assert.ok(row.args !== null && row.result !== null, id);
    applied += row.events_applied as number;
  }
  assert.equal(applied, all.length);
  assert.equal(await offset("load", stream), last);
  const ci = await jsm.consumers.info(stream, "sink-postgres");
  assert.equal(ci.num_ack_pending, 0, "everything committed was acknowledged");
  assert.equal(ci.num_pending, 0);
});
