/** Where the commands write, the errors that carry an exit code, and the shape of one command. */
import process from "node:process";

/** Output of a command: `out` is the result (stdout), `err` is diagnostics (stderr). One line per call. */
export interface Io {
  out(text: string): void;
  err(text: string): void;
}

/** Exit codes, the same for every command. */
export const EXIT = {
  /** Done. */
  ok: 0,
  /** Something failed: the task, the wait, the connection, the tasks module. */
  failed: 1,
  /** The command line or the settings are wrong: nothing was attempted. */
  usage: 2,
} as const;

function writer(stream: NodeJS.WriteStream): (text: string) => void {
  // A closed pipe (`celerity status x | head -1`) is not an error of ours.
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code !== "EPIPE") throw err;
  });
  return (text) => {
    stream.write(text.endsWith("\n") ? text : `${text}\n`);
  };
}

let stdio: Io | undefined;
/** The process's stdout and stderr. */
export function processIo(): Io {
  stdio ??= { out: writer(process.stdout), err: writer(process.stderr) };
  return stdio;
}

/** An error the CLI reports as `error: <message>` and exits with `code`. */
export class CliError extends Error {
  override name = "CliError";
  constructor(message: string, readonly code: number = EXIT.failed) {
    super(message);
  }
}

/** A mistake on the command line: reported with the command's usage, exit 2. */
export class UsageError extends CliError {
  override name = "UsageError";
  constructor(message: string) {
    super(message, EXIT.usage);
  }
}

/** One `celerity <name>` command. */
export interface Command {
  readonly name: string;
  /** One line for the command list. */
  readonly summary: string;
  /** The full help text of `celerity <name> --help`. */
  readonly usage: string;
  /** Runs with the arguments after the command name; resolves with the exit code. */
  run(argv: string[], io: Io): Promise<number>;
}
