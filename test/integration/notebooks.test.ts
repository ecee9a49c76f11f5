/**
 * The notebooks run headlessly (jupyter nbconvert --execute with the tslab kernel) against a real
 * nats-server with a worker in this process, and the notebook helpers' renderers are checked as
 * strings. Jupyter and tslab come from scripts/setup-notebooks.sh; when they are missing the test
 * runs it, and fails with the command to run when that is not possible.
 */
import { after, before, describe, test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { NatsServer } from "../../sdk/testing/mod.ts";
import register from "../../examples/tasks/worker.ts";
import { EVENT, type TaskEvent } from "../../sdk/protocol/mod.ts";
import {
  escapeHtml,
  formatCell,
  progressBar,
  renderChart,
  renderProgress,
  renderTable,
  table,
  textChart,
  textProgress,
  textTable,
  throughput,
  watch,
} from "../../sdk/notebook/mod.ts";
import { client, finished, freshNamespace, withExampleWorker, worker } from "./helpers.ts";

const root = fileURLToPath(new URL("../..", import.meta.url));
const SETUP = "bash scripts/setup-notebooks.sh";

describe("notebook renderers", () => {
  test("notebook - escapeHtml escapes <, >, &, quotes", () => {
    assert.equal(escapeHtml(`<script>alert("x" & 'y')</script>`), "&lt;script&gt;alert(&quot;x&quot; &amp; &#39;y&#39;)&lt;/script&gt;");
  });

  test("notebook - renderTable escapes headers and cells, formats values, colours states", () => {
    const html = renderTable([
      { "<b>name</b>": "<img src=x onerror=alert(1)>", n: 3, when: new Date(0), state: "FAILURE" },
      { "<b>name</b>": null, n: 4.5, extra: { a: [1, "<"] } },
    ], { caption: "a < b" });
    assert.ok(!html.includes("<img"), "no raw tag from data");
    assert.ok(!html.includes("<b>name"), "no raw tag from a header");
    assert.match(html, /<th[^>]*>&lt;b&gt;name&lt;\/b&gt;<\/th>/);
    assert.match(html, /&lt;img src=x onerror=alert\(1\)&gt;/);
    assert.match(html, /<caption[^>]*>a &lt; b<\/caption>/);
    assert.match(html, />1970-01-01T00:00:00\.000Z</);
    assert.match(html, />\{&quot;a&quot;:\[1,&quot;&lt;&quot;\]\}</);
    assert.match(html, /color:#b91c1c;font-weight:600">FAILURE</);
    assert.equal((html.match(/<tr>/g) ?? []).length, 3, "a header row and two rows");
    assert.equal((html.match(/<th /g) ?? []).length, 5, "columns: union of keys");
  });

  test("notebook - renderTable limits rows and says how many are left out", () => {
    const rows = Array.from({ length: 5 }, (_, i) => ({ i }));
    assert.match(renderTable(rows, { maxRows: 2 }), /… 3 more rows/);
    assert.match(renderTable([]), /\(no rows\)/);
    assert.equal(textTable(rows, { maxRows: 2 }), "i\n-\n0\n1\n… 3 more rows");
  });

  test("notebook - textTable aligns columns", () => {
    assert.equal(textTable([{ id: "a", n: 10 }, { id: "bbb", n: 2 }]), "id   n\n---  --\na    10\nbbb  2");
    assert.equal(formatCell(undefined), "");
    assert.equal(formatCell(10n), "10");
  });

  test("notebook - renderProgress and textProgress show done, failed and the share", () => {
    const html = renderProgress({ done: 3, total: 4, failed: 1, label: "<batch>" });
    assert.match(html, /width:50\.0%;background:#16a34a/);
    assert.match(html, /width:25\.0%;background:#dc2626/);
    assert.match(html, /<b>&lt;batch&gt;<\/b> 3\/4 \(75%\), 1 failed/);
    assert.equal(textProgress({ done: 1, total: 4 }, 8), "[##------] 1/4 (25%)");
    assert.equal(textProgress({ done: 0, total: 0 }, 4), "[####] 0/0 (100%)");
  });

  test("notebook - renderChart draws one polyline per series inside an escaped SVG", () => {
    const svg = renderChart([
      { name: "ok <1>", points: [[0, 1], [1, 3], [2, 2]] },
      { name: "failed", points: [[0, 0], [2, 1]] },
    ], { title: "t <x>", width: 300, height: 120, x: "number" });
    assert.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"[^>]* width="300" height="120"/);
    assert.ok(svg.endsWith("</svg>"));
    assert.equal((svg.match(/<polyline /g) ?? []).length, 2);
    assert.match(svg, />ok &lt;1&gt;</);
    assert.match(svg, />t &lt;x&gt;</);
    assert.ok(!/<1>|<x>/.test(svg));
    // y from 0 to 3: the top label is the maximum.
    assert.match(svg, />3<\/text>/);
    assert.match(renderChart([], {}), /no data/);
    assert.match(renderChart([5]), /<circle /);
  });

  test("notebook - renderChart labels a time axis as UTC clock times", () => {
    const t0 = Date.UTC(2026, 0, 1, 12, 0, 0);
    const svg = renderChart({ name: "s", points: [[new Date(t0), 1], [new Date(t0 + 61_000), 2]] });
    assert.match(svg, />12:00:00</);
    assert.match(svg, />12:01:01</);
    assert.equal(textChart([1, 4, 8]), "▂▅█  (max 8, 0…2)");
  });

  test("notebook - throughput buckets succeeded and failed events", () => {
    const at = Date.UTC(2026, 0, 1);
    const ev = (type: TaskEvent["type"], ms: number): TaskEvent => ({ type, id: String(ms), task: "t", at: at + ms });
    const series = throughput([ev(EVENT.succeeded, 0), ev(EVENT.succeeded, 900), ev(EVENT.failed, 1500), ev(EVENT.started, 1600), ev(EVENT.succeeded, 3100)], { bucketMs: 1000 });
    assert.deepEqual(series.map((s) => s.name), ["succeeded", "failed"]);
    assert.deepEqual(series[0]!.points, [[at, 2], [at + 1000, 0], [at + 2000, 0], [at + 3000, 1]]);
    assert.deepEqual(series[1]!.points.map(([, y]) => y), [0, 1, 0, 0]);
    assert.deepEqual(throughput([], {}).map((s) => s.points.length), [0, 0]);
  });

  test("notebook - without a notebook, helpers print text; with a display host they render HTML", async () => {
    const lines: string[] = [];
    await table([{ a: 1 }], { log: (l) => lines.push(l), display: undefined });
    // No tslab in this process (it is not a dependency): text.
    assert.deepEqual(lines, ["a\n-\n1"]);
    const shown: string[] = [];
    const host = { display: { html: (h: string) => shown.push(`static:${h}`) }, newDisplay: () => ({ html: (h: string) => shown.push(`live:${h}`) }) };
    await table([{ a: "<x>" }], { display: host });
    assert.match(shown[0]!, /^static:<table[^]*&lt;x&gt;/);
    const handles = [1, 2, 3].map((i) => ({ id: `t${i}`, result: () => (i === 2 ? Promise.reject(Object.assign(new Error("boom"), { name: "RemoteTaskError" })) : Promise.resolve(i)) }));
    const bar = await progressBar(handles, { display: host, intervalMs: 0 });
    const settled = await bar.settled;
    assert.deepEqual(settled.map((s) => s.state), ["SUCCESS", "FAILURE", "SUCCESS"]);
    assert.match(shown.at(-1)!, /^live:.*3\/3 \(100%\), 1 failed/);
    // A host that throws (tslab outside a kernel) falls back to text.
    const text: string[] = [];
    await table([{ a: 1 }], { display: { display: { html: () => { throw new Error("Not ready"); } } }, log: (l) => text.push(l) });
    assert.deepEqual(text, ["a\n-\n1"]);
  });

  test("notebook - watch() follows ids through the client and reports each outcome", async () => {
    const server = await NatsServer.start();
    try {
      const ns = freshNamespace("nbw");
      await using w = worker(server, ns, { queues: ["default", "images"] });
      register(w);
      await w.start();
      await using c = await client(server, ns);
      const ok = await c.send("math.add", { a: 1, b: 2 });
      const bad = await c.send("math.add", { a: "x", b: 2 });
      const lines: string[] = [];
      const settled = await watch(c, [ok, bad.id], { log: (l) => lines.push(l), timeout: 15_000 });
      assert.deepEqual(settled.map((s) => [s.id, s.state]), [[ok.id, "SUCCESS"], [bad.id, "FAILURE"]]);
      assert.equal(settled[0]!.result, 3);
      assert.match(settled[1]!.error ?? "", /invalid arguments/);
      assert.match(lines.at(-1)!, /^tasks \[#+\] 2\/2 \(100%\), 1 failed/);
    } finally {
      await server.stop();
    }
  });
});

/** Whether the nbconvert + tslab kernel pair is ready to execute notebooks. */
function jupyterProblem(): string | undefined {
  const nbconvert = spawnSync("jupyter-nbconvert", ["--version"], { encoding: "utf8", env: { ...process.env, PYDEVD_DISABLE_FILE_VALIDATION: "1" } });
  if (nbconvert.status !== 0) return "jupyter-nbconvert is not installed";
  const specs = spawnSync("jupyter", ["kernelspec", "list", "--json"], { encoding: "utf8", env: { ...process.env, PYDEVD_DISABLE_FILE_VALIDATION: "1" } });
  if (specs.status !== 0) return `jupyter kernelspec list failed: ${specs.stderr.trim().split("\n").at(-1)}`;
  const spec = (JSON.parse(specs.stdout) as { kernelspecs: Record<string, { spec: { argv: string[] } }> }).kernelspecs.tslab;
  if (!spec) return "the tslab kernel is not installed";
  const bin = spec.spec.argv[0]!;
  if (bin.includes("/") && !existsSync(bin)) return `the tslab kernel names ${bin}, which does not exist`;
  return undefined;
}

describe("notebooks", () => {
  let dist: string;
  let out: string;

  before(async () => {
    let problem = jupyterProblem();
    if (problem) {
      // Root can install it here (as .ci/run's setup step would); anyone else gets the command.
      const setup = spawnSync("bash", ["scripts/setup-notebooks.sh"], { cwd: root, encoding: "utf8" });
      problem = jupyterProblem();
      if (problem) {
        assert.fail(`cannot execute notebooks: ${problem}. Run \`${SETUP}\` (as root, or follow what it prints), then run this test again.\n${setup.stdout}${setup.stderr}`);
      }
    }
    // The notebooks import the built SDK; build it from the current sources into a private
    // directory under node_modules (so the packages it leaves external still resolve).
    const cache = join(root, "node_modules/.cache");
    await mkdir(cache, { recursive: true });
    dist = await mkdtemp(join(cache, "celerity-notebooks-"));
    out = await mkdtemp(join(tmpdir(), "celerity-notebooks-out-"));
    await build({
      entryPoints: { client: "sdk/client/mod.ts", notebook: "sdk/notebook/mod.ts", protocol: "sdk/protocol/mod.ts" },
      absWorkingDir: root,
      outdir: dist,
      bundle: true,
      splitting: true,
      format: "esm",
      platform: "node",
      target: "node20",
      packages: "external",
      logLevel: "warning",
    });
  });
  // Started after the build above (hooks run in the order they are registered).
  const fixture = withExampleWorker("nb", { concurrency: 8 });
  after(async () => {
    if (dist) await rm(dist, { recursive: true, force: true });
    if (out) await rm(out, { recursive: true, force: true });
  });

  interface Output {
    output_type: string;
    name?: string;
    text?: string | string[];
    data?: Record<string, string | string[]>;
    ename?: string;
    evalue?: string;
  }

  /** Executes one notebook with nbconvert; resolves with every output's text, or fails with nbconvert's error. */
  async function execute(name: string): Promise<{ text: string; html: string; outputs: Output[] }> {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("CELERITY_") && k !== "NATS_URL") env[k] = v;
    Object.assign(env, {
      PATH: `${join(root, "node_modules/.bin")}:${process.env.PATH ?? ""}`,
      CELERITY_SERVERS: fixture.server.url,
      CELERITY_NAMESPACE: fixture.namespace,
      CELERITY_DIST: dist,
      PYDEVD_DISABLE_FILE_VALIDATION: "1",
    });
    const args = ["nbconvert", "--to", "notebook", "--execute", `notebooks/${name}`, "--output-dir", out, "--output", name, "--ExecutePreprocessor.timeout=60"];
    const { code, stdout, stderr } = await finished(spawn("jupyter", args, { cwd: root, env, stdio: ["ignore", "pipe", "pipe"] }), 600_000, `jupyter ${args.join(" ")}`);
    const log = stdout + stderr;
    // nbconvert's own message for a failing cell is the part after the traceback.
    assert.equal(code, 0, `jupyter ${args.join(" ")} failed:\n${log.split("\n").filter((l) => !/Debugger|frozen_modules|PYDEVD|Debugging will proceed/.test(l)).slice(-30).join("\n")}`);
    const executed = JSON.parse(await readFile(join(out, name), "utf8")) as { cells: { cell_type: string; outputs?: Output[] }[] };
    const outputs = executed.cells.flatMap((c) => c.outputs ?? []);
    const joined = (v: string | string[] | undefined) => (Array.isArray(v) ? v.join("") : v ?? "");
    const errors = outputs.filter((o) => o.output_type === "error" || (o.output_type === "stream" && o.name === "stderr"));
    assert.deepEqual(errors.map((o) => o.ename ? `${o.ename}: ${o.evalue}` : joined(o.text)), [], `${name} has error output`);
    return {
      outputs,
      text: outputs.filter((o) => o.output_type === "stream").map((o) => joined(o.text)).join(""),
      html: outputs.map((o) => joined(o.data?.["text/html"])).join("\n"),
    };
  }

  test("notebooks - quickstart connects, calls, follows a batch live and shows results as a table", async () => {
    const r = await execute("quickstart.ipynb");
    const { server, namespace: ns } = fixture;
    assert.match(r.text, new RegExp(`connected to ${server.url.replace(/[.:/]/g, "\\$&")}, namespace "${ns}"`));
    assert.match(r.text, /math\.add\(2, 40\) = 42/);
    assert.match(r.text, /40 of 40 thumbnails succeeded, \d+ bytes in total/);
    assert.match(r.text, /progress reports: \[\{"step":1,"of":2\},\{"step":2,"of":2\}\]/);
    // The live bar was updated in place: its final state is what the notebook keeps.
    assert.match(r.html, /<b>thumbnails<\/b> 40\/40 \(100%\)/);
    assert.match(r.html, /<caption[^>]*>thumbnails<\/caption>/);
    assert.match(r.html, /img-0/);
    assert.match(r.html, /… 28 more rows/);
  });

  test("notebooks - control revokes a delayed task and retries failures by sending them again", async () => {
    const r = await execute("control.ipynb");
    assert.match(r.text, /SUCCESS 9, FAILURE 3, REVOKED 1/);
    assert.match(r.text, /retried 3 failures: all succeeded/);
    assert.match(r.html, /<caption[^>]*>final states<\/caption>/);
    assert.match(r.html, />REVOKED</);
  });

  test("notebooks - monitoring shows queue depths, decodes event batches and charts throughput", async () => {
    const r = await execute("monitoring.ipynb");
    assert.match(r.text, /reports backlog: 5/);
    assert.match(r.text, /_EVENTS: \d+ messages; the last holds \d+ event\(s\): task-sent reports\.daily/i);
    const charted = /completed tasks charted: (\d+)/.exec(r.text);
    assert.ok(charted && Number(charted[1]) >= 90, `at least the 90 demo tasks are charted: ${charted?.[0]}`);
    assert.match(r.html, /<svg [^>]*class="celerity-chart"[^]*<polyline /);
    assert.ok(!r.text.includes("<table"), "helpers do not echo their markup as text");
    assert.match(r.html, /<caption[^>]*>queues of namespace /);
  });
});
