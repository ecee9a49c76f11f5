/** Sending a canvas from a client, and the handles that follow its results. */
import type { JetStreamManager } from "@nats-io/jetstream";
import { STATE, type ResultRecord, type TaskState } from "../protocol/mod.ts";
import type { AnySignature } from "../signatures/mod.ts";
import { compile, type Plan } from "./compile.ts";
import { ensureChordBucket, Launcher, type CanvasClient } from "./runtime.ts";
import type { Call, Canvas, Chain, Chord, Group } from "./shapes.ts";

/** What a client's task handle offers (Client's `TaskHandle` has it). */
export interface TaskHandleLike {
  readonly id: string;
  result(options?: { timeout?: number }): Promise<unknown>;
  ready(): Promise<boolean>;
  status(): Promise<{ id: string; state: TaskState; record?: ResultRecord }>;
}

/** What {@link apply} needs from a client: `Client` satisfies it. */
export interface ApplyClient extends CanvasClient {
  jsm(): Promise<JetStreamManager>;
  /** A handle for a task id (results come from the results bucket). */
  task(id: string, sig?: AnySignature): TaskHandleLike;
}

/** Options of {@link apply}. */
export interface ApplyOptions {
  /**
   * The canvas's id: every task id derives from it (a call sent alone takes it as is), so sending
   * the same canvas again with the same id is deduplicated. Default: a random UUID.
   */
  id?: string;
}

/** Options of waiting for a result. */
export interface WaitOptions {
  /** Milliseconds to wait (per task). */
  timeout?: number;
}

/** Anything apply() returns: a result to wait for. */
export interface Handle<R = unknown> {
  readonly kind: "task" | "chain" | "group" | "chord";
  /** The id of the task whose record is this handle's result (a group's own id for a group). */
  readonly id: string;
  /** Waits for the result; rejects with the task's error (RemoteTaskError, TaskRevokedError, ResultTimeoutError). */
  result(options?: WaitOptions): Promise<R>;
  /** True once the result is final (for a group: every member's). */
  ready(): Promise<boolean>;
  /** True once it finished successfully (for a group: every member). */
  successful(): Promise<boolean>;
}

/** One member's outcome in {@link GroupHandle.results}. */
export type Settled<T = unknown> = { ok: true; id: string; value: T } | { ok: false; id: string; error: Error };

/** One task's handle. */
export class TaskResult<R = unknown> implements Handle<R> {
  readonly kind = "task" as const;
  readonly #handle: TaskHandleLike;
  constructor(
    handle: TaskHandleLike,
    /** The task name. */
    readonly task: string,
  ) {
    this.#handle = handle;
  }
  get id(): string {
    return this.#handle.id;
  }
  result(options?: WaitOptions): Promise<R> {
    return this.#handle.result(options) as Promise<R>;
  }
  ready(): Promise<boolean> {
    return this.#handle.ready();
  }
  /** The task's state: PENDING until a worker records more. */
  status(): Promise<{ id: string; state: TaskState; record?: ResultRecord }> {
    return this.#handle.status();
  }
  async successful(): Promise<boolean> {
    return (await this.#handle.status()).state === STATE.success;
  }
}

/** A chain's handle: its result is the last task's; `first` follows the first task. */
export class ChainHandle<R = unknown> implements Handle<R> {
  readonly kind = "chain" as const;
  constructor(
    readonly first: Handle<unknown>,
    readonly last: Handle<R>,
  ) {}
  /** The last task's id, known before anything ran. */
  get id(): string {
    return this.last.id;
  }
  result(options?: WaitOptions): Promise<R> {
    return this.last.result(options);
  }
  ready(): Promise<boolean> {
    return this.last.ready();
  }
  successful(): Promise<boolean> {
    return this.last.successful();
  }
}

/** A group's handle: its members' handles in order. */
export class GroupHandle<R extends readonly unknown[] = unknown[]> implements Handle<R> {
  readonly kind = "group" as const;
  constructor(
    /** The group's id (its members' ids derive from it). */
    readonly id: string,
    readonly members: readonly Handle<unknown>[],
  ) {}
  /** The ids of the members' results (a chain member's last task), in order. */
  get ids(): string[] {
    return this.members.map((m) => m.id);
  }
  /** Every member's outcome, in order: its result or its error. */
  results(options?: WaitOptions): Promise<Settled<R[number]>[]> {
    return Promise.all(this.members.map((m) => m.result(options).then(
      (value) => ({ ok: true as const, id: m.id, value: value as R[number] }),
      (error: Error) => ({ ok: false as const, id: m.id, error }),
    )));
  }
  /** Every member's result, in order; rejects with the first failed member's error (in order). */
  async result(options?: WaitOptions): Promise<R> {
    const settled = await this.results(options);
    const failed = settled.find((s) => !s.ok);
    if (failed && !failed.ok) throw failed.error;
    return settled.map((s) => (s as { value: unknown }).value) as unknown as R;
  }
  async ready(): Promise<boolean> {
    return (await Promise.all(this.members.map((m) => m.ready()))).every(Boolean);
  }
  /** How many members finished successfully (Celery's `completed_count`). */
  async completed(): Promise<number> {
    return (await Promise.all(this.members.map((m) => m.successful()))).filter(Boolean).length;
  }
  async successful(): Promise<boolean> {
    return (await this.completed()) === this.members.length;
  }
}

/** A chord's handle: its result is the callback's (the body's); `header` follows the members. */
export class ChordHandle<R = unknown> implements Handle<R> {
  readonly kind = "chord" as const;
  constructor(
    /** The chord's id (its state key; the callback's id is `<chordId>.cb` when it is one call). */
    readonly chordId: string,
    readonly header: GroupHandle<unknown[]>,
    readonly callback: Handle<R>,
  ) {}
  /** The callback's id, known before anything ran. */
  get id(): string {
    return this.callback.id;
  }
  result(options?: WaitOptions): Promise<R> {
    return this.callback.result(options);
  }
  ready(): Promise<boolean> {
    return this.callback.ready();
  }
  successful(): Promise<boolean> {
    return this.callback.successful();
  }
}

/** The handle apply() returns for a canvas. */
export type HandleOf<C> = C extends Call<infer R> ? TaskResult<R>
  : C extends Chain<infer R> ? ChainHandle<R>
  : C extends Group<infer R> ? GroupHandle<R>
  : C extends Chord<infer R> ? ChordHandle<R>
  : Handle<unknown>;

/**
 * Sends a canvas. Every task id is derived up front from the canvas's id; arguments already known
 * (first steps, group and chord members, immutable calls) are checked against their schemas
 * before anything is sent. Resolves once JetStream stored the first tasks; the rest is sent by
 * the workers that finish their parents, so it proceeds with this client closed.
 *
 * @example
 * ```ts
 * const h = await apply(client, chain(call(add, { a: 1, b: 2 }), call(double)));
 * await h.result(); // 6
 * ```
 */
export async function apply<C extends Canvas>(client: ApplyClient, canvas: C, options: ApplyOptions = {}): Promise<HandleOf<C>> {
  const canvasId = options.id ?? crypto.randomUUID();
  const compiled = await compile(canvas, canvasId);
  if (compiled.hasChord) await ensureChordBucket(client);
  const rootId = compiled.node.kind === "call" ? compiled.node.id! : canvasId;
  const launcher = new Launcher(client, { rootId });
  await launcher.launch(compiled.node, undefined);
  const plan = compiled.plan;
  const h = canvas.kind === "chain" ? new ChainHandle(handleOf(client, firstOf(plan)), handleOf(client, plan.kind === "chain" ? plan.last : plan)) : handleOf(client, plan);
  return h as unknown as HandleOf<C>;
}

function firstOf(plan: Plan): Plan {
  if (plan.kind === "chain") return firstOf(plan.first);
  if (plan.kind === "chord") return { kind: "group", id: plan.id, members: plan.header };
  return plan;
}

function handleOf(client: ApplyClient, plan: Plan): Handle<unknown> {
  switch (plan.kind) {
    case "task":
      return new TaskResult(client.task(plan.id, plan.signature), plan.task);
    case "chain":
      return new ChainHandle(handleOf(client, plan.first), handleOf(client, plan.last));
    case "group":
      return new GroupHandle(plan.id, plan.members.map((m) => handleOf(client, m)));
    case "chord":
      return new ChordHandle(plan.id, new GroupHandle(plan.id, plan.header.map((m) => handleOf(client, m))), handleOf(client, plan.body));
  }
}
