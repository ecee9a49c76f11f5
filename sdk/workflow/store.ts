/**
 * Workflow state in JetStream: one KV bucket per namespace, `<ns>_workflows`, MessagePack values
 * (the protocol's encoding, so results carry bytes and Dates between stages as tasks do).
 */
import type { KV } from "@nats-io/kv";
import { isCasConflict, openBucket, type Client } from "../client/mod.ts";
import { decode, encode, type ErrorShape } from "../protocol/mod.ts";
import type { WorkflowData } from "./definition.ts";

/** A run's state as set by pause/resume/cancel (its progress is derived from its jobs). */
export type RunState = "running" | "paused" | "cancelled";

/** Job states: `pending` (recorded, not sent: waiting for a send or a resume), `running` (its task was sent), then final. */
export type JobState = "pending" | "running" | "succeeded" | "failed" | "cancelled";

/** `run.<runId>`. */
export interface RunRecord {
  v: 1;
  runId: string;
  workflow: string;
  definition: WorkflowData;
  state: RunState;
  createdAt: number;
  updatedAt: number;
  objects: number;
}

/** `job.<runId>.<jobId>`. */
export interface JobRecord {
  v: 1;
  runId: string;
  jobId: string;
  stage: string;
  state: JobState;
  /** The object the job's task receives (its arguments): a started object, an element of a split, a group's array. */
  objectRef: unknown;
  /** The started object this job descends from (its index), or `*` after a run-wide group. */
  root: string;
  /** The job whose result created this one (absent for first-stage jobs and groups). */
  parentJob?: string;
  /** For a group job: the jobs whose results it gathers. */
  parentJobs?: string[];
  /** The task of the current attempt: `<runId>.<jobId>.<attempt>`. */
  taskId: string;
  attempt: number;
  createdAt: number;
  /** When the current attempt's task was sent. */
  startedAt?: number;
  finishedAt?: number;
  result?: unknown;
  error?: ErrorShape | { type: string; message: string };
  /** For each next stage grouping by a TypeScript function: the group key of each object this job hands on. */
  groupKeys?: Record<string, string[]>;
  /** Jobs this one created when it succeeded (its next non-group stages). */
  children?: string[];
  /** True once what follows a succeeded job (its next jobs, groups) was recorded and sent. */
  advanced?: boolean;
}

/** `grp.<runId>.<stage>.<key>`: the batches a group stage made, by member arrival id. */
export interface GroupRecord {
  v: 1;
  key: string;
  batches: { jobId: string; members: string[] }[];
}

/** The workflows bucket of a namespace. */
export function workflowBucket(namespace: string): string {
  return `${namespace}_workflows`;
}

const opened = new WeakMap<object, Promise<KV>>();

/** Opens (creating if needed) the workflows bucket, once per client. */
export function workflowKv(client: Client): Promise<KV> {
  let p = opened.get(client);
  if (!p) {
    p = openBucket(client, workflowBucket(client.names.namespace));
    p.catch(() => opened.delete(client));
    opened.set(client, p);
  }
  return p;
}

const dec = new TextDecoder();

/**
 * A record as stored: MessagePack, as task arguments and results travel (JSON turned bytes into
 * `{ type: "Buffer", data }` and Dates into strings). Properties set to `undefined` are left out,
 * as JSON did, so an optional field reads back absent rather than `null`.
 */
export function encodeRecord(value: unknown): Uint8Array {
  return encode(withoutUndefined(value));
}

function withoutUndefined(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(withoutUndefined);
  if (value === null || typeof value !== "object") return value;
  const proto = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null) return value; // bytes, Dates, Maps, …: as the protocol writes them
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(value)) if (x !== undefined) out[k] = withoutUndefined(x);
  return out;
}

/**
 * A stored record. Records written before MessagePack are JSON objects: their first byte, `{`
 * (0x7b), is a positive integer in MessagePack, never a record, so both read unambiguously.
 */
export function decodeRecord<T>(bytes: Uint8Array): T {
  return (bytes[0] === 0x7b ? JSON.parse(dec.decode(bytes)) : decode(bytes)) as T;
}

export async function read<T>(kv: KV, key: string): Promise<{ value: T; revision: number } | undefined> {
  const e = await kv.get(key);
  if (!e || e.operation !== "PUT" || e.value.length === 0) return undefined;
  return { value: decodeRecord<T>(e.value), revision: e.revision };
}

/** Creates `key` unless it exists; true when this call created it. */
export async function createIfAbsent(kv: KV, key: string, value: unknown): Promise<boolean> {
  try {
    await kv.create(key, encodeRecord(value));
    return true;
  } catch (err) {
    if (isCasConflict(err)) return false;
    throw err;
  }
}

/**
 * Compare-and-set: `fn` gets the current value (undefined when absent) and returns the new one,
 * or undefined to leave it. Retried on a concurrent write. Resolves with the stored value.
 */
export async function mutate<T>(kv: KV, key: string, fn: (current: T | undefined) => T | undefined): Promise<T | undefined> {
  for (let attempt = 0; attempt < 100; attempt++) {
    const cur = await read<T>(kv, key);
    const next = fn(cur ? structuredClone(cur.value) : undefined);
    if (next === undefined) return cur?.value;
    try {
      if (cur) await kv.update(key, encodeRecord(next), cur.revision);
      else await kv.create(key, encodeRecord(next));
      return next;
    } catch (err) {
      if (!isCasConflict(err)) throw err;
      await new Promise((r) => setTimeout(r, Math.random() * 5 * Math.min(attempt + 1, 10)));
    }
  }
  throw new Error(`workflow state ${key}: too many concurrent writers`);
}

/**
 * The keys matching `filter` (a subject filter under the bucket), from one stream-info snapshot.
 * (`kv.keys()` can wait for an idle heartbeat when keys are rewritten while it lists them.)
 */
export async function listKeys(client: Client, filter: string): Promise<string[]> {
  const bucket = workflowBucket(client.names.namespace);
  const prefix = `$KV.${bucket}.`;
  const jsm = await client.jsm();
  const info = await jsm.streams.info(`KV_${bucket}`, { subjects_filter: `${prefix}${filter}` });
  return Object.keys(info.state.subjects ?? {}).map((s) => s.slice(prefix.length));
}

/** Every job of a run. */
export async function listJobs(client: Client, kv: KV, runId: string): Promise<JobRecord[]> {
  const keys = await listKeys(client, `job.${runId}.>`);
  const jobs = await Promise.all(keys.map((k) => read<JobRecord>(kv, k)));
  return jobs.filter((j): j is { value: JobRecord; revision: number } => j !== undefined).map((j) => j.value)
    .sort((a, b) => a.createdAt - b.createdAt || (a.jobId < b.jobId ? -1 : a.jobId > b.jobId ? 1 : 0));
}

/**
 * Removes every record of run `runId` from the bucket: its jobs, its group batches, then the run
 * record (last, so an interrupted purge can be run again). Resolves with the records removed.
 * Purged by subject, not deleted key by key: no tombstone is left behind.
 */
export async function purgeRun(client: Client, runId: string): Promise<number> {
  const bucket = workflowBucket(client.names.namespace);
  const jsm = await client.jsm();
  let purged = 0;
  for (const filter of [`job.${runId}.>`, `grp.${runId}.>`, runKey(runId)]) {
    purged += (await jsm.streams.purge(`KV_${bucket}`, { filter: `$KV.${bucket}.${filter}` })).purged;
  }
  return purged;
}

export const runKey = (runId: string) => `run.${runId}`;
export const jobKey = (runId: string, jobId: string) => `job.${runId}.${jobId}`;
export const groupKey = (runId: string, stage: string, key: string) => `grp.${runId}.${stage}.${key}`;
