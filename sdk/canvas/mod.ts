/**
 * Canvas: work that follows work, as plain data (Celery's chain, group, chord, map, starmap,
 * chunks). What follows a task travels inside its message and is *sent* as tasks by whichever
 * worker finishes it, so it runs even when the sender is gone and on any worker that implements
 * it (no errback run locally by a worker that lacks it: celery#4022). Chords are counted in
 * JetStream with compare-and-set, never polled (no chord_unlock: celery#2725). See docs/canvas.md.
 *
 * @example
 * ```ts
 * import { apply, call, callImmutable, chain, chord, group } from "celerity/canvas";
 * const h = await apply(client, chain(call(add, { a: 1, b: 2 }), call(double), callImmutable(notify, { to: "ops" })));
 * const sum = await apply(client, chord(group([call(add, { a: 1, b: 1 }), call(add, { a: 2, b: 2 })]), call(total)));
 * await sum.result(); // 6
 * ```
 * @module
 */
export {
  call,
  callImmutable,
  chain,
  chord,
  chunks,
  group,
  isCanvas,
  map,
  starmap,
  withLink,
  withLinkError,
  type Call,
  type CallArgs,
  type CallOptions,
  type Canvas,
  type Chain,
  type Chord,
  type ChordErrorPolicy,
  type ChordOptions,
  type Group,
  type ItemOf,
  type ResultOf,
  type StoredCallOptions,
} from "./shapes.ts";
export {
  apply,
  ChainHandle,
  ChordHandle,
  GroupHandle,
  TaskResult,
  type ApplyClient,
  type ApplyOptions,
  type Handle,
  type HandleOf,
  type Settled,
  type TaskHandleLike,
  type WaitOptions,
} from "./apply.ts";
export { compile, type CallNode, type ChainNode, type ChordNode, type GroupNode, type Node, type WireOptions } from "./compile.ts";
export {
  chordBucket,
  ChordError,
  chordStreamConfig,
  ensureChordBucket,
  type CanvasSettings,
  type ChordSpec,
  type ChordState,
  type Membership,
} from "./runtime.ts";
export {
  afterTask,
  callArgs,
  link,
  linkError,
  type CallbackSpec,
  type CanvasClient,
  type Callbacks,
} from "./callbacks.ts";
