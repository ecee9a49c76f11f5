/**
 * `npm run bench`: a private nats-server (sdk/testing), every workload as its own child process
 * (as ../shared/peers/run.sh runs them), records to .bench/results-<stamp>.jsonl, then the table
 * (../shared/peers/lib/report.js when present) and the targets table.
 */
import { spawn, spawnSync } from "node:child_process";
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus, hostname, loadavg, totalmem } from "node:os";
import { join } from "node:path";
import process from "node:process";
import { NatsServer } from "../../sdk/testing/mod.ts";
import { BENCH_JS, ensureBuilt, log, median, PEERS_DIR, readRecords, ROOT, type Args, type BenchRecord } from "./common.ts";
import { targetsTable } from "./targets.ts";
import { COLDSTART_DEFAULT } from "./workloads.ts";

const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);

export async function cmdAll(args: Args): Promise<void> {
  const N = env("N", 20000);
  const LAT_N = env("LAT_N", 1000);
  const LAT_WARMUP = env("LAT_WARMUP", 50);
  const COLD_RUNS = env("COLD_RUNS", 10);
  const REPS = env("REPS", 1);
  const IDLE_REPS = env("IDLE_REPS", 1);
  const IDLE_SETTLE = env("IDLE_SETTLE", 2);
  const RAW = env("RAW", 1);
  const DIAG = env("DIAG", 1);
  const outDir = args.out ?? join(ROOT, ".bench");
  mkdirSync(outDir, { recursive: true });
  const d = new Date();
  const p2 = (x: number) => String(x).padStart(2, "0");
  const stamp = `${d.getFullYear()}${p2(d.getMonth() + 1)}${p2(d.getDate())}-${p2(d.getHours())}${p2(d.getMinutes())}${p2(d.getSeconds())}`;
  const results = join(outDir, `results-${stamp}.jsonl`);
  const table = join(outDir, `results-${stamp}.md`);
  writeFileSync(results, "");
  const t0 = Date.now();
  const loadStart = loadavg().map((x) => x.toFixed(2)).join(" ");
  const failures: string[] = [];
  const meta = (o: Record<string, unknown>) => appendFileSync(results, JSON.stringify({ type: "meta", ...o }) + "\n");

  log(`building dist/ and .bench/build/`);
  await ensureBuilt(true);
  const server = await NatsServer.start();
  log(`nats-server ${server.version} at ${server.url} (private, temporary file store); results -> ${results}`);
  const step = async (sub: string, ...flags: string[]) => {
    const argv = [BENCH_JS, sub, "--servers", server.url, "--server-pid", String(server.pid), ...flags];
    const ok = await new Promise<boolean>((resolve) => {
      const child = spawn(process.execPath, argv, { stdio: ["ignore", "pipe", "inherit"], cwd: ROOT });
      child.stdout.setEncoding("utf8");
      child.stdout.on("data", (chunk: string) => appendFileSync(results, chunk));
      child.on("exit", (code) => resolve(code === 0));
      child.on("error", () => resolve(false));
    });
    if (!ok) {
      const reason = `command failed: bench.ts ${sub} ${flags.join(" ")}`;
      failures.push(reason);
      log(`FAILED: ${reason}`);
      meta({ kind: "failed", setup: "celerity", reason });
    }
  };

  try {
    // Cold starts first, on a quiet machine, with this run's `node -e 0` beside them.
    const coldVariants = [...COLDSTART_DEFAULT, ...(DIAG ? ["bundled-no-yaml", "raw-bundled"] : [])].join(",");
    await step("coldstart", "--runs", String(COLD_RUNS), "--warmup", "1", "--baseline", "1", "--variants", coldVariants);
    if (DIAG) await step("coldphases", "--runs", String(COLD_RUNS), "--variants", `${COLDSTART_DEFAULT.join(",")},bundled-no-yaml,raw-bundled`);
    for (let r = 1; r <= REPS; r++) {
      log(`rep ${r}/${REPS}: drain c=1 (after the sequential loop), drain c=50 (after 1000 in flight), enqueue 100 in flight, latency`);
      await step("drain", "--concurrency", "1", "--n", String(N), "--rep", String(r));
      await step("drain", "--concurrency", "50", "--n", String(N), "--rep", String(r));
      await step("enqueue", "--mode", "p100", "--n", String(N), "--rep", String(r));
      await step("latency", "--n", String(LAT_N), "--warmup", String(LAT_WARMUP), "--rep", String(r));
    }
    if (DIAG) {
      // Where the time goes: the same paths with the task events switched off (settings.events).
      log("diagnostics: events off");
      await step("enqueue", "--mode", "seq", "--n", String(Math.min(N, 10000)), "--events", "0");
      await step("enqueue", "--mode", "p100", "--n", String(N), "--events", "0");
      await step("drain", "--concurrency", "50", "--n", String(N), "--events", "0");
      // Prefetch: at c=1 a second held message hides the worker's store + ack + pull round trip.
      await step("drain", "--concurrency", "1", "--prefetch", "4", "--enqueue-mode", "p1000", "--n", String(N));
      await step("latency", "--n", String(LAT_N), "--warmup", String(LAT_WARMUP), "--events", "0");
    }
    for (let r = 1; r <= IDLE_REPS; r++) {
      for (const c of [1, 50]) await step("idlemem", "--concurrency", String(c), "--settle", String(IDLE_SETTLE), "--rep", String(r), ...(c === 1 && DIAG ? ["--baseline", "1"] : []));
    }
    if (RAW) await step("raw", "--n", String(N));
  } finally {
    await server.stop();
  }

  const wall = Math.round((Date.now() - t0) / 1000);
  meta({
    kind: "run", started: new Date(t0).toISOString(), finished: new Date().toISOString(), wall_s: wall, host: hostname(),
    cpus: cpus().length, mem_gb: Math.round(totalmem() / 2 ** 30), load_start: loadStart,
    load_end: loadavg().map((x) => x.toFixed(2)).join(" "),
    versions: { node: process.version, "nats-server": server.version, celerity: `${JSON.parse(readFileSync(join(ROOT, "package.json"), "utf8")).version} (${gitDescribe()})` },
    knobs: { N, LAT_N, LAT_WARMUP, COLD_RUNS, REPS, IDLE_REPS, IDLE_SETTLE, RAW, DIAG },
  });

  const text = renderTables([results]);
  writeFileSync(table, text);
  process.stdout.write(text);
  log(`done in ${wall} s; records -> ${results}; tables -> ${table}`);
  if (failures.length) throw new Error(`${failures.length} step(s) failed: ${failures.join("; ")}`);
}

/** The main table (../shared/peers/lib/report.js when present, else our own) and the targets table. */
export function renderTables(files: string[]): string {
  const recs = files.flatMap(readRecords);
  const report = join(PEERS_DIR, "lib", "report.js");
  let main = "";
  if (existsSync(report)) {
    const r = spawnSync(process.execPath, [report, ...files], { encoding: "utf8" });
    if (r.status === 0) main = r.stdout;
  }
  if (!main) main = ownTable(recs);
  return `${main}\n${targetsTable(recs)}`;
}

/** `bench.ts report --in a.jsonl[,b.jsonl]`: the tables again, for one run or several merged (medians). */
export async function cmdReport(args: Args): Promise<void> {
  if (!args.in) throw new Error("--in results.jsonl[,more.jsonl] is required");
  process.stdout.write(renderTables(args.in.split(",")));
}

/** A plain table of medians, for a checkout without ../shared/peers. */
function ownTable(recs: BenchRecord[]): string {
  const groups = new Map<string, { r: BenchRecord; values: number[] }>();
  for (const r of recs) {
    const key = JSON.stringify([r.workload, r.peer, r.setup, r.variant, r.metric, r.unit]);
    const g = groups.get(key) ?? { r, values: [] };
    g.values.push(r.value);
    groups.set(key, g);
  }
  const out = ["| Workload | Peer | Setup | Variant | Metric | Median | Min | Max | Reps | Unit |", "|---|---|---|---|---|---:|---:|---:|---:|---|"];
  const rows = [...groups.values()].sort((a, b) => a.r.workload.localeCompare(b.r.workload));
  for (const { r, values } of rows) {
    const f = (x: number) => (Math.abs(x) >= 100 ? Math.round(x).toLocaleString("en-US") : x.toFixed(2));
    out.push(`| ${r.workload} | ${r.peer} | ${r.setup} | ${r.variant} | ${r.metric} | **${f(median(values))}** | ${f(Math.min(...values))} | ${f(Math.max(...values))} | ${values.length} | ${r.unit} |`);
  }
  return out.join("\n") + "\n";
}

/** The commit measured, and whether sdk/ had uncommitted changes (others edit it concurrently). */
function gitDescribe(): string {
  const head = spawnSync("git", ["rev-parse", "--short", "HEAD"], { cwd: ROOT, encoding: "utf8" });
  const dirty = spawnSync("git", ["status", "--porcelain", "--", "sdk"], { cwd: ROOT, encoding: "utf8" });
  if (head.status !== 0) return "no git";
  return `git ${head.stdout.trim()}${dirty.stdout.trim() ? " + uncommitted sdk changes" : ""}`;
}
