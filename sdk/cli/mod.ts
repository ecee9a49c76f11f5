/**
 * The `celerity` command: run workers, call and send tasks by name, read states and results,
 * create the topology. `main(argv)` returns the exit code; bin/celerity.mjs sets it.
 *
 * @example
 * ```ts
 * import { main } from "./sdk/cli/mod.ts"; // bin/celerity.mjs runs the built copy, dist/cli.js
 * const code = await main(["call", "math.add", "--args", '{"a": 1, "b": 2}']); // prints 3, returns 0
 * ```
 * @module
 */
import { ProtocolError, RemoteTaskError } from "../protocol/mod.ts";
import { wantsHelp } from "./args.ts";
import { isSettingsError } from "./connection.ts";
import { CliError, EXIT, processIo, UsageError, type Command, type Io } from "./io.ts";

export { CliError, EXIT, UsageError, type Command, type Io } from "./io.ts";
export type { RegisterTasks } from "./worker.ts";

/**
 * Every command, by name, in the order `celerity help` lists them, loaded when it runs: importing
 * all of them (the worker runtime, beat, the sink, ingest…) made every command pay for modules it
 * never used. Loading dist/cli.js and dispatching `status --help`: 249 → 167 ms (medians of 12
 * interleaved runs, docs/benchmarks.md).
 */
export const COMMANDS: ReadonlyMap<string, () => Promise<Command>> = new Map([
  ["worker", () => import("./worker.ts").then((m) => m.workerCommand)],
  ["workers", () => import("./fleet.ts").then((m) => m.workersCommand)],
  ["beat", () => import("./beat.ts").then((m) => m.beatCommand)],
  ["call", () => import("./call.ts").then((m) => m.callCommand)],
  ["send", () => import("./call.ts").then((m) => m.sendCommand)],
  ["status", () => import("./status.ts").then((m) => m.statusCommand)],
  ["result", () => import("./call.ts").then((m) => m.resultCommand)],
  ["init", () => import("./init.ts").then((m) => m.initCommand)],
  ["dlq", () => import("./dlq.ts").then((m) => m.dlqCommand)],
  ["inspect", () => import("./control.ts").then((m) => m.inspectCommand)],
  ["control", () => import("./control.ts").then((m) => m.controlCommand)],
  ["bundle-callback", () => import("./bundle_callback.ts").then((m) => m.bundleCallbackCommand)],
  ["events", () => import("./events.ts").then((m) => m.eventsCommand)],
  ["sink", () => import("./sink.ts").then((m) => m.sinkCommand)],
  ["ingest", () => import("./ingest.ts").then((m) => m.ingestCommand)],
  ["schema", () => import("./schema.ts").then((m) => m.schemaCommand)],
] as const);

/** The usage text of `celerity help` (loads every command for its summary). */
export async function usage(): Promise<string> {
  const commands = await Promise.all([...COMMANDS.values()].map((load) => load()));
  const width = Math.max(...commands.map((c) => c.name.length));
  const lines = commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
  return `Usage: celerity <command> [options]

Celerity: typed distributed tasks over NATS JetStream.

Commands:
${lines.join("\n")}
  ${"help".padEnd(width)}  show this help, or a command's: celerity help <command>, celerity <command> --help

Every command takes --servers <url,url>, --namespace <ns> and --settings <file>; other settings
come from the file named by CELERITY_SETTINGS and CELERITY_* variables (docs/settings.md).

Exit codes: 0 done, 1 failed (task error, timeout, connection), 2 bad usage or settings.`;
}

/** Prints `err` the way the CLI reports errors and returns its exit code. */
function report(err: unknown, io: Io, command: Command): number {
  if (err instanceof UsageError) {
    io.err(`error: ${err.message}\n`);
    io.err(command.usage);
    return err.code;
  }
  if (err instanceof CliError) {
    io.err(`error: ${err.message}`);
    return err.code;
  }
  if (isSettingsError(err)) {
    // The CLI's flags are the settings' code layer: say so in the CLI's words.
    io.err(`error: ${err.message.replace("named by `file` in code", "named by --settings").replace(/ in code: /, " on the command line: ")}`);
    return EXIT.usage;
  }
  if (err instanceof ProtocolError) {
    io.err(`error: ${err.message}`);
    return EXIT.usage;
  }
  if (err instanceof RemoteTaskError) {
    io.err(`error: ${err.remoteType}: ${err.remoteMessage}`);
    return EXIT.failed;
  }
  io.err(`error: ${err instanceof Error ? err.message || err.name : String(err)}`);
  return EXIT.failed;
}

/**
 * Runs `celerity <argv>` and resolves with the exit code (0 done, 1 failed, 2 bad usage or
 * settings). Never exits the process and never rejects.
 */
export async function main(argv: string[], io: Io = processIo()): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === "--help" || name === "-h" || (name === "help" && rest.length === 0)) {
    io.out(await usage());
    return EXIT.ok;
  }
  if (name === "help") {
    const load = COMMANDS.get(rest[0]!);
    if (!load) {
      io.err(`error: unknown command ${JSON.stringify(rest[0])}\n`);
      io.err(await usage());
      return EXIT.usage;
    }
    io.out((await load()).usage);
    return EXIT.ok;
  }
  const load = COMMANDS.get(name);
  if (!load) {
    io.err(`error: ${name.startsWith("-") ? `expected a command before ${JSON.stringify(name)}` : `unknown command ${JSON.stringify(name)}`}\n`);
    io.err(await usage());
    return EXIT.usage;
  }
  const command = await load();
  if (wantsHelp(rest)) {
    io.out(command.usage);
    return EXIT.ok;
  }
  try {
    return await command.run(rest, io);
  } catch (err) {
    try {
      return report(err, io, command);
    } catch {
      return EXIT.failed;
    }
  }
}
