/** `celerity ingest <file> --task <name>`: upload a large input to the object store and send a task that references it. */
import * as fs from "node:fs";
import { basename, resolve } from "node:path";
import process from "node:process";
import { setSha256Backend } from "@nats-io/obj";
import { ingest, type IngestProgress } from "../ingest/mod.ts";
import { CONNECTION_HELP, jsonArgs, onePositional, parseCommand, queueName, taskName, toJson } from "./args.ts";
import { openClient } from "./connection.ts";
import { CliError, EXIT, processIo, UsageError, type Command, type Io } from "./io.ts";

/** A Blob of the file, read lazily where the runtime can (Node's fs.openAsBlob), whole otherwise. */
async function fileBlob(path: string): Promise<Blob> {
  const open = (fs as { openAsBlob?: (p: string) => Promise<Blob> }).openAsBlob;
  return typeof open === "function" ? open(path) : new Blob([fs.readFileSync(path)]);
}

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/**
 * A progress display on stderr: one redrawn line on a terminal, otherwise a text line at every
 * 10% of each phase (logs and pipes stay readable).
 */
export function progressBar(io: Io, tty: boolean, width = 30): (p: IngestProgress) => void {
  let lastPhase = "";
  let lastTenth = -1;
  const started = Date.now();
  return (p) => {
    const total = p.total ?? 0;
    const fraction = total > 0 ? Math.min(1, p.bytes / total) : p.phase === "done" ? 1 : 0;
    const label = p.skipped && p.phase !== "done" ? "uploading (already stored, skipped)" : p.phase;
    const line = total > 0
      ? `${label.padEnd(9)} [${"#".repeat(Math.round(fraction * width)).padEnd(width, "-")}] ${(fraction * 100).toFixed(0).padStart(3)}% ${mib(p.bytes)}/${mib(total)}`
      : `${label} ${mib(p.bytes)}`;
    if (tty) {
      process.stderr.write(`\r${line}\x1b[K${p.phase === "done" ? ` in ${((Date.now() - started) / 1000).toFixed(1)} s\n` : ""}`);
      return;
    }
    const tenth = Math.floor(fraction * 10);
    if (p.phase === lastPhase && tenth === lastTenth) return;
    lastPhase = p.phase;
    lastTenth = tenth;
    io.err(p.phase === "done" ? `${line} in ${((Date.now() - started) / 1000).toFixed(1)} s` : line);
  };
}

export const ingestCommand: Command = {
  name: "ingest",
  summary: "upload a large file to the object store and send a task that references it",
  usage: `Usage: celerity ingest <file> --task <name> [--args <json>] [--name <object>] [--bucket <b>] [--queue <q>] [--wait <ms>]

Uploads <file> to the JetStream object store (bucket <namespace>_ingest unless --bucket), then
sends task <name> with the arguments {...args, ref: {bucket, name, size, digest}} and prints the
task id on stdout. Progress goes to stderr. Safe to run again after a failure: an object with the
same name and digest is not uploaded again, and the task id is derived from task, bucket, name and
digest, so the task is sent once. Workers read the input with openObject() from celerity/ingest.

Options:
  --task <name>   the task to send (required)
  --args <json>   more arguments, as a JSON object (default: {}); "ref" is added
  --name <object> the object name (default: the file's base name)
  --bucket <b>    the object store bucket (default: <namespace>_ingest, created if missing)
  --queue <q>     the queue to send to
  --wait <ms>     also wait up to <ms> for the result and print it (as JSON) after the id
  --quiet         no progress on stderr

${CONNECTION_HELP}

Example:
  celerity ingest ./survey.csv --task ingest.count_lines

Exit codes:
  0  uploaded (or already stored) and the task is sent; its id is on stdout
  1  the upload or the send failed (run again to resume), the task failed, or no result within --wait
  2  bad usage: missing file or --task, invalid --args JSON, bad settings`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      task: { type: "string" },
      args: { type: "string" },
      name: { type: "string" },
      bucket: { type: "string" },
      queue: { type: "string" },
      wait: { type: "string" },
      quiet: { type: "boolean" },
    });
    const file = onePositional(positionals, "file");
    if (values.task === undefined) throw new UsageError("missing --task <name>");
    const task = taskName(values.task);
    const extra = jsonArgs(values.args);
    if (typeof extra !== "object" || extra === null || Array.isArray(extra)) throw new CliError("--args must be a JSON object (the reference is added as \"ref\")", EXIT.usage);
    if (values.bucket !== undefined && !/^[A-Za-z0-9_-]+$/.test(values.bucket)) throw new UsageError(`--bucket must be letters, digits, "_" or "-", not ${JSON.stringify(values.bucket)}`);
    const queue = values.queue === undefined ? undefined : queueName(values.queue);
    const wait = values.wait === undefined ? undefined : Number(values.wait);
    if (wait !== undefined && !(Number.isInteger(wait) && wait > 0)) throw new UsageError(`--wait must be a whole number of milliseconds > 0, not ${JSON.stringify(values.wait)}`);
    const path = resolve(process.cwd(), file);
    if (!fs.existsSync(path) || !fs.statSync(path).isFile()) throw new CliError(`file ${file} not found`, EXIT.usage);
    // The CLI owns its process: hash object store chunks natively (much faster than the pure-JS default).
    setSha256Backend("native");
    const blob = await fileBlob(path);
    const tty = io === processIo() && process.stderr.isTTY === true;
    const client = await openClient(values);
    try {
      const { handle, ref, uploaded } = await ingest(client, {
        file: blob,
        name: values.name ?? basename(path),
        ...(values.bucket !== undefined ? { bucket: values.bucket } : {}),
        task,
        args: (r) => ({ ...(extra as Record<string, unknown>), ref: r }),
        ...(queue ? { send: { queue } } : {}),
        ...(values.quiet ? {} : { onProgress: progressBar(io, tty) }),
      });
      if (!values.quiet && !uploaded) io.err(`${ref.name} (${ref.digest}) was already in bucket ${ref.bucket}: not uploaded again`);
      io.out(handle.id);
      if (wait !== undefined) io.out(toJson(await handle.result({ timeout: wait })));
      return EXIT.ok;
    } finally {
      await client.close();
    }
  },
};
