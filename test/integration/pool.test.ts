/**
 * Worker pools: inline, threads and processes. Executors load test/fixtures/pool_tasks.ts by path
 * (TypeScript, through the `--import tsx` this file runs under), and every handler reports where it
 * ran, so replacements are observed by pid/threadId rather than by timing.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { inspect } from "node:util";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { names } from "../../sdk/protocol/mod.ts";
import {
  createPool,
  createRegistrar,
  retryRequest,
  type ExecutionHooks,
  type ExecutionOutcome,
  type ExecutionRequest,
  type Pool,
  type PoolOptions,
} from "../../sdk/worker/pool/mod.ts";
import { inheritedExecArgv } from "../../sdk/worker/pool/executors.ts";
import type { Where } from "../fixtures/pool_tasks.ts";

/** Polls `check` until it returns a truthy value. (Not helpers.ts: this file needs no Worker.) */
async function eventually<T>(check: () => T, timeoutMs = 10_000, what = "condition"): Promise<NonNullable<T>> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const value = check();
    if (value) return value as NonNullable<T>;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

const TASKS = fileURLToPath(new URL("../fixtures/pool_tasks.ts", import.meta.url));
const WORKER = { id: "pool-test", host: "localhost", pid: process.pid };
const NO_HOOKS: ExecutionHooks = { progress() {} };

let seq = 0;
function req(task: string, args: unknown = {}, extra: Partial<ExecutionRequest> = {}): ExecutionRequest {
  return { id: `task-${++seq}`, task, args, queue: "default", attempt: 1, retries: 0, deliveryCount: 1, meta: {}, worker: WORKER, ...extra };
}

/** Pool-level log lines, kept instead of printed. */
const poolLog: string[] = [];
function open(options: Partial<PoolOptions> & Pick<PoolOptions, "kind">): Promise<Pool> {
  return createPool({ size: 1, tasksModule: TASKS, log: (level, message) => poolLog.push(`${level} ${message}`), ...options });
}

function value<T>(outcome: ExecutionOutcome): T {
  assert.ok(outcome.ok, `expected success, got ${inspect(outcome)}`);
  return outcome.value as T;
}

function failure(outcome: ExecutionOutcome): Extract<ExecutionOutcome, { ok: false }> {
  assert.equal(outcome.ok, false, `expected a failure, got ${inspect(outcome)}`);
  return outcome as Extract<ExecutionOutcome, { ok: false }>;
}

const key = (w: Where) => `${w.pid}/${w.threadId}`;

async function whoami(pool: Pool): Promise<string> {
  return key(value<Where>(await pool.run(req("whoami"), NO_HOOKS)));
}

/** Waits until the pool has `size` executors and all are idle (replacements loaded). */
async function settled(pool: Pool): Promise<void> {
  await eventually(() => {
    const ex = pool.executors();
    return ex.length === pool.size && ex.every((e) => e.state === "idle");
  }, 15_000, "all executors idle");
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

for (const kind of ["threads", "processes"] as const) {
  describe(`pool - ${kind}`, () => {
    let pool: Pool;
    /** Every process executor pid this pool had, to check none is left after close(). */
    const pids = new Set<number>();
    const track = () => {
      for (const e of pool.executors()) if (kind === "processes" && e.pid) pids.add(e.pid);
    };

    before(async () => {
      pool = await open({ kind });
      track();
    });
    after(async () => {
      await pool.close({ graceMs: 0 });
    });

    test(`${kind} - the tasks module is TypeScript, loaded through the inherited --import tsx`, async () => {
      assert.ok(process.execArgv.join(" ").includes("tsx"), "this suite runs under --import tsx");
      assert.equal(pool.kind, kind);
      assert.equal(pool.size, 1);
      const where = value<Where>(await pool.run(req("whoami"), NO_HOOKS));
      if (kind === "threads") {
        assert.equal(where.pid, process.pid);
        assert.notEqual(where.threadId, 0, "ran on another thread");
      } else {
        assert.notEqual(where.pid, process.pid, "ran in another process");
      }
    });

    test(`${kind} - echo round-trips Date, Map, Set, BigInt and nested values`, async () => {
      const args = { at: new Date(1_700_000_000_000), map: new Map([["a", 1]]), set: new Set([1, 2]), big: 2n ** 70n, nested: { list: [1, "x", null], u8: new Uint8Array([1, 2]) } };
      const out = value<{ args: typeof args }>(await pool.run(req("echo", args), NO_HOOKS));
      assert.ok(out.args.at instanceof Date);
      assert.deepEqual(out.args, args);
    });

    test(`${kind} - progress and logs reach the hooks in order`, async () => {
      const progress: unknown[] = [];
      const logs: unknown[] = [];
      const hooks: ExecutionHooks = { progress: (p) => progress.push(p), log: (level, message, data) => logs.push([level, message, data]) };
      assert.equal(value(await pool.run(req("progress"), hooks)), "done");
      assert.deepEqual(progress, [{ step: 1, of: 3 }, { step: 2, of: 3 }, { step: 3, of: 3 }]);
      assert.equal(value(await pool.run(req("logs"), hooks)), "logged");
      assert.deepEqual(logs, [["info", "hello", { n: 1 }], ["warn", "careful", { part: "a" }]]);
    });

    test(`${kind} - a thrown error keeps its name, message and details; ctx.retry() carries its delay`, async () => {
      const out = failure(await pool.run(req("fail", { message: "nope" }), NO_HOOKS));
      assert.equal(out.error.type, "CustomError");
      assert.equal(out.error.message, "nope");
      assert.deepEqual(out.error.details, { code: 42 });
      assert.equal(out.error.retryable, true);
      assert.equal(out.killed, undefined);
      const retry = failure(await pool.run(req("retry"), NO_HOOKS));
      assert.deepEqual(retryRequest(retry.error), { delaySeconds: 5, reason: "not yet" });
    });

    test(`${kind} - the soft time limit aborts ctx.signal with SoftTimeLimitExceeded and the handler cleans up`, async () => {
      const out = value<{ cleanedUp: boolean; reason: string; message: string }>(await pool.run(req("soft", {}, { softTimeLimitMs: 100, timeLimitMs: 10_000 }), NO_HOOKS));
      assert.equal(out.cleanedUp, true);
      assert.equal(out.reason, "SoftTimeLimitExceeded");
      assert.match(out.message, /soft time limit of 0\.1 s/);
    });

    test(`${kind} - the run signal aborts ctx.signal while running, and drops a queued execution at once`, async () => {
      const running = new AbortController();
      const first = pool.run(req("soft"), NO_HOOKS, running.signal);
      const queued = new AbortController();
      const second = pool.run(req("whoami"), NO_HOOKS, queued.signal);
      assert.equal(pool.stats().queued, 1);
      const shutdown = new Error("shutting down");
      shutdown.name = "WorkerShutdownError";
      queued.abort(shutdown);
      const dropped = failure(await second);
      assert.equal(dropped.error.type, "WorkerShutdownError");
      assert.equal(pool.stats().queued, 0);
      await eventually(() => pool.stats().busy === 1);
      running.abort(shutdown);
      const out = value<{ reason: string }>(await first);
      assert.equal(out.reason, "WorkerShutdownError");
    });

    test(`${kind} - a hard time limit kills a spinning task and the next task runs on a replacement`, async () => {
      await settled(pool);
      const before = await whoami(pool);
      const replaced = pool.stats().replaced;
      const started = Date.now();
      const out = failure(await pool.run(req("cpu.spin", { ms: 20_000 }, { timeLimitMs: 300 }), NO_HOOKS));
      const elapsed = Date.now() - started;
      assert.equal(out.error.type, "TimeLimitExceeded");
      assert.equal(out.error.retryable, false);
      assert.equal(out.killed, true);
      assert.ok(elapsed >= 290 && elapsed < 800, `ended after ${elapsed} ms (limit 300 ms)`);
      const afterKill = await whoami(pool);
      track();
      assert.notEqual(afterKill, before, "a new executor runs the next task");
      assert.equal(pool.stats().replaced, replaced + 1);
      if (kind === "processes") await eventually(() => !alive(Number(before.split("/")[0])), 5000, "the killed child to be gone");
    });

    test(`${kind} - terminate(taskId) kills the executor running it and replaces it`, async () => {
      await settled(pool);
      const before = await whoami(pool);
      const r = req("cpu.spin", { ms: 20_000 });
      const running = pool.run(r, NO_HOOKS);
      await eventually(() => pool.executors().some((e) => e.task === r.id && e.state === "busy"));
      assert.equal(pool.terminate("no-such-task", "x"), false);
      assert.equal(pool.terminate(r.id, "revoked by the test"), true);
      const out = failure(await running);
      assert.equal(out.error.type, "TaskTerminated");
      assert.match(out.error.message, /revoked by the test/);
      assert.equal(out.killed, true);
      assert.notEqual(await whoami(pool), before);
      track();
    });

    test(`${kind} - a crashing executor resolves as ExecutorDied and is replaced`, async () => {
      await settled(pool);
      const before = await whoami(pool);
      const exited = failure(await pool.run(req("crash", { how: "exit" }), NO_HOOKS));
      assert.equal(exited.error.type, "ExecutorDied");
      assert.match(exited.error.message, /exited with code 3/);
      assert.equal(exited.killed, true);
      const second = await whoami(pool);
      assert.notEqual(second, before);
      track();
      const thrown = failure(await pool.run(req("crash", { how: "throw" }), NO_HOOKS));
      assert.equal(thrown.error.type, "ExecutorDied");
      assert.match(thrown.error.message, /uncaught Error: boom from a timer/);
      assert.notEqual(await whoami(pool), second);
      track();
      assert.ok(poolLog.some((l) => l.startsWith("warn") && l.includes("died")), "the death is logged");
    });

    test(`${kind} - an unknown task and unserializable arguments fail without harming the executor`, async () => {
      const before = await whoami(pool);
      assert.equal(failure(await pool.run(req("nope"), NO_HOOKS)).error.type, "NotRegisteredError");
      assert.equal(failure(await pool.run(req("echo", { f: () => 1 }), NO_HOOKS)).error.type, "DataCloneError");
      assert.equal(await whoami(pool), before);
    });

    test(`${kind} - maxTasksPerChild replaces an executor after N tasks`, async () => {
      const recycled = await open({ kind, maxTasksPerChild: 2 });
      try {
        const seen = [];
        for (let i = 0; i < 5; i++) seen.push(await whoami(recycled));
        assert.equal(seen[0], seen[1]);
        assert.notEqual(seen[1], seen[2]);
        assert.equal(seen[2], seen[3]);
        assert.notEqual(seen[3], seen[4]);
        assert.equal(recycled.stats().replaced, 2);
        if (kind === "processes") for (const s of seen) pids.add(Number(s.split("/")[0]));
      } finally {
        await recycled.close();
      }
    });

    test(`${kind} - maxMemoryPerChild replaces an executor whose memory grew past it`, async () => {
      // A process executor (node + tsx) starts at ~60–90 MB RSS: 150 MB keeps it after a 1 MB leak
      // and replaces it after a 100 MB one.
      const limit = kind === "threads" ? 64 * 1024 * 1024 : 150 * 1024 * 1024;
      const leaky = await open({ kind, maxMemoryPerChild: limit });
      try {
        const first = key(value<Where>(await leaky.run(req("leak", { mb: 1 }), NO_HOOKS)));
        assert.equal(await whoami(leaky), first, "under the limit: kept");
        const leaked = key(value<Where>(await leaky.run(req("leak", { mb: 100 }), NO_HOOKS)));
        assert.equal(leaked, first);
        assert.notEqual(await whoami(leaky), first, "over the limit: replaced");
        assert.equal(leaky.stats().replaced, 1);
        assert.ok(poolLog.some((l) => l.includes("maxMemoryPerChild")));
      } finally {
        await leaky.close();
      }
    });

    describe(`${kind} - size 2`, () => {
      let pair: Pool;
      before(async () => {
        pair = await open({ kind, size: 2 });
      });
      after(async () => {
        await pair.close({ graceMs: 0 });
      });

      test(`${kind} - two CPU-bound tasks run in parallel on two executors`, async () => {
        const [a, b] = (await Promise.all([pair.run(req("cpu.spin", { ms: 300 }), NO_HOOKS), pair.run(req("cpu.spin", { ms: 300 }), NO_HOOKS)]))
          .map((o) => value<Where & { start: number; end: number }>(o));
        assert.notEqual(key(a!), key(b!));
        assert.ok(a!.start < b!.end && b!.start < a!.end, `the spins overlapped: ${JSON.stringify([a, b])}`);
      });

      test(`${kind} - requests beyond the size wait in FIFO order, then run`, async () => {
        const runs = Array.from({ length: 5 }, () => pair.run(req("cpu.spin", { ms: 100 }), NO_HOOKS));
        assert.deepEqual({ busy: pair.stats().busy, queued: pair.stats().queued }, { busy: 2, queued: 3 });
        const results = (await Promise.all(runs)).map((o) => value<Where & { start: number; end: number }>(o));
        assert.equal(pair.stats().queued, 0);
        for (let i = 2; i < results.length; i++) {
          // Never more than two at once: each queued one started after an earlier one ended.
          const running = results.filter((r) => r.start <= results[i]!.start && r.end > results[i]!.start);
          assert.ok(running.length <= 2, `at most 2 at once when #${i} started: ${JSON.stringify(results)}`);
        }
        assert.equal(new Set(results.map(key)).size, 2, "all ran on the two executors");
      });

      test(`${kind} - grow and shrink change the number of executors`, async () => {
        pair.grow(1);
        assert.equal(pair.size, 3);
        await settled(pair);
        pair.shrink(2);
        assert.equal(pair.size, 1);
        await eventually(() => pair.executors().length === 1, 10_000, "one executor left");
        pair.shrink(5);
        assert.equal(pair.size, 1, "never below one");
        pair.grow(1);
        await settled(pair);
      });

      test(`${kind} - close() waits up to its grace, kills what still runs, and leaves no executor behind`, async () => {
        await settled(pair);
        const ours = pair.executors().map((e) => e.pid);
        const quick = pair.run(req("sleep", { ms: 50 }), NO_HOOKS);
        const stuck = pair.run(req("cpu.spin", { ms: 20_000 }), NO_HOOKS);
        const queued = pair.run(req("whoami"), NO_HOOKS);
        await pair.close({ graceMs: 300 });
        assert.equal(value<{ aborted: boolean }>(await quick).aborted, false, "finished within the grace");
        const killed = failure(await stuck);
        assert.equal(killed.error.type, "PoolClosed");
        assert.equal(killed.killed, true);
        assert.equal(failure(await queued).error.type, "PoolClosed");
        assert.deepEqual(pair.executors(), []);
        assert.equal(failure(await pair.run(req("whoami"), NO_HOOKS)).error.type, "PoolClosed");
        if (kind === "processes") for (const pid of ours) assert.equal(alive(pid), false, `child ${pid} is gone`);
      });
    });

    test(`${kind} - close() ends every executor this pool ever started`, async () => {
      track();
      await pool.close();
      assert.deepEqual(pool.executors(), []);
      if (kind === "processes") {
        assert.ok(pids.size >= 4, `several children were started (${pids.size})`);
        for (const pid of pids) assert.equal(alive(pid), false, `child ${pid} is gone`);
      }
    });
  });
}

describe("pool - errors and inline", () => {
  test("createPool rejects when the executor has no TypeScript loader, with a hint", async () => {
    await assert.rejects(open({ kind: "threads", execArgv: [] }), /exited before it was ready.*Unknown file extension.*--import", "tsx"/s);
  });

  test("createPool rejects a tasks module without a register function", async () => {
    const bad = fileURLToPath(new URL("../fixtures/signatures.ts", import.meta.url));
    await assert.rejects(open({ kind: "threads", tasksModule: bad }), /could not load it: TypeError: tasks module .* has no default export/);
    await assert.rejects(createPool({ kind: "threads", size: 0, tasksModule: TASKS }), RangeError);
  });

  test("a pool is refused inside an executor (a tasks module starting a pool would recurse)", async () => {
    process.env.CELERITY_POOL_EXECUTOR = "process";
    try {
      await assert.rejects(open({ kind: "processes" }), /inside a pool executor/);
    } finally {
      delete process.env.CELERITY_POOL_EXECUTOR;
    }
  });

  test("children do not inherit Node options that would make them run something else", () => {
    assert.deepEqual(
      inheritedExecArgv(["--import", "tsx", "-e", "code()", "--test", "--test-reporter", "spec", "--inspect-port", "9230", "--watch", "--enable-source-maps", "--eval=x"]),
      ["--import", "tsx", "--enable-source-maps"],
    );
  });

  test("the registrar takes implement() chains and ignores other Worker calls", async () => {
    const { registrar, handlers } = createRegistrar();
    const r = registrar as unknown as Record<string, (...a: unknown[]) => unknown>;
    const chained = r.implement!({ name: "a.b" }, () => 1) as typeof r;
    assert.equal(chained, registrar);
    assert.equal(r.start!(), registrar, "unknown Worker methods are accepted");
    assert.equal((registrar as unknown as { then?: unknown }).then, undefined, "not thenable");
    assert.deepEqual((registrar as unknown as { registered: string[] }).registered, ["a.b"]);
    assert.throws(() => r.implement!({ name: "a.b" }, () => 2), /already implemented/);
    assert.equal(handlers.size, 1);
  });

  test("inline - runs in this thread; a hard limit stops waiting without killing", async () => {
    const pool = await open({ kind: "inline", size: 1 });
    try {
      const where = value<Where>(await pool.run(req("whoami"), NO_HOOKS));
      assert.equal(where.pid, process.pid);
      const args = { at: new Date(0), map: new Map([[1, 2]]) };
      assert.deepEqual(value<{ args: unknown }>(await pool.run(req("echo", args), NO_HOOKS)).args, args);
      const progress: unknown[] = [];
      await pool.run(req("progress"), { progress: (p) => progress.push(p) });
      assert.equal(progress.length, 3);
      const soft = value<{ reason: string }>(await pool.run(req("soft", {}, { softTimeLimitMs: 50 }), NO_HOOKS));
      assert.equal(soft.reason, "SoftTimeLimitExceeded");
      const started = Date.now();
      const hard = failure(await pool.run(req("sleep", { ms: 1000 }, { timeLimitMs: 100 }), NO_HOOKS));
      assert.equal(hard.error.type, "TimeLimitExceeded");
      assert.equal(hard.killed, undefined, "inline cannot kill");
      assert.ok(Date.now() - started < 900, "stopped waiting at the limit");
      const r = req("sleep", { ms: 1000 });
      const running = pool.run(r, NO_HOOKS);
      assert.equal(pool.terminate(r.id, "stop"), true);
      assert.equal(failure(await running).error.type, "TaskTerminated");
      assert.equal(pool.stats().replaced, 0);
    } finally {
      await pool.close({ graceMs: 0 });
    }
  });

  test("inline - takes handlers and a client directly (the worker's registry)", async () => {
    const client = { marker: true } as never;
    const pool = await createPool({
      kind: "inline",
      size: 2,
      handlers: new Map([["x.y", (args: unknown, ctx: { client: unknown; worker: unknown }) => ({ args, same: ctx.client === client, worker: ctx.worker })]]) as never,
      client,
    });
    const out = value<{ args: unknown; same: boolean; worker: unknown }>(await pool.run(req("x.y", [1, 2]), NO_HOOKS));
    assert.deepEqual(out, { args: [1, 2], same: true, worker: WORKER });
    await pool.close();
  });
});

describe("pool - ctx.client in executors", () => {
  let server: NatsServer;
  before(async () => {
    server = await NatsServer.start();
  });
  after(async () => {
    await server?.stop();
  });

  for (const kind of ["threads", "processes"] as const) {
    test(`${kind} - ctx.client connects on first use with the pool's connect options`, async () => {
      const namespace = `pool${process.pid}x${Math.random().toString(36).slice(2, 8)}`;
      const pool = await open({ kind, connect: { servers: [server.url], namespace } });
      try {
        const out = value<{ stream: string }>(await pool.run(req("use_client"), NO_HOOKS));
        assert.equal(out.stream, names(namespace).tasksStream);
        assert.equal(value<{ stream: string }>(await pool.run(req("use_client"), NO_HOOKS)).stream, out.stream, "reused");
      } finally {
        await pool.close();
      }
    });
  }
});
