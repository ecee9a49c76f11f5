/** `celerity workers`: a fleet of real worker processes under a real supervisor, against a real nats-server. */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import type { Client } from "../../sdk/client/mod.ts";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { add } from "../fixtures/signatures.ts";
import { client as connectClient, eventually, finished, freshNamespace, type ProcessRun } from "./helpers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const CLI = ["--import", "tsx", "sdk/cli/run.ts"];
const env = { ...process.env, CELERITY_SETTINGS: "", NO_COLOR: "1" };

type Run = ProcessRun;

function cli(args: string[], timeoutMs = 30_000): Promise<Run> {
  // stdout/stderr of a detached supervisor go to its log file, so the pipes close when `up` returns.
  return finished(spawn(process.execPath, [...CLI, ...args], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] }), timeoutMs);
}

function alive(pid: number | undefined): boolean {
  if (!pid) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

const readPid = (path: string): number | undefined => {
  try {
    return Number(readFileSync(path, "utf8").trim()) || undefined;
  } catch {
    return undefined;
  }
};

describe("fleet", () => {
  let server: NatsServer;
  let client: Client;
  const ns = freshNamespace("fleet");
  const tmp = mkdtempSync(join(tmpdir(), "celerity-fleet-"));
  const dir = join(tmp, "run");
  const file = join(tmp, "fleet.yaml");
  const WORKERS = ["alpha.1", "alpha.2", "beta.1"];
  const pidFile = (name: string) => join(dir, `${name}.pid`);
  const supervisorPid = join(dir, "supervisor.pid");
  let conn: string[] = [];
  const seen = new Set<number>();

  /** Every pid a fleet file names now (remembered for the cleanup). */
  const pids = () => {
    const out: Record<string, number | undefined> = { supervisor: readPid(supervisorPid) };
    for (const w of WORKERS) out[w] = readPid(pidFile(w));
    for (const p of Object.values(out)) if (p) seen.add(p);
    return out;
  };

  /** `up` returns once the PID files exist; a worker serves once it is in the registry. */
  async function registered(): Promise<void> {
    await eventually(async () => {
      const live = new Set((await client.workers()).map((w) => w.pid));
      const p = pids();
      return WORKERS.every((w) => p[w] !== undefined && live.has(p[w]!));
    }, 20_000, "every worker in the registry");
  }

  async function roundTrip(): Promise<void> {
    await registered();
    const handles = await Promise.all([
      client.send(add, { a: 1, b: 2 }, { queue: "alpha" }),
      client.send(add, { a: 2, b: 3 }, { queue: "alpha" }),
      client.send(add, { a: 20, b: 22 }, { queue: "beta" }),
    ]);
    const results = await Promise.all(handles.map((h) => h.result({ timeout: 15_000 })));
    assert.deepEqual(results, [3, 5, 42]);
  }

  before(async () => {
    server = await NatsServer.start();
    conn = ["--servers", server.url, "--namespace", ns];
    client = await connectClient(server, ns);
    writeFileSync(
      file,
      [
        `dir: run`,
        `groups:`,
        `  alpha:`,
        `    tasks: ${JSON.stringify(join(root, "test/fixtures/cli_tasks.ts"))}`,
        `    queues: [alpha]`,
        `    count: 2`,
        `    concurrency: 2`,
        `  beta:`,
        `    tasks: ${JSON.stringify(join(root, "test/fixtures/cli_tasks.ts"))}`,
        `    queues: { beta: { concurrency: 1 } }`,
        `    env: { FLEET_TEST: "1" }`,
        ``,
      ].join("\n"),
    );
  });

  after(async () => {
    pids();
    for (const pid of seen) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // gone
      }
    }
    await client?.close();
    await server?.stop();
    rmSync(tmp, { recursive: true, force: true });
  });

  test("fleet - up --detach starts every worker with PID and log files; tasks on each group's queue complete", async () => {
    const t0 = Date.now();
    const r = await cli(["workers", "up", "-c", file, "--detach", ...conn], 60_000);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const p = pids();
    assert.ok(alive(p.supervisor), "the supervisor runs");
    for (const w of WORKERS) {
      assert.ok(alive(p[w]), `${w} runs`);
      assert.ok(existsSync(join(dir, `${w}.log`)), `${w} has a log file`);
    }
    assert.equal(new Set(WORKERS.map((w) => p[w])).size, 3);
    await roundTrip();
    await eventually(() => /INFO worker ready/.test(readFileSync(join(dir, "beta.1.log"), "utf8")), 10_000, "beta.1's ready line in its log");
    console.log(`fleet up + round trip: ${Date.now() - t0} ms`);
  });

  test("fleet - a second up refuses while the supervisor lives", async () => {
    const r = await cli(["workers", "up", "-c", file, "--detach", ...conn]);
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stderr, /already up: its supervisor is running \(pid \d+/);
  });

  test("fleet - kill -9 of a worker: the supervisor restarts it and tasks still complete", async () => {
    const t0 = Date.now();
    const old = pids()["alpha.1"]!;
    process.kill(old, "SIGKILL");
    const fresh = await eventually(() => {
      const pid = readPid(pidFile("alpha.1"));
      return pid && pid !== old && alive(pid) ? pid : undefined;
    }, 20_000, "a new alpha.1");
    seen.add(fresh);
    await roundTrip();
    const state = JSON.parse(readFileSync(join(dir, "state.json"), "utf8"));
    assert.equal(state.workers["alpha.1"].restarts, 1);
    assert.equal(state.workers["alpha.1"].pid, fresh);
    console.log(`restart after kill -9 + round trip: ${Date.now() - t0} ms`);
  });

  test("fleet - status shows every worker alive, with the registry's counters", async () => {
    const r = await cli(["workers", "status", "-c", file, "--json"]);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const s = JSON.parse(r.stdout);
    assert.equal(s.supervisor.alive, true);
    assert.deepEqual(s.workers.map((w: { name: string }) => w.name), WORKERS);
    for (const w of s.workers) {
      assert.equal(w.alive, true, w.name);
      assert.equal(w.status, "alive");
    }
    assert.equal(s.workers[0].restarts, 1);
    const beta = await eventually(async () => {
      const again = JSON.parse((await cli(["workers", "status", "-c", file, "--json"])).stdout);
      return again.workers[2].registry?.processed >= 2 ? again.workers[2] : undefined;
    }, 15_000, "beta.1's processed count in the registry");
    assert.deepEqual(beta.registry.queues, ["beta"]);
    const human = await cli(["workers", "status", "-c", file]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /^supervisor\s+pid \d+\s+alive/m);
    assert.match(human.stdout, /^alpha\.2\s+\d+\s+alive\s/m);
  });

  test("fleet - logs prints the tail of a worker's log", async () => {
    const r = await cli(["workers", "logs", "beta.1", "-c", file, "-n", "5"]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /INFO /);
    assert.ok(r.stdout.trim().split("\n").length <= 5);
  });

  test("fleet - down stops everything and removes the PID files", async () => {
    const t0 = Date.now();
    const before = pids();
    const r = await cli(["workers", "down", "-c", file], 60_000);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /stopped the supervisor/);
    for (const [name, pid] of Object.entries(before)) assert.equal(alive(pid), false, `${name} (pid ${pid}) stopped`);
    for (const w of WORKERS) assert.equal(existsSync(pidFile(w)), false, `${w}.pid removed`);
    assert.equal(existsSync(supervisorPid), false);
    const status = await cli(["workers", "status", "-c", file, "--json"]);
    assert.equal(status.code, 1);
    console.log(`down: ${Date.now() - t0} ms`);
  });

  test("fleet - up recovers from a stale supervisor PID file", async () => {
    // A pid that was alive a moment ago and is gone now.
    const dead = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], { encoding: "utf8" });
    const stale = Number(dead.stdout);
    assert.equal(alive(stale), false);
    writeFileSync(supervisorPid, `${stale}\n`);
    writeFileSync(pidFile("alpha.2"), `${stale}\n`);
    const r = await cli(["workers", "up", "-c", file, "--detach", ...conn], 60_000);
    assert.equal(r.code, 0, r.stderr + r.stdout);
    const p = pids();
    assert.notEqual(p.supervisor, stale);
    assert.ok(alive(p.supervisor));
    assert.ok(WORKERS.every((w) => alive(p[w]) && p[w] !== stale));
    await roundTrip();
    const down = await cli(["workers", "down", "-c", file], 60_000);
    assert.equal(down.code, 0, down.stderr);
    assert.equal(alive(p.supervisor), false);
  });

  test("fleet - worker --pidfile refuses a live pid, overwrites a stale one, removes its own on exit", async () => {
    const path = join(tmp, "w.pid");
    writeFileSync(path, `${process.pid}\n`);
    const refused = await cli(["worker", "-A", "test/fixtures/cli_tasks.ts", "--pidfile", path, ...conn]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, new RegExp(`error: --pidfile .*w\\.pid names a live process \\(pid ${process.pid}\\)`));
    assert.equal(readPid(path), process.pid, "the file is left alone");

    writeFileSync(path, "999999999\n");
    const logfile = join(tmp, "logs", "w.log");
    const child = spawn(process.execPath, [...CLI, "worker", "-A", "test/fixtures/cli_tasks.ts", "-Q", "solo:serial", "--pidfile", path, "--logfile", logfile, ...conn], {
      cwd: root, env, stdio: ["ignore", "pipe", "pipe"],
    });
    seen.add(child.pid!);
    const exited = finished(child, 30_000);
    await eventually(() => existsSync(logfile) && /INFO worker ready/.test(readFileSync(logfile, "utf8")), 20_000, "the worker's ready line in --logfile");
    assert.equal(readPid(path), child.pid);
    child.kill("SIGTERM");
    const r = await exited;
    assert.equal(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /worker ready/, "logs go to the file, not stderr");
    assert.equal(existsSync(path), false, "the PID file is removed on exit");
  });

  test("fleet - an invalid fleet file exits 2 naming the key and the file", async () => {
    const bad = join(tmp, "bad.yaml");
    writeFileSync(bad, "groups:\n  g:\n    tasks: nope.ts\n    count: 0\n    colour: red\n");
    const r = await cli(["workers", "status", "-c", bad]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /bad\.yaml: groups\.g\.count: count must be at least 1/);
    assert.match(r.stderr, /bad\.yaml: groups\.g\.colour: unknown key/);
  });
});
