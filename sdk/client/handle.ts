/** Task handles: what `send()` returns, and what `client.task(id)` gives any process that knows an id. */
import {
  FINAL_STATES,
  RemoteTaskError,
  STATE,
  TaskRevokedError,
  type ResultRecord,
  type TaskState,
} from "../protocol/mod.ts";
import type { AnySignature } from "../signatures/mod.ts";
import type { Client } from "./client.ts";

/** A task's state as a client sees it. */
export interface TaskStatus {
  id: string;
  state: TaskState;
  /** The full record once the worker stored one (final, or a long task's RECEIVED/STARTED). */
  record?: ResultRecord;
}

/** Options of {@link TaskHandle.result}. */
export interface ResultOptions {
  /** Milliseconds to wait; without it, waits until the result arrives or the connection closes. */
  timeout?: number;
}

/** A sent task. `R` is the result type its signature declares. */
export class TaskHandle<R = unknown> {
  constructor(
    private readonly client: Client,
    /** The task id (also the results key and the Nats-Msg-Id). */
    readonly id: string,
    /** The task name. */
    readonly task: string,
    /** The signature it was sent with, when known: its result schema checks the result. */
    readonly signature?: AnySignature,
  ) {}

  /** The current state: PENDING until a worker records more (Celery's semantics). */
  status(): Promise<TaskStatus> {
    return this.client.status(this.id);
  }

  /** True once the task reached a final state (SUCCESS, FAILURE or REVOKED). */
  async ready(): Promise<boolean> {
    return FINAL_STATES.has((await this.status()).state);
  }

  /**
   * Waits for the result. Resolves with the handler's value (validated by the result schema);
   * rejects with {@link RemoteTaskError} when the task failed, {@link TaskRevokedError} when it was
   * revoked, ResultTimeoutError after `timeout`.
   */
  async result(options: ResultOptions = {}): Promise<R> {
    const record = await this.client.waitForRecord(this.id, options.timeout);
    return this.client.settleRecord(record, this.signature) as Promise<R>;
  }

  /** Calls `listener` with each progress report until the task finishes; returns an unsubscribe function. */
  onProgress(listener: (progress: unknown) => void): () => void {
    return this.client.onProgress(this.id, listener);
  }

  /** Progress reports as an async iterator that ends when the task finishes. */
  async *progress(): AsyncGenerator<unknown, void, undefined> {
    const queue: unknown[] = [];
    let wake: (() => void) | undefined;
    let done = false;
    const off = this.onProgress((p) => {
      queue.push(p);
      wake?.();
    });
    this.client.waitForRecord(this.id).then(
      () => {
        done = true;
        wake?.();
      },
      () => {
        done = true;
        wake?.();
      },
    );
    try {
      while (true) {
        if (queue.length > 0) {
          yield queue.shift();
          continue;
        }
        if (done) return;
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    } finally {
      off();
    }
  }
}

/** Turns a final record into the value or the typed error it stands for. */
export function recordOutcome(record: ResultRecord): { ok: true; value: unknown } | { ok: false; error: Error } {
  if (record.state === STATE.success) return { ok: true, value: record.result };
  if (record.state === STATE.revoked) return { ok: false, error: new TaskRevokedError(record.id, record.error?.message ?? "revoked") };
  return {
    ok: false,
    error: new RemoteTaskError(record.id, record.task, record.error ?? { type: "UnknownError", message: "failed without an error record", retryable: false }),
  };
}
