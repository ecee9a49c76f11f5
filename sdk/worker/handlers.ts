/**
 * Packet handlers (GWCelery's `@gcn.handler(NoticeType.X, …)` and `@lvalert.handler(...)`): a
 * function registered for one or more packet types of a source becomes a task of its own,
 * `handlers.<source>.<name>`. A listener (an eternal task holding a connection to the outside
 * service, or anything publishing to `<ns>.packets.<source>`) hands each packet to
 * {@link HandlerRegistry.dispatch}, which sends it to every handler of its type, each as its own
 * task with its own retries. A packet of a type nobody handles is counted in the namespace's
 * handlers bucket (see {@link unknownPackets}), not treated as an error.
 */
import type { KV } from "@nats-io/kv";
import type { Subscription } from "@nats-io/nats-core";
import * as v from "valibot";
import { openBucket, type Client, type TaskHandle } from "../client/mod.ts";
import { assertToken, decode, encode, PROTOCOL_VERSION, ProtocolError } from "../protocol/mod.ts";
import { signature, type AnySignature, type StandardSchemaV1, type TaskOptions } from "../signatures/mod.ts";
import type { TaskContext } from "./worker.ts";

/** One packet from a source: its type (a notice type, an alert node) and its payload. */
export interface Packet<P = unknown> {
  type: string;
  payload: P;
  /**
   * The source's own id of this packet. When given, each handler's task is sent with an
   * idempotency key derived from it, so a packet delivered twice (a listener restarted mid-way)
   * runs each handler once.
   */
  id?: string;
}

/** The arguments of a handler task. */
export interface PacketArgs<P = unknown> {
  source: string;
  type: string;
  payload: P;
  id?: string;
}

/** What a handler receives beside the payload: the task context and where the packet came from. */
export interface HandlerContext extends TaskContext {
  readonly packet: { readonly source: string; readonly type: string; readonly id?: string };
}

/** A packet handler. */
export type PacketHandler<P = unknown> = (payload: P, ctx: HandlerContext) => unknown;

/** Options of a handler: its name and the task options of its task. */
export interface HandlerOptions<P = unknown> extends TaskOptions {
  /** Name of the handler (default: the function's name); the task is `handlers.<source>.<name>`. */
  name?: string;
  /** Schema of the payload (any Standard Schema); a payload it rejects is not sent to this handler. */
  payload?: StandardSchemaV1<unknown, P>;
}

/** A handler, registered for some packet types of a source. */
export interface HandlerRegistration<P = unknown> {
  readonly source: string;
  readonly types: readonly string[];
  /** The task name, `handlers.<source>.<name>`. */
  readonly task: string;
  /** The task's signature (arguments: {@link PacketArgs}). */
  readonly signature: AnySignature;
  readonly fn: PacketHandler<P>;
}

/** What a worker offers for registering handlers (a Worker fits). */
export interface ImplementsTasks {
  // deno-lint-ignore no-explicit-any
  implement(sig: AnySignature, handler: (args: any, ctx: TaskContext) => unknown): unknown;
}

/** What one dispatch did. */
export interface DispatchReport {
  source: string;
  type: string;
  /** One task per handler of the type. */
  tasks: { task: string; id: string }[];
  /** No handler is registered for the type (the packet was counted). */
  unknown: boolean;
  /** Handlers whose task could not be sent (invalid payload, no connection). */
  errors: { task: string; error: string }[];
}

/** Some handlers' tasks could not be sent; `report` says which were sent and which not. */
export class DispatchError extends Error {
  override name = "DispatchError";
  constructor(readonly report: DispatchReport) {
    super(`packet ${report.source}/${report.type}: ${report.errors.map((e) => `${e.task}: ${e.error}`).join("; ")}`);
  }
}

/** Prefix of every handler task name. */
export const HANDLER_TASK_PREFIX = "handlers";

/** Core subject a source's packets are published to, for {@link listen}: `<ns>.packets.<source>`. */
export function packetsSubject(namespace: string, source: string): string {
  assertToken("source", source);
  return `${namespace}.packets.${source}`;
}

/** The KV bucket of a namespace's handler counters: key `unknown.<source>.<type>` per unknown type. */
export function handlersBucket(namespace: string): string {
  return `${namespace}_handlers`;
}

const SEGMENT = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;

/**
 * Declares a handler: `fn` runs for packets of `types` from `source`, as task
 * `handlers.<source>.<name>`. Register it with a {@link HandlerRegistry} (or use the registry's
 * own `handler`).
 *
 * @example
 * ```ts
 * export const fermi = handler("gcn", ["FERMI_GBM_GND_POS", "FERMI_GBM_FIN_POS"], function handleFermi(payload, ctx) {
 *   ctx.log.info(`notice ${ctx.packet.type}`);
 * });
 * ```
 */
export function handler<P = unknown>(
  source: string,
  types: string | readonly string[],
  fn: PacketHandler<P>,
  options: HandlerOptions<P> = {},
): HandlerRegistration<P> {
  assertToken("source", source);
  const list = typeof types === "string" ? [types] : [...types];
  if (list.length === 0) throw new ProtocolError(`handler for source "${source}": give at least one packet type`);
  for (const t of list) {
    if (typeof t !== "string" || t === "") throw new ProtocolError(`handler for source "${source}": packet types must be non-empty strings, not ${JSON.stringify(t)}`);
  }
  if (typeof fn !== "function") throw new TypeError(`handler for source "${source}": fn must be a function`);
  const { name: given, payload, ...taskOptions } = options;
  const name = given ?? fn.name;
  if (!name || !SEGMENT.test(name)) {
    throw new ProtocolError(
      `handler for ${source} ${list.join(", ")}: ${name ? `name ${JSON.stringify(name)} cannot be part of a task name` : "the function has no name"}; ` +
        `pass { name: "…" } (letters, digits, _ and -)`,
    );
  }
  const task = `${HANDLER_TASK_PREFIX}.${source}.${name}`;
  const args = v.object({
    source: v.literal(source),
    type: v.picklist(list),
    payload: payload ? (payload as unknown as v.GenericSchema) : v.unknown(),
    id: v.optional(v.string()),
  });
  return Object.freeze({
    source,
    types: Object.freeze(list),
    task,
    signature: signature(task, { args, ...taskOptions }),
    fn,
  });
}

interface UnknownRecord {
  v: number;
  source: string;
  type: string;
  count: number;
  firstAt: number;
  lastAt: number;
}

/** The stored count of packets of a type no handler took. */
export interface UnknownPacketCount {
  source: string;
  type: string;
  count: number;
  firstAt: number;
  lastAt: number;
}

/** A packet type as one KV key token: characters other than letters, digits, _ and - become =XX. */
function keyToken(text: string): string {
  let out = "";
  for (const byte of new TextEncoder().encode(text)) {
    const ch = String.fromCharCode(byte);
    out += /[A-Za-z0-9_-]/.test(ch) ? ch : `=${byte.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out || "=";
}


const buckets = new WeakMap<Client, Promise<KV>>();
function handlersKv(client: Client): Promise<KV> {
  let kv = buckets.get(client);
  if (!kv) {
    kv = openBucket(client, handlersBucket(client.names.namespace));
    kv.catch(() => buckets.delete(client));
    buckets.set(client, kv);
  }
  return kv;
}

/** Adds one to the stored count of unknown packets of `source`/`type` (compare-and-set, retried). */
async function countUnknown(client: Client, source: string, type: string): Promise<void> {
  const kv = await handlersKv(client);
  const key = `unknown.${source}.${keyToken(type)}`;
  for (let attempt = 0; attempt < 20; attempt++) {
    const entry = await kv.get(key);
    const now = Date.now();
    let prev: UnknownRecord | undefined;
    if (entry && entry.operation === "PUT" && entry.value.length > 0) prev = decode(entry.value) as UnknownRecord;
    const record: UnknownRecord = { v: PROTOCOL_VERSION, source, type, count: (prev?.count ?? 0) + 1, firstAt: prev?.firstAt ?? now, lastAt: now };
    try {
      if (prev) await kv.update(key, encode(record), entry!.revision);
      else await kv.create(key, encode(record));
      return;
    } catch (err) {
      const e = err as { code?: unknown; message?: unknown };
      if (!(e?.code === 10071 || e?.code === 10164 || /wrong last sequence|key exists/i.test(String(e?.message)))) throw err;
    }
  }
  throw new Error(`could not count an unknown packet ${source}/${type}: too many concurrent writers`);
}

/** The stored counts of packets no handler took, for one source or all. */
export async function unknownPackets(client: Client, source?: string): Promise<UnknownPacketCount[]> {
  const kv = await handlersKv(client);
  const out: UnknownPacketCount[] = [];
  const keys: string[] = [];
  for await (const key of await kv.keys(source ? `unknown.${source}.>` : "unknown.>")) keys.push(key);
  for (const key of keys.sort()) {
    const entry = await kv.get(key);
    if (!entry || entry.operation !== "PUT" || entry.value.length === 0) continue;
    const r = decode(entry.value) as UnknownRecord;
    out.push({ source: r.source, type: r.type, count: r.count, firstAt: r.firstAt, lastAt: r.lastAt });
  }
  return out;
}

/**
 * The handlers of a program: a dispatch table per source. The worker registers their tasks; a
 * listener dispatches packets to them.
 *
 * @example
 * ```ts
 * const handlers = new HandlerRegistry();
 * handlers.handler("gcn", ["FERMI_GBM_FIN_POS"], function fermi(payload, ctx) { … });
 * handlers.register(worker);                                      // each handler is a task
 * await handlers.dispatch(client, "gcn", { type: "FERMI_GBM_FIN_POS", payload }); // one task per handler
 * ```
 */
export class HandlerRegistry {
  readonly #registrations: HandlerRegistration[] = [];
  /** Source → packet type → handlers. */
  readonly #table = new Map<string, Map<string, HandlerRegistration[]>>();
  /** Counters of this process (the stored ones are shared: {@link unknownPackets}). */
  readonly stats = { dispatched: 0, tasks: 0, unknown: 0, errors: 0 };

  /** Declares a handler and adds it (see {@link handler}). */
  handler<P = unknown>(source: string, types: string | readonly string[], fn: PacketHandler<P>, options?: HandlerOptions<P>): HandlerRegistration<P> {
    const registration = handler(source, types, fn, options);
    this.add(registration);
    return registration;
  }

  /** Adds handlers declared with {@link handler}. */
  add(...registrations: HandlerRegistration<never>[]): this {
    for (const r of registrations as HandlerRegistration[]) {
      if (this.#registrations.some((x) => x.task === r.task)) throw new ProtocolError(`handler task "${r.task}" is registered twice`);
      this.#registrations.push(r);
      let bySource = this.#table.get(r.source);
      if (!bySource) this.#table.set(r.source, (bySource = new Map()));
      for (const t of r.types) {
        const list = bySource.get(t) ?? [];
        list.push(r);
        bySource.set(t, list);
      }
    }
    return this;
  }

  /** Every handler, in registration order. */
  get registrations(): readonly HandlerRegistration[] {
    return this.#registrations;
  }

  /** The handlers of `type` from `source`. */
  handlersFor(source: string, type: string): readonly HandlerRegistration[] {
    return this.#table.get(source)?.get(type) ?? [];
  }

  /** The dispatch table: source → packet type → task names. */
  table(): Record<string, Record<string, string[]>> {
    const out: Record<string, Record<string, string[]>> = {};
    for (const [source, types] of this.#table) {
      out[source] = {};
      for (const [type, regs] of types) out[source]![type] = regs.map((r) => r.task);
    }
    return out;
  }

  /** Implements every handler's task on `worker` (call before `worker.start()`). */
  register(worker: ImplementsTasks): void {
    for (const r of this.#registrations) {
      worker.implement(r.signature, (a: PacketArgs, ctx: TaskContext) => {
        const packet = a.id === undefined ? { source: a.source, type: a.type } : { source: a.source, type: a.type, id: a.id };
        // signal and log are getters of the context's prototype: a spread does not copy them.
        return r.fn(a.payload, { ...ctx, get signal() { return ctx.signal; }, get log() { return ctx.log; }, packet });
      });
    }
  }

  /**
   * Sends `packet` to every handler of its type, each as its own task, and resolves once all are
   * stored. A type without handlers is counted (not an error). Throws {@link DispatchError} when
   * some handler's task could not be sent (the others are sent).
   */
  async dispatch(client: Client, source: string, packet: Packet): Promise<DispatchReport> {
    assertToken("source", source);
    if (typeof packet !== "object" || packet === null || typeof packet.type !== "string") {
      throw new ProtocolError(`a packet must be an object { type: string, payload }, not ${JSON.stringify(packet)?.slice(0, 100)}`);
    }
    this.stats.dispatched++;
    const regs = this.handlersFor(source, packet.type);
    const report: DispatchReport = { source, type: packet.type, tasks: [], unknown: regs.length === 0, errors: [] };
    if (regs.length === 0) {
      this.stats.unknown++;
      await countUnknown(client, source, packet.type);
      return report;
    }
    const args: PacketArgs = { source, type: packet.type, payload: packet.payload };
    if (packet.id !== undefined) args.id = String(packet.id);
    const sent = await Promise.allSettled(regs.map((r) =>
      client.send(r.signature, args as never, packet.id !== undefined ? { idempotencyKey: `${r.task}:${packet.id}` } : {}) as Promise<TaskHandle<unknown>>
    ));
    sent.forEach((outcome, i) => {
      const task = regs[i]!.task;
      if (outcome.status === "fulfilled") report.tasks.push({ task, id: outcome.value.id });
      else report.errors.push({ task, error: (outcome.reason as Error)?.message ?? String(outcome.reason) });
    });
    this.stats.tasks += report.tasks.length;
    if (report.errors.length > 0) {
      this.stats.errors += report.errors.length;
      throw new DispatchError(report);
    }
    return report;
  }
}

/** A running {@link listen}. */
export interface PacketListener {
  /** Packets received, dispatched, and failed (undecodable or a dispatch error). */
  readonly stats: { received: number; dispatched: number; failed: number };
  /** Stops listening after the packet in hand. */
  stop(): Promise<void>;
  /** Settles when the listener has stopped. */
  readonly closed: Promise<void>;
}

/** Options of {@link listen}. */
export interface ListenOptions {
  /**
   * Queue group of the subscription, so that of many listeners of a source one takes each packet
   * (default `handlers.<source>`; false: every listener dispatches every packet).
   */
  queue?: string | false;
  /** Called with each failure (default: ignored; the stats count it). */
  onError?: (err: Error, packet: Packet | undefined) => void;
}

/**
 * Subscribes to `<ns>.packets.<source>` and dispatches each packet through `registry`, one at a
 * time in arrival order. A packet published with a reply subject (a request) gets the
 * {@link DispatchReport} back (or `{ error }`). Core NATS: a packet published while no listener
 * runs is not kept — an eternal task listening to the outside service is the durable path.
 */
export function listen(client: Client, registry: HandlerRegistry, source: string, options: ListenOptions = {}): PacketListener {
  const subject = packetsSubject(client.names.namespace, source);
  const queue = options.queue === false ? undefined : options.queue ?? `${HANDLER_TASK_PREFIX}.${source}`;
  const sub: Subscription = client.nc.subscribe(subject, queue ? { queue } : {});
  const stats = { received: 0, dispatched: 0, failed: 0 };
  const closed = (async () => {
    for await (const msg of sub) {
      stats.received++;
      let packet: Packet | undefined;
      let reply: unknown;
      try {
        packet = decode(msg.data) as Packet;
        reply = await registry.dispatch(client, source, packet);
        stats.dispatched++;
      } catch (err) {
        stats.failed++;
        reply = err instanceof DispatchError ? { ...err.report, error: err.message } : { error: (err as Error).message };
        options.onError?.(err as Error, packet);
      }
      if (msg.reply) msg.respond(encode(reply));
    }
  })();
  return {
    stats,
    closed,
    async stop() {
      if (!sub.isClosed()) await sub.drain().catch(() => sub.unsubscribe());
      await closed;
    },
  };
}

/** Publishes a packet for the listeners of `source` (fire and forget). */
export function publishPacket(client: Client, source: string, packet: Packet): void {
  client.nc.publish(packetsSubject(client.names.namespace, source), encode(packet));
}

/** Publishes a packet and waits for a listener's {@link DispatchReport}. */
export async function requestPacket(client: Client, source: string, packet: Packet, timeoutMs = client.settings.requestTimeout): Promise<DispatchReport> {
  const msg = await client.nc.request(packetsSubject(client.names.namespace, source), encode(packet), { timeout: timeoutMs });
  const reply = decode(msg.data) as DispatchReport & { error?: string };
  if (reply.error !== undefined) {
    if (Array.isArray(reply.errors)) throw new DispatchError(reply);
    throw new Error(reply.error);
  }
  return reply;
}
