/**
 * Runs ../shared/peers/lib/proc.js (coldstart, idlemem) when it is there, so Celerity is measured by
 * the very code that measured the peers; otherwise a local copy of the same two procedures.
 * Either way the records go to our stdout.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import process from "node:process";
import { emit, log, PEERS_DIR, removeQuietly, round, sleep, stopGroup, type BenchRecord } from "./common.ts";

export interface ProcLabels {
  peer: string;
  setup: string;
  workload: string;
  variant: string;
  rep?: number;
}

/** Path of the peers' proc.js (--proc, else PEERS_DIR/lib/proc.js), or undefined when absent. */
export function procJs(explicit?: string): string | undefined {
  const p = explicit ?? join(PEERS_DIR, "lib", "proc.js");
  return existsSync(p) ? p : undefined;
}

function labelArgs(l: ProcLabels): string[] {
  const a = ["--peer", l.peer, "--setup", l.setup, "--workload", l.workload, "--variant", l.variant];
  if (l.rep !== undefined) a.push("--rep", String(l.rep));
  return a;
}

/** Runs proc.js, forwarding its JSON lines to stdout; returns them too. */
function runProcJs(proc: string, sub: string, flags: string[], cmd: string[], env: NodeJS.ProcessEnv): Promise<BenchRecord[]> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [proc, sub, ...flags, "--", ...cmd], { stdio: ["ignore", "pipe", "inherit"], env });
    let out = "";
    child.stdout.setEncoding("utf8");
    child.stdout.on("data", (chunk: string) => {
      out += chunk;
      process.stdout.write(chunk);
    });
    child.on("error", reject);
    child.on("exit", (code) => {
      if (code !== 0) return reject(new Error(`proc.js ${sub} exited ${code}`));
      resolve(out.split("\n").filter((l) => l.trim()).map((l) => JSON.parse(l) as BenchRecord));
    });
  });
}

/** Whole-process wall time of `cmd`, `runs` times after `warmup` untimed runs (unit ms). */
export async function coldstart(o: { proc?: string; runs: number; warmup: number; labels: ProcLabels; cmd: string[]; env: NodeJS.ProcessEnv }): Promise<BenchRecord[]> {
  const proc = procJs(o.proc);
  if (proc) return runProcJs(proc, "coldstart", ["--runs", String(o.runs), "--warmup", String(o.warmup), ...labelArgs(o.labels)], o.cmd, o.env);
  log("coldstart: ../shared/peers/lib/proc.js not found, using the local copy of its procedure");
  const out: BenchRecord[] = [];
  for (let i = 0; i < o.warmup + o.runs; i++) {
    const t0 = process.hrtime.bigint();
    const r = spawnSync(o.cmd[0]!, o.cmd.slice(1), { stdio: ["ignore", "ignore", "pipe"], env: o.env });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (r.status !== 0) throw new Error(`coldstart: ${o.cmd.join(" ")} exited ${r.status} ${r.signal ?? ""}\n${r.stderr}`);
    if (i >= o.warmup) {
      const rec = { ...o.labels, rep: i - o.warmup + 1, metric: "wall", value: round(ms, 1), unit: "ms" };
      emit(rec);
      out.push(rec);
    }
  }
  return out;
}

/** RSS and PSS of the worker's process tree, `settle` s after it wrote its ready file. */
export async function idlemem(o: { proc?: string; readyFile: string; settle: number; labels: ProcLabels; cmd: string[]; env: NodeJS.ProcessEnv }): Promise<BenchRecord[]> {
  const proc = procJs(o.proc);
  if (proc) return runProcJs(proc, "idlemem", ["--ready-file", o.readyFile, "--settle", String(o.settle), ...labelArgs(o.labels)], o.cmd, o.env);
  log("idlemem: ../shared/peers/lib/proc.js not found, using the local copy of its procedure");
  removeQuietly(o.readyFile);
  const child = spawn(o.cmd[0]!, o.cmd.slice(1), { stdio: ["ignore", "ignore", "inherit"], detached: true, env: { ...o.env, BENCH_READY_FILE: o.readyFile } });
  const t0 = Date.now();
  try {
    while (!existsSync(o.readyFile)) {
      if (child.exitCode !== null) throw new Error(`idlemem: worker exited early (${child.exitCode})`);
      if (Date.now() - t0 > 60_000) throw new Error("idlemem: worker not ready after 60 s");
      await sleep(20);
    }
    const readyMs = Date.now() - t0;
    await sleep(o.settle * 1000);
    const pids = tree(child.pid!);
    let rss = 0;
    let pss = 0;
    for (const p of pids) {
      const m = memOf(p);
      rss += m.rss;
      pss += m.pss;
    }
    const a = { ...o.labels, metric: "rss", value: round(rss / 1024, 1), unit: "MB", processes: pids.length, ready_ms: readyMs };
    const b = { ...o.labels, metric: "pss", value: round(pss / 1024, 1), unit: "MB", processes: pids.length };
    emit(a);
    emit(b);
    return [a, b];
  } finally {
    await stopGroup(child);
  }
}

function tree(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length; i++) {
    for (const d of readdirSync("/proc")) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const stat = readFileSync(`/proc/${d}/stat`, "utf8");
        if (Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]) === all[i]) all.push(Number(d));
      } catch {
        /* vanished */
      }
    }
  }
  return all;
}

function memOf(pid: number): { rss: number; pss: number } {
  const read = (f: string, re: RegExp) => {
    try {
      return Number(readFileSync(f, "utf8").match(re)?.[1] ?? 0);
    } catch {
      return 0;
    }
  };
  return { rss: read(`/proc/${pid}/status`, /^VmRSS:\s+(\d+) kB/m), pss: read(`/proc/${pid}/smaps_rollup`, /^Pss:\s+(\d+) kB/m) };
}
