/** Parsing the command line with node:util's parseArgs, and the checks every command shares. */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { assertTaskId, assertTaskName, assertToken } from "../protocol/mod.ts";
import { CliError, EXIT, UsageError } from "./io.ts";

type Options = NonNullable<ParseArgsConfig["options"]>;

/** The options every command accepts; they map onto connect()'s `servers`, `namespace` and `file`. */
export const CONNECTION_OPTIONS = {
  servers: { type: "string" },
  namespace: { type: "string" },
  settings: { type: "string" },
} as const satisfies Options;

/** Values of the connection options, as parsed. */
export interface ConnectionFlags {
  servers?: string | undefined;
  namespace?: string | undefined;
  settings?: string | undefined;
}

/** The help text of the connection options, appended to every command's usage. */
export const CONNECTION_HELP = `Connection options (every command):
  --servers <url,url>  NATS servers (default: CELERITY_SERVERS, NATS_URL, then nats://127.0.0.1:4222)
  --namespace <ns>     namespace of streams and subjects (default: CELERITY_NAMESPACE, then celerity)
  --settings <file>    settings file (YAML or JSON) instead of the one named by CELERITY_SETTINGS
Other settings come from the settings file and CELERITY_* variables (see docs/settings.md).`;

/** True when `--help` or `-h` appears before a `--` terminator. */
export function wantsHelp(argv: readonly string[]): boolean {
  for (const arg of argv) {
    if (arg === "--") return false;
    if (arg === "--help" || arg === "-h") return true;
  }
  return false;
}

/** parseArgs in strict mode with the connection options added; its errors become usage errors. */
export function parseCommand<O extends Options>(argv: string[], options: O) {
  try {
    return parseArgs({
      args: argv,
      options: { ...CONNECTION_OPTIONS, ...options },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS")) throw new UsageError((err as Error).message);
    throw err;
  }
}

/** The one positional argument a command takes (a task name, a task id). */
export function onePositional(positionals: string[], what: string): string {
  if (positionals.length === 0) throw new UsageError(`missing ${what}`);
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}: give one ${what}`);
  return positionals[0]!;
}

/** Fails on any positional argument. */
export function noPositionals(positionals: string[]): void {
  if (positionals.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
}

/** A whole number option, at least `min`. */
export function intOption(flag: string, value: string, min: number): number {
  const n = /^\s*\d+\s*$/.test(value) ? Number(value) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    throw new UsageError(`${flag} must be a whole number >= ${min}, not ${JSON.stringify(value)}`);
  }
  return n;
}

/** `--args`: JSON, `{}` when absent. */
export function jsonArgs(value: string | undefined): unknown {
  if (value === undefined) return {};
  try {
    return JSON.parse(value);
  } catch (err) {
    throw new CliError(`--args is not valid JSON: ${(err as Error).message}`, EXIT.usage);
  }
}

/** Checks a task name now, so a typo fails before connecting (exit 2). */
export function taskName(name: string): string {
  assertTaskName(name);
  return name;
}

/** Checks a task id now (exit 2 when it cannot be one). */
export function taskId(id: string): string {
  assertTaskId(id);
  return id;
}

/** Checks a queue name now (exit 2 when it cannot be one). */
export function queueName(queue: string): string {
  assertToken("queue", queue);
  return queue;
}

/** A comma-separated list of queues. */
export function queueList(flag: string, value: string): string[] {
  const queues = value.split(",").map((q) => q.trim()).filter((q) => q !== "");
  if (queues.length === 0) throw new UsageError(`${flag} needs at least one queue name`);
  return queues.map(queueName);
}

/** Results and records as JSON: indented, `null` for undefined, bigints as strings. */
export function toJson(value: unknown): string {
  return JSON.stringify(value ?? null, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v), 2);
}
