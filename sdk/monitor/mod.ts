/**
 * Watching tasks: every task event of a namespace as it happens (or since a time, or durably from
 * where a reader stopped), folded per task with state precedence, and kept in a results table.
 *
 * @example
 * ```ts
 * import { connect } from "celerity";
 * import { monitor, taskTimeline } from "celerity/monitor";
 * await using client = await connect();
 * for await (const e of monitor(client, { types: ["task-failed"], task: "images.*" })) {
 *   console.log(new Date(e.at).toISOString(), e.id, e.error?.message);
 * }
 * ```
 * @module
 */
export { monitor, type Monitor, type MonitorOptions } from "./monitor.ts";
export { eventMatcher, globToRegExp, parseEventType, type EventFilter } from "./filter.ts";
export {
  applyEvent,
  compareKeys,
  eventKey,
  EVENT_TYPES,
  isEventType,
  isFinalEvent,
  isTaskEvent,
  mergeViews,
  STATE_OF_EVENT,
  taskTimeline,
  viewOf,
  type PrecedenceKey,
  type TaskView,
} from "./timeline.ts";
export { runSink, type SinkBatch, type SinkOffset, type SinkOptions, type SinkStats, type SinkTarget } from "./sink.ts";
export { deliverFrom, type Since } from "./consumers.ts";
export {
  jsonbText,
  PostgresResultsTable,
  RESULTS_TABLE_VERSION,
  SinkConflictError,
  type ResultsTableOptions,
  type SqlClient,
} from "./postgres.ts";
