/** The fleet file of `celerity workers`: groups of worker processes, checked with valibot. */
import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import * as v from "valibot";
import { parse as parseYaml } from "yaml";
import { assertToken } from "../../protocol/mod.ts";
import { CliError, EXIT } from "../io.ts";
import { POOLS, parseSize, type PoolKind, type QueueOptions } from "../worker.ts";

/** Where PID, log and state files go unless the fleet file says `dir`. */
export const DEFAULT_FLEET_DIR = ".celerity/fleet";
/** The fleet file `celerity workers` reads unless given `-c`/`CELERITY_FLEET`. */
export const DEFAULT_FLEET_FILE = "fleet.yaml";

const positive = (what: string) => v.pipe(v.number(`${what} must be a number`), v.integer(`${what} must be a whole number`), v.minValue(1, `${what} must be at least 1`));
const queueOptionsSchema = v.strictObject(
  {
    serial: v.optional(v.boolean("serial must be true or false")),
    concurrency: v.optional(positive("concurrency")),
    prefetch: v.optional(positive("prefetch")),
    ackWait: v.optional(positive("ackWait (seconds)")),
  },
  (issue) => (issue.expected === "never" ? "unknown queue option (use serial, concurrency, prefetch, ackWait)" : "queue options must be a map"),
);

const groupSchema = v.strictObject(
  {
    tasks: v.pipe(v.string("tasks must be the path of a tasks module"), v.minLength(1, "tasks must not be empty")),
    queues: v.optional(
      v.lazy((input) =>
        Array.isArray(input)
          ? v.pipe(v.array(v.string("a queue name must be a string")), v.minLength(1, "queues must name at least one queue"))
          : v.record(v.string(), v.nullish(queueOptionsSchema), "queues must be a list of queue names or a map of queue name to options ({serial, concurrency, prefetch, ackWait})"),
      ),
    ),
    count: v.optional(positive("count"), 1),
    concurrency: v.optional(positive("concurrency")),
    prefetch: v.optional(positive("prefetch")),
    pool: v.optional(v.picklist(POOLS as PoolKind[], `pool must be one of ${POOLS.join(", ")}`)),
    maxTasksPerChild: v.optional(positive("maxTasksPerChild")),
    maxMemoryPerChild: v.optional(v.union([positive("maxMemoryPerChild"), v.string()], "maxMemoryPerChild must be bytes or a size like 200MB")),
    loglevel: v.optional(v.picklist(["debug", "info", "warn", "error", "silent"], "loglevel must be one of debug, info, warn, error, silent")),
    env: v.optional(v.record(v.string(), v.union([v.string(), v.number(), v.boolean()]), "env must map variable names to strings")),
    settings: v.optional(v.string("settings must be the path of a settings file")),
  },
  (issue) => (issue.expected === "never" ? "unknown key (a group has tasks, queues, count, concurrency, prefetch, pool, maxTasksPerChild, maxMemoryPerChild, loglevel, env, settings)" : "a group must be a map"),
);

const fleetSchema = v.strictObject(
  {
    dir: v.optional(v.pipe(v.string("dir must be a path"), v.minLength(1, "dir must not be empty"))),
    groups: v.pipe(
      v.record(v.string(), groupSchema, "groups must map group names to groups"),
      v.check((g) => Object.keys(g).length > 0, "groups must declare at least one group"),
    ),
  },
  (issue) => (issue.expected === "never" ? "unknown key (a fleet file has dir and groups)" : "a fleet file must be a map with groups"),
);

/** One group, with paths resolved and sizes in bytes. */
export interface FleetGroup {
  name: string;
  /** Absolute path of the tasks module. */
  tasks: string;
  queues?: string[] | Record<string, QueueOptions>;
  count: number;
  concurrency?: number;
  prefetch?: number;
  pool?: PoolKind;
  maxTasksPerChild?: number;
  maxMemoryPerChild?: number;
  loglevel?: string;
  env: Record<string, string>;
  /** Absolute path of the group's settings file. */
  settings?: string;
}

/** A checked fleet file. */
export interface Fleet {
  /** Absolute path of the fleet file. */
  file: string;
  /** Absolute folder of PID, log and state files. */
  dir: string;
  groups: FleetGroup[];
}

/** One worker process of a fleet: `<group>.<index>`, index from 1. */
export interface FleetMember {
  group: FleetGroup;
  index: number;
  /** `<group>.<index>`. */
  name: string;
  pidFile: string;
  logFile: string;
}

/** The worker processes of a fleet, in order. */
export function members(fleet: Fleet): FleetMember[] {
  return fleet.groups.flatMap((group) =>
    Array.from({ length: group.count }, (_, i) => {
      const name = `${group.name}.${i + 1}`;
      return { group, index: i + 1, name, pidFile: join(fleet.dir, `${name}.pid`), logFile: join(fleet.dir, `${name}.log`) };
    }),
  );
}

function keyPath(issue: v.BaseIssue<unknown>): string {
  return (issue.path ?? []).map((p) => (typeof p.key === "number" ? `[${p.key}]` : `.${String(p.key)}`)).join("").replace(/^\./, "");
}

/** Checks an already parsed fleet document; `file` is for messages and resolving relative paths. */
export function checkFleet(doc: unknown, file: string): Fleet {
  const shown = file;
  const base = dirname(resolve(file));
  const result = v.safeParse(fleetSchema, doc);
  if (!result.success) {
    const problems = result.issues.map((issue) => {
      const at = keyPath(issue);
      return `${shown}: ${at ? `${at}: ` : ""}${issue.message}`;
    });
    throw new CliError(`invalid fleet file ${shown}:\n  ${problems.join("\n  ")}`, EXIT.usage);
  }
  const out = result.output;
  const groups: FleetGroup[] = [];
  const problems: string[] = [];
  for (const [name, g] of Object.entries(out.groups)) {
    if (!/^[A-Za-z0-9_-]+$/.test(name)) problems.push(`${shown}: groups.${name}: a group name may use only letters, digits, _ and -`);
    const tasks = resolve(base, g.tasks);
    if (!existsSync(tasks)) problems.push(`${shown}: groups.${name}.tasks: ${g.tasks} not found (looked for ${tasks})`);
    let queues: FleetGroup["queues"];
    if (Array.isArray(g.queues)) queues = g.queues;
    else if (g.queues) queues = Object.fromEntries(Object.entries(g.queues).map(([q, o]) => [q, { ...o }]));
    for (const q of Array.isArray(queues) ? queues : Object.keys(queues ?? {})) {
      try {
        assertToken("queue", q);
      } catch (err) {
        problems.push(`${shown}: groups.${name}.queues: ${(err as Error).message}`);
      }
    }
    let maxMemoryPerChild: number | undefined;
    if (typeof g.maxMemoryPerChild === "string") {
      try {
        maxMemoryPerChild = parseSize(`groups.${name}.maxMemoryPerChild`, g.maxMemoryPerChild);
      } catch (err) {
        problems.push(`${shown}: ${(err as Error).message}`);
      }
    } else maxMemoryPerChild = g.maxMemoryPerChild;
    const group: FleetGroup = {
      name,
      tasks,
      count: g.count,
      env: Object.fromEntries(Object.entries(g.env ?? {}).map(([k, val]) => [k, String(val)])),
    };
    if (queues !== undefined) group.queues = queues;
    if (g.concurrency !== undefined) group.concurrency = g.concurrency;
    if (g.prefetch !== undefined) group.prefetch = g.prefetch;
    if (g.pool !== undefined) group.pool = g.pool;
    if (g.maxTasksPerChild !== undefined) group.maxTasksPerChild = g.maxTasksPerChild;
    if (maxMemoryPerChild !== undefined) group.maxMemoryPerChild = maxMemoryPerChild;
    if (g.loglevel !== undefined) group.loglevel = g.loglevel;
    if (g.settings !== undefined) group.settings = resolve(base, g.settings);
    groups.push(group);
  }
  if (problems.length) throw new CliError(`invalid fleet file ${shown}:\n  ${problems.join("\n  ")}`, EXIT.usage);
  return { file: resolve(file), dir: resolve(base, out.dir ?? DEFAULT_FLEET_DIR), groups };
}

/** Reads and checks a fleet file (YAML or JSON). Exit 2 when it is missing or invalid. */
export function loadFleet(file: string): Fleet {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new CliError(`cannot read fleet file ${file}: ${(err as NodeJS.ErrnoException).code === "ENOENT" ? "no such file (give one with -c <fleet.yaml>)" : (err as Error).message}`, EXIT.usage);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new CliError(`fleet file ${file} is not valid YAML: ${(err as Error).message}`, EXIT.usage);
  }
  return checkFleet(doc, file);
}
