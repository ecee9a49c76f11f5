/**
 * Shared pieces of the benchmark: argument parsing, JSON-line records in the peers' format
 * (../shared/peers/README.md), the namespace reset, worker processes and the esbuild step that
 * turns the worker, the one-shot script and this benchmark itself into plain JavaScript (so tsx
 * is never inside a measured process).
 */
import { spawn, type ChildProcess } from "node:child_process";
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync, unlinkSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath, pathToFileURL } from "node:url";
import type { Client } from "../../sdk/client/mod.ts";

/** The repository root: scripts/bench/ is two levels down, and so is .bench/build/, where this runs bundled. */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
/** Generated JavaScript (worker, one-shot bundles) lives here; .bench/ is git-ignored. */
export const BUILD_DIR = join(ROOT, ".bench", "build");
/** The peers' directory (lib/proc.js, lib/report.js), if this checkout sits beside it. */
export const PEERS_DIR = resolve(process.env.PEERS_DIR ?? join(ROOT, "..", "shared", "peers"));

/** The task every workload runs: a no-op returning its input `{i: n}`. */
export const TASK = "bench.noop";
/** The namespace the benchmark owns (the server is private to the run). */
export const NAMESPACE = "celerity";

/** Workload names exactly as in the peers README, so lib/report.js puts rows side by side. */
export const WORKLOAD = {
  enqueue: "a. enqueue",
  drain: "b. drain (1 worker process)",
  latency: "c. round-trip latency",
  coldstart: "d. cold start (whole process)",
  idlemem: "e. worker idle memory",
  raw: "f. reference: raw nats.js, no Celerity",
  phases: "g. diagnostic: one-shot process phases",
} as const;

/** Enqueue modes and their row labels. */
export const ENQUEUE_VARIANT = {
  seq: "send() loop, sequential await",
  p100: "send(), 100 in flight",
  p1000: "send(), 1000 in flight",
} as const;
export type EnqueueMode = keyof typeof ENQUEUE_VARIANT;

/** `--key value` pairs after the subcommand (a bare `--flag` is "1"). */
export type Args = Record<string, string>;

export function parseArgs(argv: string[]): { sub: string | undefined; args: Args } {
  const [sub, ...rest] = argv;
  const args: Args = {};
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (!a.startsWith("--")) throw new Error(`unexpected argument ${JSON.stringify(a)} (flags are --key value)`);
    const next = rest[i + 1];
    if (next === undefined || next.startsWith("--")) args[a.slice(2)] = "1";
    else {
      args[a.slice(2)] = next;
      i++;
    }
  }
  return { sub, args };
}

export function num(args: Args, key: string, fallback: number): number {
  const raw = args[key] ?? process.env[key.toUpperCase().replace(/-/g, "_")];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new Error(`--${key} must be a number, got ${JSON.stringify(raw)}`);
  return n;
}

/** The NATS URL: --servers, else CELERITY_SERVERS / NATS_URL. Never a default: the run owns its server. */
export function serversOf(args: Args): string {
  const s = args.servers ?? process.env.CELERITY_SERVERS ?? process.env.NATS_URL;
  if (!s) throw new Error("--servers nats://127.0.0.1:PORT is required (the benchmark never uses a default server)");
  return s;
}

/** Logs to stderr (stdout carries only JSON records). */
export function log(message: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 23)}] ${message}\n`);
}

/** One measurement record (the peers' format); `peer` and `setup` are filled in by {@link emit}. */
export interface BenchRecord {
  peer?: string;
  setup?: string;
  workload: string;
  variant: string;
  rep?: number;
  metric: string;
  value: number;
  unit: string;
  n?: number;
  [extra: string]: unknown;
}

/** The setup label: `--setup`, else derived from the server's version. */
export function setupLabel(args: Args, version?: string, storage = "file"): string {
  return args.setup ?? `NATS JetStream ${version ?? "?"}, ${storage} storage`;
}

/** Prints one record; `load1` (the 1-minute load average) says how busy the machine was. */
export function emit(rec: BenchRecord): void {
  process.stdout.write(JSON.stringify({ peer: "celerity", ...rec, load1: round(loadavg()[0]!, 2) }) + "\n");
}

export function round(x: number, digits: number): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Nearest-rank percentile of an ascending array. */
export function percentile(sorted: number[], p: number): number {
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)]!;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * A client with the benchmark's settings (defaults otherwise, as an application would run), from
 * dist/client.js: what `import "celerity"` loads, not the TypeScript sources, so the measured code
 * is the shipped code, as the peers measure BullMQ's published build.
 */
export async function benchClient(servers: string, extra: { events?: boolean; name?: string } = {}): Promise<Client> {
  const { connect } = (await import(pathToFileURL(join(ROOT, "dist", "client.js")).href)) as typeof import("../../sdk/client/mod.ts");
  return connect({ servers, namespace: NAMESPACE, name: extra.name ?? "bench", ...(extra.events === undefined ? {} : { events: extra.events }) });
}

/**
 * Deletes every stream of the namespace (any stream whose subjects all lie under `<ns>.` or
 * `$KV.<ns>_`, so streams of older or newer topologies go too) and creates the topology again:
 * an empty broker and an empty result store.
 */
export async function resetNamespace(client: Client): Promise<void> {
  const jsm = await client.jsm();
  const ns = client.names.namespace;
  const ours = (subject: string) => subject.startsWith(`${ns}.`) || subject.startsWith(`$KV.${ns}_`);
  const doomed: string[] = [];
  for await (const info of jsm.streams.list()) {
    const subjects = info.config.subjects ?? [];
    if (subjects.length > 0 && subjects.every(ours)) doomed.push(info.config.name);
  }
  for (const name of doomed) {
    try {
      await jsm.streams.delete(name);
    } catch (err) {
      if (!/not found|404/i.test((err as Error).message)) throw err;
    }
  }
  await client.ensureTopology(true);
}

/** Messages in a stream (0 when it does not exist). */
export async function streamCount(client: Client, stream: string): Promise<number> {
  const jsm = await client.jsm();
  try {
    return (await jsm.streams.info(stream)).state.messages;
  } catch (err) {
    if (/not found|404/i.test((err as Error).message)) return 0;
    throw err;
  }
}

// ---- generated JavaScript ---------------------------------------------------------------------

/** The worker process: scripts/bench/worker.ts bundled (packages external) to plain ESM. */
export const WORKER_JS = join(BUILD_DIR, "worker.mjs");
/**
 * scripts/bench.ts itself as plain JavaScript: `npm run bench` runs every measuring step with it,
 * because the tsx loader slows down even code it did not compile (the same 20,000 sends from
 * dist/client.js: ~32 µs of client CPU each under `--import tsx`, ~23 without; docs/benchmarks.md).
 */
export const BENCH_JS = join(BUILD_DIR, "bench.mjs");
/** The one-shot script importing dist/client.js: committed as plain JS, run as is. */
export const ONESHOT_DIST = join(ROOT, "scripts", "bench", "oneshot.mjs");
/** A raw nats.js worker (no Celerity), for the reference figures. */
export const RAW_WORKER = join(ROOT, "scripts", "bench", "raw-worker.mjs");

/** The createRequire banner ESM bundles need for the CommonJS parts of their dependencies. */
const ESM_REQUIRE_BANNER = "import{createRequire as __cr}from'module';const require=__cr(import.meta.url);";

/**
 * The one-shot script bundled into one file. `inProject` sits in .bench/build, where msgpackr's
 * optional native addon (msgpackr-extract) is still found through node_modules; `shipped` is the
 * same file copied outside the project, as a shipped callback runs: the addon's require finds
 * nothing and msgpackr uses its JavaScript decoder. `noYaml` (diagnostic, shipped alone) replaces
 * the yaml package by a stub, to measure what loading it costs a one-shot process. `raw` is
 * scripts/bench/oneshot-raw.mjs (the same job on nats.js alone) bundled the same way: the floor.
 * `callback` is the real HPC callback (`respond.cjs`, built by scripts/bundle-callback.mjs, which
 * leaves out yaml, tweetnacl and the native addon); its `send` command is the same one-off job.
 */
export function oneshotBundlePaths(): { inProject: string; shipped: string; noYaml: string; raw: string; callback: string } {
  const away = join(tmpdir(), "celerity-bench-oneshot");
  return {
    inProject: join(BUILD_DIR, "oneshot.bundle.mjs"),
    shipped: join(away, "oneshot.bundle.mjs"),
    noYaml: join(away, "oneshot.no-yaml.mjs"),
    raw: join(away, "oneshot-raw.bundle.mjs"),
    callback: join(away, "respond.cjs"),
  };
}

/** The project's own HPC callback bundler (docs/hpc-callback.md), when this checkout has it. */
export const CALLBACK_BUNDLER = join(ROOT, "scripts", "bundle-callback.mjs");

type EsbuildPlugin = import("esbuild").Plugin;

/** Resolves the one-shot's `../../dist/client.js` to the sources, as the callback bundle is built. */
const fromSources: EsbuildPlugin = {
  name: "dist-client-to-sources",
  setup(pb) {
    pb.onResolve({ filter: /\/dist\/client\.js$/ }, () => ({ path: join(ROOT, "sdk", "client", "mod.ts") }));
  },
};

/** Replaces the yaml package by a stub that throws when a YAML settings file is parsed. */
const noYaml: EsbuildPlugin = {
  name: "no-yaml",
  setup(pb) {
    pb.onResolve({ filter: /^yaml$/ }, () => ({ path: "yaml", namespace: "stub" }));
    pb.onLoad({ filter: /.*/, namespace: "stub" }, () => ({
      contents: "export class YAMLParseError extends Error {}\nexport function parse() { throw new Error('yaml left out of this bundle'); }\n",
      loader: "js",
    }));
  },
};

/**
 * Builds dist/ when it is missing, then the worker and the one-shot bundles. `force` rebuilds
 * even when the outputs exist (npm run bench always does; a lone subcommand builds only what is missing).
 */
export async function ensureBuilt(force = false): Promise<void> {
  const { build } = await import("esbuild");
  if (force || !existsSync(join(ROOT, "dist", "client.js"))) {
    await runNode([join(ROOT, "scripts", "build.mjs")], { cwd: ROOT });
  }
  mkdirSync(BUILD_DIR, { recursive: true });
  const b = oneshotBundlePaths();
  const common = { bundle: true, format: "esm", platform: "node", target: "node20", logLevel: "warning" } as const;
  if (force || !existsSync(WORKER_JS)) {
    await build({ ...common, entryPoints: [join(ROOT, "scripts", "bench", "worker.ts")], outfile: WORKER_JS, packages: "external" });
  }
  if (force || !existsSync(BENCH_JS)) {
    await build({ ...common, entryPoints: [join(ROOT, "scripts", "bench.ts")], outfile: BENCH_JS, packages: "external", banner: { js: ESM_REQUIRE_BANNER } });
  }
  if (force || !existsSync(b.inProject) || !existsSync(b.shipped) || !existsSync(b.noYaml) || !existsSync(b.raw)) {
    // Everything inlined except msgpackr's optional native addon, which stays a runtime require
    // (a .node file cannot be inlined); msgpackr falls back to JavaScript when it is not found.
    const oneshot = { ...common, entryPoints: [ONESHOT_DIST], minify: true, external: ["msgpackr-extract"], banner: { js: ESM_REQUIRE_BANNER } };
    await build({ ...oneshot, outfile: b.inProject, plugins: [fromSources] });
    mkdirSync(dirname(b.shipped), { recursive: true });
    copyFileSync(b.inProject, b.shipped);
    await build({ ...oneshot, outfile: b.noYaml, plugins: [fromSources, noYaml] });
    await build({ ...oneshot, entryPoints: [join(ROOT, "scripts", "bench", "oneshot-raw.mjs")], outfile: b.raw });
  }
  if ((force || !existsSync(b.callback)) && existsSync(CALLBACK_BUNDLER)) {
    // Another part of the project: if it fails to build, the callback variant is skipped, not the run.
    await runNode([CALLBACK_BUNDLER, "-o", b.callback], { cwd: ROOT }).catch((err) => {
      log(`the HPC callback bundle did not build (${(err as Error).message}); its cold-start variant is skipped`);
      removeQuietly(b.callback);
    });
  }
}

/** Size of a file in KB, for the logs. */
export function sizeKb(path: string): number {
  return round(statSync(path).size / 1024, 0);
}

export function runNode(argv: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<void> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, argv, { stdio: ["ignore", "inherit", "inherit"], cwd: opts.cwd, env: opts.env ?? process.env });
    child.on("error", reject);
    child.on("exit", (code, signal) => (code === 0 ? resolveRun() : reject(new Error(`node ${argv.join(" ")} exited ${code ?? signal}`))));
  });
}

// ---- worker processes -------------------------------------------------------------------------

export interface WorkerProcessOptions {
  servers: string;
  concurrency: number;
  prefetch?: number;
  events?: boolean;
  readyFile?: string;
  /** Which worker: Celerity's (default) or the raw nats.js one. */
  script?: string;
  extraArgs?: string[];
}

/** Starts a worker in its own process group (stopped by its id). stdout goes to our stderr. */
export function startWorker(o: WorkerProcessOptions): ChildProcess {
  const env: NodeJS.ProcessEnv = { ...process.env };
  if (o.readyFile) env.BENCH_READY_FILE = o.readyFile;
  else delete env.BENCH_READY_FILE;
  const argv = [o.script ?? WORKER_JS, "--servers", o.servers, "--concurrency", String(o.concurrency)];
  if (o.prefetch !== undefined) argv.push("--prefetch", String(o.prefetch));
  if (o.events !== undefined) argv.push("--events", o.events ? "1" : "0");
  argv.push(...(o.extraArgs ?? []));
  return spawn(process.execPath, argv, { stdio: ["ignore", process.stderr, "inherit"], detached: true, env });
}

/** SIGTERM to the group we started, SIGKILL after 10 s. */
export async function stopGroup(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once("exit", r));
  try {
    process.kill(-child.pid!, "SIGTERM");
  } catch {
    /* gone */
  }
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise((r) => (timer = setTimeout(() => r("timeout"), 10_000)));
  if ((await Promise.race([exited, timeout])) === "timeout") {
    try {
      process.kill(-child.pid!, "SIGKILL");
    } catch {
      /* gone */
    }
    await exited;
  }
  clearTimeout(timer);
}

/** Waits until `file` exists (the worker writes it once consuming). */
export async function waitFile(file: string, child: ChildProcess, ms = 60_000): Promise<void> {
  const t0 = Date.now();
  while (!existsSync(file)) {
    if (child.exitCode !== null) throw new Error(`worker exited early (${child.exitCode})`);
    if (Date.now() - t0 > ms) throw new Error(`worker not ready after ${ms} ms`);
    await sleep(5);
  }
}

export function tempFile(name: string): string {
  return join(mkdtempSync(join(tmpdir(), "celerity-bench-")), name);
}

export function removeQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    /* absent */
  }
}

/** JSON records found in a JSON-lines file. */
export function readRecords(file: string): BenchRecord[] {
  const out: BenchRecord[] = [];
  for (const line of readFileSync(file, "utf8").split("\n")) {
    if (!line.trim()) continue;
    try {
      const r = JSON.parse(line) as BenchRecord & { type?: string };
      if (r.type !== "meta" && typeof r.value === "number") out.push(r);
    } catch {
      /* not a record */
    }
  }
  return out;
}

// ---- CPU accounting ----------------------------------------------------------------------------

/** CPU time (user + system, ms) a process has used so far, from /proc/<pid>/stat; undefined if unreadable. */
export function processCpuMs(pid: number | undefined): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    // Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command; clock ticks of 10 ms.
    return (Number(f[11]) + Number(f[12])) * 10;
  } catch {
    return undefined;
  }
}

/** This process's CPU time in ms (microsecond precision). */
export function ownCpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** µs of CPU per task between two readings, rounded; undefined when a reading is missing. */
export function cpuPerTask(before: number | undefined, after: number | undefined, tasks: number): number | undefined {
  return before === undefined || after === undefined ? undefined : round(((after - before) * 1000) / tasks, 1);
}
