/**
 * Canvas: work that follows work. Callbacks travel inside the task message and are *sent* as tasks
 * by whichever worker finishes the parent, so they run even when the sender is gone and on any
 * worker that implements them (no errback run locally by a worker that lacks it: celery#4022).
 *
 * @example
 * ```ts
 * import { link } from "celerity/canvas";
 * await client.send(resize, args, { callbacks: link(notify.call({ channel: "ops" }, { immutable: true })) });
 * ```
 * @module
 */
export {
  afterTask,
  callArgs,
  link,
  linkError,
  type CallbackSpec,
  type CanvasClient,
  type Callbacks,
} from "./callbacks.ts";
