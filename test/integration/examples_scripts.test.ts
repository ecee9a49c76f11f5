/**
 * examples/scripts: every one-off client script runs unmodified under node (through tsx),
 * `deno run -A` and bun against a real nats-server, with one worker (examples/tasks) in this
 * process. The three runtimes run at the same time, each its scripts one after another; every
 * script's output is checked for real values, and each runtime shows the error paths.
 */
import { describe, test } from "node:test";
import assert from "node:assert/strict";
import { RUNTIMES, runScript, withExampleWorker, type Runtime, type ScriptRun } from "./helpers.ts";

const fixture = withExampleWorker("ex");

/** Runs examples/scripts/<script> under `runtime` against the test server and namespace. */
function run(runtime: Runtime, script: string, ...args: string[]): Promise<ScriptRun> {
  return runScript(runtime, `examples/scripts/${script}`, args, fixture);
}

/** Asserts the run exited with `code`; returns its stdout. */
function exited(r: ScriptRun, code: number, what: string): string {
  assert.equal(r.code, code, `${what} exited ${r.code}, not ${code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
  if (code === 0) assert.equal(r.stderr, "", `${what} printed on stderr`);
  return r.stdout;
}

const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

describe("examples/scripts", { concurrency: RUNTIMES.length }, () => {
  for (const runtime of RUNTIMES) {
    describe(runtime, { concurrency: 1 }, () => {
      test(`examples/scripts - call.ts under ${runtime}: a typed result; invalid args refused with the schema's message (exit 2); a remote failure (exit 1)`, async () => {
        const okRun = await run(runtime, "call.ts", "img-7", "256");
        assert.equal(exited(okRun, 0, "call.ts img-7 256"), "images.thumbnail img-7 at 256 px: 7864 bytes\n");

        const invalid = await run(runtime, "call.ts", "img-7", "8");
        exited(invalid, 2, "call.ts img-7 8");
        // call.ts passes a 60 s timeout: a refused send must not leave its timer holding the process.
        assert.ok(invalid.ms < 20_000, `call.ts took ${invalid.ms} ms to exit after a refused send`);
        assert.equal(invalid.stdout, "");
        assert.equal(invalid.stderr, 'refused before sending: invalid arguments for task "images.thumbnail": width: Invalid value: Expected >=16 but received 8\n');

        const remote = await run(runtime, "call.ts", "missing-7", "256");
        exited(remote, 1, "call.ts missing-7 256");
        assert.match(remote.stderr, new RegExp(`^failed on the worker: ImageNotFoundError: image missing-7 is not in the store \\(task ${UUID}\\)\\n$`));
        console.log(`${runtime}: call.ts ${okRun.ms} ms, refused ${invalid.ms} ms, remote failure ${remote.ms} ms (whole processes)`);
      });

      test(`examples/scripts - send_batch.ts under ${runtime}: a table of results and progress; exit 1 when a task failed`, async () => {
        const all = exited(await run(runtime, "send_batch.ts", "--count", "6"), 0, "send_batch.ts --count 6");
        assert.match(all, /^sent 6 tasks \(batch-[0-9a-f]{8}\.0 … batch-[0-9a-f]{8}\.5\)$/m);
        const expected = [["img-1", 64, 492], ["img-2", 128, 1966], ["img-3", 256, 7864], ["img-4", 512, 31457], ["img-5", 64, 492], ["img-6", 128, 1966]] as const;
        for (const [image, width, bytes] of expected) assert.match(all, new RegExp(`^${image} +${width} +${bytes}  SUCCESS  2 reports$`, "m"));
        assert.match(all, /^6 tasks: 6 succeeded, 0 failed, 12 progress reports, \d+ ms$/m);

        const mixed = await run(runtime, "send_batch.ts", "img-1", "missing-2");
        exited(mixed, 1, "send_batch.ts img-1 missing-2");
        assert.match(mixed.stdout, /^img-1 +64 +492  SUCCESS  2 reports$/m);
        assert.match(mixed.stdout, /^missing-2 +128 +-  FAILURE  ImageNotFoundError: image missing-2 is not in the store$/m);
        assert.match(mixed.stdout, /^2 tasks: 1 succeeded, 1 failed, 2 progress reports, \d+ ms$/m);
        assert.equal(mixed.stderr, "1 of 2 tasks failed\n");
      });

      test(`examples/scripts - send_task.ts and status.ts under ${runtime}: send by name, then read state and result by id`, async () => {
        const sent = exited(await run(runtime, "send_task.ts", "math.add", '{"a": 20, "b": 22}'), 0, "send_task.ts math.add");
        assert.match(sent, new RegExp(`^${UUID}\\n$`));
        const id = sent.trim();
        const status = exited(await run(runtime, "status.ts", id, "--wait"), 0, "status.ts --wait");
        assert.match(status, new RegExp(`^id       ${id}\\nstate    SUCCESS\\ntask     math\\.add\\nworker   ${fixture.worker.identity.id}\\nran      \\d+ ms\\nresult   42\\n$`));

        // By name nothing checks the arguments before sending: the worker refuses them.
        const bad = exited(await run(runtime, "send_task.ts", "math.add", '{"a": "x", "b": 1}'), 0, "send_task.ts with bad args").trim();
        const failed = await run(runtime, "status.ts", bad, "--wait");
        exited(failed, 1, "status.ts --wait of a failed task");
        assert.match(failed.stdout, /^state    FAILURE$/m);
        assert.match(failed.stdout, /^error    InvalidArgumentsError: invalid arguments for task "math\.add": a: Invalid type: Expected number but received "x"$/m);
        assert.equal(failed.stderr, `task ${bad} ended FAILURE\n`);

        const unknown = exited(await run(runtime, "status.ts", `never-sent-${runtime}`), 0, "status.ts of an unknown id");
        assert.equal(unknown, `id       never-sent-${runtime}\nstate    PENDING\n`);

        const notJson = await run(runtime, "send_task.ts", "math.add", "{a: 1}");
        exited(notJson, 2, "send_task.ts with arguments that are not JSON");
        assert.match(notJson.stderr, /^the arguments are not JSON: .+\n$/);
      });

      test(`examples/scripts - canvas.ts under ${runtime}: a chain, a group and a chord`, async () => {
        const out = exited(await run(runtime, "canvas.ts", "10"), 0, "canvas.ts 10");
        assert.equal(
          out,
          "chain  double(double(add(1, 2)))  = 12\n" +
            "group  [add(1, 1), add(2, 2), double(5)]  = [2,4,10]\n" +
            "chord  total(map(double, 1..10))  = 110\n",
        );
      });

      test(`examples/scripts - inspect.ts under ${runtime}: the live worker, its queues and tasks, and its ping`, async () => {
        const out = exited(await run(runtime, "inspect.ts"), 0, "inspect.ts");
        assert.match(out, new RegExp(`^1 live worker in namespace "${fixture.namespace}"$`, "m"));
        assert.match(out, new RegExp(`^worker     ${fixture.worker.identity.id} \\(host .+, pid ${process.pid}, up \\d+ s\\)$`, "m"));
        assert.match(out, /^ {2}queues     default, images$/m);
        assert.match(out, /^ {2}tasks      images\.thumbnail, math\.add, math\.double, math\.total$/m);
        assert.match(out, /^ {2}processed  \d+ \(\d+ failed\), \d+ running of 4$/m);
        assert.match(out, /^ {2}ping       pong in \d+ ms$/m);
      });

      test(`examples/scripts - revoke.ts under ${runtime}: a scheduled task revoked before it runs ends REVOKED`, async () => {
        const out = exited(await run(runtime, "revoke.ts"), 0, "revoke.ts");
        const id = new RegExp(`^scheduled (${UUID}), due \\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z$`, "m").exec(out)?.[1];
        assert.ok(id, `revoke.ts did not list its scheduled task:\n${out}`);
        assert.match(out, new RegExp(`^result    TaskRevokedError: task ${id} was revoked: sent by mistake$`, "m"));
        assert.match(out, /^state     REVOKED$/m);
      });
    });
  }
});
