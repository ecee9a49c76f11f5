/**
 * `celerity workers up|down|status|restart|logs`: a fleet of worker processes from a YAML file
 * (groups of workers per queue, each with a PID file and a log file), kept up by a supervisor.
 */
import { spawn } from "node:child_process";
import { closeSync, existsSync, mkdirSync, openSync, readSync, rmSync, statSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import process from "node:process";
import { CONNECTION_HELP, intOption, parseCommand, type ConnectionFlags } from "./args.ts";
import { openClient } from "./connection.ts";
import { CliError, EXIT, UsageError, type Command, type Io } from "./io.ts";
import { processAlive, readPidFile } from "./worker.ts";
import { DEFAULT_FLEET_FILE, loadFleet, members, type Fleet, type FleetMember } from "./fleet/config.ts";
import {
  cliCommand, connectionArgs, preflight, readState, restartRequestFile, stateFile, supervise, supervisorLogFile, supervisorPidFile,
} from "./fleet/supervisor.ts";

export { checkFleet, loadFleet, type Fleet, type FleetGroup } from "./fleet/config.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean, timeoutMs: number, stillRunning?: () => boolean): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (check()) return true;
    if (stillRunning && !stillRunning()) return check();
    await sleep(100);
  }
  return check();
}

function duration(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${s % 60}s`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m`;
}

/** The last `lines` lines of a file (reads at most the last 1 MiB). */
function tail(path: string, lines: number): string {
  if (!existsSync(path)) return "";
  const size = statSync(path).size;
  const len = Math.min(size, 1024 * 1024);
  const buf = Buffer.alloc(len);
  const fd = openSync(path, "r");
  try {
    readSync(fd, buf, 0, len, size - len);
  } finally {
    closeSync(fd);
  }
  const all = buf.toString("utf8").split("\n");
  if (all.at(-1) === "") all.pop();
  return all.slice(-lines).join("\n");
}

function connectionOf(values: ConnectionFlags): ConnectionFlags {
  const c: ConnectionFlags = {};
  if (values.servers !== undefined) c.servers = values.servers;
  if (values.namespace !== undefined) c.namespace = values.namespace;
  if (values.settings !== undefined) c.settings = values.settings;
  return c;
}

/** Live pids of the members, by name. */
function livePids(fleet: Fleet): Map<string, number> {
  const out = new Map<string, number>();
  for (const m of members(fleet)) {
    const pid = readPidFile(m.pidFile);
    if (pid !== undefined && processAlive(pid)) out.set(m.name, pid);
  }
  return out;
}

async function up(fleet: Fleet, connection: ConnectionFlags, detach: boolean, timeoutMs: number, io: Io): Promise<number> {
  if (!detach) return supervise(fleet, connection, io.err);
  preflight(fleet);
  mkdirSync(fleet.dir, { recursive: true });
  const logPath = supervisorLogFile(fleet);
  const fd = openSync(logPath, "a");
  const started = Date.now();
  const child = spawn(process.execPath, [...cliCommand(), "workers", "up", "-c", fleet.file, ...connectionArgs(connection)], {
    detached: true,
    stdio: ["ignore", fd, fd],
    env: process.env,
  });
  closeSync(fd);
  let exited: string | undefined;
  child.on("exit", (code, signal) => (exited = signal ?? `exit ${code}`));
  const all = members(fleet);
  const ready = () => readPidFile(supervisorPidFile(fleet)) === child.pid && livePids(fleet).size === all.length;
  const ok = await until(ready, timeoutMs, () => exited === undefined);
  child.unref();
  if (!ok) {
    const why = exited ? `the supervisor exited (${exited})` : `not every worker wrote its PID file within ${Math.round(timeoutMs / 1000)} s`;
    throw new CliError(`workers up --detach: ${why}; see ${logPath}:\n${tail(logPath, 15)}`);
  }
  const pids = livePids(fleet);
  io.out(`supervisor  pid ${child.pid}  (${logPath})`);
  for (const m of all) io.out(`${m.name.padEnd(12)}pid ${pids.get(m.name)}  (${m.logFile})`);
  io.err(`fleet up in ${((Date.now() - started) / 1000).toFixed(1)} s: ${all.length} worker(s); \`celerity workers status -c ${fleet.file}\` shows them`);
  return EXIT.ok;
}

async function down(fleet: Fleet, timeoutMs: number, io: Io): Promise<number> {
  const supPid = readPidFile(supervisorPidFile(fleet));
  const workers = livePids(fleet);
  if (supPid !== undefined && processAlive(supPid)) {
    process.kill(supPid, "SIGTERM");
    const gone = await until(() => !processAlive(supPid), timeoutMs);
    if (!gone) throw new CliError(`the supervisor (pid ${supPid}) is still running after ${Math.round(timeoutMs / 1000)} s; workers still up: ${[...livePids(fleet).keys()].join(", ") || "none"}`);
    io.out(`stopped the supervisor (pid ${supPid}) and ${workers.size} worker(s)`);
  } else if (workers.size > 0) {
    for (const pid of workers.values()) {
      try {
        process.kill(pid, "SIGTERM");
      } catch {
        // gone already
      }
    }
    const gone = await until(() => [...workers.values()].every((p) => !processAlive(p)), timeoutMs);
    if (!gone) throw new CliError(`workers still running after ${Math.round(timeoutMs / 1000)} s: ${[...livePids(fleet).keys()].join(", ")}`);
    io.out(`no supervisor; stopped ${workers.size} worker(s): ${[...workers.keys()].join(", ")}`);
  } else {
    io.out("nothing is running");
  }
  rmSync(supervisorPidFile(fleet), { force: true });
  for (const m of members(fleet)) rmSync(m.pidFile, { force: true });
  return EXIT.ok;
}

interface StatusRow {
  name: string;
  group: string;
  index: number;
  pid: number | null;
  alive: boolean;
  uptimeMs: number | null;
  restarts: number;
  status: string;
  registry?: { active: number; processed: number; failed: number; queues: string[] } | null;
}

async function status(fleet: Fleet, flags: ConnectionFlags, json: boolean, io: Io): Promise<number> {
  const state = readState(fleet);
  const supPid = readPidFile(supervisorPidFile(fleet));
  const supAlive = supPid !== undefined && processAlive(supPid);
  const now = Date.now();
  const rows: StatusRow[] = members(fleet).map((m: FleetMember) => {
    const pid = readPidFile(m.pidFile) ?? null;
    const alive = pid !== null && processAlive(pid);
    const s = state?.workers[m.name];
    const fromState = s && s.pid === pid && s.startedAt !== undefined;
    return {
      name: m.name, group: m.group.name, index: m.index, pid, alive,
      uptimeMs: alive ? (fromState ? now - s.startedAt! : statSync(m.pidFile).mtimeMs ? now - statSync(m.pidFile).mtimeMs : null) : null,
      restarts: s?.restarts ?? 0,
      status: alive ? "alive" : supAlive && s?.status === "backoff" ? "restarting" : "dead",
    };
  });
  let registryNote = "";
  if (rows.some((r) => r.alive)) {
    const connection = { ...(state?.supervisor.connection ?? {}), ...connectionOf(flags) };
    try {
      const client = await openClient(connection);
      try {
        const entries = await client.workers();
        const host = hostname();
        for (const r of rows) {
          const e = entries.find((w) => w.pid === r.pid && w.host === host) ?? entries.find((w) => w.pid === r.pid);
          r.registry = e ? { active: e.active, processed: e.processed, failed: e.failed, queues: Object.keys(e.queues) } : null;
        }
      } finally {
        await client.close();
      }
    } catch (err) {
      registryNote = `registry: unavailable (${err instanceof Error ? err.message : String(err)})`;
    }
  }
  const allAlive = supAlive && rows.every((r) => r.alive);
  if (json) {
    io.out(JSON.stringify({
      file: fleet.file, dir: fleet.dir,
      supervisor: { pid: supPid ?? null, alive: supAlive, uptimeMs: supAlive && state ? now - state.supervisor.startedAt : null },
      workers: rows, ...(registryNote ? { registryError: registryNote } : {}),
    }, null, 2));
    return allAlive ? EXIT.ok : EXIT.failed;
  }
  io.out(`supervisor  ${supAlive ? `pid ${supPid}  alive  up ${state ? duration(now - state.supervisor.startedAt) : "?"}` : supPid ? `pid ${supPid}  dead (stale PID file)` : "not running"}`);
  const header = ["worker", "pid", "state", "uptime", "restarts", "active", "processed", "queues"];
  const table = rows.map((r) => [
    r.name, r.pid === null ? "-" : String(r.pid), r.status, r.uptimeMs === null ? "-" : duration(r.uptimeMs), String(r.restarts),
    r.registry ? String(r.registry.active) : r.registry === null ? "?" : "-",
    r.registry ? String(r.registry.processed) : r.registry === null ? "?" : "-",
    r.registry ? r.registry.queues.join(",") : r.registry === null ? "(not in the registry yet)" : "-",
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  for (const row of [header, ...table]) io.out(row.map((c, i) => (i === row.length - 1 ? c : c.padEnd(widths[i]!))).join("  ").trimEnd());
  if (registryNote) io.err(registryNote);
  return allAlive ? EXIT.ok : EXIT.failed;
}

async function restart(fleet: Fleet, group: string | undefined, timeoutMs: number, io: Io): Promise<number> {
  if (group !== undefined && !fleet.groups.some((g) => g.name === group)) {
    throw new UsageError(`no group ${JSON.stringify(group)} in ${fleet.file} (groups: ${fleet.groups.map((g) => g.name).join(", ")})`);
  }
  const supPid = readPidFile(supervisorPidFile(fleet));
  if (supPid === undefined || !processAlive(supPid)) throw new CliError(`the fleet of ${fleet.file} is not up (no live supervisor): start it with \`celerity workers up\``);
  const targets = members(fleet).filter((m) => group === undefined || m.group.name === group);
  const before = livePids(fleet);
  writeFileSync(restartRequestFile(fleet), JSON.stringify({ groups: group === undefined ? null : [group] }));
  process.kill(supPid, "SIGHUP");
  const restarted = () => {
    const now = livePids(fleet);
    return targets.every((m) => now.has(m.name) && now.get(m.name) !== before.get(m.name));
  };
  if (!(await until(restarted, timeoutMs))) throw new CliError(`not every worker restarted within ${Math.round(timeoutMs / 1000)} s; see \`celerity workers status\``);
  const now = livePids(fleet);
  for (const m of targets) io.out(`${m.name.padEnd(12)}pid ${before.get(m.name) ?? "-"} -> ${now.get(m.name)}`);
  return EXIT.ok;
}

async function logs(fleet: Fleet, target: string | undefined, lines: number, follow: boolean, io: Io): Promise<number> {
  if (target === undefined) throw new UsageError("missing <group>[.<index>]: which worker's log to show");
  const [groupName, index] = target.split(".");
  const chosen = members(fleet).filter((m) => m.group.name === groupName && (index === undefined || String(m.index) === index));
  if (chosen.length === 0) {
    throw new UsageError(`no worker ${JSON.stringify(target)} in ${fleet.file} (workers: ${members(fleet).map((m) => m.name).join(", ")})`);
  }
  const many = chosen.length > 1;
  const offsets = new Map<string, number>();
  for (const m of chosen) {
    if (many) io.out(`==> ${m.logFile} <==`);
    const text = tail(m.logFile, lines);
    if (text) io.out(text);
    offsets.set(m.name, existsSync(m.logFile) ? statSync(m.logFile).size : 0);
  }
  if (!follow) return EXIT.ok;
  let stop = false;
  const onSignal = () => (stop = true);
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  const partial = new Map<string, string>();
  try {
    while (!stop) {
      for (const m of chosen) {
        const size = existsSync(m.logFile) ? statSync(m.logFile).size : 0;
        let from = offsets.get(m.name)!;
        if (size < from) from = 0; // truncated or replaced
        if (size === from) continue;
        const buf = Buffer.alloc(size - from);
        const fd = openSync(m.logFile, "r");
        try {
          readSync(fd, buf, 0, buf.length, from);
        } finally {
          closeSync(fd);
        }
        offsets.set(m.name, size);
        const text = (partial.get(m.name) ?? "") + buf.toString("utf8");
        const parts = text.split("\n");
        partial.set(m.name, parts.pop()!);
        for (const line of parts) io.out(many ? `[${m.name}] ${line}` : line);
      }
      await sleep(200);
    }
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  }
  return EXIT.ok;
}

export const workersCommand: Command = {
  name: "workers",
  summary: "run a fleet of workers from a YAML file: up, down, status, restart, logs",
  usage: `Usage: celerity workers up [-c <fleet.yaml>] [--detach]
       celerity workers down [-c <fleet.yaml>] [--timeout <s>]
       celerity workers status [-c <fleet.yaml>] [--json]
       celerity workers restart [<group>] [-c <fleet.yaml>]
       celerity workers logs <group>[.<index>] [-c <fleet.yaml>] [-n <lines>] [-f]

Runs groups of \`celerity worker\` processes described by a fleet file (docs/fleet.md):

  dir: .celerity/fleet            # PID, log and state files (relative to the fleet file)
  groups:
    openmp:
      tasks: tasks/worker.ts      # the tasks module (relative to the fleet file)
      queues: { openmp: { concurrency: 1 } }
      count: 1
    general:
      tasks: tasks/worker.ts
      queues: [default, images]
      count: 2
      concurrency: 4

Worker <group>.<i> (i from 1) writes <dir>/<group>.<i>.pid and appends to <dir>/<group>.<i>.log.

  up       starts the supervisor (in the foreground; --detach: in the background, returning once
           every worker wrote its PID file). It restarts a crashed worker after 1 s, doubling up
           to 60 s (reset after 60 s of uptime), and on SIGTERM/SIGINT stops every worker
           gracefully and exits. Refuses when the fleet is already up; recovers from stale files.
  down     SIGTERM to the supervisor (or, without one, to each worker) and waits for them to exit
  status   pid, alive/dead, uptime and restarts of each worker, and what the registry says
           (active, processed); exits 1 unless the supervisor and every worker are alive
  restart  restarts the workers of <group> (default: all) through the supervisor
  logs     the last lines of a worker's log (of every worker of the group without .<index>);
           -f follows

Options:
  -c, --config <file>   the fleet file (default: CELERITY_FLEET, then ${DEFAULT_FLEET_FILE})
  --detach              up: run the supervisor in the background (its log: <dir>/supervisor.log)
  --timeout <s>         how long up --detach, down and restart wait (default: 60)
  --json                status: as JSON
  -n, --lines <n>       logs: lines to show (default: 50)
  -f, --follow          logs: keep printing new lines until Ctrl-C

The connection options are passed on to every worker (and recorded for \`status\`); a group's
\`settings\` replaces --settings for its workers.

${CONNECTION_HELP}

Exit codes:
  0  done (status: every worker alive)
  1  failed: the fleet is already up, a worker did not start, a timeout; status: something is down
  2  bad usage or an invalid fleet file`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      config: { type: "string", short: "c" },
      detach: { type: "boolean" },
      timeout: { type: "string" },
      json: { type: "boolean" },
      lines: { type: "string", short: "n" },
      follow: { type: "boolean", short: "f" },
    });
    const [sub, ...rest] = positionals;
    const subs = ["up", "down", "status", "restart", "logs"];
    if (sub === undefined) throw new UsageError(`missing subcommand: ${subs.join(", ")}`);
    if (!subs.includes(sub)) throw new UsageError(`unknown subcommand ${JSON.stringify(sub)}: use ${subs.join(", ")}`);
    const maxArgs = sub === "restart" || sub === "logs" ? 1 : 0;
    if (rest.length > maxArgs) throw new UsageError(`unexpected argument ${JSON.stringify(rest[maxArgs])}`);
    const timeoutMs = (values.timeout === undefined ? 60 : intOption("--timeout", values.timeout, 1)) * 1000;
    const fleet = loadFleet(values.config ?? (process.env.CELERITY_FLEET || DEFAULT_FLEET_FILE));
    const connection = connectionOf(values);
    switch (sub) {
      case "up":
        return up(fleet, connection, values.detach === true, timeoutMs, io);
      case "down":
        return down(fleet, timeoutMs, io);
      case "status":
        return status(fleet, connection, values.json === true, io);
      case "restart":
        return restart(fleet, rest[0], timeoutMs, io);
      default:
        return logs(fleet, rest[0], values.lines === undefined ? 50 : intOption("--lines", values.lines, 0), values.follow === true, io);
    }
  },
};

/** For tests and tools: the files of a fleet. */
export const fleetFiles = { supervisorPidFile, supervisorLogFile, stateFile };
