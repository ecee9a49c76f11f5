/** `celerity call`, `celerity send` and `celerity result`: run a task by name and read results. */
import type { Client } from "../client/mod.ts";
import {
  CONNECTION_HELP,
  intOption,
  jsonArgs,
  onePositional,
  parseCommand,
  queueName,
  taskId,
  taskName,
  toJson,
} from "./args.ts";
import { openClient } from "./connection.ts";
import { EXIT, type Command, type Io } from "./io.ts";

/** Milliseconds `call` and `result` wait by default. */
export const DEFAULT_TIMEOUT_MS = 30_000;

const RESULT_EXIT = `Exit codes:
  0  the result was printed on stdout (as JSON)
  1  the task failed (stderr: "error: <remote error type>: <message>"), was revoked, no result
     came within --timeout, or the server cannot be reached
  2  bad usage: unknown option, invalid --args JSON, invalid task name, id or queue, bad settings`;

async function withClient<T>(flags: Parameters<typeof openClient>[0], use: (client: Client) => Promise<T>): Promise<T> {
  const client = await openClient(flags);
  try {
    return await use(client);
  } finally {
    await client.close();
  }
}

export const callCommand: Command = {
  name: "call",
  summary: "send a task by name, wait for its result and print it as JSON",
  usage: `Usage: celerity call <task> [--args <json>] [--queue <q>] [--timeout <ms>] [--id <id>]

Sends task <task> by name (no schema: the worker validates the arguments), waits for its result
and prints it as JSON on stdout.

Options:
  --args <json>   the arguments, as JSON (default: {})
  --queue <q>     the queue to send to (default: default)
  --timeout <ms>  milliseconds to wait for the result (default: ${DEFAULT_TIMEOUT_MS})
  --id <id>       the task id (default: a random UUID); the same id sent again within the dedupe window is dropped

${CONNECTION_HELP}

Example:
  celerity call math.add --args '{"a": 1, "b": 2}'    # prints 3

${RESULT_EXIT}`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      args: { type: "string" },
      queue: { type: "string" },
      timeout: { type: "string" },
      id: { type: "string" },
    });
    const name = taskName(onePositional(positionals, "task name"));
    const args = jsonArgs(values.args);
    const timeout = values.timeout === undefined ? DEFAULT_TIMEOUT_MS : intOption("--timeout", values.timeout, 1);
    const queue = values.queue === undefined ? undefined : queueName(values.queue);
    const id = values.id === undefined ? undefined : taskId(values.id);
    const result = await withClient(values, (client) => client.call(name, args, { timeout, ...(queue ? { queue } : {}), ...(id ? { id } : {}) }));
    io.out(toJson(result));
    return EXIT.ok;
  },
};

export const sendCommand: Command = {
  name: "send",
  summary: "send a task by name and print its id (does not wait)",
  usage: `Usage: celerity send <task> [--args <json>] [--queue <q>] [--id <id>]

Sends task <task> by name and prints its id on stdout once the server has stored it. Follow it
with \`celerity status <id>\` or \`celerity result <id>\`.

Options:
  --args <json>   the arguments, as JSON (default: {})
  --queue <q>     the queue to send to (default: default)
  --id <id>       the task id (default: a random UUID); the same id sent again within the dedupe window is dropped

${CONNECTION_HELP}

Example:
  id=$(celerity send math.add --args '{"a": 1, "b": 2}')

Exit codes:
  0  the task is stored; its id is on stdout
  1  the server cannot be reached or did not store the task
  2  bad usage: unknown option, invalid --args JSON, invalid task name, id or queue, bad settings`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      args: { type: "string" },
      queue: { type: "string" },
      id: { type: "string" },
    });
    const name = taskName(onePositional(positionals, "task name"));
    const args = jsonArgs(values.args);
    const queue = values.queue === undefined ? undefined : queueName(values.queue);
    const id = values.id === undefined ? undefined : taskId(values.id);
    const handle = await withClient(values, (client) => client.send(name, args, { ...(queue ? { queue } : {}), ...(id ? { id } : {}) }));
    io.out(handle.id);
    return EXIT.ok;
  },
};

export const resultCommand: Command = {
  name: "result",
  summary: "wait for the result of a task id and print it as JSON",
  usage: `Usage: celerity result <id> [--timeout <ms>]

Waits for the result of task <id> (sent by any process) and prints it as JSON on stdout. A result
already stored is printed at once.

Options:
  --timeout <ms>  milliseconds to wait; 0 waits without limit (default: ${DEFAULT_TIMEOUT_MS})

${CONNECTION_HELP}

Example:
  celerity result 0b6f8c1e-3c1a-4d49-9d7e-7f0b6a1c2d3e --timeout 60000

${RESULT_EXIT}`,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, { timeout: { type: "string" } });
    const id = taskId(onePositional(positionals, "task id"));
    const timeout = values.timeout === undefined ? DEFAULT_TIMEOUT_MS : intOption("--timeout", values.timeout, 0);
    const result = await withClient(values, (client) => client.task(id).result(timeout === 0 ? {} : { timeout }));
    io.out(toJson(result));
    return EXIT.ok;
  },
};
