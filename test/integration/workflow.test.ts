/** Workflows against a real nats-server: stages, split and group, failures, retry, pause, cancel, restarts. */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import * as v from "valibot";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { signature } from "../../sdk/client/mod.ts";
import type { Worker } from "../../sdk/worker/mod.ts";
import {
  cancel,
  defineWorkflow,
  forget,
  forgetFinished,
  jobs,
  parseWorkflowYaml,
  pause,
  registerWorkflowTasks,
  resume,
  retry,
  runs,
  startWorkflow,
  status,
  waitForRun,
  workflowBucket,
  type WorkflowInput,
} from "../../sdk/workflow/mod.ts";
import { decodeRecord, jobKey, listKeys, mutate, workflowKv, type JobRecord } from "../../sdk/workflow/store.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

const inc = signature("wf.inc", { args: v.number(), result: v.number() });
const double = signature("wf.double", { args: v.number(), result: v.number() });
const pieces = signature("wf.pieces", { args: v.number(), result: v.array(v.number()) });
const total = signature("wf.total", { args: v.array(v.number()), result: v.number() });
/** Fails while `flaky.broken` is true. */
const fragile = signature("wf.fragile", { args: v.number(), result: v.number() });
const slow = signature("wf.slow", { args: v.number(), result: v.number() });
const flaky = { broken: true };
const ran: string[] = [];

function wfWorker(ns: string, extra: Parameters<typeof worker>[2] = {}): Worker {
  const w = worker(server, ns, { concurrency: 8, ...extra })
    .implement(inc, (n) => n + 1)
    .implement(double, (n) => n * 2)
    .implement(pieces, (n) => Array.from({ length: n }, (_, i) => i + 1))
    .implement(total, (xs) => xs.reduce((a, b) => a + b, 0))
    .implement(fragile, (n) => {
      if (flaky.broken) throw new Error(`fragile broke on ${n}`);
      return n * 10;
    })
    .implement(slow, async (n, ctx) => {
      ran.push(`slow:${n}`);
      await new Promise((r) => setTimeout(r, 300));
      if (ctx.signal.aborted) throw new Error("aborted");
      return n;
    });
  return registerWorkflowTasks(w);
}

const linear = defineWorkflow({ name: "t.linear", stages: { a: { task: inc, next: ["b"] }, b: { task: double } } });
/** A slow first stage (so a run is still moving while a test acts on it), then inc. */
const slowThenInc = (name: string) => defineWorkflow({ name, stages: { first: { task: slow, next: ["second"] }, second: { task: inc } } });

test("workflow - linear: each object goes through every stage; status counts them", async () => {
  const ns = freshNamespace("wf");
  const w = wfWorker(ns);
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId, jobIds } = await startWorkflow(c, linear, [1, 2, 3]);
    assert.deepEqual(jobIds, ["a-0", "a-1", "a-2"]);
    const s = await waitForRun(c, runId, { timeout: 15_000 });
    assert.equal(s.state, "succeeded");
    assert.deepEqual({ ...s.stages.a, firstStartedAt: 0, lastFinishedAt: 0, meanMs: 0 }, { pending: 0, running: 0, succeeded: 3, failed: 0, cancelled: 0, firstStartedAt: 0, lastFinishedAt: 0, meanMs: 0 });
    assert.equal(s.stages.b!.succeeded, 3);
    assert.equal(s.jobs, 6);
    assert.ok(s.finishedAt! >= s.createdAt);
    const results = (await jobs(c, runId)).filter((j) => j.stage === "b").map((j) => j.result).sort();
    assert.deepEqual(results, [4, 6, 8]);
  } finally {
    await w.close();
  }
});

test("workflow - split and group: one job per element, then one job per root object (and per batch)", async () => {
  const ns = freshNamespace("wf");
  const wf = defineWorkflow({
    name: "t.split",
    stages: {
      explode: { task: pieces, next: ["each", "batch"], split: true },
      each: { task: double, next: ["sum"] },
      sum: { task: total, group: { by: "root" } },
      batch: { task: total, group: { by: "workflow", size: 4 } },
    },
  });
  const w = wfWorker(ns);
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId } = await startWorkflow(c, wf, [2, 3]);
    const s = await waitForRun(c, runId, { timeout: 20_000 });
    assert.equal(s.state, "succeeded", JSON.stringify(s));
    assert.equal(s.stages.explode!.succeeded, 2);
    assert.equal(s.stages.each!.succeeded, 5); // [1,2] and [1,2,3]
    assert.equal(s.stages.sum!.succeeded, 2);
    assert.equal(s.stages.batch!.succeeded, 2); // 5 pieces in batches of 4: 4 + 1
    const all = await jobs(c, runId);
    const sums = all.filter((j) => j.stage === "sum").map((j) => j.result).sort();
    assert.deepEqual(sums, [12, 6]); // (1+2)*2, (1+2+3)*2
    const batches = all.filter((j) => j.stage === "batch");
    assert.deepEqual(batches.map((j) => (j.objectRef as number[]).length).sort(), [1, 4]);
    assert.equal(batches.reduce((t, j) => t + (j.result as number), 0), 9);
  } finally {
    await w.close();
  }
});

test("workflow - a YAML definition runs with the same engine", async () => {
  const ns = freshNamespace("wf");
  const wf = parseWorkflowYaml(`
name: t.yaml
stages:
  explode: { task: wf.pieces, next: [each], split: true }
  each: { task: wf.inc, next: [sum] }
  sum: { task: wf.total, group: true }
`);
  const w = wfWorker(ns);
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId } = await startWorkflow(c, wf, [3]);
    const s = await waitForRun(c, runId, { timeout: 15_000 });
    assert.equal(s.state, "succeeded");
    assert.deepEqual((await jobs(c, runId)).filter((j) => j.stage === "sum").map((j) => j.result), [9]);
  } finally {
    await w.close();
  }
});

test("workflow - a downstream failure leaves upstream succeeded; retry(job) fixes it", async () => {
  const ns = freshNamespace("wf");
  flaky.broken = true;
  const wf = defineWorkflow({ name: "t.fail", stages: { up: { task: inc, next: ["down"] }, down: { task: fragile, next: ["after"] }, after: { task: inc } } });
  const w = wfWorker(ns);
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId } = await startWorkflow(c, wf, [1, 2]);
    const s = await waitForRun(c, runId, { timeout: 15_000 });
    assert.equal(s.state, "failed");
    assert.equal(s.stages.up!.succeeded, 2);
    assert.equal(s.stages.down!.failed, 2);
    assert.equal(s.stages.after!.succeeded + s.stages.after!.pending, 0);
    assert.equal(s.failed.length, 2);
    assert.match(s.failed[0]!.error!.message, /fragile broke on \d/);
    assert.equal(s.failed[0]!.stage, "down");

    flaky.broken = false;
    const taskId = await retry(c, runId, s.failed[0]!.jobId);
    assert.match(taskId, /\.2$/);
    await assert.rejects(retry(c, runId, "up-0"), /only failed jobs/);
    await eventually(async () => (await status(c, runId)).stages.after!.succeeded === 1, 10_000, "retried job's follow-up");
    await retry(c, runId, s.failed[1]!.jobId);
    const done = await waitForRun(c, runId, { timeout: 15_000 });
    assert.equal(done.state, "succeeded");
    assert.equal(done.failed.length, 0);
    assert.deepEqual((await jobs(c, runId)).filter((j) => j.stage === "after").map((j) => j.result).sort(), [21, 31]);
  } finally {
    await w.close();
  }
});

test("workflow - forget removes a finished run's records; a moving run only with force; forgetFinished by age", async () => {
  const ns = freshNamespace("wf");
  const wf = slowThenInc("t.forget");
  const w = wfWorker(ns, { concurrency: 2 });
  await w.start();
  await using c = await client(server, ns);
  const keysOf = async (runId: string) => {
    const bucket = workflowBucket(ns);
    const info = await (await c.jsm()).streams.info(`KV_${bucket}`, { subjects_filter: `$KV.${bucket}.*.${runId}.>` });
    const run = await (await c.jsm()).streams.info(`KV_${bucket}`, { subjects_filter: `$KV.${bucket}.run.${runId}` });
    return Object.keys(info.state.subjects ?? {}).length + Object.keys(run.state.subjects ?? {}).length;
  };
  try {
    const done = await startWorkflow(c, linear, [1, 2]);
    assert.equal((await waitForRun(c, done.runId, { timeout: 15_000 })).state, "succeeded");
    const old = await startWorkflow(c, linear, [3]);
    await waitForRun(c, old.runId, { timeout: 15_000 });
    const moving = await startWorkflow(c, wf, [1, 2, 3, 4, 5, 6]);
    assert.equal(await keysOf(done.runId), 5, "run + 4 jobs");

    const forgotten = await forget(c, done.runId);
    assert.deepEqual(forgotten, { runs: [done.runId], records: 5 });
    assert.equal(await keysOf(done.runId), 0);
    await assert.rejects(status(c, done.runId), /no workflow run/);
    await assert.rejects(forget(c, done.runId), /no workflow run/);
    assert.ok(!(await runs(c)).includes(done.runId));

    await assert.rejects(forget(c, moving.runId), /is running: cancel it first, or forget it with \{ force: true \}/);
    assert.ok(await keysOf(moving.runId) > 0, "refused: nothing removed");

    // Finished runs older than 0 ms go; the moving one stays.
    const swept = await forgetFinished(c, { olderThanMs: 0 });
    assert.deepEqual(swept.runs, [old.runId]);
    assert.deepEqual(await runs(c), [moving.runId]);
    await assert.rejects(forgetFinished(c, { olderThanMs: -1 }), /olderThanMs >= 0/);

    await forget(c, moving.runId, { force: true });
    assert.deepEqual(await runs(c), []);
    // What it had sent (revoked, or still finishing) must not bring its records back.
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(await keysOf(moving.runId), 0);
  } finally {
    await w.close();
  }
});

test("workflow - pause keeps new stage tasks back; resume sends them", async () => {
  const ns = freshNamespace("wf");
  const wf = slowThenInc("t.pause");
  const w = wfWorker(ns);
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId } = await startWorkflow(c, wf, [1, 2]);
    await pause(c, runId);
    // The running first-stage tasks finish; their next jobs wait as pending.
    await eventually(async () => (await status(c, runId)).stages.second!.pending === 2, 10_000, "pending second-stage jobs");
    await new Promise((r) => setTimeout(r, 300));
    const paused = await status(c, runId);
    assert.equal(paused.state, "paused");
    assert.equal(paused.stages.first!.succeeded, 2);
    assert.equal(paused.stages.second!.running + paused.stages.second!.succeeded, 0);
    await resume(c, runId);
    const s = await waitForRun(c, runId, { timeout: 15_000 });
    assert.equal(s.state, "succeeded");
    assert.equal(s.stages.second!.succeeded, 2);
  } finally {
    await w.close();
  }
});

test("workflow - cancel revokes what was sent and sends nothing more", async () => {
  const ns = freshNamespace("wf");
  const wf = slowThenInc("t.cancel");
  // One at a time, so most first-stage tasks are still queued when the run is cancelled.
  const w = wfWorker(ns, { concurrency: 1 });
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId } = await startWorkflow(c, wf, [1, 2, 3, 4, 5, 6]);
    await new Promise((r) => setTimeout(r, 400));
    await cancel(c, runId);
    const s = await status(c, runId);
    assert.equal(s.state, "cancelled");
    assert.ok(s.stages.first!.cancelled >= 4, JSON.stringify(s.stages));
    await new Promise((r) => setTimeout(r, 1500));
    const later = await status(c, runId);
    assert.equal(later.state, "cancelled");
    assert.equal(later.stages.second!.running + later.stages.second!.succeeded, 0, JSON.stringify(later.stages));
    assert.ok(ran.filter((r) => r.startsWith("slow:")).length < 6 + 2 + 2, "revoked tasks did not all run");
    await assert.rejects(resume(c, runId), /cancelled/);
  } finally {
    await w.close();
  }
});

test("workflow - a server restart mid-workflow: the run completes", async () => {
  const ns = freshNamespace("wf");
  const wf = defineWorkflow({
    name: "t.restart",
    stages: { first: { task: slow, next: ["second"] }, second: { task: pieces, next: ["third"], split: true }, third: { task: double, next: ["sum"] }, sum: { task: total, group: true } },
  });
  const w = wfWorker(ns);
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId } = await startWorkflow(c, wf, [2, 3, 4]);
    await new Promise((r) => setTimeout(r, 150));
    await server.restart();
    const s = await waitForRun(c, runId, { timeout: 45_000, interval: 250 });
    assert.equal(s.state, "succeeded", JSON.stringify(s));
    assert.deepEqual((await jobs(c, runId)).filter((j) => j.stage === "sum").map((j) => j.result).sort(), [12, 20, 6]);
  } finally {
    await w.close();
  }
});

test("workflow - a group key function the worker lacks fails the jobs feeding the group, with a message; retry() once it has it", async () => {
  const ns = freshNamespace("wf");
  const input: WorkflowInput = {
    name: "t.groupfn",
    stages: {
      explode: { task: pieces, next: ["each"], split: true },
      each: { task: inc, next: ["sum"] },
      sum: { task: total, group: { by: (x) => (Number(x) % 2 ? "odd" : "even") } },
    },
  };
  const wf = defineWorkflow(input);
  // The same name without those stages: this process now acts as a worker that never imported the definition.
  defineWorkflow({ name: "t.groupfn", stages: { other: { task: inc } } });
  const w = wfWorker(ns);
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId } = await startWorkflow(c, wf, [3]);
    const s = await waitForRun(c, runId, { timeout: 8_000 });
    assert.equal(s.state, "failed", JSON.stringify(s.stages));
    assert.equal(s.stages.explode!.succeeded, 1);
    assert.equal(s.stages.each!.failed, 3);
    assert.equal(s.jobs, 4); // no group job
    assert.match(s.failed[0]!.error!.message, /^group "sum": .*TypeScript key function this process does not have/);

    defineWorkflow(input); // the worker has the definition again
    for (const f of s.failed) await retry(c, runId, f.jobId);
    const done = await waitForRun(c, runId, { timeout: 15_000 });
    assert.equal(done.state, "succeeded", JSON.stringify(done.failed));
    // pieces(3) = [1, 2, 3], each +1 = [2, 3, 4]: even 2 + 4, odd 3.
    const all = await jobs(c, runId);
    assert.deepEqual(all.filter((j) => j.stage === "sum").map((j) => j.result).sort(), [3, 6]);
    // Keys computed once, by the job's own advance, and kept: filling the group needs no key function.
    assert.deepEqual(all.filter((j) => j.stage === "each").map((j) => `${j.result}:${j.groupKeys?.sum}`).sort(), ["2:even", "3:odd", "4:even"]);
  } finally {
    await w.close();
  }
});

test("workflow - a group that can't be filled for another job's result (split function missing) fails the job that tried, not the run's progress", async () => {
  const ns = freshNamespace("wf");
  let open!: () => void;
  const opened = new Promise<void>((r) => (open = r));
  const gate = signature("wf.gate", { args: v.number(), result: v.number() });
  const input: WorkflowInput = {
    name: "t.groupfill",
    stages: {
      a: { task: pieces, next: ["g"], split: (r) => r as number[] },
      b: { task: gate, next: ["g"] },
      g: { task: total, group: true },
    },
  };
  const wf = defineWorkflow(input);
  const w = wfWorker(ns).implement(gate, async (n) => {
    await opened;
    return n;
  });
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId } = await startWorkflow(c, wf, [2]);
    await eventually(async () => (await jobs(c, runId)).find((j) => j.stage === "a")?.advanced, 10_000, "a advanced");
    // a's split function is gone when b's advance fills g with a's result.
    defineWorkflow({ name: "t.groupfill", stages: { other: { task: inc } } });
    open();
    const s = await waitForRun(c, runId, { timeout: 8_000 });
    assert.equal(s.state, "failed", JSON.stringify(s.stages));
    assert.equal(s.failed.length, 1);
    assert.equal(s.failed[0]!.stage, "b");
    assert.match(s.failed[0]!.error!.message, /^group "g": .*splits with a TypeScript function this process does not have/);
    assert.equal(s.stages.g!.succeeded + s.stages.g!.pending + s.stages.g!.running, 0);

    defineWorkflow(input);
    await retry(c, runId, s.failed[0]!.jobId);
    const done = await waitForRun(c, runId, { timeout: 15_000 });
    assert.equal(done.state, "succeeded", JSON.stringify(done.failed));
    assert.deepEqual((await jobs(c, runId)).filter((j) => j.stage === "g").map((j) => j.result), [5]); // 1 + 2 from a, 2 from b
  } finally {
    await w.close();
  }
});

test("workflow - bytes and Dates pass between stages and into groups unchanged", async () => {
  const ns = freshNamespace("wf");
  const bytesOf = signature("wf.bytesOf", { args: v.number(), result: v.instance(Uint8Array) });
  const stamp = signature("wf.stamp", { args: v.instance(Uint8Array), result: v.date() });
  const year = signature("wf.year", { args: v.date(), result: v.number() });
  const sizes = signature("wf.sizes", { args: v.array(v.instance(Uint8Array)), result: v.number() });
  const wf = defineWorkflow({
    name: "t.bytes",
    stages: {
      bytes: { task: bytesOf, next: ["stamp", "sizes"] },
      stamp: { task: stamp, next: ["year"] },
      year: { task: year },
      sizes: { task: sizes, group: { by: "workflow" } },
    },
  });
  const w = wfWorker(ns)
    .implement(bytesOf, (n) => new Uint8Array(n).fill(n))
    .implement(stamp, (b) => new Date(Date.UTC(2000 + b.length + b[0]!, 0, 1)))
    .implement(year, (d) => d.getUTCFullYear())
    .implement(sizes, (bs) => bs.reduce((t, b) => t + b.length, 0));
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId } = await startWorkflow(c, wf, [1, 3]);
    const s = await waitForRun(c, runId, { timeout: 15_000 });
    assert.equal(s.state, "succeeded", JSON.stringify(s.failed));
    const all = await jobs(c, runId);
    assert.deepEqual(all.filter((j) => j.stage === "year").map((j) => j.result).sort(), [2002, 2006]);
    assert.deepEqual(all.filter((j) => j.stage === "sizes").map((j) => j.result), [4]);
    const stored = all.find((j) => j.stage === "bytes" && j.objectRef === 3)!.result;
    assert.ok(stored instanceof Uint8Array, `stored ${JSON.stringify(stored)}`);
    assert.deepEqual([...stored], [3, 3, 3]);
    assert.ok(all.find((j) => j.stage === "stamp")!.result instanceof Date);
  } finally {
    await w.close();
  }
});

test("workflow - records stored as JSON (by an earlier version) are still read and advanced", async () => {
  const ns = freshNamespace("wf");
  const w = wfWorker(ns);
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId } = await startWorkflow(c, linear, [1, 2, 3], { paused: true });
    const kv = await workflowKv(c);
    const keys = await listKeys(c, `*.${runId}.>`);
    keys.push(`run.${runId}`);
    assert.equal(keys.length, 4);
    for (const k of keys) {
      const e = (await kv.get(k))!;
      assert.notEqual(e.value[0], 0x7b); // written as MessagePack
      await kv.put(k, new TextEncoder().encode(JSON.stringify(decodeRecord(e.value))));
    }
    assert.equal((await status(c, runId)).state, "paused");
    await resume(c, runId);
    const s = await waitForRun(c, runId, { timeout: 15_000 });
    assert.equal(s.state, "succeeded");
    assert.deepEqual((await jobs(c, runId)).filter((j) => j.stage === "b").map((j) => j.result).sort(), [4, 6, 8]);
  } finally {
    await w.close();
  }
});

test("workflow - resume() hands on a job whose advance gave up (an outage longer than its retries)", async () => {
  const ns = freshNamespace("wf");
  const w = wfWorker(ns);
  await w.start();
  await using c = await client(server, ns);
  try {
    const { runId } = await startWorkflow(c, linear, [1]);
    assert.equal((await waitForRun(c, runId, { timeout: 15_000 })).state, "succeeded");
    // What an advance that gave up leaves: "a" succeeded but not handed on, its child recorded, never sent.
    const kv = await workflowKv(c);
    const b = (await jobs(c, runId)).find((j) => j.stage === "b")!;
    await mutate<JobRecord>(kv, jobKey(runId, b.jobId), (cur) => {
      const { startedAt: _s, finishedAt: _f, result: _r, ...rest } = cur!;
      return { ...rest, state: "pending", attempt: 2, taskId: `${runId}.${b.jobId}.2` };
    });
    await mutate<JobRecord>(kv, jobKey(runId, "a-0"), (cur) => {
      const { advanced: _a, ...rest } = cur!;
      return rest;
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.equal((await status(c, runId)).state, "running");

    await resume(c, runId);
    const s = await waitForRun(c, runId, { timeout: 8_000 });
    assert.equal(s.state, "succeeded");
    const all = await jobs(c, runId);
    assert.equal(all.find((j) => j.jobId === "a-0")!.advanced, true);
    assert.deepEqual(all.filter((j) => j.stage === "b").map((j) => [j.attempt, j.result]), [[2, 4]]);
  } finally {
    await w.close();
  }
});
