/**
 * Notebook helpers for tslab: a live progress bar over task handles, tables, small inline SVG line
 * charts, and readers of queue depths and task events for monitoring. Dependency-free: tslab is
 * passed in (or imported lazily), and outside a notebook everything prints as text.
 *
 * @example
 * ```ts
 * import * as tslab from "tslab";
 * import { connect } from "celerity";
 * import { chart, queueDepths, readEvents, table, throughput, useDisplay, watch } from "celerity/notebook";
 * useDisplay(tslab);
 * const client = await connect();
 * const handles = await Promise.all([1, 2, 3].map((a) => client.send("math.add", { a, b: 1 })));
 * const outcomes = await watch(client, handles); // a live progress bar, then [{ id, state, result }, …]
 * await table(outcomes);
 * await table(await queueDepths(client));
 * await chart(throughput(await readEvents(client)), { title: "completed tasks", x: "time" });
 * ```
 * @module
 */
export { useDisplay, type Display, type DisplayHost, type ShowOptions } from "./display.ts";
export {
  escapeHtml,
  formatCell,
  renderChart,
  renderProgress,
  renderTable,
  textChart,
  textProgress,
  textTable,
  toSeries,
  type ChartOptions,
  type ProgressState,
  type Row,
  type Series,
  type TableOptions,
} from "./render.ts";
export { chart, progressBar, ProgressBar, table, watch, type HandleLike, type ProgressOptions, type Settled } from "./widgets.ts";
export { queueDepths, readEvents, throughput, type QueueDepth, type ReadEventsOptions, type ThroughputOptions } from "./monitor.ts";
