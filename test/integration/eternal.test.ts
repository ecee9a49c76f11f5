/**
 * Eternal tasks against a real nats-server: one instance across runners, takeover when the holder
 * dies or stops, restarts with backoff, and the state visible to any client.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { createLogger } from "../../sdk/worker/mod.ts";
import { EternalRunner, eternalStatus, type EternalContext } from "../../sdk/worker/eternal.ts";
import { client, eventually, freshNamespace } from "./helpers.ts";

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

const quiet = createLogger("silent");

/** A function that runs until its signal aborts, counting how many run at once. */
function listener(counter: { active: number; max: number; starts: string[] }, who: string) {
  return async (ctx: EternalContext) => {
    counter.active++;
    counter.max = Math.max(counter.max, counter.active);
    counter.starts.push(who);
    try {
      await new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => resolve(), { once: true }));
    } finally {
      counter.active--;
    }
  };
}

describe("eternal", () => {
  test("eternal - runs exactly once across runners; the other stands by and sees the holder", async () => {
    const ns = freshNamespace("et");
    await using ca = await client(server, ns);
    await using cb = await client(server, ns);
    const counter = { active: 0, max: 0, starts: [] as string[] };
    const a = new EternalRunner(ca, "worker-a", { name: "gcn.listen", run: listener(counter, "a"), leaseSeconds: 1, logger: quiet });
    const b = new EternalRunner(cb, { id: "worker-b" }, { name: "gcn.listen", run: listener(counter, "b"), leaseSeconds: 1, logger: quiet });
    await Promise.all([a.start(), b.start()]);
    await eventually(() => counter.active === 1, 10_000, "one instance running");
    // Several lease periods: renewals keep the same holder, and nobody else starts.
    await new Promise((r) => setTimeout(r, 2500));
    assert.equal(counter.max, 1);
    assert.equal(counter.starts.length, 1);
    const [holder, standby] = counter.starts[0] === "a" ? [a, b] : [b, a];
    assert.equal(holder.state().status, "running");
    assert.equal(standby.state().status, "standby");
    assert.equal(standby.state().holder, holder === a ? "worker-a" : "worker-b");
    await a.stop();
    await b.stop();
  });

  test("eternal - when the holder's worker dies (stops renewing), another runner takes over within the lease", async () => {
    const ns = freshNamespace("et");
    await using ca = await client(server, ns);
    await using cb = await client(server, ns);
    await using observer = await client(server, ns);
    const counter = { active: 0, max: 0, starts: [] as string[] };
    const a = new EternalRunner(ca, "worker-a", { name: "lvalert.listen", run: listener(counter, "a"), leaseSeconds: 1.5, logger: quiet });
    await a.start();
    await eventually(() => counter.active === 1, 10_000, "a running");
    const b = new EternalRunner(cb, "worker-b", { name: "lvalert.listen", run: listener(counter, "b"), leaseSeconds: 1.5, logger: quiet });
    await b.start();
    assert.equal(b.state().status, "standby");

    // Death: no release, no more renewals.
    const diedAt = Date.now();
    await a.stop({ release: false });
    const [seen] = await eternalStatus(observer);
    assert.equal(seen?.holder, "worker-a", "the stored lease still names the dead holder");
    await eventually(() => counter.starts.includes("b") && counter.active === 1, 15_000, "b to take over");
    const tookMs = Date.now() - diedAt;
    // Within the lease (1.5 s) plus one contention period (0.5 s); generous for a loaded machine.
    assert.ok(tookMs < 10_000, `took over after ${tookMs} ms`);
    assert.equal(counter.max, 1, "never two at once");
    const [state] = await eternalStatus(observer);
    assert.equal(state?.holder, "worker-b");
    assert.equal(state?.status, "running");
    assert.equal(state?.term, 2);

    // A graceful stop hands over at once to a waiting runner.
    const c = new EternalRunner(ca, "worker-c", { name: "lvalert.listen", run: listener(counter, "c"), leaseSeconds: 1.5, logger: quiet });
    await c.start();
    await b.stop();
    await eventually(() => counter.starts.includes("c") && counter.active === 1, 10_000, "c to take over");
    assert.equal(counter.max, 1);
    await c.stop();
    const [stopped] = await eternalStatus(observer);
    assert.equal(stopped?.status, "stopped");
    assert.equal(stopped?.holder, "worker-c");
  });

  test("eternal - a function that throws or returns is restarted with exponential backoff; the state shows it", async () => {
    const ns = freshNamespace("et");
    await using c = await client(server, ns);
    await using observer = await client(server, ns);
    const runs: number[] = [];
    const runner = new EternalRunner(c, "worker-a", {
      name: "flaky.listen",
      leaseSeconds: 2,
      backoff: { initial: 0.1, max: 0.4 },
      logger: quiet,
      run: (ctx) => {
        runs.push(Date.now());
        ctx.heartbeat();
        if (runs.length % 2 === 0) return; // returning is restarted too
        throw new Error(`connection refused #${runs.length}`);
      },
    });
    await runner.start();
    await eventually(() => runs.length >= 5, 15_000, "five runs");
    const state = runner.state();
    assert.ok(state.restarts >= 4, `restarts counted (${state.restarts})`);
    assert.match(state.lastError ?? "", /connection refused|returned/);
    assert.equal(state.holder, "worker-a");
    assert.ok(state.heartbeatAt! > 0);
    // Delays double: 0.1, 0.2, 0.4, 0.4 s (a lower bound only, never an upper one).
    const gaps = runs.slice(1).map((t, i) => t - runs[i]!);
    assert.ok(gaps[0]! >= 90 && gaps[1]! >= 190 && gaps[2]! >= 390 && gaps[3]! >= 390, `gaps ${gaps.join(", ")} ms`);
    const [seen] = await eventually(async () => {
      const all = await eternalStatus(observer);
      return all[0] && all[0].restarts >= 4 ? all : undefined;
    }, 10_000, "the restarts stored");
    assert.equal(seen!.name, "flaky.listen");
    assert.ok(seen!.status === "backoff" || seen!.status === "running");
    assert.match(seen!.lastError ?? "", /connection refused|returned/);
    await runner.stop();
    assert.equal(runner.state().status, "stopped");
  });

  test("eternal - losing the lease aborts the function's signal", async () => {
    const ns = freshNamespace("et");
    await using c = await client(server, ns);
    let aborted: unknown;
    const runner = new EternalRunner(c, "worker-a", {
      name: "abortable",
      leaseSeconds: 1,
      logger: quiet,
      run: (ctx) => new Promise<void>((resolve) => ctx.signal.addEventListener("abort", () => {
        aborted = ctx.signal.reason;
        resolve();
      }, { once: true })),
    });
    await runner.start();
    assert.equal(runner.state().status, "running");
    // Someone else overwrites the lease (an operator, or a runner that saw it expire).
    const { Kvm } = await import("@nats-io/kv");
    const kv = await new Kvm(c.nc).open(`${ns}_eternal`);
    await kv.put("abortable", new Uint8Array([0xc0]));
    await eventually(() => aborted !== undefined, 10_000, "the signal to abort");
    assert.match(String((aborted as Error).message), /lost its lease/);
    await runner.stop({ release: false });
  });
});
