/**
 * Folding task events into per-task state. Events of one task come from several processes (the
 * client's task-sent, the workers' received/started/…) and arrive in any order, so the state is not
 * "the last event seen" but the event with the highest precedence key:
 *
 *   [final, attempt, rank, at, tie]
 *
 * - `final` is 1 for task-succeeded/failed/revoked/dead-lettered: an end state always beats a
 *   running one, whatever arrives later.
 * - `attempt` is the retry number the event belongs to (`retries` of task-received; a task-retried
 *   closes attempt `retries - 1`), so a retried task's second task-received beats the first run's
 *   task-retried. Events that carry no `retries` count as attempt 0.
 * - `rank` orders one attempt: sent 0 < received 1 < started 2 < progress 3 < retried 4.
 * - `at` (epoch ms) orders equal ranks (progress reports) and end states among themselves (a rerun's
 *   later result replaces an earlier one, as the results bucket does).
 * - `tie` makes end states at the same millisecond deterministic: dead-lettered < failed < revoked
 *   < succeeded (the worker sends task-dead-lettered, then task-failed).
 *
 * Facts that do not depend on the order (the arguments of task-sent, the first sent time, the
 * latest received and started times, the highest retry count, the event count) are merged
 * separately, so every arrival order of the same events folds to the same {@link TaskView}.
 */
import { EVENT, STATE, type ErrorShape, type EventType, type TaskEvent, type TaskState } from "../protocol/mod.ts";

/** The precedence key of an event: compare with {@link compareKeys}. */
export type PrecedenceKey = readonly [final: number, attempt: number, rank: number, at: number, tie: number];

const RANK: Record<EventType, number> = {
  [EVENT.sent]: 0,
  [EVENT.received]: 1,
  [EVENT.started]: 2,
  [EVENT.progress]: 3,
  [EVENT.retried]: 4,
  [EVENT.deadLettered]: 5,
  [EVENT.failed]: 5,
  [EVENT.revoked]: 5,
  [EVENT.succeeded]: 5,
};

/** Tie-break of end states at the same millisecond. */
const FINAL_TIE: Partial<Record<EventType, number>> = {
  [EVENT.deadLettered]: 0,
  [EVENT.failed]: 1,
  [EVENT.revoked]: 2,
  [EVENT.succeeded]: 3,
};

/** The state a task is in after each event type (Celery's names; task-sent means PENDING). */
export const STATE_OF_EVENT: Readonly<Record<EventType, TaskState>> = {
  [EVENT.sent]: STATE.pending,
  [EVENT.received]: STATE.received,
  [EVENT.started]: STATE.started,
  [EVENT.progress]: STATE.started,
  [EVENT.retried]: STATE.retry,
  [EVENT.succeeded]: STATE.success,
  [EVENT.failed]: STATE.failure,
  [EVENT.revoked]: STATE.revoked,
  [EVENT.deadLettered]: STATE.failure,
};

/** Every event type, in precedence order. */
export const EVENT_TYPES: readonly EventType[] = Object.values(EVENT);

/** True for a known event type. */
export function isEventType(value: unknown): value is EventType {
  return typeof value === "string" && value in RANK;
}

/** True for the event types that end a task. */
export function isFinalEvent(type: EventType): boolean {
  return FINAL_TIE[type] !== undefined;
}

/** The precedence key of one event (see the module documentation). */
export function eventKey(e: Pick<TaskEvent, "type" | "at" | "retries">): PrecedenceKey {
  const at = Number.isFinite(e.at) ? Math.trunc(e.at) : 0;
  const tie = FINAL_TIE[e.type];
  if (tie !== undefined) return [1, 0, RANK[e.type], at, tie];
  const retries = typeof e.retries === "number" && e.retries >= 0 ? Math.trunc(e.retries) : 0;
  const attempt = e.type === EVENT.retried ? Math.max(0, retries - 1) : retries;
  return [0, attempt, RANK[e.type] ?? 0, at, 0];
}

/** Lexicographic comparison of two keys: negative, 0 or positive. */
export function compareKeys(a: PrecedenceKey, b: PrecedenceKey): number {
  for (let i = 0; i < 5; i++) {
    const d = a[i]! - b[i]!;
    if (d !== 0) return d;
  }
  return 0;
}

/** What is known about one task after folding its events. */
export interface TaskView {
  id: string;
  /** Task name. */
  task: string;
  queue?: string;
  /** The state decided by the highest-precedence event. */
  state: TaskState;
  /** Type of that event. */
  lastType: EventType;
  /** Its precedence key. */
  key: PrecedenceKey;
  /** Arguments, from task-sent (absent until that event is seen). */
  args?: unknown;
  /** Result of a task-succeeded that decides the state. */
  result?: unknown;
  /** Error of the task-failed, task-retried or task-dead-lettered that decides the state. */
  error?: ErrorShape;
  /** Reason of the task-revoked or task-dead-lettered that decides the state. */
  reason?: string;
  /** Dead-letter reason, once the task was dead-lettered. */
  deadLetterReason?: string;
  /** Latest progress report, and when it was made. */
  progress?: unknown;
  progressAt?: number;
  /** Highest retry count seen. */
  retries: number;
  /** task-received events seen (deliveries, including redeliveries and retries). */
  attempts: number;
  /** Worker of the deciding event (or of an earlier one when that event has none). */
  worker?: string;
  runtimeMs?: number;
  /** Epoch ms: first task-sent, latest task-received and task-started, deciding end event. */
  sentAt?: number;
  receivedAt?: number;
  startedAt?: number;
  finishedAt?: number;
  /** Epoch ms of the latest event seen. */
  lastEventAt: number;
  /** Events folded in. */
  events: number;
  /** Highest stream sequence folded in, when known. */
  lastSeq?: number;
}

/** The view of a task that has seen only event `e` (stored at stream sequence `seq`). */
export function viewOf(e: TaskEvent, seq?: number): TaskView {
  const v: TaskView = {
    id: e.id,
    task: e.task,
    state: STATE_OF_EVENT[e.type],
    lastType: e.type,
    key: eventKey(e),
    retries: typeof e.retries === "number" && e.type !== EVENT.sent ? e.retries : 0,
    attempts: e.type === EVENT.received ? 1 : 0,
    lastEventAt: e.at,
    events: 1,
  };
  if (e.queue !== undefined) v.queue = e.queue;
  if (e.worker !== undefined) v.worker = e.worker;
  if (seq !== undefined) v.lastSeq = seq;
  switch (e.type) {
    case EVENT.sent:
      // Only when carried: args left out of the event (too large, see `omitted`) stay SQL NULL in
      // the results table, unlike args that really were null.
      if ("args" in e) v.args = e.args;
      v.sentAt = e.at;
      break;
    case EVENT.received:
      v.receivedAt = e.at;
      break;
    case EVENT.started:
      v.startedAt = e.at;
      break;
    case EVENT.progress:
      v.progress = e.progress;
      v.progressAt = e.at;
      break;
    case EVENT.retried:
      if (e.error) v.error = e.error;
      break;
    case EVENT.succeeded:
      if ("result" in e) v.result = e.result; // as args above: an omitted result stays absent
      v.finishedAt = e.at;
      if (e.runtimeMs !== undefined) v.runtimeMs = e.runtimeMs;
      break;
    case EVENT.failed:
      if (e.error) v.error = e.error;
      v.finishedAt = e.at;
      break;
    case EVENT.revoked:
      if (e.reason !== undefined) v.reason = e.reason;
      v.finishedAt = e.at;
      break;
    case EVENT.deadLettered:
      if (e.error) v.error = e.error;
      if (e.reason !== undefined) {
        v.reason = e.reason;
        v.deadLetterReason = e.reason;
      }
      v.finishedAt = e.at;
      break;
  }
  return v;
}

function maxOf(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined ? b : b === undefined ? a : Math.max(a, b);
}
function minOf(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined ? b : b === undefined ? a : Math.min(a, b);
}

/**
 * Merges two views of the same task. Order-independent: the higher key decides the state and its
 * fields (on equal keys `a` is kept); the other facts are merged field by field. The PostgreSQL
 * sink applies the same rules in SQL (see docs/results-table.md).
 */
export function mergeViews(a: TaskView, b: TaskView): TaskView {
  const aWins = compareKeys(a.key, b.key) >= 0;
  const w = aWins ? a : b;
  const l = aWins ? b : a;
  const v: TaskView = {
    id: a.id,
    task: a.task || b.task,
    state: w.state,
    lastType: w.lastType,
    key: w.key,
    retries: Math.max(a.retries, b.retries),
    attempts: a.attempts + b.attempts,
    lastEventAt: Math.max(a.lastEventAt, b.lastEventAt),
    events: a.events + b.events,
  };
  const set = <K extends keyof TaskView>(k: K, value: TaskView[K] | undefined) => {
    if (value !== undefined) v[k] = value;
  };
  set("queue", a.queue ?? b.queue);
  if ("args" in a) v.args = a.args;
  else if ("args" in b) v.args = b.args;
  if ("result" in w) v.result = w.result;
  set("error", w.error);
  set("reason", w.reason);
  set("runtimeMs", w.runtimeMs);
  set("finishedAt", w.finishedAt);
  set("worker", w.worker ?? l.worker);
  set("deadLetterReason", a.deadLetterReason ?? b.deadLetterReason);
  const p = (a.progressAt ?? -Infinity) >= (b.progressAt ?? -Infinity) ? a : b;
  if (p.progressAt !== undefined) {
    v.progress = p.progress;
    v.progressAt = p.progressAt;
  }
  set("sentAt", minOf(a.sentAt, b.sentAt));
  set("receivedAt", maxOf(a.receivedAt, b.receivedAt));
  set("startedAt", maxOf(a.startedAt, b.startedAt));
  set("lastSeq", maxOf(a.lastSeq, b.lastSeq));
  return v;
}

/** Folds `e` (stored at `seq`) into `view`. */
export function applyEvent(view: TaskView | undefined, e: TaskEvent, seq?: number): TaskView {
  const one = viewOf(e, seq);
  return view ? mergeViews(view, one) : one;
}

/**
 * Folds events, in any order, into one view per task id. Give `{ event, seq }` pairs to record
 * stream sequences. Events that are not task events (no id, unknown type) are skipped.
 *
 * @example
 * ```ts
 * const events = [];
 * for await (const e of monitor(client, { since: "all", follow: false })) events.push(e);
 * const tasks = taskTimeline(events);
 * tasks.get(id)?.state; // "SUCCESS", even when task-succeeded arrived before task-started
 * ```
 */
export function taskTimeline(events: Iterable<TaskEvent | { event: TaskEvent; seq?: number }>): Map<string, TaskView> {
  const out = new Map<string, TaskView>();
  for (const item of events) {
    const e = "event" in item && typeof item.event === "object" ? item.event : (item as TaskEvent);
    const seq = "event" in item && typeof item.event === "object" ? item.seq : undefined;
    if (!isTaskEvent(e)) continue;
    out.set(e.id, applyEvent(out.get(e.id), e, seq));
  }
  return out;
}

/** True when `e` has what folding needs: a string id and task, a known type, a numeric `at`. */
export function isTaskEvent(e: unknown): e is TaskEvent {
  if (typeof e !== "object" || e === null) return false;
  const o = e as Record<string, unknown>;
  return typeof o.id === "string" && o.id !== "" && typeof o.task === "string" && isEventType(o.type) && typeof o.at === "number" && Number.isFinite(o.at);
}
