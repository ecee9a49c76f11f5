/** A Worker running its handlers in a process pool: hard limits end executions for real; revoke terminates. */
import { after, before, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { RemoteTaskError, TaskRevokedError } from "../../sdk/client/mod.ts";
import { Worker } from "../../sdk/worker/mod.ts";
import register, { echo, spin } from "../fixtures/pool_tasks.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

const tasksModule = fileURLToPath(new URL("../fixtures/pool_tasks.ts", import.meta.url));
let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

test("worker pool - processes: a hard time limit kills a CPU-bound task and the worker keeps serving", async () => {
  const ns = freshNamespace();
  const w = worker(server, ns, { pool: "processes", tasksModule, concurrency: 2 }) as Worker;
  register(w);
  await w.start();
  try {
    await using c = await client(server, ns);
    const started = Date.now();
    await assert.rejects(c.call(spin, { ms: 20_000 }, { timeLimit: 1, timeout: 15_000 }), (e: unknown) => e instanceof RemoteTaskError && e.remoteType === "TimeLimitExceeded");
    assert.ok(Date.now() - started < 10_000, "ended at the limit, not after the 20 s spin");
    const r = (await c.call(echo, { x: 1 }, { timeout: 10_000 })) as { args: unknown; where: { pid: number } };
    assert.deepEqual(r.args, { x: 1 });
    assert.notEqual(r.where.pid, process.pid, "ran in a child process");
    // Revoke with terminate kills the executor running it.
    const h = await c.send(spin, { ms: 20_000 });
    await eventually(() => w.active === 1, 5000, "spin to start");
    await c.revoke(h.id, { terminate: true, reason: "stop it" });
    await assert.rejects(h.result({ timeout: 10_000 }), TaskRevokedError);
  } finally {
    await w.close();
  }
});

test("worker - closing with prefetch 8 hands messages back without inflating their delivery count", async () => {
  const ns = freshNamespace();
  const deliveries = new Map<string, number>();
  const slowImpl = async (_a: unknown, ctx: { id: string; deliveryCount: number }) => {
    deliveries.set(ctx.id, ctx.deliveryCount);
    await new Promise((r) => setTimeout(r, 300));
    return { args: {}, where: { pid: 0, threadId: 0 } };
  };
  // A message already on its way to the closing worker's inbox is redelivered after the ack wait:
  // keep it short so such a straggler is quick.
  const first = worker(server, ns, { concurrency: 1, prefetch: 8, maxDeliver: 4, ackWait: 2 }).implement(echo, slowImpl as never);
  await first.start();
  await using c = await client(server, ns);
  const hs = await Promise.all(Array.from({ length: 8 }, () => c.send(echo, {})));
  await eventually(() => first.active === 1, 5000, "one task running");
  await first.close({ graceMs: 0 });
  await using second = worker(server, ns, { concurrency: 8, maxDeliver: 4, ackWait: 2 }).implement(echo, slowImpl as never);
  await second.start();
  for (const h of hs) await h.result({ timeout: 20_000 });
  // Before the fix every message bounced through the closing worker's open pulls (counts of 3 or
  // more for all 8). Now they come back once; at most a straggler or two caught in flight more.
  const counts = [...deliveries.values()];
  assert.ok(counts.filter((n) => n > 2).length <= 2, `delivery counts ${counts}`);
  assert.equal(second.stats.deadLettered, 0);
});
