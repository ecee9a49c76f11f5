/**
 * Running workflows: every job is recorded in the workflows bucket and runs as its own task; each
 * stage task carries a link to `celerity.workflow.advance` (on success) and an error link to
 * `celerity.workflow.failed` (on final failure). Those internal tasks, run by any worker with
 * {@link registerWorkflowTasks}, record the job's outcome and create and send what follows it. No
 * process holds a run in memory: clients, workers and the server may restart at any time.
 */
import * as v from "valibot";
import type { KV } from "@nats-io/kv";
import type { Client, SendOptions } from "../client/mod.ts";
import type { Callbacks } from "../canvas/mod.ts";
import { CelerityError, ProtocolError, type ErrorShape } from "../protocol/mod.ts";
import { signature } from "../signatures/mod.ts";
import { ancestors, descendants, registerWorkflow, resolveWorkflow, type Stage, type Workflow } from "./definition.ts";
import {
  createIfAbsent,
  groupKey,
  jobKey,
  listJobs,
  listKeys,
  mutate,
  purgeRun,
  read,
  runKey,
  workflowKv,
  type GroupRecord,
  type JobRecord,
  type JobState,
  type RunRecord,
  type RunState,
} from "./store.ts";

/** The internal task that records a stage task's success and sends what follows. */
export const ADVANCE_TASK = "celerity.workflow.advance";
/** The internal task that records a stage task's final failure. */
export const FAILED_TASK = "celerity.workflow.failed";

const LinkArgs = v.object({ runId: v.string(), jobId: v.string(), taskId: v.string(), parent: v.optional(v.unknown()) });
type LinkArgs = v.InferOutput<typeof LinkArgs>;

const RUN_ID = /^[A-Za-z0-9_-]{1,100}$/;

/** A short deterministic hash (cyrb53) in base 36: job ids derived from their parents. */
export function shortHash(text: string): string {
  let h1 = 0xdeadbeef, h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (4294967296 * (2097151 & h2) + (h1 >>> 0)).toString(36);
}

function newJob(runId: string, jobId: string, stage: string, objectRef: unknown, root: string, extra: Partial<JobRecord> = {}): JobRecord {
  return { v: 1, runId, jobId, stage, state: "pending", objectRef, root, taskId: `${runId}.${jobId}.1`, attempt: 1, createdAt: Date.now(), ...extra };
}

/** Options of {@link startWorkflow}. */
export interface StartOptions {
  /** The run's id (letters, digits, `_`, `-`); default a random UUID. Starting an existing id throws. */
  runId?: string;
  /** Record the run paused: nothing is sent until {@link resume}. */
  paused?: boolean;
}

/** What {@link startWorkflow} returns. */
export interface StartedRun {
  runId: string;
  /** The first stages' jobs, one per object per first stage. */
  jobIds: string[];
}

/**
 * Starts a run of `wf` over `objects`: records the run and one job per object in each first stage
 * (in JetStream), then sends their tasks. Resolves once JetStream stored them; the rest is done by
 * workers, so the caller may exit.
 */
export async function startWorkflow(client: Client, wf: Workflow, objects: readonly unknown[], options: StartOptions = {}): Promise<StartedRun> {
  if (wf?.kind !== "celerity.workflow") throw new ProtocolError("startWorkflow() takes a workflow from defineWorkflow() or loadWorkflow()");
  if (!Array.isArray(objects)) throw new ProtocolError("startWorkflow() takes an array of objects");
  const runId = options.runId ?? crypto.randomUUID();
  if (!RUN_ID.test(runId)) throw new ProtocolError(`run id ${JSON.stringify(runId)} is invalid: use up to 100 letters, digits, _ and -`);
  const kv = await workflowKv(client);
  if (await read(kv, runKey(runId))) throw new ProtocolError(`workflow run "${runId}" already exists`);
  const jobs: JobRecord[] = [];
  objects.forEach((o, i) => {
    for (const stage of wf.first) jobs.push(newJob(runId, `${stage}-${i}`, stage, o, String(i)));
  });
  // Jobs first: a run record is never seen without its jobs.
  await Promise.all(jobs.map((j) => createIfAbsent(kv, jobKey(runId, j.jobId), j)));
  const now = Date.now();
  const run: RunRecord = { v: 1, runId, workflow: wf.name, definition: wf.data, state: options.paused ? "paused" : "running", createdAt: now, updatedAt: now, objects: objects.length };
  if (!(await createIfAbsent(kv, runKey(runId), run))) throw new ProtocolError(`workflow run "${runId}" already exists`);
  if (!options.paused) await sendAll(client, kv, wf, jobs);
  return { runId, jobIds: jobs.map((j) => j.jobId) };
}

async function sendAll(client: Client, kv: KV, wf: Workflow, jobs: JobRecord[]): Promise<void> {
  // A few at a time: ordered enough to read well, fast enough for thousands.
  for (let i = 0; i < jobs.length; i += 32) await Promise.all(jobs.slice(i, i + 32).map((j) => sendJob(client, kv, wf, j)));
}

/**
 * Sends job `job`'s task (its id is `<runId>.<jobId>.<attempt>`, so a repeated send is dropped by
 * the server's deduplication) and marks it running. A send the server refuses for good (invalid
 * arguments, unknown queue, too large) marks the job failed instead: the upstream job stays
 * succeeded.
 */
async function sendJob(client: Client, kv: KV, wf: Workflow, job: JobRecord): Promise<void> {
  const stage = wf.stages[job.stage];
  if (!stage) throw new ProtocolError(`workflow "${wf.name}" has no stage "${job.stage}" (run ${job.runId})`);
  const link = { runId: job.runId, jobId: job.jobId, taskId: job.taskId };
  const callbacks: Callbacks = {
    link: [{ task: ADVANCE_TASK, args: link, queue: wf.queue }],
    linkError: [{ task: FAILED_TASK, args: link, queue: wf.queue }],
  };
  const opts: SendOptions = {
    ...(stage.signature ? {} : (stage.options ?? {})),
    id: job.taskId,
    meta: { workflow: { runId: job.runId, jobId: job.jobId, stage: job.stage } },
    callbacks,
  };
  if (stage.queue && stage.queue !== stage.signature?.options.queue) opts.queue = stage.queue;
  try {
    if (stage.signature) await client.send(stage.signature, job.objectRef as never, opts);
    else await client.send(stage.task, job.objectRef, opts);
  } catch (err) {
    if (!permanent(err)) throw err;
    const e = err as Error;
    await mutate<JobRecord>(kv, jobKey(job.runId, job.jobId), (cur) =>
      cur && cur.taskId === job.taskId && cur.state === "pending"
        ? { ...cur, state: "failed", finishedAt: Date.now(), error: { type: e.name, message: `could not send: ${e.message}` } }
        : undefined);
    return;
  }
  await mutate<JobRecord>(kv, jobKey(job.runId, job.jobId), (cur) =>
    cur && cur.taskId === job.taskId && cur.state === "pending" ? { ...cur, state: "running", startedAt: Date.now() } : undefined);
}

function permanent(err: unknown): boolean {
  if (!(err instanceof CelerityError)) return false;
  return ["InvalidArgumentsError", "UnknownQueueError", "ProtocolError", "PayloadTooLargeError"].includes(err.name);
}

/** The objects a finished job hands on: its result, or each element of it when the stage splits. */
function itemsOf(stage: Stage, result: unknown): unknown[] {
  if (!stage.split) return [result];
  if (stage.split === true) {
    if (!Array.isArray(result)) throw new ProtocolError(`stage "${stage.name}" splits its result, but the result is not an array`);
    return [...result];
  }
  const items = stage.split(result);
  if (!Array.isArray(items)) throw new ProtocolError(`stage "${stage.name}": split() must return an array`);
  return [...items];
}

/** Records job success and sends what follows it (the body of `celerity.workflow.advance`). */
export async function advance(client: Client, args: LinkArgs): Promise<void> {
  const { runId, jobId, taskId } = args;
  const kv = await workflowKv(client);
  const run = await read<RunRecord>(kv, runKey(runId));
  const found = await read<JobRecord>(kv, jobKey(runId, jobId));
  if (!run || !found) return;
  const job = found.value;
  if (job.taskId !== taskId) return; // an attempt that was replaced by retry()
  const wf = resolveWorkflow(run.value.definition);
  const stage = wf.stages[job.stage]!;
  let done: JobRecord | undefined = job;
  if (job.state === "pending" || job.state === "running") {
    const result = args.parent;
    let children: string[] = [];
    let groupKeys: JobRecord["groupKeys"];
    if (run.value.state !== "cancelled") {
      let items: unknown[];
      let what = "split: ";
      try {
        items = itemsOf(stage, result);
        what = ""; // groupKeysOf names the group stage
        groupKeys = groupKeysOf(wf, stage, items);
      } catch (err) {
        // The downstream hand-over failed: this job shows the error, retry() runs it again.
        const e = err as Error;
        await mutate<JobRecord>(kv, jobKey(runId, jobId), (cur) =>
          cur && cur.taskId === taskId && (cur.state === "pending" || cur.state === "running")
            ? { ...cur, state: "failed", result, finishedAt: Date.now(), error: { type: e?.name || "Error", message: `${what}${e?.message ?? String(err)}` } }
            : undefined);
        return;
      }
      const created: JobRecord[] = [];
      for (const n of stage.next) {
        if (wf.stages[n]!.group) continue;
        items.forEach((item, i) => created.push(newJob(runId, `${n}-${shortHash(`${jobId}/${n}/${i}`)}`, n, item, job.root, { parentJob: jobId })));
      }
      // Children are recorded before the job is marked succeeded: a succeeded job's children exist.
      await Promise.all(created.map((c) => createIfAbsent(kv, jobKey(runId, c.jobId), c)));
      children = created.map((c) => c.jobId);
    }
    done = await mutate<JobRecord>(kv, jobKey(runId, jobId), (cur) =>
      cur && cur.taskId === taskId && (cur.state === "pending" || cur.state === "running")
        ? { ...cur, state: "succeeded", result, finishedAt: Date.now(), children, ...(groupKeys ? { groupKeys } : {}) }
        : undefined);
  }
  if (!done || done.state !== "succeeded" || done.taskId !== taskId || done.advanced) return;
  await followUp(client, kv, wf, done);
}

/** Sends a succeeded job's children, fills the groups below it, and marks it advanced. */
async function followUp(client: Client, kv: KV, wf: Workflow, job: JobRecord): Promise<void> {
  const runId = job.runId;
  const toSend: string[] = [...(job.children ?? [])];
  const groups = [...descendants(wf, job.stage)].filter((s) => wf.stages[s]!.group);
  // Upstream groups first, so a group below another sees the one above complete.
  groups.sort((a, b) => ancestors(wf, a).size - ancestors(wf, b).size);
  let failure: Error | undefined;
  for (const g of groups) {
    try {
      toSend.push(...(await fillGroup(client, kv, wf, runId, g, job.root)));
    } catch (err) {
      // A group this process cannot make (a stage function it lacks, for another job's result):
      // retrying would fail the same way, so this job fails with the reason (after its children
      // are sent), the group waits on it, and retry() hands it over again, maybe to another worker.
      if (!(err instanceof ProtocolError)) throw err;
      failure = new ProtocolError(`group "${g}": ${err.message}`);
      break;
    }
  }
  await sendIfRunning(client, kv, wf, runId, toSend);
  await mutate<JobRecord>(kv, jobKey(runId, job.jobId), (cur) =>
    cur && cur.taskId === job.taskId && cur.state === "succeeded" && !cur.advanced
      ? failure
        ? { ...cur, state: "failed", finishedAt: Date.now(), error: { type: failure.name, message: failure.message } }
        : { ...cur, advanced: true }
      : undefined);
}

/**
 * The keys of `items` (a finished job's hand-over) in each next stage that groups by a TypeScript
 * function, computed once, where the function is at hand (a failure fails the job), and stored with
 * the job: filling the group later reads them, in any process.
 */
function groupKeysOf(wf: Workflow, stage: Stage, items: unknown[]): Record<string, string[]> | undefined {
  let keys: Record<string, string[]> | undefined;
  for (const n of stage.next) {
    const by = wf.stages[n]!.group?.by;
    if (typeof by !== "function") continue;
    try {
      (keys ??= {})[n] = items.map((item) => String(by(item)));
    } catch (err) {
      const e = err as Error;
      throw Object.assign(new Error(`group "${n}": ${e?.message ?? String(err)}`), { name: e?.name || "Error" });
    }
  }
  return keys;
}

/** Sends the pending jobs among `jobIds`, unless the run is paused or cancelled (read after they were recorded). */
async function sendIfRunning(client: Client, kv: KV, wf: Workflow, runId: string, jobIds: string[]): Promise<void> {
  if (!jobIds.length) return;
  const run = await read<RunRecord>(kv, runKey(runId));
  if (run?.value.state !== "running") return;
  const jobs = (await Promise.all(jobIds.map((id) => read<JobRecord>(kv, jobKey(runId, id))))).flatMap((j) => (j && j.value.state === "pending" ? [j.value] : []));
  await sendAll(client, kv, wf, jobs);
}

interface Arrival {
  id: string;
  item: unknown;
  key: string;
  jobId: string;
}

function arrivalsOf(wf: Workflow, gstage: string, job: JobRecord): Arrival[] {
  const stage = wf.stages[job.stage]!;
  const by = wf.stages[gstage]!.group!.by;
  const items = itemsOf(stage, job.result);
  return items.map((item, i) => ({
    id: stage.split ? `${job.jobId}~${i}` : job.jobId,
    item,
    jobId: job.jobId,
    key: by === "workflow" ? "*" : by === "root" ? job.root : (job.groupKeys?.[gstage]?.[i] ?? String(by(item))),
  }));
}

/**
 * Makes the jobs of group stage `gstage` that can be made now: a batch of `size` gathered objects,
 * or every remaining one once nothing more can arrive (every job upstream of the stage — of the
 * same root object for `by: "root"` — succeeded or was cancelled, and the groups above it are
 * complete). Batches are claimed with compare-and-set, so concurrent callers make each once.
 * Returns the ids of the group jobs (to send).
 */
async function fillGroup(client: Client, kv: KV, wf: Workflow, runId: string, gstage: string, root: string): Promise<string[]> {
  const g = wf.stages[gstage]!.group!;
  const up = ancestors(wf, gstage);
  const preds = new Set(Object.values(wf.stages).filter((s) => s.next.includes(gstage)).map((s) => s.name));
  const all = await listJobs(client, kv, runId);
  const scope = g.by === "root" ? all.filter((j) => j.root === root) : all;
  const upJobs = scope.filter((j) => up.has(j.stage));
  let complete = upJobs.every((j) => j.state === "succeeded" || j.state === "cancelled");
  if (complete) {
    // A group above this one that still has objects to gather is more work to come.
    for (const u of up) {
      if (!wf.stages[u]!.group) continue;
      const uPreds = Object.values(wf.stages).filter((s) => s.next.includes(u)).map((s) => s.name);
      const ids = all.filter((j) => uPreds.includes(j.stage) && j.state === "succeeded").flatMap((j) => arrivalsOf(wf, u, j).map((a) => a.id));
      const claimed = new Set<string>();
      const known = new Set(all.map((j) => j.jobId));
      for (const k of await listKeys(client, `grp.${runId}.${u}.>`)) {
        for (const b of (await read<GroupRecord>(kv, k))?.value.batches ?? []) {
          b.members.forEach((m) => claimed.add(m));
          // Claimed but its job not yet recorded (listed before it was): more work to come.
          if (!known.has(b.jobId)) complete = false;
        }
      }
      if (ids.some((id) => !claimed.has(id))) complete = false;
    }
  }
  const arrivals = scope.filter((j) => preds.has(j.stage) && j.state === "succeeded").flatMap((j) => arrivalsOf(wf, gstage, j));
  const byId = new Map(arrivals.map((a) => [a.id, a]));
  const byKey = new Map<string, Arrival[]>();
  for (const a of arrivals) byKey.set(a.key, [...(byKey.get(a.key) ?? []), a]);
  const size = g.size ?? Number.POSITIVE_INFINITY;
  const out: string[] = [];
  for (const [key, list] of byKey) {
    const keyToken = shortHash(key);
    const rec = await mutate<GroupRecord>(kv, groupKey(runId, gstage, keyToken), (cur) => {
      const state: GroupRecord = cur ?? { v: 1, key, batches: [] };
      const claimed = new Set(state.batches.flatMap((b) => b.members));
      const unclaimed = list.filter((a) => !claimed.has(a.id));
      let added = false;
      while (unclaimed.length >= size || (complete && unclaimed.length > 0)) {
        const members = unclaimed.splice(0, Math.min(size, unclaimed.length)).map((a) => a.id);
        state.batches.push({ jobId: `${gstage}-g${keyToken}-${state.batches.length}`, members });
        added = true;
      }
      return added ? state : undefined;
    });
    for (const b of rec?.batches ?? []) {
      const items = b.members.map((m) => byId.get(m)?.item);
      const parents = [...new Set(b.members.map((m) => byId.get(m)?.jobId ?? m.split("~")[0]!))];
      const groupRoot = g.by === "root" ? root : "*";
      await createIfAbsent(kv, jobKey(runId, b.jobId), newJob(runId, b.jobId, gstage, items, groupRoot, { parentJobs: parents }));
      out.push(b.jobId);
    }
  }
  return out;
}

/** Records a stage task's final failure (the body of `celerity.workflow.failed`). */
export async function recordFailure(client: Client, args: LinkArgs): Promise<void> {
  const kv = await workflowKv(client);
  const parent = (args.parent ?? {}) as { error?: ErrorShape };
  await mutate<JobRecord>(kv, jobKey(args.runId, args.jobId), (cur) =>
    cur && cur.taskId === args.taskId && (cur.state === "pending" || cur.state === "running")
      ? { ...cur, state: "failed", finishedAt: Date.now(), error: parent.error ?? { type: "Error", message: "failed" } }
      : undefined);
}

async function requireRun(kv: KV, runId: string): Promise<RunRecord> {
  const run = await read<RunRecord>(kv, runKey(runId));
  if (!run) throw new ProtocolError(`no workflow run "${runId}"`);
  return run.value;
}

/**
 * Pauses run `runId`: no new stage task is sent (jobs that become ready are recorded as pending);
 * tasks already sent run to their end. {@link resume} sends the pending jobs.
 */
export async function pause(client: Client, runId: string): Promise<void> {
  const kv = await workflowKv(client);
  const run = await requireRun(kv, runId);
  if (run.state === "cancelled") throw new ProtocolError(`workflow run "${runId}" was cancelled`);
  await mutate<RunRecord>(kv, runKey(runId), (cur) => (cur && cur.state === "running" ? { ...cur, state: "paused", updatedAt: Date.now() } : undefined));
}

/**
 * Resumes a paused run: sends every pending job. On a running run it repairs what an outage longer
 * than the internal tasks' retries left behind: pending jobs are sent, and a job that succeeded but
 * was never handed on gets a new `advance` task (run by a worker, which has the stage functions).
 */
export async function resume(client: Client, runId: string): Promise<void> {
  const kv = await workflowKv(client);
  const run = await requireRun(kv, runId);
  if (run.state === "cancelled") throw new ProtocolError(`workflow run "${runId}" was cancelled`);
  await mutate<RunRecord>(kv, runKey(runId), (cur) => (cur && cur.state === "paused" ? { ...cur, state: "running", updatedAt: Date.now() } : undefined));
  const wf = resolveWorkflow(run.definition);
  const all = await listJobs(client, kv, runId);
  await sendAll(client, kv, wf, all.filter((j) => j.state === "pending"));
  // advance() is idempotent: one still under way and this one finish the same hand-over.
  const stalled = all.filter((j) => j.state === "succeeded" && !j.advanced);
  const resumedAt = Date.now();
  await Promise.all(stalled.map((j) =>
    client.send(ADVANCE_TASK, { runId, jobId: j.jobId, taskId: j.taskId }, { queue: wf.queue, id: `${j.taskId}.advance.${resumedAt}` })));
}

/** Cancels a run: revokes its sent tasks, marks its pending and running jobs cancelled; nothing more is sent. */
export async function cancel(client: Client, runId: string, options: { terminate?: boolean } = {}): Promise<void> {
  const kv = await workflowKv(client);
  await requireRun(kv, runId);
  await mutate<RunRecord>(kv, runKey(runId), (cur) => (cur && cur.state !== "cancelled" ? { ...cur, state: "cancelled", updatedAt: Date.now() } : undefined));
  const jobs = (await listJobs(client, kv, runId)).filter((j) => j.state === "pending" || j.state === "running");
  await Promise.all(jobs.map(async (j) => {
    if (j.state === "running") await client.revoke(j.taskId, { reason: `workflow run ${runId} cancelled`, ...(options.terminate ? { terminate: true } : {}) });
    await mutate<JobRecord>(kv, jobKey(runId, j.jobId), (cur) =>
      cur && (cur.state === "pending" || cur.state === "running") ? { ...cur, state: "cancelled", finishedAt: Date.now() } : undefined);
  }));
}

/**
 * Runs failed job `jobId` again (a new attempt, task id `<runId>.<jobId>.<attempt>`), sent at once
 * unless the run is paused. Resolves with the new task id.
 */
export async function retry(client: Client, runId: string, jobId: string): Promise<string> {
  const kv = await workflowKv(client);
  const run = await requireRun(kv, runId);
  if (run.state === "cancelled") throw new ProtocolError(`workflow run "${runId}" was cancelled`);
  const found = await read<JobRecord>(kv, jobKey(runId, jobId));
  if (!found) throw new ProtocolError(`workflow run "${runId}" has no job "${jobId}"`);
  if (found.value.state !== "failed") throw new ProtocolError(`job "${jobId}" of run "${runId}" is ${found.value.state}: only failed jobs are retried`);
  const next = await mutate<JobRecord>(kv, jobKey(runId, jobId), (cur) => {
    if (!cur || cur.state !== "failed") return undefined;
    const { error: _e, finishedAt: _f, startedAt: _s, result: _r, children: _c, advanced: _a, groupKeys: _k, ...rest } = cur;
    const attempt = cur.attempt + 1;
    return { ...rest, state: "pending", attempt, taskId: `${runId}.${jobId}.${attempt}` };
  });
  if (!next || next.state !== "pending") throw new ProtocolError(`job "${jobId}" of run "${runId}" changed while retrying`);
  await sendIfRunning(client, kv, resolveWorkflow(run.definition), runId, [jobId]);
  return next.taskId;
}

/** Counts of one stage's jobs, and their timings. */
export interface StageStatus {
  pending: number;
  running: number;
  succeeded: number;
  failed: number;
  cancelled: number;
  /** Epoch ms the stage's first task was sent. */
  firstStartedAt?: number;
  /** Epoch ms its last job finished. */
  lastFinishedAt?: number;
  /** Mean ms from a job's send to its end, over finished jobs. */
  meanMs?: number;
}

/** A failed job in {@link RunStatus}. */
export interface FailedJob {
  jobId: string;
  stage: string;
  taskId: string;
  attempt: number;
  objectRef: unknown;
  error: JobRecord["error"];
}

/** What {@link status} returns. */
export interface RunStatus {
  runId: string;
  workflow: string;
  /**
   * `running` while any job is pending or running (or a finished one is still being handed on),
   * `paused`, `cancelled`; once nothing moves: `failed` when a job failed, else `succeeded`.
   */
  state: RunState | "succeeded" | "failed";
  createdAt: number;
  /** When the last job finished, once the run is over. */
  finishedAt?: number;
  elapsedMs: number;
  /** Per stage, in definition order. */
  stages: Record<string, StageStatus>;
  failed: FailedJob[];
  jobs: number;
}

/** The state of run `runId`: counts per stage, failed jobs with their errors, timings. */
export async function status(client: Client, runId: string): Promise<RunStatus> {
  const kv = await workflowKv(client);
  return statusOf(client, kv, runId, await requireRun(kv, runId));
}

/** status() of a run whose record was just read. */
async function statusOf(client: Client, kv: KV, runId: string, run: RunRecord): Promise<RunStatus> {
  const jobs = await listJobs(client, kv, runId);
  const stages: Record<string, StageStatus> = {};
  for (const s of Object.keys(run.definition.stages)) stages[s] = { pending: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 };
  const durations: Record<string, number[]> = {};
  let moving = false;
  let lastFinish = 0;
  for (const j of jobs) {
    const st = (stages[j.stage] ??= { pending: 0, running: 0, succeeded: 0, failed: 0, cancelled: 0 });
    st[j.state as JobState]++;
    if (j.state === "pending" || j.state === "running" || (j.state === "succeeded" && !j.advanced)) moving = true;
    if (j.startedAt !== undefined) st.firstStartedAt = Math.min(st.firstStartedAt ?? j.startedAt, j.startedAt);
    if (j.finishedAt !== undefined) {
      st.lastFinishedAt = Math.max(st.lastFinishedAt ?? 0, j.finishedAt);
      lastFinish = Math.max(lastFinish, j.finishedAt);
      if (j.startedAt !== undefined) (durations[j.stage] ??= []).push(j.finishedAt - j.startedAt);
    }
  }
  for (const [s, d] of Object.entries(durations)) if (d.length) stages[s]!.meanMs = Math.round(d.reduce((a, b) => a + b, 0) / d.length);
  const failed = jobs.filter((j) => j.state === "failed").map((j) => ({ jobId: j.jobId, stage: j.stage, taskId: j.taskId, attempt: j.attempt, objectRef: j.objectRef, error: j.error }));
  let state: RunStatus["state"];
  if (run.state === "cancelled") state = "cancelled";
  else if (run.state === "paused" && moving) state = "paused";
  else if (moving) state = "running";
  else state = failed.length ? "failed" : "succeeded";
  const over = state === "succeeded" || state === "failed" || state === "cancelled";
  const finishedAt = over ? Math.max(lastFinish, run.createdAt, state === "cancelled" ? run.updatedAt : 0) : undefined;
  return {
    runId,
    workflow: run.workflow,
    state,
    createdAt: run.createdAt,
    ...(finishedAt !== undefined ? { finishedAt } : {}),
    elapsedMs: (finishedAt ?? Date.now()) - run.createdAt,
    stages,
    failed,
    jobs: jobs.length,
  };
}

/** Every job of a run, oldest first (for dashboards and debugging). */
export async function jobs(client: Client, runId: string): Promise<JobRecord[]> {
  return listJobs(client, await workflowKv(client), runId);
}

/** The ids of the runs in the namespace. */
export async function runs(client: Client): Promise<string[]> {
  // Opened for its side effect: the bucket exists before its keys are listed.
  await workflowKv(client);
  return (await listKeys(client, "run.*")).map((k) => k.slice(4));
}

/** What {@link forget} and {@link forgetFinished} removed. */
export interface Forgotten {
  runs: string[];
  /** Records removed from the bucket (run, jobs, group batches). */
  records: number;
}

/**
 * Removes run `runId` and all its records from the workflows bucket (records do not expire on
 * their own: a run waiting days on an HPC job must not vanish). A run still moving (`running`,
 * `paused`) is refused unless `force` is set; then it is cancelled first, so nothing it sent comes
 * back to write into a forgotten run.
 */
export async function forget(client: Client, runId: string, options: { force?: boolean } = {}): Promise<Forgotten> {
  const kv = await workflowKv(client);
  const run = await read<RunRecord>(kv, runKey(runId));
  if (!run) {
    // No run record: an unknown id, or records a straggler wrote after an earlier forget.
    const records = await purgeRun(client, runId);
    if (records === 0) throw new ProtocolError(`no workflow run "${runId}"`);
    return { runs: [runId], records };
  }
  const s = await statusOf(client, kv, runId, run.value);
  if (s.state === "running" || s.state === "paused") {
    if (!options.force) throw new ProtocolError(`workflow run "${runId}" is ${s.state}: cancel it first, or forget it with { force: true }`);
    await cancel(client, runId);
  }
  let records = await purgeRun(client, runId);
  if (options.force) {
    // A stage task that read the run before cancel() may still record what followed it: purge
    // once more after it had time to finish. Later stragglers need a second forget().
    await new Promise((r) => setTimeout(r, FORGET_SETTLE_MS));
    records += await purgeRun(client, runId);
  }
  return { runs: [runId], records };
}

/** How long forget({ force }) waits before its second purge. */
const FORGET_SETTLE_MS = 1000;

/**
 * Forgets every run that ended (`succeeded`, `failed`, `cancelled`) more than `olderThanMs` ago,
 * as `result_expires` cleans Celery's results. Call it from a beat schedule to keep the bucket small.
 */
export async function forgetFinished(client: Client, options: { olderThanMs: number }): Promise<Forgotten> {
  if (!(options?.olderThanMs >= 0)) throw new ProtocolError(`forgetFinished() needs olderThanMs >= 0, got ${options?.olderThanMs}`);
  const cutoff = Date.now() - options.olderThanMs;
  const done: Forgotten = { runs: [], records: 0 };
  for (const runId of await runs(client)) {
    let s: RunStatus;
    try {
      s = await status(client, runId);
    } catch {
      continue; // forgotten meanwhile by someone else
    }
    if (s.finishedAt === undefined || s.finishedAt > cutoff) continue;
    done.records += await purgeRun(client, runId);
    done.runs.push(runId);
  }
  return done;
}

/**
 * Waits until run `runId` stops moving (`succeeded`, `failed` or `cancelled`; with `paused: true`
 * also paused with nothing running) and resolves with its status. Polls the bucket.
 */
export async function waitForRun(client: Client, runId: string, options: { timeout?: number; interval?: number } = {}): Promise<RunStatus> {
  const until = Date.now() + (options.timeout ?? 60_000);
  for (;;) {
    let s: RunStatus | undefined;
    try {
      s = await status(client, runId);
    } catch (err) {
      if (Date.now() > until) throw err;
    }
    if (s && (s.state === "succeeded" || s.state === "failed" || s.state === "cancelled")) return s;
    if (Date.now() > until) throw new Error(`workflow run ${runId} still ${s?.state ?? "unknown"} after ${options.timeout ?? 60_000} ms`);
    await new Promise((r) => setTimeout(r, options.interval ?? 100));
  }
}

/** What {@link registerWorkflowTasks} needs from a worker (`Worker` from celerity/worker has it). */
export interface WorkflowWorker {
  // deno-lint-ignore no-explicit-any
  implement(sig: any, handler: (args: any, ctx: { client: Client; retry(options?: { delay?: number; reason?: string }): never }) => unknown): unknown;
}

/** Options of {@link registerWorkflowTasks}. */
export interface WorkflowTasksOptions {
  /** The queue of the internal tasks: the workflows' `queue` (default `default`). */
  queue?: string;
  /** Definitions whose TypeScript functions (split, group keys) this worker applies. */
  workflows?: readonly Workflow[];
}

/**
 * Implements the internal tasks that move jobs between stages on `worker` (before its start()).
 * At least one running worker per workflow queue must have them. They retry (1 s apart, 30 times)
 * when JetStream is unreachable, so runs survive a server restart.
 */
export function registerWorkflowTasks<W extends WorkflowWorker>(worker: W, options: WorkflowTasksOptions = {}): W {
  for (const wf of options.workflows ?? []) registerWorkflow(wf);
  const queue = options.queue ?? "default";
  const opts = { args: LinkArgs, queue, retries: 30, retryDelay: 1 };
  const run = (fn: (c: Client, a: LinkArgs) => Promise<void>) => async (args: LinkArgs, ctx: { client: Client; retry(o?: { delay?: number; reason?: string }): never }) => {
    try {
      await fn(ctx.client, args);
    } catch (err) {
      if (err instanceof ProtocolError) throw err;
      ctx.retry({ delay: 1, reason: (err as Error).message });
    }
  };
  worker.implement(signature(ADVANCE_TASK, opts), run(advance));
  worker.implement(signature(FAILED_TASK, opts), run(recordFailure));
  return worker;
}
