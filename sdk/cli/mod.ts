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
import { callCommand, resultCommand, sendCommand } from "./call.ts";
import { isSettingsError } from "./connection.ts";
import { initCommand } from "./init.ts";
import { ingestCommand } from "./ingest.ts";
import { schemaCommand } from "./schema.ts";
import { dlqCommand } from "./dlq.ts";
import { controlCommand, inspectCommand } from "./control.ts";
import { bundleCallbackCommand } from "./bundle_callback.ts";
import { beatCommand } from "./beat.ts";
import { eventsCommand } from "./events.ts";
import { sinkCommand } from "./sink.ts";
import { CliError, EXIT, processIo, UsageError, type Command, type Io } from "./io.ts";
import { statusCommand } from "./status.ts";
import { workerCommand } from "./worker.ts";
import { workersCommand } from "./fleet.ts";

export { CliError, EXIT, UsageError, type Command, type Io } from "./io.ts";
export { loadTasksModule, type RegisterTasks } from "./worker.ts";

/** Every command, by name, in the order `celerity help` lists them. */
export const COMMANDS: ReadonlyMap<string, Command> = new Map(
  [workerCommand, workersCommand, beatCommand, callCommand, sendCommand, statusCommand, resultCommand, initCommand, dlqCommand, inspectCommand, controlCommand, bundleCallbackCommand, eventsCommand, sinkCommand, ingestCommand, schemaCommand].map((c) => [c.name, c]),
);

/** The usage text of `celerity help`. */
export function usage(): string {
  const width = Math.max(...[...COMMANDS.keys()].map((n) => n.length));
  const lines = [...COMMANDS.values()].map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`);
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
    io.out(usage());
    return EXIT.ok;
  }
  if (name === "help") {
    const command = COMMANDS.get(rest[0]!);
    if (!command) {
      io.err(`error: unknown command ${JSON.stringify(rest[0])}\n`);
      io.err(usage());
      return EXIT.usage;
    }
    io.out(command.usage);
    return EXIT.ok;
  }
  const command = COMMANDS.get(name);
  if (!command) {
    io.err(`error: ${name.startsWith("-") ? `expected a command before ${JSON.stringify(name)}` : `unknown command ${JSON.stringify(name)}`}\n`);
    io.err(usage());
    return EXIT.usage;
  }
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
