/** `celerity sink postgres`: keep a PostgreSQL results table from the events stream, durably. */
import process from "node:process";
import { PostgresResultsTable, runSink, type SinkStats } from "../monitor/mod.ts";
import { assertToken } from "../protocol/mod.ts";
import { CONNECTION_HELP, intOption, onePositional, parseCommand } from "./args.ts";
import { openClient } from "./connection.ts";
import { CliError, EXIT, UsageError, type Command, type Io } from "./io.ts";

const USAGE = `Usage: celerity sink postgres --url postgres://user@host/db [--table celerity_tasks] [--durable sink-postgres]

Follows the task events of the namespace and keeps a results table in PostgreSQL: one row per task
id with its name, queue, state, arguments, result, error, retries, worker and times (the schema is
in docs/results-table.md). The command creates the table and its bookkeeping by numbered
migrations (celerity_migrations), then runs until SIGINT/SIGTERM, when it finishes the batch in
hand, commits, acknowledges and exits 0.

Every event is applied exactly once across restarts and crashes: each transaction stores, with
the rows, the stream sequence it applied up to (celerity_sink_offsets), and messages are
acknowledged only after the commit. Events from different processes arrive in any order; a row
keeps the state of its highest-precedence event (sent < received < started < progress < retried
< succeeded/failed/revoked/dead-lettered), so every order converges to the same row.

Options:
  --url <url>         PostgreSQL connection URL (default: CELERITY_SINK_URL, then DATABASE_URL)
  --table <name>      table, optionally schema.table (default celerity_tasks in the current schema;
                      a named schema is created)
  --durable <name>    durable consumer of the events stream (default sink-postgres)
  --batch <n>         at most n event batches (stream messages) per transaction (default 256)
  --once              apply what the stream holds now, then exit
  --verbose           print each committed transaction to stderr

${CONNECTION_HELP}

Examples:
  celerity sink postgres --url postgres://celerity@db/platform
  celerity sink postgres --url postgres://celerity@db/platform --table results.tasks --once

Exit codes:
  0  stopped by SIGINT/SIGTERM (or caught up with --once)
  1  NATS or PostgreSQL cannot be reached or failed, or another sink holds this table
  2  bad usage`;

/** The URL with its password hidden, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]+):[^@]*@/, "//$1:***@");
  }
}

function reason(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" && !err.message.includes(code) ? `${err.message} (${code})` : err.message || err.name;
}

export const sinkCommand: Command = {
  name: "sink",
  summary: "keep a PostgreSQL results table from the events (sink postgres --url …)",
  usage: USAGE,
  async run(argv: string[], io: Io): Promise<number> {
    const { values, positionals } = parseCommand(argv, {
      url: { type: "string" },
      table: { type: "string" },
      durable: { type: "string" },
      batch: { type: "string" },
      once: { type: "boolean" },
      verbose: { type: "boolean" },
    });
    const kind = onePositional(positionals, "sink kind (postgres)");
    if (kind !== "postgres") throw new UsageError(`unknown sink ${JSON.stringify(kind)}: the sink kind is postgres`);
    const url = values.url ?? process.env.CELERITY_SINK_URL ?? process.env.DATABASE_URL;
    if (!url) throw new UsageError("missing --url postgres://… (or CELERITY_SINK_URL, DATABASE_URL)");
    const durable = values.durable ?? "sink-postgres";
    assertToken("durable name", durable);
    const batch = values.batch === undefined ? 256 : intOption("--batch", values.batch, 1);
    let table: PostgresResultsTable;
    const { Client: PgClient } = await import("pg");
    const db = new PgClient({ connectionString: url, application_name: "celerity-sink" });
    try {
      table = new PostgresResultsTable(db, { table: values.table, durable });
    } catch (err) {
      throw new UsageError(`--table: ${(err as Error).message}`);
    }

    const client = await openClient(values);
    const stop = new AbortController();
    let failure: Error | undefined;
    const onSignal = (signal: string) => {
      if (!stop.signal.aborted) io.err(`${signal}: finishing the batch in hand, then exiting`);
      stop.abort();
    };
    const onInt = () => onSignal("SIGINT");
    const onTerm = () => onSignal("SIGTERM");
    process.on("SIGINT", onInt);
    process.on("SIGTERM", onTerm);
    // A connection lost between queries: stop, and report it (nothing unacked was committed).
    db.on("error", (err) => {
      failure ??= err;
      stop.abort();
    });
    let connected = false;
    try {
      try {
        await db.connect();
        connected = true;
      } catch (err) {
        throw new CliError(`cannot connect to PostgreSQL at ${redactUrl(url)}: ${reason(err)}`);
      }
      const applied = await table.migrate();
      if (applied.length > 0) io.err(`migrated ${table.qualifiedName} to schema version ${applied[applied.length - 1]}`);
      const stream = client.names.eventsStream;
      if (!(await table.lock(stream))) {
        throw new CliError(`another sink is writing ${table.qualifiedName} from ${stream} (it holds the table's advisory lock): stop it first`);
      }
      const stats: SinkStats = await runSink(client, table, {
        durable,
        batch,
        follow: values.once !== true,
        signal: stop.signal,
        onNotice: (text) => io.err(`notice: ${text}`),
        onStart: (s) => {
          const how = s.offset === 0 ? "from its start" : `after sequence ${s.offset}`;
          io.err(`sink postgres: ${s.stream} → ${table.qualifiedName} ${how} (durable ${durable}${s.realigned ? ", realigned to the table's offset" : ""}; ${s.pending} batches pending)`);
        },
        onBatch: values.verbose
          ? (b) => io.err(`applied sequences ${b.firstSeq}..${b.lastSeq}: ${b.events} events, ${b.tasks} tasks, ${b.ms} ms`)
          : undefined,
      });
      if (failure) throw failure;
      io.out(`applied ${stats.events} events (${stats.messages} batches in ${stats.batches} transactions) to ${table.qualifiedName}; offset ${stats.offset}${stats.duplicates ? `; ${stats.duplicates} redelivered batches skipped` : ""}${stats.undecodable ? `; ${stats.undecodable} undecodable batches skipped` : ""}`);
      return EXIT.ok;
    } catch (err) {
      if (err instanceof CliError) throw err;
      const e = failure ?? err;
      throw new CliError(`sink postgres: ${reason(e)} (nothing uncommitted was acknowledged: run it again to resume)`);
    } finally {
      process.off("SIGINT", onInt);
      process.off("SIGTERM", onTerm);
      if (connected) await db.end().catch(() => {});
      await client.close();
    }
  },
};
