/** Link and error-link callbacks, and the hook the worker calls after a task's final record. */
import { encode, HEADER, PROTOCOL_VERSION, STATE, type ResultRecord, type TaskMessage } from "../protocol/mod.ts";
import type { MsgHdrs } from "@nats-io/nats-core";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { DEFAULT_QUEUE, type Names } from "../protocol/mod.ts";

/** One task to send later: plain data (a name, arguments, options). */
export interface CallbackSpec {
  task: string;
  args?: unknown;
  queue?: string;
  priority?: number;
  /** Ignore the parent's result: send `args` exactly as given (Celery's `si()`). */
  immutable?: boolean;
}

/** The callbacks a task message may carry (`TaskMessage.callbacks`). */
export interface Callbacks {
  /** Sent when the task succeeds. */
  link?: CallbackSpec[];
  /** Sent when the task fails for good (after its retries), with the error. */
  linkError?: CallbackSpec[];
}

/**
 * What canvas needs from a client. `Client` satisfies it; canvas does not import the client, so the
 * client can import canvas without a cycle.
 */
export interface CanvasClient {
  readonly names: Names;
  readonly publisher: { publish(subject: string, data: Uint8Array, headers?: MsgHdrs): Promise<unknown> };
}

/** Callbacks sent on success. */
export function link(...callbacks: CallbackSpec[]): Callbacks {
  return { link: callbacks };
}

/** Callbacks sent on final failure. */
export function linkError(...callbacks: CallbackSpec[]): Callbacks {
  return { linkError: callbacks };
}

/**
 * The arguments a callback is sent with: its own when immutable; otherwise the parent's result
 * (success) or `{ error, taskId }` (failure) — merged into the callback's own object arguments
 * as `parent` when it has some.
 */
export function callArgs(spec: CallbackSpec, parent: ResultRecord): unknown {
  if (spec.immutable) return spec.args;
  const fromParent = parent.state === STATE.success ? parent.result : { taskId: parent.id, task: parent.task, error: parent.error };
  if (spec.args === undefined) return fromParent;
  if (typeof spec.args === "object" && spec.args !== null && !Array.isArray(spec.args)) return { ...spec.args, parent: fromParent };
  return spec.args;
}

/**
 * Called by the worker after a task's final record is stored and before its message is acked.
 * Sends the callbacks that apply. Callback ids derive from the parent's id, so a worker that
 * crashed after sending and runs the parent again sends duplicates the server drops (Nats-Msg-Id).
 */
export async function afterTask(client: CanvasClient, task: TaskMessage, record: ResultRecord): Promise<void> {
  const callbacks = task.callbacks as Callbacks | undefined;
  if (!callbacks) return;
  const list = record.state === STATE.success ? callbacks.link : record.state === STATE.failure ? callbacks.linkError : undefined;
  if (!list?.length) return;
  await Promise.all(list.map((spec, i) => {
    const id = `${task.id}.${record.state === STATE.success ? "l" : "e"}${i}`;
    const queue = spec.queue ?? DEFAULT_QUEUE;
    const message: TaskMessage = {
      v: PROTOCOL_VERSION, id, task: spec.task, args: callArgs(spec, record), queue, sentAt: Date.now(),
      meta: { parentId: task.id, rootId: (task.meta?.rootId as string | undefined) ?? task.id },
    };
    if (spec.priority) message.priority = spec.priority;
    const h = natsHeaders();
    h.set(HEADER.msgId, id);
    h.set(HEADER.task, spec.task);
    return client.publisher.publish(client.names.taskSubject(queue, spec.priority ?? 0), encode(message), h);
  }));
}
