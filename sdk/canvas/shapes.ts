/**
 * Canvas as plain data: factories that return frozen plain objects in Celery's shapes (a call is
 * `{ kind, task, args, options, immutable? }`, a chain lists steps, a group lists members, a chord
 * is a group plus a body). Nothing here touches the network: `apply()` sends what these build.
 */
import { assertTaskId, assertTaskName, InvalidArgumentsError, ProtocolError } from "../protocol/mod.ts";
import {
  checkTaskOptions,
  etaOf,
  isSignature,
  validate,
  type AnySignature,
  type ArgsInput,
  type ResultOutput,
  type TaskOptions,
} from "../signatures/mod.ts";

/** Phantom key carrying a canvas's result type (types only; never present at runtime). */
declare const RESULT: unique symbol;
/** Marks the result type `R` of a canvas. */
interface Typed<R> {
  readonly [RESULT]?: () => R;
}

/** What a chord does when some of its members fail. */
export type ChordErrorPolicy = "fail" | "partial";

/** Options of one call: the signature's defaults overridden, plus where it goes and what follows it. */
export interface CallOptions extends TaskOptions {
  /** The task id (it must be unique: it is the dedupe key). Default: derived from the canvas's id. */
  id?: string;
  /** Do not run before this many seconds after the task is sent (counted when its step is sent). */
  countdown?: number;
  /** Do not run before this time. */
  eta?: Date | number;
  /** Plain data carried with the task (merged with `parentId` and `rootId`). */
  meta?: Record<string, unknown>;
  /** Work sent when this call succeeds, with its result. */
  link?: Canvas | readonly Canvas[];
  /** Work sent when this call fails for good, with `{ taskId, task, error }`. */
  linkError?: Canvas | readonly Canvas[];
}

/** A call's options as stored: plain data only (`eta` as epoch ms). */
export interface StoredCallOptions extends TaskOptions {
  id?: string;
  countdown?: number;
  eta?: number;
  meta?: Record<string, unknown>;
}

/** One task to run: Celery's signature `sig.s(args)` (or `sig.si(args)` when immutable). */
export interface Call<R = unknown> extends Typed<R> {
  readonly kind: "call";
  /** The task name. */
  readonly task: string;
  /** Its arguments; in a later chain step they are combined with the previous result (see docs/canvas.md). */
  readonly args?: unknown;
  /** The signature's default options overridden by the call's. */
  readonly options: Readonly<StoredCallOptions>;
  /** Ignore the previous step's result: run with `args` exactly as given. */
  readonly immutable?: true;
  readonly link?: readonly Canvas[];
  readonly linkError?: readonly Canvas[];
  /** The signature it was made from (not enumerable: it carries schemas, it never travels). */
  readonly signature?: AnySignature;
}

/** Steps run one after another; each step receives the previous step's result unless immutable. */
export interface Chain<R = unknown> extends Typed<R> {
  readonly kind: "chain";
  readonly steps: readonly Canvas[];
  readonly link?: readonly Canvas[];
  readonly linkError?: readonly Canvas[];
}

/** Members run in parallel; the group's result is the list of their results, in order. */
export interface Group<R extends readonly unknown[] = readonly unknown[]> extends Typed<R> {
  readonly kind: "group";
  readonly members: readonly Canvas[];
  readonly options: Readonly<{ id?: string }>;
  readonly link?: readonly Canvas[];
  readonly linkError?: readonly Canvas[];
}

/** A group whose results, once every member finished, are sent to a body (the callback). */
export interface Chord<R = unknown> extends Typed<R> {
  readonly kind: "chord";
  readonly header: Group;
  readonly body: Canvas;
  readonly options: Readonly<{ id?: string; onError: ChordErrorPolicy }>;
  readonly link?: readonly Canvas[];
  readonly linkError?: readonly Canvas[];
}

/** Any canvas. */
// deno-lint-ignore no-explicit-any
export type Canvas = Call<any> | Chain<any> | Group<any> | Chord<any>;

/** The result type of a canvas: a call's result, a chain's last result, a group's list, a chord's body's. */
export type ResultOf<C> = C extends { readonly [RESULT]?: () => infer R } ? R : unknown;

type Last<T extends readonly unknown[]> = T extends readonly [...unknown[], infer L] ? L : T[number];
type ResultsOf<M extends readonly unknown[]> = { -readonly [K in keyof M]: ResultOf<M[K]> };
/** The element type of an array-typed argument (for `chunks`). */
export type ItemOf<A> = A extends readonly (infer I)[] ? I : never;

/** What a call may be given instead of a signature: a task name (no schema, Celery's `send_task`). */
type Target = AnySignature | string;
type ArgsOf<T> = T extends AnySignature ? ArgsInput<T> : unknown;
type ResultFor<T> = T extends AnySignature ? ResultOutput<T> : unknown;
/**
 * A mutable call's own arguments: the full arguments, or, when the schema has a `parent` field,
 * the rest of them (the previous result arrives as `parent`).
 */
export type CallArgs<T> = ArgsOf<T> | (ArgsOf<T> extends { parent?: unknown } ? Omit<ArgsOf<T>, "parent"> : never);

/** Calls whose arguments already passed their schema (so apply() does not check them twice). */
const validated = new WeakSet<object>();

/** True when `call` is known to carry arguments its schema accepts. @internal */
export function isValidated(call: Call): boolean {
  return validated.has(call);
}

/**
 * A task call from a signature (Celery's `sig.s(args)`). In the first step of a chain (and in groups
 * and chord headers sent directly) the args are the task's arguments and are checked against the
 * schema when the canvas is sent; in a later chain step they are combined with the previous
 * step's result (see {@link callImmutable} to ignore it).
 *
 * @example
 * ```ts
 * const step = call(add, { a: 1, b: 2 }, { queue: "math" });
 * ```
 */
export function call<T extends Target>(target: T, args?: CallArgs<T>, options: CallOptions = {}): Call<ResultFor<T>> {
  return makeCall(target, args, options, false) as Call<ResultFor<T>>;
}

/**
 * A call that ignores the previous step's result (Celery's `sig.si(args)`). Its arguments are
 * complete, so they are checked against the schema now: invalid ones throw
 * {@link InvalidArgumentsError} with the schema's message.
 */
export function callImmutable<T extends Target>(target: T, args: ArgsOf<T>, options: CallOptions = {}): Call<ResultFor<T>> {
  return makeCall(target, args, options, true) as Call<ResultFor<T>>;
}

function makeCall(target: Target, args: unknown, options: CallOptions, immutable: boolean): Call {
  const sig = isSignature(target) ? target : undefined;
  const task = sig ? sig.name : (target as string);
  if (!sig) {
    if (typeof target !== "string") throw new ProtocolError(`call() takes a signature or a task name, got ${describe(target)}`);
    assertTaskName(task);
  }
  if (typeof options !== "object" || options === null) throw new ProtocolError(`call("${task}"): options must be an object`);
  const { id, countdown, eta, meta, link, linkError, ...taskOptions } = options;
  checkTaskOptions(taskOptions as Record<string, unknown>, `call("${task}")`);
  if (id !== undefined) assertTaskId(id);
  // Checked now; a countdown is stored as such and counts from when the call is sent.
  const checkedEta = etaOf(eta, countdown, 0, `call("${task}")`);
  const etaMs = countdown === undefined ? checkedEta : undefined;
  if (meta !== undefined && (typeof meta !== "object" || meta === null || Array.isArray(meta))) {
    throw new ProtocolError(`call("${task}"): option "meta" must be a plain object`);
  }
  const stored: StoredCallOptions = compact({ ...(sig?.options ?? {}), ...compact(taskOptions), id, countdown, eta: etaMs, meta });
  if (stored.autoretryFor) stored.autoretryFor = Object.freeze([...stored.autoretryFor]);
  const value: Record<string, unknown> = { kind: "call", task };
  if (args !== undefined) value.args = args;
  value.options = Object.freeze(stored);
  if (immutable) value.immutable = true;
  const links = canvasList(link, `call("${task}") link`);
  const errLinks = canvasList(linkError, `call("${task}") linkError`);
  if (links.length) value.link = Object.freeze(links);
  if (errLinks.length) value.linkError = Object.freeze(errLinks);
  if (sig) Object.defineProperty(value, "signature", { value: sig, enumerable: false });
  const result = Object.freeze(value) as unknown as Call;
  if (immutable) {
    // Complete arguments: check them now, with the schema's own message (an asynchronous schema
    // is checked when the canvas is sent).
    const checked = validate(sig?.args, args);
    if (!(checked instanceof Promise)) {
      if (!checked.ok) throw new InvalidArgumentsError(task, checked.issues);
      validated.add(result);
    }
  }
  return result;
}

/**
 * Steps run one after another (Celery's `chain(a, b, c)` or `a | b | c`): each step receives the
 * previous step's result unless it is immutable. A group followed by a step becomes a chord (the
 * step receives the group's results), as in Celery.
 */
export function chain<const C extends readonly [Canvas, ...Canvas[]]>(...steps: C): Chain<ResultOf<Last<C>>> {
  if (steps.length === 0) throw new ProtocolError("chain() needs at least one step");
  steps.forEach((s, i) => assertCanvas(s, `chain() step ${i}`));
  return Object.freeze({ kind: "chain", steps: Object.freeze([...steps]) }) as unknown as Chain<ResultOf<Last<C>>>;
}

/** Members run in parallel; the result is the list of their results, in order (Celery's `group`). */
export function group<const M extends readonly Canvas[]>(members: M, options: { id?: string } = {}): Group<ResultsOf<M>> {
  if (!Array.isArray(members)) throw new ProtocolError(`group() takes an array of calls, got ${describe(members)}`);
  members.forEach((m, i) => assertCanvas(m, `group() member ${i}`));
  if (options.id !== undefined) assertTaskId(options.id);
  return Object.freeze({ kind: "group", members: Object.freeze([...members]), options: Object.freeze(compact({ id: options.id })) }) as unknown as Group<ResultsOf<M>>;
}

/** Options of {@link chord}. */
export interface ChordOptions {
  /** The chord's id (its state key; the body's id derives from it). Default: derived. */
  id?: string;
  /**
   * `"fail"` (default): when a member fails the body does not run; its record is stored as FAILURE
   * with a ChordError listing every member's error and the chord's error callbacks are sent.
   * `"partial"`: the body runs with every result, failed members given as `{ error }`.
   */
  onError?: ChordErrorPolicy;
}

/**
 * A group whose results, once every member finished, are sent to `body` (Celery's `chord`).
 * Completion is counted in JetStream, never polled (see docs/canvas.md).
 */
export function chord<const H extends Group<readonly unknown[]> | readonly Canvas[], B extends Canvas>(header: H, body: B, options: ChordOptions = {}): Chord<ResultOf<B>> {
  const g: Group = Array.isArray(header) ? group(header as readonly Canvas[]) : (header as Group);
  if (!Array.isArray(header)) assertCanvas(g, "chord() header");
  if (g.kind !== "group") throw new ProtocolError(`chord() header must be a group or an array of calls, got a ${g.kind}`);
  assertCanvas(body, "chord() body");
  const onError = options.onError ?? "fail";
  if (onError !== "fail" && onError !== "partial") throw new ProtocolError(`chord() option "onError" = ${JSON.stringify(onError)} must be "fail" or "partial"`);
  if (options.id !== undefined) assertTaskId(options.id);
  return Object.freeze({ kind: "chord", header: g, body, options: Object.freeze(compact({ id: options.id, onError })) }) as unknown as Chord<ResultOf<B>>;
}

/**
 * One task per item, run in parallel, each with the item as its arguments (immutable: a previous
 * step's result is not merged in). Items are checked against the schema now.
 */
export function map<S extends AnySignature>(sig: S, items: readonly ArgsInput<S>[], options: CallOptions = {}): Group<ResultOutput<S>[]> {
  if (!Array.isArray(items)) throw new ProtocolError(`map("${sig.name}") takes an array of items, got ${describe(items)}`);
  return group(items.map((item) => callImmutable(sig, item, withoutId(options, `map("${sig.name}")`)))) as unknown as Group<ResultOutput<S>[]>;
}

/**
 * Celery's `starmap` for signatures whose arguments are a tuple (Celery's positional arguments):
 * one task per tuple, in parallel. Each item must be an array.
 */
export function starmap<S extends AnySignature>(
  sig: S,
  items: readonly (ArgsInput<S> & readonly unknown[])[],
  options: CallOptions = {},
): Group<ResultOutput<S>[]> {
  if (!Array.isArray(items)) throw new ProtocolError(`starmap("${sig.name}") takes an array of argument tuples, got ${describe(items)}`);
  items.forEach((item, i) => {
    if (!Array.isArray(item)) throw new ProtocolError(`starmap("${sig.name}") item ${i} must be an array of arguments, got ${describe(item)}`);
  });
  return group(items.map((item) => callImmutable(sig, item, withoutId(options, `starmap("${sig.name}")`)))) as unknown as Group<ResultOutput<S>[]>;
}

/**
 * Splits `items` into tasks of `size` items each (the last may hold fewer): for a signature whose
 * arguments are an array (a batch). One task per chunk, in parallel; the result is the list of
 * the chunks' results, in order.
 */
export function chunks<S extends AnySignature>(sig: S, items: readonly ItemOf<ArgsInput<S>>[], size: number, options: CallOptions = {}): Group<ResultOutput<S>[]> {
  if (!Array.isArray(items)) throw new ProtocolError(`chunks("${sig.name}") takes an array of items, got ${describe(items)}`);
  if (typeof size !== "number" || !Number.isInteger(size) || size < 1) {
    throw new ProtocolError(`chunks("${sig.name}"): size = ${JSON.stringify(size)} must be a positive integer`);
  }
  const parts: Call[] = [];
  for (let i = 0; i < items.length; i += size) {
    parts.push(callImmutable(sig as AnySignature, items.slice(i, i + size) as unknown, withoutId(options, `chunks("${sig.name}")`)));
  }
  return group(parts) as unknown as Group<ResultOutput<S>[]>;
}

/**
 * The same canvas with `callbacks` sent when it succeeds (Celery's `link`): on a call, with its
 * result; on a chain, after its last step; on a group, after each member; on a chord, after its body.
 */
export function withLink<C extends Canvas>(canvas: C, ...callbacks: Canvas[]): C {
  assertCanvas(canvas, "withLink()");
  const added = canvasList(callbacks, "withLink() callback");
  return Object.freeze(copyWith(canvas, { link: Object.freeze([...(canvas.link ?? []), ...added]) }));
}

/**
 * The same canvas with `callbacks` sent when it fails for good (Celery's `link_error`), with
 * `{ taskId, task, error }`: on a call, when it fails; on a chain or group, when any task of it
 * fails; on a chord, once with a ChordError listing every member's error (policy "fail") and when
 * its body fails.
 */
export function withLinkError<C extends Canvas>(canvas: C, ...callbacks: Canvas[]): C {
  assertCanvas(canvas, "withLinkError()");
  const added = canvasList(callbacks, "withLinkError() callback");
  return Object.freeze(copyWith(canvas, { linkError: Object.freeze([...(canvas.linkError ?? []), ...added]) }));
}

/** True when `value` is a canvas made by these factories (or the same shape, e.g. decoded JSON). */
export function isCanvas(value: unknown): value is Canvas {
  if (typeof value !== "object" || value === null) return false;
  const kind = (value as { kind?: unknown }).kind;
  return kind === "call" || kind === "chain" || kind === "group" || kind === "chord";
}

function assertCanvas(value: unknown, where: string): asserts value is Canvas {
  if (!isCanvas(value)) {
    throw new ProtocolError(`${where} must be a canvas (call, chain, group or chord), got ${describe(value)}${isSignature(value) ? `: wrap the signature in call(${(value as AnySignature).name}, args)` : ""}`);
  }
}

function canvasList(value: Canvas | readonly Canvas[] | undefined, where: string): Canvas[] {
  if (value === undefined) return [];
  const list = Array.isArray(value) ? [...value] : [value as Canvas];
  list.forEach((c, i) => assertCanvas(c, list.length > 1 ? `${where} ${i}` : where));
  return list;
}

function copyWith<C extends Canvas>(canvas: C, extra: Record<string, unknown>): C {
  const copy: Record<string, unknown> = { ...canvas, ...extra };
  const sig = (canvas as Call).signature;
  if (sig) Object.defineProperty(copy, "signature", { value: sig, enumerable: false });
  if (canvas.kind === "call" && validated.has(canvas)) validated.add(copy);
  return copy as C;
}

function withoutId(options: CallOptions, where: string): CallOptions {
  if (options.id !== undefined) throw new ProtocolError(`${where}: option "id" names one task; give the group an id instead (ids of its tasks derive from it)`);
  return options;
}

/** Drops keys whose value is undefined (MessagePack would send them as nil). @internal */
export function compact<T extends object>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") {
    const kind = (value as { kind?: unknown }).kind;
    return kind !== undefined ? `an object of kind ${JSON.stringify(kind)}` : "an object";
  }
  return `${typeof value} ${JSON.stringify(value)}`;
}
