/**
 * The command line of the one-file callback (`node respond.cjs success --id … --result-file …`).
 * Runtime-neutral: the bundle's entry hands in stdout, stderr and stdin; `main` returns the exit code.
 */
import { InvalidArgumentsError, ProtocolError } from "../protocol/mod.ts";
import { environment, readTextFile } from "../transport/mod.ts";
import { DEFAULT_DEADLINE_MS, DeliveryError, EXTERNAL_TASK, oneLine, report, ReportError, type Report, type ReportOptions } from "./report.ts";

/** Where the command writes and what it reads. One line per call. */
export interface CallbackIo {
  out(line: string): void;
  err(line: string): void;
  /** Standard input, read to the end (for `--result-stdin`). */
  readStdin(): Promise<string>;
}

/** Options of {@link main}. */
export interface CallbackMainOptions {
  /** Signatures `send` checks names and arguments against (the bundle's `--signatures` module). */
  signatures?: Iterable<unknown>;
  /** The environment (default: the process's); read for CELERITY_TASK_ID. */
  env?: Record<string, string | undefined>;
  /** The name the usage text calls the command. */
  program?: string;
}

/** Exit codes of the callback. */
export const CALLBACK_EXIT = {
  /** Delivered: the server acknowledged the report. */
  ok: 0,
  /** Not delivered: unreachable server, no acknowledgement before the deadline, refused connection. */
  failed: 1,
  /** Wrong command line, settings, input file or arguments: nothing was sent. */
  usage: 2,
} as const;

/** A mistake on the command line or in the input: exit 2. */
export class CallbackUsageError extends ReportError {
  override name = "CallbackUsageError";
}

/** The usage text. */
export function callbackUsage(program = "respond.cjs"): string {
  return `Usage:
  node ${program} success  --id <taskId> (--result-file <out.json> | --result-stdin | --result '<json>')
  node ${program} failure  --id <taskId> --error "<message>" [--type <ErrorType>]
  node ${program} progress --id <taskId> --value '<json>'
  node ${program} send <task.name> --args '<json>' [--id <taskId>] [--queue <q>] [--priority <0-9>]

Reports a task's outcome or progress to Celerity, or sends a task, and exits once the server has
acknowledged it. --id defaults to $CELERITY_TASK_ID; send prints the id of the task it sent.

Options:
  --task <name>        task name recorded with success/failure/progress (default "${EXTERNAL_TASK}")
  --deadline <time>    give up after this long in total: 120s (default), 500ms, 5m
  --servers <url,url>  NATS servers (default: CELERITY_SERVERS, NATS_URL, then nats://127.0.0.1:4222)
  --creds <file>       NATS credentials file (default: CELERITY_CREDS, NATS_CREDS)
  --namespace <ns>     namespace (default: CELERITY_NAMESPACE, then celerity)
  --settings <file>    settings file instead of the one named by CELERITY_SETTINGS

Exit codes: 0 delivered, 1 not delivered (unreachable, not acknowledged in time, refused),
2 bad command line, settings, input or arguments (nothing was sent).`;
}

const VALUE_FLAGS = new Set([
  "id", "result-file", "result", "error", "type", "value", "args", "queue", "priority", "task",
  "deadline", "servers", "creds", "namespace", "settings",
]);
const BOOLEAN_FLAGS = new Set(["result-stdin", "help"]);

/** Which flags each command accepts besides the connection ones. */
const COMMAND_FLAGS: Record<string, readonly string[]> = {
  success: ["id", "task", "result-file", "result-stdin", "result"],
  failure: ["id", "task", "error", "type"],
  progress: ["id", "task", "value"],
  send: ["args", "id", "queue", "priority"],
};
const COMMON_FLAGS = ["deadline", "servers", "creds", "namespace", "settings", "help"];

interface Parsed {
  command: string;
  positionals: string[];
  flags: Map<string, string | true>;
}

/** Parses `<command> [positionals] --flag value --flag=value --switch`. */
export function parseCallbackArgs(argv: readonly string[]): Parsed {
  const flags = new Map<string, string | true>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "-h") {
      flags.set("help", true);
      continue;
    }
    if (!arg.startsWith("--") || arg === "--") {
      positionals.push(arg);
      continue;
    }
    const eq = arg.indexOf("=");
    const name = arg.slice(2, eq < 0 ? undefined : eq);
    if (BOOLEAN_FLAGS.has(name)) {
      if (eq >= 0) throw new CallbackUsageError(`--${name} takes no value`);
      flags.set(name, true);
    } else if (VALUE_FLAGS.has(name)) {
      const value = eq >= 0 ? arg.slice(eq + 1) : argv[++i];
      if (value === undefined) throw new CallbackUsageError(`--${name} needs a value`);
      if (flags.has(name)) throw new CallbackUsageError(`--${name} is given twice`);
      flags.set(name, value);
    } else {
      throw new CallbackUsageError(`unknown option --${name}`);
    }
  }
  const [command = "", ...rest] = positionals;
  if (flags.has("help")) return { command, positionals: rest, flags };
  if (!(command in COMMAND_FLAGS)) {
    throw new CallbackUsageError(command === "" ? "missing command: success, failure, progress or send" : `unknown command ${JSON.stringify(command)}: use success, failure, progress or send`);
  }
  const allowed = new Set([...COMMAND_FLAGS[command]!, ...COMMON_FLAGS]);
  for (const name of flags.keys()) {
    if (!allowed.has(name)) throw new CallbackUsageError(`${command} does not take --${name}`);
  }
  return { command, positionals: rest, flags };
}

/** Parses `120s`, `500ms`, `5m`, `1h` or plain seconds into milliseconds. */
export function parseDuration(text: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/.exec(text);
  if (!m) throw new CallbackUsageError(`--deadline must be a duration such as 120s, 500ms or 5m, not ${JSON.stringify(text)}`);
  const unit = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 }[(m[2] ?? "s") as "ms" | "s" | "m" | "h"];
  const ms = Number(m[1]) * unit;
  if (!(ms > 0)) throw new CallbackUsageError(`--deadline must be more than 0, not ${JSON.stringify(text)}`);
  return ms;
}

function json(flag: string, text: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new CallbackUsageError(`${flag} is not valid JSON: ${(err as Error).message}`);
  }
}

function str(flags: Parsed["flags"], name: string): string | undefined {
  const v = flags.get(name);
  return typeof v === "string" ? v : undefined;
}

/** Turns a parsed command line into what to report, reading the result file or stdin. */
export async function toReport(parsed: Parsed, io: CallbackIo, env: Record<string, string | undefined>): Promise<Report> {
  const { command, positionals, flags } = parsed;
  const task = str(flags, "task");
  if (command === "send") {
    if (positionals.length !== 1) throw new CallbackUsageError(positionals.length === 0 ? "send needs a task name" : `unexpected argument ${JSON.stringify(positionals[1])}`);
    const args = flags.has("args") ? json("--args", str(flags, "args")!) : {};
    const r: Report = { kind: "send", task: positionals[0]!, args };
    const id = str(flags, "id");
    if (id !== undefined) r.id = id;
    const queue = str(flags, "queue");
    if (queue !== undefined) r.queue = queue;
    const priority = str(flags, "priority");
    if (priority !== undefined) {
      const p = Number(priority);
      if (!/^\d$/.test(priority)) throw new CallbackUsageError(`--priority must be a whole number from 0 to 9, not ${JSON.stringify(priority)}`);
      r.priority = p;
    }
    return r;
  }
  if (positionals.length > 0) throw new CallbackUsageError(`unexpected argument ${JSON.stringify(positionals[0])}`);
  const id = str(flags, "id") ?? (env.CELERITY_TASK_ID?.trim() || undefined);
  if (id === undefined) throw new CallbackUsageError(`${command} needs --id <taskId> (or CELERITY_TASK_ID in the environment)`);
  const named = task === undefined ? {} : { task };
  if (command === "success") {
    const sources = ["result-file", "result-stdin", "result"].filter((f) => flags.has(f));
    if (sources.length !== 1) throw new CallbackUsageError("success needs exactly one of --result-file <file>, --result-stdin or --result '<json>'");
    let text: string;
    let from: string;
    if (flags.has("result-file")) {
      const path = str(flags, "result-file")!;
      from = `--result-file ${path}`;
      try {
        text = readTextFile(path);
      } catch (err) {
        throw new CallbackUsageError(`cannot read the result file ${path}: ${(err as Error).message}`);
      }
    } else if (flags.has("result-stdin")) {
      from = "standard input (--result-stdin)";
      text = await io.readStdin();
    } else {
      from = "--result";
      text = str(flags, "result")!;
    }
    if (text.trim() === "") throw new CallbackUsageError(`${from} is empty: the result must be JSON (e.g. null)`);
    return { kind: "success", id, result: json(from, text), ...named };
  }
  if (command === "failure") {
    const message = str(flags, "error");
    if (message === undefined || message.trim() === "") throw new CallbackUsageError('failure needs --error "<message>"');
    const type = str(flags, "type");
    return { kind: "failure", id, error: { message, ...(type ? { type } : {}) }, ...named };
  }
  const value = str(flags, "value");
  if (value === undefined) throw new CallbackUsageError("progress needs --value '<json>'");
  return { kind: "progress", id, progress: json("--value", value), ...named };
}

function isUsage(err: unknown): boolean {
  return err instanceof ReportError || err instanceof InvalidArgumentsError || err instanceof ProtocolError ||
    (err instanceof Error && err.name === "SettingsError");
}

/**
 * Runs the callback with `argv` (the arguments after the script) and resolves with the exit code.
 * Never rejects; every failure is one line on `io.err`.
 */
export async function main(argv: readonly string[], io: CallbackIo, options: CallbackMainOptions = {}): Promise<number> {
  const program = options.program ?? "respond.cjs";
  try {
    const parsed = parseCallbackArgs(argv);
    if (parsed.flags.has("help")) {
      io.out(callbackUsage(program));
      return CALLBACK_EXIT.ok;
    }
    const env = options.env ?? environment();
    const what = await toReport(parsed, io, env);
    const reportOptions: ReportOptions = {};
    const deadline = str(parsed.flags, "deadline");
    reportOptions.deadlineMs = deadline === undefined ? DEFAULT_DEADLINE_MS : parseDuration(deadline);
    const servers = str(parsed.flags, "servers");
    if (servers !== undefined) reportOptions.servers = servers;
    const creds = str(parsed.flags, "creds");
    if (creds !== undefined) reportOptions.credsFile = creds;
    const namespace = str(parsed.flags, "namespace");
    if (namespace !== undefined) reportOptions.namespace = namespace;
    const settings = str(parsed.flags, "settings");
    if (settings !== undefined) reportOptions.file = settings;
    if (options.signatures !== undefined) reportOptions.signatures = options.signatures;
    const outcome = await report(what, reportOptions);
    if (what.kind === "send") io.out(outcome.id);
    return CALLBACK_EXIT.ok;
  } catch (err) {
    const message = oneLine(err instanceof Error ? err.message || err.name : String(err));
    if (isUsage(err)) {
      io.err(`${program}: ${message} (see --help)`);
      return CALLBACK_EXIT.usage;
    }
    io.err(`${program}: ${err instanceof DeliveryError ? "" : "error: "}${message}`);
    return CALLBACK_EXIT.failed;
  }
}
