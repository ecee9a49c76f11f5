/** Link and error-link callbacks, and the hook the worker calls after a task's final record. */
import { PayloadTooLargeError, STATE, type ResultRecord, type TaskMessage } from "../protocol/mod.ts";
import { callbackNode, type CallNode, type Node } from "./compile.ts";
import { argsFor, failureInput, Launcher, recordMember, stopChain, type CanvasClient, type Membership } from "./runtime.ts";
import type { Call } from "./shapes.ts";

export type { CanvasClient } from "./runtime.ts";

/** One task to send later: plain data (a name, arguments, options). */
export interface CallbackSpec {
  task: string;
  args?: unknown;
  queue?: string;
  priority?: number;
  /** Ignore the parent's result: send `args` exactly as given (Celery's `si()`). */
  immutable?: boolean;
}

/**
 * The callbacks a task message may carry (`TaskMessage.callbacks`); docs/canvas.md describes the
 * wire form for other languages.
 */
export interface Callbacks {
  /** Sent when the task succeeds, with its result. */
  link?: (CallbackSpec | CallNode | Node)[];
  /** Sent when the task fails for good (after its retries), with `{ taskId, task, error }`. */
  linkError?: (CallbackSpec | CallNode | Node)[];
  /** The rest of a chain: sent with the task's result when it succeeds. */
  next?: Node;
  /** The task's outcome is member `i` of chord `chord` (recorded on success when nothing follows, on failure, on revoke). */
  member?: Membership;
}

/** Callbacks sent on success: plain specs or calls (`call(sig, args)`, `callImmutable(...)`). */
export function link(...callbacks: (CallbackSpec | Call)[]): Callbacks {
  return { link: callbacks.map(toCallback) };
}

/** Callbacks sent on final failure. */
export function linkError(...callbacks: (CallbackSpec | Call)[]): Callbacks {
  return { linkError: callbacks.map(toCallback) };
}

function toCallback(c: CallbackSpec | Call): CallbackSpec | CallNode {
  return (c as Call).kind === "call" ? callbackNode(c as Call) : c;
}

/**
 * The arguments a callback is sent with: its own when immutable; otherwise the parent's result
 * (success) or `{ taskId, task, error }` (failure) — merged into the callback's own object
 * arguments as `parent` when it has some.
 */
export function callArgs(spec: CallbackSpec, parent: ResultRecord): unknown {
  return argsFor(spec, parent.state === STATE.success ? { value: parent.result } : failureInput(parent));
}

/**
 * Called by the worker after a task's final record is stored and before its message is acked.
 * Sends what follows the task: its links (success) or error links (failure), the rest of its
 * chain, and records its chord membership (sending the chord's body when it is the last member).
 * Ids of what it sends derive from the parent's, so a worker that crashed after sending and runs
 * the parent again sends duplicates the server drops (Nats-Msg-Id).
 */
export async function afterTask(client: CanvasClient, task: TaskMessage, record: ResultRecord): Promise<void> {
  const callbacks = task.callbacks as Callbacks | undefined;
  if (!callbacks || typeof callbacks !== "object") return;
  const launcher = new Launcher(client, { parentId: task.id, rootId: (task.meta?.rootId as string | undefined) ?? task.id });
  // What follows can be too large to send (its args carry this task's result, merged with its
  // own): it never will be, so it fails with that reason, and this task's message is still acked
  // (a throw here would hand it back, run the task again, and end in the dead-letter stream).
  const launch = (node: Node, input: { value: unknown }, member?: Membership): Promise<void> =>
    launcher.launch(node, input, member ? { member } : {}).catch(async (err) => {
      if (!(err instanceof PayloadTooLargeError)) throw err;
      const error = { type: err.name, message: `not sent after ${task.id}: ${err.message}`, retryable: false };
      await stopChain(client, node, { ...record, state: STATE.failure, error });
      if (member) await recordMember(client, member);
    });
  const jobs: Promise<void>[] = [];
  const send = (list: Callbacks["link"], tag: "l" | "e", value: { value: unknown }) =>
    list?.forEach((entry, i) => jobs.push(launch(asNode(entry, `${task.id}.${tag}${i}`), value)));
  if (record.state === STATE.success) {
    const input = { value: record.result };
    send(callbacks.link, "l", input);
    if (callbacks.next) jobs.push(launch(callbacks.next, input, callbacks.member));
    else if (callbacks.member) jobs.push(recordMember(client, callbacks.member));
  } else if (record.state === STATE.failure || record.state === STATE.revoked) {
    if (record.state === STATE.failure) send(callbacks.linkError, "e", failureInput(record));
    // The rest of the chain never runs: its last tasks get this record's state and error (so the
    // chain's handle, or the chord counting it, sees the real error), stored before the member
    // counts. A revoked member still counts (as an error), or its chord would wait for ever.
    const { next, member } = callbacks;
    if (next || member) {
      jobs.push((async () => {
        if (next) await stopChain(client, next, record);
        if (member) await recordMember(client, member);
      })());
    }
  }
  if (!jobs.length) return;
  await Promise.all(jobs);
}

/** A callback entry as a node: legacy specs and id-less calls get the id derived from the parent. */
function asNode(entry: CallbackSpec | CallNode | Node, id: string): Node {
  if (!("kind" in entry)) {
    const spec = entry as CallbackSpec;
    const node: CallNode = { kind: "call", id, task: spec.task };
    if (spec.args !== undefined) node.args = spec.args;
    if (spec.immutable) node.immutable = true;
    const options: CallNode["options"] = {};
    if (spec.queue !== undefined) options.queue = spec.queue;
    if (spec.priority !== undefined) options.priority = spec.priority;
    if (Object.keys(options).length) node.options = options;
    return node;
  }
  if (entry.kind === "call" && !entry.id) return { ...entry, id };
  return entry;
}
