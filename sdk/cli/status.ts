/** `celerity status <id>`: the state of a task, from its stored record. */
import type { ResultRecord, TaskStatus } from "../client/mod.ts";
import { CONNECTION_HELP, onePositional, parseCommand, taskId, toJson } from "./args.ts";
import { openClient } from "./connection.ts";
import { EXIT, type Command, type Io } from "./io.ts";

function time(ms: number | undefined): string | undefined {
  return ms === undefined ? undefined : new Date(ms).toISOString();
}

/** The human form: one `label  value` line per known field. */
export function formatStatus(status: TaskStatus): string {
  const r: Partial<ResultRecord> = status.record ?? {};
  const rows: [string, string | undefined][] = [
    ["id", status.id],
    ["state", status.state],
    ["task", r.task || undefined],
    ["queue", r.queue],
    ["worker", r.worker ? `${r.worker.id} (host ${r.worker.host}, pid ${r.worker.pid})` : undefined],
    ["retries", r.retries ? String(r.retries) : undefined],
    ["sent", time(r.sentAt)],
    ["received", time(r.receivedAt)],
    ["started", time(r.startedAt)],
    ["finished", time(r.finishedAt)],
    ["runtime", r.startedAt !== undefined && r.finishedAt !== undefined ? `${r.finishedAt - r.startedAt} ms` : undefined],
    ["result", "result" in r && r.result !== undefined ? JSON.stringify(r.result) : undefined],
    ["error", r.error ? `${r.error.type}: ${r.error.message}` : undefined],
  ];
  if (!status.record) rows.push(["note", "no record is stored: the task is waiting in its queue, unknown, or its result expired"]);
  return rows
    .filter((row): row is [string, string] => row[1] !== undefined)
    .map(([label, value]) => `${label.padEnd(9)} ${value}`)
    .join("\n");
}

export const statusCommand: Command = {
  name: "status",
  summary: "print the state of a task id (PENDING when nothing is stored)",
  usage: `Usage: celerity status <id> [--json]

Prints the state of task <id>: its task, queue, worker, timestamps, and result or error once it
finished. PENDING means no record is stored: the task is still queued (short tasks are only
recorded when they finish), the id is unknown, or the result expired (Celery's semantics).

Options:
  --json          print the stored record as JSON ({"id", "state": "PENDING"} when none is stored)

${CONNECTION_HELP}

Example:
  celerity status 0b6f8c1e-3c1a-4d49-9d7e-7f0b6a1c2d3e --json

Exit codes:
  0  the state was printed, whatever it is (also PENDING, FAILURE)
  1  the server cannot be reached
  2  bad usage: unknown option, invalid task id, bad settings`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, { json: { type: "boolean" } });
    const id = taskId(onePositional(positionals, "task id"));
    const client = await openClient(values);
    let status: TaskStatus;
    try {
      status = await client.status(id);
    } finally {
      await client.close();
    }
    io.out(values.json ? toJson(status.record ?? { id, state: status.state }) : formatStatus(status));
    return EXIT.ok;
  },
};
