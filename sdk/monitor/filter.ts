/** Which events a monitor yields: by type, task name glob, queue and task id. */
import type { EventType, TaskEvent } from "../protocol/mod.ts";
import { EVENT_TYPES, isEventType } from "./timeline.ts";

/** Filters of a monitor; every given one must match. */
export interface EventFilter {
  /** Only these event types. */
  types?: readonly EventType[];
  /** Task name glob: `*` matches any run of characters (dots too), `?` one character. `images.*`. */
  task?: string;
  /** Only events of this queue. */
  queue?: string;
  /** Only events of this task id. */
  id?: string;
}

/** A regular expression matching the whole of a task name glob. */
export function globToRegExp(glob: string): RegExp {
  let source = "";
  for (const ch of glob) {
    if (ch === "*") source += ".*";
    else if (ch === "?") source += ".";
    else source += ch.replace(/[\\^$.|+()[\]{}]/g, "\\$&");
  }
  return new RegExp(`^${source}$`);
}

/**
 * An event type from a user: the full name (`task-failed`) or without the prefix (`failed`).
 * Throws a TypeError listing the valid names otherwise.
 */
export function parseEventType(value: string): EventType {
  const v = value.trim();
  const full = v.startsWith("task-") ? v : `task-${v}`;
  if (isEventType(full)) return full;
  throw new TypeError(`unknown event type ${JSON.stringify(value)}: use ${EVENT_TYPES.join(", ")}`);
}

/** Compiles a filter into a predicate. */
export function eventMatcher(filter: EventFilter): (e: TaskEvent) => boolean {
  const types = filter.types && filter.types.length > 0 ? new Set(filter.types) : undefined;
  const task = filter.task !== undefined && filter.task !== "*" ? globToRegExp(filter.task) : undefined;
  const { queue, id } = filter;
  if (!types && !task && queue === undefined && id === undefined) return () => true;
  return (e) =>
    (!types || types.has(e.type)) &&
    (!task || task.test(e.task)) &&
    (queue === undefined || e.queue === queue) &&
    (id === undefined || e.id === id);
}
