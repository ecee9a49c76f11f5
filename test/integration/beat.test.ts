/**
 * Beat against a real nats-server, on a virtual clock driven with beat.tick(at): replicas fire each
 * tick exactly once, fail over without losing or doubling ticks, and catch up after a restart.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { NatsServer } from "../../sdk/testing/mod.ts";
import type { Client } from "../../sdk/client/mod.ts";
import { decodeTaskMessage } from "../../sdk/protocol/mod.ts";
import { Beat, checkSchedule, ticksBetween, tickId, type BeatOptions, type ScheduleEntry, type TickReport } from "../../sdk/beat/mod.ts";
import { client, eventually, freshNamespace } from "./helpers.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

/** Virtual time starts on a whole hour. */
const T0 = Date.UTC(2030, 0, 1);
const S = 1000;
const MIN = 60 * S;

/** Ids of every task stored in the namespace's tasks stream, in order. */
async function storedTaskIds(c: Client): Promise<string[]> {
  await c.ensureTopology();
  const jsm = await c.jsm();
  const info = await jsm.streams.info(c.names.tasksStream);
  const ids: string[] = [];
  if (info.state.messages === 0) return ids;
  for (let seq = info.state.first_seq; seq <= info.state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(c.names.tasksStream, { seq }).catch(() => null);
    if (m) ids.push(decodeTaskMessage(m.data).id);
  }
  return ids;
}

/** The ids the schedules must have fired for ticks in (from, to]. */
function expectedIds(entries: ScheduleEntry[], from: number, to: number): string[] {
  return entries.flatMap((e) => {
    const s = checkSchedule(e);
    return ticksBetween(s, from, to).map((t) => tickId(s.name, t));
  });
}

const sorted = (xs: string[]) => [...xs].sort();

function beat(c: Client, schedules: ScheduleEntry[], clock: { now: number }, extra: Partial<BeatOptions> = {}): Beat {
  return new Beat(c, { schedules, now: () => clock.now, leaseSeconds: 30, logLevel: "silent", ...extra });
}

describe("beat", () => {
  test("beat - two replicas over many simulated ticks fire each tick exactly once", async () => {
    const ns = freshNamespace("beat");
    const schedules: ScheduleEntry[] = [
      { name: "minutely", task: "jobs.minutely", every: 60, args: { n: 1 } },
      { name: "five", task: "jobs.five", cron: "*/5 * * * *", timezone: "America/New_York" },
      // 00:00 in Kolkata is hh:30 UTC: a zone with a half-hour offset.
      { name: "kolkata", task: "jobs.kolkata", cron: "0 * * * *", timezone: "Asia/Kolkata", options: { priority: 3, expires: 600 } },
    ];
    await using ca = await client(server, ns);
    await using cb = await client(server, ns);
    const clock = { now: T0 };
    const a = beat(ca, schedules, clock, { identity: "a" });
    const b = beat(cb, schedules, clock, { identity: "b" });
    const reports: TickReport[] = [];
    const end = T0 + 60 * MIN;
    for (let at = T0; at <= end; at += 15 * S) {
      clock.now = at;
      // Both evaluate at the same moment: the lease decides.
      const both = await Promise.all([a.tick(at), b.tick(at)]);
      assert.equal(both.filter((r) => r.leader).length, 1, `exactly one leader at +${(at - T0) / S} s`);
      reports.push(...both);
    }
    const fired = reports.flatMap((r) => r.fired.map((f) => f.id));
    const expected = expectedIds(schedules, T0, end);
    assert.equal(expected.length, 60 + 12 + 1);
    assert.deepEqual(sorted(fired), sorted(expected), "every tick sent once, by one replica");
    assert.deepEqual(sorted(await storedTaskIds(ca)), sorted(expected), "every tick stored once");
    assert.ok(reports.every((r) => r.fired.every((f) => !f.late)));
    await a.close();
    await b.close();
  });

  test("beat - when the leader dies or leaves, another replica takes over and no tick is lost or doubled", async () => {
    const ns = freshNamespace("beat");
    const schedules: ScheduleEntry[] = [
      { name: "minutely", task: "jobs.minutely", every: 60 },
      { name: "even", task: "jobs.even", cron: "*/2 * * * *", timezone: "Europe/Paris", catchUp: "skip" },
    ];
    // The clock is simulated; a server slowed by the rest of the suite must not fail a request.
    const patient = { requestTimeout: 20_000 };
    await using c1 = await client(server, ns, patient);
    await using c2 = await client(server, ns, patient);
    await using c3 = await client(server, ns, patient);
    const clock = { now: T0 };
    const replicas = new Map<string, Beat>([["one", beat(c1, schedules, clock, { identity: "one" })], ["two", beat(c2, schedules, clock, { identity: "two" })]]);
    const fired: string[] = [];
    const leaders: string[] = [];
    let at = T0;
    const run = async (minutes: number) => {
      for (const stop = at + minutes * MIN; at < stop;) {
        at += 10 * S;
        clock.now = at;
        const reports = await Promise.all([...replicas.values()].map((r) => r.tick(at)));
        const leading = reports.filter((r) => r.leader);
        assert.ok(leading.length <= 1, "never two leaders in one evaluation");
        if (leading[0]) leaders.push([...replicas.keys()][reports.indexOf(leading[0])]!);
        fired.push(...reports.flatMap((r) => r.fired.map((f) => f.id)));
      }
    };
    await run(5);
    const first = leaders.at(-1)!;
    assert.ok(leaders.every((l) => l === first), "one stable leader");

    // The leader dies: it stops renewing without releasing. The other waits out the lease (30 s).
    await replicas.get(first)!.close({ release: false });
    replicas.delete(first);
    const led = leaders.length;
    await run(5);
    const second = [...replicas.keys()][0]!;
    assert.equal(leaders.at(-1), second);
    const leaderless = 30 - (leaders.length - led);
    assert.ok(leaderless >= 1 && leaderless <= 3, `took over once the 30 s lease expired (${leaderless} evaluations of 10 s without a leader)`);

    // A third replica joins; then the leader leaves gracefully and hands over at once.
    replicas.set("three", beat(c3, schedules, clock, { identity: "three" }));
    await run(3);
    assert.equal(leaders.at(-1), second, "a newcomer does not steal a live lease");
    const before = leaders.length;
    await replicas.get(second)!.close();
    replicas.delete(second);
    await run(3);
    assert.equal(leaders.length - before, 18, "the newcomer led at every evaluation after the release");

    const expected = expectedIds(schedules, T0, at);
    assert.equal(expected.length, 16 + 8);
    assert.deepEqual(sorted(fired), sorted(expected));
    assert.deepEqual(sorted(await storedTaskIds(c1)), sorted(expected), "no tick lost or doubled across two changes of leader");
    for (const r of replicas.values()) await r.close();
  });

  test("beat - a replica whose clock runs ahead does not take the lease of a leader that renews it", async () => {
    const ns = freshNamespace("beat");
    const schedules: ScheduleEntry[] = [{ name: "daily", task: "jobs.daily", cron: "0 7 * * *" }];
    await using ca = await client(server, ns);
    await using cb = await client(server, ns);
    const a = new Beat(ca, { schedules, leaseSeconds: 10, identity: "a", logLevel: "silent" });
    const b = new Beat(cb, { schedules, leaseSeconds: 10, identity: "b", logLevel: "silent" });
    const skew = 15 * S; // b's clock, 1.5 leases ahead of a's
    for (let t = T0; t <= T0 + 2 * MIN; t += 3 * S) {
      assert.equal((await a.tick(t)).leader, true, `a renews at +${(t - T0) / S} s`);
      assert.equal((await b.tick(t + skew)).leader, false, `b (15 s ahead) stands by at +${(t - T0) / S} s`);
    }
    // a dies: b notices by the revision standing still for a lease on its own clock.
    let at = T0 + 2 * MIN + skew;
    let led = false;
    for (let i = 0; i < 6 && !led; i++, at += 3 * S) led = (await b.tick(at)).leader;
    assert.ok(led, "b took over within about a lease after a stopped renewing");
    await b.close();
    await a.close({ release: false });
  });

  test("beat - fencing: a leader that lost its lease stops firing, and a tick sent by two leaders at once is stored once", async () => {
    const ns = freshNamespace("beat");
    const schedules: ScheduleEntry[] = [{ name: "minutely", task: "jobs.minutely", every: 60 }];
    await using ca = await client(server, ns);
    await using cb = await client(server, ns);
    const a = new Beat(ca, { schedules, leaseSeconds: 30, identity: "a", logLevel: "silent" });
    const b = new Beat(cb, { schedules, leaseSeconds: 30, identity: "b", logLevel: "silent" });
    assert.equal((await a.tick(T0)).leader, true);
    assert.deepEqual((await a.tick(T0 + MIN)).fired.map((f) => f.id), [tickId("minutely", T0 + MIN)]);

    // A renews at +2 min and starts sending that tick, but its send stalls (a long GC pause)…
    const send = ca.send.bind(ca);
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    let entered = false;
    (ca as { send: unknown }).send = async (...args: Parameters<typeof send>) => {
      entered = true;
      await stalled;
      return send(...args);
    };
    const aTick = a.tick(T0 + 2 * MIN);
    await eventually(() => entered, 10_000, "A sending");
    // …long enough for B to see its lease (renewed at +2 min, 30 s) stand still for a whole lease
    // on B's own clock: B takes over and sends the same tick.
    assert.equal((await b.tick(T0 + 2 * MIN + 1 * S)).leader, false, "B sees A's renewal");
    const bTick = await b.tick(T0 + 2 * MIN + 31 * S);
    assert.equal(bTick.leader, true);
    assert.deepEqual(bTick.fired.map((f) => f.id), [tickId("minutely", T0 + 2 * MIN)]);
    release();
    (ca as { send: unknown }).send = send;
    const aReport = await aTick;
    assert.deepEqual(aReport.fired.map((f) => f.id), [tickId("minutely", T0 + 2 * MIN)], "A sent it too, in the same split second");

    // A's next evaluation (within B's lease) fails its compare-and-set: it no longer fires.
    const aLater = await a.tick(T0 + 2 * MIN + 45 * S);
    assert.equal(aLater.leader, false);
    assert.equal(aLater.holder, "b");
    assert.deepEqual(aLater.fired, []);
    assert.deepEqual((await b.tick(T0 + 3 * MIN)).fired.map((f) => f.id), [tickId("minutely", T0 + 3 * MIN)]);

    assert.deepEqual(await storedTaskIds(ca), [1, 2, 3].map((m) => tickId("minutely", T0 + m * MIN)), "the doubly sent tick is stored once (its id is the dedupe key)");
    await a.close();
    await b.close();
  });

  test("beat - a restarted beat neither repeats nor silently loses ticks: catchUp skip, once and all", async () => {
    const ns = freshNamespace("beat");
    const schedules: ScheduleEntry[] = [
      { name: "skip", task: "jobs.skip", every: 60, catchUp: "skip" },
      { name: "once", task: "jobs.once", every: 60, catchUp: "once" },
      { name: "all", task: "jobs.all", every: 60, catchUp: "all" },
    ];
    const clock = { now: T0 };
    {
      await using c = await client(server, ns);
      const first = beat(c, schedules, clock, { leaseSeconds: 10 });
      assert.deepEqual((await first.tick(T0)).fired, [], "the first start fires nothing before it");
      assert.equal((await first.tick(T0 + MIN)).fired.length, 3);
      await first.close();
    }
    // Down for 9.5 minutes: ticks +2 … +10 min were missed (more than the 20 s grace late).
    await using c = await client(server, ns);
    const second = beat(c, schedules, clock, { leaseSeconds: 10 });
    const at = T0 + 10 * MIN + 30 * S;
    const report = await second.tick(at);
    assert.equal(report.leader, true);
    const by = (name: string) => report.fired.filter((f) => f.schedule === name).map((f) => (f.tick - T0) / MIN);
    assert.deepEqual(by("skip"), [], "skip: missed ticks are dropped");
    assert.deepEqual(by("once"), [10], "once: one run for the gap (the latest missed tick)");
    assert.deepEqual(by("all"), [2, 3, 4, 5, 6, 7, 8, 9, 10], "all: every missed tick, oldest first");
    assert.ok(report.fired.every((f) => f.late));
    assert.deepEqual(report.dropped, { skip: 9, once: 8 });

    // The next tick is on time for all three; nothing already sent is sent again.
    const next = await second.tick(T0 + 11 * MIN);
    assert.deepEqual(next.fired.map((f) => [f.schedule, (f.tick - T0) / MIN, f.late]), [["skip", 11, false], ["once", 11, false], ["all", 11, false]]);
    const stored = await storedTaskIds(c);
    assert.equal(stored.length, new Set(stored).size, "no id stored twice");
    assert.equal(stored.length, 3 + 0 + 1 + 9 + 3);
    await second.close();
  });

  test("beat - a schedule removed and later added back starts afresh instead of replaying its absence", async () => {
    const ns = freshNamespace("beat");
    const cleanup: ScheduleEntry = { name: "cleanup", task: "jobs.cleanup", every: 60, catchUp: "all" };
    const other: ScheduleEntry = { name: "other", task: "jobs.other", every: 60 };
    const clock = { now: T0 };
    await using c = await client(server, ns);
    for (const [schedules, at] of [[[cleanup, other], T0], [[cleanup, other], T0 + MIN], [[other], T0 + 2 * MIN], [[other], T0 + 3 * MIN]] as const) {
      // A new Beat (a redeploy with another configuration) each time: a new term.
      const b = beat(c, [...schedules], clock, { leaseSeconds: 10 });
      await b.tick(at);
      await b.close();
    }
    // cleanup is back 30 days later; other ran all along (its last tick is recent).
    const back = beat(c, [cleanup, other], clock, { leaseSeconds: 10 });
    const at = T0 + 30 * 24 * 60 * MIN;
    const report = await back.tick(at);
    assert.equal(report.leader, true);
    assert.deepEqual(report.fired.filter((f) => f.schedule === "cleanup"), [], "cleanup starts from now: its 43,000 ticks away are not missed");
    const next = await back.tick(at + MIN);
    assert.deepEqual(next.fired.map((f) => f.schedule).sort(), ["cleanup", "other"]);
    await back.close();
  });

  test("beat - a catch-up stores its progress per tick (a crash mid-batch resends nothing); on-time ticks past maxCatchUp are sent next, not dropped", async () => {
    const ns = freshNamespace("beat");
    const clock = { now: T0 };
    const all: ScheduleEntry = { name: "all", task: "jobs.all", every: 60, catchUp: "all" };
    {
      await using c = await client(server, ns);
      const first = beat(c, [all], clock, { leaseSeconds: 10 });
      await first.tick(T0);
      await first.close();
    }
    {
      // Ten ticks missed; the process dies while sending the sixth (its send never answers).
      await using c = await client(server, ns);
      let sends = 0;
      const send = c.send.bind(c);
      c.send = ((...a: Parameters<typeof send>) => (++sends <= 5 ? send(...a) : new Promise(() => {}))) as typeof c.send;
      const dying = beat(c, [all], clock, { leaseSeconds: 10 });
      void dying.tick(T0 + 10 * MIN + 1);
      await eventually(() => sends === 6, 10_000, "the sixth send");
      const kv = await c.jsm().then((jsm) => jsm.streams.info(`KV_${ns}_beat`));
      assert.ok(kv.state.messages > 0);
    }
    await using c = await client(server, ns);
    const after = beat(c, [all], clock, { leaseSeconds: 10 });
    // Past the lease of the dead replica (10 s, plus 30 s of clock slack for a replica that never
    // saw it renew: see clockSlackMs); ids are deduplicated only for 120 s, and this
    // restart may come later: progress must say which ticks were sent.
    const report = await after.tick(T0 + 10 * MIN + 41 * S);
    assert.equal(report.leader, true);
    assert.deepEqual(report.fired.map((f) => (f.tick - T0) / MIN), [6, 7, 8, 9, 10], "only the ticks the dead replica did not send");
    await after.close();

    // maxCatchUp 3 with an every-second schedule and a 20 s grace: 20 on-time ticks due at once.
    const ns2 = freshNamespace("beat");
    await using c2 = await client(server, ns2);
    const sec: ScheduleEntry = { name: "sec", task: "jobs.sec", every: 1, catchUp: "skip" };
    const b = beat(c2, [sec], clock, { leaseSeconds: 10, maxCatchUp: 3 });
    await b.tick(T0);
    const fired: number[] = [];
    for (let i = 0; i < 10; i++) fired.push(...(await b.tick(T0 + 20 * S)).fired.map((f) => (f.tick - T0) / S));
    assert.deepEqual(fired, Array.from({ length: 20 }, (_, i) => i + 1), "every on-time tick, 3 per evaluation, none dropped");
    await b.close();
  });

  test("beat - bad options are refused; unreadable lease and progress records are replaced; a schedule's queue needs no worker yet", async () => {
    const ns = freshNamespace("beat");
    await using c = await client(server, ns);
    const s: ScheduleEntry[] = [{ name: "sync", task: "jobs.sync", every: 60, options: { queue: "sync" } }];
    const clock = { now: T0 };
    assert.throws(() => beat(c, s, clock, { graceSeconds: Number.NaN }), /graceSeconds must be a number ≥ 0, not NaN/);
    assert.throws(() => beat(c, s, clock, { graceSeconds: -60 }), /graceSeconds must be a number ≥ 0, not -60/);
    assert.throws(() => beat(c, s, clock, { maxCatchUp: 0.5 }), /maxCatchUp must be an integer ≥ 1, not 0.5/);
    // Values written by hand (`nats kv put`): neither may stop the beat for good.
    const { openBucket, beatBucket, LEASE_KEY, lastRunKey } = await import("../../sdk/beat/mod.ts");
    const kv = await openBucket(c, beatBucket(ns));
    await kv.put(LEASE_KEY, new TextEncoder().encode("not a lease"));
    await kv.put(lastRunKey("sync"), new Uint8Array());
    // graceSeconds 0: ticks are still on time within the loop's own delay (1 s minimum).
    const b = beat(c, s, clock, { leaseSeconds: 10, graceSeconds: 0 });
    const first = await b.tick(T0);
    assert.equal(first.leader, true, "the unreadable lease was taken");
    assert.deepEqual(first.errors, {});
    const second = await b.tick(T0 + MIN + 5);
    assert.deepEqual(second.fired.map((f) => [f.schedule, f.late]), [["sync", false]], "sent to queue sync, which no worker has served");
    assert.deepEqual(second.errors, {});
    assert.equal((await storedTaskIds(c)).length, 1);
    await b.close();
  });

  test("beat - start() runs on the real clock, reports its state, and close() hands the lease over", async () => {
    const ns = freshNamespace("beat");
    await using c = await client(server, ns);
    await using c2 = await client(server, ns);
    const schedules: ScheduleEntry[] = [{ name: "second", task: "jobs.second", every: 0.5 }];
    const a = new Beat(c, { schedules, leaseSeconds: 3, identity: "a", logLevel: "silent" });
    const b = new Beat(c2, { schedules, leaseSeconds: 3, identity: "b", logLevel: "silent" });
    await a.start();
    await b.start();
    await eventually(async () => (await storedTaskIds(c)).length >= 3, 15_000, "three ticks on the real clock");
    const leader = a.leader ? a : b;
    const other = leader === a ? b : a;
    const state = leader.state();
    assert.equal(state.leader, true);
    assert.equal(state.mode, "lease");
    assert.match(state.server.version ?? "", /^\d+\.\d+/);
    assert.equal(state.server.schedules, false, "nats-server 2.9 has no message schedules");
    assert.equal(state.schedules[0]!.name, "second");
    assert.ok(state.schedules[0]!.lastTick! > 0);
    await leader.close();
    await eventually(() => other.leader, 15_000, "the other replica to lead");
    const count = (await storedTaskIds(c)).length;
    await eventually(async () => (await storedTaskIds(c)).length >= count + 2, 15_000, "ticks after the hand-over");
    await other.close();
    const ids = await storedTaskIds(c);
    assert.equal(ids.length, new Set(ids).size, "no tick stored twice");
    // Consecutive ticks: nothing lost across the hand-over (ids are beat.second.<ms>, 500 ms apart).
    const ticks = ids.map((id) => Number(id.split(".").at(-1))).sort((x, y) => x - y);
    assert.ok(ticks.every((t, i) => i === 0 || t - ticks[i - 1]! === 500), `consecutive ticks: ${ticks.join(",")}`);
  });
});
