/** The `celerity` command as users run it: real child processes against a real nats-server. */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { freePort, NatsServer } from "../../sdk/testing/mod.ts";
import { eventually, finished, freshNamespace, type ProcessRun } from "./helpers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
/** The CLI from source (whatever dist/ holds); bin/celerity.mjs is checked on its own below. */
const CLI = ["--import", "tsx", "sdk/cli/run.ts"];
const env = { ...process.env, CELERITY_SETTINGS: "", NO_COLOR: "1" };

let server: NatsServer;
before(async () => {
  server = await NatsServer.start();
});
after(async () => {
  await server?.stop();
});

type Run = ProcessRun;

/** Runs `celerity <args>` to completion. */
function cli(args: string[], timeoutMs = 20_000): Promise<Run> {
  return finished(spawn(process.execPath, [...CLI, ...args], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] }), timeoutMs);
}

/** The connection options of the test server in `ns`. */
const on = (ns: string) => ["--servers", server.url, "--namespace", ns];

describe("cli", () => {
  test("cli - help lists the commands and exits 0; a command's --help shows its usage", async () => {
    for (const args of [["--help"], ["help"], []]) {
      const r = await cli(args);
      assert.equal(r.code, 0, r.stderr);
      for (const name of ["worker", "call", "send", "status", "result", "init"]) assert.match(r.stdout, new RegExp(`^  ${name} `, "m"));
    }
    const call = await cli(["call", "--help"]);
    assert.equal(call.code, 0);
    assert.match(call.stdout, /^Usage: celerity call <task>/);
    assert.match(call.stdout, /--timeout <ms>/);
    const help = await cli(["help", "worker"]);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /^Usage: celerity worker -A <tasks module>/);
  });

  test("cli - each command of the lazy table loads the command of its name", async () => {
    const { COMMANDS } = await import("../../sdk/cli/mod.ts");
    for (const [name, load] of COMMANDS) assert.equal((await load()).name, name);
    assert.equal(COMMANDS.size, 16);
  });

  test("cli - bin/celerity.mjs runs with or without dist/", async () => {
    const r = await finished(spawn(process.execPath, ["bin/celerity.mjs", "--help"], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] }), 20_000);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^Usage: celerity <command>/);
  });

  test("cli - an unknown command or flag exits 2 with the usage on stderr", async () => {
    const r = await cli(["frobnicate"]);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, "");
    assert.match(r.stderr, /error: unknown command "frobnicate"/);
    assert.match(r.stderr, /Usage: celerity <command>/);
    const flag = await cli(["call", "math.add", "--bogus"]);
    assert.equal(flag.code, 2);
    assert.match(flag.stderr, /error: Unknown option '--bogus'/);
    assert.match(flag.stderr, /Usage: celerity call <task>/);
    const missing = await cli(["status"]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /error: missing task id/);
  });

  test("cli - invalid --args JSON exits 2 before connecting", async () => {
    const r = await cli(["call", "math.add", "--args", "{a:1}", "--servers", "nats://127.0.0.1:1"]);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /^error: --args is not valid JSON: /);
  });

  test("cli - bad settings exit 2; an unreachable server exits 1 naming it", async () => {
    const bad = await cli(["status", "x", "--namespace", "no spaces"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^error: setting "namespace" = "no spaces" on the command line: /);
    const url = `nats://127.0.0.1:${await freePort()}`;
    const down = await cli(["status", "x", "--servers", url]);
    assert.equal(down.code, 1);
    assert.match(down.stderr, new RegExp(`^error: cannot connect to ${url}: `));
  });

  test("cli - init creates the topology, lists the streams, and is idempotent", async () => {
    const ns = freshNamespace();
    const first = await cli(["init", ...on(ns)]);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, new RegExp(`^${ns}_tasks\\s+${ns}\\.tasks\\.>\\s+0$`, "m"));
    assert.match(first.stdout, new RegExp(`^KV_${ns}_results\\s`, "m"));
    const second = await cli(["init", ...on(ns)]);
    assert.equal(second.code, 0, second.stderr);
    assert.equal(second.stdout, first.stdout);
  });

  test("cli - status of an unknown id prints PENDING and exits 0", async () => {
    const ns = freshNamespace();
    const r = await cli(["status", "no-such-task", ...on(ns)]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^state\s+PENDING$/m);
    const json = await cli(["status", "no-such-task", "--json", ...on(ns)]);
    assert.equal(json.code, 0, json.stderr);
    assert.deepEqual(JSON.parse(json.stdout), { id: "no-such-task", state: "PENDING" });
  });

  test("cli - worker -A rejects a module without a register function, naming what it found", async () => {
    const r = await cli(["worker", "-A", "test/fixtures/signatures.ts", ...on(freshNamespace())]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, /must export a function \(worker\) => void/);
    assert.match(r.stderr, /its default export is nothing, "register" is nothing \(it exports: add, /);
  });

  describe("cli - with a worker child process", () => {
    const ns = freshNamespace();
    let worker: ChildProcess | undefined;
    let exited: Promise<Run>;
    let logs = () => "";

    before(async () => {
      worker = spawn(process.execPath, [...CLI, "worker", "-A", "test/fixtures/cli_tasks.ts", ...on(ns)], { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] });
      let stderr = "";
      worker.stderr!.setEncoding("utf8").on("data", (d: string) => (stderr += d));
      logs = () => stderr;
      exited = finished(worker, 55_000);
      exited.catch(() => {});
      await eventually(() => /INFO worker ready/.test(stderr), 20_000, `the worker's ready line (stderr so far: ${stderr})`);
    });

    after(() => {
      if (worker && worker.exitCode === null && worker.signalCode === null) worker.kill("SIGKILL");
    });

    test("cli - call prints the result as JSON and exits 0", async () => {
      const r = await cli(["call", "math.add", "--args", '{"a":1,"b":2}', ...on(ns)]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), "3");
    });

    test("cli - call of a failing task exits 1 with the remote error type on stderr", async () => {
      const r = await cli(["call", "test.fail", "--args", '{"message":"disk full"}', ...on(ns)]);
      assert.equal(r.code, 1);
      assert.equal(r.stdout, "");
      assert.match(r.stderr, /^error: Error: disk full$/m);
    });

    test("cli - send prints an id; result and status --json follow it to SUCCESS", async () => {
      const sent = await cli(["send", "math.add", "--args", '{"a":20,"b":22}', ...on(ns)]);
      assert.equal(sent.code, 0, sent.stderr);
      const id = sent.stdout.trim();
      assert.match(id, /^[0-9a-f-]{36}$/);
      const result = await cli(["result", id, "--timeout", "10000", ...on(ns)]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(JSON.parse(result.stdout), 42);
      const status = await cli(["status", id, "--json", ...on(ns)]);
      assert.equal(status.code, 0, status.stderr);
      const record = JSON.parse(status.stdout);
      assert.equal(record.state, "SUCCESS");
      assert.equal(record.id, id);
      assert.equal(record.task, "math.add");
      assert.equal(record.result, 42);
      assert.equal(record.worker.pid, worker!.pid);
      const human = await cli(["status", id, ...on(ns)]);
      assert.match(human.stdout, /^state\s+SUCCESS$/m);
      assert.match(human.stdout, /^result\s+42$/m);
    });

    test("cli - SIGTERM stops the worker gracefully with exit code 0", async () => {
      worker!.kill("SIGTERM");
      const r = await Promise.race([
        exited,
        new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`the worker did not exit within 8 s: ${logs()}`)), 8_000)),
      ]);
      assert.equal(r.code, 0, logs());
      assert.match(logs(), /SIGTERM: warm shutdown/);
      assert.match(logs(), /worker closed/);
    });
  });
});
