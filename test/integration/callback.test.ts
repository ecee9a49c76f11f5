/**
 * The one-file HPC callback as a batch job runs it: bundled, copied into an empty directory (no
 * node_modules anywhere above it), run with plain `node` against a real nats-server, and checked
 * with a client that waits on the task ids.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync, spawn } from "node:child_process";
import { mkdir, mkdtemp, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { nkeys } from "@nats-io/nats-core";
import { freePort, NatsServer } from "../../sdk/testing/mod.ts";
import { RemoteTaskError, type Client } from "../../sdk/client/mod.ts";
import { report } from "../../sdk/callback/mod.ts";
import { connect as natsConnect } from "@nats-io/transport-node";
import register from "../../examples/tasks/worker.ts";
import { client, eventually, freshNamespace, worker } from "./helpers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));

interface Bundle {
  outfile: string;
  bytes: number;
  inputs: string[];
}
// A build script in plain JS: imported by URL so the type checker does not look for its types.
const bundler: {
  bundleCallback(o: { outfile: string; signatures?: string }): Promise<Bundle>;
  CALLBACK_BUDGET_BYTES: number;
} = await import(new URL("../../scripts/bundle-callback.mjs", import.meta.url).href);
const { CALLBACK_BUDGET_BYTES } = bundler;

let server: NatsServer;
/** An empty directory under the system temp dir: nothing to resolve packages from. */
let dir: string;
let plain: Bundle;
let typedBytes: number;

/** Runs the bundler's command line as a user would. */
async function bundleWithCli(args: string[]): Promise<string> {
  const child = spawn(process.execPath, ["scripts/bundle-callback.mjs", ...args], { cwd: root, stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (output += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (output += d));
  const code = await new Promise<number | null>((resolve) => child.on("close", resolve));
  assert.equal(code, 0, output);
  return output;
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), "celerity-callback-"));
  let printed: string;
  [server, plain, printed] = await Promise.all([
    NatsServer.start(),
    bundler.bundleCallback({ outfile: join(dir, "respond.cjs") }),
    bundleWithCli(["--signatures", "examples/tasks/signatures.ts", "-o", join(dir, "respond-typed.cjs")]),
  ]);
  assert.match(printed, /^wrote .*respond-typed\.cjs \(\d+\.\d KB\); run it with: node /);
  typedBytes = (await stat(join(dir, "respond-typed.cjs"))).size;
});
after(async () => {
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

/** The command that runs a script under each runtime (Deno and Bun come from the devDependencies). */
const RUNTIMES = {
  node: [process.execPath],
  deno: [join(root, "node_modules/.bin/deno"), "run", "-A"],
  bun: [join(root, "node_modules/.bin/bun")],
} as const;

/** Runs `node <script> <args>` (or deno, bun) in the empty directory with a clean environment. */
function run(
  script: string,
  args: string[],
  options: { env?: Record<string, string>; stdin?: string; timeoutMs?: number; runtime?: keyof typeof RUNTIMES } = {},
): Promise<Run> {
  const started = Date.now();
  // Only what a batch job would have: PATH, HOME, and what the test sets. No CELERITY_* leaks in.
  const env = { PATH: process.env.PATH ?? "", HOME: dir, DENO_NO_UPDATE_CHECK: "1", NO_COLOR: "1", ...options.env };
  const [command, ...pre] = RUNTIMES[options.runtime ?? "node"];
  const child = spawn(command, [...pre, script, ...args], { cwd: dir, env, stdio: ["pipe", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.setEncoding("utf8").on("data", (d: string) => (stdout += d));
  child.stderr.setEncoding("utf8").on("data", (d: string) => (stderr += d));
  child.stdin.end(options.stdin ?? "");
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${script} ${args.join(" ")} did not exit within ${options.timeoutMs ?? 20_000} ms\nstderr: ${stderr}`));
    }, options.timeoutMs ?? 20_000);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr, ms: Date.now() - started });
    });
  });
}

const on = (ns: string) => ["--servers", server.url, "--namespace", ns, "--deadline", "20s"];

/** A client in a fresh namespace whose topology exists (as it does once anything was sent). */
async function ready(): Promise<{ ns: string; c: Client }> {
  const ns = freshNamespace("cb");
  const c = await client(server, ns);
  await c.ensureTopology();
  return { ns, c };
}

describe("callback", () => {
  test("callback - the bundle is one file within the size budget and carries no worker code and no nats.js", () => {
    for (const bytes of [plain.bytes, typedBytes]) {
      assert.ok(bytes <= CALLBACK_BUDGET_BYTES, `the callback is ${bytes} bytes, over the ${CALLBACK_BUDGET_BYTES}-byte budget`);
    }
    assert.ok(plain.inputs.some((p) => p.includes("sdk/callback/")), "sanity: the bundle has the callback");
    // nats.js stays out: the callback speaks its few protocol lines itself (sdk/callback/direct.ts), for start-up time.
    const forbidden = plain.inputs.filter((p) => /sdk\/(worker|cli|testing|client)\/|node_modules\/(yaml|tweetnacl|msgpackr-extract|@nats-io\/(jetstream|kv|obj|nats-core|transport-node))\//.test(p));
    assert.deepEqual(forbidden, []);
    console.log(`respond.cjs ${(plain.bytes / 1024).toFixed(1)} KB; with examples/tasks/signatures.ts ${(typedBytes / 1024).toFixed(1)} KB`);
  });

  test("callback - success from a result file resolves a waiting client's result()", async () => {
    const { ns, c } = await ready();
    await using _ = c;
    const waiting = c.task("job-file").result({ timeout: 15_000 });
    await writeFile(join(dir, "out.json"), JSON.stringify({ rows: 1200, files: ["a.h5", "b.h5"] }));
    const r = await run("respond.cjs", ["success", "--id", "job-file", "--result-file", "out.json", "--task", "hpc.simulate", ...on(ns)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, "");
    assert.deepEqual(await waiting, { rows: 1200, files: ["a.h5", "b.h5"] });
    const status = await c.status("job-file");
    assert.equal(status.state, "SUCCESS");
    assert.equal(status.record?.task, "hpc.simulate");
  });

  for (const runtime of ["deno", "bun"] as const) {
    test(`callback - the same file runs unmodified under ${runtime}: success, send, and a refused report`, async () => {
      const { ns, c } = await ready();
      await using _ = c;
      const id = `job-${runtime}`;
      const ok = await run("respond.cjs", ["success", "--id", id, "--result", '{"runtime": 1}', "--task", "hpc.simulate", ...on(ns)], { runtime, timeoutMs: 60_000 });
      assert.equal(ok.code, 0, ok.stderr);
      assert.deepEqual(await c.task(id).result({ timeout: 15_000 }), { runtime: 1 });
      assert.equal((await c.status(id)).record?.task, "hpc.simulate");

      const sent = await run("respond-typed.cjs", ["send", "images.thumbnail", "--args", '{"imageId": "rt", "width": 64}', "--id", `next-${runtime}`, ...on(ns)], { runtime, timeoutMs: 60_000 });
      assert.equal(sent.code, 0, sent.stderr);
      assert.equal(sent.stdout.trim(), `next-${runtime}`);
      assert.equal((await c.status(`next-${runtime}`)).state, "PENDING");

      const bad = await run("respond-typed.cjs", ["send", "images.thumbnail", "--args", '{"imageId": "rt", "width": 8}', ...on(ns)], { runtime, timeoutMs: 60_000 });
      assert.equal(bad.code, 2, bad.stderr);
      assert.match(bad.stderr, /^respond-typed\.cjs: invalid arguments for task "images\.thumbnail": width: .+\n$/);
    });
  }

  test("callback - an outfile named *.mjs is an ES module that works the same", async () => {
    const { ns, c } = await ready();
    await using _ = c;
    await bundler.bundleCallback({ outfile: join(dir, "respond-esm.mjs") });
    const r = await run("respond-esm.mjs", ["success", "--id", "job-esm", "--result", "7", ...on(ns)]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await c.task("job-esm").result({ timeout: 15_000 }), 7);
  });

  test("callback - success from stdin, with servers, namespace and task id from the environment", async () => {
    const { ns, c } = await ready();
    await using _ = c;
    const r = await run("respond.cjs", ["success", "--result-stdin"], {
      stdin: '{"energy": -1.5}\n',
      env: { CELERITY_SERVERS: server.url, CELERITY_NAMESPACE: ns, CELERITY_TASK_ID: "job-env" },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await c.task("job-env").result({ timeout: 10_000 }), { energy: -1.5 });
  });

  test("callback - a YAML settings file is read by the bundle's own YAML reader", async () => {
    const { ns, c } = await ready();
    await using _ = c;
    const settings = join(dir, `settings-${ns}.yaml`);
    await writeFile(settings, `# written by the job's environment module\nservers:\n  - ${server.url}   # primary\nnamespace: ${ns}\nreconnect:\n  waitMs: 250\nevents: true\n`);
    const r = await run("respond.cjs", ["success", "--id", "job-yaml", "--result", "[1, 2]"], { env: { CELERITY_SETTINGS: settings } });
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(await c.task("job-yaml").result({ timeout: 10_000 }), [1, 2]);
    // YAML beyond what settings files use is refused with a way out, not misread.
    await writeFile(settings, `servers: &primary\n  - ${server.url}\n`);
    const refused = await run("respond.cjs", ["success", "--id", "job-yaml2", "--result", "1"], { env: { CELERITY_SETTINGS: settings } });
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /unsupported YAML syntax "&primary".*use a JSON settings file or CELERITY_\* variables/);
    assert.equal(refused.stderr.trimEnd().split("\n").length, 1);
  });

  test("callback - failure rejects result() with the given error type and message", async () => {
    const { ns, c } = await ready();
    await using _ = c;
    const waiting = c.task("job-fail").result({ timeout: 15_000 });
    waiting.catch(() => {}); // asserted below, after the run
    const r = await run("respond.cjs", ["failure", "--id", "job-fail", "--error", "disk quota exceeded on /scratch", "--type", "QuotaError", ...on(ns)]);
    assert.equal(r.code, 0, r.stderr);
    await assert.rejects(waiting, (err: unknown) => {
      assert.ok(err instanceof RemoteTaskError);
      assert.equal(err.remoteType, "QuotaError");
      assert.match(err.message, /disk quota exceeded on \/scratch/);
      assert.equal(err.retryable, false);
      return true;
    });
  });

  test("callback - progress reaches a client that follows the task", async () => {
    const { ns, c } = await ready();
    await using _ = c;
    const seen: unknown[] = [];
    const off = c.task("job-progress").onProgress((p) => seen.push(p));
    // The subscription must be in place on the server before the report is sent.
    await c.nc.flush();
    const r = await run("respond.cjs", ["progress", "--id", "job-progress", "--value", '{"step": 3, "of": 10}', ...on(ns)]);
    assert.equal(r.code, 0, r.stderr);
    await eventually(() => seen.length > 0, 5_000, "the progress report");
    assert.deepEqual(seen, [{ step: 3, of: 10 }]);
    off();
  });

  test("callback - send queues a task by name for a worker and prints its id", async () => {
    const { ns, c } = await ready();
    await using _ = c;
    await using w = worker(server, ns, { queues: ["default", "images"] });
    register(w);
    await w.start();
    const r = await run("respond.cjs", ["send", "math.add", "--args", '{"a": 2, "b": 40}', ...on(ns)]);
    assert.equal(r.code, 0, r.stderr);
    const id = r.stdout.trim();
    assert.match(id, /^[0-9a-f-]{36}$/);
    assert.equal(await c.task(id).result({ timeout: 15_000 }), 42);

    // Built with the signatures: the queue comes from the signature, and the id can be chosen.
    const t = await run("respond-typed.cjs", ["send", "images.thumbnail", "--args", '{"imageId": "scan-7", "width": 64}', "--id", "next-step-7", ...on(ns)]);
    assert.equal(t.code, 0, t.stderr);
    assert.equal(t.stdout.trim(), "next-step-7");
    assert.deepEqual(await c.task("next-step-7").result({ timeout: 15_000 }), { imageId: "scan-7", width: 64, bytes: 492 });
  });

  test("callback - a bundle built with signatures refuses unknown names and invalid arguments (exit 2)", async () => {
    const { ns, c } = await ready();
    await using _ = c;
    const bad = await run("respond-typed.cjs", ["send", "images.thumbnail", "--args", '{"imageId": "x", "width": 8}', ...on(ns)]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^respond-typed\.cjs: invalid arguments for task "images\.thumbnail": width: .+\n$/);
    const unknown = await run("respond-typed.cjs", ["send", "images.thumbnale", ...on(ns)]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown task "images\.thumbnale": this callback was built with the signatures images\.thumbnail, math\.add/);
    assert.equal((await (await c.jsm()).streams.info(c.names.tasksStream)).state.messages, 0, "nothing was sent");
  });

  test("callback - bad command lines exit 2 with one line", async () => {
    const cases: [string[], RegExp][] = [
      [["success", "--result", "1"], /needs --id/],
      [["success", "--id", "x"], /exactly one of --result-file/],
      [["success", "--id", "x", "--result-file", "missing.json"], /cannot read the result file missing\.json/],
      [["progress", "--id", "x", "--value", "{nope"], /--value is not valid JSON/],
      [["finish", "--id", "x"], /unknown command "finish"/],
      [["success", "--id", "bad id", "--result", "1"], /task id "bad id" is invalid/],
      [["success", "--id", "x", "--result", "1", "--deadline", "soon"], /--deadline must be a duration/],
    ];
    for (const [args, pattern] of cases) {
      const r = await run("respond.cjs", [...args, "--servers", server.url]);
      assert.equal(r.code, 2, `${args.join(" ")}: ${r.stderr}`);
      assert.match(r.stderr, pattern);
      assert.equal(r.stderr.trimEnd().split("\n").length, 1, `one line: ${r.stderr}`);
    }
  });

  test("callback - an unreachable server exits 1 with one line once the deadline passes", async () => {
    const port = await freePort();
    const r = await run("respond.cjs", ["success", "--id", "job-lost", "--result", "1", "--servers", `nats://127.0.0.1:${port}`, "--deadline", "2s"]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^respond\\.cjs: could not connect to nats://127\\.0\\.0\\.1:${port} within 2000 ms \\(\\d+ attempts\\): .+\\n$`));
    // Generous slack for a slow machine: the point is that it gives up, not how fast.
    assert.ok(r.ms < 10_000, `gave up after ${r.ms} ms`);
  });

  test("callback - report() as a library: over its own link, and over a nats.js connection the caller passes", async () => {
    const { ns, c } = await ready();
    await using _ = c;
    const own = await report({ kind: "success", id: "lib-own", result: { via: "direct" } }, { servers: [server.url], namespace: ns, deadlineMs: 15_000 });
    assert.equal(own.id, "lib-own");
    assert.equal(own.attempts, 1);
    assert.deepEqual(await c.task("lib-own").result({ timeout: 10_000 }), { via: "direct" });

    const nc = await natsConnect({ servers: server.url });
    try {
      const sent = await report({ kind: "send", task: "math.add", args: { a: 1, b: 2 }, id: "lib-nc" }, { connection: nc, namespace: ns });
      assert.equal(sent.id, "lib-nc");
      assert.equal((await c.status("lib-nc")).state, "PENDING");
      assert.ok(!nc.isClosed(), "the caller's connection is left open");
    } finally {
      await nc.close();
    }
  });

  test("callback - reports over TLS (upgraded after INFO), trusting the CA from CELERITY_TLS_CA", async () => {
    // A CA and a server certificate for 127.0.0.1, made with openssl for this test only.
    const certs = join(dir, "certs");
    await mkdir(certs, { recursive: true });
    const at = (name: string) => join(certs, name);
    const openssl = (...args: string[]) => execFileSync("openssl", args, { stdio: "pipe" });
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", at("ca.key"), "-out", at("ca.pem"), "-days", "1", "-subj", "/CN=celerity test CA");
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", at("server.key"), "-out", at("server.csr"), "-subj", "/CN=127.0.0.1");
    await writeFile(at("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n");
    openssl("x509", "-req", "-in", at("server.csr"), "-CA", at("ca.pem"), "-CAkey", at("ca.key"), "-CAcreateserial", "-out", at("server.pem"), "-days", "1", "-extfile", at("san.ext"));
    await using secured = await NatsServer.start({ extraConfig: `tls { cert_file: "${at("server.pem")}", key_file: "${at("server.key")}" }` });
    const ns = freshNamespace("cbtls");
    // The SDK's own client over TLS too (nats.js), to wait for the result.
    await using c = await client(secured, ns, { tls: { caFile: at("ca.pem") } });
    await c.ensureTopology();

    const untrusted = await run("respond.cjs", ["success", "--id", "job-tls", "--result", "1", "--servers", secured.url, "--namespace", ns, "--deadline", "2s"]);
    assert.equal(untrusted.code, 1, "a certificate nobody vouches for is refused");
    assert.match(untrusted.stderr, /^respond\.cjs: could not connect to .* TLS handshake with 127\.0\.0\.1 failed: .*certificate.*\n$/);

    const r = await run("respond.cjs", ["success", "--id", "job-tls", "--result", '"over TLS"', "--servers", secured.url, "--namespace", ns], {
      env: { CELERITY_TLS_CA: at("ca.pem") },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await c.task("job-tls").result({ timeout: 10_000 }), "over TLS");
  });

  test("callback - authenticates with an nkey seed from the environment", async () => {
    const user = nkeys.createUser();
    const seed = new TextDecoder().decode(user.getSeed());
    await using secured = await NatsServer.start({ extraConfig: `authorization { users = [ { nkey: "${user.getPublicKey()}" } ] }` });
    const ns = freshNamespace("cbauth");
    await using c = await client(secured, ns, { nkeySeed: seed });
    await c.ensureTopology();
    const denied = await run("respond.cjs", ["success", "--id", "job-auth", "--result", "1", "--servers", secured.url, "--namespace", ns, "--deadline", "10s"]);
    assert.equal(denied.code, 1, "no credentials: refused");
    assert.match(denied.stderr, /refused the connection|authori[sz]ation/i);
    assert.ok(denied.ms < 8_000, `an auth failure is not retried until the deadline (${denied.ms} ms)`);
    const r = await run("respond.cjs", ["success", "--id", "job-auth", "--result", '"signed"', "--servers", secured.url, "--namespace", ns], {
      env: { CELERITY_NKEY_SEED: seed },
    });
    assert.equal(r.code, 0, r.stderr);
    assert.equal(await c.task("job-auth").result({ timeout: 10_000 }), "signed");
  });
});
