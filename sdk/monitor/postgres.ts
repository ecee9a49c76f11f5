/**
 * A results table in PostgreSQL, kept by {@link runSink}: one row per task id, created by whichever
 * of its events arrives first (a task-succeeded may come before its task-sent, as Cadasta's result
 * rows could come before their task rows: no foreign key, on purpose).
 *
 * It takes any client with pg's `query(text, values)` (a `pg.Client` or a checked-out pool client;
 * one connection, since `apply` runs a transaction and `lock` holds a session lock), so this module
 * carries no driver: the CLI brings `pg`.
 */
import type { SinkBatch, SinkOffset, SinkTarget } from "./sink.ts";
import type { TaskView } from "./timeline.ts";

/** The part of a PostgreSQL client the results table uses (pg.Client fits). */
export interface SqlClient {
  query(text: string, values?: unknown[]): Promise<{ rows: Record<string, unknown>[]; rowCount?: number | null }>;
}

/** Options of {@link PostgresResultsTable}. */
export interface ResultsTableOptions {
  /** Table name, optionally schema-qualified (`celerity.tasks`); default `celerity_tasks` in the current schema. */
  table?: string;
  /** Name recorded with the offset for operators (the durable consumer). */
  durable?: string;
}

/** Thrown when another process moved this table's offset: two sinks on one table and stream. */
export class SinkConflictError extends Error {
  override name = "SinkConflictError";
}

const IDENT = /^[A-Za-z_][A-Za-z0-9_]{0,62}$/;

function ident(kind: string, name: string): string {
  if (!IDENT.test(name)) throw new TypeError(`${kind} ${JSON.stringify(name)} is not a plain SQL identifier: use letters, digits and _ (at most 63)`);
  return `"${name}"`;
}

/** One schema change, applied once per table and recorded in `celerity_migrations`. */
interface Migration {
  version: number;
  name: string;
  sql(table: string, plain: string): string[];
}

/** The schema, as numbered migrations. Never edit one that shipped: add the next. */
const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "create the results table",
    sql: (t, plain) => [
      `CREATE TABLE IF NOT EXISTS ${t} (
        id text PRIMARY KEY,
        name text,
        queue text,
        state text NOT NULL,
        last_event text NOT NULL,
        state_key bigint[] NOT NULL,
        args jsonb,
        result jsonb,
        error jsonb,
        reason text,
        dead_letter_reason text,
        progress jsonb,
        progress_at timestamptz,
        retries integer NOT NULL DEFAULT 0,
        attempts integer NOT NULL DEFAULT 0,
        worker text,
        runtime_ms bigint,
        sent_at timestamptz,
        received_at timestamptz,
        started_at timestamptz,
        finished_at timestamptz,
        last_event_at timestamptz,
        updated_at timestamptz NOT NULL DEFAULT now(),
        last_event_seq bigint,
        events_applied integer NOT NULL DEFAULT 0
      )`,
      `CREATE INDEX IF NOT EXISTS ${ident("index", `${plain.slice(0, 50)}_state_idx`)} ON ${t} (state)`,
      `CREATE INDEX IF NOT EXISTS ${ident("index", `${plain.slice(0, 50)}_name_idx`)} ON ${t} (name)`,
      `CREATE INDEX IF NOT EXISTS ${ident("index", `${plain.slice(0, 50)}_updated_idx`)} ON ${t} (updated_at)`,
    ],
  },
];

/** The latest schema version this code writes. */
export const RESULTS_TABLE_VERSION = MIGRATIONS[MIGRATIONS.length - 1]!.version;

/** The columns of one upsert row, as jsonb_to_recordset reads them. */
const RECORD = `x(id text, name text, queue text, state text, last_event text, state_key bigint[], args text, result text,
  error text, reason text, dead_letter_reason text, progress text, progress_at bigint, retries integer, attempts integer,
  worker text, runtime_ms bigint, sent_at bigint, received_at bigint, started_at bigint, finished_at bigint,
  last_event_at bigint, last_event_seq bigint, events integer)`;

const ts = (col: string) => `to_timestamp(x.${col} / 1000.0)`;

/** The upsert: one statement per batch; the merge rules are mergeViews()'s, in SQL. */
function upsertSql(t: string): string {
  const wins = "(EXCLUDED.state_key > t.state_key)";
  const byState = (col: string) => `${col} = CASE WHEN ${wins} THEN EXCLUDED.${col} ELSE t.${col} END`;
  return `INSERT INTO ${t} AS t (id, name, queue, state, last_event, state_key, args, result, error, reason, dead_letter_reason,
      progress, progress_at, retries, attempts, worker, runtime_ms, sent_at, received_at, started_at, finished_at,
      last_event_at, updated_at, last_event_seq, events_applied)
    SELECT x.id, x.name, x.queue, x.state, x.last_event, x.state_key, x.args::jsonb, x.result::jsonb, x.error::jsonb,
      x.reason, x.dead_letter_reason, x.progress::jsonb, ${ts("progress_at")}, COALESCE(x.retries, 0), COALESCE(x.attempts, 0),
      x.worker, x.runtime_ms, ${ts("sent_at")}, ${ts("received_at")}, ${ts("started_at")}, ${ts("finished_at")},
      ${ts("last_event_at")}, now(), x.last_event_seq, x.events
    FROM jsonb_to_recordset($1::jsonb) AS ${RECORD}
    ON CONFLICT (id) DO UPDATE SET
      name = COALESCE(t.name, EXCLUDED.name),
      queue = COALESCE(t.queue, EXCLUDED.queue),
      ${byState("state")},
      ${byState("last_event")},
      ${byState("state_key")},
      ${byState("result")},
      ${byState("error")},
      ${byState("reason")},
      ${byState("runtime_ms")},
      ${byState("finished_at")},
      args = COALESCE(t.args, EXCLUDED.args),
      worker = CASE WHEN ${wins} THEN COALESCE(EXCLUDED.worker, t.worker) ELSE COALESCE(t.worker, EXCLUDED.worker) END,
      dead_letter_reason = COALESCE(t.dead_letter_reason, EXCLUDED.dead_letter_reason),
      progress = CASE WHEN EXCLUDED.progress_at IS NOT NULL AND (t.progress_at IS NULL OR EXCLUDED.progress_at > t.progress_at)
        THEN EXCLUDED.progress ELSE t.progress END,
      progress_at = GREATEST(t.progress_at, EXCLUDED.progress_at),
      retries = GREATEST(t.retries, EXCLUDED.retries),
      attempts = t.attempts + EXCLUDED.attempts,
      sent_at = LEAST(t.sent_at, EXCLUDED.sent_at),
      received_at = GREATEST(t.received_at, EXCLUDED.received_at),
      started_at = GREATEST(t.started_at, EXCLUDED.started_at),
      last_event_at = GREATEST(t.last_event_at, EXCLUDED.last_event_at),
      updated_at = now(),
      last_event_seq = GREATEST(t.last_event_seq, EXCLUDED.last_event_seq),
      events_applied = t.events_applied + EXCLUDED.events_applied`;
}

function base64(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(s);
}

/** Text PostgreSQL accepts: no NUL characters. */
function pgText(s: string): string;
function pgText(s: string | undefined): string | undefined;
function pgText(s: string | undefined): string | undefined {
  return s !== undefined && s.includes("\u0000") ? s.replaceAll("\u0000", "\uFFFD") : s;
}

/**
 * A value as jsonb text: bigints as numbers (strings beyond 2^53), bytes as `{"$bytes": base64}`,
 * NUL characters (which jsonb refuses) replaced by U+FFFD, undefined as null.
 */
export function jsonbText(value: unknown): string {
  return JSON.stringify(value === undefined ? null : value, (_k, v: unknown) => {
    if (typeof v === "bigint") return Number.isSafeInteger(Number(v)) ? Number(v) : v.toString();
    if (typeof v === "string") return pgText(v);
    if (v instanceof Uint8Array) return { $bytes: base64(v) };
    if (v instanceof Map) return Object.fromEntries(v);
    if (v instanceof Set) return [...v];
    return v;
  });
}

/** One view as an upsert record. */
function record(v: TaskView): Record<string, unknown> {
  const r: Record<string, unknown> = {
    id: pgText(v.id),
    name: pgText(v.task) || null,
    queue: pgText(v.queue) ?? null,
    state: v.state,
    last_event: v.lastType,
    state_key: v.key,
    retries: v.retries,
    attempts: v.attempts,
    worker: pgText(v.worker) ?? null,
    reason: pgText(v.reason) ?? null,
    dead_letter_reason: pgText(v.deadLetterReason) ?? null,
    runtime_ms: v.runtimeMs === undefined ? null : Math.round(v.runtimeMs),
    sent_at: v.sentAt ?? null,
    received_at: v.receivedAt ?? null,
    started_at: v.startedAt ?? null,
    finished_at: v.finishedAt ?? null,
    progress_at: v.progressAt ?? null,
    last_event_at: v.lastEventAt,
    last_event_seq: v.lastSeq ?? null,
    events: v.events,
  };
  // Absent stays SQL NULL ("not known yet"); a present null is the jsonb value null.
  if ("args" in v) r.args = jsonbText(v.args);
  if ("result" in v) r.result = jsonbText(v.result);
  if (v.error !== undefined) r.error = jsonbText(v.error);
  if (v.progressAt !== undefined) r.progress = jsonbText(v.progress);
  return r;
}

/** A results table and its bookkeeping (`celerity_migrations`, `celerity_sink_offsets`) in one schema. */
export class PostgresResultsTable implements SinkTarget {
  readonly db: SqlClient;
  /** Table name without schema. */
  readonly name: string;
  readonly durable: string | undefined;
  #schema: string | undefined;

  constructor(db: SqlClient, options: ResultsTableOptions = {}) {
    this.db = db;
    const [a, b, ...rest] = (options.table ?? "celerity_tasks").split(".");
    if (rest.length > 0 || a === undefined) throw new TypeError(`table ${JSON.stringify(options.table)} must be "table" or "schema.table"`);
    if (b !== undefined) {
      ident("schema", a);
      ident("table", b);
      this.#schema = a;
      this.name = b;
    } else {
      ident("table", a);
      this.name = a;
    }
    this.durable = options.durable;
  }

  /** The schema (the connection's current schema unless the table named one); known after migrate(). */
  get schema(): string {
    if (this.#schema === undefined) throw new Error("the schema is known after migrate()");
    return this.#schema;
  }

  /** `schema.table`, for messages. */
  get qualifiedName(): string {
    return `${this.schema}.${this.name}`;
  }

  #q(name: string): string {
    return `${ident("schema", this.schema)}.${ident("table", name)}`;
  }

  /**
   * Creates the schema (when named), the bookkeeping tables and the results table, applying every
   * migration this table has not had yet, in one transaction serialised by an advisory lock.
   * Idempotent. Resolves with the versions it applied ([] when up to date).
   */
  async migrate(): Promise<number[]> {
    const db = this.db;
    await db.query("BEGIN");
    try {
      await db.query("SELECT pg_advisory_xact_lock(hashtext('celerity_migrations'))");
      if (this.#schema === undefined) {
        const { rows } = await db.query("SELECT current_schema() AS s");
        const s = rows[0]?.s;
        if (typeof s !== "string") throw new Error("the connection has no current schema (search_path is empty): name one, --table schema.table");
        this.#schema = s;
      } else {
        await db.query(`CREATE SCHEMA IF NOT EXISTS ${ident("schema", this.#schema)}`);
      }
      await db.query(`CREATE TABLE IF NOT EXISTS ${this.#q("celerity_migrations")} (
        target text NOT NULL,
        version integer NOT NULL,
        name text NOT NULL,
        applied_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (target, version)
      )`);
      await db.query(`CREATE TABLE IF NOT EXISTS ${this.#q("celerity_sink_offsets")} (
        target text NOT NULL,
        stream text NOT NULL,
        seq bigint NOT NULL,
        stream_created text,
        durable text,
        updated_at timestamptz NOT NULL DEFAULT now(),
        PRIMARY KEY (target, stream)
      )`);
      const { rows } = await db.query(`SELECT version FROM ${this.#q("celerity_migrations")} WHERE target = $1`, [this.name]);
      const have = new Set(rows.map((r) => Number(r.version)));
      const applied: number[] = [];
      for (const m of MIGRATIONS) {
        if (have.has(m.version)) continue;
        for (const statement of m.sql(this.#q(this.name), this.name)) await db.query(statement);
        await db.query(`INSERT INTO ${this.#q("celerity_migrations")} (target, version, name) VALUES ($1, $2, $3)`, [this.name, m.version, m.name]);
        applied.push(m.version);
      }
      const newer = [...have].filter((v) => v > RESULTS_TABLE_VERSION);
      if (newer.length > 0) throw new Error(`table ${this.qualifiedName} has schema version ${Math.max(...newer)}; this Celerity knows up to ${RESULTS_TABLE_VERSION}: upgrade it`);
      await db.query("COMMIT");
      return applied;
    } catch (err) {
      await db.query("ROLLBACK").catch(() => {});
      throw err;
    }
  }

  /**
   * Takes the session lock that makes this process the only sink of this table and `stream`;
   * false when another session holds it. Released when the connection closes (also on a crash).
   */
  async lock(stream: string): Promise<boolean> {
    const { rows } = await this.db.query("SELECT pg_try_advisory_lock(hashtext($1), hashtext($2)) AS ok", [this.qualifiedName, stream]);
    return rows[0]?.ok === true;
  }

  async readOffset(stream: string): Promise<SinkOffset | undefined> {
    const { rows } = await this.db.query(`SELECT seq, stream_created FROM ${this.#q("celerity_sink_offsets")} WHERE target = $1 AND stream = $2`, [this.name, stream]);
    const row = rows[0];
    if (!row) return undefined;
    const offset: SinkOffset = { seq: Number(row.seq) };
    if (typeof row.stream_created === "string") offset.streamCreated = row.stream_created;
    return offset;
  }

  /** Upserts the batch's views and moves the offset from `batch.previous`, in one transaction. */
  async apply(batch: SinkBatch): Promise<void> {
    const db = this.db;
    await db.query("BEGIN");
    try {
      if (batch.tasks.length > 0) await db.query(upsertSql(this.#q(this.name)), [JSON.stringify(batch.tasks.map(record))]);
      const moved = await db.query(
        `INSERT INTO ${this.#q("celerity_sink_offsets")} AS o (target, stream, seq, stream_created, durable, updated_at)
         VALUES ($1, $2, $3, $4, $5, now())
         ON CONFLICT (target, stream) DO UPDATE SET seq = EXCLUDED.seq, stream_created = EXCLUDED.stream_created,
           durable = EXCLUDED.durable, updated_at = now()
         WHERE o.seq IS NOT DISTINCT FROM $6::bigint`,
        [this.name, batch.stream, batch.lastSeq, batch.streamCreated, this.durable ?? null, batch.previous ?? null],
      );
      if (moved.rowCount !== 1) {
        throw new SinkConflictError(`the offset of ${this.qualifiedName} for ${batch.stream} moved under this sink (expected ${batch.previous ?? "none"}): is another sink writing this table?`);
      }
      await db.query("COMMIT");
    } catch (err) {
      await db.query("ROLLBACK").catch(() => {});
      throw err;
    }
  }
}
