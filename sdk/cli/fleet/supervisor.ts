/**
 * The fleet supervisor: starts every worker of a fleet as a child process, restarts crashed ones
 * with exponential backoff, forwards SIGTERM/SIGINT and exits once they all stopped.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { closeSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import process from "node:process";
import { fileURLToPath } from "node:url";
import type { ConnectionFlags } from "../args.ts";
import { CliError, EXIT } from "../io.ts";
import { claimPidFile, formatQueueSpecs, processAlive, readPidFile } from "../worker.ts";
import { members, type Fleet, type FleetMember } from "./config.ts";

/** First restart delay after a crash; it doubles up to BACKOFF_MAX_MS. */
export const BACKOFF_MIN_MS = 1_000;
export const BACKOFF_MAX_MS = 60_000;
/** A worker that ran this long before crashing restarts after BACKOFF_MIN_MS again. */
export const BACKOFF_RESET_MS = 60_000;

/** What the supervisor records in `<dir>/state.json` for `celerity workers status`. */
export interface FleetState {
  supervisor: { pid: number; startedAt: number; file: string; connection: ConnectionFlags; stoppedAt?: number };
  workers: Record<string, MemberState>;
}

export interface MemberState {
  pid?: number;
  startedAt?: number;
  restarts: number;
  status: "starting" | "running" | "backoff" | "stopping" | "stopped";
  lastExit?: { code: number | null; signal: string | null; at: number };
  nextStartAt?: number;
}

export const supervisorPidFile = (fleet: Fleet) => join(fleet.dir, "supervisor.pid");
export const supervisorLogFile = (fleet: Fleet) => join(fleet.dir, "supervisor.log");
export const stateFile = (fleet: Fleet) => join(fleet.dir, "state.json");
export const restartRequestFile = (fleet: Fleet) => join(fleet.dir, "restart.json");

/** Reads `<dir>/state.json`, or undefined. */
export function readState(fleet: Fleet): FleetState | undefined {
  try {
    return JSON.parse(readFileSync(stateFile(fleet), "utf8")) as FleetState;
  } catch {
    return undefined;
  }
}

/** The node binary and arguments that run this CLI: `[...execArgv, sdk/cli/run.ts]` from source, bin/celerity.mjs when built. */
export function cliCommand(): string[] {
  const here = import.meta.url;
  const entry = /\.ts$/.test(here) ? fileURLToPath(new URL("../run.ts", here)) : fileURLToPath(new URL("../bin/celerity.mjs", here));
  const execArgv = process.execArgv.filter((a) => !/^--(test|inspect|watch)/.test(a));
  return [...execArgv, entry];
}

/** The connection flags as command-line arguments (a settings path made absolute). */
export function connectionArgs(flags: ConnectionFlags, settingsOverride?: string): string[] {
  const args: string[] = [];
  if (flags.servers !== undefined) args.push("--servers", flags.servers);
  if (flags.namespace !== undefined) args.push("--namespace", flags.namespace);
  const settings = settingsOverride ?? (flags.settings !== undefined && flags.settings !== "" ? resolve(flags.settings) : flags.settings);
  if (settings !== undefined) args.push("--settings", settings);
  return args;
}

/** `celerity worker …` arguments of one member. */
export function workerArgs(m: FleetMember, connection: ConnectionFlags): string[] {
  const g = m.group;
  const args = ["worker", "-A", g.tasks, "--pidfile", m.pidFile, "--logfile", m.logFile];
  if (g.queues !== undefined) args.push("-Q", formatQueueSpecs(g.queues));
  if (g.concurrency !== undefined) args.push("-c", String(g.concurrency));
  if (g.prefetch !== undefined) args.push("--prefetch", String(g.prefetch));
  if (g.pool !== undefined) args.push("--pool", g.pool);
  if (g.maxTasksPerChild !== undefined) args.push("--max-tasks-per-child", String(g.maxTasksPerChild));
  if (g.maxMemoryPerChild !== undefined) args.push("--max-memory-per-child", String(g.maxMemoryPerChild));
  if (g.loglevel !== undefined) args.push("--loglevel", g.loglevel);
  args.push(...connectionArgs(connection, g.settings));
  return args;
}

/**
 * Before starting a fleet: refuses when its supervisor (or a worker without one) is alive, and
 * removes stale PID files left by a supervisor that died.
 */
export function preflight(fleet: Fleet): void {
  const supPid = readPidFile(supervisorPidFile(fleet));
  if (supPid !== undefined && supPid !== process.pid && processAlive(supPid)) {
    throw new CliError(`the fleet of ${fleet.file} is already up: its supervisor is running (pid ${supPid}, ${supervisorPidFile(fleet)}); run \`celerity workers down\` first, or \`celerity workers status\``);
  }
  const orphans = members(fleet).flatMap((m) => {
    const pid = readPidFile(m.pidFile);
    return pid !== undefined && processAlive(pid) ? [`${m.name} (pid ${pid})`] : [];
  });
  if (orphans.length) {
    throw new CliError(`workers of this fleet are still running without a supervisor: ${orphans.join(", ")}; stop them with \`celerity workers down\` first`);
  }
  rmSync(supervisorPidFile(fleet), { force: true });
  for (const m of members(fleet)) rmSync(m.pidFile, { force: true });
  rmSync(restartRequestFile(fleet), { force: true });
}

interface Member {
  m: FleetMember;
  state: MemberState;
  child?: ChildProcess;
  delay: number;
  timer?: ReturnType<typeof setTimeout>;
  /** Restart at once on the next exit (a `workers restart`). */
  restartNow?: boolean;
}

/**
 * Runs the supervisor of `fleet` in this process until SIGTERM/SIGINT stops every worker.
 * Resolves with the exit code.
 */
export async function supervise(fleet: Fleet, connection: ConnectionFlags, log: (line: string) => void): Promise<number> {
  preflight(fleet);
  mkdirSync(fleet.dir, { recursive: true });
  const releasePid = claimPidFile(supervisorPidFile(fleet), "the supervisor PID file");
  const say = (msg: string) => log(`${new Date().toISOString()} supervisor ${msg}`);
  const command = cliCommand();
  const state: FleetState = {
    supervisor: { pid: process.pid, startedAt: Date.now(), file: fleet.file, connection },
    workers: {},
  };
  const all: Member[] = members(fleet).map((m) => ({ m, state: { restarts: 0, status: "starting" }, delay: BACKOFF_MIN_MS }));
  for (const w of all) state.workers[w.m.name] = w.state;
  const save = () => {
    const tmp = `${stateFile(fleet)}.${process.pid}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(state, null, 2)}\n`);
    renameSync(tmp, stateFile(fleet));
  };

  let stopping = false;
  let resolveDone!: (code: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));

  const checkDone = () => {
    if (!stopping || all.some((w) => w.child)) return;
    state.supervisor.stoppedAt = Date.now();
    save();
    say("every worker stopped; exiting");
    resolveDone(EXIT.ok);
  };

  const start = (w: Member) => {
    w.timer = undefined;
    if (stopping) return;
    const fd = openSync(w.m.logFile, "a");
    let child: ChildProcess;
    try {
      child = spawn(process.execPath, [...command, ...workerArgs(w.m, connection)], {
        stdio: ["ignore", fd, fd],
        env: { ...process.env, ...w.m.group.env },
        // Its own process group: a Ctrl-C at the terminal reaches the supervisor only, which
        // forwards one SIGTERM (two signals would mean a cold shutdown).
        detached: true,
      });
    } finally {
      closeSync(fd);
    }
    w.child = child;
    w.state.pid = child.pid;
    w.state.startedAt = Date.now();
    w.state.status = "running";
    delete w.state.nextStartAt;
    save();
    say(`started ${w.m.name} (pid ${child.pid})`);
    child.on("error", (err) => say(`${w.m.name}: ${err.message}`));
    child.on("exit", (code, signal) => {
      w.child = undefined;
      const now = Date.now();
      const uptime = now - (w.state.startedAt ?? now);
      w.state.lastExit = { code, signal, at: now };
      delete w.state.pid;
      // A worker killed hard cannot remove its PID file: the supervisor does.
      if (readPidFile(w.m.pidFile) === child.pid) rmSync(w.m.pidFile, { force: true });
      if (stopping) {
        w.state.status = "stopped";
        say(`${w.m.name} (pid ${child.pid}) stopped (${signal ?? `exit ${code}`})`);
        save();
        checkDone();
        return;
      }
      if (w.restartNow) {
        w.restartNow = false;
        w.delay = BACKOFF_MIN_MS;
        say(`${w.m.name} (pid ${child.pid}) stopped for a restart`);
        start(w);
        return;
      }
      if (uptime >= BACKOFF_RESET_MS) w.delay = BACKOFF_MIN_MS;
      const delay = w.delay;
      w.delay = Math.min(w.delay * 2, BACKOFF_MAX_MS);
      w.state.restarts++;
      w.state.status = "backoff";
      w.state.nextStartAt = now + delay;
      save();
      say(`${w.m.name} (pid ${child.pid}) exited (${signal ?? `exit ${code}`}) after ${Math.round(uptime / 1000)} s; restarting in ${delay / 1000} s`);
      w.timer = setTimeout(() => start(w), delay);
    });
  };

  let signals = 0;
  const onStop = (signal: NodeJS.Signals) => {
    signals++;
    stopping = true;
    say(`${signal}: stopping ${all.filter((w) => w.child).length} worker(s)${signals > 1 ? " (again: cold shutdown)" : ""}`);
    for (const w of all) {
      if (w.timer) clearTimeout(w.timer);
      w.timer = undefined;
      if (w.child) {
        w.state.status = "stopping";
        w.child.kill("SIGTERM");
      } else w.state.status = "stopped";
    }
    save();
    checkDone();
  };
  const onRestart = () => {
    let groups: string[] | null = null;
    try {
      groups = (JSON.parse(readFileSync(restartRequestFile(fleet), "utf8")) as { groups?: string[] | null }).groups ?? null;
    } catch {
      groups = null;
    }
    rmSync(restartRequestFile(fleet), { force: true });
    if (stopping) return;
    const targets = all.filter((w) => groups === null || groups.includes(w.m.group.name));
    say(`SIGHUP: restarting ${targets.map((w) => w.m.name).join(", ")}`);
    for (const w of targets) {
      if (w.child) {
        w.restartNow = true;
        w.state.status = "stopping";
        w.child.kill("SIGTERM");
      } else {
        if (w.timer) clearTimeout(w.timer);
        w.delay = BACKOFF_MIN_MS;
        start(w);
      }
    }
    save();
  };
  process.on("SIGTERM", onStop);
  process.on("SIGINT", onStop);
  process.on("SIGHUP", onRestart);
  try {
    say(`pid ${process.pid}: starting ${all.length} worker(s) of ${fleet.file}`);
    for (const w of all) start(w);
    return await done;
  } finally {
    process.off("SIGTERM", onStop);
    process.off("SIGINT", onStop);
    process.off("SIGHUP", onRestart);
    releasePid();
  }
}
